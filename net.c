/* net.c - connections: URLs, TCP (IPv4/IPv6) and unix sockets, non-blocking
 * connect, AUTH/SELECT handshake, one poll() loop over many connections,
 * CLOCK_MONOTONIC deadlines.
 *
 * A connection is a small state machine driven by resp_exchange():
 * CLOSED -> CONNECTING -> HANDSHAKE -> READY. Commands are queued in a write
 * buffer and replies parsed in place in a read buffer; both grow only when a
 * command or reply is larger than any before, so a steady lock cycle does no
 * allocation. Any failure closes the connection and drops its queue: a reply
 * left in flight would otherwise be read as the answer to the next request.
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL */
#include "resp.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* SO_NOSIGPIPE is set on the socket instead */
#endif

#define MAX_ADDRS 8
#define MAX_POLL 64
#define WBUF_INITIAL 512
#define RBUF_INITIAL 1024
#define MAX_HANDSHAKE 2

enum { ST_CLOSED, ST_CONNECTING, ST_HANDSHAKE, ST_READY };
enum { HS_AUTH = 1, HS_SELECT };

struct resp_conn {
    resp_url url;
    resp_conn_opts opts;
    char desc[300]; /* host:port for messages */
    int fd;
    int state;
    uint64_t gen;

    /* connect: every address the name resolved to, tried in order */
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlen[MAX_ADDRS];
    int naddr, ai;
    int conn_errno;

    /* queued commands; while in HANDSHAKE only the first hs_len bytes go out */
    char *wbuf;
    size_t wlen, wcap, woff, hs_len;
    unsigned unsent; /* commands queued since the buffer was last empty */

    /* received bytes; the reply being parsed starts at rstart */
    char *rbuf;
    size_t rcap, rstart, rlen, ready_len;
    resp_parser parser;
    resp_reply *elems;

    unsigned pending; /* replies due to the user */
    int hs_kind[MAX_HANDSHAKE];
    unsigned hs_pending, hs_next;
    int listening;

    int active; /* resp_exchange: had something due when it began */
    int due;    /* resp_exchange: still waiting on this one */
    int64_t deadline;
    int status;
    char errstr[256];
};

/* ---- clock ---------------------------------------------------------------- */

int64_t resp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t ms_to_ns(int ms)
{
    return (int64_t)ms * 1000000;
}

/* ---- URLs ----------------------------------------------------------------- */

static int url_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return RESP_ERR_ARG;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Copy s[0..n) into dst with %XX decoded. Returns 0, or -1 on a bad escape
 * or when it does not fit (or decodes to a NUL). */
static int pct_decode(char *dst, size_t dstlen, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            ch = h * 16 + l;
            i += 2;
            if (ch == 0)
                return -1;
        }
        if (o + 1 >= dstlen)
            return -1;
        dst[o++] = (char)ch;
    }
    dst[o] = '\0';
    return 0;
}

/* A non-negative decimal that fits in int, all of s[0..n). */
static int parse_uint(const char *s, size_t n, long max, long *out)
{
    long v = 0;
    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return 0;
    return 1;
}

static int parse_userinfo(resp_url *u, const char *s, size_t n, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return url_error(err, errlen, "URL has a user but no password (use user:password@ or :password@)");
    size_t ulen = (size_t)(colon - s);
    if (pct_decode(u->user, sizeof u->user, s, ulen) != 0)
        return url_error(err, errlen, "URL user is too long or has a bad %%-escape");
    if (pct_decode(u->password, sizeof u->password, colon + 1, n - ulen - 1) != 0)
        return url_error(err, errlen, "URL password is too long or has a bad %%-escape");
    if (u->password[0] == '\0')
        return url_error(err, errlen, "URL has an empty password");
    return RESP_OK;
}

