/* footprint.c - `make size`: the heap a client, a connection and a lock
 * handle hold, and the stack a blocking cycle needs, measured against a
 * real redis-server started here.
 *
 *   footprint [--allocs] [--cluster]
 *
 * --allocs lists every allocation's size; --cluster also measures a client
 * of a 3-primary Redis Cluster (started here: a few seconds more).
 *
 * Heap: redlock_set_allocator routes the library's allocations through a
 * counter that keeps each block's size in a header, so live bytes are
 * known at every step (the bytes asked for; malloc's own overhead, about
 * 8-16 bytes a block, is not counted).
 *
 * Stack: each measured call runs on a thread whose stack is a buffer of
 * ours, painted with a pattern before the thread starts; afterwards the
 * deepest byte that changed gives the high-water mark. The same thread
 * running an empty function gives the base (the C library's thread start,
 * its TLS and descriptor at the top of the buffer), which is subtracted.
 *
 * Prints markdown tables; nothing here is judged.
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "fx_cluster.h"
#include "net.h"
#include "redlock.h"

#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* ---- counting allocator -------------------------------------------------------- */

#define HDR (sizeof(max_align_t))

static size_t live, peak;
static long calls;
static int list_allocs;
static char log_buf[4096];
static size_t log_len;

static void note(size_t n)
{
    calls++;
    if (list_allocs && log_len < sizeof log_buf - 16)
        log_len += (size_t)snprintf(log_buf + log_len, sizeof log_buf - log_len, " %zu", n);
}

