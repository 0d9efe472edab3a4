/* Log what happens to a client's connections, nodes and leases: an event
 * hook that writes one line per event, timed from the start. It takes a
 * lock with keepalive on for a while (kill or restart the server meanwhile
 * to see the connection go, come back or fail, and the lease lost), then
 * releases it. The hook only logs: it must not call back into the library.
 * Run: ./events [redis-url] [seconds] */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "redlock.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double start;

static void log_event(const redlock_event *ev, void *arg)
{
    FILE *log = arg;
    fprintf(log, "[%9.3f ms] %-14s", now_ms() - start, ev->what);
    if (ev->node[0])
        fprintf(log, " node=%s%s", ev->node, ev->listener ? " (listener)" : "");
    if (ev->name)
        fprintf(log, " lock=%s", ev->name);
    if (ev->status != REDLOCK_OK)
        fprintf(log, " status=\"%s\"", redlock_strerror(ev->status));
    fprintf(log, ": %s\n", ev->detail);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("REDLOCK_URL");
    const char *urls[1] = {url ? url : "redis://127.0.0.1:6379"};
    double seconds = argc > 2 ? atof(argv[2]) : 1.0;
    redlock_client *client;
    redlock *lock;
    start = now_ms();
    if (redlock_client_new(&client, urls, 1, NULL) != REDLOCK_OK) {
        fprintf(stderr, "client: %s\n", redlock_last_errstr());
        return 1;
    }
    redlock_client_on_event(client, log_event, stdout);
    if (redlock_new(&lock, client, "events-demo", NULL, 1500) != REDLOCK_OK ||
        redlock_trylock(lock) != REDLOCK_OK) {
        fprintf(stderr, "lock: %s\n", redlock_client_errstr(client));
        return 1;
    }
    printf("[%9.3f ms] held events-demo; keepalive for %.1f s\n", now_ms() - start, seconds);
    redlock_keepalive(lock, 1);
    int lost = 0;
    while (!lost && now_ms() - start < seconds * 1e3) {
        struct pollfd fds[4];
        int n = redlock_client_pollfds(client, fds, 4);
        int t = redlock_client_timeout_ms(client);
        poll(fds, (nfds_t)(n < 4 ? n : 4), t < 0 || t > 100 ? 100 : t);
        redlock_client_process(client, fds, n < 4 ? n : 4);
        lost = redlock_client_done(client) == lock; /* the lease was lost */
    }
    int rc = lost ? REDLOCK_NOT_HELD : redlock_unlock(lock);
    redlock_stats s;
    redlock_client_stats(client, &s, sizeof s);
    printf("[%9.3f ms] %s; %llu keepalive refreshes, %llu connects\n", now_ms() - start,
           lost ? "lost the lease" : rc == REDLOCK_OK ? "released" : redlock_strerror(rc),
           (unsigned long long)s.op[REDLOCK_STAT_KEEPALIVE].successes,
           (unsigned long long)s.node[0].connects);
    redlock_free(lock);
    redlock_client_free(client);
    return rc == REDLOCK_OK ? 0 : 1;
}
