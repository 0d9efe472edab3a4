/* test_semaphore.c - counting semaphores and read-write locks against real
 * redis-server processes: permits and their count, leases by the server's
 * clock, fencing, waking one waiter per permit freed, fair order, readers
 * and writers (writer preference, a dead writer, the readers' mark), a
 * quorum, Functions mode, a stress of processes killed while they hold,
 * and a client whose wall clock is an hour off. */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static fx_server srv;

static void setup(void)
{
    ck_assert_int_eq(fx_server_start(&srv, NULL), 0);
}

static void teardown(void)
{
    fx_server_stop(&srv);
}

static void flush(void)
{
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "FLUSHALL"), 0);
}

static const char *raw(fx_server *s, const char *cmd)
{
    static char out[4096];
    ck_assert_int_eq(fx_cmd(s, out, sizeof out, cmd), 0);
    return out;
}

/* The permit count stored with semaphore name (the field '' of its token
 * hash), "" when there is none. */
static const char *stored_permits(fx_server *s, const char *name)
{
    static char out[64];
    char key[128];
    snprintf(key, sizeof key, "{%s}:token", name);
    const char *argv[3] = {"HGET", key, ""};
    const size_t lens[3] = {4, strlen(key), 0};
    ck_assert_int_eq(fx_cmdv(s, out, sizeof out, 3, argv, lens), 0);
    return out;
}

static redlock *sem(redlock_client *c, const char *name, uint32_t permits, uint32_t ttl)
{
    redlock *l = NULL;
    ck_assert_msg(redlock_new_semaphore(&l, c, name, permits, NULL, ttl) == REDLOCK_OK, "%s",
                  redlock_client_errstr(c));
    return l;
}

static redlock *reader(redlock_client *c, const char *name, uint32_t ttl)
{
    redlock *l = NULL;
    ck_assert_int_eq(redlock_new_shared(&l, c, name, NULL, ttl), REDLOCK_OK);
    return l;
}

/* Turn c until l's operation ended or max_ms passed; its result, or
 * REDLOCK_IN_PROGRESS. */
static int turn_for(redlock_client *c, redlock *l, int max_ms)
{
    double end = fx_now_ms() + max_ms;
    while (redlock_result(l) == REDLOCK_IN_PROGRESS && fx_now_ms() < end)
        tu_turn(c, 20);
    return redlock_result(l);
}

/* ---- semaphores on one node ------------------------------------------------------------ */

