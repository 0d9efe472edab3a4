/* test_cli.c - the `redlock` command, run as a user would run it: the built
 * binary, real redis-server processes, real child processes and signals. */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FX_BUILD_DIR
#define FX_BUILD_DIR "build"
#endif
#define BIN FX_BUILD_DIR "/redlock"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/redlock-cli-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) {
        /* nothing more to do in a teardown */
    }
}

static void path_in(char *out, size_t n, const char *file)
{
    snprintf(out, n, "%s/%s", tmpdir, file);
}

/* Read a whole small file into a static buffer ("" if missing). */
static const char *slurp(const char *file)
{
    static char buf[8192];
    char p[512];
    path_in(p, sizeof p, file);
    buf[0] = '\0';
    FILE *f = fopen(p, "r");
    if (!f)
        return buf;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Start BIN with argv (NULL-terminated, without argv[0]); stdout and stderr
 * go to TAG.out and TAG.err in the temp dir. url_env, when not NULL, is put
 * in REDLOCK_URL (else it is removed). */
static pid_t start_cli(const char *tag, const char *url_env, const char *const *args)
{
    char out[512], err[512];
    char of[64], ef[64];
    snprintf(of, sizeof of, "%s.out", tag);
    snprintf(ef, sizeof ef, "%s.err", tag);
    path_in(out, sizeof out, of);
    path_in(err, sizeof err, ef);
    const char *argv[64];
    int n = 0;
    argv[n++] = BIN;
    for (; args[n - 1] && n < 63; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0)
            _exit(99);
        dup2(fo, 1);
        dup2(fe, 2);
        if (url_env)
            setenv("REDLOCK_URL", url_env, 1);
        else
            unsetenv("REDLOCK_URL");
        execv(BIN, (char *const *)argv);
        _exit(98);
    }
    return pid;
}

/* Wait for pid at most limit_ms; SIGKILL and fail the test past it. Returns
 * the exit status (128+N for a signal, as a shell reports it). */
static int wait_cli(pid_t pid, int limit_ms)
{
    double end = fx_now_ms() + limit_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (fx_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            ck_abort_msg("redlock did not end within %d ms", limit_ms);
        }
        fx_sleep_ms(5);
    }
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

static int run_cli(const char *tag, const char *url_env, const char *const *args)
{
    return wait_cli(start_cli(tag, url_env, args), 20000);
}

/* Wait until FILE exists and is not empty, at most limit_ms. */
static void await_file(const char *file, int limit_ms)
{
    double end = fx_now_ms() + limit_ms;
    while (fx_now_ms() < end) {
        if (*slurp(file))
            return;
        fx_sleep_ms(5);
    }
    ck_abort_msg("%s did not appear within %d ms", file, limit_ms);
}

static pid_t pid_in(const char *file)
{
    return (pid_t)atoi(slurp(file));
}

/* 1 if the process is gone (reaped, or never existed) */
static int gone(pid_t pid)
{
    return kill(pid, 0) != 0 && errno == ESRCH;
}

/* A library lock held by "other-owner" on url. */
typedef struct holder {
    redlock_client *c;
    redlock *l;
} holder;

static void hold(holder *h, const char *url, const char *name, uint32_t ttl)
{
    h->c = tu_client(url, 0);
    h->l = tu_lock(h->c, name, "other-owner", ttl);
    ck_assert_int_eq(redlock_trylock(h->l), REDLOCK_OK);
}

static void unhold(holder *h)
{
    redlock_free(h->l);
    redlock_client_free(h->c);
}

/* ---- no server needed ---------------------------------------------------------- */

START_TEST(test_help_and_version)
{
    ck_assert_int_eq(run_cli("help", NULL, (const char *[]){"--help", NULL}), 0);
    const char *out = slurp("help.out");
    ck_assert_ptr_nonnull(strstr(out, "redlock run [OPTIONS] NAME -- COMMAND"));
    ck_assert_ptr_nonnull(strstr(out, "76"));
    ck_assert_ptr_nonnull(strstr(out, "75"));
    ck_assert_int_eq(run_cli("ver", NULL, (const char *[]){"--version", NULL}), 0);
    char want[64];
    snprintf(want, sizeof want, "redlock %s\n", REDLOCK_VERSION);
    ck_assert_str_eq(slurp("ver.out"), want);
}
END_TEST

