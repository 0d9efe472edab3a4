/* test_tls.c - rediss:// through the OpenSSL transport (tls_openssl.c),
 * against redis-server with --tls-port and throwaway certificates
 * (fx_tls.h), and against small servers of our own that misbehave: one
 * that never speaks, one that answers in plain text, one that drops the
 * connection in the middle of a TLS record. Built only by the TLS build
 * (make test runs it through make test-tls).
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "fx_cluster.h"
#include "fx_sentinel.h"
#include "fx_tls.h"
#include "netx.h"
#include "testutil.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FX_BUILD_DIR
#define FX_BUILD_DIR "build/tls"
#endif
#ifndef FX_EXAMPLES_DIR
#define FX_EXAMPLES_DIR FX_BUILD_DIR "/examples"
#endif

static fx_tls certs;
static fx_server srv; /* the server certificate, no client certificates, a plain port too */

/* REDLOCK_TEST_SLOW=N (make test-valgrind) stretches deadlines and the
 * upper bounds on elapsed times N-fold; lower bounds stay. */
static int slow = 1;
#define MS(x) ((x)*slow)

/* ---- OpenSSL's own allocations, counted for the report ------------------------------ */

static long ossl_allocs;

static void *count_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    ossl_allocs++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    ossl_allocs++;
    return realloc(p, n);
}

static void count_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

/* ---- helpers ---------------------------------------------------------------------------- */

static void setup(void)
{
    ck_assert_int_eq(fx_tls_make(&certs), 0);
    fx_opts o;
    memset(&o, 0, sizeof o);
    fx_tls_opts(&o, &certs, FX_TLS_SERVER, "no");
    o.tls_plain = 1;
    o.unix_socket = 1;
    ck_assert_int_eq(fx_server_start(&srv, &o), 0);
}

static void teardown(void)
{
    fx_server_stop(&srv);
    fx_tls_free(&certs);
}

/* rediss:// to s with the parameters of c (NULL: none). Static: valid for
 * the next 15 calls. */
static const char *url_of(const fx_server *s, const fx_tls_client *c)
{
    static char bufs[16][1024];
    static int k;
    char *u = bufs[k++ % 16];
    ck_assert_int_eq(fx_tls_url(u, sizeof bufs[0], s, c), 0);
    return u;
}

static const char *trusted(const fx_server *s)
{
    fx_tls_client c = {.ca = certs.ca};
    return url_of(s, &c);
}

static void tls_options(redlock_options *o, int timeout_ms)
{
    redlock_options_init(o);
    o->tls = redlock_tls_openssl();
    o->connect_timeout_ms *= slow;
    o->io_timeout_ms *= slow;
    if (timeout_ms > 0)
        o->connect_timeout_ms = o->io_timeout_ms = MS(timeout_ms);
}

static redlock_client *tls_client_n(const char *const *urls, size_t n, int timeout_ms)
{
    redlock_options o;
    tls_options(&o, timeout_ms);
    return tu_client_opts(urls, n, &o);
}

static redlock_client *tls_client(const char *url, int timeout_ms)
{
    return tls_client_n(&url, 1, timeout_ms);
}

/* One trylock on a fresh client for url: its status; the detail in why. */
static int try_once(const char *url, const redlock_options *o, char *why, size_t whylen, double *ms)
{
    redlock_client *c = tu_client_opts(&url, 1, o);
    redlock *l = tu_lock(c, "tls:try", NULL, MS(5000));
    double t0 = fx_now_ms();
    int rc = redlock_trylock(l);
    if (ms)
        *ms = fx_now_ms() - t0;
    snprintf(why, whylen, "%s", redlock_client_errstr(c));
    if (rc == REDLOCK_OK)
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    /* whatever happened, OpenSSL's error queue (the application's too) is
     * left empty */
    ck_assert_uint_eq(ERR_peek_error(), 0);
    return rc;
}

static int try_url(const char *url, char *why, size_t whylen)
{
    redlock_options o;
    tls_options(&o, 2000);
    return try_once(url, &o, why, whylen, NULL);
}

static void expect_tls_error(const char *url, const char *says)
{
    char why[512];
    int rc = try_url(url, why, sizeof why);
    ck_assert_msg(rc == REDLOCK_ERR_TLS, "%s: %s (%s)", url, redlock_strerror(rc), why);
    ck_assert_msg(strstr(why, says), "%s: want '%s' in: %s", url, says, why);
}

static void expect_ok(const char *url)
{
    char why[512];
    int rc = try_url(url, why, sizeof why);
    ck_assert_msg(rc == REDLOCK_OK, "%s: %s (%s)", url, redlock_strerror(rc), why);
}

static long info_number(fx_server *s, const char *field)
{
    char out[8192];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, "INFO stats"), 0);
    const char *p = strstr(out, field);
    ck_assert_ptr_nonnull(p);
    return atol(p + strlen(field) + 1);
}

/* A net_conn over the TLS transport, parser limits raised to 1 MiB. */
static net_conn *tls_conn(const char *url, int timeout_ms)
{
    net_url u;
    char err[256];
    ck_assert_msg(net_url_parse(&u, NULL, url, err, sizeof err) == RESP_OK, "%s", err);
    net_opts o;
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = o.io_timeout_ms = MS(timeout_ms);
    o.limits.max_bulk = 1u << 20;
    o.max_reply = (1u << 20) + 4096;
    o.tls = redlock_tls_openssl();
    net_conn *c = NULL;
    ck_assert_int_eq(net_conn_new(&c, &u, &o), RESP_OK);
    return c;
}

/* ---- servers of our own -------------------------------------------------------------------- */

/* A loopback listener on a free port. */
static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

enum {
    FAKE_PLAIN_TEXT,
    FAKE_HALF_RECORD,
    FAKE_LATE_TICKET,
    FAKE_SPLIT_REPLY,
    FAKE_BURST,
    FAKE_CLOSE
};
#define BURST 48         /* replies of 1024 bytes: three full records */
#define SPLIT_BULK 16450 /* "$16450\r\n" + data + "\r\n": 16384 + 81 bytes */

/* A handler of a fake server stops serving this client. */
static int give_up(SSL *ssl, int fd)
{
    SSL_free(ssl);
    close(fd);
    return -1;
}

/* A TLS server session on fd, handshake done (tickets only when asked). */
static SSL *fake_accept(int fd)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, certs.server_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, certs.server_key, SSL_FILETYPE_PEM) != 1)
        _exit(3);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) { /* the client gave up: serve the next one */
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ssl;
}

/* A TLS server that answers every request with +PONG and, 10 ms after the
 * first answer, sends a session ticket unasked, as TLS 1.3 servers may do
 * at any time. */
static int late_ticket(int fd)
{
    SSL *ssl = fake_accept(fd);
    if (!ssl) {
        close(fd);
        return -1;
    }
    char buf[4096];
    for (int n = 0; SSL_read(ssl, buf, sizeof buf) > 0; n++) {
        if (SSL_write(ssl, "+PONG\r\n", 7) != 7)
            break;
        if (n == 0) {
            usleep(10 * 1000);
            if (SSL_new_session_ticket(ssl) != 1 || SSL_do_handshake(ssl) != 1)
                return give_up(ssl, fd);
        }
    }
    close(fd);
    return 0;
}

/* A TLS server that answers one request with a bulk reply in two records
 * (16384 bytes, then the rest), sent with one send(), and stays quiet. */