START_TEST(test_semaphore_basics)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *l = NULL, *s[4];
    ck_assert_int_eq(redlock_new_semaphore(&l, c, "s", 0, NULL, 5000), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "1 to 65536 permits (got 0)"));
    ck_assert_int_eq(redlock_new_semaphore(&l, c, "s", REDLOCK_MAX_PERMITS + 1, NULL, 5000),
                     REDLOCK_ERR_ARG);
    ck_assert_ptr_null(l);
    ck_assert_int_eq(redlock_new_semaphore(&l, c, "s", 3, NULL, 5), REDLOCK_ERR_ARG); /* TTL */

    uint64_t last = 0;
    for (int i = 0; i < 4; i++)
        s[i] = sem(c, "s", 3, 5000);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(redlock_trylock(s[i]) == REDLOCK_OK, "%s", redlock_errstr(s[i]));
        ck_assert_uint_gt(redlock_fence(s[i]), last); /* a token per grant, increasing */
        last = redlock_fence(s[i]);
        ck_assert_int_gt(redlock_validity_ms(s[i]), 4000);
    }
    ck_assert(tu_seeded(redlock_fence(s[0])));
    ck_assert_int_eq(redlock_trylock(s[3]), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(s[3]), "all 3 permits of semaphore 's' are held"));
    /* held already: a new lease, the same token */
    uint64_t f1 = redlock_fence(s[1]);
    ck_assert_int_eq(redlock_trylock(s[1]), REDLOCK_OK);
    ck_assert_uint_eq(redlock_fence(s[1]), f1);
    ck_assert_str_eq(raw(&srv, "ZCARD {s}:holds"), "3");
    ck_assert_str_eq(stored_permits(&srv, "s"), "3");
    /* the holder set expires as a whole after its longest lease */
    long pttl = atol(raw(&srv, "PTTL {s}:holds"));
    ck_assert(pttl > 4000 && pttl <= 5000);
    ck_assert_int_le(labs(atol(raw(&srv, "PTTL {s}:token")) - pttl), 20); /* the same lease */

    /* who holds it: each permit with its lease and token */
    redlock_holder h[8];
    size_t n = 0;
    ck_assert_int_eq(redlock_holders(s[3], h, 8, &n), REDLOCK_OK);
    ck_assert_uint_eq(n, 3);
    for (size_t k = 0; k < n; k++) {
        int found = 0;
        for (int i = 0; i < 3; i++)
            if (strcmp(h[k].value, redlock_value(s[i])) == 0) {
                found = 1;
                ck_assert_uint_eq(h[k].fence, redlock_fence(s[i]));
            }
        ck_assert(found && h[k].shared && h[k].ttl_ms > 4000 && h[k].nodes == 1);
    }
    redlock_info info;
    ck_assert_int_eq(redlock_inspect(s[0], &info), REDLOCK_OK);
    ck_assert(info.held && info.ours && info.ttl_ms > 4000 && info.fence == last);
    ck_assert_int_eq(redlock_inspect(s[3], &info), REDLOCK_OK);
    ck_assert(info.held && !info.ours && info.ttl_ms == -1);

    /* another permit count: refused with both numbers, nothing changed */
    redlock *five = sem(c, "s", 5, 5000);
    ck_assert_int_eq(redlock_trylock(five), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(five), "semaphore 's' has 3 permits; this handle "
                                                       "asks for 5"));
    ck_assert_str_eq(stored_permits(&srv, "s"), "3");

    /* a release frees one permit, once: a second release changes nothing */
    ck_assert_int_eq(redlock_unlock(s[0]), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(s[0]), REDLOCK_NOT_HELD);
    ck_assert_str_eq(raw(&srv, "ZCARD {s}:holds"), "2");
    ck_assert_int_eq(redlock_trylock(s[3]), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(s[0]), REDLOCK_NOT_ACQUIRED);
    for (int i = 1; i < 4; i++)
        ck_assert_int_eq(redlock_unlock(s[i]), REDLOCK_OK);
    /* the last holder out takes the set, its tokens and its count with it */
    ck_assert_str_eq(raw(&srv, "EXISTS {s}:holds {s}:token"), "0");
    ck_assert_int_eq(redlock_trylock(five), REDLOCK_OK); /* a new semaphore of 5 */
    ck_assert_int_eq(redlock_unlock(five), REDLOCK_OK);
    for (int i = 0; i < 4; i++)
        redlock_free(s[i]);
    redlock_free(five);
    redlock_client_free(c);
}
END_TEST

/* A lease ends by the server's clock: refresh extends a live one, never
 * re-creates an expired one; a holder that died frees its permit when its
 * lease ends. */
START_TEST(test_semaphore_leases)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *a = sem(c, "lease", 1, 300), *b = sem(c, "lease", 1, 300);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    fx_sleep_ms(150);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    fx_sleep_ms(200); /* 350 ms after the grant: alive thanks to the refresh */
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    fx_sleep_ms(250);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_NOT_HELD);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(a), "not held"));
    ck_assert_str_eq(raw(&srv, "EXISTS {lease}:holds"), "0"); /* not re-created */
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);

    /* a holder killed while it holds: its permit is free once its lease ends */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        redlock_client *cc = NULL;
        redlock *h = NULL;
        const char *u[1] = {srv.url};
        if (redlock_client_new(&cc, u, 1, NULL) != 0 ||
            redlock_new_semaphore(&h, cc, "lease", 1, "doomed", 800) != 0 ||
            redlock_trylock(h) != 0)
            _exit(1);
        pause(); /* killed while it holds */
        _exit(2);
    }
    for (int k = 0; k < 200 && strcmp(raw(&srv, "ZCARD {lease}:holds"), "1") != 0; k++)
        fx_sleep_ms(10);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_lock(b, 5000), REDLOCK_OK);
    double waited = fx_now_ms() - t0;
    ck_assert_msg(waited < 2400, "the dead holder's permit came free after %.0f ms", waited);
    ck_assert_int_eq(redlock_unlock(b), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_client_free(c);
}
END_TEST

