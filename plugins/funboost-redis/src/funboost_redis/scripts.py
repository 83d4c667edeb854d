"""Lua scripts. Every key of a queue shares the hash tag ``{queue}``, so a script that builds further
key names from ``base`` (ARGV[1]) stays inside one Cluster slot.

Key layout under ``base = "<prefix>:{<queue>}:"``:

* ``ready`` (list kinds) or ``ready:0`` .. ``ready:9`` (priority kind): LPUSH to publish, RPOP to take (FIFO)
* ``delayed``: sorted set, score = eta; member = 16-char unique id + priority digit + body
* ``consumers``: set of consumer ids that may own in-flight work
* ``hb:<consumer>``: heartbeat key with a TTL; its absence means the consumer is dead
* ``inflight:<consumer>``: hash delivery-id -> body (priority kind: priority digit + body)
* ``landing:<consumer>``: list filled by a blocking BLMOVE while a consumer waits on an empty queue
* ``stream``: the stream of the stream kind (field ``b`` = body), group ``funboost``
* ``reclaim_lock``: lets only one consumer per interval scan for dead consumers
"""

# Shared Lua prelude: key helpers and promotion of due delayed messages.
_PRELUDE = r"""
local base = ARGV[1]
local nprio = tonumber(ARGV[2])
local function ready_key(p)
  if nprio <= 1 then return base .. 'ready' end
  return base .. 'ready:' .. p
end
local function push_many(cmd, key, vals)
  for i = 1, #vals, 1000 do
    redis.call(cmd, key, unpack(vals, i, math.min(i + 999, #vals)))
  end
end
-- due delayed messages go to the back of their ready list; returns the next eta or ''
local function promote(delayed, now, to_stream)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    for _, m in ipairs(due) do
      if to_stream then
        redis.call('XADD', to_stream, '*', 'b', string.sub(m, 18))
      else
        redis.call('LPUSH', ready_key(string.sub(m, 17, 17)), string.sub(m, 18))
      end
    end
    push_many('ZREM', delayed, due)
  end
  local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #nxt > 0 then return nxt[2] end
  return ''
end
"""

# Plain list (at-most-once). KEYS: delayed. ARGV: base, nprio(=1), now, n
FETCH_PLAIN = _PRELUDE + r"""
local out = {promote(KEYS[1], ARGV[3], nil)}
local vals = redis.call('RPOP', ready_key('0'), tonumber(ARGV[4]))
if vals then
  for _, v in ipairs(vals) do out[#out + 1] = v end
end
return out
"""

# Reliable list / priority fetch: moves up to n messages into this consumer's in-flight hash.
# KEYS: delayed, inflight, landing, hb, consumers. ARGV: base, nprio, now, n, first_id, hb_ttl_ms, cid
# Returns {next_eta, last_id_used, id1, body1, id2, body2, ...}
FETCH_RELIABLE = _PRELUDE + r"""
local nxt = promote(KEYS[1], ARGV[3], nil)
redis.call('SET', KEYS[4], '1', 'PX', ARGV[6])
redis.call('SADD', KEYS[5], ARGV[7])
local want = tonumber(ARGV[4])
local id = tonumber(ARGV[5])
local out = {nxt, 0}
local hs = {}
local function take(v, p)
  id = id + 1
  hs[#hs + 1] = id
  if nprio > 1 then hs[#hs + 1] = p .. v else hs[#hs + 1] = v end
  out[#out + 1] = id
  out[#out + 1] = v
end
-- a blocking wait already moved these (ack-able kind only)
local land = redis.call('LRANGE', KEYS[3], 0, -1)
if #land > 0 then
  for i = #land, 1, -1 do take(land[i], '0') end
  redis.call('DEL', KEYS[3])
  want = want - #land
end
if nprio <= 1 then
  if want > 0 then
    local vals = redis.call('RPOP', ready_key('0'), want)
    if vals then for _, v in ipairs(vals) do take(v, '0') end end
  end
else
  for p = nprio - 1, 0, -1 do
    if want <= 0 then break end
    local vals = redis.call('RPOP', ready_key(tostring(p)), want)
    if vals then
      for _, v in ipairs(vals) do take(v, tostring(p)) end
      want = want - #vals
    end
  end
end
if #hs > 0 then
  for i = 1, #hs, 1000 do
    redis.call('HSET', KEYS[2], unpack(hs, i, math.min(i + 999, #hs)))
  end
end
out[2] = id
return out
"""