static int parse_hostport(resp_url *u, const char *s, size_t n, char *err, size_t errlen)
{
    const char *port = NULL;
    size_t hlen;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return url_error(err, errlen, "URL has '[' without ']'");
        hlen = (size_t)(close - s) - 1;
        if (hlen == 0 || hlen >= sizeof u->host)
            return url_error(err, errlen, "URL has a bad IPv6 address");
        memcpy(u->host, s + 1, hlen);
        u->host[hlen] = '\0';
        size_t rest = n - (size_t)(close - s) - 1;
        if (rest > 0) {
            if (close[1] != ':')
                return url_error(err, errlen, "URL has junk after ']'");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hlen = colon ? (size_t)(colon - s) : n;
        if (hlen >= sizeof u->host)
            return url_error(err, errlen, "URL host is too long");
        memcpy(u->host, s, hlen);
        u->host[hlen] = '\0';
        if (colon)
            port = colon + 1;
        if (memchr(u->host, '[', hlen) || memchr(u->host, ']', hlen))
            return url_error(err, errlen, "URL host has a stray bracket");
    }
    if (u->host[0] == '\0')
        return url_error(err, errlen, "URL has no host");
    if (port) {
        long p;
        if (parse_uint(port, (size_t)(s + n - port), 65535, &p) != 0 || p == 0)
            return url_error(err, errlen, "URL port must be a number from 1 to 65535");
        snprintf(u->port, sizeof u->port, "%ld", p);
    }
    return RESP_OK;
}

static int parse_db(resp_url *u, const char *s, size_t n, char *err, size_t errlen)
{
    long db;
    if (n == 0)
        return RESP_OK;
    if (parse_uint(s, n, 1000000000L, &db) != 0)
        return url_error(err, errlen, "URL database must be a non-negative number");
    u->db = (int)db;
    return RESP_OK;
}

static int parse_tcp(resp_url *u, const char *s, char *err, size_t errlen)
{
    size_t n = strlen(s);
    const char *at = NULL;
    for (size_t i = n; i-- > 0;)
        if (s[i] == '@') {
            at = s + i;
            break;
        }
    const char *hp = s;
    if (at) {
        int rc = parse_userinfo(u, s, (size_t)(at - s), err, errlen);
        if (rc != RESP_OK)
            return rc;
        hp = at + 1;
    }
    const char *slash = strchr(hp, '/');
    size_t hplen = slash ? (size_t)(slash - hp) : strlen(hp);
    if (memchr(hp, '?', hplen) || (slash && strchr(slash, '?')))
        return url_error(err, errlen, "redis:// URLs take no query; use /db and user:password@");
    int rc = parse_hostport(u, hp, hplen, err, errlen);
    if (rc != RESP_OK)
        return rc;
    return slash ? parse_db(u, slash + 1, strlen(slash + 1), err, errlen) : RESP_OK;
}

static int parse_query(resp_url *u, const char *q, char *err, size_t errlen)
{
    const char *end = q + strlen(q);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (!eq)
            return url_error(err, errlen, "URL query needs key=value pairs");
        size_t klen = (size_t)(eq - q), vlen = (size_t)(stop - eq - 1);
        int rc = RESP_OK;
        if (klen == 2 && memcmp(q, "db", 2) == 0)
            rc = vlen ? parse_db(u, eq + 1, vlen, err, errlen)
                      : url_error(err, errlen, "URL database must be a non-negative number");
        else if (klen == 4 && memcmp(q, "user", 4) == 0) {
            if (pct_decode(u->user, sizeof u->user, eq + 1, vlen) != 0)
                rc = url_error(err, errlen, "URL user is too long or has a bad %%-escape");
        } else if (klen == 8 && memcmp(q, "password", 8) == 0) {
            if (pct_decode(u->password, sizeof u->password, eq + 1, vlen) != 0)
                rc = url_error(err, errlen, "URL password is too long or has a bad %%-escape");
        } else
            rc = url_error(err, errlen, "URL query has an unknown key '%.*s' (db, user, password)",
                           (int)(klen > 32 ? 32 : klen), q);
        if (rc != RESP_OK)
            return rc;
        q = amp ? amp + 1 : end;
    }
    if (u->user[0] && !u->password[0])
        return url_error(err, errlen, "URL has a user but no password");
    return RESP_OK;
}