/* A release wakes as many waiters as it frees permits: one, not a herd. */
START_TEST(test_semaphore_wakes_one)
{
    redlock_options o;
    redlock_options_init(&o);
    o.retry_max_ms = 5000; /* waiters that listen renew their place only this often */
    redlock_client *c = tu_client_opts((const char *[]){srv.url}, 1, &o);
    redlock *h[2] = {sem(c, "one", 2, 20000), sem(c, "one", 2, 20000)}, *w[5];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(redlock_trylock(h[i]), REDLOCK_OK);
    for (int i = 0; i < 5; i++) {
        w[i] = sem(c, "one", 2, 20000);
        ck_assert_int_eq(redlock_start_lock(w[i], 15000), REDLOCK_OK);
    }
    /* every waiter is in line and listens */
    for (int k = 0; k < 300 && strcmp(raw(&srv, "ZCARD {one}:queue"), "5") != 0; k++)
        tu_turn(c, 20);
    ck_assert_str_eq(raw(&srv, "ZCARD {one}:queue"), "5");
    for (int k = 0; k < 20; k++)
        tu_turn(c, 20);
    ck_assert_str_eq(raw(&srv, "CONFIG RESETSTAT"), "OK");
    ck_assert_int_eq(redlock_unlock(h[0]), REDLOCK_OK);
    int got = 0;
    double end = fx_now_ms() + 3000;
    while (fx_now_ms() < end && got == 0) {
        tu_turn(c, 20);
        for (redlock *d; (d = redlock_client_done(c)) != NULL;)
            got += redlock_result(d) == REDLOCK_OK;
    }
    for (int k = 0; k < 25; k++) { /* time for a herd to show */
        tu_turn(c, 20);
        for (redlock *d; (d = redlock_client_done(c)) != NULL;)
            got += redlock_result(d) == REDLOCK_OK;
    }
    ck_assert_int_eq(got, 1);
    /* the release, one acquire by the one woken: no acquire from the others */
    long calls = tu_cmd_calls(&srv, "evalsha");
    ck_assert_msg(calls <= 3, "%ld script calls after one release", calls);
    ck_assert_str_eq(raw(&srv, "ZCARD {one}:queue"), "4");
    for (int i = 0; i < 5; i++)
        redlock_free(w[i]);
    redlock_free(h[0]);
    redlock_free(h[1]);
    redlock_client_free(c);
}
END_TEST

/* With fair on, permits go out in the order the waiters began to wait. */
START_TEST(test_semaphore_fair_order)
{
    redlock_options o;
    redlock_options_init(&o);
    o.fair = 1;
    redlock_client *c = tu_client_opts((const char *[]){srv.url}, 1, &o);
    redlock *h = sem(c, "fifo", 1, 20000), *w[4];
    ck_assert_int_eq(redlock_trylock(h), REDLOCK_OK);
    char want[8];
    for (int i = 0; i < 4; i++) {
        w[i] = sem(c, "fifo", 1, 20000);
        redlock_set_userdata(w[i], (void *)(intptr_t)i);
        ck_assert_int_eq(redlock_start_lock(w[i], 15000), REDLOCK_OK);
        snprintf(want, sizeof want, "%d", i + 1);
        for (int k = 0; k < 300 && strcmp(raw(&srv, "ZCARD {fifo}:queue"), want) != 0; k++)
            tu_turn(c, 10);
        ck_assert_str_eq(raw(&srv, "ZCARD {fifo}:queue"), want);
    }
    ck_assert_int_eq(redlock_unlock(h), REDLOCK_OK);
    for (int next = 0; next < 4; next++) {
        redlock *d = NULL;
        for (int k = 0; k < 300 && !d; k++) {
            tu_turn(c, 20);
            d = redlock_client_done(c);
        }
        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(redlock_result(d), REDLOCK_OK);
        ck_assert_int_eq((int)(intptr_t)redlock_userdata(d), next);
        ck_assert_int_eq(redlock_unlock(d), REDLOCK_OK);
    }
    for (int i = 0; i < 4; i++)
        redlock_free(w[i]);
    redlock_free(h);
    redlock_client_free(c);
}
END_TEST

