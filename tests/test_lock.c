/* test_lock.c - the lock on one Redis node, against a real redis-server. */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static fx_server srv; /* started once per test case, in the parent */

static void setup(void)
{
    ck_assert_int_eq(fx_server_start(&srv, NULL), 0);
}

static void teardown(void)
{
    fx_server_stop(&srv);
}

/* Each test (in its own process) starts from an empty database. */
static void flush(void)
{
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "FLUSHALL"), 0);
}

/* A raw command through the fixture (not the library), reply as text. */
static const char *raw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *raw(const char *fmt, ...)
{
    static char out[4096];
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, cmd), 0);
    return out;
}

/* ---- argument checks --------------------------------------------------------- */

START_TEST(test_bad_arguments)
{
    redlock_client *c = NULL;
    redlock *l = NULL;
    const char *bad[1] = {"http://127.0.0.1"};
    const char *tls[1] = {"rediss://127.0.0.1"};
    const char *null_url[1] = {NULL};

    ck_assert_int_eq(redlock_client_new(NULL, bad, 1, NULL), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_client_new(&c, NULL, 1, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(redlock_client_new(&c, bad, 0, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "no Redis URLs"));
    ck_assert_int_eq(redlock_client_new(&c, bad, 1, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "redis://"));
    ck_assert_int_eq(redlock_client_new(&c, tls, 1, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "TLS"));
    ck_assert_int_eq(redlock_client_new(&c, null_url, 1, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_null(c);

    redlock_options o;
    redlock_options_init(&o);
    o.io_timeout_ms = 0;
    ck_assert_int_eq(redlock_client_new(&c, (const char *[]){srv.url}, 1, &o), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "timeout"));

    c = tu_client(srv.url, 0);
    ck_assert_int_eq(redlock_new(&l, c, NULL, NULL, 1000), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "name"));
    ck_assert_int_eq(redlock_new(&l, c, "", NULL, 1000), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_new(&l, c, "x", NULL, 0), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "ttl"));
    ck_assert_int_eq(redlock_new(&l, c, "x", "", 1000), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_new(&l, NULL, "x", NULL, 1000), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_new(NULL, c, "x", NULL, 1000), REDLOCK_ERR_ARG);
    ck_assert_ptr_null(l);

    ck_assert_int_eq(redlock_trylock(NULL), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_lock(NULL, 10), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_unlock(NULL), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_refresh(NULL), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_inspect(NULL, NULL), REDLOCK_ERR_ARG);
    ck_assert_uint_eq(redlock_fence(NULL), 0);
    ck_assert_int_eq(redlock_validity_ms(NULL), 0);
    ck_assert_ptr_null(redlock_value(NULL));
    redlock_free(NULL);
    redlock_client_free(NULL);

    for (int s = REDLOCK_OK; s <= REDLOCK_ERR_NOMEM; s++)
        ck_assert_str_ne(redlock_strerror(s), "unknown status");
    ck_assert_str_eq(redlock_strerror(12345), "unknown status");
    redlock_client_free(c);
}
END_TEST

START_TEST(test_random_value)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "rv", NULL, 1000), *b = tu_lock(c, "rv", NULL, 1000);
    ck_assert_uint_eq(strlen(redlock_value(a)), 32);
    ck_assert_str_ne(redlock_value(a), redlock_value(b));
    for (size_t i = 0; i < 32; i++)
        ck_assert(strchr("0123456789abcdef", redlock_value(a)[i]) != NULL);
    redlock *u = tu_lock(c, "rv", "client-1", 1000);
    ck_assert_str_eq(redlock_value(u), "client-1");
    redlock_free(a);
    redlock_free(b);
    redlock_free(u);
    redlock_client_free(c);
}
END_TEST

/* ---- the lock ------------------------------------------------------------------ */

START_TEST(test_exclusion)
{
    redlock_client *c1 = tu_client(srv.url, 0), *c2 = tu_client(srv.url, 0);
    redlock *a = tu_lock(c1, "excl", "owner-a", 5000);
    redlock *b = tu_lock(c2, "excl", "owner-b", 5000);

    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c2), "held by another owner"));
    ck_assert_str_eq(raw("GET excl"), "owner-a");
    ck_assert_int_gt(redlock_validity_ms(a), 4000);
    ck_assert_int_le(redlock_validity_ms(a), 5000 - 50); /* drift: 5000 * 0.01 + 2 */
    ck_assert_int_eq(redlock_validity_ms(b), 0);

    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_validity_ms(a), 0);
    ck_assert_str_eq(raw("EXISTS excl"), "0");
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_str_eq(raw("GET excl"), "owner-b");
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);

    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c1);
    redlock_client_free(c2);
}
END_TEST