static int split_reply(int fd)
{
    static char reply[SPLIT_BULK + 16];
    SSL *ssl = fake_accept(fd);
    if (!ssl) {
        close(fd);
        return -1;
    }
    if (SSL_read(ssl, reply, sizeof reply) <= 0)
        return give_up(ssl, fd);
    int n = snprintf(reply, sizeof reply, "$%d\r\n", SPLIT_BULK);
    memset(reply + n, 's', SPLIT_BULK);
    memcpy(reply + n + SPLIT_BULK, "\r\n", 2);
    n += SPLIT_BULK + 2;
    BIO *mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(ssl, mem);
    if (SSL_write(ssl, reply, 16384) != 16384 || SSL_write(ssl, reply + 16384, n - 16384) <= 0)
        return give_up(ssl, fd);
    char *rec;
    long len = BIO_get_mem_data(mem, &rec);
    if (send(fd, rec, (size_t)len, MSG_NOSIGNAL) != len)
        return give_up(ssl, fd);
    sleep(5);
    close(fd);
    return 0;
}

/* A TLS server that answers a PING, then takes a batch of BURST requests
 * and answers them with BURST replies of 1024 bytes, 16 to a record,
 * sent with one send(): the first record fills a 16 KiB read buffer with
 * whole replies while the next ones wait inside OpenSSL. */
static int burst(int fd)
{
    static char reply[BURST * 1024];
    char buf[8192];
    SSL *ssl = fake_accept(fd);
    if (!ssl) {
        close(fd);
        return -1;
    }
    if (SSL_read(ssl, buf, sizeof buf) <= 0 || SSL_write(ssl, "+PONG\r\n", 7) != 7)
        return give_up(ssl, fd);
    if (SSL_read(ssl, buf, sizeof buf) <= 0)
        return give_up(ssl, fd);
    usleep(50 * 1000); /* the rest of the batch arrives; read it all */
    struct timeval tv = {0, 20000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (SSL_read(ssl, buf, sizeof buf) > 0) {
    }
    for (int i = 0; i < BURST; i++) {
        memcpy(reply + i * 1024, "$1015\r\n", 7);
        memset(reply + i * 1024 + 7, 'a' + i % 26, 1015);
        memcpy(reply + i * 1024 + 1022, "\r\n", 2);
    }
    BIO *mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(ssl, mem);
    for (int r = 0; r < BURST / 16; r++)
        if (SSL_write(ssl, reply + r * 16384, 16384) != 16384)
            return give_up(ssl, fd);
    char *rec;
    long len = BIO_get_mem_data(mem, &rec);
    if (send(fd, rec, (size_t)len, MSG_NOSIGNAL) != len)
        return give_up(ssl, fd);
    sleep(5);
    close(fd);
    return 0;
}

/* A TLS server that takes one request and sends half of the record that
 * carries the reply, then closes. */
static int half_record(int fd)
{
    SSL *ssl = fake_accept(fd);
    if (!ssl) {
        close(fd);
        return -1;
    }
    char buf[4096];
    if (SSL_read(ssl, buf, sizeof buf) <= 0)
        return give_up(ssl, fd);
    BIO *mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(ssl, mem); /* the record is made here, not sent */
    static const char reply[] = "*2\r\n:1\r\n:1\r\n";
    if (SSL_write(ssl, reply, (int)sizeof reply - 1) <= 0)
        return give_up(ssl, fd);
    char *rec;
    long n = BIO_get_mem_data(mem, &rec);
    if (n < 10 || send(fd, rec, (size_t)n / 2, MSG_NOSIGNAL) != n / 2)
        return give_up(ssl, fd);
    usleep(50 * 1000);
    close(fd);
    return 0;
}

/* Serve connections on lfd in a child, each as mode says. */
static pid_t start_fake(int lfd, int mode)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid > 0) {
        close(lfd);
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    alarm(30);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        if (mode == FAKE_HALF_RECORD) {
            half_record(fd);
            continue;
        }
        if (mode == FAKE_LATE_TICKET) {
            late_ticket(fd);
            continue;
        }
        if (mode == FAKE_SPLIT_REPLY) {
            split_reply(fd);
            continue;
        }
        if (mode == FAKE_BURST) {
            burst(fd);
            continue;
        }
        if (mode == FAKE_CLOSE) { /* the handshake, then the socket closes */
            SSL *ssl = fake_accept(fd);
            close(fd);
            if (ssl)
                SSL_free(ssl);
            continue;
        }
        char buf[2048];
        if (recv(fd, buf, sizeof buf, 0) > 0) {
            static const char msg[] = "-ERR unknown command\r\n";
            if (send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL) < 0) {
                /* the client went: next */
            }
        }
        usleep(100 * 1000);
        close(fd);
    }
}