/* ---- read-write locks on one node ---------------------------------------------------- */

START_TEST(test_rw_basics)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *r1 = reader(c, "rw", 5000), *r2 = reader(c, "rw", 5000), *w = tu_lock(c, "rw", NULL, 5000);
    redlock *x = NULL;
    ck_assert_int_eq(redlock_new(&x, c, "rw", "redlock:readers", 5000), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_client_errstr(c), "read-write lock's key holds"));
    ck_assert_int_eq(redlock_trylock(r1), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(r2), REDLOCK_OK); /* readers together */
    ck_assert_uint_gt(redlock_fence(r2), redlock_fence(r1));
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(w), "readers hold lock 'rw'"));
    /* the key holds the readers' mark: any other client's SET NX sees it held */
    ck_assert_str_eq(raw(&srv, "GET rw"), "redlock:readers");
    ck_assert_str_eq(raw(&srv, "SET rw someone NX PX 1000"), "");
    long pttl = atol(raw(&srv, "PTTL rw"));
    ck_assert(pttl > 4000 && pttl <= 5000);
    redlock_holder h[4];
    size_t n = 0;
    ck_assert_int_eq(redlock_holders(w, h, 4, &n), REDLOCK_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert(h[0].shared && h[1].shared);
    /* one reader out: still held; the last out frees it for the writer */
    ck_assert_int_eq(redlock_unlock(r1), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_unlock(r2), REDLOCK_OK);
    ck_assert_str_eq(raw(&srv, "EXISTS rw {rw}:reads {rw}:token"), "0");
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_OK);
    ck_assert_uint_gt(redlock_fence(w), redlock_fence(r2)); /* one counter for the name */
    ck_assert_int_eq(redlock_trylock(r1), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(r1), "held by a writer"));
    ck_assert_int_eq(redlock_holders(r1, h, 4, &n), REDLOCK_OK);
    ck_assert(n == 1 && !h[0].shared && strcmp(h[0].value, redlock_value(w)) == 0);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(r1), REDLOCK_OK);
    /* a name used as a semaphore is not a read-write lock */
    redlock *s = sem(c, "counted", 2, 5000), *rs = reader(c, "counted", 5000);
    ck_assert_int_eq(redlock_trylock(s), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(rs), REDLOCK_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(rs), "'counted' is a semaphore of 2 permits"));
    ck_assert_int_eq(redlock_unlock(r1), REDLOCK_OK);
    redlock_free(r1);
    redlock_free(r2);
    redlock_free(w);
    redlock_free(s);
    redlock_free(rs);
    redlock_client_free(c);
}
END_TEST

/* A waiting writer keeps new readers out, is woken by the last reader's
 * release, and a writer that dies stops blocking readers within its
 * place's lease. */
