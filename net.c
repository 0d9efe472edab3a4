/* net.c - connections: URLs, TCP (IPv4/IPv6) and unix sockets, non-blocking
 * connect over every address, AUTH/SELECT handshake, pipelined requests
 * each with its own CLOCK_MONOTONIC deadline. Driven from outside (see
 * net.h): nothing here blocks or sleeps.
 *
 * The output is one stream of bytes: every request owns a range of it
 * (start, end). wbuf holds the part not yet written, from stream offset
 * wbase; a request is written once the socket took its first byte. The
 * request queue keeps the order replies come back in. Buffers grow only
 * when a command or reply is larger than any before, so a steady lock
 * cycle allocates nothing.
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL */
#include "net.h"
#include "redlock_transport.h" /* the TLS transport table; nothing about locks */

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
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

/* A transport returns the REDLOCK_* status codes, whose numbers the RESP_*
 * codes share (redlock.c checks that at compile time, where it sees both). */
_Static_assert(REDLOCK_WANT_READ < 0 && REDLOCK_WANT_WRITE < 0, "transport wants are negative");

#define MAX_ADDRS 8
#define WBUF_INITIAL 1024
#define RBUF_INITIAL 512
#define ELEMS_INITIAL 16
#define RQ_INITIAL 8
/* A socket idle for longer than this is checked (one MSG_PEEK) before a
 * request goes out on it: the server may have closed it meanwhile. A
 * socket that answered within this time is trusted: back-to-back
 * requests then cost send, poll and recv only. */
#define IDLE_CHECK_NS 1000000

/* Most bytes handed to a transport's write at once: a transport that asks
 * for a retry may hold a record made of them, so they count as sent. */
#define TLS_WRITE_MAX 16384

enum { ST_CLOSED, ST_CONNECTING, ST_TLS, ST_HANDSHAKE, ST_READY };
enum { HS_AUTH = 1, HS_SELECT, HS_ROLE };

/* request flags */
enum {
    F_WRITTEN = 1, /* the current socket took at least its first byte        */
    F_DUE = 2,     /* failed or timed out: to be reported with status        */
    F_DEAD = 4     /* its socket is gone: report, then remove (never a reply) */
};

typedef struct net_req {
    net_tag tag;
    int64_t cap;      /* the caller's limit, 0: none                          */
    int64_t deadline; /* 0: not armed yet (the connection is not ready)        */
    uint64_t start, end; /* its bytes in the output stream                   */
    uint8_t flags;
    uint8_t status;   /* F_DUE: why                                            */
} net_req;

struct net_conn {
    net_url url;
    net_opts opts;
    char desc[300];
    int fd;
    int state;
    int push;     /* pub/sub: replies are pushes                             */
    int stale;    /* a written request timed out: write nothing more          */
    int peer_eof; /* the peer closed (or reset); fail once buffered replies are taken */
    int blocking; /* plain socket in blocking mode with SO_RCVTIMEO: every call
                     passes MSG_DONTWAIT but net_conn_block's recv */
    int eof_status; /* the status to fail with then: RESP_ERR_IO, or RESP_ERR_TLS */
    uint64_t rx;    /* bytes received on this socket */
    uint64_t rx_ready; /* rx when it became ready (after AUTH/SELECT) */
    uint64_t gen;
    uint64_t sockets; /* opened + closed, for event loops that register fds */
    int64_t conn_deadline;
    int64_t last_rx; /* when bytes last came in (or the socket connected) */

    /* connect: every address the name resolved to, tried in order (a
     * unix socket's address is made from url.path when it is tried) */
    union net_addr {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addrs[MAX_ADDRS];
    int naddr, ai;
    int conn_errno;

    /* TLS (rediss://): the transport, its settings for this connection
     * (made at the first connect, kept across reconnects), the session on
     * the current socket, and what its last read and write wait for */
    const redlock_transport *tr;
    void *tr_cfg;
    void *tls;
    short rd_want, wr_want; /* POLLIN or POLLOUT */
    uint64_t wheld;         /* stream offset up to which the transport may hold bytes */

    /* AUTH/SELECT (and ROLE), written before anything else on a new socket:
     * a buffer made for the handshake, wiped and freed when it ends */
    char *hsbuf;
    size_t hs_len, hs_off;
    int hs_kind[3];
    unsigned hs_pending, hs_next;

    /* the output stream */
    char *wbuf;
    size_t wlen, wcap, woff;
    uint64_t wbase; /* stream offset of wbuf[0] */
    uint64_t wend;  /* stream offset after the last queued byte */

    /* requests in order: q[qhead .. qhead + qn) */
    net_req *q;
    uint32_t qhead, qn, qcap;
    uint32_t ndue;

    /* received bytes; the reply being parsed starts at rstart */
    char *rbuf;
    size_t rcap, rstart, rlen, ready_len;
    int rdrained; /* net_conn_take found no whole reply left in rbuf */
    resp_parser parser;
    resp_reply *elems;

