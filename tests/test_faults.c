/* test_faults.c - a real redis-server that dies, stalls, restarts, pauses,
 * sleeps or is full, and holders that stall past their TTL. */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IO_MS 300

START_TEST(test_kill9_while_holding)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *ca = tu_client(s.url, IO_MS), *cb = tu_client(s.url, IO_MS);
    redlock *a = tu_lock(ca, "k9", "owner-a", 5000), *b = tu_lock(cb, "k9", "owner-b", 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    fx_server_kill(&s);
    double t0 = fx_now_ms();
    int rc = redlock_refresh(a);
    ck_assert_msg(rc == REDLOCK_ERR_IO || rc == REDLOCK_ERR_TIMEOUT, "refresh: %d", rc);
    ck_assert_double_lt(fx_now_ms() - t0, 3 * IO_MS);
    ck_assert_int_gt(redlock_validity_ms(a), 0); /* still within the lease it had */
    ck_assert_int_eq(fx_server_restart(&s), 0);
    /* the node came back empty: b takes the lock; a's refresh and unlock
     * must not touch b's lock */
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_NOT_HELD);
    ck_assert_str_eq(tu_get(&s, "k9"), "owner-b");
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(ca);
    redlock_client_free(cb);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_holder_stalled_past_ttl)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* the old holder: acquire, get stopped, then try refresh and unlock */
        redlock_client *c = tu_client(s.url, IO_MS);
        redlock *l = tu_lock(c, "stall", "old-holder", 300);
        char r[3] = {(char)redlock_trylock(l), 0, 0};
        if (write(p[1], r, 1) != 1)
            _exit(2);
        raise(SIGSTOP);
        r[1] = (char)redlock_refresh(l);
        r[2] = (char)redlock_unlock(l);
        if (write(p[1], r + 1, 2) != 2)
            _exit(2);
        _exit(0);
    }
    close(p[1]);
    char r[3];
    ck_assert_int_eq(read(p[0], r, 1), 1);
    ck_assert_int_eq(r[0], REDLOCK_OK);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, WUNTRACED), pid);
    ck_assert(WIFSTOPPED(st));
    usleep(600 * 1000); /* past the 300 ms TTL */
    redlock_client *c = tu_client(s.url, IO_MS);
    redlock *nw = tu_lock(c, "stall", "new-holder", 10000);
    ck_assert_int_eq(redlock_trylock(nw), REDLOCK_OK);
    kill(pid, SIGCONT);
    ck_assert_int_eq(read(p[0], r + 1, 2), 2);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_int_eq(r[1], REDLOCK_NOT_HELD);
    ck_assert_int_eq(r[2], REDLOCK_NOT_HELD);
    ck_assert_str_eq(tu_get(&s, "stall"), "new-holder");
    close(p[0]);
    redlock_free(nw);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_restart_between_calls)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *c = tu_client(s.url, IO_MS);
    redlock *a = tu_lock(c, "rs", NULL, 5000);
    uint64_t last = 0;
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 20; k++) { /* a run of tokens, then the data is lost */
            ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
            ck_assert_uint_gt(redlock_fence(a), last);
            last = redlock_fence(a);
            ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
        }
        ck_assert_int_eq(fx_server_restart(&s), 0);
    }
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK); /* reconnects, loads scripts */
    /* an empty node: its counter starts again from the server's clock, above
     * every token it gave before (it used to start again at 1) */
    ck_assert_uint_gt(redlock_fence(a), last);
    ck_assert(tu_seeded(redlock_fence(a)));
    redlock_free(a);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

/* Send a command from a child, so a blocking one (DEBUG SLEEP) does not
 * block the test. */
static pid_t cmd_async(fx_server *s, const char *cmd)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char out[128];
        _exit(fx_cmd(s, out, sizeof out, cmd) == 0 ? 0 : 1);
    }
    return pid;
}

