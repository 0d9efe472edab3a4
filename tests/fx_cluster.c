/* fx_cluster.c - a local Redis Cluster made of fx_server nodes, driven with
 * fx_cmd and redis-cli only. */
#define _GNU_SOURCE
#include "fx_cluster.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_MS 100
#define CLI_WAIT_MS 30000
#define MIGRATE_BATCH 100
#define MIGRATE_TIMEOUT "2000"
#define MAX_RANGES 1024
#define MANUAL_FAILOVER_MS 6000 /* Redis drops a manual failover after 5 s */

#define STR2(x) #x
#define STR(x) STR2(x)

/* Every node: the short node timeout; a full sync starts at once (the
 * default waits 5 s for more replicas) and a replica loads it from the
 * socket, so no RDB file appears (a restart comes back empty). */
static const char *const node_args[] = {"--cluster-node-timeout",
                                        STR(FX_CLUSTER_NODE_TIMEOUT_MS),
                                        "--repl-diskless-sync-delay",
                                        "0",
                                        "--repl-diskless-load",
                                        "on-empty-db",
                                        NULL};
/* The same, for nodes with TLS: the cluster bus over TLS too, so that the
 * nodes announce their TLS ports (a plain client is still told the plain
 * ones). */
static const char *const node_args_tls[] = {"--cluster-node-timeout",
                                            STR(FX_CLUSTER_NODE_TIMEOUT_MS),
                                            "--repl-diskless-sync-delay",
                                            "0",
                                            "--repl-diskless-load",
                                            "on-empty-db",
                                            "--tls-cluster",
                                            "yes",
                                            "--tls-replication",
                                            "yes",
                                            NULL};

typedef struct range {
    int lo, hi, port;
} range;

/* A condition to wait for: 1 true, 0 not yet (why says what is missing). */
typedef int (*cond_fn)(fx_cluster *cl, void *arg, char *why, size_t cap);

/* ---- talking to nodes --------------------------------------------------------- */

static int running(const fx_cluster *cl, int i)
{
    return i >= 0 && i < cl->n && cl->node[i].pid > 0;
}

static int index_of_port(const fx_cluster *cl, int port)
{
    for (int i = 0; port > 0 && i < cl->n; i++)
        if (cl->node[i].port == port)
            return i;
    return -1;
}

__attribute__((format(printf, 5, 6))) static int cmdf(fx_cluster *cl, int i, char *out,
                                                      size_t cap, const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    out[0] = '\0';
    return running(cl, i) ? fx_cmd(&cl->node[i], out, cap, cmd) : -1;
}

