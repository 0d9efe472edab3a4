/* test_hostile.c - a server that misbehaves on purpose.
 *
 * A forked child listens on a loopback port and answers every request with
 * one scripted misbehaviour. For each: the call returns the right status by
 * its deadline, never reports a lock it could not fully parse, closes the
 * connection instead of reusing it (counted by the server's accepts), never
 * allocates past the parser limits, and the client keeps working.
 */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IO_MS 300

typedef struct scenario {
    const char *name;
    const char *reply;  /* sent after each request (NULL: see mode) */
    int mode;           /* how it is sent */
    int want;           /* status of redlock_trylock */
    int reconnects;     /* 1: the bad connection must be closed, not reused */
} scenario;

enum { SEND, SEND_CLOSE, SEND_RST, SLOW, ENDLESS, SILENT };

static const scenario cases[] = {
    {"garbage type byte", "!oops\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"NUL type byte", "\0\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"bulk of 2^40 bytes", "$1099511627776\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"negative length", "$-5\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"array of 10^9", "*1000000000\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"deep nesting", NULL, SEND, REDLOCK_ERR_PROTOCOL, 1}, /* built below */
    {"line without end", "+", ENDLESS, REDLOCK_ERR_PROTOCOL, 1},
    {"integer overflow", "*2\r\n:99999999999999999999\r\n:1\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"junk after length", "*2x\r\n:1\r\n:1\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"slowloris", "*2\r\n:1\r\n:7\r\n", SLOW, REDLOCK_ERR_TIMEOUT, 1},
    {"cut in half, closed", "*2\r\n:1\r\n", SEND_CLOSE, REDLOCK_ERR_IO, 1},
    {"reset mid-reply", "*2\r\n:1\r\n", SEND_RST, REDLOCK_ERR_IO, 1},
    {"extra reply first", "+OK\r\n*2\r\n:1\r\n:7\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"reply to another request", ":1\r\n", SEND, REDLOCK_ERR_PROTOCOL, 1},
    {"acquire with a bad code", "*2\r\n:9\r\n:7\r\n", SEND, REDLOCK_ERR_PROTOCOL, 0},
    {"-ERR", "-ERR boom\r\n", SEND, REDLOCK_ERR_SERVER, 0},
    {"NOSCRIPT forever", "-NOSCRIPT No matching script\r\n", SEND, REDLOCK_ERR_SERVER, 0},
    {"READONLY", "-READONLY You can't write against a read only replica.\r\n", SEND,
     REDLOCK_ERR_SERVER, 0},
    {"OOM", "-OOM command not allowed when used memory > 'maxmemory'.\r\n", SEND,
     REDLOCK_ERR_SERVER, 0},
    {"BUSY", "-BUSY Redis is busy running a script.\r\n", SEND, REDLOCK_ERR_SERVER, 0},
    {"LOADING", "-LOADING Redis is loading the dataset in memory\r\n", SEND, REDLOCK_ERR_SERVER,
     0},
    {"MASTERDOWN", "-MASTERDOWN Link with MASTER is down\r\n", SEND, REDLOCK_ERR_SERVER, 0},
    {"NOAUTH", "-NOAUTH Authentication required.\r\n", SEND, REDLOCK_ERR_AUTH, 0},
    {"accept, never answer", NULL, SILENT, REDLOCK_ERR_TIMEOUT, 1},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* ---- the hostile server ------------------------------------------------------------ */

static atomic_int *accepts; /* shared with the server child */

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void answer(int fd, const scenario *sc)
{
    static char deep[1024];
    const char *r = sc->reply;
    size_t n = r ? (strcmp(sc->name, "NUL type byte") == 0 ? 3 : strlen(r)) : 0;
    if (!r && sc->mode == SEND) { /* deep nesting: 100 levels */
        size_t o = 0;
        for (int i = 0; i < 100; i++)
            o += (size_t)snprintf(deep + o, sizeof deep - o, "*1\r\n");
        o += (size_t)snprintf(deep + o, sizeof deep - o, ":1\r\n");
        r = deep;
        n = o;
    }
    switch (sc->mode) {
    case SEND:
        send_all(fd, r, n);
        break;
    case SEND_CLOSE:
        send_all(fd, r, n);
        shutdown(fd, SHUT_RDWR);
        break;
    case SEND_RST: {
        struct linger lg = {1, 0};
        send_all(fd, r, n);
        usleep(20 * 1000);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        shutdown(fd, SHUT_RD);
        break;
    }
    case SLOW:
        for (size_t i = 0; i < n; i++) {
            send_all(fd, r + i, 1);
            usleep(100 * 1000);
        }
        break;
    case ENDLESS: {
        char junk[4096];
        memset(junk, 'x', sizeof junk);
        send_all(fd, "+", 1);
        for (int i = 0; i < 256; i++) /* 1 MiB at most, until the client hangs up */
            send_all(fd, junk, sizeof junk);
        break;
    }
    case SILENT:
        break;
    }
}

/* One connection: answer every request until the peer goes away. */
static void handle(int fd, const scenario *sc)
{
    for (int i = 0; i < 1000; i++) {
        char buf[8192];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0)
            break;
        answer(fd, sc);
        if (sc->mode == SEND_CLOSE || sc->mode == SEND_RST)
            break;
    }
    close(fd);
}

/* Serve one scenario until killed: a process per connection, so a slow
 * answer on one never delays accepting the next. */
static void serve(int lfd, const scenario *sc)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(60);
    signal(SIGCHLD, SIG_IGN);
    for (int n = 0; n < 64; n++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(accepts, 1);
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(lfd);
            handle(fd, sc);
            _exit(0);
        }
        close(fd);
    }
}

