-- wrk script: creates root keys named key-<thread>-<n> until each thread has made BENCH_PER_THREAD
-- (scripts/bench/many_keys.sh). Counts 2xx answers only, so failures are made up for.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  made, sent = 0, 0
  target = tonumber(os.getenv("BENCH_PER_THREAD"))
  headers = {
    ["Content-Type"] = "application/vnd.ibm.kms.key+json",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
    ["bluemix-instance"] = os.getenv("BENCH_INSTANCE"),
  }
end

function request()
  sent = sent + 1
  local body = string.format('{"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"key-%d-%d","extractable":false}]}', tid, sent)
  return wrk.format("POST", "/api/v2/keys", headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    made = made + 1
  end
  if made >= target then
    wrk.thread:stop()
  end
end
