/* test_quorum.c - Redlock over independent redis-server processes. */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 5

static fx_server srv[N];

static void start_all(fx_server *s, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(fx_server_start(&s[i], NULL), 0);
}

static void stop_all(fx_server *s, int n)
{
    for (int i = 0; i < n; i++)
        fx_server_stop(&s[i]);
}

static void setup(void)
{
    start_all(srv, N);
}

static void teardown(void)
{
    stop_all(srv, N);
}

static void flush_all(void)
{
    char out[64];
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, "FLUSHALL"), 0);
}

/* A client over the first n servers of s (a quorum when n > 1). */
static redlock_client *client_over(fx_server *s, int n, int io_timeout_ms)
{
    const char *urls[N];
    for (int i = 0; i < n; i++)
        urls[i] = s[i].url;
    return tu_client_urls(urls, (size_t)n, io_timeout_ms);
}

static int count_holding(fx_server *s, int n, const char *key, const char *value)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        if (s[i].pid > 0 && strcmp(tu_get(&s[i], key), value) == 0)
            k++;
    return k;
}

START_TEST(test_all_up)
{
    flush_all();
    redlock_client *c = client_over(srv, N, 0);
    redlock *a = tu_lock(c, "q", "owner-a", 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(count_holding(srv, N, "q", "owner-a"), N);
    uint64_t f0 = redlock_fence(a);
    ck_assert_msg(tu_seeded(f0), "first token %llu", (unsigned long long)f0);
    ck_assert_int_gt(redlock_validity_ms(a), 4500);
    ck_assert_int_le(redlock_validity_ms(a), 5000 - 52);

    redlock_client *c2 = client_over(srv, N, 0);
    redlock *b = tu_lock(c2, "q", "owner-b", 5000);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(count_holding(srv, N, "q", "owner-b"), 0);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(count_holding(srv, N, "q", "owner-a"), 0);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(b), f0 + 1);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c);
    redlock_client_free(c2);
}
END_TEST

START_TEST(test_two_killed)
{
    fx_server s[N];
    start_all(s, N);
    fx_server_stop(&s[1]);
    fx_server_stop(&s[3]);
    redlock_client *c = client_over(s, N, 300);
    redlock *a = tu_lock(c, "q2", "owner-a", 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(count_holding(s, N, "q2", "owner-a"), 3);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK); /* down nodes are no error */
    ck_assert_int_eq(count_holding(s, N, "q2", "owner-a"), 0);
    redlock_free(a);
    redlock_client_free(c);
    stop_all(s, N);
}
END_TEST

START_TEST(test_three_killed)
{
    fx_server s[N];
    start_all(s, N);
    fx_server_stop(&s[0]);
    fx_server_stop(&s[2]);
    fx_server_stop(&s[4]);
    redlock_client *c = client_over(s, N, 300);
    redlock *a = tu_lock(c, "q3", "owner-a", 5000);
    double t0 = fx_now_ms();
    int rc = redlock_trylock(a);
    double took = fx_now_ms() - t0;
    ck_assert_int_eq(rc, REDLOCK_ERR_IO);
    ck_assert_msg(took < 900, "took %.1f ms", took);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "2 of 5 nodes answered"));
    ck_assert_int_eq(count_holding(s, N, "q3", "owner-a"), 0); /* released on the survivors */
    ck_assert_int_eq(redlock_validity_ms(a), 0);
    redlock_free(a);
    redlock_client_free(c);
    stop_all(s, N);
}
END_TEST

START_TEST(test_two_stalled)
{
    fx_server s[N];
    start_all(s, N);
    redlock_client *c = client_over(s, N, 300);
    redlock *a = tu_lock(c, "qs", "owner-a", 10000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK); /* connect everything first */
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    fx_server_pause(&s[0]);
    fx_server_pause(&s[3]);
    double t0 = fx_now_ms();
    int rc = redlock_trylock(a);
    double took = fx_now_ms() - t0;
    ck_assert_int_eq(rc, REDLOCK_OK);
    /* the stalled nodes cost one 300 ms deadline, in parallel */
    ck_assert_msg(took >= 250 && took < 900, "took %.1f ms", took);
    ck_assert_int_le(redlock_validity_ms(a), 10000 - 102 - 250);
    t0 = fx_now_ms();
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - t0, 900);
    fx_server_resume(&s[0]);
    fx_server_resume(&s[3]);
    /* resumed nodes are used again on a later call */
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(count_holding(s, N, "qs", "owner-a"), N);
    redlock_free(a);
    redlock_client_free(c);
    stop_all(s, N);
}
END_TEST

