/* test_conn.c - URLs and connections (net.c), against real redis-server. */
#define _GNU_SOURCE
#include "fixture.h"
#include "resp.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- URL table ------------------------------------------------------------------------ */

typedef struct url_case {
    const char *url;
    int kind;
    const char *host, *port, *path, *user, *password;
    int db;
} url_case;

static const url_case good_urls[] = {
    {"redis://localhost", RESP_URL_TCP, "localhost", "6379", "", "", "", 0},
    {"redis://127.0.0.1:6380", RESP_URL_TCP, "127.0.0.1", "6380", "", "", "", 0},
    {"REDIS://h:1/15", RESP_URL_TCP, "h", "1", "", "", "", 15},
    {"redis://h/", RESP_URL_TCP, "h", "6379", "", "", "", 0},
    {"redis://:secret@h", RESP_URL_TCP, "h", "6379", "", "", "secret", 0},
    {"redis://alice:secret@h:7000/2", RESP_URL_TCP, "h", "7000", "", "alice", "secret", 2},
    {"redis://u:p%40ss%2Fw%3Ard@h", RESP_URL_TCP, "h", "6379", "", "u", "p@ss/w:rd", 0},
    {"redis://u:p@ss@h", RESP_URL_TCP, "h", "6379", "", "u", "p@ss", 0},
    {"redis://[::1]:6380", RESP_URL_TCP, "::1", "6380", "", "", "", 0},
    {"redis://[::1]", RESP_URL_TCP, "::1", "6379", "", "", "", 0},
    {"redis://:pw@[fe80::1]:65535/9", RESP_URL_TCP, "fe80::1", "65535", "", "", "pw", 9},
    {"unix:///tmp/redis.sock", RESP_URL_UNIX, "", "6379", "/tmp/redis.sock", "", "", 0},
    {"unix:///tmp/r.sock?db=3", RESP_URL_UNIX, "", "6379", "/tmp/r.sock", "", "", 3},
    {"unix:///r.sock?db=1&user=bob&password=p%26q", RESP_URL_UNIX, "", "6379", "/r.sock", "bob",
     "p&q", 1},
    {"unix:///r.sock?password=zq", RESP_URL_UNIX, "", "6379", "/r.sock", "", "zq", 0},
};

START_TEST(test_url_good)
{
    const url_case *u = &good_urls[_i];
    resp_url r;
    char err[256];
    ck_assert_msg(resp_url_parse(&r, u->url, err, sizeof err) == RESP_OK, "%s: %s", u->url, err);
    ck_assert_int_eq(r.kind, u->kind);
    ck_assert_str_eq(r.host, u->host);
    ck_assert_str_eq(r.port, u->port);
    ck_assert_str_eq(r.path, u->path);
    ck_assert_str_eq(r.user, u->user);
    ck_assert_str_eq(r.password, u->password);
    ck_assert_int_eq(r.db, u->db);
    char desc[400];
    resp_url_describe(&r, desc, sizeof desc);
    if (u->password[0])
        ck_assert_ptr_null(strstr(desc, u->password));
}
END_TEST

typedef struct bad_url {
    const char *url;
    const char *msg;
} bad_url;

