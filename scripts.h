/* scripts.h - private: every Lua text redlock.c runs, the script table,
 * and the same scripts as one Redis Functions library. Included by
 * redlock.c and, to check the SHA1s and the shipped library file, by
 * tests/sha1check.c and tests/test_scripts.c; nothing else.
 *
 * Each script names its KEYS and ARGV on its first lines. The SHA1s are
 * checked by the build (tests/sha1check.c, no Redis needed) and against
 * SCRIPT LOAD (tests/test_scripts.c); a stale one would cost an EVAL on
 * every call. A change to any text needs a new function library version
 * (FUNCTIONS_VERSION below).
 */
#ifndef REDLOCK_SCRIPTS_H
#define REDLOCK_SCRIPTS_H

#include <stddef.h>
#include <string.h>

/* The server's clock in ms, as `now` (a script may read TIME before it
 * writes: its effects are replicated, not the script). */
#define NOW_MS(ind) \
    ind "local tm = redis.call('TIME')\n" \
    ind "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
/* What a read-write lock's key holds while readers hold it (and nothing
 * else may: redlock_new refuses it as an owner value). Writers, ours and
 * any other client's SET NX, see the lock held. */
#define READERS_MARK "redlock:readers"

/* The next fencing token from the counter `fence`. A missing counter (the
 * node lost its data: a restart without persistence, eviction, FLUSHALL)
 * first starts from the server's clock in microseconds since the epoch
 * (about 1.8e15: exact in Lua's numbers and in INCR's integers), so a
 * token is never smaller than one issued before the loss as long as grants
 * come slower than one a microsecond. An existing counter only ever
 * increments (one that was set to 0 by hand counts as missing). ind
 * indents the text. */
#define NEXT_TOKEN(ind) \
    ind "token = redis.call('INCR', fence)\n" \
    ind "if token == 1 then\n" \
    ind "  -- a new counter: it starts from the server's clock in microseconds\n" \
    ind "  local t = redis.call('TIME')\n" \
    ind "  local seed = t[1] .. string.format('%06d', tonumber(t[2]))\n" \
    ind "  redis.call('SET', fence, seed)\n" \
    ind "  token = tonumber(seed)\n" \
    ind "end\n"
static const char ACQUIRE_LUA[] =
    "-- acquire: take the lock if it is free; if it is ours already, reset its TTL\n"
    "-- KEYS: lock, fence counter, writers waiting (read-write locks: ZSET by\n"
    "--       place expiry, server ms)\n"
    "-- ARGV: owner value, ttl ms, fencing '1'/'0', place lease ms ('': none)\n"
    "-- {1, token}: taken   {2, token}: ours already   {0, pttl}: another owner\n"
    "-- {5, pttl}: readers hold it; with a place lease we wait as a writer, and\n"
    "-- new readers wait behind us\n"
    "local lock, fence, writers = KEYS[1], KEYS[2], KEYS[3]\n"
    "local value, ttl, fencing, place = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]\n"
    "local holder = redis.call('GET', lock)\n"
    "if holder == value then\n"
    "  -- a retry after a lost reply, or the same owner again: same token\n"
    "  redis.call('PEXPIRE', lock, ttl)\n"
    "  local token = 0\n"
    "  if fencing then token = tonumber(redis.call('GET', fence) or 0) end\n"
    "  return {2, token}\n"
    "end\n"
    "if holder == '" READERS_MARK "' then\n"
    "  if place ~= '' then\n"
    NOW_MS("    ")
    "    redis.call('ZADD', writers, now + tonumber(place), value)\n"
    "    redis.call('PEXPIRE', writers, tonumber(place) * 2)\n"
    "  end\n"
    "  return {5, redis.call('PTTL', lock)}\n"
    "end\n"
    "if holder then return {0, redis.call('PTTL', lock)} end\n"
    "redis.call('SET', lock, value, 'PX', ttl)\n"
    "if place ~= '' then redis.call('ZREM', writers, value) end\n"
    "local token = 0\n"
    "if fencing then\n"
    NEXT_TOKEN("  ")
    "end\n"
    "return {1, token}\n";
