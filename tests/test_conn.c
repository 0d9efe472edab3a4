/* test_conn.c - URLs and connections (net.c), against real redis-server. */
#define _GNU_SOURCE
#include "fixture.h"
#include "netx.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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
    {"redis://localhost", NET_URL_TCP, "localhost", "6379", "", "", "", 0},
    {"redis://127.0.0.1:6380", NET_URL_TCP, "127.0.0.1", "6380", "", "", "", 0},
    {"REDIS://h:1/15", NET_URL_TCP, "h", "1", "", "", "", 15},
    {"redis://h/", NET_URL_TCP, "h", "6379", "", "", "", 0},
    {"redis://:secret@h", NET_URL_TCP, "h", "6379", "", "", "secret", 0},
    {"redis://alice:secret@h:7000/2", NET_URL_TCP, "h", "7000", "", "alice", "secret", 2},
    {"redis://u:p%40ss%2Fw%3Ard@h", NET_URL_TCP, "h", "6379", "", "u", "p@ss/w:rd", 0},
    {"redis://u:p@ss@h", NET_URL_TCP, "h", "6379", "", "u", "p@ss", 0},
    {"redis://[::1]:6380", NET_URL_TCP, "::1", "6380", "", "", "", 0},
    {"redis://[::1]", NET_URL_TCP, "::1", "6379", "", "", "", 0},
    {"redis://:pw@[fe80::1]:65535/9", NET_URL_TCP, "fe80::1", "65535", "", "", "pw", 9},
    {"unix:///tmp/redis.sock", NET_URL_UNIX, "", "6379", "/tmp/redis.sock", "", "", 0},
    {"unix:///tmp/r.sock?db=3", NET_URL_UNIX, "", "6379", "/tmp/r.sock", "", "", 3},
    {"unix:///r.sock?db=1&user=bob&password=p%26q", NET_URL_UNIX, "", "6379", "/r.sock", "bob",
     "p&q", 1},
    {"unix:///r.sock?password=zq", NET_URL_UNIX, "", "6379", "/r.sock", "", "zq", 0},
};

