-- wrk script: wrap or unwrap against a key chosen at random per request (scripts/bench/many_keys.sh).
-- BENCH_REQUESTS names a file of "key-id ciphertext" lines (ciphertext "-" for wrap); every
-- request is formatted once, in init, so the per-request Lua cost is a random index.
function init(args)
  local op = os.getenv("BENCH_OP")
  local headers = {
    ["Content-Type"] = "application/vnd.ibm.kms.key_action+json",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
    ["bluemix-instance"] = os.getenv("BENCH_INSTANCE"),
  }
  local dek = os.getenv("BENCH_DEK")
  reqs = {}
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    local id, ct = line:match("^(%S+) (%S+)$")
    local body
    if op == "wrap" then
      body = string.format('{"plaintext":"%s","aad":["tenant-a"]}', dek)
    else
      body = string.format('{"ciphertext":"%s","aad":["tenant-a"]}', ct)
    end
    reqs[#reqs + 1] = wrk.format("POST", "/api/v2/keys/" .. id .. "/actions/" .. op, headers, body)
  end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
end

function request()
  return reqs[math.random(#reqs)]
end
