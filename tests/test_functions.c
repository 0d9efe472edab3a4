/* test_functions.c - Redis Functions mode: where an ACL forbids EVAL and
 * EVALSHA but allows FCALL, every operation runs as FCALL of the library
 * functions/redlock_v2.lua. Three real redis-server processes with the ACL
 * user docs/functions.md gives administrators ("locker": FCALL, FCALL_RO and the
 * commands inside the functions, no EVAL/EVALSHA/SCRIPT/FUNCTION), and a
 * "loader" that may FUNCTION LOAD but not EVAL.
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "fx_cluster.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FX_BUILD_DIR
#define FX_BUILD_DIR "build"
#endif
#ifndef FX_SRC_DIR
#define FX_SRC_DIR "."
#endif
#define BIN FX_BUILD_DIR "/redlock"
#define LIBRARY_FILE FX_SRC_DIR "/functions/redlock_v2.lua"

#define N 3

/* docs/functions.md's line for administrators, word for word (test_acl_line_in_docs). */
static const char ACL_LINE[] =
    "ACL SETUSER locker on >locker-secret ~* &redlock:* -@all +fcall +fcall_ro "
    "+subscribe +unsubscribe +get +set +pexpire +pttl +incr +del +exists +publish +time "
    "+zadd +zrem +zrange +zrangebyscore +zscore +zcard +zrank +zcount +zremrangebyscore +hset "
    "+hget +hdel +info";
/* What a cluster user needs beyond that line: the slot map,
 * ASKING, and the shard channels of wake-ups. */
static const char CLUSTER_ACL_LINE[] =
    "ACL SETUSER locker on >locker-secret ~* &redlock:* &*:freed* -@all +fcall +fcall_ro "
    "+subscribe +unsubscribe +get +set +pexpire +pttl +incr +del +exists +publish +time "
    "+zadd +zrem +zrange +zrangebyscore +zscore +zcard +zrank +zcount +zremrangebyscore +hset "
    "+hget +hdel +info +cluster|slots +asking +ssubscribe +sunsubscribe +spublish";

/* May load the library, may not run scripts. */
static const char LOADER_LINE[] =
    "ACL SETUSER loader on >loader-secret ~* &* +@all -eval "
    "-evalsha -eval_ro -evalsha_ro -script";

static fx_server srv[N];
static char locker_url[N][128], loader_url[N][128];

static void setup(void)
{
    char out[256];
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(fx_server_start(&srv[i], NULL), 0);
        ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, ACL_LINE), 0);
        ck_assert_str_eq(out, "OK");
        ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, LOADER_LINE), 0);
        ck_assert_str_eq(out, "OK");
        snprintf(locker_url[i], sizeof locker_url[i], "redis://locker:locker-secret@127.0.0.1:%d",
                 srv[i].port);
        snprintf(loader_url[i], sizeof loader_url[i], "redis://loader:loader-secret@127.0.0.1:%d",
                 srv[i].port);
    }
}

static void teardown(void)
{
    for (int i = 0; i < N; i++)
        fx_server_stop(&srv[i]);
}

/* Each test starts with empty servers: no keys, no functions, no stats. */
static void flush(void)
{
    char out[64];
    for (int i = 0; i < N; i++) {
        fx_server_resume(&srv[i]); /* after a test that failed with it stopped */
        ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, "FLUSHALL"), 0);
        ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, "FUNCTION FLUSH"), 0);
        ck_assert_int_eq(fx_cmd(&srv[i], out, sizeof out, "CONFIG RESETSTAT"), 0);
    }
}

/* A command through the fixture (the default user), reply as text. */
static const char *raw_on(fx_server *s, const char *cmd)
{
    static char out[131072];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, cmd), 0);
    return out;
}

static const char *raw(int i, const char *cmd)
{
    return raw_on(&srv[i], cmd);
}

/* FUNCTION LOAD text on node i as the default user; the reply as text. */
static const char *load_text(int i, const char *text)
{
    static char out[512];
    const char *argv[3] = {"FUNCTION", "LOAD", text};
    const size_t lens[3] = {8, 4, strlen(text)};
    ck_assert_int_eq(fx_cmdv(&srv[i], out, sizeof out, 3, argv, lens), 0);
    return out;
}

/* What an administrator does: load this build's library (default user). */
static void admin_load(int i)
{
    static char text[65536];
    ck_assert_uint_lt(redlock_functions_code(text, sizeof text), sizeof text);
    ck_assert_str_eq(load_text(i, text), "redlock_v2");
}

static redlock_client *client_mode(const char *const *urls, size_t n, int mode)
{
    redlock_options o;
    redlock_options_init(&o);
    o.scripts = mode;
    o.io_timeout_ms = 1000;
    return tu_client_opts(urls, n, &o);
}

static const char *const *lockers(void)
{
    static const char *u[N];
    for (int i = 0; i < N; i++)
        u[i] = locker_url[i];
    return u;
}