START_TEST(test_writer_preference)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *r1 = reader(c, "wp", 10000), *r2 = reader(c, "wp", 10000), *w = tu_lock(c, "wp", NULL, 10000);
    ck_assert_int_eq(redlock_trylock(r1), REDLOCK_OK);
    ck_assert_int_eq(redlock_start_lock(w, 8000), REDLOCK_OK);
    for (int k = 0; k < 300 && strcmp(raw(&srv, "ZCARD {wp}:wwait"), "1") != 0; k++)
        tu_turn(c, 10);
    ck_assert_str_eq(raw(&srv, "ZCARD {wp}:wwait"), "1");
    ck_assert_int_eq(redlock_trylock(r2), REDLOCK_NOT_ACQUIRED);
    ck_assert_ptr_nonnull(strstr(redlock_errstr(r2), "a writer waits for 'wp'"));
    ck_assert_int_eq(redlock_result(w), REDLOCK_IN_PROGRESS);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_unlock(r1), REDLOCK_OK);
    ck_assert_int_eq(turn_for(c, w, 3000), REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - t0, 1000); /* woken by the release, not a backoff */
    ck_assert_str_eq(raw(&srv, "ZCARD {wp}:wwait"), "0"); /* its place is given up */
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(r2), REDLOCK_OK);

    /* a writer that dies while it waits: readers are kept out only until
     * its place lapses (2 x retry_max_ms + io_timeout_ms = 900 ms here) */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        redlock_options o;
        redlock_options_init(&o);
        o.retry_max_ms = 200;
        redlock_client *cc = NULL;
        redlock *ww = NULL;
        const char *u[1] = {srv.url};
        if (redlock_client_new(&cc, u, 1, &o) != 0 || redlock_new(&ww, cc, "wp", NULL, 10000) != 0)
            _exit(1);
        redlock_lock(ww, 30000);
        _exit(2);
    }
    for (int k = 0; k < 300 && strcmp(raw(&srv, "ZCARD {wp}:wwait"), "1") != 0; k++)
        fx_sleep_ms(10);
    ck_assert_str_eq(raw(&srv, "ZCARD {wp}:wwait"), "1");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    redlock *r3 = reader(c, "wp", 10000);
    ck_assert_int_eq(redlock_trylock(r3), REDLOCK_NOT_ACQUIRED);
    t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(r3, 5000), REDLOCK_OK);
    ck_assert_double_lt(fx_now_ms() - t0, 2700);
    ck_assert_int_eq(redlock_unlock(r2), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(r3), REDLOCK_OK);
    redlock_free(r1);
    redlock_free(r2);
    redlock_free(r3);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

/* ---- processes: no overlap, no starvation, a wrong wall clock ------------------------------ */

#define PROCS 8
#define GRANTS 200
#define PERMITS 3

typedef struct shm {
    double until[PROCS]; /* each worker's lease end while it holds (0: none), monotonic ms */
    atomic_int most;     /* the most leases seen alive at once, counted at each grant */
    atomic_int grants;
    atomic_int failures;
    atomic_int holding;  /* workers inside right now (a killed one may stay counted) */
} shm;

/* A worker: GRANTS grants of a permit (or as many as it gets before it is
 * killed), each held for a moment. At each grant it counts the leases
 * alive: its own and every other worker's that has not ended, also a
 * killed worker's, whose permit the server frees only when its lease ends. */
static void sem_worker(shm *m, const char *url, int id)
{
    redlock_client *c = NULL;
    redlock *l = NULL;
    const char *u[1] = {url};
    char v[32];
    snprintf(v, sizeof v, "w%d-%d", id, (int)getpid());
    if (redlock_client_new(&c, u, 1, NULL) != 0 ||
        redlock_new_semaphore(&l, c, "stress", PERMITS, v, 400) != 0)
        _exit(1);
    for (int k = 0; k < GRANTS; k++) {
        if (redlock_lock(l, 10000) != REDLOCK_OK) {
            atomic_fetch_add(&m->failures, 1);
            continue;
        }
        double now = fx_now_ms();
        m->until[id] = now + (double)redlock_validity_ms(l);
        __sync_synchronize();
        int alive = 0;
        for (int j = 0; j < PROCS; j++)
            alive += m->until[j] > now;
        for (int most = atomic_load(&m->most); alive > most;)
            if (atomic_compare_exchange_weak(&m->most, &most, alive))
                break;
        atomic_fetch_add(&m->grants, 1);
        atomic_fetch_add(&m->holding, 1);
        usleep(300);
        atomic_fetch_sub(&m->holding, 1);
        m->until[id] = 0;
        __sync_synchronize();
        redlock_unlock(l);
    }
    _exit(0);
}

