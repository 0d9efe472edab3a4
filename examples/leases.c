/* Many leases from one thread, in a plain poll() loop: take N locks at
 * once, keep them alive while the loop does other work, then release
 * them. Nothing blocks: the loop sleeps only in poll().
 * Run: ./leases [redis-url] [N] [seconds] */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "redlock.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_FDS 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One turn of the loop: the client's sockets (plus, in a real program,
 * your own), a timeout no longer than the client allows, then process. */
static void loop_once(redlock_client *client, int max_ms)
{
    struct pollfd fds[MAX_FDS];
    int n = redlock_client_pollfds(client, fds, MAX_FDS);
    if (n > MAX_FDS)
        n = MAX_FDS; /* a real program would grow its array */
    int timeout = redlock_client_timeout_ms(client);
    if (timeout < 0 || timeout > max_ms)
        timeout = max_ms;
    poll(fds, (nfds_t)n, timeout);
    redlock_client_process(client, fds, n);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("REDLOCK_URL");
    const char *urls[1] = {url ? url : "redis://127.0.0.1:6379"};
    int n = argc > 2 ? atoi(argv[2]) : 100;
    double hold = argc > 3 ? atof(argv[3]) : 3;
    redlock_client *client;
    if (n < 1 || n > 100000 || redlock_client_new(&client, urls, 1, NULL) != REDLOCK_OK) {
        fprintf(stderr, "usage: leases [redis-url] [N] [seconds]: %s\n", redlock_last_errstr());
        return 1;
    }
    redlock **locks = calloc((size_t)n, sizeof *locks);
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "job:%d", i);
        /* a 2 s TTL, kept alive while we hold it */
        if (!locks || redlock_new(&locks[i], client, name, NULL, 2000) != REDLOCK_OK ||
            redlock_start_lock(locks[i], 5000) != REDLOCK_OK) {
            fprintf(stderr, "lock %d: %s\n", i, redlock_client_errstr(client));
            return 1;
        }
    }

    int held = 0, lost = 0, failed = 0;
    double t0 = now_s();
    while (held + failed < n && now_s() - t0 < 10) {
        loop_once(client, 100);
        for (redlock *l; (l = redlock_client_done(client)) != NULL;) {
            if (redlock_result(l) == REDLOCK_OK) {
                held++;
                redlock_keepalive(l, 1);
            } else {
                failed++;
                fprintf(stderr, "not taken: %s\n", redlock_errstr(l));
            }
        }
    }
    printf("holding %d of %d leases\n", held, n);

    /* the rest of the program runs here; the same loop keeps the leases */
    t0 = now_s();
    while (now_s() - t0 < hold) {
        loop_once(client, 100);
        for (redlock *l; (l = redlock_client_done(client)) != NULL;) {
            lost++; /* redlock_result(l) == REDLOCK_NOT_HELD: stop using it */
            fprintf(stderr, "lease lost: %s\n", redlock_errstr(l));
        }
    }

    int released = 0, pending = 0;
    for (int i = 0; i < n; i++)
        if (redlock_validity_ms(locks[i]) > 0 && redlock_start_unlock(locks[i]) == REDLOCK_OK)
            pending++;
    t0 = now_s();
    while (released < pending && now_s() - t0 < 10) {
        loop_once(client, 100);
        for (redlock *l; (l = redlock_client_done(client)) != NULL;)
            released += redlock_result(l) == REDLOCK_OK;
    }
    printf("held %d leases for %.1f s, lost %d, released %d\n", held, hold, lost, released);
    for (int i = 0; i < n; i++)
        redlock_free(locks[i]);
    free(locks);
    redlock_client_free(client);
    return held == n && lost == 0 && released == n ? 0 : 1;
}