START_TEST(test_client_pause)
{
    fx_server s;
    char out[64];
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *c = tu_client(s.url, IO_MS);
    redlock *a = tu_lock(c, "pause", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CLIENT PAUSE 1000"), 0);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_ERR_TIMEOUT);
    double took = fx_now_ms() - t0;
    ck_assert_msg(took >= IO_MS - 20 && took < 3 * IO_MS, "took %.1f ms", took);
    usleep(1000 * 1000);
    /* a waiter rides the pause out: I/O errors are retried while it waits */
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CLIENT PAUSE 500"), 0);
    ck_assert_int_eq(redlock_lock(a, 3000), REDLOCK_OK);
    redlock_free(a);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

static volatile sig_atomic_t ticks;

static void on_tick(int sig)
{
    (void)sig;
    ticks++;
}

/* A blocking call waits for its reply in recv() (one system call, bounded
 * by SO_RCVTIMEO). Signals every 2 ms, with and without SA_RESTART, must
 * not stretch the wait past the call's deadline: a recv() that a signal
 * interrupts is not simply started again with a fresh timeout. */
START_TEST(test_signals_during_wait)
{
    fx_server s;
    char out[64];
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *c = tu_client(s.url, IO_MS);
    redlock *a = tu_lock(c, "sig", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    for (int restart = 0; restart < 2; restart++) {
        struct sigaction sa, old;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_tick;
        sa.sa_flags = restart ? SA_RESTART : 0;
        sigemptyset(&sa.sa_mask);
        ck_assert_int_eq(sigaction(SIGALRM, &sa, &old), 0);
        struct itimerval it = {{0, 2000}, {0, 2000}}, off = {{0, 0}, {0, 0}};
        ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CLIENT PAUSE 1500"), 0);
        ticks = 0;
        ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
        double t0 = fx_now_ms();
        int rc = redlock_trylock(a);
        double took = fx_now_ms() - t0;
        ck_assert_int_eq(setitimer(ITIMER_REAL, &off, NULL), 0);
        ck_assert_int_eq(sigaction(SIGALRM, &old, NULL), 0);
        ck_assert_int_eq(rc, REDLOCK_ERR_TIMEOUT);
        ck_assert_msg(took >= IO_MS - 20 && took < 3 * IO_MS, "SA_RESTART %d: took %.1f ms", restart,
                      took);
        ck_assert_int_gt(ticks, 10);
        /* the pause ends: the late reply is dropped, what the acquire took
         * is released, and the client goes on */
        fx_sleep_ms(1600);
        ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    }
    redlock_free(a);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_debug_sleep)
{
    fx_server s;
    fx_opts o;
    memset(&o, 0, sizeof o);
    o.debug = 1;
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    redlock_client *c = tu_client(s.url, IO_MS);
    redlock *a = tu_lock(c, "sleep", NULL, 60000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    /* loads the refresh script, so the refresh that times out below runs
     * by EVALSHA when the server wakes (not a NOSCRIPT error) */
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    pid_t pid = cmd_async(&s, "DEBUG SLEEP 1");
    usleep(100 * 1000);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_ERR_TIMEOUT);
    double took = fx_now_ms() - t0;
    ck_assert_msg(took >= IO_MS - 20 && took < 3 * IO_MS, "took %.1f ms", took);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    /* The refresh that timed out still runs when the server wakes, and its
     * reply, :1 ("extended"), comes late. Wait until it ran (the TTL is back
     * near 60 s; without it the TTL would be under 58.9 s by now), then give
     * the lock to another owner: the answer to the next refresh is "held by
     * another owner", and a client that read the late :1 instead would
     * report OK. */
    char out[64];
    long pttl = 0;
    for (double until = fx_now_ms() + 2000; fx_now_ms() < until; fx_sleep_ms(5)) {
        ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "PTTL sleep"), 0);
        if ((pttl = atol(out)) > 59000)
            break;
    }
    ck_assert_msg(pttl > 59000, "the timed-out refresh never ran (PTTL %ld)", pttl);
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "SET sleep intruder"), 0);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_NOT_HELD);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "another owner"));
    ck_assert_str_eq(tu_get(&s, "sleep"), "intruder");
    /* the client goes on: once the lock is free it takes and releases it */
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "DEL sleep"), 0);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_free(a);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_maxclients)
{
    fx_server s;
    char out[128];
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *c1 = tu_client(s.url, IO_MS), *c2 = tu_client(s.url, IO_MS);
    redlock *a = tu_lock(c1, "full", NULL, 5000), *b = tu_lock(c2, "full2", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CONFIG SET maxclients 1"), 0);
    double t0 = fx_now_ms();
    int rc = redlock_trylock(b);
    ck_assert_msg(rc == REDLOCK_ERR_SERVER || rc == REDLOCK_ERR_IO, "rc %d", rc);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c2), "max"));
    ck_assert_double_lt(fx_now_ms() - t0, 3 * IO_MS);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK); /* the connected client goes on */
    redlock_free(a);
    redlock_client_free(c1); /* frees the one slot, for the fixture's connection */
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CONFIG SET maxclients 100"), 0);
    ck_assert_str_eq(out, "OK");
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK); /* reconnects */
    redlock_free(b);
    redlock_client_free(c2);
    fx_server_stop(&s);
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *t = tcase_create("real server faults");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_kill9_while_holding);
    tcase_add_test(t, test_holder_stalled_past_ttl);
    tcase_add_test(t, test_restart_between_calls);
    tcase_add_test(t, test_client_pause);
    tcase_add_test(t, test_signals_during_wait);
    tcase_add_test(t, test_debug_sleep);
    tcase_add_test(t, test_maxclients);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(faults_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
