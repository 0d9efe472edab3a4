/* test_codec.c - the RESP2 parser and encoder, no network.
 *
 * Every sample is parsed in one go, at every split point, one byte at a
 * time, from a buffer that moves between calls, and from the very end of a
 * page followed by a PROT_NONE guard page (any read past the end crashes).
 */
#define _GNU_SOURCE
#include "resp.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CAP 64

typedef struct sample {
    const char *bytes;
    size_t len; /* 0: strlen */
    int type;   /* of the top element */
    size_t nelem;
} sample;

static const sample good[] = {
    {"+OK\r\n", 0, RESP_STATUS, 1},
    {"-ERR wrong number of arguments\r\n", 0, RESP_ERROR, 1},
    {":0\r\n", 0, RESP_INTEGER, 1},
    {":-42\r\n", 0, RESP_INTEGER, 1},
    {":9223372036854775807\r\n", 0, RESP_INTEGER, 1},
    {":-9223372036854775808\r\n", 0, RESP_INTEGER, 1},
    {"$3\r\nfoo\r\n", 0, RESP_BULK, 1},
    {"$0\r\n\r\n", 0, RESP_BULK, 1},
    {"$-1\r\n", 0, RESP_NIL, 1},
    {"*0\r\n", 0, RESP_ARRAY, 1},
    {"*-1\r\n", 0, RESP_NIL, 1},
    {"$5\r\na\r\n\0b\r\n", 11, RESP_BULK, 1},
    {"*2\r\n:1\r\n:2500\r\n", 0, RESP_ARRAY, 3},
    {"*3\r\n$9\r\nsubscribe\r\n$9\r\nredlock:x\r\n:1\r\n", 0, RESP_ARRAY, 4},
    {"*3\r\n$-1\r\n:5\r\n$1\r\n7\r\n", 0, RESP_ARRAY, 4},
    {"*2\r\n*2\r\n:1\r\n$-1\r\n*-1\r\n", 0, RESP_ARRAY, 5},
    {"*3\r\n*0\r\n*1\r\n*1\r\n+deep\r\n:3\r\n", 0, RESP_ARRAY, 6},
};
#define NGOOD (sizeof good / sizeof good[0])

static size_t slen(const sample *s)
{
    return s->len ? s->len : strlen(s->bytes);
}

/* ---- helpers ----------------------------------------------------------------------- */

static resp_reply elems[CAP];
static resp_parser p;

static long parse_all(const char *buf, size_t len, const resp_limits *lim)
{
    resp_parser_init(&p, lim, elems, CAP);
    return resp_parse(&p, buf, len);
}

/* A copy of the elements with str as offsets, to compare parses. */
typedef struct flat {
    int type;
    uint32_t n, span;
    size_t off, len;
    long long integer;
} flat;

static void flatten(flat *out, const resp_reply *e, size_t n, const char *base)
{
    memset(out, 0, sizeof(flat) * n); /* padding too: compared with memcmp */
    for (size_t i = 0; i < n; i++) {
        out[i].type = e[i].type;
        out[i].n = e[i].n;
        out[i].span = e[i].span;
        out[i].len = e[i].len;
        out[i].integer = e[i].integer;
        out[i].off = e[i].str ? (size_t)(e[i].str - base) : (size_t)-1;
    }
}

/* Guard page: len bytes placed so the last one is the last readable byte. */
typedef struct guarded {
    char *map;
    size_t maplen;
    char *data;
} guarded;

static guarded guard_copy(const char *src, size_t len)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t pages = (len + (size_t)pg - 1) / (size_t)pg + 1;
    guarded g;
    g.maplen = (pages + 1) * (size_t)pg;
    g.map = mmap(NULL, g.maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(g.map, MAP_FAILED);
    char *guard = g.map + pages * (size_t)pg;
    ck_assert_int_eq(mprotect(guard, (size_t)pg, PROT_NONE), 0);
    g.data = guard - len;
    if (len)
        memcpy(g.data, src, len);
    return g;
}

static void guard_free(guarded g)
{
    munmap(g.map, g.maplen);
}