START_TEST(test_semaphore_stress)
{
    shm *m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    memset(m, 0, sizeof *m);
    pid_t pids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0)
            sem_worker(m, srv.url, i);
    }
    /* kill three workers while they hold a permit (their count stays in:
     * the others must get by with one permit fewer until each lease ends) */
    int killed = 0;
    for (int k = 0; k < 2000 && killed < 3; k++) {
        fx_sleep_ms(5);
        int id = killed * 3 % PROCS;
        if (atomic_load(&m->grants) < 100 * (killed + 1) || m->until[id] == 0)
            continue; /* kill it while it holds */
        pid_t victim = pids[id];
        kill(victim, SIGKILL);
        killed++;
    }
    int ok = 0;
    double end = fx_now_ms() + 90000;
    for (int i = 0; i < PROCS; i++) {
        int st;
        while (waitpid(pids[i], &st, WNOHANG) == 0 && fx_now_ms() < end)
            fx_sleep_ms(20);
        if (fx_now_ms() >= end) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], &st, 0);
        }
        ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    printf("semaphore stress: %d processes (%d killed while holding), %d grants of %d permits, "
           "at most %d leases alive at once, %d waits ran out\n",
           PROCS, killed, atomic_load(&m->grants), PERMITS, atomic_load(&m->most),
           atomic_load(&m->failures));
    ck_assert_int_eq(killed, 3);
    ck_assert_int_eq(ok, PROCS - killed);
    ck_assert_int_le(atomic_load(&m->most), PERMITS);
    ck_assert_int_ge(atomic_load(&m->grants), (PROCS - killed) * GRANTS);
    ck_assert_int_eq(atomic_load(&m->failures), 0);
    munmap(m, sizeof *m);
}
END_TEST

/* A stream of readers does not starve a writer: it gets in within a bound
 * set by the readers' hold time, and readers never overlap it. */
typedef struct rwshm {
    atomic_int readers, writers, overlaps, stop, reads;
} rwshm;

static void rw_reader(rwshm *m, const char *url)
{
    redlock_client *c = NULL;
    redlock *l = NULL;
    const char *u[1] = {url};
    if (redlock_client_new(&c, u, 1, NULL) != 0 || redlock_new_shared(&l, c, "stream", NULL, 5000) != 0)
        _exit(1);
    for (int k = 0; k < 2000 && !atomic_load(&m->stop); k++) {
        if (redlock_lock(l, 5000) != REDLOCK_OK)
            continue;
        atomic_fetch_add(&m->readers, 1);
        if (atomic_load(&m->writers))
            atomic_fetch_add(&m->overlaps, 1);
        atomic_fetch_add(&m->reads, 1);
        usleep(40000); /* each read holds 40 ms; the four overlap all the time */
        atomic_fetch_sub(&m->readers, 1);
        redlock_unlock(l);
    }
    _exit(0);
}

START_TEST(test_writer_not_starved)
{
    rwshm *m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    memset(m, 0, sizeof *m);
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0)
            rw_reader(m, srv.url);
    }
    for (int k = 0; k < 500 && atomic_load(&m->reads) < 20; k++)
        fx_sleep_ms(10);
    redlock_client *c = tu_client(srv.url, 0);
    redlock *w = tu_lock(c, "stream", NULL, 5000);
    double worst = 0;
    for (int k = 0; k < 5; k++) {
        double t0 = fx_now_ms();
        ck_assert_int_eq(redlock_lock(w, 10000), REDLOCK_OK);
        double waited = fx_now_ms() - t0;
        worst = waited > worst ? waited : worst;
        atomic_fetch_add(&m->writers, 1);
        if (atomic_load(&m->readers))
            atomic_fetch_add(&m->overlaps, 1);
        fx_sleep_ms(20);
        atomic_fetch_sub(&m->writers, 1);
        ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
        fx_sleep_ms(100);
    }
    atomic_store(&m->stop, 1);
    for (int i = 0; i < 4; i++)
        waitpid(pids[i], NULL, 0);
    printf("read-write: a writer behind 4 readers (40 ms holds) waited at most %.0f ms; %d reads; "
           "%d overlaps\n",
           worst, atomic_load(&m->reads), atomic_load(&m->overlaps));
    ck_assert_int_eq(atomic_load(&m->overlaps), 0);
    ck_assert_double_lt(worst, 2500); /* a reader's hold and a backoff, not starvation */
    redlock_free(w);
    redlock_client_free(c);
    munmap(m, sizeof *m);
}
END_TEST