static int parse_unix(resp_url *u, const char *s, char *err, size_t errlen)
{
    const char *q = strchr(s, '?');
    size_t plen = q ? (size_t)(q - s) : strlen(s);
    if (plen == 0 || s[0] != '/')
        return url_error(err, errlen, "unix:// URL needs an absolute socket path (unix:///path)");
    if (plen >= sizeof u->path)
        return url_error(err, errlen, "unix socket path is longer than %zu bytes",
                         sizeof u->path - 1);
    memcpy(u->path, s, plen);
    u->path[plen] = '\0';
    return q ? parse_query(u, q + 1, err, errlen) : RESP_OK;
}

int resp_url_parse(resp_url *u, const char *url, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!u || !url)
        return url_error(err, errlen, "URL is NULL");
    memset(u, 0, sizeof *u);
    strcpy(u->port, "6379");
    if (url[0] == '\0')
        return url_error(err, errlen, "URL is empty");
    int rc;
    if (has_prefix_ci(url, "redis://")) {
        u->kind = RESP_URL_TCP;
        rc = parse_tcp(u, url + 8, err, errlen);
    } else if (has_prefix_ci(url, "unix://")) {
        u->kind = RESP_URL_UNIX;
        rc = parse_unix(u, url + 7, err, errlen);
    } else if (has_prefix_ci(url, "rediss://"))
        rc = url_error(err, errlen, "rediss:// needs TLS, which is not built in; use a TLS proxy "
                                    "such as stunnel and a redis:// URL");
    else
        rc = url_error(err, errlen, "URL must start with redis:// or unix://");
    if (rc != RESP_OK) {
        memset(u->password, 0, sizeof u->password);
        u->kind = 0;
    }
    return rc;
}

void resp_url_describe(const resp_url *u, char *dst, size_t dstlen)
{
    if (u->kind == RESP_URL_UNIX)
        snprintf(dst, dstlen, "unix:%s", u->path);
    else if (strchr(u->host, ':'))
        snprintf(dst, dstlen, "[%s]:%s", u->host, u->port);
    else
        snprintf(dst, dstlen, "%s:%s", u->host, u->port);
}

/* ---- connection helpers ----------------------------------------------------- */

static void drop_socket(resp_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = ST_CLOSED;
    c->rstart = c->rlen = c->ready_len = 0;
    c->hs_pending = c->hs_next = 0;
    c->hs_len = 0;
    c->listening = 0;
    resp_parser_reset(&c->parser);
}

/* Close and forget everything queued or in flight. */
static void reset(resp_conn *c)
{
    drop_socket(c);
    c->wlen = c->woff = 0;
    c->unsent = 0;
    c->pending = 0;
    c->due = 0;
}

/* Fail c: close it, drop its queue, record why. */
static int conn_fail(resp_conn *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    reset(c);
    c->status = status;
    return status;
}

static int wbuf_reserve(resp_conn *c, size_t extra)
{
    if (extra > SIZE_MAX / 2 - c->wlen)
        return RESP_ERR_ARG;
    size_t need = c->wlen + extra;
    if (need <= c->wcap)
        return RESP_OK;
    size_t cap = c->wcap ? c->wcap : WBUF_INITIAL;
    while (cap < need)
        cap *= 2;
    char *nb = resp_realloc(c->wbuf, cap);
    if (!nb)
        return RESP_ERR_NOMEM;
    c->wbuf = nb;
    c->wcap = cap;
    return RESP_OK;
}

/* ---- public: lifecycle -------------------------------------------------------- */