START_TEST(test_url_good)
{
    const url_case *u = &good_urls[_i];
    net_url r;
    char err[256];
    ck_assert_msg(net_url_parse(&r, NULL, u->url, err, sizeof err) == RESP_OK, "%s: %s", u->url, err);
    ck_assert_int_eq(r.kind, u->kind);
    ck_assert_str_eq(r.host, u->host);
    ck_assert_str_eq(r.port, u->port);
    ck_assert_str_eq(r.path, u->path);
    ck_assert_str_eq(r.user, u->user);
    ck_assert_str_eq(r.password, u->password);
    ck_assert_int_eq(r.db, u->db);
    char desc[400];
    net_url_describe(&r, desc, sizeof desc);
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
    {"localhost:6379", "must start with redis://, rediss://, unix://, redis+sentinel://"},
    {"http://h", "must start with redis://, rediss://, unix://, redis+sentinel://"},
    {"rediss://h?ca=", "ca= is empty"},
    {"rediss://h?ca", "key=value"},
    {"rediss://h?insecure=yes", "insecure= takes 0 or 1"},
    {"rediss://h?db=2", "rediss:// URLs take no query key 'db': give the database as /db"},
    {"rediss://h?password=x", "take no query key 'password'"},
    {"rediss://h?bogus=1",
     "unknown key 'bogus' (rediss:// takes: ca, cert, key, sni, insecure, cluster, addr)"},
    {"rediss://h?sni=a%0Ab", "sni= has a control character"},
    {"rediss://h?ca=%zz", "bad %-escape"},
    {"rediss://h?ca=/" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "ca= is longer than 255 bytes"},
    {"rediss://:6380?ca=/x", "no host"},
    {"redis://h?ca=/x", "redis:// URLs take no query key 'ca': TLS needs a rediss:// URL"},
    {"unix:///tmp/r.sock?sni=h", "unix:// URLs take no query key 'sni': TLS needs a rediss:// URL"},
    {"redis://", "no host"},
    {"redis://:6379", "no host"},
    {"redis://h:0", "port must be a number from 1 to 65535"},
    {"redis://h:65536", "port must be a number from 1 to 65535"},
    {"redis://h:80a", "port must be a number from 1 to 65535"},
    {"redis://h:", "port must be a number from 1 to 65535"},
    /* 2^32 + 6379 and 2^32 + 1: a 32-bit long that wraps would take them
     * for port 6379 and database 1 */
    {"redis://h:4294973675", "port must be a number from 1 to 65535"},
    {"redis://h/4294967297", "database must be a non-negative number"},
    {"unix:///tmp/r.sock?db=4294967297", "database must be a non-negative number"},
    {"redis://h/x", "database must be a non-negative number"},
    {"redis://h/-1", "database must be a non-negative number"},
    {"redis://u:p%zz@h", "bad %-escape"},
    {"redis://u:p%4@h", "bad %-escape"},
    {"redis://u:p%00@h", "bad %-escape"},
    {"redis://user@h", "user but no password"},
    {"redis://u:@h", "empty password"},
    {"redis://[::1", "'[' without ']'"},
    {"redis://[::1]x", "junk after ']'"},
    {"redis://h?db=1", "take no query key 'db'"},
    {"redis://h?zz=1", "unknown key 'zz' (redis:// takes: cluster, addr)"},
    {"redis://h?cluster=2", "cluster= takes 0 or 1"},
    {"redis://h?addr=h2:7001", "it needs cluster=1"},
    {"redis://h/3?cluster=1", "only database 0"},
    {"redis://h?cluster=1&addr=h2:0", "port must be a number from 1 to 65535"},
    {"redis://h?cluster=1&addr=", "no host"},
    {"redis://h?cluster=1&addr=a&addr=b&addr=c&addr=d&addr=e&addr=f&addr=g&addr=h",
     "more than 8 cluster seeds"},
    {"unix:///tmp/r.sock?cluster=1", "take no query key 'cluster'"},
    {"redis+sentinel://h", "needs the master's name"},
    {"redis+sentinel://h:26379/", "needs the master's name"},
    {"redis+sentinel://h?sentinel_password=x", "needs the master's name"},
    {"redis+sentinel://h,/m", "empty host in its list"},
    {"redis+sentinel://,h/m", "empty host in its list"},
    {"redis+sentinel://h:0/m", "port must be a number from 1 to 65535"},
    {"redis+sentinel://h/my%20master", "space or a control character"},
    {"redis+sentinel://h/m/x", "database must be a non-negative number"},
    {"redis+sentinel://h/m?cluster=1", "take no query key 'cluster'"},
    {"redis+sentinel://h/m?ca=/x", "take no query key 'ca': TLS needs a rediss:// URL"},
    {"redis+sentinel://h/m?sentinel_user=u", "sentinel_user but no sentinel_password"},
    {"redis+sentinel://h/m?bogus=1",
     "unknown key 'bogus' (redis+sentinel:// takes: addr, sentinel_user, sentinel_password)"},
    {"redis+sentinel://a,b,c,d,e,f,g,h,i/m", "more than 8 sentinels"},
    {"redis+sentinel://a,b,c,d,e,f,g/m?addr=h&addr=i", "more than 8 sentinels"},
    {"redis://h?sentinel_password=x", "only a Sentinel URL (redis+sentinel://) takes it"},
    {"unix://relative.sock", "absolute socket path"},
    {"unix://", "absolute socket path"},
    {"unix:///tmp/r.sock?foo=1", "unknown key 'foo' (unix:// takes: db, user, password)"},
    {"unix:///tmp/r.sock?db", "key=value"},
    {"unix:///tmp/r.sock?db=x", "database must be a non-negative number"},
    {"unix:///tmp/r.sock?user=u", "user but no password"},
    {"unix:///" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaa", "longer than 107 bytes"},
};

START_TEST(test_url_bad)
{
    const bad_url *b = &bad_urls[_i];
    net_url r;
    char err[256];
    net_seeds seeds;
    ck_assert_int_eq(net_url_parse(&r, &seeds, b->url, err, sizeof err), RESP_ERR_ARG);
    ck_assert_msg(strstr(err, b->msg) != NULL, "%s: got '%s', want '%s'", b->url, err, b->msg);
}
END_TEST

START_TEST(test_url_cluster)
{
    net_url r;
    net_seeds seeds;
    char err[256];
    static const char seeded[] = "redis://u:pw@10.0.0.1:7000?cluster=1&addr=10.0.0.2:7001&addr=[::1]";
    ck_assert_int_eq(net_url_parse(&r, &seeds, seeded, err, sizeof err), RESP_OK);
    ck_assert_int_eq(r.cluster, 1);
    ck_assert_str_eq(r.host, "10.0.0.1");
    ck_assert_str_eq(r.port, "7000");
    ck_assert_str_eq(r.password, "pw");
    ck_assert_int_eq(seeds.n, 2);
    ck_assert_str_eq(seeds.at[0].host, "10.0.0.2");
    ck_assert_str_eq(seeds.at[0].port, "7001");
    ck_assert_str_eq(seeds.at[1].host, "::1");
    ck_assert_str_eq(seeds.at[1].port, "6379");
    /* a node of the cluster: same credentials, its own address */
    net_url n;
    ck_assert_int_eq(net_url_at(&n, &r, "127.0.0.1", 9, "7005", 4), RESP_OK);
    ck_assert_str_eq(n.host, "127.0.0.1");
    ck_assert_str_eq(n.port, "7005");
    ck_assert_str_eq(n.user, "u");
    ck_assert_str_eq(n.password, "pw");
    /* a caller that takes no seeds is told so */
    ck_assert_int_eq(net_url_parse(&r, NULL, seeded, err, sizeof err), RESP_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(err, "addr= (more seeds) is not taken here"));
    ck_assert_int_eq(net_url_parse(&r, NULL, "redis://h:1?cluster=0", err, sizeof err), RESP_OK);
    ck_assert_int_eq(r.cluster, 0);
    ck_assert_int_eq(net_url_parse(&r, NULL, "redis://h:1/2", err, sizeof err), RESP_OK);
    ck_assert_int_eq(r.db, 2);
}
END_TEST

/* redis+sentinel:// and rediss+sentinel://: the sentinels (the first is the
 * URL's own address, the others and addr= go to the seeds, default port
 * 26379), the master's name, its db and credentials in the URL, the
 * sentinels' apart; a caller that takes no seeds is told so. */
START_TEST(test_url_sentinel)
{
    net_url r;
    net_seeds seeds;
    char err[256];
    static const char full[] = "redis+sentinel://mu:mp%40@10.0.0.1,[::1]:26380,h3:5000/my%2Dmaster/3"
                               "?sentinel_user=su&sentinel_password=s%26p&addr=h4";
    ck_assert_msg(net_url_parse(&r, &seeds, full, err, sizeof err) == RESP_OK, "%s", err);
    ck_assert_int_eq(r.sentinel, 1);
    ck_assert_int_eq(r.cluster, 0);
    ck_assert_int_eq(r.tls, 0);
    ck_assert_str_eq(r.host, "10.0.0.1");
    ck_assert_str_eq(r.port, "26379");
    ck_assert_str_eq(r.user, "mu");
    ck_assert_str_eq(r.password, "mp@");
    ck_assert_int_eq(r.db, 3);
    ck_assert_str_eq(seeds.master, "my-master");
    ck_assert_str_eq(seeds.sentinel_user, "su");
    ck_assert_str_eq(seeds.sentinel_password, "s&p");
    ck_assert_int_eq(seeds.n, 3);
    ck_assert_str_eq(seeds.at[0].host, "::1");
    ck_assert_str_eq(seeds.at[0].port, "26380");
    ck_assert_str_eq(seeds.at[1].host, "h3");
    ck_assert_str_eq(seeds.at[1].port, "5000");
    ck_assert_str_eq(seeds.at[2].host, "h4");
    ck_assert_str_eq(seeds.at[2].port, "26379");
    ck_assert_int_eq(net_url_parse(&r, &seeds, "REDISS+SENTINEL://h/m?ca=/ca.pem&insecure=1", err,
                                   sizeof err),
                     RESP_OK);
    ck_assert_int_eq(r.tls, 1);
    ck_assert_int_eq(r.sentinel, 1);
    ck_assert_str_eq(r.ca, "/ca.pem");
    ck_assert_str_eq(seeds.master, "m");
    ck_assert_int_eq(seeds.n, 0);
    ck_assert_str_eq(seeds.sentinel_password, "");
    /* a plain URL leaves the Sentinel fields empty */
    ck_assert_int_eq(net_url_parse(&r, &seeds, "redis://h", err, sizeof err), RESP_OK);
    ck_assert_int_eq(r.sentinel, 0);
    ck_assert_str_eq(seeds.master, "");
    ck_assert_int_eq(net_url_parse(&r, NULL, "redis+sentinel://h/m", err, sizeof err), RESP_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(err, "a Sentinel URL (redis+sentinel://) is not taken here"));
    /* a failed parse never echoes, nor keeps, the sentinels' password */
    ck_assert_int_eq(net_url_parse(&r, &seeds, "redis+sentinel://h/m?sentinel_password=hunter2&zz=1",
                                   err, sizeof err),
                     RESP_ERR_ARG);
    ck_assert_ptr_null(strstr(err, "hunter2"));
    ck_assert_str_eq(seeds.sentinel_password, "");
}
END_TEST

START_TEST(test_url_never_echoes_password)
{
    static const char *const urls[] = {"redis://u:hunter2@h:99999", "redis://u:hunter2@[::1",
                                       "redis://u:hunter2@h/zz", "unix:///x?password=hunter2&zz=1",
                                       "rediss://u:hunter2@h?zz=1", "rediss://u:hunter2@h:0?ca=/x",
                                       "rediss://u:hunter2@h?ca=x&sni="};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        net_url r;
        char err[256];
        ck_assert_int_eq(net_url_parse(&r, NULL, urls[i], err, sizeof err), RESP_ERR_ARG);
        ck_assert_msg(strstr(err, "hunter2") == NULL, "%s -> %s", urls[i], err);
        ck_assert_str_eq(r.password, "");
    }
    ck_assert_int_eq(net_url_parse(NULL, NULL, "redis://h", NULL, 0), RESP_ERR_ARG);
}
END_TEST

