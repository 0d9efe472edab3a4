/* net.h - internal: connections (net.c). Nothing here knows about locks.
 *
 * A net_conn is one connection to one server, driven without blocking: the
 * caller asks which poll() events it wants (net_conn_fd, net_conn_events),
 * hands back what poll() reported (net_conn_io), lets it start connecting,
 * write and check deadlines (net_conn_pump), and takes results in order
 * (net_conn_take). Requests are pipelined: each carries a tag from the
 * caller and its own absolute deadline, and every reply is matched to its
 * request by order. No call blocks; nothing here calls back.
 *
 * States: CLOSED -> CONNECTING -> [TLS] -> HANDSHAKE (AUTH/SELECT/ROLE) -> READY,
 * where TLS (rediss:// URLs) runs a transport's handshake, after which
 * every byte goes through the transport instead of recv/send. A
 * connection that fails (refused, reset, closed, malformed reply) fails
 * the requests that were written on it and carries the ones never written
 * to the next connection. A request that times out is reported at once;
 * the connection then writes nothing more and closes as soon as no
 * request written on it still waits, so a late reply is never read as the
 * answer to a later request (see net_conn_pump).
 */
#ifndef REDLOCK_NET_H
#define REDLOCK_NET_H

#include "resp.h"

#include <stddef.h>
#include <stdint.h>

/* ---- URLs ----------------------------------------------------------------- */

enum { NET_URL_TCP = 1, NET_URL_UNIX };

#define NET_MAX_SEEDS 8 /* a cluster URL: the host and up to 7 addr= more; a Sentinel
                           URL: up to 8 sentinels, listed and addr= together */
#define NET_URL_FILE 256 /* ca=, cert=, key= paths and sni=, with the NUL */
#define NET_MASTER_NAME 128 /* a Sentinel URL's master name, with the NUL */
#define NET_SENTINEL_PORT "26379"

typedef struct net_url {
    int kind;           /* NET_URL_TCP or NET_URL_UNIX                   */
    char host[256];     /* TCP: name or address, no brackets             */
    char port[6];       /* TCP: decimal, default "6379"                  */
    char path[108];     /* UNIX: socket path (fits sun_path)             */
    char user[128];     /* empty: none (AUTH with password only)         */
    char password[256]; /* empty: no AUTH                                */
    int db;             /* SELECT on connect when non-zero               */
    int cluster;        /* ?cluster=1: a Redis Cluster, host the first seed */
    int sentinel;       /* redis+sentinel:// or rediss+sentinel://: host is the first
                           sentinel (default port 26379); user, password and db are
                           the master's, TLS is for sentinels and master alike */
    /* rediss:// (kind TCP): TLS, with its parameters; "" unset */
    int tls;
    int insecure;
    char ca[NET_URL_FILE], cert[NET_URL_FILE], key[NET_URL_FILE], sni[NET_URL_FILE];
} net_url;

/* What a URL names besides one connection, kept apart from it: a
 * connection carries only its own address and credentials. The other seed
 * nodes of a cluster URL (addr=host:port), or the other sentinels of a
 * Sentinel URL (listed after the first, and addr=); for a Sentinel URL
 * also the master's name and the sentinels' own credentials. */
typedef struct net_seeds {
    int n;
    struct net_seed {
        char host[256];
        char port[6];
    } at[NET_MAX_SEEDS - 1];
    char master[NET_MASTER_NAME]; /* Sentinel: the master's name             */
    char sentinel_user[128];      /* Sentinel: AUTH to the sentinels ("": none) */
    char sentinel_password[256];
} net_seeds;

/* Parse redis://[user[:password]@]host[:port][/db][?cluster=1&addr=h:p...],
 * redis://[::1]:6379, rediss://...[?ca=F&cert=F&key=F&sni=NAME&insecure=1]
 * (and cluster=, addr=), unix:///path[?db=N&user=U&password=P],
 * redis+sentinel://[user:password@]host[:port][,host[:port]...]/MASTER[/db]
 * [?sentinel_user=U&sentinel_password=P&addr=h:p] and rediss+sentinel://
 * (the same, with the TLS parameters). User, password and query values
 * (and the master's name) may be %-encoded. addr= seeds and the other
 * sentinels go to *seeds (seeds NULL: a URL with addr= or a Sentinel URL
 * is refused). Returns RESP_OK or RESP_ERR_ARG with a message in err
 * (which never contains a password; the passwords are then cleared). */
int net_url_parse(net_url *u, net_seeds *seeds, const char *url, char *err, size_t errlen);
/* Fill the TLS parameters a rediss:// URL left unset from defaults (NULL:
 * none); a URL that is not rediss:// is left alone. Checks that key= comes
 * with cert=. RESP_OK or RESP_ERR_ARG with a message in err. */
int net_url_tls_defaults(net_url *u, const char *ca, const char *cert, const char *key,
                         int insecure, char *err, size_t errlen);
/* "host:port", "[v6]:port" or "unix:/path", for messages; never the password. */
void net_url_describe(const net_url *u, char *dst, size_t dstlen);
/* A copy of u pointed at host:port (a cluster node): same credentials and
 * transport. RESP_OK, or RESP_ERR_ARG if host or port is too long. */
int net_url_at(net_url *dst, const net_url *u, const char *host, size_t hostlen, const char *port,
               size_t portlen);

/* ---- connections ------------------------------------------------------------ */

typedef struct net_conn net_conn;

struct redlock_transport; /* redlock.h: the TLS transport table */