/* ---- well-formed replies ---------------------------------------------------------------- */

START_TEST(test_types)
{
    long r = parse_all("+OK\r\n", 5, NULL);
    ck_assert_int_eq(r, 5);
    ck_assert_int_eq(elems[0].type, RESP_STATUS);
    ck_assert_uint_eq(elems[0].len, 2);
    ck_assert(memcmp(elems[0].str, "OK", 2) == 0);

    const char *err = "-ERR boom\r\n";
    ck_assert_int_eq(parse_all(err, strlen(err), NULL), (long)strlen(err));
    ck_assert_int_eq(elems[0].type, RESP_ERROR);
    ck_assert_ptr_eq(elems[0].str, err + 1); /* zero-copy */
    ck_assert_uint_eq(elems[0].len, 8);

    ck_assert_int_eq(parse_all(":-9223372036854775808\r\n", 23, NULL), 23);
    ck_assert_int_eq(elems[0].type, RESP_INTEGER);
    ck_assert(elems[0].integer == INT64_MIN);
    ck_assert_int_eq(parse_all(":9223372036854775807\r\n", 22, NULL), 22);
    ck_assert(elems[0].integer == INT64_MAX);

    const char *bin = "$5\r\na\r\n\0b\r\n";
    ck_assert_int_eq(parse_all(bin, 11, NULL), 11);
    ck_assert_int_eq(elems[0].type, RESP_BULK);
    ck_assert_uint_eq(elems[0].len, 5);
    ck_assert_ptr_eq(elems[0].str, bin + 4);
    ck_assert(memcmp(elems[0].str, "a\r\n\0b", 5) == 0);

    ck_assert_int_eq(parse_all("$-1\r\n", 5, NULL), 5);
    ck_assert_int_eq(elems[0].type, RESP_NIL);
    ck_assert_int_eq(parse_all("*-1\r\n", 5, NULL), 5);
    ck_assert_int_eq(elems[0].type, RESP_NIL);
    ck_assert_int_eq(parse_all("*0\r\n", 4, NULL), 4);
    ck_assert_int_eq(elems[0].type, RESP_ARRAY);
    ck_assert_uint_eq(elems[0].n, 0);
    ck_assert_uint_eq(elems[0].span, 1);
}
END_TEST

START_TEST(test_nested_spans)
{
    /* [[1, nil], nil-array] then a sibling check via span */
    const char *s = "*3\r\n*2\r\n:1\r\n$-1\r\n*-1\r\n+x\r\n";
    ck_assert_int_eq(parse_all(s, strlen(s), NULL), (long)strlen(s));
    ck_assert_uint_eq(p.nelem, 6);
    ck_assert_uint_eq(elems[0].n, 3);
    ck_assert_uint_eq(elems[0].span, 6);
    ck_assert_uint_eq(elems[1].n, 2);
    ck_assert_uint_eq(elems[1].span, 3);
    ck_assert_int_eq(elems[2].integer, 1);
    ck_assert_int_eq(elems[3].type, RESP_NIL);
    ck_assert_int_eq(elems[1 + elems[1].span].type, RESP_NIL); /* next sibling */
    ck_assert_int_eq(elems[5].type, RESP_STATUS);
}
END_TEST

START_TEST(test_every_split)
{
    /* every prefix is INCOMPLETE, then the whole gives the one-shot result,
     * with the same parser resuming, and from a buffer that moves */
    const sample *sm = &good[_i];
    size_t len = slen(sm);
    long whole = parse_all(sm->bytes, len, NULL);
    ck_assert_int_eq(whole, (long)len);
    ck_assert_int_eq(elems[0].type, sm->type);
    ck_assert_uint_eq(p.nelem, sm->nelem);
    flat want[CAP], got[CAP];
    flatten(want, elems, p.nelem, sm->bytes);

    for (size_t split = 0; split < len; split++) {
        resp_parser_init(&p, NULL, elems, CAP);
        char *a = malloc(len), *b = malloc(len);
        memcpy(a, sm->bytes, split);
        ck_assert_int_eq(resp_parse(&p, a, split), RESP_PARSE_INCOMPLETE);
        memcpy(b, sm->bytes, len); /* the same bytes at another address */
        free(a);
        ck_assert_int_eq(resp_parse(&p, b, len), whole);
        ck_assert_uint_eq(p.nelem, sm->nelem);
        flatten(got, elems, p.nelem, b);
        ck_assert(memcmp(want, got, sizeof(flat) * p.nelem) == 0);
        free(b);
    }
}
END_TEST

