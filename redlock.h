/* redlock.h - a Redis distributed lock for C.
 *
 * The only header a user includes. Zero dependencies: the library speaks
 * RESP2 itself. Link libredlock, or compile redlock.c resp.c net.c into
 * your program.
 *
 * Two ways to drive it, over one engine:
 *   - blocking calls (redlock_trylock, redlock_lock, ...) that return when
 *     the operation's result is known;
 *   - a non-blocking API for event loops (redlock_start_*, then
 *     redlock_client_pollfds / _timeout_ms / _process / _done).
 * A blocking call is the non-blocking operation plus a poll() loop; both
 * may be mixed on one client.
 *
 * Threads: a client and the locks made from it are used by one thread at a
 * time; use one client per thread. Nothing in the library calls back into
 * the application, but the event hook if one is set
 * (redlock_client_on_event).
 *
 * Errors: redlock_strerror(status) names a status (a static string). The
 * detail of a failure, one line that never contains a password, is kept
 * where the handle the call took can reach it:
 *   - a call that took a lock l (redlock_trylock ... redlock_keepalive):
 *     after any status other than REDLOCK_OK, redlock_errstr(l); valid
 *     until l's next operation ends. While the client lives,
 *     redlock_client_errstr() of l's client has it too.
 *   - a call that took a client c (redlock_new, redlock_functions_load,
 *     ...): redlock_client_errstr(c); valid until the next call on c or on
 *     one of its locks.
 *   - no handle to hold it (a failed redlock_client_new, a NULL handle):
 *     redlock_last_errstr(), kept per thread; valid until the next call in
 *     this thread that fails without a handle (redlock_client_new clears
 *     it on entry).
 *
 * Signals: the library never raises SIGPIPE. Its sockets send with
 * MSG_NOSIGNAL (or have SO_NOSIGPIPE set where that flag is missing), so a
 * peer that has gone is an error status, never a signal; a TLS transport
 * must do the same. It installs no signal handler and leaves the signal
 * mask alone; a signal that interrupts a wait only ends that wait early
 * (the call then goes on polling until its deadline).
 */
#ifndef REDLOCK_H
#define REDLOCK_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "redlock_transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks what the shared library exports; everything else is hidden
 * (-fvisibility=hidden). A static or vendored build needs nothing. */
#if defined(REDLOCK_BUILDING) && defined(__GNUC__)
#define REDLOCK_API __attribute__((visibility("default")))
#else
#define REDLOCK_API
#endif

#define REDLOCK_VERSION_MAJOR 0
#define REDLOCK_VERSION_MINOR 2
#define REDLOCK_VERSION_PATCH 0
#define REDLOCK_VERSION "0.2.0"

typedef struct redlock_client redlock_client; /* one or more Redis nodes */
typedef struct redlock redlock;               /* one named lock          */

/* Status codes. Append-only: values never change meaning. */
enum {
    REDLOCK_OK = 0,
    REDLOCK_NOT_ACQUIRED,     /* someone else holds it                                */
    REDLOCK_NOT_HELD,         /* unlock/refresh: expired, or another owner holds it   */
    REDLOCK_ERR_TIMEOUT,      /* a connect or I/O deadline passed                     */
    REDLOCK_ERR_IO,           /* refused, reset, closed by peer                       */
    REDLOCK_ERR_PROTOCOL,     /* malformed or unexpected reply, or over a parser limit */
    REDLOCK_ERR_SERVER,       /* Redis answered with an error reply                   */
    REDLOCK_ERR_AUTH,         /* AUTH/SELECT refused, or NOAUTH                       */
    REDLOCK_ERR_ARG,          /* invalid argument or URL, or a call out of turn       */
    REDLOCK_ERR_NOMEM,        /* out of memory                                        */
    REDLOCK_IN_PROGRESS = 10, /* an operation started with redlock_start_* still runs */
    REDLOCK_ERR_TLS = 11,     /* TLS handshake or certificate verification failed     */
    REDLOCK_CANCELLED = 12    /* the operation was stopped by redlock_cancel          */
};

/* A static, human string for a status code ("unknown status" otherwise). */
REDLOCK_API const char *redlock_strerror(int status);

