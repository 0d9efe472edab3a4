/* torture.h - the fault harness and its checker (docs/safety-torture.md).
 *
 * A scenario runs holder processes against real redis-server processes
 * while it injects faults: partitions, one-way partitions, delays and
 * resets through fx_proxy relays (one link per holder and node, so a
 * partition can cut one holder off), SIGSTOP of a holder or a server,
 * SIGKILL and restart of a server without persistence, a primary failover
 * in a cluster, and a holder whose wall clock jumps (libfaketime).
 *
 * Holders are separate processes (fork + exec of the running binary with
 * TT_HOLDER_ARG first) that use only the public API. Each grant's holder
 * writes to a fenced resource: a hash on a separate redis-server, changed
 * by a script that accepts a write only if its token is greater than the
 * last accepted one (or equal and from the same grant). Holders log every
 * operation, grant and write with CLOCK_MONOTONIC times (system-wide on
 * Linux, so the processes' times compare); the checker reads the logs.
 *
 * Every process started here is stopped by PID before the run returns,
 * also when it fails; every loop is bounded in count and time; only
 * loopback addresses are used.
 */
#ifndef TORTURE_H
#define TORTURE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* argv[1] of a holder process; main() hands such a call to tt_holder_main. */
#define TT_HOLDER_ARG "--torture-holder"

enum { TT_ONE = 0, TT_QUORUM = 1, TT_CLUSTER = 2, TT_TOPOLOGIES = 3 };

typedef struct tt_config {
    double seconds;   /* time for every scenario together (setup not counted) */
    uint64_t seed;    /* one seed replays the same fault schedule           */
    const char *only; /* run only scenarios whose name contains this; NULL: all */
    int verbose;      /* log each fault to stderr                              */
} tt_config;

typedef struct tt_result {
    char name[40];
    const char *what;       /* one line: the fault                              */
    int leases_suffice;     /* 1: overlapping intervals must be 0 here          */
    int needs_fix;          /* 1: depends on issue 25's library changes          */
    int skipped;            /* 1: not run; note says why                        */
    char note[160];         /* a failure to set up, or a remark                 */
    double seconds;         /* how long holders ran                             */
    long faults;            /* faults injected                                  */
    long grants;            /* successful acquisitions                          */
    long overlaps;          /* pairs of grants whose believed intervals overlap  */
    long lease_overlaps;    /* pairs whose leases (as the library promised) overlap */
    long writes;            /* writes sent to the fenced resource              */
    long stale_rejected;    /* stale writes (see below) the resource refused    */
    long stale_accepted;    /* stale writes it accepted: must be 0             */
    long fresh_rejected;    /* writes of the newest grant refused (a token that went back) */
    long token_regressions; /* grants whose token was below an earlier grant's (or equal,
                               another owner's): tokens that went back            */
    long ops;               /* lock/unlock/refresh calls judged for deadlines     */
    long timed_out;         /* of which failed by their deadline                  */
    double worst_late_ms;   /* max over them of return - deadline (< 0: all early) */
    char worst_op[64];      /* that operation: "lock 612 ms, ERR_TIMEOUT"          */
    double clock_jump_s;    /* widest wall-clock offset a holder saw (faketime)  */
} tt_result;

/* An operation's deadline is what redlock.h promises: redlock_lock returns
 * within wait_ms + connect_timeout_ms + io_timeout_ms (the last try starts
 * before the wait runs out and may have to open a connection), unlock and
 * refresh within connect_timeout_ms + io_timeout_ms. Operations during
 * which their holder was stopped (SIGSTOP) are not judged.
 *
 * A write is stale when, before it was sent, a grant that began later than
 * its own had completed a write: the lock had moved on and the resource
 * knew it. Stale writes must be rejected. A believed interval runs from the
 * moment a lock call returned OK to the end of that grant's last write. */

/* Number of scenarios on a topology, and their names. */
int tt_scenarios(int topology);
const char *tt_scenario_name(int topology, int i);
const char *tt_topology_name(int topology);

/* Run every scenario of one topology (those matching cfg->only), each for
 * share_s seconds, into out[0..cap). Starts and stops its own servers.
 * Returns how many results it wrote, or -1 if the topology did not start
 * (message on stderr). */
int tt_run_topology(int topology, const tt_config *cfg, double share_s, tt_result *out, int cap);

/* Whether r meets what it must: stale_accepted == 0 (needs_fix scenarios
 * only with strict), overlaps == 0 where leases suffice (the same), and
 * worst_late_ms <= late_bound_ms. 0, or -1 with the reason in why. */
int tt_judge(const tt_result *r, int strict, double late_bound_ms, char *why, size_t cap);

/* The table, one row per result. */
void tt_print_table(FILE *f, const tt_result *r, int n);

/* A holder process's main (argv as exec'd by the harness). Exit status 0. */
int tt_holder_main(int argc, char **argv);

/* The seed from TORTURE_SEED, else from the clock. */
uint64_t tt_seed_from_env(void);

#endif