/* A client whose wall clock is an hour off (libfaketime) neither steals a
 * permit nor loses its own: leases run by the server's clock. */
START_TEST(test_wrong_wall_clock)
{
#if !defined(__GLIBC__)
    /* libfaketime is a glibc library: it does not load into the command
     * of a musl build (make cross ARCH=musl), which uses this C library */
    printf("test_wrong_wall_clock: skipped (libfaketime needs glibc)\n");
    return;
#endif
    char cmd[1024], out[1024];
    const char *lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if (access(lib, R_OK) != 0)
        lib = "/usr/lib/faketime/libfaketime.so.1";
    ck_assert_msg(access(lib, R_OK) == 0, "libfaketime not installed (apt-get install faketime)");
    redlock_client *c = tu_client(srv.url, 0);
    redlock *mine = sem(c, "clock", 1, 3000);
    /* an hour behind: the permit it holds for 1.5 s is not taken from it */
    snprintf(cmd, sizeof cmd,
             "LD_PRELOAD=%s FAKETIME='-1h' %s/redlock run -u %s -l 1 -t 1s clock -- sh -c "
             "'date +%%H; sleep 1.5' 2>&1",
             lib, FX_BUILD_DIR, srv.url);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    for (int k = 0; k < 300 && strcmp(raw(&srv, "ZCARD {clock}:holds"), "1") != 0; k++)
        fx_sleep_ms(10);
    for (int k = 0; k < 10; k++) { /* its 1 s lease is kept alive by refreshes */
        ck_assert_int_eq(redlock_trylock(mine), REDLOCK_NOT_ACQUIRED);
        fx_sleep_ms(100);
    }
    size_t got = fread(out, 1, sizeof out - 1, f);
    out[got] = '\0';
    int st = pclose(f);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    char hour[8];
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    snprintf(hour, sizeof hour, "%02d", tmv.tm_hour);
    ck_assert_msg(strncmp(out, hour, 2) != 0, "the clock was not faked: %s", out);
    ck_assert_int_eq(redlock_trylock(mine), REDLOCK_OK);
    /* an hour ahead: it cannot take the permit we hold, nor see our lease as over */
    snprintf(cmd, sizeof cmd,
             "LD_PRELOAD=%s FAKETIME='+1h' %s/redlock run -u %s -l 1 -t 1s clock -- true 2>&1",
             lib, FX_BUILD_DIR, srv.url);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    got = fread(out, 1, sizeof out - 1, f);
    out[got] = '\0';
    st = pclose(f);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 75, "%s", out);
    ck_assert_int_eq(redlock_unlock(mine), REDLOCK_OK);
    redlock_free(mine);
    redlock_client_free(c);
}
END_TEST

/* ---- a quorum, and Functions mode --------------------------------------------------- */

START_TEST(test_quorum)
{
    fx_server s[3];
    const char *urls[3];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fx_server_start(&s[i], NULL), 0);
        urls[i] = s[i].url;
    }
    redlock_client *c = tu_client_urls(urls, 3, 0);
    redlock *a = sem(c, "qs", 2, 5000), *b = sem(c, "qs", 2, 5000), *d = sem(c, "qs", 2, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_OK);
    ck_assert_uint_gt(redlock_fence(b), redlock_fence(a));
    ck_assert_int_eq(redlock_trylock(d), REDLOCK_NOT_ACQUIRED);
    for (int i = 0; i < 3; i++)
        ck_assert_str_eq(raw(&s[i], "ZCARD {qs}:holds"), "2");
    redlock_holder h[4];
    size_t n = 0;
    ck_assert_int_eq(redlock_holders(d, h, 4, &n), REDLOCK_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert(h[0].nodes == 3 && h[1].nodes == 3);
    /* one node down: still a quorum; a permit freed on the others */
    fx_server_stop(&s[2]);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(d), REDLOCK_OK);
    ck_assert_int_gt(redlock_validity_ms(d), 4000);
    ck_assert_int_eq(redlock_refresh(d), REDLOCK_OK);
    /* readers and a writer on the quorum */
    redlock *r = reader(c, "qrw", 5000), *w = tu_lock(c, "qrw", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(r), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_unlock(r), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    redlock_free(a);
    redlock_free(b);
    redlock_free(d);
    redlock_free(r);
    redlock_free(w);
    redlock_client_free(c);
    fx_server_stop(&s[0]);
    fx_server_stop(&s[1]);
}
END_TEST

