/* test_internals.c - redlock.c's parts that can be checked without a
 * round trip: the quorum arithmetic (against definitions written here
 * another way), the operations' judgements on hand-built per-node answers
 * (what each decides, which nodes its next round goes to), and the slot
 * function against the server's CLUSTER KEYSLOT over thousands of keys.
 * Includes redlock.c to reach its statics. */
#include "../redlock.c"

#include "fixture.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- quorum arithmetic ----------------------------------------------------------------- */

/* Won: a strict majority of all nodes gave it to us. Refused: a strict
 * majority answered, or the other owner's nodes leave us no majority even
 * if every other node were ours. Otherwise unknown. */
static int acquire_expected(size_t n, size_t acq, size_t held)
{
    if (2 * acq > n)
        return Q_YES;
    if (2 * (acq + held) > n || 2 * (n - held) <= n)
        return Q_NO;
    return Q_UNKNOWN;
}

START_TEST(test_acquire_arithmetic)
{
    for (size_t n = 1; n <= MAX_NODES; n++)
        for (size_t acq = 0; acq <= n; acq++)
            for (size_t held = 0; acq + held <= n; held++)
                ck_assert_msg(acquire_decision(n, n / 2 + 1, acq, held) ==
                                  acquire_expected(n, acq, held),
                              "n=%zu acq=%zu held=%zu", n, acq, held);
    /* the classic cases, spelled out */
    ck_assert_int_eq(acquire_decision(5, 3, 3, 0), Q_YES);
    ck_assert_int_eq(acquire_decision(5, 3, 2, 1), Q_NO);     /* three answered */
    ck_assert_int_eq(acquire_decision(5, 3, 2, 0), Q_UNKNOWN); /* three silent   */
    ck_assert_int_eq(acquire_decision(5, 3, 0, 3), Q_NO);     /* no majority left */
    ck_assert_int_eq(acquire_decision(4, 3, 0, 2), Q_NO);
    ck_assert_int_eq(acquire_decision(4, 3, 1, 0), Q_UNKNOWN);
    ck_assert_int_eq(acquire_decision(1, 1, 0, 0), Q_UNKNOWN);
}
END_TEST

static int held_expected(size_t n, size_t ours, size_t missing, size_t other)
{
    if (2 * ours > n)
        return Q_YES;
    if (2 * (ours + missing + other) > n || 2 * (n - missing - other) <= n)
        return Q_NO;
    return Q_UNKNOWN;
}

START_TEST(test_held_arithmetic)
{
    for (size_t n = 1; n <= 9; n++)
        for (size_t ours = 0; ours <= n; ours++)
            for (size_t missing = 0; ours + missing <= n; missing++)
                for (size_t other = 0; ours + missing + other <= n; other++)
                    ck_assert_msg(held_decision(n, n / 2 + 1, ours, missing, other) ==
                                      held_expected(n, ours, missing, other),
                                  "n=%zu ours=%zu missing=%zu other=%zu", n, ours, missing,
                                  other);
    /* four nodes, two say "not yours", two silent: no majority can be ours */
    ck_assert_int_eq(held_decision(4, 3, 0, 1, 1), Q_NO);
    ck_assert_int_eq(held_decision(3, 2, 1, 0, 0), Q_UNKNOWN);
}
END_TEST

START_TEST(test_probe_arithmetic)
{
    for (size_t n = 1; n <= MAX_NODES; n++)
        for (size_t held = 0; held <= n; held++)
            ck_assert_msg(probe_may_win(n, n / 2 + 1, held) == (2 * (n - held) > n),
                          "n=%zu held=%zu", n, held);
}
END_TEST

/* ---- judgements on hand-built answers --------------------------------------------------- */

/* A client over three nodes nobody listens on: nothing here does I/O (the
 * engine never runs), so requests only queue. */
static redlock_client *hc;
static redlock *hl;

static void hand_setup(void)
{
    static const char *const urls[3] = {"redis://127.0.0.1:1", "redis://127.0.0.1:2",
                                        "redis://127.0.0.1:3"};
    ck_assert_int_eq(redlock_client_new(&hc, urls, 3, NULL), REDLOCK_OK);
    ck_assert_int_eq(redlock_new(&hl, hc, "judged", "me", 10000), REDLOCK_OK);
}

static void hand_teardown(void)
{
    redlock_free(hl);
    redlock_client_free(hc);
}