static const char FAIR_LUA[] =
    "-- fair acquire: as acquire, but a free lock goes to the first in line\n"
    "-- KEYS: lock, fence counter, queue (ZSET of waiting values by arrival),\n"
    "--       alive (ZSET of waiters' lease expiry, node ms), writers waiting\n"
    "-- ARGV: owner value, ttl ms, fencing '1'/'0', enqueue '1'/'0',\n"
    "--       queue score ('' : the node's clock, us), lease ms\n"
    "-- {1, token} taken  {2, token} ours already  {0, pttl} another owner\n"
    "-- {3, ms} free, but another waiter is first (ms: that waiter's lease left)\n"
    "-- {5, pttl} readers hold it (in line, we wait as a writer: see acquire)\n"
    "local lock, fence, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "local writers = KEYS[5]\n"
    "local value, ttl, fencing = ARGV[1], ARGV[2], ARGV[3] == '1'\n"
    "local enqueue, score, lease = ARGV[4] == '1', ARGV[5], tonumber(ARGV[6])\n"
    "local holder = redis.call('GET', lock)\n"
    "if holder == value then\n"
    "  redis.call('PEXPIRE', lock, ttl)\n"
    "  redis.call('ZREM', queue, value)\n"
    "  redis.call('ZREM', alive, value)\n"
    "  local token = 0\n"
    "  if fencing then token = tonumber(redis.call('GET', fence) or 0) end\n"
    "  return {2, token}\n"
    "end\n"
    NOW_MS("")
    "-- waiters that stopped renewing their lease leave the line\n"
    "local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now, 'LIMIT', 0, 64)\n"
    "for _, w in ipairs(dead) do\n"
    "  redis.call('ZREM', queue, w)\n"
    "  redis.call('ZREM', alive, w)\n"
    "end\n"
    "local code, left = 0, 0\n"
    "if holder then\n"
    "  left = redis.call('PTTL', lock)\n"
    "  if holder == '" READERS_MARK "' then\n"
    "    code = 5\n"
    "    if enqueue then\n"
    "      redis.call('ZADD', writers, now + lease, value)\n"
    "      redis.call('PEXPIRE', writers, lease * 2)\n"
    "    end\n"
    "  end\n"
    "else\n"
    "  -- the head of the line, skipping entries whose lease is gone\n"
    "  local head, expiry\n"
    "  for _ = 1, 64 do\n"
    "    head = redis.call('ZRANGE', queue, 0, 0)[1]\n"
    "    if not head then break end\n"
    "    expiry = redis.call('ZSCORE', alive, head)\n"
    "    if expiry then break end\n"
    "    redis.call('ZREM', queue, head)\n"
    "  end\n"
    "  if not head or head == value then\n"
    "    redis.call('SET', lock, value, 'PX', ttl)\n"
    "    redis.call('ZREM', queue, value)\n"
    "    redis.call('ZREM', alive, value)\n"
    "    if enqueue then redis.call('ZREM', writers, value) end\n"
    "    local token = 0\n"
    "    if fencing then\n"
    NEXT_TOKEN("      ")
    "    end\n"
    "    return {1, token}\n"
    "  end\n"
    "  code, left = 3, tonumber(expiry) - now\n"
    "end\n"
    "if enqueue then\n"
    "  -- join the line (keeping an earlier place) and renew the lease\n"
    "  if score == '' then score = tonumber(tm[1]) * 1000000 + tonumber(tm[2]) end\n"
    "  redis.call('ZADD', queue, 'NX', score, value)\n"
    "  redis.call('ZADD', alive, now + lease, value)\n"
    "  redis.call('PEXPIRE', queue, lease * 2)\n"
    "  redis.call('PEXPIRE', alive, lease * 2)\n"
    "end\n"
    "return {code, left}\n";
/* Tell the first waiter in line whose lease is alive, on its own channel
 * (prefix .. value), dropping dead ones ahead of it; ind indents the text. */
#define WAKE_HEAD(ind, pub) \
    ind "for _ = 1, 64 do\n" \
    ind "  local head = redis.call('ZRANGE', queue, 0, 0)[1]\n" \
    ind "  if not head then break end\n" \
    ind "  local expiry = redis.call('ZSCORE', alive, head)\n" \
    ind "  if expiry and tonumber(expiry) > now then\n" \
    ind "    redis.call('" pub "', prefix .. head, 'released')\n" \
    ind "    break\n" \
    ind "  end\n" \
    ind "  redis.call('ZREM', queue, head)\n" \
    ind "  redis.call('ZREM', alive, head)\n" \
    ind "end\n"
#define WAKE_NEXT(ind, pub) NOW_MS(ind) WAKE_HEAD(ind, pub)
/* Dequeue and release in fair mode tell one waiter: by PUBLISH, or on a
 * cluster by SPUBLISH to a shard channel; the rest of each pair is one
 * text. */
#define DEQUEUE_BODY(pub) \
    "-- KEYS: queue, alive, lock   ARGV: owner value, waiters' channel prefix\n" \
    "local queue, alive, lock = KEYS[1], KEYS[2], KEYS[3]\n" \
    "local value, prefix = ARGV[1], ARGV[2]\n" \
    "local head = redis.call('ZRANGE', queue, 0, 0)[1]\n" \
    "redis.call('ZREM', queue, value)\n" \
    "redis.call('ZREM', alive, value)\n" \
    "if head == value and redis.call('EXISTS', lock) == 0 then\n" \
    "  -- tell the first waiter in line whose lease is alive (on its own channel),\n" \
    "  -- dropping dead ones: a release wakes one waiter, not all of them\n" \
    WAKE_NEXT("  ", pub) \
    "end\n" \
    "return 1\n"
static const char DEQUEUE_LUA[] =
    "-- dequeue: leave the line; if we were first and the lock is free, the next\n"
    "-- in line takes it: tell that one\n"
    DEQUEUE_BODY("PUBLISH");
static const char RELEASE_LUA[] =
    "-- release: delete the lock if it is ours, and wake the waiters\n"
    "-- KEYS: lock   ARGV: owner value, release channel\n"
    "-- 1 released   0 no such key   -1 another owner\n"
    "local lock = KEYS[1]\n"
    "local value, channel = ARGV[1], ARGV[2]\n"
    "local holder = redis.call('GET', lock)\n"
    "if holder == value then\n"
    "  redis.call('DEL', lock)\n"
    "  redis.call('PUBLISH', channel, 'released')\n"
    "  return 1\n"
    "end\n"
    "if holder then return -1 end\n"
    "return 0\n";