/* Each bad command line: status 64, one line on stderr naming the problem,
 * nothing on stdout, and no connection attempted (no server runs). */
static const struct {
    const char *args[10];
    const char *says;
} usage_cases[] = {
    {{NULL}, "missing command"},
    {{"lock", "x", NULL}, "unknown command 'lock'"},
    {{"run", NULL}, "missing lock NAME"},
    {{"run", "name", NULL}, "missing COMMAND"},
    {{"run", "name", "--", NULL}, "missing COMMAND"},
    {{"run", "", "--", "true", NULL}, "NAME is empty"},
    {{"run", "-t", "0", "n", "--", "true", NULL}, "bad TTL '0'"},
    {{"run", "-t", "abc", "n", "--", "true", NULL}, "bad TTL 'abc'"},
    {{"run", "-t", "10x", "n", "--", "true", NULL}, "bad TTL '10x'"},
    {{"run", "--ttl", "5h", "n", "--", "true", NULL}, "bad TTL '5h'"},
    {{"run", "-w", "-1", "n", "--", "true", NULL}, "bad wait '-1'"},
    {{"run", "-w", "2 s", "n", "--", "true", NULL}, "bad wait '2 s'"},
    {{"run", "-g", "soon", "n", "--", "true", NULL}, "bad grace period 'soon'"},
    {{"run", "-E", "300", "n", "--", "true", NULL}, "bad exit code '300'"},
    {{"run", "-E", "x", "n", "--", "true", NULL}, "bad exit code 'x'"},
    {{"run", "--bogus", "n", "--", "true", NULL}, "unknown option '--bogus'"},
    {{"run", "n", "extra", "--", "true", NULL}, "unexpected 'extra' before --"},
    {{"status", "-u", NULL}, "needs a value"},
    {{"status", "a", "b", NULL}, "unexpected 'b' after NAME"},
    {{"status", "-u", "rediss://127.0.0.1:1", "n", NULL}, "TLS"},
    {{"status", "-u", "http://127.0.0.1:1", "n", NULL}, "redis://, rediss:// or unix://"},
    {{"status", "-u", "redis://127.0.0.1:99999", "n", NULL}, "port"},
};

START_TEST(test_usage_errors)
{
    for (size_t i = 0; i < sizeof usage_cases / sizeof usage_cases[0]; i++) {
        int rc = run_cli("usage", "redis://127.0.0.1:1", usage_cases[i].args);
        const char *err = slurp("usage.err");
        ck_assert_msg(rc == 64, "case %zu: status %d, stderr %s", i, rc, err);
        ck_assert_msg(count_lines(err) == 1, "case %zu: want one line, got: %s", i, err);
        ck_assert_msg(strncmp(err, "redlock: ", 9) == 0, "case %zu: %s", i, err);
        ck_assert_msg(strstr(err, usage_cases[i].says), "case %zu: want '%s' in: %s", i,
                      usage_cases[i].says, err);
        ck_assert_str_eq(slurp("usage.out"), "");
    }
}
END_TEST

START_TEST(test_unreachable)
{
    int port = fx_free_port();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    double t0 = fx_now_ms();
    int rc = run_cli("down", NULL, (const char *[]){"run", "-u", url, "n", "--", "true", NULL});
    ck_assert_int_eq(rc, 69);
    ck_assert_double_lt(fx_now_ms() - t0, 5000);
    const char *err = slurp("down.err");
    ck_assert_int_eq(count_lines(err), 1);
    ck_assert_ptr_nonnull(strstr(err, "127.0.0.1"));
    rc = run_cli("down2", url, (const char *[]){"status", "n", NULL});
    ck_assert_int_eq(rc, 69);
    ck_assert_int_eq(count_lines(slurp("down2.err")), 1);
}
END_TEST

/* ---- against a real server ------------------------------------------------------ */

static fx_server srv;

static void srv_setup(void)
{
    setup();
    ck_assert_int_eq(fx_server_start(&srv, NULL), 0);
}

static void srv_teardown(void)
{
    fx_server_stop(&srv);
    teardown();
}

