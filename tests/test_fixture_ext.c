/* test_fixture_ext.c - the Cluster and TLS fixtures do what they promise,
 * checked with independent clients only (fx_cmd, redis-cli, openssl). */
#define _GNU_SOURCE
#include "fixture.h"
#include "fx_cluster.h"
#include "fx_tls.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------- */

static const char *on(fx_cluster *cl, int i, const char *cmd)
{
    static char out[8192];
    ck_assert_msg(fx_cmd(fx_cluster_node(cl, i), out, sizeof out, cmd) == 0, "node %d: %s", i,
                  cmd);
    return out;
}

/* Several commands on one connection of node i; the last reply. */
static const char *on_seq(fx_cluster *cl, int i, const char *a, const char *b)
{
    static char out[8192];
    const char *cmds[] = {a, b};
    ck_assert_msg(fx_cmds(fx_cluster_node(cl, i), out, sizeof out, 2, cmds) == 0, "node %d: %s; %s",
                  i, a, b);
    return out;
}

static void expect_redirect(fx_cluster *cl, int i, const char *cmd, const char *kind, int slot,
                            int to)
{
    char want[128];
    snprintf(want, sizeof want, "-%s %d 127.0.0.1:%d", kind, slot, fx_cluster_node(cl, to)->port);
    ck_assert_str_eq(on(cl, i, cmd), want);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int alive(pid_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

/* Stop, and check that no process and no temp dir is left, also after a
 * second stop. */
static void stop_and_check(fx_cluster *cl)
{
    pid_t pid[FX_CLUSTER_MAX_NODES];
    char dir[FX_CLUSTER_MAX_NODES][256];
    int n = fx_cluster_size(cl);
    for (int i = 0; i < n; i++) {
        pid[i] = fx_cluster_node(cl, i)->pid;
        snprintf(dir[i], sizeof dir[i], "%s", fx_cluster_node(cl, i)->dir);
    }
    fx_cluster_stop(cl);
    fx_cluster_stop(cl);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(!alive(pid[i]), "node %d (pid %d) still runs", i, (int)pid[i]);
        ck_assert_msg(!dir[i][0] || !exists(dir[i]), "%s left behind", dir[i]);
    }
}

/* ---- cluster ------------------------------------------------------------------ */

START_TEST(test_cluster_3x3)
{
    fx_cluster cl;
    char want[128];
    ck_assert_int_eq(fx_cluster_start(&cl, 3, 1), 0);
    ck_assert_int_eq(fx_cluster_size(&cl), 6);
    int primaries = 0, replicas = 0;
    for (int i = 0; i < 6; i++) {
        const char *info = on(&cl, i, "CLUSTER INFO");
        ck_assert_ptr_nonnull(strstr(info, "cluster_state:ok\r\n"));
        ck_assert_ptr_nonnull(strstr(info, "cluster_slots_assigned:16384\r\n"));
        ck_assert_ptr_nonnull(strstr(info, "cluster_slots_ok:16384\r\n"));
        ck_assert_ptr_nonnull(strstr(info, "cluster_known_nodes:6\r\n"));
        ck_assert_ptr_nonnull(strstr(info, "cluster_size:3\r\n"));
        int role = fx_cluster_is_primary(&cl, i);
        ck_assert(role == 0 || role == 1);
        primaries += role == 1;
        replicas += role == 0;
        if (role == 0) /* each replica follows a primary that has exactly it */
            ck_assert_int_eq(fx_cluster_replica_of(&cl, fx_cluster_primary_of(&cl, i)), i);
        ck_assert_str_eq(fx_cluster_node_url(&cl, i), fx_cluster_node(&cl, i)->url);
    }
    ck_assert_int_eq(primaries, 3);
    ck_assert_int_eq(replicas, 3);
    /* the slots are split over the three primaries */
    int a = fx_cluster_slot_owner(&cl, 0), b = fx_cluster_slot_owner(&cl, 8192),
        c = fx_cluster_slot_owner(&cl, 16383);
    ck_assert(a >= 0 && b >= 0 && c >= 0 && a != b && b != c && a != c);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, a) + fx_cluster_is_primary(&cl, b) +
                         fx_cluster_is_primary(&cl, c),
                     3);

    /* CRC16 of "foo" is 12182 (Redis' own documentation); a tag decides */
    int slot = fx_cluster_keyslot(&cl, "foo", 3);
    ck_assert_int_eq(slot, 12182);
    ck_assert_int_eq(fx_cluster_keyslot(&cl, "{foo}.x", 7), 12182);
    int owner = fx_cluster_slot_owner(&cl, slot);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, owner), 1);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(fx_cluster_slot_owner_seen_by(&cl, i, slot), owner);
    ck_assert_str_eq(on(&cl, owner, "SET foo bar"), "OK");
    ck_assert_str_eq(on(&cl, owner, "GET foo"), "bar");
    for (int i = 0; i < 6; i++)
        if (i != owner)
            expect_redirect(&cl, i, "GET foo", "MOVED", slot, owner);

    snprintf(want, sizeof want, "redis://127.0.0.1:%d?cluster=1", fx_cluster_node(&cl, 0)->port);
    ck_assert_str_eq(fx_cluster_seed_url(&cl), want);
    stop_and_check(&cl);
}
END_TEST