static void stop_fake(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- the lock over TLS ------------------------------------------------------------------------
 */

START_TEST(test_no_transport)
{
    redlock_client *c = NULL;
    const char *url = trusted(&srv);
    ck_assert_int_eq(redlock_client_new(&c, &url, 1, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_null(c);
    const char *why = redlock_last_errstr();
    ck_assert_msg(strstr(why, "redlock_options.tls") && strstr(why, "make TLS=openssl"), "%s", why);
    /* in a quorum, the URL is named */
    const char *two[2] = {srv.url, url};
    ck_assert_int_eq(redlock_client_new(&c, two, 2, NULL), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "URL 2: rediss:// needs TLS"));
    /* the transport is a static table */
    ck_assert_ptr_eq(redlock_tls_openssl(), redlock_tls_openssl());
    ck_assert_str_eq(redlock_tls_openssl()->name, "openssl");
}
END_TEST

START_TEST(test_lock_cycle)
{
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "DEL tls:cycle {tls:cycle}:fence"), 0);
    redlock_client *c = tls_client(trusted(&srv), 0);
    redlock *l = tu_lock(c, "tls:cycle", "owner-1", 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert(tu_seeded(redlock_fence(l)));
    ck_assert_str_eq(tu_get(&srv, "tls:cycle"), "owner-1"); /* the plain port sees it */
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
    redlock_info info;
    ck_assert_int_eq(redlock_inspect(l, &info), REDLOCK_OK);
    ck_assert(info.held && info.ours);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_str_eq(tu_get(&srv, "tls:cycle"), "");
    /* another owner over TLS is refused while we hold it */
    redlock *other = tu_lock(c, "tls:cycle", "owner-2", 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(other), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_unlock(other), REDLOCK_NOT_HELD);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(other);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* After the handshake a cycle allocates nothing in the library; what
 * OpenSSL allocates is counted and reported. */
START_TEST(test_no_alloc_per_cycle)
{
    tu_alloc_start(0);
    long o0 = ossl_allocs;
    redlock_client *c = tls_client(trusted(&srv), 0);
    redlock *l = tu_lock(c, "tls:alloc", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* connect, handshake, scripts */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    long ours_connect = tu_alloc.calls, ossl_connect = ossl_allocs - o0;
    for (int i = 0; i < 5; i++) { /* session tickets and buffers settle */
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    long ours = tu_alloc.calls, ossl = ossl_allocs;
    const int cycles = 200;
    for (int i = 0; i < cycles; i++) {
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    }
    ck_assert_int_eq(tu_alloc.calls - ours, 0);
    printf(
        "tls: allocations for client + lock + connect + TLS handshake: library %ld, "
        "OpenSSL %ld; per trylock+refresh+unlock cycle after that: library %ld, OpenSSL %.2f\n",
        ours_connect, ossl_connect, tu_alloc.calls - ours, (double)(ossl_allocs - ossl) / cycles);
    redlock_free(l);
    redlock_client_free(c);
    tu_alloc_stop();
}
END_TEST

/* Every library allocation made to fail in turn, the transport's own
 * (settings, session) included: REDLOCK_ERR_NOMEM or success, cleanly (no
 * leak: ASan and valgrind runs check that). */
START_TEST(test_alloc_failure)
{
    int saw_nomem = 0, saw_ok = 0;
    redlock_options o;
    tls_options(&o, 0);
    const char *url = trusted(&srv);
    for (long fail_at = 1; fail_at < 32 && !saw_ok; fail_at++) {
        tu_alloc_start(fail_at);
        redlock_client *c = NULL;
        redlock *a = NULL;
        int rc = redlock_client_new(&c, &url, 1, &o);
        if (rc == REDLOCK_OK)
            rc = redlock_new(&a, c, "tls:nomem", NULL, 5000);
        if (rc == REDLOCK_OK)
            rc = redlock_trylock(a);
        if (rc == REDLOCK_OK)
            rc = redlock_unlock(a);
        ck_assert_msg(rc == REDLOCK_OK || rc == REDLOCK_ERR_NOMEM, "fail_at %ld: %s (%s)", fail_at,
                      redlock_strerror(rc), c ? redlock_client_errstr(c) : redlock_last_errstr());
        saw_nomem |= rc == REDLOCK_ERR_NOMEM;
        saw_ok |= rc == REDLOCK_OK;
        redlock_free(a);
        redlock_client_free(c);
        tu_alloc_stop();
    }
    ck_assert(saw_nomem && saw_ok);
}
END_TEST

/* A waiter over TLS is woken by the release (its listener is a TLS
 * connection too), not by its backoff or the holder's TTL. */
START_TEST(test_wait_and_wake)
{
    redlock_options o;
    tls_options(&o, 0);
    o.retry_min_ms = o.retry_max_ms = 8000; /* no backoff wake-up within the test */
    const char *url = trusted(&srv);
    redlock_client *holder = tls_client(url, 0), *waiter = tu_client_opts(&url, 1, &o);
    redlock *h = tu_lock(holder, "tls:wake", "holder", 20000);
    redlock *w = tu_lock(waiter, "tls:wake", "waiter", 20000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 10000), REDLOCK_OK);
    double released = 0, end = fx_now_ms() + 5000;
    int rc = REDLOCK_IN_PROGRESS;
    while (rc == REDLOCK_IN_PROGRESS && fx_now_ms() < end) {
        struct pollfd fds[8];
        int n = redlock_client_pollfds(waiter, fds, 8);
        ck_assert_int_le(n, 8);
        int t = redlock_client_timeout_ms(waiter);
        ck_assert_int_ge(poll(fds, (nfds_t)n, t < 0 || t > 20 ? 20 : t), 0);
        redlock_client_process(waiter, fds, n);
        if (redlock_client_done(waiter) == w)
            rc = redlock_result(w);
        if (!released && fx_now_ms() > end - 4700) { /* 300 ms in: subscribed by now */
            ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
            released = fx_now_ms();
        }
    }
    ck_assert_int_eq(rc, REDLOCK_OK);
    double woke = fx_now_ms() - released;
    ck_assert_msg(released > 0 && woke < MS(300), "woken %.1f ms after the release", woke);
    ck_assert_str_eq(tu_get(&srv, "tls:wake"), "waiter");
    printf("tls: a waiter woke %.1f ms after the release\n", woke);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(h);
    redlock_free(w);
    redlock_client_free(holder);
    redlock_client_free(waiter);
}
END_TEST

/* CLIENT LIST lines of s whose local address is port (connections made to it). */
static int clients_on_port(fx_server *s, int port)
{
    static char out[65536];
    char want[48];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, "CLIENT LIST"), 0);
    snprintf(want, sizeof want, "laddr=127.0.0.1:%d ", port);
    int k = 0;
    for (const char *p = out; (p = strstr(p, want)) != NULL; p += strlen(want))
        k++;
    return k;
}

/* rediss:// with cluster=1 (as on managed Redis with in-transit encryption):
 * a 2-primary cluster whose nodes speak TLS (tls-cluster yes), seeded by one
 * TLS URL. The slot map asked over TLS names the TLS ports, and the client
 * reaches both shards over TLS with the seed's CA: locks land on the node
 * that serves their slot, and a waiter is woken over its TLS listener by
 * the sharded release. */
START_TEST(test_cluster_over_tls)
{
    fx_cluster cl;
    fx_opts fo;
    memset(&fo, 0, sizeof fo);
    fx_tls_opts(&fo, &certs, FX_TLS_SERVER, "no");
    fo.tls_plain = 1;
    ck_assert_int_eq(fx_cluster_start_opts(&cl, 2, 0, &fo), 0);
    char url[1024];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?cluster=1&ca=%s", cl.node[0].tls_port,
             certs.ca);
    /* a name on each primary */
    char names[2][16] = {"", ""};
    for (char ch = 'a'; ch <= 'z' && (!names[0][0] || !names[1][0]); ch++) {
        char name[16];
        snprintf(name, sizeof name, "{%c}tls", ch);
        int owner = fx_cluster_slot_owner(&cl, fx_cluster_keyslot(&cl, name, strlen(name)));
        ck_assert(owner == 0 || owner == 1);
        if (!names[owner][0])
            snprintf(names[owner], sizeof names[owner], "%s", name);
    }
    ck_assert(names[0][0] && names[1][0]);

    redlock_client *c = tls_client(url, 0);
    for (int k = 0; k < 2; k++) {
        redlock *l = tu_lock(c, names[k], NULL, 20000);
        ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_errstr(l));
        ck_assert(tu_seeded(redlock_fence(l)));
        ck_assert_str_eq(tu_get(&cl.node[k], names[k]), redlock_value(l));
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        ck_assert_str_eq(tu_get(&cl.node[k], names[k]), "");
        redlock_free(l);
        /* the client's connection to this shard came in on its TLS port;
         * on the plain port there is only the one asking */
        ck_assert_int_ge(clients_on_port(&cl.node[k], cl.node[k].tls_port), 1);
        ck_assert_int_eq(clients_on_port(&cl.node[k], cl.node[k].port), 1);
    }

    /* a waiter on the second shard, woken by the release */
    redlock_options o;
    tls_options(&o, 0);
    o.retry_min_ms = o.retry_max_ms = 8000; /* no backoff wake-up within the test */
    const char *wurl = url;
    redlock_client *wc = tu_client_opts(&wurl, 1, &o);
    redlock *h = tu_lock(c, names[1], "holder", 30000), *w = tu_lock(wc, names[1], "waiter", 30000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 10000), REDLOCK_OK);
    double released = 0, end = fx_now_ms() + MS(5000);
    int rc = REDLOCK_IN_PROGRESS;
    while (rc == REDLOCK_IN_PROGRESS && fx_now_ms() < end) {
        struct pollfd fds[8];
        int n = redlock_client_pollfds(wc, fds, 8);
        ck_assert_int_le(n, 8);
        int t = redlock_client_timeout_ms(wc);
        ck_assert_int_ge(poll(fds, (nfds_t)n, t < 0 || t > 20 ? 20 : t), 0);
        redlock_client_process(wc, fds, n);
        if (redlock_client_done(wc) == w)
            rc = redlock_result(w);
        /* release once the waiter listens on the shard (SSUBSCRIBE) */
        if (!released) {
            char cmd[64], rep[128];
            snprintf(cmd, sizeof cmd, "PUBSUB SHARDNUMSUB %s:freed", names[1]);
            ck_assert_int_eq(fx_cmd(&cl.node[1], rep, sizeof rep, cmd), 0);
            if (strstr(rep, "\n1")) {
                ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
                released = fx_now_ms();
            }
        }
    }
    ck_assert_msg(rc == REDLOCK_OK, "waiter: %s", redlock_errstr(w));
    double woke = fx_now_ms() - released;
    ck_assert_msg(released > 0 && woke < MS(1000), "woken %.1f ms after the release", woke);
    ck_assert_str_eq(tu_get(&cl.node[1], names[1]), "waiter");
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(h);
    redlock_free(w);
    redlock_client_free(wc);
    redlock_client_free(c);
    fx_cluster_stop(&cl);
}
END_TEST