typedef struct redlock_options {
    int connect_timeout_ms; /* per node: connect + AUTH/SELECT         (default 1000) */
    int io_timeout_ms;      /* per request, per node, from when it can
                               be written                              (default 500)  */
    double drift_factor;    /* clock drift allowance, ttl * factor      (default 0.01) */
    int fencing;            /* 1: every acquire returns a fencing token (default 1)    */
    int retry_min_ms;       /* redlock_lock: first backoff bound        (default 50)   */
    int retry_max_ms;       /* redlock_lock: backoff cap                (default 1000) */
    uint32_t max_bulk;      /* parser: longest bulk string accepted     (default 65536) */
    uint32_t max_array;     /* parser: most elements in one array       (default 128)  */
    uint32_t max_depth;     /* parser: deepest array nesting, <= 32     (default 8)    */
    uint32_t max_line;      /* parser: longest status/error line        (default 4096) */
    int fair;               /* 1: waiters get the lock in the order they began to
                               wait (a queue in Redis); every client of a lock
                               name must agree on this                 (default 0)    */
    int wait_replicas;      /* after an acquire or refresh, WAIT for this many
                               replicas to have the write, within the request
                               deadline; fewer acknowledgements fail that node
                               (an acquire is released there)       (default 0)    */
    int scripts;            /* how the scripts run: REDLOCK_SCRIPTS_*  (default AUTO) */
    /* TLS (see "TLS" below). tls NULL: a rediss:// URL is REDLOCK_ERR_ARG. The
     * strings are defaults for every rediss:// URL of the client (the URL's own
     * ca=, cert=, key= win), copied by redlock_client_new; NULL: unset. There is
     * no SNI option: a server name belongs to one URL (sni=). */
    const redlock_transport *tls; /* e.g. redlock_tls_openssl()           (default NULL) */
    const char *tls_ca;     /* PEM file of trusted CAs          (default: system store) */
    const char *tls_cert;   /* client certificate chain, PEM    (default: none)         */
    const char *tls_key;    /* its private key, PEM             (default: in tls_cert)  */
    int tls_insecure;       /* 1: verify no certificate or name (default 0; tests only) */
    /* The restart guard. A node that started less than one lease (ttl_ms plus
     * the drift allowance) ago may have lost, with its data, a lock it granted
     * to someone else: its yes to an acquire is kept (the key is set there) but
     * not counted toward the quorum until its uptime passes the lease, and a
     * waiter sleeps until then. The client learns each server's run id and
     * uptime (INFO server) when a connection opens; an ACL that refuses INFO
     * turns the guard off for that node, once, with a note in
     * redlock_client_errstr and an event (REDLOCK_EVENT_GUARD_OFF). -1: on
     * for a quorum, off for one node; 1: on; 0: off (e.g. servers with
     * persistence that never lose a lock). */
    int restart_guard;      /*                                        (default -1)  */
} redlock_options;

/* redlock_options.scripts. Every operation is one Lua script. Where an ACL
 * denies EVAL and EVALSHA but allows FCALL, the same scripts run as the
 * functions of one library, "redlock_vN" (redlock_functions_library()),
 * that an administrator loads once per node (redlock_functions_load, the
 * `redlock functions load` command, or redis-cli -x FUNCTION LOAD <
 * functions/redlock_vN.lua). Each node of a quorum goes its own way.
 *
 * AUTO: EVALSHA (EVAL on NOSCRIPT), as EVAL mode. A node that answers
 *   NOPERM to it gets the same call by FCALL; once an FCALL works there,
 *   that node takes FCALL for the client's life (one extra round trip,
 *   once per node). If the function is missing there, the library is
 *   loaded as in FUNCTIONS mode; failing that, the operation fails on that
 *   node with REDLOCK_ERR_SERVER and errstr names NOPERM, the library and
 *   how to load it.
 * EVAL: EVALSHA and EVAL only.
 * FUNCTIONS: FCALL (FCALL_RO for redlock_inspect) only; no EVAL or EVALSHA
 *   is ever sent. A function missing on a node (never loaded, a restart
 *   without persistence, FUNCTION FLUSH) is loaded with FUNCTION LOAD if
 *   the user may, never with REPLACE, and called again, as EVAL loads a
 *   script on NOSCRIPT; otherwise REDLOCK_ERR_SERVER, and errstr says why
 *   (NOPERM, or another library of that name is there) and how to load it.
 */
enum {
    REDLOCK_SCRIPTS_AUTO = 0,
    REDLOCK_SCRIPTS_EVAL = 1,
    REDLOCK_SCRIPTS_FUNCTIONS = 2
};

/* Fill *o with the defaults above. NULL is ignored. */
REDLOCK_API void redlock_options_init(redlock_options *o);

/* ---- clients ------------------------------------------------------------------ */

/* Make a client for n Redis URLs (1 <= n <= 32; n > 1: quorum locks over
 * independent masters, quorum n/2+1). URLs:
 *   redis://[user[:password]@]host[:port][/db]    redis://[::1]:6379
 *   rediss://[user[:password]@]host[:port][/db][?ca=F&cert=F&key=F&sni=NAME&insecure=1]
 *   unix:///path/redis.sock[?db=N&user=U&password=P]
 *   redis://host:port?cluster=1[&addr=host:port...]
 *       a Redis Cluster, named by up to 8 seed nodes: one member of the
 *       quorum (alone, a single-node lock), each lock routed to the primary
 *       serving its hash slot
 *   redis+sentinel://[user:password@]host[:port][,host[:port]...]/MASTER[/db]
 *                    [?sentinel_user=U&sentinel_password=P&addr=host:port]
 *   rediss+sentinel://...[&ca=F&cert=F&key=F&sni=NAME&insecure=1]
 *       the master that up to 8 sentinels (port 26379 by default) name as
 *       MASTER: one member likewise. User, password and db are the master's;
 *       the sentinels' own come as sentinel_user/sentinel_password. Found on
 *       first use (SENTINEL GET-MASTER-ADDR-BY-NAME, each sentinel in turn),
 *       accepted only if ROLE says master (on every new connection to it),
 *       found again after +switch-master, READONLY, MASTERDOWN or a lost
 *       connection; no master found: the operation fails with what each
 *       sentinel said (see docs/sentinel.md)
 * User, password and query values may be %-encoded. rediss:// (and
 * rediss+sentinel://) is TLS and needs opts->tls (see "TLS" below); plain
 * and TLS URLs may be mixed in a quorum. opts NULL:
 * defaults. urls (the array and its strings) and the strings in opts are
 * copied: the caller may free or reuse them once this returns. No I/O
 * happens here: connections open on first use (TLS certificate files are
 * read then) and reopen after a failure. Host
 * names are resolved with getaddrinfo() when a connection opens, which
 * blocks: give IP addresses to keep an event loop from ever blocking.
 * Returns REDLOCK_OK and *out, or REDLOCK_ERR_ARG (bad URL or option, a
 * Sentinel URL without the master's name, a rediss:// URL without
 * opts->tls) or REDLOCK_ERR_NOMEM, with *out NULL and the reason in
 * redlock_last_errstr(). */
