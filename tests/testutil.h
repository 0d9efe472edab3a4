/* testutil.h - what the suites share on top of the fixture: a client, a
 * lock, a key's value read around the library, and an allocator that counts.
 * Each helper fails the running Check test when it cannot do its job.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include "fixture.h"
#include "redlock.h"

#include <stddef.h>
#include <stdint.h>

/* A client over n URLs with options o (NULL: the defaults). */
redlock_client *tu_client_opts(const char *const *urls, size_t n, const redlock_options *o);
/* A client over n URLs; io_ms > 0 sets both the connect and the I/O
 * timeout, 0 keeps the defaults. */
redlock_client *tu_client_urls(const char *const *urls, size_t n, int io_ms);
/* The same for one URL. */
redlock_client *tu_client(const char *url, int io_ms);
/* A lock on c (value NULL: a random one). */
redlock *tu_lock(redlock_client *c, const char *name, const char *value, uint32_t ttl_ms);

/* GET key on s through the fixture's own connection (not the library):
 * the value, "" when the key is missing. Valid until the next call. */
const char *tu_get(fx_server *s, const char *key);

/* The library's allocations, counted while tu_alloc_start is in force. */
typedef struct tu_allocs {
    long calls;     /* allocations and reallocations since tu_alloc_start */
    size_t biggest; /* the largest size asked for */
    long fail_at;   /* > 0: that call (counting from 1) returns NULL */
} tu_allocs;
extern tu_allocs tu_alloc;

/* Reset the counters and route the library's allocations through them. */
void tu_alloc_start(long fail_at);
/* Back to malloc, realloc and free. */
void tu_alloc_stop(void);

#endif