START_TEST(test_byte_at_a_time_guarded)
{
    const sample *sm = &good[_i];
    size_t len = slen(sm);
    resp_parser_init(&p, NULL, elems, CAP);
    long r = RESP_PARSE_INCOMPLETE;
    for (size_t have = 0; have <= len; have++) {
        guarded g = guard_copy(sm->bytes, have);
        r = resp_parse(&p, g.data, have);
        if (have < len)
            ck_assert_int_eq(r, RESP_PARSE_INCOMPLETE);
        else {
            ck_assert_int_eq(r, (long)len);
            for (size_t i = 0; i < p.nelem; i++)
                if (elems[i].str)
                    ck_assert(elems[i].str >= g.data && elems[i].str + elems[i].len <= g.data + len);
        }
        guard_free(g);
    }
}
END_TEST

START_TEST(test_pipelined)
{
    const char *two = "*2\r\n:1\r\n:7\r\n:1\r\n";
    resp_parser_init(&p, NULL, elems, CAP);
    long r = resp_parse(&p, two, strlen(two));
    ck_assert_int_eq(r, 12);
    ck_assert_int_eq(elems[2].integer, 7);
    r = resp_parse(&p, two + 12, strlen(two) - 12);
    ck_assert_int_eq(r, 4);
    ck_assert_int_eq(elems[0].type, RESP_INTEGER);
    ck_assert_uint_eq(p.nelem, 1);
}
END_TEST

/* ---- malformed input and limits -------------------------------------------------------------- */

typedef struct bad {
    const char *bytes;
    size_t len;
    const char *msg; /* a substring of errstr */
} bad;

static const bad malformed[] = {
    {"!oops\r\n", 0, "unknown reply type byte 0x21"},
    {"\0\r\n", 3, "unknown reply type byte 0x00"},
    {"$abc\r\n", 0, "invalid bulk length"},
    {"$\r\n", 0, "invalid bulk length"},
    {"$-2\r\n", 0, "invalid bulk length -2"},
    {"*-5\r\n", 0, "invalid array length -5"},
    {"$+3\r\nfoo\r\n", 0, "invalid bulk length"},
    {"$3x\r\nfoo\r\n", 0, "invalid bulk length"},
    {"$ 3\r\nfoo\r\n", 0, "invalid bulk length"},
    {":9223372036854775808\r\n", 0, "invalid integer"},
    {":-9223372036854775809\r\n", 0, "invalid integer"},
    {":99999999999999999999\r\n", 0, "invalid integer"},
    {":\r\n", 0, "invalid integer"},
    {":-\r\n", 0, "invalid integer"},
    {":12a\r\n", 0, "invalid integer"},
    {"$3\r\nfooXY", 0, "bulk string not terminated by CRLF"},
    {"+OK\rX", 0, "carriage return not followed by line feed"},
    {"+O\nK\r\n", 0, "line feed without carriage return"},
    {"+OK\n", 0, "line feed without carriage return"},
    {"$1099511627776\r\n", 0, "bulk length 1099511627776 exceeds the limit"},
    {"*1000000000\r\n", 0, "array length 1000000000 exceeds the limit"},
    {"*1\r\n!\r\n", 0, "unknown reply type byte"},
};
#define NBAD (sizeof malformed / sizeof malformed[0])

