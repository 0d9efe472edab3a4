/* redlock.c - the lock: single node and quorum (Redlock), fencing tokens,
 * waiting on a release channel.
 *
 * Every operation is one fan-out: the same script goes to every node at
 * once and one poll() loop collects the replies (resp_exchange), so a
 * single-node client and an N-node quorum run the same code, and an
 * operation costs one round trip to the slowest node. Nothing here
 * allocates after redlock_new: commands are encoded into each connection's
 * write buffer and replies are read in place.
 */
#define _DEFAULT_SOURCE /* getentropy */
#include "redlock.h"
#include "resp.h"

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

/* ---- scripts ---------------------------------------------------------------
 * SHA1s are checked against SCRIPT LOAD by tests/test_scripts.c. Edit a script,
 * and that test prints the new SHA1.
 *
 * ACQUIRE: KEYS lock, fence; ARGV value, ttl ms, fencing ('1'/'0').
 *   {1, token} set now; {2, token} it was already ours (TTL reset);
 *   {0, pttl} someone else holds it.
 * RELEASE: KEYS lock; ARGV value, channel. 1 deleted (and published),
 *   0 no key, -1 another owner.
 * REFRESH: KEYS lock; ARGV value, ttl ms, repair ('1': set it where it is
 *   missing). 1 extended, 2 set again, 0 no key, -1 another owner.
 * FAIR: KEYS lock, fence, queue, alive; ARGV value, ttl ms, fencing,
 *   enqueue ('1'/'0'), queue score, lease ms. ACQUIRE that serves waiters
 *   in queue order: the lock is taken only when free and the queue is empty
 *   or starts with us. queue is a ZSET of waiting values by score: the
 *   node's time when each joined (score ''), or for a quorum the client's
 *   wall-clock ms when it began to wait, the same on every node; alive
 *   holds each waiter's lease expiry (node time) and a waiter that stops
 *   renewing it is dropped. Replies as ACQUIRE, and {3, ms} when the lock
 *   is free but another waiter is first (ms: that waiter's lease left).
 * DEQUEUE: KEYS queue, alive, lock; ARGV value, channel. Leave the queue;
 *   if we were first and the lock is free, wake the others.
 * RAISE: KEYS fence; ARGV token. Raise the counter to at least token.
 * STATUS: KEYS lock, fence. {value or nil, pttl, counter or nil}.
 */
static const char ACQUIRE_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  local t = 0\n"
    "  if ARGV[3] == '1' then t = tonumber(redis.call('GET', KEYS[2]) or 0) end\n"
    "  return {2, t}\n"
    "end\n"
    "if v then return {0, redis.call('PTTL', KEYS[1])} end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "local t = 0\n"
    "if ARGV[3] == '1' then t = redis.call('INCR', KEYS[2]) end\n"
    "return {1, t}\n";
static const char FAIR_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  redis.call('ZREM', KEYS[3], ARGV[1])\n"
    "  redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "  local t = 0\n"
    "  if ARGV[3] == '1' then t = tonumber(redis.call('GET', KEYS[2]) or 0) end\n"
    "  return {2, t}\n"
    "end\n"
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 64)\n"
    "for _, w in ipairs(dead) do\n"
    "  redis.call('ZREM', KEYS[3], w)\n"
    "  redis.call('ZREM', KEYS[4], w)\n"
    "end\n"
    "local code, left = 0, 0\n"
    "if v then\n"
    "  left = redis.call('PTTL', KEYS[1])\n"
    "else\n"
    "  local head, exp\n"
    "  for _ = 1, 64 do\n"
    "    head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]\n"
    "    if not head then break end\n"
    "    exp = redis.call('ZSCORE', KEYS[4], head)\n"
    "    if exp then break end\n"
    "    redis.call('ZREM', KEYS[3], head)\n"
    "  end\n"
    "  if not head or head == ARGV[1] then\n"
    "    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "    redis.call('ZREM', KEYS[3], ARGV[1])\n"
    "    redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "    local t = 0\n"
    "    if ARGV[3] == '1' then t = redis.call('INCR', KEYS[2]) end\n"
    "    return {1, t}\n"
    "  end\n"
    "  code = 3\n"
    "  left = tonumber(exp) - now\n"
    "end\n"
    "if ARGV[4] == '1' then\n"
    "  local lease = tonumber(ARGV[6])\n"
    "  local score = ARGV[5]\n"
    "  if score == '' then score = now end\n"
    "  redis.call('ZADD', KEYS[3], 'NX', score, ARGV[1])\n"
    "  redis.call('ZADD', KEYS[4], now + lease, ARGV[1])\n"
    "  redis.call('PEXPIRE', KEYS[3], lease * 2)\n"
    "  redis.call('PEXPIRE', KEYS[4], lease * 2)\n"
    "end\n"
    "return {code, left}\n";
static const char DEQUEUE_LUA[] =
    "local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "if head == ARGV[1] and redis.call('EXISTS', KEYS[3]) == 0 then\n"
    "  redis.call('PUBLISH', ARGV[2], 'released')\n"
    "end\n"
    "return 1\n";
static const char RELEASE_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('PUBLISH', ARGV[2], 'released')\n"
    "  return 1\n"
    "end\n"
    "if v then return -1 end\n"
    "return 0\n";
