-- POST /feature-vectors/batch: 100 entities x 10 features per request, cycling through 100
-- different entity windows. args: <entities> <features (comma separated)>
function init(args)
  local entities = tonumber(args[1])
  local features = {}
  for f in string.gmatch(args[2], "[^,]+") do
    table.insert(features, '"' .. f .. '"')
  end
  local feature_list = table.concat(features, ",")
  bodies = {}
  for b = 0, 99 do
    local ids = {}
    for i = 0, 99 do
      table.insert(ids, '"u' .. ((b * 977 + i * 13) % entities) .. '"')
    end
    bodies[b + 1] = '{"entity_ids":[' .. table.concat(ids, ",") .. '],"features":[' .. feature_list .. ']}'
  end
  n = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  n = n + 1
  return wrk.format("POST", "/api/v1/feature-vectors/batch", nil, bodies[(n % 100) + 1])
end
function response(status, headers, body)
  if status ~= 200 then
    print("unexpected status " .. status .. ": " .. body)
    wrk.thread:stop()
  end
end
