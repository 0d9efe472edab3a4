/* bench.c - `make bench`: redlock-c against the round-trip limit, against
 * hiredis, and under contention. Every figure that matters is a ratio of
 * two things measured in the same run, on the same machine, interleaved
 * round by round, so a noisy shared machine moves both sides alike.
 *
 *   bench [--json FILE] [--quick] [--callgrind] [--tls-only]
 *
 * Servers: five redis-server processes on free loopback ports, started and
 * stopped here; or $REDLOCK_URL (comma-separated: the first URL serves the
 * single-node sections, the first five the quorum section when there are
 * five).
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "fx_cluster.h"
#include "fx_sentinel.h"
#include "fx_tls.h"
#include "redlock.h"
#include "netx.h"

#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_BUILD_DIR
#define BENCH_BUILD_DIR "build"
#endif

#define MAX_URLS 8
#define QUORUM 5

static int quick;
static int rounds = 7;
static const char *only; /* --only SECTION: run just that one */

static int want(const char *section)
{
    return !only || strcmp(only, section) == 0;
}

/* ---- results: printed as a table, kept for JSON --------------------------------- */

typedef struct result {
    char section[32];
    char key[48];
    double value;
    char unit[16];
} result;

static result results[128];
static size_t nresults;

static void put(const char *section, const char *key, double value, const char *unit,
                const char *fmt, ...)
{
    if (nresults < sizeof results / sizeof results[0]) {
        result *r = &results[nresults++];
        snprintf(r->section, sizeof r->section, "%s", section);
        snprintf(r->key, sizeof r->key, "%s", key);
        r->value = value;
        snprintf(r->unit, sizeof r->unit, "%s", unit);
    }
    char label[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    char val[48];
    if (value == (double)(long long)value && value < 1e15)
        snprintf(val, sizeof val, "%lld", (long long)value);
    else if (value >= 100)
        snprintf(val, sizeof val, "%.0f", value);
    else
        snprintf(val, sizeof val, "%.3g", value);
    printf("  %-52s %12s %s\n", label, val, unit);
    fflush(stdout);
}

/* fork() with stdio flushed first: a child that exits through exit()
 * would print the parent's buffered output a second time (make bench >
 * file is fully buffered). */
static pid_t bench_fork(void)
{
    fflush(NULL);
    return fork();
}

static void heading(const char *s)
{
    printf("\n%s\n", s);
    fflush(stdout);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---- time and statistics --------------------------------------------------------- */

static int64_t now_ns(void)
{
    return net_now_ns();
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* q-quantile of v[0..n) (sorts v). */
static double quantile(double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static double median(double *v, size_t n)
{
    return quantile(v, n, 0.5);
}

/* ---- servers ---------------------------------------------------------------------- */

static fx_server servers[QUORUM];
static int nservers;
static const char *urls[MAX_URLS];
static size_t nurls;
static char *url_env;

static fx_sentinel *sentinels; /* section 10's, while it runs: stopped on die() too */

static void stop_servers(void)
{
    for (int i = 0; i < nservers; i++)
        fx_server_stop(&servers[i]);
    nservers = 0;
    if (sentinels)
        fx_sentinel_stop(sentinels);
    sentinels = NULL;
}

static void on_fatal_signal(int sig)
{
    stop_servers();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void start_servers(void)
{
    const char *env = getenv("REDLOCK_URL");
    if (env && *env) {
        url_env = strdup(env);
        char *save = NULL;
        for (char *u = strtok_r(url_env, ",", &save); u && nurls < MAX_URLS;
             u = strtok_r(NULL, ",", &save))
            if (*u)
                urls[nurls++] = u;
        if (nurls == 0)
            die("$REDLOCK_URL has no URL");
        printf("servers: $REDLOCK_URL (%zu)\n", nurls);
        if (nurls >= QUORUM)
            return;
    }
    atexit(stop_servers);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    for (int i = 0; i < QUORUM; i++) {
        if (fx_server_start(&servers[i], NULL) != 0)
            die("cannot start redis-server (run `make deps`)");
        nservers++;
    }
    if (nurls == 0) {
        for (int i = 0; i < QUORUM; i++)
            urls[nurls++] = servers[i].url;
        printf("servers: %d redis-server processes on loopback, ports %d..%d\n", QUORUM,
               servers[0].port, servers[QUORUM - 1].port);
    }
}

/* the quorum's URLs: $REDLOCK_URL's first five, or our own servers */
static const char *quorum_url(int i)
{
    return nurls >= QUORUM ? urls[i] : servers[i].url;
}

/* ---- our client, and a bare connection for PING and INFO --------------------------------- */

static int fair_mode;

static int scripts_mode = REDLOCK_SCRIPTS_AUTO;

static redlock_client *client_for(const char *const *u, size_t n, int fencing)
{
    redlock_options o;
    redlock_options_init(&o);
    o.fencing = fencing;
    o.fair = fair_mode;
    o.scripts = scripts_mode;
    /* The benchmark's servers are seconds old: the restart guard (on for a
     * quorum) would refuse their yes for one TTL. Once a node is older than
     * the lease the guard costs nothing per cycle (one INFO per connection),
     * so the quorum rows measure the same cycle with it off. */
    o.restart_guard = 0;
    redlock_client *c = NULL;
    if (redlock_client_new(&c, u, n, &o) != REDLOCK_OK)
        die("client: %s", redlock_last_errstr());
    return c;
}

static redlock *lock_for(redlock_client *c, const char *name, uint32_t ttl)
{
    redlock *l = NULL;
    if (redlock_new(&l, c, name, NULL, ttl) != REDLOCK_OK)
        die("lock: %s", redlock_client_errstr(c));
    return l;
}

static void cycle(redlock *l, redlock_client *c)
{
    int rc = redlock_trylock(l);
    if (rc != REDLOCK_OK)
        die("trylock: %s (%s)", redlock_strerror(rc), redlock_client_errstr(c));
    rc = redlock_unlock(l);
    if (rc != REDLOCK_OK)
        die("unlock: %s (%s)", redlock_strerror(rc), redlock_client_errstr(c));
}

static net_conn *conn_for(const char *url)
{
    return nx_conn(url, 2000);
}

/* Send one command on c and wait for its reply (copied into out when out
 * is given). */
static void roundtrip(net_conn *c, int argc, const char *const *argv, char *out, size_t outlen)
{
    nx_result r = nx_call_buf(c, argc, argv, out, out ? outlen : 0);
    if (r.status != RESP_OK)
        die("%s: %s", argv[0], r.text);
}

static void ping(net_conn *c)
{
    static const char *const argv[] = {"PING"};
    roundtrip(c, 1, argv, NULL, 0);
}

/* INFO section on url, as text (valid until the next call); NULL when
 * the server fails it and may_fail (a sentinel promoting a replica kills
 * its client connections), otherwise that failure ends the benchmark. */
static const char *info_or_null(const char *url, const char *section, int may_fail)
{
    static char buf[1 << 16];
    net_conn *c = conn_for(url);
    const char *argv[] = {"INFO", section};
    nx_result r = nx_call_buf(c, 2, argv, buf, sizeof buf);
    net_conn_free(c);
    if (r.status != RESP_OK) {
        if (may_fail)
            return NULL;
        die("INFO: %s", r.text);
    }
    return buf;
}

static const char *info(const char *url, const char *section)
{
    return info_or_null(url, section, 0);
}

/* The number right after key in text (-1 when absent). */
static double number_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

/* A numeric field of INFO section on url. */
static double info_field(const char *url, const char *section, const char *field)
{
    char key[96];
    snprintf(key, sizeof key, "\n%s:", field);
    return number_after(info(url, section), key);
}

/* Requests clients sent (top-level commands the lock uses), from INFO commandstats. */
static double requests_sent(const char *url)
{
    const char *text = info(url, "commandstats");
    static const char *const cmds[] = {"evalsha", "eval", "fcall", "fcall_ro", "subscribe",
                                       "unsubscribe"};
    double total = 0;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "cmdstat_%s:calls=", cmds[i]);
        double n = number_after(text, key);
        total += n > 0 ? n : 0;
    }
    return total;
}

#ifdef HAVE_HIREDIS
static redisContext *hiredis_for(const char *url)
{
    net_url u;
    char err[256];
    if (net_url_parse(&u, NULL, url, err, sizeof err) != RESP_OK)
        die("%s", err);
    struct timeval tv = {1, 0};
    redisContext *h = u.kind == NET_URL_UNIX ? redisConnectUnixWithTimeout(u.path, tv)
                                               : redisConnectWithTimeout(u.host, atoi(u.port), tv);
    if (!h || h->err)
        die("hiredis connect: %s", h ? h->errstr : "out of memory");
    if (u.password[0]) {
        redisReply *r = u.user[0] ? redisCommand(h, "AUTH %s %s", u.user, u.password)
                                  : redisCommand(h, "AUTH %s", u.password);
        freeReplyObject(r);
    }
    return h;
}

/* The classic single-node lock with hiredis: SET NX PX, then a
 * compare-and-delete script by EVALSHA. */
static const char hiredis_release[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";
static char hiredis_release_sha[64];

static void hiredis_prepare(redisContext *h)
{
    redisReply *r = redisCommand(h, "SCRIPT LOAD %s", hiredis_release);
    if (!r || r->type != REDIS_REPLY_STRING)
        die("hiredis SCRIPT LOAD");
    snprintf(hiredis_release_sha, sizeof hiredis_release_sha, "%s", r->str);
    freeReplyObject(r);
}

static void hiredis_cycle(redisContext *h, const char *key, const char *value)
{
    redisReply *r = redisCommand(h, "SET %s %s NX PX 10000", key, value);
    if (!r || r->type != REDIS_REPLY_STATUS)
        die("hiredis SET NX: %s", r ? "not acquired" : h->errstr);
    freeReplyObject(r);
    r = redisCommand(h, "EVALSHA %s 1 %s %s", hiredis_release_sha, key, value);
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer != 1)
        die("hiredis release");
    freeReplyObject(r);
}

static void hiredis_ping(redisContext *h)
{
    redisReply *r = redisCommand(h, "PING");
    if (!r)
        die("hiredis PING: %s", h->errstr);
    freeReplyObject(r);
}
#endif

/* ---- 1, 2: cycle vs round trip, vs hiredis --------------------------------------------- */

enum { S_PING, S_CYCLE, S_CYCLE_NOFENCE, S_FCYCLE, S_HOOK, S_HPING, S_HCYCLE, S_KINDS };
static const char *const kind_name[S_KINDS] = {
    "PING (redlock-c connection)", "trylock+unlock, fencing on", "trylock+unlock, fencing off",
    "trylock+unlock by FCALL (functions mode)", "trylock+unlock, event hook, stats read",
    "PING (hiredis)", "SET NX PX + EVALSHA del (hiredis)"};

/* The event hook of the hook rows: it counts. */
static long hook_events;
static void count_event(const redlock_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    hook_events++;
}

/* A cycle with an event hook set, and the client's stats read after it. */
static void cycle_observed(redlock *l, redlock_client *c)
{
    static redlock_stats st;
    cycle(l, c);
    if (redlock_client_stats(c, &st, sizeof st) != REDLOCK_OK)
        die("stats: %s", redlock_last_errstr());
}

static double cycle_med_ours = -1, cycle_med_hiredis = -1; /* for section 2b */

static void bench_cycle(void)
{
    heading("1. lock cycle vs round trip, 2. vs hiredis  (one node, loopback TCP)");
    const int per = quick ? 300 : 2000;
    net_conn *pc = conn_for(urls[0]);
    redlock_client *c = client_for(urls, 1, 1), *cn = client_for(urls, 1, 0);
    redlock *l = lock_for(c, "bench:cycle", 10000), *ln = lock_for(cn, "bench:cycle:nf", 10000);
    /* the same cycle by FCALL; its first call loads the library (the
     * default user may), as the first EVALSHA loads a script by EVAL */
    scripts_mode = REDLOCK_SCRIPTS_FUNCTIONS;
    redlock_client *cf = client_for(urls, 1, 1);
    scripts_mode = REDLOCK_SCRIPTS_AUTO;
    redlock *lf = lock_for(cf, "bench:cycle:fcall", 10000);
    int fcall_ok = redlock_trylock(lf) == REDLOCK_OK && redlock_unlock(lf) == REDLOCK_OK;
    if (!fcall_ok) /* $REDLOCK_URL's server without the library, and a user who may not load it */
        printf("  (FCALL row skipped: %s)\n", redlock_client_errstr(cf));
    redlock_client *co = client_for(urls, 1, 1);
    redlock_client_on_event(co, count_event, NULL);
    redlock *lo = lock_for(co, "bench:cycle:hook", 10000);
    int kinds = 5;
#ifdef HAVE_HIREDIS
    redisContext *h = hiredis_for(urls[0]);
    hiredis_prepare(h);
    kinds = S_KINDS;
#endif
    double *all[S_KINDS];
    double med[S_KINDS][16];
    double ratio_rt[16], ratio_h[16], ratio_hn[16], ratio_f[16], ratio_o[16];
    for (int k = 0; k < S_KINDS; k++)
        all[k] = calloc((size_t)(rounds * per), sizeof(double));
    double *tmp = calloc((size_t)per, sizeof(double));
    /* warm up: connect, load scripts, fill caches */
    for (int i = 0; i < 200; i++) {
        ping(pc);
        cycle(l, c);
        cycle(ln, cn);
        if (fcall_ok)
            cycle(lf, cf);
        cycle_observed(lo, co);
#ifdef HAVE_HIREDIS
        hiredis_ping(h);
        hiredis_cycle(h, "bench:h", "hiredis-owner");
#endif
    }
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < kinds; k++) {
            for (int i = 0; i < per; i++) {
                int64_t t0 = now_ns();
                switch (k) {
                case S_PING: ping(pc); break;
                case S_CYCLE: cycle(l, c); break;
                case S_CYCLE_NOFENCE: cycle(ln, cn); break;
                case S_FCYCLE: if (fcall_ok) cycle(lf, cf); break;
                case S_HOOK: cycle_observed(lo, co); break;
#ifdef HAVE_HIREDIS
                case S_HPING: hiredis_ping(h); break;
                case S_HCYCLE: hiredis_cycle(h, "bench:h", "hiredis-owner"); break;
#endif
                default: break;
                }
                tmp[i] = (double)(now_ns() - t0) / 1e3;
                all[k][r * per + i] = tmp[i];
            }
            med[k][r] = median(tmp, (size_t)per);
        }
        ratio_rt[r] = med[S_CYCLE][r] / (2 * med[S_PING][r]);
        ratio_f[r] = med[S_FCYCLE][r] / med[S_CYCLE][r];
        ratio_o[r] = med[S_HOOK][r] / med[S_CYCLE][r];
        ratio_h[r] = med[S_CYCLE][r] / med[S_HCYCLE][r];
        ratio_hn[r] = med[S_CYCLE_NOFENCE][r] / med[S_HCYCLE][r];
    }
    static const char *const keys[S_KINDS] = {"ping",         "cycle",        "cycle_nofence",
                                              "fcall_cycle",  "hook_cycle",   "hiredis_ping",
                                              "hiredis_cycle"};
    for (int k = 0; k < kinds; k++) {
        char key[64];
        double m[16];
        if (k == S_FCYCLE && !fcall_ok)
            continue;
        memcpy(m, med[k], sizeof m);
        snprintf(key, sizeof key, "%s_median_us", keys[k]);
        put("cycle", key, median(m, (size_t)rounds), "us", "%s, median", kind_name[k]);
        snprintf(key, sizeof key, "%s_p99_us", keys[k]);
        put("cycle", key, quantile(all[k], (size_t)(rounds * per), 0.99), "us", "%s, p99",
            kind_name[k]);
    }
    put("cycle", "cycle_over_2ping", median(ratio_rt, (size_t)rounds), "x",
        "ratio: cycle / (2 x PING)   (limit 1.0)");
    if (fcall_ok)
        put("cycle", "fcall_over_evalsha", median(ratio_f, (size_t)rounds), "x",
            "ratio: FCALL cycle / EVALSHA cycle");
    put("cycle", "hook_over_cycle", median(ratio_o, (size_t)rounds), "x",
        "ratio: cycle with hook and stats read / cycle");
    cycle_med_ours = median(med[S_CYCLE], (size_t)rounds);
#ifdef HAVE_HIREDIS
    cycle_med_hiredis = median(med[S_HCYCLE], (size_t)rounds);
#endif
#ifdef HAVE_HIREDIS
    put("cycle", "ours_over_hiredis", median(ratio_h, (size_t)rounds), "x",
        "ratio: ours (fencing on) / hiredis");
    put("cycle", "ours_nofence_over_hiredis", median(ratio_hn, (size_t)rounds), "x",
        "ratio: ours (fencing off) / hiredis");
    redisFree(h);
#else
    (void)ratio_h;
    (void)ratio_hn;
    printf("  (hiredis rows skipped: libhiredis-dev is not installed)\n");
#endif
    for (int k = 0; k < S_KINDS; k++)
        free(all[k]);
    free(tmp);
    redlock_free(l);
    redlock_free(ln);
    redlock_free(lf);
    redlock_free(lo);
    redlock_client_free(c);
    redlock_client_free(cn);
    redlock_client_free(cf);
    redlock_client_free(co);
    net_conn_free(pc);
}

/* ---- 2b: system calls, counted by strace around a child that runs N of a kind ---- */

/* Run n of kind against url and exit (the child strace watches). */
static int syscall_run(const char *kind, int n, const char *url)
{
    const char *u[1] = {url};
    if (strcmp(kind, "cycle") == 0) {
        redlock_client *c = client_for(u, 1, 1);
        redlock *l = lock_for(c, "bench:sys", 10000);
        for (int i = 0; i < n; i++)
            cycle(l, c);
        redlock_free(l);
        redlock_client_free(c);
        return 0;
    }
#ifdef HAVE_HIREDIS
    if (strcmp(kind, "hcycle") == 0) {
        redisContext *h = hiredis_for(url);
        hiredis_prepare(h);
        for (int i = 0; i < n; i++)
            hiredis_cycle(h, "bench:hsys", "hiredis-owner");
        redisFree(h);
        return 0;
    }
#endif
    return 2;
}

/* System calls per iteration of kind against url: two strace runs (n and
 * 11n), the difference over 10n, so connecting and setup cancel out. -1:
 * no strace. */
static double syscalls_at(const char *kind, const char *url)
{
    int n = quick ? 50 : 200;
    long calls[2];
    for (int k = 0; k < 2; k++) {
        char cmd[1024], path[256], line[512];
        snprintf(path, sizeof path, "%s/strace.%s.txt", BENCH_BUILD_DIR, kind);
        snprintf(cmd, sizeof cmd,
                 "strace -f -c -o '%s' '%s/bench' --syscall-run %s %d '%s' >/dev/null 2>&1",
                 path, BENCH_BUILD_DIR, kind, k ? 11 * n : n, url);
        if (system(cmd) != 0)
            return -1;
        FILE *f = fopen(path, "r");
        calls[k] = -1;
        while (f && fgets(line, sizeof line, f)) {
            double pct, secs;
            long usecs, total;
            if (strstr(line, " total") &&
                sscanf(line, "%lf %lf %ld %ld", &pct, &secs, &usecs, &total) == 4)
                calls[k] = total;
        }
        if (f)
            fclose(f);
        if (calls[k] < 0)
            return -1;
    }
    return (double)(calls[1] - calls[0]) / (10.0 * n);
}

static double syscalls_per(const char *kind)
{
    return syscalls_at(kind, urls[0]);
}

/* The usec INFO commandstats gives the commands named (NULL-terminated). */
static double usec_of(const char *text, const char *const *names)
{
    double usec = 0;
    for (size_t i = 0; names[i]; i++) {
        char key[48];
        snprintf(key, sizeof key, "cmdstat_%s:", names[i]);
        const char *p = strstr(text, key);
        const char *u = p ? strstr(p, ",usec=") : NULL;
        if (u)
            usec += strtod(u + 6, NULL);
    }
    return usec;
}

/* Server time per iteration of kind, over n iterations run here: the usec
 * of the commands the client sends (top). A script's usec includes the
 * commands it runs, which commandstats also lists on their own: they are
 * not counted twice. */
static double server_us_per(const char *kind, int n, const char *const *top)
{
    const char *reset[2] = {"CONFIG", "RESETSTAT"};
    net_conn *pc = conn_for(urls[0]);
    roundtrip(pc, 2, reset, NULL, 0);
    net_conn_free(pc);
    if (syscall_run(kind, n, urls[0]) != 0)
        return -1;
    return usec_of(info(urls[0], "commandstats"), top) / n;
}

static void bench_syscalls(void)
{
    heading("2b. where a cycle's time goes: system calls (strace -c), server time (commandstats)");
    int n = quick ? 500 : 3000;
    static const char *const ours_top[] = {"evalsha", "eval", "fcall", NULL};
    double so = server_us_per("cycle", n, ours_top);
    put("syscalls", "server_us_per_cycle_ours", so, "us",
        "server time per cycle, ours (two Lua scripts)");
#ifdef HAVE_HIREDIS
    static const char *const hiredis_top[] = {"set", "evalsha", "eval", NULL};
    double sh = server_us_per("hcycle", n, hiredis_top);
    put("syscalls", "server_us_per_cycle_hiredis", sh, "us",
        "server time per cycle, hiredis (SET NX PX, then Lua)");
    if (cycle_med_ours > 0 && cycle_med_hiredis > 0)
        put("syscalls", "client_and_net_ours_over_hiredis",
            (cycle_med_ours - so) / (cycle_med_hiredis - sh), "x",
            "ratio: cycle minus server time, ours / hiredis");
#endif
    if (system("strace -V >/dev/null 2>&1") != 0) {
        printf("  (system call rows skipped: strace is not installed)\n");
        return;
    }
    double ours = syscalls_per("cycle");
    put("syscalls", "per_cycle_ours", ours, "", "redlock-c trylock+unlock: system calls per cycle");
    put("syscalls", "per_request_ours", ours / 2, "", "redlock-c: per request (send, recv)");
#ifdef HAVE_HIREDIS
    double h = syscalls_per("hcycle");
    put("syscalls", "per_cycle_hiredis", h, "", "hiredis SET NX PX + EVALSHA: per cycle");
    put("syscalls", "per_request_hiredis", h / 2, "", "hiredis: per request (write, read)");
#endif
}

/* ---- 3: quorum cost ------------------------------------------------------------------------- */

/* PING on each of n connections at once, one poll() loop: the round-trip
 * limit of a parallel fan-out on this machine. */
static void ping_all(net_conn **pc, size_t n)
{
    static const char *const argv[] = {"PING"};
    static nx_result r[QUORUM];
    for (size_t i = 0; i < n; i++)
        if (nx_send(pc[i], 1, argv, 0, 0) != RESP_OK)
            die("send");
    if (nx_run(pc, n, r, n, 0) != n)
        die("PING: no answer");
    for (size_t i = 0; i < n; i++)
        if (r[i].status != RESP_OK)
            die("PING: %s", r[i].text);
}

static void bench_quorum(void)
{
    heading("3. quorum: 5 nodes vs 1 node (parallel fan-out)");
    const int per = quick ? 200 : 1000;
    const char *q[QUORUM];
    net_conn *pc[QUORUM];
    for (int i = 0; i < QUORUM; i++) {
        q[i] = quorum_url(i);
        pc[i] = conn_for(q[i]);
    }
    redlock_client *c1 = client_for(q, 1, 1), *c5 = client_for(q, QUORUM, 1);
    redlock *l1 = lock_for(c1, "bench:q1", 10000), *l5 = lock_for(c5, "bench:q5", 10000);
    for (int i = 0; i < 100; i++) {
        cycle(l1, c1);
        cycle(l5, c5);
        ping_all(pc, QUORUM);
    }
    enum { K1, K5, P1, P5, NK };
    double m[NK][16], ratio[16], ratio_lim[16];
    double *tmp = calloc((size_t)per, sizeof(double));
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < NK; k++) {
            for (int i = 0; i < per; i++) {
                int64_t t0 = now_ns();
                if (k == K1)
                    cycle(l1, c1);
                else if (k == K5)
                    cycle(l5, c5);
                else
                    ping_all(pc, k == P1 ? 1 : QUORUM);
                tmp[i] = (double)(now_ns() - t0) / 1e3;
            }
            m[k][r] = median(tmp, (size_t)per);
        }
        ratio[r] = m[K5][r] / m[K1][r];
        ratio_lim[r] = m[K5][r] / (2 * m[P5][r]);
    }
    put("quorum", "single_median_us", median(m[K1], (size_t)rounds), "us", "cycle, 1 node, median");
    put("quorum", "quorum5_median_us", median(m[K5], (size_t)rounds), "us", "cycle, 5 nodes, median");
    put("quorum", "ping1_median_us", median(m[P1], (size_t)rounds), "us", "PING, 1 node, median");
    put("quorum", "ping5_median_us", median(m[P5], (size_t)rounds), "us",
        "PING to 5 nodes at once (one poll loop), median");
    put("quorum", "quorum5_over_single", median(ratio, (size_t)rounds), "x",
        "ratio: 5-node cycle / 1-node cycle   (serial: 5)");
    put("quorum", "quorum5_over_2ping5", median(ratio_lim, (size_t)rounds), "x",
        "ratio: 5-node cycle / (2 x 5-node PING)   (limit 1.0)");
    free(tmp);
    for (int i = 0; i < QUORUM; i++)
        net_conn_free(pc[i]);
    redlock_free(l1);
    redlock_free(l5);
    redlock_client_free(c1);
    redlock_client_free(c5);
}

