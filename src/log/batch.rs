//! A batching log writer. `tracing_appender::non_blocking` sends each line
//! through a channel and wakes its writer thread per line: under load that
//! wake-up (a futex call and a context switch) cost more than formatting
//! the line. Here an event appends its formatted line to a shared buffer
//! under a short lock and returns. The writer thread writes the whole
//! buffer in one call, then lets lines gather for `FLUSH_EVERY` (less if
//! the buffer passes `EAGER`); only a line into an empty buffer while the
//! writer sleeps idle wakes it, so a busy proxy pays no wake-up per line
//! and an idle one no timer. A buffer at `LIMIT` (stderr stuck) drops lines
//! and counts them, rather than grow without bound or block requests.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this full wakes the writer before its time.
const EAGER: usize = 256 * 1024;
/// Past this, lines are dropped (and counted) until the writer catches up.
const LIMIT: usize = 8 * 1024 * 1024;
/// How long exit waits for the last lines: a stderr nobody reads (a stalled
/// log collector) must not keep a terminating pod alive until SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    dropped: u64,
    closed: bool,
    /// Set by the writer thread once it wrote the last lines.
    done: bool,
    writer: Writer,
}

/// What the writer thread is waiting for, so appenders wake it only then.
#[derive(Default, PartialEq)]
enum Writer {
    #[default]
    Busy,
    /// The buffer was empty: the next line wakes it.
    Idle,
    /// Letting lines gather: only a full (`EAGER`) buffer wakes it.
    Gathering,
}

#[derive(Default)]
/// The lines waiting to be written, and the wake-up of the writer thread.
struct Buffer {
    state: Mutex<State>,
    wake: Condvar,
}

