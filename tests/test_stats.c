/* test_stats.c - observability: redlock_client_stats against what the test
 * did (acquisitions, contention, waits, releases, refreshes, cancels, lost
 * leases after a killed and a stopped server, per node errors in a
 * quorum), the histograms against latencies measured here, every event
 * type that a single server can cause fired by a real cause (connect,
 * restart, refused, AUTH refused, SCRIPT FLUSH, FUNCTION FLUSH, a young
 * server under the restart guard, an ACL without INFO), the hook's ban on
 * calling back in, no allocation per cycle with a hook and stats read, the
 * size argument, and the two examples. Redirects and slot maps are in
 * test_cluster.c, the TLS failure in test_tls.c. Real redis-server
 * processes on loopback.
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "testutil.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static fx_server srv;

static void setup(void)
{
    ck_assert_int_eq(fx_server_start(&srv, NULL), 0);
}

static void teardown(void)
{
    fx_server_stop(&srv);
}

static redlock_stats snap;

/* c's counters now (valid until the next call). */
static const redlock_stats *stats_of(redlock_client *c)
{
    ck_assert_int_eq(redlock_client_stats(c, &snap, sizeof snap), REDLOCK_OK);
    ck_assert_uint_eq(snap.size, sizeof snap);
    return &snap;
}

/* Every kind's attempts are the sum of its outcomes. */
static void check_sums(const redlock_stats *s)
{
    for (int k = 0; k < REDLOCK_STAT_KINDS; k++) {
        const redlock_op_stats *o = &s->op[k];
        ck_assert_uint_eq(o->attempts, o->successes + o->contended + o->lost + o->timeouts +
                                           o->errors + o->cancelled);
    }
}

static uint64_t node_errors(const redlock_node_stats *n)
{
    uint64_t e = 0;
    for (int k = 0; k < REDLOCK_STATS_STATUSES; k++)
        e += n->errors[k];
    return e;
}

/* ---- the counters against what the test did ------------------------------------------------ */

START_TEST(test_counters)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    redlock_client *c = tu_client(srv.url, 0), *other = tu_client(srv.url, 0);
    redlock_client_on_event(c, tu_record, &ev);
    redlock *a = tu_lock(c, "st:a", NULL, 5000), *b = tu_lock(c, "st:busy", NULL, 5000);
    redlock *h = tu_lock(other, "st:busy", "holder", 5000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK); /* connected, scripts loaded */
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    redlock_stats s0 = *stats_of(c);
    ck_assert_uint_eq(s0.nodes, 1);
    ck_assert_str_eq(s0.node[0].node, srv.url + strlen("redis://"));
    ck_assert_uint_eq(s0.node[0].connects, 1);

    enum { N = 40, M = 7 };
    for (int k = 0; k < N; k++) {
        ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    }
    for (int k = 0; k < M; k++)
        ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    const redlock_stats *s = stats_of(c);
    const redlock_op_stats *acq = &s->op[REDLOCK_STAT_ACQUIRE], *rel = &s->op[REDLOCK_STAT_RELEASE];
    ck_assert_uint_eq(acq->attempts - s0.op[REDLOCK_STAT_ACQUIRE].attempts, N + M);
    ck_assert_uint_eq(acq->successes - s0.op[REDLOCK_STAT_ACQUIRE].successes, N);
    ck_assert_uint_eq(acq->contended - s0.op[REDLOCK_STAT_ACQUIRE].contended, M);
    ck_assert_uint_eq(rel->successes - s0.op[REDLOCK_STAT_RELEASE].successes, N);
    ck_assert_uint_eq(s->node[0].requests - s0.node[0].requests, 2 * N + M); /* one each */
    ck_assert_uint_eq(s->round_trip.count - s0.round_trip.count, 2 * N + M);
    ck_assert_uint_eq(s->acquire_wait.count - s0.acquire_wait.count, N);
    ck_assert_uint_eq(s->hold.count - s0.hold.count, N);
    ck_assert_uint_eq(node_errors(&s->node[0]), 0);
    ck_assert_int_gt(s->node[0].rtt_us, 0);
    ck_assert_int_lt(s->node[0].rtt_us, 100000);

    /* a wait that runs out: one wait contended, its tries contended too */
    uint64_t tries = s->op[REDLOCK_STAT_ACQUIRE].contended;
    ck_assert_int_eq(redlock_lock(b, 150), REDLOCK_NOT_ACQUIRED);
    s = stats_of(c);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_WAIT].attempts, 1);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_WAIT].contended, 1);
    ck_assert_uint_ge(s->op[REDLOCK_STAT_ACQUIRE].contended - tries, 2);

    /* releases and refreshes that find the lock gone; a cancelled try */
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "DEL st:a"), 0);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_LEASE_LOST), 0);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_start_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_cancel(a), REDLOCK_OK);
    s = stats_of(c);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_RELEASE].lost, 1);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_REFRESH].attempts, 2);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_REFRESH].successes, 1);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_REFRESH].lost, 1);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_ACQUIRE].cancelled, 1);
    ck_assert_uint_eq(s->hold.count - s0.hold.count, N + 1);
    ck_assert_uint_eq(s->leases_lost, 0); /* keepalive's count */
    check_sums(s);
    /* the refresh that found it gone told the hook, naming the lock */
    const tu_event *e = tu_events_find(&ev, REDLOCK_EVENT_LEASE_LOST);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->name, "st:a");
    ck_assert_str_eq(e->what, "lease-lost");
    ck_assert_int_eq(e->status, REDLOCK_NOT_HELD);
    ck_assert_ptr_nonnull(strstr(e->detail, "not held"));
    ck_assert_uint_eq(s->events[REDLOCK_EVENT_LEASE_LOST], 1);
    /* the commands' connection, then the wait's listener */
    ck_assert_uint_eq(s->events[REDLOCK_EVENT_CONNECTED], 2);
    ck_assert_uint_eq(s->node[0].connects, 2);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_CONNECTED), 2);
    ck_assert_int_eq(ev.at[0].listener, 0);
    int listener = 0;
    for (int k = 0; k < ev.n; k++)
        listener += ev.at[k].type == REDLOCK_EVENT_CONNECTED && ev.at[k].listener;
    ck_assert_int_eq(listener, 1);
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_free(h);
    redlock_client_free(c);
    redlock_client_free(other);
}
END_TEST