static const bad_url bad_urls[] = {
    {"", "empty"},
    {"localhost:6379", "must start with redis:// or unix://"},
    {"http://h", "must start with redis:// or unix://"},
    {"rediss://h:6380", "TLS, which is not built in"},
    {"redis://", "no host"},
    {"redis://:6379", "no host"},
    {"redis://h:0", "port must be a number from 1 to 65535"},
    {"redis://h:65536", "port must be a number from 1 to 65535"},
    {"redis://h:80a", "port must be a number from 1 to 65535"},
    {"redis://h:", "port must be a number from 1 to 65535"},
    {"redis://h/x", "database must be a non-negative number"},
    {"redis://h/-1", "database must be a non-negative number"},
    {"redis://u:p%zz@h", "bad %-escape"},
    {"redis://u:p%4@h", "bad %-escape"},
    {"redis://u:p%00@h", "bad %-escape"},
    {"redis://user@h", "user but no password"},
    {"redis://u:@h", "empty password"},
    {"redis://[::1", "'[' without ']'"},
    {"redis://[::1]x", "junk after ']'"},
    {"redis://h?db=1", "take no query"},
    {"unix://relative.sock", "absolute socket path"},
    {"unix://", "absolute socket path"},
    {"unix:///tmp/r.sock?foo=1", "unknown key 'foo'"},
    {"unix:///tmp/r.sock?db", "key=value"},
    {"unix:///tmp/r.sock?db=x", "database must be a non-negative number"},
    {"unix:///tmp/r.sock?user=u", "user but no password"},
    {"unix:///" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaa", "longer than 107 bytes"},
};

START_TEST(test_url_bad)
{
    const bad_url *b = &bad_urls[_i];
    resp_url r;
    char err[256];
    ck_assert_int_eq(resp_url_parse(&r, b->url, err, sizeof err), RESP_ERR_ARG);
    ck_assert_msg(strstr(err, b->msg) != NULL, "%s: got '%s', want '%s'", b->url, err, b->msg);
}
END_TEST

START_TEST(test_url_never_echoes_password)
{
    static const char *const urls[] = {"redis://u:hunter2@h:99999", "redis://u:hunter2@[::1",
                                       "redis://u:hunter2@h/zz", "unix:///x?password=hunter2&zz=1",
                                       "rediss://u:hunter2@h"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        resp_url r;
        char err[256];
        ck_assert_int_eq(resp_url_parse(&r, urls[i], err, sizeof err), RESP_ERR_ARG);
        ck_assert_msg(strstr(err, "hunter2") == NULL, "%s -> %s", urls[i], err);
        ck_assert_str_eq(r.password, "");
    }
    ck_assert_int_eq(resp_url_parse(NULL, "redis://h", NULL, 0), RESP_ERR_ARG);
}
END_TEST

/* ---- connections ------------------------------------------------------------------------ */

static resp_conn *conn_to(const char *url, int io_ms)
{
    resp_url u;
    char err[256];
    ck_assert_msg(resp_url_parse(&u, url, err, sizeof err) == RESP_OK, "%s", err);
    resp_conn_opts o;
    memset(&o, 0, sizeof o);
    o.io_timeout_ms = io_ms;
    o.connect_timeout_ms = io_ms;
    resp_conn *c = NULL;
    ck_assert_int_eq(resp_conn_new(&c, &u, &o), RESP_OK);
    return c;
}

/* Send one command and wait for its reply; returns the status. */
static int call(resp_conn *c, int argc, const char *const *argv)
{
    ck_assert_int_eq(resp_conn_appendv(c, argc, argv), RESP_OK);
    resp_exchange(&c, 1, 0, 0);
    return resp_conn_status(c);
}

static const resp_reply *reply(resp_conn *c)
{
    size_t n;
    const resp_reply *r = resp_conn_reply(c, &n);
    ck_assert_ptr_nonnull(r);
    return r;
}

static void expect_pong(resp_conn *c)
{
    static const char *const ping[] = {"PING"};
    ck_assert_msg(call(c, 1, ping) == RESP_OK, "%s", resp_conn_errstr(c));
    const resp_reply *r = reply(c);
    ck_assert_int_eq(r->type, RESP_STATUS);
    ck_assert(r->len == 4 && memcmp(r->str, "PONG", 4) == 0);
    resp_conn_consume(c);
}

START_TEST(test_ping_tcp_unix_v6)
{
    fx_server s;
    fx_opts o;
    memset(&o, 0, sizeof o);
    o.unix_socket = 1;
    o.ipv6 = 1;
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    resp_conn *c = conn_to(s.url, 1000);
    expect_pong(c);
    ck_assert_uint_eq(resp_conn_generation(c), 1);
    expect_pong(c); /* same connection */
    ck_assert_uint_eq(resp_conn_generation(c), 1);
    resp_conn_free(c);
    c = conn_to(s.unix_url, 1000);
    expect_pong(c);
    resp_conn_free(c);
    if (s.has_ipv6) {
        char url[64];
        snprintf(url, sizeof url, "redis://[::1]:%d", s.port);
        c = conn_to(url, 1000);
        expect_pong(c);
        resp_conn_free(c);
        /* "localhost" may resolve to ::1 first or 127.0.0.1: either works */
        snprintf(url, sizeof url, "redis://localhost:%d", s.port);
        c = conn_to(url, 1000);
        expect_pong(c);
        resp_conn_free(c);
    } else {
        printf("test_conn: ::1 unavailable here, IPv6 skipped\n");
    }
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_auth_select)
{
    fx_server s;
    fx_opts o;
    memset(&o, 0, sizeof o);
    o.password = "s3cret";
    o.acl_user = "alice";
    o.acl_password = "wonder land";
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    char url[256];
    static const char *const ping[] = {"PING"};

    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d", s.port);
    resp_conn *c = conn_to(url, 1000);
    expect_pong(c);
    resp_conn_free(c);

    snprintf(url, sizeof url, "redis://alice:wonder%%20land@127.0.0.1:%d", s.port);
    c = conn_to(url, 1000);
    expect_pong(c);
    resp_conn_free(c);

    /* wrong password: AUTH error, the password is not in the message */
    snprintf(url, sizeof url, "redis://:wrongpass@127.0.0.1:%d", s.port);
    c = conn_to(url, 1000);
    ck_assert_int_eq(call(c, 1, ping), RESP_ERR_AUTH);
    ck_assert_ptr_nonnull(strstr(resp_conn_errstr(c), "AUTH refused"));
    ck_assert_ptr_null(strstr(resp_conn_errstr(c), "wrongpass"));
    ck_assert(!resp_conn_connected(c));
    resp_conn_free(c);

    /* missing password: the command gets NOAUTH */
    c = conn_to(s.url, 1000);
    ck_assert_int_eq(call(c, 1, ping), RESP_OK);
    ck_assert_int_eq(reply(c)->type, RESP_ERROR);
    ck_assert(strncmp(reply(c)->str, "NOAUTH", 6) == 0);
    resp_conn_consume(c);
    resp_conn_free(c);

    /* SELECT: a key set through /5 lives in db 5 */
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/5", s.port);
    c = conn_to(url, 1000);
    static const char *const set[] = {"SET", "where", "db5"};
    ck_assert_int_eq(call(c, 3, set), RESP_OK);
    resp_conn_consume(c);
    char out[256];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "EXISTS where"), 0);
    ck_assert_str_eq(out, "0");
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "INFO keyspace"), 0);
    ck_assert_ptr_nonnull(strstr(out, "db5:keys=1"));
    resp_conn_free(c);

    /* SELECT out of range: refused, reported as AUTH/SELECT error */
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/99", s.port);
    c = conn_to(url, 1000);
    ck_assert_int_eq(call(c, 1, ping), RESP_ERR_AUTH);
    ck_assert_ptr_nonnull(strstr(resp_conn_errstr(c), "SELECT refused"));
    resp_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_refused)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", fx_free_port());
    resp_conn *c = conn_to(url, 1000);
    static const char *const ping[] = {"PING"};
    double t0 = fx_now_ms();
    ck_assert_int_eq(call(c, 1, ping), RESP_ERR_IO);
    ck_assert_double_lt(fx_now_ms() - t0, 500);
    ck_assert_ptr_nonnull(strstr(resp_conn_errstr(c), "refused"));
    ck_assert_uint_eq(resp_conn_pending(c), 0); /* queue dropped */
    resp_conn_free(c);
    c = conn_to("unix:///nonexistent/redis.sock", 1000);
    ck_assert_int_eq(call(c, 1, ping), RESP_ERR_IO);
    resp_conn_free(c);
    c = conn_to("redis://no-such-host.invalid:6379", 1000);
    ck_assert_int_eq(call(c, 1, ping), RESP_ERR_IO);
    ck_assert_ptr_nonnull(strstr(resp_conn_errstr(c), "resolve"));
    resp_conn_free(c);
}
END_TEST

