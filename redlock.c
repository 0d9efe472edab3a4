/* redlock.c - the lock: single node and quorum (Redlock), fencing tokens,
 * waiting on a release channel, keepalive; one operation engine under
 * every call.
 *
 * An operation (acquire, wait, release, refresh, inspect) is a small state
 * machine on its lock. It sends one script to a set of nodes at once (a
 * round), takes the replies as they come, judges them when the last one is
 * in, and then starts the next round, sleeps (on a timer or on the lock's
 * release channel) or ends with a result. The engine (engine_pass) moves
 * every operation of a client from one place: it does the I/O that poll()
 * reported, connects and writes, hands each reply to the operation that
 * sent it, and fires timers. A blocking call is an operation plus a loop
 * that runs the engine until the operation ends (run_blocking), as libpq's
 * PQconnectdb is a loop over PQconnectPoll; the non-blocking API hands the
 * same engine to the caller's event loop. Nothing here calls back into
 * the caller.
 *
 * All operations on one node share its pipelined command connection; all
 * waiters share one listening connection per node. Nothing allocates once
 * the client and its locks have grown to their working size.
 */
#define _DEFAULT_SOURCE /* getentropy */
#include "redlock.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* resp.h shares the status numbers; keep them in step. */
#define SAME_CODE(x) ((int)RESP_##x == (int)REDLOCK_##x)
_Static_assert(SAME_CODE(ERR_TIMEOUT) && SAME_CODE(ERR_IO) && SAME_CODE(ERR_PROTOCOL) &&
                   SAME_CODE(ERR_SERVER) && SAME_CODE(ERR_AUTH) && SAME_CODE(ERR_ARG) &&
                   SAME_CODE(ERR_NOMEM),
               "resp.h and redlock.h status codes differ");

#define MAX_NODES 32
#define MAX_NAME (1u << 20)
#define MAX_VALUE 4096
#define SHOWN_NAME 48 /* bytes of a lock name quoted in messages */
#define MAX_PASSES 8  /* engine_pass: rounds of "take results, fire timers" */
#define MAX_IDLE_CHANS 32 /* channels kept subscribed with no local waiter */
#define NSLOTS 16384      /* Redis Cluster hash slots */
#define MAX_SHARDS 64     /* primaries of one cluster we keep connections to */
#define MAX_TRIES 8       /* cluster: redirects and retries of one request */

/* ---- scripts ---------------------------------------------------------------
 * Each script names its KEYS and ARGV on its first lines. The SHA1s are
 * checked by the build (tests/sha1check.c, no Redis needed) and against
 * SCRIPT LOAD (tests/test_scripts.c); a stale one would cost an EVAL on
 * every call.
 */
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
    "if fencing then token = redis.call('INCR', fence) end\n"
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
    "    if fencing then token = redis.call('INCR', fence) end\n"
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
    [S_ACQUIRE] = {"acquire", ACQUIRE_LUA, "aa4d824715db73a7e205166afa6114a69089b27d", 2, 3, R_PAIR},
    [S_FAIR] = {"fair acquire", FAIR_LUA, "78b68b9397adbe1dec835aa0a24785f5f03989b2", 4, 6, R_PAIR},
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
#define FUNCTIONS_VERSION "1"
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
    "-- EVAL/EVALSHA are not permitted but FCALL is. Generated from redlock.c\n"
    "-- (make functions-file); do not edit: a change needs a new version.\n"
    "-- Load it once per node (every primary of a cluster):\n"
    "--   redis-cli -x FUNCTION LOAD < " FUNCTIONS_FILE "\n"
    "--   redlock functions load -u redis://HOST:PORT\n";

/* Appends to a buffer that may be too small; len counts what did not fit. */
typedef struct textbuf {
    char *p;
    size_t cap, len;
} textbuf;

static void tb_put(textbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len < b->cap)
        memcpy(b->p + b->len, s, b->len + n <= b->cap ? n : b->cap - b->len);
    b->len += n;
}

/* The library's text into dst (at most cap bytes, NUL-terminated when
 * there is room for it); returns its length, as snprintf does. */
static size_t library_text(char *dst, size_t cap)
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

/* ---- types ----------------------------------------------------------------- */

/* What one node said in the current round of an operation. */
enum { N_SKIP, N_PENDING, N_ERR, N_OK };

typedef struct nres {
    uint8_t state;     /* N_SKIP, N_PENDING, N_ERR, N_OK                   */
    uint8_t status;    /* N_ERR: REDLOCK_ERR_*                             */
    uint8_t transient; /* N_ERR: worth waiting out                         */
    uint8_t eval;      /* EVALSHA said NOSCRIPT: EVAL went out             */
    uint8_t fcall;     /* the request went by FCALL (or FCALL_RO)          */
    uint8_t noperm;    /* auto mode: EVALSHA/EVAL said NOPERM: FCALL instead */
    uint8_t loaded;    /* FCALL said the function is missing: FUNCTION LOAD
                          went out, then FCALL again                       */
    uint8_t final;     /* the node's part of the round is over             */
    uint8_t pending;   /* requests in flight (the script, and WAIT)        */
    uint8_t tries;     /* cluster: redirects and retries so far            */
    uint8_t id;        /* the script sent                                  */
    uint8_t attempt;   /* the script's sends in this round (tags WAIT)     */
    uint16_t shard;    /* where the request went                           */
    int64_t retry_at;  /* cluster: send again at this time (0: no)         */
    int64_t until;     /* cluster: no retry after this                     */
    /* the round's outcome, cleared by round_start up to here */
    uint8_t acq;       /* the operation's acquire or refresh holds it here */
    uint8_t landed;    /* a write landed here but failed WAIT: release it  */
    uint8_t ours;      /* S_STATUS: the holder's value is ours             */
    long long code;    /* N_OK: the script's first (or only) integer       */
    long long val;     /* N_OK: its second integer                         */
    uint64_t vhash;    /* S_STATUS: hash of the holder's value, 0: none    */
} nres;

/* A release channel with local waiters, and its subscription per node. */
typedef struct chan chan;
struct chan {
    chan *next;  /* hash chain by name, or the free list */
    chan *snext; /* hash chain by shard channel name      */
    chan *iprev, *inext; /* c->idle: subscribed, no waiter (oldest first) */
    int idle;
    char *name;  /* redlock:NAME, then the shard channel ({NAME}:wake) */
    size_t len, slen, cap;
    uint64_t hash, shash;
    uint16_t slot;
    redlock *head, *tail; /* waiters, in the order they began to wait */
    struct {
        uint8_t on;        /* the server confirmed our last (un)subscribe: on */
        uint8_t sent_on;   /* what our last command asked for               */
        uint8_t inflight;  /* (un)subscribes not yet confirmed             */
        uint8_t unsubs;    /* of which unsubscribes                        */
        uint16_t shard;    /* the shard of the node that has them          */
    } st[MAX_NODES];
};

/* How scripts go to a node: by EVALSHA, or by FCALL of the function
 * library (functions mode; in auto mode, once the node refused EVALSHA
 * with NOPERM and an FCALL worked). Kept beside the nodes, indexed alike. */
typedef struct node_fn {
    uint8_t fcall;
    char load_err[96]; /* the last FUNCTION LOAD's error there ("": none) */
} node_fn;

/* One server: the lock commands (pipelined) and the listener (on demand). */
typedef struct shard {
    net_conn *cmd;
    net_conn *sub;
    uint64_t sub_gen; /* sub's connection the chan states belong to */
    char desc[64];    /* host:port                                  */
} shard;

/* One member of the quorum: a Redis node, or a Redis Cluster (one shard
 * per primary met so far; each lock goes to the one serving its slot). */
typedef struct node {
    shard *sh;
    size_t nsh;
    int cluster;
    int sharded;       /* cluster: wake-ups on shard channels (SPUBLISH)     */
    int16_t *slots;    /* cluster: the shard serving each slot, -1 unknown  */
    int16_t *scratch;  /* cluster: a slot map being read                    */
    net_url url;       /* cluster: credentials for the nodes it learns of   */
    net_opts opts;
    uint32_t moves;    /* cluster: MOVED answers so far                     */
    uint32_t map_moves; /* moves when the slot map was asked for            */
    int64_t map_due;   /* cluster: ask for the slot map at this time (0: no) */
    int map_busy;      /* a CLUSTER SLOTS reply is due                       */
    size_t map_next;   /* the shard to ask next                             */
    char desc[80];     /* the first host:port                               */
} node;

enum { OP_NONE, OP_TRYLOCK, OP_LOCK, OP_UNLOCK, OP_REFRESH, OP_INSPECT, OP_KEEPALIVE };
enum {
    PH_NONE,
    PH_ACQUIRE,       /* acquire (or fair acquire) sent to every node        */
    PH_RAISE,         /* quorum fencing: lifting counters to the token       */
    PH_RELEASE_TAKEN, /* giving back what a failed acquire took; then result */
    PH_SUBSCRIBE,     /* waiting for the release channel's subscriptions     */
    PH_PROBE,         /* subscribed: is the lock still held (PTTL)?          */
    PH_SLEEP,         /* waiting for a release, the holder's TTL or backoff  */
    PH_PARKED,        /* another local waiter of the name tries first        */
    PH_DEQUEUE,       /* fair mode: leaving the line; then result            */
    PH_RELEASE,       /* unlock                                              */
    PH_REFRESH,       /* refresh                                             */
    PH_REPAIR,        /* refresh: setting the key where a node lost it       */
    PH_STATUS         /* inspect                                             */
};

struct redlock_client {
    redlock_options opts;
    size_t n, quorum;
    node *nodes;
    node_fn *fn;    /* one per node                                  */
    char *fn_code;  /* the function library's text, made when first loaded */
    size_t fn_code_len;
    redlock *all;   /* every lock of this client                     */
    redlock *armed; /* locks with a timer                            */
    redlock *ready; /* locks whose round ended without a reply to wait for */
    redlock *done_head, *done_tail;
    chan **buckets; /* channels with waiters or subscriptions         */
    size_t nbuckets, nchans, nshards;
    chan *idle_head, *idle_tail; /* subscribed channels nobody waits on */
    size_t nidle;
    chan **sbuckets; /* the same channels, by shard channel name */
    chan *free_chans;
    struct pollfd *pfd; /* the blocking loop's poll set */
    size_t pfd_cap;
    int64_t now;        /* the engine's clock, read once per pass */
    int completed;      /* operations that ended in this pass and are reported */
    uint64_t rng;
    char errstr[512];
};

struct redlock {
    redlock_client *c; /* NULL once the client is freed */
    redlock *prev, *next;   /* c->all */
    redlock *tprev, *tnext; /* c->armed */
    redlock *ready_next;
    redlock *done_next;
    redlock *wprev, *wnext; /* ch's waiters */
    chan *ch;
    void *userdata;
    int64_t timer_at; /* 0: no timer */
    uint8_t armed, on_ready, in_done;

    const char *name, *fence_key, *channel, *value; /* one block, see redlock_new */
    const char *queue_key, *alive_key;               /* fair mode; as long as fence_key */
    const char *wake_key; /* the shard channel on a cluster; as long as fence_key */
    const char *wlisten, *wlisten_s; /* fair mode: this waiter's own channels (see
                                        waiter_prefix), then NUL */
    const char *listen, *listen_s;   /* what a waiter of this lock subscribes to: the
                                        shared channels, or in fair mode its own */
    size_t listen_len, listen_slen;
    size_t namelen, fencelen, chlen, vlen;
    uint16_t slot;        /* the hash slot of every key of the lock */
    uint32_t ttl;
    char ttl_str[16];

    /* the lease */
    int held;
    uint64_t fence;
    int64_t valid_until; /* ns, CLOCK_MONOTONIC */
    int64_t renewed_at;  /* when the last acquire or refresh that held began */
    int keepalive;

    /* the operation */
    uint8_t op, phase;
    uint8_t blocking;    /* a blocking call runs it: not reported as done  */
    uint8_t held_before; /* held when the operation began                 */
    uint8_t waiting;     /* fair mode: in the queue while redlock_lock waits */
    uint8_t raced;       /* redlock_lock: probed after subscribing         */
    uint8_t woken;       /* a release came while a try was in flight       */
    uint8_t lost;        /* redlock_lock: lost a race after a release       */
    uint8_t sub_needed;  /* PH_SUBSCRIBE: a subscription was missing       */
    uint8_t repair;      /* S_REFRESH argument                             */
    uint8_t transient;   /* the failure is worth waiting out               */
    uint32_t seq;        /* tags requests; a new round makes older replies stale */
    uint32_t outstanding;
    int result;          /* the last operation's status                    */
    int pending;         /* the status to give after a clean-up round      */
    int64_t t0;          /* when the current acquire or refresh began      */
    int64_t cap;         /* the round's requests wait no longer than this  */
    int64_t deadline;    /* redlock_lock: when the wait ends               */
    int64_t backoff;
    int64_t rtt;         /* the last try's round trip                     */
    int64_t holder_pttl; /* ms left on the holder's lock at the last failed try */
    uint64_t token;
    redlock_info *info;  /* OP_INSPECT: filled when it ends               */
    char tok_str[24];
    char score_str[24];  /* fair mode: wall-clock ms when this wait began  */
    char lease_str[16];  /* fair mode: how long our place in line lasts    */
    size_t nerr_idx;     /* node of the first error in the round (n: none) */
    char nerr[320];
    char errstr[512];
    nres res[]; /* one per node */
};

static _Thread_local char last_err[256];

/* ---- small helpers ----------------------------------------------------------- */

const char *redlock_strerror(int status)
{
    switch (status) {
    case REDLOCK_OK:
        return "success";
    case REDLOCK_NOT_ACQUIRED:
        return "lock is held by another owner";
    case REDLOCK_NOT_HELD:
        return "lock is not held (expired or taken by another owner)";
    case REDLOCK_ERR_TIMEOUT:
        return "timed out";
    case REDLOCK_ERR_IO:
        return "connection error";
    case REDLOCK_ERR_PROTOCOL:
        return "protocol error";
    case REDLOCK_ERR_SERVER:
        return "server error";
    case REDLOCK_ERR_AUTH:
        return "authentication or database selection failed";
    case REDLOCK_ERR_ARG:
        return "invalid argument";
    case REDLOCK_ERR_NOMEM:
        return "out of memory";
    case REDLOCK_IN_PROGRESS:
        return "operation in progress";
    case REDLOCK_ERR_TLS:
        return "TLS handshake or certificate verification failed";
    case REDLOCK_CANCELLED:
        return "operation cancelled";
    }
    return "unknown status";
}