/* ---- 3b: the same over a network-like round trip ------------------------------------------ */

/* A delaying TCP proxy, one per node, all served by one forked process:
 * every chunk read from either side is forwarded after a fixed one-way
 * delay. It stands in for a LAN where the round trip, not CPU, dominates
 * (netem needs a kernel module this machine may not have). */
#define PX_MAX 128

typedef struct px_chunk {
    struct px_chunk *next;
    int64_t due;
    size_t len, off;
    char data[];
} px_chunk;

typedef struct px_side {
    int fd;
    px_chunk *head, *tail; /* to be written to fd */
} px_side;

static int px_listen(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        die("proxy listen: %s", strerror(errno));
    *port = ntohs(a.sin_port);
    return fd;
}

static int px_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* The proxy process: lfd[i] accepts, forwards to upstream port up[i]. */
static void px_run(const int *lfd, const int *up, int n, int64_t delay_ns)
{
    px_side side[PX_MAX]; /* pairs: 2k client side, 2k+1 upstream side */
    int npairs = 0;
    memset(side, 0, sizeof side);
    for (int64_t stop = now_ns() + 600 * 1000000000LL; now_ns() < stop;) {
        struct pollfd pfd[PX_MAX + 8];
        int map[PX_MAX + 8], k = 0;
        for (int i = 0; i < n; i++) {
            pfd[k] = (struct pollfd){lfd[i], POLLIN, 0};
            map[k++] = -1 - i;
        }
        int64_t next = INT64_MAX;
        for (int i = 0; i < 2 * npairs; i++) {
            if (side[i].fd < 0)
                continue;
            pfd[k] = (struct pollfd){side[i].fd, POLLIN, 0};
            map[k++] = i;
            if (side[i].head && side[i].head->due < next)
                next = side[i].head->due;
        }
        int64_t now = now_ns();
        struct timespec ts, *tp = NULL;
        if (next != INT64_MAX) {
            int64_t w = next > now ? next - now : 0;
            ts.tv_sec = (time_t)(w / 1000000000);
            ts.tv_nsec = (long)(w % 1000000000);
            tp = &ts;
        }
        if (ppoll(pfd, (nfds_t)k, tp, NULL) < 0 && errno != EINTR)
            _exit(1);
        now = now_ns();
        for (int j = 0; j < k; j++) {
            if (!pfd[j].revents)
                continue;
            if (map[j] < 0) {
                int i = -1 - map[j];
                int cfd = accept(lfd[i], NULL, NULL);
                if (cfd < 0)
                    continue;
                int ufd = px_connect(up[i]);
                if (ufd < 0 || npairs * 2 + 2 > PX_MAX) {
                    close(cfd);
                    if (ufd >= 0)
                        close(ufd);
                    continue;
                }
                int one = 1;
                setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                side[2 * npairs].fd = cfd;
                side[2 * npairs + 1].fd = ufd;
                npairs++;
                continue;
            }
            int i = map[j], peer = i ^ 1;
            char buf[65536];
            ssize_t r = recv(side[i].fd, buf, sizeof buf, 0);
            if (r <= 0) { /* one side closed: close both */
                for (int q = i & ~1; q <= (i | 1); q++) {
                    close(side[q].fd);
                    side[q].fd = -1;
                    while (side[q].head) {
                        px_chunk *c = side[q].head;
                        side[q].head = c->next;
                        free(c);
                    }
                    side[q].tail = NULL;
                }
                continue;
            }
            px_chunk *c = malloc(sizeof *c + (size_t)r);
            if (!c)
                _exit(1);
            c->next = NULL;
            c->due = now + delay_ns;
            c->len = (size_t)r;
            c->off = 0;
            memcpy(c->data, buf, (size_t)r);
            if (side[peer].tail)
                side[peer].tail->next = c;
            else
                side[peer].head = c;
            side[peer].tail = c;
        }
        now = now_ns();
        for (int i = 0; i < 2 * npairs; i++) {
            while (side[i].fd >= 0 && side[i].head && side[i].head->due <= now) {
                px_chunk *c = side[i].head;
                ssize_t w = send(side[i].fd, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
                if (w <= 0)
                    break;
                c->off += (size_t)w;
                if (c->off < c->len)
                    break;
                side[i].head = c->next;
                if (!side[i].head)
                    side[i].tail = NULL;
                free(c);
            }
        }
    }
    _exit(0);
}

static void bench_quorum_rtt(void)
{
    const int64_t one_way_us = 250;
    char title[160];
    snprintf(title, sizeof title,
             "3b. quorum over a simulated LAN: a proxy delays each direction by %lld us", (long long)one_way_us);
    heading(title);
    const int per = quick ? 50 : 200;
    int lfd[QUORUM], up[QUORUM], port[QUORUM];
    for (int i = 0; i < QUORUM; i++) {
        net_url u;
        char err[256];
        if (net_url_parse(&u, NULL, quorum_url(i), err, sizeof err) != RESP_OK || u.kind != NET_URL_TCP ||
            u.password[0]) {
            printf("  (skipped: needs plain redis:// URLs)\n");
            return;
        }
        up[i] = atoi(u.port);
        lfd[i] = px_listen(&port[i]);
    }
    pid_t px = bench_fork();
    if (px < 0)
        die("fork");
    if (px == 0)
        px_run(lfd, up, QUORUM, one_way_us * 1000);
    for (int i = 0; i < QUORUM; i++)
        close(lfd[i]);
    char purl[QUORUM][64];
    const char *q[QUORUM];
    for (int i = 0; i < QUORUM; i++) {
        snprintf(purl[i], sizeof purl[i], "redis://127.0.0.1:%d", port[i]);
        q[i] = purl[i];
    }
    net_conn *pc = conn_for(q[0]);
    redlock_client *c1 = client_for(q, 1, 1), *c5 = client_for(q, QUORUM, 1);
    redlock *l1 = lock_for(c1, "bench:r1", 10000), *l5 = lock_for(c5, "bench:r5", 10000);
    for (int i = 0; i < 20; i++) {
        cycle(l1, c1);
        cycle(l5, c5);
        ping(pc);
    }
    double m1[16], m5[16], mp[16], ratio[16];
    double *tmp = calloc((size_t)per, sizeof(double));
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < per; i++) {
                int64_t t0 = now_ns();
                if (k == 0)
                    ping(pc);
                else if (k == 1)
                    cycle(l1, c1);
                else
                    cycle(l5, c5);
                tmp[i] = (double)(now_ns() - t0) / 1e3;
            }
            double *dst[3] = {mp, m1, m5};
            dst[k][r] = median(tmp, (size_t)per);
        }
        ratio[r] = m5[r] / m1[r];
    }
    put("quorum_rtt", "ping_median_us", median(mp, (size_t)rounds), "us", "PING through the proxy, median");
    put("quorum_rtt", "single_median_us", median(m1, (size_t)rounds), "us", "cycle, 1 node, median");
    put("quorum_rtt", "quorum5_median_us", median(m5, (size_t)rounds), "us", "cycle, 5 nodes, median");
    put("quorum_rtt", "quorum5_over_single", median(ratio, (size_t)rounds), "x",
        "ratio: 5 nodes / 1 node   (serial: 5)");
    free(tmp);
    redlock_free(l1);
    redlock_free(l5);
    redlock_client_free(c1);
    redlock_client_free(c5);
    net_conn_free(pc);
    kill(px, SIGKILL);
    waitpid(px, NULL, 0);
}