START_TEST(test_non_owner_changes_nothing)
{
    redlock_client *c1 = tu_client(srv.url, 0), *c2 = tu_client(srv.url, 0);
    redlock *a = tu_lock(c1, "nonowner", "owner-a", 10000);
    redlock *b = tu_lock(c2, "nonowner", "owner-b", 60000);

    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_NOT_HELD);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c2), "another owner"));
    ck_assert_int_eq(redlock_refresh(b), REDLOCK_NOT_HELD);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c2), "another owner"));
    ck_assert_str_eq(raw("GET nonowner"), "owner-a");
    long pttl = atol(raw("PTTL nonowner"));
    ck_assert_int_le(pttl, 10000); /* b's refresh did not set its 60 s TTL */
    ck_assert_int_gt(pttl, 5000);

    /* a key that is gone: NOT_HELD, and errstr says it expired */
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_NOT_HELD);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c1), "expired"));
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_NOT_HELD);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c1), "expired"));
    ck_assert_str_eq(raw("EXISTS nonowner"), "0"); /* refresh did not re-create it */

    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c1);
    redlock_client_free(c2);
}
END_TEST

START_TEST(test_expiry_then_stale_owner)
{
    redlock_client *c1 = tu_client(srv.url, 0), *c2 = tu_client(srv.url, 0);
    redlock *a = tu_lock(c1, "stale", "owner-a", 150);
    redlock *b = tu_lock(c2, "stale", "owner-b", 10000);

    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    usleep(400 * 1000);
    ck_assert_int_eq(redlock_validity_ms(a), 0);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);

    ck_assert_int_eq(redlock_refresh(a), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_NOT_HELD);
    ck_assert_str_eq(raw("GET stale"), "owner-b");
    ck_assert_int_gt(atol(raw("PTTL stale")), 5000);

    /* refresh after expiry never re-creates the key */
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);
    redlock *e = tu_lock(c1, "stale2", "owner-e", 100);
    ck_assert_int_eq(redlock_trylock(e), REDLOCK_OK);
    usleep(300 * 1000);
    ck_assert_int_eq(redlock_refresh(e), REDLOCK_NOT_HELD);
    ck_assert_str_eq(raw("EXISTS stale2"), "0");

    redlock_free(a);
    redlock_free(b);
    redlock_free(e);
    redlock_client_free(c1);
    redlock_client_free(c2);
}
END_TEST

START_TEST(test_refresh_extends)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "refr", "owner-a", 400);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    for (int i = 0; i < 5; i++) {
        usleep(150 * 1000);
        ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
        ck_assert_int_gt(redlock_validity_ms(a), 200);
    }
    /* 750 ms after the acquire of a 400 ms lock: still ours */
    ck_assert_str_eq(raw("GET refr"), "owner-a");
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_idempotent_reacquire)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "idem", "owner-a", 1000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    uint64_t t1 = redlock_fence(a);
    ck_assert_uint_gt(t1, 0);
    usleep(200 * 1000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK); /* already ours: TTL reset */
    ck_assert_uint_eq(redlock_fence(a), t1);
    ck_assert_int_gt(atol(raw("PTTL idem")), 900);
    /* a second handle with the same value is the same owner */
    redlock *same = tu_lock(c, "idem", "owner-a", 1000);
    ck_assert_int_eq(redlock_trylock(same), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(same), t1);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_free(same);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_fence_increases)
{
    redlock_client *c1 = tu_client(srv.url, 0), *c2 = tu_client(srv.url, 0);
    redlock *a = tu_lock(c1, "fence", NULL, 1000), *b = tu_lock(c2, "fence", NULL, 1000);
    uint64_t last = 0;
    for (int i = 0; i < 50; i++) {
        redlock *l = i % 2 ? a : b;
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_uint_gt(redlock_fence(l), last);
        last = redlock_fence(l);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    ck_assert_uint_eq(strtoull(raw("GET {fence}:fence"), NULL, 10), last);
    redlock_info info;
    ck_assert_int_eq(redlock_inspect(a, &info), REDLOCK_OK);
    ck_assert_int_eq(info.held, 0);
    ck_assert_uint_eq(info.fence, last);

    /* fencing off: token 0, no counter touched */
    redlock_options o;
    redlock_options_init(&o);
    o.fencing = 0;
    redlock_client *c3 = NULL;
    ck_assert_int_eq(redlock_client_new(&c3, (const char *[]){srv.url}, 1, &o), REDLOCK_OK);
    redlock *n = tu_lock(c3, "nofence", NULL, 1000);
    ck_assert_int_eq(redlock_trylock(n), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(n), 0);
    ck_assert_str_eq(raw("EXISTS {nofence}:fence"), "0");
    redlock_free(n);
    redlock_client_free(c3);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c1);
    redlock_client_free(c2);
}
END_TEST

