/* testutil.c - the helpers in testutil.h. */
#define _GNU_SOURCE /* clock_gettime, CLOCK_REALTIME under -std=c11 */
#include "testutil.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

redlock_client *tu_client_opts(const char *const *urls, size_t n, const redlock_options *o)
{
    redlock_client *c = NULL;
    redlock_options mine;
    if (o)
        mine = *o;
    else
        redlock_options_init(&mine);
    /* The fixture's servers are seconds old: the default restart guard (on
     * for a quorum) would make every quorum test wait out one TTL first.
     * The guard's own tests ask for it (restart_guard = 1). */
    if (mine.restart_guard == -1)
        mine.restart_guard = 0;
    int rc = redlock_client_new(&c, urls, n, &mine);
    ck_assert_msg(rc == REDLOCK_OK, "client_new(%s%s): %s", n > 0 ? urls[0] : "",
                  n > 1 ? ", ..." : "", redlock_last_errstr());
    return c;
}

redlock_client *tu_client_urls(const char *const *urls, size_t n, int io_ms)
{
    redlock_options o;
    redlock_options_init(&o);
    if (io_ms > 0) {
        o.io_timeout_ms = io_ms;
        o.connect_timeout_ms = io_ms;
    }
    return tu_client_opts(urls, n, &o);
}

redlock_client *tu_client(const char *url, int io_ms)
{
    return tu_client_urls((const char *[]){url}, 1, io_ms);
}

int tu_seeded(uint64_t f)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    uint64_t ten_min = 600ull * 1000000;
    return f + ten_min > now && f < now + ten_min;
}

redlock *tu_lock(redlock_client *c, const char *name, const char *value, uint32_t ttl_ms)
{
    redlock *l = NULL;
    ck_assert_int_eq(redlock_new(&l, c, name, value, ttl_ms), REDLOCK_OK);
    return l;
}

const char *tu_get(fx_server *s, const char *key)
{
    static char out[512];
    const char *argv[2] = {"GET", key};
    const size_t lens[2] = {3, strlen(key)};
    ck_assert_int_eq(fx_cmdv(s, out, sizeof out, 2, argv, lens), 0);
    return out;
}

tu_allocs tu_alloc;

static int count(size_t n)
{
    tu_alloc.calls++;
    if (n > tu_alloc.biggest)
        tu_alloc.biggest = n;
    return tu_alloc.calls != tu_alloc.fail_at;
}

static void *count_malloc(size_t n)
{
    return count(n) ? malloc(n) : NULL;
}

static void *count_realloc(void *p, size_t n)
{
    return count(n) ? realloc(p, n) : NULL;
}

void tu_alloc_start(long fail_at)
{
    memset(&tu_alloc, 0, sizeof tu_alloc);
    tu_alloc.fail_at = fail_at;
    redlock_set_allocator(count_malloc, count_realloc, free);
}

void tu_alloc_stop(void)
{
    redlock_set_allocator(NULL, NULL, NULL);
}

long tu_cmd_calls(fx_server *s, const char *cmd)
{
    static char info[16384];
    char key[64];
    ck_assert_int_eq(fx_cmd(s, info, sizeof info, "INFO commandstats"), 0);
    snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(info, key);
    return p ? strtol(p + strlen(key), NULL, 10) : 0;
}

void tu_turn(redlock_client *c, int max_ms)
{
    struct pollfd fds[64];
    int n = redlock_client_pollfds(c, fds, 64);
    ck_assert_int_le(n, 64);
    int t = redlock_client_timeout_ms(c);
    ck_assert_int_ge(poll(fds, (nfds_t)n, t >= 0 && t < max_ms ? t : max_ms), 0);
    redlock_client_process(c, fds, n);
}

void tu_turn_until_sockets(redlock_client *c, int n)
{
    for (int i = 0; i < 1000 && redlock_client_pollfds(c, NULL, 0) < n; i++)
        tu_turn(c, 100);
    ck_assert_int_eq(redlock_client_pollfds(c, NULL, 0), n);
}

int tu_turn_until_result(redlock_client *c, redlock *l)
{
    for (int i = 0; i < 1000 && redlock_result(l) == REDLOCK_IN_PROGRESS; i++)
        tu_turn(c, 100);
    return redlock_result(l);
}

void tu_record(const redlock_event *ev, void *arg)
{
    tu_events *e = arg;
    if (e->n < TU_EVENTS) {
        tu_event *t = &e->at[e->n];
        t->type = ev->type;
        t->status = ev->status;
        t->node_index = ev->node_index;
        t->listener = ev->listener;
        t->value = ev->value;
        snprintf(t->what, sizeof t->what, "%s", ev->what);
        snprintf(t->node, sizeof t->node, "%s", ev->node);
        snprintf(t->name, sizeof t->name, "%s", ev->name ? ev->name : "");
        snprintf(t->detail, sizeof t->detail, "%s", ev->detail);
    }
    e->n++;
}

int tu_events_count(const tu_events *e, int type)
{
    int k = 0;
    for (int i = 0; i < e->n && i < TU_EVENTS; i++)
        k += e->at[i].type == type;
    return k;
}

const tu_event *tu_events_find(const tu_events *e, int type)
{
    for (int i = 0; i < e->n && i < TU_EVENTS; i++)
        if (e->at[i].type == type)
            return &e->at[i];
    return NULL;
}
