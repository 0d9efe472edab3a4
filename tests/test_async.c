/* test_async.c - the non-blocking API: many operations of one client in
 * flight at once, driven by one thread's poll() loop; cancel, free,
 * keepalive; blocking and non-blocking calls mixed. Real redis-server
 * processes on loopback.
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "testutil.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CLIENTS 4

/* ---- the loop ------------------------------------------------------------------------------ */

/* One turn of an event loop over the given clients: ask each for its
 * sockets and timeout, poll at most max_ms, process. */
static void turn(redlock_client *const *cs, int nc, int max_ms)
{
    static struct pollfd fds[256];
    int k = 0, owner[256], timeout = max_ms;
    for (int i = 0; i < nc; i++) {
        int n = redlock_client_pollfds(cs[i], fds + k, 256 - k);
        ck_assert_int_le(k + n, 256);
        for (int j = 0; j < n; j++)
            owner[k + j] = i;
        k += n;
        int t = redlock_client_timeout_ms(cs[i]);
        if (t >= 0 && t < timeout)
            timeout = t;
    }
    ck_assert_int_ge(poll(fds, (nfds_t)k, timeout), 0);
    for (int i = 0; i < nc; i++) {
        /* each client gets only its own entries: nothing requires that, but
         * it shows the set a client asked for is the set it acts on */
        int first = -1, n = 0;
        for (int j = 0; j < k; j++)
            if (owner[j] == i) {
                if (first < 0)
                    first = j;
                n++;
            }
        redlock_client_process(cs[i], first < 0 ? NULL : fds + first, n);
    }
}

static void turn1(redlock_client *c, int max_ms)
{
    turn(&c, 1, max_ms);
}

/* Run the loop until nothing is pending on c (no request in flight, no
 * timer), or ms pass. */
static void drain(redlock_client *c, int ms)
{
    double end = fx_now_ms() + ms;
    while (fx_now_ms() < end && redlock_client_timeout_ms(c) >= 0)
        turn1(c, 50);
}

/* Run until l's operation is done (it must show up in the done queue). */
static int await(redlock_client *c, redlock *l, int ms)
{
    double end = fx_now_ms() + ms;
    while (fx_now_ms() < end) {
        turn1(c, 50);
        for (redlock *d; (d = redlock_client_done(c)) != NULL;)
            if (d == l)
                return redlock_result(l);
    }
    ck_abort_msg("operation did not finish in %d ms", ms);
    return -1;
}

static fx_server srv;

static void setup(void)
{
    ck_assert_int_eq(fx_server_start(&srv, NULL), 0);
}

static void teardown(void)
{
    fx_server_stop(&srv);
}

static void flush(void)
{
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "FLUSHALL"), 0);
}

static long dbsize(fx_server *s)
{
    char out[64];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, "DBSIZE"), 0);
    return atol(out);
}

/* ---- argument checks ---------------------------------------------------------------------- */