START_TEST(test_cluster_migration_in_steps)
{
    fx_cluster cl;
    char cmd[64];
    ck_assert_int_eq(fx_cluster_start(&cl, 3, 0), 0);
    int slot = fx_cluster_keyslot(&cl, "mig", 3);
    ck_assert_int_eq(fx_cluster_keyslot(&cl, "{mig}a", 6), slot);
    int src = fx_cluster_slot_owner(&cl, slot), dst = (src + 1) % 3;
    ck_assert_str_eq(on(&cl, src, "SET {mig}a va"), "OK");
    ck_assert_str_eq(on(&cl, src, "SET {mig}b vb"), "OK");

    ck_assert_int_eq(fx_cluster_migrate_begin(&cl, slot, dst), 0);
    ck_assert_int_eq(fx_cluster_migrate_keys(&cl, slot, dst, 1), 1);
    /* half moved: the key still here is served, the moved one is -ASK */
    const char *ra = on(&cl, src, "GET {mig}a");
    int a_moved = ra[0] == '-';
    if (a_moved) {
        expect_redirect(&cl, src, "GET {mig}a", "ASK", slot, dst);
        ck_assert_str_eq(on(&cl, src, "GET {mig}b"), "vb");
    } else {
        ck_assert_str_eq(ra, "va");
        expect_redirect(&cl, src, "GET {mig}b", "ASK", slot, dst);
    }
    /* the target serves it only after ASKING, else sends us back */
    snprintf(cmd, sizeof cmd, "GET {mig}%s", a_moved ? "a" : "b");
    expect_redirect(&cl, dst, cmd, "MOVED", slot, src);
    ck_assert_str_eq(on_seq(&cl, dst, "ASKING", cmd), a_moved ? "va" : "vb");
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, slot), src);
    /* finishing while a key is left is refused, and changes nothing */
    ck_assert_int_eq(fx_cluster_migrate_finish(&cl, slot, dst), -1);
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, slot), src);

    ck_assert_int_eq(fx_cluster_migrate_keys(&cl, slot, dst, 0), 1);
    ck_assert_int_eq(fx_cluster_migrate_finish(&cl, slot, dst), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(fx_cluster_slot_owner_seen_by(&cl, i, slot), dst);
    ck_assert_str_eq(on(&cl, dst, "GET {mig}a"), "va");
    ck_assert_str_eq(on(&cl, dst, "GET {mig}b"), "vb");
    expect_redirect(&cl, src, "GET {mig}a", "MOVED", slot, dst);

    /* back in one call, with more keys than one MIGRATE batch */
    for (int k = 0; k < 150; k++) {
        snprintf(cmd, sizeof cmd, "SET {mig}%d %d", k, k);
        ck_assert_str_eq(on(&cl, dst, cmd), "OK");
    }
    ck_assert_int_eq(fx_cluster_migrate_slot(&cl, slot, src), 0);
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, slot), src);
    snprintf(cmd, sizeof cmd, "CLUSTER COUNTKEYSINSLOT %d", slot);
    ck_assert_str_eq(on(&cl, src, cmd), "152");
    ck_assert_str_eq(on(&cl, dst, cmd), "0");
    ck_assert_str_eq(on(&cl, src, "GET {mig}149"), "149");
    stop_and_check(&cl);
}
END_TEST