/* A quorum of three with one node stopped: the errors, the failed
 * connects and the round trips are that node's alone. */
START_TEST(test_quorum_nodes)
{
    fx_server s[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(fx_server_start(&s[i], NULL), 0);
    const char *urls[3] = {s[0].url, s[1].url, s[2].url};
    redlock_options o;
    redlock_options_init(&o);
    o.io_timeout_ms = o.connect_timeout_ms = 300;
    o.fencing = 0; /* no round to raise counters: one request per operation */
    redlock_client *c = tu_client_opts(urls, 3, &o);
    redlock *l = tu_lock(c, "st:q", NULL, 5000);
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    fx_server_stop(&s[2]);
    enum { K = 5 };
    for (int k = 0; k < K; k++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* 2 of 3 */
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    const redlock_stats *st = stats_of(c);
    ck_assert_uint_eq(st->nodes, 3);
    for (int i = 0; i < 2; i++) {
        ck_assert_uint_eq(node_errors(&st->node[i]), 0);
        ck_assert_uint_eq(st->node[i].requests, 2 * (3 + K) + st->node[i].script_loads);
        ck_assert_uint_eq(st->node[i].connect_failures, 0);
        ck_assert_int_gt(st->node[i].rtt_us, 0);
    }
    /* each try and each release of the 2 * K failed on the stopped node:
     * the connection it had was gone, and each connect was refused */
    ck_assert_uint_eq(st->node[2].errors[REDLOCK_ERR_IO], 2 * K);
    ck_assert_uint_eq(node_errors(&st->node[2]), 2 * K);
    ck_assert_uint_eq(st->node[2].disconnects, 1);
    ck_assert_uint_eq(st->node[2].connect_failures, 2 * K);
    ck_assert_uint_eq(st->op[REDLOCK_STAT_ACQUIRE].successes, 3 + K);
    redlock_free(l);
    redlock_client_free(c);
    for (int i = 0; i < 2; i++)
        fx_server_stop(&s[i]);
}
END_TEST

/* ---- histograms against measured latencies -------------------------------------------------- */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The bucket that holds v holds at least one value. */
static void holds_value(const redlock_histogram *h, uint64_t v)
{
    unsigned i = 0;
    while (i + 1 < REDLOCK_STATS_BUCKETS && redlock_stats_bucket_max(i) < v)
        i++;
    ck_assert_msg(h->bucket[i] > 0, "no value in bucket %u (%llu us)", i, (unsigned long long)v);
}

START_TEST(test_histograms)
{
    enum { N = 200 };
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = tu_lock(c, "st:h", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* connect and load outside the count */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_stats s0 = *stats_of(c);
    static double took[N];
    double sum = 0;
    for (int k = 0; k < N; k++) {
        double t0 = fx_now_ms();
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        took[k] = (fx_now_ms() - t0) * 1000;
        sum += took[k];
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    const redlock_stats *s = stats_of(c);
    /* the N measured here: the histogram less what it held before */
    redlock_histogram w = s->acquire_wait;
    for (int b = 0; b < REDLOCK_STATS_BUCKETS; b++)
        w.bucket[b] -= s0.acquire_wait.bucket[b];
    w.count -= s0.acquire_wait.count;
    w.sum_us -= s0.acquire_wait.sum_us;
    w.max_us = UINT64_MAX;
    qsort(took, N, sizeof took[0], cmp_d);
    /* the library times the inside of each call: never more than measured
     * here, and most of it (one round trip each) */
    ck_assert_uint_eq(w.count, N);
    ck_assert_double_le((double)w.sum_us, sum);
    ck_assert_double_ge((double)w.sum_us, 0.5 * sum);
    uint64_t p50 = redlock_stats_quantile(&w, 0.5), p100 = redlock_stats_quantile(&w, 1.0);
    ck_assert_msg(p50 >= 0.5 * took[N / 2] - 1 && p50 <= 1.25 * took[N / 2] + 1,
                  "p50 %llu us, measured %.1f us", (unsigned long long)p50, took[N / 2]);
    /* the longest is in a bucket that starts below the longest measured */
    ck_assert_double_le(0.8 * (double)p100, took[N - 1] + 1);
    ck_assert_uint_le(p50, redlock_stats_quantile(&w, 0.99));
    holds_value(&s->acquire_wait, s->acquire_wait.max_us);

    /* holds of 100 ms: each value in [100 ms, the measured hold] */
    double hold_max = 0;
    for (int k = 0; k < 5; k++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        double t0 = fx_now_ms();
        fx_sleep_ms(100);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        double held = (fx_now_ms() - t0) * 1000;
        hold_max = held > hold_max ? held : hold_max;
    }
    s = stats_of(c);
    redlock_histogram hold = s->hold; /* the short holds above, and these */
    ck_assert_uint_eq(hold.count, N + 1 + 5);
    ck_assert_uint_ge(hold.max_us, 100000);
    ck_assert_double_le((double)hold.max_us, hold_max + 2000);
    ck_assert_uint_ge(redlock_stats_quantile(&hold, 0.999), 100000);
    ck_assert_uint_lt(redlock_stats_quantile(&hold, 0.5), 100000);
    holds_value(&hold, hold.max_us);

    /* a real wait: a holder whose lease ends in 300 ms, never released */
    redlock_client *other = tu_client(srv.url, 0);
    redlock *h = tu_lock(other, "st:h", "gone", 300);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(l, 3000), REDLOCK_OK);
    double waited = (fx_now_ms() - t0) * 1000;
    s = stats_of(c);
    ck_assert_uint_ge(s->acquire_wait.max_us, 250000);
    ck_assert_double_le((double)s->acquire_wait.max_us, waited);
    ck_assert_uint_ge(redlock_stats_quantile(&s->acquire_wait, 1.0), 250000);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(h);
    redlock_client_free(other);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* The bucket bounds and the quantile on a histogram made here. */
START_TEST(test_buckets)
{
    ck_assert_uint_eq(redlock_stats_bucket_max(0), 0);
    ck_assert_uint_eq(redlock_stats_bucket_max(3), 3);
    ck_assert_uint_eq(redlock_stats_bucket_max(4), 4);
    ck_assert_uint_eq(redlock_stats_bucket_max(8), 9);
    ck_assert_uint_eq(redlock_stats_bucket_max(REDLOCK_STATS_BUCKETS - 1), UINT64_MAX);
    for (unsigned i = 1; i + 1 < REDLOCK_STATS_BUCKETS; i++) {
        uint64_t lo = redlock_stats_bucket_max(i - 1) + 1, hi = redlock_stats_bucket_max(i);
        ck_assert_uint_ge(hi, lo); /* contiguous, never empty */
        if (i >= 4) /* at most 25% wide */
            ck_assert_msg((double)(hi - lo + 1) <= 0.25 * (double)lo + 1e-9, "bucket %u", i);
    }
    /* 22 days and more: the last bucket */
    ck_assert_uint_gt(redlock_stats_bucket_max(REDLOCK_STATS_BUCKETS - 2), 22ull * 86400 * 1000000);
    redlock_histogram h;
    memset(&h, 0, sizeof h);
    ck_assert_uint_eq(redlock_stats_quantile(&h, 0.5), 0);
    ck_assert_uint_eq(redlock_stats_quantile(NULL, 0.5), 0);
    h.bucket[40] = 500;
    h.bucket[60] = 495;
    h.bucket[80] = 5;
    h.count = 1000;
    h.max_us = redlock_stats_bucket_max(80) - 7;
    ck_assert_uint_eq(redlock_stats_quantile(&h, 0.0), redlock_stats_bucket_max(40));
    ck_assert_uint_eq(redlock_stats_quantile(&h, 0.5), redlock_stats_bucket_max(40));
    ck_assert_uint_eq(redlock_stats_quantile(&h, 0.501), redlock_stats_bucket_max(60));
    ck_assert_uint_eq(redlock_stats_quantile(&h, 0.99), redlock_stats_bucket_max(60));
    ck_assert_uint_eq(redlock_stats_quantile(&h, 0.999), h.max_us); /* never above the max */
    ck_assert_uint_eq(redlock_stats_quantile(&h, 2.0), h.max_us);
}
END_TEST

/* ---- lost leases ---------------------------------------------------------------------------- */

/* K leases kept alive; the server goes (killed, or stopped with SIGSTOP);
 * each lease is reported lost once, counted and told to the hook. */
static void lose_leases(fx_server *s, int pause)
{
    enum { K = 4 };
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    redlock_client *c = tu_client(s->url, 150);
    redlock_client_on_event(c, tu_record, &ev);
    redlock *l[K];
    for (int k = 0; k < K; k++) {
        char name[32];
        snprintf(name, sizeof name, "st:lease:%d", k);
        l[k] = tu_lock(c, name, NULL, 600);
        ck_assert_int_eq(redlock_trylock(l[k]), REDLOCK_OK);
        ck_assert_int_eq(redlock_keepalive(l[k], 1), REDLOCK_OK);
    }
    double until = fx_now_ms() + 900; /* four or so refreshes each */
    while (fx_now_ms() < until)
        tu_turn(c, 50);
    ck_assert_ptr_null(redlock_client_done(c));
    ck_assert_uint_ge(stats_of(c)->op[REDLOCK_STAT_KEEPALIVE].successes, 2 * K);
    if (pause)
        fx_server_pause(s);
    else
        fx_server_kill(s);
    int lost = 0;
    for (int t = 0; t < 400 && lost < K; t++) {
        tu_turn(c, 20);
        for (redlock *d; (d = redlock_client_done(c)) != NULL; lost++)
            ck_assert_int_eq(redlock_result(d), REDLOCK_NOT_HELD);
    }
    ck_assert_int_eq(lost, K);
    const redlock_stats *st = stats_of(c);
    ck_assert_uint_eq(st->leases_lost, K);
    ck_assert_uint_eq(st->events[REDLOCK_EVENT_LEASE_LOST], K);
    ck_assert_uint_eq(st->hold.count, K);
    const redlock_op_stats *ka = &st->op[REDLOCK_STAT_KEEPALIVE];
    ck_assert_uint_ge(pause ? ka->timeouts : ka->errors, 1);
    check_sums(st);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_LEASE_LOST), K);
    for (int k = 0; k < ev.n && k < TU_EVENTS; k++)
        if (ev.at[k].type == REDLOCK_EVENT_LEASE_LOST)
            ck_assert_ptr_nonnull(strstr(ev.at[k].name, "st:lease:"));
    if (!pause) { /* the connection went, and coming back was refused */
        const tu_event *d = tu_events_find(&ev, REDLOCK_EVENT_DISCONNECTED);
        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(d->status, REDLOCK_ERR_IO);
        ck_assert_int_ge(tu_events_count(&ev, REDLOCK_EVENT_CONNECT_FAILED), 1);
    }
    for (int k = 0; k < K; k++)
        redlock_free(l[k]);
    redlock_client_free(c);
}

START_TEST(test_lost_leases)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    lose_leases(&s, 0);
    ck_assert_int_eq(fx_server_restart(&s), 0);
    lose_leases(&s, 1);
    fx_server_resume(&s);
    fx_server_stop(&s);
}
END_TEST

/* ---- events by real causes ------------------------------------------------------------------- */

/* A cycle of l; its status. */
static int cycle(redlock *l)
{
    int rc = redlock_trylock(l);
    return rc == REDLOCK_OK ? redlock_unlock(l) : rc;
}

/* Connected, then the server restarts: disconnected (why), reconnected;
 * then stopped: every connect refused. */
START_TEST(test_connection_events)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *c = tu_client(s.url, 300);
    redlock_client_on_event(c, tu_record, &ev);
    redlock *l = tu_lock(c, "st:conn", NULL, 5000);
    ck_assert_int_eq(cycle(l), REDLOCK_OK);
    ck_assert_int_eq(ev.n, 3); /* connected; the scripts were loaded, each by EVAL */
    const tu_event *e = &ev.at[0];
    ck_assert_int_eq(e->type, REDLOCK_EVENT_CONNECTED);
    ck_assert_str_eq(e->what, "connected");
    ck_assert_str_eq(e->node, s.url + strlen("redis://"));
    ck_assert_int_eq(e->node_index, 0);
    ck_assert_int_eq(e->listener, 0);
    ck_assert_int_eq(e->value, 0);
    ck_assert_str_eq(e->name, ""); /* no lock */

    fx_sleep_ms(5); /* idle: the next request looks at the socket first */
    ck_assert_int_eq(fx_server_restart(&s), 0);
    ck_assert_int_eq(cycle(l), REDLOCK_OK); /* the closed connection is found, a new one made */
    const tu_event *d = tu_events_find(&ev, REDLOCK_EVENT_DISCONNECTED);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(d->status, REDLOCK_ERR_IO);
    ck_assert_msg(strstr(d->detail, "closed the connection while it was idle"), "%s", d->detail);
    int reconnects = 0;
    for (int k = 0; k < ev.n; k++)
        reconnects += ev.at[k].type == REDLOCK_EVENT_CONNECTED && ev.at[k].value == 1;
    ck_assert_int_eq(reconnects, 1);
    const redlock_stats *st = stats_of(c);
    ck_assert_uint_eq(st->node[0].connects, 2);
    ck_assert_uint_eq(st->node[0].reconnects, 1);
    ck_assert_uint_eq(st->node[0].disconnects, 1);

    fx_server_stop(&s);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_IO);
    const tu_event *f = tu_events_find(&ev, REDLOCK_EVENT_CONNECT_FAILED);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->status, REDLOCK_ERR_IO);
    ck_assert_ptr_nonnull(strstr(f->detail, "refused"));
    ck_assert_uint_eq(stats_of(c)->node[0].connect_failures, 1);
    ck_assert_uint_eq(stats_of(c)->node[0].errors[REDLOCK_ERR_IO], 1);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* A handshake refused: AUTH with the wrong password. */
