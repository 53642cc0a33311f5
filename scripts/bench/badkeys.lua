-- wrk script: POST /identity/token with a different bad API key each request, as fast as the
-- connections go (scripts/flood.sh). The keys are well-formed (kw<id>.<43 chars>) so each is looked
-- up, not refused by its shape.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    "grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=kw%020d.%s",
    n, string.rep("C", 43))
  return wrk.format(nil, "/identity/token", nil, body)
end
