/* test_safety.c - the two holes of issue 25, each shown by a test that
 * failed before the library closed it.
 *
 * (a) Fence counters survive data loss: after a restart without
 *     persistence (or a FLUSHALL), the next token is larger than every
 *     token issued before, on one node and on a quorum where a majority
 *     restarted.
 * (b) The restart guard: on a 3-node quorum, a node restarted empty inside
 *     a lease lets a competitor win a majority (the holder's lease is still
 *     running: two owners) unless the guard keeps the young node's yes from
 *     counting. redlock_options.restart_guard: -1 (the default) on for a
 *     quorum, 0 off, 1 on.
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IO_MS 300
#define TTL_MS 5000
#define ROUNDS 3 /* (b): restarts per setting */
#define GUARD_TTL_MS 1500 /* (b): the lease; nodes 0 and 2 are older than it */

static fx_server srv[3];

static void start_all(int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(fx_server_start(&srv[i], NULL), 0);
}

static void stop_all(void)
{
    for (int i = 0; i < 3; i++)
        fx_server_stop(&srv[i]);
}

/* A client over the first n servers with restart_guard = guard (-1: the
 * default; not through tu_client_opts, which turns the default off for the
 * other suites' fresh servers). */
static redlock_client *client(int n, int guard)
{
    redlock_options o;
    redlock_options_init(&o);
    o.connect_timeout_ms = IO_MS;
    o.io_timeout_ms = IO_MS;
    o.restart_guard = guard;
    const char *urls[3];
    for (int i = 0; i < n; i++)
        urls[i] = srv[i].url;
    redlock_client *c = NULL;
    ck_assert_msg(redlock_client_new(&c, urls, (size_t)n, &o) == REDLOCK_OK, "%s",
                  redlock_last_errstr());
    return c;
}

/* Acquire and release k times; the largest token. */
static uint64_t cycles(redlock *l, int k)
{
    uint64_t max = 0;
    for (int i = 0; i < k; i++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        if (redlock_fence(l) > max)
            max = redlock_fence(l);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    return max;
}

static void crash_restart(fx_server *s)
{
    fx_server_kill(s);
    ck_assert_int_eq(fx_server_restart(s), 0);
}

/* ---- (a) tokens after data loss ------------------------------------------------------ */

START_TEST(test_tokens_rise_after_restart_one_node)
{
    start_all(1);
    redlock_client *c = client(1, 0);
    redlock *l = tu_lock(c, "safety-a1", NULL, TTL_MS);
    uint64_t before = cycles(l, 5);
    crash_restart(&srv[0]);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    uint64_t after = redlock_fence(l);
    ck_assert_msg(after > before,
                  "one node restarted without persistence: token %llu after it, %llu before",
                  (unsigned long long)after, (unsigned long long)before);
    /* and once more: a counter seeded once must not fall back later */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    before = cycles(l, 3);
    crash_restart(&srv[0]);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_msg(redlock_fence(l) > before, "second restart: token %llu after it, %llu before",
                  (unsigned long long)redlock_fence(l), (unsigned long long)before);
    redlock_free(l);
    redlock_client_free(c);
    stop_all();
}
END_TEST

START_TEST(test_tokens_rise_after_flushall)
{
    start_all(1);
    redlock_client *c = client(1, 0);
    redlock *l = tu_lock(c, "safety-a2", NULL, TTL_MS);
    uint64_t before = cycles(l, 5);
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv[0], out, sizeof out, "FLUSHALL"), 0);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_msg(redlock_fence(l) > before, "after FLUSHALL: token %llu, before %llu",
                  (unsigned long long)redlock_fence(l), (unsigned long long)before);
    redlock_free(l);
    redlock_client_free(c);
    stop_all();
}
END_TEST

/* Nodes 1 and 2 restart empty; node 0, which remembers the counter, is
 * stopped while the next lock is taken, so the winning majority is the two
 * that forgot. */