START_TEST(test_auth_refused_event)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    fx_server s;
    fx_opts o = {.password = "sesame"};
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    char url[128];
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", s.port);
    redlock_client *c = tu_client(url, 0);
    redlock_client_on_event(c, tu_record, &ev);
    redlock *l = tu_lock(c, "st:auth", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_AUTH);
    ck_assert_int_eq(ev.n, 1);
    ck_assert_int_eq(ev.at[0].type, REDLOCK_EVENT_CONNECT_FAILED);
    ck_assert_int_eq(ev.at[0].status, REDLOCK_ERR_AUTH);
    ck_assert_ptr_nonnull(strstr(ev.at[0].detail, "AUTH refused"));
    ck_assert_ptr_null(strstr(ev.at[0].detail, "wrong")); /* never the password */
    ck_assert_uint_eq(stats_of(c)->node[0].errors[REDLOCK_ERR_AUTH], 1);
    ck_assert_uint_eq(stats_of(c)->node[0].connects, 0);
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

/* SCRIPT FLUSH: the next acquire and release load their scripts by EVAL;
 * FUNCTION FLUSH in functions mode: FUNCTION LOAD. */
START_TEST(test_scripts_loaded_events)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    char out[64];
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = tu_lock(c, "st:flush", NULL, 5000);
    ck_assert_int_eq(cycle(l), REDLOCK_OK);
    redlock_client_on_event(c, tu_record, &ev);
    ck_assert_int_eq(cycle(l), REDLOCK_OK);
    ck_assert_int_eq(ev.n, 0); /* cached: nothing to tell */
    uint64_t loads = stats_of(c)->node[0].script_loads;
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "SCRIPT FLUSH"), 0);
    ck_assert_int_eq(cycle(l), REDLOCK_OK);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_SCRIPTS_LOADED), 2);
    const tu_event *e = tu_events_find(&ev, REDLOCK_EVENT_SCRIPTS_LOADED);
    ck_assert_str_eq(e->name, "st:flush");
    ck_assert_str_eq(e->node, srv.url + strlen("redis://"));
    ck_assert_int_eq(e->value, 0);
    ck_assert_ptr_nonnull(strstr(e->detail, "NOSCRIPT"));
    ck_assert_uint_eq(stats_of(c)->node[0].script_loads, loads + 2);
    redlock_free(l);
    redlock_client_free(c);

    memset(&ev, 0, sizeof ev);
    redlock_options o;
    redlock_options_init(&o);
    o.scripts = REDLOCK_SCRIPTS_FUNCTIONS;
    c = tu_client_opts((const char *[]){srv.url}, 1, &o);
    redlock_client_on_event(c, tu_record, &ev);
    l = tu_lock(c, "st:fn", NULL, 5000);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "FUNCTION FLUSH"), 0);
    ck_assert_int_eq(cycle(l), REDLOCK_OK);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_SCRIPTS_LOADED), 1);
    e = tu_events_find(&ev, REDLOCK_EVENT_SCRIPTS_LOADED);
    ck_assert_int_eq(e->value, 1);
    ck_assert_ptr_nonnull(strstr(e->detail, "FUNCTION LOAD"));
    ck_assert_uint_eq(stats_of(c)->node[0].function_loads, 1);
    ck_assert_uint_eq(stats_of(c)->node[0].script_loads, 0);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* The restart guard on a fresh server: the yes is not counted, and said;
 * a user whose ACL refuses INFO: the guard goes off there, and said. */