int resp_conn_new(resp_conn **out, const resp_url *url, const resp_conn_opts *opts)
{
    *out = NULL;
    resp_conn *c = resp_alloc_array(1, sizeof *c);
    if (!c)
        return RESP_ERR_NOMEM;
    c->url = *url;
    if (opts)
        c->opts = *opts;
    if (c->opts.connect_timeout_ms <= 0)
        c->opts.connect_timeout_ms = 1000;
    if (c->opts.io_timeout_ms <= 0)
        c->opts.io_timeout_ms = 500;
    resp_parser_init(&c->parser, &c->opts.limits, NULL, 0);
    c->opts.limits = c->parser.lim;
    if (c->opts.max_reply == 0)
        c->opts.max_reply = (size_t)c->opts.limits.max_bulk + 4096;
    size_t nelems = (size_t)c->opts.limits.max_array + 8;
    c->elems = resp_alloc_array(nelems, sizeof *c->elems);
    c->rbuf = resp_alloc(RBUF_INITIAL);
    if (!c->elems || !c->rbuf) {
        resp_free(c->elems);
        resp_free(c->rbuf);
        resp_free(c);
        return RESP_ERR_NOMEM;
    }
    c->rcap = RBUF_INITIAL;
    c->parser.elems = c->elems;
    c->parser.cap = nelems;
    c->fd = -1;
    resp_url_describe(url, c->desc, sizeof c->desc);
    *out = c;
    return RESP_OK;
}

void resp_conn_free(resp_conn *c)
{
    if (!c)
        return;
    reset(c);
    memset(c->url.password, 0, sizeof c->url.password);
    resp_free(c->wbuf);
    resp_free(c->rbuf);
    resp_free(c->elems);
    resp_free(c);
}

void resp_conn_close(resp_conn *c)
{
    reset(c);
}

int resp_conn_append(resp_conn *c, int argc, const char *const *argv, const size_t *lens)
{
    size_t n = resp_command_len(argc, lens);
    if (n == 0)
        return RESP_ERR_ARG;
    int rc = wbuf_reserve(c, n);
    if (rc != RESP_OK)
        return rc;
    c->wlen += resp_command_encode(c->wbuf + c->wlen, argc, argv, lens);
    c->pending++;
    c->unsent++;
    return RESP_OK;
}

int resp_conn_appendv(resp_conn *c, int argc, const char *const *argv)
{
    size_t lens[16];
    if (argc < 1 || argc > 16)
        return RESP_ERR_ARG;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return resp_conn_append(c, argc, argv, lens);
}

void resp_conn_listen(resp_conn *c)
{
    c->listening = 1;
}

int resp_conn_listening(const resp_conn *c)
{
    return c->listening;
}

int resp_conn_status(const resp_conn *c)
{
    return c->status;
}

const char *resp_conn_errstr(const resp_conn *c)
{
    return c->errstr;
}

const resp_reply *resp_conn_reply(const resp_conn *c, size_t *nelem)
{
    if (c->ready_len == 0)
        return NULL;
    if (nelem)
        *nelem = c->parser.nelem;
    return c->elems;
}

void resp_conn_consume(resp_conn *c)
{
    if (c->ready_len == 0)
        return;
    c->rstart += c->ready_len;
    c->ready_len = 0;
    if (c->pending > 0)
        c->pending--;
    if (c->rstart == c->rlen)
        c->rstart = c->rlen = 0;
}

unsigned resp_conn_pending(const resp_conn *c)
{
    return c->pending;
}

uint64_t resp_conn_generation(const resp_conn *c)
{
    return c->gen;
}

int resp_conn_connected(const resp_conn *c)
{
    return c->state != ST_CLOSED;
}

const resp_url *resp_conn_url(const resp_conn *c)
{
    return &c->url;
}

/* ---- connecting ------------------------------------------------------------- */