    char errstr[384];
};

/* ---- clock ---------------------------------------------------------------- */

int64_t net_now_ns(void)
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
        /* checked before it grows: ten digits overflow a 32-bit long */
        if (v > (max - (s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
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

static int parse_userinfo(net_url *u, const char *s, size_t n, char *err, size_t errlen)
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

static int parse_hostport(net_url *u, const char *s, size_t n, char *err, size_t errlen)
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

static int parse_db(net_url *u, const char *s, size_t n, char *err, size_t errlen)
{
    long db;
    if (n == 0)
        return RESP_OK;
    if (parse_uint(s, n, 1000000000L, &db) != 0)
        return url_error(err, errlen, "URL database must be a non-negative number");
    u->db = (int)db;
    return RESP_OK;
}

/* ---- URL query keys ---------------------------------------------------------
 * One row per key: the schemes that take it, how its value is stored and
 * where (a field of net_url, or of net_seeds for what is kept apart from
 * the connection), and what to say where it is not taken. A new key is
 * one row and, if needed, one setter. */

enum {
    SCHEME_REDIS = 1,
    SCHEME_REDISS = 2,
    SCHEME_UNIX = 4,
    SCHEME_SENTINEL = 8,   /* redis+sentinel://  */
    SCHEME_SENTINELS = 16, /* rediss+sentinel:// */
    SCHEMES_TLS = SCHEME_REDISS | SCHEME_SENTINELS,
    SCHEMES_TCP = SCHEME_REDIS | SCHEME_REDISS | SCHEME_SENTINEL | SCHEME_SENTINELS
};

typedef struct url_key url_key;
struct url_key {
    const char *name;
    unsigned schemes; /* SCHEME_* that take it */
    int (*set)(net_url *u, net_seeds *seeds, const url_key *k, const char *v, size_t n, char *err,
               size_t errlen);
    size_t field;     /* offsetof(net_url, ...) (or net_seeds, ...) for the setters that store text */
    size_t size;      /* that field's size */
    const char *elsewhere;
};

static char *field_of(net_url *u, const url_key *k)
{
    return (char *)u + k->field;
}

static int set_db(net_url *u, net_seeds *seeds, const url_key *k, const char *v, size_t n, char *err, size_t errlen)
{
    (void)seeds;
    (void)k;
    return n ? parse_db(u, v, n, err, errlen)
             : url_error(err, errlen, "URL database must be a non-negative number");
}

/* user=, password=: %-decoded, may be empty. */
static int set_secret(net_url *u, net_seeds *seeds, const url_key *k, const char *v, size_t n, char *err,
                      size_t errlen)
{
    (void)seeds;
    if (pct_decode(field_of(u, k), k->size, v, n) != 0)
        return url_error(err, errlen, "URL %s is too long or has a bad %%-escape", k->name);
    return RESP_OK;
}

/* sentinel_user=, sentinel_password=: the same, into the seeds (a Sentinel
 * URL always has them). */
static int set_seed_secret(net_url *u, net_seeds *seeds, const url_key *k, const char *v, size_t n,
                           char *err, size_t errlen)
{
    (void)u;
    if (pct_decode((char *)seeds + k->field, k->size, v, n) != 0)
        return url_error(err, errlen, "URL %s is too long or has a bad %%-escape", k->name);
    return RESP_OK;
}

/* ca=, cert=, key=, sni=: %-decoded, non-empty, no control characters. */
static int set_text(net_url *u, net_seeds *seeds, const url_key *k, const char *v, size_t n, char *err,
                    size_t errlen)
{
    (void)seeds;
    char *dst = field_of(u, k);
    if (n == 0)
        return url_error(err, errlen, "URL %s= is empty", k->name);
    if (pct_decode(dst, k->size, v, n) != 0)
        return url_error(err, errlen, "URL %s= is longer than %zu bytes or has a bad %%-escape",
                         k->name, k->size - 1);
    for (const char *p = dst; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return url_error(err, errlen, "URL %s= has a control character", k->name);
    return RESP_OK;
}

/* cluster=, insecure=: 0 or 1, into the int field the key names */
static int set_flag(net_url *u, net_seeds *seeds, const url_key *k, const char *v, size_t n,
                    char *err, size_t errlen)
{
    (void)seeds;
    if (n != 1 || (v[0] != '0' && v[0] != '1'))
        return url_error(err, errlen, "URL %s= takes 0 or 1", k->name);
    *(int *)(void *)field_of(u, k) = v[0] == '1';
    return RESP_OK;
}

/* One more seed (a cluster node, or a sentinel) at s[0..n), kept apart
 * from the URL (a connection carries only its own address). */
static int add_seed(const net_url *u, net_seeds *seeds, const char *s, size_t n, char *err,
                    size_t errlen)
{
    net_url tmp;
    if (seeds->n == NET_MAX_SEEDS - 1)
        return url_error(err, errlen, "URL has more than %d %s", NET_MAX_SEEDS,
                         u->sentinel ? "sentinels" : "cluster seeds");
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.port, sizeof tmp.port, "%s", u->sentinel ? NET_SENTINEL_PORT : "6379");
    if (parse_hostport(&tmp, s, n, err, errlen) != RESP_OK)
        return RESP_ERR_ARG;
    memcpy(seeds->at[seeds->n].host, tmp.host, sizeof tmp.host);
    memcpy(seeds->at[seeds->n].port, tmp.port, sizeof tmp.port);
    seeds->n++;
    return RESP_OK;
}

/* addr=host:port, [v6]:port: one more seed node of a cluster, or one more
 * sentinel */
static int set_addr(net_url *u, net_seeds *seeds, const url_key *k, const char *v, size_t n,
                    char *err, size_t errlen)
{
    if (!seeds)
        return url_error(err, errlen, "URL %s= (more seeds) is not taken here", k->name);
    return add_seed(u, seeds, v, n, err, errlen);
}

#define TEXT(f) offsetof(net_url, f), sizeof(((net_url *)0)->f)
#define SEED(f) offsetof(net_seeds, f), sizeof(((net_seeds *)0)->f)
#define FLAG(f) offsetof(net_url, f), sizeof(int)
#define NEEDS_TLS "TLS needs a rediss:// URL (or rediss+sentinel://)"
#define NEEDS_SENTINEL "only a Sentinel URL (redis+sentinel://) takes it"
static const url_key url_keys[] = {
    {"db", SCHEME_UNIX, set_db, 0, 0, "give the database as /db"},
    {"user", SCHEME_UNIX, set_secret, TEXT(user), "give user:password@ before the host"},
    {"password", SCHEME_UNIX, set_secret, TEXT(password), "give user:password@ before the host"},
    {"ca", SCHEMES_TLS, set_text, TEXT(ca), NEEDS_TLS},
    {"cert", SCHEMES_TLS, set_text, TEXT(cert), NEEDS_TLS},
    {"key", SCHEMES_TLS, set_text, TEXT(key), NEEDS_TLS},
    {"sni", SCHEMES_TLS, set_text, TEXT(sni), NEEDS_TLS},
    {"insecure", SCHEMES_TLS, set_flag, FLAG(insecure), NEEDS_TLS},
    {"cluster", SCHEME_REDIS | SCHEME_REDISS, set_flag, FLAG(cluster),
     "a cluster needs a redis:// or rediss:// URL"},
    {"addr", SCHEMES_TCP, set_addr, 0, 0, "seeds need a TCP URL"},
    {"sentinel_user", SCHEME_SENTINEL | SCHEME_SENTINELS, set_seed_secret, SEED(sentinel_user),
     NEEDS_SENTINEL},
    {"sentinel_password", SCHEME_SENTINEL | SCHEME_SENTINELS, set_seed_secret,
     SEED(sentinel_password), NEEDS_SENTINEL},
};
#undef TEXT
#undef SEED
#undef FLAG
#undef NEEDS_TLS
#undef NEEDS_SENTINEL

static const char *scheme_name(unsigned scheme)
{
    switch (scheme) {
    case SCHEME_UNIX:
        return "unix://";
    case SCHEME_REDISS:
        return "rediss://";
    case SCHEME_SENTINEL:
        return "redis+sentinel://";
    case SCHEME_SENTINELS:
        return "rediss+sentinel://";
    }
    return "redis://";
}

/* The keys scheme takes, for a message: "ca, cert, ..." or "none". */
static void keys_of(unsigned scheme, char *dst, size_t cap)
{
    size_t o = 0;
    dst[0] = '\0';
    for (size_t i = 0; i < sizeof url_keys / sizeof url_keys[0]; i++) {
        if (!(url_keys[i].schemes & scheme))
            continue;
        int w = snprintf(dst + o, cap - o, "%s%s", o ? ", " : "", url_keys[i].name);
        if (w < 0 || (size_t)w >= cap - o)
            break;
        o += (size_t)w;
    }
    if (o == 0)
        snprintf(dst, cap, "none");
}

static int set_key(net_url *u, net_seeds *seeds, unsigned scheme, const char *k, size_t klen,
                   const char *v, size_t vlen, char *err, size_t errlen)
{
    char keys[160];
    for (size_t i = 0; i < sizeof url_keys / sizeof url_keys[0]; i++) {
        const url_key *key = &url_keys[i];
        if (strlen(key->name) != klen || memcmp(key->name, k, klen) != 0)
            continue;
        if (!(key->schemes & scheme))
            return url_error(err, errlen, "%s URLs take no query key '%s': %s", scheme_name(scheme),
                             key->name, key->elsewhere);
        return key->set(u, seeds, key, v, vlen, err, errlen);
    }
    keys_of(scheme, keys, sizeof keys);
    return url_error(err, errlen, "URL query has an unknown key '%.*s' (%s takes: %s)",
                     (int)(klen > 32 ? 32 : klen), k, scheme_name(scheme), keys);
}

static int parse_query(net_url *u, net_seeds *seeds, const char *q, unsigned scheme, char *err,
                       size_t errlen)
{
    const char *end = q + strlen(q);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (!eq)
            return url_error(err, errlen, "URL query needs key=value pairs");
        int rc = set_key(u, seeds, scheme, q, (size_t)(eq - q), eq + 1, (size_t)(stop - eq - 1), err,
                         errlen);
        if (rc != RESP_OK)
            return rc;
        q = amp ? amp + 1 : end;
    }
    if (u->user[0] && !u->password[0])
        return url_error(err, errlen, "URL has a user but no password");
    if (seeds && seeds->sentinel_user[0] && !seeds->sentinel_password[0])
        return url_error(err, errlen, "URL has a sentinel_user but no sentinel_password");
    return RESP_OK;
}

/* [user:password@] at the start of s: the user part ends at the last '@'
 * before the first '/' (a password may hold '@' and '?'; a '/' in it must
 * be %-encoded, and a query value that is a file path may hold '@' after
 * its first '/'). Returns where the host part starts, or NULL on error. */
static const char *parse_auth(net_url *u, const char *s, char *err, size_t errlen)
{
    size_t auth = strcspn(s, "/");
    for (size_t i = auth; i-- > 0;)
        if (s[i] == '@')
            return parse_userinfo(u, s, i, err, errlen) == RESP_OK ? s + i + 1 : NULL;
    return s;
}

/* [user:password@]host[:port][/db][?query] for redis:// and rediss://. */
static int parse_tcp(net_url *u, net_seeds *seeds, const char *s, unsigned scheme, char *err,
                     size_t errlen)
{
    const char *hp = parse_auth(u, s, err, errlen);
    if (!hp)
        return RESP_ERR_ARG;
    size_t hplen = strcspn(hp, "/?");
    int rc = parse_hostport(u, hp, hplen, err, errlen);
    if (rc != RESP_OK)
        return rc;
    const char *rest = hp + hplen;
    if (*rest == '/') {
        size_t dlen = strcspn(rest + 1, "?");
        if (parse_db(u, rest + 1, dlen, err, errlen) != RESP_OK)
            return RESP_ERR_ARG;
        rest += 1 + dlen;
    }
    if (*rest == '?' && parse_query(u, seeds, rest + 1, scheme, err, errlen) != RESP_OK)
        return RESP_ERR_ARG;
    if (seeds && seeds->n && !u->cluster)
        return url_error(err, errlen, "URL addr= names more cluster seeds; it needs cluster=1");
    if (u->cluster && u->db)
        return url_error(err, errlen, "Redis Cluster has only database 0; drop the /db");
    return RESP_OK;
}

/* A Sentinel URL's hosts: the first is the URL's own (a connection to it
 * asks for the master), the others go to the seeds. */
static int parse_sentinels(net_url *u, net_seeds *seeds, const char *s, size_t n, char *err,
                           size_t errlen)
{
    for (int first = 1;; first = 0) {
        const char *comma = memchr(s, ',', n);
        size_t len = comma ? (size_t)(comma - s) : n;
        if (len == 0)
            return url_error(err, errlen, "Sentinel URL has an empty host in its list");
        int rc = first ? parse_hostport(u, s, len, err, errlen)
                       : add_seed(u, seeds, s, len, err, errlen);
        if (rc != RESP_OK || !comma)
            return rc;
        n -= len + 1;
        s = comma + 1;
    }
}

/* /MASTER[/db] of a Sentinel URL: the master's name (printable, no
 * spaces: sentinels name masters in space-separated messages). Returns the
 * length it took, or -1. */
static long parse_master(net_url *u, net_seeds *seeds, const char *s, char *err, size_t errlen)
{
    static const char form[] = "redis+sentinel://host[:port][,host[:port]...]/MASTER[/db]";
    size_t nlen = s[0] == '/' ? strcspn(s + 1, "/?") : 0;
    if (nlen == 0) {
        url_error(err, errlen, "Sentinel URL needs the master's name: %s", form);
        return -1;
    }
    if (pct_decode(seeds->master, sizeof seeds->master, s + 1, nlen) != 0) {
        url_error(err, errlen, "Sentinel URL: the master's name is longer than %d bytes or has "
                               "a bad %%-escape", NET_MASTER_NAME - 1);
        return -1;
    }
    for (const char *p = seeds->master; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            url_error(err, errlen, "Sentinel URL: the master's name has a space or a control "
                                   "character");
            return -1;
        }
    size_t used = 1 + nlen;
    if (s[used] == '/') {
        size_t dlen = strcspn(s + used + 1, "?");
        if (parse_db(u, s + used + 1, dlen, err, errlen) != RESP_OK)
            return -1;
        used += 1 + dlen;
    }
    return (long)used;
}

/* [user:password@]host[:port][,host[:port]...]/MASTER[/db][?query] for
 * redis+sentinel:// and rediss+sentinel://. The user and password are the
 * master's; the sentinels' own come as sentinel_user=, sentinel_password=. */
static int parse_sentinel_url(net_url *u, net_seeds *seeds, const char *s, unsigned scheme,
                              char *err, size_t errlen)
{
    if (!seeds)
        return url_error(err, errlen, "a Sentinel URL (%s) is not taken here", scheme_name(scheme));
    u->sentinel = 1;
    snprintf(u->port, sizeof u->port, "%s", NET_SENTINEL_PORT);
    const char *hp = parse_auth(u, s, err, errlen);
    if (!hp)
        return RESP_ERR_ARG;
    size_t hplen = strcspn(hp, "/?");
    if (parse_sentinels(u, seeds, hp, hplen, err, errlen) != RESP_OK)
        return RESP_ERR_ARG;
    long used = parse_master(u, seeds, hp + hplen, err, errlen);
    if (used < 0)
        return RESP_ERR_ARG;
    const char *rest = hp + hplen + used;
    if (*rest == '?' && parse_query(u, seeds, rest + 1, scheme, err, errlen) != RESP_OK)
        return RESP_ERR_ARG;
    return RESP_OK;
}

static int parse_unix(net_url *u, const char *s, char *err, size_t errlen)
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
    return q ? parse_query(u, NULL, q + 1, SCHEME_UNIX, err, errlen) : RESP_OK;
}

static void url_wipe(net_url *u, net_seeds *seeds)
{
    memset(u->password, 0, sizeof u->password);
    u->kind = 0;
    if (seeds)
        memset(seeds->sentinel_password, 0, sizeof seeds->sentinel_password);
}

int net_url_parse(net_url *u, net_seeds *seeds, const char *url, char *err, size_t errlen)
{
    static const struct {
        const char *prefix;
        unsigned scheme;
    } schemes[] = {{"redis://", SCHEME_REDIS},
                   {"rediss://", SCHEME_REDISS},
                   {"unix://", SCHEME_UNIX},
                   {"redis+sentinel://", SCHEME_SENTINEL},
                   {"rediss+sentinel://", SCHEME_SENTINELS}};
    if (err && errlen)
        err[0] = '\0';
    if (!u || !url)
        return url_error(err, errlen, "URL is NULL");
    memset(u, 0, sizeof *u);
    if (seeds)
        memset(seeds, 0, sizeof *seeds);
    strcpy(u->port, "6379");
    if (url[0] == '\0')
        return url_error(err, errlen, "URL is empty");
    size_t i = 0;
    while (i < sizeof schemes / sizeof schemes[0] && !has_prefix_ci(url, schemes[i].prefix))
        i++;
    if (i == sizeof schemes / sizeof schemes[0])
        return url_error(err, errlen, "URL must start with redis://, rediss://, unix://, "
                                      "redis+sentinel:// or rediss+sentinel://");
    const char *rest = url + strlen(schemes[i].prefix);
    unsigned sc = schemes[i].scheme;
    int rc;
    u->kind = sc == SCHEME_UNIX ? NET_URL_UNIX : NET_URL_TCP;
    u->tls = (sc & SCHEMES_TLS) != 0;
    if (sc == SCHEME_UNIX)
        rc = parse_unix(u, rest, err, errlen);
    else if (sc & (SCHEME_SENTINEL | SCHEME_SENTINELS))
        rc = parse_sentinel_url(u, seeds, rest, sc, err, errlen);
    else
        rc = parse_tcp(u, seeds, rest, sc, err, errlen);
    if (rc != RESP_OK)
        url_wipe(u, seeds);
    return rc;
}

int net_url_at(net_url *dst, const net_url *u, const char *host, size_t hostlen, const char *port,
               size_t portlen)
{
    if (hostlen == 0 || hostlen >= sizeof dst->host || portlen == 0 || portlen >= sizeof dst->port)
        return RESP_ERR_ARG;
    *dst = *u;
    memcpy(dst->host, host, hostlen);
    dst->host[hostlen] = '\0';
    memcpy(dst->port, port, portlen);
    dst->port[portlen] = '\0';
    dst->kind = NET_URL_TCP;
    return RESP_OK;
}

static int tls_default(char *dst, const char *def, const char *name, char *err, size_t errlen)
{
    if (dst[0] || !def || !def[0])
        return RESP_OK;
    size_t n = strlen(def);
    if (n >= NET_URL_FILE)
        return url_error(err, errlen, "the tls_%s option is longer than %d bytes", name,
                         NET_URL_FILE - 1);
    memcpy(dst, def, n + 1);
    return RESP_OK;
}

int net_url_tls_defaults(net_url *u, const char *ca, const char *cert, const char *key,
                         int insecure, char *err, size_t errlen)
{
    if (!u->tls)
        return RESP_OK;
    if (tls_default(u->ca, ca, "ca", err, errlen) != RESP_OK ||
        tls_default(u->cert, cert, "cert", err, errlen) != RESP_OK ||
        tls_default(u->key, key, "key", err, errlen) != RESP_OK)
        return RESP_ERR_ARG;
    if (insecure)
        u->insecure = 1;
    if (u->key[0] && !u->cert[0])
        return url_error(err, errlen, "a TLS key= needs its certificate: cert=");
    return RESP_OK;
}

void net_url_describe(const net_url *u, char *dst, size_t dstlen)
{
    if (u->kind == NET_URL_UNIX)
        snprintf(dst, dstlen, "unix:%s", u->path);
    else if (strchr(u->host, ':'))
        snprintf(dst, dstlen, "[%s]:%s", u->host, u->port);
    else
        snprintf(dst, dstlen, "%s:%s", u->host, u->port);
}

/* ---- the request queue ------------------------------------------------------- */

static net_req *rq_at(const net_conn *c, uint32_t i)
{
    return &c->q[c->qhead + i];
}

static int rq_push(net_conn *c, const net_req *r)
{
    if (c->qhead + c->qn == c->qcap) {
        if (c->qhead > 0) {
            memmove(c->q, c->q + c->qhead, c->qn * sizeof *c->q);
            c->qhead = 0;
        } else {
            uint32_t cap = c->qcap ? c->qcap * 2 : RQ_INITIAL;
            net_req *nq = resp_alloc_array(cap, sizeof *nq);
            if (!nq)
                return RESP_ERR_NOMEM;
            if (c->qn)
                memcpy(nq, c->q, c->qn * sizeof *c->q);
            resp_free(c->q);
            c->q = nq;
            c->qcap = cap;
        }
    }
    c->q[c->qhead + c->qn++] = *r;
    return RESP_OK;
}

/* A request that will never be written gives its bytes back; it stays in
 * the queue (dead) until it is reported. */
static void rq_cut(net_conn *c, uint32_t i)
{
    net_req *r = rq_at(c, i);
    if (!(r->flags & (F_WRITTEN | F_DEAD))) {
        uint64_t len = r->end - r->start;
        size_t at = (size_t)(r->start - c->wbase);
        memmove(c->wbuf + at, c->wbuf + at + len, c->wlen - at - (size_t)len);
        c->wlen -= (size_t)len;
        c->wend -= len;
        for (uint32_t j = i + 1; j < c->qn; j++) {
            net_req *n = rq_at(c, j);
            if (!(n->flags & F_DEAD)) {
                n->start -= len;
                n->end -= len;
            }
        }
    }
    r->flags = (uint8_t)((r->flags & ~F_WRITTEN) | F_DEAD);
}

/* Remove entry i; a request never written takes its bytes with it. */
static void rq_remove(net_conn *c, uint32_t i)
{
    net_req *r = rq_at(c, i);
    if (!(r->flags & F_WRITTEN))
        rq_cut(c, i);
    if (r->flags & F_DUE)
        c->ndue--;
    if (i == 0) {
        c->qhead++;
        c->qn--;
    } else {
        memmove(r, r + 1, (c->qn - i - 1) * sizeof *r);
        c->qn--;
    }
    if (c->qn == 0)
        c->qhead = 0;
}

static void rq_due(net_conn *c, net_req *r, int status)
{
    if (!(r->flags & F_DUE))
        c->ndue++;
    r->flags |= F_DUE;
    r->status = (uint8_t)status;
}

/* Does a request written on the socket still wait for its reply? */
static int written_waiting(const net_conn *c)
{
    for (uint32_t i = 0; i < c->qn; i++) {
        const net_req *r = rq_at(c, i);
        if ((r->flags & F_WRITTEN) && r->tag.owner && !(r->flags & F_DUE))
            return 1;
    }
    return 0;
}

/* The oldest request in flight on the socket: the one the next reply answers. */
static int rq_first_written(const net_conn *c, uint32_t *idx)
{
    for (uint32_t i = 0; i < c->qn; i++) {
        const net_req *r = rq_at(c, i);
        if (r->flags & F_WRITTEN) {
            *idx = i;
            return 1;
        }
        if (!(r->flags & F_DEAD))
            return 0; /* written requests come first, in stream order */
    }
    return 0;
}

static int64_t rq_deadline(const net_req *r)
{
    if (r->deadline)
        return r->deadline;
    return r->cap ? r->cap : INT64_MAX;
}

/* The connection became ready: requests waiting for it start their clock. */
static void rq_arm(net_conn *c, int64_t now)
{
    int64_t d = now + ms_to_ns(c->opts.io_timeout_ms);
    for (uint32_t i = 0; i < c->qn; i++) {
        net_req *r = rq_at(c, i);
        if (!r->deadline && !(r->flags & F_DEAD))
            r->deadline = r->cap && r->cap < d ? r->cap : d;
    }
}

/* Mark the requests whose first byte the socket (or the transport) took. */
static void mark_written(net_conn *c)
{
    uint64_t sent = c->wbase + c->woff;
    if (c->wheld > sent)
        sent = c->wheld;
    for (uint32_t i = 0; i < c->qn; i++) {
        net_req *r = rq_at(c, i);
        if (r->flags & (F_WRITTEN | F_DEAD))
            continue;
        if (r->start >= sent)
            break;
        r->flags |= F_WRITTEN;
    }
}

/* ---- failing and closing ---------------------------------------------------- */

/* The handshake buffer: room for AUTH user password, SELECT db and ROLE
 * at the URL's limits. */
#define HS_BUF 800

/* The handshake's bytes leave memory (they hold the password). */
static void hs_wipe(net_conn *c)
{
    if (c->hsbuf) {
        memset(c->hsbuf, 0, HS_BUF);
        resp_free(c->hsbuf);
        c->hsbuf = NULL;
    }
    c->hs_len = c->hs_off = 0;
}

/* Close the socket. Requests written on it can get no reply now: those
 * with an owner are reported with status (a timeout already recorded
 * stays), the rest are dropped. With all set (connecting failed), requests
 * never written fail too; otherwise they wait for the next socket. */
static void drop_socket(net_conn *c)
{
    if (c->tls)
        c->tr->close(c->tls); /* before the socket goes: it may send a close_notify */
    c->tls = NULL;
    if (c->fd >= 0) {
        close(c->fd);
        c->sockets++;
    }
    c->fd = -1;
    c->state = ST_CLOSED;
    c->rstart = c->rlen = c->ready_len = 0;
    c->rdrained = 1;
    c->hs_pending = c->hs_next = 0;
    hs_wipe(c);
    c->stale = 0;
    c->peer_eof = 0;
    c->eof_status = 0;
    c->rx = 0;
    c->rd_want = POLLIN;
    c->wr_want = POLLOUT;
    c->wheld = 0;
    resp_parser_reset(&c->parser);
}

/* Throw away output bytes before stream offset upto (written, or the rest
 * of a request that was cut off with its socket). */
static void wdiscard(net_conn *c, uint64_t upto)
{
    if (upto <= c->wbase)
        return;
    size_t n = (size_t)(upto - c->wbase);
    if (n > c->wlen)
        n = c->wlen;
    memmove(c->wbuf, c->wbuf + n, c->wlen - n);
    c->wlen -= n;
    c->wbase += n;
    c->woff = 0;
}

static void close_socket(net_conn *c, int status, int all)
{
    uint64_t keep_from = c->wbase + c->woff; /* written so far */
    mark_written(c); /* a write that failed midway took some requests' first bytes */
    for (uint32_t i = 0; i < c->qn;) {
        net_req *r = rq_at(c, i);
        int written = (r->flags & F_WRITTEN) != 0;
        if ((r->flags & F_DEAD) || !(written || all)) {
            i++;
            continue;
        }
        if (written && r->end > keep_from)
            keep_from = r->end; /* cut off mid-request: its rest goes too */
        if (!r->tag.owner) {
            rq_remove(c, i);
            continue;
        }
        if (!(r->flags & F_DUE))
            rq_due(c, r, status);
        rq_cut(c, i);
        i++;
    }
    wdiscard(c, all ? c->wend : keep_from);
    drop_socket(c);
}

/* c->errstr, cut to its size (a peer's description and a transport's
 * reason may not both fit, and that is no error); the arguments may be
 * c->errstr itself. */
static void errstr_vset(net_conn *c, const char *fmt, va_list ap)
{
    char msg[sizeof c->errstr];
    vsnprintf(msg, sizeof msg, fmt, ap);
    memcpy(c->errstr, msg, sizeof msg);
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void errstr_set(net_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errstr_vset(c, fmt, ap);
    va_end(ap);
}

static int conn_fail(net_conn *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errstr_vset(c, fmt, ap);
    va_end(ap);
    /* Before the handshake is through nothing can be sent, and after a TLS
     * refusal (certificate required) a new connection would meet the same:
     * fail everything. */
    close_socket(c, status, c->state != ST_READY || status == RESP_ERR_TLS);
    return status;
}

/* ---- public: lifecycle -------------------------------------------------------- */

int net_conn_new(net_conn **out, const net_url *url, const net_opts *opts)
{
    *out = NULL;
    net_conn *c = resp_alloc_array(1, sizeof *c);
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
    if (c->opts.max_reply == 0) {
        /* saturates: max_bulk + 4 KiB may not fit a 32-bit size_t */
        size_t bulk = c->opts.limits.max_bulk;
        c->opts.max_reply = bulk + 4096 > bulk ? bulk + 4096 : SIZE_MAX;
    }
    /* Lock replies are small: both the element array and the read buffer
     * start small and grow (to max_elems, max_reply) when a reply needs
     * more, and stay grown: a connection reaches its working size once. */
    size_t most = (size_t)c->opts.limits.max_array + 8;
    size_t nelems = most < ELEMS_INITIAL ? most : ELEMS_INITIAL;
    if (c->opts.max_elems < most)
        c->opts.max_elems = most;
    size_t rcap = RBUF_INITIAL < c->opts.max_reply ? RBUF_INITIAL : c->opts.max_reply;
    c->elems = resp_alloc_array(nelems, sizeof *c->elems);
    c->rbuf = resp_alloc(rcap);
    if (!c->elems || !c->rbuf) {
        resp_free(c->elems);
        resp_free(c->rbuf);
        resp_free(c);
        return RESP_ERR_NOMEM;
    }
    c->rcap = rcap;
    c->parser.elems = c->elems;
    c->parser.cap = nelems;
    c->fd = -1;
    c->rdrained = 1;
    c->rd_want = POLLIN;
    c->wr_want = POLLOUT;
    if (url->kind == NET_URL_TCP && url->tls)
        c->tr = c->opts.tls; /* NULL: connecting fails with a message */
    net_url_describe(url, c->desc, sizeof c->desc);
    *out = c;
    return RESP_OK;
}

void net_conn_close(net_conn *c)
{
    drop_socket(c);
    c->qhead = c->qn = c->ndue = 0;
    c->wlen = c->woff = 0;
    c->wbase = c->wend;
}

void net_conn_retarget(net_conn *c, const net_url *url, const char *why)
{
    snprintf(c->errstr, sizeof c->errstr, "%s", why);
    close_socket(c, RESP_ERR_IO, 1);
    if (c->tr_cfg)
        c->tr->config_free(c->tr_cfg);
    c->tr_cfg = NULL;
    memset(c->url.password, 0, sizeof c->url.password);
    c->url = *url;
    c->tr = url->kind == NET_URL_TCP && url->tls ? c->opts.tls : NULL;
    net_url_describe(url, c->desc, sizeof c->desc);
}

void net_conn_free(net_conn *c)
{
    if (!c)
        return;
    net_conn_close(c);
    if (c->tr_cfg)
        c->tr->config_free(c->tr_cfg);
    memset(c->url.password, 0, sizeof c->url.password);
    hs_wipe(c);
    resp_free(c->wbuf);
    resp_free(c->rbuf);
    resp_free(c->elems);
    resp_free(c->q);
    resp_free(c);
}

static int wbuf_reserve(net_conn *c, size_t extra)
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

int net_conn_request(net_conn *c, int argc, const char *const *argv, const size_t *lens,
                     net_tag tag, int64_t cap, int64_t now)
{
    size_t n = resp_command_len(argc, lens);
    if (n == 0)
        return RESP_ERR_ARG;
    int rc = wbuf_reserve(c, n);
    if (rc != RESP_OK)
        return rc;
    net_req r;
    memset(&r, 0, sizeof r);
    r.tag = tag;
    r.cap = cap;
    if (c->state == ST_READY && !c->stale) {
        int64_t d = now + ms_to_ns(c->opts.io_timeout_ms);
        r.deadline = cap && cap < d ? cap : d;
    }
    r.start = c->wend;
    r.end = c->wend + n;
    if (rq_push(c, &r) != RESP_OK)
        return RESP_ERR_NOMEM;
    c->wlen += resp_command_encode(c->wbuf + c->wlen, argc, argv, lens);
    c->wend += n;
    return RESP_OK;
}

void net_conn_set_push(net_conn *c)
{
    c->push = 1;
}

net_tag net_conn_oldest(const net_conn *c)
{
    uint32_t i;
    net_tag none = {NULL, 0, 0};
    return rq_first_written(c, &i) ? rq_at(c, i)->tag : none;
}

void net_conn_ack(net_conn *c)
{
    uint32_t i;
    if (rq_first_written(c, &i))
        rq_remove(c, i);
}

void net_conn_fail(net_conn *c, int status, const char *why)
{
    if (c->state != ST_CLOSED)
        conn_fail(c, status, "%s", why);
}

unsigned net_conn_forget(net_conn *c, const void *owner)
{
    unsigned written = 0;
    for (uint32_t i = 0; i < c->qn;) {
        net_req *r = rq_at(c, i);
        if (r->tag.owner != owner) {
            i++;
            continue;
        }
        if (r->flags & F_WRITTEN) {
            written++;
            r->tag.owner = NULL;
            if (r->flags & F_DUE) {
                r->flags &= (uint8_t)~F_DUE;
                c->ndue--;
            }
            i++;
            continue;
        }
        rq_remove(c, i);
    }
    return written;
}

const char *net_conn_errstr(const net_conn *c)
{
    return c->errstr;
}

uint64_t net_conn_generation(const net_conn *c)
{
    return c->gen;
}

uint64_t net_conn_sockets(const net_conn *c)
{
    return c->sockets;
}

int net_conn_ready(const net_conn *c)
{
    return c->state == ST_READY && !c->peer_eof;
}

unsigned net_conn_requests(const net_conn *c)
{
    return c->qn;
}

const net_url *net_conn_url(const net_conn *c)
{
    return &c->url;
}

const char *net_conn_desc(const net_conn *c)
{
    return c->desc;
}

/* ---- connecting ------------------------------------------------------------- */

static int resolve(net_conn *c)
{
    c->naddr = c->ai = 0;
    if (c->url.kind == NET_URL_UNIX) {
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
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            a->ai_addrlen > sizeof c->addrs[0])
            continue;
        memcpy(&c->addrs[c->naddr], a->ai_addr, a->ai_addrlen);
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

static void hs_add(net_conn *c, int kind, int argc, const char *const *argv, const size_t *lens)
{
    c->hs_len += resp_command_encode(c->hsbuf + c->hs_len, argc, argv, lens);
    c->hs_kind[c->hs_pending++] = kind;
}

/* AUTH and SELECT, as the URL asks, and ROLE for master_only, into hsbuf
 * (made here when there is any). RESP_OK, or RESP_ERR_NOMEM. */
static int encode_handshake(net_conn *c)
{
    static const char *const role[1] = {"ROLE"};
    static const size_t role_len[1] = {4};
    const char *argv[3];
    size_t lens[3];
    char dbbuf[16];

    hs_wipe(c);
    c->hs_pending = c->hs_next = 0;
    if (!c->url.password[0] && !c->url.db && !c->opts.master_only)
        return RESP_OK;
    if (!(c->hsbuf = resp_alloc(HS_BUF)))
        return RESP_ERR_NOMEM;
    if (c->url.password[0]) {
        int argc = 0;
        argv[argc] = "AUTH";
        lens[argc++] = 4;
        if (c->url.user[0]) {
            argv[argc] = c->url.user;
            lens[argc++] = strlen(c->url.user);
        }
        argv[argc] = c->url.password;
        lens[argc++] = strlen(c->url.password);
        hs_add(c, HS_AUTH, argc, argv, lens);
    }
    if (c->url.db) {
        snprintf(dbbuf, sizeof dbbuf, "%d", c->url.db);
        argv[0] = "SELECT";
        lens[0] = 6;
        argv[1] = dbbuf;
        lens[1] = strlen(dbbuf);
        hs_add(c, HS_SELECT, 2, argv, lens);
    }
    if (c->opts.master_only)
        hs_add(c, HS_ROLE, 1, role, role_len);
    return RESP_OK;
}

static void become_ready(net_conn *c, int64_t now)
{
    c->state = ST_READY;
    c->rx_ready = c->rx;
    hs_wipe(c);
    rq_arm(c, now);
}

/* The byte stream is up (TCP, or TLS over it): AUTH/SELECT go out before
 * any request, so a request never runs unauthenticated or in the wrong db;
 * with master_only, ROLE too, so none runs on a replica (a demoted master
 * still answers PING: only ROLE tells). */
static int start_session(net_conn *c, int64_t now)
{
    c->last_rx = now;
    if (encode_handshake(c) != RESP_OK)
        return conn_fail(c, RESP_ERR_NOMEM, "%s: out of memory", c->desc);
    if (c->hs_len == 0)
        become_ready(c, now);
    else
        c->state = ST_HANDSHAKE;
    return RESP_OK;
}

/* A transport's failure status: only codes that mean something here. */
static int tr_status(int rc)
{
    return rc == RESP_ERR_IO || rc == RESP_ERR_NOMEM ? rc : RESP_ERR_TLS;
}

/* One step of the TLS handshake; the session starts once it is through. */
static int tls_step(net_conn *c, int64_t now)
{
    char err[300];
    err[0] = '\0';
    int rc = c->tr->handshake(c->tls, err, sizeof err);
    if (rc == REDLOCK_WANT_READ || rc == REDLOCK_WANT_WRITE) {
        c->rd_want = rc == REDLOCK_WANT_READ ? POLLIN : POLLOUT;
        return RESP_OK;
    }
    if (rc != RESP_OK)
        return conn_fail(c, tr_status(rc), "TLS handshake with %s failed: %s", c->desc,
                         err[0] ? err : "no reason given");
    c->rd_want = POLLIN;
    return start_session(c, now);
}

/* TCP is up on a rediss:// connection: the transport's settings (once per
 * connection object), a session on the socket, the first handshake step. */
static int tls_start(net_conn *c, int64_t now)
{
    char err[300];
    err[0] = '\0';
    c->state = ST_TLS;
    if (!c->tr)
        return conn_fail(c, RESP_ERR_ARG,
                         "%s: rediss:// needs a TLS transport (redlock_options.tls)", c->desc);
    if (!c->tr_cfg) {
        redlock_tls_params p = {c->url.host, c->url.sni,  c->url.ca,
                                c->url.cert, c->url.key, c->url.insecure};
        int rc = c->tr->config_new(&c->tr_cfg, &p, err, sizeof err);
        if (rc != RESP_OK) {
            c->tr_cfg = NULL;
            return conn_fail(c, tr_status(rc), "TLS setup for %s: %s", c->desc, err);
        }
    }
    int rc = c->tr->open(&c->tls, c->tr_cfg, c->fd, err, sizeof err);
    if (rc != RESP_OK) {
        c->tls = NULL;
        return conn_fail(c, tr_status(rc), "TLS with %s: %s", c->desc, err);
    }
    return tls_step(c, now);
}

/* The socket is connected: set options, then TLS or straight to the session. */
static void set_blocking(net_conn *c);

static int on_connected(net_conn *c, int64_t now)
{
    int one = 1;
    if (c->url.kind == NET_URL_TCP)
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
    (void)setsockopt(c->fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    c->gen++;
    c->last_rx = now;
    if (c->url.kind == NET_URL_TCP && c->url.tls)
        return tls_start(c, now);
    set_blocking(c);
    return start_session(c, now);
}

/* A plain socket, once connected, goes to blocking mode with a receive
 * timeout of io_timeout_ms; every send and recv passes MSG_DONTWAIT, but
 * the one in net_conn_block, which waits for a reply in recv() where
 * poll() then recv() would take two system calls. Where that cannot be
 * set up the socket stays non-blocking and net_conn_block declines. */
static void set_blocking(net_conn *c)
{
    c->blocking = 0;
    int ms = c->opts.io_timeout_ms;
    struct timeval tv;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    if (ms <= 0 || setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        return;
    int fl = fcntl(c->fd, F_GETFL);
    if (fl >= 0 && fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) == 0)
        c->blocking = 1;
}

/* Try addresses from c->ai on until one connects or is in progress. */
static int try_connect(net_conn *c, int64_t now)
{
    while (c->ai < c->naddr) {
        struct sockaddr_un un;
        const struct sockaddr *sa = &c->addrs[c->ai].sa;
        socklen_t len;
        if (c->url.kind == NET_URL_UNIX) {
            memset(&un, 0, sizeof un);
            un.sun_family = AF_UNIX;
            memcpy(un.sun_path, c->url.path, strlen(c->url.path) + 1);
            sa = (const struct sockaddr *)&un;
            len = sizeof un;
        } else {
            len = sa->sa_family == AF_INET ? sizeof c->addrs[0].in4 : sizeof c->addrs[0].in6;
        }
        int fd = new_socket(sa->sa_family);
        if (fd < 0) {
            c->conn_errno = errno;
            c->ai++;
            continue;
        }
        c->fd = fd;
        c->sockets++;
        c->state = ST_CONNECTING;
        if (connect(fd, sa, len) == 0)
            return on_connected(c, now);
        if (errno == EINPROGRESS)
            return RESP_OK;
        c->conn_errno = errno;
        close(fd);
        c->sockets++;
        c->fd = -1;
        c->ai++;
    }
    c->state = ST_CONNECTING; /* a connect failure fails every request */
    return conn_fail(c, RESP_ERR_IO, "cannot connect to %s: %s", c->desc,
                     strerror(c->conn_errno));
}

static int start_connect(net_conn *c, int64_t now)
{
    c->conn_deadline = now + ms_to_ns(c->opts.connect_timeout_ms);
    c->conn_errno = ECONNREFUSED;
    c->state = ST_CONNECTING;
    if (resolve(c) != RESP_OK)
        return RESP_ERR_IO;
    return try_connect(c, now);
}

/* POLLOUT (or an error) on a connecting socket: did it work? A spurious
 * event on a socket still connecting changes nothing. */
static int finish_connect(net_conn *c, int64_t now)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) < 0 && errno == ENOTCONN)
            return RESP_OK; /* still in progress */
        return on_connected(c, now);
    }
    c->conn_errno = err;
    close(c->fd);
    c->sockets++;
    c->fd = -1;
    c->ai++;
    return try_connect(c, now);
}

/* ---- I/O ---------------------------------------------------------------------- */

/* Through the transport. A step that asks to be retried may hold up to
 * what it was offered: *held says how much (0: nothing is held). */
static int tls_send(net_conn *c, const char *buf, size_t len, size_t *off, size_t *held)
{
    char err[300];
    *held = 0;
    while (*off < len) {
        size_t put = 0, chunk = len - *off < TLS_WRITE_MAX ? len - *off : TLS_WRITE_MAX;
        err[0] = '\0';
        int rc = c->tr->write(c->tls, buf + *off, chunk, &put, err, sizeof err);
        if (rc == RESP_OK && put > 0 && put <= chunk) {
            *off += put;
            c->wr_want = POLLOUT;
            continue;
        }
        if (rc == REDLOCK_WANT_WRITE || rc == REDLOCK_WANT_READ) {
            c->wr_want = rc == REDLOCK_WANT_WRITE ? POLLOUT : POLLIN;
            *held = chunk;
            return RESP_OK;
        }
        return conn_fail(c, rc == RESP_OK ? RESP_ERR_IO : tr_status(rc), "write to %s: %s",
                         c->desc, err[0] ? err : "nothing written");
    }
    return RESP_OK;
}

static int send_some(net_conn *c, const char *buf, size_t len, size_t *off, size_t *held)
{
    if (c->tls)
        return tls_send(c, buf, len, off, held);
    *held = 0;
    while (*off < len) {
        ssize_t n = send(c->fd, buf + *off, len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            *off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return RESP_OK;
        return conn_fail(c, RESP_ERR_IO, "write to %s: %s", c->desc,
                         n < 0 ? strerror(errno) : "nothing written");
    }
    return RESP_OK;
}

enum { IDLE_OK, IDLE_DEAD, IDLE_FAILED };

/* TLS: a peek would see the records a server sends unasked (TLS 1.3
 * session tickets) and call a good socket dead. Read instead: the
 * transport digests such records and reports no data; application data
 * (unasked for) or the end of the stream make the socket dead; an error
 * the transport calls TLS (an alert: certificate required) fails the
 * connection, since a new one would meet the same. */
static int tls_idle_check(net_conn *c)
{
    char err[300];
    size_t got = 0;
    if (c->rlen >= c->rcap)
        return IDLE_OK;
    err[0] = '\0';
    int rc = c->tr->read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen, &got, err, sizeof err);
    if (rc == REDLOCK_WANT_READ || rc == REDLOCK_WANT_WRITE)
        return IDLE_OK;
    if (rc != RESP_OK && tr_status(rc) == RESP_ERR_TLS) {
        conn_fail(c, RESP_ERR_TLS, "read from %s: %s", c->desc, err);
        return IDLE_FAILED;
    }
    return IDLE_DEAD;
}

/* Nothing is in flight and the socket sat idle since its last reply: if
 * the server closed it meanwhile (restart, CLIENT KILL, timeout), reconnect
 * now instead of failing the request about to be written. A socket that
 * has answered nothing yet is not checked: a close there is news about
 * this connection (a TLS server that wants a client certificate refuses
 * right after the handshake), and reconnecting would only meet it again. */
static int idle_check(net_conn *c, int64_t now)
{
    char b;
    uint32_t i;
    if (c->push || c->woff != 0 || c->rlen != c->rstart || now - c->last_rx < IDLE_CHECK_NS ||
        c->rx == c->rx_ready || rq_first_written(c, &i))
        return IDLE_OK;
    if (c->tls)
        return tls_idle_check(c);
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return IDLE_DEAD;
    return IDLE_OK;
}

static int do_write(net_conn *c, int64_t now)
{
    size_t held;
    if (c->state == ST_HANDSHAKE)
        return send_some(c, c->hsbuf, c->hs_len, &c->hs_off, &held);
    if (c->state != ST_READY || c->stale || c->peer_eof || c->woff == c->wlen)
        return RESP_OK;
    int idle = idle_check(c, now);
    if (idle == IDLE_FAILED)
        return RESP_ERR_TLS;
    if (idle == IDLE_DEAD) {
        snprintf(c->errstr, sizeof c->errstr, "%s closed the connection while it was idle",
                 c->desc);
        close_socket(c, RESP_ERR_IO, 0); /* nothing was written on it */
        return start_connect(c, now);
    }
    int rc = send_some(c, c->wbuf, c->wlen, &c->woff, &held);
    if (rc != RESP_OK)
        return rc;
    if (held)
        c->wheld = c->wbase + c->woff + held;
    mark_written(c);
    if (c->woff == c->wlen) {
        c->wbase += c->wlen;
        c->wlen = c->woff = 0;
    }
    return RESP_OK;
}

/* Make room at the end of the read buffer: compact, then grow up to the
 * cap. Replies already complete were taken before, so a full buffer holds
 * one reply that needs more room. */
static int rbuf_room(net_conn *c)
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
    size_t cap = c->rcap < c->opts.max_reply / 2 ? c->rcap * 2 : c->opts.max_reply;
    char *nb = resp_realloc(c->rbuf, cap);
    if (!nb)
        return conn_fail(c, RESP_ERR_NOMEM, "out of memory reading from %s", c->desc);
    c->rbuf = nb;
    c->rcap = cap;
    return RESP_OK;
}