START_TEST(test_guard_events)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0); /* younger than the lease below */
    redlock_options o;
    redlock_options_init(&o);
    o.restart_guard = 1;
    redlock_client *c = tu_client_opts((const char *[]){s.url}, 1, &o);
    redlock_client_on_event(c, tu_record, &ev);
    redlock *l = tu_lock(c, "st:young", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_NOT_ACQUIRED);
    const tu_event *e = tu_events_find(&ev, REDLOCK_EVENT_GUARD_YOUNG);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->name, "st:young");
    ck_assert_int_gt(e->value, 3000); /* ms until it counts: most of the lease */
    ck_assert_int_le(e->value, 5000 + 52);
    ck_assert_ptr_nonnull(strstr(e->detail, "restart guard"));
    ck_assert_uint_eq(stats_of(c)->node[0].guard_young, 1);
    ck_assert_uint_eq(stats_of(c)->node[0].guard_off, 0);
    redlock_free(l);
    redlock_client_free(c);

    memset(&ev, 0, sizeof ev);
    char out[128], url[256];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "ACL SETUSER noinfo on >pw ~* &* +@all -info"), 0);
    snprintf(url, sizeof url, "redis://noinfo:pw@127.0.0.1:%d", s.port);
    c = tu_client_opts((const char *[]){url}, 1, &o);
    redlock_client_on_event(c, tu_record, &ev);
    l = tu_lock(c, "st:noinfo", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* no guard there */
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_GUARD_OFF), 1);
    e = tu_events_find(&ev, REDLOCK_EVENT_GUARD_OFF);
    ck_assert_ptr_nonnull(strstr(e->detail, "restart guard off there: INFO server refused"));
    ck_assert_ptr_null(strstr(e->detail, ":pw@"));
    ck_assert_int_eq(e->status, REDLOCK_ERR_SERVER);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(cycle(l), REDLOCK_OK);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_GUARD_OFF), 1); /* said once */
    ck_assert_uint_eq(stats_of(c)->node[0].guard_off, 1);
    ck_assert_uint_eq(stats_of(c)->node[0].guard_young, 0);
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

