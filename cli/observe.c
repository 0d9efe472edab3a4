/* observe.c - the command's view of redlock_client_stats and the event
 * hook: `redlock run -v` prints each event and a timing line on stderr,
 * `redlock stats` prints a client's counters as text or JSON. */
#define _POSIX_C_SOURCE 200809L
#include "observe.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

int64_t cli_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cli_event_hook(const redlock_event *ev, void *arg)
{
    run_timing *t = arg;
    if (ev->type == REDLOCK_EVENT_CONNECTED && t && !t->connected)
        t->connected = cli_now_us();
    fprintf(stderr, "redlock: event %s", ev->what);
    if (ev->node[0])
        fprintf(stderr, " node=%s%s", ev->node, ev->listener ? " (listener)" : "");
    if (ev->name)
        fprintf(stderr, " lock=%.*s", (int)(ev->namelen > 64 ? 64 : ev->namelen), ev->name);
    if (ev->status != REDLOCK_OK)
        fprintf(stderr, " status=%s", redlock_strerror(ev->status));
    fprintf(stderr, ": %s\n", ev->detail);
}

/* b - a in ms, as text ("-" when either is unknown). */
static const char *span(char *buf, size_t n, int64_t a, int64_t b)
{
    if (!a || !b)
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.3f ms", (double)(b - a) / 1000.0);
    return buf;
}

void cli_timing_line(const run_timing *t)
{
    char c[32], w[32], h[32], r[32];
    fprintf(stderr, "redlock: timing: connect %s, wait %s, hold %s, release %s\n",
            span(c, sizeof c, t->start, t->connected), span(w, sizeof w, t->start, t->acquired),
            span(h, sizeof h, t->acquired, t->release), span(r, sizeof r, t->release, t->released));
}

/* ---- redlock stats -------------------------------------------------------------------- */

static const char *const kind_names[REDLOCK_STAT_KINDS] = {"acquire", "wait", "release",
                                                           "refresh", "keepalive"};

/* The errors a node counts, by the statuses they can have. */
static const struct {
    int status;
    const char *name;
} error_kinds[] = {
    {REDLOCK_ERR_TIMEOUT, "timeout"}, {REDLOCK_ERR_IO, "io"},
    {REDLOCK_ERR_PROTOCOL, "protocol"}, {REDLOCK_ERR_SERVER, "server"},
    {REDLOCK_ERR_AUTH, "auth"},       {REDLOCK_ERR_ARG, "arg"},
    {REDLOCK_ERR_NOMEM, "nomem"},     {REDLOCK_ERR_TLS, "tls"},
};
#define N_ERROR_KINDS (sizeof error_kinds / sizeof error_kinds[0])

static const struct {
    const char *name;
    size_t at;
} hists[] = {
    {"acquire_wait", offsetof(redlock_stats, acquire_wait)},
    {"round_trip", offsetof(redlock_stats, round_trip)},
    {"hold", offsetof(redlock_stats, hold)},
};

static const redlock_histogram *hist_of(const redlock_stats *s, size_t k)
{
    return (const redlock_histogram *)((const char *)s + hists[k].at);
}

static uint64_t error_total(const redlock_node_stats *n)
{
    uint64_t e = 0;
    for (int k = 0; k < REDLOCK_STATS_STATUSES; k++)
        e += n->errors[k];
    return e;
}