START_TEST(test_hash_tag_fence_key)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "job:{user42}:sync", NULL, 1000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_str_eq(raw("EXISTS job:{user42}:sync:fence"), "1");
    redlock_free(a);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_inspect)
{
    redlock_client *c1 = tu_client(srv.url, 0), *c2 = tu_client(srv.url, 0);
    redlock *a = tu_lock(c1, "insp", "owner-a", 5000), *b = tu_lock(c2, "insp", "owner-b", 5000);
    redlock_info info;
    ck_assert_int_eq(redlock_inspect(a, &info), REDLOCK_OK);
    ck_assert_int_eq(info.held, 0);
    ck_assert_int_eq(info.ttl_ms, -1);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_inspect(b, &info), REDLOCK_OK);
    ck_assert_int_eq(info.held, 1);
    ck_assert_int_eq(info.ours, 0);
    ck_assert_int_gt(info.ttl_ms, 4000);
    ck_assert_uint_eq(info.fence, redlock_fence(a));
    ck_assert_int_eq(redlock_inspect(a, &info), REDLOCK_OK);
    ck_assert_int_eq(info.ours, 1);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c1);
    redlock_client_free(c2);
}
END_TEST

/* ---- waiting -------------------------------------------------------------------- */

/* A child process holds the lock and releases it after hold_ms. Returns
 * its pid once it holds the lock. */
static pid_t holder(const char *name, int hold_ms, uint32_t ttl)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        redlock_client *c = NULL;
        redlock *l = NULL;
        const char *urls[1] = {srv.url};
        char ok = 'n';
        if (redlock_client_new(&c, urls, 1, NULL) == REDLOCK_OK &&
            redlock_new(&l, c, name, "holder", ttl) == REDLOCK_OK && redlock_trylock(l) == REDLOCK_OK)
            ok = 'y';
        if (write(p[1], &ok, 1) != 1)
            _exit(2);
        if (hold_ms >= 0) {
            usleep((useconds_t)hold_ms * 1000);
            redlock_unlock(l);
        }
        _exit(0);
    }
    close(p[1]);
    char ok = 0;
    ck_assert_int_eq(read(p[0], &ok, 1), 1);
    close(p[0]);
    ck_assert_int_eq(ok, 'y');
    return pid;
}

static void reap(pid_t pid)
{
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
}

START_TEST(test_wait_wakes_on_release)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *w = tu_lock(c, "waitrel", NULL, 5000);
    pid_t pid = holder("waitrel", 300, 30000); /* TTL 30 s: only the release can free it */
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(w, 5000), REDLOCK_OK);
    double took = fx_now_ms() - t0;
    reap(pid);
    /* released at ~300 ms: woken by the publish, not by the 30 s TTL */
    ck_assert_msg(took >= 250 && took < 1500, "acquired after %.1f ms", took);
    ck_assert_str_eq(raw("GET waitrel"), redlock_value(w));
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_wait_times_out)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *w = tu_lock(c, "waitto", NULL, 5000);
    pid_t pid = holder("waitto", -1, 30000); /* exits holding it */
    reap(pid);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(w, 400), REDLOCK_NOT_ACQUIRED);
    double took = fx_now_ms() - t0;
    ck_assert_msg(took >= 390 && took < 1200, "gave up after %.1f ms", took);
    ck_assert_int_eq(redlock_validity_ms(w), 0);
    /* wait 0 is one try */
    t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(w, 0), REDLOCK_NOT_ACQUIRED);
    ck_assert_double_lt(fx_now_ms() - t0, 300);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_wait_holder_vanished)
{
    /* No release is published, so only a timer wakes the waiter. Its backoff
     * is made long (each sleep 1.5 to 3 s): acquiring soon after the TTL
     * runs out takes the cap on every sleep at the holder's remaining TTL. */
    redlock_options o;
    redlock_options_init(&o);
    o.retry_min_ms = 3000;
    o.retry_max_ms = 3000;
    redlock_client *c = tu_client_opts((const char *[]){srv.url}, 1, &o);
    redlock *w = tu_lock(c, "vanish", NULL, 5000);
    pid_t pid = holder("vanish", -1, 600); /* exits without releasing: TTL 600 ms */
    reap(pid);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(w, 10000), REDLOCK_OK);
    double took = fx_now_ms() - t0;
    /* freed by the TTL at <= 600 ms; without the cap the first sleep alone
     * would last >= 1500 ms */
    ck_assert_msg(took >= 300 && took < 1200, "acquired after %.1f ms", took);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