static int resolve(resp_conn *c)
{
    c->naddr = c->ai = 0;
    if (c->url.kind == RESP_URL_UNIX) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, c->url.path, strlen(c->url.path) + 1);
        memcpy(&c->addrs[0], &sa, sizeof sa);
        c->addrlen[0] = (socklen_t)sizeof sa;
        c->naddr = 1;
        return RESP_OK;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    int rc = getaddrinfo(c->url.host, c->url.port, &hints, &res);
    if (rc != 0)
        return conn_fail(c, RESP_ERR_IO, "cannot resolve %s: %s", c->desc, gai_strerror(rc));
    for (struct addrinfo *a = res; a && c->naddr < MAX_ADDRS; a = a->ai_next) {
        if (a->ai_addrlen > sizeof c->addrs[0])
            continue;
        memcpy(&c->addrs[c->naddr], a->ai_addr, a->ai_addrlen);
        c->addrlen[c->naddr] = a->ai_addrlen;
        c->naddr++;
    }
    freeaddrinfo(res);
    if (c->naddr == 0)
        return conn_fail(c, RESP_ERR_IO, "cannot resolve %s: no usable address", c->desc);
    return RESP_OK;
}

static int new_socket(int family)
{
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
    return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd >= 0 && (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ||
                    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
#endif
}

static int64_t cap_deadline(int64_t d, int64_t limit)
{
    return limit > 0 && limit < d ? limit : d;
}

static int encode_handshake(resp_conn *c, char *dst, int dry)
{
    size_t n = 0;
    char dbbuf[16];
    const char *argv[3];
    size_t lens[3];

    c->hs_pending = 0;
    if (c->url.password[0]) {
        int argc = 0;
        argv[argc] = "AUTH";
        lens[argc++] = 4;
        if (c->url.user[0]) {
            argv[argc] = c->url.user;
            lens[argc] = strlen(c->url.user);
            argc++;
        }
        argv[argc] = c->url.password;
        lens[argc] = strlen(c->url.password);
        argc++;
        n += dry ? resp_command_len(argc, lens) : resp_command_encode(dst + n, argc, argv, lens);
        c->hs_kind[c->hs_pending++] = HS_AUTH;
    }
    if (c->url.db) {
        snprintf(dbbuf, sizeof dbbuf, "%d", c->url.db);
        argv[0] = "SELECT";
        lens[0] = 6;
        argv[1] = dbbuf;
        lens[1] = strlen(dbbuf);
        n += dry ? resp_command_len(2, lens) : resp_command_encode(dst + n, 2, argv, lens);
        c->hs_kind[c->hs_pending++] = HS_SELECT;
    }
    return (int)n;
}

/* The socket is connected: set options and queue AUTH/SELECT in front of
 * whatever the user queued. User commands go out only after the handshake
 * succeeded, so they can never run unauthenticated or in the wrong db. */
static int on_connected(resp_conn *c, int64_t now, int64_t limit)
{
    int one = 1;
    if (c->url.kind == RESP_URL_TCP)
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
    (void)setsockopt(c->fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    c->gen++;
    c->hs_next = 0;
    size_t hs = (size_t)encode_handshake(c, NULL, 1);
    if (hs == 0) {
        c->state = ST_READY;
        c->deadline = cap_deadline(now + ms_to_ns(c->opts.io_timeout_ms), limit);
        return RESP_OK;
    }
    if (wbuf_reserve(c, hs) != RESP_OK)
        return conn_fail(c, RESP_ERR_NOMEM, "out of memory queueing AUTH/SELECT");
    memmove(c->wbuf + hs, c->wbuf, c->wlen);
    encode_handshake(c, c->wbuf, 0);
    c->wlen += hs;
    c->hs_len = hs;
    c->state = ST_HANDSHAKE;
    return RESP_OK;
}

/* Try addresses from c->ai on until one connects or is in progress. */
static int try_connect(resp_conn *c, int64_t now, int64_t limit)
{
    while (c->ai < c->naddr) {
        const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->ai];
        int fd = new_socket(sa->sa_family);
        if (fd < 0) {
            c->conn_errno = errno;
            c->ai++;
            continue;
        }
        c->fd = fd;
        if (connect(fd, sa, c->addrlen[c->ai]) == 0) {
            c->state = ST_CONNECTING;
            return on_connected(c, now, limit);
        }
        if (errno == EINPROGRESS) {
            c->state = ST_CONNECTING;
            return RESP_OK;
        }
        c->conn_errno = errno;
        close(fd);
        c->fd = -1;
        c->ai++;
    }
    return conn_fail(c, RESP_ERR_IO, "cannot connect to %s: %s", c->desc, strerror(c->conn_errno));
}

static int start_connect(resp_conn *c, int64_t now, int64_t limit)
{
    c->deadline = cap_deadline(now + ms_to_ns(c->opts.connect_timeout_ms), limit);
    c->conn_errno = ECONNREFUSED;
    if (resolve(c) != RESP_OK)
        return c->status;
    return try_connect(c, now, limit);
}

/* A non-blocking connect finished (POLLOUT): see whether it worked. */
static int finish_connect(resp_conn *c, int64_t now, int64_t limit)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0)
        return on_connected(c, now, limit);
    c->conn_errno = err;
    close(c->fd);
    c->fd = -1;
    c->ai++;
    return try_connect(c, now, limit);
}