typedef struct net_opts {
    int connect_timeout_ms; /* connect, every address, TLS and AUTH/SELECT (default 1000) */
    int io_timeout_ms;      /* one request, from when it may be written (default 500) */
    resp_limits limits;     /* parser limits (zero fields: defaults)                 */
    size_t max_reply;       /* read buffer cap in bytes (default max_bulk + 4 KiB); it
                               starts at 512 and doubles when a reply needs more  */
    size_t max_elems;       /* elements in one reply (at least, and by default,
                               max_array + 8); the array starts at 16 and doubles
                               when a reply needs more                             */
    const struct redlock_transport *tls; /* for a rediss:// URL; NULL: such a
                                            connection fails with RESP_ERR_ARG */
    int master_only;        /* ROLE after AUTH/SELECT on every new socket: a server
                               that is not a master fails the connection (and every
                               request queued on it) with RESP_ERR_IO, one that
                               refuses ROLE with RESP_ERR_AUTH                    */
} net_opts;

/* Who a request belongs to; returned with its result. owner NULL: nobody
 * waits for it (its reply is read and dropped). */
typedef struct net_tag {
    void *owner;
    uint32_t seq;
    uint32_t kind;
} net_tag;

/* A connection to url (copied). No I/O. RESP_OK or RESP_ERR_NOMEM. */
int net_conn_new(net_conn **out, const net_url *url, const net_opts *opts);
/* Close and free; requests still queued are forgotten unreported. NULL ok. */
void net_conn_free(net_conn *c);
/* Close the socket and forget every request, unreported. */
void net_conn_close(net_conn *c);
/* Point c at another server (url, copied; same kind of connection): the
 * socket closes and every request queued fails with RESP_ERR_IO and `why`
 * (reported by net_conn_take as usual); the next request connects there.
 * A TLS connection makes its settings again (the server name changed). */
void net_conn_retarget(net_conn *c, const net_url *url, const char *why);

/* Queue a request: encoded into the write buffer, remembered with tag. Its
 * deadline is io_timeout_ms from when it may be written (now if the
 * connection is ready, else when it becomes ready), never later than cap
 * (CLOCK_MONOTONIC ns; 0: no cap). No I/O. RESP_OK, RESP_ERR_NOMEM, or
 * RESP_ERR_ARG (argc < 1 or too large). */
int net_conn_request(net_conn *c, int argc, const char *const *argv, const size_t *lens,
                     net_tag tag, int64_t cap, int64_t now);

/* Push mode (pub/sub): every reply is handed out as a push (tag.owner
 * NULL); the caller recognizes confirmations and retires the oldest
 * request with net_conn_ack. Set once, before the first request. */
void net_conn_set_push(net_conn *c);
void net_conn_ack(net_conn *c);
/* Push mode: the tag of the oldest request written and not yet acked (the
 * one an error reply answers); owner NULL if none. */
net_tag net_conn_oldest(const net_conn *c);

/* The caller found a reply out of step (a well-formed reply of the wrong
 * shape): close the connection as if the server had sent garbage. The
 * reply taken last need not be consumed. */
void net_conn_fail(net_conn *c, int status, const char *why);

/* Forget owner's requests: those never written are removed (they will not
 * be sent), those written are kept so their replies are read and dropped.
 * Returns how many were written (or partly written). */
unsigned net_conn_forget(net_conn *c, const void *owner);

/* ---- driving ------------------------------------------------------------------ */

int net_conn_fd(const net_conn *c);         /* -1 when there is no socket     */
short net_conn_events(const net_conn *c);   /* POLLIN/POLLOUT wanted, 0: none  */
/* Earliest deadline (connect, or a request), INT64_MAX if none. */
int64_t net_conn_deadline(const net_conn *c);
/* Act on events poll() reported for net_conn_fd: finish a connect, write,
 * read. Spurious events are harmless. */
void net_conn_io(net_conn *c, short revents, int64_t now);
/* Without events: start connecting when requests wait on a closed
 * connection, write what may be written, time out what is due, close a
 * connection whose requests timed out once nothing written waits. */
void net_conn_pump(net_conn *c, int64_t now);
/* For a caller with nothing else to do until `until` (its next timer or
 * deadline, CLOCK_MONOTONIC ns; INT64_MAX: none): when c's only business
 * is the reply to a request it wrote, wait for it in one recv() (bounded
 * by SO_RCVTIMEO = io_timeout_ms, ending at most 1 ms past the request's
 * deadline or `until`) instead of poll() and recv(). Returns 1 when it
 * waited (what came is buffered: net_conn_take), 0 when it declined (poll
 * as usual). Plain sockets only. The whole decision is made here. */
int net_conn_block(net_conn *c, int64_t now, int64_t until);

/* The next result, in request order. Returns
 *   RESP_OK       *r (elements in pre-order, count in *nelem) is the reply
 *                 to the request tagged *tag, or in push mode a push
 *                 (tag->owner NULL); call net_conn_consume when done;
 *   RESP_ERR_*    the request tagged *tag failed (net_conn_errstr says
 *                 why); nothing to consume;
 *   RESP_IDLE     nothing more for now.
 * Requests whose owner is NULL are never reported. */
int net_conn_take(net_conn *c, net_tag *tag, const resp_reply **r, size_t *nelem);
void net_conn_consume(net_conn *c);

const char *net_conn_errstr(const net_conn *c);
/* Incremented on every successful connect (0: never connected). */
uint64_t net_conn_generation(const net_conn *c);
/* Incremented whenever a socket of c is opened or closed. */
uint64_t net_conn_sockets(const net_conn *c);
int net_conn_ready(const net_conn *c);       /* connected and past TLS and AUTH/SELECT */
unsigned net_conn_requests(const net_conn *c); /* requests not yet answered     */
const net_url *net_conn_url(const net_conn *c);
const char *net_conn_desc(const net_conn *c); /* host:port for messages        */

/* ---- clock ---------------------------------------------------------------- */

int64_t net_now_ns(void); /* CLOCK_MONOTONIC */

#endif