/* What a TLS port does to a plain client: it closes or resets the
 * connection before any reply. Worth a hint then. */
static const char *plain_hint(const net_conn *c)
{
    return c->rx == 0 && c->url.kind == NET_URL_TCP && !c->url.tls
               ? " before any reply (if it is a TLS port, use a rediss:// URL)"
               : "";
}

static void sock_read(net_conn *c, int64_t now, int flags)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, flags);
        if (n > 0) {
            c->rlen += (size_t)n;
            c->rx += (uint64_t)n;
            c->last_rx = now;
            c->rdrained = 0;
            return;
        }
        if (n < 0 && errno == EINTR && flags)
            continue;
        /* a blocking recv returns on a signal (its timeout would start over) */
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        c->peer_eof = 1;
        c->eof_status = RESP_ERR_IO;
        if (n == 0)
            errstr_set(c, "connection closed by %s%s", c->desc, plain_hint(c));
        else
            errstr_set(c, "read from %s: %s%s", c->desc, strerror(errno), plain_hint(c));
        return;
    }
}

/* Through the transport, until it has nothing more buffered (poll() could
 * not tell) or the buffer is full (the rest is read once replies are
 * taken: net_conn_pump). */
static void tls_read(net_conn *c, int64_t now)
{
    char err[200];
    for (;;) {
        size_t got = 0;
        err[0] = '\0';
        int rc = c->tr->read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen, &got, err, sizeof err);
        if (rc == RESP_OK && got > 0 && got <= c->rcap - c->rlen) {
            c->rlen += got;
            c->rx += got;
            c->last_rx = now;
            c->rdrained = 0;
            c->rd_want = POLLIN;
            if (c->rlen == c->rcap || !c->tr->pending(c->tls))
                return;
            continue;
        }
        if (rc == REDLOCK_WANT_READ || rc == REDLOCK_WANT_WRITE) {
            c->rd_want = rc == REDLOCK_WANT_READ ? POLLIN : POLLOUT;
            return;
        }
        c->peer_eof = 1;
        c->eof_status = rc == RESP_OK ? RESP_ERR_IO : tr_status(rc);
        if (rc == RESP_OK)
            errstr_set(c, "connection closed by %s", c->desc);
        else
            errstr_set(c, "read from %s: %s", c->desc, err[0] ? err : "failed");
        return;
    }
}

