-- GET one vector per request, cycling through entity ids; each thread walks its own slice.
-- args: <entities> <threads> <feature> <entity id prefix>
local id = 0
local tid = 0
function setup(thread)
  thread:set("id", tid)
  tid = tid + 1
end
function init(args)
  entities = tonumber(args[1])
  threads = tonumber(args[2])
  feature = args[3]
  prefix = args[4] or ""
  counter = 0
end
function request()
  local e = (counter * threads + id) % entities
  counter = counter + 1
  return wrk.format("GET", "/api/v1/feature-vectors?entity_id=" .. prefix .. e .. "&feature_name=" .. feature)
end
function response(status, headers, body)
  if status ~= 200 then
    print("unexpected status " .. status .. ": " .. body)
    wrk.thread:stop()
  end
end
