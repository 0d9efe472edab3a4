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
static const char DEQUEUE_LUA[] =
    "-- dequeue: leave the line; if we were first and the lock is free, wake\n"
    "-- the others so the next in line takes it\n"
    "-- KEYS: queue, alive, lock   ARGV: owner value, release channel\n"
    "local queue, alive, lock = KEYS[1], KEYS[2], KEYS[3]\n"
    "local value, channel = ARGV[1], ARGV[2]\n"
    "local head = redis.call('ZRANGE', queue, 0, 0)[1]\n"
    "redis.call('ZREM', queue, value)\n"
    "redis.call('ZREM', alive, value)\n"
    "if head == value and redis.call('EXISTS', lock) == 0 then\n"
    "  redis.call('PUBLISH', channel, 'released')\n"
    "end\n"
    "return 1\n";
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

enum { S_ACQUIRE, S_FAIR, S_DEQUEUE, S_RELEASE, S_REFRESH, S_RAISE, S_STATUS, S_COUNT };
enum { R_INT, R_PAIR, R_STATUS }; /* reply shapes */

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
    [S_DEQUEUE] = {"dequeue", DEQUEUE_LUA, "a89237a3b9d302317ca205f1a6f5975ed6f9c89c", 3, 2, R_INT},
    [S_RELEASE] = {"release", RELEASE_LUA, "742a9c720bb0d4d03c0b46e8f3a0e5757a0afc0e", 1, 2, R_INT},
    [S_REFRESH] = {"refresh", REFRESH_LUA, "ceb551be5baed2f994937f4a9af5693f3b3fd139", 1, 3, R_INT},
    [S_RAISE] = {"raise", RAISE_LUA, "fc64841434df38173ccd912b066213984bd8871d", 1, 1, R_INT},
    [S_STATUS] = {"status", STATUS_LUA, "1de151487cb9ba8f223d5ea0a8f65e12e2f6ca77", 2, 0, R_STATUS},
};
#define MAX_SCRIPT_ARGS 10

/* ---- types ----------------------------------------------------------------- */

/* What one node said in the current round of an operation. */
enum { N_SKIP, N_PENDING, N_ERR, N_OK };

typedef struct nres {
    uint8_t state;     /* N_SKIP, N_PENDING, N_ERR, N_OK                   */
    uint8_t status;    /* N_ERR: REDLOCK_ERR_*                             */
    uint8_t transient; /* N_ERR: worth waiting out                         */
    uint8_t eval;      /* EVALSHA said NOSCRIPT: EVAL went out             */
    uint8_t acq;       /* the operation's acquire or refresh holds it here */
    uint8_t ours;      /* S_STATUS: the holder's value is ours             */
    long long code;    /* N_OK: the script's first (or only) integer       */
    long long val;     /* N_OK: its second integer                         */
    uint64_t vhash;    /* S_STATUS: hash of the holder's value, 0: none    */
} nres;

/* A release channel with local waiters, and its subscription per node. */
typedef struct chan chan;
struct chan {
    chan *next; /* hash chain, or the free list */
    char *name;
    size_t len, cap;
    uint64_t hash;
    redlock *head, *tail; /* waiters, in the order they began to wait */
    struct {
        uint8_t on;       /* the server confirmed our last (un)subscribe: on */
        uint8_t sent_on;  /* what our last command asked for               */
        uint16_t inflight; /* (un)subscribes not yet confirmed             */
    } st[MAX_NODES];
};

typedef struct node {
    net_conn *cmd;    /* lock commands, pipelined                       */
    net_conn *sub;    /* the listener: channels with waiters; on demand  */
    uint64_t sub_gen; /* sub's connection the chan states belong to      */
    char desc[64];    /* host:port                                       */
} node;