/* INFO commandstats of node i. */
static const char *stats(int i)
{
    return raw(i, "INFO commandstats");
}

/* calls= of cmdstat_NAME on node i; -1 when Redis never saw the command. */
static long calls(int i, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "cmdstat_%s:calls=", name);
    const char *p = strstr(stats(i), key);
    return p ? atol(p + strlen(key)) : -1;
}

/* ---- the loop, for operations that wait ------------------------------------------------------ */

/* Run the engines of clients cs until l's operation ends (l NULL: for ms). */
static int drive(redlock_client *const *cs, int nc, redlock *l, int ms)
{
    double end = fx_now_ms() + ms;
    while (fx_now_ms() < end && (!l || redlock_result(l) == REDLOCK_IN_PROGRESS)) {
        struct pollfd fds[64];
        int k = 0, first[8], count[8], timeout = 10;
        for (int i = 0; i < nc; i++) {
            first[i] = k;
            count[i] = redlock_client_pollfds(cs[i], fds + k, 64 - k);
            ck_assert_int_le(k + count[i], 64);
            k += count[i];
            int t = redlock_client_timeout_ms(cs[i]);
            if (t >= 0 && t < timeout)
                timeout = t;
        }
        ck_assert_int_ge(poll(fds, (nfds_t)k, timeout), 0);
        for (int i = 0; i < nc; i++) {
            redlock_client_process(cs[i], fds + first[i], count[i]);
            while (redlock_client_done(cs[i])) {
            }
        }
    }
    return l ? redlock_result(l) : REDLOCK_OK;
}

/* ---- every operation, in one mode ------------------------------------------------------------ */

/* One node: trylock, exclusion, inspect, refresh, unlock. */
static void single_node_cycle(const char *url, int mode)
{
    redlock_client *c = client_mode(&url, 1, mode), *c2 = client_mode(&url, 1, mode);
    redlock *a = tu_lock(c, "fn:one", "owner-a", 10000),
            *b = tu_lock(c2, "fn:one", "owner-b", 10000);
    redlock_info info;
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    uint64_t f0 = redlock_fence(a);
    ck_assert(tu_seeded(f0));
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c2), "held by another owner"));
    ck_assert_int_eq(redlock_inspect(b, &info), REDLOCK_OK);
    ck_assert(info.held && !info.ours && info.ttl_ms > 9000 && info.fence == f0);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_refresh(b), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_inspect(a, &info), REDLOCK_OK);
    ck_assert(!info.held && info.fence == f0);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(b), f0 + 1);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);
    /* a semaphore, and readers and a writer: the same ACL line covers them */
    redlock *s1 = NULL, *s2 = NULL, *r = NULL;
    ck_assert_int_eq(redlock_new_semaphore(&s1, c, "fn:sem", 1, NULL, 10000), REDLOCK_OK);
    ck_assert_int_eq(redlock_new_semaphore(&s2, c2, "fn:sem", 1, NULL, 10000), REDLOCK_OK);
    ck_assert_int_eq(redlock_new_shared(&r, c2, "fn:one", NULL, 10000), REDLOCK_OK);
    ck_assert_msg(redlock_trylock(s1) == REDLOCK_OK, "%s", redlock_errstr(s1));
    ck_assert_int_eq(redlock_trylock(s2), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_refresh(s1), REDLOCK_OK);
    ck_assert_msg(redlock_unlock(s1) == REDLOCK_OK, "%s", redlock_errstr(s1));
    ck_assert_int_eq(redlock_trylock(s2), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(s2), REDLOCK_OK);
    ck_assert_msg(redlock_trylock(r) == REDLOCK_OK, "%s", redlock_errstr(r));
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_NOT_ACQUIRED); /* the writer waits */
    ck_assert_int_eq(redlock_unlock(r), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(s1);
    redlock_free(s2);
    redlock_free(r);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c);
    redlock_client_free(c2);
}

/* A waiter is woken by the release: its backoff (1.5 s or more) and the
 * holder's TTL (10 s) are both far longer than the wake-up it gets. */
static void wait_and_wake(const char *url, int mode)
{
    redlock_options o;
    redlock_options_init(&o);
    o.scripts = mode;
    o.retry_min_ms = o.retry_max_ms = 3000;
    redlock_client *hc = client_mode(&url, 1, mode), *wc = tu_client_opts(&url, 1, &o);
    redlock *h = tu_lock(hc, "fn:wait", NULL, 10000), *w = tu_lock(wc, "fn:wait", NULL, 10000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 5000), REDLOCK_OK);
    ck_assert_int_eq(drive(&wc, 1, NULL, 300), REDLOCK_OK); /* tried, subscribed, asleep */
    ck_assert_int_eq(redlock_result(w), REDLOCK_IN_PROGRESS);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    ck_assert_int_eq(drive(&wc, 1, w, 3000), REDLOCK_OK);
    double took = fx_now_ms() - t0;
    ck_assert_msg(took < 1000, "woken after %.1f ms", took);
    ck_assert_uint_gt(redlock_fence(w), redlock_fence(h));
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(h);
    redlock_free(w);
    redlock_client_free(hc);
    redlock_client_free(wc);
}