/* ---- I/O ---------------------------------------------------------------------- */

static size_t write_limit(const resp_conn *c)
{
    return c->state == ST_HANDSHAKE ? c->hs_len : c->wlen;
}

static int do_write(resp_conn *c)
{
    size_t lim = write_limit(c);
    while (c->woff < lim) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, lim - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return RESP_OK;
        return conn_fail(c, RESP_ERR_IO, "write to %s: %s", c->desc,
                         n < 0 ? strerror(errno) : "nothing written");
    }
    if (c->woff == c->wlen) {
        c->woff = c->wlen = 0;
        c->unsent = 0;
    }
    return RESP_OK;
}

/* Make room at the end of the read buffer: compact, then grow up to the cap. */
static int rbuf_room(resp_conn *c)
{
    if (c->rlen < c->rcap)
        return RESP_OK;
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
        c->rlen -= c->rstart;
        c->rstart = 0;
        return RESP_OK;
    }
    if (c->rcap >= c->opts.max_reply)
        return conn_fail(c, RESP_ERR_PROTOCOL, "reply from %s is larger than %zu bytes", c->desc,
                         c->opts.max_reply);
    size_t cap = c->rcap * 2 < c->opts.max_reply ? c->rcap * 2 : c->opts.max_reply;
    char *nb = resp_realloc(c->rbuf, cap);
    if (!nb)
        return conn_fail(c, RESP_ERR_NOMEM, "out of memory reading from %s", c->desc);
    c->rbuf = nb;
    c->rcap = cap;
    return RESP_OK;
}

/* Read once from the socket; called only while the current reply is
 * incomplete, so a full buffer means that reply needs more room. Returns
 * RESP_OK (maybe nothing read) or an error (the connection is then closed). */
static int do_read(resp_conn *c)
{
    if (rbuf_room(c) != RESP_OK)
        return c->status;
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            return RESP_OK;
        }
        if (n == 0)
            return conn_fail(c, RESP_ERR_IO, "connection closed by %s", c->desc);
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return RESP_OK;
        return conn_fail(c, RESP_ERR_IO, "read from %s: %s", c->desc, strerror(errno));
    }
}

static int check_handshake_reply(resp_conn *c, const resp_reply *r)
{
    int kind = c->hs_kind[c->hs_next++];
    const char *what = kind == HS_AUTH ? "AUTH" : "SELECT";
    if (r->type == RESP_STATUS)
        return RESP_OK;
    if (r->type == RESP_ERROR)
        return conn_fail(c, RESP_ERR_AUTH, "%s refused by %s: %.*s", what, c->desc,
                         (int)(r->len > 160 ? 160 : r->len), r->str);
    return conn_fail(c, RESP_ERR_PROTOCOL, "unexpected reply to %s from %s", what, c->desc);
}

