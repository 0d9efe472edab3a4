/* fixture.c - start, stop and talk to real redis-server processes. */
#define _GNU_SOURCE
/* 64-bit directory offsets for readdir on 32-bit targets: the non-LFS
 * readdir fails with EOVERFLOW where the file system hands out 64-bit
 * cookies (ext4 seen from qemu-user on a 64-bit host), and the temp dir
 * would be left behind. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
#include "fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_WAIT_MS 5000
#define IO_WAIT_MS 5000

double fx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void fx_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int fx_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int host_has_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* ---- a minimal RESP client, independent of the library ------------------------- */

static int connect_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct rd {
    int fd;
    char buf[65536];
    size_t len, pos;
    long long deadline;
} rd;

static int rd_fill(rd *r)
{
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->len == sizeof r->buf)
        return -1;
    long long left = r->deadline - (long long)fx_now_ms();
    struct pollfd p = {r->fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0)
        return -1;
    ssize_t n = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
    if (n <= 0)
        return -1;
    r->len += (size_t)n;
    return 0;
}

/* A line without its CRLF, into line. */
static int rd_line(rd *r, char *line, size_t cap)
{
    for (int i = 0; i < 1000; i++) {
        char *cr = memchr(r->buf + r->pos, '\r', r->len - r->pos);
        if (cr && (size_t)(cr - r->buf) + 1 < r->len) {
            size_t n = (size_t)(cr - (r->buf + r->pos));
            if (n >= cap)
                return -1;
            memcpy(line, r->buf + r->pos, n);
            line[n] = '\0';
            r->pos += n + 2;
            return 0;
        }
        if (rd_fill(r) != 0)
            return -1;
    }
    return -1;
}

static void append(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    if (*o + n + 1 > cap)
        n = cap > *o + 1 ? cap - *o - 1 : 0;
    memcpy(out + *o, s, n);
    *o += n;
    out[*o] = '\0';
}