/* ---- the hook may not call back in ----------------------------------------------------------- */

typedef struct reentry {
    redlock_client *c;
    redlock *l;
    int calls;
    int rc[8];
    void *done;
    int processed, pollfds;
    char lock_err[256], client_err[256];
} reentry;

static void calls_back(const redlock_event *ev, void *arg)
{
    reentry *r = arg;
    redlock *made = (redlock *)1;
    redlock_stats s;
    if (ev->type != REDLOCK_EVENT_CONNECTED || r->calls++)
        return;
    r->rc[0] = redlock_trylock(r->l);
    snprintf(r->lock_err, sizeof r->lock_err, "%s", redlock_errstr(r->l));
    r->rc[1] = redlock_start_unlock(r->l);
    r->rc[2] = redlock_new(&made, r->c, "st:other", NULL, 1000);
    r->rc[3] = made == NULL ? REDLOCK_ERR_ARG : REDLOCK_OK;
    r->rc[4] = redlock_keepalive(r->l, 1);
    r->rc[5] = redlock_functions_status(r->c, NULL, 0, NULL);
    snprintf(r->client_err, sizeof r->client_err, "%s", redlock_client_errstr(r->c));
    r->rc[6] = redlock_client_stats(r->c, &s, sizeof s); /* reading is allowed */
    r->processed = redlock_client_process(r->c, NULL, 0);
    r->pollfds = redlock_client_pollfds(r->c, NULL, 0);
    r->done = redlock_client_done(r->c);
    redlock_client_on_event(r->c, NULL, NULL); /* ignored */
    redlock_free(r->l);                        /* ignored */
    redlock_client_free(r->c);                 /* ignored */
}