# Put deliveries back at the back of their ready list. KEYS: inflight. ARGV: base, nprio, id...
REQUEUE_RELIABLE = _PRELUDE + r"""
local n = 0
for i = 3, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    redis.call('HDEL', KEYS[1], ARGV[i])
    if nprio > 1 then
      redis.call('LPUSH', ready_key(string.sub(v, 1, 1)), string.sub(v, 2))
    else
      redis.call('LPUSH', ready_key('0'), v)
    end
    n = n + 1
  end
end
return n
"""

# Give the in-flight work of dead consumers back (front of the line) -- or, with ARGV[5] = a consumer
# id, release that consumer's own work on close. A consumer whose heartbeat key exists is never touched.
# KEYS: consumers, reclaim_lock. ARGV: base, nprio, lock_token, lock_ttl_ms, release_cid
RECLAIM_RELIABLE = _PRELUDE + r"""
local function give_back(cid)
  local inflight = base .. 'inflight:' .. cid
  local landing = base .. 'landing:' .. cid
  local vals = redis.call('HVALS', inflight)
  for _, v in ipairs(vals) do
    if nprio > 1 then
      redis.call('RPUSH', ready_key(string.sub(v, 1, 1)), string.sub(v, 2))
    else
      redis.call('RPUSH', ready_key('0'), v)
    end
  end
  local land = redis.call('LRANGE', landing, 0, -1)
  for i = #land, 1, -1 do redis.call('RPUSH', ready_key('0'), land[i]) end
  redis.call('DEL', inflight, landing)
  redis.call('SREM', KEYS[1], cid)
  return #vals + #land
end
if ARGV[5] ~= '' then
  redis.call('DEL', base .. 'hb:' .. ARGV[5])
  return give_back(ARGV[5])
end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return -1 end
local moved = 0
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', base .. 'hb:' .. cid) == 0 then
    moved = moved + give_back(cid)
  end
end
return moved
"""

# KEYS: consumers, delayed. ARGV: base, nprio. Returns {ready, in_flight, delayed}
SIZE_LIST = _PRELUDE + r"""
local ready = 0
if nprio > 1 then
  for p = 0, nprio - 1 do ready = ready + redis.call('LLEN', ready_key(tostring(p))) end
else
  ready = redis.call('LLEN', ready_key('0'))
end
local inflight = 0
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  inflight = inflight + redis.call('HLEN', base .. 'inflight:' .. cid)
  inflight = inflight + redis.call('LLEN', base .. 'landing:' .. cid)
end
return {ready, inflight, redis.call('ZCARD', KEYS[2])}
"""

# KEYS: delayed[, consumers]. ARGV: base, nprio. Drops ready and delayed messages (and what dead consumers
# held), returns how many.
PURGE_LIST = _PRELUDE + r"""
local n = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1])
if nprio > 1 then
  for p = 0, nprio - 1 do
    n = n + redis.call('LLEN', ready_key(tostring(p)))
    redis.call('DEL', ready_key(tostring(p)))
  end
else
  n = n + redis.call('LLEN', ready_key('0'))
  redis.call('DEL', ready_key('0'))
end
-- KEYS[2] (the at-least-once kinds): the consumers set; what a consumer whose heartbeat expired held
-- would come back at the next reclaim pass and run after the purge, so it goes too
if KEYS[2] then
  for _, cid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('EXISTS', base .. 'hb:' .. cid) == 0 then
      local inflight = base .. 'inflight:' .. cid
      local landing = base .. 'landing:' .. cid
      n = n + redis.call('HLEN', inflight) + redis.call('LLEN', landing)
      redis.call('DEL', inflight, landing)
      redis.call('SREM', KEYS[2], cid)
    end
  end
end
return n
"""

# ---------------------------------------------------------------- streams
_STREAM_REQUEUE_FN = r"""
-- copy an entry to the end of the stream as a new entry, then ack and delete the old one
local function requeue_entry(stream, group, id)
  local e = redis.call('XRANGE', stream, id, id)
  if #e > 0 then redis.call('XADD', stream, '*', unpack(e[1][2])) end
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  return #e
end
"""