/* rediss://: the TLS parameters, %-decoding, the user part and the query
 * split where a password holds '?' or '@', and the defaults from options. */
START_TEST(test_url_tls)
{
    net_url r;
    char err[256];
    ck_assert_int_eq(net_url_parse(&r, NULL, "redis://h", err, sizeof err), RESP_OK);
    ck_assert_int_eq(r.tls, 0);
    ck_assert_int_eq(net_url_parse(&r, NULL, "REDISS://h", err, sizeof err), RESP_OK);
    ck_assert_int_eq(r.tls, 1);
    ck_assert_int_eq(r.kind, NET_URL_TCP);
    ck_assert_str_eq(r.port, "6379");
    ck_assert_str_eq(r.ca, "");
    ck_assert_int_eq(r.insecure, 0);

    const char *u = "rediss://al:p?w@d@[::1]:6380/3?ca=/etc/c%20a.pem&cert=/c.crt&key=/k.key"
                    "&sni=redis.example&insecure=1";
    ck_assert_msg(net_url_parse(&r, NULL, u, err, sizeof err) == RESP_OK, "%s", err);
    ck_assert_str_eq(r.user, "al");
    ck_assert_str_eq(r.password, "p?w@d");
    ck_assert_str_eq(r.host, "::1");
    ck_assert_str_eq(r.port, "6380");
    ck_assert_int_eq(r.db, 3);
    ck_assert_str_eq(r.ca, "/etc/c a.pem");
    ck_assert_str_eq(r.cert, "/c.crt");
    ck_assert_str_eq(r.key, "/k.key");
    ck_assert_str_eq(r.sni, "redis.example");
    ck_assert_int_eq(r.insecure, 1);
    char desc[400];
    net_url_describe(&r, desc, sizeof desc);
    ck_assert_str_eq(desc, "[::1]:6380");
    /* an '@' in a value is %-encoded; insecure=0 is allowed and off */
    ck_assert_int_eq(net_url_parse(&r, NULL, "rediss://h?ca=/a%40b&insecure=0", err, sizeof err),
                     RESP_OK);
    ck_assert_str_eq(r.ca, "/a@b");
    ck_assert_int_eq(r.insecure, 0);

    /* defaults from options fill what the URL leaves unset */
    ck_assert_int_eq(net_url_parse(&r, NULL, "rediss://h?ca=/mine", err, sizeof err), RESP_OK);
    ck_assert_int_eq(net_url_tls_defaults(&r, "/theirs", "/c", NULL, 1, err, sizeof err), RESP_OK);
    ck_assert_str_eq(r.ca, "/mine");
    ck_assert_str_eq(r.cert, "/c");
    ck_assert_str_eq(r.key, "");
    ck_assert_int_eq(r.insecure, 1);
    ck_assert_int_eq(net_url_parse(&r, NULL, "rediss://h?key=/k", err, sizeof err), RESP_OK);
    ck_assert_int_eq(net_url_tls_defaults(&r, NULL, NULL, NULL, 0, err, sizeof err), RESP_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(err, "key= needs its certificate"));
    /* a plain URL takes no TLS defaults */
    ck_assert_int_eq(net_url_parse(&r, NULL, "redis://h", err, sizeof err), RESP_OK);
    ck_assert_int_eq(net_url_tls_defaults(&r, "/ca", "/c", "/k", 1, err, sizeof err), RESP_OK);
    ck_assert_str_eq(r.ca, "");
    ck_assert_int_eq(r.insecure, 0);
}
END_TEST