/* The command must answer +OK; otherwise say what it answered. */
__attribute__((format(printf, 3, 4))) static int expect_ok(fx_cluster *cl, int i,
                                                           const char *fmt, ...)
{
    char cmd[512], out[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (cmdf(cl, i, out, sizeof out, "%s", cmd) == 0 && strcmp(out, "OK") == 0)
        return 0;
    fprintf(stderr, "fx_cluster: node %d: %s: %s\n", i, cmd, out[0] ? out : "(no answer)");
    return -1;
}

__attribute__((format(printf, 3, 4))) static int because(char *why, size_t cap, const char *fmt,
                                                         ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return 0;
}

/* "name:value" of an INFO-style text, into val. 0, or -1 if absent. */
static int info_get(const char *text, const char *name, char *val, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            size_t k = strcspn(p + n + 1, "\r\n");
            k = k < cap ? k : cap - 1;
            memcpy(val, p + n + 1, k);
            val[k] = '\0';
            return 0;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return -1;
}

static long info_num(const char *text, const char *name)
{
    char v[32];
    return info_get(text, name, v, sizeof v) == 0 ? strtol(v, NULL, 10) : -1;
}

/* ROLE: 1 primary, 0 replica (primary's port and link state filled), -1. */
static int role(fx_cluster *cl, int i, int *primary_port, int *linked)
{
    char out[4096], host[64], state[32];
    int port = 0;
    if (cmdf(cl, i, out, sizeof out, "ROLE") != 0)
        return -1;
    if (strncmp(out, "master\n", 7) == 0)
        return 1;
    if (sscanf(out, "slave\n%63[^\n]\n%d\n%31[^\n]", host, &port, state) != 3)
        return -1;
    if (primary_port)
        *primary_port = port;
    if (linked)
        *linked = strcmp(state, "connected") == 0;
    return 0;
}

/* ---- the cluster's own view ---------------------------------------------------- */

/* Node i's CLUSTER SHARDS, read as the text fx_cmd makes of it: a shard is
 * "slots" and its range bounds, then "nodes" and key/value pairs per node,
 * each node starting with "id". Fills r with the ranges and the port of
 * the primary serving them; returns how many, or -1. */
typedef struct shard_parse {
    range *r;
    int cap, nr, first; /* ranges so far; the first of the current shard */
    int in_slots, lo;
    int port, is_master, master_port; /* the node being read; the shard's primary */
} shard_parse;

static void end_node(shard_parse *p)
{
    if (p->is_master && p->port > 0)
        p->master_port = p->port;
    p->port = -1;
    p->is_master = 0;
}

static void end_shard(shard_parse *p)
{
    end_node(p);
    for (int k = p->first; k < p->nr; k++)
        p->r[k].port = p->master_port;
    p->first = p->nr;
    p->master_port = -1;
}

static int slot_bound(shard_parse *p, const char *t)
{
    if (!*t) /* an empty "slots" array leaves an empty line */
        return 0;
    int v = atoi(t);
    if (p->lo < 0) {
        p->lo = v;
        return 0;
    }
    if (p->nr == p->cap)
        return -1;
    p->r[p->nr++] = (range){p->lo, v, -1};
    p->lo = -1;
    return 0;
}

static char *next_token(char **s)
{
    char *t = *s, *nl = t ? strchr(t, '\n') : NULL;
    if (nl)
        *nl = '\0';
    *s = nl ? nl + 1 : NULL;
    return t;
}

static int shard_ranges(fx_cluster *cl, int i, range *r, int cap)
{
    static char out[65536];
    shard_parse p = {r, cap, 0, 0, 0, -1, -1, 0, -1};
    if (cmdf(cl, i, out, sizeof out, "CLUSTER SHARDS") != 0 || out[0] == '-')
        return -1;
    for (char *s = out, *t; s && (t = next_token(&s)) != NULL;) {
        if (strcmp(t, "slots") == 0) {
            end_shard(&p);
            p.in_slots = 1;
            p.lo = -1;
        } else if (strcmp(t, "nodes") == 0) {
            p.in_slots = 0;
        } else if (p.in_slots) {
            if (slot_bound(&p, t) != 0)
                return -1;
        } else {
            const char *v = s ? next_token(&s) : "";
            if (strcmp(t, "id") == 0)
                end_node(&p);
            else if (strcmp(t, "port") == 0)
                p.port = atoi(v);
            else if (strcmp(t, "role") == 0)
                p.is_master = strcmp(v, "master") == 0;
        }
    }
    end_shard(&p);
    return p.nr;
}

int fx_cluster_slot_owner_seen_by(fx_cluster *cl, int i, int slot)
{
    static range r[MAX_RANGES];
    int nr = shard_ranges(cl, i, r, MAX_RANGES);
    for (int k = 0; k < nr; k++)
        if (slot >= r[k].lo && slot <= r[k].hi)
            return index_of_port(cl, r[k].port);
    return -1;
}

int fx_cluster_slot_owner(fx_cluster *cl, int slot)
{
    for (int i = 0; i < cl->n; i++)
        if (running(cl, i))
            return fx_cluster_slot_owner_seen_by(cl, i, slot);
    return -1;
}

/* A slot node i serves, as it says itself, or -1. */
static int a_slot_of(fx_cluster *cl, int i)
{
    static range r[MAX_RANGES];
    int nr = shard_ranges(cl, i, r, MAX_RANGES);
    for (int k = 0; k < nr; k++)
        if (r[k].port == cl->node[i].port)
            return r[k].lo;
    return -1;
}

/* One CLUSTER NODES line with what every node must agree on: id, flags
 * (without "myself"), primary, slots (without [migration] markers). */
static void canonical_line(char *line, char *sig, size_t cap, size_t *o)
{
    int f = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save), f++) {
        if (f == 1 || (f >= 4 && f <= 7) || (f >= 8 && w[0] == '['))
            continue;
        if (f == 2 && strncmp(w, "myself,", 7) == 0)
            w += 7;
        int n = snprintf(sig + *o, cap - *o, "%s ", w);
        *o = n > 0 && *o + (size_t)n < cap ? *o + (size_t)n : *o;
    }
    if (*o + 1 < cap)
        sig[(*o)++] = '\n';
    sig[*o] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Node i's view of the cluster as a string comparable across nodes. */