START_TEST(test_malformed)
{
    const bad *b = &malformed[_i];
    size_t len = b->len ? b->len : strlen(b->bytes);
    guarded g = guard_copy(b->bytes, len);
    resp_parser_init(&p, NULL, elems, CAP);
    ck_assert_int_eq(resp_parse(&p, g.data, len), RESP_PARSE_ERROR);
    ck_assert_msg(strstr(p.errstr, b->msg) != NULL, "errstr '%s', want '%s'", p.errstr, b->msg);
    /* sticky until reset */
    ck_assert_int_eq(resp_parse(&p, "+OK\r\n", 5), RESP_PARSE_ERROR);
    resp_parser_reset(&p);
    ck_assert_int_eq(resp_parse(&p, "+OK\r\n", 5), 5);
    /* every prefix is incomplete or the same error, never a crash */
    for (size_t have = 0; have < len; have++) {
        guarded h = guard_copy(b->bytes, have);
        resp_parser_init(&p, NULL, elems, CAP);
        long r = resp_parse(&p, h.data, have);
        ck_assert(r == RESP_PARSE_INCOMPLETE || r == RESP_PARSE_ERROR);
        guard_free(h);
    }
    guard_free(g);
}
END_TEST

START_TEST(test_limits)
{
    resp_limits lim = {8, 3, 2, 16};
    char big[64];

    ck_assert_int_eq(parse_all("$8\r\n12345678\r\n", 14, &lim), 14);
    ck_assert_int_eq(parse_all("$9\r\n123456789\r\n", 15, &lim), RESP_PARSE_ERROR);
    ck_assert_str_eq(p.errstr, "bulk length 9 exceeds the limit of 8");

    ck_assert_int_eq(parse_all("*3\r\n:1\r\n:2\r\n:3\r\n", 16, &lim), 16);
    ck_assert_int_eq(parse_all("*4\r\n", 4, &lim), RESP_PARSE_ERROR);
    ck_assert_str_eq(p.errstr, "array length 4 exceeds the limit of 3");

    ck_assert_int_eq(parse_all("*1\r\n*1\r\n:1\r\n", 12, &lim), 12);
    ck_assert_int_eq(parse_all("*1\r\n*1\r\n*1\r\n:1\r\n", 16, &lim), RESP_PARSE_ERROR);
    ck_assert_str_eq(p.errstr, "arrays nested deeper than 2");

    /* a line of 16 bytes is fine, 17 is not: complete or never-ending */
    snprintf(big, sizeof big, "+%s\r\n", "0123456789abcdef");
    ck_assert_int_eq(parse_all(big, strlen(big), &lim), (long)strlen(big));
    snprintf(big, sizeof big, "+%s\r\n", "0123456789abcdefg");
    ck_assert_int_eq(parse_all(big, strlen(big), &lim), RESP_PARSE_ERROR);
    ck_assert_str_eq(p.errstr, "line longer than 16 bytes");
    memset(big, 'x', sizeof big);
    big[0] = '+';
    ck_assert_int_eq(parse_all(big, 17, &lim), RESP_PARSE_INCOMPLETE); /* 16 so far */
    ck_assert_int_eq(parse_all(big, 18, &lim), RESP_PARSE_ERROR);      /* 17: over */

    /* more elements than the caller's array holds */
    resp_reply few[3];
    resp_parser_init(&p, NULL, few, 3);
    ck_assert_int_eq(resp_parse(&p, "*3\r\n:1\r\n:2\r\n:3\r\n", 16), RESP_PARSE_ERROR);
    ck_assert_str_eq(p.errstr, "reply has more than 3 elements");

    /* defaults: the huge declared lengths are errors, with no allocation
     * (the parser has none to make) */
    ck_assert_int_eq(parse_all("$1099511627776\r\n", 16, NULL), RESP_PARSE_ERROR);
    ck_assert_int_eq(parse_all("*1000000000\r\n", 13, NULL), RESP_PARSE_ERROR);
}
END_TEST

/* ---- encoder ------------------------------------------------------------------------------------- */