/* rediss+sentinel://: TLS to the sentinels and to the master they name,
 * with the URL's parameters for both (the CA here); after a failover the
 * connection moves to the new master over TLS (its settings made again
 * for the new address), and every lock connection came in on a TLS port. */
START_TEST(test_sentinel_over_tls)
{
    static fx_sentinel fx;
    fx_sentinel_opts so = {1, 1, NULL, &certs};
    ck_assert_int_eq(fx_sentinel_start(&fx, &so), 0);
    redlock_client *c = tls_client(fx.tls_url[0], 0);
    redlock *l = tu_lock(c, "tls:sentinel", NULL, 20000);
    int from = fx_sentinel_master(&fx, 0);
    fx_server *m = fx_sentinel_server(&fx, 0, from);
    ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_errstr(l));
    ck_assert_str_eq(tu_get(m, "tls:sentinel"), redlock_value(l));
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_ge(clients_on_port(m, m->tls_port), 1);
    ck_assert_int_eq(clients_on_port(m, m->port), 1); /* the one asking */
    int to = fx_sentinel_failover(&fx, 0);
    ck_assert_int_ge(to, 0);
    fx_server *nw = fx_sentinel_server(&fx, 0, to);
    fx_sleep_ms(20);
    ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_errstr(l));
    ck_assert_str_eq(tu_get(nw, "tls:sentinel"), redlock_value(l));
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_ge(clients_on_port(nw, nw->tls_port), 1);
    ck_assert_int_eq(clients_on_port(nw, nw->port), 1);
    redlock_free(l);
    redlock_client_free(c);
    fx_sentinel_stop(&fx);
}
END_TEST

/* Quorum over TLS nodes, and over TLS and plain nodes mixed. */
START_TEST(test_quorum_mixed)
{
    fx_server a, b, plain;
    ck_assert_int_eq(fx_tls_server_start(&a, &certs, FX_TLS_SERVER, "no", 1), 0);
    ck_assert_int_eq(fx_tls_server_start(&b, &certs, FX_TLS_SERVER, "no", 1), 0);
    ck_assert_int_eq(fx_server_start(&plain, NULL), 0);
    const char *all_tls[3] = {trusted(&srv), trusted(&a), trusted(&b)};
    const char *mixed[3] = {trusted(&a), plain.url, trusted(&b)};
    fx_server *mixed_s[3] = {&a, &plain, &b};

    redlock_client *c = tls_client_n(all_tls, 3, 0);
    redlock *l = tu_lock(c, "tls:quorum", "q-owner", 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_str_eq(tu_get(&srv, "tls:quorum"), "q-owner");
    ck_assert_str_eq(tu_get(&a, "tls:quorum"), "q-owner");
    ck_assert_str_eq(tu_get(&b, "tls:quorum"), "q-owner");
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);

    c = tls_client_n(mixed, 3, 500);
    l = tu_lock(c, "tls:mixed", "m-owner", 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_str_eq(tu_get(mixed_s[i], "tls:mixed"), "m-owner");
    uint64_t fence = redlock_fence(l);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    /* one TLS node down: still a quorum, the fence still rises */
    fx_server_kill(&b);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_uint_gt(redlock_fence(l), fence);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&a);
    fx_server_stop(&b);
    fx_server_stop(&plain);
}
END_TEST

/* Unix sockets stay plain, also on a client with a transport. */
START_TEST(test_unix_stays_plain)
{
    redlock_client *c = tls_client(srv.unix_url, 0);
    redlock *l = tu_lock(c, "tls:unix", "u", 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    redlock_options o;
    tls_options(&o, 0);
    redlock_client *bad = NULL;
    const char *sni_unix = "unix:///tmp/x.sock?sni=h";
    ck_assert_int_eq(redlock_client_new(&bad, &sni_unix, 1, &o), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "TLS needs a rediss:// URL"));
}
END_TEST

/* ---- verification -------------------------------------------------------------------------------
 */

START_TEST(test_other_ca_refused)
{
    fx_server s;
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_OTHER_CA, "no", 0), 0);
    expect_tls_error(trusted(&s),
                     "certificate verify failed: unable to get local issuer certificate");
    expect_tls_error(url_of(&s, NULL), "certificate verify failed"); /* the system store */
    fx_tls_client other = {.ca = certs.other_ca};
    expect_ok(url_of(&s, &other));

    /* never retried: redlock_lock returns at once, not when the wait ends */
    redlock_client *c = tls_client(trusted(&s), 0);
    redlock *l = tu_lock(c, "tls:retry", NULL, 5000);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(l, 3000), REDLOCK_ERR_TLS);
    ck_assert_double_lt(fx_now_ms() - t0, MS(1000));
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "certificate verify failed"));
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

/* The event hook hears of the refused handshake (status REDLOCK_ERR_TLS,
 * OpenSSL's reason) and, over the right CA, of the connection made; the
 * node's counters agree. */
START_TEST(test_tls_events)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    fx_server s;
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_OTHER_CA, "no", 0), 0);
    fx_tls_client other = {.ca = certs.other_ca};
    const char *urls[2] = {trusted(&s), url_of(&s, &other)};
    for (int k = 0; k < 2; k++) {
        redlock_client *c = tls_client(urls[k], 0);
        redlock_client_on_event(c, tu_record, &ev);
        redlock *l = tu_lock(c, "tls:events", NULL, 5000);
        ck_assert_int_eq(redlock_trylock(l), k ? REDLOCK_OK : REDLOCK_ERR_TLS);
        redlock_stats st;
        ck_assert_int_eq(redlock_client_stats(c, &st, sizeof st), REDLOCK_OK);
        ck_assert_uint_eq(st.node[0].connect_failures, k ? 0 : 1);
        ck_assert_uint_eq(st.node[0].errors[REDLOCK_ERR_TLS], k ? 0 : 1);
        ck_assert_uint_eq(st.node[0].connects, k ? 1 : 0);
        redlock_free(l);
        redlock_client_free(c);
    }
    const tu_event *f = tu_events_find(&ev, REDLOCK_EVENT_CONNECT_FAILED);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->status, REDLOCK_ERR_TLS);
    ck_assert_msg(strstr(f->detail, "TLS handshake") && strstr(f->detail, "certificate verify failed"),
                  "%s", f->detail);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_CONNECT_FAILED), 1);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_CONNECTED), 1);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_host_name)
{
    fx_server s;
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_WRONG_NAME, "no", 0), 0);
    expect_tls_error(trusted(&s),
                     "host name mismatch: the certificate is not for 127.0.0.1 "
                     "(it names DNS:wrong.example)");
    fx_tls_client by_name = {.host = "localhost", .ca = certs.ca};
    expect_tls_error(url_of(&s, &by_name), "not for localhost");
    fx_tls_client sni = {.ca = certs.ca, .sni = "wrong.example"};
    expect_ok(url_of(&s, &sni));
    fx_tls_client sni_bad = {.ca = certs.ca, .sni = "other.example"};
    expect_tls_error(url_of(&s, &sni_bad), "not for other.example");
    fx_server_stop(&s);
    /* the right names: an IP address and a DNS name in the certificate */
    expect_ok(trusted(&srv));
    fx_tls_client localhost = {.host = "localhost", .ca = certs.ca};
    expect_ok(url_of(&srv, &localhost));
}
END_TEST