/* ---- 4: handoff under contention ---------------------------------------------------------------- */

#define HANDOFF_PROCS 4
#define MAX_EVENTS 20000

typedef struct event {
    int proc;
    int64_t asked, acquired, released; /* lock() called, it returned OK, unlock() called */
} event;

typedef struct handoff_shared {
    int64_t start, end;
    int nevents;
    int failures;
    event ev[MAX_EVENTS];
} handoff_shared;

static void handoff_worker(handoff_shared *sh, int me)
{
    redlock_client *c = client_for(urls, 1, 1);
    redlock *l = lock_for(c, "bench:handoff", 5000);
    redlock_info info;
    redlock_inspect(l, &info); /* connect before the start */
    while (now_ns() < sh->start)
        sleep_ns(100000);
    for (int n = 0; n < MAX_EVENTS && now_ns() < sh->end; n++) {
        int64_t t0 = now_ns();
        int rc = redlock_lock(l, 2000);
        int64_t t1 = now_ns();
        if (rc != REDLOCK_OK) {
            __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
            continue;
        }
        sleep_ns(1000000); /* hold 1 ms */
        int64_t t2 = now_ns();
        if (redlock_unlock(l) != REDLOCK_OK)
            __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
        int i = __atomic_fetch_add(&sh->nevents, 1, __ATOMIC_RELAXED);
        if (i < MAX_EVENTS)
            sh->ev[i] = (event){me, t0, t1, t2};
        sleep_ns(2000000); /* work 2 ms outside the lock */
    }
    redlock_free(l);
    redlock_client_free(c);
}