static const char REFRESH_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "if v then return -1 end\n"
    "if ARGV[3] == '1' then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return 2\n"
    "end\n"
    "return 0\n";
static const char RAISE_LUA[] =
    "local c = tonumber(redis.call('GET', KEYS[1]) or 0)\n"
    "local t = tonumber(ARGV[1])\n"
    "if c < t then\n"
    "  redis.call('SET', KEYS[1], ARGV[1])\n"
    "  return t\n"
    "end\n"
    "return c\n";
static const char STATUS_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "local f = redis.call('GET', KEYS[2])\n"
    "return {v, redis.call('PTTL', KEYS[1]), f}\n";

typedef struct script {
    const char *name;
    const char *lua;
    const char *sha;
    int reply; /* the reply's shape: 1 an integer, 2 a pair of integers, 3 STATUS */
} script;

static const script S_ACQUIRE = {"acquire", ACQUIRE_LUA, "2757630a71364073e06e658f7f2bc1467f7a27b7", 2};
static const script S_FAIR = {"fair acquire", FAIR_LUA, "4e9f3ec63cad32b0cd7c830715fd81004ae696b5", 2};
static const script S_DEQUEUE = {"dequeue", DEQUEUE_LUA, "c16facfafca27572ce86757d2c9890d694d12b0f", 1};
static const script S_RELEASE = {"release", RELEASE_LUA, "8ef851e623d1c09822e5b6e0b686a919402df97b", 1};
static const script S_REFRESH = {"refresh", REFRESH_LUA, "cc0151ff93d6a86e195e9878cfa2f8e7764d9f77", 1};
static const script S_RAISE = {"raise", RAISE_LUA, "cd0ddc878f8da4bd2d4de0fdcb379ce546a440bd", 1};
static const script S_STATUS = {"status", STATUS_LUA, "bb0221ea093dbc790742bd65aebdb1678c458022", 3};

/* ---- types ----------------------------------------------------------------- */

/* What one node said in the last operation. */
enum { N_SKIP, N_PENDING, N_ERR, N_OK };

typedef struct node {
    resp_conn *cmd;   /* lock commands                              */
    resp_conn *sub;   /* release channel; opened when a lock waits  */
    uint64_t sub_gen; /* sub's connection generation when subscribed */
    int subscribed;   /* sub holds a subscription to client->channel */
    /* the last script on this node */
    int sel;          /* take part in the next run_script            */
    int state;        /* N_SKIP, N_PENDING, N_ERR, N_OK              */
    int status;       /* N_ERR: REDLOCK_ERR_*                        */
    int transient;    /* N_ERR: worth retrying                       */
    long long code;   /* N_OK: the script's first (or only) integer  */
    long long val;    /* N_OK: second integer                        */
    uint64_t vhash;   /* STATUS: hash of the holder's value, 0: none */
    int ours;         /* STATUS: the holder's value is ours          */
    int acq;          /* the last acquire or refresh took this node  */
    char err[160];    /* N_ERR: why                                  */
    char desc[64];    /* host:port                                   */
} node;

struct redlock_client {
    redlock_options opts;
    size_t n, quorum;
    node *nodes;
    resp_conn **cmds; /* nodes[i].cmd, for resp_exchange */
    resp_conn **subs; /* scratch */
    char *channel;    /* the channel the subs listen on (NULL: none) */
    size_t chlen, chcap;
    uint64_t rng;
    int transient; /* the last failure is worth retrying */
    char errstr[512];
};

struct redlock {
    redlock_client *c;
    const char *name, *fence_key, *channel, *value; /* one block, see redlock_new */
    const char *queue_key, *alive_key;               /* fair mode; as long as fence_key */
    size_t namelen, fencelen, chlen, vlen;
    uint32_t ttl;
    char ttl_str[16];
    uint64_t fence;
    int held;
    int64_t valid_until; /* ns, CLOCK_MONOTONIC */
    int64_t holder_pttl; /* ms left on the holder's lock at the last failed try */
    int waiting;         /* inside redlock_lock: fair mode joins the queue */
    char score_str[24];  /* fair mode: wall-clock ms when this wait began */
    char lease_str[16];  /* fair mode: how long our place in line lasts */
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
    }
    return "unknown status";
}

static int cerr(redlock_client *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    return status;
}