enum { OP_NONE, OP_TRYLOCK, OP_LOCK, OP_UNLOCK, OP_REFRESH, OP_INSPECT, OP_KEEPALIVE };
enum {
    PH_NONE,
    PH_ACQUIRE,       /* acquire (or fair acquire) sent to every node        */
    PH_RAISE,         /* quorum fencing: lifting counters to the token       */
    PH_RELEASE_TAKEN, /* giving back what a failed acquire took; then result */
    PH_SUBSCRIBE,     /* waiting for the release channel's subscriptions     */
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
    redlock *all;   /* every lock of this client                     */
    redlock *armed; /* locks with a timer                            */
    redlock *ready; /* locks whose round ended without a reply to wait for */
    redlock *done_head, *done_tail;
    chan **buckets; /* channels with waiters or subscriptions         */
    size_t nbuckets, nchans;
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
    size_t namelen, fencelen, chlen, vlen;
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
    uint8_t raced;       /* redlock_lock: tried again after subscribing    */
    uint8_t woken;       /* a release came while a try was in flight       */
    uint8_t sub_needed;  /* PH_SUBSCRIBE: a subscription was missing       */
    uint8_t repair;      /* S_REFRESH argument                             */
    uint8_t transient;   /* the failure is worth waiting out               */
    uint32_t seq;        /* tags requests; a new round makes older replies stale */
    uint32_t outstanding;
    int result;          /* the last operation's status                    */
    int pending;         /* the status to give after a clean-up round      */
    int64_t t0;          /* when the current acquire or refresh began      */
    int64_t deadline;    /* redlock_lock: when the wait ends               */
    int64_t backoff;
    int64_t holder_pttl; /* ms left on the holder's lock at the last failed try */
    uint64_t token;
    redlock_info *info;  /* OP_INSPECT: filled when it ends               */
    char tok_str[24];
    char score_str[24];  /* fair mode: wall-clock ms when this wait began  */
    char lease_str[16];  /* fair mode: how long our place in line lasts    */
    size_t nerr_idx;     /* node of the first error in the round (n: none) */
    char nerr[192];
    char errstr[384];
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

static int is_bulk(const resp_reply *r, const char *s, size_t n)
{
    return r->type == RESP_BULK && r->len == n && memcmp(r->str, s, n) == 0;
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

/* ---- scripts on nodes --------------------------------------------------------------- */

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
        ARG(l->queue_key, l->fencelen), ARG(l->alive_key, l->fencelen), ARG(l->name, l->namelen);
        ARG(l->value, l->vlen), ARG(l->channel, l->chlen);
        break;
    case S_RELEASE:
        ARG(l->name, l->namelen), ARG(l->value, l->vlen), ARG(l->channel, l->chlen);
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

/* Queue EVALSHA (or EVAL) of script id for l on node i. owner NULL: a
 * request nobody waits for (always EVAL: it cannot fall back). */
static int queue_script(redlock *l, size_t i, int id, int eval, void *owner, int64_t cap)
{
    const script *s = &scripts[id];
    const char *argv[3 + MAX_SCRIPT_ARGS];
    size_t lens[3 + MAX_SCRIPT_ARGS];
    char nk[2] = {(char)('0' + s->nkeys), '\0'};
    int k = script_args(l, id, argv + 3, lens + 3);

    eval |= owner == NULL;
    argv[0] = eval ? "EVAL" : "EVALSHA";
    lens[0] = eval ? 4 : 7;
    argv[1] = eval ? s->lua : s->sha;
    lens[1] = strlen(argv[1]);
    argv[2] = nk;
    lens[2] = 1;
    net_tag tag = {owner, l->seq, (uint32_t)id};
    return net_conn_request(l->c->nodes[i].cmd, 3 + k, argv, lens, tag, cap, l->c->now);
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

/* Send script id to the nodes in mask, all at once. Requests never wait
 * past cap (0: no cap beyond io_timeout_ms). */
static void round_start(redlock *l, int phase, int id, uint32_t mask, int64_t cap)
{
    redlock_client *c = l->c;
    l->phase = (uint8_t)phase;
    l->seq++;
    l->outstanding = 0;
    l->nerr_idx = c->n;
    l->nerr[0] = '\0';
    for (size_t i = 0; i < c->n; i++) {
        nres *nd = &l->res[i];
        memset(nd, 0, offsetof(nres, acq)); /* the acq marks outlive a round */
        nd->state = N_SKIP;
        if (!(mask & bit(i)))
            continue;
        nd->state = N_PENDING;
        int rc = queue_script(l, i, id, 0, l, cap);
        if (rc != RESP_OK)
            node_error(l, i, rc, 0, "%s: cannot queue the %s script: %s", c->nodes[i].desc,
                       scripts[id].name, redlock_strerror(rc));
        else
            l->outstanding++;
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
    }
    return decode_status(nd, r, l);
}

static void advance(redlock *l);

/* A node's answer to l's current round: a reply, or a failure status.
 * Returns -1 when the reply had the wrong shape: the connection is out of
 * step and must not be used further. */
static int on_result(redlock *l, size_t i, int id, int status, const resp_reply *r)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    const char *desc = c->nodes[i].desc;
    int bad = 0;
    if (nd->state != N_PENDING)
        return 0;
    if (status != RESP_OK) {
        node_error(l, i, status, status == REDLOCK_ERR_IO || status == REDLOCK_ERR_TIMEOUT, "%s",
                   net_conn_errstr(c->nodes[i].cmd));
    } else if (r->type == RESP_ERROR && !nd->eval && r->len >= 8 &&
               memcmp(r->str, "NOSCRIPT", 8) == 0) {
        nd->eval = 1; /* not cached there (restart, SCRIPT FLUSH): EVAL loads it */
        int rc = queue_script(l, i, id, 1, l, 0);
        if (rc == RESP_OK)
            return 0;
        node_error(l, i, rc, 0, "%s: cannot queue the %s script: %s", desc, scripts[id].name,
                   redlock_strerror(rc));
    } else if (r->type == RESP_ERROR) {
        int auth = r->len >= 6 && memcmp(r->str, "NOAUTH", 6) == 0;
        node_error(l, i, auth ? REDLOCK_ERR_AUTH : REDLOCK_ERR_SERVER,
                   transient_error(r->str, r->len), "%s: %.*s", desc,
                   (int)(r->len > 120 ? 120 : r->len), r->str);
    } else if (decode(nd, scripts[id].shape, r, l) != 0) {
        node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: unexpected reply to the %s script", desc,
                   scripts[id].name);
        bad = -1;
    } else {
        nd->state = N_OK;
    }
    if (--l->outstanding == 0)
        advance(l);
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

static uint32_t taken_nodes(const redlock *l)
{
    uint32_t m = 0;
    for (size_t i = 0; i < l->c->n; i++)
        if (l->res[i].acq)
            m |= bit(i);
    return m;
}

/* ---- release channels and the listeners ------------------------------------------
 * A waiter joins its lock's channel; the channel is subscribed on every
 * node's listener while it has local waiters, and unsubscribed when the
 * last one leaves. A release message wakes the first local waiter (every
 * waiter in fair mode, where the server picks who is next): the others
 * would only lose the race to it. Confirmations come back in the order of
 * our (un)subscribe commands, one per command, so counting them per node
 * tells when a channel's state there is settled.
 */

enum { K_LISTEN = 100 }; /* tag kind of listener requests */

static chan *chan_find(const redlock_client *c, const char *name, size_t len, uint64_t h)
{
    if (c->nbuckets == 0)
        return NULL;
    for (chan *ch = c->buckets[h & (c->nbuckets - 1)]; ch; ch = ch->next)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static int chan_grow_table(redlock_client *c)
{
    size_t nb = c->nbuckets ? c->nbuckets * 2 : 16;
    chan **b = resp_alloc_array(nb, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < c->nbuckets; i++)
        for (chan *ch = c->buckets[i], *next; ch; ch = next) {
            next = ch->next;
            ch->next = b[ch->hash & (nb - 1)];
            b[ch->hash & (nb - 1)] = ch;
        }
    resp_free(c->buckets);
    c->buckets = b;
    c->nbuckets = nb;
    return 0;
}

/* The channel of l, made (from the free list when it can) if missing. */
static chan *chan_get(redlock_client *c, const redlock *l)
{
    uint64_t h = hash_bytes(l->channel, l->chlen);
    chan *ch = chan_find(c, l->channel, l->chlen, h);
    if (ch)
        return ch;
    if (c->nchans + 1 > c->nbuckets && chan_grow_table(c) != 0)
        return NULL;
    ch = c->free_chans;
    if (ch)
        c->free_chans = ch->next;
    else if (!(ch = resp_alloc_array(1, sizeof *ch)))
        return NULL;
    if (ch->cap < l->chlen) {
        char *p = resp_realloc(ch->name, l->chlen);
        if (!p) {
            ch->next = c->free_chans;
            c->free_chans = ch;
            return NULL;
        }
        ch->name = p;
        ch->cap = l->chlen;
    }
    memcpy(ch->name, l->channel, l->chlen);
    ch->len = l->chlen;
    ch->hash = h;
    ch->head = ch->tail = NULL;
    memset(ch->st, 0, sizeof ch->st);
    ch->next = c->buckets[h & (c->nbuckets - 1)];
    c->buckets[h & (c->nbuckets - 1)] = ch;
    c->nchans++;
    return ch;
}

/* A channel with no waiter and no subscription left goes to the free list. */
static void chan_release_if_unused(redlock_client *c, chan *ch)
{
    if (ch->head)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (ch->st[i].inflight || ch->st[i].on || ch->st[i].sent_on)
            return;
    for (chan **p = &c->buckets[ch->hash & (c->nbuckets - 1)]; *p; p = &(*p)->next)
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    c->nchans--;
    ch->next = c->free_chans;
    c->free_chans = ch;
}

static int listener(redlock_client *c, size_t i)
{
    node *nd = &c->nodes[i];
    if (nd->sub)
        return REDLOCK_OK;
    net_opts o;
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = c->opts.connect_timeout_ms;
    o.io_timeout_ms = c->opts.io_timeout_ms;
    o.limits.max_bulk = c->opts.max_bulk;
    o.limits.max_array = c->opts.max_array;
    o.limits.max_depth = c->opts.max_depth;
    o.limits.max_line = c->opts.max_line;
    o.tls = c->opts.tls;
    if (net_conn_new(&nd->sub, net_conn_url(nd->cmd), &o) != RESP_OK)
        return REDLOCK_ERR_NOMEM;
    net_conn_set_push(nd->sub);
    return REDLOCK_OK;
}

/* Ask node i's listener for ch on or off, unless the last command asked so. */
static void chan_want(redlock_client *c, chan *ch, size_t i, int on)
{
    if (ch->st[i].sent_on == on || listener(c, i) != REDLOCK_OK)
        return;
    const char *argv[2] = {on ? "SUBSCRIBE" : "UNSUBSCRIBE", ch->name};
    size_t lens[2] = {on ? 9u : 11u, ch->len};
    net_tag tag = {&c->nodes[i], 0, K_LISTEN};
    if (net_conn_request(c->nodes[i].sub, 2, argv, lens, tag, 0, c->now) != RESP_OK)
        return;
    ch->st[i].sent_on = (uint8_t)on;
    ch->st[i].inflight++;
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

/* l waits on its channel from now on, last in the local line. */
static int chan_join(redlock *l)
{
    redlock_client *c = l->c;
    if (l->ch)
        return REDLOCK_OK;
    chan *ch = chan_get(c, l);
    if (!ch)
        return REDLOCK_ERR_NOMEM;
    l->ch = ch;
    l->wnext = NULL;
    l->wprev = ch->tail;
    if (ch->tail)
        ch->tail->wnext = l;
    else
        ch->head = l;
    ch->tail = l;
    for (size_t i = 0; i < c->n; i++)
        chan_want(c, ch, i, 1);
    return REDLOCK_OK;
}

/* Let the local waiter first in line try: it was parked behind another. */
static void wake(redlock *l)
{
    if (l->phase == PH_SLEEP || l->phase == PH_PARKED)
        try_now(l);
    else
        l->woken = 1; /* a try is in flight: try again if it fails */
}

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

/* Node i's listener lost its connection (or never had one): nothing is
 * subscribed there now. Channels with waiters subscribe again. */
static void listener_reset(redlock_client *c, size_t i)
{
    node *nd = &c->nodes[i];
    nd->sub_gen = nd->sub ? net_conn_generation(nd->sub) : 0;
    for (size_t b = 0; b < c->nbuckets; b++)
        for (chan *ch = c->buckets[b], *next; ch; ch = next) {
            next = ch->next;
            memset(&ch->st[i], 0, sizeof ch->st[i]);
            if (ch->head)
                chan_want(c, ch, i, 1);
            else
                chan_release_if_unused(c, ch);
        }
    for (size_t b = 0; b < c->nbuckets; b++)
        for (chan *ch = c->buckets[b], *next; ch; ch = next) {
            next = ch->next;
            chan_settle_waiters(c, ch);
        }
}

/* A push on node i's listener: a release message, or the confirmation of
 * one of our (un)subscribe commands. */
static void on_push(redlock_client *c, size_t i, const resp_reply *r)
{
    if (r->type != RESP_ARRAY || r->n < 3 || r[1].type != RESP_BULK || r[2].type != RESP_BULK)
        return;
    int sub = is_bulk(&r[1], "subscribe", 9), unsub = is_bulk(&r[1], "unsubscribe", 11);
    chan *ch = chan_find(c, r[2].str, r[2].len, hash_bytes(r[2].str, r[2].len));
    if (sub || unsub)
        net_conn_ack(c->nodes[i].sub);
    if (!ch)
        return;
    if (is_bulk(&r[1], "message", 7)) {
        chan_wake(c, ch);
        return;
    }
    if (!(sub || unsub) || ch->st[i].inflight == 0)
        return;
    ch->st[i].inflight--;
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
        l->res[i].acq = 0;
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
    int64_t half = l->backoff / 2;
    int64_t sleep = half + (int64_t)(next_random(c) % (uint64_t)(half + 1));
    int64_t max = ms_ns(c->opts.retry_max_ms);
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

/* PH_SUBSCRIBE is over: every node confirmed, failed, or the limit passed. */
static void subscribed(redlock *l)
{
    redlock_client *c = l->c;
    timer_clear(l);
    if (l->sub_needed && !l->raced && l->ch && chan_any_on(c, l->ch)) {
        l->raced = 1;
        try_now(l);
        return;
    }
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
    char nm[64];
    verdict v = judge(l);
    if (v.ours >= c->quorum) {
        int64_t until = l->t0 + ms_ns(l->ttl) - drift_ns(l);
        if (until <= c->now) {
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
    char why[sizeof l->errstr];
    if (rc == REDLOCK_OK || (rc != REDLOCK_NOT_HELD && c->now < l->valid_until)) {
        /* held; or an error with time left: try again soon, not later than
         * a third of what is left */
        int64_t at = l->renewed_at + ms_ns(l->ttl) / 3;
        if (rc != REDLOCK_OK) {
            int64_t soon = c->now + (l->valid_until - c->now) / 3;
            at = soon > c->now + ms_ns(10) ? soon : c->now + ms_ns(10);
        }
        l->op = OP_NONE;
        l->phase = PH_NONE;
        l->seq++;
        timer_set(l, at < l->valid_until ? at : l->valid_until);
        return;
    }
    memcpy(why, l->errstr, sizeof why);
    l->op = OP_NONE;
    l->phase = PH_NONE;
    l->seq++;
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
        keepalive_lost(l, "its validity ran out before a refresh succeeded");
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
        if (net_conn_forget(c->nodes[i].cmd, l) > 0)
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
    if (acquiring && l->phase != PH_SLEEP && l->phase != PH_PARKED && l->phase != PH_SUBSCRIBE) {
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
                queue_script(l, i, S_RELEASE, 1, NULL, 0);
        l->held = 0;
        l->valid_until = 0;
    }
    if (l->op == OP_LOCK && c->opts.fair)
        for (size_t i = 0; i < c->n; i++)
            queue_script(l, i, S_DEQUEUE, 1, NULL, 0);
    if (l->op == OP_UNLOCK) {
        l->held = 0;
        l->valid_until = 0;
    }
    l->waiting = 0;
    abandon(l);
    keepalive_arm(l);
}

/* ---- the engine -------------------------------------------------------------------------------- */

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
        keepalive_lost(l, "no node answered the refresh before the validity ran out");
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

/* Hand node i's replies to the operations that sent them. */
static int take_replies(redlock_client *c, size_t i)
{
    net_conn *conn = c->nodes[i].cmd;
    net_tag tag;
    const resp_reply *r;
    size_t ne;
    int st, k = 0;
    while ((st = net_conn_take(conn, &tag, &r, &ne)) != RESP_IDLE) {
        redlock *l = tag.owner;
        int live = l && l->seq == tag.seq && l->op != OP_NONE;
        k++;
        if (st == RESP_OK) {
            if (live && on_result(l, i, (int)tag.kind, RESP_OK, r) < 0)
                net_conn_fail(conn, RESP_ERR_PROTOCOL, "a reply out of step: connection closed");
            else
                net_conn_consume(conn);
        } else if (live) {
            on_result(l, i, (int)tag.kind, st, NULL);
        }
    }
    return k;
}

/* Node i's listener: pushes, and whether it lost its subscriptions. */
static int take_pushes(redlock_client *c, size_t i)
{
    node *nd = &c->nodes[i];
    net_tag tag;
    const resp_reply *r;
    size_t ne;
    int st, k = 0, failed = 0;
    while ((st = net_conn_take(nd->sub, &tag, &r, &ne)) != RESP_IDLE) {
        k++;
        if (st != RESP_OK) {
            failed = 1;
            continue;
        }
        on_push(c, i, r);
        net_conn_consume(nd->sub);
    }
    int up = net_conn_ready(nd->sub);
    uint64_t gen = net_conn_generation(nd->sub);
    if (failed || (nd->sub_gen && (!up || gen != nd->sub_gen))) {
        listener_reset(c, i);
        k++;
    }
    nd->sub_gen = up ? gen : 0;
    return k;
}

static net_conn *conn_of_fd(const redlock_client *c, int fd)
{
    for (size_t i = 0; i < c->n; i++) {
        if (net_conn_fd(c->nodes[i].cmd) == fd)
            return c->nodes[i].cmd;
        if (c->nodes[i].sub && net_conn_fd(c->nodes[i].sub) == fd)
            return c->nodes[i].sub;
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
            node *nd = &c->nodes[i];
            net_conn_pump(nd->cmd, c->now);
            moved += take_replies(c, i);
            if (nd->sub) {
                net_conn_pump(nd->sub, c->now);
                moved += take_pushes(c, i);
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
    if (o->max_depth > RESP_MAX_DEPTH)
        return global_err(REDLOCK_ERR_ARG, "max_depth must be at most %d", RESP_MAX_DEPTH);
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

static int add_node(redlock_client *c, size_t i, const char *url, const net_opts *co)
{
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
    rc = net_conn_new(&c->nodes[i].cmd, &u, co);
    memset(u.password, 0, sizeof u.password);
    if (rc != RESP_OK)
        return global_err(REDLOCK_ERR_NOMEM, "out of memory");
    snprintf(c->nodes[i].desc, sizeof c->nodes[i].desc, "%s", net_conn_desc(c->nodes[i].cmd));
    return REDLOCK_OK;
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
    c->pfd_cap = 2 * n;
    c->pfd = resp_alloc_array(c->pfd_cap, sizeof *c->pfd);
    if (!c->nodes || !c->pfd) {
        redlock_client_free(c);
        return global_err(REDLOCK_ERR_NOMEM, "out of memory");
    }
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
        for (size_t i = 0; i < c->n; i++) {
            net_conn_free(c->nodes[i].cmd);
            net_conn_free(c->nodes[i].sub);
        }
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
    resp_free(c->nodes);
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
    for (size_t i = 0; i < c->n; i++) {
        net_conn *two[2] = {c->nodes[i].cmd, c->nodes[i].sub};
        for (int j = 0; j < 2; j++) {
            short ev = two[j] ? net_conn_events(two[j]) : 0;
            if (!ev || net_conn_fd(two[j]) < 0)
                continue;
            if (fds && k < nfds) {
                fds[k].fd = net_conn_fd(two[j]);
                fds[k].events = ev;
                fds[k].revents = 0;
            }
            k++;
        }
    }
    return k;
}

int redlock_client_timeout_ms(const redlock_client *c)
{
    if (!c)
        return -1;
    if (c->ready)
        return 0;
    int64_t d = INT64_MAX;
    for (size_t i = 0; i < c->n; i++) {
        int64_t a = net_conn_deadline(c->nodes[i].cmd);
        int64_t b = c->nodes[i].sub ? net_conn_deadline(c->nodes[i].sub) : INT64_MAX;
        if (a < d)
            d = a;
        if (b < d)
            d = b;
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
 * {NAME}:queue, {NAME}:alive (NAME:fence... when NAME has a hash tag);
 * the release channel redlock:NAME. Written into p; returns the end. */
static char *layout_keys(redlock *l, char *p, const char *name, size_t namelen)
{
    int tag = has_hash_tag(name, namelen);
    size_t fencelen = namelen + (tag ? 6 : 8);
    const char *suffix[3] = {"fence", "queue", "alive"};
    const char **dst[3] = {&l->fence_key, &l->queue_key, &l->alive_key};

    l->name = p;
    l->namelen = namelen;
    memcpy(p, name, namelen);
    p[namelen] = '\0';
    p += namelen + 1;
    l->fencelen = fencelen;
    for (int k = 0; k < 3; k++) {
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

int redlock_new(redlock **out, redlock_client *c, const char *name, const char *value,
                uint32_t ttl_ms)
{
    return redlock_new_len(out, c, name, name ? strlen(name) : 0, value, ttl_ms);
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
    if (!name || namelen == 0)
        return cerr(c, REDLOCK_ERR_ARG, "lock name is NULL or empty");
    if (namelen > MAX_NAME)
        return cerr(c, REDLOCK_ERR_ARG, "lock name is longer than %u bytes", MAX_NAME);
    if (ttl_ms == 0)
        return cerr(c, REDLOCK_ERR_ARG, "ttl_ms must be > 0");
    if (value && (value[0] == '\0' || strlen(value) > MAX_VALUE))
        return cerr(c, REDLOCK_ERR_ARG, "lock value must be 1 to %d bytes", MAX_VALUE);
    if (!value) {
        unsigned char rnd[16];
        if (fill_random(rnd, sizeof rnd) != 0)
            return cerr(c, REDLOCK_ERR_IO, "no random source (getentropy, /dev/urandom): %s",
                        strerror(errno));
        for (int i = 0; i < 16; i++)
            snprintf(token + (size_t)i * 2, 3, "%02x", rnd[i]);
        value = token;
    }
    /* one block: the lock, its per-node results, then its strings */
    size_t vlen = strlen(value);
    size_t fencelen = namelen + 8;
    size_t total = sizeof(redlock) + c->n * sizeof(nres) + namelen + 1 + 3 * (fencelen + 1) +
                   8 + namelen + 1 + vlen + 1;
    redlock *l = resp_alloc(total);
    if (!l)
        return cerr(c, REDLOCK_ERR_NOMEM, "out of memory");
    memset(l, 0, sizeof *l + c->n * sizeof(nres));
    l->c = c;
    char *p = layout_keys(l, (char *)(l->res + c->n), name, namelen);
    l->value = p;
    l->vlen = vlen;
    memcpy(p, value, vlen + 1);
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
        int t = redlock_client_timeout_ms(c);
        if (n < 0 || (size_t)n > c->pfd_cap || (n == 0 && t < 0)) {
            /* cannot happen: every connection has its slot, and an
             * operation in flight always has a deadline */
            abandon(l);
            return lerr(l, REDLOCK_ERR_IO, "internal error: nothing to wait for");
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