START_TEST(test_env_fence_and_status)
{
    const char *show = "echo \"$REDLOCK_NAME|$REDLOCK_VALUE|$REDLOCK_FENCE\"";
    unsigned long last = 0;
    char value0[64] = "";
    for (int i = 0; i < 3; i++) {
        int rc = run_cli("env", srv.url, (const char *[]){"run", "job", "--", "sh", "-c", show, NULL});
        ck_assert_msg(rc == 0, "status %d: %s", rc, slurp("env.err"));
        char name[64], value[64];
        unsigned long fence = 0;
        ck_assert_int_eq(sscanf(slurp("env.out"), "%63[^|]|%63[^|]|%lu", name, value, &fence), 3);
        ck_assert_str_eq(name, "job");
        ck_assert_uint_eq(strlen(value), 32); /* 128 random bits in hex */
        ck_assert_str_ne(value, value0);       /* a new owner each run */
        snprintf(value0, sizeof value0, "%s", value);
        ck_assert_uint_gt(fence, last);
        last = fence;
        ck_assert_str_eq(tu_get(&srv, "job"), ""); /* released on exit */
    }
    /* status on the free lock: exit 1, the counter as it stands */
    ck_assert_int_eq(run_cli("st", srv.url, (const char *[]){"status", "job", NULL}), 1);
    char want[64];
    snprintf(want, sizeof want, "job: free, fence %lu\n", last);
    ck_assert_str_eq(slurp("st.out"), want);
    /* held by someone: exit 0, TTL and fence */
    holder h;
    hold(&h, srv.url, "job", 20000);
    ck_assert_int_eq(run_cli("st", srv.url, (const char *[]){"status", "job", NULL}), 0);
    unsigned long ms = 0, fence = 0;
    ck_assert_int_eq(sscanf(slurp("st.out"), "job: held, %lu ms left, fence %lu", &ms, &fence), 2);
    ck_assert_uint_gt(ms, 10000);
    ck_assert_uint_le(ms, 20000);
    ck_assert_uint_eq(fence, last + 1);
    unhold(&h);
}
END_TEST

START_TEST(test_exit_status_passes_through)
{
    ck_assert_int_eq(run_cli("x", srv.url, (const char *[]){"run", "j", "--", "sh", "-c", "exit 7", NULL}), 7);
    ck_assert_str_eq(tu_get(&srv, "j"), "");
    ck_assert_int_eq(run_cli("x", srv.url, (const char *[]){"run", "j", "--", "sh", "-c", "kill -USR1 $$", NULL}),
                     128 + SIGUSR1);
    ck_assert_str_eq(tu_get(&srv, "j"), "");
    ck_assert_int_eq(run_cli("x", srv.url, (const char *[]){"run", "j", "--", "/nonexistent/cmd", NULL}), 127);
    ck_assert_ptr_nonnull(strstr(slurp("x.err"), "/nonexistent/cmd"));
    ck_assert_str_eq(tu_get(&srv, "j"), "");
    /* stdin reaches COMMAND */
    char in[512];
    path_in(in, sizeof in, "stdin.txt");
    FILE *f = fopen(in, "w");
    ck_assert_ptr_nonnull(f);
    fputs("hello through redlock\n", f);
    fclose(f);
    char script[700];
    snprintf(script, sizeof script, "%s run j -- cat < '%s'", BIN, in);
    ck_assert_int_eq(run_cli("x", srv.url, (const char *[]){"run", "outer", "--", "sh", "-c", script, NULL}), 0);
    ck_assert_str_eq(slurp("x.out"), "hello through redlock\n");
}
END_TEST

START_TEST(test_conflict)
{
    holder h;
    hold(&h, srv.url, "busy", 20000);
    ck_assert_int_eq(run_cli("c", srv.url, (const char *[]){"run", "busy", "--", "touch", "/tmp/x", NULL}), 75);
    const char *err = slurp("c.err");
    ck_assert_int_eq(count_lines(err), 1);
    ck_assert_ptr_nonnull(strstr(err, "busy is held"));
    ck_assert_int_eq(run_cli("c", srv.url, (const char *[]){"run", "-w", "0", "-E", "3", "busy", "--", "true", NULL}), 3);
    ck_assert_int_eq(run_cli("c", srv.url, (const char *[]){"run", "-q", "--conflict-exit-code=0", "busy", "--", "false", NULL}), 0);
    ck_assert_str_eq(slurp("c.err"), "");
    /* COMMAND never ran, and the holder's lock is untouched */
    char marker[512];
    path_in(marker, sizeof marker, "ran");
    char script[600];
    snprintf(script, sizeof script, "touch '%s'", marker);
    ck_assert_int_eq(run_cli("c", srv.url, (const char *[]){"run", "busy", "--", "sh", "-c", script, NULL}), 75);
    ck_assert_int_ne(access(marker, F_OK), 0);
    ck_assert_str_eq(tu_get(&srv, "busy"), "other-owner");
    unhold(&h);
}
END_TEST

