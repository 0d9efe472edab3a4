#!lua name=redlock_v2
-- redlock-c's scripts as a Redis Functions library, for servers where
-- EVAL/EVALSHA are not permitted but FCALL is. Generated from scripts.h
-- (make functions-file); do not edit: a change needs a new version.
-- Load it once per node (every primary of a cluster):
--   redis-cli -x FUNCTION LOAD < functions/redlock_v2.lua
--   redlock functions load -u redis://HOST:PORT

local function acquire(KEYS, ARGV)
-- acquire: take the lock if it is free; if it is ours already, reset its TTL
-- KEYS: lock, fence counter   ARGV: owner value, ttl ms, fencing '1'/'0'
-- {1, token}: taken   {2, token}: ours already   {0, pttl}: another owner
local lock, fence = KEYS[1], KEYS[2]
local value, ttl, fencing = ARGV[1], ARGV[2], ARGV[3] == '1'
local holder = redis.call('GET', lock)
if holder == value then
  -- a retry after a lost reply, or the same owner again: same token
  redis.call('PEXPIRE', lock, ttl)
  local token = 0
  if fencing then token = tonumber(redis.call('GET', fence) or 0) end
  return {2, token}
end
if holder then return {0, redis.call('PTTL', lock)} end
redis.call('SET', lock, value, 'PX', ttl)
local token = 0
if fencing then
  if redis.call('EXISTS', fence) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', fence, t[1] .. string.format('%06d', tonumber(t[2])))
  end
  token = redis.call('INCR', fence)
end
return {1, token}
end
redis.register_function{function_name = 'redlock_v2_acquire', callback = acquire}