static int global_err(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
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

static int64_t now_ns(void)
{
    return resp_now_ns();
}

static int64_t drift_ns(const redlock *l)
{
    return (int64_t)((double)l->ttl * l->c->opts.drift_factor * 1e6) + 2000000;
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

/* ---- running scripts on nodes ----------------------------------------------- */

static void node_error(node *nd, int status, int transient, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nd->err, sizeof nd->err, fmt, ap);
    va_end(ap);
    nd->state = N_ERR;
    nd->status = status;
    nd->transient = transient;
}

/* Queue EVALSHA (or EVAL) of s with its keys and args on nd. */
static int queue_script(node *nd, const script *s, int eval, int nkeys, int nargs,
                        const char *const *kv, const size_t *kvlen)
{
    const char *argv[16];
    size_t lens[16];
    char nk[4];
    int argc = 0;

    if (nkeys + nargs > 13) { /* a programming error, not an input */
        node_error(nd, REDLOCK_ERR_ARG, 0, "%s: too many script arguments", s->name);
        return REDLOCK_ERR_ARG;
    }

    nk[0] = (char)('0' + nkeys);
    nk[1] = '\0';
    argv[argc] = eval ? "EVAL" : "EVALSHA";
    lens[argc++] = eval ? 4 : 7;
    argv[argc] = eval ? s->lua : s->sha;
    lens[argc++] = strlen(argv[1]);
    argv[argc] = nk;
    lens[argc++] = 1;
    for (int i = 0; i < nkeys + nargs; i++) {
        argv[argc] = kv[i];
        lens[argc++] = kvlen[i];
    }
    int rc = resp_conn_append(nd->cmd, argc, argv, lens);
    if (rc != RESP_OK)
        node_error(nd, rc, 0, "cannot queue %s: %s", s->name, redlock_strerror(rc));
    return rc;
}

static int is_noscript(const resp_reply *r)
{
    return r->type == RESP_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h ? h : 1;
}

/* STATUS: {value or nil, pttl, counter or nil}. */
static int take_status(node *nd, const resp_reply *r, const redlock *l)
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
        for (size_t i = 0; i < r[3].len && i < 20; i++) {
            unsigned d = (unsigned char)r[3].str[i] - (unsigned)'0';
            if (d > 9)
                break;
            v = v * 10 + d;
        }
        nd->val = (long long)v;
    }
    nd->state = N_OK;
    return 0;
}

/* Read one node's reply: an error, an integer, or an array of two integers
 * (into nd->code/val), or a STATUS reply. */
static void take_reply(node *nd, const script *s, const redlock *l)
{
    size_t ne;
    const resp_reply *r = resp_conn_reply(nd->cmd, &ne);

    if (r->type == RESP_ERROR) {
        int auth = r->len >= 6 && memcmp(r->str, "NOAUTH", 6) == 0;
        node_error(nd, auth ? REDLOCK_ERR_AUTH : REDLOCK_ERR_SERVER, transient_error(r->str, r->len),
                   "%s: %.*s", nd->desc, (int)(r->len > 120 ? 120 : r->len), r->str);
    } else if (s->reply == 3) {
        if (take_status(nd, r, l) != 0)
            goto bad;
    } else if (s->reply == 1 && r->type == RESP_INTEGER) {
        nd->state = N_OK;
        nd->code = r->integer;
        nd->val = 0;
    } else if (s->reply == 2 && r->type == RESP_ARRAY && r->n == 2 && r[1].type == RESP_INTEGER &&
               r[2].type == RESP_INTEGER) {
        nd->state = N_OK;
        nd->code = r[1].integer;
        nd->val = r[2].integer;
    } else
        goto bad;
    resp_conn_consume(nd->cmd);
    return;
bad:
    node_error(nd, REDLOCK_ERR_PROTOCOL, 0, "%s: unexpected reply to the %s script", nd->desc,
               s->name);
    resp_conn_close(nd->cmd); /* out of step: never reuse */
}

/* Run s on the nodes with sel set, all at once: EVALSHA first; where a
 * node answers NOSCRIPT, EVAL (which loads it) in a second round. Each
 * selected node ends N_OK or N_ERR, the others N_SKIP. */
static void run_script(redlock_client *c, const redlock *l, const script *s, int nkeys,
                       int nargs, const char *const *kv, const size_t *kvlen, int64_t limit)
{
    for (size_t i = 0; i < c->n; i++)
        c->nodes[i].state = c->nodes[i].sel ? N_PENDING : N_SKIP;
    for (int round = 0; round < 2; round++) {
        size_t queued = 0;
        for (size_t i = 0; i < c->n; i++) {
            node *nd = &c->nodes[i];
            if (nd->state == N_PENDING && queue_script(nd, s, round, nkeys, nargs, kv, kvlen) == RESP_OK)
                queued++;
        }
        if (queued == 0)
            return;
        resp_exchange(c->cmds, c->n, limit, 0);
        for (size_t i = 0; i < c->n; i++) {
            node *nd = &c->nodes[i];
            if (nd->state != N_PENDING)
                continue;
            int st = resp_conn_status(nd->cmd);
            if (st != RESP_OK) {
                if (st == RESP_IDLE)
                    st = REDLOCK_ERR_TIMEOUT;
                node_error(nd, st, st == REDLOCK_ERR_IO || st == REDLOCK_ERR_TIMEOUT, "%s",
                           resp_conn_errstr(nd->cmd));
                continue;
            }
            size_t ne;
            const resp_reply *r = resp_conn_reply(nd->cmd, &ne);
            if (round == 0 && is_noscript(r)) {
                resp_conn_consume(nd->cmd); /* stays pending: EVAL next round */
                continue;
            }
            take_reply(nd, s, l);
        }
    }
}

/* Count what the selected nodes said; the first error explains failures. */
typedef struct tally {
    size_t ok, err;
    const node *first_err;
} tally;

static tally count_nodes(redlock_client *c)
{
    tally t = {0, 0, NULL};
    c->transient = 1;
    for (size_t i = 0; i < c->n; i++) {
        const node *nd = &c->nodes[i];
        if (nd->state == N_OK)
            t.ok++;
        else if (nd->state == N_ERR) {
            t.err++;
            if (!t.first_err)
                t.first_err = nd;
            if (!nd->transient)
                c->transient = 0;
        }
    }
    return t;
}

/* errstr for an operation that failed on too many nodes: the first error,
 * and for a quorum how many nodes answered. */