START_TEST(test_encoder)
{
    const char *argv[3] = {"GET", "key", NULL};
    size_t lens[3] = {3, 3, 0};
    char out[128];
    size_t n = resp_command_len(2, lens);
    ck_assert_uint_eq(n, strlen("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"));
    ck_assert_uint_eq(resp_command_encode(out, 2, argv, lens), n);
    ck_assert(memcmp(out, "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", n) == 0);

    /* binary and empty arguments round-trip through the parser */
    const char bin[] = {'a', '\r', '\n', '\0', 'z'};
    const char *bargv[3] = {"SET", bin, ""};
    size_t blens[3] = {3, sizeof bin, 0};
    n = resp_command_len(3, blens);
    ck_assert_uint_eq(resp_command_encode(out, 3, bargv, blens), n);
    ck_assert(memmem(out, n, "$0\r\n\r\n", 6) != NULL);
    ck_assert_int_eq(parse_all(out, n, NULL), (long)n);
    ck_assert_uint_eq(elems[0].n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(elems[i + 1].type, RESP_BULK);
        ck_assert_uint_eq(elems[i + 1].len, blens[i]);
        ck_assert(memcmp(elems[i + 1].str, bargv[i], blens[i]) == 0);
    }
    ck_assert_uint_eq(resp_command_len(0, lens), 0);
    size_t huge[1] = {SIZE_MAX - 4};
    ck_assert_uint_eq(resp_command_len(1, huge), 0); /* overflow */
}
END_TEST

/* ---- allocator -------------------------------------------------------------------------------------- */

static int calls;
static void *count_alloc(size_t n)
{
    calls++;
    return malloc(n);
}

START_TEST(test_allocator)
{
    resp_set_allocator(count_alloc, NULL, NULL);
    calls = 0;
    ck_assert_ptr_null(resp_alloc_array(SIZE_MAX / 2, 4)); /* overflow: never asked */
    ck_assert_int_eq(calls, 0);
    char *s = resp_strndup("abc", 2);
    ck_assert_int_eq(calls, 1);
    ck_assert_str_eq(s, "ab");
    resp_free(s);
    int *z = resp_alloc_array(4, sizeof *z);
    ck_assert(z[0] == 0 && z[3] == 0);
    resp_free(z);
    resp_set_allocator(NULL, NULL, NULL);
    calls = 0;
    resp_free(resp_alloc(8));
    ck_assert_int_eq(calls, 0);
}
END_TEST

/* With the largest limit a uint32_t can say, a declared length near 2^32
 * is still a length: the body is awaited, never taken from the header's
 * own bytes (length + CRLF must not wrap a 32-bit size_t). */
START_TEST(test_bulk_length_near_4g)
{
    resp_limits lim = {UINT32_MAX, 0, 0, 0};
    static const char *const heads[] = {"$4294967294\r\n", "$4294967295\r\n",
                                        "*1\r\n$4294967294\r\n"};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        char buf[64];
        size_t n = strlen(heads[i]);
        memcpy(buf, heads[i], n);
        memcpy(buf + n, "abc\r\n", 5); /* a few body bytes arrived */
        for (size_t have = n; have <= n + 5; have++) {
            guarded g = guard_copy(buf, have);
            long r = parse_all(g.data, have, &lim);
            ck_assert_msg(r == RESP_PARSE_INCOMPLETE, "%s + %zu bytes: %ld (%s), type %d len %zu",
                          heads[i], have - n, r, p.errstr, elems[p.nelem ? p.nelem - 1 : 0].type,
                          elems[p.nelem ? p.nelem - 1 : 0].len);
            guard_free(g);
        }
    }
}
END_TEST

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *t = tcase_create("resp2");
    tcase_add_test(t, test_types);
    tcase_add_test(t, test_nested_spans);
    tcase_add_loop_test(t, test_every_split, 0, (int)NGOOD);
    tcase_add_loop_test(t, test_byte_at_a_time_guarded, 0, (int)NGOOD);
    tcase_add_test(t, test_pipelined);
    tcase_add_loop_test(t, test_malformed, 0, (int)NBAD);
    tcase_add_test(t, test_limits);
    tcase_add_test(t, test_bulk_length_near_4g);
    tcase_add_test(t, test_encoder);
    tcase_add_test(t, test_allocator);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(codec_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
