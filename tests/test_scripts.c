/* test_scripts.c - the SHA1s built into redlock.c are the ones Redis
 * computes for the script texts (SCRIPT LOAD), so EVALSHA hits on a warm
 * server and EVAL is only a fallback. Includes scripts.h, where the texts
 * and the table live. */
#include "../scripts.h"

#include "fixture.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSCRIPTS ((size_t)S_COUNT)

START_TEST(test_sha1_matches_script_load)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    for (size_t i = 0; i < NSCRIPTS; i++) {
        const script *sc = &scripts[i];
        const char *argv[] = {"SCRIPT", "LOAD", sc->lua};
        const size_t lens[] = {6, 4, strlen(sc->lua)};
        char out[128];
        ck_assert_int_eq(fx_cmdv(&s, out, sizeof out, 3, argv, lens), 0);
        ck_assert_msg(strcmp(out, sc->sha) == 0, "script %s: built-in SHA1 %s, Redis says %s",
                      sc->name, sc->sha, out);
    }
    fx_server_stop(&s);
}
END_TEST

/* A lock cycle on a fresh server leaves the scripts it used cached under the
 * built-in SHA1s: the second cycle goes by EVALSHA alone. */
START_TEST(test_cycle_caches_scripts)
{
    fx_server s;
    ck_assert_int_eq(fx_server_start(&s, NULL), 0);
    redlock_client *c = tu_client(s.url, 0);
    redlock *l = tu_lock(c, "sha", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    char cmd[256], out[64];
    snprintf(cmd, sizeof cmd, "SCRIPT EXISTS %s %s %s", scripts[S_ACQUIRE].sha,
             scripts[S_REFRESH].sha, scripts[S_RELEASE].sha);
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, cmd), 0);
    ck_assert_str_eq(out, "1\n1\n1");
    /* the second cycle: no EVAL at all */
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "CONFIG RESETSTAT"), 0);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    char info[4096];
    ck_assert_int_eq(fx_cmd(&s, info, sizeof info, "INFO commandstats"), 0);
    ck_assert_ptr_null(strstr(info, "cmdstat_eval:"));
    ck_assert_ptr_nonnull(strstr(info, "cmdstat_evalsha:calls=2,"));
    redlock_free(l);
    redlock_client_free(c);
    fx_server_stop(&s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("scripts");
    TCase *t = tcase_create("sha1");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_sha1_matches_script_load);
    tcase_add_test(t, test_cycle_caches_scripts);
    suite_add_tcase(su, t);
    SRunner *r = srunner_create(su);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