START_TEST(test_competing_holder)
{
    char out[64];
    flush_all();
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, "SET qc other PX 10000"), 0);
    redlock_client *c = client_over(srv, N, 0);
    redlock *a = tu_lock(c, "qc", "owner-a", 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "another owner on 3"));
    ck_assert_int_eq(count_holding(srv, N, "qc", "owner-a"), 0); /* released on nodes 4, 5 */
    ck_assert_int_eq(count_holding(srv, N, "qc", "other"), 3);
    /* a waiter gives up on time */
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(a, 300), REDLOCK_NOT_ACQUIRED);
    ck_assert_double_lt(fx_now_ms() - t0, 900);
    redlock_free(a);
    redlock_client_free(c);
}
END_TEST

/* Block node i for the next acquire by putting another owner's key there. */
static void block(int i, const char *name)
{
    char out[64], cmd[128];
    snprintf(cmd, sizeof cmd, "SET %s blocker PX 60000", name);
    ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, cmd), 0);
}

static void unblock(int i, const char *name)
{
    char out[64], cmd[128];
    snprintf(cmd, sizeof cmd, "DEL %s", name);
    ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, cmd), 0);
}

START_TEST(test_fence_rotation)
{
    /* 3 nodes. A wins on {1,2}, B on {2,3}, C on {1,3}. Counters alone
     * would give C the same token as B; the raise makes them increase. */
    flush_all();
    redlock_client *c = client_over(srv, 3, 0);
    static const int blocked[3] = {2, 0, 1};
    uint64_t last = 0;
    for (int round = 0; round < 6; round++) {
        int b = blocked[round % 3];
        block(b, "rot");
        redlock *l = tu_lock(c, "rot", NULL, 5000);
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_msg(redlock_fence(l) > last, "round %d: token %llu after %llu", round,
                      (unsigned long long)redlock_fence(l), (unsigned long long)last);
        last = redlock_fence(l);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        redlock_free(l);
        unblock(b, "rot");
    }
    redlock_client_free(c);
}
END_TEST

START_TEST(test_restart_empty)
{
    fx_server s[N];
    start_all(s, N);
    redlock_client *c = client_over(s, N, 300);
    redlock *a = tu_lock(c, "qr", "owner-a", 10000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    /* rolling restarts, each node comes back empty */
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(fx_server_restart(&s[i]), 0);
        ck_assert_str_eq(tu_get(&s[i], "qr"), "");
        ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
        ck_assert_str_eq(tu_get(&s[i], "qr"), "owner-a"); /* set again: we hold a quorum */
    }
    ck_assert_int_eq(count_holding(s, N, "qr", "owner-a"), N);
    /* never set where another value is */
    char out[64];
    ck_assert_int_eq(fx_cmd(&s[0], out, sizeof out, "SET qr intruder"), 0);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_str_eq(tu_get(&s[0], "qr"), "intruder");
    /* without a quorum, refresh recreates nothing */
    for (int i = 1; i < 4; i++)
        ck_assert_int_eq(fx_cmd(&s[i], out, sizeof out, "DEL qr"), 0);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_NOT_HELD);
    ck_assert_int_eq(count_holding(s, N, "qr", "owner-a"), 0); /* node 5's key released too */
    redlock_free(a);
    redlock_client_free(c);
    stop_all(s, N);
}
END_TEST

START_TEST(test_waiter_wakes_on_release)
{
    flush_all();
    redlock_client *c1 = client_over(srv, N, 0), *c2 = client_over(srv, N, 0);
    redlock *a = tu_lock(c1, "qw", NULL, 30000), *b = tu_lock(c2, "qw", NULL, 30000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        usleep(300 * 1000);
        _exit(redlock_unlock(a) == REDLOCK_OK ? 0 : 1);
    }
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(b, 5000), REDLOCK_OK);
    double took = fx_now_ms() - t0;
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_msg(took >= 250 && took < 1500, "took %.1f ms", took);
    ck_assert_uint_gt(redlock_fence(b), redlock_fence(a));
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c1);
    redlock_client_free(c2);
}
END_TEST

/* After subscribing, a quorum waiter asks every node for the lock's PTTL:
 * held on 3 of 5 (no quorum possible) it sleeps; held on 2 of 5 (a quorum
 * may be free: the holder's key went from one node after the try) it tries
 * at once. */