static int fail_nodes(redlock *l, const char *op, tally t)
{
    redlock_client *c = l->c;
    char nm[64];
    const node *e = t.first_err;
    int st = e ? e->status : REDLOCK_ERR_IO;
    if (c->n == 1)
        return cerr(c, st, "%s '%s': %s", op, shown(l, nm, sizeof nm), e ? e->err : "failed");
    return cerr(c, st, "%s '%s': only %zu of %zu nodes answered (quorum %zu); first error: %s", op,
                shown(l, nm, sizeof nm), t.ok, c->n, c->quorum, e ? e->err : "none");
}

static void select_all(redlock_client *c)
{
    for (size_t i = 0; i < c->n; i++)
        c->nodes[i].sel = 1;
}

static size_t fmt_u64(char *buf, size_t len, uint64_t v)
{
    int n = snprintf(buf, len, "%" PRIu64, v);
    return n > 0 ? (size_t)n : 0;
}

/* Release on the nodes an acquire or refresh took (best effort). */
static void release_taken(redlock *l)
{
    redlock_client *c = l->c;
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        k += (size_t)(c->nodes[i].sel = c->nodes[i].acq);
    if (k == 0)
        return;
    const char *kv[3] = {l->name, l->value, l->channel};
    size_t kvlen[3] = {l->namelen, l->vlen, l->chlen};
    run_script(c, l, &S_RELEASE, 1, 2, kv, kvlen, 0);
}

/* Quorum fencing: raise every taken node's counter to at least token, so
 * any later quorum, which overlaps this one, counts past it. Returns how
 * many taken nodes now hold a counter >= token. */
static size_t raise_fence(redlock *l, uint64_t token)
{
    redlock_client *c = l->c;
    char tok[24];
    size_t raised = 0, k = 0;
    for (size_t i = 0; i < c->n; i++) {
        node *nd = &c->nodes[i];
        nd->sel = nd->acq && (uint64_t)nd->val < token;
        raised += (size_t)(nd->acq && !nd->sel);
        k += (size_t)nd->sel;
    }
    if (k == 0)
        return raised;
    const char *kv[2] = {l->fence_key, tok};
    size_t kvlen[2] = {l->fencelen, fmt_u64(tok, sizeof tok, token)};
    run_script(c, l, &S_RAISE, 1, 1, kv, kvlen, 0);
    for (size_t i = 0; i < c->n; i++) {
        const node *nd = &c->nodes[i];
        raised += (size_t)(nd->sel && nd->state == N_OK && (uint64_t)nd->code >= token);
    }
    return raised;
}

/* ---- client -------------------------------------------------------------------- */

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

static resp_conn_opts conn_opts(const redlock_options *o)
{
    resp_conn_opts co;
    memset(&co, 0, sizeof co);
    co.connect_timeout_ms = o->connect_timeout_ms;
    co.io_timeout_ms = o->io_timeout_ms;
    co.limits.max_bulk = o->max_bulk;
    co.limits.max_array = o->max_array;
    co.limits.max_depth = o->max_depth;
    co.limits.max_line = o->max_line;
    return co;
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
    c->cmds = resp_alloc_array(n, sizeof(resp_conn *));
    c->subs = resp_alloc_array(n, sizeof(resp_conn *));
    if (!c->nodes || !c->cmds || !c->subs) {
        redlock_client_free(c);
        return global_err(REDLOCK_ERR_NOMEM, "out of memory");
    }
    resp_conn_opts co = conn_opts(&o);
    for (size_t i = 0; i < n; i++) {
        resp_url u;
        char err[200];
        if (!urls[i]) {
            redlock_client_free(c);
            return global_err(REDLOCK_ERR_ARG, "URL %zu is NULL", i + 1);
        }
        if (resp_url_parse(&u, urls[i], err, sizeof err) != RESP_OK) {
            redlock_client_free(c);
            return n == 1 ? global_err(REDLOCK_ERR_ARG, "%s", err)
                          : global_err(REDLOCK_ERR_ARG, "URL %zu: %s", i + 1, err);
        }
        rc = resp_conn_new(&c->nodes[i].cmd, &u, &co);
        memset(u.password, 0, sizeof u.password);
        if (rc != RESP_OK) {
            redlock_client_free(c);
            return global_err(rc, "out of memory");
        }
        c->cmds[i] = c->nodes[i].cmd;
        resp_url_describe(resp_conn_url(c->cmds[i]), c->nodes[i].desc, sizeof c->nodes[i].desc);
    }
    if (fill_random(&c->rng, sizeof c->rng) != 0 || c->rng == 0)
        c->rng = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    *out = c;
    return REDLOCK_OK;
}

