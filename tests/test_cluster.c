/* test_cluster.c - locks on a real local Redis Cluster (3 primaries, 3
 * replicas, started by tests/fx_cluster.h): routing by hash slot, wake-ups
 * on shard channels, slot migration while held and while waiting, failover
 * with wait_replicas, a killed primary, a stress run with a migration, a
 * quorum of one-node clusters, and hostile cluster peers. */
#define _GNU_SOURCE
#include "fixture.h"
#include "fx_cluster.h"
#include "testutil.h"

#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

static fx_cluster cl;

static void setup(void)
{
    ck_assert_int_eq(fx_cluster_start(&cl, 3, 1), 0);
}

static void teardown(void)
{
    fx_cluster_stop(&cl);
}

static redlock_client *cluster_client(int io_ms, int wait_replicas)
{
    redlock_options o;
    redlock_options_init(&o);
    if (io_ms > 0)
        o.io_timeout_ms = o.connect_timeout_ms = io_ms;
    o.wait_replicas = wait_replicas;
    const char *url = fx_cluster_seed_url(&cl);
    return tu_client_opts(&url, 1, &o);
}

/* A name (with prefix) whose slot the primary `owner` serves. */
static void name_on(int owner, const char *prefix, char *out, size_t outlen)
{
    for (int k = 0; k < 10000; k++) {
        snprintf(out, outlen, "%s%d", prefix, k);
        int slot = fx_cluster_keyslot(&cl, out, strlen(out));
        if (fx_cluster_slot_owner(&cl, slot) == owner)
            return;
    }
    ck_abort_msg("no name for node %d", owner);
}

/* Run a command on the node serving key (through the fixture). */
static const char *on_owner(const char *key, const char *fmt, const char *arg)
{
    static char out[512];
    char cmd[512];
    int node = fx_cluster_slot_owner(&cl, fx_cluster_keyslot(&cl, key, strlen(key)));
    ck_assert_int_ge(node, 0);
    snprintf(cmd, sizeof cmd, fmt, arg);
    ck_assert_int_eq(fx_cmd(fx_cluster_node(&cl, node), out, sizeof out, cmd), 0);
    return out;
}

static int primaries[3];

static void find_primaries(void)
{
    int k = 0;
    for (int i = 0; i < fx_cluster_size(&cl) && k < 3; i++)
        if (fx_cluster_is_primary(&cl, i) == 1)
            primaries[k++] = i;
    ck_assert_int_eq(k, 3);
}

static long info_count(int i, const char *section, const char *field)
{
    static char out[16384];
    char cmd[64];
    snprintf(cmd, sizeof cmd, "INFO %s", section);
    ck_assert_int_eq(fx_cmd(fx_cluster_node(&cl, i), out, sizeof out, cmd), 0);
    const char *p = strstr(out, field);
    return p ? atol(p + strlen(field)) : 0;
}

/* ---- routing --------------------------------------------------------------------------------- */

START_TEST(test_key_slots)
{
    /* our CRC16 and hash-tag rule against the server's CLUSTER KEYSLOT,
     * through the library: a lock lands where Redis says its key lives */
    static const char *const names[] = {"a",         "foo",           "{user1000}.following",
                                        "a{b",       "foo{{bar}}zap", "foo{bar}{zap}",
                                        "123456789"};
    redlock_client *c = cluster_client(0, 0);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        redlock *l = tu_lock(c, names[i], "v", 5000);
        ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s: %s", names[i], redlock_errstr(l));
        ck_assert_str_eq(on_owner(names[i], "GET %s", names[i]), "v");
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        redlock_free(l);
    }
    /* once the client has the slot map, a routed workload meets no MOVED
     * on any node: each lock went straight to the primary serving it (the
     * slot function itself is compared with CLUSTER KEYSLOT in
     * test_internals) */
    for (int i = 0; i < fx_cluster_size(&cl); i++) {
        char out[64];
        ck_assert_int_eq(fx_cmd(fx_cluster_node(&cl, i), out, sizeof out, "CONFIG RESETSTAT"), 0);
    }
    int served[16] = {0};
    for (int k = 0; k < 300; k++) {
        char name[48];
        snprintf(name, sizeof name, k % 3 ? "routed-%d" : "{tag%d}routed", k);
        redlock *l = tu_lock(c, name, "v", 5000);
        ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s: %s", name, redlock_errstr(l));
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        redlock_free(l);
        int owner = fx_cluster_slot_owner(&cl, fx_cluster_keyslot(&cl, name, strlen(name)));
        ck_assert(owner >= 0 && owner < 16);
        served[owner]++;
    }
    int shards = 0;
    for (int i = 0; i < fx_cluster_size(&cl); i++) {
        shards += served[i] > 0;
        ck_assert_msg(info_count(i, "errorstats", "errorstat_MOVED:count=") == 0,
                      "node %d answered MOVED to a routed request", i);
    }
    ck_assert_int_eq(shards, 3); /* the workload reached every primary */
    /* CRC16 check value of "123456789" is 0x31C3: slot 12739 */
    ck_assert_int_eq(fx_cluster_keyslot(&cl, "123456789", 9), 12739);
    /* a '}' with no tag: no other key can share the slot, so it is refused */
    static const char *const bad[] = {"foo{}{bar}", "{}x", "}{", "a}", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redlock *l = NULL;
        ck_assert_int_eq(redlock_new(&l, c, bad[i], NULL, 5000), REDLOCK_ERR_ARG);
        ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "needs a {hash tag}"));
    }
    redlock_client_free(c);
}
END_TEST

/* The MOVED and ASK error replies a node has sent since its last CONFIG
 * RESETSTAT (INFO errorstats). */
static long redirects_sent(int node)
{
    static char info[4096];
    static const char *const keys[] = {"errorstat_MOVED:count=", "errorstat_ASK:count="};
    long n = 0;
    ck_assert_int_eq(fx_cmd(fx_cluster_node(&cl, node), info, sizeof info, "INFO errorstats"), 0);
    for (size_t i = 0; i < 2; i++) {
        const char *p = strstr(info, keys[i]);
        if (p)
            n += strtol(p + strlen(keys[i]), NULL, 10);
    }
    return n;
}