/* Read what there is. End of stream or a reset is noted, not acted on:
 * replies that came before it are still handed out (net_conn_take). */
static int do_read(net_conn *c, int64_t now)
{
    if (c->ready_len > 0 || c->peer_eof)
        return RESP_OK; /* take what is buffered first */
    if (rbuf_room(c) != RESP_OK)
        return RESP_ERR_IO;
    if (c->tls)
        tls_read(c, now);
    else
        sock_read(c, now, MSG_DONTWAIT);
    return RESP_OK;
}

/* ROLE's answer: {"master", ...} is what master_only wants. */
static int check_role(net_conn *c, const resp_reply *r)
{
    if (r->type == RESP_ARRAY && r->n >= 1 && r[1].type == RESP_BULK && r[1].len == 6 &&
        memcmp(r[1].str, "master", 6) == 0)
        return RESP_OK;
    if (r->type == RESP_ARRAY && r->n >= 1 && r[1].type == RESP_BULK)
        return conn_fail(c, RESP_ERR_IO, "%s is not a master (ROLE says %.*s)", c->desc,
                         (int)(r[1].len > 32 ? 32 : r[1].len), r[1].str);
    return RESP_ERR_PROTOCOL;
}

static int check_handshake_reply(net_conn *c, const resp_reply *r)
{
    int kind = c->hs_kind[c->hs_next++];
    const char *what = kind == HS_AUTH ? "AUTH" : kind == HS_SELECT ? "SELECT" : "ROLE";
    if (kind == HS_ROLE && r->type != RESP_ERROR) {
        int rc = check_role(c, r);
        if (rc != RESP_ERR_PROTOCOL)
            return rc;
    } else if (r->type == RESP_STATUS)
        return RESP_OK;
    if (r->type == RESP_ERROR)
        return conn_fail(c, RESP_ERR_AUTH, "%s refused by %s: %.*s", what, c->desc,
                         (int)(r->len > 160 ? 160 : r->len), r->str);
    return conn_fail(c, RESP_ERR_PROTOCOL, "unexpected reply to %s from %s", what, c->desc);
}

