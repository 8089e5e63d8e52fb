//! The standard `process_*` metrics (CPU seconds, resident and virtual
//! memory, open and max fds, start time), read from /proc at each scrape.
//! prometheus-client has no process collector; this one is Linux-only and
//! emits nothing elsewhere, or for a value /proc does not give.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `USER_HZ`: the unit of /proc's CPU times, 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

/// What /proc says of this process at one scrape.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    pub(super) fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        let mut s = parse(&stat, &status, &boot, &limits);
        s.open_fds = open_fds;
        s
    }
}

/// The fields of /proc/self/stat after the command name, which may hold
/// spaces and parentheses: everything after its last `)`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

fn kib_line(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

pub(super) fn parse(stat: &str, status: &str, proc_stat: &str, limits: &str) -> Sample {
    // After the name: state is field 3, so field N is index N - 3.
    let f = stat_fields(stat);
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu_seconds = num(14)
        .zip(num(15))
        .map(|(u, s)| (u + s) / TICKS_PER_SECOND);
    let boot_time = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let start_time_seconds = num(22)
        .zip(boot_time)
        .map(|(ticks, boot)| boot + ticks / TICKS_PER_SECOND);
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    Sample {
        cpu_seconds,
        resident_bytes: kib_line(status, "VmRSS:"),
        virtual_bytes: kib_line(status, "VmSize:"),
        open_fds: None,
        max_fds,
        start_time_seconds,
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: Option<f64>) -> std::fmt::Result {
    let Some(v) = v else { return Ok(()) };
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read();
        if let Some(cpu) = s.cpu_seconds {
            let c = ConstCounter::new(cpu);
            let help = "Total user and system CPU time spent in seconds";
            c.encode(e.encode_descriptor("process_cpu_seconds", help, None, c.metric_type())?)?;
        }
        let rss = "Resident memory size in bytes";
        gauge(
            &mut e,
            "process_resident_memory_bytes",
            rss,
            s.resident_bytes,
        )?;
        let vsz = "Virtual memory size in bytes";
        gauge(&mut e, "process_virtual_memory_bytes", vsz, s.virtual_bytes)?;
        let fds = "Number of open file descriptors";
        gauge(&mut e, "process_open_fds", fds, s.open_fds)?;
        let max = "Maximum number of open file descriptors";
        gauge(&mut e, "process_max_fds", max, s.max_fds)?;
        let start = "Start time of the process since unix epoch in seconds";
        gauge(
            &mut e,
            "process_start_time_seconds",
            start,
            s.start_time_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parens() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 123 456";
        let status = "Name:\tx\nVmSize:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        let limits = "Max open files            1024                 524288               files\n";
        let s = parse(stat, status, "cpu 1 2\nbtime 1700000000\n", limits);
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(s.resident_bytes, Some(1024.0 * 1024.0));
        assert_eq!(s.virtual_bytes, Some(2048.0 * 1024.0));
        assert_eq!(s.max_fds, Some(1024.0));
    }

    #[test]
    fn reads_this_process() {
        let s = Sample::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0.0));
        assert!(s.open_fds.is_some_and(|n| n > 0.0));
        assert!(s.cpu_seconds.is_some() && s.start_time_seconds.is_some());
    }
}