/* A waiter whose try failed subscribes; a release before the subscription
 * reached nobody. Once subscribed, the waiter asks with one PTTL (not
 * another acquire script): the lock still held, it sleeps (here until its
 * wait ends, the backoff being longer), and tries once more at the end. */
START_TEST(test_wait_probe_held)
{
    redlock_options o;
    redlock_options_init(&o);
    o.retry_min_ms = 10000;
    o.retry_max_ms = 10000;
    redlock_client *c = tu_client_opts((const char *[]){srv.url}, 1, &o);
    redlock *w = tu_lock(c, "probeheld", NULL, 5000);
    pid_t pid = holder("probeheld", -1, 60000); /* exits holding it */
    reap(pid);
    raw("CONFIG RESETSTAT");
    ck_assert_int_eq(redlock_lock(w, 500), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(tu_cmd_calls(&srv, "subscribe"), 1);
    /* the first try, the last try; each script ran PTTL, and the probe once */
    ck_assert_int_eq(tu_cmd_calls(&srv, "evalsha"), 2);
    ck_assert_int_eq(tu_cmd_calls(&srv, "pttl"), 3);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

/* The lock goes (deleted: nothing published) after the waiter's failed try
 * and before its PTTL probe: the probe finds the key gone and the waiter
 * tries at once, not after its 10 s backoff nor at the end of its wait. */
START_TEST(test_wait_probe_finds_free)
{
    redlock_options o;
    redlock_options_init(&o);
    o.retry_min_ms = 10000;
    o.retry_max_ms = 10000;
    int checked = 0;
    for (int attempt = 0; attempt < 5 && !checked; attempt++) {
        char name[32];
        snprintf(name, sizeof name, "probefree%d", attempt);
        redlock_client *c = tu_client_opts((const char *[]){srv.url}, 1, &o);
        redlock *w = tu_lock(c, name, NULL, 5000);
        raw("SET %s someone PX 60000", name);
        raw("CONFIG RESETSTAT");
        ck_assert_int_eq(redlock_start_lock(w, 3000), REDLOCK_OK);
        /* run the engine until the listener's connection exists: the try
         * has failed, the SUBSCRIBE is on its way */
        double t0 = fx_now_ms();
        tu_turn_until_sockets(c, 2);
        ck_assert_int_eq(redlock_result(w), REDLOCK_IN_PROGRESS);
        /* the engine waits for this test to turn it: the probe can only
         * follow the DEL, unless it already ran (then try again) */
        if (tu_cmd_calls(&srv, "pttl") == 1) {
            checked = 1;
            raw("DEL %s", name);
        }
        int rc = tu_turn_until_result(c, w);
        double took = fx_now_ms() - t0;
        if (checked) {
            ck_assert_int_eq(rc, REDLOCK_OK);
            ck_assert_msg(took < 1500, "acquired after %.0f ms (the wait is 3 s)", took);
            ck_assert_int_eq(tu_cmd_calls(&srv, "evalsha"), 2); /* the try, the try after the probe */
            ck_assert_int_eq(tu_cmd_calls(&srv, "pttl"), 2);    /* in the first script, the probe */
            ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
        }
        redlock_free(w);
        redlock_client_free(c);
    }
    ck_assert_msg(checked, "the probe always ran before the test could delete the key");
}
END_TEST

START_TEST(test_wait_many_handoffs)
{
    /* two processes hand one lock back and forth; every wait is satisfied */
    const int rounds = 30;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        redlock_client *c = NULL;
        redlock *l = NULL;
        const char *urls[1] = {srv.url};
        int fails = 0;
        if (redlock_client_new(&c, urls, 1, NULL) != REDLOCK_OK ||
            redlock_new(&l, c, "handoff", NULL, 5000) != REDLOCK_OK)
            _exit(3);
        for (int i = 0; i < rounds; i++) {
            if (redlock_lock(l, 5000) != REDLOCK_OK) {
                fails++;
                continue;
            }
            usleep(2000);
            redlock_unlock(l);
        }
        _exit(fails ? 1 : 0);
    }
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = tu_lock(c, "handoff", NULL, 5000);
    for (int i = 0; i < rounds; i++) {
        ck_assert_int_eq(redlock_lock(l, 5000), REDLOCK_OK);
        usleep(2000);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- names and injection ----------------------------------------------------------- */

START_TEST(test_binary_names)
{
    static const char name_crlf[] = "evil\r\nSET injected 1\r\n";
    static const char name_utf8[] = "z\xc3\xa9ro \xe2\x9c\x93 lock";
    static const char name_nul[] = {'a', '\0', 'b'};
    redlock_client *c1 = tu_client(srv.url, 0), *c2 = tu_client(srv.url, 0);

    redlock *a = tu_lock(c1, name_crlf, NULL, 5000), *b = tu_lock(c2, name_crlf, NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    ck_assert_str_eq(raw("EXISTS injected"), "0");
    ck_assert_str_eq(raw("DBSIZE"), "2"); /* the lock and its fence counter */
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);

    a = tu_lock(c1, name_utf8, "val with spaces\r\n", 5000);
    b = tu_lock(c2, name_utf8, NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);

    ck_assert_int_eq(redlock_new_len(&a, c1, name_nul, sizeof name_nul, NULL, 5000), REDLOCK_OK);
    ck_assert_int_eq(redlock_new_len(&b, c2, name_nul, 1, NULL, 5000), REDLOCK_OK); /* "a" */
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK); /* a different key */
    ck_assert_str_eq(raw("EXISTS a"), "1");
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c1);
    redlock_client_free(c2);
}
END_TEST

/* ---- the server misbehaves between calls --------------------------------------------- */

START_TEST(test_script_flush_mid_use)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "flush", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    raw("SCRIPT FLUSH");
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK); /* NOSCRIPT -> EVAL */
    raw("SCRIPT FLUSH");
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    raw("SCRIPT FLUSH");
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_str_eq(raw("GET flush"), redlock_value(a));
    redlock_free(a);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_client_kill_mid_use)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "kill", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_ge(atol(raw("CLIENT KILL TYPE normal SKIPME yes")), 1);
    usleep(20 * 1000);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK); /* reconnected on the next call */
    raw("CLIENT KILL TYPE normal SKIPME yes");
    usleep(20 * 1000);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_str_eq(raw("EXISTS kill"), "0");
    redlock_free(a);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_wrong_type)
{
    redlock_client *c = tu_client(srv.url, 0);
    raw("LPUSH wrongtype x");
    redlock *a = tu_lock(c, "wrongtype", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_ERR_SERVER);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "WRONGTYPE"));
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_ERR_SERVER);
    /* the connection stays usable */
    redlock *b = tu_lock(c, "righttype", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_dead_server)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", fx_free_port());
    redlock_client *c = tu_client(url, 0);
    redlock *a = tu_lock(c, "dead", NULL, 5000);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_ERR_IO);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "refused"));
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_ERR_IO);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_ERR_IO);
    /* I/O errors are retried until the wait runs out */
    ck_assert_int_eq(redlock_lock(a, 300), REDLOCK_ERR_IO);
    ck_assert_double_lt(fx_now_ms() - t0, 2000);
    redlock_free(a);
    redlock_client_free(c);
}
END_TEST

