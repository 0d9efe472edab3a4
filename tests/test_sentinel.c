/* test_sentinel.c - locks through Redis Sentinel (tests/fx_sentinel.h: a
 * master, a replica and three sentinels on loopback): lock and release,
 * fencing, fair mode, Functions mode and the non-blocking API through a
 * redis+sentinel:// URL; a sentinel down and one stopped; a sentinel that
 * names a replica; SENTINEL FAILOVER while a waiter waits; SIGKILL of the
 * master under keepalive (the lease survives where wait_replicas got it
 * to the replica, and its loss is reported where it did not); sentinel
 * passwords; a quorum of two Sentinel-managed groups and a plain node;
 * the command; and the errors of bad input. Counted, not timed. */
#define _GNU_SOURCE
#include "fixture.h"
#include "fx_sentinel.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FX_BUILD_DIR
#define FX_BUILD_DIR "build"
#endif

static fx_sentinel fx;

static void setup(void)
{
    ck_assert_int_eq(fx_sentinel_start(&fx, NULL), 0);
}

static void teardown(void)
{
    fx_sentinel_stop(&fx);
}

/* A client over the group's Sentinel URL. */
static redlock_client *sentinel_client(const char *url, const redlock_options *base)
{
    redlock_options o;
    if (base)
        o = *base;
    else
        redlock_options_init(&o);
    return tu_client_opts(&url, 1, &o);
}

/* The server of group g the sentinels name now. */
static fx_server *master_of(int g)
{
    int k = fx_sentinel_master(&fx, g);
    ck_assert_int_ge(k, 0);
    return fx_sentinel_server(&fx, g, k);
}

/* calls of EVAL, EVALSHA and FCALL on s since its last CONFIG RESETSTAT:
 * a lock script run there (or tried: a refused one counts too). */
static long script_calls(fx_server *s)
{
    return tu_cmd_calls(s, "evalsha") + tu_cmd_calls(s, "eval") + tu_cmd_calls(s, "fcall") +
           tu_cmd_calls(s, "fcall_ro");
}

static void reset_stats(fx_server *s)
{
    char out[64];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, "CONFIG RESETSTAT"), 0);
    ck_assert_str_eq(out, "OK");
}

/* ---- through a Sentinel URL ------------------------------------------------------------ */

START_TEST(test_lock_release)
{
    redlock_client *c = sentinel_client(fx.url[0], NULL);
    fx_server *m = master_of(0), *r = fx_sentinel_server(&fx, 0, 1 - fx_sentinel_master(&fx, 0));
    reset_stats(r);
    redlock *l = tu_lock(c, "sn:basic", "owner-1", 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_msg(tu_seeded(redlock_fence(l)), "fence %llu", (unsigned long long)redlock_fence(l));
    ck_assert_str_eq(tu_get(m, "sn:basic"), "owner-1");
    /* a second owner through the same sentinels is refused */
    redlock_client *c2 = sentinel_client(fx.url[0], NULL);
    redlock *other = tu_lock(c2, "sn:basic", "owner-2", 10000);
    ck_assert_int_eq(redlock_trylock(other), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
    uint64_t f1 = redlock_fence(l);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_str_eq(tu_get(m, "sn:basic"), "");
    ck_assert_int_eq(redlock_trylock(other), REDLOCK_OK);
    ck_assert_uint_gt(redlock_fence(other), f1);
    ck_assert_int_eq(redlock_unlock(other), REDLOCK_OK);
    /* once the master is found and listened for, a cycle allocates nothing */
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    tu_alloc_start(0);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    tu_alloc_stop();
    ck_assert_int_eq(tu_alloc.calls, 0);
    /* nothing ever ran on the replica (replica-read-only is off there) */
    ck_assert_int_eq(script_calls(r), 0);
    redlock_free(l);
    redlock_free(other);
    redlock_client_free(c);
    redlock_client_free(c2);
}
END_TEST

/* The options the waiters of these tests use: a waiter wakes on a release
 * (or a new master), never on its backoff timer, so what it does is what
 * the test made happen. */
static redlock_options patient(void)
{
    redlock_options o;
    redlock_options_init(&o);
    o.retry_min_ms = 60000;
    o.retry_max_ms = 60000;
    return o;
}

/* Turn c until cond(arg) holds (at most `turns` turns of up to 50 ms). */
static int turn_until(redlock_client *c, int (*cond)(void *), void *arg, int turns)
{
    for (int i = 0; i < turns; i++) {
        if (cond(arg))
            return 1;
        tu_turn(c, 50);
    }
    return cond(arg);
}

/* PUBSUB NUMSUB of a lock's release channel on s: waiters listening there. */
static long listeners_on(fx_server *s, const char *name)
{
    char cmd[256], out[256];
    snprintf(cmd, sizeof cmd, "PUBSUB NUMSUB redlock:%s", name);
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, cmd), 0);
    const char *nl = strchr(out, '\n');
    return nl ? atol(nl + 1) : -1;
}