/* A string for JSON: quotes, backslashes and control bytes escaped. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_node(FILE *f, const redlock_node_stats *n)
{
    fprintf(f, "    {\"node\": ");
    json_str(f, n->node);
    fprintf(f, ", \"requests\": %" PRIu64 ", \"errors\": {", n->requests);
    for (size_t k = 0; k < N_ERROR_KINDS; k++)
        fprintf(f, "%s\"%s\": %" PRIu64, k ? ", " : "", error_kinds[k].name,
                n->errors[error_kinds[k].status]);
    fprintf(f, "}, \"connects\": %" PRIu64 ", \"reconnects\": %" PRIu64
               ", \"disconnects\": %" PRIu64 ", \"connect_failures\": %" PRIu64
               ", \"moved\": %" PRIu64 ", \"ask\": %" PRIu64 ", \"slot_maps\": %" PRIu64
               ", \"script_loads\": %" PRIu64 ", \"function_loads\": %" PRIu64
               ", \"guard_young\": %" PRIu64 ", \"guard_off\": %" PRIu64
               ", \"failovers\": %" PRIu64 ", \"rtt_us\": %" PRId64 "}",
            n->connects, n->reconnects, n->disconnects, n->connect_failures, n->moved, n->ask,
            n->slot_maps, n->script_loads, n->function_loads, n->guard_young, n->guard_off,
            n->failovers, n->rtt_us);
}

static void print_json(FILE *f, const redlock_stats *s, const stats_probe *p)
{
    fprintf(f, "{\n  \"uptime_ms\": %" PRIu64 ",\n  \"probe\": {\"name\": ", s->uptime_ms);
    json_str(f, p->name);
    fprintf(f, ", \"status\": %d, \"result\": ", p->status);
    json_str(f, redlock_strerror(p->status));
    fprintf(f, "},\n  \"operations\": {\n");
    for (int k = 0; k < REDLOCK_STAT_KINDS; k++) {
        const redlock_op_stats *o = &s->op[k];
        fprintf(f, "    \"%s\": {\"attempts\": %" PRIu64 ", \"successes\": %" PRIu64
                   ", \"contended\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"timeouts\": %" PRIu64
                   ", \"errors\": %" PRIu64 ", \"cancelled\": %" PRIu64 "}%s\n",
                kind_names[k], o->attempts, o->successes, o->contended, o->lost, o->timeouts,
                o->errors, o->cancelled, k + 1 < REDLOCK_STAT_KINDS ? "," : "");
    }
    fprintf(f, "  },\n  \"leases_lost\": %" PRIu64 ",\n  \"latency_us\": {\n", s->leases_lost);
    for (size_t k = 0; k < sizeof hists / sizeof hists[0]; k++) {
        const redlock_histogram *h = hist_of(s, k);
        fprintf(f, "    \"%s\": {\"count\": %" PRIu64 ", \"sum\": %" PRIu64 ", \"max\": %" PRIu64
                   ", \"p50\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64 "}%s\n",
                hists[k].name, h->count, h->sum_us, h->max_us, redlock_stats_quantile(h, 0.5),
                redlock_stats_quantile(h, 0.99), redlock_stats_quantile(h, 0.999),
                k + 1 < sizeof hists / sizeof hists[0] ? "," : "");
    }
    fprintf(f, "  },\n  \"events\": {");
    for (int t = 1, first = 1; t < REDLOCK_EVENT_TYPES; t++)
        if (strcmp(redlock_event_name(t), "unknown") != 0) {
            fprintf(f, "%s\"%s\": %" PRIu64, first ? "" : ", ", redlock_event_name(t),
                    s->events[t]);
            first = 0;
        }
    fprintf(f, "},\n  \"nodes\": [\n");
    for (uint32_t i = 0; i < s->nodes && i < REDLOCK_STATS_NODES; i++) {
        json_node(f, &s->node[i]);
        fprintf(f, "%s\n", i + 1 < s->nodes ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
}

static void text_node(FILE *f, const redlock_node_stats *n)
{
    fprintf(f, "node %s: requests %" PRIu64 ", errors %" PRIu64, n->node, n->requests,
            error_total(n));
    for (size_t k = 0, shown = 0; k < N_ERROR_KINDS; k++)
        if (n->errors[error_kinds[k].status])
            fprintf(f, "%s%s %" PRIu64, shown++ ? ", " : " (", error_kinds[k].name,
                    n->errors[error_kinds[k].status]);
    fprintf(f, "%s, round trip ", error_total(n) ? ")" : "");
    if (n->rtt_us < 0)
        fprintf(f, "-\n");
    else
        fprintf(f, "%.3f ms\n", (double)n->rtt_us / 1000.0);
    fprintf(f, "  connects %" PRIu64 " (reconnects %" PRIu64 "), disconnects %" PRIu64
               ", connect failures %" PRIu64 "\n",
            n->connects, n->reconnects, n->disconnects, n->connect_failures);
    fprintf(f, "  redirects: moved %" PRIu64 ", ask %" PRIu64 "; slot map changes %" PRIu64
               "; failovers %" PRIu64 "\n",
            n->moved, n->ask, n->slot_maps, n->failovers);
    fprintf(f, "  scripts loaded %" PRIu64 ", function loads %" PRIu64
               "; restart guard: young %" PRIu64 ", off %" PRIu64 "\n",
            n->script_loads, n->function_loads, n->guard_young, n->guard_off);
}

static void print_text(FILE *f, const redlock_stats *s, const stats_probe *p)
{
    fprintf(f, "client: %" PRIu32 " node%s, up %" PRIu64 " ms; probe '%s': %s\n", s->nodes,
            s->nodes == 1 ? "" : "s", s->uptime_ms, p->name, redlock_strerror(p->status));
    fprintf(f, "%-10s %9s %9s %9s %6s %8s %6s %9s\n", "operation", "attempts", "successes",
            "contended", "lost", "timeouts", "errors", "cancelled");
    for (int k = 0; k < REDLOCK_STAT_KINDS; k++) {
        const redlock_op_stats *o = &s->op[k];
        fprintf(f, "%-10s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %6" PRIu64 " %8" PRIu64
                   " %6" PRIu64 " %9" PRIu64 "\n",
                kind_names[k], o->attempts, o->successes, o->contended, o->lost, o->timeouts,
                o->errors, o->cancelled);
    }
    fprintf(f, "leases lost: %" PRIu64 "\n", s->leases_lost);
    fprintf(f, "%-13s %7s %10s %10s %10s %10s\n", "latency (ms)", "count", "p50", "p99", "p999",
            "max");
    for (size_t k = 0; k < sizeof hists / sizeof hists[0]; k++) {
        const redlock_histogram *h = hist_of(s, k);
        fprintf(f, "%-13s %7" PRIu64 " %10.3f %10.3f %10.3f %10.3f\n", hists[k].name, h->count,
                (double)redlock_stats_quantile(h, 0.5) / 1000.0,
                (double)redlock_stats_quantile(h, 0.99) / 1000.0,
                (double)redlock_stats_quantile(h, 0.999) / 1000.0, (double)h->max_us / 1000.0);
    }
    for (uint32_t i = 0; i < s->nodes && i < REDLOCK_STATS_NODES; i++)
        text_node(f, &s->node[i]);
    fprintf(f, "events:");
    int any = 0;
    for (int t = 1; t < REDLOCK_EVENT_TYPES; t++)
        if (s->events[t]) {
            fprintf(f, "%s %s %" PRIu64, any ? "," : "", redlock_event_name(t), s->events[t]);
            any = 1;
        }
    fprintf(f, "%s\n", any ? "" : " none");
}

void cli_print_stats(FILE *f, const redlock_stats *s, const stats_probe *p, int json)
{
    if (json)
        print_json(f, s, p);
    else
        print_text(f, s, p);
}