START_TEST(test_hook_no_reentry)
{
    static reentry r;
    memset(&r, 0, sizeof r);
    r.c = tu_client(srv.url, 0);
    r.l = tu_lock(r.c, "st:reentry", NULL, 5000);
    redlock_client_on_event(r.c, calls_back, &r);
    ck_assert_int_eq(redlock_trylock(r.l), REDLOCK_OK); /* the connect calls the hook */
    ck_assert_int_eq(r.calls, 1);
    for (int k = 0; k < 6; k++)
        ck_assert_msg(r.rc[k] == REDLOCK_ERR_ARG, "call %d: %s", k, redlock_strerror(r.rc[k]));
    ck_assert_int_eq(r.rc[6], REDLOCK_OK);
    ck_assert_int_eq(r.processed, 0);
    ck_assert_int_eq(r.pollfds, 0);
    ck_assert_ptr_null(r.done);
    ck_assert_ptr_nonnull(
        strstr(r.lock_err, "lock 'st:reentry' called from inside the event hook"));
    ck_assert_ptr_nonnull(strstr(r.client_err, "functions status called from inside the event "
                                               "hook, which must not call back into the library"));
    /* the outer call went on, the lock and client live, the hook is set */
    ck_assert_int_gt(redlock_validity_ms(r.l), 0);
    ck_assert_int_eq(redlock_unlock(r.l), REDLOCK_OK);
    ck_assert_int_eq(redlock_keepalive(r.l, 0), REDLOCK_OK);
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "CLIENT KILL TYPE normal"), 0);
    if (cycle(r.l) != REDLOCK_OK) /* the killed connection's error */
        ck_assert_int_eq(cycle(r.l), REDLOCK_OK); /* reconnects: the hook hears it */
    ck_assert_int_eq(r.calls, 2);
    redlock_free(r.l);
    redlock_client_free(r.c);
}
END_TEST

/* ---- costs and the size argument ------------------------------------------------------------- */

static void count_events(const redlock_event *ev, void *arg)
{
    (void)ev;
    (*(long *)arg)++;
}

/* No allocation in a cycle with a hook set and the stats read each time,
 * nor while events fire (SCRIPT FLUSH midway). */