static int view_of(fx_cluster *cl, int i, char *sig, size_t cap)
{
    static char out[32768];
    char *lines[FX_CLUSTER_MAX_NODES + 1];
    int nl = 0;
    size_t o = 0;
    if (cmdf(cl, i, out, sizeof out, "CLUSTER NODES") != 0 || out[0] == '-')
        return -1;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (nl == FX_CLUSTER_MAX_NODES + 1)
            return -1;
        lines[nl++] = l;
    }
    qsort(lines, (size_t)nl, sizeof lines[0], cmp_str); /* by node id */
    sig[0] = '\0';
    for (int k = 0; k < nl; k++)
        canonical_line(lines[k], sig, cap, &o);
    return 0;
}

static int node_settled(fx_cluster *cl, int i, char *why, size_t cap)
{
    char out[4096], state[32] = "";
    int linked = 1;
    if (cmdf(cl, i, out, sizeof out, "CLUSTER INFO") != 0)
        return because(why, cap, "node %d does not answer", i);
    info_get(out, "cluster_state", state, sizeof state);
    long assigned = info_num(out, "cluster_slots_assigned");
    long ok = info_num(out, "cluster_slots_ok");
    long known = info_num(out, "cluster_known_nodes");
    if (strcmp(state, "ok") != 0 || assigned != FX_CLUSTER_SLOTS || ok != FX_CLUSTER_SLOTS ||
        known != cl->n)
        return because(why, cap, "node %d: state %s, %ld slots assigned, %ld ok, knows %ld of %d",
                       i, state, assigned, ok, known, cl->n);
    if (role(cl, i, NULL, &linked) < 0)
        return because(why, cap, "node %d: no ROLE", i);
    if (!linked)
        return because(why, cap, "node %d: replica link to its primary is down", i);
    return 1;
}

static int settled(fx_cluster *cl, void *arg, char *why, size_t cap)
{
    static char first[32768], sig[32768];
    int have = -1;
    (void)arg;
    for (int i = 0; i < cl->n; i++) {
        if (!running(cl, i))
            continue;
        if (!node_settled(cl, i, why, cap))
            return 0;
        if (view_of(cl, i, have < 0 ? first : sig, sizeof sig) != 0)
            return because(why, cap, "node %d: no CLUSTER NODES", i);
        if (have >= 0 && strcmp(first, sig) != 0)
            return because(why, cap, "nodes %d and %d disagree:\n%s---\n%s", have, i, first, sig);
        if (have < 0)
            have = i;
    }
    return have >= 0 ? 1 : because(why, cap, "no node runs");
}

static int wait_for(fx_cluster *cl, cond_fn cond, void *arg, int timeout_ms, const char *what)
{
    char why[4096] = "";
    double until = fx_now_ms() + timeout_ms;
    for (int i = 0; i < timeout_ms / POLL_MS + 2; i++) {
        if (cond(cl, arg, why, sizeof why))
            return 0;
        if (fx_now_ms() >= until)
            break;
        fx_sleep_ms(POLL_MS);
    }
    fprintf(stderr, "fx_cluster: %s: not done after %d ms: %s\n", what, timeout_ms, why);
    return -1;
}

int fx_cluster_wait_ok(fx_cluster *cl, int timeout_ms)
{
    return wait_for(cl, settled, NULL, timeout_ms, "wait for the cluster");
}

/* ---- forming the cluster ----------------------------------------------------- */

static int read_id(fx_cluster *cl, int i)
{
    char out[128];
    if (cmdf(cl, i, out, sizeof out, "CLUSTER MYID") != 0 || strlen(out) != 40) {
        fprintf(stderr, "fx_cluster: node %d: CLUSTER MYID: %s\n", i, out);
        return -1;
    }
    memcpy(cl->id[i], out, 41);
    return 0;
}