/* ---- URLs ------------------------------------------------------------------------------ */

static void lock_cycle_on(const char *url)
{
    redlock_client *c = tu_client(url, 0);
    redlock *a = tu_lock(c, "urlcheck", NULL, 5000);
    ck_assert_msg(redlock_trylock(a) == REDLOCK_OK, "%s: %s", url, redlock_client_errstr(c));
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_client_free(c);
}

START_TEST(test_urls)
{
    fx_server s2;
    fx_opts o;
    memset(&o, 0, sizeof o);
    o.password = "s3cret";
    o.acl_user = "locker";
    o.acl_password = "pw:with@odd/chars";
    o.unix_socket = 1;
    o.ipv6 = 1;
    ck_assert_int_eq(fx_server_start(&s2, &o), 0);
    char url[512];

    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/3", s2.port);
    lock_cycle_on(url);
    {
        /* SELECT 3 happened: a lock held through /3 is not in db 0 */
        redlock_client *c3 = tu_client(url, 0);
        redlock *held = tu_lock(c3, "in-db-3", NULL, 5000);
        char out[64];
        ck_assert_int_eq(redlock_trylock(held), REDLOCK_OK);
        ck_assert_int_eq(fx_cmd(&s2, out, sizeof out, "EXISTS in-db-3"), 0);
        ck_assert_str_eq(out, "0");
        ck_assert_int_eq(fx_cmd(&s2, out, sizeof out, "INFO keyspace"), 0);
        ck_assert_ptr_nonnull(strstr(out, "db3:keys="));
        redlock_free(held);
        redlock_client_free(c3);
    }
    snprintf(url, sizeof url, "redis://locker:pw%%3Awith%%40odd%%2Fchars@127.0.0.1:%d", s2.port);
    lock_cycle_on(url);
    snprintf(url, sizeof url, "unix://%s?db=2&password=s3cret", s2.sock);
    lock_cycle_on(url);
    if (s2.has_ipv6) {
        snprintf(url, sizeof url, "redis://:s3cret@[::1]:%d", s2.port);
        lock_cycle_on(url);
    }

    /* wrong and missing password */
    snprintf(url, sizeof url, "redis://:nope@127.0.0.1:%d", s2.port);
    redlock_client *c = tu_client(url, 0);
    redlock *a = tu_lock(c, "authfail", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_ERR_AUTH);
    ck_assert_ptr_null(strstr(redlock_client_errstr(c), "nope"));
    redlock_free(a);
    redlock_client_free(c);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", s2.port);
    c = tu_client(url, 0);
    a = tu_lock(c, "authfail", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_ERR_AUTH); /* NOAUTH */
    redlock_free(a);
    redlock_client_free(c);
    fx_server_stop(&s2);
}
END_TEST