/* Parse the replies to AUTH/SELECT; the connection is ready after the last. */
static void handshake_replies(net_conn *c, int64_t now)
{
    while (c->state == ST_HANDSHAKE && c->rstart < c->rlen) {
        long r = resp_parse(&c->parser, c->rbuf + c->rstart, c->rlen - c->rstart);
        if (r == RESP_PARSE_INCOMPLETE)
            break;
        if (r < 0) {
            conn_fail(c, RESP_ERR_PROTOCOL, "bad reply from %s: %s", c->desc, c->parser.errstr);
            return;
        }
        if (check_handshake_reply(c, c->elems) != RESP_OK)
            return;
        c->rstart += (size_t)r;
        if (c->hs_next == c->hs_pending)
            become_ready(c, now);
    }
    if (c->state == ST_HANDSHAKE && c->peer_eof)
        conn_fail(c, c->eof_status, "%s", c->errstr);
    if (c->rstart == c->rlen)
        c->rstart = c->rlen = 0;
}

/* ---- driving --------------------------------------------------------------------- */

int net_conn_fd(const net_conn *c)
{
    return c->fd;
}

short net_conn_events(const net_conn *c)
{
    /* rd_want, wr_want: POLLIN and POLLOUT, unless a TLS step asked for the other */
    switch (c->state) {
    case ST_CONNECTING:
        return POLLOUT;
    case ST_TLS:
        return c->rd_want;
    case ST_HANDSHAKE:
        return (short)(c->rd_want | (c->hs_off < c->hs_len ? c->wr_want : 0));
    case ST_READY:
        if (c->peer_eof)
            return 0;
        return (short)(c->rd_want | (!c->stale && c->woff < c->wlen ? c->wr_want : 0));
    }
    return 0;
}