START_TEST(test_wait)
{
    holder h;
    hold(&h, srv.url, "w", 20000);
    /* wait runs out: the conflict status, after about the wait */
    double t0 = fx_now_ms();
    ck_assert_int_eq(run_cli("w", srv.url, (const char *[]){"run", "-w", "600ms", "w", "--", "true", NULL}), 75);
    double took = fx_now_ms() - t0;
    ck_assert_double_ge(took, 550);
    ck_assert_double_lt(took, 3000);
    ck_assert_ptr_nonnull(strstr(slurp("w.err"), "wait ran out"));
    /* the holder releases mid-wait: the waiter runs soon after */
    pid_t p = start_cli("w2", srv.url, (const char *[]){"run", "-w", "20s", "w", "--", "sh", "-c", "echo $REDLOCK_FENCE", NULL});
    fx_sleep_ms(400);
    ck_assert_str_eq(slurp("w2.out"), ""); /* still waiting */
    double t1 = fx_now_ms();
    ck_assert_int_eq(redlock_unlock(h.l), REDLOCK_OK);
    ck_assert_int_eq(wait_cli(p, 10000), 0);
    ck_assert_double_lt(fx_now_ms() - t1, 3000);
    ck_assert_uint_eq(strtoul(slurp("w2.out"), NULL, 10), redlock_fence(h.l) + 1);
    unhold(&h);
    /* --fair: the waiter stands in the lock's queue while it waits */
    hold(&h, srv.url, "w", 20000);
    p = start_cli("w3", srv.url, (const char *[]){"run", "--fair", "-w", "20s", "w", "--", "true", NULL});
    char out[64] = "";
    for (int i = 0; i < 400 && strcmp(out, "1") != 0; i++) {
        fx_sleep_ms(5);
        ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "ZCARD {w}:queue"), 0);
    }
    ck_assert_str_eq(out, "1");
    ck_assert_int_eq(redlock_unlock(h.l), REDLOCK_OK);
    ck_assert_int_eq(wait_cli(p, 10000), 0);
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "ZCARD {w}:queue"), 0);
    ck_assert_str_eq(out, "0");
    unhold(&h);
}
END_TEST

/* 4 processes x 10 runs each of a read-sleep-write step, all under one lock
 * name with a long wait: the counter is exact and nobody saw anybody. */