/* The library's slot (CRC16 and the hash-tag rule) against the server's on
 * many names, bytes above 0x7f and tags among them. A redirect repairs a
 * wrong route, so a lock landing on its owner proves nothing: what does is
 * that no node ever answered MOVED or ASK once the slot map was known. */
START_TEST(test_key_slots_many)
{
    find_primaries();
    redlock_client *c = cluster_client(0, 0);
    redlock *warm = tu_lock(c, "warm", "v", 5000); /* the client learns the map */
    ck_assert_int_eq(redlock_trylock(warm), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(warm), REDLOCK_OK);
    redlock_free(warm);
    char out[64];
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(fx_cmd(fx_cluster_node(&cl, primaries[k]), out, sizeof out, "CONFIG RESETSTAT"),
                         0);
    uint32_t x = 2463534242u;
    for (int i = 0; i < 300; i++) {
        char name[64];
        size_t n = 0, len = 1 + (size_t)i % 24;
        if (i % 4 == 1)
            n += (size_t)snprintf(name, sizeof name, "t%d{", i % 7); /* a tag decides */
        for (size_t j = 0; j < len; j++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            char ch = (char)(0x21 + x % 0xde); /* '!' .. 0xfe */
            name[n++] = ch == '{' || ch == '}' ? 'q' : ch;
        }
        if (i % 4 == 1)
            name[n++] = '}', name[n++] = 'z';
        name[n] = '\0';
        redlock *l = NULL;
        ck_assert_int_eq(redlock_new(&l, c, name, "v", 5000), REDLOCK_OK);
        ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "name %d: %s", i, redlock_errstr(l));
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        redlock_free(l);
    }
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(redirects_sent(primaries[k]), 0);
    redlock_client_free(c);
}
END_TEST

START_TEST(test_each_shard)
{
    find_primaries();
    redlock_client *c = cluster_client(0, 0);
    char name[64], key[80];
    for (int k = 0; k < 3; k++) {
        name_on(primaries[k], "shard-lock-", name, sizeof name);
        redlock *l = tu_lock(c, name, "me", 5000);
        uint64_t first = 0;
        for (int round = 1; round <= 2; round++) {
            ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
            if (round == 1)
                ck_assert(tu_seeded(first = redlock_fence(l))); /* per name */
            ck_assert_uint_eq(redlock_fence(l), first + (uint64_t)round - 1);
            ck_assert_str_eq(on_owner(name, "GET %s", name), "me");
            snprintf(key, sizeof key, "{%s}:fence", name);
            ck_assert_uint_eq(strtoull(on_owner(name, "GET %s", key), NULL, 10),
                              redlock_fence(l));
            ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
            redlock_info info;
            ck_assert_int_eq(redlock_inspect(l, &info), REDLOCK_OK);
            ck_assert(info.held && info.ours);
            ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
            ck_assert_str_eq(on_owner(name, "GET %s", name), "");
        }
        redlock_free(l);
    }
    /* names with a hash tag: every key of both locks in the tag's slot */
    redlock *a = tu_lock(c, "{acct:7}:debit", NULL, 5000), *b = tu_lock(c, "{acct:7}:credit", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_uint_eq(strtoull(on_owner("{acct:7}", "GET %s", "{acct:7}:debit:fence"), NULL, 10),
                      redlock_fence(a));
    ck_assert_uint_eq(strtoull(on_owner("{acct:7}", "GET %s", "{acct:7}:credit:fence"), NULL, 10),
                      redlock_fence(b));
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c);
}
END_TEST

/* A waiter listens on the shard channel of the lock's slot (SSUBSCRIBE on
 * its primary) and is woken by the release's SPUBLISH. */
START_TEST(test_wait_wake_sharded)
{
    find_primaries();
    char name[64], chan[96];
    name_on(primaries[1], "wake-", name, sizeof name);
    snprintf(chan, sizeof chan, "{%s}:freed", name);
    redlock_client *hc = cluster_client(0, 0), *wc = cluster_client(0, 0);
    redlock *h = tu_lock(hc, name, "holder", 10000), *w = tu_lock(wc, name, "waiter", 10000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 5000), REDLOCK_OK);
    double t0 = fx_now_ms();
    struct pollfd fds[32];
    while (fx_now_ms() - t0 < 300) {
        int n = redlock_client_pollfds(wc, fds, 32);
        poll(fds, (nfds_t)n, 20);
        redlock_client_process(wc, fds, n);
    }
    char want[128];
    snprintf(want, sizeof want, "%s\n1", chan); /* one shard subscriber, on the slot's primary */
    ck_assert_str_eq(on_owner(name, "PUBSUB SHARDNUMSUB %s", chan), want);
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    t0 = fx_now_ms();
    redlock *d = NULL;
    while (!d && fx_now_ms() - t0 < 3000) {
        int n = redlock_client_pollfds(wc, fds, 32);
        poll(fds, (nfds_t)n, 20);
        redlock_client_process(wc, fds, n);
        d = redlock_client_done(wc);
    }
    double took = fx_now_ms() - t0;
    ck_assert_ptr_eq(d, w);
    ck_assert_int_eq(redlock_result(w), REDLOCK_OK);
    ck_assert_msg(took < 250, "woken after %.0f ms (backoff is 25..50 ms, the holder's TTL 10 s)",
                  took);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(h);
    redlock_free(w);
    redlock_client_free(hc);
    redlock_client_free(wc);
}
END_TEST


/* A counter from INFO on node i (section, "field:" prefix), 0 if absent. */

/* ---- driving a non-blocking client -------------------------------------------------------- */

static void drive(redlock_client *c, int ms)
{
    struct pollfd fds[64];
    double end = fx_now_ms() + ms;
    do {
        int n = redlock_client_pollfds(c, fds, 64);
        int t = redlock_client_timeout_ms(c);
        poll(fds, (nfds_t)n, t < 0 || t > 20 ? 20 : t);
        redlock_client_process(c, fds, n);
    } while (fx_now_ms() < end);
}

