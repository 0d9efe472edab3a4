/* fx_sentinel.h - real Redis Sentinel groups for the tests.
 *
 * One or two groups, each a master and one or two replicas (fx_server, on loopback,
 * no persistence, replica-read-only no: only a client's own ROLE check
 * keeps its writes off a replica), watched by three sentinels
 * (redis-server CONF --sentinel) on free loopback ports, each with its
 * config in its own temp dir. The sentinels watch every group under the
 * name fx->name[g], with a quorum of 2, FX_SENTINEL_DOWN_MS for
 * down-after-milliseconds and FX_SENTINEL_FAILOVER_MS for failover-timeout.
 * Everything here talks through fx_cmd (never the library under test),
 * and never runs ROLE on a group's servers: a test may count ROLE calls.
 *
 * Functions that wait are bounded by FX_SENTINEL_WAIT_MS (or the timeout
 * given) and return 0 (or the index they promise), or -1 with a message on
 * stderr. Processes are stopped by PID only: fx_sentinel_stop stops every
 * one started here, and is safe twice and after a failed start.
 */
#ifndef FX_SENTINEL_H
#define FX_SENTINEL_H

#include "fixture.h"
#include "fx_tls.h"

#include <stddef.h>

#define FX_SENTINELS 3
#define FX_SENTINEL_GROUPS 2
#define FX_SENTINEL_SERVERS 3 /* per group: a master and at most two replicas */
#define FX_SENTINEL_DOWN_MS 1000     /* a master silent this long is down       */
#define FX_SENTINEL_FAILOVER_MS 4000 /* and one failover may take this long      */
#define FX_SENTINEL_WAIT_MS 30000    /* the bound of every wait below             */

typedef struct fx_sentinel_opts {
    int groups;           /* groups to start: 1 or 2 (0: 1)                      */
    int replicas;         /* replicas per group: 1 or 2 (0: 1)                   */
    const char *password; /* requirepass on the sentinels (sentinel-pass between
                             them); NULL: none                                   */
    const fx_tls *tls;    /* set: TLS on every server and sentinel (a TLS port next
                             to the plain one, which the fixture uses), replication
                             and monitoring over TLS; tls_url names the sentinels'
                             TLS ports. tls must outlive the groups. NULL: none  */
} fx_sentinel_opts;

typedef struct fx_sentinel {
    int groups, nservers; /* groups, and servers in each (1 + replicas) */
    fx_server server[FX_SENTINEL_GROUPS][FX_SENTINEL_SERVERS]; /* [g][0] starts as g's master */
    fx_server sentinel[FX_SENTINELS];        /* pid 0: stopped or killed                       */
    char name[FX_SENTINEL_GROUPS][24];       /* the master name of group g: "fxgroupG"         */
    char url[FX_SENTINEL_GROUPS][256];       /* redis+sentinel://127.0.0.1:P1,...:P3/NAME      */
    char tls_url[FX_SENTINEL_GROUPS][640];   /* rediss+sentinel://...:TLS_P1,.../NAME?ca=FILE  */
    const fx_tls *tls;
    char password[64];
    /* what the servers were started with: their fx_opts point here */
    char port_arg[FX_SENTINEL_GROUPS][12];
    const char *args[FX_SENTINEL_GROUPS][FX_SENTINEL_SERVERS][12];
    fx_opts base; /* what each server starts with (TLS fields, with tls) */
} fx_sentinel;

/* Start the groups, then the sentinels, and wait until every sentinel
 * knows the two others and each group's replicas (linked, flags "slave"),
 * so that a failover can start at once. 0, or -1 with everything already
 * started stopped. */
int fx_sentinel_start(fx_sentinel *fx, const fx_sentinel_opts *o);
/* Stop every sentinel, then every server (by PID), and remove their dirs. */
void fx_sentinel_stop(fx_sentinel *fx);

/* Server k (0 .. nservers-1) of group g; NULL when out of range. */
fx_server *fx_sentinel_server(fx_sentinel *fx, int g, int k);
/* The index of g's server that every running sentinel names as master, if
 * it says so itself (INFO replication); -1 otherwise. */
int fx_sentinel_master(fx_sentinel *fx, int g);
/* Wait until server k of group g is its master (as fx_sentinel_master
 * says) and, if `replicas` is set, every other running server of g is its
 * linked replica. */
int fx_sentinel_wait_master(fx_sentinel *fx, int g, int k, int replicas, int timeout_ms);
/* The index of a running server of group g that is not its master now (a
 * replica), or -1. */
int fx_sentinel_replica(fx_sentinel *fx, int g);
/* SENTINEL FAILOVER of group g (asked again while a sentinel answers
 * NOGOODSLAVE or INPROG), then wait until every running sentinel names
 * another server and it says it is master. Returns its index, or -1. */
int fx_sentinel_failover(fx_sentinel *fx, int g);
/* fx_cmd on sentinel i (with its password). 0, or -1 (also when stopped). */
int fx_sentinel_cmd(fx_sentinel *fx, int i, char *out, size_t outlen, const char *cmd);

#endif