REDLOCK_API int redlock_client_new(redlock_client **out, const char *const *urls, size_t n,
                                   const redlock_options *opts);
/* Close every connection and free the client. NULL ok. Locks made from it
 * may be freed before or after: after this call a lock accepts only
 * redlock_free (every other call returns REDLOCK_ERR_ARG), and an
 * operation still in flight ends without I/O (a held lease, or an acquire
 * that may have landed, is reclaimed by its TTL). Nothing leaks. */
REDLOCK_API void redlock_client_free(redlock_client *c);
/* Detail of the last error on c or on one of its locks ("" after a
 * blocking call that succeeded). Valid until the next call on c. Never
 * contains a password. c NULL: redlock_last_errstr(). */
REDLOCK_API const char *redlock_client_errstr(const redlock_client *c);
/* Detail of the last error in this thread that had no client to hold it:
 * a failed redlock_client_new, or a call given a NULL handle ("" if none).
 * Thread-local: valid until the next call in this thread that fails
 * without a handle, or the next redlock_client_new (which clears it). */
REDLOCK_API const char *redlock_last_errstr(void);

/* ---- locks ---------------------------------------------------------------------- */

/* The shortest TTL redlock_new takes. A lease is held for its TTL minus
 * the round trip that took it and the drift allowance (2 ms plus
 * ttl_ms * drift_factor), so a shorter one would be gone, or nearly, by
 * the time the acquire is answered. */
#define REDLOCK_MIN_TTL_MS 10

/* Make a lock handle for name (binary-safe, NUL-terminated, 1 byte to
 * 1 MiB; copied) with a TTL of ttl_ms (at least REDLOCK_MIN_TTL_MS). value
 * is the owner's identity (copied, 1 to 4096 bytes); NULL makes a random
 * 128-bit token from the OS. The caller may free name and value once this
 * returns. No I/O.
 * Returns REDLOCK_OK and *out; REDLOCK_ERR_ARG (NULL client or out, empty
 * or long name or value, a TTL under REDLOCK_MIN_TTL_MS, with the minimum
 * in the detail); REDLOCK_ERR_IO (no random source: the library never falls
 * back to a weak one); REDLOCK_ERR_NOMEM. *out is NULL
 * on error. The key is the name itself; see the README for the other keys. */
REDLOCK_API int redlock_new(redlock **out, redlock_client *c, const char *name, const char *value,
                            uint32_t ttl_ms);
/* Same, with a name of namelen bytes that may contain NUL. */
REDLOCK_API int redlock_new_len(redlock **out, redlock_client *c, const char *name,
                                size_t namelen, const char *value, uint32_t ttl_ms);
/* Free the handle. NULL ok. No I/O, and no blocking: a held lock is
 * reclaimed by its TTL. An operation in flight is cancelled first (see
 * redlock_cancel); the releases that queues go out with the client's next
 * redlock_client_process or blocking call, if there is one. */
REDLOCK_API void redlock_free(redlock *l);

/* ---- blocking operations ----------------------------------------------------------
 * Each runs the client's engine until its own result is known; operations
 * of other locks of the client (started with redlock_start_*) move on
 * meanwhile and are reported through redlock_client_done as usual. On a
 * lock with an operation in flight they return REDLOCK_ERR_ARG. A lock with
 * keepalive on may be used: the call takes the place of a keepalive refresh
 * in flight.
 */

/* One attempt, one round trip (quorum: one parallel round trip; with
 * fencing on over several nodes, a second one when counters differ).
 * REDLOCK_OK: held, with a fencing token and validity; also when we
 * already held it (the TTL is reset, the token kept). REDLOCK_NOT_ACQUIRED:
 * someone else holds it (fair mode: or it is free and a waiter is first in
 * line). Errors: REDLOCK_ERR_TIMEOUT/IO (nodes unreachable: too few for a
 * quorum), REDLOCK_ERR_SERVER/AUTH/PROTOCOL, REDLOCK_ERR_NOMEM. Whatever
 * this attempt took on some nodes without winning is released there before
 * it returns. Takes at most io_timeout_ms (plus connect_timeout_ms to open
 * a connection) per round. */
REDLOCK_API int redlock_trylock(redlock *l);
/* Try, then wait for a release (pub/sub, no fixed-interval polling), the
 * holder's TTL running out, or a jittered backoff (retry_min_ms doubling
 * to retry_max_ms), until acquired or wait_ms passes: REDLOCK_NOT_ACQUIRED
 * then. The last try starts before wait_ms passes, so a call can take up
 * to one request deadline (io_timeout_ms) longer than wait_ms. I/O errors,
 * timeouts and transient server errors (LOADING, BUSY, TRYAGAIN, ...) are
 * retried until the wait runs out; argument, auth, TLS (REDLOCK_ERR_TLS),
 * protocol and other server errors return at once. Waiters of one client on one name take
 * turns locally: only the first tries, the others wait behind it. Fair
 * mode: the caller joins the lock's queue and is served in turn; it leaves
 * the queue before this returns. */
