-- wrk: POST /v1/signups at a fixed arrival rate, as close to open loop as wrk allows (used by
-- scripts/soak). Arguments after --: a run label (keeps addresses and names unique across
-- runs against one database) and the rate of this wrk thread, in requests a second.
--
-- wrk calls delay() before each request on a connection. Each thread keeps one schedule, a
-- request every 1000/rate ms from its start, and hands the next slot of it to whichever of
-- its connections is free: so the arrivals keep their pace while answers are slow, as long as
-- a connection is free, and a slot missed while all of them were busy is sent as soon as one
-- is (no arrival is dropped; the rate a run achieved says how close it came).
-- wrk times a request from when it is written, not from its slot: the latencies are the
-- service time, without the wait for a free connection (which the achieved rate shows).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clock, soak_timespec *ts);
]]
local ts = ffi.new("soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  label = args[1] or "s"
  period = 1000 / tonumber(args[2] or "100")
  n = 0
  next_at = nil
end

function delay()
  local now = now_ms()
  if next_at == nil then next_at = now end
  local at = next_at
  next_at = next_at + period
  if at <= now then return 0 end
  return math.floor(at - now)
end

function request()
  n = n + 1
  local who = string.format("%s-%d-%d", label, tid, n)
  local body = string.format('{"name":"soak%s","email":"soak%s@soak.example"}', who, who)
  return wrk.format("POST", "/v1/signups", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-key",
  }, body)
end