static const char REFRESH_LUA[] =
    "-- refresh: reset the TTL if the lock is ours; with repair, also set it\n"
    "-- where it is missing (a node that restarted empty; never over another)\n"
    "-- KEYS: lock   ARGV: owner value, ttl ms, repair '1'/'0'\n"
    "-- 1 extended   2 set again   0 no such key   -1 another owner\n"
    "local lock = KEYS[1]\n"
    "local value, ttl, repair = ARGV[1], ARGV[2], ARGV[3] == '1'\n"
    "local holder = redis.call('GET', lock)\n"
    "if holder == value then\n"
    "  redis.call('PEXPIRE', lock, ttl)\n"
    "  return 1\n"
    "end\n"
    "if holder then return -1 end\n"
    "if repair then\n"
    "  redis.call('SET', lock, value, 'PX', ttl)\n"
    "  return 2\n"
    "end\n"
    "return 0\n";
static const char RAISE_LUA[] =
    "-- raise: lift the fence counter to at least token (quorum fencing)\n"
    "-- KEYS: fence counter   ARGV: token    returns the counter after\n"
    "local fence = KEYS[1]\n"
    "local token = tonumber(ARGV[1])\n"
    "local counter = tonumber(redis.call('GET', fence) or 0)\n"
    "if counter < token then\n"
    "  redis.call('SET', fence, ARGV[1])\n"
    "  return token\n"
    "end\n"
    "return counter\n";
static const char STATUS_LUA[] =
    "-- status: look without touching\n"
    "-- KEYS: lock, fence counter   {holder value or nil, pttl, counter or nil}\n"
    "local lock, fence = KEYS[1], KEYS[2]\n"
    "return {redis.call('GET', lock), redis.call('PTTL', lock), redis.call('GET', fence)}\n";
static const char RELEASE_SHARDED_LUA[] =
    "-- release on a cluster: as release, but the wake-up goes to a shard channel\n"
    "-- in the lock's slot (SPUBLISH), so it never crosses the cluster bus\n"
    "-- KEYS: lock, release channel   ARGV: owner value\n"
    "-- 1 released   0 no such key   -1 another owner\n"
    "local lock, channel = KEYS[1], KEYS[2]\n"
    "local value = ARGV[1]\n"
    "local holder = redis.call('GET', lock)\n"
    "if holder == value then\n"
    "  redis.call('DEL', lock)\n"
    "  redis.call('SPUBLISH', channel, 'released')\n"
    "  return 1\n"
    "end\n"
    "if holder then return -1 end\n"
    "return 0\n";
static const char DEQUEUE_SHARDED_LUA[] =
    "-- dequeue on a cluster: as dequeue, on the next waiter's shard channel\n"
    "-- (in the lock's slot: the prefix carries the lock's hash tag)\n"
    DEQUEUE_BODY("SPUBLISH");
#define RELEASE_FAIR_BODY(pub) \
    "-- KEYS: lock, queue, alive   ARGV: owner value, waiters' channel prefix\n" \
    "-- 1 released   0 no such key   -1 another owner\n" \
    "local lock, queue, alive = KEYS[1], KEYS[2], KEYS[3]\n" \
    "local value, prefix = ARGV[1], ARGV[2]\n" \
    "local holder = redis.call('GET', lock)\n" \
    "if holder ~= value then\n" \
    "  if holder then return -1 end\n" \
    "  return 0\n" \
    "end\n" \
    "redis.call('DEL', lock)\n" \
    "-- tell the first waiter in line whose lease is alive (on its own channel),\n" \
    "-- dropping dead ones: a release wakes one waiter, not all of them\n" \
    WAKE_NEXT("", pub) \
    "return 1\n"
static const char RELEASE_FAIR_LUA[] =
    "-- release in fair mode: delete the lock if it is ours, and wake only the\n"
    "-- next waiter in line\n"
    RELEASE_FAIR_BODY("PUBLISH");
static const char RELEASE_FAIR_SHARDED_LUA[] =
    "-- release in fair mode on a cluster: as release in fair mode, on the next\n"
    "-- waiter's shard channel (in the lock's slot)\n"
    RELEASE_FAIR_BODY("SPUBLISH");

/* Holders whose lease ran out (server ms) leave the set `set`, their
 * tokens with them (one call when none did). */
#define PRUNE_HOLDERS(ind) \
    ind "-- leases that ran out leave, with their tokens\n" \
    ind "local gone = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 64)\n" \
    ind "if #gone > 0 then\n" \
    ind "  redis.call('HDEL', tokens, unpack(gone))\n" \
    ind "  redis.call('ZREM', set, unpack(gone))\n" \
    ind "  if #gone == 64 then redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end\n" \
    ind "end\n"

/* After a grant or a renewal: the holder set, with its tokens, expires as a
 * whole after the longest lease. */
#define KEEP_SET(ind) \
    ind "-- the holders and their tokens live as long as the longest lease\n" \
    ind "local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2]\n" \
    ind "local left = math.max(1, tonumber(last) - now)\n" \
    ind "redis.call('PEXPIRE', set, left)\n" \
    ind "redis.call('PEXPIRE', tokens, left)\n"

/* While readers hold a read-write lock, its key holds READERS_MARK with the
 * longest reader lease as TTL: writers (ours, and any SET NX) see it held. */