/* l in the given operation and phase, its round just over. */
static void in_round(int kind, int phase)
{
    hc->now = net_now_ns();
    hl->op.kind = (uint8_t)kind;
    hl->op.phase = (uint8_t)phase;
    hl->op.t0 = hc->now;
    hl->op.outstanding = 0;
    hl->wait.deadline = hc->now + ms_ns(10000);
    hl->wait.backoff = ms_ns(50);
    hl->nerr_idx = hc->n;
    if (hl->text)
        hl->text->nerr[0] = '\0';
}

static void answer(size_t i, long long code, long long val)
{
    memset(&hl->res[i], 0, offsetof(nres, hold));
    hl->res[i].state = N_OK;
    hl->res[i].final = 1;
    hl->res[i].ans.code = code;
    hl->res[i].ans.val = val;
}

static void failed(size_t i, int status, int transient)
{
    memset(&hl->res[i], 0, offsetof(nres, hold));
    node_error(hl, i, status, transient, "node %zu down", i);
    hl->res[i].final = 1;
}

/* The nodes the current round went to. */
static uint32_t round_nodes(void)
{
    uint32_t m = 0;
    for (size_t i = 0; i < hc->n; i++)
        if (hl->res[i].state == N_PENDING)
            m |= bit(i);
    return m;
}

START_TEST(test_acquire_too_few_answers)
{
    in_round(OP_TRYLOCK, PH_ACQUIRE);
    answer(0, 1, 5);
    failed(1, REDLOCK_ERR_IO, 1);
    failed(2, REDLOCK_ERR_TIMEOUT, 1);
    advance(hl);
    /* unknown: what node 0 gave is given back, then an error that may pass */
    ck_assert_int_eq(hl->op.phase, PH_RELEASE_TAKEN);
    ck_assert_uint_eq(round_nodes(), bit(0));
    ck_assert_int_eq(hl->op.deferred.rc, REDLOCK_ERR_IO);
    ck_assert_int_eq(hl->op.deferred.again, 1);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(hl), "only 1 of 3 nodes answered (quorum 2)"));
    ck_assert_ptr_nonnull(strstr(redlock_errstr(hl), "node 1 down"));
    ck_assert_int_eq(hl->lease.held, 0);
}
END_TEST

START_TEST(test_acquire_refused)
{
    in_round(OP_TRYLOCK, PH_ACQUIRE);
    answer(0, 1, 7);
    answer(1, 0, 900);
    answer(2, 0, 400);
    advance(hl);
    ck_assert_int_eq(hl->op.phase, PH_RELEASE_TAKEN);
    ck_assert_uint_eq(round_nodes(), bit(0));
    ck_assert_int_eq(hl->op.deferred.rc, REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(hl->op.deferred.again, 0);
    ck_assert_int_eq(hl->wait.holder_pttl, 400); /* the least holder TTL */
    ck_assert_ptr_nonnull(strstr(redlock_errstr(hl), "taken on 1 of 3 nodes, held by another owner on 2"));
}
END_TEST

START_TEST(test_acquire_won_raises_fences)
{
    in_round(OP_TRYLOCK, PH_ACQUIRE);
    answer(0, 1, 5);
    answer(1, 2, 7);
    failed(2, REDLOCK_ERR_IO, 1);
    advance(hl);
    /* won with token 7: node 0's counter (5) is raised before success */
    ck_assert_int_eq(hl->op.phase, PH_RAISE);
    ck_assert_uint_eq(round_nodes(), bit(0));
    ck_assert_str_eq(hl->op.tok_str, "7");
    /* the raise went through on node 0: the acquire holds, token 7 */
    in_round(OP_TRYLOCK, PH_RAISE);
    answer(0, 7, 0);
    hl->res[1].state = N_SKIP;
    hl->res[2].state = N_SKIP;
    advance(hl);
    ck_assert_int_eq(hl->op.kind, OP_NONE);
    ck_assert_int_eq(hl->op.result, REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(hl), 7);
    ck_assert_int_gt(redlock_validity_ms(hl), 9000);
}
END_TEST

START_TEST(test_refresh_repairs_a_lost_key)
{
    in_round(OP_REFRESH, PH_REFRESH);
    answer(0, 1, 0);
    answer(1, 0, 0); /* restarted empty */
    answer(2, 1, 0);
    advance(hl);
    ck_assert_int_eq(hl->op.phase, PH_REPAIR);
    ck_assert_uint_eq(round_nodes(), bit(1));
    ck_assert_int_eq(hl->op.repair, 1);
    ck_assert_int_eq(hl->lease.held, 1);
}
END_TEST

START_TEST(test_refresh_lost_gives_back_the_minority)
{
    hl->lease.held = 1;
    in_round(OP_REFRESH, PH_REFRESH);
    answer(0, 1, 0);
    answer(1, -1, 0);
    answer(2, 0, 0);
    advance(hl);
    ck_assert_int_eq(hl->op.phase, PH_RELEASE_TAKEN);
    ck_assert_uint_eq(round_nodes(), bit(0));
    ck_assert_int_eq(hl->op.deferred.rc, REDLOCK_NOT_HELD);
    ck_assert_int_eq(hl->lease.held, 0);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(hl), "ours on 1 of 3 nodes"));
}
END_TEST