static int cmp_event(const void *a, const void *b)
{
    const event *x = a, *y = b;
    return (x->acquired > y->acquired) - (x->acquired < y->acquired);
}

static void bench_handoff(int fair)
{
    heading(fair ? "4b. the same with fair = 1 (waiters served in the order they began to wait)"
                 : "4. handoff: 4 processes, each: wait for the lock, hold 1 ms, release, work 2 ms");
    const char *sec = fair ? "handoff_fair" : "handoff";
    fair_mode = fair;
    const double seconds = quick ? 1.0 : 4.0;
    handoff_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                              -1, 0);
    if (sh == MAP_FAILED)
        die("mmap");
    memset(sh, 0, sizeof *sh);
    sh->start = now_ns() + 300000000LL;
    sh->end = sh->start + (int64_t)(seconds * 1e9);
    double cmds0 = info_field(urls[0], "stats", "total_commands_processed");
    double req0 = requests_sent(urls[0]);
    pid_t pids[HANDOFF_PROCS];
    for (int i = 0; i < HANDOFF_PROCS; i++) {
        pids[i] = bench_fork();
        if (pids[i] < 0)
            die("fork");
        if (pids[i] == 0) {
            handoff_worker(sh, i);
            _exit(0);
        }
    }
    for (int i = 0; i < HANDOFF_PROCS; i++)
        waitpid(pids[i], NULL, 0);
    double req1 = requests_sent(urls[0]);
    double cmds1 = info_field(urls[0], "stats", "total_commands_processed");
    int n = sh->nevents < MAX_EVENTS ? sh->nevents : MAX_EVENTS;
    if (n < 2)
        die("handoff: only %d acquisitions", n);
    qsort(sh->ev, (size_t)n, sizeof sh->ev[0], cmp_event);
    double held = 0, *waits = calloc((size_t)n, sizeof(double)), *gaps = calloc((size_t)n, sizeof(double));
    int per[HANDOFF_PROCS] = {0}, ngaps = 0, overlaps = 0;
    for (int i = 0; i < n; i++) {
        const event *e = &sh->ev[i];
        held += (double)(e->released - e->acquired);
        waits[i] = (double)(e->acquired - e->asked) / 1e6;
        per[e->proc]++;
        if (i > 0) {
            const event *p = &sh->ev[i - 1];
            if (e->acquired < p->released)
                overlaps++;
            if (p->proc != e->proc)
                gaps[ngaps++] = (double)(e->acquired - p->released) / 1e3;
        }
    }
    double span = (double)(sh->ev[n - 1].released - sh->ev[0].acquired);
    double secs = span / 1e9;
    put(sec, "acquisitions_per_s", n / secs, "/s", "acquisitions per second");
    put(sec, "utilization", held / span, "", "utilization (time held / time)   (limit 1.0)");
    put(sec, "wait_median_ms", median(waits, (size_t)n), "ms", "wait per acquisition, median");
    put(sec, "wait_p99_ms", quantile(waits, (size_t)n, 0.99), "ms", "wait per acquisition, p99");
    put(sec, "gap_median_us", median(gaps, (size_t)ngaps), "us",
        "release -> next owner's acquire, median");
    put(sec, "gap_p99_us", quantile(gaps, (size_t)ngaps, 0.99), "us",
        "release -> next owner's acquire, p99");
    {
        double mx[HANDOFF_PROCS] = {0};
        for (int i = 0; i < n; i++) {
            double w = (double)(sh->ev[i].acquired - sh->ev[i].asked) / 1e6;
            if (w > mx[sh->ev[i].proc])
                mx[sh->ev[i].proc] = w;
        }
        printf("  per process: acquisitions (longest wait):");
        for (int i = 0; i < HANDOFF_PROCS; i++)
            printf(" %d (%.1f ms)", per[i], mx[i]);
        printf("\n");
        double worst = 0;
        for (int i = 0; i < HANDOFF_PROCS; i++)
            worst = mx[i] > worst ? mx[i] : worst;
        put(sec, "wait_max_ms", worst, "ms", "longest single wait");
    }
    int lo = per[0], hi = per[0];
    for (int i = 1; i < HANDOFF_PROCS; i++) {
        lo = per[i] < lo ? per[i] : lo;
        hi = per[i] > hi ? per[i] : hi;
    }
    put(sec, "share_min", (double)lo / n, "", "fairness: smallest process share   (fair 0.25)");
    put(sec, "share_max", (double)hi / n, "", "fairness: largest process share");
    put(sec, "requests_per_acquisition", (req1 - req0) / n, "",
        "requests sent per acquisition (all processes)");
    put(sec, "commands_per_acquisition", (cmds1 - cmds0 - 3) / n, "",
        "Redis commands run per acquisition (with scripts')");
    put(sec, "overlaps", overlaps, "", "overlapping holds seen");
    put(sec, "failures", sh->failures, "", "lock() or unlock() failures");
    free(waits);
    free(gaps);
    munmap(sh, sizeof *sh);
    fair_mode = 0;
}

/* ---- 4c: herd: many waiters on one name, each taking it once --------------------------- */

/* Sum of calls (or usec) of the script commands in INFO commandstats. */
static double script_stat_or(const char *url, const char *what, int may_fail)
{
    const char *text = info_or_null(url, "commandstats", may_fail);
    if (!text)
        return -1;
    static const char *const cmds[] = {"evalsha", "eval", "fcall", "fcall_ro"};
    double total = 0;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "cmdstat_%s:%s", cmds[i], what);
        const char *p = strstr(text, key);
        if (p)
            total += strtod(p + strlen(key), NULL);
    }
    return total;
}

static double script_stat(const char *url, const char *what)
{
    return script_stat_or(url, what, 0);
}

/* Server time of the commands clients send in the herd: scripts,
 * subscriptions, the rest of the protocol (see usec_of). */
static double all_usec(const char *url)
{
    static const char *const top[] = {
        "evalsha",      "eval",   "fcall",    "fcall_ro", "subscribe", "unsubscribe", "ssubscribe",
        "sunsubscribe", "script", "function", "ping",     "cluster",   "wait",        NULL};
    return usec_of(info(url, "commandstats"), top);
}

