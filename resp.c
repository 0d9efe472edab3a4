/* resp.c - RESP2 encoder and an incremental, zero-copy, bounded reply parser.
 *
 * The parser is a loop over a small explicit stack (no recursion). It never
 * allocates: elements go into a caller-owned array and strings point into
 * the caller's buffer. Partial input resumes where it stopped; every length
 * and the nesting depth are capped, so hostile input is an error, not a
 * crash or a huge allocation.
 */
#include "resp.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- allocation ----------------------------------------------------------- */

static void *(*alloc_hook)(size_t) = malloc;
static void *(*realloc_hook)(void *, size_t) = realloc;
static void (*free_hook)(void *) = free;

void resp_set_allocator(void *(*alloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                        void (*free_fn)(void *))
{
    alloc_hook = alloc_fn ? alloc_fn : malloc;
    realloc_hook = realloc_fn ? realloc_fn : realloc;
    free_hook = free_fn ? free_fn : free;
}

void *resp_alloc(size_t size)
{
    return alloc_hook(size ? size : 1);
}

void *resp_alloc_array(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    size_t bytes = n * size;
    void *p = resp_alloc(bytes);
    if (p && bytes > 0)
        memset(p, 0, bytes);
    return p;
}

void *resp_realloc(void *p, size_t size)
{
    return realloc_hook(p, size ? size : 1);
}

void resp_free(void *p)
{
    if (p)
        free_hook(p);
}

char *resp_strndup(const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *d = resp_alloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- parser helpers ------------------------------------------------------- */

static void limits_fill(resp_limits *dst, const resp_limits *src)
{
    resp_limits d = {RESP_DEFAULT_MAX_BULK, RESP_DEFAULT_MAX_ARRAY, RESP_DEFAULT_MAX_DEPTH,
                     RESP_DEFAULT_MAX_LINE};
    if (src) {
        if (src->max_bulk)
            d.max_bulk = src->max_bulk;
        if (src->max_array)
            d.max_array = src->max_array;
        if (src->max_depth)
            d.max_depth = src->max_depth;
        if (src->max_line)
            d.max_line = src->max_line;
    }
    if (d.max_depth > RESP_MAX_DEPTH)
        d.max_depth = RESP_MAX_DEPTH;
    *dst = d;
}

static long fail(resp_parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errstr, sizeof p->errstr, fmt, ap);
    va_end(ap);
    p->failed = 1;
    return RESP_PARSE_ERROR;
}

/* Strict decimal: optional '-', at least one digit, nothing else, no
 * overflow. Returns 0 on success. */
static int parse_ll(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    unsigned long long v = 0;
    /* v * 10 + d must stay <= LLONG_MAX (or |LLONG_MIN| when negative):
     * compare against lim / 10 and lim % 10, no division per digit. */
    const unsigned long long lim10 = (unsigned long long)LLONG_MAX / 10;
    unsigned last = (unsigned)((unsigned long long)LLONG_MAX % 10);

    if (n > 0 && s[0] == '-') {
        neg = 1;
        last += 1; /* |LLONG_MIN| = LLONG_MAX + 1, and LLONG_MAX % 10 != 9 */
        i = 1;
    }
    if (i == n)
        return -1;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - (unsigned)'0';
        if (d > 9)
            return -1;
        if (v > lim10 || (v == lim10 && d > last))
            return -1;
        v = v * 10 + d;
    }
    if (neg)
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    else
        *out = (long long)v;
    return 0;
}

/* Find the line starting at buf[at] (after its type byte). On success sets
 * *end to the index of its CR and returns 1; 0 when more input is needed;
 * RESP_PARSE_ERROR on a malformed or overlong line. */
static long find_line(resp_parser *p, const char *buf, size_t len, size_t at, size_t *end)
{
    size_t avail = len - at;
    size_t scan = avail < (size_t)p->lim.max_line + 1 ? avail : (size_t)p->lim.max_line + 1;
    const char *cr = memchr(buf + at, '\r', scan);

    if (!cr) {
        if (avail > p->lim.max_line)
            return fail(p, "line longer than %u bytes", p->lim.max_line);
        if (memchr(buf + at, '\n', avail))
            return fail(p, "line feed without carriage return");
        return 0;
    }
    size_t i = (size_t)(cr - buf);
    if (memchr(buf + at, '\n', i - at))
        return fail(p, "line feed without carriage return");
    if (i + 1 >= len)
        return 0;
    if (buf[i + 1] != '\n')
        return fail(p, "carriage return not followed by line feed");
    *end = i;
    return 1;
}