START_TEST(test_cluster_failover_and_crash)
{
    fx_cluster cl;
    ck_assert_int_eq(fx_cluster_start(&cl, 3, 1), 0);
    int slot = fx_cluster_keyslot(&cl, "fo", 2);
    int p = fx_cluster_slot_owner(&cl, slot), r = fx_cluster_replica_of(&cl, p);
    ck_assert_int_ge(r, 0);
    /* WAIT on the writing connection: the replica has it before the swap */
    ck_assert_str_eq(on_seq(&cl, p, "SET fo one", "WAIT 1 2000"), "1");

    ck_assert_int_eq(fx_cluster_failover(&cl, r), 0);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, r), 1);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, p), 0);
    ck_assert_int_eq(fx_cluster_primary_of(&cl, p), r);
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, slot), r);
    ck_assert_str_eq(on(&cl, r, "GET fo"), "one");
    expect_redirect(&cl, p, "GET fo", "MOVED", slot, r);

    /* a crash of the new primary: the old one is promoted again */
    ck_assert_str_eq(on_seq(&cl, r, "SET fo two", "WAIT 1 2000"), "1");
    ck_assert_int_eq(fx_cluster_kill(&cl, r), 0);
    ck_assert_int_eq(fx_cluster_node(&cl, r)->pid, 0);
    ck_assert_int_eq(fx_cluster_wait_promoted(&cl, r, FX_CLUSTER_WAIT_MS), p);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, p), 1);
    ck_assert_str_eq(on(&cl, p, "GET fo"), "two");
    ck_assert_ptr_nonnull(strstr(on(&cl, p, "CLUSTER INFO"), "cluster_state:ok\r\n"));

    /* it comes back as a replica of the node that took its slots */
    ck_assert_int_eq(fx_cluster_restart(&cl, r), 0);
    ck_assert_int_eq(fx_cluster_primary_of(&cl, r), p);
    stop_and_check(&cl);
}
END_TEST

START_TEST(test_cluster_small)
{
    fx_cluster cl;
    /* one primary and its replica, joined by hand */
    ck_assert_int_eq(fx_cluster_start(&cl, 1, 1), 0);
    ck_assert_int_eq(fx_cluster_size(&cl), 2);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, 0), 1);
    ck_assert_int_eq(fx_cluster_primary_of(&cl, 1), 0);
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, 0), 0);
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, 16383), 0);
    ck_assert_ptr_nonnull(strstr(on(&cl, 1, "CLUSTER INFO"), "cluster_slots_assigned:16384\r\n"));
    ck_assert_str_eq(on_seq(&cl, 0, "SET k v", "WAIT 1 2000"), "1");
    expect_redirect(&cl, 1, "GET k", "MOVED", fx_cluster_keyslot(&cl, "k", 1), 0);
    ck_assert_str_eq(on_seq(&cl, 1, "READONLY", "GET k"), "v");
    /* the one primary votes for its replica */
    ck_assert_int_eq(fx_cluster_failover(&cl, 1), 0);
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, 0), 1);
    ck_assert_str_eq(on(&cl, 1, "GET k"), "v");
    stop_and_check(&cl);

    /* two primaries, one replica each */
    ck_assert_int_eq(fx_cluster_start(&cl, 2, 1), 0);
    ck_assert_int_eq(fx_cluster_size(&cl), 4);
    int a = fx_cluster_slot_owner(&cl, 0), b = fx_cluster_slot_owner(&cl, 16383);
    ck_assert(a >= 0 && b >= 0 && a != b);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, 2) + fx_cluster_is_primary(&cl, 3), 0);
    ck_assert_int_ge(fx_cluster_replica_of(&cl, a), 0);
    ck_assert_int_ge(fx_cluster_replica_of(&cl, b), 0);
    stop_and_check(&cl);
}
END_TEST

START_TEST(test_cluster_bad_shape)
{
    fx_cluster cl;
    ck_assert_int_eq(fx_cluster_start(&cl, 0, 1), -1);
    ck_assert_int_eq(fx_cluster_start(&cl, 9, 1), -1); /* 18 nodes: over the maximum */
    fx_cluster_stop(&cl);
}
END_TEST

/* ---- TLS -------------------------------------------------------------------- */

static fx_tls certs; /* made once, in the parent, for the TLS tests */

static void tls_setup(void)
{
    ck_assert_int_eq(fx_tls_make(&certs), 0);
}

static void tls_teardown(void)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", certs.dir);
    fx_tls_free(&certs);
    fx_tls_free(&certs);
    ck_assert(!exists(dir));
}

static int cli(fx_server *s, const fx_tls_client *c, char *out, size_t outlen)
{
    return fx_tls_cli(s, c, out, outlen, "PING");
}

START_TEST(test_tls_certificates_exist)
{
    const char *files[] = {certs.ca,          certs.server_cert, certs.server_key,
                           certs.wrong_cert,  certs.wrong_key,   certs.client_cert,
                           certs.client_key,  certs.other_ca,    certs.other_cert,
                           certs.other_key,   certs.self_cert,   certs.self_key};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        ck_assert_msg(exists(files[i]), "%s", files[i]);
}
END_TEST

