/* torture_main.c - `make torture`: every scenario of tests/torture.c on one
 * node, a 5-node quorum and a 3+3 cluster, then the table.
 *
 * Environment: TORTURE_SECONDS (60: for all scenarios together, setup not
 * counted), TORTURE_SEED (replays a run's fault schedule; printed),
 * TORTURE_ONLY (a part of the scenario names to run), TORTURE_LATE_MS (the
 * bound on lateness past a deadline, 250), TORTURE_STRICT (1 by default:
 * also assert what needed issue 25's library changes; 0 to judge an older
 * library), TORTURE_VERBOSE=1 (each fault).
 * Exits 1 if a scenario breaks what it must hold.
 */
#define _GNU_SOURCE
#include "torture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RESULTS 64

static double env_num(const char *name, double dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtod(s, NULL) : dflt;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], TT_HOLDER_ARG) == 0)
        return tt_holder_main(argc, argv);
    static tt_result res[MAX_RESULTS];
    tt_config cfg = {env_num("TORTURE_SECONDS", 60), tt_seed_from_env(), getenv("TORTURE_ONLY"),
                     (int)env_num("TORTURE_VERBOSE", 0)};
    int strict = (int)env_num("TORTURE_STRICT", 1);
    double late_bound = env_num("TORTURE_LATE_MS", 250);
    int total = 0, n = 0, failed = 0, passed = 0;
    for (int t = 0; t < TT_TOPOLOGIES; t++)
        for (int i = 0; i < tt_scenarios(t); i++)
            total += !cfg.only || strstr(tt_scenario_name(t, i), cfg.only) != NULL;
    if (total == 0) {
        fprintf(stderr, "torture: no scenario matches TORTURE_ONLY=%s\n", cfg.only);
        return 2;
    }
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    printf("torture: %d scenarios, %.0f s in all (%.1f s each), seed %llu, %s\n", total,
           cfg.seconds, cfg.seconds / total, (unsigned long long)cfg.seed, date);
    fflush(stdout);
    for (int t = 0; t < TT_TOPOLOGIES; t++) {
        int k = tt_run_topology(t, &cfg, cfg.seconds / total, res + n, MAX_RESULTS - n);
        if (k < 0) {
            failed++;
            continue;
        }
        n += k;
    }
    printf("\n");
    tt_print_table(stdout, res, n);
    printf("\n");
    for (int i = 0; i < n; i++) {
        char why[256];
        if (tt_judge(&res[i], strict, late_bound, why, sizeof why) != 0) {
            printf("FAIL %s: %s\n", res[i].name, why);
            failed++;
        } else if (!res[i].skipped) {
            passed++;
        }
    }
    printf("rerun: make torture TORTURE_SEED=%llu TORTURE_SECONDS=%.0f\n",
           (unsigned long long)cfg.seed, cfg.seconds);
    printf("torture: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
