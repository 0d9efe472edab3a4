/* A client's counters in the Prometheus text format: run some lock cycles
 * (and one try that finds the lock busy), then print every counter and
 * histogram of redlock_client_stats to stdout, as a /metrics handler or
 * node_exporter's textfile collector (./prometheus URL > redlock.prom)
 * would serve them. Run: ./prometheus [redis-url] [cycles] */
#include "redlock.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const kinds[REDLOCK_STAT_KINDS] = {"acquire", "wait", "release", "refresh",
                                                      "keepalive"};

static void counter(const char *name, const char *help)
{
    printf("# HELP %s %s\n# TYPE %s counter\n", name, help, name);
}

static void operations(const redlock_stats *s)
{
    counter("redlock_operations_total", "Lock operations that ended, by kind and outcome.");
    for (int k = 0; k < REDLOCK_STAT_KINDS; k++) {
        const redlock_op_stats *o = &s->op[k];
        const uint64_t n[6] = {o->successes, o->contended, o->lost,
                               o->timeouts,  o->errors,    o->cancelled};
        static const char *const outcome[6] = {"success", "contended", "lost",
                                               "timeout", "error",     "cancelled"};
        for (int j = 0; j < 6; j++)
            printf("redlock_operations_total{op=\"%s\",outcome=\"%s\"} %" PRIu64 "\n", kinds[k],
                   outcome[j], n[j]);
    }
    counter("redlock_leases_lost_total", "Leases keepalive found lost.");
    printf("redlock_leases_lost_total %" PRIu64 "\n", s->leases_lost);
}

/* A histogram with a bucket per power of two from 128 us to 134 s: every
 * fourth of the library's buckets (each a quarter of a power of two). */
static void histogram(const char *name, const char *help, const redlock_histogram *h)
{
    printf("# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t below = 0;
    for (unsigned i = 0; i < REDLOCK_STATS_BUCKETS; i++) {
        below += h->bucket[i];
        if (i % 4 == 3 && i >= 23 && i <= 103)
            printf("%s_bucket{le=\"%.6f\"} %" PRIu64 "\n", name,
                   (double)redlock_stats_bucket_max(i) / 1e6, below);
    }
    printf("%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
    printf("%s_sum %.6f\n%s_count %" PRIu64 "\n", name, (double)h->sum_us / 1e6, name, h->count);
}

static void nodes(const redlock_stats *s)
{
    counter("redlock_node_requests_total", "Lock requests sent to a node.");
    for (uint32_t i = 0; i < s->nodes; i++)
        printf("redlock_node_requests_total{node=\"%s\"} %" PRIu64 "\n", s->node[i].node,
               s->node[i].requests);
    counter("redlock_node_errors_total", "A node's part of an operation failed, by status.");
    for (uint32_t i = 0; i < s->nodes; i++)
        for (int st = 1; st < REDLOCK_STATS_STATUSES; st++)
            if (s->node[i].errors[st])
                printf("redlock_node_errors_total{node=\"%s\",status=\"%s\"} %" PRIu64 "\n",
                       s->node[i].node, redlock_strerror(st), s->node[i].errors[st]);
    counter("redlock_node_connects_total", "Connections that became ready.");
    for (uint32_t i = 0; i < s->nodes; i++)
        printf("redlock_node_connects_total{node=\"%s\"} %" PRIu64 "\n", s->node[i].node,
               s->node[i].connects);
    printf("# HELP redlock_node_rtt_seconds Round-trip estimate.\n"
           "# TYPE redlock_node_rtt_seconds gauge\n");
    for (uint32_t i = 0; i < s->nodes; i++)
        if (s->node[i].rtt_us >= 0)
            printf("redlock_node_rtt_seconds{node=\"%s\"} %.6f\n", s->node[i].node,
                   (double)s->node[i].rtt_us / 1e6);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("REDLOCK_URL");
    const char *urls[1] = {url ? url : "redis://127.0.0.1:6379"};
    int cycles = argc > 2 ? atoi(argv[2]) : 100;
    redlock_client *client;
    redlock *lock, *rival;
    if (redlock_client_new(&client, urls, 1, NULL) != REDLOCK_OK) {
        fprintf(stderr, "client: %s\n", redlock_last_errstr());
        return 1;
    }
    if (redlock_new(&lock, client, "prometheus-demo", NULL, 10000) != REDLOCK_OK ||
        redlock_new(&rival, client, "prometheus-demo", NULL, 10000) != REDLOCK_OK) {
        fprintf(stderr, "lock: %s\n", redlock_client_errstr(client));
        return 1;
    }
    int failed = 0;
    for (int k = 0; k < cycles; k++) {
        failed |= redlock_trylock(lock) != REDLOCK_OK;
        if (k == 0) /* held: another owner's try is contended */
            failed |= redlock_trylock(rival) != REDLOCK_NOT_ACQUIRED;
        failed |= redlock_unlock(lock) != REDLOCK_OK;
    }
    redlock_stats s;
    redlock_client_stats(client, &s, sizeof s);
    operations(&s);
    histogram("redlock_acquire_wait_seconds", "From an acquire call to the lock held.",
              &s.acquire_wait);
    histogram("redlock_round_trip_seconds", "Each round of requests to the nodes.", &s.round_trip);
    histogram("redlock_hold_seconds", "Each lease, from acquired to released or lost.", &s.hold);
    nodes(&s);
    counter("redlock_events_total", "Events, by type.");
    for (int t = 1; t < REDLOCK_EVENT_TYPES; t++)
        if (s.events[t])
            printf("redlock_events_total{type=\"%s\"} %" PRIu64 "\n", redlock_event_name(t),
                   s.events[t]);
    redlock_free(lock);
    redlock_free(rival);
    redlock_client_free(client);
    return failed;
}