START_TEST(test_tls_server_verified_by_ca)
{
    fx_server s;
    char out[1024];
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_SERVER, "no", 0), 0);
    ck_assert_int_eq(s.port, 0);
    ck_assert_int_gt(s.tls_port, 0);
    ck_assert_str_eq(s.url, "");
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "PING"), -1); /* no plain port */

    fx_tls_client good = {.ca = certs.ca};
    ck_assert_int_eq(cli(&s, &good, out, sizeof out), 0);
    ck_assert_str_eq(out, "PONG\n");
    fx_tls_client system_store = {0}, other = {.ca = certs.other_ca};
    ck_assert_int_eq(cli(&s, &system_store, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "certificate verify failed"));
    ck_assert_int_eq(cli(&s, &other, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "certificate verify failed"));
    fx_tls_client insecure = {.insecure = 1};
    ck_assert_int_eq(cli(&s, &insecure, out, sizeof out), 0);
    ck_assert_str_eq(out, "PONG\n");

    /* the names in the certificate, checked by openssl s_client */
    ck_assert_int_eq(fx_tls_handshake(&s, &good, "127.0.0.1", out, sizeof out), 0);
    ck_assert_int_eq(fx_tls_handshake(&s, &good, "::1", out, sizeof out), 0);
    ck_assert_int_eq(fx_tls_handshake(&s, &good, "localhost", out, sizeof out), 0);
    ck_assert_int_eq(fx_tls_handshake(&s, &good, "wrong.example", out, sizeof out), 1);
    ck_assert_int_eq(fx_tls_handshake(&s, &other, NULL, out, sizeof out), 1);
    fx_tls_client by_name = {.host = "localhost", .ca = certs.ca};
    ck_assert_int_eq(fx_tls_handshake(&s, &by_name, "localhost", out, sizeof out), 0);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_tls_bad_server_certificates)
{
    fx_server s;
    char out[1024];
    fx_tls_client good = {.ca = certs.ca};

    /* signed by the other CA: refused with ours, accepted with that one */
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_OTHER_CA, "no", 0), 0);
    ck_assert_int_eq(cli(&s, &good, out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "certificate verify failed"));
    fx_tls_client other = {.ca = certs.other_ca};
    ck_assert_int_eq(cli(&s, &other, out, sizeof out), 0);
    ck_assert_str_eq(out, "PONG\n");
    fx_server_stop(&s);

    /* self-signed: refused unless it is itself the trusted certificate */
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_SELF_SIGNED, "no", 0), 0);
    ck_assert_int_eq(cli(&s, &good, out, sizeof out), 1);
    fx_tls_client self = {.ca = certs.self_cert};
    ck_assert_int_eq(cli(&s, &self, out, sizeof out), 0);
    ck_assert_int_eq(fx_tls_handshake(&s, &self, "127.0.0.1", out, sizeof out), 0);
    fx_server_stop(&s);

    /* the wrong name: a valid chain, so only a host-name check refuses it
     * (redis-cli does not check names) */
    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_WRONG_NAME, "no", 0), 0);
    ck_assert_int_eq(cli(&s, &good, out, sizeof out), 0);
    ck_assert_int_eq(fx_tls_handshake(&s, &good, "127.0.0.1", out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "mismatch"));
    ck_assert_int_eq(fx_tls_handshake(&s, &good, "localhost", out, sizeof out), 1);
    ck_assert_int_eq(fx_tls_handshake(&s, &good, "wrong.example", out, sizeof out), 0);
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_tls_client_certificates)
{
    fx_server s;
    char out[1024];
    fx_tls_client bare = {.ca = certs.ca};
    fx_tls_client with_cert = {.ca = certs.ca, .cert = certs.client_cert, .key = certs.client_key};
    fx_tls_client foreign = {.ca = certs.ca, .cert = certs.other_cert, .key = certs.other_key};

    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_SERVER, "yes", 1), 0);
    ck_assert_int_gt(s.port, 0);
    ck_assert_int_ne(s.port, s.tls_port);
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "PING"), 0); /* the plain port */
    ck_assert_str_eq(out, "PONG");
    ck_assert_int_eq(cli(&s, &bare, out, sizeof out), 1); /* closed, or reset: a race */
    ck_assert_ptr_null(strstr(out, "PONG"));
    ck_assert_int_eq(cli(&s, &foreign, out, sizeof out), 1); /* not from the server's CA */
    ck_assert_int_eq(cli(&s, &with_cert, out, sizeof out), 0);
    ck_assert_str_eq(out, "PONG\n");
    /* a write over TLS is seen over the plain port: one server */
    ck_assert_int_eq(fx_tls_cli(&s, &with_cert, out, sizeof out, "SET viatls 1"), 0);
    ck_assert_int_eq(fx_cmd(&s, out, sizeof out, "GET viatls"), 0);
    ck_assert_str_eq(out, "1");

    /* restart keeps the TLS options; kill and pause act on the same pid */
    ck_assert_int_eq(fx_server_restart(&s), 0);
    ck_assert_int_eq(cli(&s, &bare, out, sizeof out), 1);
    ck_assert_int_eq(cli(&s, &with_cert, out, sizeof out), 0);
    fx_server_stop(&s);

    ck_assert_int_eq(fx_tls_server_start(&s, &certs, FX_TLS_SERVER, "optional", 0), 0);
    ck_assert_int_eq(cli(&s, &bare, out, sizeof out), 0);
    ck_assert_int_eq(cli(&s, &with_cert, out, sizeof out), 0);
    ck_assert_int_eq(cli(&s, &foreign, out, sizeof out), 1); /* presented, so verified */
    fx_server_stop(&s);
}
END_TEST