void redlock_client_free(redlock_client *c)
{
    if (!c)
        return;
    if (c->nodes)
        for (size_t i = 0; i < c->n; i++) {
            resp_conn_free(c->nodes[i].cmd);
            resp_conn_free(c->nodes[i].sub);
        }
    resp_free(c->nodes);
    resp_free(c->cmds);
    resp_free(c->subs);
    resp_free(c->channel);
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

/* ---- lock handles --------------------------------------------------------------- */

/* Does the name carry a Redis Cluster hash tag ({...} with something inside)? */
static int has_hash_tag(const char *s, size_t n)
{
    const char *open = memchr(s, '{', n);
    if (!open)
        return 0;
    const char *close = memchr(open + 1, '}', n - (size_t)(open + 1 - s));
    return close && close > open + 1;
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
    /* one block: name, fence key, channel, value, each NUL-terminated */
    int tag = has_hash_tag(name, namelen);
    size_t vlen = strlen(value);
    size_t fencelen = namelen + (tag ? 6 : 8); /* name:fence or {name}:fence */
    size_t chlen = 8 + namelen;                /* redlock:name */
    size_t total = sizeof(redlock) + namelen + 1 + 3 * (fencelen + 1) + chlen + 1 + vlen + 1;
    redlock *l = resp_alloc(total);
    if (!l)
        return cerr(c, REDLOCK_ERR_NOMEM, "out of memory");
    memset(l, 0, sizeof *l);
    char *p = (char *)(l + 1);
    l->c = c;
    l->name = p;
    l->namelen = namelen;
    memcpy(p, name, namelen);
    p[namelen] = '\0';
    p += namelen + 1;
    l->fence_key = p;
    l->fencelen = fencelen;
    if (tag) {
        memcpy(p, name, namelen);
        memcpy(p + namelen, ":fence", 7);
    } else {
        p[0] = '{';
        memcpy(p + 1, name, namelen);
        memcpy(p + 1 + namelen, "}:fence", 8);
    }
    p += fencelen + 1;
    /* {name}:queue and {name}:alive: the fence key with another 5-letter suffix */
    l->queue_key = p;
    memcpy(p, l->fence_key, fencelen + 1);
    memcpy(p + fencelen - 5, "queue", 5);
    p += fencelen + 1;
    l->alive_key = p;
    memcpy(p, l->fence_key, fencelen + 1);
    memcpy(p + fencelen - 5, "alive", 5);
    p += fencelen + 1;
    l->channel = p;
    l->chlen = chlen;
    memcpy(p, "redlock:", 8);
    memcpy(p + 8, name, namelen);
    p[chlen] = '\0';
    p += chlen + 1;
    l->value = p;
    l->vlen = vlen;
    memcpy(p, value, vlen + 1);
    l->ttl = ttl_ms;
    snprintf(l->ttl_str, sizeof l->ttl_str, "%" PRIu32, ttl_ms);
    l->holder_pttl = -1;
    *out = l;
    return REDLOCK_OK;
}

void redlock_free(redlock *l)
{
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
    int64_t left = (l->valid_until - now_ns()) / 1000000;
    return left > 0 ? left : 0;
}

const char *redlock_value(const redlock *l)
{
    return l ? l->value : NULL;
}

/* ---- acquire, release, refresh ------------------------------------------------ */

int redlock_trylock(redlock *l)
{
    if (!l)
        return global_err(REDLOCK_ERR_ARG, "lock is NULL");
    redlock_client *c = l->c;
    char nm[64];
    int64_t ttl_ns = (int64_t)l->ttl * 1000000;
    int64_t t0 = now_ns();
    const char *f = c->opts.fencing ? "1" : "0";
    c->errstr[0] = '\0';
    select_all(c);
    if (c->opts.fair) {
        const char *kv[10] = {l->name,    l->fence_key, l->queue_key,   l->alive_key,
                              l->value,   l->ttl_str,   f,              l->waiting ? "1" : "0",
                              l->score_str, l->lease_str};
        size_t kvlen[10] = {l->namelen, l->fencelen,         l->fencelen,           l->fencelen,
                            l->vlen,    strlen(l->ttl_str),  1,                     1,
                            strlen(l->score_str), strlen(l->lease_str)};
        run_script(c, l, &S_FAIR, 4, 6, kv, kvlen, t0 + ttl_ns);
    } else {
        const char *kv[5] = {l->name, l->fence_key, l->value, l->ttl_str, f};
        size_t kvlen[5] = {l->namelen, l->fencelen, l->vlen, strlen(l->ttl_str), 1};
        run_script(c, l, &S_ACQUIRE, 2, 3, kv, kvlen, t0 + ttl_ns);
    }

    size_t acq = 0, held = 0, queued = 0;
    uint64_t token = 0;
    int64_t pttl = -1;
    for (size_t i = 0; i < c->n; i++) {
        node *nd = &c->nodes[i];
        nd->acq = 0;
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
        } else
            node_error(nd, REDLOCK_ERR_PROTOCOL, 0, "%s: acquire script answered %lld", nd->desc,
                       nd->code);
    }
    tally t = count_nodes(c);
    if (acq >= c->quorum) {
        if (c->opts.fencing && c->n > 1 && raise_fence(l, token) < c->quorum) {
            release_taken(l);
            return cerr(c, REDLOCK_ERR_IO, "lock '%s': could not raise the fence counter on a quorum",
                        shown(l, nm, sizeof nm));
        }
        int64_t until = t0 + ttl_ns - drift_ns(l);
        if (until > now_ns()) {
            l->held = 1;
            l->fence = token;
            l->valid_until = until;
            l->holder_pttl = -1;
            return REDLOCK_OK;
        }
        release_taken(l);
        return cerr(c, REDLOCK_NOT_ACQUIRED,
                    "lock '%s': acquired, but the TTL of %" PRIu32 " ms ran out before the "
                    "reply (%.1f ms); released",
                    shown(l, nm, sizeof nm), l->ttl, (double)(now_ns() - t0) / 1e6);
    }
    if (acq > 0)
        release_taken(l);
    l->holder_pttl = pttl;
    /* Busy when enough nodes answered, or when the holder has so many nodes
     * that no quorum is possible whatever the failed ones would say. */
    if (acq + held < c->quorum && held <= c->n - c->quorum)
        return fail_nodes(l, "acquire", t);
    c->transient = 0;
    if (c->n == 1 && queued)
        return cerr(c, REDLOCK_NOT_ACQUIRED,
                    "lock '%s' is free, but another waiter is first in line (fair mode)",
                    shown(l, nm, sizeof nm));
    if (c->n == 1)
        return cerr(c, REDLOCK_NOT_ACQUIRED, "lock '%s' is held by another owner (expires in %lld ms)",
                    shown(l, nm, sizeof nm), (long long)pttl);
    char q[80] = "";
    if (queued)
        snprintf(q, sizeof q, " (on %zu of them free, but another waiter is first in line)", queued);
    return cerr(c, REDLOCK_NOT_ACQUIRED,
                "lock '%s': taken on %zu of %zu nodes, held by another owner on %zu%s, %zu failed "
                "(quorum %zu)",
                shown(l, nm, sizeof nm), acq, c->n, held, q, t.err, c->quorum);
}

