#!lua name=redlock_v2
-- redlock-c's scripts as a Redis Functions library, for servers where
-- EVAL/EVALSHA are not permitted but FCALL is. Generated from scripts.h
-- (make functions-file); do not edit: a change needs a new version.
-- Load it once per node (every primary of a cluster):
--   redis-cli -x FUNCTION LOAD < functions/redlock_v2.lua
--   redlock functions load -u redis://HOST:PORT

local function acquire(KEYS, ARGV)
-- acquire: take the lock if it is free; if it is ours already, reset its TTL
-- KEYS: lock, fence counter, writers waiting (read-write locks: ZSET by
--       place expiry, server ms)
-- ARGV: owner value, ttl ms, fencing '1'/'0', place lease ms ('': none)
-- {1, token}: taken   {2, token}: ours already   {0, pttl}: another owner
-- {5, pttl}: readers hold it; with a place lease we wait as a writer, and
-- new readers wait behind us
local lock, fence, writers = KEYS[1], KEYS[2], KEYS[3]
local value, ttl, fencing, place = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local holder = redis.call('GET', lock)
if holder == value then
  -- a retry after a lost reply, or the same owner again: same token
  redis.call('PEXPIRE', lock, ttl)
  local token = 0
  if fencing then token = tonumber(redis.call('GET', fence) or 0) end
  return {2, token}
end
if holder == 'redlock:readers' then
  if place ~= '' then
    local tm = redis.call('TIME')
    local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
    redis.call('ZADD', writers, now + tonumber(place), value)
    redis.call('PEXPIRE', writers, tonumber(place) * 2)
  end
  return {5, redis.call('PTTL', lock)}
end
if holder then return {0, redis.call('PTTL', lock)} end
redis.call('SET', lock, value, 'PX', ttl)
if place ~= '' then redis.call('ZREM', writers, value) end
local token = 0
if fencing then
  token = redis.call('INCR', fence)
  if token == 1 then
    -- a new counter: it starts from the server's clock in microseconds
    local t = redis.call('TIME')
    local seed = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', fence, seed)
    token = tonumber(seed)
  end
end
return {1, token}
end
redis.register_function{function_name = 'redlock_v2_acquire', callback = acquire}