static int rd_reply(rd *r, char *out, size_t cap, size_t *o, int depth)
{
    char line[1024];
    if (depth > 8 || rd_line(r, line, sizeof line) != 0)
        return -1;
    long long n = atoll(line + 1);
    switch (line[0]) {
    case '+':
    case ':':
        append(out, cap, o, line + 1, strlen(line + 1));
        return 0;
    case '-':
        append(out, cap, o, line, strlen(line));
        return 0;
    case '$':
        if (n < 0)
            return 0;
        for (int i = 0; i < 1000 && r->len - r->pos < (size_t)n + 2; i++)
            if (rd_fill(r) != 0)
                return -1;
        if (r->len - r->pos < (size_t)n + 2)
            return -1;
        append(out, cap, o, r->buf + r->pos, (size_t)n);
        r->pos += (size_t)n + 2;
        return 0;
    case '*':
        for (long long i = 0; i < n; i++) {
            if (i > 0)
                append(out, cap, o, "\n", 1);
            if (rd_reply(r, out, cap, o, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    return -1;
}

static int auth_args(const fx_server *s, const char **argv, size_t *lens)
{
    int n = 0;
    if (!s->opts.password)
        return 0;
    argv[n] = "AUTH";
    lens[n++] = 4;
    argv[n] = s->opts.password;
    lens[n] = strlen(s->opts.password);
    return n + 1;
}

static size_t encode(char *dst, size_t cap, int argc, const char *const *argv, const size_t *lens)
{
    size_t o = (size_t)snprintf(dst, cap, "*%d\r\n", argc);
    for (int i = 0; i < argc && o < cap; i++) {
        o += (size_t)snprintf(dst + o, cap - o, "$%zu\r\n", lens[i]);
        if (o + lens[i] + 2 > cap)
            return 0;
        memcpy(dst + o, argv[i], lens[i]);
        o += lens[i];
        memcpy(dst + o, "\r\n", 2);
        o += 2;
    }
    return o < cap ? o : 0;
}

/* Send req (nreq encoded commands) on a new connection, after AUTH when the
 * server has a password; out gets the last reply, or the first error reply
 * of an earlier command. */
static int exchange(fx_server *s, const char *req, size_t len, int nreq, char *out, size_t outlen)
{
    static rd r;
    char auth[512], scratch[4096];
    const char *aargv[2];
    size_t alens[2], n = 0;
    int rc = -1;

    out[0] = '\0';
    r.fd = connect_tcp(s->port);
    if (r.fd < 0)
        return -1;
    r.len = r.pos = 0;
    r.deadline = (long long)fx_now_ms() + IO_WAIT_MS;
    int na = auth_args(s, aargv, alens);
    if (na > 0)
        n = encode(auth, sizeof auth, na, aargv, alens);
    if ((n > 0 && write_all(r.fd, auth, n) != 0) || write_all(r.fd, req, len) != 0)
        goto done;
    for (int i = na > 0 ? -1 : 0; i < nreq; i++) {
        size_t o = 0;
        int last = i == nreq - 1;
        if (rd_reply(&r, last ? out : scratch, last ? outlen : sizeof scratch, &o, 0) != 0)
            goto done;
        if (i >= 0 && !last && scratch[0] == '-') { /* report the first error */
            snprintf(out, outlen, "%s", scratch);
            rc = 0;
            goto done;
        }
    }
    rc = 0;
done:
    close(r.fd);
    return rc;
}

int fx_cmdv(fx_server *s, char *out, size_t outlen, int argc, const char *const *argv,
            const size_t *lens)
{
    static char req[131072];
    size_t m = encode(req, sizeof req, argc, argv, lens);
    out[0] = '\0';
    return m > 0 ? exchange(s, req, m, 1, out, outlen) : -1;
}

/* cmd split on spaces into argv/lens (at most cap words); copy holds them. */
static int split_words(char *copy, const char **argv, size_t *lens, int cap)
{
    int argc = 0;
    for (char *save = NULL, *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (argc == cap)
            return 0; /* more words than room: refuse, never cut the command */
        argv[argc] = w;
        lens[argc++] = strlen(w);
    }
    return argc;
}

int fx_cmd(fx_server *s, char *out, size_t outlen, const char *cmd)
{
    char copy[2048];
    const char *argv[64];
    size_t lens[64];
    if ((size_t)snprintf(copy, sizeof copy, "%s", cmd) >= sizeof copy)
        return -1; /* never a command cut short */
    int argc = split_words(copy, argv, lens, 64);
    if (argc == 0)
        out[0] = '\0';
    return argc ? fx_cmdv(s, out, outlen, argc, argv, lens) : -1;
}

int fx_cmds(fx_server *s, char *out, size_t outlen, int ncmd, const char *const *cmds)
{
    static char req[131072];
    char copy[1024];
    const char *argv[32];
    size_t lens[32], len = 0;
    out[0] = '\0';
    for (int i = 0; i < ncmd; i++) {
        snprintf(copy, sizeof copy, "%s", cmds[i]);
        int argc = split_words(copy, argv, lens, 32);
        size_t m = argc ? encode(req + len, sizeof req - len, argc, argv, lens) : 0;
        if (m == 0)
            return -1;
        len += m;
    }
    return ncmd > 0 ? exchange(s, req, len, ncmd, out, outlen) : -1;
}

/* ---- processes ------------------------------------------------------------------------ */

/* TLS and cluster arguments, into argv at a; returns the new a. */
static int tls_cluster_args(const fx_server *s, const char **argv, int a, char *tport, char *bport,
                            char *nodes)
{
    if (s->opts.tls_cert) {
        argv[a++] = "--tls-port";
        argv[a++] = tport;
        argv[a++] = "--tls-cert-file";
        argv[a++] = s->opts.tls_cert;
        argv[a++] = "--tls-key-file";
        argv[a++] = s->opts.tls_key;
        argv[a++] = "--tls-auth-clients";
        argv[a++] = s->opts.tls_auth_clients ? s->opts.tls_auth_clients : "no";
        if (s->opts.tls_ca) {
            argv[a++] = "--tls-ca-cert-file";
            argv[a++] = s->opts.tls_ca;
        }
    }
    if (s->opts.cluster) {
        argv[a++] = "--cluster-enabled";
        argv[a++] = "yes";
        argv[a++] = "--cluster-config-file";
        argv[a++] = nodes;
        argv[a++] = "--cluster-port";
        argv[a++] = bport;
    }
    for (int i = 0; s->opts.extra_args && i < 32 && s->opts.extra_args[i]; i++)
        argv[a++] = s->opts.extra_args[i];
    return a;
}

static void spawn(fx_server *s)
{
    char port[16], logf[300], tport[16], bport[16], nodes[300];
    const char *argv[100];
    char aclrule[300];
    int a = 0;
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(tport, sizeof tport, "%d", s->tls_port);
    snprintf(bport, sizeof bport, "%d", s->bus_port);
    snprintf(nodes, sizeof nodes, "%s/nodes.conf", s->dir);
    snprintf(logf, sizeof logf, "%s/redis.log", s->dir);
    argv[a++] = "redis-server";
    argv[a++] = "--port";
    argv[a++] = port;
    argv[a++] = "--bind";
    argv[a++] = "127.0.0.1";
    if (s->has_ipv6)
        argv[a++] = "::1";
    argv[a++] = "--save";
    argv[a++] = "";
    argv[a++] = "--appendonly";
    argv[a++] = "no";
    argv[a++] = "--daemonize";
    argv[a++] = "no";
    argv[a++] = "--dir";
    argv[a++] = s->dir;
    argv[a++] = "--logfile";
    argv[a++] = logf;
    argv[a++] = "--loglevel";
    argv[a++] = "warning";
    if (s->opts.unix_socket) {
        argv[a++] = "--unixsocket";
        argv[a++] = s->sock;
        argv[a++] = "--unixsocketperm";
        argv[a++] = "700";
    }
    if (s->opts.password) {
        argv[a++] = "--requirepass";
        argv[a++] = s->opts.password;
    }
    if (s->opts.acl_user) {
        snprintf(aclrule, sizeof aclrule, ">%s", s->opts.acl_password ? s->opts.acl_password : "");
        argv[a++] = "--user";
        argv[a++] = s->opts.acl_user;
        argv[a++] = "on";
        argv[a++] = aclrule;
        argv[a++] = "~*";
        argv[a++] = "&*";
        argv[a++] = "+@all";
    }
    if (s->opts.debug) {
        argv[a++] = "--enable-debug-command";
        argv[a++] = "yes";
    }
    a = tls_cluster_args(s, argv, a, tport, bport, nodes);
    argv[a] = NULL;

    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    s->pid = pid > 0 ? pid : 0;
}

/* A TLS-only server is up when its TLS port accepts: a client that connects
 * now waits in the backlog until the event loop runs. */
static int tls_port_accepts(const fx_server *s)
{
    int fd = connect_tcp(s->tls_port);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* Up when a PING answers PONG (or NOAUTH: it is up, just locked). */
static int wait_up(fx_server *s)
{
    long long until = (long long)fx_now_ms() + START_WAIT_MS;
    while ((long long)fx_now_ms() < until) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        char out[128];
        if (s->port == 0 && tls_port_accepts(s))
            return 0;
        if (s->port != 0 && fx_cmd(s, out, sizeof out, "PING") == 0 && strcmp(out, "PONG") == 0)
            return 0;
        usleep(10 * 1000);
    }
    return -1;
}

static void reap(fx_server *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGCONT);
    kill(s->pid, sig);
    for (int i = 0; i < 300; i++) { /* 3 s, then SIGKILL */
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        usleep(10 * 1000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

/* Free ports for what the options ask: plain, TLS, cluster bus; distinct. */
static int pick_ports(fx_server *s)
{
    int tls = s->opts.tls_cert != NULL;
    s->port = !tls || s->opts.tls_plain ? fx_free_port() : 0;
    s->tls_port = tls ? fx_free_port() : 0;
    s->bus_port = s->opts.cluster ? fx_free_port() : 0;
    if (s->port < 0 || s->tls_port < 0 || s->bus_port < 0)
        return -1;
    if ((s->port && (s->port == s->tls_port || s->port == s->bus_port)) ||
        (s->tls_port && s->tls_port == s->bus_port))
        return -1;
    return s->port || s->tls_port ? 0 : -1;
}

int fx_server_start(fx_server *s, const fx_opts *o)
{
    memset(s, 0, sizeof *s);
    if (o)
        s->opts = *o;
    snprintf(s->dir, sizeof s->dir, "/tmp/redlock-test-XXXXXX");
    if (!mkdtemp(s->dir)) {
        perror("fixture: mkdtemp");
        return -1;
    }
    snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
    s->has_ipv6 = s->opts.ipv6 && host_has_ipv6();
    for (int attempt = 0; attempt < 5; attempt++) {
        if (pick_ports(s) != 0)
            continue;
        spawn(s);
        if (s->pid > 0 && wait_up(s) == 0) {
            if (s->port)
                snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
            if (s->tls_port)
                snprintf(s->tls_url, sizeof s->tls_url, "rediss://127.0.0.1:%d", s->tls_port);
            if (s->opts.unix_socket)
                snprintf(s->unix_url, sizeof s->unix_url, "unix://%s", s->sock);
            return 0;
        }
        reap(s, SIGKILL);
    }
    fprintf(stderr, "fixture: redis-server did not start (is it installed? see %s/redis.log)\n",
            s->dir);
    return -1; /* the dir stays, with the log */
}

/* Every file in the server's own mkdtemp dir (log, socket, RDB, nodes.conf,
 * a replica's temp RDB), then the dir. */
static void remove_dir(fx_server *s)
{
    char path[600];
    DIR *d = opendir(s->dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(s->dir);
}

void fx_server_stop(fx_server *s)
{
    reap(s, SIGTERM);
    if (s->dir[0]) {
        remove_dir(s);
        s->dir[0] = '\0';
    }
}

void fx_server_kill(fx_server *s)
{
    reap(s, SIGKILL);
}

int fx_server_restart(fx_server *s)
{
    reap(s, SIGTERM);
    unlink(s->sock);
    for (int attempt = 0; attempt < 50; attempt++) { /* the port may linger a moment */
        spawn(s);
        if (s->pid > 0 && wait_up(s) == 0)
            return 0;
        reap(s, SIGKILL);
        usleep(50 * 1000);
    }
    return -1;
}

void fx_server_pause(fx_server *s)
{
    if (s->pid > 0)
        kill(s->pid, SIGSTOP);
}

void fx_server_resume(fx_server *s)
{
    if (s->pid > 0)
        kill(s->pid, SIGCONT);
}

/* ---- helper programs ------------------------------------------------------------- */

static void run_child(int wfd, const char *const *argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
        dup2(null, 0);
    dup2(wfd, 1);
    dup2(wfd, 2);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

/* Read the child's output until EOF or the deadline; keeps what fits. */
static void collect(int rfd, char *out, size_t outlen, long long until)
{
    size_t o = 0;
    char sink[4096];
    for (int i = 0; i < 100000; i++) {
        long long left = until - (long long)fx_now_ms();
        struct pollfd p = {rfd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        char *dst = o + 1 < outlen ? out + o : sink;
        size_t cap = o + 1 < outlen ? outlen - o - 1 : sizeof sink;
        ssize_t n = read(rfd, dst, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (dst != sink)
            o += (size_t)n;
    }
    out[o] = '\0';
}

int fx_run(char *out, size_t outlen, int timeout_ms, const char *const *argv)
{
    int fds[2];
    if (outlen == 0 || pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    out[0] = '\0';
    pid_t pid = fork();
    if (pid == 0)
        run_child(fds[1], argv);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    long long until = (long long)fx_now_ms() + timeout_ms;
    collect(fds[0], out, outlen, until);
    close(fds[0]);
    int st = 0;
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && (long long)fx_now_ms() < until)
        usleep(2 * 1000);
    if (w != pid) { /* timed out: ours to kill */
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