static const char *type_name(char t)
{
    return t == '$' ? "bulk" : "array";
}

/* A length line of a bulk or an array: -1 (nil) or 0..max. */
static long parse_length(resp_parser *p, char t, const char *s, size_t n, long long max,
                         long long *out)
{
    if (parse_ll(s, n, out) != 0)
        return fail(p, "invalid %s length", type_name(t));
    if (*out < -1)
        return fail(p, "invalid %s length %lld", type_name(t), *out);
    if (*out > max)
        return fail(p, "%s length %lld exceeds the limit of %lld", type_name(t), *out, max);
    return 0;
}

/* After an element completes, close the arrays it completes. Returns 1 when
 * the whole reply is complete. */
static int close_arrays(resp_parser *p)
{
    while (p->depth > 0) {
        if (--p->left[p->depth - 1] > 0)
            return 0;
        p->depth--;
    }
    return 1;
}

static void set_spans(resp_parser *p)
{
    /* Spans are computed once the reply is complete: walk backwards, each
     * array's span is 1 + the spans of its n children. */
    for (size_t i = p->nelem; i-- > 0;) {
        resp_reply *e = &p->elems[i];
        e->span = 1;
        if (e->type == RESP_ARRAY) {
            size_t j = i + 1;
            for (uint32_t c = 0; c < e->n; c++)
                j += p->elems[j].span;
            e->span = (uint32_t)(j - i);
        }
    }
}

/* Turn the offsets kept during parsing into pointers into buf. */
static void set_pointers(resp_parser *p, const char *buf)
{
    for (size_t i = 0; i < p->nelem; i++) {
        resp_reply *e = &p->elems[i];
        if (e->type == RESP_STATUS || e->type == RESP_ERROR || e->type == RESP_BULK) {
            e->str = buf + e->integer;
            e->integer = 0;
        }
    }
}

/* ---- parser --------------------------------------------------------------- */

void resp_parser_init(resp_parser *p, const resp_limits *lim, resp_reply *elems, size_t cap)
{
    memset(p, 0, sizeof *p);
    limits_fill(&p->lim, lim);
    p->elems = elems;
    p->cap = cap;
}

void resp_parser_reset(resp_parser *p)
{
    p->nelem = 0;
    p->pos = 0;
    p->depth = 0;
    p->done = 0;
    p->failed = 0;
    p->errstr[0] = '\0';
}

static resp_reply *new_elem(resp_parser *p)
{
    if (p->nelem >= p->cap)
        return NULL;
    resp_reply *e = &p->elems[p->nelem];
    memset(e, 0, sizeof *e);
    return e;
}

/* A bulk or array length (at s, sn bytes, at most max): 1 and *n; 0 for
 * -1, the nil form (e is made RESP_NIL); RESP_PARSE_ERROR. */
static int take_length(resp_parser *p, resp_reply *e, char kind, const char *s, size_t sn,
                       uint32_t max, long long *n)
{
    if (parse_length(p, kind, s, sn, max, n) < 0)
        return RESP_PARSE_ERROR;
    if (*n >= 0)
        return 1;
    e->type = RESP_NIL;
    return 0;
}

/* The body of a bulk string whose header (length at s, sn bytes) ends at
 * *next: 1 taken (*next moves past it), 0 more input needed, or
 * RESP_PARSE_ERROR. */
static long take_bulk(resp_parser *p, resp_reply *e, const char *buf, size_t len, const char *s,
                      size_t sn, size_t *next)
{
    long long n = 0; /* set by take_length; gcc -O3 cannot see it */
    int k = take_length(p, e, '$', s, sn, p->lim.max_bulk, &n);
    if (k <= 0)
        return k < 0 ? RESP_PARSE_ERROR : 1;
    /* n + 2 would wrap a 32-bit size_t when max_bulk allows n near 2^32 */
    if (len - *next < 2 || len - *next - 2 < (size_t)n)
        return 0; /* header re-read on resume: at most max_line bytes */
    if (buf[*next + (size_t)n] != '\r' || buf[*next + (size_t)n + 1] != '\n')
        return fail(p, "bulk string not terminated by CRLF");
    e->type = RESP_BULK;
    e->integer = (long long)*next;
    e->len = (size_t)n;
    *next += (size_t)n + 2;
    return 1;
}