static redlock *drive_until_done(redlock_client *c, int ms)
{
    struct pollfd fds[64];
    double end = fx_now_ms() + ms;
    while (fx_now_ms() < end) {
        int n = redlock_client_pollfds(c, fds, 64);
        int t = redlock_client_timeout_ms(c);
        poll(fds, (nfds_t)n, t < 0 || t > 20 ? 20 : t);
        redlock_client_process(c, fds, n);
        redlock *d = redlock_client_done(c);
        if (d)
            return d;
    }
    return NULL;
}

/* Fair mode on a cluster: each waiter listens on a shard channel of its
 * own ({NAME}:freed:VALUE, in the lock's slot) and a release publishes
 * (SPUBLISH from the script) only to the next in line, so a line of three
 * drains in queue order by wake-ups, not by backoff. */
START_TEST(test_fair_sharded)
{
    find_primaries();
    char name[64], key[96], chan[128];
    name_on(primaries[2], "fairq-", name, sizeof name);
    snprintf(key, sizeof key, "{%s}:queue", name);
    redlock_options o;
    redlock_options_init(&o);
    o.fair = 1;
    o.retry_min_ms = o.retry_max_ms = 3000; /* tries 1.5-3 s apart */
    const char *url = fx_cluster_seed_url(&cl);
    redlock_client *hc = tu_client_opts(&url, 1, &o), *wc = tu_client_opts(&url, 1, &o);
    redlock *h = tu_lock(hc, name, "holder", 20000), *w[3];
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    for (int i = 0; i < 3; i++) {
        char value[8];
        snprintf(value, sizeof value, "w%d", i);
        w[i] = tu_lock(wc, name, value, 20000);
        ck_assert_int_eq(redlock_start_lock(w[i], 15000), REDLOCK_OK);
        double end = fx_now_ms() + 3000;
        char want[8];
        snprintf(want, sizeof want, "%d", i + 1);
        while (strcmp(on_owner(key, "ZCARD %s", key), want) != 0 && fx_now_ms() < end)
            drive(wc, 10);
        ck_assert_str_eq(on_owner(key, "ZCARD %s", key), want);
    }
    drive(wc, 300);
    snprintf(chan, sizeof chan, "{%s}:freed:w0", name);
    char want[160];
    snprintf(want, sizeof want, "%s\n1", chan);
    ck_assert_str_eq(on_owner(name, "PUBSUB SHARDNUMSUB %s", chan), want);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    for (int i = 0; i < 3; i++) {
        redlock *d = drive_until_done(wc, 5000);
        ck_assert_ptr_eq(d, w[i]);
        ck_assert_int_eq(redlock_result(d), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(d), REDLOCK_OK);
    }
    double took = fx_now_ms() - t0;
    ck_assert_msg(took < 1200, "the line took %.0f ms (a backoff is 1500+)", took);
    ck_assert_str_eq(on_owner(key, "ZCARD %s", key), "0");
    for (int i = 0; i < 3; i++)
        redlock_free(w[i]);
    redlock_free(h);
    redlock_client_free(hc);
    redlock_client_free(wc);
}
END_TEST

/* ---- slot migration ---------------------------------------------------------------------------- */

/* A held lock's slot moves to another primary while a waiter waits:
 * refresh follows -ASK (keys moved, slot still migrating) and -MOVED
 * (after), unlock follows the new owner, and the waiter, whose shard
 * subscription the old owner dropped, is woken by the release there. */
START_TEST(test_migration_held_and_waiting)
{
    find_primaries();
    char name[64];
    name_on(primaries[0], "mig-", name, sizeof name);
    int slot = fx_cluster_keyslot(&cl, name, strlen(name)), to = primaries[2];
    redlock_client *hc = cluster_client(0, 0), *wc = cluster_client(0, 0);
    redlock *h = tu_lock(hc, name, "holder", 20000), *w = tu_lock(wc, name, "waiter", 20000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 15000), REDLOCK_OK);
    drive(wc, 300);

    ck_assert_int_eq(fx_cluster_migrate_begin(&cl, slot, to), 0);
    ck_assert_int_eq(redlock_refresh(h), REDLOCK_OK); /* keys still at the source */
    ck_assert_int_ge(fx_cluster_migrate_keys(&cl, slot, to, 0), 2); /* the lock and its fence */
    long asking = info_count(to, "commandstats", "cmdstat_asking:calls=");
    ck_assert_int_eq(redlock_refresh(h), REDLOCK_OK); /* -ASK: ASKING + refresh at the target */
    ck_assert_int_eq(info_count(to, "commandstats", "cmdstat_asking:calls="), asking + 1);
    ck_assert_int_eq(redlock_inspect(h, &(redlock_info){0}), REDLOCK_OK);
    drive(wc, 200);
    ck_assert_int_eq(fx_cluster_migrate_finish(&cl, slot, to), 0);
    long moved = info_count(primaries[0], "errorstats", "errorstat_MOVED:count=");
    ck_assert_int_eq(redlock_refresh(h), REDLOCK_OK); /* -MOVED, and the map learns */
    ck_assert_int_eq(info_count(primaries[0], "errorstats", "errorstat_MOVED:count="), moved + 1);
    ck_assert_int_eq(redlock_refresh(h), REDLOCK_OK); /* straight to the new owner */
    ck_assert_int_eq(info_count(primaries[0], "errorstats", "errorstat_MOVED:count="), moved + 1);
    ck_assert_str_eq(on_owner(name, "GET %s", name), "holder");
    ck_assert_int_eq(fx_cluster_slot_owner(&cl, slot), to);
    drive(wc, 500); /* the waiter notices its subscription is gone and moves it */
    char want[128], chan[96];
    snprintf(chan, sizeof chan, "{%s}:freed", name);
    snprintf(want, sizeof want, "%s\n1", chan);
    ck_assert_str_eq(on_owner(name, "PUBSUB SHARDNUMSUB %s", chan), want);

    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    double t0 = fx_now_ms();
    ck_assert_ptr_eq(drive_until_done(wc, 3000), w);
    ck_assert_int_eq(redlock_result(w), REDLOCK_OK);
    ck_assert_msg(fx_now_ms() - t0 < 500, "woken after %.0f ms", fx_now_ms() - t0);
    ck_assert_uint_eq(redlock_fence(w), redlock_fence(h) + 1);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    /* back where it was, for the next tests */
    ck_assert_int_eq(fx_cluster_migrate_slot(&cl, slot, primaries[0]), 0);
    redlock_free(h);
    redlock_free(w);
    redlock_client_free(hc);
    redlock_client_free(wc);
}
END_TEST