/* Parse buffered bytes: check handshake replies, then stop at the first user
 * reply. Returns RESP_OK (a reply may or may not be ready) or an error. */
static int process(resp_conn *c, int64_t now, int64_t limit)
{
    while (c->ready_len == 0 && c->state != ST_CLOSED) {
        if (c->rstart == c->rlen)
            return RESP_OK;
        long r = resp_parse(&c->parser, c->rbuf + c->rstart, c->rlen - c->rstart);
        if (r == RESP_PARSE_INCOMPLETE)
            return RESP_OK;
        if (r < 0)
            return conn_fail(c, RESP_ERR_PROTOCOL, "bad reply from %s: %s", c->desc,
                             c->parser.errstr);
        if (c->state == ST_HANDSHAKE) {
            if (check_handshake_reply(c, c->elems) != RESP_OK)
                return c->status;
            c->rstart += (size_t)r;
            if (--c->hs_pending == 0) {
                c->state = ST_READY;
                c->hs_len = 0;
                c->deadline = cap_deadline(now + ms_to_ns(c->opts.io_timeout_ms), limit);
            }
            continue;
        }
        if (c->pending == 0 && !c->listening)
            return conn_fail(c, RESP_ERR_PROTOCOL, "unsolicited reply from %s", c->desc);
        c->ready_len = (size_t)r;
    }
    if (c->rstart == c->rlen)
        c->rstart = c->rlen = 0;
    return RESP_OK;
}

/* Nothing queued was sent, nothing is in flight: the connection sat idle
 * since its last reply. If the server closed it meanwhile (restart, CLIENT
 * KILL, timeout), reconnect now instead of failing the request. */
static int idle_and_dead(resp_conn *c)
{
    char b;
    if (c->state != ST_READY || c->woff != 0 || c->pending != c->unsent || c->listening ||
        c->rlen != c->rstart)
        return 0;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
           n > 0;
}

int resp_conn_poll_ready(resp_conn *c)
{
    if (c->ready_len > 0)
        return c->status = RESP_OK;
    if (c->state != ST_READY)
        return c->status = RESP_IDLE;
    if (do_read(c) != RESP_OK || process(c, resp_now_ns(), 0) != RESP_OK)
        return c->status;
    return c->status = c->ready_len > 0 ? RESP_OK : RESP_IDLE;
}

/* ---- the poll loop ------------------------------------------------------------ */

static int listening_idle(const resp_conn *c)
{
    return c->listening && c->state == ST_READY && c->woff == c->wlen && c->rlen == c->rstart;
}

/* Start work on c for this exchange: decide whether anything is due, and
 * connect or send right away. */
static void begin(resp_conn *c, int64_t now, int64_t limit)
{
    c->due = 0;
    c->active = 0;
    if (c->ready_len > 0) {
        c->active = 1;
        c->status = RESP_OK;
        return;
    }
    if (c->pending == 0 && !c->listening)
        return;
    c->active = 1;
    c->due = 1;
    c->status = RESP_OK;
    if (c->state == ST_READY) {
        if (idle_and_dead(c))
            drop_socket(c);
        else if (process(c, now, limit) != RESP_OK || c->ready_len > 0) {
            c->due = 0;
            return;
        }
    }
    if (c->state == ST_CLOSED) {
        if (start_connect(c, now, limit) != RESP_OK) {
            c->due = 0;
            return;
        }
    } else if (c->state == ST_READY) {
        c->deadline = listening_idle(c) && c->woff == 0 && c->wlen == 0
                          ? (limit > 0 ? limit : INT64_MAX)
                          : cap_deadline(now + ms_to_ns(c->opts.io_timeout_ms), limit);
    }
    if ((c->state == ST_READY || c->state == ST_HANDSHAKE) && do_write(c) != RESP_OK)
        c->due = 0;
}