typedef struct listening {
    fx_server *s;
    const char *name;
} listening;

static int has_listener(void *arg)
{
    const listening *w = arg;
    return listeners_on(w->s, w->name) == 1;
}

/* Fair mode, Functions mode, fencing and the non-blocking API through a
 * Sentinel URL: the waiter's sockets include the sentinels', it is served
 * when the holder lets go, and every script ran by FCALL on the master. */
START_TEST(test_modes)
{
    redlock_options o = patient();
    o.fair = 1;
    o.scripts = REDLOCK_SCRIPTS_FUNCTIONS;
    redlock_client *c = sentinel_client(fx.url[0], &o);
    fx_server *m = master_of(0);
    reset_stats(m);
    redlock *holder = tu_lock(c, "sn:modes", "holder", 10000);
    redlock *waiter = tu_lock(c, "sn:modes", "waiter", 10000);
    ck_assert_int_eq(redlock_trylock(holder), REDLOCK_OK);
    uint64_t f1 = redlock_fence(holder);
    ck_assert_int_eq(redlock_start_lock(waiter, 20000), REDLOCK_OK);
    /* the waiter listens on its own channel (fair mode) on the master */
    char own[64];
    snprintf(own, sizeof own, "sn:modes:waiter");
    listening w = {m, own};
    ck_assert(turn_until(c, has_listener, &w, 200));
    /* the master's command connection and listener, and the +switch-master
     * listener on a sentinel (the others are closed between passes) */
    ck_assert_int_eq(redlock_client_pollfds(c, NULL, 0), 3);
    ck_assert_int_eq(redlock_result(waiter), REDLOCK_IN_PROGRESS);
    ck_assert_int_eq(redlock_unlock(holder), REDLOCK_OK);
    ck_assert_int_eq(tu_turn_until_result(c, waiter), REDLOCK_OK);
    ck_assert_ptr_eq(redlock_client_done(c), waiter);
    ck_assert_uint_gt(redlock_fence(waiter), f1);
    ck_assert_str_eq(tu_get(m, "sn:modes"), "waiter");
    ck_assert_int_eq(redlock_unlock(waiter), REDLOCK_OK);
    ck_assert_int_gt(tu_cmd_calls(m, "fcall"), 0);
    ck_assert_int_eq(tu_cmd_calls(m, "evalsha") + tu_cmd_calls(m, "eval"), 0);
    redlock_free(holder);
    redlock_free(waiter);
    redlock_client_free(c);
}
END_TEST

/* The non-blocking API while the master is being found: an acquire waits
 * for the pass and is cancelled (nothing left behind: the next one works);
 * the admin calls find the master first and report it by address. */
