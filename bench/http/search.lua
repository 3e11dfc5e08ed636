-- wrk script for quarry's POST /v1/search: rotates through queries built from the benchmark
-- corpus's vocabulary, authenticated with the bearer token in $BENCH_TOKEN.
local token = os.getenv("BENCH_TOKEN")
local k = os.getenv("BENCH_K") or "10"
local mode = os.getenv("BENCH_MODE") or "hybrid"
local words = {}
for w in (os.getenv("BENCH_WORDS") or "budget"):gmatch("%S+") do words[#words + 1] = w end
local bodies = {}
local seed = 7
local function rnd(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end
for i = 1, 1000 do
  local q = words[rnd(#words)] .. " " .. words[rnd(#words)] .. " " .. words[rnd(#words)]
  bodies[i] = string.format('{"query":"%s","k":%s,"mode":"%s"}', q, k, mode)
end
local n = 0
-- BENCH_MODE=me: GET /v1/me instead, the cost of HTTP and authentication alone (the principal
-- comes from the cache), as a baseline for the searches
local me = mode == "me"
wrk.method = me and "GET" or "POST"
if not me then wrk.headers["Content-Type"] = "application/json" end
wrk.headers["Authorization"] = "Bearer " .. (token or "")
request = function()
  if me then return wrk.format(nil, "/v1/me") end
  n = n % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[n])
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d qps=%.1f p50=%.2f p90=%.2f p99=%.2f max=%.2f errors=%d non200=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