START_TEST(test_exclusion)
{
    char script[2048];
    snprintf(script, sizeof script,
             "d='%s'\n"
             "mkdir \"$d/inside\" 2>/dev/null || echo x >> \"$d/overlaps\"\n"
             "n=$(cat \"$d/counter\")\n"
             "sleep 0.01\n"
             "echo $((n + 1)) > \"$d/counter\"\n"
             "echo $REDLOCK_FENCE >> \"$d/fences\"\n"
             "rmdir \"$d/inside\"\n",
             tmpdir);
    char cp[512];
    path_in(cp, sizeof cp, "counter");
    FILE *f = fopen(cp, "w");
    ck_assert_ptr_nonnull(f);
    fputs("0\n", f);
    fclose(f);
    enum { WORKERS = 4, STEPS = 10 };
    pid_t w[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = fork();
        ck_assert_int_ge(w[i], 0);
        if (w[i] == 0) {
            char tag[16];
            snprintf(tag, sizeof tag, "ex%d", i);
            for (int k = 0; k < STEPS; k++) {
                pid_t p = start_cli(tag, srv.url,
                                    (const char *[]){"run", "-w", "30s", "-t", "5s", "shared", "--",
                                                     "sh", "-c", script, NULL});
                int st;
                if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                    _exit(1);
            }
            _exit(0);
        }
    }
    int failed = 0;
    for (int i = 0; i < WORKERS; i++) {
        int st;
        waitpid(w[i], &st, 0);
        failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(atoi(slurp("counter")), WORKERS * STEPS);
    ck_assert_str_eq(slurp("overlaps"), "");
    /* every run got a fence, all distinct */
    const char *fences = slurp("fences");
    ck_assert_int_eq(count_lines(fences), WORKERS * STEPS);
    unsigned long seen[WORKERS * STEPS];
    int n = 0;
    for (const char *s = fences; *s && n < WORKERS * STEPS;) {
        char *end;
        seen[n] = strtoul(s, &end, 10);
        for (int j = 0; j < n; j++)
            ck_assert_uint_ne(seen[j], seen[n]);
        n++;
        s = *end ? end + 1 : end;
    }
    ck_assert_int_eq(n, WORKERS * STEPS);
    printf("cli exclusion: %d workers x %d runs, counter %d, overlaps 0\n", WORKERS, STEPS,
           WORKERS * STEPS);
}
END_TEST

/* COMMAND that records its PID and then is replaced by a long sleep, so a
 * signal to that PID reaches the sleep itself. */
static const char *sleeper(char *buf, size_t n, const char *pidfile)
{
    char p[512];
    path_in(p, sizeof p, pidfile);
    snprintf(buf, n, "echo $$ > '%s'; exec sleep 30", p);
    return buf;
}

START_TEST(test_lost_when_key_deleted)
{
    char cmd[700];
    pid_t p = start_cli("lost", srv.url,
                        (const char *[]){"run", "-t", "1500ms", "gone", "--", "sh", "-c",
                                         sleeper(cmd, sizeof cmd, "lost.pid"), NULL});
    await_file("lost.pid", 5000);
    pid_t child = pid_in("lost.pid");
    ck_assert_int_gt(child, 0);
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "DEL gone"), 0);
    ck_assert_str_eq(out, "1");
    double t0 = fx_now_ms();
    ck_assert_int_eq(wait_cli(p, 10000), 76);
    ck_assert_double_lt(fx_now_ms() - t0, 3 * 500 + 2000); /* next refresh (TTL/3) + slack */
    ck_assert(gone(child));
    const char *err = slurp("lost.err");
    ck_assert_ptr_nonnull(strstr(err, "lost the lock gone"));
    ck_assert_ptr_nonnull(strstr(err, "COMMAND was stopped"));
}
END_TEST

/* COMMAND ignores SIGTERM: it gets SIGKILL after the grace period. */
START_TEST(test_lost_grace_then_kill)
{
    char p1[512], script[1200];
    path_in(p1, sizeof p1, "stubborn.pid");
    snprintf(script, sizeof script,
             "trap '' TERM; echo $$ > '%s'; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
             p1);
    pid_t p = start_cli("grace", srv.url,
                        (const char *[]){"run", "-t", "900ms", "-g", "700ms", "stub", "--", "sh",
                                         "-c", script, NULL});
    await_file("stubborn.pid", 5000);
    pid_t child = pid_in("stubborn.pid");
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "SET stub someone-else"), 0);
    double t0 = fx_now_ms();
    ck_assert_int_eq(wait_cli(p, 10000), 76);
    double took = fx_now_ms() - t0;
    ck_assert_double_ge(took, 650); /* the grace period was given */
    ck_assert_double_lt(took, 900 + 700 + 3000);
    ck_assert(gone(child));
    ck_assert_str_eq(tu_get(&srv, "stub"), "someone-else"); /* not deleted by the loser */
}
END_TEST

START_TEST(test_lost_when_server_stalls)
{
    char cmd[700];
    pid_t p = start_cli("stall", srv.url,
                        (const char *[]){"run", "-t", "1s", "st", "--", "sh", "-c",
                                         sleeper(cmd, sizeof cmd, "stall.pid"), NULL});
    await_file("stall.pid", 5000);
    pid_t child = pid_in("stall.pid");
    fx_server_pause(&srv);
    double t0 = fx_now_ms();
    int rc = wait_cli(p, 10000);
    double took = fx_now_ms() - t0;
    fx_server_resume(&srv);
    ck_assert_int_eq(rc, 76);
    /* stopped within the lease (1 s) plus one capped attempt, generously */
    ck_assert_double_lt(took, 3000);
    ck_assert(gone(child));
    ck_assert_ptr_nonnull(strstr(slurp("stall.err"), "TTL ran out"));
}
END_TEST

