/* fx_cluster.h - a real local Redis Cluster for the tests.
 *
 * Every node is an fx_server (fixture.h) started with cluster-enabled, a
 * short node timeout (FX_CLUSTER_NODE_TIMEOUT_MS) and no persistence, on
 * loopback, in its own temp dir. Nodes are numbered 0..n-1 in start order;
 * 0..primaries-1 start as primaries, but roles move (failover): ask
 * fx_cluster_is_primary. Everything here talks through fx_cmd and
 * redis-cli, never through the library under test.
 *
 * Functions that change the cluster wait, bounded in time and in tries,
 * until it has settled: every running node answers, reports cluster_state:ok
 * with all 16384 slots assigned and ok, knows every node, and all of them
 * agree on the roles, replica links and slot owners (CLUSTER NODES, without
 * migration markers); every running replica's link to its primary is up.
 * They return 0 (or the index they promise), or -1 with a message on stderr.
 * A paused node counts as running: resume it before waiting (each question
 * to it would take fx_cmd's 5 s I/O bound to fail).
 *
 * Limits: at most FX_CLUSTER_MAX_NODES nodes; key names with a newline
 * cannot be migrated (CLUSTER GETKEYSINSLOT is read as text); a cluster of
 * one or two primaries has no majority without them, so it cannot fail over
 * after a crash (fx_cluster_failover still works: the primary takes part).
 */
#ifndef FX_CLUSTER_H
#define FX_CLUSTER_H

#include "fixture.h"

#include <stddef.h>

#define FX_CLUSTER_MAX_NODES 16
#define FX_CLUSTER_SLOTS 16384
#define FX_CLUSTER_NODE_TIMEOUT_MS 1000
#define FX_CLUSTER_WAIT_MS 20000 /* the bound of every wait below */

typedef struct fx_cluster {
    int n;                                /* nodes started                      */
    fx_server node[FX_CLUSTER_MAX_NODES]; /* pid 0: stopped or killed           */
    char id[FX_CLUSTER_MAX_NODES][41];    /* CLUSTER MYID of each node          */
    int lost_slot[FX_CLUSTER_MAX_NODES];  /* a slot node i served when killed, or -1 */
    char seed[64];                        /* fx_cluster_seed_url's result       */
} fx_cluster;

/* Start primaries * (1 + replicas_per_primary) nodes and join them: with
 * redis-cli --cluster create for 3 or more primaries, by hand (ADDSLOTSRANGE,
 * MEET, REPLICATE) for 1 or 2. Slots are split evenly over the primaries.
 * Waits until the cluster has settled. 0, or -1 with a message on stderr and
 * everything started already stopped. */
int fx_cluster_start(fx_cluster *cl, int primaries, int replicas_per_primary);
/* The same with every node started from base's options (e.g. fx_tls_opts,
 * which then needs tls_plain: the fixture talks plain TCP; the cluster bus
 * and replication then run over TLS, and a TLS client's CLUSTER SLOTS names
 * the TLS ports). base's extra_args are replaced. */
int fx_cluster_start_opts(fx_cluster *cl, int primaries, int replicas_per_primary,
                          const fx_opts *base);
/* Stop every node still running (by PID) and remove every temp dir. Safe
 * twice, and after a failed start. */
void fx_cluster_stop(fx_cluster *cl);

/* Number of nodes, running or not. */
int fx_cluster_size(const fx_cluster *cl);
/* The server of node i (for fx_cmd, pause, its port and url); NULL if i is
 * out of range. */
fx_server *fx_cluster_node(fx_cluster *cl, int i);
/* 1 if node i says (ROLE) it is a primary, 0 if a replica, -1 if it does
 * not answer. */
int fx_cluster_is_primary(fx_cluster *cl, int i);
/* The node a replica i replicates (ROLE), -1 if i is a primary or does not
 * answer. */
int fx_cluster_primary_of(fx_cluster *cl, int i);
/* A running replica of node i, or -1 if it has none. */
int fx_cluster_replica_of(fx_cluster *cl, int i);
/* "redis://127.0.0.1:PORT?cluster=1" for the first running node; the
 * string lives in cl until the next call. "" if no node runs. */
const char *fx_cluster_seed_url(fx_cluster *cl);
/* "redis://127.0.0.1:PORT" of node i ("" if i is out of range). */
const char *fx_cluster_node_url(const fx_cluster *cl, int i);

/* The key's hash slot as a running node computes it (CLUSTER KEYSLOT), or -1. */
int fx_cluster_keyslot(fx_cluster *cl, const char *key, size_t keylen);
/* The node index of the primary serving slot, as the first running node
 * sees it (CLUSTER SHARDS), or -1 (unassigned, unknown node, no answer). */
int fx_cluster_slot_owner(fx_cluster *cl, int slot);
/* The same, as node i sees it. */
int fx_cluster_slot_owner_seen_by(fx_cluster *cl, int i, int slot);
/* Wait up to timeout_ms until the cluster has settled (see above). */
int fx_cluster_wait_ok(fx_cluster *cl, int timeout_ms);

/* Slot migration to primary `target`, in steps so a test can act between
 * them (e.g. provoke -ASK while a slot is half moved):
 * begin:  SETSLOT IMPORTING on target, then MIGRATING on the owner;
 * keys:   move up to max_keys keys (max_keys <= 0: all) of the slot from the
 *         owner to target with MIGRATE ... KEYS, returns how many moved;
 * finish: SETSLOT NODE target on target, the old owner, then every other
 *         running primary, and wait until every node sees target own slot.
 *         Fails while the old owner still holds keys of the slot.
 * slot:   all three. */
int fx_cluster_migrate_begin(fx_cluster *cl, int slot, int target);
int fx_cluster_migrate_keys(fx_cluster *cl, int slot, int target, int max_keys);
int fx_cluster_migrate_finish(fx_cluster *cl, int slot, int target);
int fx_cluster_migrate_slot(fx_cluster *cl, int slot, int target);

/* CLUSTER FAILOVER on replica i (asked again if Redis dropped it after its
 * 5 s limit); waits until i is a primary, its old primary a replica, and
 * the cluster has settled. */
int fx_cluster_failover(fx_cluster *cl, int replica);
/* SIGKILL node i (a crash); its temp dir stays for fx_cluster_restart.
 * Remembers a slot it served, for fx_cluster_wait_promoted. 0 or -1. */
int fx_cluster_kill(fx_cluster *cl, int i);
/* After fx_cluster_kill of a primary that served slots: wait until a
 * running node serves them and the cluster has settled. Returns that
 * node's index, or -1. Needs a majority of primaries still running. */
int fx_cluster_wait_promoted(fx_cluster *cl, int dead, int timeout_ms);
/* Start a stopped or killed node i again with its nodes.conf (same id,
 * port and bus port, no data) and wait until the cluster has settled; an
 * old primary whose slots moved comes back as a replica. */
int fx_cluster_restart(fx_cluster *cl, int i);
/* SIGSTOP / SIGCONT node i (fx_server_pause / fx_server_resume). A pause
 * longer than the node timeout makes the others fail it over. */
void fx_cluster_pause(fx_cluster *cl, int i);
void fx_cluster_resume(fx_cluster *cl, int i);

#endif