static void *count_alloc(size_t n)
{
    unsigned char *p = malloc(n + HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    live += n;
    peak = live > peak ? live : peak;
    note(n);
    return p + HDR;
}

static void count_free(void *q)
{
    if (!q)
        return;
    unsigned char *p = (unsigned char *)q - HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    live -= n;
    free(p);
}

static void *count_realloc(void *q, size_t n)
{
    if (!q)
        return count_alloc(n);
    unsigned char *p = (unsigned char *)q - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    unsigned char *np = realloc(p, n + HDR);
    if (!np)
        return NULL;
    memcpy(np, &n, sizeof n);
    live = live - old + n;
    peak = live > peak ? live : peak;
    note(n);
    return np + HDR;
}

/* ---- steps ---------------------------------------------------------------------------- */

typedef struct step {
    size_t live;
    long calls;
} step;

static step mark(void)
{
    log_len = 0;
    log_buf[0] = '\0';
    step s = {live, calls};
    return s;
}

static void row(const char *what, step before, const char *note_text)
{
    printf("| %-44s | %7zd | %5ld | %s%s%s\n", what, (ssize_t)(live - before.live),
           calls - before.calls, note_text, list_allocs && log_len ? " sizes:" : "",
           list_allocs ? log_buf : "");
}

static void die(const char *what, redlock_client *c)
{
    fprintf(stderr, "footprint: %s: %s\n", what, c ? redlock_client_errstr(c) : "failed");
    exit(1);
}

static redlock_client *client(const char *const *urls, size_t n)
{
    /* the servers were started a moment ago: no restart guard, or a
     * quorum would not count them until a lease has passed */
    redlock_options o;
    redlock_options_init(&o);
    o.restart_guard = 0;
    redlock_client *c = NULL;
    if (redlock_client_new(&c, urls, n, &o) != REDLOCK_OK)
        die("client", NULL);
    return c;
}

static redlock *lock(redlock_client *c, const char *name)
{
    redlock *l = NULL;
    if (redlock_new(&l, c, name, NULL, 10000) != REDLOCK_OK)
        die("lock", c);
    return l;
}

static void cycle(redlock_client *c, redlock *l)
{
    if (redlock_trylock(l) != REDLOCK_OK || redlock_unlock(l) != REDLOCK_OK)
        die("trylock/unlock", c);
}

/* ---- stack high-water -------------------------------------------------------------- */

#define STACK_BYTES (256 * 1024)
#define PAINT 0xA5

static unsigned char thread_stack[STACK_BYTES] __attribute__((aligned(4096)));

typedef struct job {
    void (*fn)(void *);
    void *arg;
} job;

static void *run_job(void *p)
{
    job *j = p;
    j->fn(j->arg);
    return NULL;
}

/* Bytes of thread_stack the job touched, counted from the top (stacks
 * grow down on every target here). */
static size_t stack_used(void (*fn)(void *), void *arg)
{
    memset(thread_stack, PAINT, sizeof thread_stack);
    pthread_attr_t a;
    pthread_t t;
    job j = {fn, arg};
    pthread_attr_init(&a);
    pthread_attr_setstack(&a, thread_stack, sizeof thread_stack);
    if (pthread_create(&t, &a, run_job, &j) != 0) {
        fprintf(stderr, "footprint: pthread_create failed\n");
        exit(1);
    }
    pthread_join(t, NULL);
    pthread_attr_destroy(&a);
    size_t i = 0;
    while (i < sizeof thread_stack && thread_stack[i] == PAINT)
        i++;
    return sizeof thread_stack - i;
}

static void nothing(void *arg)
{
    (void)arg;
}

typedef struct cyc {
    redlock_client *c;
    redlock *l;
    const char *const *urls;
    size_t n;
} cyc;

static void job_cycle(void *arg)
{
    cyc *x = arg;
    cycle(x->c, x->l);
}

/* A client and a lock made, connected, cycled and freed in the thread. */
static void job_whole(void *arg)
{
    cyc *x = arg;
    redlock_client *c = client(x->urls, x->n);
    redlock *l = lock(c, "footprint:whole");
    cycle(c, l);
    redlock_free(l);
    redlock_client_free(c);
}

/* ---- main ---------------------------------------------------------------------------- */

/* A client of a 3-primary cluster from one seed URL: the slot map, the
 * shards and a connection to each primary once locks have landed on all. */
static void cluster_rows(void)
{
    fx_cluster cl;
    if (fx_cluster_start(&cl, 3, 0) != 0)
        exit(1);
    const char *seed = fx_cluster_seed_url(&cl);
    step s = mark();
    redlock_client *c = client(&seed, 1);
    row("client, cluster URL (no connection yet)", s, "");
    redlock *l = lock(c, "footprint:c0");
    s = mark();
    cycle(c, l);
    row("first trylock+unlock: seed, slot map", s, "");
    s = mark();
    char name[32];
    for (int i = 1; i < 64; i++) { /* names over every shard */
        snprintf(name, sizeof name, "footprint:c%d", i);
        redlock *x = lock(c, name);
        cycle(c, x);
        redlock_free(x);
    }
    row("locks on every primary: the other shards", s, "");
    printf("| %-44s | %7zu | %5s | %s\n", "live: the cluster client, 1 handle", live, "", "");
    redlock_free(l);
    redlock_client_free(c);
    fx_cluster_stop(&cl);
}

int main(int argc, char **argv)
{
    int with_cluster = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--allocs") == 0)
            list_allocs = 1;
        else if (strcmp(argv[i], "--cluster") == 0)
            with_cluster = 1;
    }
    fx_server srv[3];
    for (int i = 0; i < 3; i++)
        if (fx_server_start(&srv[i], NULL) != 0)
            return 1;
    const char *urls[3] = {srv[0].url, srv[1].url, srv[2].url};
    redlock_set_allocator(count_alloc, count_realloc, count_free);

    printf("heap (bytes the library asked for; %zu-bit pointers)\n\n", sizeof(void *) * 8);
    printf("| %-44s | %7s | %5s | %s\n", "step", "bytes", "allocs", "note");
    printf("|%s|%s|%s|------\n", "----------------------------------------------", "---------",
           "-------");
    step s = mark();
    redlock_client *c = client(urls, 1);
    row("client, 1 URL (no connection yet)", s, "");
    s = mark();
    redlock *l = lock(c, "footprint:lock");
    row("lock handle, 14-byte name", s, "");
    s = mark();
    cycle(c, l);
    row("first trylock+unlock: the connection", s, "");
    s = mark();
    for (int i = 0; i < 1000; i++)
        cycle(c, l);
    row("1000 more trylock+unlock", s, "steady state allocates nothing");
    s = mark();
    redlock *l2 = lock(c, "footprint:lock2");
    row("another lock handle, 15-byte name", s, "");
    char longname[128];
    memset(longname, 'n', 114);
    longname[114] = '\0';
    s = mark();
    redlock *l3 = lock(c, longname);
    row("a lock handle, 114-byte name", s, "");
    /* a waiter: held elsewhere, redlock_lock waits on the release channel */
    redlock_client *other = client(urls, 1);
    redlock *holder = lock(other, "footprint:lock2");
    if (redlock_trylock(holder) != REDLOCK_OK)
        die("holder", other);
    s = mark();
    if (redlock_lock(l2, 50) != REDLOCK_NOT_ACQUIRED)
        die("wait", c);
    row("redlock_lock that waited: the listener", s, "");
    redlock_unlock(holder);
    redlock_free(holder);
    redlock_client_free(other);
    printf("| %-44s | %7zu | %5s | %s\n", "live: the client, 3 handles, 1 listener", live, "",
           "");
    redlock_free(l3);
    redlock_free(l2);
    redlock_free(l);
    redlock_client_free(c);
    if (live != 0)
        printf("footprint: %zu bytes still allocated after the frees\n", live);

    s = mark();
    c = client(urls, 3);
    row("client, quorum of 3 URLs", s, "");
    l = lock(c, "footprint:q");
    s = mark();
    cycle(c, l);
    row("first trylock+unlock: 3 connections", s, "");
    s = mark();
    for (int i = 0; i < 1000; i++)
        cycle(c, l);
    row("1000 more trylock+unlock (quorum)", s, "");

    if (with_cluster) {
        redlock_free(l);
        redlock_client_free(c);
        cluster_rows();
        c = client(urls, 3);
        l = lock(c, "footprint:q");
        cycle(c, l); /* connected again, for the stack rows */
    }

    printf("\nsizes of the internal types: net_url %zu, net_opts %zu, resp_parser %zu, "
           "resp_reply %zu, redlock_options %zu\n",
           sizeof(net_url), sizeof(net_opts), sizeof(resp_parser), sizeof(resp_reply),
           sizeof(redlock_options));

    /* stack */
    size_t base = stack_used(nothing, NULL);
    redlock_client *c1 = client(urls, 1);
    redlock *l1 = lock(c1, "footprint:stack");
    cyc one = {c1, l1, urls, 1}, q = {c, l, urls, 3};
    size_t first = stack_used(job_cycle, &one);
    size_t steady = stack_used(job_cycle, &one);
    size_t quorum = stack_used(job_cycle, &q);
    size_t whole = stack_used(job_whole, &one);
    printf("\nstack high-water (bytes above a bare thread's %zu)\n\n", base);
    printf("| %-58s | %6s |\n", "call", "bytes");
    printf("|%s|%s|\n", "------------------------------------------------------------",
           "--------");
    printf("| %-58s | %6zu |\n", "trylock+unlock, first (connect, getaddrinfo, handshake)",
           first - base);
    printf("| %-58s | %6zu |\n", "trylock+unlock, connected", steady - base);
    printf("| %-58s | %6zu |\n", "trylock+unlock, quorum of 3, connected", quorum - base);
    printf("| %-58s | %6zu |\n", "client_new + new + first cycle + free", whole - base);
    redlock_free(l1);
    redlock_client_free(c1);
    redlock_free(l);
    redlock_client_free(c);
    redlock_set_allocator(NULL, NULL, NULL);
    for (int i = 0; i < 3; i++)
        fx_server_stop(&srv[i]);
    return 0;
}
