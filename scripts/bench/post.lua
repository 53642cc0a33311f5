-- wrk script: POST a fixed JSON body with the Key Protect headers given in the environment.
-- No `response` callback: wrk counts non-2xx answers itself ("Non-2xx or 3xx responses", read by
-- scripts/bench.sh, so a benchmark of errors cannot pass for a benchmark of work), and a Lua
-- callback per response cost the load generator 4-6 us more CPU per request on the cores it
-- shares with the server (measured: 24-26 against 18-23 us per wrap), a bias against POSTs only.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/vnd.ibm.kms.key_action+json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["bluemix-instance"] = os.getenv("BENCH_INSTANCE")