REDLOCK_API int redlock_lock(redlock *l, uint32_t wait_ms);
/* Release if still ours (compare-and-delete on every node; publishes on
 * the release channel so waiters wake at once). REDLOCK_OK; REDLOCK_NOT_HELD
 * (errstr: it expired, or another owner holds it) and nothing is changed;
 * or an I/O, timeout or server error when too few nodes answered: the lock
 * may still be held where the release did not arrive and expires with its
 * TTL. Afterwards the handle counts as not held whatever the result, and
 * may acquire again. Never retried in a loop. */
REDLOCK_API int redlock_unlock(redlock *l);
/* Reset the TTL to ttl_ms if still ours. REDLOCK_OK: validity renewed; in
 * quorum mode the key is also set again on a node where it is missing (a
 * node that restarted empty), never where another value is.
 * REDLOCK_NOT_HELD: lost (expired, or another owner); a minority of nodes
 * still holding our value is released, and the handle counts as not held.
 * An expired key is never re-created. Errors (too few nodes answered):
 * the handle keeps its last validity, which runs out on its own. */
REDLOCK_API int redlock_refresh(redlock *l);

typedef struct redlock_info {
    int held;       /* 1: one owner holds the lock on a quorum of nodes       */
    int ours;       /* 1: that owner is this handle (its value)               */
    int64_t ttl_ms; /* that owner's remaining TTL (least over the quorum), -1 */
    uint64_t fence; /* the highest fence counter seen (the last token issued) */
} redlock_info;
/* Look at the lock without taking it (one round trip, no waiting).
 * REDLOCK_OK and *info; errors as for redlock_trylock when too few nodes
 * answer. */
REDLOCK_API int redlock_inspect(redlock *l, redlock_info *info);

/* ---- counting semaphores and read-write locks -------------------------------------------
 * Handles made here take every lock call above and below (trylock, lock,
 * unlock, refresh, inspect, keepalive, the redlock_start_* calls, fence,
 * validity), on one node, a quorum (a permit or a read hold is held when
 * a majority granted it; validity as for a lock), or a cluster member.
 * Leases run by the server's clock (TIME inside the scripts): a client
 * whose wall clock is off changes nothing. Each holder has its own lease,
 * and the holder set expires as a whole after the longest one. Every grant
 * gets a fencing token from the name's counter, strictly increasing across
 * grants as for locks. Keys live in the name's hash slot ({NAME}:holds,
 * {NAME}:reads, {NAME}:token, {NAME}:wwait; see docs/semaphores.md).
 */

/* The most permits a semaphore may have. */
#define REDLOCK_MAX_PERMITS 65536

/* A handle on one of `permits` (1 to REDLOCK_MAX_PERMITS) permits of the
 * counting semaphore name: up to `permits` holders at once, each with its
 * own lease of ttl_ms; a holder that dies frees its permit when its lease
 * ends. The count is stored with the semaphore while it has holders: an
 * acquire asking for another count fails with REDLOCK_ERR_ARG, both
 * numbers in errstr. Waiters are woken one per permit freed (with fair = 1
 * in the order they began to wait). name, value and ttl_ms as for
 * redlock_new; REDLOCK_ERR_ARG also for 0 or too many permits. */
REDLOCK_API int redlock_new_semaphore(redlock **out, redlock_client *c, const char *name,
                                      uint32_t permits, const char *value, uint32_t ttl_ms);
/* A shared (reader) hold on name's read-write lock. The writer is the
 * ordinary exclusive lock of the same name (redlock_new): a writer excludes
 * readers and other writers, readers exclude writers only. A writer that
 * waits (redlock_lock) keeps new readers out until it got the lock, with a
 * lease on its place, so readers never starve a writer and a dead writer
 * blocks readers no longer than that lease (2 x retry_max_ms +
 * io_timeout_ms). While readers hold the lock, its key holds
 * "redlock:readers" (no owner value may be that), so any other client's
 * SET NX sees it held. A name used as a semaphore is refused
 * (REDLOCK_ERR_ARG). Arguments as for redlock_new. */
REDLOCK_API int redlock_new_shared(redlock **out, redlock_client *c, const char *name,
                                   const char *value, uint32_t ttl_ms);

/* One holder of a name, as redlock_holders lists it. */
typedef struct redlock_holder {
    char value[80];  /* its owner value (cut to fit; NUL-terminated)           */
    int shared;      /* 1: a semaphore permit or a reader; 0: the exclusive holder */
    int64_t ttl_ms;  /* its lease left (least over the nodes); -1: no expiry     */
    uint64_t fence;  /* its fencing token (0 when unknown)                      */
    unsigned nodes;  /* how many nodes list it                                  */
} redlock_holder;
/* Who holds l's name now, changing nothing, in one round trip: the
 * exclusive holder, or the readers, or the semaphore's permit holders,
 * each listed by a quorum of nodes (64 at most per node; values cut to
 * fit). Fills out[0..cap) and *count (if not NULL) with how many were
 * found (at most cap). REDLOCK_OK; errors as for redlock_inspect. */
REDLOCK_API int redlock_holders(redlock *l, redlock_holder *out, size_t cap, size_t *count);

/* ---- the lease ------------------------------------------------------------------------ */