START_TEST(test_api_arguments)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = tu_lock(c, "args", NULL, 5000);
    ck_assert_int_eq(redlock_result(l), REDLOCK_ERR_ARG); /* nothing ran yet */
    ck_assert_int_eq(redlock_start_trylock(NULL), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_cancel(l), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "no operation"));
    ck_assert_int_eq(redlock_keepalive(l, 2), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_client_timeout_ms(c), -1);
    ck_assert_int_eq(redlock_client_pollfds(c, NULL, 0), 0);
    ck_assert_ptr_null(redlock_client_done(c));

    ck_assert_int_eq(redlock_start_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_result(l), REDLOCK_IN_PROGRESS);
    /* no I/O yet: the engine wants to run at once */
    ck_assert_int_eq(redlock_client_pollfds(c, NULL, 0), 0);
    ck_assert_int_eq(redlock_client_timeout_ms(c), 0);
    /* one operation at a time per lock, blocking or not */
    ck_assert_int_eq(redlock_start_unlock(l), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "already in flight"));
    ck_assert_int_eq(await(c, l, 2000), REDLOCK_OK);
    ck_assert_ptr_null(redlock_client_done(c)); /* reported once */
    ck_assert_int_eq(redlock_result(l), REDLOCK_OK);
    ck_assert(tu_seeded(redlock_fence(l)));

    int tag = 7;
    redlock_set_userdata(l, &tag);
    ck_assert_ptr_eq(redlock_userdata(l), &tag);
    ck_assert_int_eq(redlock_start_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(await(c, l, 2000), REDLOCK_OK);
    ck_assert_ptr_eq(redlock_userdata(l), &tag);
    ck_assert_str_eq(tu_get(&srv, "args"), "");
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- one thread, a thousand leases ------------------------------------------------------ */

#define MANY 1000

START_TEST(test_thousand_leases)
{
    flush();
    redlock_client *c = tu_client(srv.url, 2000);
    static redlock *l[MANY];
    char name[32];
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof name, "lease:%d", i);
        l[i] = tu_lock(c, name, NULL, 1500);
        redlock_set_userdata(l[i], &l[i]);
        ck_assert_int_eq(redlock_start_trylock(l[i]), REDLOCK_OK);
    }
    int done = 0;
    double end = fx_now_ms() + 10000;
    while (done < MANY && fx_now_ms() < end) {
        turn1(c, 100);
        for (redlock *d; (d = redlock_client_done(c)) != NULL; done++) {
            ck_assert_int_eq(redlock_result(d), REDLOCK_OK);
            ck_assert_ptr_eq(redlock_userdata(d), &l[(redlock **)redlock_userdata(d) - l]);
            ck_assert_int_eq(redlock_keepalive(d, 1), REDLOCK_OK);
        }
    }
    ck_assert_int_eq(done, MANY);
    ck_assert_int_eq(dbsize(&srv), 2 * MANY); /* lock and fence key each */
    /* three TTLs with keepalive: nothing is lost, every lease stays fresh */
    end = fx_now_ms() + 4500;
    while (fx_now_ms() < end) {
        turn1(c, 100);
        ck_assert_ptr_null(redlock_client_done(c));
    }
    char out[64];
    for (int i = 0; i < MANY; i += 97) {
        ck_assert_int_gt(redlock_validity_ms(l[i]), 0);
        snprintf(name, sizeof name, "PTTL lease:%d", i);
        ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, name), 0);
        ck_assert_int_gt(atol(out), 500); /* refreshed within the last ttl/3 or so */
    }
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(redlock_start_unlock(l[i]), REDLOCK_OK);
    done = 0;
    end = fx_now_ms() + 10000;
    while (done < MANY && fx_now_ms() < end) {
        turn1(c, 100);
        for (redlock *d; (d = redlock_client_done(c)) != NULL; done++)
            ck_assert_int_eq(redlock_result(d), REDLOCK_OK);
    }
    ck_assert_int_eq(done, MANY);
    ck_assert_int_eq(dbsize(&srv), MANY); /* only the fence counters stay */
    drain(c, 1000);
    ck_assert_int_eq(redlock_client_timeout_ms(c), -1); /* keepalive stopped with the lease */
    for (int i = 0; i < MANY; i++)
        redlock_free(l[i]);
    redlock_client_free(c);
}
END_TEST

/* 1000 waiters on 10 names, from one client: each gets the lock once, in
 * turn, never two at a time on a name. */
