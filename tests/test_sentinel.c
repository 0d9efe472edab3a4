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
    /* nothing ever ran on the replica (replica-read-only is off there) */
    ck_assert_int_eq(script_calls(r), 0);
    redlock_free(l);
    redlock_free(other);
    redlock_client_free(c);
    redlock_client_free(c2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sentinel");
    TCase *t = tcase_create("one group");
    tcase_set_timeout(t, 120);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, test_lock_release);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