/* An array header (its count at s, sn bytes): 1 an empty or nil array
 * (complete), 2 an array opened (its elements follow), or
 * RESP_PARSE_ERROR. */
static long take_array(resp_parser *p, resp_reply *e, const char *s, size_t sn)
{
    long long n = 0;
    int k = take_length(p, e, '*', s, sn, p->lim.max_array, &n);
    if (k <= 0)
        return k < 0 ? RESP_PARSE_ERROR : 1;
    e->type = RESP_ARRAY;
    e->n = (uint32_t)n;
    if (n == 0)
        return 1;
    if (p->depth >= p->lim.max_depth)
        return fail(p, "arrays nested deeper than %u", p->lim.max_depth);
    p->left[p->depth++] = (uint32_t)n;
    return 2;
}

/* Parse one element at p->pos. Returns 1 when an element was taken, 2
 * when an array header opened one, 0 when more input is needed, or
 * RESP_PARSE_ERROR. */
static long parse_one(resp_parser *p, const char *buf, size_t len)
{
    size_t at = p->pos, end = 0;
    long r;

    if (at >= len)
        return 0;
    char t = buf[at];
    if (t != '+' && t != '-' && t != ':' && t != '$' && t != '*')
        return fail(p, "unknown reply type byte 0x%02x", (unsigned)(unsigned char)t);
    r = find_line(p, buf, len, at + 1, &end);
    if (r <= 0)
        return r;
    const char *s = buf + at + 1;
    size_t sn = end - (at + 1);
    size_t next = end + 2;

    resp_reply *e = new_elem(p);
    if (!e)
        return fail(p, "reply has more than %zu elements", p->cap);

    switch (t) {
    case '+':
    case '-':
        e->type = t == '+' ? RESP_STATUS : RESP_ERROR;
        e->integer = (long long)at + 1; /* offset; a pointer once complete */
        e->len = sn;
        r = 1;
        break;
    case ':':
        if (parse_ll(s, sn, &e->integer) != 0)
            return fail(p, "invalid integer reply");
        e->type = RESP_INTEGER;
        r = 1;
        break;
    case '$':
        r = take_bulk(p, e, buf, len, s, sn, &next);
        break;
    default: /* '*' */
        r = take_array(p, e, s, sn);
        break;
    }
    if (r > 0) {
        p->nelem++;
        p->pos = next;
    }
    return r;
}

long resp_parse(resp_parser *p, const char *buf, size_t len)
{
    if (p->failed)
        return RESP_PARSE_ERROR;
    if (p->done) {
        p->nelem = 0;
        p->pos = 0;
        p->depth = 0;
        p->done = 0;
    }
    for (;;) {
        long r = parse_one(p, buf, len);
        if (r == 0)
            return RESP_PARSE_INCOMPLETE;
        if (r < 0)
            return r;
        if (r == 1 && close_arrays(p))
            break;
    }
    set_spans(p);
    set_pointers(p, buf);
    p->done = 1;
    return (long)p->pos;
}

/* ---- encoder -------------------------------------------------------------- */

static size_t digits(size_t v)
{
    size_t d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

size_t resp_command_len(int argc, const size_t *lens)
{
    if (argc < 1)
        return 0;
    size_t total = 1 + digits((size_t)argc) + 2;
    for (int i = 0; i < argc; i++) {
        size_t part = 1 + digits(lens[i]) + 2 + 2;
        if (lens[i] > SIZE_MAX - part || total > SIZE_MAX - part - lens[i])
            return 0;
        total += part + lens[i];
    }
    return total;
}

static char *put_header(char *d, char type, size_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    *d++ = type;
    while (n)
        *d++ = tmp[--n];
    *d++ = '\r';
    *d++ = '\n';
    return d;
}

size_t resp_command_encode(char *dst, int argc, const char *const *argv, const size_t *lens)
{
    char *d = put_header(dst, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        d = put_header(d, '$', lens[i]);
        if (lens[i])
            memcpy(d, argv[i], lens[i]);
        d += lens[i];
        *d++ = '\r';
        *d++ = '\n';
    }
    return (size_t)(d - dst);
}
