#!lua name=agile
-- The swap store's fence, run by Redis itself (docs/redis-store.md).
-- Loaded once per master by the operator (an admin user):
--   redis-cli -h H -p P FUNCTION LOAD REPLACE "$(cat agile_fence.lua)"
-- Host users may FCALL these but not FUNCTION LOAD, so a host cannot change
-- the fence. Every function works on one page group: KEYS[1] is the group's
-- owner key (it holds sha1(token) of the owning host, never the token),
-- KEYS[2] its data hash, whose name is derived from the token too, so a host
-- without the token can neither pass the check nor name the data.

local function refuse(what)
  return redis.error_reply('AGILE_NOTOWNER ' .. what)
end

-- nil when token owns the group, else the refusal to return.
local function check(keys, token)
  local o = redis.call('GET', keys[1])
  if not o then return refuse('no owner: namespace not claimed (or released)') end
  if o ~= redis.sha1hex(token) then return refuse('the namespace is owned by another token') end
  return nil
end

-- claim(owner; token): take an unowned group; idempotent for the same token.
redis.register_function('agile_claim', function(keys, args)
  local h = redis.sha1hex(args[1])
  local o = redis.call('GET', keys[1])
  if o and o ~= h then return refuse('the namespace is owned by another host') end
  redis.call('SET', keys[1], h)
  return 'OK'
end)

-- put(owner, data; token, idx1, page1, idx2, page2, ...)
redis.register_function('agile_put', function(keys, args)
  local e = check(keys, args[1]); if e then return e end
  redis.call('HSET', keys[2], unpack(args, 2))
  return 'OK'
end)

-- get(owner, data; token, idx1, idx2, ...) -> pages (nil where absent)
redis.register_function{function_name='agile_get', flags={'no-writes'}, callback=function(keys, args)
  local e = check(keys, args[1]); if e then return e end
  return redis.call('HMGET', keys[2], unpack(args, 2))
end}

-- del(owner, data; token, idx...) -> pages deleted
redis.register_function('agile_del', function(keys, args)
  local e = check(keys, args[1]); if e then return e end
  return redis.call('HDEL', keys[2], unpack(args, 2))
end)

-- count(owner, data; token) -> pages held in the group
redis.register_function{function_name='agile_count', flags={'no-writes'}, callback=function(keys, args)
  local e = check(keys, args[1]); if e then return e end
  return redis.call('HLEN', keys[2])
end}

-- xfer(owner, data_old, data_new; old_token, new_token): hands the group to
-- new_token in one step (the data hash is renamed to the new token's name).
-- Idempotent: a group already held by new_token answers OK, so a transfer
-- cut short is finished by running it again (or undone by swapping tokens).
redis.register_function('agile_xfer', function(keys, args)
  local o = redis.call('GET', keys[1])
  if o and o == redis.sha1hex(args[2]) then return 'OK' end
  local e = check(keys, args[1]); if e then return e end
  if redis.call('EXISTS', keys[2]) == 1 then redis.call('RENAME', keys[2], keys[3]) end
  redis.call('SET', keys[1], redis.sha1hex(args[2]))
  return 'OK'
end)

-- release(owner, data; token): drops the group, pages and owner.
redis.register_function('agile_release', function(keys, args)
  local e = check(keys, args[1]); if e then return e end
  redis.call('DEL', keys[2], keys[1])
  return 'OK'
end)