/* The transport holds bytes poll() cannot see, and they may be read now:
 * once the replies already buffered were taken (AUTH/SELECT replies are
 * parsed as they come), or the read buffer would grow for replies that
 * only wait to be taken. */
static int tls_pending(const net_conn *c)
{
    return c->tls && (c->state == ST_HANDSHAKE || (c->state == ST_READY && c->rdrained)) &&
           c->ready_len == 0 && !c->peer_eof && c->tr->pending(c->tls);
}

/* Work that needs no event: a closed connection with requests to send, a
 * result to hand out, bytes a transport holds, a timed-out connection
 * ready to close. */
static int work_now(const net_conn *c)
{
    if (c->ndue > 0 || c->peer_eof || tls_pending(c))
        return 1;
    if (c->state == ST_CLOSED)
        return c->wlen > c->woff;
    return c->stale && !written_waiting(c);
}

int64_t net_conn_deadline(const net_conn *c)
{
    if (work_now(c))
        return 0;
    int64_t d = INT64_MAX;
    if (c->state == ST_CONNECTING || c->state == ST_TLS || c->state == ST_HANDSHAKE)
        d = c->conn_deadline;
    for (uint32_t i = 0; i < c->qn; i++) {
        const net_req *r = rq_at(c, i);
        if (r->flags & (F_DUE | F_DEAD))
            continue;
        if (!r->tag.owner && !(r->flags & F_WRITTEN))
            continue;
        int64_t rd = rq_deadline(r);
        if (rd < d)
            d = rd;
    }
    return d;
}

