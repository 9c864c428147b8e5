-- wrk script of the HTTP benchmarks (bench/http_verify.py, bench/balancer.py).
--
--   wrk -s bench/wrk/requests.lua URL -- SPEC_FILE
--
-- SPEC_FILE has one request per line, tab-separated: name, method, path, the file holding
-- its body (or "-" for none) and a marker, a string that every good answer to that
-- request holds (and no answer to the others: answers cannot be matched to requests in
-- wrk 4, so they are told apart by their markers). Each connection sends the requests in
-- turn, in the order given, with fixed bodies built once (no Lua work per request).
--
-- Counted per thread: 2xx answers holding each marker, answers that are not 2xx, and 2xx
-- answers holding no marker. done() prints one line, "WRKJSON {...}", with those counts
-- and wrk's own figures (requests, duration, errors, latency percentiles in µs).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function split(line)
  local fields = {}
  for field in string.gmatch(line, "[^\t]+") do
    table.insert(fields, field)
  end
  return fields
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

function init(args)
  specs, prepared, markers = {}, {}, {}
  for line in io.lines(args[1]) do
    if line ~= "" then
      local f = split(line)
      local body = nil
      local headers = {}
      if f[4] ~= "-" then
        body = slurp(f[4])
        headers["Content-Type"] = "application/json"
      end
      table.insert(specs, f[1])
      table.insert(prepared, wrk.format(f[2], f[3], headers, body))
      table.insert(markers, f[5])
    end
  end
  turn = 0
  not_2xx, unmarked = 0, 0
  for i = 1, #specs do
    _G["ok_" .. i] = 0
  end
  nspecs = #specs
end

function request()
  turn = turn % nspecs + 1
  return prepared[turn]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    not_2xx = not_2xx + 1
    return
  end
  for i = 1, nspecs do
    if string.find(body, markers[i], 1, true) then
      _G["ok_" .. i] = _G["ok_" .. i] + 1
      return
    end
  end
  unmarked = unmarked + 1
end

function done(summary, latency, requests)
  local names, counts = {}, {}
  local total_not_2xx, total_unmarked = 0, 0
  for _, thread in ipairs(threads) do
    total_not_2xx = total_not_2xx + thread:get("not_2xx")
    total_unmarked = total_unmarked + thread:get("unmarked")
    local n = thread:get("nspecs")
    for i = 1, n do
      local name = thread:get("specs")[i]
      if counts[name] == nil then
        counts[name] = 0
        table.insert(names, name)
      end
      counts[name] = counts[name] + thread:get("ok_" .. i)
    end
  end
  local ok = {}
  for _, name in ipairs(names) do
    table.insert(ok, string.format('"%s":%d', name, counts[name]))
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"ok":{%s},"not_2xx":%d,' ..
    '"unmarked":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, table.concat(ok, ","), total_not_2xx,
    total_unmarked, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