/* ---- allocation --------------------------------------------------------------------------- */

START_TEST(test_no_alloc_per_cycle)
{
    tu_alloc_start(0);
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "noalloc", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK); /* connect, grow buffers */
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    long before = tu_alloc.calls;
    for (int i = 0; i < 500; i++) {
        ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
        ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    }
    ck_assert_int_eq(tu_alloc.calls - before, 0);
    redlock_free(a);
    redlock_client_free(c);
    tu_alloc_stop();
}
END_TEST

START_TEST(test_alloc_failure)
{
    /* fail the 1st, 2nd, ... allocation in turn: every path gives NOMEM
     * cleanly (no crash, no leak: ASan and valgrind runs check that) */
    int saw_nomem = 0, saw_ok = 0;
    for (long fail_at = 1; fail_at < 40; fail_at++) {
        tu_alloc_start(fail_at);
        redlock_client *c = NULL;
        redlock *a = NULL;
        const char *urls[1] = {srv.url};
        int rc = redlock_client_new(&c, urls, 1, NULL);
        if (rc == REDLOCK_OK)
            rc = redlock_new(&a, c, "nomem", NULL, 5000);
        if (rc == REDLOCK_OK)
            rc = redlock_trylock(a);
        if (rc == REDLOCK_OK)
            rc = redlock_unlock(a);
        ck_assert_msg(rc == REDLOCK_OK || rc == REDLOCK_ERR_NOMEM, "fail_at %ld: %d", fail_at, rc);
        saw_nomem |= rc == REDLOCK_ERR_NOMEM;
        saw_ok |= rc == REDLOCK_OK;
        redlock_free(a);
        redlock_client_free(c);
        tu_alloc_stop();
        raw("DEL nomem");
    }
    ck_assert(saw_nomem && saw_ok);
}
END_TEST

/* ---- examples -------------------------------------------------------------------------------- */