START_TEST(test_client_certificate)
{
    fx_server s;
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_SERVER, "yes", 0), 0);
    /* TLS 1.3: the refusal comes with the first read after the handshake.
     * Under valgrind the client may write its request after the server
     * closed; the reset that answers it can discard the alert, and what is
     * left is an I/O error (which redlock_lock retries, below). */
    if (slow > 1) {
        char why[512];
        int rc = try_url(trusted(&s), why, sizeof why);
        ck_assert_msg((rc == REDLOCK_ERR_TLS && strstr(why, "requires a client certificate")) ||
                          rc == REDLOCK_ERR_IO || rc == REDLOCK_ERR_TIMEOUT,
                      "%s: %s", redlock_strerror(rc), why);
    } else {
        expect_tls_error(trusted(&s), "requires a client certificate");
    }
    fx_tls_client with = {.ca = certs.ca, .cert = certs.client_cert, .key = certs.client_key};
    expect_ok(url_of(&s, &with));
    fx_tls_client foreign = {.ca = certs.ca, .cert = certs.other_cert, .key = certs.other_key};
    expect_tls_error(url_of(&s, &foreign), "does not accept our client certificate");

    /* the same from the options, for every rediss:// URL of the client */
    redlock_options o;
    tls_options(&o, 2000);
    char cert[400], key[400], why[512];
    snprintf(cert, sizeof cert, "%s", certs.client_cert);
    snprintf(key, sizeof key, "%s", certs.client_key);
    o.tls_cert = cert;
    o.tls_key = key;
    o.tls_ca = certs.ca;
    redlock_client *c = tu_client_opts((const char *[]){s.tls_url}, 1, &o);
    memset(cert, 0, sizeof cert); /* copied by redlock_client_new */
    memset(key, 0, sizeof key);
    /* held across the 3 s wait below, which valgrind may spend retrying */
    redlock *l = tu_lock(c, "tls:cert", NULL, (uint32_t)MS(5000));
    ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_client_errstr(c));
    o.tls_cert = certs.client_cert;
    o.tls_key = certs.client_key;
    ck_assert_int_eq(try_once(trusted(&s), &o, why, sizeof why, NULL), REDLOCK_OK);
    /* without: refused, and never retried (redlock_lock returns at once) */
    o.tls_cert = o.tls_key = NULL;
    redlock_client *c2 = tu_client_opts((const char *[]){trusted(&s)}, 1, &o);
    redlock *l2 = tu_lock(c2, "tls:cert2", NULL, 5000);
    double t0 = fx_now_ms();
    int rc2 = redlock_lock(l2, 3000);
    if (slow == 1 || rc2 == REDLOCK_ERR_TLS) {
        ck_assert_int_eq(rc2, REDLOCK_ERR_TLS);
        ck_assert_double_lt(fx_now_ms() - t0, MS(1000));
    } else {
        ck_assert_msg(rc2 == REDLOCK_ERR_IO || rc2 == REDLOCK_ERR_TIMEOUT, "%s",
                      redlock_strerror(rc2));
    }
    redlock_free(l2);
    redlock_client_free(c2);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

/* insecure=1 reaches a self-signed server; nothing else does. */
START_TEST(test_insecure_only)
{
    fx_server s;
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_SELF_SIGNED, "no", 0), 0);
    expect_tls_error(url_of(&s, NULL), "certificate verify failed: self-signed certificate");
    expect_tls_error(trusted(&s), "certificate verify failed: self-signed certificate");
    fx_tls_client other = {.ca = certs.other_ca};
    expect_tls_error(url_of(&s, &other), "certificate verify failed");
    fx_tls_client insecure = {.insecure = 1};
    expect_ok(url_of(&s, &insecure));
    redlock_options o;
    tls_options(&o, 2000);
    o.tls_insecure = 1;
    char why[512];
    ck_assert_int_eq(try_once(url_of(&s, NULL), &o, why, sizeof why, NULL), REDLOCK_OK);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_bad_files)
{
    fx_tls_client c = {.ca = "/nonexistent/ca.pem"};
    expect_tls_error(url_of(&srv, &c), "cannot load ca=/nonexistent/ca.pem");
    fx_tls_client not_pem = {.ca = "/etc/hostname"};
    expect_tls_error(url_of(&srv, &not_pem), "cannot load ca=/etc/hostname");
    fx_tls_client key_mismatch = {
        .ca = certs.ca, .cert = certs.client_cert, .key = certs.other_key};
    expect_tls_error(url_of(&srv, &key_mismatch), "does not match cert=");
    char enc[400], out[1024];
    snprintf(enc, sizeof enc, "%s/encrypted.key", certs.dir);
    const char *argv[] = {"openssl", "pkey",     "-in",         certs.client_key,
                          "-aes256", "-passout", "pass:secret", "-out",
                          enc,       NULL};
    ck_assert_int_eq(fx_run(out, sizeof out, 10000, argv), 0);
    fx_tls_client encrypted = {.ca = certs.ca, .cert = certs.client_cert, .key = enc};
    expect_tls_error(url_of(&srv, &encrypted), "is encrypted: give an unencrypted key");
    redlock_options o;
    tls_options(&o, 0);
    redlock_client *bad = NULL;
    fx_tls_client key_only = {.ca = certs.ca, .key = certs.client_key};
    const char *u = url_of(&srv, &key_only);
    ck_assert_int_eq(redlock_client_new(&bad, &u, 1, &o), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_last_errstr(), "key= needs its certificate"));
}
END_TEST

/* The transport's own message for ca/cert/key ("" for unset), which must
 * be REDLOCK_ERR_TLS and exactly want, with OpenSSL's queue left empty. */
static void expect_config_error(const char *ca, const char *cert, const char *key,
                                const char *want)
{
    redlock_tls_params p = {"127.0.0.1", "", ca, cert, key, 0};
    char err[400];
    void *cfg = NULL;
    int rc = redlock_tls_openssl()->config_new(&cfg, &p, err, sizeof err);
    ck_assert_msg(rc == REDLOCK_ERR_TLS, "%s: %s (%s)", want, redlock_strerror(rc), err);
    ck_assert_ptr_null(cfg);
    ck_assert_str_eq(err, want);
    ck_assert_uint_eq(ERR_peek_error(), 0);
}

/* A ca=, cert= or key= file that cannot be read names itself and the
 * system's reason (errno), never "unknown OpenSSL error"; one that reads
 * but does not load names OpenSSL's reason. Word for word, from the
 * transport and at the end of the client's errstr. */