static void signal_case(int sig)
{
    char cmd[700];
    pid_t p = start_cli("sig", srv.url,
                        (const char *[]){"run", "-t", "10s", "sg", "--", "sh", "-c",
                                         sleeper(cmd, sizeof cmd, "sig.pid"), NULL});
    await_file("sig.pid", 5000);
    pid_t child = pid_in("sig.pid");
    ck_assert_str_ne(tu_get(&srv, "sg"), "");
    kill(p, sig);
    ck_assert_int_eq(wait_cli(p, 5000), 128 + sig);
    ck_assert(gone(child));
    ck_assert_str_eq(tu_get(&srv, "sg"), ""); /* released, not left to expire */
    char pf[512];
    path_in(pf, sizeof pf, "sig.pid");
    unlink(pf);
}

START_TEST(test_signals_forwarded)
{
    signal_case(SIGTERM);
    signal_case(SIGINT);
    signal_case(SIGHUP);
    /* COMMAND handles the signal and exits its own way: that status wins */
    char pf[512], script[1200];
    path_in(pf, sizeof pf, "trap.pid");
    snprintf(script, sizeof script,
             "trap 'exit 3' TERM; echo $$ > '%s'; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
             pf);
    pid_t p = start_cli("trap", srv.url, (const char *[]){"run", "tr", "--", "sh", "-c", script, NULL});
    await_file("trap.pid", 5000);
    kill(p, SIGTERM);
    ck_assert_int_eq(wait_cli(p, 5000), 3);
    ck_assert_str_eq(tu_get(&srv, "tr"), "");
}
END_TEST

/* ---- a quorum from $REDLOCK_URL -------------------------------------------------- */

START_TEST(test_quorum_from_env)
{
    fx_server s[3];
    char env[1200] = "";
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fx_server_start(&s[i], NULL), 0);
        strcat(env, i ? "," : "");
        strcat(env, s[i].url);
    }
    unsigned long last = 0;
    for (int i = 0; i < 2; i++) {
        char mark[600];
        snprintf(mark, sizeof mark, "echo $REDLOCK_FENCE");
        ck_assert_int_eq(run_cli("q", env, (const char *[]){"run", "q", "--", "sh", "-c", mark, NULL}), 0);
        unsigned long f = strtoul(slurp("q.out"), NULL, 10);
        ck_assert_uint_gt(f, last);
        last = f;
    }
    /* held on 2 of 3 by someone else: busy */
    for (int i = 0; i < 2; i++) {
        char out[64];
        ck_assert_int_eq(fx_cmd(&s[i], out, sizeof out, "SET q someone-else"), 0);
    }
    ck_assert_int_eq(run_cli("q", env, (const char *[]){"run", "q", "--", "true", NULL}), 75);
    ck_assert_int_eq(run_cli("q", env, (const char *[]){"status", "q", NULL}), 0);
    /* one node down: still runs */
    fx_server_stop(&s[0]);
    char out[64];
    ck_assert_int_eq(fx_cmd(&s[1], out, sizeof out, "DEL q"), 0);
    ck_assert_int_eq(run_cli("q", env, (const char *[]){"run", "q", "--", "true", NULL}), 0);
    for (int i = 1; i < 3; i++)
        fx_server_stop(&s[i]);
}
END_TEST

static Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *t = tcase_create("no server");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_help_and_version);
    tcase_add_test(t, test_usage_errors);
    tcase_add_test(t, test_unreachable);
    tcase_add_test(t, test_quorum_from_env);
    suite_add_tcase(s, t);

    t = tcase_create("one server");
    tcase_add_checked_fixture(t, srv_setup, srv_teardown);
    tcase_set_timeout(t, 90);
    tcase_add_test(t, test_env_fence_and_status);
    tcase_add_test(t, test_exit_status_passes_through);
    tcase_add_test(t, test_conflict);
    tcase_add_test(t, test_wait);
    tcase_add_test(t, test_exclusion);
    tcase_add_test(t, test_lost_when_key_deleted);
    tcase_add_test(t, test_lost_grace_then_kill);
    tcase_add_test(t, test_lost_when_server_stalls);
    tcase_add_test(t, test_signals_forwarded);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(cli_suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