/* How a compare-and-act script went on a quorum: code 1 (or 2) ours,
 * 0 no key, -1 another owner. */
typedef struct verdict {
    size_t ours, missing, other;
    tally t;
} verdict;

static verdict judge(redlock_client *c)
{
    verdict v = {0, 0, 0, {0, 0, NULL}};
    for (size_t i = 0; i < c->n; i++) {
        node *nd = &c->nodes[i];
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
            node_error(nd, REDLOCK_ERR_PROTOCOL, 0, "%s: script answered %lld", nd->desc, nd->code);
    }
    v.t = count_nodes(c);
    return v;
}

/* NOT_HELD with the reason: expired, or another owner. */
static int not_held(redlock *l, const char *op, verdict v)
{
    redlock_client *c = l->c;
    char nm[64];
    l->held = 0;
    c->transient = 0;
    if (c->n == 1)
        return cerr(c, REDLOCK_NOT_HELD,
                    v.other ? "%s '%s': the lock is held by another owner; nothing changed"
                            : "%s '%s': the lock is not held (it expired or was never taken); "
                              "nothing changed",
                    op, shown(l, nm, sizeof nm));
    return cerr(c, REDLOCK_NOT_HELD,
                "%s '%s': ours on %zu of %zu nodes (quorum %zu); expired on %zu, another owner on "
                "%zu, %zu failed",
                op, shown(l, nm, sizeof nm), v.ours, c->n, c->quorum, v.missing, v.other, v.t.err);
}

int redlock_unlock(redlock *l)
{
    if (!l)
        return global_err(REDLOCK_ERR_ARG, "lock is NULL");
    redlock_client *c = l->c;
    const char *kv[3] = {l->name, l->value, l->channel};
    size_t kvlen[3] = {l->namelen, l->vlen, l->chlen};

    c->errstr[0] = '\0';
    select_all(c);
    run_script(c, l, &S_RELEASE, 1, 2, kv, kvlen, 0);
    verdict v = judge(c);
    l->held = 0;
    l->valid_until = 0;
    if (v.ours >= c->quorum)
        return REDLOCK_OK;
    if (v.ours + v.missing + v.other >= c->quorum)
        return not_held(l, "unlock", v);
    return fail_nodes(l, "unlock", v.t);
}

int redlock_refresh(redlock *l)
{
    if (!l)
        return global_err(REDLOCK_ERR_ARG, "lock is NULL");
    redlock_client *c = l->c;
    int64_t ttl_ns = (int64_t)l->ttl * 1000000;
    int64_t t0 = now_ns();
    const char *kv[4] = {l->name, l->value, l->ttl_str, "0"};
    size_t kvlen[4] = {l->namelen, l->vlen, strlen(l->ttl_str), 1};

    c->errstr[0] = '\0';
    select_all(c);
    run_script(c, l, &S_REFRESH, 1, 3, kv, kvlen, t0 + ttl_ns);
    verdict v = judge(c);
    if (v.ours >= c->quorum) {
        int64_t until = t0 + ttl_ns - drift_ns(l);
        if (until <= now_ns()) {
            char nm[64];
            release_taken(l);
            l->held = 0;
            return cerr(c, REDLOCK_NOT_HELD, "refresh '%s': the TTL ran out before the reply",
                        shown(l, nm, sizeof nm));
        }
        l->held = 1;
        l->valid_until = until;
        if (v.missing > 0) {
            /* A node restarted empty lost our key. We hold a quorum, so no
             * one else can: set it again there (never where another value
             * is), or a second restart would cost the quorum. */
            for (size_t i = 0; i < c->n; i++)
                c->nodes[i].sel = c->nodes[i].state == N_OK && c->nodes[i].code == 0;
            kv[3] = "1";
            run_script(c, l, &S_REFRESH, 1, 3, kv, kvlen, until);
        }
        return REDLOCK_OK;
    }
    if (v.ours + v.missing + v.other >= c->quorum || v.missing + v.other > c->n - c->quorum) {
        if (v.ours > 0)
            release_taken(l);
        return not_held(l, "refresh", v);
    }
    return fail_nodes(l, "refresh", v.t);
}