/* Fencing token of the last successful acquire (0 if none or fencing off).
 * Tokens strictly increase across acquisitions of one name, also in quorum
 * mode. */
REDLOCK_API uint64_t redlock_fence(const redlock *l);
/* ms of ownership left from the last acquire or refresh, minus the drift
 * allowance; 0 when not held (also from the moment a keepalive reports a
 * loss). */
REDLOCK_API int64_t redlock_validity_ms(const redlock *l);
/* The owner value (NUL-terminated; owned by the lock). */
REDLOCK_API const char *redlock_value(const redlock *l);
/* Detail of the last status other than REDLOCK_OK that a call taking l
 * gave: an operation's result (kept until l's next operation ends), or a
 * call refused at once with REDLOCK_ERR_ARG (out of turn, a bad argument,
 * after l's client was freed; kept until l's next call that is not
 * refused, or until its operation in flight ends). "" after a success.
 * l NULL: redlock_last_errstr(). Never NULL. */
REDLOCK_API const char *redlock_errstr(const redlock *l);

/* ---- the non-blocking API ----------------------------------------------------------------
 * Start an operation, then drive the client from your event loop:
 *
 *   for (;;) {
 *       int n = redlock_client_pollfds(c, fds, cap);   // ask before every poll
 *       poll(fds, n, redlock_client_timeout_ms(c));    // (plus your own fds)
 *       redlock_client_process(c, fds, n);
 *       for (redlock *l; (l = redlock_client_done(c)) != NULL;)
 *           handle(l, redlock_result(l));
 *   }
 *
 * Every operation keeps its own absolute deadlines (connect, each request,
 * the wait); the loop only has to sleep no longer than timeout_ms. Many
 * locks of one client may have operations in flight at once: their
 * requests to a node are pipelined on one connection, and waiters share
 * one listening connection per node.
 */

/* Start an operation on l and return at once, with no I/O: REDLOCK_OK
 * (started; the result comes later) or REDLOCK_ERR_ARG (l NULL, its
 * client freed, or an operation already in flight on l). The result, once
 * known, is what the blocking call would have returned; l then appears
 * once in redlock_client_done. A result not yet fetched from
 * redlock_client_done is replaced by a new operation. */
REDLOCK_API int redlock_start_trylock(redlock *l);
REDLOCK_API int redlock_start_lock(redlock *l, uint32_t wait_ms);
REDLOCK_API int redlock_start_unlock(redlock *l);
REDLOCK_API int redlock_start_refresh(redlock *l);
/* REDLOCK_IN_PROGRESS while l's operation runs; then its status (or
 * REDLOCK_CANCELLED, or REDLOCK_NOT_HELD after a keepalive lost the lease).
 * Before any operation: REDLOCK_ERR_ARG. */
REDLOCK_API int redlock_result(const redlock *l);
/* Stop l's operation now, with no I/O: REDLOCK_OK, or REDLOCK_ERR_ARG when
 * none is in flight (a finished one keeps its result). The operation is
 * not reported by redlock_client_done; redlock_result says
 * REDLOCK_CANCELLED. An acquire that landed anyway (or may have: its
 * request was written) is released on those nodes, and a fair waiter
 * leaves the line, by requests that go out with the next process call;
 * a lock held before the operation stays held. A cancelled unlock leaves
 * the handle not held; a cancelled refresh keeps the last validity. */
REDLOCK_API int redlock_cancel(redlock *l);

/* Fill fds[0..nfds) with the sockets the client needs polled and their
 * events; returns how many entries it needs (more than nfds: only nfds
 * were filled; call again with more room). Ask before every poll: the set
 * changes as connections open and close. NULL fds: just the count. */
REDLOCK_API int redlock_client_pollfds(redlock_client *c, struct pollfd *fds, int nfds);
/* A number that changes whenever the client opens or closes a socket. An
 * event loop that registers descriptors (epoll, libuv, libevent) rather
 * than passing a pollfd array each time re-registers them all when it
 * changes: a closed descriptor's number may come back as a new socket. */
REDLOCK_API uint64_t redlock_client_sockets(const redlock_client *c);
/* ms until the next deadline or timer; 0: call redlock_client_process now;
 * -1: nothing pending (no deadline: wait for the sockets only). */
REDLOCK_API int redlock_client_timeout_ms(const redlock_client *c);
/* Never blocks: does the I/O poll() reported in fds (entries that are not
 * the client's are ignored; fds may be NULL), opens connections and
 * writes, runs deadlines and timers. Returns how many operations
 * completed (and can now be fetched with redlock_client_done). */
REDLOCK_API int redlock_client_process(redlock_client *c, const struct pollfd *fds, int nfds);
/* One lock whose operation (started with redlock_start_*) completed, or
 * whose keepalive lost the lease, since it was last reported; NULL when
 * none. Blocking calls and successful keepalive refreshes never appear. */
REDLOCK_API redlock *redlock_client_done(redlock_client *c);

/* A pointer for the application, carried by the lock (NULL at first). */
REDLOCK_API void redlock_set_userdata(redlock *l, void *p);
REDLOCK_API void *redlock_userdata(const redlock *l);