#define MARK_READS(ind) \
    ind "-- readers hold it: the lock key says so for as long as the longest read lease\n" \
    ind "redis.call('SET', lock, 'redlock:readers', 'PX', left)\n"

/* A permit (or a read hold) for `value` with a lease of ttl, and its token. */
#define GRANT(ind) \
    ind "redis.call('ZADD', set, now + ttl, value)\n" \
    ind "local token = 0\n" \
    ind "if fencing then\n" \
    NEXT_TOKEN(ind "  ") \
    ind "  redis.call('HSET', tokens, value, token)\n" \
    ind "end\n"

/* Waiters whose place lease ran out leave the line. */
#define DROP_DEAD(ind) \
    ind "-- waiters that stopped renewing their place leave the line\n" \
    ind "local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now, 'LIMIT', 0, 64)\n" \
    ind "for _, w in ipairs(dead) do\n" \
    ind "  redis.call('ZREM', queue, w)\n" \
    ind "  redis.call('ZREM', alive, w)\n" \
    ind "end\n"

/* A waiter keeps its place in line (and its lease on it) while it waits. */
#define JOIN_LINE(ind) \
    ind "if enqueue then\n" \
    ind "  -- join the line (keeping an earlier place) and renew the place's lease\n" \
    ind "  if score == '' then score = tonumber(tm[1]) * 1000000 + tonumber(tm[2]) end\n" \
    ind "  redis.call('ZADD', queue, 'NX', score, value)\n" \
    ind "  redis.call('ZADD', alive, now + lease, value)\n" \
    ind "  redis.call('PEXPIRE', queue, lease * 2)\n" \
    ind "  redis.call('PEXPIRE', alive, lease * 2)\n" \
    ind "end\n"

static const char SEM_ACQUIRE_LUA[] =
    "-- semaphore acquire: a permit if one is free (fair: and nobody is ahead);\n"
    "-- a permit we hold already gets a new lease\n"
    "-- KEYS: holders (ZSET by lease end, server ms), tokens (HASH; field '':\n"
    "--       the permit count), fence counter, queue, alive (place leases)\n"
    "-- ARGV: owner value, ttl ms, fencing, permits, enqueue, queue score ('':\n"
    "--       the node's clock), place lease ms, fair\n"
    "-- {1, token} taken  {2, token} held already  {0, ms} all held (ms: until\n"
    "-- a lease ends)  {3, ms} one is free, waiters first  {-2, n} n permits\n"
    "local set, tokens, fence, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"
    "local value, ttl, fencing = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'\n"
    "local permits, enqueue, score = tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6]\n"
    "local lease, fair = tonumber(ARGV[7]), ARGV[8] == '1'\n"
    "local stored = tonumber(redis.call('HGET', tokens, '') or 0)\n"
    "if stored ~= 0 and stored ~= permits then return {-2, stored} end\n"
    NOW_MS("")
    PRUNE_HOLDERS("")
    "if redis.call('ZSCORE', set, value) then\n"
    "  redis.call('ZADD', set, now + ttl, value)\n"
    "  if enqueue then\n"
    "    redis.call('ZREM', queue, value)\n"
    "    redis.call('ZREM', alive, value)\n"
    "  end\n"
    KEEP_SET("  ")
    "  return {2, tonumber(redis.call('HGET', tokens, value) or 0)}\n"
    "end\n"
    "if enqueue or fair then\n"
    DROP_DEAD("  ")
    "end\n"
    "local code, left = 0, 0\n"
    "local free = permits - redis.call('ZCARD', set)\n"
    "if free > 0 then\n"
    "  -- fair: as many waiters as permits are free, from the head of the line\n"
    "  local ahead = 0\n"
    "  if fair then ahead = redis.call('ZRANK', queue, value) or redis.call('ZCARD', queue) end\n"
    "  if ahead < free then\n"
    GRANT("    ")
    "    if stored == 0 then redis.call('HSET', tokens, '', permits) end\n"
    "    if enqueue then\n"
    "      redis.call('ZREM', queue, value)\n"
    "      redis.call('ZREM', alive, value)\n"
    "    end\n"
    KEEP_SET("    ")
    "    return {1, token}\n"
    "  end\n"
    "  code = 3\n"
    "  left = tonumber(redis.call('ZRANGE', alive, 0, 0, 'WITHSCORES')[2] or now) - now\n"
    "else\n"
    "  left = tonumber(redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')[2]) - now\n"
    "end\n"
    JOIN_LINE("")
    "return {code, left}\n";

/* A semaphore release wakes as many waiters as it frees permits: one. */
#define SEM_RELEASE_BODY(ind, pub) \
    ind "-- KEYS: holders, tokens, queue, alive\n" \
    ind "-- ARGV: owner value, waiters' channel prefix\n" \
    ind "-- 1 released   0 not held (its lease ran out, or it was never taken)\n" \
    ind "local set, tokens, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n" \
    ind "local value, prefix = ARGV[1], ARGV[2]\n" \
    NOW_MS(ind "") \
    PRUNE_HOLDERS(ind "") \
    ind "if redis.call('ZREM', set, value) == 0 then return 0 end\n" \
    ind "redis.call('HDEL', tokens, value)\n" \
    ind "-- the last holder out takes the set's tokens and permit count with it\n" \
    ind "if redis.call('ZCARD', set) == 0 then redis.call('DEL', tokens) end\n" \
    ind "-- one permit freed: tell one waiter, the first in line whose place is alive\n" \
    WAKE_HEAD(ind "", pub) \
    ind "return 1\n"