/* ---- waiting for a release --------------------------------------------------- */

static int on_channel(const redlock_client *c, const redlock *l)
{
    return c->channel && c->chlen == l->chlen && memcmp(c->channel, l->channel, l->chlen) == 0;
}

static int set_channel(redlock_client *c, const redlock *l)
{
    if (c->chcap < l->chlen) {
        char *p = resp_realloc(c->channel, l->chlen);
        if (!p)
            return REDLOCK_ERR_NOMEM;
        c->channel = p;
        c->chcap = l->chlen;
    }
    memcpy(c->channel, l->channel, l->chlen);
    c->chlen = l->chlen;
    for (size_t i = 0; i < c->n; i++)
        c->nodes[i].subscribed = 0;
    return REDLOCK_OK;
}

static int sub_live(const node *nd)
{
    return nd->subscribed && nd->sub && resp_conn_connected(nd->sub) &&
           resp_conn_generation(nd->sub) == nd->sub_gen;
}

static int is_bulk(const resp_reply *r, const char *s, size_t n)
{
    return r->type == RESP_BULK && r->len == n && memcmp(r->str, s, n) == 0;
}

/* Read replies on nd->sub until the confirmation of our SUBSCRIBE. */
static void confirm_subscription(redlock_client *c, node *nd, int64_t limit)
{
    for (int i = 0; i < 64; i++) {
        if (i > 0)
            resp_exchange(&nd->sub, 1, limit, 0);
        if (resp_conn_status(nd->sub) != RESP_OK)
            break;
        size_t ne;
        const resp_reply *r = resp_conn_reply(nd->sub, &ne);
        int ok = r->type == RESP_ARRAY && r->n == 3 && is_bulk(&r[1], "subscribe", 9) &&
                 is_bulk(&r[2], c->channel, c->chlen);
        resp_conn_consume(nd->sub);
        if (ok) {
            nd->subscribed = 1;
            nd->sub_gen = resp_conn_generation(nd->sub);
            return;
        }
    }
    resp_conn_close(nd->sub);
}

/* Subscribe every node's listening connection to l's channel. Returns how
 * many subscriptions are new (0 when all were in place), or -1 on NOMEM. */
static int subscribe(redlock *l, int64_t limit)
{
    redlock_client *c = l->c;
    resp_conn_opts co = conn_opts(&c->opts);
    size_t k = 0;
    if (!on_channel(c, l) && set_channel(c, l) != REDLOCK_OK)
        return -1;
    for (size_t i = 0; i < c->n; i++) {
        node *nd = &c->nodes[i];
        if (sub_live(nd))
            continue;
        nd->subscribed = 0;
        if (!nd->sub && resp_conn_new(&nd->sub, resp_conn_url(nd->cmd), &co) != RESP_OK)
            return -1;
        const char *unsub[1] = {"UNSUBSCRIBE"};
        const char *sub[2] = {"SUBSCRIBE", c->channel};
        size_t sublen[2] = {9, c->chlen};
        if (resp_conn_listening(nd->sub) && resp_conn_appendv(nd->sub, 1, unsub) != RESP_OK)
            return -1;
        if (resp_conn_append(nd->sub, 2, sub, sublen) != RESP_OK)
            return -1;
        resp_conn_listen(nd->sub);
        c->subs[k++] = nd->sub;
    }
    if (k == 0)
        return 0;
    resp_exchange(c->subs, k, limit, 0);
    int fresh = 0;
    for (size_t i = 0; i < c->n; i++) {
        node *nd = &c->nodes[i];
        if (nd->sub && !nd->subscribed && resp_conn_listening(nd->sub)) {
            confirm_subscription(c, nd, limit);
            fresh += nd->subscribed;
        }
    }
    return fresh;
}

/* Throw away release messages that came while nobody waited. */
static void drain(redlock_client *c)
{
    for (size_t i = 0; i < c->n; i++) {
        node *nd = &c->nodes[i];
        if (!sub_live(nd))
            continue;
        for (int k = 0; k < 1024 && resp_conn_poll_ready(nd->sub) == RESP_OK; k++)
            resp_conn_consume(nd->sub);
    }
}

static void sleep_until(int64_t until)
{
    for (int i = 0; i < 1000; i++) {
        int64_t left = until - now_ns();
        if (left <= 0)
            return;
        (void)poll(NULL, 0, (int)((left + 999999) / 1000000));
    }
}

/* Wait until a release is published on any node, or until. */
static void wait_release(redlock_client *c, int64_t until)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        if (sub_live(&c->nodes[i]))
            c->subs[k++] = c->nodes[i].sub;
    if (k == 0) {
        sleep_until(until);
        return;
    }
    resp_exchange(c->subs, k, until, 1);
    for (size_t i = 0; i < c->n; i++) {
        node *nd = &c->nodes[i];
        if (!nd->sub)
            continue;
        if (!sub_live(nd)) {
            nd->subscribed = 0; /* it failed: subscribe() reconnects it */
            continue;
        }
        if (resp_conn_status(nd->sub) == RESP_OK && resp_conn_reply(nd->sub, NULL))
            resp_conn_consume(nd->sub); /* a release (or a stale message: harmless) */
    }
    drain(c);
    /* every listener failed at once: wait out the time instead of spinning */
    int any_live = 0;
    for (size_t i = 0; i < c->n; i++)
        any_live |= sub_live(&c->nodes[i]);
    if (!any_live)
        sleep_until(until);
}

