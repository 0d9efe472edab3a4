/* netx.h - a blocking driver for net.c's connections, for the tests and
 * the benchmark: queue requests, then run poll() until results arrive.
 * (The library itself drives connections from its engine, redlock.c.)
 */
#ifndef NETX_H
#define NETX_H

#include "net.h"

#include <stddef.h>
#include <stdint.h>

/* One result taken from a connection. */
typedef struct nx_result {
    int status;        /* RESP_OK (a reply or push) or the request's error */
    net_tag tag;       /* whose request; owner NULL for a push              */
    size_t conn;       /* index of the connection it came from              */
    int type;          /* RESP_OK: the reply's type                         */
    long long integer; /* RESP_INTEGER                                      */
    char text[512];    /* status, error, bulk (truncated); arrays: elements joined by '\n' */
    size_t len;        /* bytes of text (before truncation for bulk)       */
} nx_result;

/* A connection to url with both timeouts set to timeout_ms (the test fails
 * via abort() when the URL is bad or memory runs out). */
net_conn *nx_conn(const char *url, int timeout_ms);

/* Queue a request tagged with seq (owner: the connection itself). */
int nx_send(net_conn *c, int argc, const char *const *argv, uint32_t seq, int64_t cap);
int nx_sendl(net_conn *c, int argc, const char *const *argv, const size_t *lens, uint32_t seq,
             int64_t cap);

/* Drive the connections until want results were taken in all (written to
 * out[0..want)) or until limit (CLOCK_MONOTONIC ns; 0: none). Returns how
 * many were taken. */
size_t nx_run(net_conn *const *cs, size_t n, nx_result *out, size_t want, int64_t limit);

/* Send one command on c and wait for its result. */
nx_result nx_call(net_conn *c, int argc, const char *const *argv);
/* Same, and a bulk or status reply is also copied whole into buf
 * (NUL-terminated, truncated to fit). */
nx_result nx_call_buf(net_conn *c, int argc, const char *const *argv, char *buf, size_t buflen);

#endif