START_TEST(test_stopped_server_times_out)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    resp_conn *c = conn_to(s.url, 300);
    expect_pong(c);
    fx_server_pause(&s);
    static const char *const ping[] = {"PING"};
    double t0 = fx_now_ms();
    ck_assert_int_eq(call(c, 1, ping), RESP_ERR_TIMEOUT);
    double took = fx_now_ms() - t0;
    ck_assert_msg(took >= 290 && took < 900, "took %.1f ms", took);
    ck_assert(!resp_conn_connected(c)); /* closed, never reused */
    /* connecting to a stopped server times out by the connect deadline too
     * (the kernel accepts, AUTH/PING never answers) */
    t0 = fx_now_ms();
    ck_assert_int_eq(call(c, 1, ping), RESP_ERR_TIMEOUT);
    ck_assert_double_lt(fx_now_ms() - t0, 900);
    fx_server_resume(&s);
    expect_pong(c);
    resp_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_restart_reconnects)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    resp_conn *c = conn_to(s.url, 1000);
    expect_pong(c);
    ck_assert_int_eq(fx_server_restart(&s), 0);
    expect_pong(c); /* the dead idle connection is noticed and replaced */
    ck_assert_uint_eq(resp_conn_generation(c), 2);
    char out[64];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CLIENT KILL TYPE normal SKIPME yes"), 0);
    usleep(20 * 1000);
    expect_pong(c);
    ck_assert_uint_eq(resp_conn_generation(c), 3);
    resp_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_pipeline_in_order)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    resp_conn *c = conn_to(s.url, 1000);
    static const char *const a[] = {"ECHO", "one"}, *const b[] = {"ECHO", "two"},
                             *const d[] = {"ECHO", "three"};
    ck_assert_int_eq(resp_conn_appendv(c, 2, a), RESP_OK);
    ck_assert_int_eq(resp_conn_appendv(c, 2, b), RESP_OK);
    ck_assert_int_eq(resp_conn_appendv(c, 2, d), RESP_OK);
    ck_assert_uint_eq(resp_conn_pending(c), 3);
    static const char *const want[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        resp_exchange(&c, 1, 0, 0);
        ck_assert_int_eq(resp_conn_status(c), RESP_OK);
        const resp_reply *r = reply(c);
        ck_assert_uint_eq(r->len, strlen(want[i]));
        ck_assert(memcmp(r->str, want[i], r->len) == 0);
        resp_conn_consume(c);
    }
    ck_assert_uint_eq(resp_conn_pending(c), 0);

    /* binary-safe arguments round-trip */
    const char val[] = {'x', '\r', '\n', '\0', '*', '1', '\r', '\n'};
    const char *set[3] = {"SET", "bin", val};
    size_t setl[3] = {3, 3, sizeof val};
    ck_assert_int_eq(resp_conn_append(c, 3, set, setl), RESP_OK);
    const char *get[2] = {"GET", "bin"};
    size_t getl[2] = {3, 3};
    ck_assert_int_eq(resp_conn_append(c, 2, get, getl), RESP_OK);
    resp_exchange(&c, 1, 0, 0);
    resp_conn_consume(c);
    resp_exchange(&c, 1, 0, 0);
    const resp_reply *r = reply(c);
    ck_assert_uint_eq(r->len, sizeof val);
    ck_assert(memcmp(r->str, val, sizeof val) == 0);
    resp_conn_consume(c);
    resp_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_parallel_exchange)
{
    /* three servers, one stopped: one exchange costs one deadline, not three */
    fx_server s[3];
    resp_conn *c[3];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fx_server_start(&s[i], NULL), 0);
        c[i] = conn_to(s[i].url, 300);
        expect_pong(c[i]);
    }
    fx_server_pause(&s[1]);
    static const char *const ping[] = {"PING"};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(resp_conn_appendv(c[i], 1, ping), RESP_OK);
    double t0 = fx_now_ms();
    resp_exchange(c, 3, 0, 0);
    double took = fx_now_ms() - t0;
    ck_assert_int_eq(resp_conn_status(c[0]), RESP_OK);
    ck_assert_int_eq(resp_conn_status(c[1]), RESP_ERR_TIMEOUT);
    ck_assert_int_eq(resp_conn_status(c[2]), RESP_OK);
    ck_assert_msg(took >= 290 && took < 900, "took %.1f ms", took);
    resp_conn_consume(c[0]);
    resp_conn_consume(c[2]);

    /* any-mode returns with the first answer, leaving the stopped one due */
    fx_server_resume(&s[1]);
    expect_pong(c[1]); /* reconnect while it runs */
    fx_server_pause(&s[1]);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(resp_conn_appendv(c[i], 1, ping), RESP_OK);
    t0 = fx_now_ms();
    resp_exchange(c, 3, 0, 1);
    ck_assert_double_lt(fx_now_ms() - t0, 250);
    ck_assert(resp_conn_reply(c[0], NULL) || resp_conn_reply(c[2], NULL));
    ck_assert_ptr_null(resp_conn_reply(c[1], NULL));
    ck_assert_uint_eq(resp_conn_pending(c[1]), 1);
    fx_server_resume(&s[1]);
    resp_exchange(&c[1], 1, 0, 0); /* its PONG arrives once resumed */
    ck_assert_int_eq(resp_conn_status(c[1]), RESP_OK);
    ck_assert_int_eq(reply(c[1])->type, RESP_STATUS);
    for (int i = 0; i < 3; i++) {
        fx_server_stop(&s[i]);
        resp_conn_free(c[i]);
    }
}
END_TEST

