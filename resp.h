/* resp.h - internal: RESP2 codec (resp.c) and connections (net.c).
 *
 * Nothing here knows about locks. redlock.c is the only user; tests use it
 * directly. Status codes share their numbers with the REDLOCK_* enum in
 * redlock.h (redlock.c checks that at compile time).
 */
#ifndef REDLOCK_RESP_H
#define REDLOCK_RESP_H

#include <stddef.h>
#include <stdint.h>

/* ---- status codes (same values as REDLOCK_*) ---------------------------- */

enum {
    RESP_OK = 0,
    RESP_ERR_TIMEOUT = 3,
    RESP_ERR_IO = 4,
    RESP_ERR_PROTOCOL = 5,
    RESP_ERR_SERVER = 6,
    RESP_ERR_AUTH = 7,
    RESP_ERR_ARG = 8,
    RESP_ERR_NOMEM = 9,
    /* not an error: a listening connection saw no message before the
     * caller's limit; it stays open and in step */
    RESP_IDLE = 100
};

/* ---- allocation ----------------------------------------------------------- */

/* Every allocation of the library goes through these. resp_alloc_array
 * checks n * size for overflow and returns NULL on it. */
void *resp_alloc(size_t size);
void *resp_alloc_array(size_t n, size_t size);   /* zeroed, like calloc */
void *resp_realloc(void *p, size_t size);
void resp_free(void *p);
char *resp_strndup(const char *s, size_t n);     /* NUL-terminated copy */
/* Replace the allocator (NULLs restore malloc/realloc/free). Not thread-safe:
 * call before any client exists. */