static int lock_loop(redlock *l, uint32_t wait_ms)
{
    redlock_client *c = l->c;
    int64_t deadline = now_ns() + (int64_t)wait_ms * 1000000;
    int64_t backoff = (int64_t)c->opts.retry_min_ms * 1000000;
    int raced = 0;

    if (on_channel(c, l))
        drain(c);
    for (;;) {
        int rc = redlock_trylock(l);
        if (rc == REDLOCK_OK || (rc != REDLOCK_NOT_ACQUIRED && !c->transient))
            return rc;
        int64_t now = now_ns();
        if (now >= deadline)
            return rc;
        if (rc == REDLOCK_NOT_ACQUIRED) {
            int64_t lim = now + (int64_t)c->opts.io_timeout_ms * 1000000;
            int fresh = subscribe(l, lim < deadline ? lim : deadline);
            if (fresh < 0)
                return cerr(c, REDLOCK_ERR_NOMEM, "out of memory subscribing");
            if (fresh > 0 && !raced) {
                raced = 1; /* a release may have come before we listened */
                continue;
            }
        }
        int64_t half = backoff / 2;
        int64_t sleep = half + (int64_t)(next_random(c) % (uint64_t)(half + 1));
        backoff = backoff * 2 > (int64_t)c->opts.retry_max_ms * 1000000
                      ? (int64_t)c->opts.retry_max_ms * 1000000
                      : backoff * 2;
        if (rc == REDLOCK_NOT_ACQUIRED && l->holder_pttl >= 0 &&
            (l->holder_pttl + 1) * 1000000 < sleep)
            sleep = (l->holder_pttl + 1) * 1000000;
        int64_t until = now + sleep < deadline ? now + sleep : deadline;
        if (rc == REDLOCK_NOT_ACQUIRED)
            wait_release(c, until);
        else
            sleep_until(until);
    }
}

/* Fair mode: leave the queue on the selected nodes (best effort, one
 * deadline). */
static void dequeue(redlock *l)
{
    redlock_client *c = l->c;
    const char *kv[5] = {l->queue_key, l->alive_key, l->name, l->value, l->channel};
    size_t kvlen[5] = {l->fencelen, l->fencelen, l->namelen, l->vlen, l->chlen};
    run_script(c, l, &S_DEQUEUE, 3, 2, kv, kvlen, 0);
}

int redlock_lock(redlock *l, uint32_t wait_ms)
{
    if (!l)
        return global_err(REDLOCK_ERR_ARG, "lock is NULL");
    redlock_client *c = l->c;
    if (!c->opts.fair)
        return lock_loop(l, wait_ms);
    /* Our place in line. One node orders waiters by its own clock, when
     * each joined. A quorum needs the same order on every node (else each
     * could favour another waiter and no one would win a majority): the
     * wall-clock ms when we began to wait. A waiter renews its lease on
     * every try, at least every retry_max_ms. */
    l->score_str[0] = '\0'; /* one node: its own clock orders the line */
    if (c->n > 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(l->score_str, sizeof l->score_str, "%lld",
                 (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    }
    snprintf(l->lease_str, sizeof l->lease_str, "%d",
             2 * c->opts.retry_max_ms + c->opts.io_timeout_ms);
    l->waiting = 1;
    int rc = lock_loop(l, wait_ms);
    l->waiting = 0;
    /* Leave the line where we are still in it: everywhere after a failure;
     * after a quorum acquire, on the nodes that did not give us the lock
     * (the acquire left the line on the others), or we would stand first
     * there until our lease ran out. */
    size_t left_in = 0;
    for (size_t i = 0; i < c->n; i++) {
        c->nodes[i].sel = rc != REDLOCK_OK || !c->nodes[i].acq;
        left_in += (size_t)c->nodes[i].sel;
    }
    if (left_in > 0) {
        char keep[sizeof c->errstr];
        memcpy(keep, c->errstr, sizeof keep);
        dequeue(l);
        memcpy(c->errstr, keep, sizeof keep);
    }
    return rc;
}

/* ---- inspection --------------------------------------------------------------- */

int redlock_inspect(redlock *l, redlock_info *info)
{
    if (!l || !info)
        return global_err(REDLOCK_ERR_ARG, "lock or info is NULL");
    redlock_client *c = l->c;
    const char *kv[2] = {l->name, l->fence_key};
    size_t kvlen[2] = {l->namelen, l->fencelen};

    memset(info, 0, sizeof *info);
    info->ttl_ms = -1;
    c->errstr[0] = '\0';
    select_all(c);
    run_script(c, l, &S_STATUS, 2, 0, kv, kvlen, 0);
    tally t = count_nodes(c);
    if (t.ok < c->quorum)
        return fail_nodes(l, "inspect", t);
    for (size_t i = 0; i < c->n; i++) {
        const node *a = &c->nodes[i];
        if (a->state != N_OK)
            continue;
        if ((uint64_t)a->val > info->fence)
            info->fence = (uint64_t)a->val;
        if (!a->vhash || info->held)
            continue;
        size_t same = 0;
        int64_t ttl = -1;
        for (size_t j = 0; j < c->n; j++) {
            const node *b = &c->nodes[j];
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
    return REDLOCK_OK;
}