START_TEST(test_file_errors_word_for_word)
{
    char junk[400], msg[1200];
    snprintf(junk, sizeof junk, "%s/junk.txt", certs.dir);
    FILE *f = fopen(junk, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a certificate\n", f);
    fclose(f);

    expect_config_error("/nonexistent/ca.pem", "", "",
                        "cannot load ca=/nonexistent/ca.pem: No such file or directory");
    snprintf(msg, sizeof msg, "cannot load ca=%s: Is a directory", certs.dir);
    expect_config_error(certs.dir, "", "", msg);
    snprintf(msg, sizeof msg, "cannot load ca=%s: no certificate or crl found", junk);
    expect_config_error(junk, "", "", msg);

    expect_config_error(certs.ca, "/nonexistent/me.crt", "",
                        "cannot load cert=/nonexistent/me.crt: No such file or directory");
    snprintf(msg, sizeof msg, "cannot load cert=%s: no start line", junk);
    expect_config_error(certs.ca, junk, "", msg);

    expect_config_error(certs.ca, certs.client_cert, "/nonexistent/me.key",
                        "cannot load key=/nonexistent/me.key: No such file or directory");
    snprintf(msg, sizeof msg, "cannot load key=%s: Is a directory", certs.dir);
    expect_config_error(certs.ca, certs.client_cert, certs.dir, msg);
    snprintf(msg, sizeof msg, "cannot load the key from cert=%s: unsupported", certs.client_cert);
    expect_config_error(certs.ca, certs.client_cert, "", msg);

    /* through a client: the same words end its errstr */
    const char *want = ": cannot load ca=/nonexistent/ca.pem: No such file or directory";
    char why[512];
    fx_tls_client c = {.ca = "/nonexistent/ca.pem"};
    ck_assert_int_eq(try_url(url_of(&srv, &c), why, sizeof why), REDLOCK_ERR_TLS);
    size_t n = strlen(why), w = strlen(want);
    ck_assert_msg(n > w && strcmp(why + n - w, want) == 0, "want '...%s', got: %s", want, why);
    fx_tls_client k = {.ca = certs.ca, .cert = certs.client_cert, .key = "/nonexistent/me.key"};
    want = ": cannot load key=/nonexistent/me.key: No such file or directory";
    ck_assert_int_eq(try_url(url_of(&srv, &k), why, sizeof why), REDLOCK_ERR_TLS);
    n = strlen(why), w = strlen(want);
    ck_assert_msg(n > w && strcmp(why + n - w, want) == 0, "want '...%s', got: %s", want, why);
}
END_TEST

/* ---- servers that are not what the URL says
 * ------------------------------------------------------ */

/* A TCP server that accepts and never speaks: the handshake times out by
 * connect_timeout_ms. */
START_TEST(test_silent_server_times_out)
{
    int port, lfd = listen_any(&port); /* the kernel accepts; nobody answers */
    char url[512], why[512];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", port, certs.ca);
    redlock_options o;
    tls_options(&o, 0);
    o.connect_timeout_ms = 300;
    double ms;
    int rc = try_once(url, &o, why, sizeof why, &ms);
    ck_assert_msg(rc == REDLOCK_ERR_TIMEOUT, "%s: %s", redlock_strerror(rc), why);
    ck_assert_msg(strstr(why, "timed out in the TLS handshake") && strstr(why, "300 ms"), "%s",
                  why);
    ck_assert_msg(ms >= 295 && ms < MS(600), "took %.0f ms", ms);
    close(lfd);
}
END_TEST

/* rediss:// to a plain port fails by the connect deadline: a redis-server
 * waits for the rest of a line that never comes (or answers an error if
 * the random ClientHello held a newline); a server that answers in plain
 * text is named as not a TLS server. */
START_TEST(test_rediss_to_plain_server)
{
    char url[512], why[512];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", srv.port, certs.ca);
    redlock_options o;
    tls_options(&o, 0);
    o.connect_timeout_ms = 400;
    double ms;
    int rc = try_once(url, &o, why, sizeof why, &ms);
    ck_assert_msg(rc == REDLOCK_ERR_TIMEOUT || rc == REDLOCK_ERR_TLS, "%s: %s",
                  redlock_strerror(rc), why);
    ck_assert_msg(rc == REDLOCK_ERR_TLS ? strstr(why, "not a TLS server") != NULL
                                        : strstr(why, "is it a TLS port?") != NULL,
                  "%s", why);
    ck_assert_msg(ms < MS(700), "took %.0f ms", ms);

    int port, lfd = listen_any(&port);
    pid_t fake = start_fake(lfd, FAKE_PLAIN_TEXT);
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", port, certs.ca);
    o.connect_timeout_ms = MS(400);
    rc = try_once(url, &o, why, sizeof why, &ms);
    ck_assert_msg(rc == REDLOCK_ERR_TLS, "%s: %s", redlock_strerror(rc), why);
    ck_assert_msg(strstr(why, "not a TLS server: it answered \"-ERR unknown command\""), "%s", why);
    ck_assert_msg(ms < MS(300), "took %.0f ms", ms);
    stop_fake(fake);
}
END_TEST

/* redis:// to a TLS port: the server resets the connection before any
 * reply, and the message says what to do. */
START_TEST(test_redis_to_tls_port)
{
    char url[512], why[512];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.tls_port);
    redlock_options o;
    tls_options(&o, 400);
    double ms;
    int rc = try_once(url, &o, why, sizeof why, &ms);
    ck_assert_msg(rc == REDLOCK_ERR_IO, "%s: %s", redlock_strerror(rc), why);
    ck_assert_msg(strstr(why, "before any reply (if it is a TLS port, use a rediss:// URL)"), "%s",
                  why);
    ck_assert_msg(ms < MS(700), "took %.0f ms", ms);
}
END_TEST

START_TEST(test_drop_mid_record)
{
    int port, lfd = listen_any(&port);
    pid_t fake = start_fake(lfd, FAKE_HALF_RECORD);
    char url[400], why[512];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", port, certs.ca);
    redlock_options o;
    tls_options(&o, 1000);
    double ms;
    int rc = try_once(url, &o, why, sizeof why, &ms);
    ck_assert_msg(rc == REDLOCK_ERR_IO, "%s: %s", redlock_strerror(rc), why);
    char want[64];
    snprintf(want, sizeof want, "connection closed by 127.0.0.1:%d", port);
    ck_assert_msg(strstr(why, want), "%s", why);
    ck_assert_msg(ms < MS(900), "took %.0f ms", ms); /* the end of the stream, not a deadline */
    stop_fake(fake);
}
END_TEST

/* Writing to a connection the server has closed: an I/O error, never
 * SIGPIPE (OpenSSL's own socket BIO would write() and raise it, and its
 * default action kills the process). */
START_TEST(test_no_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    int port, lfd = listen_any(&port);
    pid_t fake = start_fake(lfd, FAKE_CLOSE);
    char url[512];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", port, certs.ca);
    const size_t big = 4u << 20;
    char *v = calloc(1, big);
    const char *argv[3] = {"SET", "k", v};
    const size_t lens[3] = {3, 1, big};
    for (int i = 0; i < 3; i++) {
        net_conn *c = tls_conn(url, 500);
        ck_assert_int_eq(nx_sendl(c, 3, argv, lens, 1, 0), RESP_OK);
        nx_result r;
        ck_assert_uint_eq(nx_run(&c, 1, &r, 1, net_now_ns() + MS(3000) * 1000000LL), 1);
        /* I/O error; or, when the client saw the close before it wrote (under
         * valgrind), every reconnect meets the same until the deadline */
        ck_assert_msg(r.status == RESP_ERR_IO || (slow > 1 && r.status == RESP_ERR_TIMEOUT),
                      "%s", r.text);
        ck_assert_msg(r.status != RESP_ERR_IO || strstr(r.text, "Broken pipe") ||
                          strstr(r.text, "reset") || strstr(r.text, "closed"),
                      "%s", r.text);
        net_conn_free(c);
    }
    free(v);
    stop_fake(fake);
}
END_TEST

/* ---- reading: many records, pending bytes
 * ------------------------------------------------------------- */

/* A reply in two records that arrive together: the first fills the
 * connection's 16 KiB buffer, the second is then held, complete, inside
 * OpenSSL, where poll() cannot see it. The connection must read it without
 * an event (net_conn_deadline says now, net_conn_pump reads), or the
 * request waits for its deadline. */