/* The same migration as seen by redlock_client_stats and the event hook:
 * one -ASK and one -MOVED redirect, each an event naming the lock and the
 * slot. The slot map changes when first read, and again when the -MOVED
 * has it read anew: by another slot that moved meanwhile (the lock's own
 * the -MOVED taught already). */
START_TEST(test_migration_stats_and_events)
{
    static tu_events ev;
    memset(&ev, 0, sizeof ev);
    find_primaries();
    char name[64], other[64];
    name_on(primaries[1], "obs-", name, sizeof name);
    name_on(primaries[1], "obs-other-", other, sizeof other);
    int slot = fx_cluster_keyslot(&cl, name, strlen(name)), to = primaries[2];
    int slot2 = fx_cluster_keyslot(&cl, other, strlen(other));
    ck_assert_int_ne(slot, slot2);
    redlock_client *c = cluster_client(0, 0);
    redlock_client_on_event(c, tu_record, &ev);
    redlock *h = tu_lock(c, name, "holder", 20000);
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    /* the whole map at first (less the slot a -MOVED from the seed taught
     * first, if the seed does not serve it); its reply may come after the
     * acquire's */
    for (int k = 0; k < 100 && tu_events_count(&ev, REDLOCK_EVENT_SLOT_MAP) == 0; k++)
        tu_turn(c, 20);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_SLOT_MAP), 1);
    ck_assert_int_ge(tu_events_find(&ev, REDLOCK_EVENT_SLOT_MAP)->value, 16383);
    redlock_stats *st = calloc(2, sizeof *st);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(redlock_client_stats(c, &st[1], sizeof *st), REDLOCK_OK);
    ck_assert_uint_eq(st[1].node[0].slot_maps, 1);
    ck_assert_uint_eq(st[1].node[0].ask, 0);
    memset(&ev, 0, sizeof ev);

    ck_assert_int_eq(fx_cluster_migrate_slot(&cl, slot2, to), 0); /* no lock of ours there */
    ck_assert_int_eq(fx_cluster_migrate_begin(&cl, slot, to), 0);
    ck_assert_int_ge(fx_cluster_migrate_keys(&cl, slot, to, 0), 2);
    ck_assert_int_eq(redlock_refresh(h), REDLOCK_OK); /* -ASK */
    ck_assert_int_eq(fx_cluster_migrate_finish(&cl, slot, to), 0);
    ck_assert_int_eq(redlock_refresh(h), REDLOCK_OK); /* -MOVED */
    ck_assert_int_eq(redlock_refresh(h), REDLOCK_OK); /* straight to the new owner */
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    for (int k = 0; k < 100 && tu_events_count(&ev, REDLOCK_EVENT_SLOT_MAP) == 0; k++)
        tu_turn(c, 20); /* the map the -MOVED asked for */

    ck_assert_int_eq(redlock_client_stats(c, st, sizeof *st), REDLOCK_OK);
    ck_assert_uint_eq(st->nodes, 1);
    ck_assert_uint_eq(st->node[0].ask, 1);
    ck_assert_uint_eq(st->node[0].moved - st[1].node[0].moved, 1);
    ck_assert_uint_eq(st->node[0].slot_maps, 2);
    ck_assert_uint_eq(st->events[REDLOCK_EVENT_REDIRECT] - st[1].events[REDLOCK_EVENT_REDIRECT], 2);
    ck_assert_uint_eq(st->op[REDLOCK_STAT_REFRESH].successes, 3);
    /* refreshes: one by -ASK (2 requests), one by -MOVED (2), one straight */
    ck_assert_uint_eq(st->node[0].requests - st[1].node[0].requests,
                      2 + 2 + 1 + 1 + st->node[0].script_loads - st[1].node[0].script_loads);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_REDIRECT), 2);
    int asks = 0, moves = 0;
    for (int k = 0; k < ev.n && k < TU_EVENTS; k++) {
        const tu_event *e = &ev.at[k];
        if (e->type == REDLOCK_EVENT_REDIRECT) {
            ck_assert_str_eq(e->name, name);
            ck_assert_int_eq(e->value, slot);
            ck_assert_str_eq(e->node, fx_cluster_node_url(&cl, primaries[1]) + strlen("redis://"));
            asks += strncmp(e->detail, "ASK ", 4) == 0;
            moves += strncmp(e->detail, "MOVED ", 6) == 0;
        }
        if (e->type == REDLOCK_EVENT_SLOT_MAP)
            ck_assert_int_eq(e->value, 1); /* just the other slot */
    }
    ck_assert_int_eq(asks, 1);
    ck_assert_int_eq(moves, 1);
    ck_assert_int_eq(tu_events_count(&ev, REDLOCK_EVENT_SLOT_MAP), 1);
    free(st);
    ck_assert_int_eq(fx_cluster_migrate_slot(&cl, slot, primaries[1]), 0); /* back */
    ck_assert_int_eq(fx_cluster_migrate_slot(&cl, slot2, primaries[1]), 0);
    redlock_free(h);
    redlock_client_free(c);
}
END_TEST

/* ---- failover ------------------------------------------------------------------------------------------ */

