/* test_torture.c - the short run of the fault harness (tests/torture.c)
 * that `make test` includes: every scenario on one node, a 5-node quorum
 * and a 3+3 cluster, half a second each (TORTURE_TEST_SECONDS, 9 in
 * all), judged as `make torture` judges them: no stale write accepted, no
 * overlapping intervals where leases must suffice, no operation later than
 * its deadline plus TORTURE_LATE_MS (250), and (TORTURE_STRICT, 1 by
 * default) no stale write accepted after a restart inside a lease, which
 * the fence seeding and the restart guard made true. The seed is printed;
 * TORTURE_SEED replays it. */
#define _GNU_SOURCE
#include "torture.h"

#include "fixture.h"
#include "fx_proxy.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_RESULTS 32

static uint64_t seed;

static double env_num(const char *name, double dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtod(s, NULL) : dflt;
}

static void run_topology(int topology)
{
    static tt_result res[MAX_RESULTS];
    int total = 0;
    for (int t = 0; t < TT_TOPOLOGIES; t++)
        total += tt_scenarios(t);
    tt_config cfg = {env_num("TORTURE_TEST_SECONDS", 9), seed, getenv("TORTURE_ONLY"),
                     (int)env_num("TORTURE_VERBOSE", 0)};
    int n = tt_run_topology(topology, &cfg, cfg.seconds / total, res, MAX_RESULTS);
    ck_assert_msg(n >= 0, "the %s did not start", tt_topology_name(topology));
    printf("torture, %s, seed %llu:\n", tt_topology_name(topology), (unsigned long long)seed);
    tt_print_table(stdout, res, n);
    fflush(stdout);
    int strict = (int)env_num("TORTURE_STRICT", 1);
    double bound = env_num("TORTURE_LATE_MS", 250);
    char why[256], all[2048] = "";
    size_t o = 0;
    for (int i = 0; i < n; i++)
        if (tt_judge(&res[i], strict, bound, why, sizeof why) != 0 && o < sizeof all)
            o += (size_t)snprintf(all + o, sizeof all - o, " %s: %s;", res[i].name, why);
    ck_assert_msg(all[0] == '\0', "seed %llu:%s", (unsigned long long)seed, all);
}

/* ---- the relay's faults do what they say (else every scenario passes) -------------- */

#define WAIT_MS 300

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    struct timeval tv = {0, WAIT_MS * 1000};
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void put(int fd, const char *req)
{
    ck_assert_int_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
}

/* One reply line, or "" when nothing came within WAIT_MS, "<closed>" or
 * "<reset>". */
static const char *reply(int fd)
{
    static char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
        buf[n] = '\0';
        buf[strcspn(buf, "\r")] = '\0';
        return buf;
    }
    if (n == 0)
        return "<closed>";
    return errno == ECONNRESET ? "<reset>" : "";
}

START_TEST(test_relay_faults)
{
    fx_server s;
    fx_proxy p;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    ck_assert_int_eq(fx_proxy_start(&p, &s.port, 1, 30000), 0);
    int fd = dial(p.port[0]);
    put(fd, "PING\r\n");
    ck_assert_str_eq(reply(fd), "+PONG");

    /* one-way: the request lands, its reply is held until the link passes */
    ck_assert_int_eq(fx_proxy_set(&p, 0, FX_LINK_DROP_REPLIES, 0), 0);
    put(fd, "SET k1 v1\r\n");
    ck_assert_str_eq(reply(fd), "");
    ck_assert_str_eq(tu_get(&s, "k1"), "v1");
    ck_assert_int_eq(fx_proxy_set(&p, 0, FX_LINK_PASS, 0), 0);
    ck_assert_str_eq(reply(fd), "+OK");

    /* blackhole: nothing lands, a new connection is not served; healed,
     * the held request flows late */
    ck_assert_int_eq(fx_proxy_set(&p, 0, FX_LINK_BLACKHOLE, 0), 0);
    put(fd, "SET k2 v2\r\n");
    ck_assert_str_eq(reply(fd), "");
    ck_assert_str_eq(tu_get(&s, "k2"), "");
    int fd2 = dial(p.port[0]);
    put(fd2, "PING\r\n");
    ck_assert_str_eq(reply(fd2), "");
    ck_assert_int_eq(fx_proxy_set(&p, 0, FX_LINK_PASS, 0), 0);
    ck_assert_str_eq(reply(fd), "+OK");
    ck_assert_str_eq(tu_get(&s, "k2"), "v2");
    ck_assert_str_eq(reply(fd2), "+PONG");

    /* delay: each way */
    ck_assert_int_eq(fx_proxy_set(&p, 0, FX_LINK_PASS, 100), 0);
    double t0 = fx_now_ms();
    put(fd, "PING\r\n");
    ck_assert_str_eq(reply(fd), "+PONG");
    ck_assert_double_ge(fx_now_ms() - t0, 195);

    /* reset: every connection of the link, at once */
    ck_assert_int_eq(fx_proxy_reset(&p, 0), 0);
    ck_assert_str_eq(reply(fd), "<reset>");
    ck_assert_str_eq(reply(fd2), "<reset>");
    ck_assert_int_eq(fx_proxy_accepted(&p, 0), 2);
    close(fd);
    close(fd2);
    fx_proxy_stop(&p);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_torture_one)
{
    run_topology(TT_ONE);
}
END_TEST

START_TEST(test_torture_quorum)
{
    run_topology(TT_QUORUM);
}
END_TEST

START_TEST(test_torture_cluster)
{
    run_topology(TT_CLUSTER);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], TT_HOLDER_ARG) == 0)
        return tt_holder_main(argc, argv);
    seed = tt_seed_from_env();
    printf("test_torture: seed %llu (TORTURE_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    Suite *s = suite_create("torture");
    TCase *tc = tcase_create("short");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_relay_faults);
    tcase_add_test(tc, test_torture_one);
    tcase_add_test(tc, test_torture_quorum);
    tcase_add_test(tc, test_torture_cluster);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