START_TEST(test_unlock_unknown)
{
    in_round(OP_UNLOCK, PH_RELEASE);
    answer(0, 1, 0);
    failed(1, REDLOCK_ERR_TIMEOUT, 1);
    failed(2, REDLOCK_ERR_IO, 1);
    advance(hl);
    ck_assert_int_eq(hl->op.kind, OP_NONE);
    ck_assert_int_eq(hl->op.result, REDLOCK_ERR_TIMEOUT); /* the first failed node's */
    ck_assert_ptr_nonnull(strstr(redlock_errstr(hl), "only 1 of 3 nodes answered"));
    ck_assert_int_eq(hl->lease.held, 0);
}
END_TEST

START_TEST(test_probe_judgement)
{
    /* free on two nodes (-2: no key), held on one: a try could win */
    in_round(OP_LOCK, PH_PROBE);
    answer(0, -2, 0);
    answer(1, 500, 0);
    answer(2, -2, 0);
    advance(hl);
    ck_assert_int_eq(hl->op.phase, PH_ACQUIRE);
    ck_assert_uint_eq(round_nodes(), bit(0) | bit(1) | bit(2));
    /* held on two: sleep, no longer than the least TTL seen */
    in_round(OP_LOCK, PH_PROBE);
    hl->wait.last = REDLOCK_NOT_ACQUIRED;
    answer(0, 500, 0);
    answer(1, 400, 0);
    answer(2, -2, 0);
    advance(hl);
    ck_assert_int_eq(hl->op.phase, PH_SLEEP);
    ck_assert_int_eq(hl->wait.holder_pttl, 400);
    ck_assert(hl->link.armed && hl->link.timer_at <= hc->now + ms_ns(401));
}
END_TEST

/* ---- the slot function against the server's -------------------------------------------- */

START_TEST(test_key_slot_matches_server)
{
    fx_server s;
    fx_opts o = {0};
    o.cluster = 1; /* CLUSTER KEYSLOT needs cluster mode; no slots need be served */
    ck_assert_int_eq(fx_server_start(&s, &o), 0);
    unsigned seed = 12345;
    char key[64], out[32];
    int tagged = 0;
    for (int k = 0; k < 3000; k++) {
        size_t n = 1 + (size_t)(rand_r(&seed) % 40);
        for (size_t b = 0; b < n; b++) {
            int r = rand_r(&seed) % 10;
            /* braces often, to exercise the hash-tag rule; any byte otherwise */
            key[b] = r == 0 ? '{' : r == 1 ? '}' : (char)(rand_r(&seed) % 256);
        }
        if (k % 3 == 0 && n > 4) { /* a well-formed tag somewhere */
            key[1] = '{';
            key[3] = '}';
        }
        if (k == 0) /* an empty tag: the whole key is hashed */
            memcpy(key, "{}x", n = 3);
        const char *argv[3] = {"CLUSTER", "KEYSLOT", key};
        size_t lens[3] = {7, 7, n};
        ck_assert_int_eq(fx_cmdv(&s, out, sizeof out, 3, argv, lens), 0);
        ck_assert_msg(atoi(out) == key_slot(key, n), "key %d (%zu bytes): server %s, ours %u",
                      k, n, out, key_slot(key, n));
        const char *t;
        size_t tl;
        tagged += hash_tag(key, n, &t, &tl);
    }
    ck_assert_int_gt(tagged, 500); /* the tag rule was exercised */
    ck_assert_uint_eq(key_slot("123456789", 9), 12739); /* CRC16/XMODEM check value 0x31C3 */
    ck_assert_uint_eq(key_slot("{user1000}.following", 20), key_slot("user1000", 8));
    fx_server_stop(&s);
}
END_TEST

