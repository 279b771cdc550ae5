-- wrk script of `make bench`'s flat load phase (crates/etl-bench/src/wrk.rs):
-- each request posts the next of the bodies the bench wrote for this
-- thread, one new company each; `done` prints the run as one JSON line.
--   wrk ... -s companies.lua URL -- BODIES_DIR

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1] .. "/bodies-" .. id .. ".ndjson") do
    bodies[#bodies + 1] = line
  end
  next_body = 1
  -- Times this thread ran out of bodies and started over: its later
  -- requests post companies it posted before.
  wrapped = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  local body = bodies[next_body]
  next_body = next_body + 1
  if next_body > #bodies then
    next_body = 1
    wrapped = wrapped + 1
  end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    wrapped = wrapped + thread:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    '{"wrk":1,"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%.0f,"p99_us":%.0f,"wrapped":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), wrapped))
end