static void herd(int n, int fair)
{
    const char *u[1] = {urls[0]};
    char name[48];
    snprintf(name, sizeof name, "bench:herd:%d:%d", n, fair);
    /* the start: every waiter connected and warm, then the counters read,
     * then go */
    struct start {
        int64_t go;
        int ready;
    } *st = mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (st == MAP_FAILED)
        die("mmap");
    memset(st, 0, sizeof *st);
    int64_t give_up = now_ns() + 60000000000LL; /* bounded: a minute to get ready */
    pid_t *pid = calloc((size_t)n, sizeof *pid);
    for (int i = 0; i < n; i++) {
        pid[i] = bench_fork();
        if (pid[i] < 0)
            die("fork");
        if (pid[i] == 0) {
            fair_mode = fair;
            redlock_client *c = client_for(u, 1, 1);
            redlock *l = lock_for(c, name, 30000);
            char other[64];
            redlock *warm = NULL;
            snprintf(other, sizeof other, "%s:warm:%d", name, i);
            if (redlock_new(&warm, c, other, NULL, 1000) == REDLOCK_OK)
                redlock_trylock(warm); /* connected, scripts loaded, before the start */
            redlock_free(warm);
            __atomic_add_fetch(&st->ready, 1, __ATOMIC_SEQ_CST);
            while ((__atomic_load_n(&st->go, __ATOMIC_SEQ_CST) == 0 ||
                    now_ns() < __atomic_load_n(&st->go, __ATOMIC_SEQ_CST)) &&
                   now_ns() < give_up)
                sleep_ns(200000);
            int rc = redlock_lock(l, 120000);
            if (rc == REDLOCK_OK) {
                sleep_ns(200000); /* hold 0.2 ms */
                redlock_unlock(l);
            }
            redlock_free(l);
            redlock_client_free(c);
            _exit(rc == REDLOCK_OK ? 0 : 1);
        }
    }
    while (__atomic_load_n(&st->ready, __ATOMIC_SEQ_CST) < n && now_ns() < give_up)
        sleep_ns(1000000);
    double calls0 = script_stat(urls[0], "calls="), usec0 = all_usec(urls[0]);
    int64_t go = now_ns() + 10000000LL;
    __atomic_store_n(&st->go, go, __ATOMIC_SEQ_CST);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pid[i], &st, 0);
        failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    double wall = (double)(now_ns() - go) / 1e6;
    double calls = script_stat(urls[0], "calls=") - calls0, usec = all_usec(urls[0]) - usec0;
    char key[64], label[96];
    const char *mode = fair ? "fair" : "default";
    snprintf(key, sizeof key, "%s_%d_script_calls_per_acq", mode, n);
    snprintf(label, sizeof label, "%s, %d waiters: script calls per acquisition", mode, n);
    put("herd", key, calls / n, "", "%s", label);
    snprintf(key, sizeof key, "%s_%d_server_us_per_acq", mode, n);
    snprintf(label, sizeof label, "%s, %d waiters: server time per acquisition", mode, n);
    put("herd", key, usec / n, "us", "%s", label);
    snprintf(key, sizeof key, "%s_%d_wall_ms", mode, n);
    snprintf(label, sizeof label, "%s, %d waiters: wall time, all served", mode, n);
    put("herd", key, wall, "ms", "%s", label);
    if (failed)
        printf("  (%d of %d waiters failed)\n", failed, n);
    free(pid);
    munmap(st, sizeof *st);
    fair_mode = 0;
}

static void bench_herd(void)
{
    heading("4c. herd: N waiter processes on one name, each takes it once (hold 0.2 ms)");
    if (url_env) {
        printf("  (skipped with $REDLOCK_URL)\n");
        return;
    }
    static const int sizes[] = {10, 100, 300};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (quick && sizes[i] > 100)
            continue;
        herd(sizes[i], 0);
        herd(sizes[i], 1);
    }
}

/* ---- 5: parser ------------------------------------------------------------------------------------ */

static char *stream;
static size_t stream_len, stream_replies;

/* The replies the lock sees, a pub/sub message, and larger arrays. */
static void build_stream(void)
{
    static const char *const kinds[] = {
        ":1\r\n",
        "*2\r\n:1\r\n:42\r\n",
        "*2\r\n:0\r\n:29876\r\n",
        "+OK\r\n",
        "$-1\r\n",
        "-NOSCRIPT No matching script. Please use EVAL.\r\n",
        "*3\r\n$7\r\nmessage\r\n$16\r\nredlock:job-name\r\n$1\r\n1\r\n",
        "$32\r\n0123456789abcdef0123456789abcdef\r\n",
        "*3\r\n:1\r\n:12000\r\n:17\r\n",
    };
    const size_t nk = sizeof kinds / sizeof kinds[0];
    char big[4096];
    size_t bl = (size_t)snprintf(big, sizeof big, "*100\r\n");
    for (int i = 0; i < 100; i++)
        bl += (size_t)snprintf(big + bl, sizeof big - bl, "$12\r\nmember-%05d\r\n", i);
    size_t cap = 8u << 20;
    stream = malloc(cap);
    stream_len = stream_replies = 0;
    for (size_t i = 0; stream_len + sizeof big < cap; i++) {
        const char *s = i % 10 == 9 ? big : kinds[i % nk];
        size_t l = i % 10 == 9 ? bl : strlen(s);
        memcpy(stream + stream_len, s, l);
        stream_len += l;
        stream_replies++;
    }
}

/* Parse the whole stream in 16 KiB reads, as from a socket. Returns replies. */
__attribute__((noinline)) static size_t parse_stream_ours(void)
{
    static resp_reply elems[128];
    resp_parser p;
    resp_limits lim = {0, 128, 0, 0};
    resp_parser_init(&p, &lim, elems, 128);
    size_t off = 0, n = 0, have = 0;
    while (off < stream_len) {
        if (have < stream_len)
            have = have + 16384 < stream_len ? have + 16384 : stream_len;
        long r = resp_parse(&p, stream + off, have - off);
        if (r == RESP_PARSE_INCOMPLETE && have < stream_len)
            continue;
        if (r < 0)
            die("parse: %s", p.errstr);
        off += (size_t)r;
        n++;
    }
    return n;
}

#ifdef HAVE_HIREDIS
__attribute__((noinline)) static size_t parse_stream_hiredis(void)
{
    redisReader *rd = redisReaderCreate();
    size_t n = 0;
    for (size_t off = 0; off < stream_len; off += 16384) {
        size_t l = stream_len - off < 16384 ? stream_len - off : 16384;
        redisReaderFeed(rd, stream + off, l);
        void *reply;
        while (redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
            freeReplyObject(reply);
            n++;
        }
    }
    redisReaderFree(rd);
    return n;
}
#endif

/* Instructions (Ir) in fn, from callgrind on this binary in --parse-only mode. */
static double callgrind_ir(const char *which)
{
    char out[256], fn[64], cmd[1024];
    snprintf(out, sizeof out, "%s/callgrind.%s.out", BENCH_BUILD_DIR, which);
    snprintf(fn, sizeof fn, "parse_stream_%s", which);
    snprintf(cmd, sizeof cmd,
             "valgrind --tool=callgrind --callgrind-out-file=%s --collect-atstart=no "
             "--toggle-collect=%s /proc/%d/exe --parse-only %s >/dev/null 2>&1",
             out, fn, (int)getpid(), which);
    if (system(cmd) != 0)
        return -1;
    FILE *f = fopen(out, "r");
    if (!f)
        return -1;
    char line[512];
    double ir = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "totals:", 7) == 0 || strncmp(line, "summary:", 8) == 0)
            ir = strtod(strchr(line, ':') + 1, NULL);
    fclose(f);
    return ir;
}

static void bench_parser(int with_callgrind)
{
    heading("5. parser: a mixed stream of lock replies, pub/sub messages and 100-element arrays");
    build_stream();
    double ours[16], theirs[16], ratio[16];
    parse_stream_ours();
    for (int r = 0; r < rounds; r++) {
        int64_t t0 = now_ns();
        size_t n = parse_stream_ours();
        ours[r] = (double)(now_ns() - t0) / (double)n;
        if (n != stream_replies)
            die("parser: %zu replies of %zu", n, stream_replies);
#ifdef HAVE_HIREDIS
        t0 = now_ns();
        n = parse_stream_hiredis();
        theirs[r] = (double)(now_ns() - t0) / (double)n;
        if (n != stream_replies)
            die("hiredis: %zu replies of %zu", n, stream_replies);
        ratio[r] = ours[r] / theirs[r];
#endif
    }
    printf("  (%zu replies, %.1f MB per round)\n", stream_replies, (double)stream_len / 1e6);
    put("parser", "ours_ns_per_reply", median(ours, (size_t)rounds), "ns", "redlock-c resp_parse, per reply");
#ifdef HAVE_HIREDIS
    put("parser", "hiredis_ns_per_reply", median(theirs, (size_t)rounds), "ns",
        "hiredis redisReader, per reply");
    put("parser", "ours_over_hiredis", median(ratio, (size_t)rounds), "x", "ratio: ours / hiredis");
#else
    (void)theirs;
    (void)ratio;
#endif
    if (with_callgrind) {
        double ir = callgrind_ir("ours");
        if (ir > 0)
            put("parser", "ours_ir_per_reply", ir / (double)stream_replies, "instr",
                "redlock-c, instructions per reply (callgrind)");
#ifdef HAVE_HIREDIS
        double hir = callgrind_ir("hiredis");
        if (hir > 0)
            put("parser", "hiredis_ir_per_reply", hir / (double)stream_replies, "instr",
                "hiredis, instructions per reply (callgrind)");
#endif
    }
    free(stream);
    stream = NULL;
}

/* ---- 6: footprint ------------------------------------------------------------------------------------ */

static long n_alloc;
static size_t alloc_bytes;
static void *count_alloc(size_t n)
{
    n_alloc++;
    alloc_bytes += n;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n)
{
    n_alloc++;
    alloc_bytes += n;
    return realloc(p, n);
}

static double text_bytes(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "size -t %s/libredlock.a 2>/dev/null | tail -1", BENCH_BUILD_DIR);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    double text = -1;
    if (fscanf(f, "%lf", &text) != 1)
        text = -1;
    pclose(f);
    return text;
}

