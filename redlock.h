/* redlock.h - a Redis distributed lock for C.
 *
 * The only header a user includes. Zero dependencies: the library speaks
 * RESP2 itself. Link libredlock, or compile redlock.c resp.c net.c into
 * your program.
 *
 * Threads: a client and the locks made from it are used by one thread at a
 * time; use one client per thread.
 */
#ifndef REDLOCK_H
#define REDLOCK_H

#include <stddef.h>
#include <stdint.h>

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
#define REDLOCK_VERSION_MINOR 1
#define REDLOCK_VERSION_PATCH 0
#define REDLOCK_VERSION "0.1.0"

typedef struct redlock_client redlock_client; /* one or more Redis nodes */
typedef struct redlock redlock;               /* one named lock          */

/* Status codes. Append-only: values never change meaning. */
enum {
    REDLOCK_OK = 0,
    REDLOCK_NOT_ACQUIRED, /* someone else holds it                              */
    REDLOCK_NOT_HELD,     /* unlock/refresh: the lock expired or has another owner */
    REDLOCK_ERR_TIMEOUT,  /* a connect or I/O deadline passed                    */
    REDLOCK_ERR_IO,       /* refused, reset, closed by peer                      */
    REDLOCK_ERR_PROTOCOL, /* malformed or unexpected reply, or over a parser limit */
    REDLOCK_ERR_SERVER,   /* Redis answered with an error reply                  */
    REDLOCK_ERR_AUTH,     /* AUTH/SELECT refused, or NOAUTH                      */
    REDLOCK_ERR_ARG,      /* invalid argument or URL                             */
    REDLOCK_ERR_NOMEM     /* out of memory                                       */
};

/* A static, human string for a status code ("unknown status" otherwise). */
REDLOCK_API const char *redlock_strerror(int status);

typedef struct redlock_options {
    int connect_timeout_ms; /* per node, connect + AUTH/SELECT     (default 1000) */
    int io_timeout_ms;      /* per request, per node                (default 500)  */
    double drift_factor;    /* clock drift allowance, ttl * factor  (default 0.01) */
    int fencing;            /* 1: every acquire returns a fencing token (default 1) */
    int retry_min_ms;       /* redlock_lock: first backoff bound    (default 50)   */
    int retry_max_ms;       /* redlock_lock: backoff cap            (default 1000) */
    uint32_t max_bulk;      /* parser: longest bulk string accepted (default 65536) */
    uint32_t max_array;     /* parser: most elements in one array   (default 128)  */
    uint32_t max_depth;     /* parser: deepest array nesting        (default 8)    */
    uint32_t max_line;      /* parser: longest status/error line    (default 4096) */
    int fair;               /* 1: waiters get the lock in the order they began to
                               wait (a queue in Redis); every client of a lock
                               name must agree on this             (default 0)    */
} redlock_options;

/* Fill *o with the defaults above. */
REDLOCK_API void redlock_options_init(redlock_options *o);

/* Make a client for n Redis URLs (n > 1: quorum locks over independent
 * masters). URLs: redis://[user[:password]@]host[:port][/db],
 * redis://[::1]:6379, unix:///path/redis.sock[?db=N&user=U&password=P].
 * No I/O happens here: connections open on first use.
 * Returns REDLOCK_OK and *out, or REDLOCK_ERR_ARG (bad URL or option) or
 * REDLOCK_ERR_NOMEM, with *out NULL and the reason in redlock_last_errstr().
 * opts NULL: defaults. */
REDLOCK_API int redlock_client_new(redlock_client **out, const char *const *urls, size_t n,
                       const redlock_options *opts);
/* Close every connection and free the client. Free its locks first. NULL ok. */
REDLOCK_API void redlock_client_free(redlock_client *c);
/* Detail of the last error on c or on one of its locks ("" if none). Valid
 * until the next call on c. Never contains a password. */
REDLOCK_API const char *redlock_client_errstr(const redlock_client *c);
/* Detail of the last failed redlock_client_new in this thread, for when it
 * could not return a client. */
REDLOCK_API const char *redlock_last_errstr(void);

/* Make a lock handle for name (binary-safe, NUL-terminated, non-empty) with
 * the given TTL in ms (> 0). value is the owner's identity (copied); NULL
 * makes a random 128-bit token from the OS (fails with REDLOCK_ERR_IO
 * rather than use a weak source). No I/O. */
REDLOCK_API int redlock_new(redlock **out, redlock_client *c, const char *name, const char *value,
                uint32_t ttl_ms);
/* Same, with a name of namelen bytes that may contain NUL. */
REDLOCK_API int redlock_new_len(redlock **out, redlock_client *c, const char *name, size_t namelen,
                    const char *value, uint32_t ttl_ms);

/* One attempt, one round trip (quorum: one parallel round trip).
 * REDLOCK_OK: held, with a fencing token and validity; also when we already
 * held it (the TTL is reset, the token kept). REDLOCK_NOT_ACQUIRED: someone
 * else holds it (fair mode: or it is free and a waiter is first in line).
 * Errors: REDLOCK_ERR_*. */
REDLOCK_API int redlock_trylock(redlock *l);
/* Try, then wait for a release (pub/sub, no fixed-interval polling), the
 * holder's TTL running out, or a jittered backoff, until acquired or
 * wait_ms passes: REDLOCK_NOT_ACQUIRED then. I/O errors are retried until
 * the wait runs out; argument, auth and server errors return at once.
 * Fair mode: the caller joins the lock's queue and is served in turn; it
 * leaves the queue when this returns. */
REDLOCK_API int redlock_lock(redlock *l, uint32_t wait_ms);
/* Release if still ours (compare-and-delete; wakes waiters). REDLOCK_OK,
 * or REDLOCK_NOT_HELD (errstr: expired, or another owner) and nothing is
 * changed. Never retried in a loop. */
REDLOCK_API int redlock_unlock(redlock *l);
/* Reset the TTL if still ours. REDLOCK_NOT_HELD if lost; never re-creates
 * an expired lock. */
REDLOCK_API int redlock_refresh(redlock *l);
/* Fencing token of the last successful acquire (0 if none or fencing off). */
REDLOCK_API uint64_t redlock_fence(const redlock *l);
/* ms of ownership left from the last acquire or refresh, minus the drift
 * allowance; 0 when not held. */
REDLOCK_API int64_t redlock_validity_ms(const redlock *l);
/* The owner value (NUL-terminated; owned by the lock). */
REDLOCK_API const char *redlock_value(const redlock *l);
typedef struct redlock_info {
    int held;       /* 1: one owner holds the lock on a quorum of nodes       */
    int ours;       /* 1: that owner is this handle (its value)               */
    int64_t ttl_ms; /* that owner's remaining TTL (least over the quorum), -1 */
    uint64_t fence; /* the highest fence counter seen (the last token issued) */
} redlock_info;
/* Look at the lock without taking it (one round trip, no waiting). Errors
 * as for redlock_trylock when too few nodes answer. */
REDLOCK_API int redlock_inspect(redlock *l, redlock_info *info);
/* Free the handle. No I/O: a held lock is reclaimed by its TTL. NULL ok. */
REDLOCK_API void redlock_free(redlock *l);

/* Replace the allocator used for everything the library allocates (NULLs
 * restore malloc/realloc/free). Call before making any client. */
REDLOCK_API void redlock_set_allocator(void *(*alloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                           void (*free_fn)(void *));

#ifdef __cplusplus
}
#endif

#endif