START_TEST(test_no_allocation)
{
    static long events;
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = tu_lock(c, "st:alloc", NULL, 5000);
    redlock_client_on_event(c, count_events, &events);
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "SCRIPT FLUSH"), 0); /* EVAL once first */
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    static redlock_stats s;
    long before = events;
    tu_alloc_start(0);
    for (int k = 0; k < 500; k++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_client_stats(c, &s, sizeof s), REDLOCK_OK);
        if (k == 250)
            ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "SCRIPT FLUSH"), 0);
    }
    tu_alloc_stop();
    ck_assert_int_eq(tu_alloc.calls, 0);
    ck_assert_int_eq(events - before, 3); /* acquire, refresh and release loaded again */
    ck_assert_uint_eq(s.op[REDLOCK_STAT_ACQUIRE].successes, 501);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* A caller compiled with a smaller (older) struct gets its prefix and
 * nothing past it; a larger one gets zeroes past the library's. */
START_TEST(test_stats_size)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = tu_lock(c, "st:size", NULL, 5000);
    ck_assert_int_eq(cycle(l), REDLOCK_OK);
    static unsigned char buf[sizeof(redlock_stats) + 256];
    size_t old = offsetof(redlock_stats, acquire_wait);
    memset(buf, 0xab, sizeof buf);
    ck_assert_int_eq(redlock_client_stats(c, (redlock_stats *)buf, old), REDLOCK_OK);
    const redlock_stats *s = (const redlock_stats *)buf;
    ck_assert_uint_eq(s->size, old);
    ck_assert_uint_eq(s->op[REDLOCK_STAT_ACQUIRE].successes, 1);
    for (size_t k = old; k < sizeof buf; k++)
        ck_assert_msg(buf[k] == 0xab, "byte %zu written", k);
    memset(buf, 0xab, sizeof buf);
    ck_assert_int_eq(redlock_client_stats(c, (redlock_stats *)buf, sizeof buf), REDLOCK_OK);
    ck_assert_uint_eq(s->size, sizeof(redlock_stats));
    ck_assert_uint_eq(s->nodes, 1);
    ck_assert_uint_eq(s->node[0].requests, 2 + s->node[0].script_loads);
    for (size_t k = offsetof(redlock_stats, node[1]); k < sizeof buf; k++)
        ck_assert_msg(buf[k] == 0, "byte %zu not zeroed", k);
    ck_assert_int_eq(redlock_client_stats(c, (redlock_stats *)buf, sizeof(size_t) - 1),
                     REDLOCK_ERR_ARG); /* smaller than the size field (4 or 8 bytes) */
    ck_assert_int_eq(redlock_client_stats(NULL, (redlock_stats *)buf, sizeof buf), REDLOCK_ERR_ARG);
    ck_assert_int_eq(redlock_client_stats(c, NULL, sizeof buf), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "out is NULL"));
    redlock_client_on_event(NULL, count_events, NULL); /* harmless */
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- the examples and the command ------------------------------------------------------------ */

static char out_buf[65536];

/* Run argv (NULL-ended) to completion; its output in out_buf; its status. */
static int run(const char *const *argv)
{
    return fx_run(out_buf, sizeof out_buf, 20000, argv);
}

START_TEST(test_prometheus_example)
{
    char prog[512];
    snprintf(prog, sizeof prog, "%s/prometheus", FX_EXAMPLES_DIR);
    ck_assert_int_eq(run((const char *[]){prog, srv.url, "30", NULL}), 0);
    static const char *const want[] = {
        "# TYPE redlock_operations_total counter\n",
        "redlock_operations_total{op=\"acquire\",outcome=\"success\"} 30\n",
        "redlock_operations_total{op=\"acquire\",outcome=\"contended\"} 1\n",
        "redlock_operations_total{op=\"release\",outcome=\"success\"} 30\n",
        "# TYPE redlock_acquire_wait_seconds histogram\n",
        "redlock_acquire_wait_seconds_bucket{le=\"0.000127\"} ",
        "redlock_acquire_wait_seconds_bucket{le=\"+Inf\"} 30\n",
        "redlock_acquire_wait_seconds_count 30\n",
        "redlock_round_trip_seconds_count 61\n", /* 30 x 2, and the busy try */
        "redlock_hold_seconds_count 30\n",
        "redlock_events_total{type=\"connected\"} 1\n",
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        ck_assert_msg(strstr(out_buf, want[k]), "no '%s' in:\n%s", want[k], out_buf);
    char node[1500];
    snprintf(node, sizeof node, "redlock_node_requests_total{node=\"%s\"} 61\n",
             srv.url + strlen("redis://"));
    ck_assert_msg(strstr(out_buf, node), "no '%s' in:\n%s", node, out_buf);
}
END_TEST

/* The events example while the test kills its connection: it logs the
 * connect, the loss and the reconnect, and keeps its lease. */
START_TEST(test_events_example)
{
    char prog[512], path[] = "/tmp/redlock-events-XXXXXX";
    snprintf(prog, sizeof prog, "%s/events", FX_EXAMPLES_DIR);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fd, 1);
        execl(prog, prog, srv.url, "1.5", (char *)NULL);
        _exit(127);
    }
    close(fd);
    char out[64];
    fx_sleep_ms(400);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "CLIENT KILL TYPE normal"), 0);
    int st = -1;
    for (int k = 0; k < 100 && waitpid(pid, &st, WNOHANG) == 0; k++)
        fx_sleep_ms(100);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out_buf, 1, sizeof out_buf - 1, f);
    out_buf[n] = '\0';
    fclose(f);
    unlink(path);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d:\n%s", st, out_buf);
    static const char *const want[] = {"] connected      node=", "held events-demo",
                                       "] disconnected   node=", ": reconnected to ",
                                       "] released; "};
    const char *at = out_buf;
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) { /* in this order */
        const char *p = strstr(at, want[k]);
        ck_assert_msg(p, "no '%s' (in order) in:\n%s", want[k], out_buf);
        at = p;
    }
}
END_TEST