static int cerr(redlock_client *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cerr(redlock_client *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    return status;
}

static int global_err(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int global_err(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return status;
}

/* The detail of an operation's result, in the lock (and, when it ends, in
 * the client). */
static int lerr(redlock *l, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lerr(redlock *l, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->errstr, sizeof l->errstr, fmt, ap);
    va_end(ap);
    return status;
}

/* A lock name fit for a message: printable, shortened. */
static const char *shown(const redlock *l, char *buf, size_t len)
{
    size_t o = 0, i;
    for (i = 0; i < l->namelen && o + 5 < len && i < SHOWN_NAME; i++) {
        unsigned char ch = (unsigned char)l->name[i];
        buf[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (i < l->namelen && o + 4 < len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

static int fill_random(void *buf, size_t len)
{
    if (getentropy(buf, len) == 0)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    close(fd);
    return got == len ? 0 : -1;
}

static uint64_t next_random(redlock_client *c)
{
    /* xorshift64*: jitter only, not a secret */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 2685821657736338717ull;
}

static int64_t ms_ns(int64_t ms)
{
    return ms * 1000000;
}

static int64_t drift_ns(const redlock *l)
{
    return (int64_t)((double)l->ttl * l->c->opts.drift_factor * 1e6) + 2000000;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h ? h : 1;
}

static size_t fmt_u64(char *buf, size_t len, uint64_t v)
{
    int n = snprintf(buf, len, "%" PRIu64, v);
    return n > 0 ? (size_t)n : 0;
}

/* Transient server errors: worth waiting out in redlock_lock. */
static int transient_error(const char *s, size_t n)
{
    static const char *const words[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t w = strlen(words[i]);
        if (n >= w && memcmp(s, words[i], w) == 0)
            return 1;
    }
    return 0;
}

static uint32_t bit(size_t i)
{
    return (uint32_t)1 << i;
}

/* ---- timers, the ready list, the done queue ------------------------------------ */

static void timer_clear(redlock *l)
{
    if (!l->armed)
        return;
    if (l->tprev)
        l->tprev->tnext = l->tnext;
    else
        l->c->armed = l->tnext;
    if (l->tnext)
        l->tnext->tprev = l->tprev;
    l->tprev = l->tnext = NULL;
    l->armed = 0;
    l->timer_at = 0;
}

static void timer_set(redlock *l, int64_t at)
{
    if (!l->armed) {
        l->tprev = NULL;
        l->tnext = l->c->armed;
        if (l->tnext)
            l->tnext->tprev = l;
        l->c->armed = l;
        l->armed = 1;
    }
    l->timer_at = at;
}

/* A round that ended with nothing to wait for moves on from the engine's
 * top level, never inside the call that started it. */
static void mark_ready(redlock *l)
{
    if (l->on_ready)
        return;
    l->on_ready = 1;
    l->ready_next = l->c->ready;
    l->c->ready = l;
}

static void ready_remove(redlock *l)
{
    if (!l->on_ready)
        return;
    for (redlock **p = &l->c->ready; *p; p = &(*p)->ready_next)
        if (*p == l) {
            *p = l->ready_next;
            break;
        }
    l->on_ready = 0;
}

static void done_push(redlock *l)
{
    redlock_client *c = l->c;
    if (l->in_done)
        return;
    l->in_done = 1;
    l->done_next = NULL;
    if (c->done_tail)
        c->done_tail->done_next = l;
    else
        c->done_head = l;
    c->done_tail = l;
    c->completed++;
}

static void done_remove(redlock *l)
{
    redlock_client *c = l->c;
    if (!l->in_done)
        return;
    redlock *prev = NULL;
    for (redlock *p = c->done_head; p; prev = p, p = p->done_next)
        if (p == l) {
            if (prev)
                prev->done_next = l->done_next;
            else
                c->done_head = l->done_next;
            if (c->done_tail == l)
                c->done_tail = prev;
            break;
        }
    l->in_done = 0;
}

/* ---- Redis Cluster: slots and shards ---------------------------------------------------- */

/* CRC16-CCITT (XMODEM), as Redis Cluster computes key slots. */
static uint16_t crc16(const char *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)((unsigned char)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

/* The hash slot of a key: the first {...} with something inside, if any. */
static uint16_t key_slot(const char *k, size_t n)
{
    const char *open = memchr(k, '{', n);
    if (open) {
        const char *close = memchr(open + 1, '}', n - (size_t)(open + 1 - k));
        if (close && close > open + 1)
            return (uint16_t)(crc16(open + 1, (size_t)(close - open - 1)) & (NSLOTS - 1));
    }
    return (uint16_t)(crc16(k, n) & (NSLOTS - 1));
}

/* The shard of node i that serves slot (the first seed while unknown). */
static size_t route(const redlock_client *c, size_t i, uint16_t slot)
{
    const node *m = &c->nodes[i];
    if (!m->cluster || m->slots[slot] < 0)
        return 0;
    return (size_t)m->slots[slot];
}

static int add_shard(redlock_client *c, size_t i, const net_url *u)
{
    node *m = &c->nodes[i];
    shard *sh = &m->sh[m->nsh];
    memset(sh, 0, sizeof *sh);
    if (net_conn_new(&sh->cmd, u, &m->opts) != RESP_OK)
        return -1;
    net_url_describe(u, sh->desc, sizeof sh->desc);
    c->nshards++;
    return (int)m->nsh++;
}

/* The shard of cluster node i at host:port, made if new; -1 when the
 * address is bad or there are too many. An empty host is the host of
 * shard `asked`, the one that answered. */
static int shard_at(redlock_client *c, size_t i, size_t asked, const char *host, size_t hl,
                    const char *port, size_t pl)
{
    node *m = &c->nodes[i];
    if (hl == 0) {
        host = net_conn_url(m->sh[asked].cmd)->host;
        hl = strlen(host);
    }
    for (size_t j = 0; j < m->nsh; j++) {
        const net_url *u = net_conn_url(m->sh[j].cmd);
        if (strlen(u->host) == hl && memcmp(u->host, host, hl) == 0 && strlen(u->port) == pl &&
            memcmp(u->port, port, pl) == 0)
            return (int)j;
    }
    net_url u;
    if (m->nsh == MAX_SHARDS || net_url_at(&u, &m->url, host, hl, port, pl) != RESP_OK)
        return -1;
    int j = add_shard(c, i, &u);
    memset(u.password, 0, sizeof u.password);
    return j;
}

/* "MOVED 3999 10.0.0.5:6380" (or ASK): the slot and the new address. The
 * host may be an IPv6 address (the port follows the last ':') or empty. */
static int parse_redirect(const resp_reply *r, size_t wl, unsigned *slot, const char **host,
                          size_t *hl, const char **port, size_t *pl)
{
    const char *p = r->str + wl, *end = r->str + r->len;
    unsigned v = 0;
    int digits = 0;
    while (p < end && *p == ' ')
        p++;
    for (; p < end && *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
        v = v * 10 + (unsigned)(*p - '0');
    if (!digits || v >= NSLOTS || p >= end || *p != ' ')
        return -1;
    const char *addr = p + 1, *colon = NULL;
    for (const char *q = addr; q < end; q++)
        if (*q == ':')
            colon = q;
    if (!colon || colon + 1 >= end || end - (colon + 1) > 5)
        return -1;
    *slot = v;
    *host = addr;
    *hl = (size_t)(colon - addr);
    *port = colon + 1;
    *pl = (size_t)(end - colon - 1);
    return 0;
}

/* ---- scripts on nodes --------------------------------------------------------------- */

/* Fair mode: each waiter listens on a channel of its own, the prefix plus
 * its owner value (redlock:NAME: on plain nodes, {NAME}:freed: on a
 * cluster, in the lock's slot); a release tells only the next in line. */
static void waiter_prefix(const redlock *l, int sharded, const char **p, size_t *n)
{
    *p = sharded ? l->wlisten_s : l->wlisten;
    *n = sharded ? l->fencelen + 1 : l->chlen + 1;
}

/* The KEYS and ARGV of script id for l, from its fields and the operation's
 * parameters (repair, token, place in line). Returns how many. */
static int script_args(const redlock *l, int id, const char **kv, size_t *kl)
{
    const char *fencing = l->c->opts.fencing ? "1" : "0";
#define ARG(s, n) (kv[k] = (s), kl[k] = (n), k++)
    int k = 0;
    switch (id) {
    case S_ACQUIRE:
        ARG(l->name, l->namelen), ARG(l->fence_key, l->fencelen);
        ARG(l->value, l->vlen), ARG(l->ttl_str, strlen(l->ttl_str)), ARG(fencing, 1);
        break;
    case S_FAIR:
        ARG(l->name, l->namelen), ARG(l->fence_key, l->fencelen);
        ARG(l->queue_key, l->fencelen), ARG(l->alive_key, l->fencelen);
        ARG(l->value, l->vlen), ARG(l->ttl_str, strlen(l->ttl_str)), ARG(fencing, 1);
        ARG(l->waiting ? "1" : "0", 1), ARG(l->score_str, strlen(l->score_str));
        ARG(l->lease_str, strlen(l->lease_str));
        break;
    case S_DEQUEUE:
    case S_DEQUEUE_SHARDED:
        ARG(l->queue_key, l->fencelen), ARG(l->alive_key, l->fencelen), ARG(l->name, l->namelen);
        ARG(l->value, l->vlen), waiter_prefix(l, id == S_DEQUEUE_SHARDED, kv + k, kl + k), k++;
        break;
    case S_RELEASE_FAIR:
    case S_RELEASE_FAIR_SHARDED:
        ARG(l->name, l->namelen), ARG(l->queue_key, l->fencelen), ARG(l->alive_key, l->fencelen);
        ARG(l->value, l->vlen), waiter_prefix(l, id == S_RELEASE_FAIR_SHARDED, kv + k, kl + k), k++;
        break;
    case S_RELEASE:
        ARG(l->name, l->namelen), ARG(l->value, l->vlen), ARG(l->channel, l->chlen);
        break;
    case S_RELEASE_SHARDED:
        ARG(l->name, l->namelen), ARG(l->wake_key, l->fencelen), ARG(l->value, l->vlen);
        break;
    case S_REFRESH:
        ARG(l->name, l->namelen), ARG(l->value, l->vlen), ARG(l->ttl_str, strlen(l->ttl_str));
        ARG(l->repair ? "1" : "0", 1);
        break;
    case S_RAISE:
        ARG(l->fence_key, l->fencelen), ARG(l->tok_str, strlen(l->tok_str));
        break;
    case S_STATUS:
        ARG(l->name, l->namelen), ARG(l->fence_key, l->fencelen);
        break;
    }
#undef ARG
    return k;
}

/* What request id is called in messages. */
static const char *req_name(const redlock_client *c, int id)
{
    if (id == S_PROBE)
        return c->opts.fair ? "probe (ZRANGE of the line)" : "probe (PTTL)";
    return scripts[id].name;
}

/* Node i's version of script id: on a cluster, wake-ups use shard
 * channels; in fair mode a release tells only the next waiter. */
static int script_for(const redlock_client *c, size_t i, int id)
{
    int sharded = c->nodes[i].cluster && c->nodes[i].sharded;
    if (id == S_RELEASE && c->opts.fair)
        return sharded ? S_RELEASE_FAIR_SHARDED : S_RELEASE_FAIR;
    if (!sharded)
        return id;
    return id == S_RELEASE ? S_RELEASE_SHARDED : id == S_DEQUEUE ? S_DEQUEUE_SHARDED : id;
}

/* Queue EVALSHA (or EVAL) of script id for l on shard j of node i, or
 * FCALL of its function where the node takes FCALL (or this request's
 * EVALSHA met NOPERM in auto mode). owner NULL: a request nobody waits for
 * (EVAL, or FCALL: it cannot fall back). */
static int queue_script(redlock *l, size_t i, size_t j, int id, int eval, void *owner,
                        uint32_t kind, int64_t cap)
{
    if (id == S_PROBE) {
        int fair = l->c->opts.fair;
        const char *pv[4] = {fair ? "ZRANGE" : "PTTL", fair ? l->queue_key : l->name, "0", "0"};
        size_t pl[4] = {fair ? 6 : 4, fair ? l->fencelen : l->namelen, 1, 1};
        net_tag ptag = {owner, l->seq, kind};
        if (owner)
            l->res[i].fcall = 0;
        return net_conn_request(l->c->nodes[i].sh[j].cmd, fair ? 4 : 2, pv, pl, ptag, cap,
                                l->c->now);
    }
    const script *s = &scripts[id];
    const char *argv[3 + MAX_SCRIPT_ARGS];
    size_t lens[3 + MAX_SCRIPT_ARGS];
    char nk[2] = {(char)('0' + s->nkeys), '\0'};
    int k = script_args(l, id, argv + 3, lens + 3);
    if (k != s->nkeys + s->nargs)
        return RESP_ERR_ARG; /* the table and script_args disagree: a bug */

    int fcall = l->c->fn[i].fcall || (owner && l->res[i].noperm);
    eval |= owner == NULL;
    if (fcall) {
        argv[0] = id == S_STATUS ? "FCALL_RO" : "FCALL";
        argv[1] = functions[id].name;
    } else {
        argv[0] = eval ? "EVAL" : "EVALSHA";
        argv[1] = eval ? s->lua : s->sha;
    }
    if (owner)
        l->res[i].fcall = (uint8_t)fcall;
    lens[0] = strlen(argv[0]);
    lens[1] = strlen(argv[1]);
    argv[2] = nk;
    lens[2] = 1;
    net_tag tag = {owner, l->seq, kind};
    return net_conn_request(l->c->nodes[i].sh[j].cmd, 3 + k, argv, lens, tag, cap, l->c->now);
}

/* A request nobody waits for: l's script id on node i, routed by slot
 * (the release of a cancelled acquire, leaving a fair queue). */
static void queue_orphan(redlock *l, size_t i, int id)
{
    id = script_for(l->c, i, id);
    queue_script(l, i, route(l->c, i, l->slot), id, 1, NULL, (uint32_t)id, 0);
}

static void node_error(redlock *l, size_t i, int status, int transient, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void node_error(redlock *l, size_t i, int status, int transient, const char *fmt, ...)
{
    nres *nd = &l->res[i];
    nd->state = N_ERR;
    nd->status = (uint8_t)status;
    nd->transient = (uint8_t)transient;
    if (i < l->nerr_idx) { /* the lowest node's error explains the failure */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->nerr, sizeof l->nerr, fmt, ap);
        va_end(ap);
        l->nerr_idx = i;
    }
}

/* Tag kinds: a script id, or one of these; the attempt rides above. */
enum { K_WAIT = 0xf0, K_LISTEN = 0xf1, K_SLOTS = 0xf2, K_LOAD = 0xf3 };
#define KIND(id, attempt) ((uint32_t)(id) | (uint32_t)(attempt) << 8)

/* The function library's text, made once per client when first needed. */
static int library_code(redlock_client *c)
{
    if (c->fn_code)
        return RESP_OK;
    size_t n = library_text(NULL, 0);
    c->fn_code = resp_alloc(n + 1);
    if (!c->fn_code)
        return RESP_ERR_NOMEM;
    library_text(c->fn_code, n + 1);
    c->fn_code_len = n;
    return RESP_OK;
}

/* Queue FUNCTION LOAD of the library for l on node i's shard that serves
 * l's slot, as EVAL loads a script on NOSCRIPT. Never REPLACE: a library
 * of that name already there (another version's code, or someone else's)
 * stays as it is. */
static int queue_load(redlock *l, size_t i)
{
    redlock_client *c = l->c;
    int rc = library_code(c);
    if (rc != RESP_OK)
        return rc;
    const char *argv[3] = {"FUNCTION", "LOAD", c->fn_code};
    size_t lens[3] = {8, 4, c->fn_code_len};
    net_tag tag = {l, l->seq, K_LOAD};
    return net_conn_request(c->nodes[i].sh[route(c, i, l->slot)].cmd, 3, argv, lens, tag,
                            l->cap, c->now);
}

static int writes(int id)
{
    return id == S_ACQUIRE || id == S_FAIR || id == S_REFRESH || id == S_RAISE;
}

/* Send node i's request of the round: to the shard serving the lock's
 * slot, or after ASKING to shard `ask`; with wait_replicas, a WAIT right
 * behind a write on the same connection. */
static int send_request(redlock *l, size_t i, int ask)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    size_t j = ask >= 0 ? (size_t)ask : route(c, i, l->slot);
    net_conn *conn = c->nodes[i].sh[j].cmd;
    if (ask >= 0) {
        static const char *const asking[1] = {"ASKING"};
        static const size_t asking_len[1] = {6};
        net_tag none = {NULL, 0, 0};
        if (net_conn_request(conn, 1, asking, asking_len, none, l->cap, c->now) != RESP_OK)
            return REDLOCK_ERR_NOMEM;
    }
    nd->attempt++;
    int rc = queue_script(l, i, j, nd->id, nd->eval, l, KIND(nd->id, nd->attempt), l->cap);
    if (rc != RESP_OK)
        return rc;
    nd->pending++;
    nd->shard = (uint16_t)j;
    if (c->opts.wait_replicas > 0 && writes(nd->id)) {
        char num[16], ms[16];
        int wait_ms = c->opts.io_timeout_ms / 2; /* leaves time for the reply */
        const char *argv[3] = {"WAIT", num, ms};
        size_t lens[3] = {4, (size_t)snprintf(num, sizeof num, "%d", c->opts.wait_replicas),
                          (size_t)snprintf(ms, sizeof ms, "%d", wait_ms > 0 ? wait_ms : 1)};
        net_tag tag = {l, l->seq, KIND(K_WAIT, nd->attempt)};
        if (net_conn_request(conn, 3, argv, lens, tag, l->cap, c->now) != RESP_OK)
            return REDLOCK_ERR_NOMEM;
        nd->pending++;
    }
    return REDLOCK_OK;
}

/* Node i's part of the round may be over: count it once. */
static void advance(redlock *l);
static void settle(redlock *l, size_t i)
{
    nres *nd = &l->res[i];
    if (nd->final || nd->pending || nd->retry_at || nd->state == N_PENDING)
        return;
    nd->final = 1;
    if (--l->outstanding == 0)
        advance(l);
}

/* Send script id to the nodes in mask, all at once. Requests never wait
 * past cap (0: no cap beyond io_timeout_ms). */
static void round_start(redlock *l, int phase, int id, uint32_t mask, int64_t cap)
{
    redlock_client *c = l->c;
    int64_t patience = c->now + ms_ns(c->opts.io_timeout_ms + c->opts.connect_timeout_ms);
    l->phase = (uint8_t)phase;
    l->seq++;
    l->outstanding = 0;
    l->cap = cap;
    l->nerr_idx = c->n;
    l->nerr[0] = '\0';
    for (size_t i = 0; i < c->n; i++) {
        nres *nd = &l->res[i];
        memset(nd, 0, offsetof(nres, acq)); /* the acq marks outlive a round */
        nd->state = N_SKIP;
        nd->final = 1;
        if (!(mask & bit(i)))
            continue;
        nd->state = N_PENDING;
        nd->final = 0;
        nd->id = (uint8_t)script_for(c, i, id);
        nd->until = cap && cap < patience ? cap : patience;
        l->outstanding++;
        int rc = send_request(l, i, -1);
        if (rc != RESP_OK) {
            node_error(l, i, rc, 0, "%s: cannot queue the %s request: %s", c->nodes[i].desc,
                       req_name(c, id), redlock_strerror(rc));
            nd->final = 1;
            l->outstanding--;
        }
    }
    if (l->outstanding == 0)
        mark_ready(l);
}

/* STATUS: {value or nil, pttl, counter or nil}. */
static int decode_status(nres *nd, const resp_reply *r, const redlock *l)
{
    if (r->type != RESP_ARRAY || r->n != 3 || r[2].type != RESP_INTEGER ||
        (r[1].type != RESP_BULK && r[1].type != RESP_NIL) ||
        (r[3].type != RESP_BULK && r[3].type != RESP_NIL))
        return -1;
    nd->vhash = 0;
    nd->ours = 0;
    if (r[1].type == RESP_BULK) {
        nd->vhash = hash_bytes(r[1].str, r[1].len);
        nd->ours = r[1].len == l->vlen && memcmp(r[1].str, l->value, l->vlen) == 0;
    }
    nd->code = r[2].integer;
    nd->val = 0;
    if (r[3].type == RESP_BULK) {
        uint64_t v = 0;
        for (size_t k = 0; k < r[3].len && k < 20; k++) {
            unsigned d = (unsigned char)r[3].str[k] - (unsigned)'0';
            if (d > 9)
                break;
            v = v * 10 + d;
        }
        nd->val = (long long)v;
    }
    return 0;
}

/* One decoder per reply shape: an integer, a pair of integers, STATUS. */
static int decode(nres *nd, int shape, const resp_reply *r, const redlock *l)
{
    switch (shape) {
    case R_INT:
        if (r->type != RESP_INTEGER)
            return -1;
        nd->code = r->integer;
        nd->val = 0;
        return 0;
    case R_PAIR:
        if (r->type != RESP_ARRAY || r->n != 2 || r[1].type != RESP_INTEGER ||
            r[2].type != RESP_INTEGER)
            return -1;
        nd->code = r[1].integer;
        nd->val = r[2].integer;
        return 0;
    case R_HEAD: /* the fair probe as PTTL would say it: -2 we may go, -1 another is first */
        if (r->type != RESP_ARRAY || r->n > 1 || (r->n == 1 && r[1].type != RESP_BULK))
            return -1;
        nd->code = r->n == 1 && !(r[1].len == l->vlen && memcmp(r[1].str, l->value, l->vlen) == 0)
                       ? -1
                       : -2;
        nd->val = 0;
        return 0;
    }
    return decode_status(nd, r, l);
}

static void timer_rearm_round(redlock *l);

static void map_soon(redlock_client *c, size_t i)
{
    node *m = &c->nodes[i];
    if (m->cluster && (!m->map_due || m->map_due > c->now))
        m->map_due = c->now;
}

/* A cluster that cannot serve node i's request now (a primary gone, a
 * failover, a slot in migration): ask for the slot map and send again
 * after a short wait, while the request's patience lasts. 1 when a retry
 * is scheduled. */
static int cluster_retry(redlock *l, size_t i)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    int64_t wait = ms_ns(10) << (nd->tries < 4 ? nd->tries : 4);
    if (!c->nodes[i].cluster || ++nd->tries > MAX_TRIES || c->now + wait >= nd->until)
        return 0;
    map_soon(c, i);
    nd->retry_at = c->now + wait;
    timer_rearm_round(l);
    return 1;
}

/* -MOVED (the slot has a new owner: remember it, send there) and -ASK
 * (one request goes to the importing node, after ASKING). 1 when the
 * request went out again. */
static int cluster_redirect(redlock *l, size_t i, const resp_reply *r)
{
    redlock_client *c = l->c;
    node *m = &c->nodes[i];
    nres *nd = &l->res[i];
    int moved = r->len > 6 && memcmp(r->str, "MOVED ", 6) == 0;
    int ask = r->len > 4 && memcmp(r->str, "ASK ", 4) == 0;
    unsigned slot;
    const char *host, *port;
    size_t hl, pl;
    if (!m->cluster || !(moved || ask) || parse_redirect(r, moved ? 6 : 4, &slot, &host, &hl, &port, &pl))
        return 0;
    int j = shard_at(c, i, nd->shard, host, hl, port, pl);
    if (j < 0 || ++nd->tries > MAX_TRIES) {
        node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: %s, after %d redirects: %.*s", m->desc,
                   j < 0 ? "a redirect to a bad address or too many nodes" : "too many redirects",
                   nd->tries - 1, (int)(r->len > 100 ? 100 : r->len), r->str);
        return 0;
    }
    if (moved) {
        m->slots[slot] = (int16_t)j;
        m->moves++;
        map_soon(c, i); /* one slot moved: others may have too */
    }
    if (send_request(l, i, ask ? j : -1) != REDLOCK_OK)
        return 0;
    return 1;
}

/* The reply to a WAIT behind node i's write: too few replicas fail the
 * node (its write stays: a failed acquire releases it there). */
static void on_wait(redlock *l, size_t i, unsigned attempt, int status, const resp_reply *r)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    nd->pending--;
    if (attempt != nd->attempt || nd->state != N_OK || (nd->code != 1 && nd->code != 2 && nd->id != S_RAISE))
        return;
    if (status == RESP_OK && r->type == RESP_INTEGER && r->integer >= c->opts.wait_replicas)
        return;
    nd->landed = 1;
    if (status != RESP_OK)
        node_error(l, i, status, 1, "%s: WAIT: %s", c->nodes[i].desc,
                   net_conn_errstr(c->nodes[i].sh[nd->shard].cmd));
    else
        node_error(l, i, REDLOCK_ERR_TIMEOUT, 1,
                   "%s: only %lld of %d replicas acknowledged the write in time (wait_replicas)",
                   c->nodes[i].desc, r->type == RESP_INTEGER ? r->integer : -1LL,
                   c->opts.wait_replicas);
}

static int error_starts(const resp_reply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->type == RESP_ERROR && r->len >= n && memcmp(r->str, prefix, n) == 0;
}

/* What FUNCTION LOAD answered on node i, kept for the FCALL queued behind it. */
static void load_answered(redlock_client *c, size_t i, int status, const resp_reply *r)
{
    node_fn *f = &c->fn[i];
    if (status != RESP_OK)
        snprintf(f->load_err, sizeof f->load_err, "%s", redlock_strerror(status));
    else if (r->type == RESP_ERROR)
        snprintf(f->load_err, sizeof f->load_err, "%.*s",
                 (int)(r->len < sizeof f->load_err ? r->len : sizeof f->load_err - 1), r->str);
    else
        f->load_err[0] = '\0';
}

/* FCALL found no function even after our FUNCTION LOAD: say why, and how
 * an administrator loads the library. */
static void function_missing(redlock *l, size_t i, int id)
{
    redlock_client *c = l->c;
    const char *le = c->fn[i].load_err;
    char why[128];
    if (strncmp(le, "NOPERM", 6) == 0)
        snprintf(why, sizeof why, "this user may not load it: NOPERM");
    else if (strncmp(le, "ERR Library", 11) == 0 && strstr(le, "already exists"))
        snprintf(why, sizeof why,
                 "a library of that name with other code is there, never replaced");
    else
        snprintf(why, sizeof why, "FUNCTION LOAD: %s", le[0] ? le : "no error, yet no function");
    if (l->res[i].noperm)
        node_error(l, i, REDLOCK_ERR_SERVER, 0,
                   "%s: NOPERM: this user may not run EVALSHA, and the function library "
                   FUNCTIONS_LIBRARY " for FCALL is not loaded there (%s); load it with "
                   "`redlock functions load -u URL` or `redis-cli -x FUNCTION LOAD < "
                   FUNCTIONS_FILE "`",
                   c->nodes[i].desc, why);
    else
        node_error(l, i, REDLOCK_ERR_SERVER, 0,
                   "%s: function %s not found: the library " FUNCTIONS_LIBRARY
                   " is not loaded there (%s); load it with `redlock functions load -u URL` or "
                   "`redis-cli -x FUNCTION LOAD < " FUNCTIONS_FILE "`",
                   c->nodes[i].desc, functions[id].name, why);
}

enum { FB_NONE, FB_SENT, FB_FAILED };

/* An error a script request gets over by another way to run it: NOSCRIPT
 * (EVAL loads it), NOPERM in auto mode (FCALL instead), a function not
 * loaded (FUNCTION LOAD, then FCALL again). FB_SENT: the request went out
 * again; FB_FAILED: the node's error is set; FB_NONE: not such an error. */
static int script_fallback(redlock *l, size_t i, int id, const resp_reply *r)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    const char *what = "script";
    int rc;
    if (id == S_PROBE || r->type != RESP_ERROR)
        return FB_NONE;
    if (!nd->eval && error_starts(r, "NOSCRIPT")) {
        nd->eval = 1; /* not cached there (restart, SCRIPT FLUSH): EVAL loads it */
        rc = send_request(l, i, -1);
    } else if (!nd->fcall && !nd->noperm && c->opts.scripts == REDLOCK_SCRIPTS_AUTO &&
               error_starts(r, "NOPERM")) {
        nd->noperm = 1; /* EVAL is not permitted there: FCALL, if the library is loaded */
        what = "function";
        rc = send_request(l, i, -1);
    } else if (nd->fcall && error_starts(r, "ERR Function not found")) {
        if (nd->loaded) {
            function_missing(l, i, id);
            return FB_FAILED;
        }
        nd->loaded = 1; /* not there (never loaded, a restart, FUNCTION FLUSH): load it */
        what = "function library";
        rc = queue_load(l, i);
        if (rc == RESP_OK)
            rc = send_request(l, i, -1);
    } else {
        return FB_NONE;
    }
    if (rc == RESP_OK)
        return FB_SENT;
    node_error(l, i, rc, 0, "%s: cannot queue the %s %s: %s", c->nodes[i].desc, scripts[id].name,
               what, redlock_strerror(rc));
    return FB_FAILED;
}

/* How many bytes of a server's error text s[0..len) to show in room bytes:
 * all of it, or (*more = "...") up to the end of the last word that leaves
 * room for the ellipsis, so a word is never cut. */
static int words_within(const char *s, size_t len, size_t room, const char **more)
{
    *more = "";
    if (len <= room)
        return (int)len;
    *more = "...";
    size_t cut = room > 3 ? room - 3 : 0, end = cut;
    while (end > 0 && s[end] != ' ')
        end--;
    while (end > 0 && s[end - 1] == ' ')
        end--;
    return (int)(end > 0 ? end : cut); /* one word longer than the room: cut it */
}

/* Any other error reply: a cluster redirect or a retry after a short wait,
 * else the node's error. 1 when the request went out again (or will). */
static int error_reply(redlock *l, size_t i, const resp_reply *r)
{
    nres *nd = &l->res[i];
    if (cluster_redirect(l, i, r))
        return 1;
    int busy = r->len >= 8 && (memcmp(r->str, "TRYAGAIN", 8) == 0 ||
                               (r->len >= 11 && memcmp(r->str, "CLUSTERDOWN", 11) == 0));
    if (nd->state == N_PENDING && busy && cluster_retry(l, i))
        return 1;
    if (nd->state == N_PENDING) {
        int auth = r->len >= 6 && memcmp(r->str, "NOAUTH", 6) == 0;
        const char *desc = l->c->nodes[i].desc, *pre = nd->noperm ? "EVALSHA: NOPERM; FCALL: " : "";
        const char *more;
        size_t used = strlen(desc) + 2 + strlen(pre) + 1; /* ": " and the NUL */
        int n = words_within(r->str, r->len, sizeof l->nerr > used ? sizeof l->nerr - used : 0,
                             &more);
        node_error(l, i, auth ? REDLOCK_ERR_AUTH : REDLOCK_ERR_SERVER,
                   busy || transient_error(r->str, r->len), "%s: %s%.*s%s", desc, pre, n, r->str,
                   more);
    }
    return 0;
}

/* A node's answer to l's current round: a reply, or a failure status.
 * Returns -1 when the reply had the wrong shape: the connection is out of
 * step and must not be used further. */
static int on_result(redlock *l, size_t i, uint32_t kind, int status, const resp_reply *r)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    const char *desc = c->nodes[i].desc;
    int id = (int)(kind & 0xff), bad = 0, fb;
    if (nd->final)
        return 0;
    if (id == K_LOAD) {
        load_answered(c, i, status, r);
        return 0; /* the FCALL queued behind it answers for the node */
    }
    if (id == K_WAIT) {
        on_wait(l, i, kind >> 8, status, r);
        settle(l, i);
        return 0;
    }
    nd->pending--;
    if (nd->state != N_PENDING) {
        settle(l, i);
        return 0;
    }
    if (status != RESP_OK) {
        if (!cluster_retry(l, i))
            node_error(l, i, status, status == REDLOCK_ERR_IO || status == REDLOCK_ERR_TIMEOUT,
                       "%s", net_conn_errstr(c->nodes[i].sh[nd->shard].cmd));
    } else if ((fb = script_fallback(l, i, id, r)) != FB_NONE) {
        if (fb == FB_SENT)
            return 0;
    } else if (r->type == RESP_ERROR) {
        if (error_reply(l, i, r))
            return 0;
    } else if (decode(nd, id != S_PROBE ? scripts[id].shape : c->opts.fair ? R_HEAD : R_INT, r,
                      l) != 0) {
        node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: unexpected reply to the %s", desc,
                   req_name(c, id));
        bad = -1;
    } else {
        nd->state = N_OK;
        if (nd->fcall)
            c->fn[i].fcall = 1; /* auto mode: FCALL works where EVALSHA may not run */
    }
    settle(l, i);
    return bad;
}

/* Count what the round's nodes said. */
typedef struct tally {
    size_t ok, err;
    int transient; /* every error is worth waiting out */
} tally;

static tally count_nodes(const redlock *l)
{
    tally t = {0, 0, 1};
    for (size_t i = 0; i < l->c->n; i++) {
        const nres *nd = &l->res[i];
        if (nd->state == N_OK)
            t.ok++;
        else if (nd->state == N_ERR) {
            t.err++;
            if (!nd->transient)
                t.transient = 0;
        }
    }
    return t;
}

/* The status and message for an operation that failed on too many nodes:
 * the first node's error and, for a quorum, how many nodes answered. */
static int fail_nodes(redlock *l, const char *op, tally t)
{
    redlock_client *c = l->c;
    char nm[64];
    int st = REDLOCK_ERR_IO;
    for (size_t i = 0; i < c->n; i++)
        if (l->res[i].state == N_ERR) {
            st = l->res[i].status;
            break;
        }
    l->transient = (uint8_t)t.transient;
    if (c->n == 1)
        return lerr(l, st, "%s '%s': %s", op, shown(l, nm, sizeof nm),
                    l->nerr[0] ? l->nerr : "failed");
    return lerr(l, st, "%s '%s': only %zu of %zu nodes answered (quorum %zu); first error: %s", op,
                shown(l, nm, sizeof nm), t.ok, c->n, c->quorum, l->nerr[0] ? l->nerr : "none");
}

static uint32_t all_nodes(const redlock_client *c)
{
    return c->n >= 32 ? 0xffffffffu : bit(c->n) - 1;
}

/* Nodes where this operation's write holds the lock: to release on failure. */
static uint32_t taken_nodes(const redlock *l)
{
    uint32_t m = 0;
    for (size_t i = 0; i < l->c->n; i++)
        if (l->res[i].acq || l->res[i].landed)
            m |= bit(i);
    return m;
}

/* ---- release channels and the listeners ------------------------------------------
 * A waiter joins its lock's channel; the channel is subscribed on every
 * node's listener while it has local waiters (and a while after, see
 * chan_leave). A release message wakes the first local waiter: the
 * others would only lose the race to it. In fair mode each waiter has a
 * channel of its own (redlock:NAME:VALUE, {NAME}:freed:VALUE on a
 * cluster) and a release publishes only to the next in line, so one
 * release wakes one waiter on one node, whatever the number waiting.
 * Confirmations come back in the order of our (un)subscribe commands, one
 * per command, so counting them per node tells when a channel's state
 * there is settled. On a cluster the channel is a shard channel in the
 * lock's slot ({NAME}:freed), subscribed with
 * SSUBSCRIBE on the primary serving it; when the slot moves the server
 * drops the subscription and the first waiter tries again, which finds
 * the new owner and subscribes there.
 */

static chan *chan_find(const redlock_client *c, const char *name, size_t len, uint64_t h)
{
    if (c->nbuckets == 0)
        return NULL;
    for (chan *ch = c->buckets[h & (c->nbuckets - 1)]; ch; ch = ch->next)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static chan *chan_find_shard(const redlock_client *c, const char *name, size_t len)
{
    uint64_t h = hash_bytes(name, len);
    if (c->nbuckets == 0)
        return NULL;
    for (chan *ch = c->sbuckets[h & (c->nbuckets - 1)]; ch; ch = ch->snext)
        if (ch->shash == h && ch->slen == len && memcmp(ch->name + ch->len, name, len) == 0)
            return ch;
    return NULL;
}

static void chan_link(redlock_client *c, chan *ch)
{
    size_t b = ch->hash & (c->nbuckets - 1), sb = ch->shash & (c->nbuckets - 1);
    ch->next = c->buckets[b];
    c->buckets[b] = ch;
    ch->snext = c->sbuckets[sb];
    c->sbuckets[sb] = ch;
}

static int chan_grow_table(redlock_client *c)
{
    size_t nb = c->nbuckets ? c->nbuckets * 2 : 16;
    chan **b = resp_alloc_array(nb, sizeof(chan *)), **sb = resp_alloc_array(nb, sizeof(chan *));
    if (!b || !sb) {
        resp_free(b);
        resp_free(sb);
        return -1;
    }
    chan **old = c->buckets;
    size_t oldn = c->nbuckets;
    resp_free(c->sbuckets);
    c->buckets = b;
    c->sbuckets = sb;
    c->nbuckets = nb;
    for (size_t i = 0; i < oldn; i++)
        for (chan *ch = old[i], *next; ch; ch = next) {
            next = ch->next;
            chan_link(c, ch);
        }
    resp_free(old);
    return 0;
}

/* The channel of l, made (from the free list when it can) if missing. */
static chan *chan_get(redlock_client *c, const redlock *l)
{
    uint64_t h = hash_bytes(l->listen, l->listen_len);
    chan *ch = chan_find(c, l->listen, l->listen_len, h);
    if (ch)
        return ch;
    if (c->nchans + 1 > c->nbuckets && chan_grow_table(c) != 0)
        return NULL;
    ch = c->free_chans;
    if (ch)
        c->free_chans = ch->next;
    else if (!(ch = resp_alloc_array(1, sizeof *ch)))
        return NULL;
    size_t need = l->listen_len + l->listen_slen;
    if (ch->cap < need) {
        char *p = resp_realloc(ch->name, need);
        if (!p) {
            ch->next = c->free_chans;
            c->free_chans = ch;
            return NULL;
        }
        ch->name = p;
        ch->cap = need;
    }
    memcpy(ch->name, l->listen, l->listen_len);
    memcpy(ch->name + l->listen_len, l->listen_s, l->listen_slen);
    ch->len = l->listen_len;
    ch->slen = l->listen_slen;
    ch->hash = h;
    ch->shash = hash_bytes(l->listen_s, l->listen_slen);
    ch->slot = l->slot;
    ch->head = ch->tail = NULL;
    memset(ch->st, 0, sizeof ch->st);
    chan_link(c, ch);
    c->nchans++;
    return ch;
}

static void idle_remove(redlock_client *c, chan *ch)
{
    if (!ch->idle)
        return;
    if (ch->iprev)
        ch->iprev->inext = ch->inext;
    else
        c->idle_head = ch->inext;
    if (ch->inext)
        ch->inext->iprev = ch->iprev;
    else
        c->idle_tail = ch->iprev;
    ch->iprev = ch->inext = NULL;
    ch->idle = 0;
    c->nidle--;
}

/* A channel with no waiter and no subscription left goes to the free list. */
static void chan_release_if_unused(redlock_client *c, chan *ch)
{
    if (ch->head)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (ch->st[i].inflight || ch->st[i].on || ch->st[i].sent_on)
            return;
    idle_remove(c, ch);
    for (chan **p = &c->buckets[ch->hash & (c->nbuckets - 1)]; *p; p = &(*p)->next)
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    for (chan **p = &c->sbuckets[ch->shash & (c->nbuckets - 1)]; *p; p = &(*p)->snext)
        if (*p == ch) {
            *p = ch->snext;
            break;
        }
    c->nchans--;
    ch->next = c->free_chans;
    c->free_chans = ch;
}

static int listener(redlock_client *c, size_t i, size_t j)
{
    shard *sh = &c->nodes[i].sh[j];
    if (sh->sub)
        return REDLOCK_OK;
    if (net_conn_new(&sh->sub, net_conn_url(sh->cmd), &c->nodes[i].opts) != RESP_OK)
        return REDLOCK_ERR_NOMEM;
    net_conn_set_push(sh->sub);
    return REDLOCK_OK;
}

/* Ask node i's listener for ch on or off, unless the last command asked so. */
static void chan_want(redlock_client *c, chan *ch, size_t i, int on)
{
    node *m = &c->nodes[i];
    if (ch->st[i].sent_on == on)
        return;
    size_t j = on ? route(c, i, ch->slot) : ch->st[i].shard;
    if (listener(c, i, j) != REDLOCK_OK)
        return;
    int sharded = m->cluster && m->sharded;
    const char *cmd = on ? (sharded ? "SSUBSCRIBE" : "SUBSCRIBE")
                         : (sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE");
    const char *argv[2] = {cmd, sharded ? ch->name + ch->len : ch->name};
    size_t lens[2] = {strlen(cmd), sharded ? ch->slen : ch->len};
    net_tag tag = {ch, 0, K_LISTEN};
    if (net_conn_request(m->sh[j].sub, 2, argv, lens, tag, 0, c->now) != RESP_OK)
        return;
    ch->st[i].sent_on = (uint8_t)on;
    ch->st[i].inflight++;
    ch->st[i].unsubs += !on;
    ch->st[i].shard = (uint16_t)j;
}

/* Every node's subscription state settled (confirmed, or the listener
 * down: a down listener is no reason to wait). */
static int chan_settled(const redlock_client *c, const chan *ch)
{
    for (size_t i = 0; i < c->n; i++)
        if (ch->st[i].inflight)
            return 0;
    return 1;
}

static int chan_subscribed(const redlock_client *c, const chan *ch)
{
    for (size_t i = 0; i < c->n; i++)
        if (!ch->st[i].on || ch->st[i].inflight)
            return 0;
    return 1;
}

static int chan_any_on(const redlock_client *c, const chan *ch)
{
    for (size_t i = 0; i < c->n; i++)
        if (ch->st[i].on && !ch->st[i].inflight)
            return 1;
    return 0;
}

static void try_now(redlock *l);
static void subscribed(redlock *l);

/* l waits on its channel from now on, last in the local line; every node
 * is asked to subscribe where it is not (again, after a listener was lost). */
static int chan_join(redlock *l)
{
    redlock_client *c = l->c;
    if (!l->ch) {
        chan *ch = chan_get(c, l);
        if (!ch)
            return REDLOCK_ERR_NOMEM;
        idle_remove(c, ch);
        l->ch = ch;
        l->wnext = NULL;
        l->wprev = ch->tail;
        if (ch->tail)
            ch->tail->wnext = l;
        else
            ch->head = l;
        ch->tail = l;
    }
    for (size_t i = 0; i < c->n; i++)
        chan_want(c, l->ch, i, 1);
    return REDLOCK_OK;
}

/* A release: the waiter tries again. Redis delivers a release to a
 * channel's subscribers in the same order every time, so the same waiter
 * would always send first and win, and the last one starve. A waiter that
 * has not lost a race yet in this wait therefore gives way for a moment
 * (half its round trip, at least 50 us); one that lost goes at once: the
 * one that waited through a release wins the next. Fair mode does not need
 * it (the server picks). */
static void wake(redlock *l)
{
    if (l->phase == PH_SLEEP && !l->lost && !l->c->opts.fair && l->op == OP_LOCK) {
        int64_t d = l->rtt / 2;
        if (d < 50000)
            d = 50000;
        if (d > ms_ns(5))
            d = ms_ns(5);
        l->lost = 1;
        timer_set(l, l->c->now + d);
        return;
    }
    if (l->phase == PH_SLEEP || l->phase == PH_PARKED)
        try_now(l);
    else
        l->woken = 1; /* a try is in flight: try again if it fails */
}

static void chan_drop_idle(redlock_client *c, chan *ch);

static void chan_leave(redlock *l)
{
    redlock_client *c = l->c;
    chan *ch = l->ch;
    if (!ch)
        return;
    int was_head = ch->head == l;
    if (l->wprev)
        l->wprev->wnext = l->wnext;
    else
        ch->head = l->wnext;
    if (l->wnext)
        l->wnext->wprev = l->wprev;
    else
        ch->tail = l->wprev;
    l->ch = NULL;
    l->wprev = l->wnext = NULL;
    if (ch->head) {
        if (was_head && ch->head->phase == PH_PARKED)
            wake(ch->head);
        return;
    }
    /* Stay subscribed for a while: the next wait on this name then costs no
     * SUBSCRIBE (nor the try again that follows one). The oldest of too
     * many idle channels is left. */
    ch->idle = 1;
    ch->inext = NULL;
    ch->iprev = c->idle_tail;
    if (c->idle_tail)
        c->idle_tail->inext = ch;
    else
        c->idle_head = ch;
    c->idle_tail = ch;
    c->nidle++;
    if (c->nidle > MAX_IDLE_CHANS)
        chan_drop_idle(c, c->idle_head);
    chan_release_if_unused(c, ch);
}

/* Unsubscribe an idle channel now. */
static void chan_drop_idle(redlock_client *c, chan *ch)
{
    if (!ch->idle || ch->head)
        return;
    idle_remove(c, ch);
    for (size_t i = 0; i < c->n; i++)
        chan_want(c, ch, i, 0);
    chan_release_if_unused(c, ch);
}

/* A release was published on ch (or a local unlock happened). */
static void chan_wake(redlock_client *c, chan *ch)
{
    if (!c->opts.fair) {
        if (ch->head)
            wake(ch->head);
        return;
    }
    for (redlock *w = ch->head, *next; w; w = next) {
        next = w->wnext;
        wake(w);
    }
}

/* Waiters in PH_SUBSCRIBE go on once every node settled. */
static void chan_settle_waiters(redlock_client *c, chan *ch)
{
    if (!chan_settled(c, ch))
        return;
    for (redlock *w = ch->head, *next; w; w = next) {
        next = w->wnext;
        if (w->phase == PH_SUBSCRIBE)
            subscribed(w);
    }
}

/* Shard j of node i lost its listener connection (or never had one):
 * nothing is subscribed there now. Waiters subscribe again when they next
 * try; meanwhile their timers bound the wait. */
static void listener_reset(redlock_client *c, size_t i, size_t j)
{
    shard *sh = &c->nodes[i].sh[j];
    sh->sub_gen = sh->sub ? net_conn_generation(sh->sub) : 0;
    for (size_t b = 0; b < c->nbuckets; b++)
        for (chan *ch = c->buckets[b], *next; ch; ch = next) {
            next = ch->next;
            if (ch->st[i].shard != j)
                continue;
            memset(&ch->st[i], 0, sizeof ch->st[i]);
            chan_release_if_unused(c, ch);
        }
    for (size_t b = 0; b < c->nbuckets; b++)
        for (chan *ch = c->buckets[b], *next; ch; ch = next) {
            next = ch->next;
            chan_settle_waiters(c, ch);
        }
}

/* Our subscription of ch on node i is gone without our asking (its slot
 * moved, or the subscribe was refused): learn the slot's owner, and let the
 * first waiter try again: its try finds the owner and subscribes there. */
static void chan_lost(redlock_client *c, chan *ch, size_t i)
{
    ch->st[i].on = 0;
    ch->st[i].sent_on = 0;
    map_soon(c, i);
    chan_settle_waiters(c, ch);
    if (ch->head)
        wake(ch->head);
    chan_release_if_unused(c, ch);
}

/* An error in answer to our oldest (un)subscribe on shard j of node i: a
 * -MOVED for SSUBSCRIBE to a node that lost the slot, or a server without
 * sharded pub/sub (Redis < 7: fall back to SUBSCRIBE and PUBLISH). */
static void on_push_error(redlock_client *c, size_t i, size_t j, const resp_reply *r)
{
    node *m = &c->nodes[i];
    chan *ch = net_conn_oldest(m->sh[j].sub).owner;
    unsigned slot;
    const char *host, *port;
    size_t hl, pl;
    net_conn_ack(m->sh[j].sub);
    if (r->len > 6 && memcmp(r->str, "MOVED ", 6) == 0 &&
        parse_redirect(r, 6, &slot, &host, &hl, &port, &pl) == 0) {
        int k = shard_at(c, i, j, host, hl, port, pl);
        if (k >= 0) {
            m->slots[slot] = (int16_t)k;
            m->moves++;
        }
    } else if (r->len >= 19 && memcmp(r->str, "ERR unknown command", 19) == 0) {
        m->sharded = 0;
    }
    if (!ch || ch->st[i].inflight == 0)
        return;
    ch->st[i].inflight--;
    if (ch->st[i].unsubs > ch->st[i].inflight)
        ch->st[i].unsubs = ch->st[i].inflight;
    chan_lost(c, ch, i);
}

/* A push on shard j of node i's listener: a release message, or the
 * confirmation of one of our (un)subscribe commands, or a subscription
 * the server dropped. */
static void on_push(redlock_client *c, size_t i, size_t j, const resp_reply *r)
{
    if (r->type == RESP_ERROR) {
        on_push_error(c, i, j, r);
        return;
    }
    if (r->type != RESP_ARRAY || r->n < 3 || r[1].type != RESP_BULK || r[2].type != RESP_BULK)
        return;
    /* smessage, ssubscribe, sunsubscribe: the shard channel forms */
    int shard = (r[1].len == 8 && memcmp(r[1].str, "smessage", 8) == 0) ||
                (r[1].len == 10 && memcmp(r[1].str, "ssubscribe", 10) == 0) ||
                (r[1].len == 12 && memcmp(r[1].str, "sunsubscribe", 12) == 0);
    const char *kind = r[1].str + shard;
    size_t klen = r[1].len - (size_t)shard;
    chan *ch = shard ? chan_find_shard(c, r[2].str, r[2].len)
                     : chan_find(c, r[2].str, r[2].len, hash_bytes(r[2].str, r[2].len));
    int sub = klen == 9 && memcmp(kind, "subscribe", 9) == 0;
    int unsub = klen == 11 && memcmp(kind, "unsubscribe", 11) == 0;
    if (klen == 7 && memcmp(kind, "message", 7) == 0) {
        if (ch)
            chan_wake(c, ch);
        return;
    }
    if (!sub && !unsub)
        return;
    if (unsub && (!ch || ch->st[i].unsubs == 0)) {
        if (ch)
            chan_lost(c, ch, i); /* not ours: the server dropped it (slot moved) */
        return;
    }
    net_conn_ack(c->nodes[i].sh[j].sub);
    if (!ch || ch->st[i].inflight == 0)
        return;
    ch->st[i].inflight--;
    ch->st[i].unsubs -= (uint8_t)unsub;
    ch->st[i].on = (uint8_t)sub;
    chan_settle_waiters(c, ch);
    chan_release_if_unused(c, ch);
}

/* ---- ending an operation ------------------------------------------------------------- */

static void keepalive_arm(redlock *l);

/* The operation ends with status rc (l->errstr holds the detail). */
static void finish(redlock *l, int rc)
{
    redlock_client *c = l->c;
    int reported = !l->blocking && l->op != OP_KEEPALIVE;
    if (rc == REDLOCK_OK)
        l->errstr[0] = '\0';
    memcpy(c->errstr, l->errstr, sizeof l->errstr);
    l->result = rc;
    l->op = OP_NONE;
    l->phase = PH_NONE;
    l->seq++; /* replies still on their way belong to nobody now */
    l->blocking = 0;
    timer_clear(l);
    ready_remove(l);
    chan_leave(l);
    if (reported)
        done_push(l);
    keepalive_arm(l);
}

/* ---- acquire ------------------------------------------------------------------------------ */

static void lock_tried(redlock *l, int rc);

static void acquire_start(redlock *l)
{
    redlock_client *c = l->c;
    l->t0 = c->now;
    l->woken = 0;
    for (size_t i = 0; i < c->n; i++)
        l->res[i].acq = l->res[i].landed = 0;
    round_start(l, PH_ACQUIRE, c->opts.fair ? S_FAIR : S_ACQUIRE, all_nodes(c),
                l->t0 + ms_ns(l->ttl));
}

/* The try is over: for redlock_trylock that is the result; redlock_lock
 * may wait and try again. */
static void try_over(redlock *l, int rc)
{
    if (l->op == OP_LOCK)
        lock_tried(l, rc);
    else
        finish(l, rc);
}

/* Give back what this try took, then end it with rc. */
static void release_taken(redlock *l, int rc)
{
    uint32_t m = taken_nodes(l);
    l->held = 0;
    l->valid_until = 0;
    if (!m) {
        try_over(l, rc);
        return;
    }
    l->pending = rc;
    round_start(l, PH_RELEASE_TAKEN, S_RELEASE, m, 0);
}

static void acquire_won(redlock *l)
{
    char nm[64];
    int64_t until = l->t0 + ms_ns(l->ttl) - drift_ns(l);
    if (until > l->c->now) {
        l->held = 1;
        l->fence = l->token;
        l->valid_until = until;
        l->renewed_at = l->t0;
        l->holder_pttl = -1;
        try_over(l, REDLOCK_OK);
        return;
    }
    release_taken(l, lerr(l, REDLOCK_NOT_ACQUIRED,
                          "lock '%s': acquired, but the TTL of %" PRIu32
                          " ms ran out before the reply (%.1f ms); released",
                          shown(l, nm, sizeof nm), l->ttl, (double)(l->c->now - l->t0) / 1e6));
}

/* Someone else holds it (or, with too few answers, we cannot tell). */
static int acquire_lost(redlock *l, size_t acq, size_t held, size_t queued, int64_t pttl)
{
    redlock_client *c = l->c;
    char nm[64];
    tally t = count_nodes(l);
    l->holder_pttl = pttl;
    /* Busy when enough nodes answered, or when the holder has so many nodes
     * that no quorum is possible whatever the failed ones would say. */
    if (acq + held < c->quorum && held <= c->n - c->quorum)
        return fail_nodes(l, "acquire", t);
    l->transient = 0;
    if (c->n == 1 && queued)
        return lerr(l, REDLOCK_NOT_ACQUIRED,
                    "lock '%s' is free, but another waiter is first in line (fair mode)",
                    shown(l, nm, sizeof nm));
    if (c->n == 1)
        return lerr(l, REDLOCK_NOT_ACQUIRED,
                    "lock '%s' is held by another owner (expires in %lld ms)",
                    shown(l, nm, sizeof nm), (long long)pttl);
    char q[80] = "";
    if (queued)
        snprintf(q, sizeof q, " (on %zu of them free, but another waiter is first in line)", queued);
    return lerr(l, REDLOCK_NOT_ACQUIRED,
                "lock '%s': taken on %zu of %zu nodes, held by another owner on %zu%s, %zu failed "
                "(quorum %zu)",
                shown(l, nm, sizeof nm), acq, c->n, held, q, t.err, c->quorum);
}

/* Every node answered the acquire (or failed): judge. */
static void acquire_judge(redlock *l)
{
    redlock_client *c = l->c;
    l->rtt = c->now - l->t0;
    size_t acq = 0, held = 0, queued = 0;
    uint64_t token = 0;
    int64_t pttl = -1;
    for (size_t i = 0; i < c->n; i++) {
        nres *nd = &l->res[i];
        if (nd->state != N_OK)
            continue;
        if ((nd->code == 1 || nd->code == 2) && nd->val >= 0) {
            nd->acq = 1;
            acq++;
            if ((uint64_t)nd->val > token)
                token = (uint64_t)nd->val;
        } else if (nd->code == 0 || nd->code == 3) {
            held++;
            queued += nd->code == 3;
            if (nd->val > 0 && (pttl < 0 || nd->val < pttl))
                pttl = nd->val;
        } else {
            node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: acquire script answered %lld",
                       c->nodes[i].desc, nd->code);
        }
    }
    l->token = token;
    if (acq < c->quorum) {
        release_taken(l, acquire_lost(l, acq, held, queued, pttl));
        return;
    }
    /* Quorum fencing: raise every taken node's counter to at least the
     * token, so any later quorum, which overlaps this one, counts past it. */
    uint32_t low = 0;
    if (c->opts.fencing && c->n > 1)
        for (size_t i = 0; i < c->n; i++)
            if (l->res[i].acq && (uint64_t)l->res[i].val < token)
                low |= bit(i);
    if (!low) {
        acquire_won(l);
        return;
    }
    fmt_u64(l->tok_str, sizeof l->tok_str, token);
    round_start(l, PH_RAISE, S_RAISE, low, 0);
}

static void raise_judge(redlock *l)
{
    redlock_client *c = l->c;
    char nm[64];
    size_t raised = 0;
    for (size_t i = 0; i < c->n; i++) {
        const nres *nd = &l->res[i];
        if (!nd->acq)
            continue;
        raised += nd->state == N_SKIP || (nd->state == N_OK && (uint64_t)nd->code >= l->token);
    }
    if (raised >= c->quorum) {
        acquire_won(l);
        return;
    }
    l->transient = 1;
    release_taken(l, lerr(l, REDLOCK_ERR_IO,
                          "lock '%s': could not raise the fence counter on a quorum",
                          shown(l, nm, sizeof nm)));
}

/* ---- waiting: redlock_lock ----------------------------------------------------------------- */

static void lock_end(redlock *l, int rc)
{
    redlock_client *c = l->c;
    uint32_t m = 0;
    chan_leave(l);
    if (c->opts.fair) {
        /* Leave the line where we are still in it: everywhere after a
         * failure; after a quorum acquire, on the nodes that did not give
         * us the lock (the acquire left the line on the others), or we
         * would stand first there until our lease ran out. */
        for (size_t i = 0; i < c->n; i++)
            if (rc != REDLOCK_OK || !l->res[i].acq)
                m |= bit(i);
    }
    l->waiting = 0;
    if (!m) {
        finish(l, rc);
        return;
    }
    l->pending = rc;
    round_start(l, PH_DEQUEUE, S_DEQUEUE, m, 0);
}

/* Sleep until a release, the holder's TTL running out, or a jittered
 * backoff; a waiter behind another local one parks until it is first. */
static void lock_sleep(redlock *l, int rc)
{
    redlock_client *c = l->c;
    if (l->woken && rc == REDLOCK_NOT_ACQUIRED) {
        try_now(l); /* a release came while we tried */
        return;
    }
    if (!c->opts.fair && rc == REDLOCK_NOT_ACQUIRED && l->ch && l->ch->head != l) {
        l->phase = PH_PARKED;
        timer_set(l, l->deadline);
        return;
    }
    int64_t max = ms_ns(c->opts.retry_max_ms);
    /* A fair waiter that listens is told when its turn comes (its own
     * channel): until then it only renews its place, every retry_max_ms
     * (its lease is twice that), and keeps the server quiet. */
    if (c->opts.fair && rc == REDLOCK_NOT_ACQUIRED && l->ch && chan_any_on(c, l->ch))
        l->backoff = max;
    int64_t half = l->backoff / 2;
    int64_t sleep = half + (int64_t)(next_random(c) % (uint64_t)(half + 1));
    l->backoff = l->backoff * 2 > max ? max : l->backoff * 2;
    if (rc == REDLOCK_NOT_ACQUIRED && l->holder_pttl >= 0 && ms_ns(l->holder_pttl + 1) < sleep)
        sleep = ms_ns(l->holder_pttl + 1);
    int64_t until = c->now + sleep;
    l->phase = PH_SLEEP;
    timer_set(l, until < l->deadline ? until : l->deadline);
}

static void lock_tried(redlock *l, int rc)
{
    redlock_client *c = l->c;
    if (rc == REDLOCK_OK || (rc != REDLOCK_NOT_ACQUIRED && !l->transient) || c->now >= l->deadline) {
        lock_end(l, rc);
        return;
    }
    l->pending = rc;
    if (rc != REDLOCK_NOT_ACQUIRED) {
        lock_sleep(l, rc);
        return;
    }
    if (chan_join(l) != REDLOCK_OK) {
        lock_end(l, lerr(l, REDLOCK_ERR_NOMEM, "out of memory subscribing"));
        return;
    }
    if (chan_subscribed(c, l->ch)) {
        lock_sleep(l, rc);
        return;
    }
    /* A release may come before we listen: once subscribed, try again. */
    l->sub_needed = 1;
    l->phase = PH_SUBSCRIBE;
    int64_t lim = c->now + ms_ns(c->opts.io_timeout_ms);
    timer_set(l, lim < l->deadline ? lim : l->deadline);
    if (chan_settled(c, l->ch))
        mark_ready(l); /* listeners down: nothing to wait for */
}

/* PH_SUBSCRIBE is over: every node confirmed, failed, or the limit passed.
 * A release may have come between the failed try and the subscription, and
 * its message went to nobody: a plain read on every node tells (see
 * probe_judge), where trying again would run the acquire script. */
static void subscribed(redlock *l)
{
    redlock_client *c = l->c;
    timer_clear(l);
    if (l->sub_needed && !l->raced && l->ch && chan_any_on(c, l->ch)) {
        l->raced = 1;
        round_start(l, PH_PROBE, S_PROBE, all_nodes(c), l->deadline);
        return;
    }
    lock_sleep(l, l->pending);
}

/* PH_PROBE is over: try again at once when a release came meanwhile, or
 * when the key is missing (fair mode: the line is empty or we are first)
 * on enough nodes that a quorum could be ours (a node that did not answer
 * counts: the try finds out); otherwise sleep as after the failed try. A
 * fair waiter behind another is told when its turn comes: the release
 * goes to the first in line whose lease is alive, and drops dead ones
 * ahead of it. */
static void probe_judge(redlock *l)
{
    redlock_client *c = l->c;
    size_t held = 0;
    int64_t pttl = -1;
    for (size_t i = 0; i < c->n; i++) {
        const nres *nd = &l->res[i];
        if (nd->state != N_OK || nd->code == -2)
            continue;
        held++;
        if (nd->code >= 0 && (pttl < 0 || nd->code < pttl))
            pttl = nd->code;
    }
    if (l->woken || held <= c->n - c->quorum) {
        try_now(l);
        return;
    }
    if (pttl >= 0)
        l->holder_pttl = pttl;
    lock_sleep(l, l->pending);
}

static void try_now(redlock *l)
{
    timer_clear(l);
    acquire_start(l);
}

/* ---- unlock, refresh, inspect ---------------------------------------------------------------- */

/* How a compare-and-act script went: code 1 (or 2) ours, 0 no key, -1 another owner. */
typedef struct verdict {
    size_t ours, missing, other;
    tally t;
} verdict;

static verdict judge(redlock *l)
{
    redlock_client *c = l->c;
    verdict v = {0, 0, 0, {0, 0, 1}};
    for (size_t i = 0; i < c->n; i++) {
        nres *nd = &l->res[i];
        nd->acq = 0;
        if (nd->state != N_OK)
            continue;
        if (nd->code == 1 || nd->code == 2) {
            nd->acq = 1;
            v.ours++;
        } else if (nd->code == 0)
            v.missing++;
        else if (nd->code == -1)
            v.other++;
        else
            node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: script answered %lld",
                       c->nodes[i].desc, nd->code);
    }
    v.t = count_nodes(l);
    return v;
}

/* NOT_HELD with the reason: expired, or another owner. */
static int not_held(redlock *l, const char *op, verdict v)
{
    redlock_client *c = l->c;
    char nm[64];
    l->held = 0;
    l->valid_until = 0;
    l->transient = 0;
    if (c->n == 1)
        return lerr(l, REDLOCK_NOT_HELD,
                    v.other ? "%s '%s': the lock is held by another owner; nothing changed"
                            : "%s '%s': the lock is not held (it expired or was never taken); "
                              "nothing changed",
                    op, shown(l, nm, sizeof nm));
    return lerr(l, REDLOCK_NOT_HELD,
                "%s '%s': ours on %zu of %zu nodes (quorum %zu); expired on %zu, another owner on "
                "%zu, %zu failed",
                op, shown(l, nm, sizeof nm), v.ours, c->n, c->quorum, v.missing, v.other, v.t.err);
}

static void unlock_judge(redlock *l)
{
    redlock_client *c = l->c;
    verdict v = judge(l);
    l->held = 0;
    l->valid_until = 0;
    if (v.ours >= c->quorum) {
        chan *ch = chan_find(c, l->channel, l->chlen, hash_bytes(l->channel, l->chlen));
        if (ch)
            chan_wake(c, ch); /* a local waiter need not wait for the message */
        finish(l, REDLOCK_OK);
    } else if (v.ours + v.missing + v.other >= c->quorum)
        finish(l, not_held(l, "unlock", v));
    else
        finish(l, fail_nodes(l, "unlock", v.t));
}

static void keepalive_done(redlock *l, int rc);

/* The refresh is over: for redlock_refresh that is the result; keepalive
 * keeps going. */
static void refresh_over(redlock *l, int rc)
{
    if (l->op == OP_KEEPALIVE)
        keepalive_done(l, rc);
    else
        finish(l, rc);
}

static void refresh_start(redlock *l)
{
    l->t0 = l->c->now;
    l->repair = 0;
    round_start(l, PH_REFRESH, S_REFRESH, all_nodes(l->c), l->t0 + ms_ns(l->ttl));
}

static void refresh_judge(redlock *l)
{
    redlock_client *c = l->c;
    verdict v = judge(l);
    if (v.ours >= c->quorum) {
        int64_t until = l->t0 + ms_ns(l->ttl) - drift_ns(l);
        if (until <= c->now) {
            char nm[64];
            l->pending = lerr(l, REDLOCK_NOT_HELD, "refresh '%s': the TTL ran out before the reply",
                              shown(l, nm, sizeof nm));
            l->held = 0;
            l->valid_until = 0;
            round_start(l, PH_RELEASE_TAKEN, S_RELEASE, taken_nodes(l), 0);
            return;
        }
        l->held = 1;
        l->valid_until = until;
        l->renewed_at = l->t0;
        if (v.missing > 0) {
            /* A node restarted empty lost our key. We hold a quorum, so no
             * one else can: set it again there (never where another value
             * is), or a second restart would cost the quorum. */
            uint32_t m = 0;
            for (size_t i = 0; i < c->n; i++)
                if (l->res[i].state == N_OK && l->res[i].code == 0)
                    m |= bit(i);
            l->repair = 1;
            round_start(l, PH_REPAIR, S_REFRESH, m, until);
            return;
        }
        refresh_over(l, REDLOCK_OK);
        return;
    }
    if (v.ours + v.missing + v.other >= c->quorum || v.missing + v.other > c->n - c->quorum) {
        l->pending = not_held(l, "refresh", v);
        if (v.ours > 0) {
            round_start(l, PH_RELEASE_TAKEN, S_RELEASE, taken_nodes(l), 0);
            return;
        }
        refresh_over(l, l->pending);
        return;
    }
    refresh_over(l, fail_nodes(l, "refresh", v.t));
}

static void inspect_judge(redlock *l)
{
    redlock_client *c = l->c;
    redlock_info *info = l->info;
    tally t = count_nodes(l);
    if (t.ok < c->quorum) {
        finish(l, fail_nodes(l, "inspect", t));
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        const nres *a = &l->res[i];
        if (a->state != N_OK)
            continue;
        if ((uint64_t)a->val > info->fence)
            info->fence = (uint64_t)a->val;
        if (!a->vhash || info->held)
            continue;
        size_t same = 0;
        int64_t ttl = -1;
        for (size_t j = 0; j < c->n; j++) {
            const nres *b = &l->res[j];
            if (b->state == N_OK && b->vhash == a->vhash) {
                same++;
                if (ttl < 0 || b->code < ttl)
                    ttl = b->code;
            }
        }
        if (same >= c->quorum) {
            info->held = 1;
            info->ours = a->ours;
            info->ttl_ms = ttl;
        }
    }
    finish(l, REDLOCK_OK);
}

/* ---- keepalive ---------------------------------------------------------------------------------- */

/* A held lock with keepalive on refreshes every ttl/3 and watches its
 * validity; the timer is the earlier of the two. */
static void keepalive_arm(redlock *l)
{
    if (!l->keepalive || !l->held || l->op != OP_NONE)
        return;
    int64_t at = l->renewed_at + ms_ns(l->ttl) / 3;
    if (at > l->valid_until)
        at = l->valid_until;
    timer_set(l, at);
}

static void keepalive_lost(redlock *l, const char *why)
{
    char nm[64];
    l->held = 0;
    l->valid_until = 0;
    lerr(l, REDLOCK_NOT_HELD, "keepalive '%s': the lease is lost: %s", shown(l, nm, sizeof nm), why);
    memcpy(l->c->errstr, l->errstr, sizeof l->errstr);
    l->result = REDLOCK_NOT_HELD;
    done_push(l);
}

static void keepalive_done(redlock *l, int rc)
{
    redlock_client *c = l->c;
    char why[sizeof l->errstr + 64];
    l->op = OP_NONE;
    l->phase = PH_NONE;
    l->seq++;
    if (rc == REDLOCK_OK || (rc != REDLOCK_NOT_HELD && c->now < l->valid_until)) {
        /* held; or an error with time left: try again soon, not later than
         * a third of what is left */
        int64_t at = l->renewed_at + ms_ns(l->ttl) / 3;
        if (rc != REDLOCK_OK) {
            int64_t soon = c->now + (l->valid_until - c->now) / 3;
            at = soon > c->now + ms_ns(10) ? soon : c->now + ms_ns(10);
        }
        timer_set(l, at < l->valid_until ? at : l->valid_until);
        return;
    }
    if (rc == REDLOCK_NOT_HELD)
        snprintf(why, sizeof why, "%s", l->errstr);
    else
        snprintf(why, sizeof why, "its TTL ran out before a refresh succeeded (last error: %s)",
                 l->errstr);
    timer_clear(l);
    keepalive_lost(l, why);
}

/* The lock's timer fired with no operation in flight: refresh, or the
 * lease ran out. */
static void keepalive_fire(redlock *l)
{
    redlock_client *c = l->c;
    if (!l->held)
        return;
    if (c->now >= l->valid_until) {
        timer_clear(l);
        keepalive_lost(l, "its TTL ran out before a refresh succeeded");
        return;
    }
    l->op = OP_KEEPALIVE;
    l->blocking = 0;
    refresh_start(l);
}

/* ---- the state machine ---------------------------------------------------------------------------- */

/* l's round has ended (every node answered or failed): judge it and move on. */
static void advance(redlock *l)
{
    switch (l->phase) {
    case PH_ACQUIRE:
        acquire_judge(l);
        break;
    case PH_RAISE:
        raise_judge(l);
        break;
    case PH_RELEASE_TAKEN:
        if (l->op == OP_TRYLOCK || l->op == OP_LOCK)
            try_over(l, l->pending);
        else
            refresh_over(l, l->pending);
        break;
    case PH_DEQUEUE:
        finish(l, l->pending);
        break;
    case PH_RELEASE:
        unlock_judge(l);
        break;
    case PH_REFRESH:
        refresh_judge(l);
        break;
    case PH_REPAIR:
        refresh_over(l, REDLOCK_OK);
        break;
    case PH_STATUS:
        inspect_judge(l);
        break;
    case PH_SUBSCRIBE:
        subscribed(l);
        break;
    case PH_PROBE:
        probe_judge(l);
        break;
    }
}

/* ---- stopping an operation ------------------------------------------------------------------ */

/* Stop waiting for l's requests: those never written are dropped, the
 * replies of the others are read and thrown away. Returns the nodes where
 * a request of l was written. */
static uint32_t forget_requests(redlock *l)
{
    redlock_client *c = l->c;
    uint32_t written = 0;
    for (size_t i = 0; i < c->n; i++)
        for (size_t j = 0; j < c->nodes[i].nsh; j++)
            if (net_conn_forget(c->nodes[i].sh[j].cmd, l) > 0)
                written |= bit(i);
    l->seq++;
    return written;
}

static void abandon(redlock *l)
{
    forget_requests(l);
    l->op = OP_NONE;
    l->phase = PH_NONE;
    l->blocking = 0;
    l->outstanding = 0;
    timer_clear(l);
    ready_remove(l);
    chan_leave(l);
}

/* Stop l's operation. An acquire that may have landed anywhere is released
 * there (unless the lock was held before: then it only renewed it); a
 * fair waiter leaves the line. Those requests need no answer. */
static void op_cancel(redlock *l)
{
    redlock_client *c = l->c;
    int acquiring = l->op == OP_TRYLOCK || l->op == OP_LOCK;
    uint32_t written = forget_requests(l);
    uint32_t landed = 0;
    if (acquiring && l->phase != PH_SLEEP && l->phase != PH_PARKED && l->phase != PH_SUBSCRIBE &&
        l->phase != PH_PROBE) {
        landed = taken_nodes(l);
        if (l->phase == PH_ACQUIRE) {
            landed |= written;
            for (size_t i = 0; i < c->n; i++)
                if (l->res[i].state == N_OK && (l->res[i].code == 1 || l->res[i].code == 2))
                    landed |= bit(i);
        }
    }
    if (acquiring && !l->held_before) {
        for (size_t i = 0; i < c->n; i++)
            if (landed & bit(i))
                queue_orphan(l, i, S_RELEASE);
        l->held = 0;
        l->valid_until = 0;
    }
    if (l->op == OP_LOCK && c->opts.fair)
        for (size_t i = 0; i < c->n; i++)
            queue_orphan(l, i, S_DEQUEUE);
    if (l->op == OP_UNLOCK) {
        l->held = 0;
        l->valid_until = 0;
    }
    l->waiting = 0;
    abandon(l);
    keepalive_arm(l);
}

/* ---- the engine -------------------------------------------------------------------------------- */

/* During a round the lock's timer is the earliest retry due (and, for a
 * keepalive refresh, the end of the validity). */
static void timer_rearm_round(redlock *l)
{
    int64_t at = l->op == OP_KEEPALIVE ? l->valid_until : 0;
    for (size_t i = 0; i < l->c->n; i++) {
        int64_t r = l->res[i].retry_at;
        if (r && (!at || r < at))
            at = r;
    }
    if (at)
        timer_set(l, at);
    else
        timer_clear(l);
}

/* Send the requests whose retry is due. */
static void retry_due(redlock *l)
{
    redlock_client *c = l->c;
    for (size_t i = 0; i < c->n; i++) {
        nres *nd = &l->res[i];
        if (!nd->retry_at || nd->retry_at > c->now || nd->final)
            continue;
        nd->retry_at = 0;
        int rc = send_request(l, i, -1);
        if (rc != REDLOCK_OK) {
            node_error(l, i, rc, 0, "%s: cannot queue a request: %s", c->nodes[i].desc,
                       redlock_strerror(rc));
            settle(l, i);
        }
    }
    if (l->op != OP_NONE && l->outstanding > 0)
        timer_rearm_round(l);
}

/* l's timer is due. */
static void fire(redlock *l)
{
    redlock_client *c = l->c;
    timer_clear(l);
    switch (l->phase) {
    case PH_SLEEP:
    case PH_PARKED:
        try_now(l);
        return;
    case PH_SUBSCRIBE:
        subscribed(l);
        return;
    }
    if (l->op == OP_NONE) {
        keepalive_fire(l);
    } else if (l->op == OP_KEEPALIVE && c->now >= l->valid_until) {
        abandon(l);
        keepalive_lost(l, "its TTL ran out: no node answered the refresh in time");
    } else if (l->outstanding > 0) {
        retry_due(l);
    }
}

static int fire_timers(redlock_client *c)
{
    int fired = 0;
    for (int guard = 0; guard < 1 << 20; guard++) {
        redlock *due = NULL;
        for (redlock *l = c->armed; l; l = l->tnext)
            if (l->timer_at <= c->now) {
                due = l;
                break;
            }
        if (!due)
            break;
        fire(due);
        fired++;
    }
    return fired;
}

static int run_ready(redlock_client *c)
{
    int k = 0;
    for (; c->ready && k < 1 << 20; k++) {
        redlock *l = c->ready;
        c->ready = l->ready_next;
        l->on_ready = 0;
        if (l->op != OP_NONE && l->outstanding == 0)
            advance(l);
    }
    return k;
}

/* ---- the slot map of a cluster ------------------------------------------------------------------ */

/* Ask one of cluster node i's shards (in turn) for CLUSTER SLOTS. */
static void map_ask(redlock_client *c, size_t i)
{
    node *m = &c->nodes[i];
    static const char *const argv[2] = {"CLUSTER", "SLOTS"};
    static const size_t lens[2] = {7, 5};
    size_t j = m->map_next++ % m->nsh;
    net_tag tag = {m, 0, K_SLOTS};
    m->map_due = 0;
    if (net_conn_request(m->sh[j].cmd, 2, argv, lens, tag, 0, c->now) != RESP_OK) {
        m->map_due = c->now + ms_ns(100);
        return;
    }
    m->map_busy = 1;
    m->map_moves = m->moves;
}

/* One CLUSTER SLOTS entry: {start, end, {host, port, ...} (the primary),
 * replicas...}. 0, or -1 if malformed. */
static int map_entry(redlock_client *c, size_t i, size_t asked, const resp_reply *e)
{
    node *m = &c->nodes[i];
    const resp_reply *p = e + 3;
    if (e->type != RESP_ARRAY || e->n < 3 || e[1].type != RESP_INTEGER ||
        e[2].type != RESP_INTEGER || p->type != RESP_ARRAY || p->n < 2 ||
        (p[1].type != RESP_BULK && p[1].type != RESP_NIL) || p[2].type != RESP_INTEGER)
        return -1;
    long long lo = e[1].integer, hi = e[2].integer, port = p[2].integer;
    if (lo < 0 || hi >= NSLOTS || lo > hi || port <= 0 || port > 65535)
        return -1;
    char ps[8];
    int pl = snprintf(ps, sizeof ps, "%lld", port);
    int j = shard_at(c, i, asked, p[1].type == RESP_BULK ? p[1].str : "",
                     p[1].type == RESP_BULK ? p[1].len : 0, ps, (size_t)pl);
    if (j < 0)
        return -1;
    for (long long s = lo; s <= hi; s++)
        m->scratch[s] = (int16_t)j;
    return 0;
}

/* The CLUSTER SLOTS reply from shard j of node i. A map that a MOVED
 * overtook meanwhile is dropped (and asked for again): it may be older
 * than what the MOVED said. */
static void map_reply(redlock_client *c, size_t i, size_t j, int status, const resp_reply *r)
{
    node *m = &c->nodes[i];
    m->map_busy = 0;
    if (status != RESP_OK || r->type != RESP_ARRAY || m->moves != m->map_moves) {
        m->map_due = c->now + ms_ns(status != RESP_OK || r->type != RESP_ARRAY ? 100 : 0);
        return;
    }
    for (size_t s = 0; s < NSLOTS; s++)
        m->scratch[s] = -1;
    const resp_reply *e = r + 1;
    for (uint32_t k = 0; k < r->n; k++, e += e->span)
        if (map_entry(c, i, j, e) != 0) {
            m->map_due = c->now + ms_ns(100); /* try another node */
            return;
        }
    memcpy(m->slots, m->scratch, NSLOTS * sizeof *m->slots);
}

/* ---- taking results ------------------------------------------------------------------------------ */

/* Hand shard j of node i's replies to the operations that sent them. */
static int take_replies(redlock_client *c, size_t i, size_t j)
{
    net_conn *conn = c->nodes[i].sh[j].cmd;
    net_tag tag;
    const resp_reply *r;
    size_t ne;
    int st, k = 0;
    while ((st = net_conn_take(conn, &tag, &r, &ne)) != RESP_IDLE) {
        k++;
        if ((tag.kind & 0xff) == K_SLOTS) {
            map_reply(c, i, j, st, r);
            if (st == RESP_OK)
                net_conn_consume(conn);
            continue;
        }
        redlock *l = tag.owner;
        int live = l && l->seq == tag.seq && l->op != OP_NONE;
        if (st == RESP_OK) {
            if (live && on_result(l, i, tag.kind, RESP_OK, r) < 0)
                net_conn_fail(conn, RESP_ERR_PROTOCOL, "a reply out of step: connection closed");
            else
                net_conn_consume(conn);
        } else if (live) {
            on_result(l, i, tag.kind, st, NULL);
        }
    }
    return k;
}

/* Shard j of node i's listener: pushes, and whether it lost its
 * subscriptions. */
static int take_pushes(redlock_client *c, size_t i, size_t j)
{
    shard *sh = &c->nodes[i].sh[j];
    net_tag tag;
    const resp_reply *r;
    size_t ne;
    int st, k = 0, failed = 0;
    while ((st = net_conn_take(sh->sub, &tag, &r, &ne)) != RESP_IDLE) {
        k++;
        if (st != RESP_OK) {
            failed = 1;
            continue;
        }
        on_push(c, i, j, r);
        net_conn_consume(sh->sub);
    }
    int up = net_conn_ready(sh->sub);
    uint64_t gen = net_conn_generation(sh->sub);
    if (failed || (sh->sub_gen && (!up || gen != sh->sub_gen))) {
        listener_reset(c, i, j);
        k++;
    }
    sh->sub_gen = up ? gen : 0;
    return k;
}

static net_conn *conn_of_fd(const redlock_client *c, int fd)
{
    for (size_t i = 0; i < c->n; i++)
        for (size_t j = 0; j < c->nodes[i].nsh; j++) {
            const shard *sh = &c->nodes[i].sh[j];
            if (net_conn_fd(sh->cmd) == fd)
                return sh->cmd;
            if (sh->sub && net_conn_fd(sh->sub) == fd)
                return sh->sub;
        }
    return NULL;
}

/* One turn of the engine: the I/O poll() reported, then, until nothing
 * moves, connect and write what waits, hand out replies, move rounds that
 * ended, fire timers. Returns how many reported operations ended. */
static int engine_pass(redlock_client *c, const struct pollfd *fds, int nfds)
{
    c->now = net_now_ns();
    c->completed = 0;
    for (int k = 0; k < nfds; k++) {
        if (!fds[k].revents || fds[k].fd < 0)
            continue;
        net_conn *conn = conn_of_fd(c, fds[k].fd);
        if (conn)
            net_conn_io(conn, fds[k].revents, c->now);
    }
    for (int pass = 0; pass < MAX_PASSES; pass++) {
        int moved = 0;
        for (size_t i = 0; i < c->n; i++) {
            node *m = &c->nodes[i];
            if (m->cluster && m->map_due && m->map_due <= c->now && !m->map_busy)
                map_ask(c, i);
            for (size_t j = 0; j < m->nsh; j++) {
                shard *sh = &m->sh[j];
                net_conn_pump(sh->cmd, c->now);
                moved += take_replies(c, i, j);
                if (sh->sub) {
                    net_conn_pump(sh->sub, c->now);
                    moved += take_pushes(c, i, j);
                }
            }
        }
        moved += run_ready(c);
        moved += fire_timers(c);
        if (!moved)
            break;
    }
    return c->completed;
}

/* ---- client ---------------------------------------------------------------------------------------- */

void redlock_options_init(redlock_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = 1000;
    o->io_timeout_ms = 500;
    o->drift_factor = 0.01;
    o->fencing = 1;
    o->retry_min_ms = 50;
    o->retry_max_ms = 1000;
    o->max_bulk = RESP_DEFAULT_MAX_BULK;
    o->max_array = RESP_DEFAULT_MAX_ARRAY;
    o->max_depth = RESP_DEFAULT_MAX_DEPTH;
    o->max_line = RESP_DEFAULT_MAX_LINE;
    o->fair = 0;
    o->scripts = REDLOCK_SCRIPTS_AUTO;
}

static int check_options(const redlock_options *o)
{
    if (o->connect_timeout_ms <= 0 || o->io_timeout_ms <= 0)
        return global_err(REDLOCK_ERR_ARG, "connect_timeout_ms and io_timeout_ms must be > 0");
    if (!(o->drift_factor >= 0.0 && o->drift_factor < 0.5))
        return global_err(REDLOCK_ERR_ARG, "drift_factor must be in [0, 0.5)");
    if (o->fencing != 0 && o->fencing != 1)
        return global_err(REDLOCK_ERR_ARG, "fencing must be 0 or 1");
    if (o->fair != 0 && o->fair != 1)
        return global_err(REDLOCK_ERR_ARG, "fair must be 0 or 1");
    if (o->retry_min_ms <= 0 || o->retry_max_ms < o->retry_min_ms)
        return global_err(REDLOCK_ERR_ARG, "need 0 < retry_min_ms <= retry_max_ms");
    if (o->scripts != REDLOCK_SCRIPTS_AUTO && o->scripts != REDLOCK_SCRIPTS_EVAL &&
        o->scripts != REDLOCK_SCRIPTS_FUNCTIONS)
        return global_err(REDLOCK_ERR_ARG,
                          "scripts must be REDLOCK_SCRIPTS_AUTO, _EVAL or _FUNCTIONS");
    if (o->max_depth > RESP_MAX_DEPTH)
        return global_err(REDLOCK_ERR_ARG, "max_depth must be at most %d", RESP_MAX_DEPTH);
    if (o->wait_replicas < 0 || o->wait_replicas > 100)
        return global_err(REDLOCK_ERR_ARG, "wait_replicas must be 0 to 100");
    return REDLOCK_OK;
}

static net_opts conn_opts(const redlock_options *o)
{
    net_opts co;
    memset(&co, 0, sizeof co);
    co.connect_timeout_ms = o->connect_timeout_ms;
    co.io_timeout_ms = o->io_timeout_ms;
    co.limits.max_bulk = o->max_bulk;
    co.limits.max_array = o->max_array;
    co.limits.max_depth = o->max_depth;
    co.limits.max_line = o->max_line;
    co.tls = o->tls;
    return co;
}

/* A rediss:// URL needs a transport; the options' TLS fields fill in what
 * its parameters leave unset (copied: the caller's strings may go). */
static int url_tls(net_url *u, const redlock_options *o, char *err, size_t errlen)
{
    if (!u->tls)
        return RESP_OK;
    if (!o->tls) {
        snprintf(err, errlen, "rediss:// needs TLS: set redlock_options.tls to a transport, e.g. "
                              "redlock_tls_openssl() from a build with make TLS=openssl");
        return RESP_ERR_ARG;
    }
    return net_url_tls_defaults(u, o->tls_ca, o->tls_cert, o->tls_key, o->tls_insecure, err,
                                errlen);
}

/* Node i from its URL: one shard; a cluster (?cluster=1) one shard per
 * seed to begin with, and a slot map to fill from the first answer. */
static int add_node(redlock_client *c, size_t i, const char *url, const net_opts *co)
{
    node *m = &c->nodes[i];
    net_url u;
    char err[200];
    if (!url)
        return global_err(REDLOCK_ERR_ARG, "URL %zu is NULL", i + 1);
    int rc = net_url_parse(&u, url, err, sizeof err);
    if (rc == RESP_OK)
        rc = url_tls(&u, &c->opts, err, sizeof err);
    if (rc != RESP_OK) {
        memset(u.password, 0, sizeof u.password);
        return c->n == 1 ? global_err(REDLOCK_ERR_ARG, "%s", err)
                         : global_err(REDLOCK_ERR_ARG, "URL %zu: %s", i + 1, err);
    }
    m->opts = *co;
    m->cluster = u.cluster;
    m->sharded = 1;
    m->sh = resp_alloc_array(u.cluster ? MAX_SHARDS : 1, sizeof *m->sh);
    if (u.cluster) {
        /* CLUSTER SLOTS: an entry per slot range, nested three deep */
        m->opts.limits.max_array = NSLOTS;
        m->opts.max_elems = (size_t)NSLOTS * 16;
        if (m->opts.max_reply < ((size_t)4 << 20))
            m->opts.max_reply = (size_t)4 << 20;
        m->slots = resp_alloc_array(NSLOTS, sizeof *m->slots);
        m->scratch = resp_alloc_array(NSLOTS, sizeof *m->scratch);
        m->url = u;
        m->map_due = 1; /* at the first turn of the engine */
    }
    rc = !m->sh || (u.cluster && (!m->slots || !m->scratch)) ? -1 : add_shard(c, i, &u);
    for (int k = 0; rc >= 0 && k < u.nseeds; k++)
        rc = shard_at(c, i, 0, u.seed_host[k], strlen(u.seed_host[k]), u.seed_port[k],
                      strlen(u.seed_port[k]));
    memset(u.password, 0, sizeof u.password);
    if (rc < 0)
        return global_err(REDLOCK_ERR_NOMEM, "out of memory");
    if (m->slots)
        for (size_t s = 0; s < NSLOTS; s++)
            m->slots[s] = -1;
    snprintf(m->desc, sizeof m->desc, "%s%s", m->sh[0].desc, u.cluster ? " (cluster)" : "");
    return REDLOCK_OK;
}

static void free_node(node *m)
{
    for (size_t j = 0; m->sh && j < m->nsh; j++) {
        net_conn_free(m->sh[j].cmd);
        net_conn_free(m->sh[j].sub);
    }
    memset(m->url.password, 0, sizeof m->url.password);
    resp_free(m->sh);
    resp_free(m->slots);
    resp_free(m->scratch);
}

int redlock_client_new(redlock_client **out, const char *const *urls, size_t n,
                       const redlock_options *opts)
{
    redlock_options o;
    last_err[0] = '\0';
    if (!out)
        return global_err(REDLOCK_ERR_ARG, "out is NULL");
    *out = NULL;
    if (!urls || n == 0)
        return global_err(REDLOCK_ERR_ARG, "no Redis URLs given");
    if (n > MAX_NODES)
        return global_err(REDLOCK_ERR_ARG, "at most %d Redis nodes", MAX_NODES);
    if (opts)
        o = *opts;
    else
        redlock_options_init(&o);
    int rc = check_options(&o);
    if (rc != REDLOCK_OK)
        return rc;

    redlock_client *c = resp_alloc_array(1, sizeof *c);
    if (!c)
        return global_err(REDLOCK_ERR_NOMEM, "out of memory");
    c->opts = o;
    c->n = n;
    c->quorum = n / 2 + 1;
    c->nodes = resp_alloc_array(n, sizeof *c->nodes);
    c->fn = resp_alloc_array(n, sizeof *c->fn);
    c->pfd_cap = 2 * n;
    c->pfd = resp_alloc_array(c->pfd_cap, sizeof *c->pfd);
    if (!c->nodes || !c->fn || !c->pfd) {
        redlock_client_free(c);
        return global_err(REDLOCK_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        c->fn[i].fcall = o.scripts == REDLOCK_SCRIPTS_FUNCTIONS;
    net_opts co = conn_opts(&o);
    for (size_t i = 0; i < n; i++) {
        rc = add_node(c, i, urls[i], &co);
        if (rc != REDLOCK_OK) {
            redlock_client_free(c);
            return rc;
        }
    }
    if (fill_random(&c->rng, sizeof c->rng) != 0 || c->rng == 0)
        c->rng = (uint64_t)net_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    *out = c;
    return REDLOCK_OK;
}

void redlock_client_free(redlock_client *c)
{
    if (!c)
        return;
    /* Locks stay valid for redlock_free only; their operations end here
     * without I/O (a held lease is reclaimed by its TTL). */
    for (redlock *l = c->all, *next; l; l = next) {
        next = l->next;
        if (l->op != OP_NONE && l->op != OP_KEEPALIVE)
            l->result = REDLOCK_CANCELLED;
        l->op = OP_NONE;
        l->phase = PH_NONE;
        l->held = 0;
        l->ch = NULL;
        l->armed = l->on_ready = l->in_done = 0;
        l->prev = l->next = NULL;
        l->c = NULL;
    }
    if (c->nodes)
        for (size_t i = 0; i < c->n; i++)
            free_node(&c->nodes[i]);
    for (size_t b = 0; b < c->nbuckets; b++)
        for (chan *ch = c->buckets[b], *next; ch; ch = next) {
            next = ch->next;
            resp_free(ch->name);
            resp_free(ch);
        }
    for (chan *ch = c->free_chans, *next; ch; ch = next) {
        next = ch->next;
        resp_free(ch->name);
        resp_free(ch);
    }
    resp_free(c->buckets);
    resp_free(c->sbuckets);
    resp_free(c->nodes);
    resp_free(c->fn);
    resp_free(c->fn_code);
    resp_free(c->pfd);
    resp_free(c);
}

const char *redlock_client_errstr(const redlock_client *c)
{
    return c ? c->errstr : last_err;
}

const char *redlock_last_errstr(void)
{
    return last_err;
}

void redlock_set_allocator(void *(*alloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                           void (*free_fn)(void *))
{
    resp_set_allocator(alloc_fn, realloc_fn, free_fn);
}

int redlock_client_pollfds(redlock_client *c, struct pollfd *fds, int nfds)
{
    int k = 0;
    if (!c)
        return 0;
    for (size_t i = 0; i < c->n; i++)
        for (size_t j = 0; j < c->nodes[i].nsh; j++) {
            net_conn *two[2] = {c->nodes[i].sh[j].cmd, c->nodes[i].sh[j].sub};
            for (int t = 0; t < 2; t++) {
                short ev = two[t] ? net_conn_events(two[t]) : 0;
                if (!ev || net_conn_fd(two[t]) < 0)
                    continue;
                if (fds && k < nfds) {
                    fds[k].fd = net_conn_fd(two[t]);
                    fds[k].events = ev;
                    fds[k].revents = 0;
                }
                k++;
            }
        }
    return k;
}

uint64_t redlock_client_sockets(const redlock_client *c)
{
    uint64_t n = 0;
    if (!c)
        return 0;
    for (size_t i = 0; i < c->n; i++)
        for (size_t j = 0; j < c->nodes[i].nsh; j++) {
            const shard *sh = &c->nodes[i].sh[j];
            n += net_conn_sockets(sh->cmd) + (sh->sub ? net_conn_sockets(sh->sub) : 0);
        }
    return n;
}

int redlock_client_timeout_ms(const redlock_client *c)
{
    if (!c)
        return -1;
    if (c->ready)
        return 0;
    int64_t d = INT64_MAX;
    for (size_t i = 0; i < c->n; i++) {
        const node *m = &c->nodes[i];
        if (m->cluster && m->map_due && !m->map_busy && m->map_due < d)
            d = m->map_due;
        for (size_t j = 0; j < m->nsh; j++) {
            int64_t a = net_conn_deadline(m->sh[j].cmd);
            int64_t b = m->sh[j].sub ? net_conn_deadline(m->sh[j].sub) : INT64_MAX;
            if (a < d)
                d = a;
            if (b < d)
                d = b;
        }
    }
    for (const redlock *l = c->armed; l; l = l->tnext)
        if (l->timer_at < d)
            d = l->timer_at;
    if (d == INT64_MAX)
        return -1;
    int64_t left = d - net_now_ns();
    if (left <= 0)
        return 0;
    left = (left + 999999) / 1000000;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

int redlock_client_process(redlock_client *c, const struct pollfd *fds, int nfds)
{
    if (!c)
        return 0;
    return engine_pass(c, fds, nfds > 0 ? nfds : 0);
}

redlock *redlock_client_done(redlock_client *c)
{
    if (!c || !c->done_head)
        return NULL;
    redlock *l = c->done_head;
    c->done_head = l->done_next;
    if (!c->done_head)
        c->done_tail = NULL;
    l->in_done = 0;
    l->done_next = NULL;
    return l;
}

/* ---- lock handles ------------------------------------------------------------------------------- */

/* Does the name carry a Redis Cluster hash tag ({...} with something inside)? */
static int has_hash_tag(const char *s, size_t n)
{
    const char *open = memchr(s, '{', n);
    if (!open)
        return 0;
    const char *close = memchr(open + 1, '}', n - (size_t)(open + 1 - s));
    return close && close > open + 1;
}

/* The lock's keys, all in the lock key's hash slot: NAME, and {NAME}:fence,
 * {NAME}:queue, {NAME}:alive and the cluster release channel {NAME}:freed
 * (NAME:fence... when NAME has a hash tag); the release channel on plain
 * nodes redlock:NAME. Written into p; returns the end. */
static char *layout_keys(redlock *l, char *p, const char *name, size_t namelen)
{
    int tag = has_hash_tag(name, namelen);
    size_t fencelen = namelen + (tag ? 6 : 8);
    const char *suffix[4] = {"fence", "queue", "alive", "freed"};
    const char **dst[4] = {&l->fence_key, &l->queue_key, &l->alive_key, &l->wake_key};

    l->name = p;
    l->namelen = namelen;
    l->slot = key_slot(name, namelen);
    memcpy(p, name, namelen);
    p[namelen] = '\0';
    p += namelen + 1;
    l->fencelen = fencelen;
    for (int k = 0; k < 4; k++) {
        *dst[k] = p;
        if (tag) {
            memcpy(p, name, namelen);
            p[namelen] = ':';
            memcpy(p + namelen + 1, suffix[k], 6);
        } else {
            p[0] = '{';
            memcpy(p + 1, name, namelen);
            memcpy(p + 1 + namelen, "}:", 2);
            memcpy(p + 3 + namelen, suffix[k], 6);
        }
        p += fencelen + 1;
    }
    l->channel = p;
    l->chlen = 8 + namelen;
    memcpy(p, "redlock:", 8);
    memcpy(p + 8, name, namelen);
    p[l->chlen] = '\0';
    return p + l->chlen + 1;
}

static int has_cluster(const redlock_client *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->nodes[i].cluster)
            return 1;
    return 0;
}

int redlock_new(redlock **out, redlock_client *c, const char *name, const char *value,
                uint32_t ttl_ms)
{
    return redlock_new_len(out, c, name, name ? strlen(name) : 0, value, ttl_ms);
}

/* The checks redlock_new makes of its arguments (out and c already). */
static int check_new_args(redlock_client *c, const char *name, size_t namelen, const char *value,
                          uint32_t ttl_ms)
{
    if (!name || namelen == 0) {
        cerr(c, REDLOCK_ERR_ARG, "lock name is NULL or empty");
        return REDLOCK_ERR_ARG; /* said apart from cerr: the caller reads name only after OK */
    }
    if (namelen > MAX_NAME)
        return cerr(c, REDLOCK_ERR_ARG, "lock name is longer than %u bytes", MAX_NAME);
    if (ttl_ms == 0)
        return cerr(c, REDLOCK_ERR_ARG, "ttl_ms must be > 0");
    if (value && (value[0] == '\0' || strlen(value) > MAX_VALUE))
        return cerr(c, REDLOCK_ERR_ARG, "lock value must be 1 to %d bytes", MAX_VALUE);
    if (has_cluster(c) && !has_hash_tag(name, namelen) && memchr(name, '}', namelen))
        return cerr(c, REDLOCK_ERR_ARG,
                    "on Redis Cluster a lock name with '}' needs a {hash tag}: no other key "
                    "could share its slot");
    return REDLOCK_OK;
}

/* A random owner value: 32 hex digits into token[33]. */
static int random_value(redlock_client *c, char *token)
{
    unsigned char rnd[16];
    if (fill_random(rnd, sizeof rnd) != 0)
        return cerr(c, REDLOCK_ERR_IO, "no random source (getentropy, /dev/urandom): %s",
                    strerror(errno));
    for (int i = 0; i < 16; i++)
        snprintf(token + (size_t)i * 2, 3, "%02x", rnd[i]);
    return REDLOCK_OK;
}

/* PREFIX:VALUE written at p, NUL-terminated; returns the end. */
static char *put_joined(char *p, const char *prefix, size_t plen, const char *value, size_t vlen)
{
    memcpy(p, prefix, plen);
    p[plen] = ':';
    memcpy(p + plen + 1, value, vlen + 1);
    return p + plen + 1 + vlen + 1;
}

int redlock_new_len(redlock **out, redlock_client *c, const char *name, size_t namelen,
                    const char *value, uint32_t ttl_ms)
{
    char token[33];
    if (!out)
        return c ? cerr(c, REDLOCK_ERR_ARG, "out is NULL") : REDLOCK_ERR_ARG;
    *out = NULL;
    if (!c)
        return global_err(REDLOCK_ERR_ARG, "client is NULL");
    int rc = check_new_args(c, name, namelen, value, ttl_ms);
    if (rc != REDLOCK_OK)
        return rc;
    if (!value) {
        if ((rc = random_value(c, token)) != REDLOCK_OK)
            return rc;
        value = token;
    }
    /* one block: the lock, its per-node results, then its strings */
    size_t vlen = strlen(value);
    size_t fencelen = namelen + 8;
    size_t total = sizeof(redlock) + c->n * sizeof(nres) + namelen + 1 + 4 * (fencelen + 1) +
                   8 + namelen + 1 + vlen + 1 + (8 + namelen + 1 + vlen + 1) +
                   (fencelen + 1 + vlen + 1);
    redlock *l = resp_alloc(total);
    if (!l)
        return cerr(c, REDLOCK_ERR_NOMEM, "out of memory");
    memset(l, 0, sizeof *l + c->n * sizeof(nres));
    l->c = c;
    char *p = layout_keys(l, (char *)(l->res + c->n), name, namelen);
    l->value = p;
    l->vlen = vlen;
    memcpy(p, value, vlen + 1);
    p += vlen + 1;
    /* fair mode's own channels: redlock:NAME:VALUE and {NAME}:freed:VALUE */
    l->wlisten = p;
    l->wlisten_s = p = put_joined(p, l->channel, l->chlen, value, vlen);
    put_joined(p, l->wake_key, l->fencelen, value, vlen);
    int own = c->opts.fair;
    l->listen = own ? l->wlisten : l->channel;
    l->listen_len = own ? l->chlen + 1 + vlen : l->chlen;
    l->listen_s = own ? l->wlisten_s : l->wake_key;
    l->listen_slen = own ? l->fencelen + 1 + vlen : l->fencelen;
    l->ttl = ttl_ms;
    snprintf(l->ttl_str, sizeof l->ttl_str, "%" PRIu32, ttl_ms);
    l->holder_pttl = -1;
    l->result = REDLOCK_ERR_ARG;
    snprintf(l->errstr, sizeof l->errstr, "no operation has run on this lock");
    l->next = c->all;
    if (c->all)
        c->all->prev = l;
    c->all = l;
    *out = l;
    return REDLOCK_OK;
}

void redlock_free(redlock *l)
{
    if (!l)
        return;
    redlock_client *c = l->c;
    if (c) {
        if (l->op == OP_KEEPALIVE)
            abandon(l);
        else if (l->op != OP_NONE)
            op_cancel(l);
        forget_requests(l);
        timer_clear(l);
        ready_remove(l);
        done_remove(l);
        chan_leave(l);
        if (c->opts.fair) {
            /* its own channel: no other waiter will listen there */
            chan *ch = chan_find(c, l->listen, l->listen_len, hash_bytes(l->listen, l->listen_len));
            if (ch)
                chan_drop_idle(c, ch);
        }
        if (l->prev)
            l->prev->next = l->next;
        else
            c->all = l->next;
        if (l->next)
            l->next->prev = l->prev;
    }
    resp_free(l);
}

uint64_t redlock_fence(const redlock *l)
{
    return l ? l->fence : 0;
}

int64_t redlock_validity_ms(const redlock *l)
{
    if (!l || !l->held)
        return 0;
    int64_t left = (l->valid_until - net_now_ns()) / 1000000;
    return left > 0 ? left : 0;
}

const char *redlock_value(const redlock *l)
{
    return l ? l->value : NULL;
}

const char *redlock_errstr(const redlock *l)
{
    return l ? l->errstr : last_err;
}

void redlock_set_userdata(redlock *l, void *p)
{
    if (l)
        l->userdata = p;
}

void *redlock_userdata(const redlock *l)
{
    return l ? l->userdata : NULL;
}

int redlock_result(const redlock *l)
{
    if (!l)
        return REDLOCK_ERR_ARG;
    if (l->op != OP_NONE && l->op != OP_KEEPALIVE)
        return REDLOCK_IN_PROGRESS;
    return l->result;
}

/* ---- starting operations ---------------------------------------------------------------------- */

static int op_begin(redlock *l, int op, int blocking)
{
    if (!l)
        return global_err(REDLOCK_ERR_ARG, "lock is NULL");
    redlock_client *c = l->c;
    if (!c)
        return global_err(REDLOCK_ERR_ARG, "the lock's client was freed");
    if (l->op != OP_NONE && l->op != OP_KEEPALIVE)
        return cerr(c, REDLOCK_ERR_ARG, "an operation is already in flight on this lock");
    if (l->op == OP_KEEPALIVE)
        abandon(l); /* the caller's operation supersedes the keepalive refresh */
    done_remove(l);
    timer_clear(l);
    c->now = net_now_ns();
    l->op = (uint8_t)op;
    l->phase = PH_NONE;
    l->blocking = (uint8_t)blocking;
    l->held_before = (uint8_t)l->held;
    l->transient = 0;
    l->waiting = 0;
    l->result = REDLOCK_IN_PROGRESS;
    l->errstr[0] = '\0';
    if (blocking)
        c->errstr[0] = '\0';
    return REDLOCK_OK;
}

static void lock_begin(redlock *l, uint32_t wait_ms)
{
    redlock_client *c = l->c;
    l->deadline = c->now + ms_ns(wait_ms);
    l->lost = 0;
    l->backoff = ms_ns(c->opts.retry_min_ms);
    l->raced = 0;
    l->pending = REDLOCK_NOT_ACQUIRED;
    if (c->opts.fair) {
        /* Our place in line. One node orders waiters by its own clock, when
         * each joined. A quorum needs the same order on every node (else
         * each could favour another waiter and no one would win a
         * majority): the wall-clock ms when we began to wait. A waiter
         * renews its lease on every try, at least every retry_max_ms. */
        l->score_str[0] = '\0';
        if (c->n > 1) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            snprintf(l->score_str, sizeof l->score_str, "%lld",
                     (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        }
        snprintf(l->lease_str, sizeof l->lease_str, "%d",
                 2 * c->opts.retry_max_ms + c->opts.io_timeout_ms);
        l->waiting = 1;
    }
    acquire_start(l);
}

int redlock_start_trylock(redlock *l)
{
    int rc = op_begin(l, OP_TRYLOCK, 0);
    if (rc == REDLOCK_OK)
        acquire_start(l);
    return rc;
}

int redlock_start_lock(redlock *l, uint32_t wait_ms)
{
    int rc = op_begin(l, OP_LOCK, 0);
    if (rc == REDLOCK_OK)
        lock_begin(l, wait_ms);
    return rc;
}

int redlock_start_unlock(redlock *l)
{
    int rc = op_begin(l, OP_UNLOCK, 0);
    if (rc == REDLOCK_OK)
        round_start(l, PH_RELEASE, S_RELEASE, all_nodes(l->c), 0);
    return rc;
}

int redlock_start_refresh(redlock *l)
{
    int rc = op_begin(l, OP_REFRESH, 0);
    if (rc == REDLOCK_OK)
        refresh_start(l);
    return rc;
}

int redlock_cancel(redlock *l)
{
    if (!l)
        return global_err(REDLOCK_ERR_ARG, "lock is NULL");
    if (!l->c)
        return global_err(REDLOCK_ERR_ARG, "the lock's client was freed");
    if (l->op == OP_NONE || l->op == OP_KEEPALIVE)
        return cerr(l->c, REDLOCK_ERR_ARG, "no operation is in flight on this lock");
    char nm[64];
    op_cancel(l);
    l->result = lerr(l, REDLOCK_CANCELLED, "'%s': operation cancelled", shown(l, nm, sizeof nm));
    return REDLOCK_OK;
}

int redlock_keepalive(redlock *l, int on)
{
    if (!l)
        return global_err(REDLOCK_ERR_ARG, "lock is NULL");
    if (!l->c)
        return global_err(REDLOCK_ERR_ARG, "the lock's client was freed");
    if (on != 0 && on != 1)
        return cerr(l->c, REDLOCK_ERR_ARG, "keepalive takes 0 or 1");
    l->keepalive = on;
    if (on) {
        if (l->op == OP_NONE)
            keepalive_arm(l);
        return REDLOCK_OK;
    }
    if (l->op == OP_KEEPALIVE)
        abandon(l);
    else if (l->op == OP_NONE)
        timer_clear(l);
    return REDLOCK_OK;
}

/* ---- the blocking calls: an operation and a loop over the engine ------------------------------ */

static int run_blocking(redlock *l)
{
    redlock_client *c = l->c;
    engine_pass(c, NULL, 0);
    while (l->op != OP_NONE) {
        int n = redlock_client_pollfds(c, c->pfd, (int)c->pfd_cap);
        if ((size_t)n > c->pfd_cap) { /* a cluster met more primaries */
            struct pollfd *p = resp_realloc(c->pfd, (size_t)n * 2 * sizeof *p);
            if (!p) {
                abandon(l);
                return cerr(c, lerr(l, REDLOCK_ERR_NOMEM, "out of memory"), "out of memory");
            }
            c->pfd = p;
            c->pfd_cap = (size_t)n * 2;
            continue;
        }
        int t = redlock_client_timeout_ms(c);
        if (n == 0 && t < 0) {
            /* cannot happen: an operation in flight always has a deadline */
            abandon(l);
            return lerr(l, REDLOCK_ERR_IO, "internal error: nothing to wait for");
        }
        if (n == 1 && c->pfd[0].events == POLLIN &&
            (t < 0 || t >= c->opts.io_timeout_ms - 1)) {
            /* one socket, waiting for a reply, no timer due sooner (a
             * keepalive of another lock): wait in recv() (one system call
             * instead of poll() and recv()) when net.c can */
            net_conn *conn = conn_of_fd(c, c->pfd[0].fd);
            if (conn && net_conn_block(conn, net_now_ns())) {
                engine_pass(c, NULL, 0);
                continue;
            }
        }
        if (poll(c->pfd, (nfds_t)n, t) < 0 && errno != EINTR) {
            int e = errno;
            abandon(l);
            return cerr(c, lerr(l, REDLOCK_ERR_IO, "poll: %s", strerror(e)), "%s", l->errstr);
        }
        engine_pass(c, c->pfd, n);
    }
    return l->result;
}

int redlock_trylock(redlock *l)
{
    int rc = op_begin(l, OP_TRYLOCK, 1);
    if (rc != REDLOCK_OK)
        return rc;
    acquire_start(l);
    return run_blocking(l);
}

int redlock_lock(redlock *l, uint32_t wait_ms)
{
    int rc = op_begin(l, OP_LOCK, 1);
    if (rc != REDLOCK_OK)
        return rc;
    lock_begin(l, wait_ms);
    return run_blocking(l);
}

int redlock_unlock(redlock *l)
{
    int rc = op_begin(l, OP_UNLOCK, 1);
    if (rc != REDLOCK_OK)
        return rc;
    round_start(l, PH_RELEASE, S_RELEASE, all_nodes(l->c), 0);
    return run_blocking(l);
}

int redlock_refresh(redlock *l)
{
    int rc = op_begin(l, OP_REFRESH, 1);
    if (rc != REDLOCK_OK)
        return rc;
    refresh_start(l);
    return run_blocking(l);
}

int redlock_inspect(redlock *l, redlock_info *info)
{
    if (!l || !info)
        return global_err(REDLOCK_ERR_ARG, "lock or info is NULL");
    int rc = op_begin(l, OP_INSPECT, 1);
    if (rc != REDLOCK_OK)
        return rc;
    memset(info, 0, sizeof *info);
    info->ttl_ms = -1;
    l->info = info;
    round_start(l, PH_STATUS, S_STATUS, all_nodes(l->c), 0);
    rc = run_blocking(l);
    l->info = NULL;
    return rc;
}

/* ---- the function library on the nodes ------------------------------------------------------- */

const char *redlock_functions_library(void)
{
    return FUNCTIONS_LIBRARY;
}

size_t redlock_functions_code(char *buf, size_t cap)
{
    return library_text(buf, buf ? cap : 0);
}

enum { A_LOAD, A_LIST }; /* tag kinds of the requests below */

typedef struct admin_node {
    const net_url *url;
    net_conn *conn;
    unsigned pending;  /* replies still to come */
    int load_ok;       /* FUNCTION LOAD answered with the library's name */
    redlock_functions_node info;
} admin_node;

static int map_known(const node *m)
{
    for (size_t s = 0; s < NSLOTS; s++)
        if (m->slots[s] >= 0)
            return 1;
    return 0;
}

/* Cluster members: read the slot map now if the client has none yet (the
 * engine runs until every cluster answered CLUSTER SLOTS, or one request
 * deadline). */
static void admin_maps(redlock_client *c)
{
    int64_t end = net_now_ns() + ms_ns(c->opts.io_timeout_ms + c->opts.connect_timeout_ms);
    int missing = 0;
    c->now = net_now_ns();
    for (size_t i = 0; i < c->n; i++)
        if (c->nodes[i].cluster && !map_known(&c->nodes[i])) {
            map_soon(c, i);
            missing = 1;
        }
    while (missing && net_now_ns() < end) {
        engine_pass(c, c->pfd, 0);
        int n = redlock_client_pollfds(c, c->pfd, (int)c->pfd_cap);
        if (n > (int)c->pfd_cap)
            n = (int)c->pfd_cap; /* the rest on the next turn */
        int t = redlock_client_timeout_ms(c);
        int64_t left = (end - net_now_ns()) / 1000000 + 1;
        poll(c->pfd, (nfds_t)n, t < 0 || t > left ? (int)left : t);
        engine_pass(c, c->pfd, n);
        missing = 0;
        for (size_t i = 0; i < c->n; i++)
            missing |= c->nodes[i].cluster && (!map_known(&c->nodes[i]) || c->nodes[i].map_busy);
    }
}

/* The servers that need the library: each plain node of the client, and
 * every primary of each cluster (in its slot map: a library lives on each
 * server, and FUNCTION LOAD on a primary reaches its replicas). Fills
 * a[0..cap) and returns how many there are. */
static size_t library_targets(const redlock_client *c, admin_node *a, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++) {
        const node *m = &c->nodes[i];
        if (!m->cluster || !map_known(m)) {
            if (k < cap) {
                a[k].url = net_conn_url(m->sh[0].cmd);
                snprintf(a[k].info.node, sizeof a[k].info.node, "%s", m->desc);
                if (m->cluster) {
                    a[k].url = NULL;
                    a[k].info.status = REDLOCK_ERR_IO;
                    snprintf(a[k].info.detail, sizeof a[k].info.detail,
                             "could not read the cluster's slot map (CLUSTER SLOTS)");
                }
            }
            k++;
            continue;
        }
        for (size_t j = 0; j < m->nsh; j++) {
            int serves = 0;
            for (size_t s = 0; s < NSLOTS && !serves; s++)
                serves = m->slots[s] == (int16_t)j;
            if (!serves)
                continue;
            if (k < cap) {
                a[k].url = net_conn_url(m->sh[j].cmd);
                snprintf(a[k].info.node, sizeof a[k].info.node, "%s", m->sh[j].desc);
            }
            k++;
        }
    }
    return k;
}

static void admin_fail(admin_node *a, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void admin_fail(admin_node *a, int status, const char *fmt, ...)
{
    va_list ap;
    if (a->info.status != REDLOCK_OK)
        return; /* the first error explains the node */
    a->info.status = status;
    va_start(ap, fmt);
    vsnprintf(a->info.detail, sizeof a->info.detail, fmt, ap);
    va_end(ap);
}

static int is_text(const resp_reply *r, const char *s)
{
    size_t n = strlen(s);
    return (r->type == RESP_BULK || r->type == RESP_STATUS) && r->len == n &&
           memcmp(r->str, s, n) == 0;
}

/* FUNCTION LIST ... WITHCODE: each library is a flat list of names and
 * values (library_name, engine, functions, library_code). Notes which
 * redlock_v* libraries are there and whether ours has this build's code.
 * -1 when the reply has another shape. */
static int admin_list(admin_node *a, const resp_reply *r, const char *code, size_t codelen)
{
    redlock_functions_node *f = &a->info;
    size_t used = 0;
    if (r->type != RESP_ARRAY)
        return -1;
    const resp_reply *lib = r + 1;
    for (uint32_t k = 0; k < r->n; k++, lib += lib->span) {
        const resp_reply *name = NULL, *text = NULL, *e = lib + 1;
        if (lib->type != RESP_ARRAY)
            return -1;
        for (uint32_t j = 0; j + 1 < lib->n; j += 2) {
            const resp_reply *val = e + e->span;
            if (is_text(e, "library_name") && val->type == RESP_BULK)
                name = val;
            else if (is_text(e, "library_code") && val->type == RESP_BULK)
                text = val;
            e = val + val->span;
        }
        if (!name)
            return -1;
        int n = snprintf(f->libraries + used, sizeof f->libraries - used, "%s%.*s",
                         used ? " " : "", (int)(name->len > 64 ? 64 : name->len), name->str);
        if (n > 0 && used + (size_t)n < sizeof f->libraries)
            used += (size_t)n;
        if (is_text(name, FUNCTIONS_LIBRARY)) {
            if (text && text->len == codelen && memcmp(text->str, code, codelen) == 0)
                f->loaded = 1;
            else
                f->foreign = 1;
        }
    }
    return 0;
}

/* One reply (or failure) for node a. */
static void admin_reply(admin_node *a, net_tag tag, int st, const resp_reply *r,
                        const redlock_client *c)
{
    a->pending--;
    if (st != RESP_OK) {
        admin_fail(a, st, "%s", net_conn_errstr(a->conn));
        return;
    }
    if (tag.kind == A_LOAD) {
        /* "already exists": ours or another's; the list tells which */
        if (r->type == RESP_ERROR && !(error_starts(r, "ERR Library") &&
                                       r->len >= 14 &&
                                       memcmp(r->str + r->len - 14, "already exists", 14) == 0))
            admin_fail(a, REDLOCK_ERR_SERVER, "FUNCTION LOAD: %.*s",
                       (int)(r->len > 160 ? 160 : r->len), r->str);
        a->load_ok = r->type == RESP_BULK;
        a->info.changed = a->load_ok;
        return;
    }
    if (r->type == RESP_ERROR) {
        if (!a->load_ok) /* after a load that worked, the list is only a report */
            admin_fail(a, REDLOCK_ERR_SERVER, "FUNCTION LIST: %.*s",
                       (int)(r->len > 160 ? 160 : r->len), r->str);
        a->info.loaded |= a->load_ok;
        return;
    }
    if (admin_list(a, r, c->fn_code, c->fn_code_len) != 0)
        admin_fail(a, REDLOCK_ERR_PROTOCOL, "FUNCTION LIST: unexpected reply");
}

/* Send each node its requests, then run one poll() loop until every reply
 * is in or its deadline passed. */
static void admin_exchange(redlock_client *c, admin_node *a, size_t n, int load,
                           struct pollfd *pfd)
{
    static const char *const list[] = {"FUNCTION", "LIST", "LIBRARYNAME", "redlock_v*",
                                       "WITHCODE"};
    const size_t list_lens[] = {8, 4, 11, 10, 8};
    const char *argv[3] = {"FUNCTION", "LOAD", c->fn_code};
    const size_t lens[3] = {8, 4, c->fn_code_len};
    int64_t now = net_now_ns();
    for (size_t i = 0; i < n; i++) {
        net_tag tload = {a, 0, A_LOAD}, tlist = {a, 0, A_LIST};
        if (!a[i].conn)
            continue;
        if ((load && net_conn_request(a[i].conn, 3, argv, lens, tload, 0, now) != RESP_OK) ||
            net_conn_request(a[i].conn, 5, list, list_lens, tlist, 0, now) != RESP_OK) {
            admin_fail(&a[i], REDLOCK_ERR_NOMEM, "out of memory");
            net_conn_close(a[i].conn);
            continue;
        }
        a[i].pending = load ? 2 : 1;
    }
    for (;;) {
        size_t k = 0, waiting = 0;
        int64_t next = INT64_MAX;
        now = net_now_ns();
        for (size_t i = 0; i < n; i++) {
            net_tag tag;
            const resp_reply *r;
            int st;
            if (!a[i].pending)
                continue;
            net_conn_pump(a[i].conn, now);
            while (a[i].pending && (st = net_conn_take(a[i].conn, &tag, &r, NULL)) != RESP_IDLE) {
                admin_reply(&a[i], tag, st, r, c);
                if (st == RESP_OK)
                    net_conn_consume(a[i].conn);
            }
            if (!a[i].pending)
                continue;
            waiting++;
            if (net_conn_deadline(a[i].conn) < next)
                next = net_conn_deadline(a[i].conn);
            if (net_conn_fd(a[i].conn) >= 0 && net_conn_events(a[i].conn)) {
                pfd[k].fd = net_conn_fd(a[i].conn);
                pfd[k].events = net_conn_events(a[i].conn);
                pfd[k].revents = 0;
                k++;
            }
        }
        if (!waiting || (k == 0 && next == INT64_MAX))
            break; /* done, or (cannot happen) nothing left to wait for */
        int64_t left = next == INT64_MAX ? -1 : (next - now + 999999) / 1000000;
        int rc = poll(pfd, (nfds_t)k, left < 0 ? -1 : left > INT32_MAX ? INT32_MAX : (int)left);
        if (rc < 0 && errno != EINTR)
            break;
        now = net_now_ns();
        for (size_t j = 0; rc > 0 && j < k; j++)
            for (size_t i = 0; pfd[j].revents && i < n; i++)
                if (net_conn_fd(a[i].conn) == pfd[j].fd)
                    net_conn_io(a[i].conn, pfd[j].revents, now);
    }
    for (size_t i = 0; i < n; i++)
        if (a[i].pending)
            admin_fail(&a[i], REDLOCK_ERR_IO, "no answer");
}

static int admin_run(redlock_client *c, int load, redlock_functions_node *out, size_t cap,
                     size_t *count)
{
    const char *what = load ? "functions load" : "functions status";
    if (!c)
        return global_err(REDLOCK_ERR_ARG, "client is NULL");
    c->errstr[0] = '\0';
    admin_maps(c);
    size_t n = library_targets(c, NULL, 0);
    if (count)
        *count = n;
    admin_node *a = resp_alloc_array(n, sizeof *a);
    struct pollfd *pfd = resp_alloc_array(n, sizeof *pfd);
    if (!a || !pfd || library_code(c) != RESP_OK) {
        resp_free(a);
        resp_free(pfd);
        return cerr(c, REDLOCK_ERR_NOMEM, "%s: out of memory", what);
    }
    library_targets(c, a, n);
    /* FUNCTION LIST WITHCODE carries every redlock_v* library's text: more
     * room than lock replies need */
    net_opts o = conn_opts(&c->opts);
    o.limits.max_bulk = 1u << 20;
    o.limits.max_array = 4096;
    o.max_reply = (1u << 22);
    for (size_t i = 0; i < n; i++)
        if (a[i].url && net_conn_new(&a[i].conn, a[i].url, &o) != RESP_OK)
            admin_fail(&a[i], REDLOCK_ERR_NOMEM, "out of memory");
    admin_exchange(c, a, n, load, pfd);
    int rc = REDLOCK_OK;
    for (size_t i = 0; i < n; i++) {
        redlock_functions_node *f = &a[i].info;
        if (load && f->status == REDLOCK_OK && f->foreign)
            admin_fail(&a[i], REDLOCK_ERR_SERVER,
                       "a library named " FUNCTIONS_LIBRARY " with other code is loaded there; "
                       "it is never replaced (FUNCTION DELETE " FUNCTIONS_LIBRARY " removes it)");
        else if (load && f->status == REDLOCK_OK && !f->loaded)
            admin_fail(&a[i], REDLOCK_ERR_SERVER, "FUNCTION LOAD worked, but " FUNCTIONS_LIBRARY
                                                  " is not listed");
        if (f->status != REDLOCK_OK && rc == REDLOCK_OK)
            rc = cerr(c, f->status, "%s: %s: %s", what, f->node, f->detail);
        if (i < cap && out)
            out[i] = *f;
        net_conn_free(a[i].conn);
    }
    resp_free(a);
    resp_free(pfd);
    return rc;
}

int redlock_functions_load(redlock_client *c, redlock_functions_node *out, size_t cap,
                           size_t *count)
{
    return admin_run(c, 1, out, cap, count);
}

int redlock_functions_status(redlock_client *c, redlock_functions_node *out, size_t cap,
                             size_t *count)
{
    return admin_run(c, 0, out, cap, count);
}
