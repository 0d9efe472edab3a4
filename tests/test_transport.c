/* test_transport.c - the transport contract (redlock.h, "TLS") as net.c
 * keeps it, with a mock transport that passes bytes through unchanged to
 * a plain redis-server: no TLS library needed. The mock behaves as badly
 * as the contract allows: its handshake asks for a write first, its reads
 * hand out a few bytes at a time and keep the rest (pending), and its
 * writes ask to be retried while holding what they were offered, as
 * OpenSSL and mbedTLS do with a half-sent record.
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "netx.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the mock ----------------------------------------------------------------------- */

enum { HOLD_NONE, HOLD_EVERY_OTHER, HOLD_FOREVER };

static struct {
    int hold;           /* how writes behave (HOLD_*)                          */
    int read_chunk;     /* most bytes a read hands out                         */
    int sessions;       /* opened so far                                       */
    int violations;     /* a retry that did not start with the held bytes      */
    int configs, freed; /* config_new / config_free calls                      */
    int refuse;         /* reads fail with REDLOCK_ERR_TLS, at once (pending)  */
    char host[256], sni[256];
} mock;

typedef struct mock_conn {
    int fd, handshake_steps, writes;
    char held[16384];
    size_t nheld;
    char in[65536];
    size_t inlen, inoff;
} mock_conn;

static int m_config_new(void **cfg, const redlock_tls_params *p, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    snprintf(mock.host, sizeof mock.host, "%s", p->host);
    snprintf(mock.sni, sizeof mock.sni, "%s", p->sni);
    mock.configs++;
    *cfg = &mock;
    return REDLOCK_OK;
}

static void m_config_free(void *cfg)
{
    (void)cfg;
    mock.freed++;
}

static int m_open(void **out, void *cfg, int fd, char *err, size_t errlen)
{
    (void)cfg;
    (void)err;
    (void)errlen;
    mock_conn *m = calloc(1, sizeof *m);
    m->fd = fd;
    mock.sessions++;
    *out = m;
    return REDLOCK_OK;
}

static int m_handshake(void *p, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    mock_conn *m = p;
    return m->handshake_steps++ == 0 ? REDLOCK_WANT_WRITE : REDLOCK_OK;
}

static int send_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static int m_write(void *p, const char *buf, size_t len, size_t *put, char *err, size_t errlen)
{
    mock_conn *m = p;
    *put = 0;
    if (m->nheld) { /* a retry: must start with what we hold */
        if (len < m->nheld || memcmp(buf, m->held, m->nheld) != 0)
            mock.violations++;
        if (mock.hold == HOLD_FOREVER)
            return REDLOCK_WANT_READ; /* wait for a readiness that never comes */
        if (send_all(m->fd, m->held, m->nheld) != 0) {
            snprintf(err, errlen, "send failed");
            return REDLOCK_ERR_IO;
        }
        *put = m->nheld;
        m->nheld = 0;
        return REDLOCK_OK;
    }
    if (mock.hold != HOLD_NONE && (mock.hold == HOLD_FOREVER || m->writes++ % 2 == 0)) {
        m->nheld = len < sizeof m->held ? len : sizeof m->held;
        memcpy(m->held, buf, m->nheld);
        return mock.hold == HOLD_FOREVER ? REDLOCK_WANT_READ : REDLOCK_WANT_WRITE;
    }
    if (send_all(m->fd, buf, len) != 0) {
        snprintf(err, errlen, "send failed");
        return REDLOCK_ERR_IO;
    }
    *put = len;
    return REDLOCK_OK;
}