/* `redlock stats`, as text and as JSON, and `redlock run -v`. */
START_TEST(test_command)
{
    char prog[512];
    snprintf(prog, sizeof prog, "%s/redlock", FX_BUILD_DIR);
    ck_assert_int_eq(run((const char *[]){prog, "stats", "-u", srv.url, NULL}), 0);
    ck_assert_ptr_nonnull(strstr(out_buf, "probe 'redlock-stats-probe': success\n"));
    ck_assert_ptr_nonnull(strstr(out_buf, "\nacquire            1         1         0"));
    ck_assert_ptr_nonnull(strstr(out_buf, "\nrelease            1         1         0"));
    ck_assert_ptr_nonnull(strstr(out_buf, ": requests 2, errors 0, round trip "));
    ck_assert_ptr_nonnull(strstr(out_buf, "\nevents: connected 1"));

    ck_assert_int_eq(run((const char *[]){prog, "stats", "--json", "-u", srv.url, "st:probe",
                                          NULL}),
                     0);
    static const char *const want[] = {
        "\"probe\": {\"name\": \"st:probe\", \"status\": 0, \"result\": \"success\"}",
        "\"acquire\": {\"attempts\": 1, \"successes\": 1, \"contended\": 0",
        "\"acquire_wait\": {\"count\": 1, ",
        "\"events\": {\"connected\": 1, \"disconnected\": 0, ",
        "\"requests\": 2, \"errors\": {\"timeout\": 0, \"io\": 0, ",
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        ck_assert_msg(strstr(out_buf, want[k]), "no '%s' in:\n%s", want[k], out_buf);

    /* a node that refuses: status 69, its errors in the counters */
    int port = fx_free_port();
    char dead[64];
    snprintf(dead, sizeof dead, "redis://127.0.0.1:%d", port);
    ck_assert_int_eq(run((const char *[]){prog, "stats", "-j", "-u", dead, NULL}), 69);
    ck_assert_ptr_nonnull(strstr(out_buf, "\"errors\": {\"timeout\": 0, \"io\": 1, "));
    ck_assert_ptr_nonnull(strstr(out_buf, "\"connect_failures\": 1, "));
    ck_assert_ptr_nonnull(strstr(out_buf, "Connection refused"));

    ck_assert_int_eq(run((const char *[]){prog, "run", "-v", "-u", srv.url, "st:cmd", "--",
                                          "sleep", "0.1", NULL}),
                     0);
    ck_assert_ptr_nonnull(strstr(out_buf, "redlock: event connected node="));
    const char *t = strstr(out_buf, "redlock: timing: connect ");
    ck_assert_msg(t != NULL, "%s", out_buf);
    double conn, wait, hold, rel;
    ck_assert_int_eq(sscanf(t, "redlock: timing: connect %lf ms, wait %lf ms, hold %lf ms, "
                               "release %lf ms",
                            &conn, &wait, &hold, &rel),
                     4);
    ck_assert_double_le(conn, wait);
    ck_assert_double_ge(hold, 100);
    ck_assert_double_lt(hold, 5000);
    ck_assert_double_gt(rel, 0);
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *t = tcase_create("stats");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_counters);
    tcase_add_test(t, test_quorum_nodes);
    tcase_add_test(t, test_histograms);
    tcase_add_test(t, test_buckets);
    tcase_add_test(t, test_lost_leases);
    tcase_add_test(t, test_connection_events);
    tcase_add_test(t, test_auth_refused_event);
    tcase_add_test(t, test_scripts_loaded_events);
    tcase_add_test(t, test_guard_events);
    tcase_add_test(t, test_hook_no_reentry);
    tcase_add_test(t, test_no_allocation);
    tcase_add_test(t, test_stats_size);
    tcase_add_test(t, test_prometheus_example);
    tcase_add_test(t, test_events_example);
    tcase_add_test(t, test_command);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(stats_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