/* ---- connections ------------------------------------------------------------------------ */

static const char *const ping[] = {"PING"};

static void expect_pong(net_conn *c)
{
    nx_result r = nx_call(c, 1, ping);
    ck_assert_msg(r.status == RESP_OK, "%s", r.text);
    ck_assert_int_eq(r.type, RESP_STATUS);
    ck_assert_str_eq(r.text, "PONG");
}

START_TEST(test_ping_tcp_unix_v6)
{
    fx_server s;
    fx_opts o;
    memset(&o, 0, sizeof o);
    o.unix_socket = 1;
    o.ipv6 = 1;
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    net_conn *c = nx_conn(s.url, 1000);
    ck_assert_uint_eq(net_conn_generation(c), 0); /* no I/O before the first request */
    ck_assert_int_eq(net_conn_fd(c), -1);
    expect_pong(c);
    ck_assert_uint_eq(net_conn_generation(c), 1);
    expect_pong(c); /* same connection */
    ck_assert_uint_eq(net_conn_generation(c), 1);
    net_conn_free(c);
    c = nx_conn(s.unix_url, 1000);
    expect_pong(c);
    net_conn_free(c);
    if (s.has_ipv6) {
        char url[64];
        snprintf(url, sizeof url, "redis://[::1]:%d", s.port);
        c = nx_conn(url, 1000);
        expect_pong(c);
        net_conn_free(c);
        /* "localhost" may resolve to ::1 first or 127.0.0.1: either works */
        snprintf(url, sizeof url, "redis://localhost:%d", s.port);
        c = nx_conn(url, 1000);
        expect_pong(c);
        net_conn_free(c);
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

    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d", s.port);
    net_conn *c = nx_conn(url, 1000);
    expect_pong(c);
    net_conn_free(c);

    snprintf(url, sizeof url, "redis://alice:wonder%%20land@127.0.0.1:%d", s.port);
    c = nx_conn(url, 1000);
    expect_pong(c);
    net_conn_free(c);

    /* wrong password: AUTH error, the password is not in the message, and
     * the queued request fails without ever being sent */
    snprintf(url, sizeof url, "redis://:wrongpass@127.0.0.1:%d", s.port);
    c = nx_conn(url, 1000);
    nx_result r = nx_call(c, 1, ping);
    ck_assert_int_eq(r.status, RESP_ERR_AUTH);
    ck_assert_ptr_nonnull(strstr(r.text, "AUTH refused"));
    ck_assert_ptr_null(strstr(r.text, "wrongpass"));
    ck_assert(!net_conn_ready(c));
    ck_assert_uint_eq(net_conn_requests(c), 0);
    net_conn_free(c);

    /* missing password: the command gets NOAUTH */
    c = nx_conn(s.url, 1000);
    r = nx_call(c, 1, ping);
    ck_assert_int_eq(r.status, RESP_OK);
    ck_assert_int_eq(r.type, RESP_ERROR);
    ck_assert(strncmp(r.text, "NOAUTH", 6) == 0);
    net_conn_free(c);

    /* SELECT: a key set through /5 lives in db 5 */
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/5", s.port);
    c = nx_conn(url, 1000);
    static const char *const set[] = {"SET", "where", "db5"};
    ck_assert_int_eq(nx_call(c, 3, set).status, RESP_OK);
    char out[256];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "EXISTS where"), 0);
    ck_assert_str_eq(out, "0");
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "INFO keyspace"), 0);
    ck_assert_ptr_nonnull(strstr(out, "db5:keys=1"));
    net_conn_free(c);

    /* SELECT out of range: refused, reported as AUTH/SELECT error */
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/99", s.port);
    c = nx_conn(url, 1000);
    r = nx_call(c, 1, ping);
    ck_assert_int_eq(r.status, RESP_ERR_AUTH);
    ck_assert_ptr_nonnull(strstr(r.text, "SELECT refused"));
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_refused)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", fx_free_port());
    net_conn *c = nx_conn(url, 1000);
    double t0 = fx_now_ms();
    ck_assert_int_eq(nx_send(c, 1, ping, 1, 0), RESP_OK);
    ck_assert_int_eq(nx_send(c, 1, ping, 2, 0), RESP_OK);
    nx_result r[2];
    ck_assert_uint_eq(nx_run(&c, 1, r, 2, 0), 2); /* both queued requests fail */
    ck_assert_double_lt(fx_now_ms() - t0, 500);
    ck_assert_int_eq(r[0].status, RESP_ERR_IO);
    ck_assert_int_eq(r[1].status, RESP_ERR_IO);
    ck_assert_uint_eq(r[0].tag.seq, 1);
    ck_assert_uint_eq(r[1].tag.seq, 2);
    ck_assert_ptr_nonnull(strstr(r[0].text, "refused"));
    ck_assert_uint_eq(net_conn_requests(c), 0); /* queue dropped */
    net_conn_free(c);
    c = nx_conn("unix:///nonexistent/redis.sock", 1000);
    ck_assert_int_eq(nx_call(c, 1, ping).status, RESP_ERR_IO);
    net_conn_free(c);
    c = nx_conn("redis://no-such-host.invalid:6379", 1000);
    nx_result rr = nx_call(c, 1, ping);
    ck_assert_int_eq(rr.status, RESP_ERR_IO);
    ck_assert_ptr_nonnull(strstr(rr.text, "resolve"));
    net_conn_free(c);
}
END_TEST