static const char SEM_RELEASE_LUA[] =
    "-- semaphore release: give back our permit, and tell the next waiter in line\n"
    SEM_RELEASE_BODY("", "PUBLISH");

static const char SEM_RELEASE_SHARDED_LUA[] =
    "-- semaphore release on a cluster: as semaphore release, on the next\n"
    "-- waiter's shard channel (in the name's slot)\n"
    SEM_RELEASE_BODY("", "SPUBLISH");

static const char SEM_REFRESH_LUA[] =
    "-- semaphore refresh: a new lease for our permit if it is still live; with\n"
    "-- repair, take it again where it is missing if a permit is free there\n"
    "-- KEYS: holders, tokens   ARGV: owner value, ttl ms, repair '1'/'0', permits, token\n"
    "-- 1 extended   2 set again   0 not held   -1 not held, and no permit free\n"
    "local set, tokens = KEYS[1], KEYS[2]\n"
    "local value, ttl, repair = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'\n"
    "local permits, token = tonumber(ARGV[4]), ARGV[5]\n"
    NOW_MS("")
    PRUNE_HOLDERS("")
    "if redis.call('ZSCORE', set, value) then\n"
    "  redis.call('ZADD', set, now + ttl, value)\n"
    KEEP_SET("  ")
    "  return 1\n"
    "end\n"
    "if not repair then return 0 end\n"
    "if redis.call('ZCARD', set) >= permits then return -1 end\n"
    "redis.call('ZADD', set, now + ttl, value)\n"
    "redis.call('HSET', tokens, value, token, '', permits)\n"
    KEEP_SET("")
    "return 2\n";

/* Leaving a semaphore's line passes a free permit on to the next waiter. */
#define SEM_DEQUEUE_BODY(ind, pub) \
    ind "-- KEYS: queue, alive, holders, tokens   ARGV: owner value, waiters' channel prefix\n" \
    ind "local queue, alive, set, tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n" \
    ind "local value, prefix = ARGV[1], ARGV[2]\n" \
    ind "redis.call('ZREM', queue, value)\n" \
    ind "redis.call('ZREM', alive, value)\n" \
    ind "local permits = tonumber(redis.call('HGET', tokens, '') or 0)\n" \
    ind "if permits == 0 or redis.call('ZCARD', set) < permits then\n" \
    ind "  -- a permit is free: the next waiter in line may take it\n" \
    WAKE_NEXT(ind "  ", pub) \
    ind "end\n" \
    ind "return 1\n"

static const char SEM_DEQUEUE_LUA[] =
    "-- semaphore dequeue: leave the line; tell the next waiter if a permit is free\n"
    SEM_DEQUEUE_BODY("", "PUBLISH");

static const char SEM_DEQUEUE_SHARDED_LUA[] =
    "-- semaphore dequeue on a cluster: as semaphore dequeue, on a shard channel\n"
    SEM_DEQUEUE_BODY("", "SPUBLISH");

static const char RD_ACQUIRE_LUA[] =
    "-- shared (reader) acquire of a read-write lock: granted unless a writer\n"
    "-- holds the lock or waits for it (writer preference); renews a hold we have\n"
    "-- KEYS: lock, readers (ZSET by lease expiry, server ms), tokens, fence\n"
    "--       counter, writers waiting (ZSET by place expiry)\n"
    "-- ARGV: owner value, ttl ms, fencing '1'/'0'\n"
    "-- {1, token} taken  {2, token} held already  {0, pttl} a writer holds it\n"
    "-- {4, ms} a writer waits (ms: until its place lapses)\n"
    "-- {-3, n} the name is a semaphore of n permits\n"
    "local lock, set, tokens, fence, writers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"
    "local value, ttl, fencing = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'\n"
    "local holder = redis.call('GET', lock)\n"
    "if holder and holder ~= 'redlock:readers' then return {0, redis.call('PTTL', lock)} end\n"
    "local permits = redis.call('HGET', tokens, '')\n"
    "if permits then return {-3, tonumber(permits)} end\n"
    NOW_MS("")
    PRUNE_HOLDERS("")
    "if redis.call('ZSCORE', set, value) then\n"
    "  redis.call('ZADD', set, now + ttl, value)\n"
    KEEP_SET("  ")
    MARK_READS("  ")
    "  return {2, tonumber(redis.call('HGET', tokens, value) or 0)}\n"
    "end\n"
    "-- a writer waiting keeps new readers out; its place lapses if it dies\n"
    "local w = redis.call('ZRANGEBYSCORE', writers, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]\n"
    "if w then return {4, tonumber(w) - now} end\n"
    GRANT("")
    KEEP_SET("")
    MARK_READS("")
    "return {1, token}\n";