static void bench_footprint(void)
{
    heading("6. footprint");
    redlock_set_allocator(count_alloc, count_realloc, free);
    long a0 = n_alloc;
    size_t b0 = alloc_bytes;
    redlock_client *c = client_for(urls, 1, 1);
    redlock *l = lock_for(c, "bench:footprint", 10000);
    cycle(l, c);
    long setup_allocs = n_alloc - a0;
    size_t setup_bytes = alloc_bytes - b0;
    const int cycles = quick ? 1000 : 10000;
    a0 = n_alloc;
    for (int i = 0; i < cycles; i++) {
        if (redlock_trylock(l) != REDLOCK_OK || redlock_refresh(l) != REDLOCK_OK ||
            redlock_unlock(l) != REDLOCK_OK)
            die("footprint cycle: %s", redlock_client_errstr(c));
    }
    put("footprint", "allocs_per_cycle", (double)(n_alloc - a0) / cycles, "",
        "allocations per trylock+refresh+unlock   (target 0)");
    static redlock_stats st;
    redlock_client_on_event(c, count_event, NULL);
    a0 = n_alloc;
    for (int i = 0; i < cycles; i++) {
        if (redlock_trylock(l) != REDLOCK_OK || redlock_refresh(l) != REDLOCK_OK ||
            redlock_unlock(l) != REDLOCK_OK || redlock_client_stats(c, &st, sizeof st) != REDLOCK_OK)
            die("footprint cycle: %s", redlock_client_errstr(c));
    }
    put("footprint", "allocs_per_cycle_hook", (double)(n_alloc - a0) / cycles, "",
        "allocations per cycle, hook set, stats read (target 0)");
    put("footprint", "setup_allocs", (double)setup_allocs, "", "allocations: client + lock + connect");
    put("footprint", "setup_bytes", (double)setup_bytes, "B", "bytes allocated: client + lock + connect");
    redlock_free(l);
    redlock_client_free(c);
    redlock_set_allocator(NULL, NULL, NULL);
    put("footprint", "text_bytes", text_bytes(), "B", ".text of libredlock.a (size -t)");
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    put("footprint", "peak_rss_kb", (double)ru.ru_maxrss, "KiB", "peak RSS of this benchmark process");
}

/* ---- 7: throughput ------------------------------------------------------------------------------------------- */

typedef struct tp_shared {
    int64_t start, end;
    long cycles[64];
    int failures;
} tp_shared;

static double throughput_at(const char *url, int clients, double seconds);

static double throughput(int clients, double seconds)
{
    return throughput_at(urls[0], clients, seconds);
}

static double throughput_at(const char *url, int clients, double seconds)
{
    tp_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        die("mmap");
    memset(sh, 0, sizeof *sh);
    sh->start = now_ns() + 300000000LL;
    sh->end = sh->start + (int64_t)(seconds * 1e9);
    pid_t pids[64];
    for (int i = 0; i < clients; i++) {
        pids[i] = bench_fork();
        if (pids[i] < 0)
            die("fork");
        if (pids[i] == 0) {
            char name[32];
            snprintf(name, sizeof name, "bench:tp:%d", i);
            redlock_client *c = client_for(&url, 1, 1);
            redlock *l = lock_for(c, name, 10000);
            cycle(l, c);
            while (now_ns() < sh->start)
                sleep_ns(100000);
            long n = 0;
            while (n < 10000000 && now_ns() < sh->end) {
                if (redlock_trylock(l) != REDLOCK_OK || redlock_unlock(l) != REDLOCK_OK)
                    sh->failures++;
                n++;
            }
            sh->cycles[i] = n;
            redlock_free(l);
            redlock_client_free(c);
            _exit(0);
        }
    }
    for (int i = 0; i < clients; i++)
        waitpid(pids[i], NULL, 0);
    long total = 0;
    for (int i = 0; i < clients; i++)
        total += sh->cycles[i];
    if (sh->failures)
        die("throughput: %d failed cycles", sh->failures);
    munmap(sh, sizeof *sh);
    return (double)total / seconds;
}

/* One thread, one client, inflight locks each cycling trylock+unlock with
 * the non-blocking API in a poll() loop: cycles per second. */
static double throughput_async(int inflight, double seconds)
{
    redlock_client *c = client_for(urls, 1, 1);
    redlock **l = calloc((size_t)inflight, sizeof *l);
    int *taking = calloc((size_t)inflight, sizeof *taking);
    if (!l || !taking)
        die("calloc");
    for (int i = 0; i < inflight; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench:async:%d", i);
        l[i] = lock_for(c, name, 10000);
        redlock_set_userdata(l[i], &taking[i]);
    }
    struct pollfd fds[8];
    long cycles = 0;
    int64_t start = 0, end = 0;
    for (int phase = 0; phase < 2; phase++) { /* a warm-up, then the measured run */
        int64_t t0 = now_ns(), stop = t0 + (int64_t)((phase ? seconds : 0.2) * 1e9);
        int active = 0;
        for (int i = 0; i < inflight; i++) {
            taking[i] = 1;
            if (redlock_start_trylock(l[i]) != REDLOCK_OK)
                die("start: %s", redlock_client_errstr(c));
            active++;
        }
        long n = 0;
        while (active > 0) {
            int k = redlock_client_pollfds(c, fds, 8);
            int t = redlock_client_timeout_ms(c);
            poll(fds, (nfds_t)(k < 8 ? k : 8), t < 0 || t > 100 ? 100 : t);
            redlock_client_process(c, fds, k < 8 ? k : 8);
            for (redlock *d; (d = redlock_client_done(c)) != NULL;) {
                int *tk = redlock_userdata(d);
                if (redlock_result(d) != REDLOCK_OK)
                    die("async cycle: %s", redlock_errstr(d));
                if (*tk) {
                    *tk = 0;
                    redlock_start_unlock(d);
                } else if (now_ns() < stop) {
                    n++;
                    *tk = 1;
                    redlock_start_trylock(d);
                } else {
                    n++;
                    active--;
                }
            }
        }
        start = t0;
        end = now_ns();
        cycles = n;
    }
    for (int i = 0; i < inflight; i++)
        redlock_free(l[i]);
    free(l);
    free(taking);
    redlock_client_free(c);
    return (double)cycles / ((double)(end - start) / 1e9);
}

/* redis-benchmark's SET requests per second at this concurrency (-1: not available). */
static double redis_benchmark_set(int clients)
{
    net_url u;
    char err[256];
    if (net_url_parse(&u, NULL, urls[0], err, sizeof err) != RESP_OK)
        return -1;
    char cmd[1024];
    int n = quick ? 20000 : 100000;
    if (u.kind == NET_URL_UNIX)
        snprintf(cmd, sizeof cmd, "redis-benchmark -s '%s' -t set -n %d -c %d --csv 2>/dev/null",
                 u.path, n, clients);
    else
        snprintf(cmd, sizeof cmd, "redis-benchmark -h '%s' -p %s -t set -n %d -c %d --csv 2>/dev/null",
                 u.host, u.port, n, clients);
    if (u.password[0])
        return -1; /* not on a command line */
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[512];
    double rps = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "\"SET\",\"", 7) == 0)
            rps = strtod(line + 7, NULL);
    pclose(f);
    return rps;
}

/* ---- 8. semaphores and read-write locks ---------------------------------------------- */

#define MIX_READERS 8
#define MIX_WRITERS 2
#define MIX_CAP 40000 /* waits recorded per kind */

typedef struct mix {
    atomic_int stop;
    atomic_int n[2];          /* acquisitions: readers, writers */
    atomic_int overlaps;      /* a writer inside with anyone else */
    atomic_int inside[2];
    double wait_ms[2][MIX_CAP];
} mix;

/* One process of the mix: take the name's read or write lock again and
 * again (10 ms inside, 5 ms outside), recording each wait. */
static void mix_worker(mix *m, int writer, const char *url)
{
    redlock_client *c = client_for(&url, 1, 1);
    redlock *l = NULL;
    int rc = writer ? redlock_new(&l, c, "bench:rw", NULL, 10000)
                    : redlock_new_shared(&l, c, "bench:rw", NULL, 10000);
    if (rc != REDLOCK_OK)
        _exit(1);
    for (int k = 0; k < 100000 && !atomic_load(&m->stop); k++) {
        int64_t t0 = now_ns();
        if (redlock_lock(l, 30000) != REDLOCK_OK)
            continue;
        int i = atomic_fetch_add(&m->n[writer], 1);
        if (i < MIX_CAP)
            m->wait_ms[writer][i] = (double)(now_ns() - t0) / 1e6;
        atomic_fetch_add(&m->inside[writer], 1);
        if (atomic_load(&m->inside[1]) > 1 || (writer && atomic_load(&m->inside[0]) > 0) ||
            (!writer && atomic_load(&m->inside[1]) > 0))
            atomic_fetch_add(&m->overlaps, 1);
        usleep(10000);
        atomic_fetch_sub(&m->inside[writer], 1);
        redlock_unlock(l);
        usleep(5000);
    }
    _exit(0);
}