START_TEST(test_functions_mode)
{
    redlock_options o;
    redlock_options_init(&o);
    o.scripts = REDLOCK_SCRIPTS_FUNCTIONS;
    redlock_client *c = tu_client_opts((const char *[]){srv.url}, 1, &o);
    ck_assert_str_eq(raw(&srv, "CONFIG RESETSTAT"), "OK");
    redlock *a = sem(c, "fs", 1, 5000), *b = sem(c, "fs", 1, 5000);
    redlock *r = reader(c, "frw", 5000), *w = tu_lock(c, "frw", NULL, 5000);
    ck_assert_int_eq(redlock_trylock(a), REDLOCK_OK); /* loads the library on first use */
    ck_assert_int_eq(redlock_trylock(b), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_refresh(a), REDLOCK_OK);
    redlock_holder h[2];
    size_t n = 0;
    ck_assert_int_eq(redlock_holders(b, h, 2, &n), REDLOCK_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(redlock_unlock(a), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(r), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_NOT_ACQUIRED);
    ck_assert_int_eq(redlock_unlock(r), REDLOCK_OK);
    ck_assert_int_eq(redlock_trylock(w), REDLOCK_OK);
    ck_assert_int_eq(redlock_unlock(w), REDLOCK_OK);
    ck_assert_int_eq(tu_cmd_calls(&srv, "evalsha"), 0);
    ck_assert_int_eq(tu_cmd_calls(&srv, "eval"), 0);
    ck_assert_int_gt(tu_cmd_calls(&srv, "fcall"), 8);
    redlock_free(a);
    redlock_free(b);
    redlock_free(r);
    redlock_free(w);
    redlock_client_free(c);
}
END_TEST

/* No allocation per cycle, for semaphores and readers too. */
START_TEST(test_no_alloc_per_cycle)
{
    redlock_client *c = tu_client(srv.url, 0);
    redlock *s = sem(c, "na", 2, 5000), *r = reader(c, "narw", 5000);
    for (int k = 0; k < 3; k++) { /* warm: connected, scripts cached */
        ck_assert_int_eq(redlock_trylock(s), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(s), REDLOCK_OK);
        ck_assert_int_eq(redlock_trylock(r), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(r), REDLOCK_OK);
    }
    tu_alloc_start(0);
    for (int k = 0; k < 50; k++) {
        ck_assert_int_eq(redlock_trylock(s), REDLOCK_OK);
        ck_assert_int_eq(redlock_refresh(s), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(s), REDLOCK_OK);
        ck_assert_int_eq(redlock_trylock(r), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(r), REDLOCK_OK);
    }
    long calls = tu_alloc.calls;
    tu_alloc_stop();
    ck_assert_int_eq(calls, 0);
    redlock_free(s);
    redlock_free(r);
    redlock_client_free(c);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("semaphore");
    TCase *t = tcase_create("one node");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_checked_fixture(t, flush, NULL);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_semaphore_basics);
    tcase_add_test(t, test_semaphore_leases);
    tcase_add_test(t, test_semaphore_wakes_one);
    tcase_add_test(t, test_semaphore_fair_order);
    tcase_add_test(t, test_rw_basics);
    tcase_add_test(t, test_writer_preference);
    tcase_add_test(t, test_semaphore_stress);
    tcase_add_test(t, test_writer_not_starved);
    tcase_add_test(t, test_wrong_wall_clock);
    tcase_add_test(t, test_functions_mode);
    tcase_add_test(t, test_no_alloc_per_cycle);
    tcase_add_test(t, test_quorum);
    suite_add_tcase(su, t);
    SRunner *r = srunner_create(su);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