static int run_example(const char *prog, const char *arg2)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/%s %s %s >/dev/null", FX_EXAMPLES_DIR, prog, srv.url,
             arg2 ? arg2 : "");
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_examples)
{
    ck_assert_int_eq(run_example("trylock", NULL), 0);
    ck_assert_int_eq(run_example("wait", NULL), 0);
    ck_assert_int_eq(run_example("refresh", "4"), 0);
    ck_assert_int_eq(run_example("leases", "200 2"), 0); /* 200 leases, kept alive for 2 TTLs */
#ifndef FX_NO_LIBUV_EXAMPLE /* a cross build has no libuv for the target */
    ck_assert_int_eq(run_example("libuv", NULL), 0);
#endif
    /* while someone holds my-resource-lock, trylock reports it and exits 2 */
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = tu_lock(c, "my-resource-lock", "someone-else", 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(run_example("trylock", NULL), 2);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_client_free(c);
}
END_TEST

/* ---- mutual exclusion under contention ---------------------------------------------------------- */

struct shared {
    atomic_int inside, overlaps, fence_regressions;
    atomic_long acquired;
    /* read-modify-write by the holder only: plain, as a 64-bit atomic is
     * not lock-free on 32-bit MIPS (libatomic's locks are per process) */
    uint64_t last_fence;
    long counter;
};

/* ---- short leases, and where error detail lands --------------------------------------- */

START_TEST(test_minimum_ttl)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = NULL;
    for (uint32_t ttl = 1; ttl < REDLOCK_MIN_TTL_MS; ttl++) {
        ck_assert_int_eq(redlock_new(&l, c, "short", NULL, ttl), REDLOCK_ERR_ARG);
        ck_assert_ptr_null(l);
        ck_assert_msg(strstr(redlock_client_errstr(c), "ttl_ms must be at least 10 (got ") != NULL,
                      "%s", redlock_client_errstr(c));
    }
    /* the shortest TTL taken is held when acquired: validity left, never 0 */
    ck_assert_int_eq(redlock_new(&l, c, "short", NULL, REDLOCK_MIN_TTL_MS), REDLOCK_OK);
    int held = 0;
    for (int k = 0; k < 50; k++) {
        int rc = redlock_trylock(l); /* a late reply is a timeout, never another owner */
        ck_assert_msg(rc == REDLOCK_OK || rc == REDLOCK_ERR_TIMEOUT, "%d: %s", rc,
                      redlock_errstr(l));
        held += rc == REDLOCK_OK;
        redlock_unlock(l);
    }
    ck_assert_int_gt(held, 0); /* on loopback, 10 ms is a lease worth having */
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* A reply that comes when the lease is already over: ours, released, and
 * said so, never "another owner"; redlock_lock tries again after its
 * backoff instead of at once. The server is made slow by DEBUG SLEEP from
 * another process while the acquire waits behind it. */
static pid_t server_sleeps(fx_server *s, const char *secs)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char out[64], cmd[64];
        snprintf(cmd, sizeof cmd, "DEBUG SLEEP %s", secs);
        _exit(fx_cmd(s, out, sizeof out, cmd) == 0 ? 0 : 1);
    }
    fx_sleep_ms(100); /* the server is asleep from here on */
    return pid;
}

START_TEST(test_late_acquire)
{
    fx_server s;
    fx_opts o = {0};
    o.debug = 1;
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    redlock_options opts;
    redlock_options_init(&opts);
    opts.drift_factor = 0.45; /* a lease of 1000 ms is good for 548 ms after the send */
    opts.io_timeout_ms = 3000;
    redlock_client *c = tu_client_opts((const char *[]){s.url}, 1, &opts);
    redlock *l = tu_lock(c, "late", "me", 1000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* connected, scripts cached */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);

    /* the server sleeps 0.8 s, from 100 ms before the acquire is sent */
    pid_t pid = server_sleeps(&s, "0.8");
    int rc = redlock_trylock(l);
    ck_assert_msg(rc == REDLOCK_ERR_TIMEOUT, "%d: %s", rc, redlock_errstr(l));
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "acquired, but the reply came after"));
    ck_assert_int_eq(redlock_validity_ms(l), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_str_eq(tu_get(&s, "late"), ""); /* given back */

    /* redlock_lock: the late try, then one more after a backoff */
    char out[64];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CONFIG RESETSTAT"), 0);
    pid = server_sleeps(&s, "0.8");
    ck_assert_msg((rc = redlock_lock(l, 5000)) == REDLOCK_OK, "%d: %s", rc, redlock_errstr(l));
    ck_assert_int_gt(redlock_validity_ms(l), 0);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    long calls = tu_cmd_calls(&s, "evalsha");
    ck_assert_msg(calls >= 3 && calls <= 5, "%ld script calls: acquire, release, acquire", calls);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_errstr_on_the_handle)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = tu_lock(c, "detail", NULL, 5000);
    /* a second start while one runs */
    ck_assert_int_eq(redlock_start_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_trylock(l), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "already in flight"));
    ck_assert_int_eq(tu_turn_until_result(c, l), REDLOCK_OK);
    ck_assert_str_eq(redlock_errstr(l), ""); /* the result is newer */
    /* bad arguments on a lock call */
    ck_assert_int_eq(redlock_keepalive(l, 5), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "keepalive takes 0 or 1"));
    ck_assert_int_eq(redlock_inspect(l, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "info is NULL"));
    ck_assert_int_eq(redlock_cancel(l), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "no operation is in flight"));
    /* a call that goes through clears it */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_str_eq(redlock_errstr(l), "");
    /* after the client is gone, the lock says why it refuses */
    redlock_client_free(c);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "client was freed"));
    ck_assert_int_eq(redlock_keepalive(l, 1), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "client was freed"));
    redlock_free(l);
}
END_TEST