START_TEST(test_reply_ends_in_a_buffered_record)
{
    int port, lfd = listen_any(&port);
    pid_t fake = start_fake(lfd, FAKE_SPLIT_REPLY);
    char url[512];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", port, certs.ca);
    net_conn *c = tls_conn(url, 1000);
    static const char *const get[] = {"GET", "x"};
    double t0 = fx_now_ms();
    nx_result r = nx_call(c, 2, get);
    ck_assert_msg(r.status == RESP_OK, "%s", r.text);
    ck_assert_int_eq(r.type, RESP_BULK);
    ck_assert_uint_eq(r.len, SPLIT_BULK);
    ck_assert_msg(fx_now_ms() - t0 < MS(500), "took %.0f ms", fx_now_ms() - t0);
    net_conn_free(c);
    stop_fake(fake);
}
END_TEST

/* Whole replies fill the read buffer while more records wait inside
 * OpenSSL: the replies are taken first, then the rest is read into the
 * same buffer. Reading on before taking would grow the buffer for replies
 * that fit (an allocation per burst) and, at the parser's cap, call it a
 * reply too large. */
START_TEST(test_burst_of_whole_replies)
{
    int port, lfd = listen_any(&port);
    pid_t fake = start_fake(lfd, FAKE_BURST);
    char url[512];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", port, certs.ca);
    net_url u;
    char err[256];
    ck_assert_int_eq(net_url_parse(&u, NULL, url, err, sizeof err), RESP_OK);
    net_opts o;
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = o.io_timeout_ms = MS(2000);
    o.limits.max_bulk = 1024;
    o.max_reply = 17000; /* a 16 KiB record and a little: no room to read on */
    o.tls = redlock_tls_openssl();
    net_conn *c = NULL;
    ck_assert_int_eq(net_conn_new(&c, &u, &o), RESP_OK);
    static const char *const ping[] = {"PING"};
    nx_result r = nx_call(c, 1, ping); /* connected, buffers at their size */
    ck_assert_msg(r.status == RESP_OK, "%s", r.text);
    static const char *const get[] = {"GET", "k"};
    for (uint32_t i = 0; i < BURST; i++)
        ck_assert_int_eq(nx_send(c, 2, get, i, 0), RESP_OK);
    static nx_result got[BURST];
    tu_alloc_start(0);
    size_t n = nx_run(&c, 1, got, BURST, net_now_ns() + MS(3000) * 1000000LL);
    long allocs = tu_alloc.calls;
    tu_alloc_stop();
    ck_assert_uint_eq(n, BURST);
    for (int i = 0; i < BURST; i++) {
        ck_assert_msg(got[i].status == RESP_OK, "%d: %s", i, got[i].text);
        ck_assert_uint_eq(got[i].len, 1015);
        ck_assert_int_eq(got[i].text[0], 'a' + i % 26);
    }
    /* the buffer starts at 512 bytes: it grows to hold one 1 KiB reply
     * (a doubling or two), never to hold the burst */
    ck_assert_msg(allocs <= 2, "%ld allocations", allocs);
    net_conn_free(c);
    stop_fake(fake);
}
END_TEST

/* A reply over a dozen TLS records (16 KiB each) is read whole. */
START_TEST(test_reply_larger_than_a_record)
{
    const size_t big = 200000;
    char *v = malloc(big), *got = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        v[i] = (char)('a' + (i * 7) % 26);
    const char *argv[3] = {"SET", "tls:big", v};
    const size_t lens[3] = {3, 7, big};
    net_conn *plain = nx_conn(srv.url, 2000);
    ck_assert_int_eq(nx_sendl(plain, 3, argv, lens, 0, 0), RESP_OK);
    nx_result set;
    ck_assert_uint_eq(nx_run(&plain, 1, &set, 1, 0), 1);
    ck_assert_str_eq(set.text, "OK");
    net_conn_free(plain);
    net_conn *c = tls_conn(trusted(&srv), 2000);
    static const char *const get[] = {"GET", "tls:big"};
    for (int round = 0; round < 3; round++) {
        nx_result r = nx_call_buf(c, 2, get, got, big + 1);
        ck_assert_msg(r.status == RESP_OK, "%s", r.text);
        ck_assert_int_eq(r.type, RESP_BULK);
        ck_assert_uint_eq(r.len, big);
        ck_assert(memcmp(got, v, big) == 0);
    }
    ck_assert_uint_eq(net_conn_generation(c), 1);
    net_conn_free(c);
    free(v);
    free(got);
}
END_TEST

/* Thousands of pipelined replies: most arrive while OpenSSL holds records
 * that poll() cannot see; every one is handed out, in order. */
START_TEST(test_many_pipelined_replies)
{
    char v[1000];
    memset(v, 'p', sizeof v);
    const char *argv[3] = {"SET", "tls:1k", v};
    const size_t lens[3] = {3, 6, sizeof v};
    char out[64];
    ck_assert_int_eq(fx_cmdv(&srv, out, sizeof out, 3, argv, lens), 0);
    net_conn *c = tls_conn(trusted(&srv), 5000);
    enum { N = 3000 };
    static const char *const get[] = {"GET", "tls:1k"};
    static const char *const ping[] = {"PING"};
    for (uint32_t i = 0; i < N; i++)
        ck_assert_int_eq(nx_send(c, i % 3 ? 2 : 1, i % 3 ? get : ping, i, 0), RESP_OK);
    static nx_result r[N];
    ck_assert_uint_eq(nx_run(&c, 1, r, N, net_now_ns() + 10000 * 1000000LL), N);
    for (uint32_t i = 0; i < N; i++) {
        ck_assert_int_eq(r[i].status, RESP_OK);
        ck_assert_uint_eq(r[i].tag.seq, i);
        if (i % 3)
            ck_assert_uint_eq(r[i].len, sizeof v);
        else
            ck_assert_str_eq(r[i].text, "PONG");
    }
    ck_assert_uint_eq(net_conn_generation(c), 1);
    net_conn_free(c);
}
END_TEST

/* Many locks in flight at once from one loop over one TLS connection:
 * the replies come in bursts of records; none is left behind. */