static int create_with_cli(fx_cluster *cl, int replicas)
{
    static char out[16384];
    char addr[FX_CLUSTER_MAX_NODES][32], nrep[16];
    const char *argv[FX_CLUSTER_MAX_NODES + 8];
    int a = 0;
    argv[a++] = "redis-cli";
    argv[a++] = "--cluster";
    argv[a++] = "create";
    for (int i = 0; i < cl->n; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", cl->node[i].port);
        argv[a++] = addr[i];
    }
    snprintf(nrep, sizeof nrep, "%d", replicas);
    argv[a++] = "--cluster-replicas";
    argv[a++] = nrep;
    argv[a++] = "--cluster-yes";
    argv[a] = NULL;
    int rc = fx_run(out, sizeof out, CLI_WAIT_MS, argv);
    if (rc != 0)
        fprintf(stderr, "fx_cluster: redis-cli --cluster create: exit %d\n%s\n", rc, out);
    return rc == 0 ? 0 : -1;
}

static int knows_all(fx_cluster *cl, void *arg, char *why, size_t cap)
{
    char out[4096];
    (void)arg;
    for (int i = 0; i < cl->n; i++) {
        if (cmdf(cl, i, out, sizeof out, "CLUSTER INFO") != 0)
            return because(why, cap, "node %d does not answer", i);
        if (info_num(out, "cluster_known_nodes") != cl->n)
            return because(why, cap, "node %d knows %ld of %d nodes", i,
                           info_num(out, "cluster_known_nodes"), cl->n);
    }
    return 1;
}

/* CLUSTER REPLICATE answers an error until the replica has learned of the
 * primary through the handshake; knows_all waited for that, but retry a
 * little anyway. */
static int replicate(fx_cluster *cl, int r, int p)
{
    char out[256];
    for (int k = 0; k < 50; k++) {
        if (cmdf(cl, r, out, sizeof out, "CLUSTER REPLICATE %s", cl->id[p]) == 0 &&
            strcmp(out, "OK") == 0)
            return 0;
        fx_sleep_ms(POLL_MS);
    }
    fprintf(stderr, "fx_cluster: node %d: CLUSTER REPLICATE %s: %s\n", r, cl->id[p], out);
    return -1;
}

/* redis-cli refuses fewer than 3 primaries: assign slots, set distinct
 * config epochs (as redis-cli does), meet, then attach the replicas. */
static int create_by_hand(fx_cluster *cl, int primaries, int replicas)
{
    for (int i = 0; i < cl->n; i++)
        if (expect_ok(cl, i, "CLUSTER SET-CONFIG-EPOCH %d", i + 1) != 0)
            return -1;
    for (int p = 0; p < primaries; p++) {
        int lo = p * FX_CLUSTER_SLOTS / primaries;
        int hi = (p + 1) * FX_CLUSTER_SLOTS / primaries - 1;
        if (expect_ok(cl, p, "CLUSTER ADDSLOTSRANGE %d %d", lo, hi) != 0)
            return -1;
    }
    for (int i = 1; i < cl->n; i++)
        if (expect_ok(cl, 0, "CLUSTER MEET 127.0.0.1 %d %d", cl->node[i].port,
                      cl->node[i].bus_port) != 0)
            return -1;
    if (wait_for(cl, knows_all, NULL, FX_CLUSTER_WAIT_MS, "cluster meet") != 0)
        return -1;
    for (int p = 0; p < primaries; p++)
        for (int k = 0; k < replicas; k++)
            if (replicate(cl, primaries + p * replicas + k, p) != 0)
                return -1;
    return 0;
}

/* The tail of a node's log, for a start that failed. */
static void show_log(const fx_server *s)
{
    char path[400], buf[2048];
    snprintf(path, sizeof path, "%s/redis.log", s->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fseek(f, -(long)(sizeof buf - 1), SEEK_END) != 0)
        rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "fx_cluster: end of %s:\n%s\n", path, buf);
}

int fx_cluster_start(fx_cluster *cl, int primaries, int replicas_per_primary)
{
    return fx_cluster_start_opts(cl, primaries, replicas_per_primary, NULL);
}