/* Fair mode: two waiters are served in the order they began to wait. */
static void fair_order(const char *url, int mode)
{
    redlock_options o;
    redlock_options_init(&o);
    o.scripts = mode;
    o.fair = 1;
    redlock_client *hc = tu_client_opts(&url, 1, &o), *c1 = tu_client_opts(&url, 1, &o),
                   *c2 = tu_client_opts(&url, 1, &o);
    redlock_client *both[2] = {c1, c2};
    redlock *h = tu_lock(hc, "fn:fair", "holder", 10000);
    redlock *w1 = tu_lock(c1, "fn:fair", "first", 10000),
            *w2 = tu_lock(c2, "fn:fair", "second", 10000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w1, 5000), REDLOCK_OK);
    drive(&c1, 1, NULL, 200);
    ck_assert_int_eq(redlock_start_lock(w2, 5000), REDLOCK_OK);
    drive(both, 2, NULL, 200);
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    ck_assert_int_eq(drive(both, 2, w1, 3000), REDLOCK_OK);
    ck_assert_int_eq(redlock_result(w2), REDLOCK_IN_PROGRESS);
    ck_assert_int_eq(redlock_unlock(w1), REDLOCK_OK);
    ck_assert_int_eq(drive(both, 2, w2, 3000), REDLOCK_OK);
    ck_assert_uint_gt(redlock_fence(w2), redlock_fence(w1));
    ck_assert_int_eq(redlock_unlock(w2), REDLOCK_OK);
    redlock_free(h);
    redlock_free(w1);
    redlock_free(w2);
    redlock_client_free(hc);
    redlock_client_free(c1);
    redlock_client_free(c2);
}

/* Quorum: refresh sets the key again where a node lost it; tokens strictly
 * increase while the winning majority rotates (A on {1,2}, B on {2,3}, C
 * on {1,3}: the raise is what keeps C above B). */
static void quorum_ops(const char *const *urls, int mode)
{
    redlock_client *c = client_mode(urls, N, mode);
    redlock *a = tu_lock(c, "fn:q", "owner-a", 10000);
    redlock_info info;
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_str_eq(raw(1, "DEL fn:q"), "1");
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_str_eq(tu_get(&srv[1], "fn:q"), "owner-a");
    ck_assert_int_eq(redlock_inspect(a, &info), REDLOCK_OK);
    ck_assert(info.held && info.ours && info.fence == redlock_fence(a) && tu_seeded(info.fence));
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    for (int i = 0; i < N; i++)
        ck_assert_str_eq(tu_get(&srv[i], "fn:q"), "");

    static const int blocked[3] = {2, 0, 1};
    uint64_t last = 0; /* fn:rot has a counter of its own */
    for (int round = 0; round < 6; round++) {
        int b = blocked[round % 3];
        raw(b, "SET fn:rot blocker PX 60000");
        redlock *l = tu_lock(c, "fn:rot", NULL, 5000);
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_msg(redlock_fence(l) > last, "round %d: token %llu after %llu", round,
                      (unsigned long long)redlock_fence(l), (unsigned long long)last);
        last = redlock_fence(l);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        redlock_free(l);
        raw(b, "DEL fn:rot");
    }
    redlock_free(a);
    redlock_client_free(c);
}

static void every_operation(const char *const *urls, int mode)
{
    single_node_cycle(urls[0], mode);
    wait_and_wake(urls[0], mode);
    fair_order(urls[0], mode);
    quorum_ops(urls, mode);
}

/* ---- the modes ------------------------------------------------------------------------------ */

START_TEST(test_functions_mode)
{
    for (int i = 0; i < N; i++)
        admin_load(i);
    every_operation(lockers(), REDLOCK_SCRIPTS_FUNCTIONS);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(calls(i, "eval"), -1);
        ck_assert_int_eq(calls(i, "evalsha"), -1); /* not even tried */
        ck_assert_int_gt(calls(i, "fcall"), 0);
    }
    ck_assert_int_gt(calls(0, "fcall_ro"), 0); /* inspect */
}
END_TEST

START_TEST(test_auto_mode)
{
    for (int i = 0; i < N; i++)
        admin_load(i);
    every_operation(lockers(), REDLOCK_SCRIPTS_AUTO);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(calls(i, "evalsha"), 0); /* refused (NOPERM), never run */
        ck_assert_int_gt(calls(i, "fcall"), 0);
    }
}
END_TEST

