/* torture.c - the fault harness, its holders and its checker (torture.h). */
#define _GNU_SOURCE
#include "torture.h"

#include "fixture.h"
#include "fx_cluster.h"
#include "fx_proxy.h"
#include "redlock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- parameters ------------------------------------------------------------------ */

#define NH 3        /* holders per scenario                              */
#define MAX_NODES 6 /* 5 for the quorum; the cluster has 3 + 3           */
#define QUORUM_NODES 5
#define TTL_MS 500           /* every lock's TTL                                    */
#define IO_MS 100            /* the holders' io_timeout_ms and connect_timeout_ms  */
#define WAIT_MS 400          /* redlock_lock's wait                                 */
#define GUARD_MS 100         /* a holder writes only with this much validity left  */
#define FAILOVER_TTL_MS 4000 /* cluster/failover: a lease that outlives a failover */
#define LONG_HOLD_MS(ttl) ((ttl) < 1000 ? 3 * (int64_t)(ttl) : 3000) /* refreshing */
#define PAUSE_POINT_MS 40 /* a flagged holder's slow step between check and write */
#define RES_IO_MS 2000    /* the resource's I/O bound                           */
#define MAX_PAUSES 64
#define HOLDER_GRACE_MS 3000     /* after the end, before holders are killed       */
#define HOLDER_START_MS 5000     /* for holders to exec and get ready              */
#define HOLDER_CAP_US 60000000LL /* a holder never runs past its share + this  */
#define MAX_RECS 2000000         /* records read per holder log                         */
#define MIN_SHARE_S 0.5

/* libfaketime deadlocks a process built with AddressSanitizer (its lazy
 * dlsym allocates inside ASan's allocator): such builds skip the scenario. */
#if defined(__SANITIZE_ADDRESS__)
#define TT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TT_ASAN 1
#endif
#endif
#ifndef TT_ASAN
#define TT_ASAN 0
#endif

/* libfaketime for this program's own architecture and C library: a holder
 * is this program, and a library of another (the host's x86-64 one, seen
 * by a target program under qemu-user; a glibc one by a musl build) would
 * not load. Elsewhere the clock scenario is skipped. */
#if defined(__GLIBC__) && defined(__x86_64__) && !defined(__ILP32__)
#define TT_MULTIARCH "x86_64-linux-gnu"
#elif defined(__GLIBC__) && defined(__aarch64__)
#define TT_MULTIARCH "aarch64-linux-gnu"
#endif
static const char *const faketime_paths[] = {
#ifdef TT_MULTIARCH
    "/usr/lib/" TT_MULTIARCH "/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1",
#endif
    NULL};

/* ---- what holders and the harness share ------------------------------------------ */

enum { ST_IDLE, ST_ACQUIRING, ST_HOLDING, ST_PAUSE_POINT, ST_RELEASING, ST_DONE };
enum { CMD_NONE, CMD_LONG_HOLD, CMD_PAUSE_POINT, CMD_STEADY_HOLD };

typedef struct shared {
    int64_t base_us;    /* CLOCK_MONOTONIC when the map was made (set before any holder starts) */
    _Atomic int end_ms; /* holders stop at base_us + end_ms ms (0: not yet); an int, not a
                           64-bit atomic: 32-bit MIPS has no lock-free one, and libatomic's
                           locks do not work across the forked holders */
    _Atomic int quiet;        /* holders stop acquiring while set */
    _Atomic int state[NH];
    _Atomic int cmd[NH];
} shared;

/* One line of a holder's log. Times are CLOCK_MONOTONIC microseconds. */
enum { R_OP = 1, R_GRANT, R_WRITE, R_END, R_CLOCK };
enum { OP_LOCK = 1, OP_UNLOCK, OP_REFRESH };