/* While on (1), the engine refreshes l every ttl/3 while it is held, as
 * the loop (or any blocking call of the client) runs; off (0) stops it. A
 * lost lease (a refresh answers that the lock is lost, or the local clock
 * runs past the validity because nodes do not answer) is reported once
 * through redlock_client_done with redlock_result REDLOCK_NOT_HELD, and
 * redlock_validity_ms is 0 from that moment. Without a loop that calls
 * redlock_client_process, nothing is refreshed. Returns REDLOCK_OK, or
 * REDLOCK_ERR_ARG when l is NULL, l's client was freed, or on is neither
 * 0 nor 1 (nothing changes then). Turning it on for a lock that is not
 * held is allowed: refreshing starts with the next acquire. */
REDLOCK_API int redlock_keepalive(redlock *l, int on);

/* ---- observability ------------------------------------------------------------------------
 * A client counts what it does from the moment it is made: each
 * operation's outcome, latency histograms, and per node its requests,
 * errors, connections, redirects, script loads and restart-guard
 * decisions. Counting is a few integer increments per operation and
 * allocates nothing; the counters are always on. A hook, if set, hears of
 * each event (a connection made or lost, a redirect, a lost lease, ...) as
 * it happens. docs/observability.md has the table of what each number
 * means and the list of events.
 */

/* Operation kinds: the index of redlock_stats.op. */
enum {
    REDLOCK_STAT_ACQUIRE = 0,   /* each try: a trylock, or one try of a wait (lock)      */
    REDLOCK_STAT_WAIT = 1,      /* redlock_lock and redlock_start_lock, start to result  */
    REDLOCK_STAT_RELEASE = 2,   /* redlock_unlock and redlock_start_unlock               */
    REDLOCK_STAT_REFRESH = 3,   /* redlock_refresh and redlock_start_refresh             */
    REDLOCK_STAT_KEEPALIVE = 4, /* each refresh that keepalive made                      */
    REDLOCK_STAT_KINDS = 5
};

/* How the operations of one kind ended. Counted when one ends, so
 * attempts is the sum of the other six; an operation in flight is in
 * none of them yet. */
typedef struct redlock_op_stats {
    uint64_t attempts;  /* ended                                                  */
    uint64_t successes; /* REDLOCK_OK                                             */
    uint64_t contended; /* REDLOCK_NOT_ACQUIRED: another owner has it (a wait: it
                           ran out)                                               */
    uint64_t lost;      /* REDLOCK_NOT_HELD: not ours any more (expired, taken)   */
    uint64_t timeouts;  /* REDLOCK_ERR_TIMEOUT                                    */
    uint64_t errors;    /* any other status                                       */
    uint64_t cancelled; /* REDLOCK_CANCELLED (redlock_cancel, redlock_free)       */
} redlock_op_stats;

/* A histogram of durations in microseconds, in log-spaced buckets: four
 * per power of two (each at most 25% wide; values 0 to 3 have a bucket
 * each). Bucket i holds the values v with
 * redlock_stats_bucket_max(i - 1) < v <= redlock_stats_bucket_max(i); the
 * last one holds everything from about 22 days on. A bucket counts up to
 * 2^40 - 1 values and then stays there (count goes on). */
#define REDLOCK_STATS_BUCKETS 160
typedef struct redlock_histogram {
    uint64_t count;  /* values recorded                                  */
    uint64_t sum_us; /* their sum                                        */
    uint64_t max_us; /* the largest                                      */
    uint64_t bucket[REDLOCK_STATS_BUCKETS]; /* values per bucket (not cumulative) */
} redlock_histogram;

/* Limits of the API's fixed arrays. */
#define REDLOCK_STATS_NODES 32    /* a client has at most 32 nodes         */
#define REDLOCK_STATS_STATUSES 16 /* redlock_node_stats.errors, by status  */
#define REDLOCK_EVENT_TYPES 16    /* redlock_stats.events, by event type   */

/* One node of the client (one URL: a Redis node, or a whole Redis
 * Cluster, whose shards add up here). */
typedef struct redlock_node_stats {
    char node[128];            /* host:port or unix:/path (a cluster: its first seed;
                                  Sentinel: master 'NAME'); never a password         */
    uint64_t requests;         /* lock scripts and probes sent (again after a redirect
                                  or NOSCRIPT)                                       */
    uint64_t errors[REDLOCK_STATS_STATUSES]; /* the node's part of an operation failed,
                                  by status: errors[REDLOCK_ERR_TIMEOUT], ...        */
    uint64_t connects;         /* connections that became ready (after TLS, AUTH)     */
    uint64_t reconnects;       /* of which after an earlier one to the same server    */
    uint64_t disconnects;      /* ready connections that closed                       */
    uint64_t connect_failures; /* attempts that failed (refused, TLS, AUTH, timeout)  */
    uint64_t moved;            /* -MOVED redirects (a cluster)                        */
    uint64_t ask;              /* -ASK redirects                                      */
    uint64_t slot_maps;        /* the cluster's slot map changed (the first read too) */
    uint64_t script_loads;     /* EVAL sent after NOSCRIPT (a restart, SCRIPT FLUSH)  */
    uint64_t function_loads;   /* FUNCTION LOAD sent after a function was not found   */
    uint64_t guard_young;      /* restart guard: a yes to an acquire not counted, the
                                  node having restarted less than one lease ago      */
    uint64_t guard_off;        /* restart guard: turned off there (ACL refused INFO)  */
    uint64_t failovers;        /* a Sentinel member's master switched (the sentinels
                                  named another, ROLE confirmed it)                  */
    int64_t rtt_us;            /* round-trip estimate: a moving average of its
                                  requests' round trips (1/8 weight to each new
                                  one); -1 before the first                          */
} redlock_node_stats;