impl Buffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` handed to tracing-subscriber.
#[derive(Clone)]
pub(super) struct Batch(Arc<Buffer>);

/// Writes what is left and stops the writer thread when dropped.
pub struct Guard {
    buffer: Arc<Buffer>,
    thread: Option<JoinHandle<()>>,
}

/// A batching writer to stderr, and the guard that flushes it at exit.
pub(super) fn stderr() -> (Batch, Guard) {
    spawn(std::io::stderr())
}

fn spawn<W: Write + Send + 'static>(out: W) -> (Batch, Guard) {
    let buffer = Arc::new(Buffer::default());
    let worker = Arc::clone(&buffer);
    let thread = std::thread::Builder::new()
        .name("sidekey-log".into())
        .spawn(move || run(&worker, out))
        .ok();
    if thread.is_none() {
        // No thread: nothing would ever drain the buffer. Keep the lines
        // (written at exit by the guard) up to LIMIT rather than fail.
        eprintln!("sidekey: cannot start the log writer thread; logs are written at exit");
    }
    (Batch(Arc::clone(&buffer)), Guard { buffer, thread })
}

fn run<W: Write>(buffer: &Buffer, mut out: W) {
    let mut spare = Vec::new();
    loop {
        let (closed, dropped) = {
            let mut state = buffer.lock();
            state.writer = Writer::Idle;
            state = buffer
                .wake
                .wait_while(state, |s| s.buf.is_empty() && !s.closed)
                .unwrap_or_else(PoisonError::into_inner);
            state.writer = Writer::Busy;
            // Swap buffers: appends go on into the (emptied) spare while
            // this one is written without the lock.
            std::mem::swap(&mut state.buf, &mut spare);
            (state.closed, std::mem::take(&mut state.dropped))
        };
        if dropped > 0 {
            let _ = writeln!(
                out,
                "sidekey: {dropped} log lines dropped: stderr did not keep up"
            );
        }
        if !spare.is_empty() {
            // Nowhere to report a failed write to stderr: the bytes are gone.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
            // After a burst (or a stall up to LIMIT), give the memory back
            // rather than hold two large buffers for the process's life.
            if spare.capacity() > EAGER {
                spare.shrink_to(EAGER);
            }
        }
        if closed {
            buffer.lock().done = true;
            buffer.wake.notify_all();
            return;
        }
        let mut state = buffer.lock();
        state.writer = Writer::Gathering;
        let mut state = buffer
            .wake
            .wait_timeout_while(state, FLUSH_EVERY, |s| {
                s.writer == Writer::Gathering && !s.closed
            })
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        state.writer = Writer::Busy;
    }
}

impl Batch {
    /// Appends one whole line (what `Line` does for a tracing event).
    pub(super) fn line(&self, bytes: &[u8]) -> std::io::Result<()> {
        Line(&self.0).write_all(bytes)
    }
}

/// What one event writes through.
pub(super) struct Line<'a>(&'a Buffer);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.lock();
        if state.buf.len() + bytes.len() > LIMIT {
            state.dropped += 1;
        } else {
            state.buf.extend_from_slice(bytes);
            let wake = match state.writer {
                Writer::Idle => true,
                Writer::Gathering => state.buf.len() >= EAGER,
                Writer::Busy => false,
            };
            if wake {
                state.writer = Writer::Busy;
                self.0.wake.notify_all();
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batch {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.buffer.lock().closed = true;
        // One condvar serves both sides: wake them all.
        self.buffer.wake.notify_all();
        match self.thread.take() {
            Some(t) => {
                let state = self.buffer.lock();
                let (state, _) = self
                    .buffer
                    .wake
                    .wait_timeout_while(state, EXIT_WAIT, |s| !s.done)
                    .unwrap_or_else(PoisonError::into_inner);
                if state.done {
                    drop(state);
                    let _ = t.join();
                }
                // Else the thread is stuck writing: leave it, and the
                // lines, behind rather than hang the exit.
            }
            None => {
                let rest = std::mem::take(&mut self.buffer.lock().buf);
                let _ = std::io::stderr().write_all(&rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_within_the_interval_and_the_rest_at_drop() {
        let sink = Sink::default();
        let (batch, guard) = spawn(sink.clone());
        for i in 0..1000 {
            batch
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !sink.0.lock().unwrap().is_empty(),
            "nothing written within 5 s"
        );
        batch.make_writer().write_all(b"last\n").unwrap();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1001);
        assert!(lines[..1000]
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        assert_eq!(lines[1000], "last");
    }

    #[test]
    fn a_line_after_a_quiet_spell_is_written_at_once() {
        let sink = Sink::default();
        let (batch, _guard) = spawn(sink.clone());
        std::thread::sleep(FLUSH_EVERY * 3);
        let sent = std::time::Instant::now();
        batch.make_writer().write_all(b"one\n").unwrap();
        while sink.0.lock().unwrap().is_empty() {
            assert!(sent.elapsed() < Duration::from_secs(5), "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&sink.0.lock().unwrap()[..], b"one\n");
    }

    #[test]
    fn a_burst_does_not_keep_its_memory() {
        let sink = Sink::default();
        let (batch, guard) = spawn(sink.clone());
        let line = [b'y'; 1024];
        for _ in 0..(2 * LIMIT / 1024) {
            batch.line(&line).unwrap();
        }
        // Both buffers pass through the writer once things are quiet.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            std::thread::sleep(FLUSH_EVERY * 3);
            batch.line(b"\n").unwrap();
            std::thread::sleep(FLUSH_EVERY * 3);
            if batch.0.lock().buf.capacity() <= EAGER {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the buffer kept its burst size"
            );
        }
        drop(guard);
        assert!(!sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn exit_does_not_wait_long_on_a_stderr_nobody_reads() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (batch, guard) = spawn(Stuck(Arc::clone(&gate), Sink::default()));
        batch.line(b"stuck\n").unwrap();
        std::thread::sleep(FLUSH_EVERY * 3);
        let started = std::time::Instant::now();
        drop(guard);
        assert!(
            started.elapsed() < EXIT_WAIT * 3,
            "exit waited {:?}",
            started.elapsed()
        );
    }

    /// A writer that never returns until released: stderr stuck.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Sink);

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stderr_drops_lines_past_the_limit_and_says_how_many() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (batch, guard) = spawn(Stuck(Arc::clone(&gate), sink.clone()));
        let line = vec![b'x'; 1023];
        // The writer takes the first batch and blocks on it; the buffer
        // then fills to LIMIT and the rest is dropped, without blocking here.
        let started = std::time::Instant::now();
        for _ in 0..(3 * LIMIT / 1024) {
            let mut l = line.clone();
            l.push(b'\n');
            batch.make_writer().write_all(&l).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "writing blocked"
        );
        assert!(batch.0.lock().buf.len() <= LIMIT);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("log lines dropped"),
            "{}",
            &text[text.len() - 200..]
        );
        assert!(text.len() <= 2 * LIMIT + 200);
    }
}