static const char RD_RELEASE_LUA[] =
    "-- shared release: give back our hold; the last reader out wakes the writers\n"
    "-- KEYS: lock, readers, tokens, queue, alive\n"
    "-- ARGV: owner value, waiters' channel prefix, release channel\n"
    "-- 1 released   0 not held\n"
    "local lock, set, tokens, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"
    "local value, prefix, channel = ARGV[1], ARGV[2], ARGV[3]\n"
    NOW_MS("")
    PRUNE_HOLDERS("")
    "if redis.call('ZREM', set, value) == 0 then return 0 end\n"
    "redis.call('HDEL', tokens, value)\n"
    "if redis.call('ZCARD', set) == 0 then\n"
    "  -- the last reader is out: the lock is free, and writers waiting hear it\n"
    "  -- (on the lock's channel; in fair mode the first in line, on its own)\n"
    "  redis.call('DEL', set, tokens)\n"
    "  if redis.call('GET', lock) == 'redlock:readers' then redis.call('DEL', lock) end\n"
    "  redis.call('PUBLISH', channel, 'released')\n"
    WAKE_HEAD("  ", "PUBLISH")
    "end\n"
    "return 1\n";

static const char RD_RELEASE_SHARDED_LUA[] =
    "-- shared release on a cluster: as shared release, on shard channels (in\n"
    "-- the name's slot)\n"
    "-- KEYS: lock, readers, tokens, queue, alive, release channel\n"
    "-- ARGV: owner value, waiters' channel prefix\n"
    "-- 1 released   0 not held\n"
    "local lock, set, tokens, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"
    "local channel = KEYS[6]\n"
    "local value, prefix = ARGV[1], ARGV[2]\n"
    NOW_MS("")
    PRUNE_HOLDERS("")
    "if redis.call('ZREM', set, value) == 0 then return 0 end\n"
    "redis.call('HDEL', tokens, value)\n"
    "if redis.call('ZCARD', set) == 0 then\n"
    "  -- the last reader is out: the lock is free, and writers waiting hear it\n"
    "  -- (on the lock's channel; in fair mode the first in line, on its own)\n"
    "  redis.call('DEL', set, tokens)\n"
    "  if redis.call('GET', lock) == 'redlock:readers' then redis.call('DEL', lock) end\n"
    "  redis.call('SPUBLISH', channel, 'released')\n"
    WAKE_HEAD("  ", "SPUBLISH")
    "end\n"
    "return 1\n";

static const char RD_REFRESH_LUA[] =
    "-- shared refresh: a new lease for our hold if it is still live; with\n"
    "-- repair, take it again where it is missing if no writer holds or waits\n"
    "-- KEYS: lock, readers, tokens, writers waiting\n"
    "-- ARGV: owner value, ttl ms, repair '1'/'0', token\n"
    "-- 1 extended   2 set again   0 not held   -1 not held, and a writer holds or waits\n"
    "local lock, set, tokens, writers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "local value, ttl, repair, token = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]\n"
    NOW_MS("")
    PRUNE_HOLDERS("")
    "if redis.call('ZSCORE', set, value) then\n"
    "  redis.call('ZADD', set, now + ttl, value)\n"
    KEEP_SET("  ")
    MARK_READS("  ")
    "  return 1\n"
    "end\n"
    "if not repair then return 0 end\n"
    "local holder = redis.call('GET', lock)\n"
    "if (holder and holder ~= 'redlock:readers') or redis.call('ZCOUNT', writers, '(' .. now, '+inf') > 0 then\n"
    "  return -1\n"
    "end\n"
    "redis.call('ZADD', set, now + ttl, value)\n"
    "redis.call('HSET', tokens, value, token)\n"
    KEEP_SET("")
    MARK_READS("")
    "return 2\n";

static const char LIST_LUA[] =
    "-- list: who holds the name, changing nothing\n"
    "-- KEYS: lock, holders (semaphore), readers, tokens, fence counter\n"
    "-- {exclusive holder or nil, its pttl, {value, ms left, token, ...} of the\n"
    "--  live permit holders or readers (64 at most), permit count or nil,\n"
    "--  fence counter or nil}\n"
    "local lock, holds, reads, tokens, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"
    NOW_MS("")
    "local set = holds\n"
    "if redis.call('EXISTS', reads) == 1 then set = reads end\n"
    "local m = redis.call('ZRANGEBYSCORE', set, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 64)\n"
    "local out = {}\n"
    "for i = 1, #m, 2 do\n"
    "  out[#out + 1] = m[i]\n"
    "  out[#out + 1] = tonumber(m[i + 1]) - now\n"
    "  out[#out + 1] = tonumber(redis.call('HGET', tokens, m[i]) or 0)\n"
    "end\n"
    "return {redis.call('GET', lock), redis.call('PTTL', lock), out, redis.call('HGET', tokens, ''),\n"
    "        redis.call('GET', fence)}\n";

static const char WLEAVE_LUA[] =
    "-- leave: a writer that stops waiting gives up its place among the writers\n"
    "-- KEYS: writers waiting   ARGV: owner value\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "return 1\n";

enum {
    S_ACQUIRE,
    S_FAIR,
    S_DEQUEUE,
    S_RELEASE,
    S_REFRESH,
    S_RAISE,
    S_STATUS,
    S_RELEASE_SHARDED,
    S_DEQUEUE_SHARDED,
    S_RELEASE_FAIR,
    S_RELEASE_FAIR_SHARDED,
    S_SEM_ACQUIRE,
    S_SEM_RELEASE,
    S_SEM_RELEASE_SHARDED,
    S_SEM_REFRESH,
    S_SEM_DEQUEUE,
    S_SEM_DEQUEUE_SHARDED,
    S_RD_ACQUIRE,
    S_RD_RELEASE,
    S_RD_RELEASE_SHARDED,
    S_RD_REFRESH,
    S_LIST,
    S_WLEAVE,
    S_COUNT
};
/* Not a script: how a waiter that just subscribed checks whether a release
 * came before it listened (see subscribed): PTTL of the lock, or in fair
 * mode ZRANGE of the line's head. */
