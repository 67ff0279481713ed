-- wrk: POST /v1/signups with an address and a name no other request uses (no password, so the
-- figure is the pipeline's, not argon2's). The run label (first argument after --) keeps runs
-- against one database apart.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  label = args[1] or "r"
  n = 0
end
function request()
  n = n + 1
  local who = string.format("%s-%d-%d", label, tid, n)
  local body = string.format('{"name":"b%s","email":"b%s@bench.example"}', who, who)
  return wrk.format("POST", "/v1/signups", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-key",
  }, body)
end
