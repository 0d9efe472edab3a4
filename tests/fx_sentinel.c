/* fx_sentinel.c - Redis Sentinel groups made of fx_server processes and
 * sentinels started here, driven with fx_cmd only. */
#define _GNU_SOURCE
#include "fx_sentinel.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define POLL_MS 50
#define UP_WAIT_MS 5000

#define STR2(x) #x
#define STR(x) STR2(x)

/* ---- text of replies --------------------------------------------------------- */

/* The value after the line `key` in a reply fx_cmd flattened to lines (a
 * SENTINEL MASTER or REPLICAS reply: key and value alternate), starting at
 * text; into val. A pointer past it, or NULL when absent. */
static const char *kv(const char *text, const char *key, char *val, size_t cap)
{
    size_t n = strlen(key);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        if ((size_t)(nl ? nl - p : (long)strlen(p)) == n && strncmp(p, key, n) == 0 && nl) {
            size_t k = strcspn(nl + 1, "\n");
            k = k < cap ? k : cap - 1;
            memcpy(val, nl + 1, k);
            val[k] = '\0';
            return nl + 1 + k;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* "field:value" of INFO text. */
static int info_has(const char *text, const char *line)
{
    const char *p = strstr(text, line);
    return p && (p == text || p[-1] == '\n') && (p[strlen(line)] == '\r' || p[strlen(line)] == '\n');
}

/* ---- the sentinels' processes ----------------------------------------------------- */

static int write_config(fx_sentinel *fx, fx_server *s)
{
    char path[320];
    snprintf(path, sizeof path, "%s/sentinel.conf", s->dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "port %d\nbind 127.0.0.1\ndir %s\nlogfile %s/sentinel.log\n", s->port, s->dir,
            s->dir);
    if (fx->tls)
        fprintf(f, "tls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n"
                   "tls-auth-clients no\ntls-replication yes\n",
                s->tls_port, fx->tls->server_cert, fx->tls->server_key, fx->tls->ca);
    if (fx->password[0])
        fprintf(f, "requirepass %s\nsentinel sentinel-pass %s\n", fx->password, fx->password);
    for (int g = 0; g < fx->groups; g++) {
        const char *n = fx->name[g];
        fprintf(f, "sentinel monitor %s 127.0.0.1 %d 2\n", n,
                fx->tls ? fx->server[g][0].tls_port : fx->server[g][0].port);
        fprintf(f, "sentinel down-after-milliseconds %s %d\n", n, FX_SENTINEL_DOWN_MS);
        fprintf(f, "sentinel failover-timeout %s %d\n", n, FX_SENTINEL_FAILOVER_MS);
        fprintf(f, "sentinel parallel-syncs %s 1\n", n);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static void spawn_sentinel(fx_server *s)
{
    char conf[320];
    snprintf(conf, sizeof conf, "%s/sentinel.conf", s->dir);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("redis-server", "redis-server", conf, "--sentinel", (char *)NULL);
        _exit(127);
    }
    s->pid = pid > 0 ? pid : 0;
}

/* Up when PING answers PONG. */
static int sentinel_up(fx_server *s)
{
    double until = fx_now_ms() + UP_WAIT_MS;
    while (fx_now_ms() < until) {
        char out[64];
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        if (fx_cmd(s, out, sizeof out, "PING") == 0 && strcmp(out, "PONG") == 0)
            return 0;
        fx_sleep_ms(10);
    }
    return -1;
}

static int start_sentinel(fx_sentinel *fx, fx_server *s)
{
    memset(s, 0, sizeof *s);
    s->opts.password = fx->password[0] ? fx->password : NULL;
    snprintf(s->dir, sizeof s->dir, "/tmp/redlock-sentinel-XXXXXX");
    if (!mkdtemp(s->dir)) {
        perror("fx_sentinel: mkdtemp");
        s->dir[0] = '\0';
        return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = fx_free_port();
        s->tls_port = fx->tls ? fx_free_port() : 0;
        if (s->port <= 0 || s->tls_port < 0 || s->port == s->tls_port || write_config(fx, s) != 0)
            continue;
        spawn_sentinel(s);
        if (s->pid > 0 && sentinel_up(s) == 0) {
            snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
            return 0;
        }
        if (s->pid > 0) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            s->pid = 0;
        }
    }
    fprintf(stderr, "fx_sentinel: a sentinel did not start (see %s/sentinel.log)\n", s->dir);
    return -1;
}

/* ---- the groups ------------------------------------------------------------------- */

static int start_group(fx_sentinel *fx, int g)
{
    const char *const common[] = {"--replica-read-only", "no", "--repl-diskless-sync-delay", "0",
                                  "--tls-replication", "yes"};
    const size_t ncommon = sizeof common / sizeof common[0] - (fx->tls ? 0 : 2);
    fx_opts o = fx->base;
    for (int k = 0; k < fx->nservers; k++) {
        const char **a = fx->args[g][k];
        int n = 0;
        if (k > 0) {
            a[n++] = "--replicaof";
            a[n++] = "127.0.0.1";
            a[n++] = fx->port_arg[g];
        }
        for (size_t i = 0; i < ncommon; i++)
            a[n++] = common[i];
        a[n] = NULL;
        o.extra_args = a;
        if (fx_server_start(&fx->server[g][k], &o) != 0)
            return -1;
        snprintf(fx->port_arg[g], sizeof fx->port_arg[g], "%d",
                 fx->tls ? fx->server[g][0].tls_port : fx->server[g][0].port);
    }
    return 0;
}

/* Server k of group g is a replica of server `of`, its link up. */
static int replica_linked(fx_sentinel *fx, int g, int k, int of)
{
    char out[8192], want[64];
    snprintf(want, sizeof want, "master_port:%d",
             fx->tls ? fx->server[g][of].tls_port : fx->server[g][of].port);
    return fx->server[g][k].pid > 0 &&
           fx_cmd(&fx->server[g][k], out, sizeof out, "INFO replication") == 0 &&
           info_has(out, "role:slave") && info_has(out, "master_link_status:up") &&
           info_has(out, want);
}

/* Sentinel i knows the two others and group g's replicas, each linked. */
static int sentinel_ready(fx_sentinel *fx, int i, int g)
{
    char out[16384], cmd[96], v[64];
    snprintf(cmd, sizeof cmd, "SENTINEL MASTER %s", fx->name[g]);
    if (fx_sentinel_cmd(fx, i, out, sizeof out, cmd) != 0 ||
        !kv(out, "num-other-sentinels", v, sizeof v) || atoi(v) != FX_SENTINELS - 1 ||
        !kv(out, "num-slaves", v, sizeof v) || atoi(v) != fx->nservers - 1 ||
        !kv(out, "flags", v, sizeof v) || strcmp(v, "master") != 0)
        return 0;
    snprintf(cmd, sizeof cmd, "SENTINEL REPLICAS %s", fx->name[g]);
    if (fx_sentinel_cmd(fx, i, out, sizeof out, cmd) != 0)
        return 0;
    const char *p = out;
    for (int k = 1; k < fx->nservers; k++) {
        if (!(p = kv(p, "flags", v, sizeof v)) || strcmp(v, "slave") != 0 ||
            !(p = kv(p, "master-link-status", v, sizeof v)) || strcmp(v, "ok") != 0)
            return 0;
    }
    return 1;
}

static int all_ready(fx_sentinel *fx)
{
    for (int i = 0; i < FX_SENTINELS; i++)
        for (int g = 0; g < fx->groups; g++)
            if (!sentinel_ready(fx, i, g))
                return 0;
    return 1;
}

static int wait_for(int (*cond)(fx_sentinel *, int), fx_sentinel *fx, int arg, int timeout_ms)
{
    double until = fx_now_ms() + timeout_ms;
    for (int i = 0; i < 100000 && fx_now_ms() < until; i++) {
        if (cond(fx, arg))
            return 0;
        fx_sleep_ms(POLL_MS);
    }
    return cond(fx, arg) ? 0 : -1;
}

static int ready_cond(fx_sentinel *fx, int unused)
{
    (void)unused;
    return all_ready(fx);
}

static int linked_cond(fx_sentinel *fx, int g)
{
    for (int k = 1; k < fx->nservers; k++)
        if (!replica_linked(fx, g, k, 0))
            return 0;
    return 1;
}

static void make_url(fx_sentinel *fx, int g)
{
    snprintf(fx->url[g], sizeof fx->url[g], "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/%s",
             fx->sentinel[0].port, fx->sentinel[1].port, fx->sentinel[2].port, fx->name[g]);
    if (fx->tls)
        snprintf(fx->tls_url[g], sizeof fx->tls_url[g],
                 "rediss+sentinel://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/%s?ca=%s",
                 fx->sentinel[0].tls_port, fx->sentinel[1].tls_port, fx->sentinel[2].tls_port,
                 fx->name[g], fx->tls->ca);
}

int fx_sentinel_start(fx_sentinel *fx, const fx_sentinel_opts *o)
{
    memset(fx, 0, sizeof *fx);
    fx->groups = o && o->groups > 0 ? o->groups : 1;
    fx->nservers = 1 + (o && o->replicas > 0 ? o->replicas : 1);
    if (fx->groups > FX_SENTINEL_GROUPS || fx->nservers > FX_SENTINEL_SERVERS)
        return -1;
    if (o && o->password)
        snprintf(fx->password, sizeof fx->password, "%s", o->password);
    fx->tls = o ? o->tls : NULL;
    if (fx->tls) {
        fx_tls_opts(&fx->base, fx->tls, FX_TLS_SERVER, "no");
        fx->base.tls_plain = 1;
    }
    for (int g = 0; g < fx->groups; g++) {
        snprintf(fx->name[g], sizeof fx->name[g], "fxgroup%d", g);
        if (start_group(fx, g) != 0 || wait_for(linked_cond, fx, g, FX_SENTINEL_WAIT_MS) != 0) {
            fprintf(stderr, "fx_sentinel: group %d did not start\n", g);
            fx_sentinel_stop(fx);
            return -1;
        }
    }
    for (int i = 0; i < FX_SENTINELS; i++)
        if (start_sentinel(fx, &fx->sentinel[i]) != 0) {
            fx_sentinel_stop(fx);
            return -1;
        }
    for (int g = 0; g < fx->groups; g++)
        make_url(fx, g);
    if (wait_for(ready_cond, fx, 0, FX_SENTINEL_WAIT_MS) != 0) {
        fprintf(stderr, "fx_sentinel: the sentinels did not agree in %d ms\n", FX_SENTINEL_WAIT_MS);
        fx_sentinel_stop(fx);
        return -1;
    }
    return 0;
}

void fx_sentinel_stop(fx_sentinel *fx)
{
    for (int i = 0; i < FX_SENTINELS; i++)
        if (fx->sentinel[i].pid > 0 || fx->sentinel[i].dir[0])
            fx_server_stop(&fx->sentinel[i]);
    for (int g = 0; g < FX_SENTINEL_GROUPS; g++)
        for (int k = 0; k < FX_SENTINEL_SERVERS; k++)
            if (fx->server[g][k].pid > 0 || fx->server[g][k].dir[0])
                fx_server_stop(&fx->server[g][k]);
}

fx_server *fx_sentinel_server(fx_sentinel *fx, int g, int k)
{
    return g >= 0 && g < fx->groups && k >= 0 && k < fx->nservers ? &fx->server[g][k] : NULL;
}

int fx_sentinel_cmd(fx_sentinel *fx, int i, char *out, size_t outlen, const char *cmd)
{
    out[0] = '\0';
    if (i < 0 || i >= FX_SENTINELS || fx->sentinel[i].pid <= 0)
        return -1;
    return fx_cmd(&fx->sentinel[i], out, outlen, cmd);
}

int fx_sentinel_master(fx_sentinel *fx, int g)
{
    char out[8192], cmd[96];
    int port = -1, asked = 0;
    snprintf(cmd, sizeof cmd, "SENTINEL GET-MASTER-ADDR-BY-NAME %s", fx->name[g]);
    for (int i = 0; i < FX_SENTINELS; i++) {
        if (fx->sentinel[i].pid <= 0)
            continue;
        const char *nl;
        if (fx_sentinel_cmd(fx, i, out, sizeof out, cmd) != 0 || !(nl = strchr(out, '\n')))
            return -1;
        if (asked++ && atoi(nl + 1) != port)
            return -1;
        port = atoi(nl + 1);
    }
    for (int k = 0; k < fx->nservers && asked; k++)
        if ((fx->server[g][k].port == port || fx->server[g][k].tls_port == port) &&
            fx->server[g][k].pid > 0 &&
            fx_cmd(&fx->server[g][k], out, sizeof out, "INFO replication") == 0 &&
            info_has(out, "role:master"))
            return k;
    return -1;
}

int fx_sentinel_replica(fx_sentinel *fx, int g)
{
    int m = fx_sentinel_master(fx, g);
    for (int k = 0; m >= 0 && k < fx->nservers; k++)
        if (k != m && fx->server[g][k].pid > 0)
            return k;
    return -1;
}

typedef struct want {
    int g, k, replicas;
} want;
static want wanted;

static int master_cond(fx_sentinel *fx, int unused)
{
    (void)unused;
    if (fx_sentinel_master(fx, wanted.g) != wanted.k)
        return 0;
    for (int k = 0; wanted.replicas && k < fx->nservers; k++)
        if (k != wanted.k && fx->server[wanted.g][k].pid > 0 &&
            !replica_linked(fx, wanted.g, k, wanted.k))
            return 0;
    return 1;
}

int fx_sentinel_wait_master(fx_sentinel *fx, int g, int k, int replicas, int timeout_ms)
{
    wanted = (want){g, k, replicas};
    if (wait_for(master_cond, fx, 0, timeout_ms) == 0)
        return 0;
    fprintf(stderr, "fx_sentinel: group %d: server %d is not its master after %d ms\n", g, k,
            timeout_ms);
    return -1;
}

/* Some server of group g other than `from` is its master. */
static int moved_cond(fx_sentinel *fx, int g)
{
    int m = fx_sentinel_master(fx, g);
    return m >= 0 && m != wanted.k;
}

int fx_sentinel_failover(fx_sentinel *fx, int g)
{
    char out[512], cmd[96];
    int from = fx_sentinel_master(fx, g), asked = -1;
    if (from < 0)
        return -1;
    snprintf(cmd, sizeof cmd, "SENTINEL FAILOVER %s", fx->name[g]);
    for (int tries = 0; tries < 100 && asked != 0; tries++) {
        for (int i = 0; i < FX_SENTINELS && asked != 0; i++)
            if (fx_sentinel_cmd(fx, i, out, sizeof out, cmd) == 0)
                asked = strcmp(out, "OK") == 0 ? 0 : -1;
        if (asked != 0)
            fx_sleep_ms(200); /* NOGOODSLAVE, INPROG: not yet */
    }
    if (asked != 0) {
        fprintf(stderr, "fx_sentinel: SENTINEL FAILOVER %s: %s\n", fx->name[g], out);
        return -1;
    }
    wanted = (want){g, from, 0};
    if (wait_for(moved_cond, fx, g, FX_SENTINEL_WAIT_MS) != 0) {
        fprintf(stderr, "fx_sentinel: %s did not fail over\n", fx->name[g]);
        return -1;
    }
    return fx_sentinel_master(fx, g);
}
