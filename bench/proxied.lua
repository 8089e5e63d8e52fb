-- wrk script: absolute-form requests, so wrk talks to sidekey as a forward
-- proxy. TARGET is the upstream URL, e.g. http://localhost:8080/
local target = os.getenv("TARGET") or "http://127.0.0.1:8080/"
local host = target:match("^https?://([^/]+)")
wrk.path = target
wrk.headers["Host"] = host

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