START_TEST(test_many_locks_in_flight)
{
    enum { N = 400 };
    tu_alloc_start(0);
    redlock_client *c = tls_client(trusted(&srv), 3000);
    static redlock *l[N];
    static int acquiring[N];
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "tls:many:%d", i);
        l[i] = tu_lock(c, name, NULL, 10000);
        redlock_set_userdata(l[i], &acquiring[i]);
    }
    long before = 0;
    for (int round = 0; round < 4; round++) {
        if (round == 2)
            before = tu_alloc.calls; /* grown to the working size */
        for (int i = 0; i < N; i++) {
            acquiring[i] = 1;
            ck_assert_int_eq(redlock_start_trylock(l[i]), REDLOCK_OK);
        }
        double end = fx_now_ms() + 10000;
        for (int released = 0; released < N;) {
            ck_assert_msg(fx_now_ms() < end, "round %d: %d of %d released", round, released, N);
            struct pollfd fds[4];
            int n = redlock_client_pollfds(c, fds, 4);
            int t = redlock_client_timeout_ms(c);
            ck_assert_int_ge(poll(fds, (nfds_t)n, t < 0 || t > 100 ? 100 : t), 0);
            redlock_client_process(c, fds, n);
            for (redlock *d; (d = redlock_client_done(c)) != NULL;) {
                int *acq = redlock_userdata(d);
                ck_assert_msg(redlock_result(d) == REDLOCK_OK, "%s", redlock_errstr(d));
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
    for (int i = 0; i < N; i++)
        redlock_free(l[i]);
    redlock_client_free(c);
    tu_alloc_stop();
}
END_TEST

/* ---- the connection over time
 * ---------------------------------------------------------------------- */

/* TLS 1.3 servers send session tickets after the handshake, and may send
 * more (or a key update) at any time. A socket idle over 1 ms is checked
 * before the next request; that check must digest such records, not take
 * the bytes for a dead socket and reconnect. */
START_TEST(test_idle_socket_not_mistaken_for_dead)
{
    int port, lfd = listen_any(&port);
    pid_t fake = start_fake(lfd, FAKE_LATE_TICKET);
    char url[512];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ca=%s", port, certs.ca);
    net_conn *nc = tls_conn(url, 2000);
    static const char *const ping[] = {"PING"};
    for (int i = 0; i < 3; i++) {
        nx_result r = nx_call(nc, 1, ping);
        ck_assert_msg(r.status == RESP_OK && strcmp(r.text, "PONG") == 0, "%d: %s", i, r.text);
        fx_sleep_ms(50); /* the ticket arrives meanwhile, unread */
    }
    ck_assert_uint_eq(net_conn_generation(nc), 1); /* never reconnected */
    net_conn_free(nc);
    stop_fake(fake);

    /* and with redis-server, through the library */
    redlock_client *c = tls_client(trusted(&srv), 0);
    redlock *l = tu_lock(c, "tls:idle", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* connected */
    long conns = info_number(&srv, "total_connections_received");
    for (int i = 0; i < 5; i++) {
        fx_sleep_ms(20); /* idle well over the 1 ms after which a socket is checked */
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        fx_sleep_ms(20);
        ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    }
    /* one more for the fx_cmd that asks */
    ck_assert_int_eq(info_number(&srv, "total_connections_received") - conns, 1);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* A server restarted between two calls: the idle check over TLS sees the
 * closed socket and the next call reconnects, without an error. */
START_TEST(test_reconnect_after_restart)
{
    fx_server s;
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_SERVER, "no", 1), 0);
    redlock_client *c = tls_client(trusted(&s), 0);
    redlock *l = tu_lock(c, "tls:restart", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(fx_server_restart(&s), 0);
    fx_sleep_ms(20);
    ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_client_errstr(c));
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    /* CLIENT KILL over the plain port: the same */
    char out[64];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CLIENT KILL TYPE normal SKIPME yes"), 0);
    fx_sleep_ms(20);
    ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_client_errstr(c));
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

/* ---- the command
 * ------------------------------------------------------------------------------------------ */

START_TEST(test_cli_run_and_status)
{
    char out[1024];
    const char *url = trusted(&srv);
    const char *run[] = {FX_BUILD_DIR "/redlock",
                         "run",
                         "-u",
                         url,
                         "tls:cli",
                         "--",
                         "sh",
                         "-c",
                         "echo fence=$REDLOCK_FENCE; redis-cli -p \"$PORT\" GET tls:cli",
                         NULL};
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    setenv("PORT", port, 1);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "DEL tls:cli {tls:cli}:fence"), 0);
    int rc = fx_run(out, sizeof out, 10000, run);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
    const char *f = strstr(out, "fence=");
    ck_assert_msg(f && tu_seeded(strtoull(f + 6, NULL, 10)) && strlen(out) > 40, "%s", out);
    char want[64]; /* the token, then the value */
    snprintf(want, sizeof want, "tls:cli: free, fence %llu", strtoull(f + 6, NULL, 10));
    const char *status[] = {FX_BUILD_DIR "/redlock", "status", "-u", url, "tls:cli", NULL};
    rc = fx_run(out, sizeof out, 10000, status);
    ck_assert_msg(rc == 1 && strstr(out, want), "exit %d: %s", rc, out);
    /* a TLS failure is one line naming the cause, exit 69 */
    char bad[400];
    snprintf(bad, sizeof bad, "rediss://127.0.0.1:%d", srv.tls_port); /* the system store */
    const char *verify[] = {FX_BUILD_DIR "/redlock", "status", "-u", bad, "tls:cli", NULL};
    rc = fx_run(out, sizeof out, 10000, verify);
    ck_assert_msg(rc == 69 && strstr(out, "certificate verify failed"), "exit %d: %s", rc, out);
    /* a quorum of TLS and plain nodes from $REDLOCK_URL */
    char list[2048];
    snprintf(list, sizeof list, "%s,%s,%s", url, srv.url, url);
    setenv("REDLOCK_URL", list, 1);
    const char *quorum[] = {FX_BUILD_DIR "/redlock", "run", "-G", "off", "tls:cliq", "--", "true",
                            NULL}; /* the servers are younger than a lease: no restart guard */
    rc = fx_run(out, sizeof out, 10000, quorum);
    unsetenv("REDLOCK_URL");
    ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
}
END_TEST

/* docs/tls.md's worked example (examples/tls.c): 0 with the right CA, 3 (a TLS
 * refusal, explained) without. */
START_TEST(test_example)
{
    char out[1024];
    const char *good[] = {FX_EXAMPLES_DIR "/tls", trusted(&srv), NULL};
    int rc = fx_run(out, sizeof out, 10000, good);
    ck_assert_msg(rc == 0 && strstr(out, "got the lock over TLS"), "exit %d: %s", rc, out);
    const char *bad[] = {FX_EXAMPLES_DIR "/tls", url_of(&srv, NULL), NULL};
    rc = fx_run(out, sizeof out, 10000, bad);
    ck_assert_msg(rc == 3 && strstr(out, "TLS refused: ") &&
                      strstr(out, "certificate verify failed"),
                  "exit %d: %s", rc, out);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *t = tcase_create("tls");
    tcase_set_timeout(t, 120);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, test_no_transport);
    tcase_add_test(t, test_lock_cycle);
    tcase_add_test(t, test_no_alloc_per_cycle);
    tcase_add_test(t, test_alloc_failure);
    tcase_add_test(t, test_wait_and_wake);
    tcase_add_test(t, test_cluster_over_tls);
    tcase_add_test(t, test_sentinel_over_tls);
    tcase_add_test(t, test_quorum_mixed);
    tcase_add_test(t, test_unix_stays_plain);
    tcase_add_test(t, test_other_ca_refused);
    tcase_add_test(t, test_tls_events);
    tcase_add_test(t, test_host_name);
    tcase_add_test(t, test_client_certificate);
    tcase_add_test(t, test_insecure_only);
    tcase_add_test(t, test_bad_files);
    tcase_add_test(t, test_file_errors_word_for_word);
    tcase_add_test(t, test_silent_server_times_out);
    tcase_add_test(t, test_rediss_to_plain_server);
    tcase_add_test(t, test_redis_to_tls_port);
    tcase_add_test(t, test_drop_mid_record);
    tcase_add_test(t, test_no_sigpipe);
    tcase_add_test(t, test_reply_ends_in_a_buffered_record);
    tcase_add_test(t, test_burst_of_whole_replies);
    tcase_add_test(t, test_reply_larger_than_a_record);
    tcase_add_test(t, test_many_pipelined_replies);
    tcase_add_test(t, test_many_locks_in_flight);
    tcase_add_test(t, test_idle_socket_not_mistaken_for_dead);
    tcase_add_test(t, test_reconnect_after_restart);
    tcase_add_test(t, test_cli_run_and_status);
    tcase_add_test(t, test_example);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    const char *env = getenv("REDLOCK_TEST_SLOW");
    if (env && atoi(env) > 1)
        slow = atoi(env);
    /* before OpenSSL allocates anything; this test binary only */
    CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free);
    SRunner *sr = srunner_create(tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