/* Every script's argument letters agree with its table entry: as many
 * KEYS (lower case, first) and ARGV as the script reads, each letter known. */
START_TEST(test_script_specs)
{
    for (int id = 0; id < S_COUNT; id++) {
        const char *p = script_spec[id];
        ck_assert_msg(p != NULL, "%s has no argument letters", scripts[id].name);
        size_t keys = strspn(p, "abcdefghijklmnopqrstuvwxyz");
        ck_assert_msg(keys == (size_t)scripts[id].nkeys, "%d %s: %zu keys, the table says %d", id,
                      scripts[id].name, keys, scripts[id].nkeys);
        ck_assert_msg(strlen(p) == (size_t)(scripts[id].nkeys + scripts[id].nargs),
                      "%d %s: %zu arguments", id, scripts[id].name, strlen(p));
        for (const char *q = p + keys; *q; q++)
            ck_assert_msg(*q >= 'A' && *q <= 'Z', "%d %s: %c after the keys", id,
                          scripts[id].name, *q);
    }
    /* each {NAME}:SUFFIX letter names its suffix */
    static const char *const suffix[] = {SUFFIX_FENCE, SUFFIX_QUEUE, SUFFIX_ALIVE, SUFFIX_HOLDS,
                                         SUFFIX_READS, SUFFIX_TOKEN, SUFFIX_WWAIT, SUFFIX_FREED};
    ck_assert_uint_eq(strlen(key_letters), sizeof suffix / sizeof suffix[0]);
    for (size_t i = 0; i < strlen(key_letters); i++)
        ck_assert_msg(key_letters[i] == (i == K_FREED ? 'd' : suffix[i][0]), "letter %zu", i);
}
END_TEST

/* The client keeps histogram buckets in 40 bits: they carry into the high
 * byte at 2^32, read back as 64-bit counts, and stop at 2^40 - 1. */
START_TEST(test_histogram_buckets_carry)
{
    obs_hist h;
    memset(&h, 0, sizeof h);
    unsigned b = hist_bucket(70); /* 70 us */
    h.lo[b] = UINT32_MAX - 1;
    hist_add(&h, 70 * 1000);
    hist_add(&h, 70 * 1000);
    ck_assert_uint_eq(h.hi[b], 1);
    ck_assert_uint_eq(h.lo[b], 0);
    redlock_stats st;
    put_hist(&st, sizeof st, offsetof(redlock_stats, acquire_wait), &h);
    ck_assert_uint_eq(st.acquire_wait.bucket[b], (uint64_t)1 << 32);
    ck_assert_uint_eq(st.acquire_wait.count, 2);
    ck_assert_uint_eq(st.acquire_wait.max_us, 70);
    h.hi[b] = UINT8_MAX;
    h.lo[b] = UINT32_MAX - 1;
    for (int i = 0; i < 3; i++)
        hist_add(&h, 70 * 1000);
    put_hist(&st, sizeof st, offsetof(redlock_stats, acquire_wait), &h);
    ck_assert_uint_eq(st.acquire_wait.bucket[b], ((uint64_t)1 << 40) - 1);
    ck_assert_uint_eq(st.acquire_wait.bucket[b + 1], 0);
    ck_assert_uint_le(redlock_stats_bucket_max(b - 1), 69);
    ck_assert_uint_ge(redlock_stats_bucket_max(b), 70);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("internals");
    TCase *t = tcase_create("arithmetic");
    tcase_add_test(t, test_acquire_arithmetic);
    tcase_add_test(t, test_held_arithmetic);
    tcase_add_test(t, test_probe_arithmetic);
    suite_add_tcase(su, t);
    t = tcase_create("judgements");
    tcase_add_checked_fixture(t, hand_setup, hand_teardown);
    tcase_add_test(t, test_acquire_too_few_answers);
    tcase_add_test(t, test_acquire_refused);
    tcase_add_test(t, test_acquire_won_raises_fences);
    tcase_add_test(t, test_refresh_repairs_a_lost_key);
    tcase_add_test(t, test_refresh_lost_gives_back_the_minority);
    tcase_add_test(t, test_unlock_unknown);
    tcase_add_test(t, test_probe_judgement);
    suite_add_tcase(su, t);
    t = tcase_create("counters");
    tcase_add_test(t, test_histogram_buckets_carry);
    tcase_add_test(t, test_script_specs);
    suite_add_tcase(su, t);
    t = tcase_create("slots");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_key_slot_matches_server);
    suite_add_tcase(su, t);
    SRunner *r = srunner_create(su);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