START_TEST(test_waiter_probe)
{
    flush_all();
    redlock_options o;
    redlock_options_init(&o);
    o.retry_min_ms = 10000;
    o.retry_max_ms = 10000;
    const char *urls[N];
    for (int i = 0; i < N; i++)
        urls[i] = srv[i].url;
    char out[64];
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(fx_cmd(&srv[k], out, sizeof out, "SET qp someone PX 60000"), 0);

    redlock_client *c = tu_client_opts(urls, N, &o);
    redlock *w = tu_lock(c, "qp", NULL, 5000);
    for (int k = 0; k < N; k++)
        ck_assert_int_eq(fx_cmd(&srv[k], out, sizeof out, "CONFIG RESETSTAT"), 0);
    ck_assert_int_eq(redlock_lock(w, 500), REDLOCK_NOT_ACQUIRED);
    /* node 0: the first try and the last, each with its PTTL, and the probe */
    ck_assert_int_eq(tu_cmd_calls(&srv[0], "evalsha"), 2);
    ck_assert_int_eq(tu_cmd_calls(&srv[0], "pttl"), 3);
    redlock_free(w);
    redlock_client_free(c);

    int checked = 0;
    for (int attempt = 0; attempt < 5 && !checked; attempt++) {
        for (int k = 0; k < 3; k++)
            ck_assert_int_eq(fx_cmd(&srv[k], out, sizeof out, "SET qp someone PX 60000"), 0);
        c = tu_client_opts(urls, N, &o);
        w = tu_lock(c, "qp", NULL, 5000);
        for (int k = 0; k < N; k++)
            ck_assert_int_eq(fx_cmd(&srv[k], out, sizeof out, "CONFIG RESETSTAT"), 0);
        ck_assert_int_eq(redlock_start_lock(w, 3000), REDLOCK_OK);
        double t0 = fx_now_ms();
        /* until every node's listener connection exists: the try failed */
        tu_turn_until_sockets(c, 2 * N);
        ck_assert_int_eq(redlock_result(w), REDLOCK_IN_PROGRESS);
        int probed = 0;
        for (int k = 0; k < 3; k++)
            probed += tu_cmd_calls(&srv[k], "pttl") != 1;
        if (!probed) {
            checked = 1;
            ck_assert_int_eq(fx_cmd(&srv[0], out, sizeof out, "DEL qp"), 0);
        }
        int rc = tu_turn_until_result(c, w);
        double took = fx_now_ms() - t0;
        if (checked) {
            ck_assert_int_eq(rc, REDLOCK_OK);
            ck_assert_msg(took < 1500, "acquired after %.0f ms (the wait is 3 s)", took);
            /* node 1 (still held): the try, the try after the probe */
            ck_assert_int_eq(tu_cmd_calls(&srv[1], "evalsha"), 2);
            ck_assert_int_eq(tu_cmd_calls(&srv[0], "pttl"), 2); /* in the first try, the probe */
            ck_assert_int_eq(count_holding(srv, N, "qp", redlock_value(w)), 3);
            ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
        }
        redlock_free(w);
        redlock_client_free(c);
    }
    ck_assert_msg(checked, "the probe always ran before the test could delete the key");
}
END_TEST

/* ---- mutual exclusion under load, with nodes dying and coming back ---------------- */

struct shared {
    atomic_int inside;
    atomic_int overlaps;
    atomic_long acquired;
    long counter; /* read-modify-write by the holder only */
    uint64_t last_fence; /* by the holder only: a 64-bit atomic is not lock-free on
                            32-bit MIPS, and libatomic's locks are per process */
    atomic_int fence_regressions;
};

static void worker(struct shared *sh, fx_server *s, int per_worker, uint32_t ttl)
{
    const char *urls[N];
    for (int i = 0; i < N; i++)
        urls[i] = s[i].url;
    redlock_options o;
    redlock_options_init(&o);
    o.io_timeout_ms = 200;
    o.connect_timeout_ms = 200;
    redlock_client *c = NULL;
    redlock *l = NULL;
    if (redlock_client_new(&c, urls, N, &o) != REDLOCK_OK ||
        redlock_new(&l, c, "stress", NULL, ttl) != REDLOCK_OK)
        _exit(3);
    int64_t deadline = (int64_t)fx_now_ms() + 60000;
    for (int done = 0; done < per_worker && fx_now_ms() < deadline;) {
        if (redlock_lock(l, 5000) != REDLOCK_OK)
            continue;
        if (atomic_fetch_add(&sh->inside, 1) != 0)
            atomic_fetch_add(&sh->overlaps, 1);
        uint64_t f = redlock_fence(l), prev = sh->last_fence;
        if (f <= prev)
            atomic_fetch_add(&sh->fence_regressions, 1);
        sh->last_fence = f;
        long v = sh->counter;
        usleep(100);
        sh->counter = v + 1;
        atomic_fetch_add(&sh->acquired, 1);
        int valid = redlock_validity_ms(l) > 0;
        atomic_fetch_sub(&sh->inside, 1);
        if (!valid)
            atomic_fetch_add(&sh->overlaps, 1000000); /* we were inside without a lease */
        redlock_unlock(l);
        done++;
    }
    redlock_free(l);
    redlock_client_free(c);
    _exit(0);
}

