-- wrk script: POST a fixed JSON body with the Key Protect headers given in the environment.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/vnd.ibm.kms.key_action+json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["bluemix-instance"] = os.getenv("BENCH_INSTANCE")

-- Count non-2xx answers so a benchmark of errors cannot pass for a benchmark of work.
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("non2xx=%d\n", bad))
end
