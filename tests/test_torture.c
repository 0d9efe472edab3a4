/* test_torture.c - the short run of the fault harness (tests/torture.c)
 * that `make test` includes: every scenario on one node, a 5-node quorum
 * and a 3+3 cluster, under a second each (TORTURE_TEST_SECONDS, 13 in
 * all), judged as `make torture` judges them: no stale write accepted, no
 * overlapping intervals where leases must suffice, no operation later than
 * its deadline plus TORTURE_LATE_MS (250). TORTURE_STRICT=1 (make test
 * SAFETY=1) also asserts what needs issue 25's library changes. The seed is
 * printed; TORTURE_SEED replays it. */
#define _GNU_SOURCE
#include "torture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    tt_config cfg = {env_num("TORTURE_TEST_SECONDS", 13), seed, getenv("TORTURE_ONLY"),
                     (int)env_num("TORTURE_VERBOSE", 0)};
    int n = tt_run_topology(topology, &cfg, cfg.seconds / total, res, MAX_RESULTS);
    ck_assert_msg(n >= 0, "the %s did not start", tt_topology_name(topology));
    printf("torture, %s, seed %llu:\n", tt_topology_name(topology), (unsigned long long)seed);
    tt_print_table(stdout, res, n);
    fflush(stdout);
    int strict = (int)env_num("TORTURE_STRICT", 0);
    double bound = env_num("TORTURE_LATE_MS", 250);
    char why[256], all[2048] = "";
    size_t o = 0;
    for (int i = 0; i < n; i++)
        if (tt_judge(&res[i], strict, bound, why, sizeof why) != 0 && o < sizeof all)
            o += (size_t)snprintf(all + o, sizeof all - o, " %s: %s;", res[i].name, why);
    ck_assert_msg(all[0] == '\0', "seed %llu:%s", (unsigned long long)seed, all);
}

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