START_TEST(test_tls_urls)
{
    fx_server s;
    char url[1024], want[1024];
    memset(&s, 0, sizeof s);
    s.tls_port = 6380;
    ck_assert_int_eq(fx_tls_url(url, sizeof url, &s, NULL), 0);
    ck_assert_str_eq(url, "rediss://127.0.0.1:6380");
    fx_tls_client c = {.ca = certs.ca};
    ck_assert_int_eq(fx_tls_url(url, sizeof url, &s, &c), 0);
    snprintf(want, sizeof want, "rediss://127.0.0.1:6380?ca=%s", certs.ca);
    ck_assert_str_eq(url, want);
    fx_tls_client all = {.host = "::1",
                         .ca = "/c a.pem",
                         .cert = "/x.crt",
                         .key = "/x.key",
                         .sni = "localhost",
                         .insecure = 1};
    ck_assert_int_eq(fx_tls_url(url, sizeof url, &s, &all), 0);
    ck_assert_str_eq(url, "rediss://[::1]:6380?ca=/c%20a.pem&cert=/x.crt&key=/x.key&sni=localhost"
                          "&insecure=1");
    ck_assert_int_eq(fx_tls_url(url, 20, &s, &all), -1);
    ck_assert_uint_lt(strlen(url), 20);
}
END_TEST

/* ---- fx_run -------------------------------------------------------------------- */

START_TEST(test_run_bounded)
{
    char out[64];
    const char *echo[] = {"sh", "-c", "echo hi; echo err >&2; exit 3", NULL};
    ck_assert_int_eq(fx_run(out, sizeof out, 5000, echo), 3);
    ck_assert_str_eq(out, "hi\nerr\n");
    const char *slow[] = {"sleep", "10", NULL};
    double t0 = fx_now_ms();
    ck_assert_int_eq(fx_run(out, sizeof out, 200, slow), -1);
    ck_assert_double_lt(fx_now_ms() - t0, 2000);
    const char *missing[] = {"redlock-no-such-program", NULL};
    ck_assert_int_eq(fx_run(out, sizeof out, 5000, missing), 127);
    char small[4];
    const char *longer[] = {"sh", "-c", "echo 0123456789", NULL};
    ck_assert_int_eq(fx_run(small, sizeof small, 5000, longer), 0);
    ck_assert_str_eq(small, "012");
}
END_TEST

static Suite *fixture_ext_suite(void)
{
    Suite *s = suite_create("fixture_ext");
    TCase *c = tcase_create("cluster");
    tcase_set_timeout(c, 60);
    tcase_add_test(c, test_cluster_3x3);
    tcase_add_test(c, test_cluster_migration_in_steps);
    tcase_add_test(c, test_cluster_failover_and_crash);
    tcase_add_test(c, test_cluster_small);
    tcase_add_test(c, test_cluster_bad_shape);
    suite_add_tcase(s, c);
    TCase *t = tcase_create("tls");
    tcase_set_timeout(t, 30);
    tcase_add_unchecked_fixture(t, tls_setup, tls_teardown);
    tcase_add_test(t, test_tls_certificates_exist);
    tcase_add_test(t, test_tls_server_verified_by_ca);
    tcase_add_test(t, test_tls_bad_server_certificates);
    tcase_add_test(t, test_tls_client_certificates);
    tcase_add_test(t, test_tls_urls);
    suite_add_tcase(s, t);
    TCase *r = tcase_create("run");
    tcase_add_test(r, test_run_bounded);
    suite_add_tcase(s, r);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fixture_ext_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