START_TEST(test_eval_mode)
{
    const char *urls[N] = {srv[0].url, srv[1].url, srv[2].url};
    every_operation(urls, REDLOCK_SCRIPTS_EVAL);
    for (int i = 0; i < N; i++) {
        ck_assert_int_gt(calls(i, "evalsha"), 0);
        ck_assert_int_eq(calls(i, "fcall"), -1);
        ck_assert_int_eq(calls(i, "function|load"), -1);
    }
}
END_TEST

/* Each node goes its own way: node 0 lets the user run scripts, nodes 1
 * and 2 only FCALL. */
START_TEST(test_auto_mixed_quorum)
{
    for (int i = 0; i < N; i++)
        admin_load(i);
    const char *urls[N] = {srv[0].url, locker_url[1], locker_url[2]};
    every_operation(urls, REDLOCK_SCRIPTS_AUTO);
    ck_assert_int_gt(calls(0, "evalsha"), 0);
    ck_assert_int_eq(calls(0, "fcall"), -1);
    for (int i = 1; i < N; i++) {
        ck_assert_int_eq(calls(i, "evalsha"), 0);
        ck_assert_int_gt(calls(i, "fcall"), 0);
    }
}
END_TEST

/* ---- a missing library ----------------------------------------------------------------------- */

START_TEST(test_missing_library)
{
    const char *url = locker_url[0];
    /* functions mode: the error names the function, why it could not be
     * loaded, and how to load it; it is not worth waiting out */
    redlock_client *c = client_mode(&url, 1, REDLOCK_SCRIPTS_FUNCTIONS);
    redlock *l = tu_lock(c, "fn:missing", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_SERVER);
    const char *e = redlock_client_errstr(c);
    ck_assert_msg(strstr(e, "function redlock_v2_acquire not found") &&
                      strstr(e, "may not load it: NOPERM") &&
                      strstr(e, "redlock functions load -u URL") &&
                      strstr(e, "redis-cli -x FUNCTION LOAD < functions/redlock_v2.lua"),
                  "%s", e);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(l, 2000), REDLOCK_ERR_SERVER);
    ck_assert_double_lt(fx_now_ms() - t0, 500);
    ck_assert_str_eq(tu_get(&srv[0], "fn:missing"), "");
    ck_assert_int_eq(calls(0, "evalsha"), -1);
    redlock_free(l);
    redlock_client_free(c);

    /* auto mode: NOPERM, said clearly */
    c = client_mode(&url, 1, REDLOCK_SCRIPTS_AUTO);
    l = tu_lock(c, "fn:missing", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_SERVER);
    e = redlock_client_errstr(c);
    ck_assert_msg(strstr(e, "NOPERM: this user may not run EVALSHA") &&
                      strstr(e, "library redlock_v2 for FCALL is not loaded") &&
                      strstr(e, "redlock functions load -u URL"),
                  "%s", e);
    redlock_free(l);
    redlock_client_free(c);

    /* eval mode: Redis's own NOPERM, as before */
    c = client_mode(&url, 1, REDLOCK_SCRIPTS_EVAL);
    l = tu_lock(c, "fn:missing", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_SERVER);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "NOPERM"));
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "'evalsha'"));
    redlock_free(l);
    redlock_client_free(c);

    /* a quorum says how many nodes answered, then the first node's reason */
    c = client_mode(lockers(), N, REDLOCK_SCRIPTS_FUNCTIONS);
    l = tu_lock(c, "fn:missing", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_SERVER);
    e = redlock_client_errstr(c);
    ck_assert_msg(strstr(e, "only 0 of 3 nodes answered") && strstr(e, "not found"), "%s", e);
    redlock_free(l);
    redlock_client_free(c);
    for (int i = 0; i < N; i++)
        ck_assert_str_eq(raw(i, "FUNCTION LIST"), ""); /* nothing was loaded */
}
END_TEST

/* ---- loading --------------------------------------------------------------------------------- */

/* A user who may FUNCTION LOAD (but not EVAL) gets the library loaded by
 * the first call that needs it, and again after FUNCTION FLUSH, as EVAL
 * loads a script after NOSCRIPT. */
START_TEST(test_library_loads_itself)
{
    static char code[65536];
    redlock_functions_code(code, sizeof code);
    for (int mode = REDLOCK_SCRIPTS_AUTO; mode <= REDLOCK_SCRIPTS_FUNCTIONS; mode += 2) {
        raw(0, "FUNCTION FLUSH");
        const char *url = loader_url[0];
        redlock_client *c = client_mode(&url, 1, mode);
        redlock *l = tu_lock(c, "fn:self", NULL, 5000);
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_ptr_nonnull(strstr(raw(0, "FUNCTION LIST WITHCODE"), code));
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        raw(0, "FUNCTION FLUSH");
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        redlock_free(l);
        redlock_client_free(c);
    }
    ck_assert_int_eq(calls(0, "function|load"), 4); /* once per missing library */
    ck_assert_int_eq(calls(0, "eval"), -1);

    /* after FUNCTION FLUSH, a user who may not load it gets the error */
    raw(0, "FUNCTION FLUSH");
    const char *url = locker_url[0];
    redlock_client *c = client_mode(&url, 1, REDLOCK_SCRIPTS_FUNCTIONS);
    redlock *l = tu_lock(c, "fn:self", NULL, 5000);
    admin_load(0);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    raw(0, "FUNCTION FLUSH");
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_ERR_SERVER);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "redlock_v2_release not found"));
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

