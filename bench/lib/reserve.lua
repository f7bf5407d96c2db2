-- bench/lib/reserve.lua: wrk script for bench/daemon — quota reservations, each
-- followed by its commit, spread over the pockets whose API keys are listed in
-- the file named by the first script argument (one key a line).
--
-- Each thread keeps a queue of granted reservations: request() sends the commit
-- of the oldest one when there is one, else a new reservation (the next pocket's
-- key in turn). So every reservation is committed by the next free connection of
-- its thread, and at steady state the two alternate. A completed pair counts
-- once, when its commit answers 200; done() prints the totals on one line.

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
   queue, head, tail = {}, 1, 0
   next_key = (tid * 17) % #keys
   seq = 0
   pairs_done, reserved, refused = 0, 0, 0
end

function request()
   if tail >= head then
      local r = queue[head]
      queue[head] = nil
      head = head + 1
      return wrk.format("POST", "/v1/reservations/" .. r.id .. "/commit",
                        {["Authorization"] = "Bearer " .. keys[r.k],
                         ["Content-Type"] = "application/json"},
                        '{"bytes":4096,"etag":"\\"0123456789abcdef0123456789abcdef\\""}')
   end
   next_key = next_key % #keys + 1
   seq = seq + 1
   -- the key names its pocket (k) so that the commit can use the same API key
   local body = string.format('{"key":"bench/k%d/t%d-%d","bytes":4096}', next_key, tid, seq)
   return wrk.format("POST", "/v1/reservations",
                     {["Authorization"] = "Bearer " .. keys[next_key],
                      ["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
   if status == 201 then
      local id = body:match('"id"%s*:%s*"(rsv_[%w_]+)"')
      local k = body:match('"key"%s*:%s*"bench/k(%d+)/')
      if id and k then
         tail = tail + 1
         queue[tail] = {id = id, k = tonumber(k)}
         reserved = reserved + 1
      end
   elseif status == 200 then
      pairs_done = pairs_done + 1
   else
      refused = refused + 1
   end
end

function done(summary, latency, requests)
   local p, r, x = 0, 0, 0
   for _, t in ipairs(threads) do
      p = p + (t:get("pairs_done") or 0)
      r = r + (t:get("reserved") or 0)
      x = x + (t:get("refused") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d pairs=%d reserved=%d non2xx=%d errors=%d" ..
      " p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration, p, r, x,
      e.connect + e.read + e.write + e.timeout + e.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
