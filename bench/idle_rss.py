#!/usr/bin/env python3
"""RSS per idle keep-alive client connection (issue 12's 16 KiB target):
starts target/release/sidekey with a static-header route to a tiny local
upstream, opens 1,000 client connections that each make one request and
stay open, and compares sidekey's RSS before and after. Loopback only.
Run `cargo build --release` first (or set SIDEKEY to a binary);
`ulimit -n 8192` may be needed."""
import socket, subprocess, time, os, sys, tempfile
up = socket.socket(); up.bind(("127.0.0.1", 0)); up.listen(2048)
upport = up.getsockname()[1]
import threading
def serve():
    while True:
        c, _ = up.accept()
        def h(c):
            buf = b""
            while True:
                d = c.recv(4096)
                if not d: return
                buf += d
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        threading.Thread(target=h, args=(c,), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
d = tempfile.mkdtemp()
open(f"{d}/p.toml", "w").write(f'[proxy]\nlisten = "127.0.0.1:{port}"\nadmin = ""\n[[routes]]\nname = "r"\nhosts = ["127.0.0.1"]\nset_headers = {{ "X-A" = "1" }}\n')
binary = os.environ.get("SIDEKEY") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "sidekey")
p = subprocess.Popen([binary, "run", "--config", f"{d}/p.toml", "--log-format", "json"], stderr=subprocess.DEVNULL)
time.sleep(1)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
req = f"GET http://127.0.0.1:{upport}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
def one():
    c = socket.create_connection(("127.0.0.1", port)); c.sendall(req); c.recv(4096); return c
warm = [one() for _ in range(20)]
time.sleep(0.5); base = rss()
conns = []
for i in range(1000):
    conns.append(one())
time.sleep(1.0); after = rss()
print(f"RSS before {base} KiB, with 1000 more idle keep-alive connections {after} KiB: {(after-base)/1000:.1f} KiB per connection")
p.terminate(); p.wait()