int fx_cluster_start_opts(fx_cluster *cl, int primaries, int replicas_per_primary,
                          const fx_opts *base)
{
    int n = primaries * (1 + replicas_per_primary);
    fx_opts o;
    memset(cl, 0, sizeof *cl);
    memset(&o, 0, sizeof o);
    if (base) {
        o = *base;
        if (o.tls_cert && !o.tls_plain) {
            fprintf(stderr, "fx_cluster: TLS nodes need tls_plain (the fixture speaks plain)\n");
            return -1;
        }
    }
    o.cluster = 1;
    o.extra_args = o.tls_cert ? node_args_tls : node_args;
    for (int i = 0; i < FX_CLUSTER_MAX_NODES; i++)
        cl->lost_slot[i] = -1;
    if (primaries < 1 || replicas_per_primary < 0 || n > FX_CLUSTER_MAX_NODES) {
        fprintf(stderr, "fx_cluster: %d primaries with %d replicas each: out of range\n",
                primaries, replicas_per_primary);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        cl->n = i + 1; /* so that stop cleans up this one too */
        if (fx_server_start(&cl->node[i], &o) != 0 || read_id(cl, i) != 0)
            goto fail;
    }
    if ((primaries >= 3 ? create_with_cli(cl, replicas_per_primary)
                        : create_by_hand(cl, primaries, replicas_per_primary)) != 0 ||
        fx_cluster_wait_ok(cl, FX_CLUSTER_WAIT_MS) != 0)
        goto fail;
    return 0;
fail:
    for (int i = 0; i < cl->n; i++)
        if (cl->node[i].dir[0] && cl->node[i].pid <= 0)
            show_log(&cl->node[i]);
    fx_cluster_stop(cl);
    return -1;
}

void fx_cluster_stop(fx_cluster *cl)
{
    for (int i = 0; i < cl->n; i++)
        fx_server_stop(&cl->node[i]);
}

/* ---- accessors ----------------------------------------------------------------------- */

int fx_cluster_size(const fx_cluster *cl)
{
    return cl->n;
}

fx_server *fx_cluster_node(fx_cluster *cl, int i)
{
    return i >= 0 && i < cl->n ? &cl->node[i] : NULL;
}

int fx_cluster_is_primary(fx_cluster *cl, int i)
{
    return role(cl, i, NULL, NULL);
}

int fx_cluster_primary_of(fx_cluster *cl, int i)
{
    int port = 0;
    return role(cl, i, &port, NULL) == 0 ? index_of_port(cl, port) : -1;
}

int fx_cluster_replica_of(fx_cluster *cl, int i)
{
    for (int j = 0; j < cl->n; j++)
        if (j != i && running(cl, j) && fx_cluster_primary_of(cl, j) == i)
            return j;
    return -1;
}

const char *fx_cluster_seed_url(fx_cluster *cl)
{
    cl->seed[0] = '\0';
    for (int i = 0; i < cl->n; i++)
        if (running(cl, i)) {
            snprintf(cl->seed, sizeof cl->seed, "redis://127.0.0.1:%d?cluster=1", cl->node[i].port);
            break;
        }
    return cl->seed;
}

const char *fx_cluster_node_url(const fx_cluster *cl, int i)
{
    return i >= 0 && i < cl->n ? cl->node[i].url : "";
}

int fx_cluster_keyslot(fx_cluster *cl, const char *key, size_t keylen)
{
    const char *argv[] = {"CLUSTER", "KEYSLOT", key};
    size_t lens[] = {7, 7, keylen};
    char out[64];
    for (int i = 0; i < cl->n; i++)
        if (running(cl, i) && fx_cmdv(&cl->node[i], out, sizeof out, 3, argv, lens) == 0 &&
            out[0] != '-')
            return atoi(out);
    return -1;
}

/* ---- slot migration ---------------------------------------------------------------- */

/* The slot's owner, checked to be a running primary other than target. */
static int source_for(fx_cluster *cl, int slot, int target)
{
    int src = slot >= 0 && slot < FX_CLUSTER_SLOTS ? fx_cluster_slot_owner(cl, slot) : -1;
    if (src < 0 || src == target || !running(cl, target) ||
        fx_cluster_is_primary(cl, target) != 1) {
        fprintf(stderr, "fx_cluster: cannot move slot %d (owner %d) to node %d\n", slot, src,
                target);
        return -1;
    }
    return src;
}