enum { S_PROBE = S_COUNT };
enum { R_INT, R_PAIR, R_STATUS, R_HEAD, R_LIST }; /* reply shapes */

typedef struct script {
    const char *name;
    const char *lua;
    const char *sha;
    int nkeys, nargs;
    int shape;
} script;

static const script scripts[S_COUNT] = {
    [S_ACQUIRE] = {"acquire", ACQUIRE_LUA, "cbd3302b2729bd232b0e86004a13c5c352087fc7", 3, 4, R_PAIR},
    [S_FAIR] = {"fair acquire", FAIR_LUA, "8cbabde13ac3ffb2ea3e4d543f85225e253d1203", 5, 6, R_PAIR},
    [S_DEQUEUE] = {"dequeue", DEQUEUE_LUA, "d73d77d9c20b33c03ed4a9e0b1488c501366713f", 3, 2, R_INT},
    [S_RELEASE] = {"release", RELEASE_LUA, "742a9c720bb0d4d03c0b46e8f3a0e5757a0afc0e", 1, 2, R_INT},
    [S_REFRESH] = {"refresh", REFRESH_LUA, "ceb551be5baed2f994937f4a9af5693f3b3fd139", 1, 3, R_INT},
    [S_RAISE] = {"raise", RAISE_LUA, "fc64841434df38173ccd912b066213984bd8871d", 1, 1, R_INT},
    [S_STATUS] = {"status", STATUS_LUA, "1de151487cb9ba8f223d5ea0a8f65e12e2f6ca77", 2, 0, R_STATUS},
    [S_RELEASE_SHARDED] = {"release", RELEASE_SHARDED_LUA,
                           "8a86adea4a418f2fbab79733ffd8e50b620644cc", 2, 1, R_INT},
    [S_DEQUEUE_SHARDED] = {"dequeue", DEQUEUE_SHARDED_LUA,
                           "78a1e67219e446dda0588e94c6a8eb6bdee11f65", 3, 2, R_INT},
    [S_RELEASE_FAIR] = {"release", RELEASE_FAIR_LUA, "8babce974b55b0827ef38621612af22c29e19bb4",
                        3, 2, R_INT},
    [S_RELEASE_FAIR_SHARDED] = {"release", RELEASE_FAIR_SHARDED_LUA,
                                "d1c6b8b4b14cd124158d38807707c127f349e522", 3, 2, R_INT},
    [S_SEM_ACQUIRE] = {"semaphore acquire", SEM_ACQUIRE_LUA, "681456b6513a6de6ac0b92632dfb91c8c8bd18ac", 5, 8, R_PAIR},
    [S_SEM_RELEASE] = {"semaphore release", SEM_RELEASE_LUA, "1a94d61f32565bbe065bba717b44eb0cb45bc36a", 4, 2, R_INT},
    [S_SEM_RELEASE_SHARDED] = {"semaphore release", SEM_RELEASE_SHARDED_LUA, "e559452e0d2434e3d5194b1d223eb4cfd53aba0b", 4, 2, R_INT},
    [S_SEM_REFRESH] = {"semaphore refresh", SEM_REFRESH_LUA, "8bab6cac46a9ef3a7e442789c5a96ee4d142ebf6", 2, 5, R_INT},
    [S_SEM_DEQUEUE] = {"semaphore dequeue", SEM_DEQUEUE_LUA, "b386a581a032d47a38ba1dbca3bf5a9cec8ba256", 4, 2, R_INT},
    [S_SEM_DEQUEUE_SHARDED] = {"semaphore dequeue", SEM_DEQUEUE_SHARDED_LUA, "4061eed1d5745abe81e9aa24f26908bd05b177e1", 4, 2, R_INT},
    [S_RD_ACQUIRE] = {"shared acquire", RD_ACQUIRE_LUA, "1d6662198c57f38dd916641e08ca9539bbbfad20", 5, 3, R_PAIR},
    [S_RD_RELEASE] = {"shared release", RD_RELEASE_LUA, "c2e537e438e607637fffcd28dab4fb46cf61c763", 5, 3, R_INT},
    [S_RD_RELEASE_SHARDED] = {"shared release", RD_RELEASE_SHARDED_LUA, "87544d06a2bb63454e5f479f8b36c08e2327486a", 6, 2, R_INT},
    [S_RD_REFRESH] = {"shared refresh", RD_REFRESH_LUA, "e46305386cf9a67e400e1a5d7ec57a73ebc040b8", 4, 4, R_INT},
    [S_LIST] = {"list", LIST_LUA, "be875c0faf345e655587723617fff4afa4e028aa", 5, 0, R_LIST},
    [S_WLEAVE] = {"leave", WLEAVE_LUA, "976c209098234d3cc1631bea0f88b8bb4cd7ac84", 1, 1, R_INT},
};
#define MAX_SCRIPT_ARGS 14