/* CLUSTER FAILOVER while held, with wait_replicas = 1: the lock and its
 * fence counter are on the promoted replica, and the holder keeps it. */
START_TEST(test_failover_keeps_lock)
{
    find_primaries();
    char name[64], fkey[80];
    name_on(primaries[1], "fo-", name, sizeof name);
    snprintf(fkey, sizeof fkey, "{%s}:fence", name);
    int replica = fx_cluster_replica_of(&cl, primaries[1]);
    ck_assert_int_ge(replica, 0);
    redlock_client *c = cluster_client(1000, 1);
    redlock *l = tu_lock(c, name, "keeper", 20000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK); /* acknowledged by the replica */
    uint64_t fence = redlock_fence(l);
    ck_assert_int_eq(fx_cluster_failover(&cl, replica), 0);
    ck_assert_int_eq(fx_cluster_is_primary(&cl, replica), 1);
    ck_assert_str_eq(on_owner(name, "GET %s", name), "keeper");
    ck_assert_int_eq(atoll(on_owner(name, "GET %s", fkey)), (long long)fence);
    long moved = info_count(primaries[1], "errorstats", "errorstat_MOVED:count=");
    ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK); /* follows -MOVED to the new primary */
    ck_assert_int_ge(info_count(primaries[1], "errorstats", "errorstat_MOVED:count="), moved + 1);
    ck_assert_int_gt(redlock_validity_ms(l), 15000);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(l), fence + 1); /* the counter survived */
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(fx_cluster_failover(&cl, primaries[1]), 0); /* roles back */
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* wait_replicas more than the cluster has: the write is not acknowledged,
 * the acquire fails by the deadline and is released there. */
START_TEST(test_wait_replicas_unmet)
{
    redlock_client *c = cluster_client(300, 2); /* each primary has 1 replica */
    redlock *l = tu_lock(c, "unmet", NULL, 10000);
    double t0 = fx_now_ms();
    ck_assert_msg(redlock_trylock(l) == REDLOCK_ERR_TIMEOUT, "%s", redlock_errstr(l));
    /* WAIT (half the I/O deadline), then the release round: generously */
    ck_assert_double_lt(fx_now_ms() - t0, 4 * 300);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "replicas acknowledged"));
    ck_assert_str_eq(on_owner("unmet", "GET %s", "unmet"), ""); /* released */
    ck_assert_int_eq(redlock_validity_ms(l), 0);
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* A primary dies (SIGKILL): errors are clear while the cluster fails it
 * over, and once a replica is promoted the client routes to it within one
 * deadline. */
START_TEST(test_primary_killed)
{
    find_primaries();
    char name[64];
    int victim = primaries[2];
    name_on(victim, "kill-", name, sizeof name);
    redlock_client *c = cluster_client(500, 0);
    redlock *l = tu_lock(c, name, NULL, 10000);
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(fx_cluster_kill(&cl, victim), 0);
    double t0 = fx_now_ms();
    int rc = redlock_trylock(l);
    double took = fx_now_ms() - t0;
    ck_assert_msg(rc == REDLOCK_ERR_IO || rc == REDLOCK_ERR_TIMEOUT || rc == REDLOCK_OK,
                  "during the failover: %d %s", rc, redlock_errstr(l));
    if (rc != REDLOCK_OK)
        ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "127.0.0.1:"));
    ck_assert_double_lt(took, 3 * (500 + 500));
    if (rc == REDLOCK_OK)
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    int promoted = fx_cluster_wait_promoted(&cl, victim, FX_CLUSTER_WAIT_MS);
    ck_assert_int_ge(promoted, 0);
    t0 = fx_now_ms();
    ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "after the failover: %s", redlock_errstr(l));
    ck_assert_double_lt(fx_now_ms() - t0, 2 * (500 + 500));
    ck_assert_str_eq(on_owner(name, "GET %s", name), redlock_value(l));
    ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
    ck_assert_int_eq(fx_cluster_restart(&cl, victim), 0); /* back, as a replica */
    redlock_free(l);
    redlock_client_free(c);
}
END_TEST

/* ---- stress ------------------------------------------------------------------------------------------ */

#define WORKERS 8
#define ROUNDS 200
#define NAMES 16

typedef struct shared {
    atomic_int inside[NAMES];
    long counter[NAMES];
    long acquired[NAMES];
    uint64_t last_fence[NAMES];
    atomic_int overlaps, regressions, failures;
} shared;