START_TEST(test_stopped_server_times_out)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_conn *c = nx_conn(s.url, 300);
    expect_pong(c);
    fx_server_pause(&s);
    double t0 = fx_now_ms();
    nx_result r = nx_call(c, 1, ping);
    double took = fx_now_ms() - t0;
    ck_assert_int_eq(r.status, RESP_ERR_TIMEOUT);
    ck_assert_msg(took >= 290 && took < 900, "took %.1f ms", took);
    /* a timed-out request is never answered late: the next one runs on a
     * new connection (the kernel accepts it; no reply comes before the
     * deadline either) */
    t0 = fx_now_ms();
    ck_assert_int_eq(nx_call(c, 1, ping).status, RESP_ERR_TIMEOUT);
    ck_assert_double_lt(fx_now_ms() - t0, 900);
    ck_assert_uint_eq(net_conn_generation(c), 2);
    fx_server_resume(&s);
    expect_pong(c);
    ck_assert_uint_eq(net_conn_generation(c), 3);
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_restart_reconnects)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_conn *c = nx_conn(s.url, 1000);
    expect_pong(c);
    ck_assert_int_eq(fx_server_restart(&s), 0);
    expect_pong(c); /* the dead idle connection is noticed and replaced */
    ck_assert_uint_eq(net_conn_generation(c), 2);
    char out[64];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CLIENT KILL TYPE normal SKIPME yes"), 0);
    usleep(20 * 1000);
    expect_pong(c);
    ck_assert_uint_eq(net_conn_generation(c), 3);
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_pipeline_in_order)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_conn *c = nx_conn(s.url, 1000);
    static const char *const a[] = {"ECHO", "one"}, *const b[] = {"ECHO", "two"},
                             *const d[] = {"ECHO", "three"};
    ck_assert_int_eq(nx_send(c, 2, a, 1, 0), RESP_OK);
    ck_assert_int_eq(nx_send(c, 2, b, 2, 0), RESP_OK);
    ck_assert_int_eq(nx_send(c, 2, d, 3, 0), RESP_OK);
    ck_assert_uint_eq(net_conn_requests(c), 3);
    nx_result r[3];
    ck_assert_uint_eq(nx_run(&c, 1, r, 3, 0), 3);
    static const char *const want[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(r[i].status, RESP_OK);
        ck_assert_uint_eq(r[i].tag.seq, (unsigned)i + 1);
        ck_assert_str_eq(r[i].text, want[i]);
    }
    ck_assert_uint_eq(net_conn_requests(c), 0);

    /* binary-safe arguments round-trip */
    const char val[] = {'x', '\r', '\n', '\0', '*', '1', '\r', '\n'};
    const char *set[3] = {"SET", "bin", val};
    size_t setl[3] = {3, 3, sizeof val};
    ck_assert_int_eq(nx_sendl(c, 3, set, setl, 4, 0), RESP_OK);
    const char *get[2] = {"GET", "bin"};
    size_t getl[2] = {3, 3};
    ck_assert_int_eq(nx_sendl(c, 2, get, getl, 5, 0), RESP_OK);
    ck_assert_uint_eq(nx_run(&c, 1, r, 2, 0), 2);
    ck_assert_uint_eq(r[1].len, sizeof val);
    ck_assert(memcmp(r[1].text, val, sizeof val) == 0);

    /* a thousand requests in flight at once, answered in order */
    static nx_result many[1000];
    char num[1000][8];
    for (int i = 0; i < 1000; i++) {
        snprintf(num[i], sizeof num[i], "%d", i);
        const char *echo[2] = {"ECHO", num[i]};
        ck_assert_int_eq(nx_send(c, 2, echo, (uint32_t)i, 0), RESP_OK);
    }
    ck_assert_uint_eq(nx_run(&c, 1, many, 1000, 0), 1000);
    for (int i = 0; i < 1000; i++) {
        ck_assert_uint_eq(many[i].tag.seq, (unsigned)i);
        ck_assert_str_eq(many[i].text, num[i]);
    }
    ck_assert_uint_eq(net_conn_generation(c), 1);
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

