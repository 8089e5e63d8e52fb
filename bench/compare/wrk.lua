-- wrk script for bench/compare.sh. With TARGET set (an absolute URI such as
-- http://127.0.0.1:8080/) requests are absolute-form, so wrk talks to a
-- forward proxy; with TARGET empty, origin-form (the direct baseline, whose
-- Authorization header comes from wrk -H).
-- done() prints one machine-readable line with exact percentiles.
local target = os.getenv("TARGET") or ""
if target ~= "" then
  wrk.path = target
  wrk.headers["Host"] = target:match("^https?://([^/]+)")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d sock_errors=%d\n",
    summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
