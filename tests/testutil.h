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

/* A client over n URLs with options o (NULL: the defaults), but the
 * restart guard off unless o asks for it (restart_guard = 1): the
 * fixture's servers are always younger than a lease. */
redlock_client *tu_client_opts(const char *const *urls, size_t n, const redlock_options *o);
/* A client over n URLs; io_ms > 0 sets both the connect and the I/O
 * timeout, 0 keeps the defaults. */
redlock_client *tu_client_urls(const char *const *urls, size_t n, int io_ms);
/* The same for one URL. */
redlock_client *tu_client(const char *url, int io_ms);
/* A lock on c (value NULL: a random one). */
redlock *tu_lock(redlock_client *c, const char *name, const char *value, uint32_t ttl_ms);

/* A first fencing token from a new counter is seeded from the server's
 * clock in microseconds: 1 when f is within ten minutes of this host's
 * (the tests' servers run here). */
int tu_seeded(uint64_t f);

/* GET key on s through the fixture's own connection (not the library):
 * the value, "" when the key is missing. Valid until the next call. */
const char *tu_get(fx_server *s, const char *key);

/* calls= of one command in s's INFO commandstats since its last CONFIG
 * RESETSTAT (a script's own calls count too); 0 when it never ran. */
long tu_cmd_calls(fx_server *s, const char *cmd);

/* One turn of an event loop over c: poll its sockets until its next
 * timer, at most max_ms, then redlock_client_process. */
void tu_turn(redlock_client *c, int max_ms);
/* Turn c until it has n sockets to poll (a listener opened, say); fails the
 * test if that takes 1000 turns. */
void tu_turn_until_sockets(redlock_client *c, int n);
/* Turn c (l's client) until l's operation has ended (at most 1000 turns
 * of 100 ms); its redlock_result. */
int tu_turn_until_result(redlock_client *c, redlock *l);

/* The events of a client, recorded as they come: redlock_client_on_event(c,
 * tu_record, &events). The first TU_EVENTS are kept; n counts them all. */
#define TU_EVENTS 128
typedef struct tu_event {
    int type, status, node_index, listener;
    int64_t value;
    char what[32], node[128], name[64], detail[512];
} tu_event;
typedef struct tu_events {
    int n;
    tu_event at[TU_EVENTS];
} tu_events;
void tu_record(const redlock_event *ev, void *arg);
/* How many kept events have this type. */
int tu_events_count(const tu_events *e, int type);
/* The first kept event of this type, or NULL. */
const tu_event *tu_events_find(const tu_events *e, int type);

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