START_TEST(test_thousand_waiters)
{
    flush();
    char out[64];
    /* an existing counter only increments: from 1000, it ends 100 higher */
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "SET {turn:3}:fence 1000"), 0);
    redlock_client *c = tu_client(srv.url, 2000);
    static redlock *l[MANY];
    int got[10] = {0}, holder[10];
    char name[32];
    for (int k = 0; k < 10; k++)
        holder[k] = -1;
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof name, "turn:%d", i % 10);
        l[i] = tu_lock(c, name, NULL, 5000);
        redlock_set_userdata(l[i], (void *)(intptr_t)i);
        ck_assert_int_eq(redlock_start_lock(l[i], 60000), REDLOCK_OK);
    }
    int acquired = 0, released = 0;
    double t0 = fx_now_ms(), end = t0 + 60000;
    while (released < MANY && fx_now_ms() < end) {
        turn1(c, 100);
        for (redlock *d; (d = redlock_client_done(c)) != NULL;) {
            int i = (int)(intptr_t)redlock_userdata(d), k = i % 10;
            ck_assert_int_eq(redlock_result(d), REDLOCK_OK);
            if (holder[k] == i) { /* its unlock finished */
                holder[k] = -1;
                released++;
                continue;
            }
            ck_assert_msg(holder[k] < 0, "name %d: %d acquired while %d holds it", k, i, holder[k]);
            holder[k] = i;
            got[k]++;
            acquired++;
            ck_assert_int_eq(redlock_start_unlock(d), REDLOCK_OK);
        }
    }
    double took = fx_now_ms() - t0;
    ck_assert_int_eq(acquired, MANY);
    ck_assert_int_eq(released, MANY);
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(got[k], MANY / 10);
    /* every lock of a name got its turn; the fence counter says how many */
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "GET {turn:3}:fence"), 0);
    ck_assert_str_eq(out, "1100");
    printf("async: 1000 waiters on 10 names served in %.0f ms\n", took);
    drain(c, 2000);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "PUBSUB NUMSUB redlock:turn:3"), 0);
    ck_assert_str_eq(out, "redlock:turn:3\n1"); /* one listener for all 100 waiters */
    for (int i = 0; i < MANY; i++)
        redlock_free(l[i]);
    redlock_client_free(c);
}
END_TEST

/* ---- deadlines --------------------------------------------------------------------------- */

/* A stalled node makes only the operations that need it time out, each by
 * its own deadline; another client in the same loop is not held up. */
START_TEST(test_stalled_node_own_deadlines)
{
    fx_server a, b;
    ck_assert_int_eq(fx_server_start(&a, NULL), 0);
    ck_assert_int_eq(fx_server_start(&b, NULL), 0);
    redlock_client *cs[2] = {tu_client(a.url, 400), tu_client(b.url, 400)};
    redlock *l1 = tu_lock(cs[0], "s1", NULL, 10000), *l2 = tu_lock(cs[0], "s2", NULL, 10000);
    redlock *l3 = tu_lock(cs[1], "s3", NULL, 10000);
    ck_assert_int_eq(redlock_trylock(l1), REDLOCK_OK); /* connections up */
    ck_assert_int_eq(redlock_unlock(l1), REDLOCK_OK);
    fx_server_pause(&a);
    double t0 = fx_now_ms(), end1 = 0, end2 = 0, end3 = 0;
    ck_assert_int_eq(redlock_start_trylock(l1), REDLOCK_OK);
    while (fx_now_ms() - t0 < 200)
        turn(cs, 2, 20);
    ck_assert_int_eq(redlock_start_trylock(l2), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_trylock(l3), REDLOCK_OK);
    while ((!end1 || !end2 || !end3) && fx_now_ms() - t0 < 3000) {
        turn(cs, 2, 50);
        for (int i = 0; i < 2; i++)
            for (redlock *d; (d = redlock_client_done(cs[i])) != NULL;) {
                if (d == l1)
                    end1 = fx_now_ms() - t0;
                else if (d == l2)
                    end2 = fx_now_ms() - t0;
                else
                    end3 = fx_now_ms() - t0;
            }
    }
    ck_assert_int_eq(redlock_result(l1), REDLOCK_ERR_TIMEOUT);
    ck_assert_int_eq(redlock_result(l2), REDLOCK_ERR_TIMEOUT);
    ck_assert_int_eq(redlock_result(l3), REDLOCK_OK);
    ck_assert_msg(end3 < 200 + 300, "the healthy node took until %.0f ms", end3);
    ck_assert_msg(end1 >= 390 && end1 < 1200, "first after %.0f ms", end1);
    ck_assert_msg(end2 >= 590 && end2 < 1500, "second after %.0f ms", end2);
    ck_assert_msg(end2 - end1 >= 150, "the second timed out with the first (%.0f, %.0f)", end1,
                  end2);
    fx_server_resume(&a);
    ck_assert_int_eq(redlock_trylock(l1), REDLOCK_OK); /* and it recovers */
    redlock_free(l1);
    redlock_free(l2);
    redlock_free(l3);
    redlock_client_free(cs[0]);
    redlock_client_free(cs[1]);
    fx_server_stop(&a);
    fx_server_stop(&b);
}
END_TEST