START_TEST(test_cancel_and_admin)
{
    redlock_client *c = sentinel_client(fx.url[0], NULL);
    redlock *l = tu_lock(c, "sn:cancel", "v", 10000);
    ck_assert_int_eq(redlock_start_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_cancel(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_result(l), REDLOCK_CANCELLED);
    for (int i = 0; i < 10; i++)
        tu_turn(c, 20);
    ck_assert_ptr_null(redlock_client_done(c));
    ck_assert_str_eq(tu_get(master_of(0), "sn:cancel"), "");
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    /* functions status on a fresh client: the master found first */
    c = sentinel_client(fx.url[0], NULL);
    redlock_functions_node out[2];
    size_t n = 0;
    ck_assert_int_eq(redlock_functions_status(c, out, 2, &n), REDLOCK_OK);
    ck_assert_int_eq(n, 1);
    char want[96];
    snprintf(want, sizeof want, "master 'fxgroup0' at 127.0.0.1:%d", master_of(0)->port);
    ck_assert_msg(strcmp(out[0].node, want) == 0, "%s", out[0].node);
    redlock_client_free(c);
    char url[256];
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d/nosuchmaster", fx.sentinel[0].port);
    c = sentinel_client(url, NULL);
    ck_assert_int_ne(redlock_functions_status(c, out, 2, &n), REDLOCK_OK);
    ck_assert_msg(strstr(out[0].detail, "no master found") && strstr(out[0].detail, "(nil)"), "%s",
                  out[0].detail);
    redlock_client_free(c);
}
END_TEST

/* Bad input: no master name, an unknown master name (every sentinel
 * says nil), every sentinel down. Each says what each sentinel said. */
START_TEST(test_bad_input)
{
    redlock_client *c = NULL;
    const char *nomaster = "redis+sentinel://127.0.0.1:26379";
    ck_assert_int_eq(redlock_client_new(&c, &nomaster, 1, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "needs the master's name"));
    char url[512];
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d/nosuchmaster",
             fx.sentinel[0].port, fx.sentinel[1].port);
    c = sentinel_client(url, NULL);
    redlock *l = tu_lock(c, "sn:bad", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_SERVER);
    char want[128];
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "127.0.0.1:%d knows no master named 'nosuchmaster' (nil)",
                 fx.sentinel[i].port);
        ck_assert_msg(strstr(redlock_errstr(l), want), "%s", redlock_errstr(l));
    }
    /* not worth waiting out: redlock_lock says so at once */
    ck_assert_int_eq(redlock_lock(l, 60000), REDLOCK_ERR_SERVER);
    redlock_free(l);
    redlock_client_free(c);
    int d1 = fx_free_port(), d2 = fx_free_port();
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d/fxgroup0", d1, d2);
    c = sentinel_client(url, NULL);
    l = tu_lock(c, "sn:bad", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_IO);
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "cannot connect to 127.0.0.1:%d", i ? d2 : d1);
        ck_assert_msg(strstr(redlock_errstr(l), want), "%s", redlock_errstr(l));
    }
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "master 'fxgroup0': not found: "));
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- a fake sentinel -------------------------------------------------------------------- */

/* What a fake server does with each command it reads. */
enum { FAKE_SENTINEL, FAKE_SILENT, FAKE_READONLY_MASTER };