static pid_t start_hostile(const scenario *sc, char *url, size_t urllen)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(lfd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 16), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    snprintf(url, urllen, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    atomic_store(accepts, 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        serve(lfd, sc);
        _exit(0);
    }
    close(lfd);
    return pid;
}

static void stop_hostile(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void setup(void)
{
    accepts = mmap(NULL, sizeof *accepts, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(accepts, MAP_FAILED);
}

static void teardown(void)
{
    munmap(accepts, sizeof *accepts);
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(test_hostile_single)
{
    const scenario *sc = &cases[_i];
    char url[64];
    pid_t pid = start_hostile(sc, url, sizeof url);
    tu_alloc_start(0); /* for the largest single allocation */
    redlock_client *c = tu_client(url, IO_MS);
    redlock *l = tu_lock(c, "hostile", NULL, 10000);

    for (int round = 0; round < 2; round++) {
        double t0 = fx_now_ms();
        int rc = redlock_trylock(l);
        double took = fx_now_ms() - t0;
        ck_assert_msg(rc == sc->want, "%s: trylock gave %d (%s), want %d", sc->name, rc,
                      redlock_client_errstr(c), sc->want);
        ck_assert_msg(took < 3 * IO_MS, "%s: took %.1f ms", sc->name, took);
        ck_assert_int_eq(redlock_validity_ms(l), 0);
        ck_assert_uint_eq(redlock_fence(l), 0);
        ck_assert_str_ne(redlock_client_errstr(c), "");
    }
    /* a connection that fell out of step was closed and a new one opened */
    int n = atomic_load(accepts);
    if (sc->reconnects)
        ck_assert_msg(n == 2, "%s: %d connections, want 2", sc->name, n);
    else
        ck_assert_msg(n == 1, "%s: %d connections, want 1 (reused)", sc->name, n);
    ck_assert_msg(tu_alloc.biggest < 256 * 1024, "%s: allocated %zu bytes at once", sc->name,
                  tu_alloc.biggest);

    /* unlock and refresh fail cleanly too, by the deadline (":1" is a
     * well-formed answer to both, so that one case says OK) */
    double t0 = fx_now_ms();
    int ru = redlock_unlock(l), rf = redlock_refresh(l);
    if (strcmp(sc->reply ? sc->reply : "", ":1\r\n") != 0) {
        ck_assert_int_ne(ru, REDLOCK_OK);
        ck_assert_int_ne(rf, REDLOCK_OK);
    }
    ck_assert_double_lt(fx_now_ms() - t0, 6 * IO_MS);

    redlock_free(l);
    redlock_client_free(c);
    tu_alloc_stop();
    stop_hostile(pid);
}
END_TEST

START_TEST(test_hostile_in_quorum)
{
    /* one hostile node among three: the lock keeps working on the other two,
     * and the hostile node costs at most one deadline per call */
    const scenario *sc = &cases[_i];
    fx_server real[2];
    char url[64];
    ck_assert_int_eq(fx_server_start(&real[0], NULL), 0);
    ck_assert_int_eq(fx_server_start(&real[1], NULL), 0);
    pid_t pid = start_hostile(sc, url, sizeof url);
    const char *urls[3] = {real[0].url, url, real[1].url};
    redlock_client *c = tu_client_urls(urls, 3, IO_MS);
    redlock *l = tu_lock(c, "hostile-q", NULL, 10000);
    uint64_t last = 0;
    for (int round = 0; round < 3; round++) {
        double t0 = fx_now_ms();
        ck_assert_msg(redlock_trylock(l) == REDLOCK_OK, "%s: %s", sc->name,
                      redlock_client_errstr(c));
        ck_assert_uint_gt(redlock_fence(l), last);
        last = redlock_fence(l);
        ck_assert_int_eq(redlock_refresh(l), REDLOCK_OK);
        ck_assert_int_eq(redlock_unlock(l), REDLOCK_OK);
        ck_assert_msg(fx_now_ms() - t0 < 9 * IO_MS, "%s: cycle took %.1f ms", sc->name,
                      fx_now_ms() - t0);
    }
    redlock_free(l);
    redlock_client_free(c);
    stop_hostile(pid);
    fx_server_stop(&real[0]);
    fx_server_stop(&real[1]);
}
END_TEST

START_TEST(test_transient_errors_are_waited_out)
{
    /* LOADING and friends are retried by redlock_lock until the wait ends */
    static const scenario loading = {"LOADING", "-LOADING Redis is loading\r\n", SEND,
                                     REDLOCK_ERR_SERVER, 0};
    char url[64];
    pid_t pid = start_hostile(&loading, url, sizeof url);
    redlock_client *c = tu_client(url, 0);
    redlock *l = tu_lock(c, "loading", NULL, 10000);
    double t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(l, 400), REDLOCK_ERR_SERVER);
    double took = fx_now_ms() - t0;
    ck_assert_msg(took >= 390 && took < 1200, "took %.1f ms", took);
    /* a permanent error returns at once */
    stop_hostile(pid);
    static const scenario err = {"ERR", "-ERR nope\r\n", SEND, REDLOCK_ERR_SERVER, 0};
    redlock_free(l);
    redlock_client_free(c);
    pid = start_hostile(&err, url, sizeof url);
    c = tu_client(url, 0);
    l = tu_lock(c, "err", NULL, 10000);
    t0 = fx_now_ms();
    ck_assert_int_eq(redlock_lock(l, 2000), REDLOCK_ERR_SERVER);
    ck_assert_double_lt(fx_now_ms() - t0, 500);
    redlock_free(l);
    redlock_client_free(c);
    stop_hostile(pid);
}
END_TEST

static Suite *hostile_suite(void)
{
    Suite *s = suite_create("hostile");
    TCase *t = tcase_create("hostile server");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_loop_test(t, test_hostile_single, 0, (int)NCASES);
    tcase_add_loop_test(t, test_hostile_in_quorum, 0, (int)NCASES);
    tcase_add_test(t, test_transient_errors_are_waited_out);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hostile_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    printf("hostile: %zu misbehaviours, each alone and inside a quorum\n", NCASES);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