static const char FOREIGN_V2[] =
    "#!lua name=redlock_v2\n"
    "redis.register_function('redlock_v2_other', function() "
    "return 'foreign' end)\n";
static const char OLD_V0[] =
    "#!lua name=redlock_v0\n"
    "redis.register_function('redlock_v0_acquire', function() "
    "return 'old' end)\n";

/* Another library of our name (or an older version) is never replaced:
 * not by a lock call, not by redlock_functions_load. */
START_TEST(test_never_replaces)
{
    ck_assert_str_eq(load_text(0, FOREIGN_V2), "redlock_v2");
    ck_assert_str_eq(load_text(0, OLD_V0), "redlock_v0");
    const char *url = loader_url[0];
    redlock_client *c = client_mode(&url, 1, REDLOCK_SCRIPTS_FUNCTIONS);
    redlock *l = tu_lock(c, "fn:foreign", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_SERVER);
    ck_assert_msg(strstr(redlock_client_errstr(c), "other code is there, never replaced"), "%s",
                  redlock_client_errstr(c));
    ck_assert_str_eq(tu_get(&srv[0], "fn:foreign"), "");

    redlock_functions_node nodes[2];
    size_t count = 0;
    ck_assert_int_eq(redlock_functions_load(c, nodes, 2, &count), REDLOCK_ERR_SERVER);
    ck_assert_uint_eq(count, 1);
    ck_assert(nodes[0].foreign && !nodes[0].loaded && !nodes[0].changed);
    ck_assert_ptr_nonnull(strstr(nodes[0].detail, "never replaced"));
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "never replaced"));
    ck_assert_ptr_nonnull(strstr(raw(0, "FCALL redlock_v2_other 0"), "foreign"));
    ck_assert_ptr_nonnull(strstr(raw(0, "FCALL redlock_v0_acquire 0"), "old"));

    /* the administrator removes the foreign one; the old version stays */
    ck_assert_str_eq(raw(0, "FUNCTION DELETE redlock_v2"), "OK");
    ck_assert_int_eq(redlock_functions_load(c, nodes, 2, &count), REDLOCK_OK);
    ck_assert(nodes[0].loaded && nodes[0].changed && !nodes[0].foreign);
    ck_assert_ptr_nonnull(strstr(nodes[0].libraries, "redlock_v0"));
    ck_assert_ptr_nonnull(strstr(nodes[0].libraries, "redlock_v2"));
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_ptr_nonnull(strstr(raw(0, "FCALL redlock_v0_acquire 0"), "old"));
    /* the fixture's two, ours refused twice (never with REPLACE), then ours */
    ck_assert_int_eq(calls(0, "function|load"), 5);
    ck_assert_ptr_null(strstr(stats(0), "cmdstat_function|delete:calls=2"));
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* The flags of function redlock_v2_NAME in FUNCTION LIST as text (fx_cmd
 * joins every element with a newline; no flags is an empty array). */
static const char *flags_of(const char *list, const char *name)
{
    static char out[64];
    char key[96];
    snprintf(key, sizeof key, "\nredlock_v2_%s\ndescription\n\nflags\n", name);
    const char *p = strstr(list, key);
    ck_assert_msg(p != NULL, "no function %s", name);
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    snprintf(out, sizeof out, "%.*s", (int)n, p);
    return out;
}

/* redlock_functions_load and _status over a quorum; what redis-cli -x
 * loads from the shipped file is what this build calls. */