/* Bytes may have come in: read them; AUTH/SELECT replies move the
 * handshake on, and the requests go out once it is through. */
static void on_readable(net_conn *c, int64_t now)
{
    if (do_read(c, now) != RESP_OK)
        return;
    if (c->state == ST_HANDSHAKE) {
        handshake_replies(c, now);
        if (c->state == ST_READY)
            do_write(c, now);
    }
}

void net_conn_io(net_conn *c, short revents, int64_t now)
{
    if (c->fd < 0 || (revents & POLLNVAL))
        return;
    if (c->state == ST_CONNECTING) {
        if ((revents & (POLLOUT | POLLERR | POLLHUP)) && finish_connect(c, now) == RESP_OK)
            do_write(c, now);
        return;
    }
    if (c->state == ST_TLS) {
        if ((revents & (c->rd_want | POLLERR | POLLHUP)) && tls_step(c, now) == RESP_OK)
            do_write(c, now);
        return;
    }
    if ((revents & c->wr_want) && do_write(c, now) != RESP_OK)
        return;
    if (revents & (c->rd_want | POLLERR | POLLHUP))
        on_readable(c, now);
}

/* Time out requests past their deadline. One that was written makes the
 * connection stale: its reply may still come, so nothing more is written
 * and the socket closes once no written request waits for an answer. */