# KEYS: delayed, stream, hb, consumers. ARGV: base, nprio(=1), now, n, group, cid, hb_ttl_ms
# Returns {next_eta, id1, body1, ...}; raises NOGROUP if the group does not exist yet.
FETCH_STREAM = _PRELUDE + r"""
local out = {promote(KEYS[1], ARGV[3], KEYS[2])}
redis.call('SET', KEYS[3], '1', 'PX', ARGV[7])
redis.call('SADD', KEYS[4], ARGV[6])
local r = redis.call('XREADGROUP', 'GROUP', ARGV[5], ARGV[6], 'COUNT', ARGV[4], 'STREAMS', KEYS[2], '>')
if r then
  for _, e in ipairs(r[1][2]) do
    out[#out + 1] = e[1]
    local f = e[2]
    local body = ''
    for i = 1, #f, 2 do if f[i] == 'b' then body = f[i + 1] end end
    out[#out + 1] = body
  end
end
return out
"""

# KEYS: stream. ARGV: group, id...
ACK_STREAM = r"""
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
for i = 1, #ids, 1000 do
  local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
  redis.call('XACK', KEYS[1], ARGV[1], unpack(chunk))
  redis.call('XDEL', KEYS[1], unpack(chunk))
end
return #ids
"""

# KEYS: stream. ARGV: group, id...
REQUEUE_STREAM = _STREAM_REQUEUE_FN + r"""
local n = 0
for i = 2, #ARGV do n = n + requeue_entry(KEYS[1], ARGV[1], ARGV[i]) end
return n
"""

# The pending entries of a dead consumer are re-added as new entries (so that any live consumer takes
# them) rather than XAUTOCLAIMed: XAUTOCLAIM picks by idle time from every consumer, including live ones
# running a long task. KEYS: consumers, reclaim_lock, stream. ARGV: base, group, token, ttl_ms, release_cid
RECLAIM_STREAM = _STREAM_REQUEUE_FN + r"""
local base = ARGV[1]
local function give_back(cid)
  local n = 0
  while true do
    local ok, p = pcall(redis.call, 'XPENDING', KEYS[3], ARGV[2], '-', '+', 500, cid)
    if not ok or #p == 0 then break end
    for _, e in ipairs(p) do n = n + requeue_entry(KEYS[3], ARGV[2], e[1]) end
  end
  pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[3], ARGV[2], cid)
  redis.call('SREM', KEYS[1], cid)
  return n
end
if ARGV[5] ~= '' then
  redis.call('DEL', base .. 'hb:' .. ARGV[5])
  return give_back(ARGV[5])
end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return -1 end
local moved = 0
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', base .. 'hb:' .. cid) == 0 then moved = moved + give_back(cid) end
end
return moved
"""

# KEYS: stream, delayed, consumers. ARGV: group, base. Drops undelivered entries, delayed ones and what dead
# consumers held.
PURGE_STREAM = r"""
local n = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[2])
local last = nil
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    local name, lid = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then lid = g[i + 1] end
    end
    if name == ARGV[1] then last = lid end
  end
end
local start = '-'
if last then start = '(' .. last end
while true do
  local e = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  if #e == 0 then break end
  local ids = {}
  for _, x in ipairs(e) do ids[#ids + 1] = x[1] end
  redis.call('XDEL', KEYS[1], unpack(ids))
  n = n + #ids
end
-- what a consumer whose heartbeat expired held would come back at the next reclaim pass and run after
-- the purge: acked and deleted too (a living consumer's pending entries stay: they are running)
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('EXISTS', ARGV[2] .. 'hb:' .. cid) == 0 then
    while true do
      local okp, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 500, cid)
      if not okp or #p == 0 then break end
      local ids = {}
      for _, x in ipairs(p) do ids[#ids + 1] = x[1] end
      redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
      n = n + redis.call('XDEL', KEYS[1], unpack(ids))
    end
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], cid)
    redis.call('SREM', KEYS[3], cid)
  end
end
return n
"""

# KEYS: stream, delayed. ARGV: group. Returns {ready, pending, delayed}
SIZE_STREAM = r"""
local len = redis.call('XLEN', KEYS[1])
local pending = 0
local ok, s = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if ok then pending = s[1] end
return {len - pending, pending, redis.call('ZCARD', KEYS[2])}
"""
