-- wrk script for scripts/bench-e2e: one POST chat completion, the same for
-- every target. Environment:
--   BENCH_BODY_BYTES  body size in bytes (default 1024); valid JSON, "model" first
--   BENCH_KEY         the gateway key sent as Authorization: Bearer
--   BENCH_OUT         file that done() writes one tab-separated result line to:
--                     requests  duration_us  p50_us  p99_us  non_2xx_3xx  socket_errors

local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "1024")
local head = '{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"'
local tail = '"}],"temperature":0.7,"max_tokens":256,"stream":false}'
local fill = math.max(0, size - #head - #tail)
local words = "the quick brown fox jumps over the lazy dog "

wrk.method = "POST"
wrk.body = head .. string.rep(words, math.ceil(fill / #words)):sub(1, fill) .. tail
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "no-key")

function done(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  f:write(string.format("%d\t%d\t%d\t%d\t%d\t%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
  f:close()
end