START_TEST(test_load_and_status_api)
{
    redlock_client *c = tu_client_urls((const char *[]){srv[0].url, srv[1].url, srv[2].url}, N, 0);
    redlock_functions_node nodes[N];
    size_t count = 0;
    ck_assert_int_eq(redlock_functions_status(c, nodes, N, &count), REDLOCK_OK);
    ck_assert_uint_eq(count, N);
    for (int i = 0; i < N; i++)
        ck_assert(!nodes[i].loaded && !nodes[i].foreign && nodes[i].libraries[0] == '\0');

    char cmd[512], out[512];
    snprintf(cmd, sizeof cmd, "redis-cli -p %d -x FUNCTION LOAD < %s", srv[1].port, LIBRARY_FILE);
    ck_assert_int_eq(fx_run(out, sizeof out, 10000, (const char *[]){"sh", "-c", cmd, NULL}), 0);
    ck_assert_str_eq(out, "redlock_v2\n");
    ck_assert_int_eq(redlock_functions_status(c, nodes, N, &count), REDLOCK_OK);
    ck_assert(!nodes[0].loaded && nodes[1].loaded && !nodes[2].loaded);
    ck_assert_str_eq(nodes[1].libraries, "redlock_v2");

    ck_assert_int_eq(redlock_functions_load(c, nodes, N, &count), REDLOCK_OK);
    ck_assert(nodes[0].changed && !nodes[1].changed && nodes[2].changed);
    for (int i = 0; i < N; i++) {
        ck_assert(nodes[i].loaded && nodes[i].status == REDLOCK_OK);
        ck_assert_ptr_nonnull(strstr(raw(i, "FUNCTION LIST"), "no-writes"));
    }
    ck_assert_str_eq(redlock_functions_library(), "redlock_v2");

    /* the function flags, as docs/functions.md states them */
    static const char *const flags[][2] = {
        {"acquire", ""},          {"fair_acquire", ""},     {"raise", ""},
        {"release", "allow-oom"}, {"refresh", "allow-oom"}, {"dequeue", "allow-oom"},
        {"status", "no-writes"},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        ck_assert_str_eq(flags_of(raw(0, "FUNCTION LIST"), flags[i][0]), flags[i][1]);

    redlock_client_free(c);

    /* a node that stalls: the others still answer, within the deadline,
     * and the call says which one failed */
    c = tu_client_urls((const char *[]){srv[0].url, srv[1].url, srv[2].url}, N, 300);
    fx_server_pause(&srv[2]);
    double t0 = fx_now_ms();
    int rc = redlock_functions_status(c, nodes, N, &count);
    double took = fx_now_ms() - t0;
    fx_server_resume(&srv[2]);
    ck_assert_int_eq(rc, REDLOCK_ERR_TIMEOUT);
    ck_assert_msg(took < 1000, "took %.1f ms", took);
    ck_assert(nodes[0].loaded && nodes[1].loaded && nodes[2].status == REDLOCK_ERR_TIMEOUT);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), srv[2].url + 8));
    redlock_client_free(c);
    ck_assert_int_eq(redlock_functions_load(NULL, NULL, 0, NULL), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_functions_status(NULL, NULL, 0, NULL), REDLOCK_ERR_ARG);
}
END_TEST

/* ---- costs ----------------------------------------------------------------------------------- */

/* A warm cycle sends no EVAL or EVALSHA, and allocates nothing. */
static void warm_cycles(int mode)
{
    const char *url = locker_url[0];
    tu_alloc_start(0);
    redlock_client *c = client_mode(&url, 1, mode);
    redlock *l = tu_lock(c, "fn:warm", NULL, 5000);
    redlock_info info;
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* connect; auto: learn FCALL */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_str_eq(raw(0, "CONFIG RESETSTAT"), "OK");
    long before = tu_alloc.calls;
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_inspect(l, &info), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    ck_assert_int_eq(tu_alloc.calls - before, 0);
    redlock_free(l);
    redlock_client_free(c);
    tu_alloc_stop();
    ck_assert_int_eq(calls(0, "eval"), -1);
    ck_assert_int_eq(calls(0, "evalsha"), -1);
    ck_assert_int_eq(calls(0, "fcall"), 150);
    ck_assert_int_eq(calls(0, "fcall_ro"), 50);
}

START_TEST(test_warm_cycle)
{
    admin_load(0);
    warm_cycles(REDLOCK_SCRIPTS_FUNCTIONS);
    warm_cycles(REDLOCK_SCRIPTS_AUTO);
}
END_TEST

/* A cancelled acquire is released with FCALL where EVAL is not permitted:
 * it landed on two nodes while the third stalls. */
START_TEST(test_cancel_releases_by_fcall)
{
    for (int i = 0; i < N; i++)
        admin_load(i);
    for (int mode = REDLOCK_SCRIPTS_AUTO; mode <= REDLOCK_SCRIPTS_FUNCTIONS; mode += 2) {
        redlock_client *c = client_mode(lockers(), N, mode);
        redlock *l = tu_lock(c, "fn:cancel", "me", 30000);
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* connected; auto: FCALL learnt */
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        fx_server_pause(&srv[2]);
        ck_assert_int_eq(redlock_start_trylock(l), REDLOCK_OK);
        drive(&c, 1, NULL, 300);
        ck_assert_str_eq(tu_get(&srv[0], "fn:cancel"), "me");
        ck_assert_int_eq(redlock_result(l), REDLOCK_IN_PROGRESS);
        ck_assert_int_eq(redlock_cancel(l), REDLOCK_OK);
        drive(&c, 1, NULL, 300);
        ck_assert_str_eq(tu_get(&srv[0], "fn:cancel"), "");
        ck_assert_str_eq(tu_get(&srv[1], "fn:cancel"), "");
        fx_server_resume(&srv[2]);
        double end = fx_now_ms() + 3000;
        while (fx_now_ms() < end && redlock_client_timeout_ms(c) >= 0)
            drive(&c, 1, NULL, 20);
        ck_assert_str_eq(tu_get(&srv[2], "fn:cancel"), "");
        redlock_free(l);
        redlock_client_free(c);
    }
}
END_TEST

