-- wrk script: the refresh_token grant. Refresh tokens are single-use and rotate, so each
-- thread keeps a queue of live tokens (one family per connection, seeded from SEED, a
-- comma-separated list) and replaces each token with the one its response returns.
-- wrk calls request() once more than it sends (to check the script): seed one spare token
-- per thread.
local thread_no = 0
function setup(thread)
  local all = {}
  for t in string.gmatch(os.getenv("SEED"), "[^,]+") do table.insert(all, t) end
  local per = math.floor(#all / tonumber(os.getenv("THREADS")))
  local mine = {}
  for i = thread_no * per + 1, (thread_no + 1) * per do table.insert(mine, all[i]) end
  thread:set("seed", table.concat(mine, ","))
  thread_no = thread_no + 1
end

local queue = {}
function init(args)
  for t in string.gmatch(seed, "[^,]+") do table.insert(queue, t) end
end

function request()
  local token = table.remove(queue, 1) or "exhausted"
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "Basic " .. os.getenv("AUTH"),
  }, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local token = string.match(body, '"refresh_token":"([^"]+)"')
  if token then table.insert(queue, token) end
end