/* A pipelined connection killed with a batch in flight fails exactly those
 * operations; the next ones open a new connection. */
START_TEST(test_killed_mid_batch)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *c = tu_client(s.url, 3000);
    redlock *l[50];
    char name[16];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "k%d", i);
        l[i] = tu_lock(c, name, NULL, 10000);
        ck_assert_int_eq(redlock_trylock(l[i]), REDLOCK_OK);
    }
    fx_server_pause(&s);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(redlock_start_refresh(l[i]), REDLOCK_OK);
    for (int k = 0; k < 5; k++)
        turn1(c, 20); /* written; the server cannot answer */
    fx_server_kill(&s);
    int failed = 0;
    double end = fx_now_ms() + 3000;
    while (failed < 50 && fx_now_ms() < end) {
        turn1(c, 50);
        for (redlock *d; (d = redlock_client_done(c)) != NULL; failed++)
            ck_assert_int_eq(redlock_result(d), REDLOCK_ERR_IO);
    }
    ck_assert_int_eq(failed, 50);
    ck_assert_int_eq(fx_server_restart(&s), 0);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(redlock_start_trylock(l[i]), REDLOCK_OK);
    int ok = 0;
    end = fx_now_ms() + 3000;
    while (ok < 50 && fx_now_ms() < end) {
        turn1(c, 50);
        for (redlock *d; (d = redlock_client_done(c)) != NULL; ok++)
            ck_assert_int_eq(redlock_result(d), REDLOCK_OK);
    }
    ck_assert_int_eq(ok, 50);
    for (int i = 0; i < 50; i++)
        redlock_free(l[i]);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

/* ---- cancel and free ------------------------------------------------------------------------ */

START_TEST(test_cancel_wait)
{
    flush();
    redlock_client *c = tu_client(srv.url, 1000);
    redlock_client *other = tu_client(srv.url, 1000);
    redlock *h = tu_lock(other, "cw", "holder", 10000), *w = tu_lock(c, "cw", "waiter", 10000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 5000), REDLOCK_OK);
    double end = fx_now_ms() + 300;
    while (fx_now_ms() < end)
        turn1(c, 20);
    char out[128];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "PUBSUB NUMSUB redlock:cw"), 0);
    ck_assert_str_eq(out, "redlock:cw\n1"); /* it listens */
    ck_assert_int_eq(redlock_result(w), REDLOCK_IN_PROGRESS);
    ck_assert_int_eq(redlock_cancel(w), REDLOCK_OK);
    ck_assert_int_eq(redlock_result(w), REDLOCK_CANCELLED);
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    drain(c, 1000);
    ck_assert_ptr_null(redlock_client_done(c)); /* a cancelled operation is not reported */
    ck_assert_str_eq(tu_get(&srv, "cw"), ""); /* the waiter never took it */
    /* the handle is usable again */
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(h);
    redlock_free(w);
    redlock_client_free(c);
    redlock_client_free(other);
}
END_TEST

/* A channel stays subscribed after its last waiter leaves (the next wait
 * on the name needs no SUBSCRIBE), up to 32 of them: beyond that the
 * oldest idle channel is left. */