/* max_bulk at its largest and max_reply left to its default (max_bulk +
 * 4 KiB): the default must saturate, not wrap a 32-bit size_t to 4095
 * bytes, so a 20 KB reply still fits. */
START_TEST(test_largest_bulk_limit)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_url u;
    char err[256];
    ck_assert_int_eq(net_url_parse(&u, NULL, s.url, err, sizeof err), RESP_OK);
    net_opts o;
    memset(&o, 0, sizeof o);
    o.io_timeout_ms = o.connect_timeout_ms = 2000;
    o.limits.max_bulk = UINT32_MAX;
    net_conn *c = NULL;
    ck_assert_int_eq(net_conn_new(&c, &u, &o), RESP_OK);
    static char big[20000];
    memset(big, 'v', sizeof big);
    const char *set[3] = {"SET", "big", big};
    size_t setl[3] = {3, 3, sizeof big};
    const char *get[2] = {"GET", "big"};
    size_t getl[2] = {3, 3};
    ck_assert_int_eq(nx_sendl(c, 3, set, setl, 1, 0), RESP_OK);
    ck_assert_int_eq(nx_sendl(c, 2, get, getl, 2, 0), RESP_OK);
    nx_result r[2];
    ck_assert_uint_eq(nx_run(&c, 1, r, 2, net_now_ns() + 5000 * 1000000LL), 2);
    ck_assert_msg(r[1].status == RESP_OK, "%s", r[1].text);
    ck_assert_int_eq(r[1].type, RESP_BULK);
    ck_assert_uint_eq(r[1].len, sizeof big);
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_parallel_connections)
{
    /* three servers, one stopped: one round costs one deadline, not three */
    fx_server s[3];
    net_conn *c[3];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fx_server_start(&s[i], NULL), 0);
        c[i] = nx_conn(s[i].url, 300);
        expect_pong(c[i]);
    }
    fx_server_pause(&s[1]);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nx_send(c[i], 1, ping, (uint32_t)i, 0), RESP_OK);
    nx_result r[3];
    double t0 = fx_now_ms();
    ck_assert_uint_eq(nx_run(c, 3, r, 3, 0), 3);
    double took = fx_now_ms() - t0;
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(r[k].status, r[k].conn == 1 ? RESP_ERR_TIMEOUT : RESP_OK);
    ck_assert_uint_eq(r[2].conn, 1); /* the healthy ones answered first */
    ck_assert_msg(took >= 290 && took < 900, "took %.1f ms", took);
    fx_server_resume(&s[1]);
    for (int i = 0; i < 3; i++) {
        expect_pong(c[i]);
        fx_server_stop(&s[i]);
        net_conn_free(c[i]);
    }
}
END_TEST

/* Requests pipelined on a stalled server each time out by their own
 * deadline, not by the first one's; nothing more is written meanwhile, and
 * once no written request waits the connection is replaced, so late
 * replies are never read. */