START_TEST(test_stress_with_migration)
{
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(sh, MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    char names[NAMES][32];
    for (int k = 0; k < NAMES; k++)
        snprintf(names[k], sizeof names[k], "stress-%d", k);
    pid_t pid[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pid[w] = fork();
        ck_assert_int_ge(pid[w], 0);
        if (pid[w] == 0) {
            redlock_options o;
            redlock_options_init(&o);
            const char *url = fx_cluster_seed_url(&cl);
            redlock_client *c = NULL;
            if (redlock_client_new(&c, &url, 1, &o) != REDLOCK_OK)
                _exit(2);
            redlock *l[NAMES];
            for (int k = 0; k < NAMES; k++)
                if (redlock_new(&l[k], c, names[k], NULL, 5000) != REDLOCK_OK)
                    _exit(2);
            for (int r = 0; r < ROUNDS; r++) {
                int k = (w * 5 + r * 3) % NAMES;
                if (redlock_lock(l[k], 20000) != REDLOCK_OK) {
                    atomic_fetch_add(&sh->failures, 1);
                    continue;
                }
                if (atomic_exchange(&sh->inside[k], 1))
                    atomic_fetch_add(&sh->overlaps, 1);
                uint64_t f = redlock_fence(l[k]);
                if (f <= sh->last_fence[k])
                    atomic_fetch_add(&sh->regressions, 1);
                sh->last_fence[k] = f;
                long v = sh->counter[k];
                usleep(200);
                sh->counter[k] = v + 1;
                sh->acquired[k]++;
                atomic_store(&sh->inside[k], 0);
                if (redlock_unlock(l[k]) != REDLOCK_OK)
                    atomic_fetch_add(&sh->failures, 1);
            }
            for (int k = 0; k < NAMES; k++)
                redlock_free(l[k]);
            redlock_client_free(c);
            _exit(0);
        }
    }
    /* one slot moves to another primary while they run */
    fx_sleep_ms(400);
    int slot = fx_cluster_keyslot(&cl, names[3], strlen(names[3]));
    int from = fx_cluster_slot_owner(&cl, slot);
    find_primaries();
    int to = primaries[0] == from ? primaries[1] : primaries[0];
    ck_assert_int_eq(fx_cluster_migrate_slot(&cl, slot, to), 0);
    for (int w = 0; w < WORKERS; w++) {
        int st;
        ck_assert_int_eq(waitpid(pid[w], &st, 0), pid[w]);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    long total = 0;
    for (int k = 0; k < NAMES; k++) {
        ck_assert_int_eq(sh->counter[k], sh->acquired[k]);
        total += sh->acquired[k];
    }
    printf("cluster stress: %d workers, %ld acquisitions over %d names, overlaps %d, fence "
           "regressions %d, failures %d, one slot migrated\n",
           WORKERS, total, NAMES, sh->overlaps, sh->regressions, sh->failures);
    ck_assert_int_eq(total, WORKERS * ROUNDS);
    ck_assert_int_eq(sh->overlaps, 0);
    ck_assert_int_eq(sh->regressions, 0);
    ck_assert_int_eq(sh->failures, 0);
    ck_assert_int_eq(fx_cluster_migrate_slot(&cl, slot, from), 0);
    munmap(sh, sizeof *sh);
}
END_TEST

/* ---- the redlock command ------------------------------------------------------------------------- */

START_TEST(test_cli_cluster_url)
{
    char cmd[1024], out[256];
    const char *url = fx_cluster_seed_url(&cl);
    snprintf(cmd, sizeof cmd,
             "%s/redlock run -u '%s' -R 1 cli-cluster -- sh -c 'echo $REDLOCK_FENCE' 2>&1",
             FX_BUILD_DIR, url);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(out, sizeof out, f));
    ck_assert_int_eq(WEXITSTATUS(pclose(f)), 0);
    unsigned long long fence = strtoull(out, NULL, 10);
    ck_assert(tu_seeded(fence));
    snprintf(cmd, sizeof cmd, "REDLOCK_URL='%s' %s/redlock status cli-cluster 2>&1", url,
             FX_BUILD_DIR);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(fgets(out, sizeof out, f));
    ck_assert_int_eq(WEXITSTATUS(pclose(f)), 1); /* free again */
    char want[64];
    snprintf(want, sizeof want, "free, fence %llu", fence);
    ck_assert_ptr_nonnull(strstr(out, want));
}
END_TEST

/* `redlock functions load` on a cluster loads the library on every primary
 * (the replicas get it from them), and a client in functions mode then
 * locks by FCALL on any shard. */
START_TEST(test_functions_on_every_primary)
{
    char cmd[1024], out[256];
    const char *url = fx_cluster_seed_url(&cl);
    snprintf(cmd, sizeof cmd, "%s/redlock functions load -u '%s' 2>&1", FX_BUILD_DIR, url);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    int lines = 0;
    while (fgets(out, sizeof out, f))
        lines += strstr(out, "redlock_v") != NULL;
    ck_assert_int_eq(WEXITSTATUS(pclose(f)), 0);
    ck_assert_int_eq(lines, 3); /* one line per primary */
    find_primaries();
    fx_sleep_ms(200); /* replication */
    for (int i = 0; i < fx_cluster_size(&cl); i++) {
        static char list[16384];
        ck_assert_msg(fx_cmd(fx_cluster_node(&cl, i), list, sizeof list,
                             "FUNCTION LIST LIBRARYNAME redlock_v*") == 0,
                      "node %d (pid %d): FUNCTION LIST failed", i, (int)fx_cluster_node(&cl, i)->pid);
        ck_assert_msg(strstr(list, "redlock_v") != NULL, "node %d: %s", i, list);
    }
    redlock_options o;
    redlock_options_init(&o);
    o.scripts = REDLOCK_SCRIPTS_FUNCTIONS;
    redlock_client *c = tu_client_opts(&url, 1, &o);
    char name[64];
    for (int k = 0; k < 3; k++) {
        name_on(primaries[k], "fcall-", name, sizeof name);
        redlock *l = tu_lock(c, name, "fc", 5000);
        ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s", redlock_errstr(l));
        ck_assert_str_eq(on_owner(name, "GET %s", name), "fc");
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        redlock_free(l);
    }
    redlock_client_free(c);
    for (int k = 0; k < 3; k++) /* leave the cluster as it was */
        ck_assert_int_eq(fx_cmd(fx_cluster_node(&cl, primaries[k]), out, sizeof out,
                                "FUNCTION FLUSH"), 0);
}
END_TEST

/* ---- hostile cluster peers ------------------------------------------------------------------- */

/* A fake cluster node: reads commands, answers scripts and CLUSTER SLOTS as
 * its mode says. Each connection in its own process. */
enum { H_MOVED_LOOP, H_ASK_DEAD, H_SLOTS_BAD, H_SLOTS_EMPTY, H_SLOTS_HUGE, H_SLOTS_MANY_NODES };

static int listen_on(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* Read one command; its first word (upper-cased) in w. 0, or -1 on EOF. */
static int read_command(FILE *in, char *w, size_t wl)
{
    char line[256];
    if (!fgets(line, sizeof line, in) || line[0] != '*')
        return -1;
    int n = atoi(line + 1);
    w[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (!fgets(line, sizeof line, in) || line[0] != '$')
            return -1;
        long len = atol(line + 1);
        char *buf = malloc((size_t)len + 2);
        if (!buf || fread(buf, 1, (size_t)len + 2, in) != (size_t)len + 2) {
            free(buf);
            return -1;
        }
        if (i == 0)
            for (size_t k = 0; k < wl - 1 && k < (size_t)len; k++)
                w[k] = (char)(buf[k] >= 'a' && buf[k] <= 'z' ? buf[k] - 32 : buf[k]), w[k + 1] = '\0';
        free(buf);
    }
    return 0;
}

static void serve(int c, int mode, int peer)
{
    FILE *in = fdopen(c, "r");
    char w[32];
    while (read_command(in, w, sizeof w) == 0) {
        char out[256];
        if (strcmp(w, "CLUSTER") == 0) {
            if (mode == H_SLOTS_BAD) {
                dprintf(c, "*1\r\n*2\r\n:1\r\n:2\r\n");
            } else if (mode == H_SLOTS_HUGE || mode == H_SLOTS_MANY_NODES) {
                int n = mode == H_SLOTS_HUGE ? 17000 : 100;
                dprintf(c, "*%d\r\n", n);
                for (int i = 0; i < n; i++)
                    dprintf(c, "*3\r\n:%d\r\n:%d\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n", i, i,
                            mode == H_SLOTS_HUGE ? peer : 20000 + i);
            } else {
                dprintf(c, "*0\r\n");
            }
        } else if (strcmp(w, "ASKING") == 0) {
            dprintf(c, "+OK\r\n");
        } else if (mode == H_MOVED_LOOP) {
            snprintf(out, sizeof out, "-MOVED 1234 127.0.0.1:%d\r\n", peer);
            dprintf(c, "%s", out);
        } else if (mode == H_ASK_DEAD) {
            dprintf(c, "-ASK 1234 127.0.0.1:%d\r\n", peer);
        } else {
            dprintf(c, "*2\r\n:1\r\n:7\r\n"); /* an acquire that took the lock, token 7 */
        }
    }
    fclose(in);
}

static pid_t fake_node(int mode, int peer, int *port)
{
    int fd = listen_on(port);
    ck_assert_int_ge(fd, 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGCHLD, SIG_IGN);
        for (int k = 0; k < 200; k++) {
            int c = accept(fd, NULL, NULL);
            if (c < 0)
                continue;
            if (fork() == 0) {
                serve(c, mode, peer);
                _exit(0);
            }
            close(c);
        }
        _exit(0);
    }
    close(fd);
    return pid;
}

static void stop_fake(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Two nodes that send every request to each other: a bounded number of
 * redirects, then a protocol error, by the deadline. */
START_TEST(test_hostile_moved_loop)
{
    int pa, pb;
    int fa = listen_on(&pa); /* reserve a's port for b to point at */
    ck_assert_int_ge(fa, 0);
    close(fa);
    pid_t b = fake_node(H_MOVED_LOOP, pa, &pb);
    pid_t a = fake_node(H_MOVED_LOOP, pb, &pa);
    char url[96];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d?cluster=1", pa);
    redlock_client *c = tu_client(url, 500);
    redlock *l = tu_lock(c, "loop", NULL, 5000);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_trylock(l), REDLOCK_ERR_PROTOCOL);
    ck_assert_double_lt(fx_now_ms() - t0, 1500);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(l), "too many redirects"));
    redlock_free(l);
    redlock_client_free(c);
    stop_fake(a);
    stop_fake(b);
}
END_TEST

