-- wrk script. With TARGET set (the upstream URL, e.g. http://localhost:8080/)
-- requests are absolute-form, so wrk talks to sidekey as a forward proxy;
-- with TARGET empty, plain origin-form requests (the direct baseline).
local target = os.getenv("TARGET") or ""
if target ~= "" then
  wrk.path = target
  wrk.headers["Host"] = target:match("^https?://([^/]+)")
end

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
