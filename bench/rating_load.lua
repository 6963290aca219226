-- wrk script for bench/api_load.py --generator wrk: each request POSTs one rating to /api/feedback/ as a random rater
-- (API token) on a random entry. The tokens and entry ids come from the Lua file CCRL_WRK_DATA names
-- (`tokens = {...}; entries = {...}`), written by the benchmark.
dofile(os.getenv("CCRL_WRK_DATA"))
local values = {"up", "down"}
local statuses = {}

function setup(thread)
  thread:set("id", #statuses + 1)
  table.insert(statuses, thread)
end

function init(args)
  math.randomseed(os.time() + id)
  counts = {}
end

function request()
  local token = tokens[math.random(#tokens)]
  local entry = entries[math.random(#entries)]
  local body = string.format('{"entry_id": "%s", "rating": "%s", "tags": ["bench"], "notes": "wrk"}', entry, values[math.random(2)])
  return wrk.format("POST", "/api/feedback/", {["Content-Type"] = "application/json", ["Authorization"] = "Token " .. token}, body)
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local p = latency:percentile(99.0) / 1000.0
  io.write(string.format("wrk: %d requests in %.1f s: %.1f requests/s; latency p50 %.1f ms, p99 %.1f ms; non-2xx or errors %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6), latency:percentile(50.0) / 1000.0, p,
    (summary.errors.status or 0) + (summary.errors.connect or 0) + (summary.errors.read or 0) + (summary.errors.write or 0) + (summary.errors.timeout or 0)))
end
