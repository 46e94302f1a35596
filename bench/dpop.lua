-- wrk script: client_credentials with a DPoP proof per request. Proofs are single-use, so each
-- thread reads its own file of proofs made before the run (PROOFS.<thread number>, from
-- benches/dpop_proofs.rs) and sends the next one with each request.
local thread_no = 0
function setup(thread)
  thread:set("file", os.getenv("PROOFS") .. "." .. thread_no)
  thread_no = thread_no + 1
end

local proofs, next_proof = {}, 1
function init(args)
  for line in io.lines(file) do proofs[#proofs + 1] = line end
end

function request()
  local proof = proofs[next_proof] or "exhausted"
  next_proof = next_proof + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = "Basic " .. os.getenv("AUTH"),
    ["DPoP"] = proof,
  }, os.getenv("BODY"))
end