typedef struct rec {
    int32_t kind;
    int32_t op;  /* R_OP: OP_*                                              */
    int32_t rc;  /* R_OP: status; R_WRITE: 1 accepted, 0 refused, -1 failed */
    int32_t seq; /* the holder's grant number                               */
    int64_t t0, t1;
    int64_t aux; /* R_OP: allowed µs; R_GRANT: validity µs; R_END: lease end;
                    R_CLOCK: widest wall-minus-monotonic spread seen, µs    */
    uint64_t token;
} rec;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(int64_t us)
{
    if (us <= 0)
        return;
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    for (int i = 0; i < 100 && nanosleep(&ts, &ts) != 0 && errno == EINTR; i++) {
    }
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A number in [lo, hi]. */
static int rnd(uint64_t *s, int lo, int hi)
{
    return hi <= lo ? lo : lo + (int)(splitmix(s) % (uint64_t)(hi - lo + 1));
}

/* ---- the fenced resource, as a holder talks to it ---------------------------------- */

/* Accept a write only if its token is above the last accepted one, or equal
 * and from the same owner (a grant writes more than once). */
static const char res_script[] =
    "local key = KEYS[1]\n"
    "local token, grant = tonumber(ARGV[1]), ARGV[2]\n"
    "local last = redis.call('HMGET', key, 'token', 'grant')\n"
    "local last_token = tonumber(last[1]) or -1\n"
    "if token > last_token or (token == last_token and grant == last[2]) then\n"
    "  redis.call('HSET', key, 'token', ARGV[1], 'grant', grant)\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

static int res_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    struct timeval tv = {RES_IO_MS / 1000, (RES_IO_MS % 1000) * 1000};
    int one = 1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* EVAL the script for (token, grant): 1 accepted, 0 refused, -1 failed. */
static int res_write(int fd, const char *key, uint64_t token, const char *grant)
{
    char req[1024], tok[32], reply[256];
    snprintf(tok, sizeof tok, "%llu", (unsigned long long)token);
    int n = snprintf(req, sizeof req,
                     "*6\r\n$4\r\nEVAL\r\n$%zu\r\n%s\r\n$1\r\n1\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n"
                     "$%zu\r\n%s\r\n",
                     strlen(res_script), res_script, strlen(key), key, strlen(tok), tok,
                     strlen(grant), grant);
    if (fd < 0 || n <= 0 || (size_t)n >= sizeof req)
        return -1;
    for (int off = 0, i = 0; off < n && i < 100; i++) {
        ssize_t w = send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (int)w;
    }
    size_t got = 0;
    for (int i = 0; i < 100 && got < sizeof reply - 1; i++) {
        ssize_t r = recv(fd, reply + got, sizeof reply - 1 - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
        reply[got] = '\0';
        if (strstr(reply, "\r\n"))
            return strncmp(reply, ":1\r\n", 4) == 0 ? 1 : strncmp(reply, ":0\r\n", 4) == 0 ? 0 : -1;
    }
    return -1;
}

/* ---- a holder process ---------------------------------------------------------------- */

typedef struct holder {
    int index, logfd, resfd, resport;
    const char *reskey;
    shared *sh;
    redlock *l;
    int64_t end, valid_until, last_write, ttl;
    int seq;
    uint64_t token;
    int64_t wall_min, wall_max; /* wall minus monotonic, µs */
    uint64_t rng;
} holder;

static void log_rec(holder *h, rec r)
{
    if (write(h->logfd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(3);
}

static void note_clock(holder *h)
{
    int64_t d = wall_us() - mono_us();
    if (d < h->wall_min)
        h->wall_min = d;
    if (d > h->wall_max)
        h->wall_max = d;
}

/* Validity left by the library's clock, and when it ends by ours. */
static int64_t validity_left(holder *h)
{
    int64_t v = redlock_validity_ms(h->l);
    return v > 0 ? v : 0;
}

static int do_write(holder *h)
{
    /* The owner, not the grant: an owner that takes the lock again while
     * its key is still there (its release was lost) continues its lease
     * with the same token, as the protocol says. */
    char grant[32];
    snprintf(grant, sizeof grant, "holder-%d", h->index);
    int64_t t0 = mono_us();
    int rc = res_write(h->resfd, h->reskey, h->token, grant);
    if (rc < 0) { /* reconnect once: the resource is never faulted */
        if (h->resfd >= 0)
            close(h->resfd);
        h->resfd = res_connect(h->resport);
    }
    h->last_write = mono_us();
    log_rec(h, (rec){R_WRITE, 0, rc, h->seq, t0, h->last_write, 0, h->token});
    return rc;
}

/* Runs one operation and logs it with its deadline (torture.h). */
static int timed_op(holder *h, int op, uint32_t wait_ms)
{
    int64_t t0 = mono_us(), allowed = (int64_t)(IO_MS /* connect */ + IO_MS /* io */) * 1000;
    int rc;
    if (op == OP_LOCK) {
        atomic_store(&h->sh->state[h->index], ST_ACQUIRING);
        rc = redlock_lock(h->l, wait_ms);
        allowed += (int64_t)wait_ms * 1000;
    } else if (op == OP_UNLOCK) {
        rc = redlock_unlock(h->l);
    } else {
        rc = redlock_refresh(h->l);
    }
    int64_t t1 = mono_us();
    log_rec(h, (rec){R_OP, op, rc, h->seq, t0, t1, allowed, 0});
    if (rc == REDLOCK_OK && op != OP_UNLOCK)
        h->valid_until = t1 + validity_left(h) * 1000;
    return rc;
}

/* Write while the lease has GUARD_MS left: a few times, or (long hold) for
 * up to LONG_HOLD_MS with refreshes, or (steady hold) until the lease runs
 * low without refreshing. A pause point sleeps between the check and the
 * write, where the harness stops the process. */
static void hold(holder *h, int cmd)
{
    int64_t start = mono_us(), next_refresh = start + h->ttl * 1000 / 3;
    int long_hold = cmd == CMD_LONG_HOLD || cmd == CMD_STEADY_HOLD;
    int writes = long_hold ? 1000 : rnd(&h->rng, 1, 3);
    for (int i = 0; i < writes; i++) {
        if (validity_left(h) < GUARD_MS)
            return;
        if (cmd == CMD_PAUSE_POINT && i == 0) {
            atomic_store(&h->sh->state[h->index], ST_PAUSE_POINT);
            sleep_us(PAUSE_POINT_MS * 1000);
            atomic_store(&h->sh->state[h->index], ST_HOLDING);
        }
        do_write(h);
        if (!long_hold)
            continue;
        if (mono_us() - start > LONG_HOLD_MS(h->ttl) * 1000 || mono_us() > h->end)
            return;
        sleep_us(20000);
        if (cmd == CMD_LONG_HOLD && mono_us() >= next_refresh) {
            if (timed_op(h, OP_REFRESH, 0) == REDLOCK_NOT_HELD)
                return;
            next_refresh = mono_us() + h->ttl * 1000 / 3;
        }
    }
}

static void cycle(holder *h)
{
    int cmd = atomic_exchange(&h->sh->cmd[h->index], CMD_NONE);
    note_clock(h);
    h->seq++;
    int64_t t0 = mono_us(), left_ms = (h->end - t0) / 1000;
    if (left_ms < 10)
        return;
    int rc = timed_op(h, OP_LOCK, (uint32_t)(left_ms < WAIT_MS ? left_ms : WAIT_MS));
    if (rc != REDLOCK_OK) {
        atomic_store(&h->sh->state[h->index], ST_IDLE);
        if (cmd != CMD_NONE) /* keep the request for the next grant */
            atomic_store(&h->sh->cmd[h->index], cmd);
        if (mono_us() - t0 < 2000)
            sleep_us(rnd(&h->rng, 5, 20) * 1000); /* an error at once: do not spin */
        return;
    }
    int64_t granted = mono_us();
    h->token = redlock_fence(h->l);
    log_rec(h, (rec){R_GRANT, 0, 0, h->seq, t0, granted, (h->valid_until - granted), h->token});
    atomic_store(&h->sh->state[h->index], ST_HOLDING);
    hold(h, cmd);
    atomic_store(&h->sh->state[h->index], ST_RELEASING);
    int64_t release = mono_us();
    int64_t lease_end = release < h->valid_until ? release : h->valid_until;
    timed_op(h, OP_UNLOCK, 0);
    log_rec(h, (rec){R_END, 0, 0, h->seq, granted, release, lease_end, h->token});
    atomic_store(&h->sh->state[h->index], ST_IDLE);
    sleep_us(rnd(&h->rng, 0, 2000));
}

static shared *map_shared(const char *dir, int create)
{
    char path[300];
    snprintf(path, sizeof path, "%s/shared", dir);
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0600);
    if (fd < 0)
        return NULL;
    if (create && ftruncate(fd, sizeof(shared)) != 0) {
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

/* argv: exe TT_HOLDER_ARG dir index end_us lock reskey resport wait_replicas seed ttl url... */
int tt_holder_main(int argc, char **argv)
{
    if (argc < 12)
        return 2;
    holder h;
    memset(&h, 0, sizeof h);
    const char *dir = argv[2];
    h.index = atoi(argv[3]);
    h.end = strtoll(argv[4], NULL, 10);
    h.reskey = argv[6];
    h.resport = atoi(argv[7]);
    h.rng = strtoull(argv[9], NULL, 10);
    h.ttl = atoi(argv[10]);
    h.wall_min = INT64_MAX;
    h.wall_max = INT64_MIN;
    if (h.index < 0 || h.index >= NH || h.ttl < 1 || !(h.sh = map_shared(dir, 0)))
        return 2;
    char path[300];
    snprintf(path, sizeof path, "%s/h%d.log", dir, h.index);
    h.logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    h.resfd = res_connect(h.resport);
    redlock_options o;
    redlock_options_init(&o);
    o.connect_timeout_ms = IO_MS;
    o.io_timeout_ms = IO_MS;
    o.retry_min_ms = 5;
    o.retry_max_ms = 50;
    o.wait_replicas = atoi(argv[8]);
    redlock_client *c = NULL;
    char value[32];
    snprintf(value, sizeof value, "holder-%d-%d", h.index, (int)getpid());
    if (h.logfd < 0 ||
        redlock_client_new(&c, (const char *const *)argv + 11, (size_t)(argc - 11), &o) !=
            REDLOCK_OK ||
        redlock_new(&h.l, c, argv[5], value, (uint32_t)h.ttl) != REDLOCK_OK) {
        fprintf(stderr, "holder %d: %s\n", h.index, redlock_last_errstr());
        redlock_client_free(c);
        return 2;
    }
    /* argv's end is a hard cap; the run's end comes through shared memory
     * once every holder is ready (0 until then), and a fault may move it */
    int64_t cap = h.end;
    atomic_store(&h.sh->state[h.index], ST_IDLE);
    for (long i = 0; i < 10000000L && mono_us() < cap; i++) {
        int end_ms = atomic_load(&h.sh->end_ms);
        int64_t end = end_ms ? h.sh->base_us + (int64_t)end_ms * 1000 : 0;
        if (end != 0 && mono_us() >= end)
            break;
        h.end = end != 0 && end < cap ? end : cap;
        if (end == 0 || atomic_load(&h.sh->quiet)) {
            atomic_store(&h.sh->state[h.index], ST_IDLE);
            sleep_us(2000);
            continue;
        }
        cycle(&h);
    }
    note_clock(&h);
    log_rec(&h, (rec){R_CLOCK, 0, 0, 0, 0, 0, h.wall_max - h.wall_min, 0});
    atomic_store(&h.sh->state[h.index], ST_DONE);
    redlock_free(h.l);
    redlock_client_free(c);
    if (h.resfd >= 0)
        close(h.resfd);
    close(h.logfd);
    munmap(h.sh, sizeof(shared));
    return 0;
}

/* ---- topologies ---------------------------------------------------------------------- */

typedef struct topo {
    int kind, nn;
    fx_server node[MAX_NODES]; /* one node and the quorum; the cluster's are in cl */
    fx_cluster cl;
    fx_server res; /* the fenced resource: never behind a relay, never faulted */
} topo;

static fx_server *tnode(topo *t, int i)
{
    return t->kind == TT_CLUSTER ? fx_cluster_node(&t->cl, i) : &t->node[i];
}

static void topo_stop(topo *t)
{
    if (t->kind == TT_CLUSTER)
        fx_cluster_stop(&t->cl);
    for (int i = 0; t->kind != TT_CLUSTER && i < t->nn; i++)
        fx_server_stop(&t->node[i]);
    fx_server_stop(&t->res);
}

/* A quorum's holders run with the restart guard (on by default): a node
 * younger than the lease does not count toward their majority. Let fresh
 * servers age past the lease (uptime is whole seconds: 1 s is past any TTL
 * here but the cluster's, which runs without a quorum) before the first
 * scenario, or it would be judged on no grants at all. */
static void age_past_lease(topo *t)
{
    char out[8192];
    for (int i = 0; i < t->nn; i++)
        for (int k = 0; k < 40; k++) {
            const char *up = NULL;
            if (fx_cmd(&t->node[i], out, sizeof out, "INFO server") == 0)
                up = strstr(out, "uptime_in_seconds:");
            if (!up || atol(up + 18) >= 2)
                break;
            fx_sleep_ms(100);
        }
}

static int topo_start(topo *t, int kind)
{
    memset(t, 0, sizeof *t);
    t->kind = kind;
    if (fx_server_start(&t->res, NULL) != 0)
        return -1;
    if (kind == TT_CLUSTER) {
        t->nn = 6;
        if (fx_cluster_start(&t->cl, 3, 1) != 0) {
            fx_server_stop(&t->res);
            return -1;
        }
        return 0;
    }
    t->nn = kind == TT_ONE ? 1 : QUORUM_NODES;
    for (int i = 0; i < t->nn; i++)
        if (fx_server_start(&t->node[i], NULL) != 0) {
            t->nn = i;
            topo_stop(t);
            return -1;
        }
    if (kind == TT_QUORUM)
        age_past_lease(t);
    return 0;
}

/* ---- a run: one scenario ----------------------------------------------------------- */

typedef struct run run;
typedef struct scen {
    const char *name, *what;
    int overlap_zero; /* 1: asserted; 2: asserted once issue 25 is fixed; 0: reported */
    int stale_zero;   /* the same for stale writes accepted                          */
    int tokens_rise;  /* the same for token regressions                              */
    int faketime;     /* holder 0 runs under libfaketime                              */
    int wait_replicas;
    void (*fault)(run *r);
    int ttl_ms; /* 0: TTL_MS */
} scen;

struct run {
    const scen *sc;
    topo *t;
    const tt_config *cfg;
    fx_proxy px;
    int proxied;
    pid_t pid[NH];
    shared *sh;
    char dir[64], lock[64], reskey[80], ftfile[300];
    double start, end; /* fx_now_ms; end moves on when a fault needs it (extend) */
    double faults_end; /* no fault begins after this: the scenario's share   */
    uint64_t rng;
    int64_t pause[NH][MAX_PAUSES][2];
    int npause[NH];
    long faults;
    int slot;
    char note[160];
};

static void say(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(run *r, const char *fmt, ...)
{
    if (!r->cfg->verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  [%7.0f ms] %s: ", fx_now_ms() - r->start, r->sc->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Sleep ms, but not past the end of the run. */
static void nap(run *r, int ms)
{
    double left = r->end - fx_now_ms();
    if (left > 0)
        fx_sleep_ms(ms < left ? ms : (int)left);
}

static int running(run *r)
{
    return fx_now_ms() < r->end;
}

/* Keep the holders (and the run) going ms from now at least: a fault that
 * has begun is seen through to the grants after it. */
static void extend(run *r, int ms)
{
    double end = fx_now_ms() + ms;
    if (end <= r->end)
        return;
    atomic_store(&r->sh->end_ms, (int)((mono_us() - r->sh->base_us) / 1000 + ms));
    r->end = end;
}

static void link_mode(run *r, int h, int n, int mode, int delay_ms)
{
    if (r->proxied)
        fx_proxy_set(&r->px, h * r->t->nn + n, mode, delay_ms);
}

static void heal(run *r)
{
    for (int h = 0; h < NH; h++)
        for (int n = 0; n < r->t->nn; n++)
            link_mode(r, h, n, FX_LINK_PASS, 0);
}

/* Wait (bounded by the run's end) until holder h is in state st. */
static int wait_state(run *r, int h, int st)
{
    for (int i = 0; i < 100000 && running(r); i++) {
        if (atomic_load(&r->sh->state[h]) == st)
            return 0;
        sleep_us(500);
    }
    return -1;
}

/* A holder that holds for long (cmd: refreshing or not): its index, or -1. */
static int long_holder(run *r, int cmd)
{
    int h = rnd(&r->rng, 0, NH - 1);
    atomic_store(&r->sh->cmd[h], cmd);
    if (wait_state(r, h, ST_HOLDING) != 0) {
        atomic_store(&r->sh->cmd[h], CMD_NONE);
        return -1;
    }
    return h;
}

/* k distinct node indexes of n, into out. */
static void pick_nodes(run *r, int n, int k, int *out)
{
    int all[MAX_NODES];
    for (int i = 0; i < n; i++)
        all[i] = i;
    for (int i = 0; i < k && i < n; i++) {
        int j = rnd(&r->rng, i, n - 1), tmp = all[i];
        all[i] = all[j];
        all[j] = tmp;
        out[i] = all[i];
    }
}

/* SIGKILL nodes[0..k) together, then start them again empty. Together:
 * one at a time, a holder's refresh would set its key again on each node
 * that came back while a majority still had it. */
static void crash_restart_nodes(run *r, const int *nodes, int k)
{
    for (int i = 0; i < k; i++)
        fx_server_kill(tnode(r->t, nodes[i]));
    for (int i = 0; i < k; i++)
        if (fx_server_restart(tnode(r->t, nodes[i])) != 0)
            snprintf(r->note, sizeof r->note, "node %d did not restart", nodes[i]);
}

/* ---- faults: each is one cycle, healed before it returns ---------------------------------- */

static void f_delay_reset(run *r)
{
    for (int h = 0; h < NH; h++)
        for (int n = 0; n < r->t->nn; n++)
            if (rnd(&r->rng, 0, 2) == 0)
                link_mode(r, h, n, FX_LINK_PASS, rnd(&r->rng, 1, 60));
    say(r, "delays on");
    r->faults++;
    for (int i = 0; i < 4 && running(r); i++) {
        nap(r, rnd(&r->rng, 50, 200));
        int link = rnd(&r->rng, 0, NH * r->t->nn - 1);
        fx_proxy_reset(&r->px, link);
        r->faults++;
        say(r, "reset link %d", link);
    }
    heal(r);
    nap(r, rnd(&r->rng, 50, 200));
}

static void f_holder_pause(run *r)
{
    int h = rnd(&r->rng, 0, NH - 1);
    atomic_store(&r->sh->cmd[h], CMD_PAUSE_POINT);
    if (wait_state(r, h, ST_PAUSE_POINT) != 0) {
        atomic_store(&r->sh->cmd[h], CMD_NONE);
        return;
    }
    int ms = rnd(&r->rng, 2 * TTL_MS, 3 * TTL_MS);
    int k = r->npause[h]++ % MAX_PAUSES;
    extend(r, ms + 200); /* others take the lock and write meanwhile */
    r->pause[h][k][0] = mono_us();
    kill(r->pid[h], SIGSTOP);
    say(r, "holder %d stopped for %d ms", h, ms);
    r->faults++;
    fx_sleep_ms(ms); /* not cut short by the end: the stale write must happen */
    kill(r->pid[h], SIGCONT);
    r->pause[h][k][1] = mono_us();
    nap(r, rnd(&r->rng, 50, 200));
}

static void f_server_pause(run *r)
{
    int k = r->t->nn == 1 ? 1 : rnd(&r->rng, 1, 2), nodes[MAX_NODES];
    pick_nodes(r, r->t->nn, k, nodes);
    int ms = rnd(&r->rng, 100, 2 * TTL_MS);
    extend(r, ms + 200);
    for (int i = 0; i < k; i++)
        fx_server_pause(tnode(r->t, nodes[i]));
    say(r, "%d server(s) stopped for %d ms", k, ms);
    r->faults++;
    fx_sleep_ms(ms);
    for (int i = 0; i < k; i++)
        fx_server_resume(tnode(r->t, nodes[i]));
    nap(r, rnd(&r->rng, 100, 300));
}

/* Cut a holder that holds (refreshing) from a majority of nodes. */
static void f_holder_partition(run *r)
{
    int h = long_holder(r, CMD_LONG_HOLD), nodes[MAX_NODES], k = r->t->nn / 2 + 1;
    if (h < 0)
        return;
    pick_nodes(r, r->t->nn, k, nodes);
    int ms = rnd(&r->rng, 6 * TTL_MS / 5, 2 * TTL_MS);
    extend(r, ms + 200);
    for (int i = 0; i < k; i++)
        link_mode(r, h, nodes[i], FX_LINK_BLACKHOLE, 0);
    say(r, "holder %d cut from %d node(s)", h, k);
    r->faults++;
    fx_sleep_ms(ms);
    heal(r);
    nap(r, rnd(&r->rng, 50, 200));
}

static void f_minority_partition(run *r)
{
    int k = (r->t->nn - 1) / 2, nodes[MAX_NODES];
    pick_nodes(r, r->t->nn, k, nodes);
    for (int i = 0; i < k; i++)
        for (int h = 0; h < NH; h++)
            link_mode(r, h, nodes[i], FX_LINK_BLACKHOLE, 0);
    say(r, "%d node(s) cut off", k);
    r->faults++;
    nap(r, rnd(&r->rng, TTL_MS, 3 * TTL_MS));
    heal(r);
    nap(r, rnd(&r->rng, 50, 200));
}

/* Replies dropped from some nodes (to every holder): the nodes act, the
 * holders time out. */
static void f_one_way(run *r)
{
    int k = r->t->nn == 1 ? 1 : rnd(&r->rng, 1, r->t->nn / 2 + 1), nodes[MAX_NODES];
    pick_nodes(r, r->t->nn, k, nodes);
    for (int i = 0; i < k; i++)
        for (int h = 0; h < NH; h++)
            link_mode(r, h, nodes[i], FX_LINK_DROP_REPLIES, 0);
    say(r, "replies of %d node(s) dropped", k);
    r->faults++;
    nap(r, rnd(&r->rng, TTL_MS / 2, 2 * TTL_MS));
    heal(r);
    nap(r, rnd(&r->rng, 50, 200));
}

/* Restart every node while no lease is out: holders go quiet first. */
static void f_restart_quiet(run *r)
{
    nap(r, rnd(&r->rng, 100, 300));
    extend(r, 2 * TTL_MS + 500);
    atomic_store(&r->sh->quiet, 1);
    for (int h = 0; h < NH; h++)
        wait_state(r, h, ST_IDLE);
    fx_sleep_ms(TTL_MS + 50);
    int all[MAX_NODES];
    for (int n = 0; n < r->t->nn; n++)
        all[n] = n;
    crash_restart_nodes(r, all, r->t->nn);
    say(r, "all nodes restarted empty outside any lease");
    r->faults++;
    atomic_store(&r->sh->quiet, 0);
    nap(r, rnd(&r->rng, 200, 500));
}

/* Restart nodes while a holder holds a lease it does not refresh: one
 * node, or a majority of a quorum (the lease outlives its keys). */
static void restart_in_lease(run *r, int k)
{
    int h = long_holder(r, CMD_STEADY_HOLD), nodes[MAX_NODES];
    if (h < 0)
        return;
    pick_nodes(r, r->t->nn, k, nodes);
    crash_restart_nodes(r, nodes, k);
    extend(r, 300);
    say(r, "%d node(s) restarted empty while holder %d holds", k, h);
    r->faults++;
    nap(r, TTL_MS + 100);
}

static void f_restart_lease(run *r)
{
    restart_in_lease(r, r->t->nn / 2 + 1);
}

/* A minority restarts inside leases, never twice within one lease. */
static void f_restart_minority(run *r)
{
    int k = (r->t->nn - 1) / 2, nodes[MAX_NODES];
    pick_nodes(r, r->t->nn, k, nodes);
    crash_restart_nodes(r, nodes, k);
    extend(r, 200);
    say(r, "%d node(s) restarted empty", k);
    r->faults++;
    fx_sleep_ms(TTL_MS + rnd(&r->rng, 100, 300)); /* never two within one lease */
}

static void write_faketime(run *r, const char *spec)
{
    int fd = open(r->ftfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write(fd, spec, strlen(spec)) < 0)
            say(r, "faketime file: %s", strerror(errno));
        close(fd);
    }
}

static void f_clock_jump(run *r)
{
    static const char *const spec[] = {"-3600\n", "+3600\n", "-86400\n", "+0\n", "+600\n"};
    const char *s = spec[rnd(&r->rng, 0, 4)];
    write_faketime(r, s);
    say(r, "holder 0's wall clock now %.*s s off", (int)strlen(s) - 1, s);
    r->faults++;
    nap(r, rnd(&r->rng, 200, 500));
}

/* The lock's primary crashes: its replica takes over; the old one comes
 * back as a replica. */
static void f_failover(run *r)
{
    fx_cluster *cl = &r->t->cl;
    nap(r, rnd(&r->rng, 100, 300));
    extend(r, 4000); /* the holder's long hold spans the failover */
    int h = long_holder(r, CMD_LONG_HOLD);
    int p = fx_cluster_slot_owner(cl, r->slot);
    if (p < 0 || fx_cluster_kill(cl, p) != 0) {
        snprintf(r->note, sizeof r->note, "no primary for slot %d", r->slot);
        nap(r, 500);
        return;
    }
    say(r, "primary %d killed while holder %d holds", p, h);
    r->faults++;
    int np = fx_cluster_wait_promoted(cl, p, 10000);
    say(r, "node %d promoted", np);
    extend(r, 500); /* grants after the failover */
    if (fx_cluster_restart(cl, p) != 0)
        snprintf(r->note, sizeof r->note, "node %d did not rejoin", p);
    nap(r, rnd(&r->rng, 100, 300));
}

/* The lock's primary stops for less than the node timeout (no failover). */
static void f_primary_pause(run *r)
{
    fx_cluster *cl = &r->t->cl;
    int p = fx_cluster_slot_owner(cl, r->slot);
    if (p < 0)
        return;
    int ms = rnd(&r->rng, 100, FX_CLUSTER_NODE_TIMEOUT_MS / 2);
    extend(r, ms + 200);
    fx_cluster_pause(cl, p);
    say(r, "primary %d stopped for %d ms", p, ms);
    r->faults++;
    fx_sleep_ms(ms);
    fx_cluster_resume(cl, p);
    nap(r, rnd(&r->rng, 200, 500));
}

/* ---- the scenarios -------------------------------------------------------------------- */

static const scen one_scen[] = {
    {"one/delay-reset", "delays up to 60 ms on some links, connections reset", 1, 1, 1, 0, 0,
     f_delay_reset, 0},
    {"one/one-way", "the node's replies dropped (requests still arrive)", 1, 1, 1, 0, 0, f_one_way,
     0},
    {"one/holder-cut", "a refreshing holder cut off from the node past its lease", 1, 1, 1, 0, 0,
     f_holder_partition, 0},
    {"one/server-stop", "SIGSTOP of the server for up to 2 TTLs", 1, 1, 1, 0, 0, f_server_pause, 0},
    {"one/holder-stop", "SIGSTOP of a holder between its check and its write, past its lease", 0, 1,
     1, 0, 0, f_holder_pause, 0},
    {"one/restart-quiet", "SIGKILL and restart of the server empty, outside any lease", 1, 1, 2, 0,
     0, f_restart_quiet, 0},
    {"one/restart-lease", "SIGKILL and restart of the server empty, inside a lease", 0, 2, 2, 0, 0,
     f_restart_lease, 0},
};

static const scen quorum_scen[] = {
    {"quorum/minority-cut", "2 of 5 nodes cut off from every holder", 1, 1, 1, 0, 0,
     f_minority_partition, 0},
    {"quorum/holder-cut", "a refreshing holder cut off from 3 of 5 nodes past its lease", 1, 1, 1,
     0, 0, f_holder_partition, 0},
    {"quorum/one-way", "replies of 1-3 nodes dropped (requests still arrive)", 1, 1, 1, 0, 0,
     f_one_way, 0},
    {"quorum/delay-reset", "delays up to 60 ms on some links, connections reset", 1, 1, 1, 0, 0,
     f_delay_reset, 0},
    {"quorum/server-stop", "SIGSTOP of 1-2 nodes for up to 2 TTLs", 1, 1, 1, 0, 0, f_server_pause,
     0},
    {"quorum/holder-stop", "SIGSTOP of a holder between its check and its write, past its lease", 0,
     1, 1, 0, 0, f_holder_pause, 0},
    {"quorum/clock-jump", "a holder's wall clock jumps by up to a day (libfaketime)", 1, 1, 1, 1, 0,
     f_clock_jump, 0},
    {"quorum/restart-minority", "2 of 5 nodes restarted empty inside leases", 1, 1, 1, 0, 0,
     f_restart_minority, 0},
    {"quorum/restart-majority", "3 of 5 nodes restarted empty inside a lease", 2, 2, 2, 0, 0,
     f_restart_lease, 0},
};

static const scen cluster_scen[] = {
    {"cluster/primary-stop", "SIGSTOP of the lock's primary, shorter than the node timeout", 1, 1,
     1, 0, 0, f_primary_pause, 0},
    {"cluster/failover",
     "the lock's primary killed while a holder holds a 4 s lease (wait_replicas 1); its replica "
     "takes over",
     1, 1, 1, 0, 1, f_failover, FAILOVER_TTL_MS},
};

static const scen *scen_list(int topology, int *n)
{
    switch (topology) {
    case TT_ONE:
        *n = (int)(sizeof one_scen / sizeof one_scen[0]);
        return one_scen;
    case TT_QUORUM:
        *n = (int)(sizeof quorum_scen / sizeof quorum_scen[0]);
        return quorum_scen;
    case TT_CLUSTER:
        *n = (int)(sizeof cluster_scen / sizeof cluster_scen[0]);
        return cluster_scen;
    }
    *n = 0;
    return NULL;
}

int tt_scenarios(int topology)
{
    int n;
    scen_list(topology, &n);
    return n;
}

const char *tt_scenario_name(int topology, int i)
{
    int n;
    const scen *s = scen_list(topology, &n);
    return i >= 0 && i < n ? s[i].name : NULL;
}

const char *tt_topology_name(int topology)
{
    static const char *const names[] = {"one node", "5-node quorum", "3+3 cluster"};
    return topology >= 0 && topology < TT_TOPOLOGIES ? names[topology] : "?";
}

/* ---- starting and stopping holders ---------------------------------------------------- */

static const char *faketime_lib(void)
{
    for (int i = 0; faketime_paths[i]; i++)
        if (access(faketime_paths[i], R_OK) == 0)
            return faketime_paths[i];
    return NULL;
}

/* The wall clock is what the file says (read at every call); the
 * monotonic clock stays the kernel's, as under a real clock step. */
static void holder_env(run *r)
{
    const char *lib = faketime_lib(); /* found: run_scenario skips the scenario otherwise */
    if (lib)
        setenv("LD_PRELOAD", lib, 1);
    setenv("FAKETIME_TIMESTAMP_FILE", r->ftfile, 1);
    setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1", 1);
    setenv("FAKETIME_NO_CACHE", "1", 1);
    setenv("FAKETIME_DISABLE_SHM", "1", 1);
}

static pid_t spawn_holder(run *r, int h, int64_t end_us)
{
    char idx[16], end[32], port[16], wr[16], seed[32], ttl[16], url[MAX_NODES][512];
    const char *argv[16 + MAX_NODES];
    int a = 0;
    snprintf(idx, sizeof idx, "%d", h);
    snprintf(end, sizeof end, "%lld", (long long)end_us);
    snprintf(port, sizeof port, "%d", r->t->res.port);
    snprintf(wr, sizeof wr, "%d", r->sc->wait_replicas);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)splitmix(&r->rng));
    snprintf(ttl, sizeof ttl, "%d", r->sc->ttl_ms ? r->sc->ttl_ms : TTL_MS);
    argv[a++] = "torture-holder";
    argv[a++] = TT_HOLDER_ARG;
    argv[a++] = r->dir;
    argv[a++] = idx;
    argv[a++] = end;
    argv[a++] = r->lock;
    argv[a++] = r->reskey;
    argv[a++] = port;
    argv[a++] = wr;
    argv[a++] = seed;
    argv[a++] = ttl;
    if (r->t->kind == TT_CLUSTER) {
        size_t o = (size_t)snprintf(url[0], sizeof url[0], "redis://127.0.0.1:%d?cluster=1",
                                    tnode(r->t, 0)->port);
        for (int n = 1; n < r->t->nn && o < sizeof url[0]; n++)
            o += (size_t)snprintf(url[0] + o, sizeof url[0] - o, "&addr=127.0.0.1:%d",
                                  tnode(r->t, n)->port);
        argv[a++] = url[0];
    } else {
        for (int n = 0; n < r->t->nn; n++) {
            snprintf(url[n], sizeof url[n], "redis://127.0.0.1:%d", r->px.port[h * r->t->nn + n]);
            argv[a++] = url[n];
        }
    }
    argv[a] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (r->sc->faketime && h == 0)
            holder_env(r);
        /* this program again; TORTURE_SELF names one that runs it (make
         * cross: the emulator), where the kernel cannot exec it itself */
        const char *self = getenv("TORTURE_SELF");
        execv(self && *self ? self : "/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    return pid > 0 ? pid : 0;
}

/* Wait for every holder to exit (bounded), then kill what is left. */
static void reap_holders(run *r)
{
    double until = r->end + HOLDER_GRACE_MS;
    for (int h = 0; h < NH; h++) {
        for (int i = 0; i < 10000 && r->pid[h] > 0 && fx_now_ms() < until; i++) {
            int st;
            pid_t w = waitpid(r->pid[h], &st, WNOHANG);
            if (w == r->pid[h]) {
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                    snprintf(r->note, sizeof r->note, "holder %d exited abnormally (%d)", h,
                             WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
                r->pid[h] = 0;
            } else if (w < 0) {
                r->pid[h] = 0;
            } else {
                fx_sleep_ms(5);
            }
        }
        if (r->pid[h] > 0 && waitpid(r->pid[h], NULL, WNOHANG) == r->pid[h])
            r->pid[h] = 0; /* it ended while others were waited for */
        if (r->pid[h] > 0) {
            kill(r->pid[h], SIGCONT);
            kill(r->pid[h], SIGKILL);
            waitpid(r->pid[h], NULL, 0);
            size_t o = strlen(r->note);
            snprintf(r->note + o, sizeof r->note - o, "%sholder %d did not finish: killed",
                     o ? "; " : "", h);
            r->pid[h] = 0;
        }
    }
}

static void remove_dir(const char *dir)
{
    char path[300];
    const char *files[] = {"shared", "h0.log", "h1.log", "h2.log", "faketime"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* ---- the checker -------------------------------------------------------------------------- */

typedef struct grant {
    int holder, seq;
    int64_t start, end;  /* believed: return of the lock call .. last write done */
    int64_t lease_end;   /* what the library promised                           */
    int64_t first_write; /* done time of its first completed write, or INT64_MAX */
    uint64_t token;
} grant;

typedef struct logs {
    rec *r[NH];
    size_t n[NH];
} logs;

static int read_log(const char *dir, int h, logs *lg)
{
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "%s/h%d.log", dir, h);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* the holder logged nothing */
    if (fstat(fd, &st) != 0 || st.st_size < 0) {
        close(fd);
        return -1;
    }
    size_t n = (size_t)st.st_size / sizeof(rec);
    if (n > MAX_RECS)
        n = MAX_RECS;
    lg->r[h] = malloc((n ? n : 1) * sizeof(rec));
    ssize_t got = lg->r[h] ? read(fd, lg->r[h], n * sizeof(rec)) : -1;
    close(fd);
    if (got < 0)
        return -1;
    lg->n[h] = (size_t)got / sizeof(rec);
    return 0;
}

static int by_start(const void *a, const void *b)
{
    const grant *x = a, *y = b;
    return (x->start > y->start) - (x->start < y->start);
}

static int paused_during(const run *r, int h, int64_t t0, int64_t t1)
{
    for (int k = 0; k < r->npause[h] && k < MAX_PAUSES; k++)
        if (r->pause[h][k][0] < t1 && r->pause[h][k][1] > t0)
            return 1;
    return 0;
}

/* The grants, with their believed intervals and first writes; sorted by start. */
static grant *collect_grants(const logs *lg, size_t *ng)
{
    size_t cap = 0, n = 0;
    for (int h = 0; h < NH; h++)
        cap += lg->n[h];
    grant *g = malloc((cap ? cap : 1) * sizeof *g);
    if (!g)
        return NULL;
    for (int h = 0; h < NH; h++) {
        size_t first = n;
        for (size_t i = 0; i < lg->n[h]; i++) {
            const rec *e = &lg->r[h][i];
            if (e->kind == R_GRANT) {
                g[n++] = (grant){h, e->seq, e->t1, e->t1, e->t1 + e->aux, INT64_MAX, e->token};
                continue;
            }
            /* a holder's records of one grant follow its R_GRANT */
            grant *cur = n > first && g[n - 1].seq == e->seq ? &g[n - 1] : NULL;
            if (cur && e->kind == R_WRITE) {
                if (e->t1 > cur->end)
                    cur->end = e->t1;
                if (e->rc >= 0 && e->t1 < cur->first_write)
                    cur->first_write = e->t1;
            } else if (cur && e->kind == R_END) {
                cur->lease_end = e->aux;
            }
        }
    }
    qsort(g, n, sizeof *g, by_start);
    *ng = n;
    return g;
}

static void count_overlaps(const grant *g, size_t n, tt_result *res)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n && j < i + 100000; j++) {
            if (g[j].start >= g[i].end && g[j].start >= g[i].lease_end)
                break; /* starts are sorted; no later one can overlap i either */
            if (g[j].start < g[i].end)
                res->overlaps++;
            if (g[j].start < g[i].lease_end && g[i].start < g[j].lease_end)
                res->lease_overlaps++;
        }
}

/* Index of (holder, seq) in g, or -1. */
static long find_grant(const grant *g, size_t n, const long *idx, int h, int seq, size_t per)
{
    (void)g;
    (void)n;
    if (seq < 0 || (size_t)seq >= per)
        return -1;
    return idx[(size_t)h * per + (size_t)seq];
}

/* Writes: stale when a later grant completed a write before this one was sent. */
static void judge_writes(const logs *lg, const grant *g, size_t n, tt_result *res)
{
    /* later_first[i]: the earliest first write of any grant that started after g[i] */
    int64_t *later_first = malloc((n ? n : 1) * sizeof *later_first);
    size_t per = 1;
    for (size_t i = 0; i < n; i++)
        if ((size_t)g[i].seq + 1 > per)
            per = (size_t)g[i].seq + 1;
    long *idx = malloc(NH * per * sizeof *idx);
    if (!later_first || !idx) {
        free(later_first);
        free(idx);
        return;
    }
    for (size_t i = 0; i < NH * per; i++)
        idx[i] = -1;
    int64_t m = INT64_MAX;
    for (size_t i = n; i-- > 0;) {
        later_first[i] = m;
        if (g[i].first_write < m)
            m = g[i].first_write;
        idx[(size_t)g[i].holder * per + (size_t)g[i].seq] = (long)i;
    }
    for (int h = 0; h < NH; h++)
        for (size_t k = 0; k < lg->n[h]; k++) {
            const rec *e = &lg->r[h][k];
            if (e->kind != R_WRITE)
                continue;
            res->writes++;
            long i = find_grant(g, n, idx, h, e->seq, per);
            if (i < 0 || e->rc < 0)
                continue;
            int stale = later_first[i] < e->t0;
            if (stale && e->rc == 1)
                res->stale_accepted++;
            else if (stale)
                res->stale_rejected++;
            else if (e->rc == 0)
                res->fresh_rejected++;
        }
    free(later_first);
    free(idx);
}

/* A token must be above every earlier one, except that an owner that took
 * the lock again while its key was still there (a release lost on the way)
 * keeps its token. */
static void judge_tokens(const grant *g, size_t n, tt_result *res)
{
    uint64_t max = 0;
    int owner = -1;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (g[i].token < max || (g[i].token == max && g[i].holder != owner)))
            res->token_regressions++;
        if (i == 0 || g[i].token > max) {
            max = g[i].token;
            owner = g[i].holder;
        }
    }
}

static void judge_ops(const run *r, const logs *lg, tt_result *res)
{
    res->worst_late_ms = -1e9;
    for (int h = 0; h < NH; h++)
        for (size_t k = 0; k < lg->n[h]; k++) {
            const rec *e = &lg->r[h][k];
            if (e->kind == R_CLOCK && (double)e->aux / 1e6 > res->clock_jump_s)
                res->clock_jump_s = (double)e->aux / 1e6;
            if (e->kind != R_OP || paused_during(r, h, e->t0, e->t1))
                continue;
            res->ops++;
            if (e->rc == REDLOCK_ERR_TIMEOUT || (e->op == OP_LOCK && e->rc == REDLOCK_NOT_ACQUIRED))
                res->timed_out++;
            double late = (double)(e->t1 - (e->t0 + e->aux)) / 1000.0;
            if (late > res->worst_late_ms) {
                static const char *const names[] = {"?", "lock", "unlock", "refresh"};
                res->worst_late_ms = late;
                snprintf(res->worst_op, sizeof res->worst_op, "%s %.0f ms, %s",
                         names[e->op >= 1 && e->op <= 3 ? e->op : 0],
                         (double)(e->t1 - e->t0) / 1000.0, redlock_strerror(e->rc));
            }
        }
}

/* Verbose: grants per quarter second, to see a fault's effect and recovery. */
static void print_timeline(const run *r, const grant *g, size_t n)
{
    int buckets[400] = {0}, nb = 0;
    int64_t t0 = mono_us() - (int64_t)((fx_now_ms() - r->start) * 1000);
    for (size_t i = 0; i < n; i++) {
        int64_t b = (g[i].start - t0) / 250000;
        if (b >= 0 && b < 400) {
            buckets[b]++;
            if (b + 1 > nb)
                nb = (int)b + 1;
        }
    }
    fprintf(stderr, "  grants per 250 ms:");
    for (int b = 0; b < nb; b++)
        fprintf(stderr, " %d", buckets[b]);
    fputc('\n', stderr);
}

static void check_run(const run *r, tt_result *res)
{
    logs lg;
    memset(&lg, 0, sizeof lg);
    for (int h = 0; h < NH; h++)
        if (read_log(r->dir, h, &lg) != 0)
            snprintf(res->note, sizeof res->note, "could not read holder %d's log", h);
    size_t n = 0;
    grant *g = collect_grants(&lg, &n);
    if (g) {
        res->grants = (long)n;
        count_overlaps(g, n, res);
        judge_writes(&lg, g, n, res);
        judge_tokens(g, n, res);
        if (r->cfg->verbose)
            print_timeline(r, g, n);
    }
    judge_ops(r, &lg, res);
    if (res->ops == 0)
        snprintf(res->note, sizeof res->note, "holders logged %zu, %zu and %zu records", lg.n[0],
                 lg.n[1], lg.n[2]);
    if (res->worst_late_ms > 0 && !res->note[0])
        snprintf(res->note, sizeof res->note, "latest: %s", res->worst_op);
    if (res->clock_jump_s >= 1 && !res->note[0])
        snprintf(res->note, sizeof res->note, "a holder's wall clock moved by %.0f s",
                 res->clock_jump_s);
    free(g);
    for (int h = 0; h < NH; h++)
        free(lg.r[h]);
}

/* ---- running a scenario --------------------------------------------------------------------- */

static uint64_t name_seed(uint64_t seed, const char *name)
{
    uint64_t h = seed ^ 0xcbf29ce484222325ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint64_t)(unsigned char)*p) * 0x100000001b3ULL;
    return h;
}

static int run_setup(run *r, double share_s)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/redlock-torture-XXXXXX");
    if (!mkdtemp(r->dir))
        return -1;
    snprintf(r->ftfile, sizeof r->ftfile, "%s/faketime", r->dir);
    write_faketime(r, "+0\n");
    if (!(r->sh = map_shared(r->dir, 1)))
        return -1;
    r->sh->base_us = mono_us();
    /* a name per scenario and seed; its own slot in the cluster */
    snprintf(r->lock, sizeof r->lock, "tt:%s:%llu", r->sc->name,
             (unsigned long long)(r->cfg->seed % 100000));
    snprintf(r->reskey, sizeof r->reskey, "resource:%s", r->lock);
    if (r->t->kind == TT_CLUSTER) {
        r->slot = fx_cluster_keyslot(&r->t->cl, r->lock, strlen(r->lock));
        if (r->slot < 0)
            return -1;
    } else {
        int targets[NH * MAX_NODES];
        for (int h = 0; h < NH; h++)
            for (int n = 0; n < r->t->nn; n++)
                targets[h * r->t->nn + n] = tnode(r->t, n)->port;
        int life = (int)(share_s * 1000) + 60000;
        if (fx_proxy_start(&r->px, targets, NH * r->t->nn, life) != 0)
            return -1;
        r->proxied = 1;
    }
    return 0;
}

/* Leave the topology as the next scenario needs it: every node running and
 * answering. */
static void restore_topology(run *r)
{
    for (int n = 0; n < r->t->nn; n++) {
        fx_server *s = tnode(r->t, n);
        fx_server_resume(s);
        if (s->pid > 0)
            continue;
        if (r->t->kind == TT_CLUSTER ? fx_cluster_restart(&r->t->cl, n) != 0
                                     : fx_server_restart(s) != 0)
            snprintf(r->note, sizeof r->note, "node %d could not be restarted", n);
    }
}

static void run_scenario(topo *t, const scen *sc, const tt_config *cfg, double share_s,
                         tt_result *res)
{
    run *r = calloc(1, sizeof *r);
    memset(res, 0, sizeof *res);
    snprintf(res->name, sizeof res->name, "%s", sc->name);
    res->what = sc->what;
    res->leases_suffice = sc->overlap_zero != 0;
    res->needs_fix = sc->overlap_zero == 2 || sc->stale_zero == 2 || sc->tokens_rise == 2;
    if (!r) {
        snprintf(res->note, sizeof res->note, "out of memory");
        res->skipped = 1;
        return;
    }
    r->sc = sc;
    r->t = t;
    r->cfg = cfg;
    r->rng = name_seed(cfg->seed, sc->name);
    if (sc->faketime && (TT_ASAN || !faketime_lib())) {
        snprintf(res->note, sizeof res->note, "%s",
                 TT_ASAN ? "skipped: libfaketime hangs AddressSanitizer builds"
                         : "skipped: no libfaketime for this build's architecture and libc (apt-get install faketime)");
        res->skipped = 1;
        free(r);
        return;
    }
    if (run_setup(r, share_s) != 0) {
        snprintf(res->note, sizeof res->note, "skipped: setup failed");
        res->skipped = 1;
    } else {
        /* start the clock once every holder is ready (a loaded machine can
         * take a while to exec three processes) */
        int64_t cap_us = mono_us() + (int64_t)(share_s * 1e6) + HOLDER_CAP_US;
        for (int h = 0; h < NH; h++) {
            atomic_store(&r->sh->state[h], ST_DONE);
            r->pid[h] = spawn_holder(r, h, cap_us);
        }
        r->start = fx_now_ms();
        r->end = r->start + HOLDER_START_MS;
        for (int h = 0; h < NH; h++)
            if (wait_state(r, h, ST_IDLE) != 0)
                snprintf(r->note, sizeof r->note, "holder %d did not start", h);
        r->start = fx_now_ms();
        r->end = r->faults_end = r->start + share_s * 1000;
        atomic_store(&r->sh->end_ms, (int)((mono_us() - r->sh->base_us) / 1000 + share_s * 1000));
        nap(r, 100); /* holders get going */
        for (int i = 0; i < 1000 && fx_now_ms() < r->faults_end; i++)
            sc->fault(r);
        heal(r);
        atomic_store(&r->sh->quiet, 0);
        reap_holders(r);
        res->seconds = (r->end - r->start) / 1000;
        res->faults = r->faults;
        check_run(r, res);
    }
    fx_proxy_stop(&r->px);
    restore_topology(r);
    if (r->sh)
        munmap(r->sh, sizeof(shared));
    remove_dir(r->dir);
    if (r->note[0] && !res->note[0])
        snprintf(res->note, sizeof res->note, "%s", r->note);
    free(r);
}

int tt_run_topology(int topology, const tt_config *cfg, double share_s, tt_result *out, int cap)
{
    int n, k = 0;
    const scen *sc = scen_list(topology, &n);
    int wanted = 0;
    for (int i = 0; i < n; i++)
        wanted += !cfg->only || strstr(sc[i].name, cfg->only) != NULL;
    if (!sc || wanted == 0)
        return 0;
    double t_start = fx_now_ms();
    topo *t = calloc(1, sizeof *t);
    if (!t || topo_start(t, topology) != 0) {
        fprintf(stderr, "torture: the %s did not start\n", tt_topology_name(topology));
        free(t);
        return -1;
    }
    if (share_s < MIN_SHARE_S)
        share_s = MIN_SHARE_S;
    if (cfg->verbose)
        fprintf(stderr, "torture: the %s started in %.1f s\n", tt_topology_name(topology),
                (fx_now_ms() - t_start) / 1000);
    for (int i = 0; i < n && k < cap; i++) {
        if (cfg->only && !strstr(sc[i].name, cfg->only))
            continue;
        if (cfg->verbose)
            fprintf(stderr, "torture: %s (%.1f s)\n", sc[i].name, share_s);
        double t0 = fx_now_ms();
        run_scenario(t, &sc[i], cfg, share_s, &out[k++]);
        if (cfg->verbose)
            fprintf(stderr, "torture: %s took %.1f s\n", sc[i].name, (fx_now_ms() - t0) / 1000);
    }
    topo_stop(t);
    free(t);
    return k;
}

/* ---- judging and printing ------------------------------------------------------------------ */

static const scen *find_scen(const char *name)
{
    for (int t = 0; t < TT_TOPOLOGIES; t++) {
        int n;
        const scen *s = scen_list(t, &n);
        for (int i = 0; i < n; i++)
            if (strcmp(s[i].name, name) == 0)
                return &s[i];
    }
    return NULL;
}

int tt_judge(const tt_result *r, int strict, double late_bound_ms, char *why, size_t cap)
{
    const scen *s = find_scen(r->name);
    why[0] = '\0';
    if (!s || r->skipped)
        return 0;
    if (r->grants == 0)
        snprintf(why, cap, "no grant at all");
    else if (r->faults == 0)
        snprintf(why, cap, "no fault was injected");
    else if (s->fault == f_holder_pause && r->stale_rejected == 0)
        snprintf(why, cap, "no stale write of a stopped holder was refused (fencing unseen)");
    else if ((s->stale_zero == 1 || (s->stale_zero == 2 && strict)) && r->stale_accepted > 0)
        snprintf(why, cap, "%ld stale writes accepted", r->stale_accepted);
    else if ((s->overlap_zero == 1 || (s->overlap_zero == 2 && strict)) && r->overlaps > 0)
        snprintf(why, cap, "%ld overlapping intervals where leases must suffice", r->overlaps);
    else if ((s->tokens_rise == 1 || (s->tokens_rise == 2 && strict)) && r->token_regressions > 0)
        snprintf(why, cap, "%ld tokens not above every earlier one", r->token_regressions);
    else if (r->worst_late_ms > late_bound_ms)
        snprintf(why, cap, "an operation returned %.0f ms after its deadline (bound %.0f): %s",
                 r->worst_late_ms, late_bound_ms, r->worst_op);
    return why[0] ? -1 : 0;
}

void tt_print_table(FILE *f, const tt_result *r, int n)
{
    fprintf(f, "%-24s %6s %6s %7s %6s %6s %6s %6s %6s %6s %7s %7s %8s\n", "scenario", "faults",
            "grants", "overlap", "lease", "writes", "stale", "STALE", "fresh", "token", "ops",
            "timeout", "late");
    fprintf(f, "%-24s %6s %6s %7s %6s %6s %6s %6s %6s %6s %7s %7s %8s\n", "", "", "", "", "ovl", "",
            "rej", "ACC", "rej", "regr", "", "", "max ms");
    for (int i = 0; i < n; i++) {
        if (r[i].skipped) {
            fprintf(f, "%-24s %s\n", r[i].name, r[i].note);
            continue;
        }
        fprintf(f, "%-24s %6ld %6ld %7ld %6ld %6ld %6ld %6ld %6ld %6ld %7ld %7ld %8.0f%s%s\n",
                r[i].name, r[i].faults, r[i].grants, r[i].overlaps, r[i].lease_overlaps,
                r[i].writes, r[i].stale_rejected, r[i].stale_accepted, r[i].fresh_rejected,
                r[i].token_regressions, r[i].ops, r[i].timed_out, r[i].worst_late_ms,
                r[i].note[0] ? "  " : "", r[i].note);
    }
}

uint64_t tt_seed_from_env(void)
{
    const char *s = getenv("TORTURE_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000003ULL ^ (uint64_t)ts.tv_nsec) % 1000000000ULL;
}
