-- wrk script for the direct baseline: same output line as proxied.lua.
-- (origin-form requests straight to the upstream).
local target = os.getenv("TARGET") or "http://127.0.0.1:8080/"
local host = target:match("^https?://([^/]+)")
wrk.path = "/"
wrk.headers["Host"] = host

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