/* The name of the command starting at b[0] ('*'), upper-cased, into w. */
static void command_name(const char *b, size_t n, char *w, size_t wl)
{
    const char *e = b + n, *p = memchr(b, '\n', n);
    w[0] = '\0';
    if (!p || !(p = memchr(p + 1, '\n', (size_t)(e - p - 1))))
        return; /* past "*N" and "$len" */
    size_t k = 0;
    for (p++; p < e && *p != '\r' && k + 1 < wl; p++)
        w[k++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    w[k] = '\0';
}

/* A fake server in one process (poll over its connections) until killed.
 * FAKE_SENTINEL names 127.0.0.1:port as the master to every command;
 * FAKE_SILENT answers nothing; FAKE_READONLY_MASTER says it is a master
 * (ROLE) and answers everything else -READONLY. counts[0] (shared memory)
 * counts the commands it read, counts[1] the ROLEs. */
static void fake_reply(int fd, int mode, int port, const char *cmd)
{
    char reply[128];
    int rl = 0;
    if (mode == FAKE_SENTINEL)
        rl = snprintf(reply, sizeof reply, "*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n",
                      port >= 10000 ? 5 : 4, port);
    else if (mode == FAKE_READONLY_MASTER && strcmp(cmd, "ROLE") == 0)
        rl = snprintf(reply, sizeof reply, "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
    else if (mode == FAKE_READONLY_MASTER)
        rl = snprintf(reply, sizeof reply, "-READONLY You can't write against a read only replica.\r\n");
    if (rl > 0)
        (void)!write(fd, reply, (size_t)rl);
}

static void fake_serve(int fd, int mode, int port, volatile long *counts)
{
    struct pollfd p[17] = {{fd, POLLIN, 0}};
    int n = 1;
    char buf[4096], cmd[32];
    for (int iter = 0; iter < 100000; iter++) {
        if (poll(p, (nfds_t)n, 1000) <= 0)
            continue;
        if ((p[0].revents & POLLIN) && n < 17) {
            p[n].fd = accept(fd, NULL, NULL);
            p[n].events = POLLIN;
            n += p[n].fd >= 0;
        }
        for (int k = 1; k < n; k++) {
            if (!p[k].revents)
                continue;
            ssize_t got = recv(p[k].fd, buf, sizeof buf, 0);
            if (got <= 0) {
                close(p[k].fd);
                p[k--] = p[--n];
                continue;
            }
            for (ssize_t b = 0; b < got; b++) /* one reply per command (one '*' each) */
                if (buf[b] == '*' && (b == 0 || buf[b - 1] == '\n')) {
                    command_name(buf + b, (size_t)(got - b), cmd, sizeof cmd);
                    counts[0]++;
                    counts[1] += strcmp(cmd, "ROLE") == 0;
                    fake_reply(p[k].fd, mode, port, cmd);
                }
        }
    }
}

static pid_t fake_server(int mode, int port, int *listen_port, volatile long **counts)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *listen_port = ntohs(a.sin_port);
    volatile long *shared = mmap(NULL, 2 * sizeof *shared, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(shared != MAP_FAILED);
    shared[0] = shared[1] = 0;
    if (counts)
        *counts = shared;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fake_serve(fd, mode, port, shared);
        _exit(0);
    }
    close(fd);
    return pid;
}

static void stop_pid(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* A sentinel down (nothing listens), a real one stopped (SIGSTOP) and one
 * that never answers, before one that works: the lock is taken there. The
 * one that answered is asked first the next time: the silent one is not
 * asked again. */
START_TEST(test_sentinel_down_and_slow)
{
    fx_server *m = master_of(0), *slow = &fx.sentinel[0];
    int dead = fx_free_port(), fport;
    volatile long *asked;
    pid_t silent = fake_server(FAKE_SILENT, 0, &fport, &asked);
    char url[512];
    snprintf(url, sizeof url,
             "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/fxgroup0", dead,
             slow->port, fport, fx.sentinel[1].port);
    redlock_options o;
    redlock_options_init(&o);
    o.io_timeout_ms = o.connect_timeout_ms = 300;
    fx_server_pause(slow);
    redlock_client *c = sentinel_client(url, &o);
    redlock *l = tu_lock(c, "sn:slow", "v", 5000);
    /* one try's patience (connect + I/O timeout) may end before the pass
     * has asked them all: redlock_lock tries again */
    int rc = redlock_lock(l, 10000);
    fx_server_resume(slow);
    ck_assert_msg(rc == REDLOCK_OK, "%s", redlock_errstr(l));
    ck_assert_str_eq(tu_get(m, "sn:slow"), "v");
    ck_assert_int_eq(*asked, 1);
    /* a lost connection: the master is found again, asking first the
     * sentinel that answered */
    char out[64];
    ck_assert_int_eq(fx_cmd(m, out, sizeof out, "CLIENT KILL TYPE normal"), 0);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_str_eq(tu_get(m, "sn:slow"), "");
    ck_assert_int_eq(*asked, 1);
    redlock_free(l);
    redlock_client_free(c);
    stop_pid(silent);
}
END_TEST

/* A sentinel that names the replica: ROLE says it is no master, so the
 * next sentinel is asked, and no script ever reaches the replica (which
 * would take it: replica-read-only is off). Alone, it is an error that
 * says which sentinel named what. */
START_TEST(test_names_replica)
{
    int rk = fx_sentinel_replica(&fx, 0);
    ck_assert_int_ge(rk, 0);
    fx_server *r = fx_sentinel_server(&fx, 0, rk), *m = master_of(0);
    reset_stats(r);
    int fport;
    pid_t fake = fake_server(FAKE_SENTINEL, r->port, &fport, NULL);
    char url[512];
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d/fxgroup0", fport,
             fx.sentinel[2].port);
    redlock_client *c = sentinel_client(url, NULL);
    redlock *l = tu_lock(c, "sn:liar", "v", 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_str_eq(tu_get(m, "sn:liar"), "v");
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d/fxgroup0", fport);
    c = sentinel_client(url, NULL);
    l = tu_lock(c, "sn:liar", "v", 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_IO);
    char want[160];
    snprintf(want, sizeof want, "127.0.0.1:%d named 127.0.0.1:%d: 127.0.0.1:%d is not a master "
             "(ROLE says slave)", fport, r->port, r->port);
    ck_assert_msg(strstr(redlock_errstr(l), want), "%s", redlock_errstr(l));
    ck_assert_int_eq(script_calls(r), 0);
    ck_assert_int_ge(tu_cmd_calls(r, "role"), 1);
    ck_assert_str_eq(tu_get(r, "sn:liar"), "");
    redlock_free(l);
    redlock_client_free(c);
    stop_pid(fake);
}
END_TEST

/* A master (by ROLE) that answers READONLY: the client finds the master
 * again after each (a new pass, a new ROLE), a bounded number of times,
 * then says what the server said. */
START_TEST(test_readonly_rediscovers)
{
    int mport, sport;
    volatile long *mcount;
    pid_t m = fake_server(FAKE_READONLY_MASTER, 0, &mport, &mcount);
    pid_t sent = fake_server(FAKE_SENTINEL, mport, &sport, NULL);
    char url[256];
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d/fake", sport);
    redlock_client *c = sentinel_client(url, NULL);
    redlock *l = tu_lock(c, "sn:ro", "v", 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_SERVER);
    ck_assert_msg(strstr(redlock_errstr(l), "READONLY"), "%s", redlock_errstr(l));
    ck_assert_int_ge(mcount[1], 3); /* ROLE after every READONLY */
    redlock_free(l);
    redlock_client_free(c);
    stop_pid(sent);
    stop_pid(m);
}
END_TEST

/* `redlock run` and `redlock status` through a Sentinel URL (also from
 * $REDLOCK_URL, whose commas between URLs are not the sentinel list's). */
START_TEST(test_cli)
{
    char out[512];
    const char *run[] = {FX_BUILD_DIR "/redlock", "run", "-u", fx.url[0], "sn:cli", "--",
                         "sh", "-c", "echo $REDLOCK_FENCE", NULL};
    ck_assert_int_eq(fx_run(out, sizeof out, 30000, run), 0);
    unsigned long long fence = strtoull(out, NULL, 10);
    ck_assert_msg(tu_seeded(fence), "%s", out);
    char env[600];
    snprintf(env, sizeof env, "REDLOCK_URL=%s", fx.url[0]);
    const char *status[] = {"env", env, FX_BUILD_DIR "/redlock", "status", "sn:cli", NULL};
    ck_assert_int_eq(fx_run(out, sizeof out, 30000, status), 1); /* free again */
    char want[64];
    snprintf(want, sizeof want, "free, fence %llu", fence);
    ck_assert_msg(strstr(out, want), "%s", out);
}
END_TEST

/* ---- failovers -------------------------------------------------------------------------- */

/* SENTINEL FAILOVER while a waiter waits: the client hears +switch-master,
 * its waiter tries again on the new master and listens there, and gets the
 * lock when the holder lets go (on the new master). A client that only
 * makes blocking calls (its loop may wait in recv() alone) hears it before
 * its next request goes out. From the switch on, no script reaches the old
 * master, which stays a master for a while (until the sentinels convert
 * it) and has replica-read-only off: only the clients keep writes away.
 * Each client counts one failover, and tells its event hook. */
START_TEST(test_failover_waiter)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    redlock_options o = patient();
    redlock_client *c = sentinel_client(fx.url[0], &o);
    redlock_client_on_event(c, tu_record, &ev);
    int from = fx_sentinel_master(&fx, 0);
    ck_assert_int_ge(from, 0);
    fx_server *old = fx_sentinel_server(&fx, 0, from);
    redlock *holder = tu_lock(c, "sn:fo", "holder", 30000);
    redlock *waiter = tu_lock(c, "sn:fo", "waiter", 30000);
    redlock_client *b = sentinel_client(fx.url[0], NULL);
    redlock *bl = tu_lock(b, "sn:fo-blocking", "b", 30000);
    ck_assert_int_eq(redlock_trylock(bl), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(bl), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(holder), REDLOCK_OK);
    uint64_t f1 = redlock_fence(holder);
    static redlock_stats st;
    ck_assert_int_eq(redlock_client_stats(c, &st, sizeof st), REDLOCK_OK);
    ck_assert_uint_eq(st.node[0].failovers, 0); /* the first master found is no failover */
    ck_assert_int_eq(redlock_start_lock(waiter, 60000), REDLOCK_OK);
    listening w = {old, "sn:fo"};
    ck_assert(turn_until(c, has_listener, &w, 200));
    int to = fx_sentinel_failover(&fx, 0);
    ck_assert_int_ge(to, 0);
    ck_assert_int_ne(to, from);
    fx_server *nw = fx_sentinel_server(&fx, 0, to);
    reset_stats(old);
    /* the holder's key came over with replication */
    ck_assert_str_eq(tu_get(nw, "sn:fo"), "holder");
    fx_sleep_ms(20);
    ck_assert_int_eq(redlock_trylock(bl), REDLOCK_OK);
    ck_assert_str_eq(tu_get(nw, "sn:fo-blocking"), "b");
    ck_assert_int_eq(redlock_unlock(bl), REDLOCK_OK);
    /* the waiter listens on the new master once the client heard of it */
    w.s = nw;
    ck_assert(turn_until(c, has_listener, &w, 400));
    ck_assert_int_eq(redlock_result(waiter), REDLOCK_IN_PROGRESS);
    ck_assert_int_eq(redlock_unlock(holder), REDLOCK_OK);
    ck_assert_int_eq(tu_turn_until_result(c, waiter), REDLOCK_OK);
    ck_assert_uint_gt(redlock_fence(waiter), f1);
    ck_assert_str_eq(tu_get(nw, "sn:fo"), "waiter");
    ck_assert_int_eq(redlock_unlock(waiter), REDLOCK_OK);
    ck_assert_int_eq(script_calls(old), 0);
    ck_assert_int_eq(redlock_client_stats(c, &st, sizeof st), REDLOCK_OK);
    ck_assert_uint_eq(st.node[0].failovers, 1);
    ck_assert_uint_eq(st.events[REDLOCK_EVENT_FAILOVER], 1);
    const tu_event *e = tu_events_find(&ev, REDLOCK_EVENT_FAILOVER);
    ck_assert_ptr_nonnull(e);
    char port[16];
    snprintf(port, sizeof port, ":%d", nw->port);
    ck_assert_msg(strstr(e->node, port) && strstr(e->detail, "the master switched"), "%s: %s",
                  e->node, e->detail);
    ck_assert_int_eq(redlock_client_stats(b, &st, sizeof st), REDLOCK_OK);
    ck_assert_uint_eq(st.node[0].failovers, 1); /* the blocking-only client too */
    redlock_free(holder);
    redlock_free(waiter);
    redlock_free(bl);
    redlock_client_free(c);
    redlock_client_free(b);
}
END_TEST

static void setup_two_replicas(void)
{
    fx_sentinel_opts o = {1, 2, NULL, NULL};
    ck_assert_int_eq(fx_sentinel_start(&fx, &o), 0);
}

/* Events of a client, kept for a failure message (a failover is rare
 * enough to fail that its story is worth printing). */
static char event_log[4096];

static void log_event(const redlock_event *ev, void *arg)
{
    (void)arg;
    size_t n = strlen(event_log);
    if (n + 200 < sizeof event_log)
        snprintf(event_log + n, sizeof event_log - n, "  %lld ms %s %s status %d: %s\n",
                 (long long)fx_now_ms() % 100000, ev->what, ev->node, ev->status,
                 ev->detail ? ev->detail : "");
}

/* SIGKILL of the master under keepalive, where wait_replicas got the lock
 * to a replica: the lease survives the failover (refreshed on the new
 * master, where it is ours) and no loss is reported. */
START_TEST(test_kill_master_lease_survives)
{
    redlock_options o;
    redlock_options_init(&o);
    o.wait_replicas = 1;
    o.io_timeout_ms = o.connect_timeout_ms = 300;
    redlock_client *c = sentinel_client(fx.url[0], &o);
    int from = fx_sentinel_master(&fx, 0);
    event_log[0] = '\0';
    redlock_client_on_event(c, log_event, NULL);
    redlock *l = tu_lock(c, "sn:kill", "survivor", 15000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    uint64_t fence = redlock_fence(l);
    ck_assert_int_eq(redlock_keepalive(l, 1), REDLOCK_OK);
    fx_server_kill(fx_sentinel_server(&fx, 0, from));
    /* the loop runs through the failover: refreshes fail, then find the
     * new master; which replica wins is the sentinels' choice */
    int to = -1;
    for (int i = 0; i < 600 && to < 0; i++) {
        tu_turn(c, 50);
        int m = fx_sentinel_master(&fx, 0);
        to = m >= 0 && m != from ? m : -1;
    }
    ck_assert_int_ge(to, 0);
    /* two keepalive periods on the new master (ttl/3 each). On a loaded
     * machine the sentinels may fail over once more, to the other replica
     * (seen under qemu: a second switch 2 s after the first): the count
     * starts again on whichever master they name now. */
    fx_server *nw = fx_sentinel_server(&fx, 0, to);
    reset_stats(nw);
    for (int i = 0; i < 600 && script_calls(nw) < 2; i++) {
        tu_turn(c, 50);
        int m = fx_sentinel_master(&fx, 0);
        if (m >= 0 && m != from && m != to) {
            to = m;
            nw = fx_sentinel_server(&fx, 0, to);
            reset_stats(nw);
        }
    }
    if (script_calls(nw) < 2)
        fprintf(stderr, "master :%d at %lld ms, the client's events:\n%s", nw->port,
                (long long)fx_now_ms() % 100000, event_log);
    ck_assert_str_eq(tu_get(nw, "sn:kill"), "survivor");
    ck_assert_int_ge(script_calls(nw), 2);
    ck_assert_ptr_null(redlock_client_done(c));
    ck_assert_int_gt(redlock_validity_ms(l), 0);
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(l), fence);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_str_eq(tu_get(nw, "sn:kill"), "");
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* SIGKILL of the master under keepalive, where the write never reached
 * the replica that is promoted (made so: the key is deleted there once it
 * is master, before the client runs again). The refresh on the new master
 * finds no value: the loss is reported (REDLOCK_NOT_HELD through the done
 * queue), and the key is never created there again. */
START_TEST(test_kill_master_lease_lost)
{
    redlock_options o;
    redlock_options_init(&o);
    o.io_timeout_ms = o.connect_timeout_ms = 300;
    redlock_client *c = sentinel_client(fx.url[0], &o);
    int from = fx_sentinel_master(&fx, 0);
    redlock *l = tu_lock(c, "sn:lost", "gone", 20000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_keepalive(l, 1), REDLOCK_OK);
    fx_server_kill(fx_sentinel_server(&fx, 0, from));
    int to = -1;
    for (int i = 0; i < 600 && to < 0; i++) {
        fx_sleep_ms(50);
        int m = fx_sentinel_master(&fx, 0);
        to = m >= 0 && m != from ? m : -1;
    }
    ck_assert_int_ge(to, 0);
    fx_server *nw = fx_sentinel_server(&fx, 0, to);
    char out[64];
    ck_assert_int_eq(fx_cmd(nw, out, sizeof out, "DEL sn:lost"), 0);
    redlock *done = NULL;
    for (int i = 0; i < 600 && !done; i++) { /* the next refresh is due within ttl/3 */
        tu_turn(c, 50);
        done = redlock_client_done(c);
    }
    ck_assert_ptr_eq(done, l);
    ck_assert_int_eq(redlock_result(l), REDLOCK_NOT_HELD);
    ck_assert_msg(strstr(redlock_errstr(l), "not held"), "%s", redlock_errstr(l));
    ck_assert_int_eq(redlock_validity_ms(l), 0);
    ck_assert_str_eq(tu_get(nw, "sn:lost"), "");
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_NOT_HELD); /* and never re-created */
    ck_assert_str_eq(tu_get(nw, "sn:lost"), "");
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- sentinel passwords ------------------------------------------------------------------- */

#define SENTINEL_PW "sentinel-secret"

static void setup_auth(void)
{
    fx_sentinel_opts o = {1, 1, SENTINEL_PW, NULL};
    ck_assert_int_eq(fx_sentinel_start(&fx, &o), 0);
}

/* Sentinels with requirepass: sentinel_password= (and sentinel_user=)
 * opens them, and +switch-master is heard through them too; without it,
 * or with a wrong one, REDLOCK_ERR_AUTH names each sentinel's refusal. */
START_TEST(test_sentinel_auth)
{
    char url[512];
    snprintf(url, sizeof url, "%s?sentinel_password=" SENTINEL_PW, fx.url[0]);
    redlock_client *c = sentinel_client(url, NULL);
    redlock *l = tu_lock(c, "sn:auth", "v", 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_str_eq(tu_get(master_of(0), "sn:auth"), "v");
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    snprintf(url, sizeof url, "%s?sentinel_user=default&sentinel_password=" SENTINEL_PW, fx.url[0]);
    c = sentinel_client(url, NULL);
    l = tu_lock(c, "sn:auth", "v", 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    /* no password: each sentinel says NOAUTH */
    c = sentinel_client(fx.url[0], NULL);
    l = tu_lock(c, "sn:auth", "v", 10000);
    ck_assert_int_eq(redlock_lock(l, 30000), REDLOCK_ERR_AUTH); /* at once: not worth waiting */
    char want[96];
    for (int i = 0; i < FX_SENTINELS; i++) {
        snprintf(want, sizeof want, "127.0.0.1:%d: NOAUTH", fx.sentinel[i].port);
        ck_assert_msg(strstr(redlock_errstr(l), want), "%s", redlock_errstr(l));
    }
    redlock_free(l);
    redlock_client_free(c);
    /* a wrong one: AUTH is refused on connect */
    snprintf(url, sizeof url, "%s?sentinel_password=wrong", fx.url[0]);
    c = sentinel_client(url, NULL);
    l = tu_lock(c, "sn:auth", "v", 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_AUTH);
    snprintf(want, sizeof want, "AUTH refused by 127.0.0.1:%d", fx.sentinel[0].port);
    ck_assert_msg(strstr(redlock_errstr(l), want), "%s", redlock_errstr(l));
    ck_assert_ptr_null(strstr(redlock_errstr(l), "wrong"));
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- a quorum of Sentinel-managed groups -------------------------------------------------- */

static fx_server plain;

static void setup_quorum(void)
{
    fx_sentinel_opts o = {2, 1, NULL, NULL};
    ck_assert_int_eq(fx_sentinel_start(&fx, &o), 0);
    ck_assert_int_eq(fx_server_start(&plain, NULL), 0);
}

static void teardown_quorum(void)
{
    fx_server_stop(&plain);
    fx_sentinel_stop(&fx);
}

static int probed(void *arg)
{
    return tu_cmd_calls(arg, "role") > 0;
}

/* Two Sentinel-managed groups and a plain node, as one quorum (the same
 * three sentinels watch both groups): locks and fencing across them; a
 * failover of one group moves that member only (+switch-master is
 * filtered by name: the other member's master is never asked ROLE
 * again). */
START_TEST(test_quorum_of_groups)
{
    const char *urls[3] = {fx.url[0], fx.url[1], plain.url};
    redlock_client *c = tu_client_urls(urls, 3, 0);
    redlock *l = tu_lock(c, "sn:q", "q1", 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    uint64_t f1 = redlock_fence(l);
    ck_assert_str_eq(tu_get(master_of(0), "sn:q"), "q1");
    ck_assert_str_eq(tu_get(master_of(1), "sn:q"), "q1");
    ck_assert_str_eq(tu_get(&plain, "sn:q"), "q1");
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    fx_server *other = master_of(1);
    reset_stats(other);
    int to = fx_sentinel_failover(&fx, 0);
    ck_assert_int_ge(to, 0);
    fx_server *nw = fx_sentinel_server(&fx, 0, to);
    reset_stats(nw);
    /* the client hears of it as its loop runs, and checks the new master */
    ck_assert(turn_until(c, probed, nw, 400));
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_uint_gt(redlock_fence(l), f1);
    ck_assert_str_eq(tu_get(nw, "sn:q"), "q1");
    ck_assert_str_eq(tu_get(other, "sn:q"), "q1");
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(tu_cmd_calls(other, "role"), 0);
    ck_assert_int_gt(script_calls(other), 0);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sentinel");
    TCase *t = tcase_create("one group");
    tcase_set_timeout(t, 120);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, test_lock_release);
    tcase_add_test(t, test_modes);
    tcase_add_test(t, test_cancel_and_admin);
    tcase_add_test(t, test_bad_input);
    tcase_add_test(t, test_sentinel_down_and_slow);
    tcase_add_test(t, test_names_replica);
    tcase_add_test(t, test_readonly_rediscovers);
    tcase_add_test(t, test_cli);
    suite_add_tcase(s, t);
    TCase *f = tcase_create("failover");
    tcase_set_timeout(f, 120);
    tcase_add_unchecked_fixture(f, setup, teardown);
    tcase_add_test(f, test_failover_waiter);
    suite_add_tcase(s, f);
    TCase *k = tcase_create("killed master");
    tcase_set_timeout(k, 120);
    tcase_add_checked_fixture(k, setup_two_replicas, teardown);
    tcase_add_test(k, test_kill_master_lease_survives);
    tcase_add_test(k, test_kill_master_lease_lost);
    suite_add_tcase(s, k);
    TCase *a = tcase_create("sentinel passwords");
    tcase_set_timeout(a, 120);
    tcase_add_unchecked_fixture(a, setup_auth, teardown);
    tcase_add_test(a, test_sentinel_auth);
    suite_add_tcase(s, a);
    TCase *q = tcase_create("quorum of groups");
    tcase_set_timeout(q, 120);
    tcase_add_unchecked_fixture(q, setup_quorum, teardown_quorum);
    tcase_add_test(q, test_quorum_of_groups);
    suite_add_tcase(s, q);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
