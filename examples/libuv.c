/* redlock-c on a libuv loop: a small adapter (uv_poll per socket, one
 * uv_timer for the client's deadlines) and a program that takes a lock,
 * keeps it alive while other timers run, and releases it. The library
 * knows nothing of libuv; the adapter is ~80 lines and can be copied.
 * Build: cc libuv.c -luv -lredlock   Run: ./libuv [redis-url] */
#define _GNU_SOURCE /* uv.h needs the POSIX thread types under -std=c11 */
#include "redlock.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

/* ---- the adapter ------------------------------------------------------------------ */

#define MAX_WATCH 64

typedef struct uv_redlock uv_redlock;

typedef struct watch {
    uv_poll_t handle; /* first: the handle's address is the watch's */
    int fd;
    short events;
    uv_redlock *a;
} watch;

struct uv_redlock {
    redlock_client *client;
    uv_loop_t *loop;
    uv_timer_t timer;
    watch *w[MAX_WATCH];
    int nw;
    uint64_t sockets;
    void (*on_done)(uv_redlock *a, redlock *l); /* yours: called from the loop, never by the library */
    void *data;
};

static void sync_watches(uv_redlock *a);

static void free_watch(uv_handle_t *h)
{
    free(h);
}

static void drop_watch(uv_redlock *a, int i)
{
    uv_poll_stop(&a->w[i]->handle);
    uv_close((uv_handle_t *)&a->w[i]->handle, free_watch);
    a->w[i] = a->w[--a->nw];
}

/* After every process call: hand out finished operations, then make libuv
 * watch exactly what the client wants now. */
static void after_process(uv_redlock *a)
{
    for (redlock *l; a->client && (l = redlock_client_done(a->client)) != NULL;)
        a->on_done(a, l);
    if (a->client) /* on_done may have detached */
        sync_watches(a);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    watch *w = (watch *)h;
    struct pollfd p = {w->fd, w->events, 0};
    if (status < 0)
        p.revents |= POLLERR;
    if (events & UV_READABLE)
        p.revents |= POLLIN;
    if (events & UV_WRITABLE)
        p.revents |= POLLOUT;
    if (events & UV_DISCONNECT)
        p.revents |= POLLHUP;
    uv_redlock *a = w->a;
    redlock_client_process(a->client, &p, 1);
    after_process(a);
}

static void on_timer(uv_timer_t *t)
{
    uv_redlock *a = t->data;
    redlock_client_process(a->client, NULL, 0);
    after_process(a);
}

static void sync_watches(uv_redlock *a)
{
    struct pollfd fds[MAX_WATCH];
    int n = redlock_client_pollfds(a->client, fds, MAX_WATCH);
    uint64_t sockets = redlock_client_sockets(a->client);
    if (sockets != a->sockets) { /* a descriptor number may now be another socket */
        while (a->nw > 0)
            drop_watch(a, 0);
        a->sockets = sockets;
    }
    for (int i = 0; i < a->nw;) { /* no longer wanted */
        int keep = 0;
        for (int j = 0; j < n && j < MAX_WATCH; j++)
            keep |= fds[j].fd == a->w[i]->fd;
        if (keep)
            i++;
        else
            drop_watch(a, i);
    }
    for (int j = 0; j < n && j < MAX_WATCH; j++) {
        watch *w = NULL;
        for (int i = 0; i < a->nw; i++)
            if (a->w[i]->fd == fds[j].fd)
                w = a->w[i];
        if (!w) {
            if (a->nw == MAX_WATCH || !(w = calloc(1, sizeof *w)))
                continue;
            w->fd = fds[j].fd;
            w->a = a;
            uv_poll_init(a->loop, &w->handle, w->fd);
            a->w[a->nw++] = w;
        }
        w->events = fds[j].events;
        uv_poll_start(&w->handle,
                      ((fds[j].events & POLLIN) ? UV_READABLE : 0) |
                          ((fds[j].events & POLLOUT) ? UV_WRITABLE : 0) | UV_DISCONNECT,
                      on_poll);
    }
    int t = redlock_client_timeout_ms(a->client);
    if (t < 0)
        uv_timer_stop(&a->timer);
    else
        uv_timer_start(&a->timer, on_timer, (uint64_t)t, 0);
}

static void uv_redlock_attach(uv_redlock *a, uv_loop_t *loop, redlock_client *client)
{
    a->loop = loop;
    a->client = client;
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    sync_watches(a);
}

/* Call after starting operations outside a callback of the adapter. */
static void uv_redlock_kick(uv_redlock *a)
{
    sync_watches(a);
}

static void uv_redlock_detach(uv_redlock *a)
{
    while (a->nw > 0)
        drop_watch(a, 0);
    uv_close((uv_handle_t *)&a->timer, NULL);
    a->client = NULL;
}

/* ---- a program on it ------------------------------------------------------------------ */

typedef struct app {
    redlock *lock;
    uv_timer_t work;
    int ticks, status;
} app;

static void work_tick(uv_timer_t *t)
{
    uv_redlock *a = t->data;
    app *p = a->data;
    /* the protected work; keepalive refreshes the lease meanwhile */
    printf("working (%lld ms of lease left)\n", (long long)redlock_validity_ms(p->lock));
    if (++p->ticks == 5) {
        uv_timer_stop(&p->work);
        redlock_start_unlock(p->lock);
        uv_redlock_kick(a);
    }
}

static void on_done(uv_redlock *a, redlock *l)
{
    app *p = a->data;
    int rc = redlock_result(l);
    if (p->ticks == 0 && rc == REDLOCK_OK) {
        printf("got the lock (fencing token %llu)\n", (unsigned long long)redlock_fence(l));
        redlock_keepalive(l, 1);
        uv_timer_start(&p->work, work_tick, 300, 300); /* 1.5 s of work, TTL 1 s */
        return;
    }
    if (p->ticks == 5 && rc == REDLOCK_OK) {
        printf("released\n");
        p->status = 0;
    } else {
        fprintf(stderr, "%s: %s\n", redlock_strerror(rc), redlock_errstr(l));
    }
    uv_timer_stop(&p->work);
    uv_close((uv_handle_t *)&p->work, NULL);
    uv_redlock_detach(a);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("REDLOCK_URL");
    const char *urls[1] = {url ? url : "redis://127.0.0.1:6379"};
    redlock_client *client;
    app p = {NULL, {0}, 0, 1};
    uv_redlock a = {0};

    if (redlock_client_new(&client, urls, 1, NULL) != REDLOCK_OK) {
        fprintf(stderr, "client: %s\n", redlock_last_errstr());
        return 1;
    }
    if (redlock_new(&p.lock, client, "my-uv-lock", NULL, 1000) != REDLOCK_OK ||
        redlock_start_lock(p.lock, 5000) != REDLOCK_OK) {
        fprintf(stderr, "lock: %s\n", redlock_client_errstr(client));
        return 1;
    }
    uv_loop_t *loop = uv_default_loop();
    a.on_done = on_done;
    a.data = &p;
    uv_timer_init(loop, &p.work);
    p.work.data = &a;
    uv_redlock_attach(&a, loop, client);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    redlock_free(p.lock);
    redlock_client_free(client);
    return p.status;
}