int fx_cluster_migrate_begin(fx_cluster *cl, int slot, int target)
{
    int src = source_for(cl, slot, target);
    if (src < 0 || expect_ok(cl, target, "CLUSTER SETSLOT %d IMPORTING %s", slot, cl->id[src]) != 0)
        return -1;
    return expect_ok(cl, src, "CLUSTER SETSLOT %d MIGRATING %s", slot, cl->id[target]);
}

/* MIGRATE the keys listed one a line in keys; how many, or -1. */
static int migrate_batch(fx_cluster *cl, int src, int target, char *keys)
{
    const char *argv[MIGRATE_BATCH + 8];
    size_t lens[MIGRATE_BATCH + 8];
    char port[16], out[512];
    int a = 0;
    snprintf(port, sizeof port, "%d", cl->node[target].port);
    const char *head[] = {"MIGRATE", "127.0.0.1", port, "", "0", MIGRATE_TIMEOUT, "KEYS"};
    for (size_t k = 0; k < sizeof head / sizeof head[0]; k++, a++) {
        argv[a] = head[k];
        lens[a] = strlen(head[k]);
    }
    for (char *s = keys, *t; s && a < MIGRATE_BATCH + 7 && (t = next_token(&s)) != NULL; a++) {
        argv[a] = t;
        lens[a] = strlen(t);
    }
    if (fx_cmdv(&cl->node[src], out, sizeof out, a, argv, lens) != 0 ||
        (strcmp(out, "OK") != 0 && strcmp(out, "NOKEY") != 0)) {
        fprintf(stderr, "fx_cluster: node %d: MIGRATE to node %d: %s\n", src, target, out);
        return -1;
    }
    return strcmp(out, "OK") == 0 ? a - 7 : 0;
}

int fx_cluster_migrate_keys(fx_cluster *cl, int slot, int target, int max_keys)
{
    static char keys[65536];
    int src = source_for(cl, slot, target), moved = 0;
    for (int round = 0; src >= 0 && round < 100000 && (max_keys <= 0 || moved < max_keys);
         round++) {
        int want = max_keys > 0 && max_keys - moved < MIGRATE_BATCH ? max_keys - moved
                                                                    : MIGRATE_BATCH;
        if (cmdf(cl, src, keys, sizeof keys, "CLUSTER GETKEYSINSLOT %d %d", slot, want) != 0 ||
            keys[0] == '-') {
            fprintf(stderr, "fx_cluster: node %d: GETKEYSINSLOT %d: %s\n", src, slot, keys);
            return -1;
        }
        if (!keys[0])
            return moved;
        int n = migrate_batch(cl, src, target, keys);
        if (n < 0)
            return -1;
        moved += n;
    }
    return src >= 0 ? moved : -1;
}

typedef struct owned {
    int slot, node;
} owned;

static int owned_everywhere(fx_cluster *cl, void *arg, char *why, size_t cap)
{
    const owned *w = arg;
    for (int i = 0; i < cl->n; i++) {
        if (!running(cl, i))
            continue;
        int o = fx_cluster_slot_owner_seen_by(cl, i, w->slot);
        if (o != w->node)
            return because(why, cap, "node %d sees slot %d at node %d", i, w->slot, o);
    }
    return settled(cl, NULL, why, cap);
}

int fx_cluster_migrate_finish(fx_cluster *cl, int slot, int target)
{
    char out[64];
    int src = source_for(cl, slot, target);
    if (src < 0 || cmdf(cl, src, out, sizeof out, "CLUSTER COUNTKEYSINSLOT %d", slot) != 0)
        return -1;
    if (strcmp(out, "0") != 0) {
        fprintf(stderr, "fx_cluster: node %d still holds %s keys of slot %d\n", src, out, slot);
        return -1;
    }
    /* target first, so that it owns the slot before the source lets go */
    if (expect_ok(cl, target, "CLUSTER SETSLOT %d NODE %s", slot, cl->id[target]) != 0 ||
        expect_ok(cl, src, "CLUSTER SETSLOT %d NODE %s", slot, cl->id[target]) != 0)
        return -1;
    for (int i = 0; i < cl->n; i++)
        if (i != src && i != target && fx_cluster_is_primary(cl, i) == 1 &&
            expect_ok(cl, i, "CLUSTER SETSLOT %d NODE %s", slot, cl->id[target]) != 0)
            return -1;
    owned w = {slot, target};
    return wait_for(cl, owned_everywhere, &w, FX_CLUSTER_WAIT_MS, "migration");
}