START_TEST(test_each_request_its_own_deadline)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_conn *c = nx_conn(s.url, 400);
    expect_pong(c);
    fx_server_pause(&s);
    double t0 = fx_now_ms();
    ck_assert_int_eq(nx_send(c, 1, ping, 1, 0), RESP_OK);
    nx_result r[3];
    ck_assert_uint_eq(nx_run(&c, 1, r, 1, net_now_ns() + 200 * 1000000LL), 0); /* 200 ms in */
    ck_assert_int_eq(nx_send(c, 1, ping, 2, 0), RESP_OK);
    ck_assert_uint_eq(nx_run(&c, 1, r, 1, 0), 1);
    double first = fx_now_ms() - t0;
    ck_assert_int_eq(r[0].status, RESP_ERR_TIMEOUT);
    ck_assert_uint_eq(r[0].tag.seq, 1);
    ck_assert_msg(first >= 390 && first < 1200, "first after %.1f ms", first);
    /* after the first timed out, a third request is held back: it goes out
     * on the next connection, once the second has had its full deadline */
    ck_assert_int_eq(nx_send(c, 1, ping, 3, 0), RESP_OK);
    ck_assert_uint_eq(nx_run(&c, 1, r, 1, 0), 1);
    double second = fx_now_ms() - t0;
    ck_assert_int_eq(r[0].status, RESP_ERR_TIMEOUT);
    ck_assert_uint_eq(r[0].tag.seq, 2);
    ck_assert_msg(second >= 590 && second < 1800, "second after %.1f ms", second);
    fx_server_resume(&s);
    ck_assert_uint_eq(nx_run(&c, 1, r, 1, 0), 1);
    ck_assert_int_eq(r[0].status, RESP_OK);
    ck_assert_uint_eq(r[0].tag.seq, 3);
    ck_assert_str_eq(r[0].text, "PONG");
    ck_assert_uint_eq(net_conn_generation(c), 2);
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_deadline_caps_and_late_reply)
{
    fx_server s;
    fx_opts o;
    memset(&o, 0, sizeof o);
    o.debug = 1;
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    net_conn *c = nx_conn(s.url, 2000);
    expect_pong(c);
    static const char *const sleep1[] = {"DEBUG", "SLEEP", "0.5"};
    static const char *const echo[] = {"ECHO", "after"};
    /* the caller's cap shortens the 2 s I/O deadline */
    double t0 = fx_now_ms();
    ck_assert_int_eq(nx_send(c, 3, sleep1, 1, net_now_ns() + 200 * 1000000LL), RESP_OK);
    nx_result r;
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, 0), 1);
    ck_assert_int_eq(r.status, RESP_ERR_TIMEOUT);
    ck_assert_ptr_nonnull(strstr(r.text, "capped by the caller"));
    ck_assert_double_lt(fx_now_ms() - t0, 600);
    /* the late +OK of DEBUG SLEEP is never read as the ECHO's reply */
    r = nx_call(c, 2, echo);
    ck_assert_int_eq(r.status, RESP_OK);
    ck_assert_str_eq(r.text, "after");
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

/* A connection killed with requests in flight fails exactly those, and
 * the next request opens a new one. */
START_TEST(test_killed_mid_pipeline)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_conn *c = nx_conn(s.url, 2000);
    expect_pong(c);
    /* BLPOP blocks this client (not the server), the ECHO waits behind it */
    static const char *const blpop[] = {"BLPOP", "nothing", "1"};
    static const char *const echo[] = {"ECHO", "x"};
    ck_assert_int_eq(nx_send(c, 3, blpop, 1, 0), RESP_OK);
    ck_assert_int_eq(nx_send(c, 2, echo, 2, 0), RESP_OK);
    nx_result r[3];
    ck_assert_uint_eq(nx_run(&c, 1, r, 1, net_now_ns() + 50 * 1000000LL), 0); /* written */
    char out[64];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CLIENT KILL TYPE normal SKIPME yes"), 0);
    ck_assert_uint_eq(nx_run(&c, 1, r, 2, 0), 2);
    ck_assert_int_eq(r[0].status, RESP_ERR_IO);
    ck_assert_int_eq(r[1].status, RESP_ERR_IO);
    ck_assert_uint_eq(r[1].tag.seq, 2);
    /* the detail survives to the caller (it once came out empty) */
    char closed[128];
    snprintf(closed, sizeof closed, "connection closed by 127.0.0.1:%d", s.port);
    ck_assert_msg(strstr(r[0].text, closed), "%s", r[0].text);
    expect_pong(c); /* and it recovers */
    ck_assert_uint_eq(net_conn_generation(c), 2);
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

/* A server that closes the first connection after one byte, and answers
 * +PONG on later ones only if they start with a clean PING. */
static void closing_server(int lfd)
{
    static const char ping_cmd[] = "*1\r\n$4\r\nPING\r\n";
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    alarm(30);
    for (int n = 0;; n++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        char buf[sizeof ping_cmd - 1];
        size_t got = 0;
        ssize_t k = 1;
        while (got < (n == 0 ? 1 : sizeof buf) && k > 0)
            if ((k = recv(fd, buf + got, (n == 0 ? 1 : sizeof buf) - got, 0)) > 0)
                got += (size_t)k;
        if (n > 0) {
            const char *reply =
                got == sizeof buf && memcmp(buf, ping_cmd, got) == 0 ? "+PONG\r\n" : "-ERR garbage\r\n";
            if (send(fd, reply, strlen(reply), MSG_NOSIGNAL) < 0)
                continue;
            usleep(200 * 1000);
        }
        close(fd);
    }
}

/* A write that fails midway (the server closed after the first bytes of a
 * 16 MB request) fails that request: its first bytes went out, so the rest
 * is never sent on the next connection, where the request behind it goes
 * out whole. */
