/* fuzz_parser.c - libFuzzer target for the RESP2 reply parser.
 *
 * The first byte picks a split pattern; the rest is the input. The input is
 * parsed twice: in one go, and fed in pieces to the same parser (copied to
 * a fresh buffer each time, since the parser keeps offsets, not pointers).
 * Both must agree, every element must point inside the input, and spans
 * must tile each array exactly.
 */
#include "resp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAP 64

static void check_reply(const resp_reply *e, size_t nelem, const char *buf, size_t len)
{
    for (size_t i = 0; i < nelem; i++) {
        const resp_reply *r = &e[i];
        if (r->type < RESP_STATUS || r->type > RESP_NIL)
            abort();
        if (r->type == RESP_STATUS || r->type == RESP_ERROR || r->type == RESP_BULK)
            if (r->str < buf || r->str + r->len > buf + len)
                abort();
        if (r->span < 1 || i + r->span > nelem)
            abort();
        if (r->type == RESP_ARRAY) {
            size_t j = i + 1;
            for (uint32_t k = 0; k < r->n; k++)
                j += e[j].span;
            if (j != i + r->span)
                abort();
        } else if (r->span != 1)
            abort();
    }
    if (nelem == 0 || e[0].span != nelem)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned step = data[0] % 7 + 1; /* piece size 1..7 */
    data++;
    size--;

    static resp_reply one[CAP], inc[CAP];
    resp_limits lim = {256, 16, 4, 64};
    resp_parser p1, p2;
    resp_parser_init(&p1, &lim, one, CAP);
    resp_parser_init(&p2, &lim, inc, CAP);

    long r1 = resp_parse(&p1, (const char *)data, size);
    if (r1 > 0) {
        if ((size_t)r1 > size)
            abort();
        check_reply(one, p1.nelem, (const char *)data, size);
    } else if (r1 != RESP_PARSE_INCOMPLETE && r1 != RESP_PARSE_ERROR)
        abort();

    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    long r2 = RESP_PARSE_INCOMPLETE;
    for (size_t have = 0; have < size && r2 == RESP_PARSE_INCOMPLETE;) {
        have = have + step < size ? have + step : size;
        char *b = malloc(have);
        if (!b)
            break;
        memcpy(b, data, have);
        r2 = resp_parse(&p2, b, have);
        if (r2 > 0) {
            check_reply(inc, p2.nelem, b, have);
            memcpy(copy, b, have);
        }
        free(b);
    }
    /* same verdict; for a complete reply, the same reply */
    if (size > 0) {
        if ((r1 > 0) != (r2 > 0) || (r1 == RESP_PARSE_ERROR) != (r2 == RESP_PARSE_ERROR))
            abort();
        if (r1 > 0) {
            if (r1 != r2 || p1.nelem != p2.nelem)
                abort();
            for (size_t i = 0; i < p1.nelem; i++) {
                if (one[i].type != inc[i].type || one[i].len != inc[i].len ||
                    one[i].n != inc[i].n || one[i].integer != inc[i].integer)
                    abort();
            }
        }
    }
    free(copy);
    return 0;
}