START_TEST(test_exclusion_under_faults)
{
    const int workers = 8, per_worker = 300;
    const uint32_t ttl = 400;
    fx_server s[N];
    start_all(s, N);
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
    ck_assert_ptr_ne(sh, MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    pid_t pids[8];
    for (int w = 0; w < workers; w++) {
        pids[w] = fork();
        ck_assert_int_ge(pids[w], 0);
        if (pids[w] == 0)
            worker(sh, s, per_worker, ttl);
    }
    /* kill a minority (2 of 5) and bring it back empty after more than the
     * TTL, twice, while the workers contend */
    for (int cycle = 0; cycle < 2; cycle++) {
        usleep(400 * 1000);
        int a = cycle * 2, b = cycle * 2 + 1;
        fx_server_kill(&s[a]);
        fx_server_kill(&s[b]);
        usleep((ttl + 300) * 1000);
        ck_assert_int_eq(fx_server_restart(&s[a]), 0);
        ck_assert_int_eq(fx_server_restart(&s[b]), 0);
    }
    int ok = 0;
    for (int w = 0; w < workers; w++) {
        int st;
        ck_assert_int_eq(waitpid(pids[w], &st, 0), pids[w]);
        ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    printf("quorum stress: %d workers, %ld acquisitions, counter %ld, overlaps %d, "
           "fence regressions %d\n",
           workers, (long)sh->acquired, sh->counter, (int)sh->overlaps, (int)sh->fence_regressions);
    ck_assert_int_eq(ok, workers);
    ck_assert_int_eq(sh->overlaps, 0);
    ck_assert_int_eq(sh->fence_regressions, 0);
    ck_assert_int_eq(sh->acquired, (long)workers * per_worker);
    ck_assert_int_eq(sh->counter, (long)workers * per_worker);
    munmap(sh, sizeof *sh);
    stop_all(s, N);
}
END_TEST

/* ---- restarts: the fence counter and the restart guard ------------------------------------ */

/* Seconds since s started, as the server says. */
static long uptime_s(fx_server *s)
{
    static char out[8192];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, "INFO server"), 0);
    const char *p = strstr(out, "uptime_in_seconds:");
    ck_assert_ptr_nonnull(p);
    return atol(p + 18);
}

/* A majority restarts without its data: the next token is still larger
 * than every token before (the counters start again from the servers'
 * clock, not from 1). */
START_TEST(test_fence_after_majority_restart)
{
    fx_server s[3];
    start_all(s, 3);
    redlock_client *c = client_over(s, 3, 0);
    redlock *a = tu_lock(c, "fr", NULL, 5000);
    uint64_t last = 0;
    for (int k = 0; k < 50; k++) {
        ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
        ck_assert_uint_gt(redlock_fence(a), last);
        last = redlock_fence(a);
        ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    }
    ck_assert_int_eq(fx_server_restart(&s[0]), 0);
    ck_assert_int_eq(fx_server_restart(&s[1]), 0);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_msg(redlock_fence(a) > last, "token %llu after %llu",
                  (unsigned long long)redlock_fence(a), (unsigned long long)last);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_client_free(c);
    stop_all(s, 3);
}
END_TEST

static redlock_client *guarded(fx_server *s, int n, int guard)
{
    const char *urls[3];
    redlock_options o;
    redlock_options_init(&o);
    o.restart_guard = guard;
    for (int i = 0; i < n; i++)
        urls[i] = s[i].url;
    return tu_client_opts(urls, (size_t)n, &o);
}

/* The classic Redlock overlap: a holds "g" on nodes 0 and 1 only (node 2
 * lost it), then node 0 restarts empty inside a's lease. Without the
 * guard, b wins nodes 0 and 2 at once, while a still holds its lease;
 * with the guard, node 0's yes does not count until it is older than the
 * lease, by which time a's lease is over: b waits, then gets it. */