static void bench_semaphore(void)
{
    heading("8. semaphores and read-write locks  (one node, loopback TCP)");
    const int per = quick ? 300 : 2000;
    redlock_client *c = client_for(urls, 1, 1);
    redlock *l = lock_for(c, "bench:sem:lock", 10000), *s = NULL, *r = NULL;
    if (redlock_new_semaphore(&s, c, "bench:sem", 4, NULL, 10000) != REDLOCK_OK ||
        redlock_new_shared(&r, c, "bench:sem:rw", NULL, 10000) != REDLOCK_OK)
        die("semaphore: %s", redlock_client_errstr(c));
    redlock *kinds[3] = {l, s, r};
    double med[3][16], tmp_ratio[2][16];
    double *tmp = calloc((size_t)per, sizeof(double));
    for (int i = 0; i < 200; i++)
        for (int k = 0; k < 3; k++)
            cycle(kinds[k], c);
    for (int rd = 0; rd < rounds; rd++) {
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < per; i++) {
                int64_t t0 = now_ns();
                cycle(kinds[k], c);
                tmp[i] = (double)(now_ns() - t0) / 1e3;
            }
            med[k][rd] = median(tmp, (size_t)per);
        }
        tmp_ratio[0][rd] = med[1][rd] / med[0][rd];
        tmp_ratio[1][rd] = med[2][rd] / med[0][rd];
    }
    static const char *const names[3] = {"lock", "semaphore (4 permits)", "shared (reader)"};
    static const char *const keys[3] = {"lock_cycle_us", "semaphore_cycle_us", "shared_cycle_us"};
    for (int k = 0; k < 3; k++)
        put("semaphore", keys[k], median(med[k], (size_t)rounds), "us",
            "%s trylock+unlock, median", names[k]);
    put("semaphore", "semaphore_over_lock", median(tmp_ratio[0], (size_t)rounds), "x",
        "ratio: semaphore cycle / lock cycle   (target <= 1.3)");
    put("semaphore", "shared_over_lock", median(tmp_ratio[1], (size_t)rounds), "x",
        "ratio: reader cycle / lock cycle");
    free(tmp);
    redlock_free(l);
    redlock_free(s);
    redlock_free(r);
    redlock_client_free(c);

    /* 8 readers and 2 writers (processes) on one read-write lock */
    mix *m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    memset(m, 0, sizeof *m);
    pid_t pid[MIX_READERS + MIX_WRITERS];
    for (int i = 0; i < MIX_READERS + MIX_WRITERS; i++) {
        pid[i] = bench_fork();
        if (pid[i] == 0)
            mix_worker(m, i >= MIX_READERS, urls[0]);
    }
    int secs = quick ? 2 : 8;
    int64_t t0 = now_ns();
    usleep((useconds_t)secs * 1000000);
    atomic_store(&m->stop, 1);
    for (int i = 0; i < MIX_READERS + MIX_WRITERS; i++)
        waitpid(pid[i], NULL, 0);
    double took = (double)(now_ns() - t0) / 1e9;
    for (int w = 0; w < 2; w++) {
        const char *who = w ? "writers (2)" : "readers (8)";
        int n = atomic_load(&m->n[w]);
        size_t kept = (size_t)(n < MIX_CAP ? n : MIX_CAP);
        put("semaphore", w ? "rw_writer_acq_per_s" : "rw_reader_acq_per_s", (double)n / took, "/s",
            "read-write mix: %s acquisitions", who);
        put("semaphore", w ? "rw_writer_wait_p99_ms" : "rw_reader_wait_p99_ms",
            quantile(m->wait_ms[w], kept, 0.99), "ms", "read-write mix: %s wait, p99", who);
    }
    put("semaphore", "rw_overlaps", (double)atomic_load(&m->overlaps), "",
        "read-write mix: a writer inside with anyone else   (must be 0)");
    printf("  (reference: Redisson's RReadWriteLock, 8 readers and 2 writers: writers 0.21/s,\n"
           "   p99 wait 16.8 s; 10 ms holds and 5 ms pauses here, %d s)\n", secs);
    munmap(m, sizeof *m);
}

static void bench_throughput(void)
{
    heading("7. throughput: lock cycles per second, distinct keys, one process per client");
    static const int conc[] = {1, 8, 32};
    const double seconds = quick ? 0.5 : 2.0;
    double c8 = 0;
    for (size_t i = 0; i < sizeof conc / sizeof conc[0]; i++) {
        char key[48], label[96];
        double ours = throughput(conc[i], seconds);
        if (conc[i] == 8)
            c8 = ours;
        snprintf(key, sizeof key, "cycles_per_s_c%d", conc[i]);
        snprintf(label, sizeof label, "redlock-c trylock+unlock, %d client%s", conc[i], conc[i] > 1 ? "s" : "");
        put("throughput", key, ours, "/s", "%s", label);
        double set = redis_benchmark_set(conc[i]);
        if (set > 0) {
            snprintf(key, sizeof key, "redis_benchmark_set_c%d", conc[i]);
            put("throughput", key, set, "/s", "redis-benchmark SET, %d client%s", conc[i],
                conc[i] > 1 ? "s" : "");
            snprintf(key, sizeof key, "cycles_over_set_c%d", conc[i]);
            put("throughput", key, ours / set, "x", "ratio: cycles / SETs (a cycle is 2 requests)");
        }
    }
    double one = throughput_async(256, seconds);
    put("throughput", "async_cycles_per_s_256", one, "/s",
        "ONE thread, 256 locks in flight (non-blocking API)");
    put("throughput", "async_over_c8", one / c8, "x",
        "ratio: one thread / 8 processes   (target >= 0.8)");
}

/* Two kinds of cycle in turn, per cycles each, rounds times: the median of
 * each kind per round (ma, mb, in us) and their ratio b / a per round. */
static void alternate(redlock *a, redlock_client *ca, redlock *b, redlock_client *cb, int per,
                      int rounds, double *ma, double *mb, double *ratio)
{
    double *tmp = calloc((size_t)per, sizeof(double));
    if (!tmp)
        die("out of memory");
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < per; i++) {
                int64_t t0 = now_ns();
                if (k == 0)
                    cycle(a, ca);
                else
                    cycle(b, cb);
                tmp[i] = (double)(now_ns() - t0) / 1e3;
            }
            (k == 0 ? ma : mb)[r] = median(tmp, (size_t)per);
        }
        ratio[r] = mb[r] / ma[r];
    }
    free(tmp);
}

/* ---- 8: Redis Cluster ------------------------------------------------------------------------------- */

static void bench_cluster(void)
{
    heading("8. Redis Cluster: 3 primaries on loopback, locks routed by hash slot");
    if (url_env) {
        printf("  (skipped with $REDLOCK_URL)\n");
        return;
    }
    static fx_cluster cl;
    if (fx_cluster_start(&cl, 3, 0) != 0) {
        printf("  (skipped: the cluster did not start)\n");
        return;
    }
    const char *seed = fx_cluster_seed_url(&cl);
    char seed_url[96];
    snprintf(seed_url, sizeof seed_url, "%s", seed);
    const char *cu[1] = {seed_url};
    const int per = quick ? 200 : 1000;
    redlock_client *c1 = client_for(urls, 1, 1), *cc = client_for(cu, 1, 1);
    redlock *l1 = lock_for(c1, "bench:c1", 10000), *lc = lock_for(cc, "bench:cl", 10000);
    for (int i = 0; i < 200; i++) { /* connect, learn the slot map */
        cycle(l1, c1);
        cycle(lc, cc);
    }
    double m1[16], mc[16], ratio[16];
    alternate(l1, c1, lc, cc, per, rounds, m1, mc, ratio);
    put("cluster", "single_median_us", median(m1, (size_t)rounds), "us", "cycle, one node, median");
    put("cluster", "cluster_median_us", median(mc, (size_t)rounds), "us",
        "cycle, cluster (map known), median");
    put("cluster", "cluster_over_single", median(ratio, (size_t)rounds), "x",
        "ratio: cluster cycle / one-node cycle   (target <= 1.1)");
    redlock_free(l1);
    redlock_free(lc);
    redlock_client_free(c1);
    redlock_client_free(cc);
    const double seconds = quick ? 0.5 : 2.0;
    double one = throughput_at(urls[0], 8, seconds), three = throughput_at(seed_url, 8, seconds);
    put("cluster", "cycles_per_s_one_node_c8", one, "/s", "8 processes, one node");
    put("cluster", "cycles_per_s_cluster_c8", three, "/s", "8 processes, 3-primary cluster");
    put("cluster", "cluster_over_one_node_c8", three / one, "x",
        "ratio: cluster / one node, 8 processes (2 vCPUs run it all)");
    fx_cluster_stop(&cl);
}

/* ---- 9: TLS ---------------------------------------------------------------------------------------------- */

#ifdef REDLOCK_WITH_TLS
/* A net_conn over the OpenSSL transport. */
static net_conn *tls_conn_for(const char *url)
{
    net_url u;
    char err[256];
    if (net_url_parse(&u, NULL, url, err, sizeof err) != RESP_OK)
        die("%s: %s", url, err);
    net_opts o;
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = o.io_timeout_ms = 2000;
    o.tls = redlock_tls_openssl();
    net_conn *c = NULL;
    if (net_conn_new(&c, &u, &o) != RESP_OK)
        die("out of memory");
    return c;
}

/* Close c, then PING: a reconnect (TCP, and TLS for a rediss:// one) and
 * one round trip. The connection keeps its TLS settings (SSL_CTX, CA). */
static void reconnect_ping(net_conn *c)
{
    net_conn_close(c);
    ping(c);
}

enum { T_PLAIN, T_TLS, T_KINDS };

static void bench_tls(void)
{
    heading("9. TLS: cycle and handshake  (one redis-server: its plain and its TLS port, loopback)");
    fx_tls certs;
    fx_server s;
    if (fx_tls_make(&certs) != 0 || fx_tls_server_start(&s, &certs, FX_TLS_SERVER, "no", 1) != 0)
        die("cannot make certificates or start a TLS redis-server");
    char url[1024];
    fx_tls_client trust = {.ca = certs.ca};
    if (fx_tls_url(url, sizeof url, &s, &trust) != 0)
        die("URL too long");
    const char *tls_url = url, *plain_url = s.url;
    redlock_options o;
    redlock_options_init(&o);
    o.tls = redlock_tls_openssl();
    redlock_client *c[T_KINDS] = {client_for(&plain_url, 1, 1), NULL};
    if (redlock_client_new(&c[T_TLS], &tls_url, 1, &o) != REDLOCK_OK)
        die("client: %s", redlock_last_errstr());
    redlock *l[T_KINDS] = {lock_for(c[T_PLAIN], "bench:tls:p", 10000),
                           lock_for(c[T_TLS], "bench:tls:t", 10000)};
    net_conn *pc[T_KINDS] = {conn_for(plain_url), tls_conn_for(tls_url)};
    const int per = quick ? 300 : 2000, hs = quick ? 30 : 150;
    double *tmp = calloc((size_t)per, sizeof(double));
    double cyc[T_KINDS][16], rec[T_KINDS][16], ratio[16], hs_cost[16], fresh[16];
    for (int i = 0; i < 200; i++)
        for (int k = 0; k < T_KINDS; k++) {
            cycle(l[k], c[k]);
            ping(pc[k]);
        }
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < T_KINDS; k++) {
            for (int i = 0; i < per; i++) {
                int64_t t0 = now_ns();
                cycle(l[k], c[k]);
                tmp[i] = (double)(now_ns() - t0) / 1e3;
            }
            cyc[k][r] = median(tmp, (size_t)per);
            for (int i = 0; i < hs; i++) {
                int64_t t0 = now_ns();
                reconnect_ping(pc[k]);
                tmp[i] = (double)(now_ns() - t0) / 1e3;
            }
            rec[k][r] = median(tmp, (size_t)hs);
        }
        /* a new connection object: its SSL_CTX and CA file too */
        for (int i = 0; i < hs; i++) {
            int64_t t0 = now_ns();
            net_conn *fc = tls_conn_for(tls_url);
            ping(fc);
            net_conn_free(fc);
            tmp[i] = (double)(now_ns() - t0) / 1e3;
        }
        fresh[r] = median(tmp, (size_t)hs);
        ratio[r] = cyc[T_TLS][r] / cyc[T_PLAIN][r];
        hs_cost[r] = rec[T_TLS][r] - rec[T_PLAIN][r];
    }
    put("tls", "plain_cycle_median_us", median(cyc[T_PLAIN], (size_t)rounds), "us",
        "trylock+unlock, plain port, median");
    put("tls", "tls_cycle_median_us", median(cyc[T_TLS], (size_t)rounds), "us",
        "trylock+unlock, TLS port, median");
    put("tls", "tls_over_plain_cycle", median(ratio, (size_t)rounds), "x",
        "ratio: TLS cycle / plain cycle");
    put("tls", "plain_reconnect_us", median(rec[T_PLAIN], (size_t)rounds), "us",
        "reconnect + PING, plain, median");
    put("tls", "tls_reconnect_us", median(rec[T_TLS], (size_t)rounds), "us",
        "reconnect + TLS handshake + PING, median");
    put("tls", "tls_handshake_us", median(hs_cost, (size_t)rounds), "us",
        "TLS handshake (TLS reconnect - plain reconnect)");
    put("tls", "tls_new_connection_us", median(fresh, (size_t)rounds), "us",
        "new connection: SSL_CTX, CA file, handshake, PING");
    free(tmp);
    for (int k = 0; k < T_KINDS; k++) {
        net_conn_free(pc[k]);
        redlock_free(l[k]);
        redlock_client_free(c[k]);
    }
    fx_server_stop(&s);
    fx_tls_free(&certs);
}
#else
static void bench_tls(void)
{
    heading("9. TLS");
    printf("  (skipped: built without TLS; make bench TLS=openssl)\n");
}
#endif

