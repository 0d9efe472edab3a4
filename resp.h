/* resp.h - internal: RESP2 codec (resp.c) and the allocator.
 *
 * Nothing here knows about connections or locks (net.h builds on this;
 * redlock.c on net.h). Tests use it directly. Status codes share their
 * numbers with the REDLOCK_* enum in redlock.h (redlock.c checks that at
 * compile time).
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
    RESP_ERR_TLS = 11, /* from a TLS transport (net.c); resp.c never returns it */
    /* not an error: nothing (more) to hand out for now */
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

#endif