/* What a client did since it was made. Fields are only ever appended at
 * the end; the structs inside never change. */
typedef struct redlock_stats {
    size_t size;        /* bytes of this struct the library filled: min(size, its own) */
    uint64_t uptime_ms; /* since redlock_client_new                                  */
    redlock_op_stats op[REDLOCK_STAT_KINDS]; /* by REDLOCK_STAT_*                      */
    uint64_t leases_lost; /* keepalive reported a lease lost (redlock_client_done)    */
    redlock_histogram acquire_wait; /* each acquisition (trylock or lock that returned
                                       REDLOCK_OK): from the call (or start) to the result */
    redlock_histogram round_trip;   /* each round an operation sent to its nodes: from the
                                       requests going out to the last answer           */
    redlock_histogram hold;         /* each lease held: from its acquisition to its end
                                       (unlock, a loss, a failed refresh)               */
    uint64_t events[REDLOCK_EVENT_TYPES]; /* events by type, whether a hook is set or not */
    uint32_t nodes;                       /* entries of node[] in use: the client's URLs */
    redlock_node_stats node[REDLOCK_STATS_NODES];
} redlock_stats;

/* Copy c's counters into *out. size is sizeof *out as the caller compiled
 * it: the library copies min(size, the size of its own struct) bytes
 * (out->size says how many) and zeroes the rest up to size, so a program
 * built against an older, smaller redlock_stats keeps working with a newer
 * library. No I/O, no allocation; may be called from the event hook.
 * REDLOCK_OK, or REDLOCK_ERR_ARG (c or out NULL, size smaller than the
 * size field) with the detail in redlock_last_errstr(). */
REDLOCK_API int redlock_client_stats(const redlock_client *c, redlock_stats *out, size_t size);
/* The largest value (us) bucket i of a histogram holds (inclusive);
 * UINT64_MAX for the last bucket and beyond. Prometheus' "le" bounds. */
REDLOCK_API uint64_t redlock_stats_bucket_max(unsigned i);
/* The q-quantile (0 <= q <= 1: 0.5, 0.99, 0.999) of h, in us, as the
 * upper bound of the bucket that holds it (at most 25% above the true
 * value), but never above h->max_us; 0 when h is empty or NULL. */
REDLOCK_API uint64_t redlock_stats_quantile(const redlock_histogram *h, double q);

/* Event types (redlock_event.type). Append-only. */
enum {
    REDLOCK_EVENT_CONNECTED = 1,    /* a connection became ready; value 1 on a reconnect     */
    REDLOCK_EVENT_DISCONNECTED = 2, /* a ready connection closed; detail says why            */
    REDLOCK_EVENT_CONNECT_FAILED = 3, /* an attempt failed: status REDLOCK_ERR_IO (refused,
                                         reset), _TIMEOUT, _TLS (handshake, certificate),
                                         _AUTH (AUTH/SELECT refused); detail says which    */
    REDLOCK_EVENT_REDIRECT = 4,     /* a cluster answered -MOVED or -ASK; value: the slot    */
    REDLOCK_EVENT_SLOT_MAP = 5,     /* a cluster's slot map changed; value: slots that moved */
    REDLOCK_EVENT_LEASE_LOST = 6,   /* keepalive lost a lease, or a refresh found it lost    */
    REDLOCK_EVENT_SCRIPTS_LOADED = 7, /* EVAL after NOSCRIPT, or FUNCTION LOAD, was sent     */
    REDLOCK_EVENT_GUARD_YOUNG = 8,  /* restart guard: a node's yes not counted; value: ms
                                       until it counts                                    */
    REDLOCK_EVENT_GUARD_OFF = 9,    /* restart guard off for a node: its ACL refused INFO   */
    REDLOCK_EVENT_FAILOVER = 10     /* a Sentinel member's master switched: the new one
                                       confirmed (by ROLE) at another address              */
};

/* The name of an event type ("connected", "lease-lost", ...; the same as
 * redlock_event.what), or "unknown". Static string. */
REDLOCK_API const char *redlock_event_name(int type);

/* One event. Every pointer is valid only during the hook's call. */
typedef struct redlock_event {
    int type;            /* REDLOCK_EVENT_*                                          */
    const char *what;    /* its name: "connected", "lease-lost", ... (static)         */
    int status;          /* REDLOCK_OK, or the status of the failure it reports      */
    int node_index;      /* the node (index of its URL) it happened on; -1: none      */
    const char *node;    /* that server: host:port or unix:/path, never a password; "" */
    int listener;        /* connection events: 1 the pub/sub listener, 0 the command
                            connection                                              */
    const redlock *lock; /* the lock it happened to, or NULL                          */
    const char *name;    /* that lock's name (namelen bytes and a NUL), or NULL      */
    size_t namelen;
    void *userdata;      /* that lock's redlock_userdata, or NULL                    */
    int64_t value;       /* by type (see above); 0 otherwise                         */
    const char *detail;  /* one line: what happened and why (never a password)       */
} redlock_event;