START_TEST(test_restart_guard)
{
    fx_server s[3];
    char out[64];
    start_all(s, 3);
    for (int k = 0; k < 40 && (uptime_s(&s[0]) < 2 || uptime_s(&s[2]) < 2); k++)
        fx_sleep_ms(100); /* older than the 1 s lease below */
    redlock_client *ca = guarded(s, 3, 1), *cb = guarded(s, 3, 0), *cg = guarded(s, 3, 1);
    const uint32_t ttl = 1000;
    redlock *a = tu_lock(ca, "g", "a", ttl), *b = tu_lock(cb, "g", "b", ttl),
            *g = tu_lock(cg, "g", "g", ttl);
    int rc = redlock_trylock(a);
    ck_assert_msg(rc == REDLOCK_OK, "%d %s", rc, redlock_errstr(a));
    double a_until = fx_now_ms() + (double)redlock_validity_ms(a);
    ck_assert_int_eq(fx_cmd(&s[2], out, sizeof out, "DEL g"), 0);
    ck_assert_int_eq(fx_server_restart(&s[0]), 0);

    /* guard on: node 0 is younger than the lease; its yes does not count */
    ck_assert_int_eq(redlock_trylock(g), REDLOCK_NOT_ACQUIRED);
    ck_assert_msg(strstr(redlock_errstr(g), "restarted less than one lease ago: restart guard"),
                  "%s", redlock_errstr(g));
    ck_assert_str_eq(tu_get(&s[0], "g"), ""); /* what it took there is given back */

    /* guard off: the overlap, while a still believes it holds the lock */
    rc = redlock_trylock(b);
    double b_at = fx_now_ms();
    ck_assert_msg(rc == REDLOCK_OK, "%d %s", rc, redlock_errstr(b));
    ck_assert_msg(b_at < a_until, "the overlap shows only inside a's lease");
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);

    /* guard on, waiting: gets it only once a's lease is over */
    rc = redlock_lock(g, 5000);
    double g_at = fx_now_ms();
    ck_assert_msg(rc == REDLOCK_OK, "%d %s", rc, redlock_errstr(g));
    ck_assert_msg(g_at >= a_until, "g won %.0f ms before a's lease ended", a_until - g_at);
    ck_assert_int_eq(redlock_unlock(g), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_free(g);
    redlock_client_free(ca);
    redlock_client_free(cb);
    redlock_client_free(cg);
    stop_all(s, 3);
}
END_TEST

/* One node with the guard asked for: a fresh server's yes waits out one
 * lease; a server whose ACL refuses INFO has no guard (and locks at once). */
START_TEST(test_restart_guard_single)
{
    fx_server s;
    start_all(&s, 1);
    redlock_client *c = guarded(&s, 1, 1);
    redlock *l = tu_lock(c, "g1", NULL, 1500);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "its yes counts in"));
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(l, 5000), REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - t0, 3000); /* waited for the age, not the whole wait */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);

    char out[128];
    ck_assert_int_eq(fx_server_restart(&s), 0); /* young again */
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "ACL SETUSER noinfo on >pw ~* &* +@all -info"), 0);
    char url[256];
    snprintf(url, sizeof url, "redis://noinfo:pw@127.0.0.1:%d", s.port);
    redlock_options o;
    redlock_options_init(&o);
    o.restart_guard = 1;
    c = tu_client_opts((const char *[]){url}, 1, &o);
    l = tu_lock(c, "g1", NULL, 1500);
    ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_errstr(l));
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

static Suite *quorum_suite(void)
{
    Suite *s = suite_create("quorum");
    TCase *t = tcase_create("redlock");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_all_up);
    tcase_add_test(t, test_two_killed);
    tcase_add_test(t, test_three_killed);
    tcase_add_test(t, test_two_stalled);
    tcase_add_test(t, test_competing_holder);
    tcase_add_test(t, test_fence_rotation);
    tcase_add_test(t, test_restart_empty);
    tcase_add_test(t, test_waiter_wakes_on_release);
    tcase_add_test(t, test_waiter_probe);
    tcase_add_test(t, test_fence_after_majority_restart);
    tcase_add_test(t, test_restart_guard);
    tcase_add_test(t, test_restart_guard_single);
    suite_add_tcase(s, t);
    TCase *st = tcase_create("stress");
    tcase_set_timeout(st, 120);
    tcase_add_test(st, test_exclusion_under_faults);
    suite_add_tcase(s, st);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(quorum_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
