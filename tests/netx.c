/* netx.c - see netx.h. */
#define _GNU_SOURCE
#include "netx.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

net_conn *nx_conn(const char *url, int timeout_ms)
{
    net_url u;
    char err[256];
    if (net_url_parse(&u, NULL, url, err, sizeof err) != RESP_OK) {
        fprintf(stderr, "netx: %s: %s\n", url, err);
        abort();
    }
    net_opts o;
    memset(&o, 0, sizeof o);
    o.io_timeout_ms = timeout_ms;
    o.connect_timeout_ms = timeout_ms;
    o.limits.max_bulk = 1u << 20;
    o.max_reply = (1u << 20) + 4096;
    net_conn *c = NULL;
    if (net_conn_new(&c, &u, &o) != RESP_OK)
        abort();
    return c;
}

int nx_sendl(net_conn *c, int argc, const char *const *argv, const size_t *lens, uint32_t seq,
             int64_t cap)
{
    net_tag tag = {c, seq, 0};
    return net_conn_request(c, argc, argv, lens, tag, cap, net_now_ns());
}

int nx_send(net_conn *c, int argc, const char *const *argv, uint32_t seq, int64_t cap)
{
    size_t lens[32];
    if (argc < 1 || argc > 32)
        return RESP_ERR_ARG;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return nx_sendl(c, argc, argv, lens, seq, cap);
}

static char *capture; /* nx_call_buf's buffer, while it runs */
static size_t capture_len;

static void describe(nx_result *res, const resp_reply *r, size_t ne)
{
    res->type = r->type;
    res->integer = r->integer;
    res->len = 0;
    res->text[0] = '\0';
    if (r->type == RESP_STATUS || r->type == RESP_ERROR || r->type == RESP_BULK) {
        size_t n = r->len < sizeof res->text - 1 ? r->len : sizeof res->text - 1;
        memcpy(res->text, r->str, n);
        res->text[n] = '\0';
        res->len = r->len;
        if (capture && capture_len) {
            size_t m = r->len < capture_len - 1 ? r->len : capture_len - 1;
            memcpy(capture, r->str, m);
            capture[m] = '\0';
        }
    } else if (r->type == RESP_INTEGER) {
        snprintf(res->text, sizeof res->text, "%lld", r->integer);
    } else if (r->type == RESP_ARRAY) {
        size_t o = 0;
        for (size_t i = 1; i < ne && o + 2 < sizeof res->text; i++) {
            const resp_reply *e = &r[i];
            int w = e->type == RESP_INTEGER
                        ? snprintf(res->text + o, sizeof res->text - o, "%s%lld", i > 1 ? "\n" : "",
                                   e->integer)
                        : snprintf(res->text + o, sizeof res->text - o, "%s%.*s", i > 1 ? "\n" : "",
                                   (int)(e->type == RESP_NIL ? 0 : e->len), e->str ? e->str : "");
            if (w < 0)
                break;
            o += (size_t)w;
            if (o >= sizeof res->text)
                o = sizeof res->text - 1;
        }
        res->len = o;
    }
}

size_t nx_run(net_conn *const *cs, size_t n, nx_result *out, size_t want, int64_t limit)
{
    size_t got = 0;
    struct pollfd pfd[16];
    for (int guard = 0; guard < 100000 && got < want; guard++) {
        int64_t now = net_now_ns();
        int64_t next = limit ? limit : INT64_MAX;
        size_t k = 0;
        for (size_t i = 0; i < n && got < want; i++) {
            net_conn_pump(cs[i], now);
            net_tag tag;
            const resp_reply *r;
            size_t ne;
            int st;
            while (got < want && (st = net_conn_take(cs[i], &tag, &r, &ne)) != RESP_IDLE) {
                nx_result *res = &out[got++];
                memset(res, 0, sizeof *res);
                res->status = st;
                res->tag = tag;
                res->conn = i;
                if (st == RESP_OK) {
                    describe(res, r, ne);
                    net_conn_consume(cs[i]);
                } else {
                    snprintf(res->text, sizeof res->text, "%s", net_conn_errstr(cs[i]));
                }
            }
            int64_t d = net_conn_deadline(cs[i]);
            if (d < next)
                next = d;
            if (net_conn_fd(cs[i]) >= 0 && net_conn_events(cs[i]) && k < 16) {
                pfd[k].fd = net_conn_fd(cs[i]);
                pfd[k].events = net_conn_events(cs[i]);
                pfd[k].revents = 0;
                k++;
            }
        }
        if (got >= want || (limit && now >= limit))
            break;
        int timeout = -1;
        if (next != INT64_MAX)
            timeout = next <= now ? 0 : (int)((next - now + 999999) / 1000000);
        if (k == 0 && timeout < 0)
            break; /* nothing can happen */
        /* one connection waiting for a reply: wait in recv() as the
         * library's blocking calls do (net_conn_block) */
        if (n == 1 && k == 1 && pfd[0].events == POLLIN && !limit && net_conn_block(cs[0], now, INT64_MAX))
            continue;
        if (poll(pfd, (nfds_t)k, timeout) <= 0)
            continue;
        now = net_now_ns();
        for (size_t j = 0; j < k; j++)
            if (pfd[j].revents)
                for (size_t i = 0; i < n; i++)
                    if (net_conn_fd(cs[i]) == pfd[j].fd)
                        net_conn_io(cs[i], pfd[j].revents, now);
    }
    return got;
}

nx_result nx_call(net_conn *c, int argc, const char *const *argv)
{
    nx_result r;
    memset(&r, 0, sizeof r);
    if (nx_send(c, argc, argv, 0, 0) != RESP_OK) {
        r.status = RESP_ERR_ARG;
        return r;
    }
    if (nx_run(&c, 1, &r, 1, 0) != 1)
        r.status = RESP_ERR_IO;
    return r;
}

nx_result nx_call_buf(net_conn *c, int argc, const char *const *argv, char *buf, size_t buflen)
{
    capture = buf;
    capture_len = buflen;
    if (buf && buflen)
        buf[0] = '\0';
    nx_result r = nx_call(c, argc, argv);
    capture = NULL;
    capture_len = 0;
    return r;
}