START_TEST(test_idle_channels_bounded)
{
    flush();
    redlock_client *c = tu_client(srv.url, 1000);
    redlock_client *other = tu_client(srv.url, 1000);
    redlock *h[40], *w[40];
    char name[32], out[128];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "idle%d", i);
        h[i] = tu_lock(other, name, NULL, 10000);
        ck_assert_int_eq(redlock_trylock(h[i]), REDLOCK_OK);
        w[i] = tu_lock(c, name, NULL, 10000);
        ck_assert_int_eq(redlock_start_lock(w[i], 10000), REDLOCK_OK);
    }
    double end = fx_now_ms() + 500;
    while (fx_now_ms() < end)
        turn1(c, 20);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "PUBSUB NUMSUB redlock:idle0 redlock:idle39"), 0);
    ck_assert_str_eq(out, "redlock:idle0\n1\nredlock:idle39\n1"); /* all 40 subscribed */
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(redlock_cancel(w[i]), REDLOCK_OK); /* in order: idle0 is oldest */
    drain(c, 1000);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out,
                            "PUBSUB NUMSUB redlock:idle0 redlock:idle7 redlock:idle8 redlock:idle39"),
                     0);
    ck_assert_str_eq(out, "redlock:idle0\n0\nredlock:idle7\n0\nredlock:idle8\n1\nredlock:idle39\n1");
    for (int i = 0; i < 40; i++) {
        redlock_free(h[i]);
        redlock_free(w[i]);
    }
    redlock_client_free(c);
    redlock_client_free(other);
}
END_TEST

/* Cancel an acquire on a quorum while one node stalls: the two answers
 * that took it and the write still in flight are all released. */
START_TEST(test_cancel_quorum_acquire)
{
    fx_server q[3];
    const char *urls[3];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fx_server_start(&q[i], NULL), 0);
        urls[i] = q[i].url;
    }
    redlock_client *c = tu_client_urls(urls, 3, 2000);
    redlock *l = tu_lock(c, "cq", "me", 30000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* connections up, scripts loaded */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);

    /* cancelled before anything was written: nothing goes out */
    ck_assert_int_eq(redlock_start_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_cancel(l), REDLOCK_OK);
    drain(c, 1000);
    for (int i = 0; i < 3; i++)
        ck_assert_str_eq(tu_get(&q[i], "cq"), "");

    /* cancelled with the acquire landed on two nodes and written to a
     * stalled third */
    fx_server_pause(&q[2]);
    ck_assert_int_eq(redlock_start_trylock(l), REDLOCK_OK);
    double end = fx_now_ms() + 300;
    while (fx_now_ms() < end)
        turn1(c, 20);
    ck_assert_str_eq(tu_get(&q[0], "cq"), "me");
    ck_assert_str_eq(tu_get(&q[1], "cq"), "me");
    ck_assert_int_eq(redlock_result(l), REDLOCK_IN_PROGRESS); /* waiting for the third */
    ck_assert_int_eq(redlock_cancel(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_validity_ms(l), 0);
    drain(c, 500);
    ck_assert_str_eq(tu_get(&q[0], "cq"), "");
    ck_assert_str_eq(tu_get(&q[1], "cq"), "");
    fx_server_resume(&q[2]); /* its late acquire runs, then our release */
    end = fx_now_ms() + 3000;
    while (fx_now_ms() < end && redlock_client_timeout_ms(c) >= 0)
        turn1(c, 20);
    ck_assert_str_eq(tu_get(&q[2], "cq"), "");
    ck_assert_ptr_null(redlock_client_done(c));
    redlock_free(l);
    redlock_client_free(c);
    for (int i = 0; i < 3; i++)
        fx_server_stop(&q[i]);
}
END_TEST

/* Freeing locks, or the client, with operations in flight: no crash, no
 * leak (the sanitizer and valgrind runs check), nothing left held by a
 * freed lock once the loop ran. */
