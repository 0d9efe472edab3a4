/* redlock.c - the lock: one node or a quorum (Redlock), fencing tokens,
 * waiting on a release channel, fair mode, keepalive, Redis Cluster and
 * Sentinel; one operation engine under every call.
 *
 * An operation (acquire, wait, release, refresh, inspect) is a small state
 * machine on its lock. It sends one script to a set of nodes at once (a
 * round), takes the replies as they come, judges them when the last one is
 * in, and then starts the next round, sleeps (on a timer or on the lock's
 * release channel) or ends with a result. The engine (engine_pass) moves
 * every operation of a client from one place: it does the I/O that poll()
 * reported, connects and writes, hands each reply to the operation that
 * sent it, and fires timers. Every blocking call, and the admin calls, is
 * an operation plus one loop that runs the engine until a condition holds
 * (run_until), as libpq's PQconnectdb is a loop over PQconnectPoll; the
 * non-blocking API hands the same engine to the caller's event loop.
 * Nothing here calls back into the caller. The layers look down only:
 * this file uses net.h (connections), never the parser in resp.c, and
 * holds no Lua (scripts.h).
 *
 * All operations on one node share its pipelined command connection; all
 * waiters share one listening connection per node. Nothing allocates once
 * the client and its locks have grown to their working size.
 *
 * Parts, in the order the data flows:
 *   1. Types             the client, a node and its shards, a lock, one node's answer
 *   2. Helpers           error text, names in messages, randomness, time
 *   3. The engine        timers, the ready and done lists; observability (counters,
 *                        histograms, the event hook); engine_pass, run_until
 *   4. Rounds on nodes   a script's arguments; sending it (EVALSHA, EVAL, FCALL,
 *                        WAIT); taking a node's answer; counting what nodes said
 *   5. Redis Cluster     slots, routing, MOVED/ASK, retries, the slot map
 *   5b. Redis Sentinel   finding the master, following failovers (+switch-master)
 *   6. Channels          release channels, the listeners, their pushes
 *   7. Operations        the phase table; acquire; waiting; fair mode; unlock,
 *                        refresh, inspect; keepalive; stopping an operation
 *   8. Construction and API   options, clients, lock handles, the calls
 *   9. Admin             the function library on the nodes
 *
 * Where is it handled?
 *   a MOVED or ASK reply     5: cluster_redirect (a script's) and chan_refused
 *                            (a listener's), both noting it with slot_moved
 *   NOSCRIPT, NOPERM, a function not loaded     4: script_fallback
 *   a waiter's wake-up       a release publishes (scripts.h); 6: on_push hands
 *                            the message to 7: waiter_woken
 *   a fair waiter's wake-up  the release script publishes to the first waiter in
 *                            line whose lease is alive, on its own channel
 *                            (scripts.h, WAKE_NEXT); then as any waiter's
 *   a lost lease             7: keepalive_fire and keepalive_done, ending in
 *                            keepalive_lost (reported through the done queue)
 *   a node restarted empty   4: script_fallback (NOSCRIPT: EVAL loads it again);
 *                            7: refresh_judge sets our key there again (repair)
 *   a reply out of step      3: take_replies closes that connection
 *   a counter, an event      3: obs_* (each counter incremented beside what it
 *                            counts: grep c->obs); a connection made or lost: obs_watch
 *   a request's deadline     net.c fails it; 4: on_result makes it the node's error
 *   a Sentinel failover      5b: switch_heard (+switch-master), sentinel_redirect
 *                            (READONLY, MASTERDOWN) and sentinel_retry (a lost
 *                            connection) start a pass; sentinel_gate holds requests
 *                            until it confirms a master
 */
#define _DEFAULT_SOURCE /* getentropy */
#include "redlock.h"
#include "net.h"
#include "scripts.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ==== 1. Types ========================================================================== */

/* resp.h (and through it net.c and a TLS transport) share the status
 * numbers; keep them in step. */
#define SAME_CODE(x) ((int)RESP_##x == (int)REDLOCK_##x)
_Static_assert(SAME_CODE(OK) && SAME_CODE(ERR_TIMEOUT) && SAME_CODE(ERR_IO) &&
                   SAME_CODE(ERR_PROTOCOL) && SAME_CODE(ERR_SERVER) && SAME_CODE(ERR_AUTH) &&
                   SAME_CODE(ERR_ARG) && SAME_CODE(ERR_NOMEM) && SAME_CODE(ERR_TLS),
               "resp.h and redlock.h status codes differ");

#define MAX_NODES 32
#define MAX_NAME (1u << 20)
#define MAX_VALUE 4096
#define SHOWN_NAME 48     /* bytes of a lock name quoted in messages */
#define MAX_PASSES 8      /* engine_pass: rounds of "take results, fire timers" */
#define MAX_IDLE_CHANS 32 /* channels kept subscribed with no local waiter */
#define NSLOTS 16384      /* Redis Cluster hash slots */
#define MAX_SHARDS 64     /* primaries of one cluster we keep connections to */
#define MAX_TRIES 8       /* cluster: redirects and retries of one request */

/* A lock's other keys are {NAME}:SUFFIX (NAME:SUFFIX when NAME has a hash
 * tag), so they share the lock key's slot. Every suffix has this length,
 * so one length (lock_keys.klen) is the length of each of them. */
#define SUFFIX_LEN 5
#define SUFFIX_FENCE "fence" /* the fence counter                         */
#define SUFFIX_QUEUE "queue" /* fair mode: the line (ZSET by arrival)      */
#define SUFFIX_ALIVE "alive" /* fair mode: waiters' leases (ZSET by expiry) */
#define SUFFIX_FREED "freed" /* a cluster's release channel (shard channel) */
#define SUFFIX_HOLDS "holds" /* a semaphore's holders (ZSET by lease expiry) */
#define SUFFIX_READS "reads" /* a read-write lock's readers (ZSET by lease expiry) */
#define SUFFIX_TOKEN "token" /* their fencing tokens (HASH; a semaphore's permit count at '') */
#define SUFFIX_WWAIT "wwait" /* writers waiting for readers (ZSET by place expiry) */
#define SAME_LEN(s) (sizeof SUFFIX_##s - 1 == SUFFIX_LEN)
_Static_assert(SAME_LEN(FENCE) && SAME_LEN(QUEUE) && SAME_LEN(ALIVE) && SAME_LEN(FREED) &&
                   SAME_LEN(HOLDS) && SAME_LEN(READS) && SAME_LEN(TOKEN) && SAME_LEN(WWAIT),
               "every key suffix is SUFFIX_LEN bytes: lock_keys.klen is the length of each key");
#undef SAME_LEN
/* The {NAME}:SUFFIX keys of a handle. */
enum { K_FENCE, K_QUEUE, K_ALIVE, K_HOLDS, K_READS, K_TOKEN, K_WWAIT, K_FREED };
#define KEY_SLOTS K_FREED /* keys written per request: all but {NAME}:freed */
#define CHAN_PREFIX "redlock:" /* the release channel on plain nodes: redlock:NAME */
#define CHAN_PREFIX_LEN (sizeof CHAN_PREFIX - 1)

typedef struct chan chan;
typedef struct sentinel sentinel; /* part 5b */

/* ---- one node's answer in the current round ---- */

enum { N_SKIP, N_PENDING, N_ERR, N_OK };

typedef struct nres {
    uint8_t state;     /* N_SKIP, N_PENDING, N_ERR, N_OK                    */
    uint8_t status;    /* N_ERR: REDLOCK_ERR_*                              */
    uint8_t transient; /* N_ERR: worth waiting out                          */
    uint8_t final;     /* the node's part of the round is over              */
    uint8_t inflight;  /* requests in flight: the script, and its WAIT      */
    struct {           /* how the request went out                          */
        uint8_t id;      /* the script sent (S_*, or S_PROBE)               */
        uint8_t attempt; /* its sends in this round (tags WAIT)             */
        uint8_t eval;    /* EVALSHA said NOSCRIPT: EVAL went out            */
        uint8_t fcall;   /* it went by FCALL (or FCALL_RO)                  */
        uint8_t noperm;  /* auto mode: EVALSHA said NOPERM: FCALL instead   */
        uint8_t loaded;  /* FCALL found no function: FUNCTION LOAD went out */
    } via;
    struct {             /* a cluster member: where it went, and retries    */
        uint16_t shard;
        uint8_t tries;     /* redirects and retries so far                  */
        int64_t retry_at;  /* send again at this time (0: no)               */
        int64_t until;     /* no retry after this                           */
        uint8_t waits;     /* a Sentinel member: it waited for the master (5b) */
    } route;
    struct {             /* the decoded reply (N_OK)                        */
        long long code;    /* the script's first (or only) integer          */
        long long val;     /* its second integer                            */
        uint64_t vhash;    /* S_STATUS: hash of the holder's value, 0: none */
        uint8_t ours;      /* S_STATUS: the holder's value is ours          */
        int64_t young;     /* acquire: ms until the node is older than the lease
                              (restart guard: its yes does not count); 0: counts */
        uint32_t count;    /* S_LIST: holders listed                        */
    } ans;
    /* what this operation holds there; outlives a round (round_start
     * clears everything above it) */
    struct {
        uint8_t acq;    /* the operation's acquire or refresh holds it here */
        uint8_t landed; /* a write landed here but failed WAIT: release it  */
    } hold;
} nres;

/* ---- a node, its shards, and a cluster's routing state ---- */

/* A connection as the engine last saw it (part 3, obs_watch): its
 * connection events come from what changed since. */
typedef struct conn_seen {
    uint64_t socks;      /* net_conn_sockets                             */
    uint64_t live;       /* the generation said to be connected, 0: none */
    uint64_t rtt_gen;    /* the connection whose first reply was skipped by
                            the round-trip estimate (it may hold a connect) */
    uint8_t up;          /* net_conn_ready                               */
    uint8_t ever;        /* it was connected once: the next is a reconnect */
    uint8_t failed;      /* the status its last failed request had       */
} conn_seen;

/* One server: the lock commands (pipelined) and the listener (on demand). */
typedef struct shard {
    net_conn *cmd;
    net_conn *sub;
    uint64_t sub_gen; /* sub's connection the chan states belong to */
    struct {          /* the restart guard: the server's age (part 4) */
        int64_t started_at; /* when it started (CLOCK_MONOTONIC ns, rounded toward young) */
        uint64_t gen;       /* cmd's connection that learned it (0: none yet) */
        uint8_t asking;     /* an INFO server is in flight                   */
        uint8_t off;        /* the server refused INFO: no guard there       */
        char run_id[41];
    } age;
    conn_seen seen[2]; /* cmd and sub, for connection events (part 3) */
} shard;

/* What a Redis Cluster member has besides its shards. */
typedef struct cluster {
    int sharded;        /* wake-ups on shard channels (SPUBLISH); 0 on Redis < 7 */
    int16_t *slots;     /* the shard serving each slot, -1 unknown             */
    int16_t *scratch;   /* a slot map being read                               */
    net_url url;        /* credentials and TLS for the nodes it learns of      */
    uint32_t moves;     /* MOVED answers so far                                */
    uint32_t map_moves; /* moves when the slot map was asked for               */
    int64_t map_due;    /* ask for the slot map at this time (0: no)           */
    int map_busy;       /* a CLUSTER SLOTS reply is due                        */
    size_t map_next;    /* the shard to ask next                               */
} cluster;

/* One member of the quorum: a Redis node (one shard), or a Redis Cluster
 * (one shard per primary met so far; each lock goes to the one serving its
 * slot). */
typedef struct node {
    shard *sh;
    size_t nsh;
    net_opts opts;
    cluster *cl; /* NULL: a plain node */
    sentinel *sn; /* a Sentinel member (part 5b); NULL: not one */
    struct {     /* how scripts go there: EVALSHA, or FCALL of the library */
        uint8_t fcall;     /* functions mode; or auto mode once EVALSHA met NOPERM
                              and an FCALL worked                               */
        char load_err[96]; /* the last FUNCTION LOAD's error there ("": none)   */
    } fn;
    int64_t srtt; /* round-trip estimate, ns (0: none yet; part 3's counters) */
} node;

/* ---- the client ---- */

/* A histogram as the client keeps it: redlock_histogram's buckets in 40
 * bits each (32 + 8: up to 1.1e12 values a bucket, then it stays there),
 * 824 bytes where 64-bit buckets would take 1304. */
typedef struct obs_hist {
    uint64_t count, sum_us, max_us;
    uint32_t lo[REDLOCK_STATS_BUCKETS];
    uint8_t hi[REDLOCK_STATS_BUCKETS];
} obs_hist;

struct redlock_client {
    redlock_options opts;
    size_t n, quorum;
    int guard; /* the restart guard is on (opts.restart_guard, or a quorum) */
    node *nodes;
    struct { /* the client's locks, by what the engine does with them */
        redlock *all;   /* every lock of this client                         */
        redlock *armed; /* locks with a timer                                */
        redlock *ready; /* locks whose round ended without a reply to wait for */
        redlock *done_head, *done_tail; /* results for redlock_client_done   */
    } locks;
    struct { /* release channels with waiters or subscriptions */
        chan **buckets;  /* by channel name                                  */
        chan **sbuckets; /* the same channels, by shard channel name         */
        size_t nbuckets, n;
        chan *idle_head, *idle_tail; /* subscribed, nobody waits (oldest first) */
        size_t nidle;
        chan *free;
    } chans;
    struct { /* connections of an admin call, driven by the engine while it runs */
        net_conn **conn;
        size_t n;
    } side;
    struct { /* where a request's {NAME}:SUFFIX keys are written (a slot of
                keys.each bytes per suffix; grown by redlock_new for its name) */
        char *buf;
        size_t each;
    } keys;
    char *lib_code; /* the function library's text, made when first loaded */
    size_t lib_len;
    struct pollfd *pfd; /* run_until's poll set, grown as needed */
    size_t pfd_cap;
    int64_t now;   /* the engine's clock, read once per pass */
    int completed; /* operations that ended in this pass and are reported */
    uint64_t rng;
    struct { /* observability (part 3): counters, and the event hook; the
                parts of redlock_stats, put together by redlock_client_stats */
        redlock_op_stats op[REDLOCK_STAT_KINDS];
        uint64_t leases_lost;
        obs_hist acquire_wait, round_trip, hold;
        uint64_t events[REDLOCK_EVENT_TYPES];
        redlock_node_stats *node; /* one per node */
        uint32_t masters;         /* Sentinel members whose master was confirmed once */
        int64_t created;
        void (*fn)(const redlock_event *, void *);
        void *arg;
        int in_hook; /* the hook runs: calls that act are refused */
    } obs;
    char errstr[512];
};

/* ---- a lock ---- */

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
    PH_STATUS,        /* inspect                                             */
    PH_LIST,          /* redlock_holders                                     */
    PH_COUNT
};

/* What a handle is: an exclusive lock (or the writer of a read-write
 * lock), a permit of a counting semaphore, or a shared (reader) hold. */
enum { LK_LOCK, LK_SEMAPHORE, LK_SHARED };

/* The names of everything the lock touches in Redis; one block with the
 * lock (see new_handle). */
typedef struct lock_keys {
    uint8_t kind;        /* LK_*                                            */
    uint32_t permits;    /* LK_SEMAPHORE                                    */
    char permits_str[12];
    const char *name;    /* the lock key: the name itself                   */
    const char *value;   /* the owner value                                 */
    const char *freed;   /* {NAME}:freed, klen bytes (the other {NAME}:SUFFIX
                            keys are written per request: key_at)            */
    const char *channel; /* the release channel on plain nodes: redlock:NAME */
    const char *own, *own_s; /* fair mode: this waiter's own channels,
                                redlock:NAME:VALUE and {NAME}:freed:VALUE     */
    size_t namelen, vlen, klen, chlen;
    uint16_t slot;       /* the hash slot of every key of the lock          */
} lock_keys;

/* What a waiter of the lock listens on: the shared release channel, or in
 * fair mode its own; the shard channel form on a cluster. */
typedef struct lock_listen {
    const char *name, *sname;
    size_t len, slen;
} lock_listen;

/* The lease: what the last acquire or refresh gave. */
typedef struct lock_lease {
    uint32_t ttl;
    char ttl_str[16];
    int held;
    uint64_t fence;
    int64_t valid_until; /* ns, CLOCK_MONOTONIC                               */
    int64_t renewed_at;  /* when the last acquire or refresh that held began */
    int64_t since;       /* when it was acquired (the hold histogram)        */
    int keepalive;
} lock_lease;

/* A status kept for later, and whether redlock_lock may try again after
 * it (an error that may pass: a node down, LOADING, a failover). */
typedef struct outcome {
    int rc;
    int again;
} outcome;

/* The operation in flight (kind OP_NONE: none). */
typedef struct lock_op {
    uint8_t kind, phase;
    uint8_t blocking;    /* a blocking call runs it: not reported as done     */
    uint8_t held_before; /* held when the operation began                    */
    uint8_t repair;      /* S_REFRESH argument: set the key where it is gone */
    uint8_t began;       /* an operation has begun on l (ever)               */
    uint32_t seq;        /* tags requests; a new round makes older replies stale */
    uint32_t outstanding; /* nodes whose part of the round is not over       */
    int result;          /* the last operation's status                     */
    outcome deferred;    /* the status to give after a clean-up round        */
    int64_t t0;          /* when the current acquire or refresh began        */
    int64_t started;     /* when the operation began (acquire wait)          */
    int64_t round_at;    /* when the round's requests went out (0: none did) */
    int64_t cap;         /* the round's requests wait no longer than this    */
    uint64_t token;      /* the acquire's fencing token                      */
    char tok_str[24];
    redlock_info *info;  /* OP_INSPECT: filled when it ends                  */
    struct {             /* redlock_holders: the caller's array, filled as nodes answer */
        redlock_holder *out;
        size_t cap, n;
    } list;
} lock_op;

/* redlock_lock's wait. */
typedef struct lock_wait {
    chan *ch;            /* the channel it waits on                         */
    int64_t deadline;    /* when the wait ends                              */
    int64_t backoff;
    int64_t rtt;         /* the last try's round trip                       */
    int64_t holder_pttl; /* ms left on the holder's lock at the last failed try */
    int last;            /* the last try's status                           */
    uint8_t probed;      /* probed after subscribing                        */
    uint8_t woken;       /* a release came while a try was in flight        */
    uint8_t gave_way;    /* gave way once after a release (see waiter_woken) */
    uint8_t queued;      /* in the line (fair mode, a semaphore's waiters)  */
    uint8_t writer_waits; /* readers hold it: a place among the writers waiting */
    char score_str[24];  /* fair mode: wall-clock us when this wait began    */
    char lease_str[16];  /* fair mode: how long our place in line lasts     */
} lock_wait;

/* A lock's error text: allocated at its first error and kept (a handle
 * that never fails never holds it, and no cycle allocates). */
typedef struct lock_text {
    char errstr[512];  /* the detail of the last operation's result          */
    char nerr[320];    /* the round's first node error                       */
    char callerr[160]; /* why the last call on l was refused at once ("": not) */
} lock_text;

/* The lists a lock is on. */
typedef struct lock_links {
    redlock *prev, *next;   /* c->locks.all               */
    redlock *tprev, *tnext; /* c->locks.armed             */
    redlock *ready_next;    /* c->locks.ready             */
    redlock *done_next;     /* c->locks.done_head         */
    redlock *wprev, *wnext; /* wait.ch's waiters          */
    int64_t timer_at;       /* 0: no timer                */
    uint8_t armed, on_ready, in_done;
} lock_links;

struct redlock {
    redlock_client *c; /* NULL once the client is freed */
    lock_keys k;
    lock_listen listen;
    lock_lease lease;
    lock_op op;
    lock_wait wait;
    lock_links link;
    void *userdata;
    size_t nerr_idx;  /* node of the round's first error (n: none) */
    lock_text *text;  /* made at the handle's first error, then kept */
    nres res[]; /* one per node */
};

/* Tag kinds of requests besides scripts (S_*); an attempt rides above. */
enum { K_WAIT = 0xf0, K_LISTEN = 0xf1, K_SLOTS = 0xf2, K_LOAD = 0xf3, K_AGE = 0xf4, K_ADMIN = 0xf5 };
#define KIND(id, attempt) ((uint32_t)(id) | (uint32_t)(attempt) << 8)
enum { K_ROLE = 0xf8, K_SENTINEL = 0xf9 }; /* part 5b: ROLE on a master, and the sentinels */

static _Thread_local char last_err[256];

/* ==== 2. Helpers ======================================================================== */

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

/* The detail of a client's last error. */
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