/* ---- 10: Redis Sentinel ------------------------------------------------------------------------------------ */

/* The port sentinel i names as group 0's master, or -1. */
static int named_port(fx_sentinel *fx, int i)
{
    char out[256], cmd[96];
    snprintf(cmd, sizeof cmd, "SENTINEL GET-MASTER-ADDR-BY-NAME %s", fx->name[0]);
    const char *nl;
    if (fx_sentinel_cmd(fx, i, out, sizeof out, cmd) != 0 || !(nl = strchr(out, '\n')))
        return -1;
    return atoi(nl + 1);
}

/* From SENTINEL FAILOVER to the first lock a client (making blocking calls
 * only) is granted by the new master: the first acquire after which the
 * new master has run one of our scripts (as a replica it runs none: the
 * scripts' effects come over as plain writes). And from the moment a
 * sentinel names the new master to that lock. One failover: the next
 * would wait for the sentinels to convert the old master. */
static void sentinel_failover_time(fx_sentinel *fx)
{
    fx_server *nw = fx_sentinel_server(fx, 0, 1 - fx_sentinel_master(fx, 0));
    const char *su[1] = {fx->url[0]};
    redlock_client *c = client_for(su, 1, 1);
    redlock *l = lock_for(c, "bench:sfo", 10000);
    cycle(l, c);
    char out[256], cmd[96];
    snprintf(cmd, sizeof cmd, "SENTINEL FAILOVER %s", fx->name[0]);
    if (fx_cmd(nw, out, sizeof out, "CONFIG RESETSTAT") != 0)
        die("sentinel: CONFIG RESETSTAT");
    int64_t t0 = now_ns(), named = 0, granted = 0;
    for (int i = 0; i < 100 && (fx_sentinel_cmd(fx, 0, out, sizeof out, cmd) != 0 ||
                                strcmp(out, "OK") != 0); i++)
        sleep_ns(200 * 1000000LL); /* NOGOODSLAVE: not yet */
    for (int i = 0; i < 100000 && !granted && now_ns() - t0 < 30 * 1000000000LL; i++) {
        if (!named && named_port(fx, 0) == nw->port)
            named = now_ns();
        if (redlock_trylock(l) != REDLOCK_OK) {
            sleep_ns(1000000);
            continue;
        }
        if (script_stat_or(nw->url, "calls=", 1) > 0) /* -1: killed, ask again */
            granted = now_ns();
        redlock_unlock(l);
    }
    if (!granted)
        die("sentinel: no lock from the new master within 30 s of the failover");
    put("sentinel", "failover_to_lock_ms", (double)(granted - t0) / 1e6, "ms",
        "SENTINEL FAILOVER -> first lock from the new master");
    put("sentinel", "named_to_lock_ms", named ? (double)(granted - named) / 1e6 : 0, "ms",
        "a sentinel names it -> that lock (a blocking-only client)");
    redlock_free(l);
    redlock_client_free(c);
}

static void bench_sentinel(void)
{
    heading("10. Redis Sentinel: a master, a replica, three sentinels on loopback");
    if (url_env) {
        printf("  (skipped with $REDLOCK_URL)\n");
        return;
    }
    static fx_sentinel fx;
    if (fx_sentinel_start(&fx, NULL) != 0) {
        printf("  (skipped: the sentinels did not start)\n");
        return;
    }
    sentinels = &fx;
    fx_server *m = fx_sentinel_server(&fx, 0, fx_sentinel_master(&fx, 0));
    const char *pu[1] = {m->url}, *su[1] = {fx.url[0]};
    const int per = quick ? 200 : 1000;
    redlock_client *cp = client_for(pu, 1, 1), *cs = client_for(su, 1, 1);
    redlock *lp = lock_for(cp, "bench:sp", 10000), *ls = lock_for(cs, "bench:ss", 10000);
    for (int i = 0; i < 200; i++) { /* connect, find the master */
        cycle(lp, cp);
        cycle(ls, cs);
    }
    double mp[16], ms[16], ratio[16];
    alternate(lp, cp, ls, cs, per, rounds, mp, ms, ratio);
    put("sentinel", "plain_median_us", median(mp, (size_t)rounds), "us",
        "cycle on the master's own URL, median");
    put("sentinel", "sentinel_median_us", median(ms, (size_t)rounds), "us",
        "cycle through the Sentinel URL (master found), median");
    put("sentinel", "sentinel_over_plain", median(ratio, (size_t)rounds), "x",
        "ratio: Sentinel URL cycle / plain cycle   (target <= 1.02)");
    double sp = syscalls_at("cycle", m->url), ss = syscalls_at("cycle", fx.url[0]);
    if (sp > 0 && ss > 0) {
        put("sentinel", "syscalls_plain", sp, "", "system calls per cycle, master's URL (strace)");
        put("sentinel", "syscalls_sentinel", ss, "", "system calls per cycle, Sentinel URL");
    }
    redlock_free(lp);
    redlock_free(ls);
    redlock_client_free(cp);
    redlock_client_free(cs);
    sentinel_failover_time(&fx);
    fx_sentinel_stop(&fx);
    sentinels = NULL;
}

/* ---- main -------------------------------------------------------------------------------------------------- */

static void write_json(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die("%s: %s", path, strerror(errno));
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    fprintf(f, "{\n  \"version\": \"%s\",\n  \"cpus\": %ld,\n  \"rounds\": %d,\n  \"hiredis\": %s,\n",
            REDLOCK_VERSION, sysconf(_SC_NPROCESSORS_ONLN), rounds,
#ifdef HAVE_HIREDIS
            "true"
#else
            "false"
#endif
    );
    fprintf(f, "  \"results\": {\n");
    for (size_t i = 0; i < nresults; i++) {
        int first = i == 0 || strcmp(results[i].section, results[i - 1].section) != 0;
        int last = i + 1 == nresults || strcmp(results[i].section, results[i + 1].section) != 0;
        if (first)
            fprintf(f, "    \"%s\": {\n", results[i].section);
        fprintf(f, "      \"%s\": %.6g%s\n", results[i].key, results[i].value, last ? "" : ",");
        if (last)
            fprintf(f, "    }%s\n", i + 1 == nresults ? "" : ",");
    }
    fprintf(f, "  }\n}\n");
    fclose(f);
    printf("\nJSON: %s\n", path);
}

int main(int argc, char **argv)
{
    const char *json = BENCH_BUILD_DIR "/bench.json";
    int with_callgrind = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--parse-only") == 0 && i + 1 < argc) {
            /* for callgrind: build the stream, parse it once with one parser */
            build_stream();
            if (strcmp(argv[i + 1], "ours") == 0)
                return parse_stream_ours() == stream_replies ? 0 : 1;
#ifdef HAVE_HIREDIS
            if (strcmp(argv[i + 1], "hiredis") == 0)
                return parse_stream_hiredis() == stream_replies ? 0 : 1;
#endif
            return 2;
        } else if (strcmp(argv[i], "--syscall-run") == 0 && i + 3 < argc) {
            urls[0] = argv[i + 3];
            return syscall_run(argv[i + 1], atoi(argv[i + 2]), argv[i + 3]);
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            json = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--callgrind") == 0)
            with_callgrind = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--tls-only") == 0)
            only = "tls";
        else
            die("usage: bench [--json FILE] [--quick] [--callgrind] [--only SECTION] [--tls-only]\n"
                "sections: cycle syscalls quorum rtt handoff herd parser footprint semaphore "
                "throughput cluster tls sentinel");
    }
    if (quick)
        rounds = 3;
    signal(SIGPIPE, SIG_IGN);
    char cpu[256] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0) {
                snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
                cpu[strcspn(cpu, "\n")] = '\0';
                break;
            }
        fclose(f);
    }
    printf("redlock-c %s bench: %ld CPUs (%s), %d rounds, medians of round medians\n",
           REDLOCK_VERSION, sysconf(_SC_NPROCESSORS_ONLN), cpu, rounds);
    if (only && strcmp(only, "tls") == 0) { /* it starts its own server */
        bench_tls();
        write_json(json);
        return 0;
    }
    start_servers();
    if (want("cycle"))
        bench_cycle();
    if (want("syscalls"))
        bench_syscalls();
    if (want("quorum"))
        bench_quorum();
    if (want("rtt"))
        bench_quorum_rtt();
    if (want("handoff")) {
        bench_handoff(0);
        bench_handoff(1);
    }
    if (want("herd"))
        bench_herd();
    if (want("parser"))
        bench_parser(with_callgrind);
    if (want("footprint"))
        bench_footprint();
    if (want("semaphore"))
        bench_semaphore();
    if (want("throughput"))
        bench_throughput();
    if (want("cluster"))
        bench_cluster();
    if (want("tls"))
        bench_tls();
    if (want("sentinel"))
        bench_sentinel();
    write_json(json);
    return 0;
}