START_TEST(test_free_in_flight)
{
    flush();
    redlock_client *c = tu_client(srv.url, 1000);
    redlock_client *other = tu_client(srv.url, 1000);
    redlock *h = tu_lock(other, "ff", "holder", 10000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    redlock *w[8], *a[8];
    char name[16];
    for (int i = 0; i < 8; i++) {
        w[i] = tu_lock(c, "ff", NULL, 10000); /* waiters behind the holder */
        ck_assert_int_eq(redlock_start_lock(w[i], 5000), REDLOCK_OK);
        snprintf(name, sizeof name, "ff%d", i);
        a[i] = tu_lock(c, name, NULL, 10000); /* acquires that will land */
        ck_assert_int_eq(redlock_start_trylock(a[i]), REDLOCK_OK);
    }
    turn1(c, 0); /* written, not answered yet */
    for (int i = 0; i < 8; i++) {
        redlock_free(w[i]);
        redlock_free(a[i]);
    }
    drain(c, 1000);
    ck_assert_ptr_null(redlock_client_done(c));
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "ff%d", i);
        ck_assert_str_eq(tu_get(&srv, name), ""); /* released again */
    }
    ck_assert_str_eq(tu_get(&srv, "ff"), "holder");

    /* the client freed first: its locks only accept redlock_free after */
    redlock *x = tu_lock(c, "ff", NULL, 10000), *y = tu_lock(c, "ffy", NULL, 10000);
    ck_assert_int_eq(redlock_start_lock(x, 5000), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_trylock(y), REDLOCK_OK);
    turn1(c, 0);
    redlock_client_free(c);
    ck_assert_int_eq(redlock_result(x), REDLOCK_CANCELLED);
    ck_assert_int_eq(redlock_start_trylock(x), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "client was freed"));
    ck_assert_int_eq(redlock_unlock(y), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_validity_ms(y), 0);
    redlock_free(x);
    redlock_free(y);
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    redlock_free(h);
    redlock_client_free(other);
}
END_TEST

/* ---- keepalive ------------------------------------------------------------------------------ */

START_TEST(test_keepalive_holds_and_reports_loss)
{
    flush();
    redlock_client *c = tu_client(srv.url, 200);
    redlock *l = tu_lock(c, "ka", NULL, 600);
    ck_assert_int_eq(redlock_keepalive(l, 1), REDLOCK_OK); /* before the acquire: arms on it */
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    double end = fx_now_ms() + 5 * 600;
    while (fx_now_ms() < end) {
        turn1(c, 50);
        ck_assert_ptr_null(redlock_client_done(c));
        ck_assert_int_gt(redlock_validity_ms(l), 0);
    }
    ck_assert_str_eq(tu_get(&srv, "ka"), redlock_value(l)); /* 5 TTLs later, still ours */
    uint64_t fence = redlock_fence(l);

    /* the key is deleted behind our back: the next refresh says lost */
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "DEL ka"), 0);
    double t0 = fx_now_ms();
    redlock *d = NULL;
    while (!d && fx_now_ms() - t0 < 3000) {
        turn1(c, 50);
        d = redlock_client_done(c);
    }
    double took = fx_now_ms() - t0;
    ck_assert_ptr_eq(d, l);
    ck_assert_int_eq(redlock_result(l), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_validity_ms(l), 0);
    ck_assert_msg(took < 600 + 200, "loss reported after %.0f ms (TTL 600)", took);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "lost"));
    ck_assert_uint_eq(redlock_fence(l), fence);
    drain(c, 1000);
    ck_assert_ptr_null(redlock_client_done(c)); /* reported once */

    /* the server stops answering: the validity runs out by our clock */
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    fx_server_pause(&srv);
    t0 = fx_now_ms();
    d = NULL;
    while (!d && fx_now_ms() - t0 < 3000) {
        turn1(c, 50);
        d = redlock_client_done(c);
    }
    took = fx_now_ms() - t0;
    fx_server_resume(&srv);
    ck_assert_ptr_eq(d, l);
    ck_assert_int_eq(redlock_result(l), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_validity_ms(l), 0);
    ck_assert_msg(took < 600 + 200, "loss reported after %.0f ms (TTL 600)", took);

    /* off: a held lock is no longer refreshed */
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_keepalive(l, 0), REDLOCK_OK);
    ck_assert_int_eq(redlock_client_timeout_ms(c), -1);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- mixing blocking and non-blocking calls ---------------------------------------------------- */