START_TEST(test_write_fails_midway)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(lfd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    /* A small receive buffer (not autotuned) on the accepted sockets, and a
     * request larger than the most a sender's buffer grows to (tcp_wmem's
     * 4 MB by default): the request cannot be wholly written before the
     * server closes, however slowly the server runs (under qemu-user it
     * may accept late). */
    int small = 4096;
    ck_assert_int_eq(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        closing_server(lfd);
        _exit(0);
    }
    close(lfd);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    net_conn *c = nx_conn(url, 2000);
    const size_t big = 16u << 20;
    char *v = calloc(1, big);
    const char *argv[3] = {"SET", "k", v};
    const size_t lens[3] = {3, 1, big};
    ck_assert_int_eq(nx_sendl(c, 3, argv, lens, 1, 0), RESP_OK);
    ck_assert_int_eq(nx_send(c, 1, ping, 2, 0), RESP_OK);
    nx_result r[2];
    ck_assert_uint_eq(nx_run(&c, 1, r, 2, net_now_ns() + 3000 * 1000000LL), 2);
    ck_assert_uint_eq(r[0].tag.seq, 1);
    ck_assert_msg(r[0].status == RESP_ERR_IO, "%s", r[0].text);
    ck_assert_uint_eq(r[1].tag.seq, 2);
    ck_assert_msg(r[1].status == RESP_OK && strcmp(r[1].text, "PONG") == 0, "%d %s",
                  r[1].status, r[1].text);
    free(v);
    net_conn_free(c);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}
END_TEST

START_TEST(test_forget)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_conn *c = nx_conn(s.url, 1000);
    static const char *const incr[] = {"INCR", "n"};
    int mine, other;
    net_tag a = {&mine, 1, 0}, b = {&other, 2, 0};
    size_t lens[2] = {4, 1};
    /* forgotten before it was written: it never goes out */
    ck_assert_int_eq(net_conn_request(c, 2, incr, lens, a, 0, net_now_ns()), RESP_OK);
    ck_assert_int_eq(net_conn_request(c, 2, incr, lens, b, 0, net_now_ns()), RESP_OK);
    ck_assert_uint_eq(net_conn_forget(c, &mine), 0);
    nx_result r;
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, 0), 1);
    ck_assert_ptr_eq(r.tag.owner, &other);
    ck_assert_int_eq(r.integer, 1);
    /* forgotten after it was written: it runs, its reply is dropped */
    ck_assert_int_eq(net_conn_request(c, 2, incr, lens, a, 0, net_now_ns()), RESP_OK);
    ck_assert_int_eq(net_conn_request(c, 2, incr, lens, b, 0, net_now_ns()), RESP_OK);
    net_conn_pump(c, net_now_ns()); /* writes both */
    ck_assert_uint_eq(net_conn_forget(c, &mine), 1);
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, 0), 1);
    ck_assert_ptr_eq(r.tag.owner, &other);
    ck_assert_int_eq(r.integer, 3);
    net_conn_free(c);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_push_mode)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    net_conn *c = nx_conn(s.url, 300);
    net_conn_set_push(c);
    static const char *const sub[] = {"SUBSCRIBE", "chan"};
    ck_assert_int_eq(nx_send(c, 2, sub, 1, 0), RESP_OK);
    nx_result r;
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, 0), 1);
    ck_assert_int_eq(r.status, RESP_OK); /* the confirmation, as a push */
    ck_assert_ptr_null(r.tag.owner);
    ck_assert_str_eq(r.text, "subscribe\nchan\n1");
    net_conn_ack(c);
    ck_assert_uint_eq(net_conn_requests(c), 0);
    /* idle past the I/O deadline: no message is not an error */
    double t0 = fx_now_ms();
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, net_now_ns() + 500 * 1000000LL), 0);
    ck_assert_double_ge(fx_now_ms() - t0, 480);
    ck_assert(net_conn_ready(c));
    char out[64];
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "PUBLISH chan hello"), 0);
    ck_assert_str_eq(out, "1");
    ck_assert_uint_eq(nx_run(&c, 1, &r, 1, net_now_ns() + 1000 * 1000000LL), 1);
    ck_assert_str_eq(r.text, "message\nchan\nhello");
    net_conn_free(c);
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
    tcase_add_test(u, test_url_cluster);
    tcase_add_test(u, test_url_sentinel);
    tcase_add_test(u, test_url_tls);
    suite_add_tcase(s, u);
    TCase *t = tcase_create("connections");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_ping_tcp_unix_v6);
    tcase_add_test(t, test_auth_select);
    tcase_add_test(t, test_refused);
    tcase_add_test(t, test_stopped_server_times_out);
    tcase_add_test(t, test_restart_reconnects);
    tcase_add_test(t, test_pipeline_in_order);
    tcase_add_test(t, test_parallel_connections);
    tcase_add_test(t, test_largest_bulk_limit);
    tcase_add_test(t, test_each_request_its_own_deadline);
    tcase_add_test(t, test_deadline_caps_and_late_reply);
    tcase_add_test(t, test_killed_mid_pipeline);
    tcase_add_test(t, test_write_fails_midway);
    tcase_add_test(t, test_forget);
    tcase_add_test(t, test_push_mode);
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
