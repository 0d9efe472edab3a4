/* fx_proxy.c - the fault-injecting relay (see fx_proxy.h): one forked
 * process, one poll() loop over every link's listener and connections, and
 * a control socket the test process speaks to. */
#define _GNU_SOURCE
#include "fx_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define DIR_BUF 16384
#define DIR_CHUNKS 128
#define CONNECT_MS 300
#define CTL_WAIT_MS 2000
#define IDLE_POLL_MS 50

enum { OP_SET = 1, OP_RESET = 2, OP_ACCEPTED = 3 };

typedef struct ctl_msg {
    int op, link, mode, delay_ms;
} ctl_msg;

/* Bytes read from one side and not yet written to the other, as chunks
 * that each become due delay_ms after they were read. */
typedef struct chunk {
    int64_t due;
    size_t len;
} chunk;

typedef struct flow {
    char buf[DIR_BUF];
    size_t head, len; /* unsent bytes are buf[head .. head+len) */
    chunk q[DIR_CHUNKS];
    int qh, qn;
} flow;

/* fd[0] the client, fd[1] the server; f[0] client -> server (requests),
 * f[1] server -> client (replies). */
typedef struct conn {
    int used, link;
    int fd[2];
    flow f[2];
} conn;

typedef struct plink {
    int lfd, target, mode, delay_ms;
    long accepted;
} plink;

typedef struct relay {
    int ctl, n;
    plink l[FX_PROXY_MAX_LINKS];
    conn *c; /* MAX_CONNS */
} relay;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the relay process ------------------------------------------------------------ */

static int flows(int mode, int dir)
{
    return mode == FX_LINK_PASS || (mode == FX_LINK_DROP_REPLIES && dir == 0);
}

static void close_fd(int fd, int rst)
{
    if (fd < 0)
        return;
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
}