START_TEST(test_mixed_blocking)
{
    flush();
    redlock_client *c = tu_client(srv.url, 1000);
    redlock *a = tu_lock(c, "mix-a", NULL, 10000), *b = tu_lock(c, "mix-b", NULL, 10000);
    redlock *w = tu_lock(c, "mix-b", NULL, 10000);
    ck_assert_int_eq(redlock_start_trylock(a), REDLOCK_OK);
    /* a blocking call runs the engine: a's operation moves on meanwhile */
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 5000), REDLOCK_OK); /* waits for b */
    ck_assert_int_eq(redlock_refresh(b), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK); /* wakes w, locally */
    ck_assert_int_eq(redlock_result(a), REDLOCK_OK);
    ck_assert_ptr_eq(redlock_client_done(c), a); /* completed during the blocking calls */
    ck_assert_ptr_null(redlock_client_done(c)); /* blocking calls are never reported */
    ck_assert_int_eq(await(c, w, 2000), REDLOCK_OK);
    ck_assert_str_eq(tu_get(&srv, "mix-b"), redlock_value(w));
    ck_assert_uint_eq(redlock_fence(w), redlock_fence(b) + 1);
    redlock_free(a);
    redlock_free(b);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

/* ---- allocation ------------------------------------------------------------------------------------- */

START_TEST(test_no_alloc_in_flight)
{
    flush();
    tu_alloc_start(0);
    redlock_client *c = tu_client(srv.url, 2000);
    redlock *l[256];
    char name[16];
    for (int i = 0; i < 256; i++) {
        snprintf(name, sizeof name, "na%d", i);
        l[i] = tu_lock(c, name, NULL, 10000);
    }
    long before = 0;
    int acquiring[256];
    for (int i = 0; i < 256; i++)
        redlock_set_userdata(l[i], &acquiring[i]);
    for (int round = 0; round < 6; round++) {
        if (round == 2)
            before = tu_alloc.calls; /* grown to the working size */
        for (int i = 0; i < 256; i++) {
            acquiring[i] = 1;
            ck_assert_int_eq(redlock_start_trylock(l[i]), REDLOCK_OK);
        }
        for (int released = 0; released < 256;) {
            turn1(c, 100);
            for (redlock *d; (d = redlock_client_done(c)) != NULL;) {
                int *acq = redlock_userdata(d);
                ck_assert_int_eq(redlock_result(d), REDLOCK_OK);
                if (*acq) {
                    *acq = 0;
                    ck_assert_int_eq(redlock_start_unlock(d), REDLOCK_OK);
                } else {
                    released++;
                }
            }
        }
    }
    ck_assert_int_eq(tu_alloc.calls - before, 0);
    for (int i = 0; i < 256; i++)
        redlock_free(l[i]);
    redlock_client_free(c);
    tu_alloc_stop();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("async");
    TCase *t = tcase_create("engine");
    tcase_set_timeout(t, 120);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, test_api_arguments);
    tcase_add_test(t, test_thousand_leases);
    tcase_add_test(t, test_thousand_waiters);
    tcase_add_test(t, test_stalled_node_own_deadlines);
    tcase_add_test(t, test_killed_mid_batch);
    tcase_add_test(t, test_cancel_wait);
    tcase_add_test(t, test_idle_channels_bounded);
    tcase_add_test(t, test_cancel_quorum_acquire);
    tcase_add_test(t, test_free_in_flight);
    tcase_add_test(t, test_keepalive_holds_and_reports_loss);
    tcase_add_test(t, test_mixed_blocking);
    tcase_add_test(t, test_no_alloc_in_flight);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