/* Over maxmemory, release and refresh still run (allow-oom, as their EVAL
 * forms do); a new acquire is refused (as EVAL's SET is). */
START_TEST(test_over_maxmemory)
{
    admin_load(0);
    const char *url = locker_url[0];
    redlock_client *c = client_mode(&url, 1, REDLOCK_SCRIPTS_FUNCTIONS);
    redlock *a = tu_lock(c, "fn:oom", NULL, 5000), *b = tu_lock(c, "fn:oom2", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_str_eq(raw(0, "CONFIG SET maxmemory 1"), "OK");
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_ERR_SERVER);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "OOM"));
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_str_eq(raw(0, "CONFIG SET maxmemory 0"), "OK");
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c);
}
END_TEST

/* ---- documentation and the command ------------------------------------------------------- */

static const char *slurp(const char *path)
{
    static char buf[1 << 17];
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

START_TEST(test_acl_line_in_docs)
{
    const char *doc = slurp(FX_SRC_DIR "/docs/functions.md");
    ck_assert_ptr_nonnull(strstr(doc, ACL_LINE));
    /* and what a cluster user needs beyond it */
    ck_assert_ptr_nonnull(
        strstr(doc, "`+cluster|slots +asking +ssubscribe +sunsubscribe +spublish &*:freed*`"));
    ck_assert_ptr_nonnull(strstr(CLUSTER_ACL_LINE,
                                 "+cluster|slots +asking +ssubscribe "
                                 "+sunsubscribe +spublish"));
    ck_assert_ptr_nonnull(strstr(CLUSTER_ACL_LINE, " &*:freed* "));
    static char code[65536];
    size_t n = redlock_functions_code(code, sizeof code);
    ck_assert_uint_lt(n, sizeof code);
    ck_assert_str_eq(slurp(LIBRARY_FILE), code);
    /* a short buffer: cut, terminated, the full length returned */
    char small[8];
    ck_assert_uint_eq(redlock_functions_code(small, sizeof small), n);
    ck_assert_str_eq(small, "#!lua n");
    ck_assert_uint_eq(redlock_functions_code(NULL, 0), n);
}
END_TEST

/* Run the redlock command with the given words; its output lands in out. */
#define CLI(...) cli(out, sizeof out, (const char *[]){__VA_ARGS__, NULL})

static int cli(char *out, size_t len, const char *const *args)
{
    const char *argv[16] = {BIN};
    int k = 1;
    for (; args[k - 1] && k < 15; k++)
        argv[k] = args[k - 1];
    argv[k] = NULL;
    return fx_run(out, len, 20000, argv);
}

START_TEST(test_cli_functions)
{
    static char out[131072], want[16384];
    const char *u0 = srv[0].url, *u1 = srv[1].url, *u2 = srv[2].url;
    ck_assert_int_eq(CLI("functions", "load", "-u", u0, "-u", u1), 0);
    snprintf(want, sizeof want, "%s: redlock_v2 loaded\n%s: redlock_v2 loaded\n", u0 + 8, u1 + 8);
    ck_assert_str_eq(out, want);
    ck_assert_int_eq(CLI("functions", "load", "-u", u0), 0);
    snprintf(want, sizeof want, "%s: redlock_v2 already loaded\n", u0 + 8);
    ck_assert_str_eq(out, want);

    ck_assert_str_eq(load_text(2, OLD_V0), "redlock_v0");
    ck_assert_int_eq(CLI("functions", "status", "-u", u0, "-u", u2), 1);
    snprintf(want, sizeof want,
             "%s: redlock_v2 loaded (libraries: redlock_v2)\n"
             "%s: redlock_v2 not loaded (libraries: redlock_v0)\n",
             u0 + 8, u2 + 8);
    ck_assert_str_eq(out, want);
    ck_assert_int_eq(CLI("functions", "status", "-u", u1), 0);

    /* the locker may not load: 69, and the reason, per node */
    ck_assert_int_eq(CLI("functions", "load", "-u", locker_url[2]), 69);
    ck_assert_ptr_nonnull(strstr(out, "FUNCTION LOAD: NOPERM"));
    ck_assert_int_eq(CLI("functions", "status", "-u", locker_url[2]), 69);

    ck_assert_int_eq(CLI("functions", "code"), 0);
    ck_assert_str_eq(out, slurp(LIBRARY_FILE));

    /* the locker runs a command under a lock: auto (the default) and functions */
    ck_assert_int_eq(CLI("run", "-u", locker_url[0], "fn:cli", "--", "true"), 0);
    ck_assert_int_eq(CLI("run", "-S", "functions", "-u", locker_url[0], "fn:cli", "--", "true"), 0);
    ck_assert_int_eq(CLI("run", "-S", "eval", "-u", locker_url[0], "fn:cli", "--", "true"), 69);
    ck_assert_ptr_nonnull(strstr(out, "NOPERM"));
    ck_assert_int_eq(CLI("status", "--scripts", "functions", "-u", locker_url[0], "fn:cli"), 1);

    /* usage errors */
    static const char *const bad[][6] = {
        {"functions", NULL},
        {"functions", "unload", NULL},
        {"functions", "status", "extra", NULL},
        {"run", "-S", "lua", "x", "--", "true"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[8] = {0};
        for (int j = 0; j < 6 && bad[i][j]; j++)
            args[j] = bad[i][j];
        ck_assert_int_eq(cli(out, sizeof out, args), 64);
        ck_assert_ptr_nonnull(strstr(out, "redlock: "));
    }
}
END_TEST

/* ---- Redis Cluster --------------------------------------------------------------------------- */

static fx_cluster cl;

static void cluster_setup(void)
{
    ck_assert_int_eq(fx_cluster_start(&cl, 1, 0), 0);
    ck_assert_str_eq(raw_on(fx_cluster_node(&cl, 0), CLUSTER_ACL_LINE), "OK");
}

static void cluster_teardown(void)
{
    fx_cluster_stop(&cl);
}

/* A cluster member in functions mode: keys go as FCALL keys, so they route
 * by slot as before, and the sharded release wakes a waiter by SPUBLISH. */
START_TEST(test_cluster_functions)
{
    fx_server *n0 = fx_cluster_node(&cl, 0);
    static char code[65536];
    redlock_functions_code(code, sizeof code);
    const char *argv[3] = {"FUNCTION", "LOAD", code};
    const size_t lens[3] = {8, 4, strlen(code)};
    char out[256], url[256];
    ck_assert_int_eq(fx_cmdv(n0, out, sizeof out, 3, argv, lens), 0);
    ck_assert_str_eq(out, "redlock_v2");
    snprintf(url, sizeof url, "redis://locker:locker-secret@127.0.0.1:%d?cluster=1", n0->port);
    const char *u = url;
    redlock_client *c = client_mode(&u, 1, REDLOCK_SCRIPTS_FUNCTIONS);
    wait_and_wake(url, REDLOCK_SCRIPTS_FUNCTIONS);
    redlock *l = tu_lock(c, "{fn}:cl", NULL, 5000);
    redlock_info info;
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_inspect(l, &info), REDLOCK_OK);
    ck_assert(info.held && info.ours);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_ptr_null(strstr(raw_on(n0, "INFO commandstats"), "cmdstat_evalsha"));
    ck_assert_ptr_nonnull(strstr(raw_on(n0, "INFO commandstats"), "cmdstat_spublish"));

    /* an administrator's status covers every primary of the cluster (here
     * one), found from its slot map */
    redlock_functions_node node;
    size_t count = 0;
    char admin_url[128];
    snprintf(admin_url, sizeof admin_url, "redis://127.0.0.1:%d?cluster=1", n0->port);
    const char *au = admin_url;
    redlock_client *admin = tu_client_opts(&au, 1, NULL);
    ck_assert_msg(redlock_functions_status(admin, &node, 1, &count) == REDLOCK_OK, "%s",
                  redlock_client_errstr(admin));
    ck_assert_uint_eq(count, 1);
    ck_assert_int_eq(node.loaded, 1);
    redlock_client_free(admin);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

static Suite *functions_suite(void)
{
    Suite *s = suite_create("functions");
    TCase *t = tcase_create("functions");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_checked_fixture(t, flush, NULL);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_functions_mode);
    tcase_add_test(t, test_auto_mode);
    tcase_add_test(t, test_eval_mode);
    tcase_add_test(t, test_auto_mixed_quorum);
    tcase_add_test(t, test_missing_library);
    tcase_add_test(t, test_library_loads_itself);
    tcase_add_test(t, test_never_replaces);
    tcase_add_test(t, test_load_and_status_api);
    tcase_add_test(t, test_warm_cycle);
    tcase_add_test(t, test_cancel_releases_by_fcall);
    tcase_add_test(t, test_over_maxmemory);
    tcase_add_test(t, test_acl_line_in_docs);
    tcase_add_test(t, test_cli_functions);
    suite_add_tcase(s, t);
    TCase *tc = tcase_create("cluster");
    tcase_add_unchecked_fixture(tc, cluster_setup, cluster_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cluster_functions);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(functions_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