static void conn_close(conn *c, int rst)
{
    close_fd(c->fd[0], rst);
    close_fd(c->fd[1], rst);
    c->used = 0;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A blocking connect to 127.0.0.1:port bounded by SO_SNDTIMEO (Linux
 * honours it for connect), then non-blocking. -1 if refused or slow. */
static int connect_target(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    struct timeval tv = {0, CONNECT_MS * 1000};
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval zero = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
    nodelay(fd);
    return fd;
}

static void accept_one(relay *r, int li)
{
    int cfd = accept4(r->l[li].lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    conn *c = NULL;
    for (int i = 0; i < MAX_CONNS && !c; i++)
        if (!r->c[i].used)
            c = &r->c[i];
    int sfd = c ? connect_target(r->l[li].target) : -1;
    if (sfd < 0) { /* no room, or the server is down: the client sees a reset */
        close_fd(cfd, 1);
        return;
    }
    nodelay(cfd);
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->link = li;
    c->fd[0] = cfd;
    c->fd[1] = sfd;
    r->l[li].accepted++;
}

/* Read what fd[dir] has into f[dir]; 0, or -1 when that side closed. */
static int fill(conn *c, int dir, int64_t now, int delay_ms)
{
    flow *f = &c->f[dir];
    if (f->head > 0 && f->head + f->len > DIR_BUF / 2) {
        memmove(f->buf, f->buf + f->head, f->len);
        f->head = 0;
    }
    size_t room = DIR_BUF - f->head - f->len;
    if (room == 0 || f->qn == DIR_CHUNKS)
        return 0;
    ssize_t n = recv(c->fd[dir], f->buf + f->head + f->len, room, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return -1;
    if (n < 0)
        return 0;
    f->len += (size_t)n;
    int64_t due = now + delay_ms;
    int last = (f->qh + f->qn - 1) % DIR_CHUNKS;
    if (f->qn > 0 && f->q[last].due == due) {
        f->q[last].len += (size_t)n;
    } else {
        f->q[(f->qh + f->qn) % DIR_CHUNKS] = (chunk){due, (size_t)n};
        f->qn++;
    }
    return 0;
}

/* Write f[dir]'s due chunks to the other side; 0, or -1 when it closed. */
static int flush(conn *c, int dir, int64_t now)
{
    flow *f = &c->f[dir];
    for (int i = 0; i < DIR_CHUNKS && f->qn > 0 && f->q[f->qh].due <= now; i++) {
        chunk *ch = &f->q[f->qh];
        ssize_t n = send(c->fd[1 - dir], f->buf + f->head, ch->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        f->head += (size_t)n;
        f->len -= (size_t)n;
        ch->len -= (size_t)n;
        if (ch->len > 0)
            return 0;
        f->qh = (f->qh + 1) % DIR_CHUNKS;
        f->qn--;
    }
    if (f->len == 0)
        f->head = 0;
    return 0;
}

static int64_t next_due(const relay *r, int64_t now)
{
    int64_t next = now + IDLE_POLL_MS;
    for (int i = 0; i < MAX_CONNS; i++) {
        const conn *c = &r->c[i];
        for (int d = 0; c->used && d < 2; d++)
            if (flows(r->l[c->link].mode, d) && c->f[d].qn > 0 && c->f[d].q[c->f[d].qh].due < next)
                next = c->f[d].q[c->f[d].qh].due;
    }
    return next;
}

static long control(relay *r, const ctl_msg *m)
{
    if (m->link < 0 || m->link >= r->n)
        return -1;
    plink *l = &r->l[m->link];
    switch (m->op) {
    case OP_SET:
        l->mode = m->mode;
        l->delay_ms = m->delay_ms;
        return 0;
    case OP_RESET:
        for (int i = 0; i < MAX_CONNS; i++)
            if (r->c[i].used && r->c[i].link == m->link)
                conn_close(&r->c[i], 1);
        return 0;
    case OP_ACCEPTED:
        return l->accepted;
    }
    return -1;
}

/* 0 to go on, -1 when the test process went away. */
static int serve_control(relay *r)
{
    ctl_msg m;
    ssize_t n = recv(r->ctl, &m, sizeof m, 0);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
        return -1;
    if (n != (ssize_t)sizeof m)
        return 0;
    long ans = control(r, &m);
    return send(r->ctl, &ans, sizeof ans, MSG_NOSIGNAL) == (ssize_t)sizeof ans ? 0 : -1;
}

/* pollfd entries: the control socket, the listeners that accept, two per
 * connection. where[k] says what entry k is: -1 control, -2-li listener li,
 * 2*ci+side connection ci. */
static int build_pollset(relay *r, struct pollfd *p, int *where, int64_t now)
{
    int k = 0;
    p[k] = (struct pollfd){r->ctl, POLLIN, 0};
    where[k++] = -1;
    for (int li = 0; li < r->n; li++)
        if (r->l[li].mode != FX_LINK_BLACKHOLE) {
            p[k] = (struct pollfd){r->l[li].lfd, POLLIN, 0};
            where[k++] = -2 - li;
        }
    for (int ci = 0; ci < MAX_CONNS; ci++) {
        conn *c = &r->c[ci];
        if (!c->used)
            continue;
        int mode = r->l[c->link].mode;
        for (int side = 0; side < 2; side++) {
            short ev = 0;
            const flow *in = &c->f[side], *out = &c->f[1 - side];
            if (flows(mode, side) && in->len < DIR_BUF && in->qn < DIR_CHUNKS)
                ev |= POLLIN;
            if (flows(mode, 1 - side) && out->qn > 0 && out->q[out->qh].due <= now)
                ev |= POLLOUT;
            p[k] = (struct pollfd){c->fd[side], ev, 0};
            where[k++] = 2 * ci + side;
        }
    }
    return k;
}

static void relay_loop(relay *r, int max_ms)
{
    static struct pollfd p[1 + FX_PROXY_MAX_LINKS + 2 * MAX_CONNS];
    static int where[1 + FX_PROXY_MAX_LINKS + 2 * MAX_CONNS];
    int64_t end = now_ms() + max_ms;
    long max_turns = (long)(max_ms / 1000 + 1) * 1000000L;
    for (long turn = 0; turn < max_turns; turn++) {
        int64_t now = now_ms();
        if (now >= end)
            return;
        int np = build_pollset(r, p, where, now);
        int64_t wait = next_due(r, now) - now;
        if (poll(p, (nfds_t)np, (int)(wait < 0 ? 0 : wait)) < 0 && errno != EINTR)
            return;
        now = now_ms();
        for (int k = 0; k < np; k++) {
            if (!p[k].revents)
                continue;
            if (where[k] == -1) {
                if (serve_control(r) != 0)
                    return;
            } else if (where[k] <= -2) {
                accept_one(r, -2 - where[k]);
            } else {
                conn *c = &r->c[where[k] / 2];
                int side = where[k] % 2;
                if (!c->used)
                    continue;
                if (!flows(r->l[c->link].mode, side)) { /* held: only a dead peer matters */
                    if (p[k].revents & (POLLHUP | POLLERR))
                        conn_close(c, 0);
                } else if ((p[k].revents & (POLLIN | POLLHUP | POLLERR)) &&
                           fill(c, side, now, r->l[c->link].delay_ms) != 0) {
                    conn_close(c, 0);
                }
            }
        }
        for (int ci = 0; ci < MAX_CONNS; ci++) {
            conn *c = &r->c[ci];
            for (int d = 0; d < 2 && c->used; d++)
                if (flows(r->l[c->link].mode, d) && flush(c, d, now) != 0)
                    conn_close(c, 0);
        }
    }
}

static void relay_main(relay *r, int max_ms)
{
    r->c = calloc(MAX_CONNS, sizeof *r->c);
    if (r->c)
        relay_loop(r, max_ms);
    _exit(0);
}

/* ---- the test process's side ------------------------------------------------------ */

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int fx_proxy_start(fx_proxy *p, const int *targets, int n, int max_ms)
{
    static relay r;
    int sv[2];
    memset(p, 0, sizeof *p);
    p->ctl = -1;
    if (n < 1 || n > FX_PROXY_MAX_LINKS) {
        fprintf(stderr, "fx_proxy: %d links (1..%d)\n", n, FX_PROXY_MAX_LINKS);
        return -1;
    }
    memset(&r, 0, sizeof r);
    r.n = n;
    for (int i = 0; i < n; i++) {
        r.l[i].target = p->target[i] = targets[i];
        r.l[i].lfd = listen_loopback(&p->port[i]);
        if (r.l[i].lfd < 0) {
            perror("fx_proxy: listen");
            for (int j = 0; j < i; j++)
                close(r.l[j].lfd);
            return -1;
        }
    }
    p->n = n;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("fx_proxy: socketpair");
        for (int i = 0; i < n; i++)
            close(r.l[i].lfd);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(sv[0]);
        r.ctl = sv[1];
        relay_main(&r, max_ms);
    }
    close(sv[1]);
    for (int i = 0; i < n; i++)
        close(r.l[i].lfd);
    if (pid < 0) {
        perror("fx_proxy: fork");
        close(sv[0]);
        return -1;
    }
    p->pid = pid;
    p->ctl = sv[0];
    return 0;
}

static long ask(fx_proxy *p, int op, int i, int mode, int delay_ms)
{
    ctl_msg m = {op, i, mode, delay_ms};
    long ans = -1;
    if (p->pid <= 0 || p->ctl < 0 || i < 0 || i >= p->n)
        return -1;
    if (send(p->ctl, &m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m)
        return -1;
    int64_t until = now_ms() + CTL_WAIT_MS;
    for (int k = 0; k < 100; k++) {
        int64_t left = until - now_ms();
        struct pollfd pf = {p->ctl, POLLIN, 0};
        if (left <= 0)
            break;
        int rc = poll(&pf, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        return recv(p->ctl, &ans, sizeof ans, 0) == (ssize_t)sizeof ans ? ans : -1;
    }
    fprintf(stderr, "fx_proxy: the relay did not answer\n");
    return -1;
}

int fx_proxy_set(fx_proxy *p, int i, int mode, int delay_ms)
{
    if (mode < FX_LINK_PASS || mode > FX_LINK_DROP_REPLIES || delay_ms < 0 || delay_ms > 10000)
        return -1;
    return ask(p, OP_SET, i, mode, delay_ms) == 0 ? 0 : -1;
}

int fx_proxy_reset(fx_proxy *p, int i)
{
    return ask(p, OP_RESET, i, 0, 0) == 0 ? 0 : -1;
}

long fx_proxy_accepted(fx_proxy *p, int i)
{
    return ask(p, OP_ACCEPTED, i, 0, 0);
}

void fx_proxy_stop(fx_proxy *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    if (p->ctl >= 0) {
        close(p->ctl);
        p->ctl = -1;
    }
}