void resp_set_allocator(void *(*alloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                        void (*free_fn)(void *));

/* ---- RESP2 parser --------------------------------------------------------- */

enum resp_type {
    RESP_STATUS = 1, /* +OK          str/len                                  */
    RESP_ERROR,      /* -ERR ...     str/len (the text after '-')              */
    RESP_INTEGER,    /* :42          integer                                  */
    RESP_BULK,       /* $3 foo       str/len (binary, not NUL-terminated)     */
    RESP_ARRAY,      /* *2 ...       n children follow, in pre-order           */
    RESP_NIL         /* $-1 or *-1                                             */
};

/* One element of a reply. A reply is a flat array of elements in pre-order,
 * like jsmn's tokens: element 0 is the top; an array's children follow it.
 * str points into the caller's buffer (zero-copy) and is valid until that
 * buffer changes. */
typedef struct resp_reply {
    int type;           /* enum resp_type */
    uint32_t n;         /* RESP_ARRAY: number of direct children */
    uint32_t span;      /* elements in this subtree, itself included: the
                           next sibling is at this + span */
    const char *str;    /* RESP_STATUS, RESP_ERROR, RESP_BULK */
    size_t len;
    long long integer;  /* RESP_INTEGER */
} resp_reply;

/* Limits that make a hostile peer's input a protocol error instead of a
 * crash, a hang or a huge allocation. Zero fields take the defaults. */
typedef struct resp_limits {
    uint32_t max_bulk;   /* bytes in one bulk string     (default 64 KiB) */
    uint32_t max_array;  /* elements in one array        (default 128)    */
    uint32_t max_depth;  /* array nesting                (default 8, at most RESP_MAX_DEPTH) */
    uint32_t max_line;   /* bytes in a +, -, : or length line, CRLF excluded (default 4096) */
} resp_limits;

#define RESP_MAX_DEPTH 32
#define RESP_DEFAULT_MAX_BULK (64u * 1024u)
#define RESP_DEFAULT_MAX_ARRAY 128u
#define RESP_DEFAULT_MAX_DEPTH 8u
#define RESP_DEFAULT_MAX_LINE 4096u

/* resp_parse results */
#define RESP_PARSE_ERROR (-1)      /* malformed; errstr says why; sticky    */
#define RESP_PARSE_INCOMPLETE (-2) /* call again with more bytes            */

typedef struct resp_parser {
    resp_limits lim;
    resp_reply *elems; /* caller-owned output array */
    size_t cap;        /* its length: more elements than this is an error */
    size_t nelem;      /* elements of the current reply so far             */
    size_t pos;        /* bytes of the current reply consumed so far       */
    uint32_t depth;
    uint32_t left[RESP_MAX_DEPTH]; /* children still to come, per open array */
    int done;          /* the last call completed a reply                   */
    int failed;        /* sticky error                                      */
    char errstr[128];
} resp_parser;

/* Set up a parser writing into elems[0..cap). lim may be NULL (defaults). */
void resp_parser_init(resp_parser *p, const resp_limits *lim, resp_reply *elems, size_t cap);
/* Forget any partial reply and a sticky error. */
void resp_parser_reset(resp_parser *p);
/* Parse one reply from buf[0..len). buf must start at the reply's first
 * byte and hold the same bytes on every call for that reply (it may move:
 * positions are kept as offsets). Returns the reply's size in bytes (> 0)
 * with p->elems[0..p->nelem) filled, RESP_PARSE_INCOMPLETE, or
 * RESP_PARSE_ERROR (p->errstr says why; further calls fail until reset).
 * After a complete reply the next call starts a new one. */
long resp_parse(resp_parser *p, const char *buf, size_t len);

/* ---- RESP2 encoder -------------------------------------------------------- */

/* Bytes needed to encode argv as an array of bulk strings. 0 on overflow. */
size_t resp_command_len(int argc, const size_t *lens);
/* Encode into dst, which has room for resp_command_len(). Returns bytes written. */
size_t resp_command_encode(char *dst, int argc, const char *const *argv, const size_t *lens);

/* ---- URLs ----------------------------------------------------------------- */

enum { RESP_URL_TCP = 1, RESP_URL_UNIX };

typedef struct resp_url {
    int kind;            /* RESP_URL_TCP or RESP_URL_UNIX                 */
    char host[256];      /* TCP: name or address, no brackets             */
    char port[6];        /* TCP: decimal, default "6379"                  */
    char path[108];      /* UNIX: socket path (fits sun_path)             */
    char user[128];      /* empty: none (AUTH with password only)         */
    char password[256];  /* empty: no AUTH                                */
    int db;              /* SELECT on connect when non-zero               */
} resp_url;

/* Parse redis://[user[:password]@]host[:port][/db], redis://[::1]:6379,
 * unix:///path[?db=N&user=U&password=P]. User and password may be
 * %-encoded. Returns RESP_OK or RESP_ERR_ARG with a message in err (which
 * never contains the password). */
int resp_url_parse(resp_url *u, const char *url, char *err, size_t errlen);
/* "host:port", "[v6]:port" or "unix:/path", for messages; never the password. */
void resp_url_describe(const resp_url *u, char *dst, size_t dstlen);

/* ---- connections ---------------------------------------------------------- */

typedef struct resp_conn resp_conn;

typedef struct resp_conn_opts {
    int connect_timeout_ms; /* whole connect, all addresses, and AUTH/SELECT */
    int io_timeout_ms;      /* one request: write and read of its reply       */
    resp_limits limits;
    size_t max_reply;       /* read buffer cap in bytes (default max_bulk + 4 KiB) */
} resp_conn_opts;

/* A connection to one server. It connects lazily in resp_exchange and
 * reconnects there after a failure; a connection that failed, timed out
 * or fell out of step is closed, never reused. */
int resp_conn_new(resp_conn **out, const resp_url *url, const resp_conn_opts *opts);
void resp_conn_free(resp_conn *c);
void resp_conn_close(resp_conn *c);

/* Queue one command (copied into the write buffer; sent by resp_exchange).
 * RESP_OK, RESP_ERR_NOMEM or RESP_ERR_ARG (argc < 1 or too large). */
int resp_conn_append(resp_conn *c, int argc, const char *const *argv, const size_t *lens);
/* Same, argv NUL-terminated strings. */
int resp_conn_appendv(resp_conn *c, int argc, const char *const *argv);

/* Listening mode (pub/sub): replies arrive unsolicited. A listening
 * connection waits for the next message without a per-request deadline,
 * bounded only by the limit given to resp_exchange, and an idle wait that
 * ends there leaves it open (status RESP_IDLE). Cleared when it closes. */
void resp_conn_listen(resp_conn *c);
int resp_conn_listening(const resp_conn *c);

/* Drive the given connections until each one with a reply due has its next
 * reply parsed or has failed: connect where needed (in parallel), send what
 * is queued, collect replies, all in one poll() loop. Each request gets one
 * deadline, io_timeout_ms from now (a connect first gets connect_timeout_ms);
 * limit_ns (CLOCK_MONOTONIC ns, 0 for none) caps every deadline. With any != 0
 * it returns as soon as one connection has a reply or fails. Connections with
 * nothing due are left alone. Afterwards see resp_conn_status. */
void resp_exchange(resp_conn *const *cs, size_t n, int64_t limit_ns, int any);

/* Result of the last exchange for c: RESP_OK when a reply is ready,
 * RESP_IDLE, or an error (the connection is then closed and its queue
 * dropped). */
int resp_conn_status(const resp_conn *c);
const char *resp_conn_errstr(const resp_conn *c);
/* The ready reply (NULL if none): elements in pre-order, count in *nelem. */
const resp_reply *resp_conn_reply(const resp_conn *c, size_t *nelem);
/* Done with the ready reply; the next one may be parsed. */
void resp_conn_consume(resp_conn *c);
/* Replies still due on c (commands sent or queued, not yet consumed). */
unsigned resp_conn_pending(const resp_conn *c);
/* Parse and hand over replies already received, without waiting: returns
 * RESP_OK with a reply ready, RESP_IDLE when none is complete, or an error. */
int resp_conn_poll_ready(resp_conn *c);
/* Incremented on every successful connect (0: never connected). */
uint64_t resp_conn_generation(const resp_conn *c);
int resp_conn_connected(const resp_conn *c);
const resp_url *resp_conn_url(const resp_conn *c);

/* ---- clock ---------------------------------------------------------------- */

int64_t resp_now_ns(void); /* CLOCK_MONOTONIC */

#endif