local function fair_acquire(KEYS, ARGV)
-- fair acquire: as acquire, but a free lock goes to the first in line
-- KEYS: lock, fence counter, queue (ZSET of waiting values by arrival),
--       alive (ZSET of waiters' lease expiry, node ms), writers waiting
-- ARGV: owner value, ttl ms, fencing '1'/'0', enqueue '1'/'0',
--       queue score ('' : the node's clock, us), lease ms
-- {1, token} taken  {2, token} ours already  {0, pttl} another owner
-- {3, ms} free, but another waiter is first (ms: that waiter's lease left)
-- {5, pttl} readers hold it (in line, we wait as a writer: see acquire)
local lock, fence, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local writers = KEYS[5]
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
  if holder == 'redlock:readers' then
    code = 5
    if enqueue then
      redis.call('ZADD', writers, now + lease, value)
      redis.call('PEXPIRE', writers, lease * 2)
    end
  end
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
    if enqueue then redis.call('ZREM', writers, value) end
    local token = 0
    if fencing then
      token = redis.call('INCR', fence)
      if token == 1 then
        -- a new counter: it starts from the server's clock in microseconds
        local t = redis.call('TIME')
        local seed = t[1] .. string.format('%06d', tonumber(t[2]))
        redis.call('SET', fence, seed)
        token = tonumber(seed)
      end
    end
    return {1, token}
  end
  code, left = 3, tonumber(expiry) - now
end
if enqueue then
  -- join the line (keeping an earlier place) and renew the lease
  if score == '' then score = tonumber(tm[1]) * 1000000 + tonumber(tm[2]) end
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

local function sem_acquire(KEYS, ARGV)
-- semaphore acquire: a permit if one is free (fair: and nobody is ahead);
-- a permit we hold already gets a new lease
-- KEYS: holders (ZSET by lease end, server ms), tokens (HASH; field '':
--       the permit count), fence counter, queue, alive (place leases)
-- ARGV: owner value, ttl ms, fencing, permits, enqueue, queue score ('':
--       the node's clock), place lease ms, fair
-- {1, token} taken  {2, token} held already  {0, ms} all held (ms: until
-- a lease ends)  {3, ms} one is free, waiters first  {-2, n} n permits
local set, tokens, fence, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local value, ttl, fencing = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local permits, enqueue, score = tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6]
local lease, fair = tonumber(ARGV[7]), ARGV[8] == '1'
local stored = tonumber(redis.call('HGET', tokens, '') or 0)
if stored ~= 0 and stored ~= permits then return {-2, stored} end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZSCORE', set, value) then
  redis.call('ZADD', set, now + ttl, value)
  if enqueue then
    redis.call('ZREM', queue, value)
    redis.call('ZREM', alive, value)
  end
  -- the holders and their tokens live as long as the longest lease
  local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
  local left = math.max(1, tonumber(last) - now)
  redis.call('PEXPIRE', set, left)
  redis.call('PEXPIRE', tokens, left)
  return {2, tonumber(redis.call('HGET', tokens, value) or 0)}
end
if enqueue or fair then
  -- waiters that stopped renewing their place leave the line
  local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now, 'LIMIT', 0, 64)
  for _, w in ipairs(dead) do
    redis.call('ZREM', queue, w)
    redis.call('ZREM', alive, w)
  end
end
local code, left = 0, 0
local free = permits - redis.call('ZCARD', set)
if free > 0 then
  -- fair: as many waiters as permits are free, from the head of the line
  local ahead = 0
  if fair then ahead = redis.call('ZRANK', queue, value) or redis.call('ZCARD', queue) end
  if ahead < free then
    redis.call('ZADD', set, now + ttl, value)
    local token = 0
    if fencing then
      token = redis.call('INCR', fence)
      if token == 1 then
        -- a new counter: it starts from the server's clock in microseconds
        local t = redis.call('TIME')
        local seed = t[1] .. string.format('%06d', tonumber(t[2]))
        redis.call('SET', fence, seed)
        token = tonumber(seed)
      end
      redis.call('HSET', tokens, value, token)
    end
    if stored == 0 then redis.call('HSET', tokens, '', permits) end
    if enqueue then
      redis.call('ZREM', queue, value)
      redis.call('ZREM', alive, value)
    end
    -- the holders and their tokens live as long as the longest lease
    local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
    local left = math.max(1, tonumber(last) - now)
    redis.call('PEXPIRE', set, left)
    redis.call('PEXPIRE', tokens, left)
    return {1, token}
  end
  code = 3
  left = tonumber(redis.call('ZRANGE', alive, 0, 0, 'WITHSCORES')[2] or now) - now
else
  left = tonumber(redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')[2]) - now
end
if enqueue then
  -- join the line (keeping an earlier place) and renew the place's lease
  if score == '' then score = tonumber(tm[1]) * 1000000 + tonumber(tm[2]) end
  redis.call('ZADD', queue, 'NX', score, value)
  redis.call('ZADD', alive, now + lease, value)
  redis.call('PEXPIRE', queue, lease * 2)
  redis.call('PEXPIRE', alive, lease * 2)
end
return {code, left}
end
redis.register_function{function_name = 'redlock_v2_sem_acquire', callback = sem_acquire}

local function sem_release(KEYS, ARGV)
-- semaphore release: give back our permit, and tell the next waiter in line
-- KEYS: holders, tokens, queue, alive
-- ARGV: owner value, waiters' channel prefix
-- 1 released   0 not held (its lease ran out, or it was never taken)
local set, tokens, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local value, prefix = ARGV[1], ARGV[2]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZREM', set, value) == 0 then return 0 end
redis.call('HDEL', tokens, value)
-- the last holder out takes the set's tokens and permit count with it
if redis.call('ZCARD', set) == 0 then redis.call('DEL', tokens) end
-- one permit freed: tell one waiter, the first in line whose place is alive
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
redis.register_function{function_name = 'redlock_v2_sem_release', callback = sem_release, flags = {'allow-oom'}}

local function sem_release_sharded(KEYS, ARGV)
-- semaphore release on a cluster: as semaphore release, on the next
-- waiter's shard channel (in the name's slot)
-- KEYS: holders, tokens, queue, alive
-- ARGV: owner value, waiters' channel prefix
-- 1 released   0 not held (its lease ran out, or it was never taken)
local set, tokens, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local value, prefix = ARGV[1], ARGV[2]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZREM', set, value) == 0 then return 0 end
redis.call('HDEL', tokens, value)
-- the last holder out takes the set's tokens and permit count with it
if redis.call('ZCARD', set) == 0 then redis.call('DEL', tokens) end
-- one permit freed: tell one waiter, the first in line whose place is alive
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
redis.register_function{function_name = 'redlock_v2_sem_release_sharded', callback = sem_release_sharded, flags = {'allow-oom'}}

local function sem_refresh(KEYS, ARGV)
-- semaphore refresh: a new lease for our permit if it is still live; with
-- repair, take it again where it is missing if a permit is free there
-- KEYS: holders, tokens   ARGV: owner value, ttl ms, repair '1'/'0', permits, token
-- 1 extended   2 set again   0 not held   -1 not held, and no permit free
local set, tokens = KEYS[1], KEYS[2]
local value, ttl, repair = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local permits, token = tonumber(ARGV[4]), ARGV[5]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZSCORE', set, value) then
  redis.call('ZADD', set, now + ttl, value)
  -- the holders and their tokens live as long as the longest lease
  local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
  local left = math.max(1, tonumber(last) - now)
  redis.call('PEXPIRE', set, left)
  redis.call('PEXPIRE', tokens, left)
  return 1
end
if not repair then return 0 end
if redis.call('ZCARD', set) >= permits then return -1 end
redis.call('ZADD', set, now + ttl, value)
redis.call('HSET', tokens, value, token, '', permits)
-- the holders and their tokens live as long as the longest lease
local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
local left = math.max(1, tonumber(last) - now)
redis.call('PEXPIRE', set, left)
redis.call('PEXPIRE', tokens, left)
return 2
end
redis.register_function{function_name = 'redlock_v2_sem_refresh', callback = sem_refresh, flags = {'allow-oom'}}

local function sem_dequeue(KEYS, ARGV)
-- semaphore dequeue: leave the line; tell the next waiter if a permit is free
-- KEYS: queue, alive, holders, tokens   ARGV: owner value, waiters' channel prefix
local queue, alive, set, tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local value, prefix = ARGV[1], ARGV[2]
redis.call('ZREM', queue, value)
redis.call('ZREM', alive, value)
local permits = tonumber(redis.call('HGET', tokens, '') or 0)
if permits == 0 or redis.call('ZCARD', set) < permits then
  -- a permit is free: the next waiter in line may take it
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
redis.register_function{function_name = 'redlock_v2_sem_dequeue', callback = sem_dequeue, flags = {'allow-oom'}}

local function sem_dequeue_sharded(KEYS, ARGV)
-- semaphore dequeue on a cluster: as semaphore dequeue, on a shard channel
-- KEYS: queue, alive, holders, tokens   ARGV: owner value, waiters' channel prefix
local queue, alive, set, tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local value, prefix = ARGV[1], ARGV[2]
redis.call('ZREM', queue, value)
redis.call('ZREM', alive, value)
local permits = tonumber(redis.call('HGET', tokens, '') or 0)
if permits == 0 or redis.call('ZCARD', set) < permits then
  -- a permit is free: the next waiter in line may take it
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
redis.register_function{function_name = 'redlock_v2_sem_dequeue_sharded', callback = sem_dequeue_sharded, flags = {'allow-oom'}}

local function shared_acquire(KEYS, ARGV)
-- shared (reader) acquire of a read-write lock: granted unless a writer
-- holds the lock or waits for it (writer preference); renews a hold we have
-- KEYS: lock, readers (ZSET by lease expiry, server ms), tokens, fence
--       counter, writers waiting (ZSET by place expiry)
-- ARGV: owner value, ttl ms, fencing '1'/'0'
-- {1, token} taken  {2, token} held already  {0, pttl} a writer holds it
-- {4, ms} a writer waits (ms: until its place lapses)
-- {-3, n} the name is a semaphore of n permits
local lock, set, tokens, fence, writers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local value, ttl, fencing = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local holder = redis.call('GET', lock)
if holder and holder ~= 'redlock:readers' then return {0, redis.call('PTTL', lock)} end
local permits = redis.call('HGET', tokens, '')
if permits then return {-3, tonumber(permits)} end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZSCORE', set, value) then
  redis.call('ZADD', set, now + ttl, value)
  -- the holders and their tokens live as long as the longest lease
  local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
  local left = math.max(1, tonumber(last) - now)
  redis.call('PEXPIRE', set, left)
  redis.call('PEXPIRE', tokens, left)
  -- readers hold it: the lock key says so for as long as the longest read lease
  redis.call('SET', lock, 'redlock:readers', 'PX', left)
  return {2, tonumber(redis.call('HGET', tokens, value) or 0)}
end
-- a writer waiting keeps new readers out; its place lapses if it dies
local w = redis.call('ZRANGEBYSCORE', writers, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
if w then return {4, tonumber(w) - now} end
redis.call('ZADD', set, now + ttl, value)
local token = 0
if fencing then
  token = redis.call('INCR', fence)
  if token == 1 then
    -- a new counter: it starts from the server's clock in microseconds
    local t = redis.call('TIME')
    local seed = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', fence, seed)
    token = tonumber(seed)
  end
  redis.call('HSET', tokens, value, token)
end
-- the holders and their tokens live as long as the longest lease
local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
local left = math.max(1, tonumber(last) - now)
redis.call('PEXPIRE', set, left)
redis.call('PEXPIRE', tokens, left)
-- readers hold it: the lock key says so for as long as the longest read lease
redis.call('SET', lock, 'redlock:readers', 'PX', left)
return {1, token}
end
redis.register_function{function_name = 'redlock_v2_shared_acquire', callback = shared_acquire}

local function shared_release(KEYS, ARGV)
-- shared release: give back our hold; the last reader out wakes the writers
-- KEYS: lock, readers, tokens, queue, alive
-- ARGV: owner value, waiters' channel prefix, release channel
-- 1 released   0 not held
local lock, set, tokens, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local value, prefix, channel = ARGV[1], ARGV[2], ARGV[3]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZREM', set, value) == 0 then return 0 end
redis.call('HDEL', tokens, value)
if redis.call('ZCARD', set) == 0 then
  -- the last reader is out: the lock is free, and writers waiting hear it
  -- (on the lock's channel; in fair mode the first in line, on its own)
  redis.call('DEL', set, tokens)
  if redis.call('GET', lock) == 'redlock:readers' then redis.call('DEL', lock) end
  redis.call('PUBLISH', channel, 'released')
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
redis.register_function{function_name = 'redlock_v2_shared_release', callback = shared_release, flags = {'allow-oom'}}

local function shared_release_sharded(KEYS, ARGV)
-- shared release on a cluster: as shared release, on shard channels (in
-- the name's slot)
-- KEYS: lock, readers, tokens, queue, alive, release channel
-- ARGV: owner value, waiters' channel prefix
-- 1 released   0 not held
local lock, set, tokens, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel = KEYS[6]
local value, prefix = ARGV[1], ARGV[2]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZREM', set, value) == 0 then return 0 end
redis.call('HDEL', tokens, value)
if redis.call('ZCARD', set) == 0 then
  -- the last reader is out: the lock is free, and writers waiting hear it
  -- (on the lock's channel; in fair mode the first in line, on its own)
  redis.call('DEL', set, tokens)
  if redis.call('GET', lock) == 'redlock:readers' then redis.call('DEL', lock) end
  redis.call('SPUBLISH', channel, 'released')
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
redis.register_function{function_name = 'redlock_v2_shared_release_sharded', callback = shared_release_sharded, flags = {'allow-oom'}}

local function shared_refresh(KEYS, ARGV)
-- shared refresh: a new lease for our hold if it is still live; with
-- repair, take it again where it is missing if no writer holds or waits
-- KEYS: lock, readers, tokens, writers waiting
-- ARGV: owner value, ttl ms, repair '1'/'0', token
-- 1 extended   2 set again   0 not held   -1 not held, and a writer holds or waits
local lock, set, tokens, writers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local value, ttl, repair, token = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- leases that ran out leave, with their tokens
local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)
if #gone > 0 then
  redis.call('HDEL', tokens, unpack(gone))
  redis.call('ZREM', set, unpack(gone))
  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
end
if redis.call('ZSCORE', set, value) then
  redis.call('ZADD', set, now + ttl, value)
  -- the holders and their tokens live as long as the longest lease
  local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
  local left = math.max(1, tonumber(last) - now)
  redis.call('PEXPIRE', set, left)
  redis.call('PEXPIRE', tokens, left)
  -- readers hold it: the lock key says so for as long as the longest read lease
  redis.call('SET', lock, 'redlock:readers', 'PX', left)
  return 1
end
if not repair then return 0 end
local holder = redis.call('GET', lock)
if (holder and holder ~= 'redlock:readers') or redis.call('ZCOUNT', writers, '(' .. now, '+inf') > 0 then
  return -1
end
redis.call('ZADD', set, now + ttl, value)
redis.call('HSET', tokens, value, token)
-- the holders and their tokens live as long as the longest lease
local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]
local left = math.max(1, tonumber(last) - now)
redis.call('PEXPIRE', set, left)
redis.call('PEXPIRE', tokens, left)
-- readers hold it: the lock key says so for as long as the longest read lease
redis.call('SET', lock, 'redlock:readers', 'PX', left)
return 2
end
redis.register_function{function_name = 'redlock_v2_shared_refresh', callback = shared_refresh, flags = {'allow-oom'}}

local function list(KEYS, ARGV)
-- list: who holds the name, changing nothing
-- KEYS: lock, holders (semaphore), readers, tokens, fence counter
-- {exclusive holder or nil, its pttl, {value, ms left, token, ...} of the
--  live permit holders or readers (64 at most), permit count or nil,
--  fence counter or nil}
local lock, holds, reads, tokens, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local set = holds
if redis.call('EXISTS', reads) == 1 then set = reads end
local m = redis.call('ZRANGEBYSCORE', set, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 64)
local out = {}
for i = 1, #m, 2 do
  out[#out + 1] = m[i]
  out[#out + 1] = tonumber(m[i + 1]) - now
  out[#out + 1] = tonumber(redis.call('HGET', tokens, m[i]) or 0)
end
return {redis.call('GET', lock), redis.call('PTTL', lock), out, redis.call('HGET', tokens, ''),
        redis.call('GET', fence)}
end
redis.register_function{function_name = 'redlock_v2_list', callback = list, flags = {'no-writes'}}

local function leave(KEYS, ARGV)
-- leave: a writer that stops waiting gives up its place among the writers
-- KEYS: writers waiting   ARGV: owner value
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
end
redis.register_function{function_name = 'redlock_v2_leave', callback = leave, flags = {'allow-oom'}}
