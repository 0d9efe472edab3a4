/* fixture.c - start, stop and talk to real redis-server processes. */
#define _GNU_SOURCE
#include "fixture.h"

#include <arpa/inet.h>
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

int fx_cmdv(fx_server *s, char *out, size_t outlen, int argc, const char *const *argv,
            const size_t *lens)
{
    static rd r;
    char req[16384];
    const char *aargv[2];
    size_t alens[2], n = 0, o = 0;
    int rc = -1;

    out[0] = '\0';
    r.fd = connect_tcp(s->port);
    if (r.fd < 0)
        return -1;
    r.len = r.pos = 0;
    r.deadline = (long long)fx_now_ms() + IO_WAIT_MS;
    int na = auth_args(s, aargv, alens);
    if (na > 0)
        n = encode(req, sizeof req, na, aargv, alens);
    size_t m = encode(req + n, sizeof req - n, argc, argv, lens);
    if (m == 0 || write_all(r.fd, req, n + m) != 0)
        goto done;
    if (na > 0) {
        char ignore[256];
        size_t io = 0;
        if (rd_reply(&r, ignore, sizeof ignore, &io, 0) != 0)
            goto done;
    }
    rc = rd_reply(&r, out, outlen, &o, 0);
done:
    close(r.fd);
    return rc;
}

int fx_cmd(fx_server *s, char *out, size_t outlen, const char *cmd)
{
    char copy[1024];
    const char *argv[32];
    size_t lens[32];
    int argc = 0;
    snprintf(copy, sizeof copy, "%s", cmd);
    for (char *save = NULL, *w = strtok_r(copy, " ", &save); w && argc < 32;
         w = strtok_r(NULL, " ", &save)) {
        argv[argc] = w;
        lens[argc++] = strlen(w);
    }
    return argc ? fx_cmdv(s, out, outlen, argc, argv, lens) : -1;
}

/* ---- processes ------------------------------------------------------------------------ */

static void spawn(fx_server *s)
{
    char port[16], logf[300];
    const char *argv[40];
    char aclrule[300];
    int a = 0;
    snprintf(port, sizeof port, "%d", s->port);
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
        if (fx_cmd(s, out, sizeof out, "PING") == 0 && strcmp(out, "PONG") == 0)
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
        s->port = fx_free_port();
        if (s->port <= 0)
            continue;
        spawn(s);
        if (s->pid > 0 && wait_up(s) == 0) {
            snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
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

static void remove_dir(fx_server *s)
{
    char path[400];
    static const char *const files[] = {"redis.log", "redis.sock", "dump.rdb"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", s->dir, files[i]);
        unlink(path);
    }
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