START_TEST(test_hostile_ask_dead)
{
    int dead = fx_free_port(), pa;
    pid_t a = fake_node(H_ASK_DEAD, dead, &pa);
    char url[96];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d?cluster=1", pa);
    redlock_client *c = tu_client(url, 300);
    redlock *l = tu_lock(c, "ask", NULL, 5000);
    double t0 = fx_now_ms();
    int rc = redlock_trylock(l);
    double took = fx_now_ms() - t0;
    ck_assert_msg(rc == REDLOCK_ERR_IO || rc == REDLOCK_ERR_TIMEOUT || rc == REDLOCK_ERR_PROTOCOL,
                  "%d: %s", rc, redlock_errstr(l));
    ck_assert_msg(took < 3 * (300 + 300), "took %.0f ms", took);
    redlock_free(l);
    redlock_client_free(c);
    stop_fake(a);
}
END_TEST

/* A slot map that is malformed, empty, too large, or names too many nodes
 * is never used: the request goes to the seed, which answers it. */
START_TEST(test_hostile_slot_maps)
{
    static const int modes[] = {H_SLOTS_BAD, H_SLOTS_EMPTY, H_SLOTS_HUGE, H_SLOTS_MANY_NODES};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        int pa;
        pid_t a = fake_node(modes[m], fx_free_port(), &pa);
        char url[96];
        snprintf(url, sizeof url, "redis://127.0.0.1:%d?cluster=1", pa);
        tu_alloc_start(0);
        redlock_client *c = tu_client(url, 500);
        redlock *l = tu_lock(c, "maps", NULL, 5000);
        double t0 = fx_now_ms();
        int rc = redlock_trylock(l);
        ck_assert_msg(rc == REDLOCK_OK, "mode %d: %d %s", modes[m], rc, redlock_errstr(l));
        ck_assert_uint_eq(redlock_fence(l), 7);
        ck_assert_double_lt(fx_now_ms() - t0, 1500);
        /* a few more, so the map is asked for again meanwhile */
        for (int k = 0; k < 3; k++) {
            fx_sleep_ms(60);
            ck_assert_int_eq(redlock_trylock(l), REDLOCK_OK);
        }
        ck_assert_msg(tu_alloc.biggest < 6u << 20, "mode %d: %zu bytes at once", modes[m],
                      tu_alloc.biggest);
        redlock_free(l);
        redlock_client_free(c);
        tu_alloc_stop();
        stop_fake(a);
    }
}
END_TEST

/* ---- semaphores and read-write locks on a cluster --------------------------------------- */

/* Every key of a semaphore and of a read-write lock in the name's slot;
 * a release wakes the next waiter on its shard channel (SPUBLISH inside
 * the script): the waiters' backoff is far longer than the wake-up. */