static int m_read(void *p, char *buf, size_t len, size_t *got, char *err, size_t errlen)
{
    mock_conn *m = p;
    *got = 0;
    if (mock.refuse) {
        snprintf(err, errlen, "the server requires a client certificate");
        return REDLOCK_ERR_TLS;
    }
    if (m->inoff == m->inlen) {
        ssize_t n = recv(m->fd, m->in, sizeof m->in, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return REDLOCK_WANT_READ;
        if (n < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            return REDLOCK_ERR_IO;
        }
        if (n == 0)
            return REDLOCK_OK; /* closed */
        m->inlen = (size_t)n;
        m->inoff = 0;
    }
    size_t k = m->inlen - m->inoff;
    if (k > len)
        k = len;
    if (k > (size_t)mock.read_chunk)
        k = (size_t)mock.read_chunk;
    memcpy(buf, m->in + m->inoff, k);
    m->inoff += k;
    *got = k;
    return REDLOCK_OK;
}

static int m_pending(void *p)
{
    const mock_conn *m = p;
    return mock.refuse || m->inoff < m->inlen;
}

static void m_close(void *p)
{
    free(p);
}

static const redlock_transport mock_transport = {
    "mock", m_config_new, m_config_free, m_open, m_handshake, m_read, m_write, m_pending, m_close};

/* ---- helpers ------------------------------------------------------------------------- */

static fx_server srv;

static void setup(void)
{
    ck_assert_int_eq(fx_server_start(&srv, NULL), 0);
}

static void teardown(void)
{
    fx_server_stop(&srv);
}

static void reset_mock(int hold, int read_chunk)
{
    memset(&mock, 0, sizeof mock);
    mock.hold = hold;
    mock.read_chunk = read_chunk;
}

static const char *mock_url(void)
{
    static char url[128];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?sni=redis.test", srv.port);
    return url;
}

static net_conn *mock_conn_new(int timeout_ms)
{
    net_url u;
    char err[256];
    ck_assert_int_eq(net_url_parse(&u, NULL, mock_url(), err, sizeof err), RESP_OK);
    net_opts o;
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = o.io_timeout_ms = timeout_ms;
    o.tls = &mock_transport;
    net_conn *c = NULL;
    ck_assert_int_eq(net_conn_new(&c, &u, &o), RESP_OK);
    return c;
}

/* ---- tests ------------------------------------------------------------------------------ */

/* Pipelined requests while every other write asks to be retried, and reads
 * that hand out 7 bytes at a time: every reply arrives, in order, on one
 * connection; every retry started with the bytes the mock held. */
START_TEST(test_retry_same_bytes_and_pending)
{
    reset_mock(HOLD_EVERY_OTHER, 7);
    net_conn *c = mock_conn_new(3000);
    enum { N = 2000 };
    static nx_result r[N];
    char val[64];
    for (uint32_t round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < N; i++) {
            snprintf(val, sizeof val, "v%u", i);
            const char *argv[2] = {"ECHO", val};
            ck_assert_int_eq(nx_send(c, 2, argv, i, 0), RESP_OK);
            if (i % 100 == 0) /* more requests while earlier ones are held */
                ck_assert_uint_eq(nx_run(&c, 1, r, 0, 0), 0);
        }
        ck_assert_uint_eq(nx_run(&c, 1, r, N, net_now_ns() + 10000 * 1000000LL), N);
        for (uint32_t i = 0; i < N; i++) {
            snprintf(val, sizeof val, "v%u", i);
            ck_assert_msg(r[i].status == RESP_OK, "%u: %s", i, r[i].text);
            ck_assert_uint_eq(r[i].tag.seq, i);
            ck_assert_str_eq(r[i].text, val);
        }
    }
    ck_assert_int_eq(mock.violations, 0);
    ck_assert_int_eq(mock.sessions, 1);
    ck_assert_uint_eq(net_conn_generation(c), 1);
    ck_assert_str_eq(mock.host, "127.0.0.1");
    ck_assert_str_eq(mock.sni, "redis.test");
    net_conn_free(c);
    ck_assert_int_eq(mock.configs, 1);
    ck_assert_int_eq(mock.freed, 1);
}
END_TEST

/* A request the transport holds counts as written: when its deadline
 * passes it is not cut out of the buffer (the transport would still send
 * it, and its reply would answer the next request); the connection is
 * closed instead, and the next request goes out on a new one. */
