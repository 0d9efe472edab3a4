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

/* The next fencing token from the counter `fence`. A missing counter (the
 * node lost its data: a restart without persistence, eviction, FLUSHALL)
 * first starts from the server's clock in microseconds since the epoch
 * (about 1.8e15: exact in Lua's numbers and in INCR's integers), so a
 * token is never smaller than one issued before the loss as long as grants
 * come slower than one a microsecond. An existing counter only ever
 * increments. ind indents the text. */
#define NEXT_TOKEN(ind) \
    ind "if redis.call('EXISTS', fence) == 0 then\n" \
    ind "  local t = redis.call('TIME')\n" \
    ind "  redis.call('SET', fence, t[1] .. string.format('%06d', tonumber(t[2])))\n" \
    ind "end\n" \
    ind "token = redis.call('INCR', fence)\n"
static const char ACQUIRE_LUA[] =
    "-- acquire: take the lock if it is free; if it is ours already, reset its TTL\n"
    "-- KEYS: lock, fence counter   ARGV: owner value, ttl ms, fencing '1'/'0'\n"
    "-- {1, token}: taken   {2, token}: ours already   {0, pttl}: another owner\n"
    "local lock, fence = KEYS[1], KEYS[2]\n"
    "local value, ttl, fencing = ARGV[1], ARGV[2], ARGV[3] == '1'\n"
    "local holder = redis.call('GET', lock)\n"
    "if holder == value then\n"
    "  -- a retry after a lost reply, or the same owner again: same token\n"
    "  redis.call('PEXPIRE', lock, ttl)\n"
    "  local token = 0\n"
    "  if fencing then token = tonumber(redis.call('GET', fence) or 0) end\n"
    "  return {2, token}\n"
    "end\n"
    "if holder then return {0, redis.call('PTTL', lock)} end\n"
    "redis.call('SET', lock, value, 'PX', ttl)\n"
    "local token = 0\n"
    "if fencing then\n"
    NEXT_TOKEN("  ")
    "end\n"
    "return {1, token}\n";
static const char FAIR_LUA[] =
    "-- fair acquire: as acquire, but a free lock goes to the first in line\n"
    "-- KEYS: lock, fence counter, queue (ZSET of waiting values by arrival),\n"
    "--       alive (ZSET of waiters' lease expiry, node ms)\n"
    "-- ARGV: owner value, ttl ms, fencing '1'/'0', enqueue '1'/'0',\n"
    "--       queue score ('' : the node's clock), lease ms\n"
    "-- {1, token} taken  {2, token} ours already  {0, pttl} another owner\n"
    "-- {3, ms} free, but another waiter is first (ms: that waiter's lease left)\n"
    "local lock, fence, queue, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
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
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
    "-- waiters that stopped renewing their lease leave the line\n"
    "local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now, 'LIMIT', 0, 64)\n"
    "for _, w in ipairs(dead) do\n"
    "  redis.call('ZREM', queue, w)\n"
    "  redis.call('ZREM', alive, w)\n"
    "end\n"
    "local code, left = 0, 0\n"
    "if holder then\n"
    "  left = redis.call('PTTL', lock)\n"
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
    "  if score == '' then score = now end\n"
    "  redis.call('ZADD', queue, 'NX', score, value)\n"
    "  redis.call('ZADD', alive, now + lease, value)\n"
    "  redis.call('PEXPIRE', queue, lease * 2)\n"
    "  redis.call('PEXPIRE', alive, lease * 2)\n"
    "end\n"
    "return {code, left}\n";
/* Tell the first waiter in line whose lease is alive, on its own channel
 * (prefix .. value), dropping dead ones ahead of it; ind indents the text. */
#define WAKE_NEXT(ind, pub) \
    ind "local tm = redis.call('TIME')\n" \
    ind "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n" \
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
    S_COUNT
};
/* Not a script: how a waiter that just subscribed checks whether a release
 * came before it listened (see subscribed): PTTL of the lock, or in fair
 * mode ZRANGE of the line's head. */
enum { S_PROBE = S_COUNT };
enum { R_INT, R_PAIR, R_STATUS, R_HEAD }; /* reply shapes */

typedef struct script {
    const char *name;
    const char *lua;
    const char *sha;
    int nkeys, nargs;
    int shape;
} script;

static const script scripts[S_COUNT] = {
    [S_ACQUIRE] = {"acquire", ACQUIRE_LUA, "4fb5bf09f1ff2bf7970cfd20eb14bf71c2f3a7d9", 2, 3, R_PAIR},
    [S_FAIR] = {"fair acquire", FAIR_LUA, "de3b578984a393cf131d5661fac3d24c1dc3c500", 4, 6, R_PAIR},
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
};
#define MAX_SCRIPT_ARGS 10

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
