/* observe.h - what the command shows of the library's observability: the
 * events and timing line of `redlock run -v`, and `redlock stats`. */
#ifndef REDLOCK_CLI_OBSERVE_H
#define REDLOCK_CLI_OBSERVE_H

#include "redlock.h"

#include <stdint.h>
#include <stdio.h>

/* When the steps of `run` happened (us, CLOCK_MONOTONIC; 0: not yet). */
typedef struct run_timing {
    int64_t start, connected, acquired, release, released;
} run_timing;

int64_t cli_now_us(void);

/* The -v hook: each event as a line on stderr; the first connection made
 * is noted in arg (a run_timing). */
void cli_event_hook(const redlock_event *ev, void *arg);

/* "redlock: timing: connect ..., wait ..., hold ..., release ..." on stderr. */
void cli_timing_line(const run_timing *t);

/* The probe `redlock stats` made: its lock name and status. */
typedef struct stats_probe {
    const char *name;
    int status;
} stats_probe;

/* s as text (or JSON) on f. */
void cli_print_stats(FILE *f, const redlock_stats *s, const stats_probe *p, int json);

#endif