/* Handle poll() events for c. Leaves c->due set while more is needed. */
static void step(resp_conn *c, short revents, int64_t now, int64_t limit)
{
    if (c->state == ST_CONNECTING) {
        if (revents & (POLLOUT | POLLERR | POLLHUP)) {
            if (finish_connect(c, now, limit) != RESP_OK) {
                c->due = 0;
                return;
            }
            if (c->state != ST_CONNECTING && do_write(c) != RESP_OK)
                c->due = 0;
        }
        return;
    }
    if ((revents & POLLOUT) && do_write(c) != RESP_OK) {
        c->due = 0;
        return;
    }
    if (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
        int hs = c->state == ST_HANDSHAKE;
        if (do_read(c) != RESP_OK || process(c, now, limit) != RESP_OK) {
            c->due = 0;
            return;
        }
        if (hs && c->state == ST_READY && do_write(c) != RESP_OK) {
            c->due = 0;
            return;
        }
    }
    if (c->ready_len > 0)
        c->due = 0;
}

static void time_out(resp_conn *c, int64_t limit)
{
    c->due = 0;
    if (listening_idle(c) && c->deadline == limit) {
        c->status = RESP_IDLE;
        return;
    }
    const char *what = c->state == ST_CONNECTING  ? "connecting to"
                       : c->state == ST_HANDSHAKE ? "AUTH/SELECT with"
                                                  : "waiting for a reply from";
    int ms = c->state == ST_READY ? c->opts.io_timeout_ms : c->opts.connect_timeout_ms;
    conn_fail(c, RESP_ERR_TIMEOUT, "timed out %s %s (deadline %d ms%s)", what, c->desc, ms,
              c->deadline == limit ? ", capped by the caller" : "");
}

static short wanted_events(const resp_conn *c)
{
    if (c->state == ST_CONNECTING)
        return POLLOUT;
    short ev = POLLIN;
    if (c->woff < write_limit(c))
        ev |= POLLOUT;
    return ev;
}

void resp_exchange(resp_conn *const *cs, size_t n, int64_t limit_ns, int any)
{
    struct pollfd pfd[MAX_POLL];
    size_t map[MAX_POLL];
    int64_t now = resp_now_ns();

    for (size_t i = 0; i < n; i++) {
        if (i >= MAX_POLL) {
            if (cs[i]->pending || cs[i]->listening)
                conn_fail(cs[i], RESP_ERR_ARG, "more than %d connections in one exchange",
                          MAX_POLL);
            continue;
        }
        begin(cs[i], now, limit_ns);
    }
    for (;;) {
        size_t k = 0, done = 0;
        int64_t next = INT64_MAX;
        now = resp_now_ns();
        for (size_t i = 0; i < n && i < MAX_POLL; i++) {
            resp_conn *c = cs[i];
            if (!c->due) {
                done += (size_t)c->active;
                continue;
            }
            if (now >= c->deadline) {
                time_out(c, limit_ns);
                done++;
                continue;
            }
            if (c->deadline < next)
                next = c->deadline;
            pfd[k].fd = c->fd;
            pfd[k].events = wanted_events(c);
            pfd[k].revents = 0;
            map[k++] = i;
        }
        if (k == 0 || (any && done > 0))
            return;
        int64_t wait_ns = next - now;
        int timeout = wait_ns > (int64_t)INT32_MAX * 1000000 ? INT32_MAX
                                                            : (int)((wait_ns + 999999) / 1000000);
        int r = poll(pfd, (nfds_t)k, timeout);
        if (r < 0 && errno != EINTR) {
            int e = errno;
            for (size_t j = 0; j < k; j++) {
                cs[map[j]]->due = 0;
                conn_fail(cs[map[j]], RESP_ERR_IO, "poll: %s", strerror(e));
            }
            return;
        }
        if (r <= 0)
            continue; /* EINTR or timeout: deadlines are checked above */
        now = resp_now_ns();
        for (size_t j = 0; j < k; j++)
            if (pfd[j].revents)
                step(cs[map[j]], pfd[j].revents, now, limit_ns);
    }
}