/* The same scripts as one Redis Functions library, for servers where
 * EVAL/EVALSHA are not permitted (FCALL of a library an administrator
 * loaded). Each script's text above is, unchanged, the body of a function
 * whose parameters are named KEYS and ARGV, so the two can never differ.
 * Function names are global in Redis, so they carry the version as the
 * library's name does. A change to any script text needs a new version:
 * a server keeps whatever code it loaded under a name, and nothing here
 * ever replaces it (no REPLACE). The build checks that the shipped file
 * functions/redlock_vN.lua equals library_text() (tests/sha1check.c).
 *
 * Flags (Redis refuses a function without allow-oom at once when over
 * maxmemory, where EVAL refuses only the first command that may grow
 * memory): release and dequeue only delete and publish, and refresh
 * mostly extends, so they run over maxmemory as their EVAL forms do;
 * acquire, fair acquire and raise are refused, as their EVAL forms are
 * when they would SET or INCR. STATUS writes nothing: FCALL_RO. */
#define FUNCTIONS_VERSION "2"
#define FUNCTIONS_LIBRARY "redlock_v" FUNCTIONS_VERSION
#define FUNCTIONS_FILE "functions/" FUNCTIONS_LIBRARY ".lua"
#define FN(local) FUNCTIONS_LIBRARY "_" local, local

typedef struct function_def {
    const char *name;  /* FCALL name: redlock_vN_local */
    const char *local; /* the Lua local holding it     */
    const char *flags; /* register_function flags, or NULL */
} function_def;

static const function_def functions[S_COUNT] = {
    [S_ACQUIRE] = {FN("acquire"), NULL},
    [S_FAIR] = {FN("fair_acquire"), NULL},
    [S_DEQUEUE] = {FN("dequeue"), "'allow-oom'"},
    [S_RELEASE] = {FN("release"), "'allow-oom'"},
    [S_REFRESH] = {FN("refresh"), "'allow-oom'"},
    [S_RAISE] = {FN("raise"), NULL},
    [S_STATUS] = {FN("status"), "'no-writes'"},
    [S_RELEASE_SHARDED] = {FN("release_sharded"), "'allow-oom'"},
    [S_DEQUEUE_SHARDED] = {FN("dequeue_sharded"), "'allow-oom'"},
    [S_RELEASE_FAIR] = {FN("release_fair"), "'allow-oom'"},
    [S_RELEASE_FAIR_SHARDED] = {FN("release_fair_sharded"), "'allow-oom'"},
    [S_SEM_ACQUIRE] = {FN("sem_acquire"), NULL},
    [S_SEM_RELEASE] = {FN("sem_release"), "'allow-oom'"},
    [S_SEM_RELEASE_SHARDED] = {FN("sem_release_sharded"), "'allow-oom'"},
    [S_SEM_REFRESH] = {FN("sem_refresh"), "'allow-oom'"},
    [S_SEM_DEQUEUE] = {FN("sem_dequeue"), "'allow-oom'"},
    [S_SEM_DEQUEUE_SHARDED] = {FN("sem_dequeue_sharded"), "'allow-oom'"},
    [S_RD_ACQUIRE] = {FN("shared_acquire"), NULL},
    [S_RD_RELEASE] = {FN("shared_release"), "'allow-oom'"},
    [S_RD_RELEASE_SHARDED] = {FN("shared_release_sharded"), "'allow-oom'"},
    [S_RD_REFRESH] = {FN("shared_refresh"), "'allow-oom'"},
    [S_LIST] = {FN("list"), "'no-writes'"},
    [S_WLEAVE] = {FN("leave"), "'allow-oom'"},
};
#undef FN

static const char LIBRARY_HEAD[] =
    "#!lua name=" FUNCTIONS_LIBRARY "\n"
    "-- redlock-c's scripts as a Redis Functions library, for servers where\n"
    "-- EVAL/EVALSHA are not permitted but FCALL is. Generated from scripts.h\n"
    "-- (make functions-file); do not edit: a change needs a new version.\n"
    "-- Load it once per node (every primary of a cluster):\n"
    "--   redis-cli -x FUNCTION LOAD < " FUNCTIONS_FILE "\n"
    "--   redlock functions load -u redis://HOST:PORT\n";

/* Appends to a buffer that may be too small; len counts what did not fit. */
typedef struct textbuf {
    char *p;
    size_t cap, len;
} textbuf;

static inline void tb_put(textbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len < b->cap)
        memcpy(b->p + b->len, s, b->len + n <= b->cap ? n : b->cap - b->len);
    b->len += n;
}

/* The library's text into dst (at most cap bytes, NUL-terminated when
 * there is room for it); returns its length, as snprintf does. */
static inline size_t library_text(char *dst, size_t cap)
{
    textbuf b = {dst, cap, 0};
    tb_put(&b, LIBRARY_HEAD);
    for (int i = 0; i < S_COUNT; i++) {
        const function_def *f = &functions[i];
        tb_put(&b, "\nlocal function "), tb_put(&b, f->local), tb_put(&b, "(KEYS, ARGV)\n");
        tb_put(&b, scripts[i].lua);
        tb_put(&b, "end\nredis.register_function{function_name = '"), tb_put(&b, f->name);
        tb_put(&b, "', callback = "), tb_put(&b, f->local);
        if (f->flags)
            tb_put(&b, ", flags = {"), tb_put(&b, f->flags), tb_put(&b, "}");
        tb_put(&b, "}\n");
    }
    if (cap > 0)
        dst[b.len < cap ? b.len : cap - 1] = '\0';
    return b.len;
}

#endif
