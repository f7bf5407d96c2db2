-- bench/lib/session.lua: wrk script for bench/daemon — POST /v1/session (an API
-- key traded for STS credentials), cycling over the API keys listed in the file
-- named by the first script argument. done() prints the totals on one line.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   keys = {}
   local f = assert(io.open(args[1], "r"))
   for line in f:lines() do
      if #line > 0 then keys[#keys + 1] = line end
   end
   f:close()
   assert(#keys > 0, "no API keys in " .. args[1])
   next_key = (tid * 17) % #keys
   ok, failed = 0, 0
end

function request()
   next_key = next_key % #keys + 1
   return wrk.format("POST", "/v1/session", {["Authorization"] = "Bearer " .. keys[next_key]})
end

function response(status, headers, body)
   if status == 200 then ok = ok + 1 else failed = failed + 1 end
end

function done(summary, latency, requests)
   local o, f = 0, 0
   for _, t in ipairs(threads) do
      o = o + (t:get("ok") or 0)
      f = f + (t:get("failed") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d pairs=%d reserved=0 non2xx=%d errors=%d" ..
      " p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration, o, f,
      e.connect + e.read + e.write + e.timeout + e.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