int fx_cluster_migrate_slot(fx_cluster *cl, int slot, int target)
{
    if (fx_cluster_migrate_begin(cl, slot, target) != 0 ||
        fx_cluster_migrate_keys(cl, slot, target, 0) < 0)
        return -1;
    return fx_cluster_migrate_finish(cl, slot, target);
}

/* ---- failover, crashes, pauses ------------------------------------------------------ */

typedef struct swap {
    int replica, primary;
    double again_at; /* ask again then: a manual failover gives up after 5 s */
} swap;

static int swapped(fx_cluster *cl, void *arg, char *why, size_t cap)
{
    swap *s = arg;
    if (fx_cluster_is_primary(cl, s->replica) != 1) {
        if (fx_now_ms() >= s->again_at) {
            s->again_at = fx_now_ms() + MANUAL_FAILOVER_MS;
            expect_ok(cl, s->replica, "CLUSTER FAILOVER");
        }
        return because(why, cap, "node %d is not a primary yet", s->replica);
    }
    if (fx_cluster_primary_of(cl, s->primary) != s->replica)
        return because(why, cap, "node %d does not replicate node %d yet", s->primary, s->replica);
    return settled(cl, NULL, why, cap);
}

int fx_cluster_failover(fx_cluster *cl, int replica)
{
    swap s = {replica, fx_cluster_primary_of(cl, replica), fx_now_ms() + MANUAL_FAILOVER_MS};
    if (s.primary < 0) {
        fprintf(stderr, "fx_cluster: node %d is not a replica of a known node\n", replica);
        return -1;
    }
    if (expect_ok(cl, replica, "CLUSTER FAILOVER") != 0)
        return -1;
    return wait_for(cl, swapped, &s, FX_CLUSTER_WAIT_MS, "failover");
}

int fx_cluster_kill(fx_cluster *cl, int i)
{
    if (!running(cl, i)) {
        fprintf(stderr, "fx_cluster: node %d is not running\n", i);
        return -1;
    }
    cl->lost_slot[i] = fx_cluster_is_primary(cl, i) == 1 ? a_slot_of(cl, i) : -1;
    fx_server_kill(&cl->node[i]);
    return 0;
}

typedef struct promotion {
    int dead, slot, winner;
} promotion;

static int promoted(fx_cluster *cl, void *arg, char *why, size_t cap)
{
    promotion *p = arg;
    p->winner = fx_cluster_slot_owner(cl, p->slot);
    if (p->winner < 0 || p->winner == p->dead || !running(cl, p->winner))
        return because(why, cap, "slot %d is still at node %d", p->slot, p->winner);
    return settled(cl, NULL, why, cap);
}

int fx_cluster_wait_promoted(fx_cluster *cl, int dead, int timeout_ms)
{
    promotion p = {dead, dead >= 0 && dead < cl->n ? cl->lost_slot[dead] : -1, -1};
    if (p.slot < 0) {
        fprintf(stderr, "fx_cluster: node %d served no slots when it was killed\n", dead);
        return -1;
    }
    return wait_for(cl, promoted, &p, timeout_ms, "promotion") == 0 ? p.winner : -1;
}

int fx_cluster_restart(fx_cluster *cl, int i)
{
    if (i < 0 || i >= cl->n || !cl->node[i].dir[0]) {
        fprintf(stderr, "fx_cluster: node %d was stopped for good\n", i);
        return -1;
    }
    if (fx_server_restart(&cl->node[i]) != 0) {
        fprintf(stderr, "fx_cluster: node %d did not restart\n", i);
        return -1;
    }
    return fx_cluster_wait_ok(cl, FX_CLUSTER_WAIT_MS);
}

void fx_cluster_pause(fx_cluster *cl, int i)
{
    if (i >= 0 && i < cl->n)
        fx_server_pause(&cl->node[i]);
}

void fx_cluster_resume(fx_cluster *cl, int i)
{
    if (i >= 0 && i < cl->n)
        fx_server_resume(&cl->node[i]);
}