local function fair_acquire(KEYS, ARGV)
-- fair acquire: as acquire, but a free lock goes to the first in line
-- KEYS: lock, fence counter, queue (ZSET of waiting values by arrival),
--       alive (ZSET of waiters' lease expiry, node ms)
-- ARGV: owner value, ttl ms, fencing '1'/'0', enqueue '1'/'0',
--       queue score ('' : the node's clock), lease ms
-- {1, token} taken  {2, token} ours already  {0, pttl} another owner
-- {3, ms} free, but another waiter is first (ms: that waiter's lease left)
local lock, fence, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local value, ttl, fencing = ARGV[1], ARGV[2], ARGV[3] == '1'
local enqueue, score, lease = ARGV[4] == '1', ARGV[5], tonumber(ARGV[6])
local holder = redis.call('GET', lock)
if holder == value then
  redis.call('PEXPIRE', lock, ttl)
  redis.call('ZREM', queue, value)
  redis.call('ZREM', alive, value)
  local token = 0
  if fencing then token = tonumber(redis.call('GET', fence) or 0) end
  return {2, token}
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- waiters that stopped renewing their lease leave the line
local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now, 'LIMIT', 0, 64)
for _, w in ipairs(dead) do
  redis.call('ZREM', queue, w)
  redis.call('ZREM', alive, w)
end
local code, left = 0, 0
if holder then
  left = redis.call('PTTL', lock)
else
  -- the head of the line, skipping entries whose lease is gone
  local head, expiry
  for _ = 1, 64 do
    head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then break end
    expiry = redis.call('ZSCORE', alive, head)
    if expiry then break end
    redis.call('ZREM', queue, head)
  end
  if not head or head == value then
    redis.call('SET', lock, value, 'PX', ttl)
    redis.call('ZREM', queue, value)
    redis.call('ZREM', alive, value)
    local token = 0
    if fencing then
      if redis.call('EXISTS', fence) == 0 then
        local t = redis.call('TIME')
        redis.call('SET', fence, t[1] .. string.format('%06d', tonumber(t[2])))
      end
      token = redis.call('INCR', fence)
    end
    return {1, token}
  end
  code, left = 3, tonumber(expiry) - now
end
if enqueue then
  -- join the line (keeping an earlier place) and renew the lease
  if score == '' then score = now end
  redis.call('ZADD', queue, 'NX', score, value)
  redis.call('ZADD', alive, now + lease, value)
  redis.call('PEXPIRE', queue, lease * 2)
  redis.call('PEXPIRE', alive, lease * 2)
end
return {code, left}
end
redis.register_function{function_name = 'redlock_v2_fair_acquire', callback = fair_acquire}

local function dequeue(KEYS, ARGV)
-- dequeue: leave the line; if we were first and the lock is free, the next
-- in line takes it: tell that one
-- KEYS: queue, alive, lock   ARGV: owner value, waiters' channel prefix
local queue, alive, lock = KEYS[1], KEYS[2], KEYS[3]
local value, prefix = ARGV[1], ARGV[2]
local head = redis.call('ZRANGE', queue, 0, 0)[1]
redis.call('ZREM', queue, value)
redis.call('ZREM', alive, value)
if head == value and redis.call('EXISTS', lock) == 0 then
  -- tell the first waiter in line whose lease is alive (on its own channel),
  -- dropping dead ones: a release wakes one waiter, not all of them
  local tm = redis.call('TIME')
  local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
  for _ = 1, 64 do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then break end
    local expiry = redis.call('ZSCORE', alive, head)
    if expiry and tonumber(expiry) > now then
      redis.call('PUBLISH', prefix .. head, 'released')
      break
    end
    redis.call('ZREM', queue, head)
    redis.call('ZREM', alive, head)
  end
end
return 1
end
redis.register_function{function_name = 'redlock_v2_dequeue', callback = dequeue, flags = {'allow-oom'}}

local function release(KEYS, ARGV)
-- release: delete the lock if it is ours, and wake the waiters
-- KEYS: lock   ARGV: owner value, release channel
-- 1 released   0 no such key   -1 another owner
local lock = KEYS[1]
local value, channel = ARGV[1], ARGV[2]
local holder = redis.call('GET', lock)
if holder == value then
  redis.call('DEL', lock)
  redis.call('PUBLISH', channel, 'released')
  return 1
end
if holder then return -1 end
return 0
end
redis.register_function{function_name = 'redlock_v2_release', callback = release, flags = {'allow-oom'}}

local function refresh(KEYS, ARGV)
-- refresh: reset the TTL if the lock is ours; with repair, also set it
-- where it is missing (a node that restarted empty; never over another)
-- KEYS: lock   ARGV: owner value, ttl ms, repair '1'/'0'
-- 1 extended   2 set again   0 no such key   -1 another owner
local lock = KEYS[1]
local value, ttl, repair = ARGV[1], ARGV[2], ARGV[3] == '1'
local holder = redis.call('GET', lock)
if holder == value then
  redis.call('PEXPIRE', lock, ttl)
  return 1
end
if holder then return -1 end
if repair then
  redis.call('SET', lock, value, 'PX', ttl)
  return 2
end
return 0
end
redis.register_function{function_name = 'redlock_v2_refresh', callback = refresh, flags = {'allow-oom'}}

local function raise(KEYS, ARGV)
-- raise: lift the fence counter to at least token (quorum fencing)
-- KEYS: fence counter   ARGV: token    returns the counter after
local fence = KEYS[1]
local token = tonumber(ARGV[1])
local counter = tonumber(redis.call('GET', fence) or 0)
if counter < token then
  redis.call('SET', fence, ARGV[1])
  return token
end
return counter
end
redis.register_function{function_name = 'redlock_v2_raise', callback = raise}

local function status(KEYS, ARGV)
-- status: look without touching
-- KEYS: lock, fence counter   {holder value or nil, pttl, counter or nil}
local lock, fence = KEYS[1], KEYS[2]
return {redis.call('GET', lock), redis.call('PTTL', lock), redis.call('GET', fence)}
end
redis.register_function{function_name = 'redlock_v2_status', callback = status, flags = {'no-writes'}}

local function release_sharded(KEYS, ARGV)
-- release on a cluster: as release, but the wake-up goes to a shard channel
-- in the lock's slot (SPUBLISH), so it never crosses the cluster bus
-- KEYS: lock, release channel   ARGV: owner value
-- 1 released   0 no such key   -1 another owner
local lock, channel = KEYS[1], KEYS[2]
local value = ARGV[1]
local holder = redis.call('GET', lock)
if holder == value then
  redis.call('DEL', lock)
  redis.call('SPUBLISH', channel, 'released')
  return 1
end
if holder then return -1 end
return 0
end
redis.register_function{function_name = 'redlock_v2_release_sharded', callback = release_sharded, flags = {'allow-oom'}}

local function dequeue_sharded(KEYS, ARGV)
-- dequeue on a cluster: as dequeue, on the next waiter's shard channel
-- (in the lock's slot: the prefix carries the lock's hash tag)
-- KEYS: queue, alive, lock   ARGV: owner value, waiters' channel prefix
local queue, alive, lock = KEYS[1], KEYS[2], KEYS[3]
local value, prefix = ARGV[1], ARGV[2]
local head = redis.call('ZRANGE', queue, 0, 0)[1]
redis.call('ZREM', queue, value)
redis.call('ZREM', alive, value)
if head == value and redis.call('EXISTS', lock) == 0 then
  -- tell the first waiter in line whose lease is alive (on its own channel),
  -- dropping dead ones: a release wakes one waiter, not all of them
  local tm = redis.call('TIME')
  local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
  for _ = 1, 64 do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then break end
    local expiry = redis.call('ZSCORE', alive, head)
    if expiry and tonumber(expiry) > now then
      redis.call('SPUBLISH', prefix .. head, 'released')
      break
    end
    redis.call('ZREM', queue, head)
    redis.call('ZREM', alive, head)
  end
end
return 1
end
redis.register_function{function_name = 'redlock_v2_dequeue_sharded', callback = dequeue_sharded, flags = {'allow-oom'}}

local function release_fair(KEYS, ARGV)
-- release in fair mode: delete the lock if it is ours, and wake only the
-- next waiter in line
-- KEYS: lock, queue, alive   ARGV: owner value, waiters' channel prefix
-- 1 released   0 no such key   -1 another owner
local lock, queue, alive = KEYS[1], KEYS[2], KEYS[3]
local value, prefix = ARGV[1], ARGV[2]
local holder = redis.call('GET', lock)
if holder ~= value then
  if holder then return -1 end
  return 0
end
redis.call('DEL', lock)
-- tell the first waiter in line whose lease is alive (on its own channel),
-- dropping dead ones: a release wakes one waiter, not all of them
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
for _ = 1, 64 do
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  if not head then break end
  local expiry = redis.call('ZSCORE', alive, head)
  if expiry and tonumber(expiry) > now then
    redis.call('PUBLISH', prefix .. head, 'released')
    break
  end
  redis.call('ZREM', queue, head)
  redis.call('ZREM', alive, head)
end
return 1
end
redis.register_function{function_name = 'redlock_v2_release_fair', callback = release_fair, flags = {'allow-oom'}}

local function release_fair_sharded(KEYS, ARGV)
-- release in fair mode on a cluster: as release in fair mode, on the next
-- waiter's shard channel (in the lock's slot)
-- KEYS: lock, queue, alive   ARGV: owner value, waiters' channel prefix
-- 1 released   0 no such key   -1 another owner
local lock, queue, alive = KEYS[1], KEYS[2], KEYS[3]
local value, prefix = ARGV[1], ARGV[2]
local holder = redis.call('GET', lock)
if holder ~= value then
  if holder then return -1 end
  return 0
end
redis.call('DEL', lock)
-- tell the first waiter in line whose lease is alive (on its own channel),
-- dropping dead ones: a release wakes one waiter, not all of them
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
for _ = 1, 64 do
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  if not head then break end
  local expiry = redis.call('ZSCORE', alive, head)
  if expiry and tonumber(expiry) > now then
    redis.call('SPUBLISH', prefix .. head, 'released')
    break
  end
  redis.call('ZREM', queue, head)
  redis.call('ZREM', alive, head)
end
return 1
end
redis.register_function{function_name = 'redlock_v2_release_fair_sharded', callback = release_fair_sharded, flags = {'allow-oom'}}