START_TEST(test_deadline_caps_and_late_reply)
{
    fx_server s;
    fx_opts o;
    memset(&o, 0, sizeof o);
    o.debug = 1;
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    resp_conn *c = conn_to(s.url, 2000);
    expect_pong(c);
    static const char *const sleep1[] = {"DEBUG", "SLEEP", "0.5"};
    static const char *const echo[] = {"ECHO", "after"};
    ck_assert_int_eq(resp_conn_appendv(c, 3, sleep1), RESP_OK);
    /* the caller's limit caps the 2 s I/O deadline */
    double t0 = fx_now_ms();
    resp_exchange(&c, 1, resp_now_ns() + 200 * 1000000LL, 0);
    ck_assert_int_eq(resp_conn_status(c), RESP_ERR_TIMEOUT);
    ck_assert_double_lt(fx_now_ms() - t0, 600);
    /* the late +OK of DEBUG SLEEP is never read as the ECHO's reply */
    ck_assert_int_eq(call(c, 2, echo), RESP_OK);
    ck_assert(reply(c)->len == 5 && memcmp(reply(c)->str, "after", 5) == 0);
    resp_conn_consume(c);
    resp_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_listen_idle)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    resp_conn *c = conn_to(s.url, 300);
    static const char *const sub[] = {"SUBSCRIBE", "chan"};
    ck_assert_int_eq(resp_conn_appendv(c, 2, sub), RESP_OK);
    resp_conn_listen(c);
    resp_exchange(&c, 1, resp_now_ns() + 1000 * 1000000LL, 0);
    ck_assert_int_eq(resp_conn_status(c), RESP_OK); /* the confirmation */
    resp_conn_consume(c);
    /* idle past the I/O deadline: no message is not an error */
    double t0 = fx_now_ms();
    resp_exchange(&c, 1, resp_now_ns() + 500 * 1000000LL, 0);
    ck_assert_int_eq(resp_conn_status(c), RESP_IDLE);
    ck_assert_double_ge(fx_now_ms() - t0, 480);
    ck_assert(resp_conn_connected(c));
    ck_assert_int_eq(resp_conn_poll_ready(c), RESP_IDLE);
    char out[64];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "PUBLISH chan hello"), 0);
    ck_assert_str_eq(out, "1");
    resp_exchange(&c, 1, resp_now_ns() + 1000 * 1000000LL, 0);
    ck_assert_int_eq(resp_conn_status(c), RESP_OK);
    const resp_reply *r = reply(c);
    ck_assert_int_eq(r->type, RESP_ARRAY);
    ck_assert(r[3].len == 5 && memcmp(r[3].str, "hello", 5) == 0);
    resp_conn_consume(c);
    resp_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

static Suite *conn_suite(void)
{
    Suite *s = suite_create("conn");
    TCase *u = tcase_create("urls");
    tcase_add_loop_test(u, test_url_good, 0, (int)(sizeof good_urls / sizeof good_urls[0]));
    tcase_add_loop_test(u, test_url_bad, 0, (int)(sizeof bad_urls / sizeof bad_urls[0]));
    tcase_add_test(u, test_url_never_echoes_password);
    suite_add_tcase(s, u);
    TCase *t = tcase_create("connections");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_ping_tcp_unix_v6);
    tcase_add_test(t, test_auth_select);
    tcase_add_test(t, test_refused);
    tcase_add_test(t, test_stopped_server_times_out);
    tcase_add_test(t, test_restart_reconnects);
    tcase_add_test(t, test_pipeline_in_order);
    tcase_add_test(t, test_parallel_exchange);
    tcase_add_test(t, test_deadline_caps_and_late_reply);
    tcase_add_test(t, test_listen_idle);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conn_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