static void check_deadlines(net_conn *c, int64_t now)
{
    if ((c->state == ST_CONNECTING || c->state == ST_TLS || c->state == ST_HANDSHAKE) &&
        now >= c->conn_deadline) {
        conn_fail(c, RESP_ERR_TIMEOUT, "timed out %s %s (deadline %d ms%s)",
                  c->state == ST_CONNECTING ? "connecting to"
                  : c->state == ST_TLS      ? "in the TLS handshake with"
                                            : "in AUTH/SELECT with",
                  c->desc, c->opts.connect_timeout_ms,
                  c->state == ST_TLS ? "; is it a TLS port?" : "");
        return;
    }
    for (uint32_t i = 0; i < c->qn;) {
        net_req *r = rq_at(c, i);
        if ((r->flags & (F_DUE | F_DEAD)) || now < rq_deadline(r)) {
            i++;
            continue;
        }
        if (r->flags & F_WRITTEN) {
            if (c->push) {
                conn_fail(c, RESP_ERR_TIMEOUT, "timed out waiting for %s (deadline %d ms)",
                          c->desc, c->opts.io_timeout_ms);
                return;
            }
            c->stale = 1;
            snprintf(c->errstr, sizeof c->errstr, "timed out waiting for a reply from %s%s",
                     c->desc, r->deadline && r->deadline == r->cap ? " (capped by the caller)" : "");
        } else {
            snprintf(c->errstr, sizeof c->errstr, "timed out before %s could take the request%s",
                     c->desc, r->deadline && r->deadline == r->cap ? " (capped by the caller)" : "");
        }
        if (!r->tag.owner && !(r->flags & F_WRITTEN)) {
            rq_remove(c, i);
            continue;
        }
        if (r->tag.owner)
            rq_due(c, r, RESP_ERR_TIMEOUT);
        if (!(r->flags & F_WRITTEN))
            rq_cut(c, i); /* never sent: it must not go out late */
        r->deadline = INT64_MAX; /* its time is up once; a late reply is dropped */
        i++;
    }
}

/* How much earlier than SO_RCVTIMEO a deadline may be for net_conn_block
 * to wait in recv() all the same (its wait may end that much late). */
#define BLOCK_SLACK_NS 1000000

/* The whole policy of the one-recv() wait: a plain socket in blocking
 * mode, nothing to write, a written request waiting, nothing buffered,
 * and nothing due (a request of c's, or the caller's `until`) sooner than
 * SO_RCVTIMEO can wake the recv. */
int net_conn_block(net_conn *c, int64_t now, int64_t until)
{
    uint32_t first;
    if (!c->blocking || c->fd < 0 || c->state != ST_READY || c->push || c->stale ||
        c->peer_eof || c->woff != c->wlen || c->ready_len > 0 || c->ndue > 0 ||
        c->rlen != c->rstart || !rq_first_written(c, &first))
        return 0;
    int64_t soonest = until;
    for (uint32_t i = 0; i < c->qn; i++) {
        const net_req *r = rq_at(c, i);
        if (!(r->flags & (F_DUE | F_DEAD)) && rq_deadline(r) < soonest)
            soonest = rq_deadline(r);
    }
    if (soonest - now < ms_to_ns(c->opts.io_timeout_ms) - BLOCK_SLACK_NS)
        return 0;
    if (rbuf_room(c) != RESP_OK)
        return 1;
    sock_read(c, net_now_ns(), 0);
    return 1;
}

void net_conn_pump(net_conn *c, int64_t now)
{
    check_deadlines(c, now);
    if (c->stale && c->ndue == 0 && !written_waiting(c))
        close_socket(c, RESP_ERR_TIMEOUT, 0); /* only replies nobody wants are left */
    if (c->state == ST_CLOSED && c->wlen > c->woff)
        start_connect(c, now);
    if (tls_pending(c))
        on_readable(c, now);
    if (c->state == ST_READY || c->state == ST_HANDSHAKE)
        do_write(c, now);
}

/* A reply with more elements than the array holds: grow it, up to
 * max_elems, and start the reply over (its bytes are still there). */
static int grow_elems(net_conn *c)
{
    if (c->parser.nelem < c->parser.cap || c->parser.cap >= c->opts.max_elems)
        return RESP_ERR_PROTOCOL;
    size_t cap = c->parser.cap * 2 < c->opts.max_elems ? c->parser.cap * 2 : c->opts.max_elems;
    resp_reply *e = resp_realloc(c->elems, cap * sizeof *e);
    if (!e)
        return RESP_ERR_NOMEM;
    c->elems = e;
    resp_parser_reset(&c->parser);
    c->parser.elems = e;
    c->parser.cap = cap;
    return RESP_OK;
}

/* Report the oldest due request. */
static int take_due(net_conn *c, net_tag *tag)
{
    for (uint32_t i = 0; i < c->qn; i++) {
        net_req *r = rq_at(c, i);
        if (!(r->flags & F_DUE))
            continue;
        int st = r->status;
        *tag = r->tag;
        if (r->flags & F_WRITTEN) {
            /* timed out, socket still open: its late reply is read and dropped */
            r->flags &= (uint8_t)~F_DUE;
            c->ndue--;
            r->tag.owner = NULL;
        } else {
            rq_remove(c, i);
        }
        return st;
    }
    return RESP_IDLE;
}

int net_conn_take(net_conn *c, net_tag *tag, const resp_reply **r, size_t *nelem)
{
    for (;;) {
        if (c->ndue > 0)
            return take_due(c, tag);
        if (c->ready_len > 0)
            return RESP_IDLE; /* the caller has not consumed the last one */
        if (c->state != ST_READY)
            return RESP_IDLE;
        long n = RESP_PARSE_INCOMPLETE;
        if (c->rstart < c->rlen)
            n = resp_parse(&c->parser, c->rbuf + c->rstart, c->rlen - c->rstart);
        if (n == RESP_PARSE_INCOMPLETE) {
            c->rdrained = 1;
            if (c->rstart == c->rlen)
                c->rstart = c->rlen = 0;
            if (!c->peer_eof)
                return RESP_IDLE;
            conn_fail(c, c->eof_status, "%s", c->errstr);
            continue;
        }
        if (n < 0 && grow_elems(c) == RESP_OK)
            continue; /* parse it again with room for more elements */
        if (n < 0) {
            conn_fail(c, RESP_ERR_PROTOCOL, "bad reply from %s: %s", c->desc, c->parser.errstr);
            continue;
        }
        uint32_t i = 0;
        memset(tag, 0, sizeof *tag);
        if (!c->push) {
            if (!rq_first_written(c, &i)) {
                conn_fail(c, RESP_ERR_PROTOCOL, "unsolicited reply from %s", c->desc);
                continue;
            }
            if (!rq_at(c, i)->tag.owner) { /* nobody waits for it */
                c->rstart += (size_t)n;
                rq_remove(c, i);
                continue;
            }
            *tag = rq_at(c, i)->tag;
        }
        c->ready_len = (size_t)n;
        *r = c->elems;
        if (nelem)
            *nelem = c->parser.nelem;
        return RESP_OK;
    }
}

void net_conn_consume(net_conn *c)
{
    uint32_t i;
    if (c->ready_len == 0)
        return;
    c->rstart += c->ready_len;
    c->ready_len = 0;
    if (!c->push && rq_first_written(c, &i))
        rq_remove(c, i);
    if (c->rstart == c->rlen)
        c->rstart = c->rlen = 0;
}