/* The detail of an error with no client to hold it (this thread's). */
static int global_err(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int global_err(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return status;
}

/* l's error text, made at its first error (NULL when out of memory: the
 * status is still right, its detail lost). */
static lock_text *text_of(redlock *l)
{
    if (!l->text)
        l->text = resp_alloc_array(1, sizeof *l->text);
    return l->text;
}

/* The detail of l's last result: "" after a success, also with no text made. */
static const char *errstr_of(const redlock *l)
{
    if (l->text)
        return l->text->errstr;
    return l->op.began ? "" : "no operation has run on this lock";
}

/* The client's error text becomes l's (a copy, not a printf: a cycle's
 * stack stays at what the I/O needs). */
static void client_text(redlock *l)
{
    redlock_client *c = l->c;
    const char *s = errstr_of(l);
    size_t n = strlen(s);
    if (n >= sizeof c->errstr)
        n = sizeof c->errstr - 1;
    memcpy(c->errstr, s, n);
    c->errstr[n] = '\0';
}

/* The detail of an operation's result, in the lock (and, when it ends, in
 * the client). */
static int lerr(redlock *l, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lerr(redlock *l, int status, const char *fmt, ...)
{
    lock_text *t = text_of(l);
    va_list ap;
    va_start(ap, fmt);
    if (t)
        vsnprintf(t->errstr, sizeof t->errstr, fmt, ap);
    va_end(ap);
    return status;
}

/* A call on l refused at once (out of turn, a bad argument, its client
 * freed): the reason is l's (redlock_errstr) until its next call that is
 * not refused or its operation ends, and the client's (or, without one, this thread's). An
 * operation's own detail (errstr) is kept meanwhile. */
static int call_refused(redlock *l, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int call_refused(redlock *l, int status, const char *fmt, ...)
{
    char why[sizeof ((lock_text *)0)->callerr];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (text_of(l))
        memcpy(l->text->callerr, why, sizeof why);
    if (l->c)
        return cerr(l->c, status, "%s", why);
    return global_err(status, "%s", why);
}

/* A lock name fit for a message: printable, shortened. */
static const char *shown(const redlock *l, char *buf, size_t len)
{
    size_t o = 0, i;
    for (i = 0; i < l->k.namelen && o + 5 < len && i < SHOWN_NAME; i++) {
        unsigned char ch = (unsigned char)l->k.name[i];
        buf[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (i < l->k.namelen && o + 4 < len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

static const char *sentinel_desc(const sentinel *sn); /* 5b */

/* How a node is named in messages: host:port (of the first seed, for a
 * cluster), from its connection; a Sentinel member by its master. */
static const char *node_desc(const redlock_client *c, size_t i)
{
    const node *m = &c->nodes[i];
    return m->sn ? sentinel_desc(m->sn) : net_conn_desc(m->sh[0].cmd);
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
    return (int64_t)((double)l->lease.ttl * l->c->opts.drift_factor * 1e6) + 2000000;
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

static int starts_with(const resp_reply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->len >= n && memcmp(r->str, prefix, n) == 0;
}

static int error_starts(const resp_reply *r, const char *prefix)
{
    return r->type == RESP_ERROR && starts_with(r, prefix);
}

/* Transient server errors: worth waiting out in redlock_lock. */
static int transient_error(const resp_reply *r)
{
    static const char *const words[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (starts_with(r, words[i]))
            return 1;
    return 0;
}

static uint32_t bit(size_t i)
{
    return (uint32_t)1 << i;
}

static uint32_t all_nodes(const redlock_client *c)
{
    return c->n >= 32 ? 0xffffffffu : bit(c->n) - 1;
}

/* ==== 3. The engine ===================================================================== */

/* What the engine hands its results to, in the parts below. */
static int on_result(redlock *l, size_t i, uint32_t kind, int status, const resp_reply *r); /* 4 */
static void age_reply(redlock_client *c, size_t i, size_t j, int status, const resp_reply *r);
static void map_ask(redlock_client *c, size_t i);                                           /* 5 */
static void map_reply(redlock_client *c, size_t i, size_t j, int status, const resp_reply *r);
static void role_reply(redlock_client *c, size_t i, uint32_t seq, int st, const resp_reply *r); /* 5b */
static int sentinel_turn(redlock_client *c, size_t i);
static int64_t sentinel_due(const sentinel *sn);
static net_conn *sentinel_conn(const sentinel *sn, size_t k);
static int sentinel_quiet(const redlock_client *c, const net_conn *conn);
static void on_push(redlock_client *c, size_t i, size_t j, const resp_reply *r);      /* 6 */
static void listener_reset(redlock_client *c, size_t i, size_t j);
static void advance(redlock *l); /* 7: a round ended  */
static void fire(redlock *l);    /* 7: a timer is due */
static void admin_reply(redlock_client *c, net_tag tag, int status, const resp_reply *r); /* 9 */

/* ---- timers, the ready list, the done queue ---- */

static void timer_clear(redlock *l)
{
    lock_links *k = &l->link;
    if (!k->armed)
        return;
    if (k->tprev)
        k->tprev->link.tnext = k->tnext;
    else
        l->c->locks.armed = k->tnext;
    if (k->tnext)
        k->tnext->link.tprev = k->tprev;
    k->tprev = k->tnext = NULL;
    k->armed = 0;
    k->timer_at = 0;
}

static void timer_set(redlock *l, int64_t at)
{
    lock_links *k = &l->link;
    if (!k->armed) {
        k->tprev = NULL;
        k->tnext = l->c->locks.armed;
        if (k->tnext)
            k->tnext->link.tprev = l;
        l->c->locks.armed = l;
        k->armed = 1;
    }
    k->timer_at = at;
}

/* A round that ended with nothing to wait for moves on from the engine's
 * top level, never inside the call that started it. */
static void mark_ready(redlock *l)
{
    if (l->link.on_ready)
        return;
    l->link.on_ready = 1;
    l->link.ready_next = l->c->locks.ready;
    l->c->locks.ready = l;
}

static void ready_remove(redlock *l)
{
    if (!l->link.on_ready)
        return;
    for (redlock **p = &l->c->locks.ready; *p; p = &(*p)->link.ready_next)
        if (*p == l) {
            *p = l->link.ready_next;
            break;
        }
    l->link.on_ready = 0;
}

static void done_push(redlock *l)
{
    redlock_client *c = l->c;
    if (l->link.in_done)
        return;
    l->link.in_done = 1;
    l->link.done_next = NULL;
    if (c->locks.done_tail)
        c->locks.done_tail->link.done_next = l;
    else
        c->locks.done_head = l;
    c->locks.done_tail = l;
    c->completed++;
}

static void done_remove(redlock *l)
{
    redlock_client *c = l->c;
    if (!l->link.in_done)
        return;
    redlock *prev = NULL;
    for (redlock *p = c->locks.done_head; p; prev = p, p = p->link.done_next)
        if (p == l) {
            if (prev)
                prev->link.done_next = l->link.done_next;
            else
                c->locks.done_head = l->link.done_next;
            if (c->locks.done_tail == l)
                c->locks.done_tail = prev;
            break;
        }
    l->link.in_done = 0;
}

static int fire_timers(redlock_client *c)
{
    int fired = 0;
    for (int guard = 0; guard < 1 << 20; guard++) {
        redlock *due = NULL;
        for (redlock *l = c->locks.armed; l; l = l->link.tnext)
            if (l->link.timer_at <= c->now) {
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
    for (; c->locks.ready && k < 1 << 20; k++) {
        redlock *l = c->locks.ready;
        c->locks.ready = l->link.ready_next;
        l->link.on_ready = 0;
        if (l->op.kind != OP_NONE && l->op.outstanding == 0)
            advance(l);
    }
    return k;
}

/* ---- the client's connections ---- */

/* Every connection of the client, in one order: each shard's command
 * connection and listener (NULL until needed), a Sentinel member's
 * sentinel connections (j counts on past the shards), then an admin
 * call's own. */
typedef struct conn_iter {
    size_t i, j, side;
    int sub;
} conn_iter;

/* The next connection (skipping absent listeners), or NULL at the end;
 * *it starts zeroed. */
static net_conn *next_conn(const redlock_client *c, conn_iter *it)
{
    for (; it->i < c->n; it->i++, it->j = 0) {
        for (; it->j < c->nodes[it->i].nsh; it->j++, it->sub = 0) {
            const shard *sh = &c->nodes[it->i].sh[it->j];
            if (!it->sub) {
                it->sub = 1;
                return sh->cmd;
            }
            if (sh->sub) {
                it->sub = 0;
                it->j++;
                return sh->sub;
            }
        }
        for (const node *m = &c->nodes[it->i]; m->sn && it->j - m->nsh <= NET_MAX_SEEDS;) {
            net_conn *s = sentinel_conn(m->sn, it->j++ - m->nsh);
            if (s)
                return s;
        }
    }
    return it->side < c->side.n ? c->side.conn[it->side++] : NULL;
}

static net_conn *conn_of_fd(const redlock_client *c, int fd)
{
    conn_iter it = {0, 0, 0, 0};
    for (net_conn *conn; (conn = next_conn(c, &it)) != NULL;)
        if (net_conn_fd(conn) == fd)
            return conn;
    return NULL;
}

/* The next time something is due: a connection's deadline, a lock's
 * timer, a slot map to ask for; c->now when a round is ready to move on;
 * INT64_MAX when nothing is. */
static int64_t next_due(const redlock_client *c)
{
    if (c->locks.ready)
        return c->now;
    int64_t d = INT64_MAX;
    for (size_t i = 0; i < c->n; i++) {
        const cluster *cl = c->nodes[i].cl;
        if (cl && cl->map_due && !cl->map_busy && cl->map_due < d)
            d = cl->map_due;
        if (sentinel_due(c->nodes[i].sn) < d)
            d = sentinel_due(c->nodes[i].sn);
    }
    conn_iter it = {0, 0, 0, 0};
    for (net_conn *conn; (conn = next_conn(c, &it)) != NULL;)
        if (net_conn_deadline(conn) < d)
            d = net_conn_deadline(conn);
    for (const redlock *l = c->locks.armed; l; l = l->link.tnext)
        if (l->link.timer_at < d)
            d = l->link.timer_at;
    return d;
}

/* ---- observability: counters, histograms, events ----
 * Every counter is incremented beside what it counts, by a line where it
 * happens or one of the obs_* calls here; none allocates. An event is
 * counted whether a hook is set or not, and formatted and handed to the
 * hook only when one is (the hook may not call back in: in_hook). The
 * connection events come from obs_watch, which compares a connection with
 * what the engine saw at its last look (net.c has no callbacks): a
 * command connection when results come from it (a change shows there: a
 * new connection answers, a lost one fails its requests), a listener at
 * every turn.
 * A Sentinel member's failover is counted where part 5b confirms a master
 * at a new address (obs_master).
 */

static const char *const event_names[REDLOCK_EVENT_TYPES] = {
    [REDLOCK_EVENT_CONNECTED] = "connected",
    [REDLOCK_EVENT_DISCONNECTED] = "disconnected",
    [REDLOCK_EVENT_CONNECT_FAILED] = "connect-failed",
    [REDLOCK_EVENT_REDIRECT] = "redirect",
    [REDLOCK_EVENT_SLOT_MAP] = "slot-map",
    [REDLOCK_EVENT_LEASE_LOST] = "lease-lost",
    [REDLOCK_EVENT_SCRIPTS_LOADED] = "scripts-loaded",
    [REDLOCK_EVENT_GUARD_YOUNG] = "guard-young",
    [REDLOCK_EVENT_GUARD_OFF] = "guard-off",
    [REDLOCK_EVENT_FAILOVER] = "failover",
};

/* Where an event happened: node i (c->n: none), on connection conn (NULL:
 * the node's first), to lock l (or NULL); listener: conn is a listener. */
typedef struct obs_at {
    size_t i;
    const net_conn *conn;
    const redlock *l;
    int listener;
} obs_at;

/* Events are rare: kept out of line, so that their formatting costs the
 * paths that count nothing. */
#define RARE __attribute__((cold, noinline))

static void obs_event(redlock_client *c, obs_at at, int type, int status, int64_t value,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7))) RARE;
static void obs_event(redlock_client *c, obs_at at, int type, int status, int64_t value,
                      const char *fmt, ...)
{
    c->obs.events[type]++;
    if (!c->obs.fn || c->obs.in_hook)
        return;
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    redlock_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.what = event_names[type];
    ev.status = status;
    ev.node_index = at.i < c->n ? (int)at.i : -1;
    ev.node = at.conn ? net_conn_desc(at.conn) : at.i < c->n ? node_desc(c, at.i) : "";
    ev.listener = at.listener;
    if (at.l) {
        ev.lock = at.l;
        ev.name = at.l->k.name;
        ev.namelen = at.l->k.namelen;
        ev.userdata = at.l->userdata;
    }
    ev.value = value;
    ev.detail = detail;
    c->obs.in_hook = 1;
    c->obs.fn(&ev, c->obs.arg);
    c->obs.in_hook = 0;
}

#define IN_HOOK                                                                            \
    "called from inside the event hook, which must not call back into the library (see "   \
    "redlock_client_on_event)"

/* A call that acts, made from inside the hook: refused (1), with why in
 * c->errstr. */
static int obs_refused(redlock_client *c, const char *call)
{
    if (!c->obs.in_hook)
        return 0;
    cerr(c, REDLOCK_ERR_ARG, "%s " IN_HOOK, call);
    return 1;
}

/* The highest set bit of v > 0. */
static unsigned top_bit(uint64_t v)
{
#if defined(__GNUC__)
    return 63u - (unsigned)__builtin_clzll(v);
#else
    unsigned b = 0;
    while (v >>= 1)
        b++;
    return b;
#endif
}

/* A histogram's bucket for us: 0 to 3 as they are, then four per power
 * of two (the top bit, and the two bits after it). */
static unsigned hist_bucket(uint64_t us)
{
    if (us < 4)
        return (unsigned)us;
    unsigned b = top_bit(us);
    unsigned i = (b - 1) * 4 + (unsigned)((us >> (b - 2)) & 3);
    return i < REDLOCK_STATS_BUCKETS ? i : REDLOCK_STATS_BUCKETS - 1;
}

static void hist_add(obs_hist *h, int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    unsigned b = hist_bucket(us);
    h->count++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
    if (++h->lo[b] == 0 && ++h->hi[b] == 0) { /* past 2^40 - 1: it stays there */
        h->hi[b] = UINT8_MAX;
        h->lo[b] = UINT32_MAX;
    }
}

/* One operation of stat kind `kind` ended with rc. */
static void obs_outcome(redlock_client *c, int kind, int rc)
{
    redlock_op_stats *o = &c->obs.op[kind];
    o->attempts++;
    switch (rc) {
    case REDLOCK_OK:
        o->successes++;
        break;
    case REDLOCK_NOT_ACQUIRED:
        o->contended++;
        break;
    case REDLOCK_NOT_HELD:
        o->lost++;
        break;
    case REDLOCK_ERR_TIMEOUT:
        o->timeouts++;
        break;
    case REDLOCK_CANCELLED:
        o->cancelled++;
        break;
    default:
        o->errors++;
    }
}

/* A lease is gone: keepalive's loss (counted), or a refresh that found it
 * lost; why is the detail. */
static void obs_lease_lost(redlock *l, int keepalive, const char *why)
{
    redlock_client *c = l->c;
    c->obs.leases_lost += (uint64_t)keepalive;
    obs_event(c, (obs_at){c->n, NULL, l, 0}, REDLOCK_EVENT_LEASE_LOST, REDLOCK_NOT_HELD, 0, "%s",
              why);
}

/* l's operation of kind op (OP_*) ends with rc: a finished operation, a
 * cancelled one, one whose loop failed. A trylock is one acquire try (a
 * wait's tries count in try_over); an acquisition's wait goes into its
 * histogram. Keepalive refreshes count in keepalive_done. */
static void obs_end(redlock *l, int op, int rc)
{
    redlock_client *c = l->c;
    int kind = op == OP_TRYLOCK  ? REDLOCK_STAT_ACQUIRE
               : op == OP_LOCK   ? REDLOCK_STAT_WAIT
               : op == OP_UNLOCK ? REDLOCK_STAT_RELEASE
                                 : REDLOCK_STAT_REFRESH;
    if (op != OP_TRYLOCK && op != OP_LOCK && op != OP_UNLOCK && op != OP_REFRESH)
        return; /* inspect, list: not counted */
    obs_outcome(c, kind, rc);
    if (rc == REDLOCK_OK && (op == OP_TRYLOCK || op == OP_LOCK))
        hist_add(&c->obs.acquire_wait, c->now - l->op.started);
    if (op == OP_REFRESH && rc == REDLOCK_NOT_HELD && l->op.held_before)
        obs_lease_lost(l, 0, errstr_of(l));
}

/* Node i answered l's request of this round: a sample for its round-trip
 * estimate (the first reply on each new connection is skipped: it may
 * include the connect). */
static void obs_rtt(redlock *l, size_t i)
{
    redlock_client *c = l->c;
    conn_seen *s = &c->nodes[i].sh[l->res[i].route.shard].seen[0];
    if (!l->op.round_at || l->res[i].via.attempt != 1)
        return;
    if (s->rtt_gen != s->live) {
        s->rtt_gen = s->live;
        return;
    }
    int64_t d = c->now - l->op.round_at, *e = &c->nodes[i].srtt;
    *e = *e ? *e + (d - *e) / 8 : d;
    c->obs.node[i].rtt_us = *e / 1000;
}

/* The restart guard: node i's yes to l's acquire does not count yet. */
static void obs_young(redlock *l, size_t i)
{
    redlock_client *c = l->c;
    c->obs.node[i].guard_young++;
    obs_event(c, (obs_at){i, NULL, l, 0}, REDLOCK_EVENT_GUARD_YOUNG, REDLOCK_OK,
              l->res[i].ans.young, "the node restarted less than one lease ago: its yes counts "
              "in %" PRId64 " ms (restart guard)", l->res[i].ans.young);
}

/* A redirect answered by shard j of node i, for lock l (NULL: a listener's). */
static void obs_redirect(redlock_client *c, size_t i, size_t j, const redlock *l, int ask,
                         unsigned slot, const resp_reply *r)
{
    shard *sh = &c->nodes[i].sh[j];
    if (ask)
        c->obs.node[i].ask++;
    else
        c->obs.node[i].moved++;
    obs_event(c, (obs_at){i, l ? sh->cmd : sh->sub, l, !l}, REDLOCK_EVENT_REDIRECT, REDLOCK_OK,
              slot, "%.*s", (int)(r->len > 200 ? 200 : r->len), r->str);
}

/* Cluster node i read a slot map (scratch) from shard j: an event when it
 * differs from the one in use. */
static void obs_slot_map(redlock_client *c, size_t i, size_t j)
{
    const cluster *cl = c->nodes[i].cl;
    int64_t moved = 0;
    for (size_t s = 0; s < NSLOTS; s++)
        moved += cl->slots[s] != cl->scratch[s];
    if (!moved)
        return;
    c->obs.node[i].slot_maps++;
    obs_event(c, (obs_at){i, c->nodes[i].sh[j].cmd, NULL, 0}, REDLOCK_EVENT_SLOT_MAP, REDLOCK_OK,
              moved, "slot map: %" PRId64 " slots have a new owner (%zu servers known)", moved,
              c->nodes[i].nsh);
}

/* Shard j of node i's connection (its listener if `listener`) changed
 * since the engine's last look (obs_watch): ready (connected), a ready
 * one gone (disconnected), or an attempt that ended before it was ready
 * (connect failed: refused, TLS, AUTH, timeout, a name that does not
 * resolve); each said once. An attempt opens and closes at least one
 * socket (a new connection is a new socket), and closing a ready one
 * closes one; an attempt that fails before it opens one fails its
 * requests all the same. */
static void obs_changed(redlock_client *c, size_t i, size_t j, int listener) RARE;
static void obs_changed(redlock_client *c, size_t i, size_t j, int listener)
{
    shard *sh = &c->nodes[i].sh[j];
    const net_conn *conn = listener ? sh->sub : sh->cmd;
    conn_seen *s = &sh->seen[listener];
    uint64_t gen = net_conn_generation(conn), socks = net_conn_sockets(conn);
    redlock_node_stats *ns = &c->obs.node[i];
    obs_at at = {i, conn, NULL, listener};
    int up = net_conn_ready(conn), why = s->failed ? s->failed : REDLOCK_ERR_IO, gone = 0;
    if (s->live && (gen != s->live || !up)) {
        ns->disconnects++;
        obs_event(c, at, REDLOCK_EVENT_DISCONNECTED, why, 0, "%s", net_conn_errstr(conn));
        s->live = 0;
        gone = 1;
    }
    if (up && !s->live) {
        ns->connects++;
        ns->reconnects += s->ever;
        obs_event(c, at, REDLOCK_EVENT_CONNECTED, REDLOCK_OK, s->ever, "%s %s",
                  s->ever ? "reconnected to" : "connected to", net_conn_desc(conn));
        s->live = gen;
        s->ever = 1;
    } else if (!up && net_conn_fd(conn) < 0 &&
               (socks - s->socks > (gone ? 2u : 0u) || socks == s->socks)) {
        ns->connect_failures++;
        obs_event(c, at, REDLOCK_EVENT_CONNECT_FAILED, why, 0, "%s", net_conn_errstr(conn));
    }
    s->socks = socks;
    s->up = (uint8_t)up;
    s->failed = 0;
}

/* Has shard j of node i's connection (or listener) changed since the last
 * look? Two comparisons when nothing did (or a request failed and
 * nothing closed). Its failed requests, if any, were noted first. */
static void obs_watch(redlock_client *c, size_t i, size_t j, int listener)
{
    shard *sh = &c->nodes[i].sh[j];
    const net_conn *conn = listener ? sh->sub : sh->cmd;
    conn_seen *s = &sh->seen[listener];
    int up = net_conn_ready(conn);
    if (net_conn_sockets(conn) == s->socks && up == s->up && (up || !s->failed))
        s->failed = 0;
    else
        obs_changed(c, i, j, listener);
}

/* Sentinel member i confirmed a master at a new address (part 5b,
 * pass_over): after the first, the master switched (a failover). */
static void obs_master(redlock_client *c, size_t i, const char *desc)
{
    if (!(c->obs.masters & bit(i))) {
        c->obs.masters |= bit(i);
        return;
    }
    c->obs.node[i].failovers++;
    obs_event(c, (obs_at){i, c->nodes[i].sh[0].cmd, NULL, 0}, REDLOCK_EVENT_FAILOVER, REDLOCK_OK,
              0, "%s: the master switched (a failover)", desc);
}

/* A new client's counters: its nodes' names, no round trip yet. */
static void obs_init(redlock_client *c)
{
    c->obs.created = net_now_ns();
    for (size_t i = 0; i < c->n; i++) {
        snprintf(c->obs.node[i].node, sizeof c->obs.node[i].node, "%.127s", node_desc(c, i));
        c->obs.node[i].rtt_us = -1;
    }
}

/* ---- taking results ---- */

/* Hand shard j of node i's replies to the operations that sent them. */
static int take_replies(redlock_client *c, size_t i, size_t j)
{
    net_conn *conn = c->nodes[i].sh[j].cmd;
    net_tag tag;
    const resp_reply *r;
    int st, k = 0;
    while ((st = net_conn_take(conn, &tag, &r, NULL)) != RESP_IDLE) {
        if (st != RESP_OK)
            c->nodes[i].sh[j].seen[0].failed = (uint8_t)st; /* why, if it closed */
        if (k++ == 0 || st != RESP_OK)
            obs_watch(c, i, j, 0); /* what became of the connection, before its results */
        uint32_t kind = tag.kind & 0xff;
        if (kind == K_SLOTS || kind == K_AGE || kind == K_ROLE) {
            if (kind == K_SLOTS)
                map_reply(c, i, j, st, r);
            else if (kind == K_AGE)
                age_reply(c, i, j, st, r);
            else
                role_reply(c, i, tag.seq, st, r);
            if (st == RESP_OK)
                net_conn_consume(conn);
            continue;
        }
        redlock *l = tag.owner;
        int live = l && l->op.seq == tag.seq && l->op.kind != OP_NONE;
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
    int st, k = 0, failed = 0;
    while ((st = net_conn_take(sh->sub, &tag, &r, NULL)) != RESP_IDLE) {
        k++;
        if (st != RESP_OK) {
            failed = 1;
            sh->seen[1].failed = (uint8_t)st;
            continue;
        }
        on_push(c, i, j, r);
        net_conn_consume(sh->sub);
    }
    obs_watch(c, i, j, 1);
    int up = net_conn_ready(sh->sub);
    uint64_t gen = net_conn_generation(sh->sub);
    if (failed || (sh->sub_gen && (!up || gen != sh->sub_gen))) {
        listener_reset(c, i, j);
        k++;
    }
    sh->sub_gen = up ? gen : 0;
    return k;
}

/* An admin call's connection. */
static int take_side(redlock_client *c, net_conn *conn)
{
    net_tag tag;
    const resp_reply *r;
    int st, k = 0;
    while ((st = net_conn_take(conn, &tag, &r, NULL)) != RESP_IDLE) {
        k++;
        admin_reply(c, tag, st, r);
        if (st == RESP_OK)
            net_conn_consume(conn);
    }
    return k;
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
            if (m->cl && m->cl->map_due && m->cl->map_due <= c->now && !m->cl->map_busy)
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
            if (m->sn)
                moved += sentinel_turn(c, i);
        }
        for (size_t s = 0; s < c->side.n; s++) {
            net_conn_pump(c->side.conn[s], c->now);
            moved += take_side(c, c->side.conn[s]);
        }
        moved += run_ready(c);
        moved += fire_timers(c);
        if (!moved)
            break;
    }
    return c->completed;
}

/* ---- the one loop ---- */

/* The client's pollfd set into c->pfd, grown to hold all of it; how many
 * entries, or -1 out of memory. */
static int fill_pollfds(redlock_client *c)
{
    int n = redlock_client_pollfds(c, c->pfd, (int)c->pfd_cap);
    if ((size_t)n <= c->pfd_cap)
        return n;
    struct pollfd *p = resp_realloc(c->pfd, (size_t)n * 2 * sizeof *p);
    if (!p)
        return -1;
    c->pfd = p;
    c->pfd_cap = (size_t)n * 2;
    return redlock_client_pollfds(c, c->pfd, (int)c->pfd_cap);
}

/* ms from now until `at` for poll(): rounded up; -1 for INT64_MAX. */
static int poll_ms(int64_t at, int64_t now)
{
    if (at == INT64_MAX)
        return -1;
    if (at <= now)
        return 0;
    int64_t ms = (at - now + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* The one connection of c->pfd[0..n) that poll() would wait for, when
 * there is one: n is 1, or the others are a Sentinel member's sentinel
 * connections with nothing asked (news from them may wait for a reply). */
static net_conn *sole_busy(const redlock_client *c, int n)
{
    net_conn *one = NULL;
    int sentinels = 0;
    for (size_t i = 0; i < c->n && n > 1; i++)
        sentinels |= c->nodes[i].sn != NULL;
    if (n > 1 && !sentinels)
        return NULL;
    for (int k = 0; k < n; k++) {
        net_conn *conn = conn_of_fd(c, c->pfd[k].fd);
        if (n > 1 && conn && sentinel_quiet(c, conn))
            continue;
        if (one || !conn)
            return NULL;
        one = conn;
    }
    return one;
}

/* Run the engine until done(c, arg) or until `deadline` (CLOCK_MONOTONIC
 * ns; INT64_MAX: none). Every blocking call and the admin calls wait here.
 * When one connection's reply is all there is to wait for, net.c may wait
 * for it in one recv() (net_conn_block decides). REDLOCK_OK once done;
 * REDLOCK_ERR_TIMEOUT at the deadline; REDLOCK_ERR_NOMEM or REDLOCK_ERR_IO
 * (poll failed, or nothing left to wait for) with c->errstr. */
static int run_until(redlock_client *c, int (*done)(const redlock_client *, const void *),
                     const void *arg, int64_t deadline)
{
    engine_pass(c, NULL, 0);
    while (!done(c, arg)) {
        int64_t now = net_now_ns();
        if (now >= deadline)
            return REDLOCK_ERR_TIMEOUT;
        int n = fill_pollfds(c);
        if (n < 0)
            return cerr(c, REDLOCK_ERR_NOMEM, "out of memory");
        int64_t due = next_due(c);
        if (due > deadline)
            due = deadline;
        if (n == 0 && due == INT64_MAX)
            return cerr(c, REDLOCK_ERR_IO, "internal error: nothing to wait for");
        net_conn *conn = sole_busy(c, n);
        if (conn && net_conn_block(conn, now, due)) {
            engine_pass(c, NULL, 0);
            continue;
        }
        if (poll(c->pfd, (nfds_t)n, poll_ms(due, now)) < 0 && errno != EINTR)
            return cerr(c, REDLOCK_ERR_IO, "poll: %s", strerror(errno));
        engine_pass(c, c->pfd, n);
    }
    return REDLOCK_OK;
}

/* ==== 4. Rounds on nodes ================================================================
 * A round sends one request (a script, or the probe) to a set of nodes at
 * once; each node's answer lands in l->res[i], and when the last node is
 * over the operation's phase is judged (advance, part 7). A node's answer
 * may first need another request: EVAL after NOSCRIPT, FCALL after NOPERM,
 * FUNCTION LOAD then FCALL again, a cluster redirect or retry (part 5).
 */

static int cluster_redirect(redlock *l, size_t i, const resp_reply *r); /* 5 */
static int cluster_retry(redlock *l, size_t i);
static size_t route(const redlock_client *c, size_t i, uint16_t slot);
static int sentinel_gate(redlock *l, size_t i); /* 5b */
static int sentinel_redirect(redlock *l, size_t i, const resp_reply *r);
static int sentinel_retry(redlock *l, size_t i, int status);

/* Fair mode: each waiter listens on a channel of its own, the prefix plus
 * its owner value (redlock:NAME: on plain nodes, {NAME}:freed: on a
 * cluster, in the lock's slot); a release tells only the next in line. */
static void waiter_prefix(const redlock *l, int sharded, const char **p, size_t *n)
{
    if (!l->k.own) { /* a handle that never waits on its own channel (nor do, with
                        fair off, the others of its name): the prefix is never used */
        *p = sharded ? l->k.freed : l->k.channel;
        *n = sharded ? l->k.klen : l->k.chlen;
        return;
    }
    *p = sharded ? l->k.own_s : l->k.own;
    *n = sharded ? l->k.klen + 1 : l->k.chlen + 1;
}

/* l's key {NAME}:SUFFIX for suffix K_*, written into the client's key
 * slots (each suffix its own slot, so one request's keys stand side by
 * side until it is encoded): a handle keeps only its name, {NAME}:freed
 * and its channel, not ten copies of its name. */
static const char *key_at(const redlock *l, int s)
{
    static const char suffix[KEY_SLOTS][SUFFIX_LEN + 1] = {
        SUFFIX_FENCE, SUFFIX_QUEUE, SUFFIX_ALIVE, SUFFIX_HOLDS,
        SUFFIX_READS, SUFFIX_TOKEN, SUFFIX_WWAIT};
    const lock_keys *k = &l->k;
    if (s == K_FREED)
        return k->freed;
    char *p = l->c->keys.buf + (size_t)s * l->c->keys.each;
    memcpy(p, k->freed, k->klen - SUFFIX_LEN);
    memcpy(p + k->klen - SUFFIX_LEN, suffix[s], SUFFIX_LEN + 1);
    return p;
}

/* What each script is given, one letter an argument: its KEYS (lower
 * case), then its ARGV (upper case).
 *   KEYS  n NAME; {NAME}:SUFFIX: f fence, q queue, a alive, h holds,
 *         r reads, t token, w wwait, d freed
 *   ARGV  V the owner value    T the TTL (ms)       F fencing on (1/0)
 *         R repair (1/0)       K the token to raise to or keep
 *         Q queued (1/0)       S the place in line  L a waiter's lease (ms)
 *         W the lease of a writer that waits for readers ("": none)
 *         M the permits        A fair mode (1/0)    C redlock:NAME
 *         P, X the prefix of a waiter's own channel on plain nodes, on
 *         a cluster (waiter_prefix) */
static const char *const script_spec[S_COUNT] = {
    [S_ACQUIRE] = "nfw" "VTFW",
    [S_FAIR] = "nfqaw" "VTFQSL",
    [S_DEQUEUE] = "qan" "VP",
    [S_DEQUEUE_SHARDED] = "qan" "VX",
    [S_RELEASE_FAIR] = "nqa" "VP",
    [S_RELEASE_FAIR_SHARDED] = "nqa" "VX",
    [S_RELEASE] = "n" "VC",
    [S_RELEASE_SHARDED] = "nd" "V",
    [S_REFRESH] = "n" "VTR",
    [S_RAISE] = "f" "K",
    [S_STATUS] = "nf",
    [S_WLEAVE] = "w" "V",
    [S_SEM_ACQUIRE] = "htfqa" "VTFMQSLA",
    [S_SEM_RELEASE] = "htqa" "VP",
    [S_SEM_RELEASE_SHARDED] = "htqa" "VX",
    [S_SEM_REFRESH] = "ht" "VTRMK",
    [S_SEM_DEQUEUE] = "qaht" "VP",
    [S_SEM_DEQUEUE_SHARDED] = "qaht" "VX",
    [S_RD_ACQUIRE] = "nrtfw" "VTF",
    [S_RD_RELEASE] = "nrtqa" "VPC",
    [S_RD_RELEASE_SHARDED] = "nrtqad" "VX",
    [S_RD_REFRESH] = "nrtw" "VTRK",
    [S_LIST] = "nhrtf",
};

/* The {NAME}:SUFFIX letters of script_spec, in K_* order. */
static const char key_letters[] = "fqahrtwd";

/* One argument of a script for l: its letter in script_spec. */
static const char *script_arg(const redlock *l, char code, size_t *len)
{
    const lock_keys *k = &l->k;
    const lock_wait *w = &l->wait;
    const char *v, *key = code ? strchr(key_letters, code) : NULL;
    if (key) {
        *len = k->klen;
        return key_at(l, (int)(key - key_letters));
    }
    switch (code) {
    case 'n':
        *len = k->namelen;
        return k->name;
    case 'V':
        *len = k->vlen;
        return k->value;
    case 'C':
        *len = k->chlen;
        return k->channel;
    case 'P':
    case 'X':
        waiter_prefix(l, code == 'X', &v, len);
        return v;
    case 'T': v = l->lease.ttl_str; break;
    case 'F': v = l->c->opts.fencing ? "1" : "0"; break;
    case 'R': v = l->op.repair ? "1" : "0"; break;
    case 'K': v = l->op.tok_str; break;
    case 'Q': v = w->queued ? "1" : "0"; break;
    case 'S': v = w->score_str; break;
    case 'L': v = w->lease_str; break;
    case 'W': v = w->writer_waits ? w->lease_str : ""; break;
    case 'M': v = k->permits_str; break;
    case 'A': v = l->c->opts.fair ? "1" : "0"; break;
    default: v = NULL; break; /* a letter script_spec should not hold */
    }
    *len = v ? strlen(v) : 0;
    return v;
}

/* The KEYS and ARGV of script id for l. Returns how many, or -1 (a letter
 * unknown: a bug the caller reports). */
static int script_args(const redlock *l, int id, const char **kv, size_t *kl)
{
    int a = 0;
    for (const char *p = script_spec[id]; *p; p++, a++)
        if (!(kv[a] = script_arg(l, *p, &kl[a])))
            return -1;
    return a;
}

/* The probe a waiter sends once subscribed (see subscribed, part 7): PTTL
 * of the lock; in fair mode, ZRANGE of the line's head. Returns argc. */
static int probe_args(const redlock *l, const char **argv, size_t *lens)
{
    if (!l->c->opts.fair) {
        argv[0] = "PTTL", lens[0] = 4;
        argv[1] = l->k.name, lens[1] = l->k.namelen;
        return 2;
    }
    argv[0] = "ZRANGE", lens[0] = 6;
    argv[1] = key_at(l, K_QUEUE), lens[1] = l->k.klen;
    argv[2] = "0", lens[2] = 1;
    argv[3] = "0", lens[3] = 1;
    return 4;
}

/* What request id is called in messages. */
static const char *req_name(const redlock_client *c, int id)
{
    if (id == S_PROBE)
        return c->opts.fair ? "probe (ZRANGE of the line)" : "probe (PTTL)";
    return scripts[id].name;
}

/* A waiter of l hears of its turn on a channel of its own (fair mode,
 * and a semaphore's waiters, whom a release tells one by one), else on
 * the lock's release channel with the other waiters of its name. */
static int listens_own(const redlock *l)
{
    return l->c->opts.fair || l->k.kind == LK_SEMAPHORE;
}

/* Node i's script for what l's operation does (verb: S_ACQUIRE, S_RELEASE,
 * S_REFRESH, S_DEQUEUE, S_STATUS; any other id is itself): by the kind of
 * handle; in fair mode; on a cluster, with wake-ups on shard channels. */
static int script_for(const redlock *l, size_t i, int verb)
{
    const redlock_client *c = l->c;
    const cluster *cl = c->nodes[i].cl;
    int sharded = cl && cl->sharded, kind = l->k.kind;
    switch (verb) {
    case S_ACQUIRE:
        if (kind != LK_LOCK)
            return kind == LK_SEMAPHORE ? S_SEM_ACQUIRE : S_RD_ACQUIRE;
        return c->opts.fair ? S_FAIR : S_ACQUIRE;
    case S_RELEASE:
        if (kind == LK_SEMAPHORE)
            return sharded ? S_SEM_RELEASE_SHARDED : S_SEM_RELEASE;
        if (kind == LK_SHARED)
            return sharded ? S_RD_RELEASE_SHARDED : S_RD_RELEASE;
        if (c->opts.fair)
            return sharded ? S_RELEASE_FAIR_SHARDED : S_RELEASE_FAIR;
        return sharded ? S_RELEASE_SHARDED : S_RELEASE;
    case S_REFRESH:
        return kind == LK_SEMAPHORE ? S_SEM_REFRESH : kind == LK_SHARED ? S_RD_REFRESH : S_REFRESH;
    case S_DEQUEUE:
        if (kind == LK_SEMAPHORE)
            return sharded ? S_SEM_DEQUEUE_SHARDED : S_SEM_DEQUEUE;
        return sharded ? S_DEQUEUE_SHARDED : S_DEQUEUE;
    case S_STATUS:
        return kind == LK_LOCK ? S_STATUS : S_LIST;
    }
    return verb;
}

/* Queue EVALSHA (or EVAL) of script id for l on shard j of node i, or
 * FCALL of its function where the node takes FCALL (or this request's
 * EVALSHA met NOPERM in auto mode); or the probe. owner NULL: a request
 * nobody waits for (EVAL, or FCALL: it cannot fall back). */
static int queue_script(redlock *l, size_t i, size_t j, int id, int eval, void *owner,
                        uint32_t kind, int64_t cap)
{
    redlock_client *c = l->c;
    net_conn *conn = c->nodes[i].sh[j].cmd;
    net_tag tag = {owner, l->op.seq, kind};
    const char *argv[3 + MAX_SCRIPT_ARGS];
    size_t lens[3 + MAX_SCRIPT_ARGS];
    if (id == S_PROBE) {
        if (owner)
            l->res[i].via.fcall = 0;
        return net_conn_request(conn, probe_args(l, argv, lens), argv, lens, tag, cap, c->now);
    }
    const script *s = &scripts[id];
    char nk[2] = {(char)('0' + s->nkeys), '\0'};
    int k = script_args(l, id, argv + 3, lens + 3);
    if (k != s->nkeys + s->nargs)
        return RESP_ERR_ARG; /* the table and script_args disagree: a bug */
    int fcall = c->nodes[i].fn.fcall || (owner && l->res[i].via.noperm);
    eval |= owner == NULL;
    if (fcall) {
        argv[0] = id == S_STATUS ? "FCALL_RO" : "FCALL";
        argv[1] = functions[id].name;
    } else {
        argv[0] = eval ? "EVAL" : "EVALSHA";
        argv[1] = eval ? s->lua : s->sha;
    }
    if (owner)
        l->res[i].via.fcall = (uint8_t)fcall;
    lens[0] = strlen(argv[0]);
    lens[1] = strlen(argv[1]);
    argv[2] = nk;
    lens[2] = 1;
    return net_conn_request(conn, 3 + k, argv, lens, tag, cap, c->now);
}

/* A request nobody waits for: l's script id on node i, routed by slot
 * (the release of a cancelled acquire, leaving a fair queue). */
static void queue_orphan(redlock *l, size_t i, int id)
{
    id = script_for(l, i, id);
    if (queue_script(l, i, route(l->c, i, l->k.slot), id, 1, NULL, (uint32_t)id, 0) == RESP_OK)
        l->c->obs.node[i].requests++;
}

/* Node i failed in this round; the lowest node's error explains the
 * failure. */
static void node_error(redlock *l, size_t i, int status, int transient, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void node_error(redlock *l, size_t i, int status, int transient, const char *fmt, ...)
{
    nres *nd = &l->res[i];
    nd->state = N_ERR;
    nd->status = (uint8_t)status;
    nd->transient = (uint8_t)transient;
    l->c->obs.node[i].errors[status > 0 && status < REDLOCK_STATS_STATUSES ? status : 0]++;
    if (i < l->nerr_idx && text_of(l)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->text->nerr, sizeof l->text->nerr, fmt, ap);
        va_end(ap);
        l->nerr_idx = i;
    }
}

/* The function library's text, made once per client when first needed. */
static int library_code(redlock_client *c)
{
    if (c->lib_code)
        return RESP_OK;
    size_t n = library_text(NULL, 0);
    c->lib_code = resp_alloc(n + 1);
    if (!c->lib_code)
        return RESP_ERR_NOMEM;
    library_text(c->lib_code, n + 1);
    c->lib_len = n;
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
    const char *argv[3] = {"FUNCTION", "LOAD", c->lib_code};
    size_t lens[3] = {8, 4, c->lib_len};
    net_tag tag = {l, l->op.seq, K_LOAD};
    return net_conn_request(c->nodes[i].sh[route(c, i, l->k.slot)].cmd, 3, argv, lens, tag,
                            l->op.cap, c->now);
}

static int writes(int id)
{
    return id == S_ACQUIRE || id == S_FAIR || id == S_REFRESH || id == S_RAISE;
}

/* ---- the restart guard ----
 * A server that restarted without its data has forgotten the locks it
 * granted; until one lease has passed, its yes may hand out a lock that
 * another owner still holds on other nodes. So each command connection
 * learns its server's age (INFO server) before its first acquire, and an
 * acquire counts a young node's yes as "held" (part 7: acquire_judge). */

/* The value of `field` in INFO's text (lines of field:value). */
static int info_field(const resp_reply *r, const char *field, const char **v, size_t *vlen)
{
    size_t fl = strlen(field);
    const char *p = r->str, *end = r->str + r->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > fl && memcmp(p, field, fl) == 0 && p[fl] == ':') {
            *v = p + fl + 1;
            *vlen = (size_t)(eol - *v);
            if (*vlen && (*v)[*vlen - 1] == '\r')
                (*vlen)--;
            return 1;
        }
        p = eol + 1;
    }
    return 0;
}

/* Before an acquire on shard j of node i: ask its server's age when this
 * connection has not told it yet (a new or reconnecting connection takes
 * the INFO before the acquire: replies come in order). */
static void age_ask(redlock_client *c, size_t i, size_t j)
{
    shard *sh = &c->nodes[i].sh[j];
    static const char *const argv[2] = {"INFO", "server"};
    static const size_t lens[2] = {4, 6};
    if (!c->guard || sh->age.off || sh->age.asking ||
        (net_conn_ready(sh->cmd) && sh->age.gen == net_conn_generation(sh->cmd)))
        return;
    net_tag tag = {sh, 0, K_AGE};
    if (net_conn_request(sh->cmd, 2, argv, lens, tag, 0, c->now) == RESP_OK)
        sh->age.asking = 1;
}

/* INFO server from shard j of node i: when it started (whole seconds of
 * uptime: rounded toward young) and its run id. A refusal (an ACL without
 * INFO) turns the guard off there, said once. */
static void age_reply(redlock_client *c, size_t i, size_t j, int status, const resp_reply *r)
{
    shard *sh = &c->nodes[i].sh[j];
    const char *v;
    size_t n;
    sh->age.asking = 0;
    if (status != RESP_OK)
        return; /* asked again before the next acquire */
    if (r->type != RESP_BULK ||
        !info_field(r, "uptime_in_seconds", &v, &n)) {
        sh->age.off = 1;
        cerr(c, REDLOCK_ERR_SERVER, "%s: restart guard off there: INFO server %s: %.*s",
             net_conn_desc(sh->cmd), r->type == RESP_ERROR ? "refused" : "has no uptime",
             (int)(r->len > 100 ? 100 : r->len), r->str);
        c->obs.node[i].guard_off++;
        obs_event(c, (obs_at){i, sh->cmd, NULL, 0}, REDLOCK_EVENT_GUARD_OFF, REDLOCK_ERR_SERVER,
                  0, "%s", c->errstr);
        return;
    }
    int64_t up = 0;
    for (size_t k = 0; k < n && k < 12 && v[k] >= '0' && v[k] <= '9'; k++)
        up = up * 10 + (v[k] - '0');
    sh->age.started_at = c->now - up * 1000000000;
    sh->age.gen = net_conn_generation(sh->cmd);
    if (info_field(r, "run_id", &v, &n) && n < sizeof sh->age.run_id) {
        memcpy(sh->age.run_id, v, n);
        sh->age.run_id[n] = '\0';
    }
}

/* How long the server behind node i's answer is still too young for l's
 * lease (ms, at least 1), or 0 when its yes counts. Its age unknown on
 * this connection (it reconnected since): young, and asked again. */
static int64_t young_ms(const redlock *l, size_t i)
{
    const redlock_client *c = l->c;
    const shard *sh = &c->nodes[i].sh[l->res[i].route.shard];
    if (!c->guard || sh->age.off)
        return 0;
    if (sh->age.gen != net_conn_generation(sh->cmd))
        return 1;
    int64_t left = sh->age.started_at + ms_ns(l->lease.ttl) + drift_ns(l) - c->now;
    return left > 0 ? (left + 999999) / 1000000 : 0;
}

/* Send node i's request of the round: to the shard serving the lock's
 * slot, or after ASKING to shard `ask`; with wait_replicas, a WAIT right
 * behind a write on the same connection. A request sent again (a cluster
 * redirect or retry) waits no longer than the node's patience for the
 * round, never a fresh io_timeout_ms of its own. */
static int send_request(redlock *l, size_t i, int ask)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    if (c->nodes[i].sn) { /* a Sentinel member: only to a confirmed master */
        int gate = sentinel_gate(l, i);
        if (gate != 0)
            return gate == 1 ? REDLOCK_OK : gate;
    }
    size_t j = ask >= 0 ? (size_t)ask : route(c, i, l->k.slot);
    net_conn *conn = c->nodes[i].sh[j].cmd;
    int64_t cap = nd->via.attempt && nd->route.until ? nd->route.until : l->op.cap;
    if (nd->via.id == S_ACQUIRE || nd->via.id == S_FAIR)
        age_ask(c, i, j);
    if (ask >= 0) {
        static const char *const asking[1] = {"ASKING"};
        static const size_t asking_len[1] = {6};
        net_tag none = {NULL, 0, 0};
        if (net_conn_request(conn, 1, asking, asking_len, none, cap, c->now) != RESP_OK)
            return REDLOCK_ERR_NOMEM;
    }
    nd->via.attempt++;
    int rc = queue_script(l, i, j, nd->via.id, nd->via.eval, l, KIND(nd->via.id, nd->via.attempt),
                          cap);
    if (rc != RESP_OK)
        return rc;
    c->obs.node[i].requests++;
    nd->inflight++;
    nd->route.shard = (uint16_t)j;
    if (c->opts.wait_replicas > 0 && writes(nd->via.id)) {
        char num[16], ms[16];
        int wait_ms = c->opts.io_timeout_ms / 2; /* leaves time for the reply */
        const char *argv[3] = {"WAIT", num, ms};
        size_t lens[3] = {4, (size_t)snprintf(num, sizeof num, "%d", c->opts.wait_replicas),
                          (size_t)snprintf(ms, sizeof ms, "%d", wait_ms > 0 ? wait_ms : 1)};
        net_tag tag = {l, l->op.seq, KIND(K_WAIT, nd->via.attempt)};
        if (net_conn_request(conn, 3, argv, lens, tag, cap, c->now) != RESP_OK)
            return REDLOCK_ERR_NOMEM;
        nd->inflight++;
    }
    return REDLOCK_OK;
}

/* Node i's part of the round may be over: count it once. */
static void settle(redlock *l, size_t i)
{
    nres *nd = &l->res[i];
    if (nd->final || nd->inflight || nd->route.retry_at || nd->state == N_PENDING)
        return;
    nd->final = 1;
    if (--l->op.outstanding == 0)
        advance(l);
}

/* Send script id to the nodes in mask, all at once, as phase `phase` of
 * l's operation. Requests never wait past cap (0: no cap beyond
 * io_timeout_ms). */
static void round_start(redlock *l, int phase, int id, uint32_t mask, int64_t cap)
{
    redlock_client *c = l->c;
    int64_t patience = c->now + ms_ns(c->opts.io_timeout_ms + c->opts.connect_timeout_ms);
    l->op.phase = (uint8_t)phase;
    l->op.seq++;
    l->op.outstanding = 0;
    l->op.cap = cap;
    l->nerr_idx = c->n;
    if (l->text)
        l->text->nerr[0] = '\0';
    for (size_t i = 0; i < c->n; i++) {
        nres *nd = &l->res[i];
        memset(nd, 0, offsetof(nres, hold)); /* the hold marks outlive a round */
        nd->state = N_SKIP;
        nd->final = 1;
        if (!(mask & bit(i)))
            continue;
        nd->state = N_PENDING;
        nd->final = 0;
        nd->via.id = (uint8_t)script_for(l, i, id);
        nd->route.until = cap && cap < patience ? cap : patience;
        l->op.outstanding++;
        int rc = send_request(l, i, -1);
        if (rc != RESP_OK) { /* (a Sentinel member's error may be transient) */
            node_error(l, i, rc, nd->transient, "%s: cannot queue the %s request: %s",
                       node_desc(c, i), req_name(c, id), redlock_strerror(rc));
            nd->final = 1;
            l->op.outstanding--;
        }
    }
    l->op.round_at = l->op.outstanding ? c->now : 0;
    if (l->op.outstanding == 0)
        mark_ready(l);
}

/* During a round the lock's timer is the earliest retry due (and, for a
 * keepalive refresh, the end of the validity). */
static void timer_rearm_round(redlock *l)
{
    int64_t at = l->op.kind == OP_KEEPALIVE ? l->lease.valid_until : 0;
    for (size_t i = 0; i < l->c->n; i++) {
        int64_t r = l->res[i].route.retry_at;
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
        if (!nd->route.retry_at || nd->route.retry_at > c->now || nd->final)
            continue;
        nd->route.retry_at = 0;
        int rc = send_request(l, i, -1);
        if (rc != REDLOCK_OK) {
            node_error(l, i, rc, nd->transient, "%s: cannot queue a request: %s",
                       node_desc(c, i), redlock_strerror(rc));
            settle(l, i);
        }
    }
    if (l->op.kind != OP_NONE && l->op.outstanding > 0)
        timer_rearm_round(l);
}

/* ---- decoding a node's reply ---- */

/* A counter sent as a bulk string (nil, or no digits: 0). */
static uint64_t bulk_u64(const resp_reply *r)
{
    uint64_t v = 0;
    for (size_t k = 0; r->type == RESP_BULK && k < r->len && k < 20; k++) {
        unsigned d = (unsigned char)r->str[k] - (unsigned)'0';
        if (d > 9)
            break;
        v = v * 10 + d;
    }
    return v;
}

static int is_value(const redlock *l, const char *s, size_t n)
{
    return n == l->k.vlen && memcmp(s, l->k.value, n) == 0;
}

/* STATUS: {value or nil, pttl, counter or nil}. */
static int decode_status(nres *nd, const resp_reply *r, const redlock *l)
{
    if (r->type != RESP_ARRAY || r->n != 3 || r[2].type != RESP_INTEGER ||
        (r[1].type != RESP_BULK && r[1].type != RESP_NIL) ||
        (r[3].type != RESP_BULK && r[3].type != RESP_NIL))
        return -1;
    nd->ans.vhash = 0;
    nd->ans.ours = 0;
    if (r[1].type == RESP_BULK) {
        nd->ans.vhash = hash_bytes(r[1].str, r[1].len);
        nd->ans.ours = (uint8_t)is_value(l, r[1].str, r[1].len);
    }
    nd->ans.code = r[2].integer;
    nd->ans.val = (long long)bulk_u64(&r[3]);
    return 0;
}

/* One holder listed by a node, into redlock_holders' list: counted once
 * per node that lists it, with the least TTL and the highest token. */
static void list_add(redlock *l, const char *v, size_t len, int shared, int64_t ttl,
                     uint64_t fence)
{
    redlock_holder *o = l->op.list.out;
    size_t cut = len < sizeof o->value - 1 ? len : sizeof o->value - 1;
    for (size_t k = 0; o && k < l->op.list.n; k++, o++) {
        if (o->shared != shared || strlen(o->value) != cut || memcmp(o->value, v, cut) != 0)
            continue;
        o->nodes++;
        if (ttl >= 0 && (o->ttl_ms < 0 || ttl < o->ttl_ms))
            o->ttl_ms = ttl;
        if (fence > o->fence)
            o->fence = fence;
        return;
    }
    if (!o || l->op.list.n == l->op.list.cap)
        return;
    memcpy(o->value, v, cut);
    o->value[cut] = '\0';
    o->shared = shared;
    o->ttl_ms = ttl;
    o->fence = fence;
    o->nodes = 1;
    l->op.list.n++;
}

/* LIST: {exclusive holder or nil, its pttl, {value, ms left, token, ...},
 * permit count or nil, counter or nil}: our lease left (-2: we hold
 * nothing), the counter, how many hold it; each holder into the list of
 * redlock_holders when one is asked for. */
static int decode_list(nres *nd, const resp_reply *r, redlock *l)
{
    const resp_reply *holder = r + 1, *pttl = r + 2, *set = r + 3;
    if (r->type != RESP_ARRAY || r->n != 5 || (holder->type != RESP_BULK &&
        holder->type != RESP_NIL) || pttl->type != RESP_INTEGER || set->type != RESP_ARRAY ||
        set->n % 3 != 0)
        return -1;
    const resp_reply *limit = set + set->span, *counter = limit + limit->span;
    if ((limit->type != RESP_BULK && limit->type != RESP_NIL) ||
        (counter->type != RESP_BULK && counter->type != RESP_NIL))
        return -1;
    for (const resp_reply *e = set + 1; e < limit; e += 3)
        if (e[0].type != RESP_BULK || e[1].type != RESP_INTEGER || e[2].type != RESP_INTEGER)
            return -1;
    nd->ans.val = (long long)bulk_u64(counter);
    nd->ans.code = -2;
    nd->ans.ours = 0;
    nd->ans.count = set->n / 3;
    if (holder->type == RESP_BULK && !(holder->len == sizeof READERS_MARK - 1 &&
                                       memcmp(holder->str, READERS_MARK, holder->len) == 0)) {
        nd->ans.count++;
        list_add(l, holder->str, holder->len, 0, pttl->integer, (uint64_t)nd->ans.val);
        if (is_value(l, holder->str, holder->len))
            nd->ans.ours = 1, nd->ans.code = pttl->integer;
    }
    for (const resp_reply *e = set + 1; e < limit; e += 3) {
        list_add(l, e[0].str, e[0].len, 1, e[1].integer, (uint64_t)e[2].integer);
        if (is_value(l, e[0].str, e[0].len))
            nd->ans.ours = 1, nd->ans.code = e[1].integer;
    }
    return 0;
}

/* One decoder per reply shape: an integer, a pair of integers, the fair
 * probe's head of the line, STATUS. */
static int decode(nres *nd, int shape, const resp_reply *r, redlock *l)
{
    switch (shape) {
    case R_INT:
        if (r->type != RESP_INTEGER)
            return -1;
        nd->ans.code = r->integer;
        nd->ans.val = 0;
        return 0;
    case R_PAIR:
        if (r->type != RESP_ARRAY || r->n != 2 || r[1].type != RESP_INTEGER ||
            r[2].type != RESP_INTEGER)
            return -1;
        nd->ans.code = r[1].integer;
        nd->ans.val = r[2].integer;
        return 0;
    case R_HEAD: /* the fair probe as PTTL would say it: -2 we may go, -1 another is first */
        if (r->type != RESP_ARRAY || r->n > 1 || (r->n == 1 && r[1].type != RESP_BULK))
            return -1;
        nd->ans.code = r->n == 1 && !is_value(l, r[1].str, r[1].len) ? -1 : -2;
        nd->ans.val = 0;
        return 0;
    case R_LIST:
        return decode_list(nd, r, l);
    }
    return decode_status(nd, r, l);
}

/* ---- a node's answer ---- */

/* The reply to a WAIT behind node i's write: too few replicas fail the
 * node (its write stays: a failed acquire releases it there). */
static void on_wait(redlock *l, size_t i, unsigned attempt, int status, const resp_reply *r)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    nd->inflight--;
    if (attempt != nd->via.attempt || nd->state != N_OK ||
        (nd->ans.code != 1 && nd->ans.code != 2 && nd->via.id != S_RAISE))
        return;
    if (status == RESP_OK && r->type == RESP_INTEGER && r->integer >= c->opts.wait_replicas)
        return;
    nd->hold.landed = 1;
    if (status != RESP_OK)
        node_error(l, i, status, 1, "%s: WAIT: %s", node_desc(c, i),
                   net_conn_errstr(c->nodes[i].sh[nd->route.shard].cmd));
    else
        node_error(l, i, REDLOCK_ERR_TIMEOUT, 1,
                   "%s: only %lld of %d replicas acknowledged the write in time (wait_replicas)",
                   node_desc(c, i), r->type == RESP_INTEGER ? r->integer : -1LL,
                   c->opts.wait_replicas);
}

/* What FUNCTION LOAD answered on node i, kept for the FCALL queued behind it. */
static void load_answered(redlock_client *c, size_t i, int status, const resp_reply *r)
{
    char *e = c->nodes[i].fn.load_err;
    size_t cap = sizeof c->nodes[i].fn.load_err;
    if (status != RESP_OK)
        snprintf(e, cap, "%s", redlock_strerror(status));
    else if (r->type == RESP_ERROR)
        snprintf(e, cap, "%.*s", (int)(r->len < cap ? r->len : cap - 1), r->str);
    else
        e[0] = '\0';
}

/* FCALL found no function even after our FUNCTION LOAD: say why, and how
 * an administrator loads the library. */
static void function_missing(redlock *l, size_t i, int id)
{
    redlock_client *c = l->c;
    const char *le = c->nodes[i].fn.load_err;
    char why[128];
    if (strncmp(le, "NOPERM", 6) == 0)
        snprintf(why, sizeof why, "this user may not load it: NOPERM");
    else if (strncmp(le, "ERR Library", 11) == 0 && strstr(le, "already exists"))
        snprintf(why, sizeof why,
                 "a library of that name with other code is there, never replaced");
    else
        snprintf(why, sizeof why, "FUNCTION LOAD: %s", le[0] ? le : "no error, yet no function");
    if (l->res[i].via.noperm)
        node_error(l, i, REDLOCK_ERR_SERVER, 0,
                   "%s: NOPERM: this user may not run EVALSHA, and the function library "
                   FUNCTIONS_LIBRARY " for FCALL is not loaded there (%s); load it with "
                   "`redlock functions load -u URL` or `redis-cli -x FUNCTION LOAD < "
                   FUNCTIONS_FILE "`",
                   node_desc(c, i), why);
    else
        node_error(l, i, REDLOCK_ERR_SERVER, 0,
                   "%s: function %s not found: the library " FUNCTIONS_LIBRARY
                   " is not loaded there (%s); load it with `redlock functions load -u URL` or "
                   "`redis-cli -x FUNCTION LOAD < " FUNCTIONS_FILE "`",
                   node_desc(c, i), functions[id].name, why);
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
    if (!nd->via.eval && error_starts(r, "NOSCRIPT")) {
        nd->via.eval = 1; /* not cached there (restart, SCRIPT FLUSH): EVAL loads it */
        c->obs.node[i].script_loads++;
        obs_event(c, (obs_at){i, NULL, l, 0}, REDLOCK_EVENT_SCRIPTS_LOADED, REDLOCK_OK, 0,
                  "NOSCRIPT: EVAL of the %s script loads it again", scripts[id].name);
        rc = send_request(l, i, -1);
    } else if (!nd->via.fcall && !nd->via.noperm && c->opts.scripts == REDLOCK_SCRIPTS_AUTO &&
               error_starts(r, "NOPERM")) {
        nd->via.noperm = 1; /* EVAL is not permitted there: FCALL, if the library is loaded */
        what = "function";
        rc = send_request(l, i, -1);
    } else if (nd->via.fcall && error_starts(r, "ERR Function not found")) {
        if (nd->via.loaded) {
            function_missing(l, i, id);
            return FB_FAILED;
        }
        nd->via.loaded = 1; /* not there (never loaded, a restart, FUNCTION FLUSH): load it */
        what = "function library";
        c->obs.node[i].function_loads++;
        obs_event(c, (obs_at){i, NULL, l, 0}, REDLOCK_EVENT_SCRIPTS_LOADED, REDLOCK_OK, 1,
                  "function %s not found: FUNCTION LOAD of " FUNCTIONS_LIBRARY,
                  functions[id].name);
        rc = queue_load(l, i);
        if (rc == RESP_OK)
            rc = send_request(l, i, -1);
    } else {
        return FB_NONE;
    }
    if (rc == RESP_OK)
        return FB_SENT;
    node_error(l, i, rc, 0, "%s: cannot queue the %s %s: %s", node_desc(c, i), scripts[id].name,
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
 * else the node's error, quoted whole if it fits the message. 1 when the
 * request went out again (or will). */
static int error_reply(redlock *l, size_t i, const resp_reply *r)
{
    nres *nd = &l->res[i];
    if (cluster_redirect(l, i, r) || sentinel_redirect(l, i, r))
        return 1;
    int busy = starts_with(r, "TRYAGAIN") || starts_with(r, "CLUSTERDOWN");
    if (nd->state == N_PENDING && busy && cluster_retry(l, i))
        return 1;
    if (nd->state == N_PENDING) {
        const char *desc = node_desc(l->c, i);
        const char *pre = nd->via.noperm ? "EVALSHA: NOPERM; FCALL: " : "", *more;
        size_t used = strlen(desc) + 2 + strlen(pre) + 1; /* ": " and the NUL */
        size_t room = sizeof ((lock_text *)0)->nerr;
        int n = words_within(r->str, r->len, room > used ? room - used : 0, &more);
        node_error(l, i, starts_with(r, "NOAUTH") ? REDLOCK_ERR_AUTH : REDLOCK_ERR_SERVER,
                   busy || transient_error(r), "%s: %s%.*s%s", desc, pre, n, r->str, more);
    }
    return 0;
}

/* Node i's request failed (net.c says why). One that ran into the round's
 * cap says which limit that was: the lease (an acquire or refresh is
 * worth nothing after it) or the wait. */
static void request_failed(redlock *l, size_t i, int status)
{
    redlock_client *c = l->c;
    const char *why = net_conn_errstr(c->nodes[i].sh[l->res[i].route.shard].cmd);
    int transient = status == REDLOCK_ERR_IO || status == REDLOCK_ERR_TIMEOUT;
    if (status != REDLOCK_ERR_TIMEOUT || !l->op.cap || c->now < l->op.cap)
        node_error(l, i, status, transient, "%s", why);
    else if (l->op.phase == PH_PROBE)
        node_error(l, i, status, transient, "%s: no reply before the wait ran out",
                   node_desc(c, i));
    else
        node_error(l, i, status, transient,
                   "%s: no reply within the lock's TTL of %" PRIu32 " ms (an answer after it "
                   "would hold nothing)",
                   node_desc(c, i), l->lease.ttl);
}

/* A node's answer to l's current round: a reply, or a failure status.
 * Returns -1 when the reply had the wrong shape: the connection is out of
 * step and must not be used further. */
static int on_result(redlock *l, size_t i, uint32_t kind, int status, const resp_reply *r)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
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
    nd->inflight--;
    if (nd->state != N_PENDING) {
        settle(l, i);
        return 0;
    }
    if (status != RESP_OK) {
        if (!cluster_retry(l, i) && !sentinel_retry(l, i, status))
            request_failed(l, i, status);
    } else if ((fb = script_fallback(l, i, id, r)) != FB_NONE) {
        if (fb == FB_SENT)
            return 0;
    } else if (r->type == RESP_ERROR) {
        if (error_reply(l, i, r))
            return 0;
    } else if (decode(nd, id != S_PROBE ? scripts[id].shape : c->opts.fair ? R_HEAD : R_INT, r,
                      l) != 0) {
        node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: unexpected reply to the %s",
                   node_desc(c, i), req_name(c, id));
        bad = -1;
    } else {
        nd->state = N_OK;
        obs_rtt(l, i);
        if (nd->via.fcall)
            c->nodes[i].fn.fcall = 1; /* auto mode: FCALL works where EVALSHA may not run */
        if (id == S_ACQUIRE || id == S_FAIR)
            nd->ans.young = young_ms(l, i);
    }
    settle(l, i);
    return bad;
}

/* ---- what the nodes said ---- */

typedef struct tally {
    size_t ok, err;
    int transient; /* every error is worth waiting out */
} tally;

static tally count_nodes(const nres *res, size_t n)
{
    tally t = {0, 0, 1};
    for (size_t i = 0; i < n; i++) {
        if (res[i].state == N_OK)
            t.ok++;
        else if (res[i].state == N_ERR) {
            t.err++;
            if (!res[i].transient)
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
    char first[sizeof ((lock_text *)0)->nerr];
    snprintf(first, sizeof first, "%s", l->text && l->text->nerr[0] ? l->text->nerr : "");
    if (c->n == 1)
        return lerr(l, st, "%s '%s': %s", op, shown(l, nm, sizeof nm), first[0] ? first : "failed");
    return lerr(l, st, "%s '%s': only %zu of %zu nodes answered (quorum %zu); first error: %s", op,
                shown(l, nm, sizeof nm), t.ok, c->n, c->quorum, first[0] ? first : "none");
}

/* Nodes where this operation's write holds the lock: to release on failure. */
static uint32_t taken_nodes(const redlock *l)
{
    uint32_t m = 0;
    for (size_t i = 0; i < l->c->n; i++)
        if (l->res[i].hold.acq || l->res[i].hold.landed)
            m |= bit(i);
    return m;
}

/* ==== 5. Redis Cluster ==================================================================
 * A cluster member routes each lock by its key's hash slot to the primary
 * serving it (one shard per primary met so far). MOVED updates the slot
 * map and sends the request there; ASK sends it once to the importing
 * node after ASKING; TRYAGAIN, CLUSTERDOWN and a lost primary are retried
 * after a short wait while the request's patience lasts. The whole map
 * (CLUSTER SLOTS) is read at the first turn and again after a MOVED.
 */

static void timer_rearm_round(redlock *l); /* 4 */

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

/* The hash tag of a key: what is inside its first {...} when that holds
 * something. 1 and *tag, *tlen; 0 when there is none. */
static int hash_tag(const char *k, size_t n, const char **tag, size_t *tlen)
{
    const char *open = memchr(k, '{', n);
    if (!open)
        return 0;
    const char *close = memchr(open + 1, '}', n - (size_t)(open + 1 - k));
    if (!close || close == open + 1)
        return 0;
    *tag = open + 1;
    *tlen = (size_t)(close - open - 1);
    return 1;
}

/* The hash slot of a key: its hash tag's, or the whole key's. */
static uint16_t key_slot(const char *k, size_t n)
{
    const char *tag;
    size_t tlen;
    if (hash_tag(k, n, &tag, &tlen))
        return (uint16_t)(crc16(tag, tlen) & (NSLOTS - 1));
    return (uint16_t)(crc16(k, n) & (NSLOTS - 1));
}

/* The shard of node i that serves slot (the first seed while unknown). */
static size_t route(const redlock_client *c, size_t i, uint16_t slot)
{
    const cluster *cl = c->nodes[i].cl;
    if (!cl || cl->slots[slot] < 0)
        return 0;
    return (size_t)cl->slots[slot];
}

static int add_shard(redlock_client *c, size_t i, const net_url *u)
{
    node *m = &c->nodes[i];
    shard *sh = &m->sh[m->nsh];
    memset(sh, 0, sizeof *sh);
    if (net_conn_new(&sh->cmd, u, &m->opts) != RESP_OK)
        return -1;
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
    if (m->nsh == MAX_SHARDS || net_url_at(&u, &m->cl->url, host, hl, port, pl) != RESP_OK)
        return -1;
    int j = add_shard(c, i, &u);
    memset(u.password, 0, sizeof u.password);
    return j;
}

/* "MOVED 3999 10.0.0.5:6380" or "ASK ...", answered by shard `asked` of
 * node i: the slot, and the shard at the new address (made if new). The
 * host may be an IPv6 address (the port follows the last ':') or empty
 * (the host that answered). 0, or -1 when malformed or the address is bad. */
static int redirect_target(redlock_client *c, size_t i, size_t asked, const resp_reply *r,
                           unsigned *slot, int *shard)
{
    const char *p = r->str, *end = r->str + r->len;
    unsigned v = 0;
    int digits = 0;
    while (p < end && *p != ' ')
        p++; /* the word: MOVED or ASK */
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
    *shard = shard_at(c, i, asked, addr, (size_t)(colon - addr), colon + 1,
                      (size_t)(end - colon - 1));
    return *shard < 0 ? -1 : 0;
}

static void map_soon(redlock_client *c, size_t i)
{
    cluster *cl = c->nodes[i].cl;
    if (cl && (!cl->map_due || cl->map_due > c->now))
        cl->map_due = c->now;
}

/* A MOVED answer (to a script or a subscribe): slot now lives on shard j.
 * Other slots may have moved with it: read the map again soon. */
static void slot_moved(redlock_client *c, size_t i, unsigned slot, int j)
{
    cluster *cl = c->nodes[i].cl;
    cl->slots[slot] = (int16_t)j;
    cl->moves++;
    map_soon(c, i);
}

/* A cluster that cannot serve node i's request now (a primary gone, a
 * failover, a slot in migration): ask for the slot map and send again
 * after a short wait, while the request's patience lasts. 1 when a retry
 * is scheduled. */
static int cluster_retry(redlock *l, size_t i)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    int64_t wait = ms_ns(10) << (nd->route.tries < 4 ? nd->route.tries : 4);
    if (!c->nodes[i].cl || ++nd->route.tries > MAX_TRIES || c->now + wait >= nd->route.until)
        return 0;
    map_soon(c, i);
    nd->route.retry_at = c->now + wait;
    timer_rearm_round(l);
    return 1;
}

/* -MOVED (the slot has a new owner: remember it, send there) and -ASK
 * (one request goes to the importing node, after ASKING). 1 when the
 * request went out again. */
static int cluster_redirect(redlock *l, size_t i, const resp_reply *r)
{
    redlock_client *c = l->c;
    nres *nd = &l->res[i];
    int moved = starts_with(r, "MOVED "), ask = starts_with(r, "ASK ");
    unsigned slot;
    int j;
    if (!c->nodes[i].cl || !(moved || ask))
        return 0;
    if (redirect_target(c, i, nd->route.shard, r, &slot, &j) != 0 || ++nd->route.tries > MAX_TRIES) {
        node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: %s, after %d redirects: %.*s",
                   node_desc(c, i),
                   nd->route.tries <= MAX_TRIES ? "a redirect to a bad address or too many nodes"
                                                : "too many redirects",
                   nd->route.tries - 1, (int)(r->len > 100 ? 100 : r->len), r->str);
        return 0;
    }
    obs_redirect(c, i, nd->route.shard, l, ask, slot, r);
    if (moved)
        slot_moved(c, i, slot, j);
    return send_request(l, i, ask ? j : -1) == REDLOCK_OK;
}

/* ---- the slot map ---- */

/* Ask one of cluster node i's shards (in turn) for CLUSTER SLOTS. */
static void map_ask(redlock_client *c, size_t i)
{
    node *m = &c->nodes[i];
    static const char *const argv[2] = {"CLUSTER", "SLOTS"};
    static const size_t lens[2] = {7, 5};
    size_t j = m->cl->map_next++ % m->nsh;
    net_tag tag = {m, 0, K_SLOTS};
    m->cl->map_due = 0;
    if (net_conn_request(m->sh[j].cmd, 2, argv, lens, tag, 0, c->now) != RESP_OK) {
        m->cl->map_due = c->now + ms_ns(100);
        return;
    }
    m->cl->map_busy = 1;
    m->cl->map_moves = m->cl->moves;
}

/* One CLUSTER SLOTS entry: {start, end, {host, port, ...} (the primary),
 * replicas...}. 0, or -1 if malformed. */
static int map_entry(redlock_client *c, size_t i, size_t asked, const resp_reply *e)
{
    cluster *cl = c->nodes[i].cl;
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
        cl->scratch[s] = (int16_t)j;
    return 0;
}

/* The CLUSTER SLOTS reply from shard j of node i. A map that a MOVED
 * overtook meanwhile is dropped (and asked for again): it may be older
 * than what the MOVED said. */
static void map_reply(redlock_client *c, size_t i, size_t j, int status, const resp_reply *r)
{
    cluster *cl = c->nodes[i].cl;
    cl->map_busy = 0;
    if (status != RESP_OK || r->type != RESP_ARRAY || cl->moves != cl->map_moves) {
        cl->map_due = c->now + ms_ns(status != RESP_OK || r->type != RESP_ARRAY ? 100 : 0);
        return;
    }
    for (size_t s = 0; s < NSLOTS; s++)
        cl->scratch[s] = -1;
    const resp_reply *e = r + 1;
    for (uint32_t k = 0; k < r->n; k++, e += e->span)
        if (map_entry(c, i, j, e) != 0) {
            cl->map_due = c->now + ms_ns(100); /* try another node */
            return;
        }
    obs_slot_map(c, i, j);
    memcpy(cl->slots, cl->scratch, NSLOTS * sizeof *cl->slots);
}

static int map_known(const cluster *cl)
{
    for (size_t s = 0; s < NSLOTS; s++)
        if (cl->slots[s] >= 0)
            return 1;
    return 0;
}

/* Node i as a cluster, from its URL: connection limits for CLUSTER SLOTS,
 * an empty slot map to fill at the first turn, a shard per seed. -1 out of
 * memory. */
static int cluster_new(redlock_client *c, size_t i, const net_url *u, const net_seeds *seeds)
{
    node *m = &c->nodes[i];
    cluster *cl = m->cl = resp_alloc_array(1, sizeof *cl);
    if (!cl)
        return -1;
    /* CLUSTER SLOTS: an entry per slot range, nested three deep */
    m->opts.limits.max_array = NSLOTS;
    m->opts.max_elems = (size_t)NSLOTS * 16;
    if (m->opts.max_reply < ((size_t)4 << 20))
        m->opts.max_reply = (size_t)4 << 20;
    cl->sharded = 1;
    cl->url = *u;
    cl->map_due = 1; /* at the first turn of the engine */
    cl->slots = resp_alloc_array(NSLOTS, sizeof *cl->slots);
    cl->scratch = resp_alloc_array(NSLOTS, sizeof *cl->scratch);
    m->sh = resp_alloc_array(MAX_SHARDS, sizeof *m->sh);
    if (!cl->slots || !cl->scratch || !m->sh)
        return -1;
    for (size_t s = 0; s < NSLOTS; s++)
        cl->slots[s] = -1;
    int rc = add_shard(c, i, u);
    for (int k = 0; rc >= 0 && k < seeds->n; k++)
        rc = shard_at(c, i, 0, seeds->at[k].host, strlen(seeds->at[k].host), seeds->at[k].port,
                      strlen(seeds->at[k].port));
    return rc < 0 ? -1 : 0;
}

static void cluster_free(cluster *cl)
{
    if (!cl)
        return;
    memset(cl->url.password, 0, sizeof cl->url.password);
    resp_free(cl->slots);
    resp_free(cl->scratch);
    resp_free(cl);
}

/* ==== 5b. Redis Sentinel =================================================================
 * A Sentinel member is one node whose server the sentinels name. Its
 * shard's command connection (and listener) point at the master found,
 * and every new socket there proves it talks to a master: ROLE runs in
 * its handshake (net_opts.master_only), so a demoted master, which still
 * answers PING, never takes a request.
 *
 * Finding the master is a pass of the Sentinel client protocol: ask the
 * sentinels in turn, the one that answered last first, SENTINEL
 * GET-MASTER-ADDR-BY-NAME (each within the connect and I/O timeouts), and
 * ROLE on the command connection at the address named; the first master
 * ends the pass. A request of a round that finds no confirmed master
 * waits for a pass (sentinel_gate, from send_request) within its patience
 * and goes out when the pass ends; a pass that finds no master fails the
 * waiting requests with what each sentinel said. A pass starts when a
 * request finds no confirmed master (the first one, and after the
 * connection was lost), when a request failed or met READONLY or
 * MASTERDOWN (it is sent again, as a cluster retries), and at once when
 * +switch-master for our master's name is heard on the one sentinel the
 * member listens to (from its first master on). All of it runs in the
 * engine: the sentinels' connections are the node's, polled with the rest.
 */

enum { SN_IDLE, SN_ASK, SN_CHECK, SN_UP };

/* How bad what a sentinel said is for the pass's result: the worst wins. */
enum { SAID_SILENT = 1, SAID_NIL, SAID_MASTER_DOWN, SAID_ERROR, SAID_REFUSED };

#define FROM_SWITCH NET_MAX_SEEDS /* pass.pos: the address came with +switch-master */
#define SAID_MAX 400
#define SUB_LOOK_NS 10000000 /* read the +switch-master listener unasked this often */

struct sentinel {
    char name[NET_MASTER_NAME]; /* the master's name                                */
    size_t namelen;
    net_url master;               /* the master's URL: credentials, db, TLS, its address */
    net_opts opts;                /* for the sentinels' connections                   */
    net_conn *ask[NET_MAX_SEEDS]; /* one per sentinel, in the URL's order             */
    size_t n;
    uint8_t order[NET_MAX_SEEDS]; /* who is asked first: the last that answered       */
    struct {                      /* the discovery pass                               */
        int state;                /* SN_*                                             */
        uint32_t seq;             /* passes so far; tags their requests               */
        size_t pos;               /* order[pos] is asked (FROM_SWITCH: no sentinel)   */
        uint64_t gen;             /* SN_UP: the command connection ROLE confirmed     */
        int changed;              /* the master's address changed in this pass        */
        int worst, status;        /* the worst answer so far (SAID_*) and its status  */
        char bad[320];            /* host:port of the last master that failed ROLE    */
        char said[SAID_MAX];      /* what each sentinel said                          */
    } pass;
    struct { /* +switch-master, heard on one sentinel */
        net_conn *conn;
        size_t at;      /* that sentinel (index into ask)                      */
        uint64_t gen;   /* its connection, once the subscription is confirmed  */
        int64_t due;    /* (re)subscribe at this time (0: no)                  */
        int64_t looked; /* when sub_look last read it                          */
        unsigned fails; /* subscriptions lost or refused in a row              */
    } sub;
    char desc[NET_MASTER_NAME + 320]; /* "master 'NAME' at host:port", for messages */
};

static int is_word(const resp_reply *r, const char *w, size_t n); /* 6 */
static void chan_wake_all(redlock_client *c);

static const char *sentinel_desc(const sentinel *sn)
{
    return sn->desc;
}

/* The member as messages name it: by its master's name, and where the
 * last pass confirmed it (known: 1), if it did. */
static void set_desc(sentinel *sn, int known)
{
    char at[300];
    net_url_describe(&sn->master, at, sizeof at);
    snprintf(sn->desc, sizeof sn->desc, known ? "master '%s' at %s" : "master '%s'", sn->name, at);
}

/* Node i's master is confirmed on the command connection as it is now. */
static int sentinel_up(const redlock_client *c, size_t i)
{
    const sentinel *sn = c->nodes[i].sn;
    const net_conn *cmd = c->nodes[i].sh[0].cmd;
    return !sn || (sn->pass.state == SN_UP && net_conn_ready(cmd) &&
                   net_conn_generation(cmd) == sn->pass.gen);
}

/* The master may have changed (a request met READONLY or MASTERDOWN, or
 * failed): the next request finds it again. */
static void sentinel_suspect(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    if (sn->pass.state == SN_UP)
        sn->pass.state = SN_IDLE;
}

/* ---- what the sentinels said ---- */

/* Note what a sentinel (or the master it named) said, and keep the worst
 * answer's status for the pass's result. */
static void said(sentinel *sn, int worst, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void said(sentinel *sn, int worst, int status, const char *fmt, ...)
{
    size_t o = strlen(sn->pass.said);
    if (o > 0 && o + 2 < SAID_MAX) {
        memcpy(sn->pass.said + o, "; ", 3);
        o += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sn->pass.said + o, SAID_MAX - o, fmt, ap);
    va_end(ap);
    if (worst > sn->pass.worst) {
        sn->pass.worst = worst;
        sn->pass.status = status;
    }
}

/* A pass that found no master: transient when the worst said was silence
 * or a named master that did not answer as one (a failover under way). */
static int pass_transient(const sentinel *sn)
{
    return sn->pass.worst == SAID_SILENT || sn->pass.worst == SAID_MASTER_DOWN;
}

static const char *sentinel_at(const sentinel *sn, size_t k)
{
    return net_conn_desc(sn->ask[k]);
}

/* ---- the pass ---- */

static void pass_over(redlock_client *c, size_t i);

/* The locks whose requests to node i wait for a pass: the pass is over,
 * their timers fire now (retry_due sends them, or sentinel_gate fails them). */
static void sentinel_kick(redlock_client *c, size_t i)
{
    for (redlock *l = c->locks.all; l; l = l->link.next) {
        nres *nd = &l->res[i];
        if (l->op.kind == OP_NONE || nd->final || !nd->route.waits || !nd->route.retry_at)
            continue;
        nd->route.retry_at = c->now;
        timer_rearm_round(l);
    }
}

/* Ask the sentinel at order[pos], or the next that takes a request; after
 * the last, the pass is over. */
static void ask_next(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    const char *argv[3] = {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", sn->name};
    size_t lens[3] = {8, 23, sn->namelen};
    sn->pass.state = SN_ASK;
    for (; sn->pass.pos < sn->n; sn->pass.pos++) {
        size_t k = sn->order[sn->pass.pos];
        net_tag tag = {sn, sn->pass.seq, K_SENTINEL};
        if (net_conn_request(sn->ask[k], 3, argv, lens, tag, 0, c->now) == RESP_OK)
            return;
        said(sn, SAID_SILENT, REDLOCK_ERR_NOMEM, "%s: out of memory", sentinel_at(sn, k));
    }
    pass_over(c, i);
}

static void pass_start(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    sn->pass.seq++;
    sn->pass.pos = 0;
    sn->pass.changed = 0;
    sn->pass.worst = 0;
    sn->pass.status = REDLOCK_ERR_IO;
    sn->pass.said[0] = sn->pass.bad[0] = '\0';
    ask_next(c, i);
}

/* The sentinel asked (or the master it named) gave nothing: ask the next. */
static void ask_on(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    if (sn->pass.pos == FROM_SWITCH) {
        pass_start(c, i); /* the address +switch-master named is no master (yet) */
        return;
    }
    sn->pass.pos++;
    ask_next(c, i);
}

/* Node i's servers moved to u: its connections fail what they carry (those
 * requests are sent again after the pass) and connect there from now on. */
static void master_moved(redlock_client *c, size_t i, const net_url *u)
{
    sentinel *sn = c->nodes[i].sn;
    shard *sh = &c->nodes[i].sh[0];
    char why[sizeof sn->desc + 340], to[300];
    net_url_describe(u, to, sizeof to);
    snprintf(why, sizeof why, "%s: the sentinels name %s now", sn->desc, to);
    net_conn_retarget(sh->cmd, u, why);
    if (sh->sub)
        net_conn_retarget(sh->sub, u, why);
    memcpy(sn->master.host, u->host, sizeof u->host);
    memcpy(sn->master.port, u->port, sizeof u->port);
    sn->pass.changed = 1;
}

/* The sentinel at order[pos] (or +switch-master) named host:port: point the
 * connections there, and ask ROLE on the command connection. */
static void master_named(redlock_client *c, size_t i, const char *host, size_t hl, const char *port,
                         size_t pl)
{
    sentinel *sn = c->nodes[i].sn;
    static const char *const argv[1] = {"ROLE"};
    static const size_t lens[1] = {4};
    const char *who = sn->pass.pos == FROM_SWITCH ? "+switch-master"
                                                  : sentinel_at(sn, sn->order[sn->pass.pos]);
    net_url u;
    char at[300];
    if (net_url_at(&u, &sn->master, host, hl, port, pl) != RESP_OK) {
        said(sn, SAID_ERROR, REDLOCK_ERR_PROTOCOL, "%s named a bad address", who);
        ask_on(c, i);
        return;
    }
    net_url_describe(&u, at, sizeof at);
    if (strcmp(at, sn->pass.bad) == 0) { /* it failed ROLE in this pass already */
        said(sn, SAID_MASTER_DOWN, REDLOCK_ERR_IO, "%s named %s too", who, at);
        ask_on(c, i);
    } else {
        if (strcmp(u.host, sn->master.host) != 0 || strcmp(u.port, sn->master.port) != 0)
            master_moved(c, i, &u);
        net_tag tag = {sn, sn->pass.seq, K_ROLE};
        sn->pass.state = SN_CHECK;
        if (net_conn_request(c->nodes[i].sh[0].cmd, 1, argv, lens, tag, 0, c->now) != RESP_OK) {
            said(sn, SAID_SILENT, REDLOCK_ERR_NOMEM, "%s: out of memory", sn->desc);
            ask_on(c, i);
        }
    }
    memset(u.password, 0, sizeof u.password);
}

/* The pass is over: a master confirmed (SN_UP), or none found (SN_IDLE,
 * with what each sentinel said). The requests that waited move on. */
static void pass_over(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    if (sn->pass.state == SN_CHECK) {
        size_t p = sn->pass.pos;
        sn->pass.state = SN_UP;
        sn->pass.gen = net_conn_generation(c->nodes[i].sh[0].cmd);
        if (p < sn->n && p > 0) { /* the one that answered goes first next time */
            uint8_t k = sn->order[p];
            memmove(sn->order + 1, sn->order, p);
            sn->order[0] = k;
        }
        if (!sn->sub.conn && !sn->sub.due)
            sn->sub.due = c->now; /* listen for +switch-master from now on */
    } else {
        sn->pass.state = SN_IDLE;
    }
    set_desc(sn, sn->pass.state == SN_UP);
    for (size_t k = 0; k < sn->n; k++) /* idle until the next pass */
        if (net_conn_requests(sn->ask[k]) == 0)
            net_conn_close(sn->ask[k]);
    sentinel_kick(c, i);
    /* a new master: waiters try again at once (the lock may be free there,
     * a write that never reached it; and their listener moved) */
    if (sn->pass.state == SN_UP && sn->pass.changed) {
        obs_master(c, i, sn->desc);
        chan_wake_all(c);
    }
}

/* The answer of sentinel k to GET-MASTER-ADDR-BY-NAME: {host, port}, or
 * nil (it knows no master of that name), or an error. */
static void ask_answered(redlock_client *c, size_t i, size_t k, int st, const resp_reply *r)
{
    sentinel *sn = c->nodes[i].sn;
    const char *at = sentinel_at(sn, k);
    if (st != RESP_OK)
        said(sn, st == RESP_ERR_AUTH || st == RESP_ERR_TLS ? SAID_REFUSED : SAID_SILENT, st, "%s",
             net_conn_errstr(sn->ask[k]));
    else if (r->type == RESP_ERROR && (starts_with(r, "NOAUTH") || starts_with(r, "WRONGPASS")))
        said(sn, SAID_REFUSED, REDLOCK_ERR_AUTH, "%s: %.*s", at, (int)(r->len > 100 ? 100 : r->len),
             r->str);
    else if (r->type == RESP_ERROR)
        said(sn, SAID_ERROR, REDLOCK_ERR_SERVER, "%s: %.*s", at, (int)(r->len > 100 ? 100 : r->len),
             r->str);
    else if (r->type == RESP_NIL || (r->type == RESP_ARRAY && r->n == 0))
        said(sn, SAID_NIL, REDLOCK_ERR_SERVER, "%s knows no master named '%s' (nil)", at,
             sn->name);
    else if (r->type == RESP_ARRAY && r->n == 2 && r[1].type == RESP_BULK &&
             r[2].type == RESP_BULK) {
        master_named(c, i, r[1].str, r[1].len, r[2].str, r[2].len);
        return;
    } else
        said(sn, SAID_ERROR, REDLOCK_ERR_PROTOCOL, "%s: unexpected reply", at);
    ask_on(c, i);
}

/* ROLE on node i's command connection, for the pass tagged seq (part 3
 * hands it here). */
static void role_reply(redlock_client *c, size_t i, uint32_t seq, int st, const resp_reply *r)
{
    sentinel *sn = c->nodes[i].sn;
    if (!sn || seq != sn->pass.seq || sn->pass.state != SN_CHECK)
        return;
    const char *who = sn->pass.pos == FROM_SWITCH ? "+switch-master"
                                                  : sentinel_at(sn, sn->order[sn->pass.pos]);
    char at[300];
    net_url_describe(&sn->master, at, sizeof at);
    if (st == RESP_OK && r->type == RESP_ARRAY && r->n >= 1 && r[1].type == RESP_BULK &&
        r[1].len == 6 && memcmp(r[1].str, "master", 6) == 0) {
        pass_over(c, i);
        return;
    }
    snprintf(sn->pass.bad, sizeof sn->pass.bad, "%s", at);
    if (st != RESP_OK)
        said(sn, st == RESP_ERR_AUTH || st == RESP_ERR_TLS ? SAID_REFUSED : SAID_MASTER_DOWN, st,
             "%s named %s: %s", who, at, net_conn_errstr(c->nodes[i].sh[0].cmd));
    else if (r->type == RESP_ARRAY && r->n >= 1 && r[1].type == RESP_BULK)
        said(sn, SAID_MASTER_DOWN, REDLOCK_ERR_IO, "%s named %s, which is no master (ROLE says %.*s)",
             who, at, (int)(r[1].len > 16 ? 16 : r[1].len), r[1].str);
    else
        said(sn, SAID_REFUSED, REDLOCK_ERR_AUTH, "%s named %s, which refused ROLE: %.*s", who, at,
             (int)(r->len > 100 ? 100 : r->len), r->str ? r->str : "");
    ask_on(c, i);
}

/* ---- +switch-master ---- */

/* Listen on the sentinel sub.at: a connection of its own in push mode. */
static void sub_start(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    static const char *const argv[2] = {"SUBSCRIBE", "+switch-master"};
    static const size_t lens[2] = {9, 14};
    const net_url *u = net_conn_url(sn->ask[sn->sub.at]);
    sn->sub.due = 0;
    sn->sub.gen = 0;
    if (!sn->sub.conn) {
        if (net_conn_new(&sn->sub.conn, u, &sn->opts) != RESP_OK) {
            sn->sub.due = c->now + ms_ns(c->opts.retry_max_ms);
            return;
        }
        net_conn_set_push(sn->sub.conn);
    } else {
        net_conn_retarget(sn->sub.conn, u, "listening to another sentinel");
    }
    net_tag tag = {sn, 0, K_SENTINEL};
    if (net_conn_request(sn->sub.conn, 2, argv, lens, tag, 0, c->now) != RESP_OK)
        sn->sub.due = c->now + ms_ns(c->opts.retry_max_ms);
}

/* The subscription is gone (the sentinel is down, or refused it): listen
 * to the next sentinel; after each has failed once, pause for a while. */
static void sub_lost(sentinel *sn, const redlock_client *c)
{
    unsigned rounds = sn->sub.fails / (unsigned)sn->n; /* times every sentinel failed */
    sn->sub.gen = 0;
    sn->sub.fails++;
    sn->sub.at = (sn->sub.at + 1) % sn->n;
    sn->sub.due = c->now;
    if (sn->sub.fails % sn->n == 0)
        sn->sub.due += ms_ns(c->opts.retry_max_ms) << (rounds < 5 ? rounds : 5);
}

/* "+switch-master NAME OLD-IP OLD-PORT NEW-IP NEW-PORT" for our name: the
 * new master, checked with ROLE as if a sentinel had named it. */
static void switch_heard(redlock_client *c, size_t i, const char *s, size_t n)
{
    sentinel *sn = c->nodes[i].sn;
    const char *w[5];
    size_t wl[5], k = 0;
    for (size_t p = 0; p < n && k < 5;) {
        while (p < n && s[p] == ' ')
            p++;
        w[k] = s + p;
        while (p < n && s[p] != ' ')
            p++;
        wl[k] = (size_t)(s + p - w[k]);
        k += wl[k] > 0;
    }
    if (k < 5 || wl[0] != sn->namelen || memcmp(w[0], sn->name, sn->namelen) != 0)
        return; /* another master's news */
    sn->pass.seq++; /* a pass under way is over: this is newer */
    sn->pass.pos = FROM_SWITCH;
    sn->pass.changed = 0;
    sn->pass.worst = 0;
    sn->pass.said[0] = sn->pass.bad[0] = '\0';
    master_named(c, i, w[3], wl[3], w[4], wl[4]);
}

/* A push on the sentinel listener: our subscription confirmed, a message,
 * or a refusal (NOAUTH). 0, or -1 when the subscription failed. */
static int sub_push(redlock_client *c, size_t i, const resp_reply *r)
{
    sentinel *sn = c->nodes[i].sn;
    if (r->type == RESP_ERROR) {
        net_conn_ack(sn->sub.conn);
        return -1;
    }
    if (r->type != RESP_ARRAY || r->n < 3 || r[1].type != RESP_BULK || r[2].type != RESP_BULK)
        return 0;
    if (is_word(&r[1], "subscribe", 9)) {
        net_conn_ack(sn->sub.conn);
        sn->sub.gen = net_conn_generation(sn->sub.conn);
        sn->sub.fails = 0;
    } else if (is_word(&r[1], "message", 7) && is_word(&r[2], "+switch-master", 14) &&
               r[3].type == RESP_BULK) {
        switch_heard(c, i, r[3].str, r[3].len);
    }
    return 0;
}

/* What node i's sentinel listener heard; its loss. */
static int sub_take(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    net_tag tag;
    const resp_reply *r;
    int st, moved = 0, failed = 0;
    while ((st = net_conn_take(sn->sub.conn, &tag, &r, NULL)) != RESP_IDLE) {
        moved++;
        failed |= st != RESP_OK || sub_push(c, i, r) != 0;
        if (st == RESP_OK)
            net_conn_consume(sn->sub.conn);
    }
    if (!sn->sub.due && (failed || (sn->sub.gen && (!net_conn_ready(sn->sub.conn) ||
                                                    net_conn_generation(sn->sub.conn) != sn->sub.gen))))
        sub_lost(sn, c);
    return moved;
}

/* A blocking call may wait in recv() on the master's connection alone
 * (run_until), so poll() may not tell of a +switch-master for a while:
 * before a request goes out, and as the engine turns, read the listener
 * unasked now and then (one recv that finds nothing, at most every
 * SUB_LOOK_NS: nothing per lock cycle to speak of). */
static void sub_look(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    if (!sn->sub.conn || !net_conn_ready(sn->sub.conn) || c->now - sn->sub.looked < SUB_LOOK_NS)
        return;
    sn->sub.looked = c->now;
    net_conn_io(sn->sub.conn, POLLIN, c->now);
    sub_take(c, i);
}

/* ---- in the engine ---- */

/* Sentinel k's answers: the one the pass waits for moves it on; older
 * ones are dropped. */
static int ask_take(redlock_client *c, size_t i, size_t k)
{
    sentinel *sn = c->nodes[i].sn;
    net_tag tag;
    const resp_reply *r;
    int st, moved = 0;
    net_conn_pump(sn->ask[k], c->now);
    while ((st = net_conn_take(sn->ask[k], &tag, &r, NULL)) != RESP_IDLE) {
        moved++;
        if (tag.seq == sn->pass.seq && sn->pass.state == SN_ASK && sn->pass.pos < sn->n &&
            sn->order[sn->pass.pos] == k)
            ask_answered(c, i, k, st, r);
        if (st == RESP_OK)
            net_conn_consume(sn->ask[k]);
    }
    return moved;
}

/* The answers of node i's sentinels, and what its listener heard. */
static int sentinel_turn(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    int moved = 0;
    for (size_t k = 0; k < sn->n; k++)
        moved += ask_take(c, i, k);
    if (sn->sub.due && sn->sub.due <= c->now) {
        sub_start(c, i);
        moved++;
    }
    if (!sn->sub.conn)
        return moved;
    net_conn_pump(sn->sub.conn, c->now);
    sub_look(c, i);
    return moved + sub_take(c, i);
}

/* When node i's sentinel part needs the engine next (INT64_MAX: never). */
static int64_t sentinel_due(const sentinel *sn)
{
    return sn && sn->sub.due ? sn->sub.due : INT64_MAX;
}

/* Node i's sentinel connections for the engine, k from 0: each sentinel's,
 * then the listener's; NULL past the last. */
static net_conn *sentinel_conn(const sentinel *sn, size_t k)
{
    if (!sn || k > sn->n)
        return NULL;
    return k < sn->n ? sn->ask[k] : sn->sub.conn;
}

/* A sentinel connection with nothing asked: poll() need not wait for it
 * (run_until may wait for the one reply that matters in recv()). */
static int sentinel_quiet(const redlock_client *c, const net_conn *conn)
{
    for (size_t i = 0; i < c->n; i++) {
        const sentinel *sn = c->nodes[i].sn;
        for (size_t k = 0; sn && k <= sn->n; k++)
            if (sentinel_conn(sn, k) == conn)
                return net_conn_requests(conn) == 0;
    }
    return 0;
}

/* ---- sending: the gate, and sending again ---- */

/* Before node i's request of l's round goes out: 0 when its master is
 * confirmed (send it); 1 when the request waits for a pass (it is sent
 * when the pass ends; l's timer bounds the wait by its patience); else
 * the status of the pass that found no master, or of the patience that
 * ran out, with node i's error set. */
static int sentinel_gate(redlock *l, size_t i)
{
    redlock_client *c = l->c;
    sentinel *sn = c->nodes[i].sn;
    nres *nd = &l->res[i];
    sub_look(c, i); /* a switch heard now holds this request back */
    if (sentinel_up(c, i)) {
        nd->route.waits = 0;
        return 0;
    }
    if (sn->pass.state == SN_IDLE && nd->route.waits) {
        node_error(l, i, sn->pass.status, pass_transient(sn), "%s: not found: %s",
                   sn->desc, sn->pass.said[0] ? sn->pass.said : "no sentinel answered");
        return sn->pass.status;
    }
    if (c->now >= nd->route.until) {
        node_error(l, i, REDLOCK_ERR_TIMEOUT, 1, "%s: no master confirmed in time (so far: %s)",
                   sn->desc, sn->pass.said[0] ? sn->pass.said : "no answer yet");
        return REDLOCK_ERR_TIMEOUT;
    }
    nd->route.waits = 1;
    nd->route.retry_at = nd->route.until;
    timer_rearm_round(l);
    if (sn->pass.state == SN_IDLE || sn->pass.state == SN_UP)
        pass_start(c, i); /* (a pass that ends at once kicks l: its timer fires now) */
    return 1;
}

/* Node i's request failed (a lost connection, a timeout) or met READONLY
 * or MASTERDOWN: find the master again and send the request there, while
 * its patience lasts (retrying is safe: every script is idempotent for
 * its owner). 1 when it went out again (or waits for the pass). */
static int sentinel_again(redlock *l, size_t i)
{
    nres *nd = &l->res[i];
    if (++nd->route.tries > MAX_TRIES || l->c->now >= nd->route.until)
        return 0;
    sentinel_suspect(l->c, i);
    return send_request(l, i, -1) == REDLOCK_OK;
}

static int sentinel_redirect(redlock *l, size_t i, const resp_reply *r)
{
    return l->c->nodes[i].sn && (starts_with(r, "READONLY") || starts_with(r, "MASTERDOWN")) &&
           sentinel_again(l, i);
}

static int sentinel_retry(redlock *l, size_t i, int status)
{
    return l->c->nodes[i].sn && (status == REDLOCK_ERR_IO || status == REDLOCK_ERR_TIMEOUT) &&
           sentinel_again(l, i);
}

/* ---- the admin calls ---- */

/* Start finding node i's master unless it is confirmed or being found. */
static void sentinel_need(redlock_client *c, size_t i)
{
    sentinel *sn = c->nodes[i].sn;
    if (sn && !sentinel_up(c, i) && (sn->pass.state == SN_IDLE || sn->pass.state == SN_UP))
        pass_start(c, i);
}

/* No pass under way on node i. */
static int sentinel_settled(const redlock_client *c, size_t i)
{
    const sentinel *sn = c->nodes[i].sn;
    return !sn || sn->pass.state == SN_IDLE || sn->pass.state == SN_UP;
}

/* Why node i has no master for an admin call ("" when it has one). */
static const char *sentinel_why(const redlock_client *c, size_t i)
{
    const sentinel *sn = c->nodes[i].sn;
    if (sentinel_up(c, i))
        return "";
    return sn->pass.said[0] ? sn->pass.said : "no sentinel answered in time";
}

/* ---- construction ---- */

/* Node i as a Sentinel member, from its URL: its master's URL (no address
 * until found), a connection per sentinel (credentials of their own), the
 * shard whose connections will point at the master. -1 out of memory. */
static int sentinel_new(redlock_client *c, size_t i, const net_url *u, const net_seeds *seeds)
{
    node *m = &c->nodes[i];
    sentinel *sn = m->sn = resp_alloc_array(1, sizeof *sn);
    if (!sn || !(m->sh = resp_alloc_array(1, sizeof *m->sh)))
        return -1;
    snprintf(sn->name, sizeof sn->name, "%s", seeds->master);
    sn->namelen = strlen(sn->name);
    sn->opts = m->opts;
    m->opts.master_only = 1;
    net_url su = *u;
    su.sentinel = 0;
    su.db = 0;
    memcpy(su.user, seeds->sentinel_user, sizeof su.user);
    memcpy(su.password, seeds->sentinel_password, sizeof su.password);
    sn->master = *u;
    sn->master.sentinel = 0;
    sn->master.host[0] = '\0';
    snprintf(sn->master.port, sizeof sn->master.port, "0");
    set_desc(sn, 0);
    int rc = net_conn_new(&sn->ask[0], &su, &sn->opts);
    for (int k = 0; rc == RESP_OK && k < seeds->n; k++) {
        net_url at;
        rc = net_url_at(&at, &su, seeds->at[k].host, strlen(seeds->at[k].host), seeds->at[k].port,
                        strlen(seeds->at[k].port));
        if (rc == RESP_OK)
            rc = net_conn_new(&sn->ask[k + 1], &at, &sn->opts);
        memset(at.password, 0, sizeof at.password);
    }
    memset(su.password, 0, sizeof su.password);
    for (sn->n = 0; sn->n < NET_MAX_SEEDS && sn->ask[sn->n]; sn->n++)
        sn->order[sn->n] = (uint8_t)sn->n;
    if (rc != RESP_OK)
        return -1;
    /* not connected before a pass names its master (host "": never resolves) */
    memset(&m->sh[0], 0, sizeof m->sh[0]);
    if (net_conn_new(&m->sh[0].cmd, &sn->master, &m->opts) != RESP_OK)
        return -1;
    m->nsh = 1;
    return 0;
}

static void sentinel_free(sentinel *sn)
{
    if (!sn)
        return;
    for (size_t k = 0; k < NET_MAX_SEEDS; k++)
        net_conn_free(sn->ask[k]);
    net_conn_free(sn->sub.conn);
    memset(sn->master.password, 0, sizeof sn->master.password);
    resp_free(sn);
}

/* ==== 6. Channels =======================================================================
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
 * lock's slot ({NAME}:freed), subscribed with SSUBSCRIBE on the primary
 * serving it; when the slot moves the server drops the subscription and
 * the first waiter tries again, which finds the new owner and subscribes
 * there. What a waiter does when woken is part 7's (waiter_woken,
 * waiter_first, waiter_settled).
 */

static void waiter_woken(redlock *l);   /* 7 */
static void waiter_first(redlock *l);
static void waiter_settled(redlock *l);

/* A release channel with local waiters, and its subscription per node. */
struct chan {
    chan *next;          /* hash chain by name, or the free list */
    chan *snext;         /* hash chain by shard channel name     */
    chan *iprev, *inext; /* c->chans.idle: subscribed, no waiter (oldest first) */
    int idle;
    char *name; /* the channel's name, then its shard channel form */
    size_t len, slen, cap;
    uint64_t hash, shash;
    uint16_t slot;
    redlock *head, *tail; /* waiters, in the order they began to wait */
    struct {
        uint8_t on;       /* the server confirmed our last (un)subscribe: on */
        uint8_t sent_on;  /* what our last command asked for               */
        uint8_t inflight; /* (un)subscribes not yet confirmed              */
        uint8_t unsubs;   /* of which unsubscribes                         */
        uint16_t shard;   /* the shard of the node that has them           */
    } st[MAX_NODES];
};

static chan *chan_find(const redlock_client *c, const char *name, size_t len)
{
    uint64_t h = hash_bytes(name, len);
    if (c->chans.nbuckets == 0)
        return NULL;
    for (chan *ch = c->chans.buckets[h & (c->chans.nbuckets - 1)]; ch; ch = ch->next)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static chan *chan_find_shard(const redlock_client *c, const char *name, size_t len)
{
    uint64_t h = hash_bytes(name, len);
    if (c->chans.nbuckets == 0)
        return NULL;
    for (chan *ch = c->chans.sbuckets[h & (c->chans.nbuckets - 1)]; ch; ch = ch->snext)
        if (ch->shash == h && ch->slen == len && memcmp(ch->name + ch->len, name, len) == 0)
            return ch;
    return NULL;
}

static void chan_link(redlock_client *c, chan *ch)
{
    size_t mask = c->chans.nbuckets - 1;
    ch->next = c->chans.buckets[ch->hash & mask];
    c->chans.buckets[ch->hash & mask] = ch;
    ch->snext = c->chans.sbuckets[ch->shash & mask];
    c->chans.sbuckets[ch->shash & mask] = ch;
}

static int chan_grow_table(redlock_client *c)
{
    size_t nb = c->chans.nbuckets ? c->chans.nbuckets * 2 : 16;
    chan **b = resp_alloc_array(nb, sizeof(chan *)), **sb = resp_alloc_array(nb, sizeof(chan *));
    if (!b || !sb) {
        resp_free(b);
        resp_free(sb);
        return -1;
    }
    chan **old = c->chans.buckets;
    size_t oldn = c->chans.nbuckets;
    resp_free(c->chans.sbuckets);
    c->chans.buckets = b;
    c->chans.sbuckets = sb;
    c->chans.nbuckets = nb;
    for (size_t i = 0; i < oldn; i++)
        for (chan *ch = old[i], *next; ch; ch = next) {
            next = ch->next;
            chan_link(c, ch);
        }
    resp_free(old);
    return 0;
}

/* The channel l listens on, made (from the free list when it can) if missing. */
static chan *chan_get(redlock_client *c, const redlock *l)
{
    const lock_listen *w = &l->listen;
    chan *ch = chan_find(c, w->name, w->len);
    if (ch)
        return ch;
    if (c->chans.n + 1 > c->chans.nbuckets && chan_grow_table(c) != 0)
        return NULL;
    ch = c->chans.free;
    if (ch)
        c->chans.free = ch->next;
    else if (!(ch = resp_alloc_array(1, sizeof *ch)))
        return NULL;
    size_t need = w->len + w->slen;
    if (ch->cap < need) {
        char *p = resp_realloc(ch->name, need);
        if (!p) {
            ch->next = c->chans.free;
            c->chans.free = ch;
            return NULL;
        }
        ch->name = p;
        ch->cap = need;
    }
    memcpy(ch->name, w->name, w->len);
    memcpy(ch->name + w->len, w->sname, w->slen);
    ch->len = w->len;
    ch->slen = w->slen;
    ch->hash = hash_bytes(w->name, w->len);
    ch->shash = hash_bytes(w->sname, w->slen);
    ch->slot = l->k.slot;
    ch->head = ch->tail = NULL;
    memset(ch->st, 0, sizeof ch->st);
    chan_link(c, ch);
    c->chans.n++;
    return ch;
}

static void idle_remove(redlock_client *c, chan *ch)
{
    if (!ch->idle)
        return;
    if (ch->iprev)
        ch->iprev->inext = ch->inext;
    else
        c->chans.idle_head = ch->inext;
    if (ch->inext)
        ch->inext->iprev = ch->iprev;
    else
        c->chans.idle_tail = ch->iprev;
    ch->iprev = ch->inext = NULL;
    ch->idle = 0;
    c->chans.nidle--;
}

static void unlink_from(chan **head, chan *ch, int shard_chain)
{
    for (chan **p = head; *p; p = shard_chain ? &(*p)->snext : &(*p)->next)
        if (*p == ch) {
            *p = shard_chain ? ch->snext : ch->next;
            return;
        }
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
    size_t mask = c->chans.nbuckets - 1;
    unlink_from(&c->chans.buckets[ch->hash & mask], ch, 0);
    unlink_from(&c->chans.sbuckets[ch->shash & mask], ch, 1);
    c->chans.n--;
    ch->next = c->chans.free;
    c->chans.free = ch;
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
    if (ch->st[i].sent_on == on || (on && !sentinel_up(c, i)))
        return; /* (a Sentinel member without a confirmed master: as if down) */
    size_t j = on ? route(c, i, ch->slot) : ch->st[i].shard;
    if (listener(c, i, j) != REDLOCK_OK)
        return;
    int sharded = m->cl && m->cl->sharded;
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

/* l waits on its channel from now on, last in the local line; every node
 * is asked to subscribe where it is not (again, after a listener was lost). */
static int chan_join(redlock *l)
{
    redlock_client *c = l->c;
    if (!l->wait.ch) {
        chan *ch = chan_get(c, l);
        if (!ch)
            return REDLOCK_ERR_NOMEM;
        idle_remove(c, ch);
        l->wait.ch = ch;
        l->link.wnext = NULL;
        l->link.wprev = ch->tail;
        if (ch->tail)
            ch->tail->link.wnext = l;
        else
            ch->head = l;
        ch->tail = l;
    }
    for (size_t i = 0; i < c->n; i++)
        chan_want(c, l->wait.ch, i, 1);
    return REDLOCK_OK;
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

static void chan_leave(redlock *l)
{
    redlock_client *c = l->c;
    chan *ch = l->wait.ch;
    if (!ch)
        return;
    int was_head = ch->head == l;
    if (l->link.wprev)
        l->link.wprev->link.wnext = l->link.wnext;
    else
        ch->head = l->link.wnext;
    if (l->link.wnext)
        l->link.wnext->link.wprev = l->link.wprev;
    else
        ch->tail = l->link.wprev;
    l->wait.ch = NULL;
    l->link.wprev = l->link.wnext = NULL;
    if (ch->head) {
        if (was_head)
            waiter_first(ch->head);
        return;
    }
    /* Stay subscribed for a while: the next wait on this name then costs no
     * SUBSCRIBE (nor the try again that follows one). The oldest of too
     * many idle channels is left. */
    ch->idle = 1;
    ch->inext = NULL;
    ch->iprev = c->chans.idle_tail;
    if (c->chans.idle_tail)
        c->chans.idle_tail->inext = ch;
    else
        c->chans.idle_head = ch;
    c->chans.idle_tail = ch;
    c->chans.nidle++;
    if (c->chans.nidle > MAX_IDLE_CHANS)
        chan_drop_idle(c, c->chans.idle_head);
    chan_release_if_unused(c, ch);
}

/* A release was published on ch (or a local unlock happened): the first
 * local waiter tries; the others would only lose the race to it. A
 * waiter's own channel (fair mode, semaphores) tells just it: all its
 * waiters (one, unless handles share a value) try. */
static void chan_wake(redlock_client *c, chan *ch)
{
    (void)c;
    if (ch->head && !listens_own(ch->head)) {
        waiter_woken(ch->head);
        return;
    }
    for (redlock *w = ch->head, *next; w; w = next) {
        next = w->link.wnext;
        waiter_woken(w);
    }
}

/* The first waiter of every channel tries again (a node's server changed). */
static void chan_wake_all(redlock_client *c)
{
    for (size_t b = 0; b < c->chans.nbuckets; b++)
        for (chan *ch = c->chans.buckets[b]; ch; ch = ch->next)
            if (ch->head)
                chan_wake(c, ch);
}

/* Once every node settled, the waiters hear of it. */
static void chan_settle_waiters(redlock_client *c, chan *ch)
{
    if (!chan_settled(c, ch))
        return;
    for (redlock *w = ch->head, *next; w; w = next) {
        next = w->link.wnext;
        waiter_settled(w);
    }
}

/* Shard j of node i lost its listener connection (or never had one):
 * nothing is subscribed there now. Waiters subscribe again when they next
 * try; meanwhile their timers bound the wait. */
static void listener_reset(redlock_client *c, size_t i, size_t j)
{
    shard *sh = &c->nodes[i].sh[j];
    sh->sub_gen = sh->sub ? net_conn_generation(sh->sub) : 0;
    for (size_t b = 0; b < c->chans.nbuckets; b++)
        for (chan *ch = c->chans.buckets[b], *next; ch; ch = next) {
            next = ch->next;
            if (ch->st[i].shard != j)
                continue;
            memset(&ch->st[i], 0, sizeof ch->st[i]);
            chan_release_if_unused(c, ch);
        }
    for (size_t b = 0; b < c->chans.nbuckets; b++)
        for (chan *ch = c->chans.buckets[b], *next; ch; ch = next) {
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
        waiter_woken(ch->head);
    chan_release_if_unused(c, ch);
}

/* An error in answer to our oldest (un)subscribe on shard j of node i: a
 * -MOVED for SSUBSCRIBE to a node that lost the slot, or a server without
 * sharded pub/sub (Redis < 7: fall back to SUBSCRIBE and PUBLISH). */
static void chan_refused(redlock_client *c, size_t i, size_t j, const resp_reply *r)
{
    node *m = &c->nodes[i];
    chan *ch = net_conn_oldest(m->sh[j].sub).owner;
    unsigned slot;
    int k;
    net_conn_ack(m->sh[j].sub);
    if (m->cl && starts_with(r, "MOVED ") && redirect_target(c, i, j, r, &slot, &k) == 0) {
        obs_redirect(c, i, j, NULL, 0, slot, r);
        slot_moved(c, i, slot, k);
    } else if (m->cl && starts_with(r, "ERR unknown command"))
        m->cl->sharded = 0;
    if (!ch || ch->st[i].inflight == 0)
        return;
    ch->st[i].inflight--;
    if (ch->st[i].unsubs > ch->st[i].inflight)
        ch->st[i].unsubs = ch->st[i].inflight;
    chan_lost(c, ch, i);
}

static int is_word(const resp_reply *r, const char *w, size_t n)
{
    return r->len == n && memcmp(r->str, w, n) == 0;
}

/* A push on shard j of node i's listener: a release message, or the
 * confirmation of one of our (un)subscribe commands, or a subscription
 * the server dropped. */
static void on_push(redlock_client *c, size_t i, size_t j, const resp_reply *r)
{
    if (r->type == RESP_ERROR) {
        chan_refused(c, i, j, r);
        return;
    }
    if (r->type != RESP_ARRAY || r->n < 3 || r[1].type != RESP_BULK || r[2].type != RESP_BULK)
        return;
    /* smessage, ssubscribe, sunsubscribe: the shard channel forms */
    int shard = is_word(&r[1], "smessage", 8) || is_word(&r[1], "ssubscribe", 10) ||
                is_word(&r[1], "sunsubscribe", 12);
    resp_reply kind = r[1];
    kind.str += shard;
    kind.len -= (size_t)shard;
    chan *ch = shard ? chan_find_shard(c, r[2].str, r[2].len) : chan_find(c, r[2].str, r[2].len);
    int sub = is_word(&kind, "subscribe", 9), unsub = is_word(&kind, "unsubscribe", 11);
    if (is_word(&kind, "message", 7)) {
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

/* ==== 7. Operations =====================================================================
 * An operation moves on three events: its round ended (every node
 * answered or failed: advance), its timer fired (fire), a release was
 * heard on its channel (waiter_woken, from part 6). What each phase does:
 *
 *   phase          round ended      timer fired                 release heard
 *   ACQUIRE        acquire_judge    retry_due (cluster retries) try again if this fails
 *   RAISE          raise_judge      retry_due                   (the same)
 *   RELEASE_TAKEN  taken_released   retry_due                   -
 *   SUBSCRIBE      subscribed       subscribed (limit passed)   -
 *   PROBE          probe_judge      retry_due                   try at once after it
 *   SLEEP          -                try_now                     try_now, or give way once
 *   PARKED         -                try_now (the wait is over)  try_now
 *   DEQUEUE        dequeued         retry_due                   -
 *   RELEASE        unlock_judge     retry_due                   -
 *   REFRESH        refresh_judge    retry_due; keepalive: lease end, lost
 *   REPAIR         repaired         retry_due; (the same)
 *   STATUS         inspect_judge    retry_due                   -
 *   LIST           holders_judge    retry_due                   -
 *   NONE (held)    -                keepalive_fire              -
 *
 * Acquire (trylock, and each try of redlock_lock) sends one script to
 * every node; a quorum win may need a second round to raise fence
 * counters (RAISE); a loss gives back what it took (RELEASE_TAKEN). A
 * waiter subscribes, probes once, then sleeps until a release, the
 * holder's TTL or a backoff. Unlock and refresh are one compare-and-act
 * round each; inspect one read.
 */

static void acquire_judge(redlock *l);
static void raise_judge(redlock *l);
static void taken_released(redlock *l);
static void subscribed(redlock *l);
static void probe_judge(redlock *l);
static void dequeued(redlock *l);
static void unlock_judge(redlock *l);
static void refresh_judge(redlock *l);
static void repaired(redlock *l);
static void inspect_judge(redlock *l);
static void holders_judge(redlock *l);
static void try_now(redlock *l);
static void keepalive_arm(redlock *l);
static void keepalive_fire(redlock *l);
static void keepalive_lost(redlock *l, const char *why);
static void abandon(redlock *l);

/* What ends each phase's round. */
static void (*const round_ended[PH_COUNT])(redlock *) = {
    [PH_ACQUIRE] = acquire_judge,       [PH_RAISE] = raise_judge,
    [PH_RELEASE_TAKEN] = taken_released, [PH_SUBSCRIBE] = subscribed,
    [PH_PROBE] = probe_judge,           [PH_DEQUEUE] = dequeued,
    [PH_RELEASE] = unlock_judge,        [PH_REFRESH] = refresh_judge,
    [PH_REPAIR] = repaired,             [PH_STATUS] = inspect_judge,
    [PH_LIST] = holders_judge,
};

/* l's round has ended (every node answered or failed): judge it and move on. */
static void advance(redlock *l)
{
    if (l->op.round_at)
        hist_add(&l->c->obs.round_trip, l->c->now - l->op.round_at);
    l->op.round_at = 0;
    if (l->op.phase < PH_COUNT && round_ended[l->op.phase])
        round_ended[l->op.phase](l);
}

/* l's timer is due. */
static void fire(redlock *l)
{
    redlock_client *c = l->c;
    timer_clear(l);
    switch (l->op.phase) {
    case PH_SLEEP:
    case PH_PARKED:
        try_now(l);
        return;
    case PH_SUBSCRIBE:
        subscribed(l);
        return;
    }
    if (l->op.kind == OP_NONE) {
        keepalive_fire(l);
    } else if (l->op.kind == OP_KEEPALIVE && c->now >= l->lease.valid_until) {
        abandon(l);
        keepalive_lost(l, "its TTL ran out: no node answered the refresh in time");
    } else if (l->op.outstanding > 0) {
        retry_due(l);
    }
}

/* The operation ends with status rc (l's error text holds the detail). */
static void finish(redlock *l, int rc)
{
    int reported = !l->op.blocking && l->op.kind != OP_KEEPALIVE;
    if (l->text && rc == REDLOCK_OK)
        l->text->errstr[0] = '\0';
    obs_end(l, l->op.kind, rc);
    if (l->text)
        l->text->callerr[0] = '\0'; /* the result is newer than a refused call */
    client_text(l);
    l->op.result = rc;
    l->op.kind = OP_NONE;
    l->op.phase = PH_NONE;
    l->op.seq++; /* replies still on their way belong to nobody now */
    l->op.blocking = 0;
    timer_clear(l);
    ready_remove(l);
    chan_leave(l);
    if (reported)
        done_push(l);
    keepalive_arm(l);
}

static void lease_drop(redlock *l)
{
    if (l->lease.held)
        hist_add(&l->c->obs.hold, l->c->now - l->lease.since);
    l->lease.held = 0;
    l->lease.valid_until = 0;
}

/* ---- quorum arithmetic (pure: tests/test_judge.c checks it) ---- */

enum { Q_YES, Q_NO, Q_UNKNOWN };

/* An acquire taken on acq nodes, refused (another owner, or a waiter first
 * in line) on held: won; lost when enough nodes answered, or when the
 * holder has so many nodes that no quorum is possible whatever the silent
 * ones would say; else unknown (too few answers). */
static int acquire_decision(size_t n, size_t quorum, size_t acq, size_t held)
{
    if (acq >= quorum)
        return Q_YES;
    return acq + held >= quorum || held > n - quorum ? Q_NO : Q_UNKNOWN;
}

/* A compare-and-act round (release, refresh): ours on a quorum; lost when
 * enough nodes answered, or when the others (missing, another owner) are
 * more than a quorum leaves; else unknown. */
static int held_decision(size_t n, size_t quorum, size_t ours, size_t missing, size_t other)
{
    if (ours >= quorum)
        return Q_YES;
    return ours + missing + other >= quorum || missing + other > n - quorum ? Q_NO : Q_UNKNOWN;
}

/* A waiter's probe found the lock held (or another first in line) on held
 * nodes: could a try win a quorum now (a silent node counts: the try
 * finds out)? */
static int probe_may_win(size_t n, size_t quorum, size_t held)
{
    return held <= n - quorum;
}

/* ---- acquire ---- */

static void lock_tried(redlock *l, outcome o);
static void refresh_over(redlock *l, int rc);

static void acquire_start(redlock *l)
{
    redlock_client *c = l->c;
    l->op.t0 = c->now;
    l->wait.woken = 0;
    for (size_t i = 0; i < c->n; i++)
        l->res[i].hold.acq = l->res[i].hold.landed = 0;
    round_start(l, PH_ACQUIRE, S_ACQUIRE, all_nodes(c),
                l->op.t0 + ms_ns(l->lease.ttl));
}

/* The try is over: for redlock_trylock that is the result; redlock_lock
 * may wait and try again. */
static void try_over(redlock *l, outcome o)
{
    if (l->op.kind == OP_LOCK) {
        obs_outcome(l->c, REDLOCK_STAT_ACQUIRE, o.rc); /* a trylock counts as it ends */
        lock_tried(l, o);
    } else {
        finish(l, o.rc);
    }
}

/* Give back what this try (or refresh) took, then end it with o. */
static void release_taken(redlock *l, outcome o)
{
    uint32_t m = taken_nodes(l);
    lease_drop(l);
    l->op.deferred = o;
    if (m)
        round_start(l, PH_RELEASE_TAKEN, S_RELEASE, m, 0);
    else
        taken_released(l);
}

/* What a failed acquire or refresh took is given back: its result now. */
static void taken_released(redlock *l)
{
    if (l->op.kind == OP_TRYLOCK || l->op.kind == OP_LOCK)
        try_over(l, l->op.deferred);
    else
        refresh_over(l, l->op.deferred.rc);
}

/* The lease an acquire or refresh that began at t0 gives: held until
 * this time, or 0 when less than a millisecond of it is left now (a reply
 * that came that late holds nothing worth reporting as held). */
static int64_t lease_end(const redlock *l)
{
    int64_t until = l->op.t0 + ms_ns(l->lease.ttl) - drift_ns(l);
    return until - l->c->now >= ms_ns(1) ? until : 0;
}

static void acquire_won(redlock *l)
{
    char nm[64];
    int64_t until = lease_end(l);
    if (until) {
        if (!l->lease.held)
            l->lease.since = l->c->now;
        l->lease.held = 1;
        l->lease.fence = l->op.token;
        l->lease.valid_until = until;
        l->lease.renewed_at = l->op.t0;
        l->wait.holder_pttl = -1;
        try_over(l, (outcome){REDLOCK_OK, 0});
        return;
    }
    /* Ours, but too late to hold: nobody else's lock, and nothing to retry
     * at once; redlock_lock tries again after its backoff. */
    release_taken(l, (outcome){lerr(l, REDLOCK_ERR_TIMEOUT,
                                    "lock '%s': acquired, but the reply came after %.1f ms, when "
                                    "its TTL of %" PRIu32 " ms less the drift allowance (%.1f ms) "
                                    "had run out; released",
                                    shown(l, nm, sizeof nm), (double)(l->c->now - l->op.t0) / 1e6,
                                    l->lease.ttl, (double)drift_ns(l) / 1e6),
                               1});
}

/* Why one node refused an acquire (its answer's code), for a message. */
static void busy_reason(const redlock *l, long long code, int64_t pttl, char *buf, size_t len)
{
    char nm[64];
    const char *n = shown(l, nm, sizeof nm);
    if (code == 5)
        snprintf(buf, len, "readers hold lock '%s' (for %lld ms more)", n, (long long)pttl);
    else if (code == 4)
        snprintf(buf, len, "a writer waits for '%s': new readers wait behind it (writer "
                           "preference)", n);
    else if (l->k.kind == LK_SEMAPHORE && code == 3)
        snprintf(buf, len, "semaphore '%s' has a free permit, but waiters are first in line", n);
    else if (l->k.kind == LK_SEMAPHORE)
        snprintf(buf, len, "all %" PRIu32 " permits of semaphore '%s' are held (the first "
                           "lease ends in %lld ms)", l->k.permits, n, (long long)pttl);
    else if (code == 3)
        snprintf(buf, len, "lock '%s' is free, but another waiter is first in line (fair mode)", n);
    else
        snprintf(buf, len, "lock '%s' is held by %s (expires in %lld ms)", n,
                 l->k.kind == LK_SHARED ? "a writer" : "another owner", (long long)pttl);
}

/* Someone else holds it (fair mode: or a waiter is first in line; the
 * restart guard: or a node that gave it is too young to count). */
static int acquire_busy(redlock *l, size_t acq, size_t held, size_t queued, size_t young,
                        int64_t pttl)
{
    redlock_client *c = l->c;
    char nm[64], q[96] = "", y[128] = "";
    if (c->n == 1 && young)
        return lerr(l, REDLOCK_NOT_ACQUIRED,
                    "lock '%s': the node restarted less than one lease ago and may have "
                    "forgotten a lock it granted: its yes counts in %lld ms (restart guard)",
                    shown(l, nm, sizeof nm), (long long)pttl);
    if (c->n == 1) {
        char why[200];
        busy_reason(l, l->res[0].ans.code, pttl, why, sizeof why);
        return lerr(l, REDLOCK_NOT_ACQUIRED, "%s", why);
    }
    if (queued)
        snprintf(q, sizeof q, " (on %zu of them free, but others are first in line)", queued);
    if (young)
        snprintf(y, sizeof y,
                 " (%zu of them gave it but restarted less than one lease ago: restart guard)",
                 young);
    return lerr(l, REDLOCK_NOT_ACQUIRED,
                "lock '%s': taken on %zu of %zu nodes, held by another owner on %zu%s%s, %zu "
                "failed (quorum %zu)",
                shown(l, nm, sizeof nm), acq, c->n, held, q, y, count_nodes(l->res, c->n).err,
                c->quorum);
}

/* A node says the name is another kind of thing than this handle: a
 * semaphore of another permit count, or a semaphore where a read-write
 * lock was asked for. The caller's mistake: REDLOCK_ERR_ARG, not retried. */
static void wrong_kind(redlock *l, size_t i, long long code, long long stored)
{
    char nm[64];
    if (code == -2)
        node_error(l, i, REDLOCK_ERR_ARG, 0,
                   "%s: semaphore '%s' has %lld permits; this handle asks for %" PRIu32,
                   node_desc(l->c, i), shown(l, nm, sizeof nm), stored, l->k.permits);
    else
        node_error(l, i, REDLOCK_ERR_ARG, 0,
                   "%s: '%s' is a semaphore of %lld permits, not a read-write lock",
                   node_desc(l->c, i), shown(l, nm, sizeof nm), stored);
}

/* Every node answered the acquire (or failed): judge. */
static void acquire_judge(redlock *l)
{
    redlock_client *c = l->c;
    size_t acq = 0, held = 0, queued = 0, young = 0;
    uint64_t token = 0;
    int64_t pttl = -1;
    l->wait.rtt = c->now - l->op.t0;
    for (size_t i = 0; i < c->n; i++) {
        nres *nd = &l->res[i];
        if (nd->state != N_OK)
            continue;
        if ((nd->ans.code == 1 || nd->ans.code == 2) && nd->ans.val >= 0) {
            nd->hold.acq = 1;
            if ((uint64_t)nd->ans.val > token)
                token = (uint64_t)nd->ans.val;
            if (!nd->ans.young) {
                acq++;
                continue;
            }
            /* restart guard: taken there, but it counts as held until the
             * node is older than the lease */
            held++;
            young++;
            obs_young(l, i);
            if (pttl < 0 || nd->ans.young < pttl)
                pttl = nd->ans.young;
        } else if (nd->ans.code == 0 || nd->ans.code == 3 || nd->ans.code == 4 ||
                   nd->ans.code == 5) {
            held++;
            queued += nd->ans.code == 3 || nd->ans.code == 4;
            if (nd->ans.code == 5 && l->op.kind == OP_LOCK)
                l->wait.writer_waits = 1; /* readers hold it: wait as a writer */
            if (nd->ans.val > 0 && (pttl < 0 || nd->ans.val < pttl))
                pttl = nd->ans.val;
        } else if (nd->ans.code == -2 || nd->ans.code == -3) {
            wrong_kind(l, i, nd->ans.code, nd->ans.val);
        } else {
            node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: acquire script answered %lld",
                       node_desc(c, i), nd->ans.code);
        }
    }
    l->op.token = token;
    l->wait.holder_pttl = pttl;
    int d = acquire_decision(c->n, c->quorum, acq, held);
    if (d == Q_UNKNOWN) {
        tally t = count_nodes(l->res, c->n);
        release_taken(l, (outcome){fail_nodes(l, "acquire", t), t.transient});
        return;
    }
    if (d == Q_NO) {
        release_taken(l, (outcome){acquire_busy(l, acq, held, queued, young, pttl), 0});
        return;
    }
    /* Quorum fencing: raise every taken node's counter to at least the
     * token, so any later quorum, which overlaps this one, counts past it. */
    uint32_t low = 0;
    if (c->opts.fencing && c->n > 1)
        for (size_t i = 0; i < c->n; i++)
            if (l->res[i].hold.acq && (uint64_t)l->res[i].ans.val < token)
                low |= bit(i);
    if (!low) {
        acquire_won(l);
        return;
    }
    fmt_u64(l->op.tok_str, sizeof l->op.tok_str, token);
    round_start(l, PH_RAISE, S_RAISE, low, 0);
}

static void raise_judge(redlock *l)
{
    redlock_client *c = l->c;
    char nm[64];
    size_t raised = 0;
    for (size_t i = 0; i < c->n; i++) {
        const nres *nd = &l->res[i];
        if (!nd->hold.acq)
            continue;
        raised += nd->state == N_SKIP ||
                  (nd->state == N_OK && (uint64_t)nd->ans.code >= l->op.token);
    }
    if (raised >= c->quorum) {
        acquire_won(l);
        return;
    }
    release_taken(l, (outcome){lerr(l, REDLOCK_ERR_IO,
                                    "lock '%s': could not raise the fence counter on a quorum",
                                    shown(l, nm, sizeof nm)),
                               1});
}

/* ---- waiting: redlock_lock ---- */

static void fair_join(redlock *l);
static uint32_t fair_leave_mask(const redlock *l, int rc);
static int fair_told_in_turn(const redlock *l, int rc);

static void lock_begin(redlock *l, uint32_t wait_ms)
{
    redlock_client *c = l->c;
    l->wait.deadline = c->now + ms_ns(wait_ms);
    l->wait.gave_way = 0;
    l->wait.backoff = ms_ns(c->opts.retry_min_ms);
    l->wait.probed = 0;
    l->wait.last = REDLOCK_NOT_ACQUIRED;
    l->wait.queued = 0;
    l->wait.writer_waits = 0;
    /* how long a place in line, or among the writers waiting, lasts: the
     * waiter renews it on every try, at least every retry_max_ms */
    snprintf(l->wait.lease_str, sizeof l->wait.lease_str, "%d",
             2 * c->opts.retry_max_ms + c->opts.io_timeout_ms);
    if (listens_own(l))
        fair_join(l);
    acquire_start(l);
}

static void lock_end(redlock *l, int rc)
{
    chan_leave(l);
    uint32_t m = l->wait.queued ? fair_leave_mask(l, rc) : 0;
    if (l->wait.writer_waits && rc != REDLOCK_OK)
        for (size_t i = 0; i < l->c->n; i++)
            queue_orphan(l, i, S_WLEAVE); /* no longer waiting among the writers */
    l->wait.queued = 0;
    l->wait.writer_waits = 0;
    if (!m) {
        finish(l, rc);
        return;
    }
    l->op.deferred = (outcome){rc, 0};
    round_start(l, PH_DEQUEUE, S_DEQUEUE, m, 0);
}

/* Out of the line: the wait's result now. */
static void dequeued(redlock *l)
{
    finish(l, l->op.deferred.rc);
}

/* Sleep until a release, the holder's TTL running out, or a jittered
 * backoff; a waiter behind another local one parks until it is first. */
static void lock_sleep(redlock *l, int rc)
{
    redlock_client *c = l->c;
    lock_wait *w = &l->wait;
    if (w->woken && rc == REDLOCK_NOT_ACQUIRED) {
        try_now(l); /* a release came while we tried */
        return;
    }
    if (!listens_own(l) && rc == REDLOCK_NOT_ACQUIRED && w->ch && w->ch->head != l) {
        l->op.phase = PH_PARKED;
        timer_set(l, w->deadline);
        return;
    }
    int64_t max = ms_ns(c->opts.retry_max_ms);
    if (fair_told_in_turn(l, rc))
        w->backoff = max;
    int64_t half = w->backoff / 2;
    int64_t sleep = half + (int64_t)(next_random(c) % (uint64_t)(half + 1));
    w->backoff = w->backoff * 2 > max ? max : w->backoff * 2;
    if (rc == REDLOCK_NOT_ACQUIRED && w->holder_pttl >= 0 && ms_ns(w->holder_pttl + 1) < sleep)
        sleep = ms_ns(w->holder_pttl + 1);
    int64_t until = c->now + sleep;
    l->op.phase = PH_SLEEP;
    timer_set(l, until < w->deadline ? until : w->deadline);
}

static void lock_tried(redlock *l, outcome o)
{
    redlock_client *c = l->c;
    if (o.rc == REDLOCK_OK || (o.rc != REDLOCK_NOT_ACQUIRED && !o.again) ||
        c->now >= l->wait.deadline) {
        lock_end(l, o.rc);
        return;
    }
    l->wait.last = o.rc;
    if (o.rc != REDLOCK_NOT_ACQUIRED) {
        lock_sleep(l, o.rc);
        return;
    }
    if (chan_join(l) != REDLOCK_OK) {
        lock_end(l, lerr(l, REDLOCK_ERR_NOMEM, "out of memory subscribing"));
        return;
    }
    if (chan_subscribed(c, l->wait.ch)) {
        lock_sleep(l, o.rc);
        return;
    }
    /* A release may come before we listen: once subscribed, look again. */
    l->op.phase = PH_SUBSCRIBE;
    int64_t lim = c->now + ms_ns(c->opts.io_timeout_ms);
    timer_set(l, lim < l->wait.deadline ? lim : l->wait.deadline);
    if (chan_settled(c, l->wait.ch))
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
    if (!l->wait.probed && l->wait.ch && chan_any_on(c, l->wait.ch)) {
        l->wait.probed = 1;
        if (l->k.kind != LK_LOCK) { /* no plain read tells a permit or a read hold: try */
            try_now(l);
            return;
        }
        round_start(l, PH_PROBE, S_PROBE, all_nodes(c), l->wait.deadline);
        return;
    }
    lock_sleep(l, l->wait.last);
}

/* PH_PROBE is over: try again at once when a release came meanwhile, or
 * when the key is missing (fair mode: the line is empty or we are first)
 * on enough nodes that a quorum could be ours; otherwise sleep as after
 * the failed try. A fair waiter behind another is told when its turn
 * comes: the release goes to the first in line whose lease is alive, and
 * drops dead ones ahead of it. */
static void probe_judge(redlock *l)
{
    redlock_client *c = l->c;
    size_t held = 0;
    int64_t pttl = -1;
    for (size_t i = 0; i < c->n; i++) {
        const nres *nd = &l->res[i];
        if (nd->state != N_OK || nd->ans.code == -2)
            continue;
        held++;
        if (nd->ans.code >= 0 && (pttl < 0 || nd->ans.code < pttl))
            pttl = nd->ans.code;
    }
    if (l->wait.woken || probe_may_win(c->n, c->quorum, held)) {
        try_now(l);
        return;
    }
    if (pttl >= 0)
        l->wait.holder_pttl = pttl;
    lock_sleep(l, l->wait.last);
}

static void try_now(redlock *l)
{
    timer_clear(l);
    acquire_start(l);
}

/* A release was heard for l (part 6). Redis delivers a release to a
 * channel's subscribers in the same order every time, so the same waiter
 * would always send first and win, and the last one starve. A waiter that
 * has not lost a race yet in this wait therefore gives way for a moment
 * (half its round trip, at least 50 us); one that gave way goes at once:
 * the one that waited through a release wins the next. Fair mode does not
 * need it (the server picks). A try in flight tries again if it fails. */
static void waiter_woken(redlock *l)
{
    if (l->op.phase == PH_SLEEP && !l->wait.gave_way && !listens_own(l) &&
        l->op.kind == OP_LOCK) {
        int64_t d = l->wait.rtt / 2;
        if (d < 50000)
            d = 50000;
        if (d > ms_ns(5))
            d = ms_ns(5);
        l->wait.gave_way = 1;
        timer_set(l, l->c->now + d);
        return;
    }
    if (l->op.phase == PH_SLEEP || l->op.phase == PH_PARKED)
        try_now(l);
    else
        l->wait.woken = 1;
}

/* l became the first local waiter of its channel: a parked one tries. */
static void waiter_first(redlock *l)
{
    if (l->op.phase == PH_PARKED)
        waiter_woken(l);
}

/* l's channel settled on every node: a waiter that waited for that goes on. */
static void waiter_settled(redlock *l)
{
    if (l->op.phase == PH_SUBSCRIBE)
        subscribed(l);
}

/* ---- fair mode ----
 * Waiters stand in a line per name ({NAME}:queue, a ZSET by arrival) with
 * a lease on their place ({NAME}:alive, by expiry); a free lock goes to
 * the first whose lease is alive (S_FAIR), and a release tells only that
 * one, on its own channel. What differs from the default mode is here and
 * in the scripts; the rest asks opts.fair where it must choose. */

/* Our place in line. One node orders waiters by its own clock (us), when
 * each joined. A quorum needs the same order on every node (else each
 * could favour another waiter and no one would win a majority): the
 * wall-clock us when we began to wait. A waiter renews its lease on every
 * try, at least every retry_max_ms. */
static void fair_join(redlock *l)
{
    redlock_client *c = l->c;
    l->wait.score_str[0] = '\0';
    if (c->n > 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(l->wait.score_str, sizeof l->wait.score_str, "%lld",
                 (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    }
    l->wait.queued = 1;
}

/* Where to leave the line as the wait ends: everywhere after a failure;
 * after a quorum acquire, on the nodes that did not give us the lock (the
 * acquire left the line on the others), or we would stand first there
 * until our lease ran out. */
static uint32_t fair_leave_mask(const redlock *l, int rc)
{
    uint32_t m = 0;
    for (size_t i = 0; i < l->c->n; i++)
        if (rc != REDLOCK_OK || !l->res[i].hold.acq)
            m |= bit(i);
    return m;
}

/* A fair waiter that listens is told when its turn comes (its own
 * channel): until then it only renews its place, every retry_max_ms (its
 * lease is twice that), and keeps the server quiet. */
static int fair_told_in_turn(const redlock *l, int rc)
{
    return listens_own(l) && rc == REDLOCK_NOT_ACQUIRED && l->wait.ch &&
           chan_any_on(l->c, l->wait.ch);
}

/* A cancelled fair wait leaves the line on every node, unanswered. */
static void fair_cancel(redlock *l)
{
    for (size_t i = 0; i < l->c->n; i++)
        queue_orphan(l, i, S_DEQUEUE);
}

/* A freed handle's own channel: no other waiter will listen there. */
static void fair_drop_own(redlock *l)
{
    chan *ch = chan_find(l->c, l->listen.name, l->listen.len);
    if (ch)
        chan_drop_idle(l->c, ch);
}

/* ---- unlock, refresh, inspect ---- */

/* How a compare-and-act script went on each node: code 1 (or 2) ours, 0
 * no key, -1 another owner. Marks the nodes that hold it for us. */
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
        nd->hold.acq = 0;
        if (nd->state != N_OK)
            continue;
        if (nd->ans.code == 1 || nd->ans.code == 2) {
            nd->hold.acq = 1;
            v.ours++;
        } else if (nd->ans.code == 0)
            v.missing++;
        else if (nd->ans.code == -1)
            v.other++;
        else
            node_error(l, i, REDLOCK_ERR_PROTOCOL, 0, "%s: script answered %lld",
                       node_desc(c, i), nd->ans.code);
    }
    v.t = count_nodes(l->res, c->n);
    return v;
}

/* NOT_HELD with the reason: expired, or another owner. */
static int not_held(redlock *l, const char *op, verdict v)
{
    redlock_client *c = l->c;
    char nm[64];
    lease_drop(l);
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
    lease_drop(l);
    switch (held_decision(c->n, c->quorum, v.ours, v.missing, v.other)) {
    case Q_YES: {
        chan *ch = chan_find(c, l->k.channel, l->k.chlen);
        if (ch)
            chan_wake(c, ch); /* a local waiter need not wait for the message */
        finish(l, REDLOCK_OK);
        return;
    }
    case Q_NO:
        finish(l, not_held(l, "unlock", v));
        return;
    }
    finish(l, fail_nodes(l, "unlock", v.t));
}

static void keepalive_done(redlock *l, int rc);

/* The refresh is over: for redlock_refresh that is the result; keepalive
 * keeps going. */
static void refresh_over(redlock *l, int rc)
{
    if (l->op.kind == OP_KEEPALIVE)
        keepalive_done(l, rc);
    else
        finish(l, rc);
}

static void refresh_start(redlock *l)
{
    l->op.t0 = l->c->now;
    l->op.repair = 0;
    round_start(l, PH_REFRESH, S_REFRESH, all_nodes(l->c), l->op.t0 + ms_ns(l->lease.ttl));
}

/* A quorum holds our value and some nodes lost the key (restarted
 * empty): set it again there (never where another value is), or a second
 * restart would cost the quorum. */
static void refresh_repair(redlock *l, int64_t until)
{
    uint32_t m = 0;
    for (size_t i = 0; i < l->c->n; i++)
        if (l->res[i].state == N_OK && l->res[i].ans.code == 0)
            m |= bit(i);
    l->op.repair = 1;
    round_start(l, PH_REPAIR, S_REFRESH, m, until);
}

static void refresh_judge(redlock *l)
{
    redlock_client *c = l->c;
    verdict v = judge(l);
    int d = held_decision(c->n, c->quorum, v.ours, v.missing, v.other);
    if (d == Q_UNKNOWN) {
        refresh_over(l, fail_nodes(l, "refresh", v.t));
        return;
    }
    if (d == Q_NO) {
        int rc = not_held(l, "refresh", v);
        if (v.ours > 0) /* a minority still holds our value: give it back */
            release_taken(l, (outcome){rc, 0});
        else
            refresh_over(l, rc);
        return;
    }
    int64_t until = lease_end(l);
    if (!until) {
        char nm[64];
        release_taken(l, (outcome){lerr(l, REDLOCK_NOT_HELD,
                                        "refresh '%s': the TTL ran out before the reply",
                                        shown(l, nm, sizeof nm)),
                                   0});
        return;
    }
    l->lease.held = 1;
    l->lease.valid_until = until;
    l->lease.renewed_at = l->op.t0;
    if (v.missing > 0)
        refresh_repair(l, until);
    else
        refresh_over(l, REDLOCK_OK);
}

/* The repair round is over (whatever it found: the quorum holds). */
static void repaired(redlock *l)
{
    refresh_over(l, REDLOCK_OK);
}

/* A semaphore's or a read-write lock's inspect (from LIST): held when a
 * quorum lists holders; ours when a quorum lists us, with our least lease. */
static void inspect_shared(redlock *l, redlock_info *info)
{
    size_t held = 0, ours = 0;
    int64_t ttl = -1;
    for (size_t i = 0; i < l->c->n; i++) {
        const nres *a = &l->res[i];
        if (a->state != N_OK)
            continue;
        if ((uint64_t)a->ans.val > info->fence)
            info->fence = (uint64_t)a->ans.val;
        held += a->ans.count > 0;
        if (!a->ans.ours)
            continue;
        ours++;
        if (ttl < 0 || a->ans.code < ttl)
            ttl = a->ans.code;
    }
    info->held = held >= l->c->quorum;
    info->ours = ours >= l->c->quorum;
    info->ttl_ms = info->ours ? ttl : -1;
}

static void inspect_judge(redlock *l)
{
    redlock_client *c = l->c;
    redlock_info *info = l->op.info;
    tally t = count_nodes(l->res, c->n);
    if (t.ok < c->quorum) {
        finish(l, fail_nodes(l, "inspect", t));
        return;
    }
    if (l->k.kind != LK_LOCK) {
        inspect_shared(l, info);
        finish(l, REDLOCK_OK);
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        const nres *a = &l->res[i];
        if (a->state != N_OK)
            continue;
        if ((uint64_t)a->ans.val > info->fence)
            info->fence = (uint64_t)a->ans.val;
        if (!a->ans.vhash || info->held)
            continue;
        size_t same = 0;
        int64_t ttl = -1;
        for (size_t j = 0; j < c->n; j++) {
            const nres *b = &l->res[j];
            if (b->state == N_OK && b->ans.vhash == a->ans.vhash) {
                same++;
                if (ttl < 0 || b->ans.code < ttl)
                    ttl = b->ans.code;
            }
        }
        if (same >= c->quorum) {
            info->held = 1;
            info->ours = a->ans.ours;
            info->ttl_ms = ttl;
        }
    }
    finish(l, REDLOCK_OK);
}

/* redlock_holders: keep the holders a quorum of nodes listed. */
static void holders_judge(redlock *l)
{
    redlock_client *c = l->c;
    tally t = count_nodes(l->res, c->n);
    if (t.ok < c->quorum) {
        finish(l, fail_nodes(l, "list", t));
        return;
    }
    size_t kept = 0;
    for (size_t k = 0; k < l->op.list.n; k++)
        if (l->op.list.out[k].nodes >= c->quorum)
            l->op.list.out[kept++] = l->op.list.out[k];
    l->op.list.n = kept;
    finish(l, REDLOCK_OK);
}

/* ---- keepalive ---- */

/* A held lock with keepalive on refreshes every ttl/3 and watches its
 * validity; the timer is the earlier of the two. */
static void keepalive_arm(redlock *l)
{
    if (!l->lease.keepalive || !l->lease.held || l->op.kind != OP_NONE)
        return;
    int64_t at = l->lease.renewed_at + ms_ns(l->lease.ttl) / 3;
    if (at > l->lease.valid_until)
        at = l->lease.valid_until;
    timer_set(l, at);
}

static void keepalive_lost(redlock *l, const char *why)
{
    char nm[64];
    lease_drop(l);
    lerr(l, REDLOCK_NOT_HELD, "keepalive '%s': the lease is lost: %s", shown(l, nm, sizeof nm), why);
    obs_lease_lost(l, 1, errstr_of(l));
    if (l->text)
        l->text->callerr[0] = '\0';
    client_text(l);
    l->op.result = REDLOCK_NOT_HELD;
    done_push(l);
}

static void keepalive_done(redlock *l, int rc)
{
    redlock_client *c = l->c;
    char why[sizeof ((lock_text *)0)->errstr + 64];
    obs_outcome(c, REDLOCK_STAT_KEEPALIVE, rc);
    l->op.kind = OP_NONE;
    l->op.phase = PH_NONE;
    l->op.seq++;
    if (rc == REDLOCK_OK || (rc != REDLOCK_NOT_HELD && c->now < l->lease.valid_until)) {
        /* held; or an error with time left: try again soon, not later than
         * a third of what is left */
        int64_t at = l->lease.renewed_at + ms_ns(l->lease.ttl) / 3;
        if (rc != REDLOCK_OK) {
            int64_t soon = c->now + (l->lease.valid_until - c->now) / 3;
            at = soon > c->now + ms_ns(10) ? soon : c->now + ms_ns(10);
        }
        timer_set(l, at < l->lease.valid_until ? at : l->lease.valid_until);
        return;
    }
    if (rc == REDLOCK_NOT_HELD)
        snprintf(why, sizeof why, "%s", errstr_of(l));
    else
        snprintf(why, sizeof why, "its TTL ran out before a refresh succeeded (last error: %s)",
                 errstr_of(l));
    timer_clear(l);
    keepalive_lost(l, why);
}

/* The lock's timer fired with no operation in flight: refresh, or the
 * lease ran out. */
static void keepalive_fire(redlock *l)
{
    if (!l->lease.held)
        return;
    if (l->c->now >= l->lease.valid_until) {
        timer_clear(l);
        keepalive_lost(l, "its TTL ran out before a refresh succeeded");
        return;
    }
    l->op.kind = OP_KEEPALIVE;
    l->op.blocking = 0;
    refresh_start(l);
}

/* ---- stopping an operation ---- */

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
    l->op.seq++;
    return written;
}

static void abandon(redlock *l)
{
    forget_requests(l);
    l->op.kind = OP_NONE;
    l->op.phase = PH_NONE;
    l->op.blocking = 0;
    l->op.outstanding = 0;
    timer_clear(l);
    ready_remove(l);
    chan_leave(l);
}

/* Nodes where an acquire being cancelled may have landed: what it took,
 * and while its round runs, every node its request was written to or
 * that said yes. */
static uint32_t maybe_landed(const redlock *l, uint32_t written)
{
    uint8_t ph = l->op.phase;
    if (ph == PH_SLEEP || ph == PH_PARKED || ph == PH_SUBSCRIBE || ph == PH_PROBE)
        return 0;
    uint32_t landed = taken_nodes(l);
    if (ph == PH_ACQUIRE) {
        landed |= written;
        for (size_t i = 0; i < l->c->n; i++)
            if (l->res[i].state == N_OK && (l->res[i].ans.code == 1 || l->res[i].ans.code == 2))
                landed |= bit(i);
    }
    return landed;
}

/* Stop l's operation. An acquire that may have landed anywhere is released
 * there (unless the lock was held before: then it only renewed it); a
 * fair waiter leaves the line. Those requests need no answer. */
static void op_cancel(redlock *l)
{
    redlock_client *c = l->c;
    int acquiring = l->op.kind == OP_TRYLOCK || l->op.kind == OP_LOCK;
    obs_end(l, l->op.kind, REDLOCK_CANCELLED);
    uint32_t written = forget_requests(l);
    if (acquiring && !l->op.held_before) {
        uint32_t landed = maybe_landed(l, written);
        for (size_t i = 0; i < c->n; i++)
            if (landed & bit(i))
                queue_orphan(l, i, S_RELEASE);
        lease_drop(l);
    }
    if (l->op.kind == OP_LOCK && l->wait.queued)
        fair_cancel(l);
    if (l->op.kind == OP_LOCK && l->wait.writer_waits)
        for (size_t i = 0; i < c->n; i++)
            queue_orphan(l, i, S_WLEAVE);
    l->wait.writer_waits = 0;
    if (l->op.kind == OP_UNLOCK)
        lease_drop(l);
    l->wait.queued = 0;
    abandon(l);
    keepalive_arm(l);
}

/* ==== 8. Construction and API =========================================================== */

/* ---- options ---- */

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
    o->restart_guard = -1;
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
    if (o->restart_guard < -1 || o->restart_guard > 1)
        return global_err(REDLOCK_ERR_ARG, "restart_guard must be -1 (auto), 0 (off) or 1 (on)");
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

/* ---- clients ---- */

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

/* Node i from its URL: one shard, a cluster (part 5) or a Sentinel
 * group (part 5b). The parsed URL is on the heap for the call: with the
 * seed list it is some 4 KB, too much for a small thread's stack. */
static int add_node(redlock_client *c, size_t i, const char *url, const net_opts *co)
{
    node *m = &c->nodes[i];
    struct parsed {
        net_url u;
        net_seeds seeds;
        char err[200];
    } *t;
    if (!url)
        return global_err(REDLOCK_ERR_ARG, "URL %zu is NULL", i + 1);
    if (!(t = resp_alloc(sizeof *t)))
        return global_err(REDLOCK_ERR_NOMEM, "out of memory");
    int rc = net_url_parse(&t->u, &t->seeds, url, t->err, sizeof t->err);
    if (rc == RESP_OK)
        rc = url_tls(&t->u, &c->opts, t->err, sizeof t->err);
    if (rc != RESP_OK) {
        rc = c->n == 1 ? global_err(REDLOCK_ERR_ARG, "%s", t->err)
                       : global_err(REDLOCK_ERR_ARG, "URL %zu: %s", i + 1, t->err);
    } else {
        m->opts = *co;
        m->fn.fcall = c->opts.scripts == REDLOCK_SCRIPTS_FUNCTIONS;
        if (t->u.cluster)
            rc = cluster_new(c, i, &t->u, &t->seeds);
        else if (t->u.sentinel)
            rc = sentinel_new(c, i, &t->u, &t->seeds);
        else
            rc = (m->sh = resp_alloc_array(1, sizeof *m->sh)) != NULL ? add_shard(c, i, &t->u)
                                                                        : -1;
        rc = rc < 0 ? global_err(REDLOCK_ERR_NOMEM, "out of memory") : REDLOCK_OK;
    }
    memset(t->u.password, 0, sizeof t->u.password);
    memset(t->seeds.sentinel_password, 0, sizeof t->seeds.sentinel_password);
    resp_free(t);
    return rc;
}

static void free_node(node *m)
{
    for (size_t j = 0; m->sh && j < m->nsh; j++) {
        net_conn_free(m->sh[j].cmd);
        net_conn_free(m->sh[j].sub);
    }
    resp_free(m->sh);
    cluster_free(m->cl);
    sentinel_free(m->sn);
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
    c->guard = o.restart_guard == 1 || (o.restart_guard == -1 && n > 1);
    c->nodes = resp_alloc_array(n, sizeof *c->nodes);
    c->obs.node = resp_alloc_array(n, sizeof *c->obs.node);
    c->pfd_cap = 2 * n;
    c->pfd = resp_alloc_array(c->pfd_cap, sizeof *c->pfd);
    if (!c->nodes || !c->obs.node || !c->pfd) {
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
    obs_init(c);
    if (fill_random(&c->rng, sizeof c->rng) != 0 || c->rng == 0)
        c->rng = (uint64_t)net_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    *out = c;
    return REDLOCK_OK;
}

static void free_chans(chan *ch)
{
    for (chan *next; ch; ch = next) {
        next = ch->next;
        resp_free(ch->name);
        resp_free(ch);
    }
}

void redlock_client_free(redlock_client *c)
{
    if (!c || obs_refused(c, "redlock_client_free"))
        return;
    /* Locks stay valid for redlock_free only; their operations end here
     * without I/O (a held lease is reclaimed by its TTL). */
    for (redlock *l = c->locks.all, *next; l; l = next) {
        next = l->link.next;
        if (l->op.kind != OP_NONE && l->op.kind != OP_KEEPALIVE)
            l->op.result = REDLOCK_CANCELLED;
        l->op.kind = OP_NONE;
        l->op.phase = PH_NONE;
        l->lease.held = 0;
        l->wait.ch = NULL;
        memset(&l->link, 0, sizeof l->link);
        l->c = NULL;
    }
    if (c->nodes)
        for (size_t i = 0; i < c->n; i++)
            free_node(&c->nodes[i]);
    for (size_t b = 0; b < c->chans.nbuckets; b++)
        free_chans(c->chans.buckets[b]);
    free_chans(c->chans.free);
    resp_free(c->chans.buckets);
    resp_free(c->chans.sbuckets);
    resp_free(c->keys.buf);
    resp_free(c->nodes);
    resp_free(c->obs.node);
    resp_free(c->lib_code);
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

/* ---- the engine for an event loop ---- */

int redlock_client_pollfds(redlock_client *c, struct pollfd *fds, int nfds)
{
    int k = 0;
    if (!c || obs_refused(c, "redlock_client_pollfds"))
        return 0;
    conn_iter it = {0, 0, 0, 0};
    for (net_conn *conn; (conn = next_conn(c, &it)) != NULL;) {
        short ev = net_conn_events(conn);
        if (!ev || net_conn_fd(conn) < 0)
            continue;
        if (fds && k < nfds) {
            fds[k].fd = net_conn_fd(conn);
            fds[k].events = ev;
            fds[k].revents = 0;
        }
        k++;
    }
    return k;
}

uint64_t redlock_client_sockets(const redlock_client *c)
{
    uint64_t n = 0;
    if (!c)
        return 0;
    conn_iter it = {0, 0, 0, 0};
    for (net_conn *conn; (conn = next_conn(c, &it)) != NULL;)
        n += net_conn_sockets(conn);
    return n;
}

int redlock_client_timeout_ms(const redlock_client *c)
{
    if (!c)
        return -1;
    if (c->locks.ready)
        return 0;
    return poll_ms(next_due(c), net_now_ns());
}

int redlock_client_process(redlock_client *c, const struct pollfd *fds, int nfds)
{
    if (!c || obs_refused(c, "redlock_client_process"))
        return 0;
    return engine_pass(c, fds, nfds > 0 ? nfds : 0);
}

redlock *redlock_client_done(redlock_client *c)
{
    if (!c || obs_refused(c, "redlock_client_done") || !c->locks.done_head)
        return NULL;
    redlock *l = c->locks.done_head;
    c->locks.done_head = l->link.done_next;
    if (!c->locks.done_head)
        c->locks.done_tail = NULL;
    l->link.in_done = 0;
    l->link.done_next = NULL;
    return l;
}

/* ---- lock handles ---- */

static int has_hash_tag(const char *s, size_t n)
{
    const char *tag;
    size_t tlen;
    return hash_tag(s, n, &tag, &tlen);
}

/* The lock's keys, all in the lock key's hash slot: NAME, and
 * {NAME}:SUFFIX for each suffix (NAME:SUFFIX when NAME has a hash tag);
 * the release channel on plain nodes redlock:NAME. Written into p;
 * returns the end. */
/* The client's key slots (key_at) made room for keys of each bytes. */
static int key_slots(redlock_client *c, size_t each)
{
    if (each <= c->keys.each)
        return 0;
    char *buf = resp_realloc(c->keys.buf, KEY_SLOTS * each);
    if (!buf)
        return -1;
    c->keys.buf = buf;
    c->keys.each = each;
    return 0;
}

static char *layout_keys(lock_keys *k, char *p, const char *name, size_t namelen)
{
    int tag = has_hash_tag(name, namelen);
    k->name = p;
    k->namelen = namelen;
    k->slot = key_slot(name, namelen);
    memcpy(p, name, namelen);
    p[namelen] = '\0';
    p += namelen + 1;
    k->klen = namelen + (tag ? 1 : 3) + SUFFIX_LEN;
    k->freed = p;
    if (tag) {
        memcpy(p, name, namelen);
        p[namelen] = ':';
    } else {
        p[0] = '{';
        memcpy(p + 1, name, namelen);
        memcpy(p + 1 + namelen, "}:", 2);
    }
    memcpy(p + k->klen - SUFFIX_LEN, SUFFIX_FREED, SUFFIX_LEN + 1);
    p += k->klen + 1;
    k->channel = p;
    k->chlen = CHAN_PREFIX_LEN + namelen;
    memcpy(p, CHAN_PREFIX, CHAN_PREFIX_LEN);
    memcpy(p + CHAN_PREFIX_LEN, name, namelen);
    p[k->chlen] = '\0';
    return p + k->chlen + 1;
}

static int has_cluster(const redlock_client *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->nodes[i].cl)
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
    if (ttl_ms < REDLOCK_MIN_TTL_MS)
        return cerr(c, REDLOCK_ERR_ARG,
                    "ttl_ms must be at least %d (got %" PRIu32 "): a lease is its TTL less a "
                    "round trip and the drift allowance (2 ms + ttl x drift_factor)",
                    REDLOCK_MIN_TTL_MS, ttl_ms);
    if (value && (value[0] == '\0' || strlen(value) > MAX_VALUE))
        return cerr(c, REDLOCK_ERR_ARG, "lock value must be 1 to %d bytes", MAX_VALUE);
    if (value && strcmp(value, READERS_MARK) == 0)
        return cerr(c, REDLOCK_ERR_ARG,
                    "lock value '" READERS_MARK "' is what a read-write lock's key holds while "
                    "readers hold it: choose another");
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

/* A handle of this kind on name (the three constructors). */
static int new_handle(redlock **out, redlock_client *c, const char *name, size_t namelen,
                      const char *value, uint32_t ttl_ms, int kind, uint32_t permits)
{
    char token[33];
    if (!out)
        return c ? cerr(c, REDLOCK_ERR_ARG, "out is NULL") : REDLOCK_ERR_ARG;
    *out = NULL;
    if (!c)
        return global_err(REDLOCK_ERR_ARG, "client is NULL");
    if (obs_refused(c, "making a lock handle"))
        return REDLOCK_ERR_ARG;
    int rc = check_new_args(c, name, namelen, value, ttl_ms);
    if (rc != REDLOCK_OK)
        return rc;
    if (!value) {
        if ((rc = random_value(c, token)) != REDLOCK_OK)
            return rc;
        value = token;
    }
    /* one block: the lock, its per-node results, then its strings: the
     * name, {NAME}:freed, redlock:NAME, the value, and the two
     * own channels of a waiter that listens on its own (fair mode, a
     * semaphore) */
    int own = c->opts.fair || kind == LK_SEMAPHORE;
    size_t vlen = strlen(value);
    size_t klen = namelen + 3 + SUFFIX_LEN, chlen = CHAN_PREFIX_LEN + namelen;
    if (key_slots(c, klen + 1) != 0)
        return cerr(c, REDLOCK_ERR_NOMEM, "out of memory");
    size_t total = sizeof(redlock) + c->n * sizeof(nres) + namelen + 1 + klen + 1 +
                   chlen + 1 + vlen + 1 +
                   (own ? (chlen + 1 + vlen + 1) + (klen + 1 + vlen + 1) : 0);
    redlock *l = resp_alloc(total);
    if (!l)
        return cerr(c, REDLOCK_ERR_NOMEM, "out of memory");
    memset(l, 0, sizeof *l + c->n * sizeof(nres));
    l->c = c;
    lock_keys *k = &l->k;
    k->kind = (uint8_t)kind;
    k->permits = permits;
    snprintf(k->permits_str, sizeof k->permits_str, "%" PRIu32, permits);
    char *p = layout_keys(k, (char *)(l->res + c->n), name, namelen);
    k->value = p;
    k->vlen = vlen;
    memcpy(p, value, vlen + 1);
    p += vlen + 1;
    if (own) {
        k->own = p;
        k->own_s = p = put_joined(p, k->channel, k->chlen, value, vlen);
        put_joined(p, k->freed, k->klen, value, vlen);
    }
    l->listen.name = own ? k->own : k->channel;
    l->listen.len = own ? k->chlen + 1 + vlen : k->chlen;
    l->listen.sname = own ? k->own_s : k->freed;
    l->listen.slen = own ? k->klen + 1 + vlen : k->klen;
    l->lease.ttl = ttl_ms;
    snprintf(l->lease.ttl_str, sizeof l->lease.ttl_str, "%" PRIu32, ttl_ms);
    l->wait.holder_pttl = -1;
    l->op.result = REDLOCK_ERR_ARG;
    l->link.next = c->locks.all;
    if (c->locks.all)
        c->locks.all->link.prev = l;
    c->locks.all = l;
    *out = l;
    return REDLOCK_OK;
}

int redlock_new_len(redlock **out, redlock_client *c, const char *name, size_t namelen,
                    const char *value, uint32_t ttl_ms)
{
    return new_handle(out, c, name, namelen, value, ttl_ms, LK_LOCK, 0);
}

int redlock_new_semaphore(redlock **out, redlock_client *c, const char *name, uint32_t permits,
                          const char *value, uint32_t ttl_ms)
{
    if (c && out && (permits == 0 || permits > REDLOCK_MAX_PERMITS)) {
        *out = NULL;
        return cerr(c, REDLOCK_ERR_ARG, "a semaphore has 1 to %d permits (got %" PRIu32 ")",
                    REDLOCK_MAX_PERMITS, permits);
    }
    return new_handle(out, c, name, name ? strlen(name) : 0, value, ttl_ms, LK_SEMAPHORE,
                      permits);
}

int redlock_new_shared(redlock **out, redlock_client *c, const char *name, const char *value,
                       uint32_t ttl_ms)
{
    return new_handle(out, c, name, name ? strlen(name) : 0, value, ttl_ms, LK_SHARED, 0);
}

void redlock_free(redlock *l)
{
    if (!l || (l->c && obs_refused(l->c, "redlock_free")))
        return;
    redlock_client *c = l->c;
    if (c) {
        if (l->op.kind == OP_KEEPALIVE)
            abandon(l);
        else if (l->op.kind != OP_NONE)
            op_cancel(l);
        forget_requests(l);
        timer_clear(l);
        ready_remove(l);
        done_remove(l);
        chan_leave(l);
        if (listens_own(l))
            fair_drop_own(l);
        if (l->link.prev)
            l->link.prev->link.next = l->link.next;
        else
            c->locks.all = l->link.next;
        if (l->link.next)
            l->link.next->link.prev = l->link.prev;
    }
    resp_free(l->text);
    resp_free(l);
}

uint64_t redlock_fence(const redlock *l)
{
    return l ? l->lease.fence : 0;
}

int64_t redlock_validity_ms(const redlock *l)
{
    if (!l || !l->lease.held)
        return 0;
    int64_t left = (l->lease.valid_until - net_now_ns()) / 1000000;
    return left > 0 ? left : 0;
}

const char *redlock_value(const redlock *l)
{
    return l ? l->k.value : NULL;
}

const char *redlock_errstr(const redlock *l)
{
    if (!l)
        return last_err;
    return l->text && l->text->callerr[0] ? l->text->callerr : errstr_of(l);
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
    if (l->op.kind != OP_NONE && l->op.kind != OP_KEEPALIVE)
        return REDLOCK_IN_PROGRESS;
    return l->op.result;
}

/* ---- operations: starting them, and the blocking calls ---- */

/* A call that needs l and its client: 0, or the status it is refused with. */
static int call_ok(redlock *l)
{
    if (!l) { /* (a constant: clang's analyzer does not follow variadic global_err) */
        global_err(REDLOCK_ERR_ARG, "lock is NULL");
        return REDLOCK_ERR_ARG;
    }
    if (!l->c)
        return call_refused(l, REDLOCK_ERR_ARG,
                            "the lock's client was freed: only redlock_free may follow");
    if (l->c->obs.in_hook) {
        char nm[64];
        return call_refused(l, REDLOCK_ERR_ARG, "a call on lock '%s' " IN_HOOK,
                            shown(l, nm, sizeof nm));
    }
    if (l->text)
        l->text->callerr[0] = '\0';
    return REDLOCK_OK;
}

static int op_begin(redlock *l, int kind, int blocking)
{
    int rc = call_ok(l);
    if (rc != REDLOCK_OK)
        return rc;
    redlock_client *c = l->c;
    if (l->op.kind != OP_NONE && l->op.kind != OP_KEEPALIVE)
        return call_refused(l, REDLOCK_ERR_ARG,
                            "an operation is already in flight on this lock (redlock_result "
                            "says when it ends; redlock_cancel stops it)");
    if (l->op.kind == OP_KEEPALIVE)
        abandon(l); /* the caller's operation supersedes the keepalive refresh */
    done_remove(l);
    timer_clear(l);
    c->now = net_now_ns();
    l->op.started = c->now;
    l->op.kind = (uint8_t)kind;
    l->op.phase = PH_NONE;
    l->op.blocking = (uint8_t)blocking;
    l->op.held_before = (uint8_t)l->lease.held;
    l->wait.queued = 0;
    l->op.result = REDLOCK_IN_PROGRESS;
    l->op.began = 1;
    if (l->text)
        l->text->errstr[0] = '\0';
    if (blocking)
        c->errstr[0] = '\0';
    return REDLOCK_OK;
}

/* A blocking call: an operation and the one loop. */

static int op_ended(const redlock_client *c, const void *arg)
{
    (void)c;
    return ((const redlock *)arg)->op.kind == OP_NONE;
}

static int run_blocking(redlock *l)
{
    int rc = run_until(l->c, op_ended, l, INT64_MAX);
    if (rc != REDLOCK_OK) {
        obs_end(l, l->op.kind, rc);
        abandon(l);
        l->op.result = lerr(l, rc, "%s", l->c->errstr);
    }
    return l->op.result;
}

/* Start an operation of this kind on l: its first round (or, for a
 * wait, its first try); a blocking call then runs the one loop until it
 * ends. */
static int op_start(redlock *l, int kind, int blocking, uint32_t wait_ms)
{
    int rc = op_begin(l, kind, blocking);
    if (rc != REDLOCK_OK)
        return rc;
    switch (kind) {
    case OP_TRYLOCK:
        acquire_start(l);
        break;
    case OP_LOCK:
        lock_begin(l, wait_ms);
        break;
    case OP_UNLOCK:
        round_start(l, PH_RELEASE, S_RELEASE, all_nodes(l->c), 0);
        break;
    case OP_REFRESH:
        refresh_start(l);
        break;
    }
    return blocking ? run_blocking(l) : REDLOCK_OK;
}

int redlock_start_trylock(redlock *l)
{
    return op_start(l, OP_TRYLOCK, 0, 0);
}

int redlock_start_lock(redlock *l, uint32_t wait_ms)
{
    return op_start(l, OP_LOCK, 0, wait_ms);
}

int redlock_start_unlock(redlock *l)
{
    return op_start(l, OP_UNLOCK, 0, 0);
}

int redlock_start_refresh(redlock *l)
{
    return op_start(l, OP_REFRESH, 0, 0);
}

int redlock_cancel(redlock *l)
{
    int rc = call_ok(l);
    if (rc != REDLOCK_OK)
        return rc;
    if (l->op.kind == OP_NONE || l->op.kind == OP_KEEPALIVE)
        return call_refused(l, REDLOCK_ERR_ARG, "no operation is in flight on this lock");
    char nm[64];
    op_cancel(l);
    l->op.result = lerr(l, REDLOCK_CANCELLED, "'%s': operation cancelled", shown(l, nm, sizeof nm));
    return REDLOCK_OK;
}

int redlock_keepalive(redlock *l, int on)
{
    int rc = call_ok(l);
    if (rc != REDLOCK_OK)
        return rc;
    if (on != 0 && on != 1)
        return call_refused(l, REDLOCK_ERR_ARG, "keepalive takes 0 or 1 (got %d)", on);
    l->lease.keepalive = on;
    if (on) {
        if (l->op.kind == OP_NONE)
            keepalive_arm(l);
        return REDLOCK_OK;
    }
    if (l->op.kind == OP_KEEPALIVE)
        abandon(l);
    else if (l->op.kind == OP_NONE)
        timer_clear(l);
    return REDLOCK_OK;
}

int redlock_trylock(redlock *l)
{
    return op_start(l, OP_TRYLOCK, 1, 0);
}

int redlock_lock(redlock *l, uint32_t wait_ms)
{
    return op_start(l, OP_LOCK, 1, wait_ms);
}

int redlock_unlock(redlock *l)
{
    return op_start(l, OP_UNLOCK, 1, 0);
}

int redlock_refresh(redlock *l)
{
    return op_start(l, OP_REFRESH, 1, 0);
}

int redlock_inspect(redlock *l, redlock_info *info)
{
    if (l && !info)
        return call_refused(l, REDLOCK_ERR_ARG, "info is NULL");
    int rc = op_begin(l, OP_INSPECT, 1);
    if (rc != REDLOCK_OK)
        return rc;
    memset(info, 0, sizeof *info);
    info->ttl_ms = -1;
    l->op.info = info;
    round_start(l, PH_STATUS, S_STATUS, all_nodes(l->c), 0);
    rc = run_blocking(l);
    l->op.info = NULL;
    return rc;
}

int redlock_holders(redlock *l, redlock_holder *out, size_t cap, size_t *count)
{
    if (count)
        *count = 0;
    if (l && !out && cap)
        return call_refused(l, REDLOCK_ERR_ARG, "out is NULL, cap %zu", cap);
    int rc = op_begin(l, OP_INSPECT, 1);
    if (rc != REDLOCK_OK)
        return rc;
    l->op.list.out = out;
    l->op.list.cap = out ? cap : 0;
    l->op.list.n = 0;
    round_start(l, PH_LIST, S_LIST, all_nodes(l->c), 0);
    rc = run_blocking(l);
    if (count && rc == REDLOCK_OK)
        *count = l->op.list.n;
    l->op.list.out = NULL;
    return rc;
}

/* ---- observability: the calls ---- */

/* len bytes of src into out at offset `at`, as far as the caller's size
 * reaches (a program built with an older, smaller redlock_stats). */
static void put_part(void *out, size_t size, size_t at, const void *src, size_t len)
{
    if (at < size)
        memcpy((char *)out + at, src, len < size - at ? len : size - at);
}

/* A kept histogram into out at offset `at`, as far as size reaches. */
static void put_hist(void *out, size_t size, size_t at, const obs_hist *h)
{
    redlock_histogram r;
    r.count = h->count;
    r.sum_us = h->sum_us;
    r.max_us = h->max_us;
    for (unsigned b = 0; b < REDLOCK_STATS_BUCKETS; b++)
        r.bucket[b] = (uint64_t)h->hi[b] << 32 | h->lo[b];
    put_part(out, size, at, &r, sizeof r);
}

int redlock_client_stats(const redlock_client *c, redlock_stats *out, size_t size)
{
    if (!c || !out || size < sizeof out->size)
        return global_err(REDLOCK_ERR_ARG, "redlock_client_stats: %s",
                          !c ? "client is NULL" : !out ? "out is NULL" : "size is too small");
    const size_t filled = size < sizeof *out ? size : sizeof *out;
    const uint64_t up = (uint64_t)(net_now_ns() - c->obs.created) / 1000000;
    const uint32_t nodes = (uint32_t)c->n;
#define PUT(field, src) put_part(out, size, offsetof(redlock_stats, field), src, sizeof out->field)
    memset(out, 0, size);
    PUT(size, &filled);
    PUT(uptime_ms, &up);
    PUT(op, c->obs.op);
    PUT(leases_lost, &c->obs.leases_lost);
    put_hist(out, size, offsetof(redlock_stats, acquire_wait), &c->obs.acquire_wait);
    put_hist(out, size, offsetof(redlock_stats, round_trip), &c->obs.round_trip);
    put_hist(out, size, offsetof(redlock_stats, hold), &c->obs.hold);
    PUT(events, c->obs.events);
    PUT(nodes, &nodes);
#undef PUT
    put_part(out, size, offsetof(redlock_stats, node), c->obs.node, c->n * sizeof out->node[0]);
    return REDLOCK_OK;
}

uint64_t redlock_stats_bucket_max(unsigned i)
{
    if (i >= REDLOCK_STATS_BUCKETS - 1)
        return UINT64_MAX;
    if (i < 4)
        return i;
    return ((uint64_t)(5 + i % 4) << (i / 4 - 1)) - 1; /* see hist_bucket */
}

uint64_t redlock_stats_quantile(const redlock_histogram *h, double q)
{
    if (!h || h->count == 0)
        return 0;
    double want = (q > 0 ? (q < 1 ? q : 1) : 0) * (double)h->count;
    uint64_t rank = (uint64_t)want, seen = 0;
    if ((double)rank < want || rank == 0)
        rank++;
    for (unsigned i = 0; i < REDLOCK_STATS_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t top = redlock_stats_bucket_max(i);
            return top < h->max_us ? top : h->max_us;
        }
    }
    return h->max_us;
}

const char *redlock_event_name(int type)
{
    if (type <= 0 || type >= REDLOCK_EVENT_TYPES || !event_names[type])
        return "unknown";
    return event_names[type];
}

void redlock_client_on_event(redlock_client *c, void (*fn)(const redlock_event *ev, void *arg),
                             void *arg)
{
    if (!c || obs_refused(c, "redlock_client_on_event"))
        return;
    c->obs.fn = fn;
    c->obs.arg = fn ? arg : NULL;
}

/* ==== 9. Admin: the function library on the nodes ======================================= */

const char *redlock_functions_library(void)
{
    return FUNCTIONS_LIBRARY;
}

size_t redlock_functions_code(char *buf, size_t cap)
{
    return library_text(buf, buf ? cap : 0);
}

enum { A_LOAD = K_ADMIN, A_LIST = K_ADMIN + 1 }; /* tag kinds of the requests below */

typedef struct admin_node {
    const net_url *url;
    net_conn *conn;
    unsigned pending; /* replies still to come */
    int load_ok;      /* FUNCTION LOAD answered with the library's name */
    int master_only;  /* a Sentinel member's master: ROLE on connect (net_opts) */
    redlock_functions_node info;
} admin_node;

typedef struct admin_call {
    admin_node *a;
    size_t n;
} admin_call;

static int maps_read(const redlock_client *c, const void *arg)
{
    (void)arg;
    for (size_t i = 0; i < c->n; i++) {
        const cluster *cl = c->nodes[i].cl;
        if ((cl && (!map_known(cl) || cl->map_busy)) || !sentinel_settled(c, i))
            return 0;
    }
    return 1;
}

/* Cluster members: read the slot map now if the client has none yet;
 * Sentinel members: find the master unless it is confirmed (the engine
 * runs until every cluster answered CLUSTER SLOTS and every pass is over,
 * or one request deadline; a pass asks each sentinel in turn). */
static void admin_maps(redlock_client *c)
{
    int missing = 0;
    size_t sentinels = 0;
    c->now = net_now_ns();
    for (size_t i = 0; i < c->n; i++) {
        if (c->nodes[i].cl && !map_known(c->nodes[i].cl)) {
            map_soon(c, i);
            missing = 1;
        }
        if (c->nodes[i].sn && !sentinel_up(c, i)) {
            sentinel_need(c, i);
            missing = 1;
            sentinels = c->nodes[i].sn->n > sentinels ? c->nodes[i].sn->n : sentinels;
        }
    }
    if (missing)
        run_until(c, maps_read, NULL,
                  c->now + (int64_t)(sentinels + 1) *
                               ms_ns(c->opts.io_timeout_ms + c->opts.connect_timeout_ms));
}

static void admin_target(admin_node *a, const net_url *u, const char *desc)
{
    if (!a)
        return;
    a->url = u;
    snprintf(a->info.node, sizeof a->info.node, "%.*s", (int)sizeof a->info.node - 1, desc);
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
        if (m->sn) { /* its master, if one is confirmed */
            admin_target(k < cap ? &a[k] : NULL, net_conn_url(m->sh[0].cmd), node_desc(c, i));
            if (k < cap)
                a[k].master_only = 1;
            if (k < cap && !sentinel_up(c, i)) {
                a[k].url = NULL;
                a[k].info.status = REDLOCK_ERR_IO;
                snprintf(a[k].info.detail, sizeof a[k].info.detail, "no master found: %.*s",
                         (int)sizeof a[k].info.detail - 18, sentinel_why(c, i));
            }
            k++;
            continue;
        }
        if (!m->cl || !map_known(m->cl)) {
            admin_target(k < cap ? &a[k] : NULL, net_conn_url(m->sh[0].cmd), node_desc(c, i));
            if (k < cap && m->cl) {
                a[k].url = NULL;
                a[k].info.status = REDLOCK_ERR_IO;
                snprintf(a[k].info.detail, sizeof a[k].info.detail,
                         "could not read the cluster's slot map (CLUSTER SLOTS)");
            }
            k++;
            continue;
        }
        for (size_t j = 0; j < m->nsh; j++) {
            int serves = 0;
            for (size_t s = 0; s < NSLOTS && !serves; s++)
                serves = m->cl->slots[s] == (int16_t)j;
            if (!serves)
                continue;
            admin_target(k < cap ? &a[k] : NULL, net_conn_url(m->sh[j].cmd),
                         net_conn_desc(m->sh[j].cmd));
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

/* One reply (or failure) on an admin call's connection (from the engine). */
static void admin_reply(redlock_client *c, net_tag tag, int st, const resp_reply *r)
{
    admin_node *a = tag.owner;
    a->pending--;
    if (st != RESP_OK) {
        admin_fail(a, st, "%s", net_conn_errstr(a->conn));
        return;
    }
    if (tag.kind == A_LOAD) {
        /* "already exists": ours or another's; the list tells which */
        if (r->type == RESP_ERROR && !(error_starts(r, "ERR Library") && r->len >= 14 &&
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
    if (admin_list(a, r, c->lib_code, c->lib_len) != 0)
        admin_fail(a, REDLOCK_ERR_PROTOCOL, "FUNCTION LIST: unexpected reply");
}

static int admin_answered(const redlock_client *c, const void *arg)
{
    const admin_call *call = arg;
    (void)c;
    for (size_t i = 0; i < call->n; i++)
        if (call->a[i].pending)
            return 0;
    return 1;
}

/* Send each node its requests on its own connection, then run the engine
 * (with those connections) until every reply is in or its deadline passed. */
static void admin_exchange(redlock_client *c, admin_node *a, size_t n, int load,
                           net_conn **conns)
{
    static const char *const list[] = {"FUNCTION", "LIST", "LIBRARYNAME", "redlock_v*",
                                       "WITHCODE"};
    const size_t list_lens[] = {8, 4, 11, 10, 8};
    const char *argv[3] = {"FUNCTION", "LOAD", c->lib_code};
    const size_t lens[3] = {8, 4, c->lib_len};
    int64_t now = net_now_ns();
    admin_call call = {a, n};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        net_tag tload = {&a[i], 0, A_LOAD}, tlist = {&a[i], 0, A_LIST};
        if (!a[i].conn)
            continue;
        if ((load && net_conn_request(a[i].conn, 3, argv, lens, tload, 0, now) != RESP_OK) ||
            net_conn_request(a[i].conn, 5, list, list_lens, tlist, 0, now) != RESP_OK) {
            admin_fail(&a[i], REDLOCK_ERR_NOMEM, "out of memory");
            net_conn_close(a[i].conn);
            continue;
        }
        a[i].pending = load ? 2 : 1;
        conns[k++] = a[i].conn;
    }
    c->side.conn = conns;
    c->side.n = k;
    run_until(c, admin_answered, &call,
              now + ms_ns(c->opts.connect_timeout_ms + 2 * c->opts.io_timeout_ms + 100));
    c->side.conn = NULL;
    c->side.n = 0;
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
    if (obs_refused(c, what))
        return REDLOCK_ERR_ARG;
    c->errstr[0] = '\0';
    admin_maps(c);
    size_t n = library_targets(c, NULL, 0);
    if (count)
        *count = n;
    admin_node *a = resp_alloc_array(n, sizeof *a);
    net_conn **conns = resp_alloc_array(n, sizeof(net_conn *));
    if (!a || !conns || library_code(c) != RESP_OK) {
        resp_free(a);
        resp_free(conns);
        return cerr(c, REDLOCK_ERR_NOMEM, "%s: out of memory", what);
    }
    library_targets(c, a, n);
    /* FUNCTION LIST WITHCODE carries every redlock_v* library's text: more
     * room than lock replies need */
    net_opts o = conn_opts(&c->opts);
    o.limits.max_bulk = 1u << 20;
    o.limits.max_array = 4096;
    o.max_reply = (1u << 22);
    for (size_t i = 0; i < n; i++) {
        o.master_only = a[i].master_only;
        if (a[i].url && net_conn_new(&a[i].conn, a[i].url, &o) != RESP_OK)
            admin_fail(&a[i], REDLOCK_ERR_NOMEM, "out of memory");
    }
    admin_exchange(c, a, n, load, conns);
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
    resp_free(conns);
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
