#!/usr/bin/env python3
"""A stand-in OTLP/HTTP collector for benchmarks: answers 200 to every
POST /v1/traces and counts requests and bytes (printed on SIGTERM/SIGINT).
Loopback only.  Usage: bench/otlp_sink.py PORT"""
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"posts": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        stats["posts"] += 1
        stats["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)

    def stop(*_):
        print(f"otlp sink: {stats['posts']} exports, {stats['bytes']} bytes", file=sys.stderr)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


main()