START_TEST(test_semaphore_and_rw_on_cluster)
{
    redlock_options o;
    redlock_options_init(&o);
    o.retry_min_ms = 3000;
    o.retry_max_ms = 6000;
    const char *url = fx_cluster_seed_url(&cl);
    redlock_client *c = tu_client_opts(&url, 1, &o);
    char name[64];
    find_primaries();
    name_on(primaries[1], "sem-", name, sizeof name);
    redlock *s[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(redlock_new_semaphore(&s[i], c, name, 2, NULL, 10000), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(s[0]), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(s[1]), REDLOCK_OK);
    char key[96];
    snprintf(key, sizeof key, "ZCARD {%s}:holds", name);
    ck_assert_str_eq(on_owner(name, "%s", key), "2");
    ck_assert_int_eq(redlock_start_lock(s[2], 8000), REDLOCK_OK);
    drive(c, 300);
    ck_assert_int_eq(redlock_result(s[2]), REDLOCK_IN_PROGRESS);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_unlock(s[0]), REDLOCK_OK);
    ck_assert_ptr_eq(drive_until_done(c, 3000), s[2]);
    ck_assert_int_eq(redlock_result(s[2]), REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - t0, 1000); /* woken, not its 3 s backoff */
    ck_assert_uint_gt(redlock_fence(s[2]), redlock_fence(s[1]));

    /* a reader, and a writer woken by the last reader's release */
    name_on(primaries[2], "rw-", name, sizeof name);
    redlock *r = NULL, *w = tu_lock(c, name, NULL, 10000);
    ck_assert_int_eq(redlock_new_shared(&r, c, name, NULL, 10000), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(r), REDLOCK_OK);
    ck_assert_str_eq(on_owner(name, "GET %s", name), "redlock:readers");
    ck_assert_int_eq(redlock_start_lock(w, 8000), REDLOCK_OK);
    drive(c, 300);
    ck_assert_int_eq(redlock_result(w), REDLOCK_IN_PROGRESS);
    t0 = fx_now_ms();
    ck_assert_int_eq(redlock_unlock(r), REDLOCK_OK);
    ck_assert_ptr_eq(drive_until_done(c, 3000), w);
    ck_assert_int_eq(redlock_result(w), REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - t0, 1000);
    ck_assert_int_eq(redlock_trylock(r), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_holder h[4];
    size_t n = 9;
    ck_assert_int_eq(redlock_holders(w, h, 4, &n), REDLOCK_OK);
    ck_assert_uint_eq(n, 0);
    for (int i = 0; i < 3; i++)
        redlock_free(s[i]);
    redlock_free(r);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

/* ---- a quorum of one-node clusters ------------------------------------------------------------- */

START_TEST(test_quorum_of_clusters)
{
    fx_cluster q[3];
    const char *urls[3];
    char buf[3][96];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fx_cluster_start(&q[i], 1, 0), 0);
        snprintf(buf[i], sizeof buf[i], "%s", fx_cluster_seed_url(&q[i]));
        urls[i] = buf[i];
    }
    redlock_client *a = tu_client_urls(urls, 3, 500), *b = tu_client_urls(urls, 3, 500);
    redlock *la = tu_lock(a, "qc", "a", 10000), *lb = tu_lock(b, "qc", "b", 10000);
    ck_assert_int_eq(redlock_trylock(la), REDLOCK_OK);
    uint64_t f0 = redlock_fence(la);
    ck_assert(tu_seeded(f0));
    ck_assert_int_eq(redlock_trylock(lb), REDLOCK_NOT_ACQUIRED);
    for (int i = 0; i < 3; i++)
        ck_assert_str_eq(tu_get(fx_cluster_node(&q[i], 0), "qc"), "a");
    /* b waits; a's release wakes it through the shard channels */
    ck_assert_int_eq(redlock_start_lock(lb, 5000), REDLOCK_OK);
    drive(b, 200);
    ck_assert_int_eq(redlock_unlock(la), REDLOCK_OK);
    double t0 = fx_now_ms();
    ck_assert_ptr_eq(drive_until_done(b, 3000), lb);
    ck_assert_int_eq(redlock_result(lb), REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - t0, 500);
    ck_assert_uint_eq(redlock_fence(lb), f0 + 1);
    /* one cluster down: still a quorum */
    fx_cluster_stop(&q[1]);
    ck_assert_int_eq(redlock_unlock(lb), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(la), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(la), f0 + 2);
    ck_assert_int_eq(redlock_unlock(la), REDLOCK_OK);
    redlock_free(la);
    redlock_free(lb);
    redlock_client_free(a);
    redlock_client_free(b);
    for (int i = 0; i < 3; i++)
        fx_cluster_stop(&q[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *t = tcase_create("3+3");
    tcase_set_timeout(t, 120);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, test_key_slots);
    tcase_add_test(t, test_key_slots_many);
    tcase_add_test(t, test_each_shard);
    tcase_add_test(t, test_wait_wake_sharded);
    tcase_add_test(t, test_fair_sharded);
    tcase_add_test(t, test_migration_held_and_waiting);
    tcase_add_test(t, test_migration_stats_and_events);
    tcase_add_test(t, test_failover_keeps_lock);
    tcase_add_test(t, test_wait_replicas_unmet);
    tcase_add_test(t, test_stress_with_migration);
    tcase_add_test(t, test_cli_cluster_url);
    tcase_add_test(t, test_functions_on_every_primary);
    tcase_add_test(t, test_semaphore_and_rw_on_cluster);
    /* last: the node it kills and restarts lives only as long as the
     * test's own process (each test runs in a child) */
    tcase_add_test(t, test_primary_killed);
    suite_add_tcase(s, t);
    TCase *h = tcase_create("hostile and quorum");
    tcase_set_timeout(h, 120);
    tcase_add_test(h, test_hostile_moved_loop);
    tcase_add_test(h, test_hostile_ask_dead);
    tcase_add_test(h, test_hostile_slot_maps);
    tcase_add_test(h, test_quorum_of_clusters);
    suite_add_tcase(s, h);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