/* Call fn(ev, arg) for each event of c from now on (fn NULL: no hook). The
 * hook runs synchronously inside the library, in the thread that drives c,
 * and must not call back into it: from inside the hook, every call on c or
 * one of its locks that acts (redlock_trylock, redlock_start_*,
 * redlock_cancel, redlock_keepalive, redlock_new, redlock_functions_load,
 * ...) returns REDLOCK_ERR_ARG with the reason in redlock_client_errstr(c)
 * (and redlock_errstr of the lock); redlock_client_process and
 * redlock_client_pollfds return 0 and redlock_client_done NULL, doing
 * nothing; redlock_free, redlock_client_free and redlock_client_on_event
 * do nothing (with the reason in redlock_client_errstr). Reading is allowed: redlock_client_stats,
 * redlock_fence, redlock_validity_ms, redlock_value, redlock_userdata,
 * redlock_result, redlock_errstr. Keep it short: the engine waits for it.
 * With no hook an event costs a counter increment. c NULL: nothing. */
REDLOCK_API void redlock_client_on_event(redlock_client *c,
                                         void (*fn)(const redlock_event *ev, void *arg),
                                         void *arg);

/* ---- the function library on the nodes ---------------------------------------------------- */

/* The name of the function library this build calls: "redlock_v2". Its
 * functions are named after it (redlock_v2_acquire, ...). A change to any
 * script comes with a new version, so clients of different versions can
 * share a server, each with its own library. Static string. */
REDLOCK_API const char *redlock_functions_library(void);
/* The library's source, as FUNCTION LOAD takes it (the same text as the
 * shipped file functions/redlock_vN.lua), into buf: at most cap bytes,
 * NUL-terminated when cap > 0. Returns its full length, as snprintf does
 * (buf NULL with cap 0: just the length). */
REDLOCK_API size_t redlock_functions_code(char *buf, size_t cap);

/* One node's answer to redlock_functions_load or redlock_functions_status. */
typedef struct redlock_functions_node {
    char node[96];       /* host:port, or unix:/path (never a password)               */
    int status;          /* REDLOCK_OK, or this node's error (detail below)          */
    int loaded;          /* 1: this build's library is there, with this build's code  */
    int foreign;         /* 1: a library of this build's name with other code is there */
    int changed;         /* redlock_functions_load: 1 if this call loaded it          */
    char libraries[128]; /* the redlock_v* libraries there, space-separated           */
    char detail[256];    /* what went wrong, or ""                                     */
} redlock_functions_node;

/* Load this build's library on every node of c that lacks it: FUNCTION
 * LOAD, never REPLACE (an older version, or a library of this name with
 * other code, stays as it is: that node fails), then FUNCTION LIST to
 * report what is there. The user needs FUNCTION LOAD and FUNCTION LIST
 * permission. Runs on connections of its own, opened and closed here, to
 * every node at once, each within connect_timeout_ms + io_timeout_ms per
 * request. Like a blocking call, it runs the client's engine while it
 * waits: a cluster's slot map is read first if the client has none yet,
 * and operations of the client's locks in flight move on meanwhile (and
 * are reported through redlock_client_done as usual). Fills out[0..cap) (out may be NULL with cap 0) and *count (if
 * not NULL) with the number of nodes. Returns REDLOCK_OK when every node
 * has the library afterwards; else the first failing node's status
 * (REDLOCK_ERR_SERVER for NOPERM or a foreign library), the detail in
 * redlock_client_errstr; REDLOCK_ERR_ARG (c NULL), REDLOCK_ERR_NOMEM. */
REDLOCK_API int redlock_functions_load(redlock_client *c, redlock_functions_node *out, size_t cap,
                                       size_t *count);
/* What each node has (FUNCTION LIST LIBRARYNAME redlock_v*), changing
 * nothing; the same connections, timeouts and out/count as
 * redlock_functions_load. REDLOCK_OK when every node answered, whether or
 * not the library is there; else the first failing node's status. */
REDLOCK_API int redlock_functions_status(redlock_client *c, redlock_functions_node *out,
                                         size_t cap, size_t *count);

/* ---- TLS ----------------------------------------------------------------------------------
 * A rediss:// URL connects over TLS through a transport: a table of
 * non-blocking functions (redlock_transport.h, included above) that the
 * connection layer calls instead of recv()/send(). The core has no TLS
 * code and no dependency; redlock_tls_openssl() is one transport, and a
 * table of your own over mbedTLS, wolfSSL or BearSSL plugs in the same
 * way: see redlock_transport.h for the contract.
 */

/* The OpenSSL 3 transport: only in a library built with `make
 * TLS=openssl` (or with tls_openssl.c compiled in and -lssl -lcrypto
 * linked). TLS 1.2 or newer; SNI and host name (or IP address)
 * verification on unless insecure=1; ca=, cert=, key=, sni= as in
 * redlock_tls_params. One SSL_CTX per connection object, nothing
 * process-wide: no global callbacks or settings, no SIGPIPE (sends with
 * MSG_NOSIGNAL), OpenSSL's thread-local error queue is left empty. The
 * table is static: never NULL. */
REDLOCK_API const redlock_transport *redlock_tls_openssl(void);

/* ---- process-wide ------------------------------------------------------------------------ */

/* Replace the allocator used for everything the library allocates (NULLs
 * restore malloc/realloc/free). Process-wide and not thread-safe: call it
 * before making any client, and free every client before changing it. */
REDLOCK_API void redlock_set_allocator(void *(*alloc_fn)(size_t),
                                       void *(*realloc_fn)(void *, size_t),
                                       void (*free_fn)(void *));

#ifdef __cplusplus
}
#endif

#endif