START_TEST(test_held_request_counts_as_written)
{
    reset_mock(HOLD_FOREVER, 4096);
    net_conn *c = mock_conn_new(200);
    static const char *const ping[] = {"PING"};
    ck_assert_int_eq(nx_send(c, 1, ping, 1, 0), RESP_OK);
    nx_result r;
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, net_now_ns() + 2000 * 1000000LL), 1);
    ck_assert_int_eq(r.status, RESP_ERR_TIMEOUT);
    ck_assert_msg(strstr(r.text, "timed out waiting for a reply"), "%s", r.text);
    mock.hold = HOLD_NONE; /* a retry now would send the held PING first */
    static const char *const echo[] = {"ECHO", "after"};
    ck_assert_int_eq(nx_send(c, 2, echo, 2, 0), RESP_OK);
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, net_now_ns() + 2000 * 1000000LL), 1);
    ck_assert_msg(r.status == RESP_OK, "%s", r.text);
    ck_assert_str_eq(r.text, "after");
    ck_assert_uint_eq(r.tag.seq, 2);
    ck_assert_int_eq(mock.violations, 0);
    ck_assert_int_eq(mock.sessions, 2); /* the stale connection was not reused */
    net_conn_free(c);
}
END_TEST

/* A refusal the transport reports after the handshake (TLS 1.3 sends
 * 'certificate required' then), while most requests were not written yet
 * (the first 16 KiB are held by the write): every queued request fails
 * with it at once; reconnecting would meet the same. */
START_TEST(test_refusal_fails_queued_requests)
{
    reset_mock(HOLD_FOREVER, 4096);
    mock.refuse = 1;
    net_conn *c = mock_conn_new(1000);
    static const char *const ping[] = {"PING"};
    enum { N = 3000 }; /* 42 KB of requests */
    for (uint32_t i = 0; i < N; i++)
        ck_assert_int_eq(nx_send(c, 1, ping, i, 0), RESP_OK);
    static nx_result r[N];
    double t0 = fx_now_ms();
    ck_assert_uint_eq(nx_run(&c, 1, r, N, net_now_ns() + 3000 * 1000000LL), N);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(r[i].status, RESP_ERR_TLS);
        ck_assert_msg(strstr(r[i].text, "requires a client certificate"), "%s", r[i].text);
    }
    ck_assert_double_lt(fx_now_ms() - t0, 500);
    ck_assert_int_eq(mock.sessions, 1);
    net_conn_free(c);
}
END_TEST

/* The library end to end over the mock: a lock cycle, a waiter woken by a
 * release through its listener (a second connection over the transport),
 * and no allocation per cycle. */
START_TEST(test_library_over_a_transport)
{
    reset_mock(HOLD_EVERY_OTHER, 5);
    redlock_options o;
    redlock_options_init(&o);
    o.tls = &mock_transport;
    tu_alloc_start(0);
    redlock_client *c = tu_client_opts((const char *[]){mock_url()}, 1, &o);
    redlock *l = tu_lock(c, "mock:lock", "me", 5000);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_client_errstr(c));
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    long before = tu_alloc.calls;
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    ck_assert_int_eq(tu_alloc.calls - before, 0);
    tu_alloc_stop();
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    redlock *w = tu_lock(c, "mock:lock", "waiter", 5000);
    ck_assert_int_eq(redlock_start_lock(w, 3000), REDLOCK_OK);
    double end = fx_now_ms() + 3000, released = 0;
    int rc = REDLOCK_IN_PROGRESS;
    while (rc == REDLOCK_IN_PROGRESS && fx_now_ms() < end) {
        struct pollfd fds[4];
        int n = redlock_client_pollfds(c, fds, 4);
        int t = redlock_client_timeout_ms(c);
        ck_assert_int_ge(poll(fds, (nfds_t)n, t < 0 || t > 20 ? 20 : t), 0);
        redlock_client_process(c, fds, n);
        if (redlock_client_done(c) == w)
            rc = redlock_result(w);
        if (!released && fx_now_ms() > end - 2800) {
            ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
            released = fx_now_ms();
        }
    }
    ck_assert_int_eq(rc, REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - released, 200); /* the release, not the backoff */
    ck_assert_int_eq(mock.sessions, 2);               /* commands and the listener */
    ck_assert_int_eq(mock.violations, 0);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(w);
    redlock_free(l);
    redlock_client_free(c);
    ck_assert_int_eq(mock.freed, mock.configs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("transport");
    TCase *t = tcase_create("mock");
    tcase_set_timeout(t, 60);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, test_retry_same_bytes_and_pending);
    tcase_add_test(t, test_held_request_counts_as_written);
    tcase_add_test(t, test_refusal_fails_queued_requests);
    tcase_add_test(t, test_library_over_a_transport);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