START_TEST(test_tokens_rise_after_majority_restart)
{
    start_all(3);
    redlock_client *c = client(3, 0);
    redlock *l = tu_lock(c, "safety-a3", NULL, TTL_MS);
    uint64_t before = cycles(l, 5);
    crash_restart(&srv[1]);
    crash_restart(&srv[2]);
    fx_server_pause(&srv[0]);
    int rc = redlock_trylock(l);
    fx_server_resume(&srv[0]);
    ck_assert_int_eq(rc, REDLOCK_OK);
    ck_assert_msg(redlock_fence(l) > before,
                  "2 of 3 nodes restarted without persistence: token %llu after, %llu before",
                  (unsigned long long)redlock_fence(l), (unsigned long long)before);
    redlock_free(l);
    redlock_client_free(c);
    stop_all();
}
END_TEST

/* ---- (b) a node restarted inside a lease ---------------------------------------------- */

/* One round: A takes the lock on nodes 0 and 1 (node 2 holds another
 * owner's key), node 1 restarts empty inside A's lease, node 2's key goes
 * (its owner's TTL ran out), and B, with the guard as asked, tries. 1 if B
 * won while A's lease still ran: two owners. */
static int overlap_round(int round, int guard)
{
    char name[64], cmd[128], out[64];
    snprintf(name, sizeof name, "safety-b-%d-%d", guard, round);
    redlock_client *ca = client(3, 0), *cb = client(3, guard);
    redlock *a = tu_lock(ca, name, "owner-a", GUARD_TTL_MS);
    redlock *b = tu_lock(cb, name, "owner-b", GUARD_TTL_MS);
    snprintf(cmd, sizeof cmd, "SET %s someone-else PX %d", name, GUARD_TTL_MS);
    ck_assert_int_eq(fx_cmd(&srv[2], out, sizeof out, cmd), 0);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    crash_restart(&srv[1]);
    snprintf(cmd, sizeof cmd, "DEL %s", name);
    ck_assert_int_eq(fx_cmd(&srv[2], out, sizeof out, cmd), 0);
    int rc = redlock_trylock(b);
    int overlap = rc == REDLOCK_OK && redlock_validity_ms(a) > 0;
    if (rc != REDLOCK_OK)
        ck_assert_int_eq(rc, REDLOCK_NOT_ACQUIRED);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(ca);
    redlock_client_free(cb);
    return overlap;
}

static int overlaps(int guard)
{
    int n = 0;
    for (int i = 0; i < ROUNDS; i++)
        n += overlap_round(i, guard);
    return n;
}

/* Without the guard the hole is real: every round gives two owners. */
START_TEST(test_restart_in_lease_guard_off)
{
    start_all(3);
    int n = overlaps(0);
    ck_assert_msg(n == ROUNDS, "guard off: %d of %d rounds overlapped (the hole should show)", n,
                  ROUNDS);
    stop_all();
}
END_TEST

/* Seconds since s started, as the server says. */
static long uptime_s(fx_server *s)
{
    static char out[8192];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, "INFO server"), 0);
    const char *p = strstr(out, "uptime_in_seconds:");
    ck_assert_ptr_nonnull(p);
    return atol(p + 18);
}

START_TEST(test_restart_in_lease_guard_on)
{
    start_all(3);
    /* the nodes that did not restart must be older than the lease, or the
     * guard would refuse them too (and the test prove nothing) */
    for (int k = 0; k < 60 && (uptime_s(&srv[0]) < 3 || uptime_s(&srv[2]) < 3); k++)
        fx_sleep_ms(100);
    int on = overlaps(1), dflt = overlaps(-1);
    ck_assert_msg(on == 0 && dflt == 0,
                  "guard on: %d of %d rounds overlapped; default (-1): %d of %d", on, ROUNDS, dflt,
                  ROUNDS);
    stop_all();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safety");
    TCase *tc = tcase_create("issue25");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, NULL, stop_all);
    tcase_add_test(tc, test_tokens_rise_after_restart_one_node);
    tcase_add_test(tc, test_tokens_rise_after_flushall);
    tcase_add_test(tc, test_tokens_rise_after_majority_restart);
    tcase_add_test(tc, test_restart_in_lease_guard_off);
    tcase_add_test(tc, test_restart_in_lease_guard_on);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