START_TEST(test_exclusion_stress)
{
    /* 8 processes contend for one lock for at most 20 s; each checks it is
     * alone inside and bumps a counter by read-sleep-write */
    const int workers = 8, per_worker = 150;
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
    ck_assert_ptr_ne(sh, MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    pid_t pids[8];
    for (int w = 0; w < workers; w++) {
        pids[w] = fork();
        ck_assert_int_ge(pids[w], 0);
        if (pids[w] != 0)
            continue;
        redlock_client *c = NULL;
        redlock *l = NULL;
        const char *urls[1] = {srv.url};
        if (redlock_client_new(&c, urls, 1, NULL) != REDLOCK_OK ||
            redlock_new(&l, c, "stress", NULL, 2000) != REDLOCK_OK)
            _exit(3);
        double end = fx_now_ms() + 20000;
        for (int done = 0; done < per_worker && fx_now_ms() < end;) {
            if (redlock_lock(l, 5000) != REDLOCK_OK)
                continue;
            if (atomic_fetch_add(&sh->inside, 1) != 0)
                atomic_fetch_add(&sh->overlaps, 1);
            uint64_t f = redlock_fence(l);
            if (f <= sh->last_fence)
                atomic_fetch_add(&sh->fence_regressions, 1);
            sh->last_fence = f;
            long v = sh->counter;
            usleep(200);
            sh->counter = v + 1;
            atomic_fetch_add(&sh->acquired, 1);
            atomic_fetch_sub(&sh->inside, 1);
            if (redlock_unlock(l) != REDLOCK_OK)
                atomic_fetch_add(&sh->overlaps, 1000); /* lost it while inside */
            done++;
        }
        _exit(0);
    }
    int ok = 0;
    for (int w = 0; w < workers; w++) {
        int st;
        ck_assert_int_eq(waitpid(pids[w], &st, 0), pids[w]);
        ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    printf("single-node stress: %d workers, %ld acquisitions, counter %ld, overlaps %d, "
           "fence regressions %d\n",
           workers, (long)sh->acquired, sh->counter, (int)sh->overlaps,
           (int)sh->fence_regressions);
    ck_assert_int_eq(ok, workers);
    ck_assert_int_eq(sh->overlaps, 0);
    ck_assert_int_eq(sh->fence_regressions, 0);
    ck_assert_int_eq(sh->acquired, (long)workers * per_worker);
    ck_assert_int_eq(sh->counter, (long)workers * per_worker);
    munmap(sh, sizeof *sh);
}
END_TEST

static Suite *lock_suite(void)
{
    Suite *s = suite_create("lock");
    TCase *t = tcase_create("single-node");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_checked_fixture(t, flush, NULL);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_bad_arguments);
    tcase_add_test(t, test_random_value);
    tcase_add_test(t, test_exclusion);
    tcase_add_test(t, test_non_owner_changes_nothing);
    tcase_add_test(t, test_expiry_then_stale_owner);
    tcase_add_test(t, test_refresh_extends);
    tcase_add_test(t, test_idempotent_reacquire);
    tcase_add_test(t, test_fence_increases);
    tcase_add_test(t, test_hash_tag_fence_key);
    tcase_add_test(t, test_inspect);
    tcase_add_test(t, test_wait_wakes_on_release);
    tcase_add_test(t, test_wait_times_out);
    tcase_add_test(t, test_wait_holder_vanished);
    tcase_add_test(t, test_wait_probe_held);
    tcase_add_test(t, test_wait_probe_finds_free);
    tcase_add_test(t, test_wait_many_handoffs);
    tcase_add_test(t, test_binary_names);
    tcase_add_test(t, test_script_flush_mid_use);
    tcase_add_test(t, test_client_kill_mid_use);
    tcase_add_test(t, test_wrong_type);
    tcase_add_test(t, test_dead_server);
    tcase_add_test(t, test_urls);
    tcase_add_test(t, test_no_alloc_per_cycle);
    tcase_add_test(t, test_alloc_failure);
    tcase_add_test(t, test_examples);
    tcase_add_test(t, test_minimum_ttl);
    tcase_add_test(t, test_late_acquire);
    tcase_add_test(t, test_errstr_on_the_handle);
    tcase_add_test(t, test_exclusion_stress);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(lock_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
