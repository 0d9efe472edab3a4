/* test_cli.c - the `redlock` command, run as a user would run it: the built
 * binary, real redis-server processes, real child processes and signals. */
#define _GNU_SOURCE
#include "fixture.h"
#include "redlock.h"
#include "testutil.h"

#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FX_BUILD_DIR
#define FX_BUILD_DIR "build"
#endif
#ifndef FX_SRC_DIR
#define FX_SRC_DIR "."
#endif
#define BIN FX_BUILD_DIR "/redlock"
#define MAN_PAGE FX_SRC_DIR "/cli/redlock.1"

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

/* Every option and exit status: the man page and --help document the same
 * ones, and both document each of these. */
static const char *const documented_options[][2] = {
    {"u", "url"},  {"t", "ttl"},     {"w", "wait"},    {"g", "grace"},
    {"E", "conflict-exit-code"},     {"F", "fair"},    {"R", "wait-replicas"},
    {"l", "limit"}, {"s", "shared"},
    {"S", "scripts"}, {"G", "restart-guard"}, {"q", "quiet"}, {"v", "verbose"}, {"j", "json"},
    {"h", "help"},    {"V", "version"},
};
static const char *const documented_exits[] = {"0", "1", "64", "69", "75", "76", "126", "127"};
#define N_OPTIONS (sizeof documented_options / sizeof documented_options[0])

/* The part of text from the line that starts with from up to the next line
 * that starts with until (or the end), into buf. */
static const char *section(char *buf, size_t n, const char *text, const char *from,
                           const char *until)
{
    const char *a = strstr(text, from);
    ck_assert_msg(a != NULL, "no '%s' in the text", from);
    const char *b = strstr(a + strlen(from), until);
    size_t len = b ? (size_t)(b - a) : strlen(a);
    ck_assert_uint_lt(len, n);
    memcpy(buf, a, len);
    buf[len] = '\0';
    return buf;
}

/* 1 if word occurs in text with no digit or letter right before or after it */
static int has_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        int before = p > text && (isalnum((unsigned char)p[-1]));
        int after = isalnum((unsigned char)p[n]);
        if (!before && !after)
            return 1;
    }
    return 0;
}

static int count_prefixed_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t k = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        n += strncmp(p, prefix, k) == 0;
    return n;
}

START_TEST(test_help_and_version)
{
    ck_assert_int_eq(run_cli("help", NULL, (const char *[]){"--help", NULL}), 0);
    static char help[8192], man[16384], part[8192];
    snprintf(help, sizeof help, "%s", slurp("help.out"));
    ck_assert_int_eq(run_cli("h", NULL, (const char *[]){"-h", NULL}), 0);
    ck_assert_str_eq(slurp("h.out"), help);
    FILE *f = fopen(MAN_PAGE, "r");
    ck_assert_ptr_nonnull(f);
    man[fread(man, 1, sizeof man - 1, f)] = '\0';
    fclose(f);

    /* the usage lines name every command */
    section(part, sizeof part, help, "usage:", "\n\n");
    ck_assert_ptr_nonnull(strstr(part, "redlock run [OPTIONS] NAME -- COMMAND [ARG...]"));
    ck_assert_ptr_nonnull(strstr(part, "redlock status [OPTIONS] NAME"));
    ck_assert_ptr_nonnull(strstr(part, "redlock stats [OPTIONS] [NAME]"));
    ck_assert_ptr_nonnull(strstr(part, "redlock functions load|status|code"));
    ck_assert_ptr_nonnull(strstr(part, "redlock --help | --version"));

    /* options: each one in both, and no other in either */
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char want[96], esc[96];
        snprintf(want, sizeof want, "\n  -%s, --%s ", documented_options[i][0],
                 documented_options[i][1]);
        ck_assert_msg(strstr(help, want), "--help lacks '%s'", want + 1);
        size_t o = (size_t)snprintf(esc, sizeof esc, ".BR \\-%s \", \" \\-\\-",
                                    documented_options[i][0]);
        for (const char *p = documented_options[i][1]; *p && o + 3 < sizeof esc; p++) {
            if (*p == '-')
                esc[o++] = '\\';
            esc[o++] = *p;
        }
        esc[o] = '\0';
        ck_assert_msg(strstr(man, esc), "the man page lacks '%s'", esc);
    }
    ck_assert_int_eq(count_prefixed_lines(section(part, sizeof part, help, "options:", "\n\n"),
                                          "  -"),
                     N_OPTIONS);
    ck_assert_int_eq(count_prefixed_lines(section(part, sizeof part, man, ".SH OPTIONS", ".SH "),
                                          ".BR \\-"),
                     N_OPTIONS);

    /* exit statuses: each one in both exit-status parts */
    const char *help_exits = section(part, sizeof part, help, "exit status:", "\n\nfunctions:");
    for (size_t i = 0; i < sizeof documented_exits / sizeof documented_exits[0]; i++)
        ck_assert_msg(has_word(help_exits, documented_exits[i]), "--help: no exit status %s",
                      documented_exits[i]);
    const char *man_exits = section(part, sizeof part, man, ".SH EXIT STATUS", ".SH ");
    for (size_t i = 0; i < sizeof documented_exits / sizeof documented_exits[0]; i++)
        ck_assert_msg(has_word(man_exits, documented_exits[i]), "man page: no exit status %s",
                      documented_exits[i]);

    ck_assert_int_eq(run_cli("ver", NULL, (const char *[]){"--version", NULL}), 0);
    char want[64];
    snprintf(want, sizeof want, "redlock %s\n", REDLOCK_VERSION);
    ck_assert_str_eq(slurp("ver.out"), want);
    ck_assert_ptr_nonnull(strstr(man, "\"redlock-c " REDLOCK_VERSION "\""));
}
END_TEST

/* With no arguments the one-line usage error names every command. */
START_TEST(test_no_arguments_names_every_command)
{
    ck_assert_int_eq(run_cli("none", NULL, (const char *[]){NULL}), 64);
    ck_assert_str_eq(slurp("none.err"),
                     "redlock: missing command: run, status, stats or functions (see redlock "
                     "--help)\n");
    ck_assert_str_eq(slurp("none.out"), "");
}
END_TEST

/* Without --, a word after NAME is neither run nor taken as an option: a
 * usage error before any connection, and COMMAND never starts. */
START_TEST(test_run_needs_dashdash)
{
    char mark[512];
    path_in(mark, sizeof mark, "ran");
    const char *const lines[][8] = {
        {"run", "n", "-v", "echo", "hi", NULL},
        {"run", "n", "touch", mark, NULL},
        {"run", "-t", "5s", "n", "touch", mark, NULL},
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        int rc = run_cli("dd", "redis://127.0.0.1:1", lines[i]);
        const char *err = slurp("dd.err");
        ck_assert_msg(rc == 64, "case %zu: status %d, stderr %s", i, rc, err);
        ck_assert_int_eq(count_lines(err), 1);
        ck_assert_msg(strstr(err, "after NAME: put -- between NAME and COMMAND"), "case %zu: %s",
                      i, err);
        ck_assert_int_eq(access(mark, F_OK), -1);
    }
}
END_TEST

/* A peer on loopback that answers every read with the error reply
 * "-TEXT\r\n", one connection at a time, in a child process. */
static pid_t error_server(const char *text, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) {
            int c = accept(fd, NULL, NULL);
            char buf[4096];
            while (c >= 0 && read(c, buf, sizeof buf) > 0)
                if (dprintf(c, "-%s\r\n", text) < 0)
                    break;
            if (c >= 0)
                close(c);
        }
    }
    close(fd);
    return pid;
}

/* A Redis error reply reaches the user whole; one too long for the line is
 * cut after a whole word and marked with "...". */
START_TEST(test_server_error_shown_whole)
{
    char fits[400], huge[3000], url[64];
    size_t o = (size_t)snprintf(fits, sizeof fits, "ERR");
    for (int i = 1; i <= 30; i++) /* 213 bytes, words of 6 */
        o += (size_t)snprintf(fits + o, sizeof fits - o, " word%02d", i);
    o = (size_t)snprintf(huge, sizeof huge, "ERR");
    for (int i = 1; i <= 300; i++) /* 2703 bytes, words of 8 */
        o += (size_t)snprintf(huge + o, sizeof huge - o, " word%04d", i);

    int port;
    pid_t srv_pid = error_server(fits, &port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    ck_assert_int_eq(run_cli("e1", url, (const char *[]){"run", "n", "--", "true", NULL}), 69);
    const char *err = slurp("e1.err");
    ck_assert_int_eq(count_lines(err), 1);
    char want[500];
    snprintf(want, sizeof want, "127.0.0.1:%d: %s\n", port, fits);
    size_t n = strlen(err), w = strlen(want);
    ck_assert_msg(n > w && strcmp(err + n - w, want) == 0, "want '...%s' at the end of: %s", want,
                  err);
    ck_assert_int_eq(run_cli("e2", url, (const char *[]){"status", "n", NULL}), 69);
    err = slurp("e2.err");
    n = strlen(err);
    ck_assert_msg(n > w && strcmp(err + n - w, want) == 0, "want '...%s' at the end of: %s", want,
                  err);
    kill(srv_pid, SIGKILL);
    waitpid(srv_pid, NULL, 0);

    srv_pid = error_server(huge, &port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    ck_assert_int_eq(run_cli("e3", url, (const char *[]){"run", "n", "--", "true", NULL}), 69);
    err = slurp("e3.err");
    ck_assert_int_eq(count_lines(err), 1);
    const char *shown = strstr(err, "ERR word0001 ");
    ck_assert_msg(shown != NULL, "%s", err);
    const char *dots = strstr(shown, "...\n");
    ck_assert_msg(dots != NULL && dots[4] == '\0', "no '...' at the end: %s", err);
    size_t k = (size_t)(dots - shown);
    ck_assert_uint_gt(k, 200);                     /* far more than the old 120 */
    ck_assert_int_eq(strncmp(shown, huge, k), 0);  /* the server's own words... */
    ck_assert_int_eq(huge[k], ' ');                /* ...up to the end of one */
    kill(srv_pid, SIGKILL);
    waitpid(srv_pid, NULL, 0);
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
    {{"run", "name", NULL}, "missing -- COMMAND after NAME"},
    {{"run", "name", "--", NULL}, "missing COMMAND"},
    {{"run", "", "--", "true", NULL}, "NAME is empty"},
    {{"run", "-t", "0", "n", "--", "true", NULL}, "bad TTL '0'"},
    {{"run", "-t", "abc", "n", "--", "true", NULL}, "bad TTL 'abc'"},
    {{"run", "-t", "10x", "n", "--", "true", NULL}, "bad TTL '10x'"},
    {{"run", "--ttl", "5h", "n", "--", "true", NULL}, "bad TTL '5h'"},
    {{"run", "-t", "2ms", "n", "--", "true", NULL}, "bad TTL '2ms': want a DURATION of at least 10ms"},
    {{"run", "-G", "maybe", "n", "--", "true", NULL}, "bad restart guard 'maybe'"},
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
    {{"status", "-u", "http://127.0.0.1:1", "n", NULL}, "redis://, rediss://, unix://, redis+sentinel://"},
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
    unsigned long long last = 0; /* fence tokens are 64-bit (seeded from server microseconds) */
    char value0[64] = "";
    for (int i = 0; i < 3; i++) {
        int rc = run_cli("env", srv.url, (const char *[]){"run", "job", "--", "sh", "-c", show, NULL});
        ck_assert_msg(rc == 0, "status %d: %s", rc, slurp("env.err"));
        char name[64], value[64];
        unsigned long long fence = 0;
        ck_assert_int_eq(sscanf(slurp("env.out"), "%63[^|]|%63[^|]|%llu", name, value, &fence), 3);
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
    snprintf(want, sizeof want, "job: free, fence %llu\n", last);
    ck_assert_str_eq(slurp("st.out"), want);
    /* held by someone: exit 0, TTL and fence */
    holder h;
    hold(&h, srv.url, "job", 20000);
    ck_assert_int_eq(run_cli("st", srv.url, (const char *[]){"status", "job", NULL}), 0);
    unsigned long ms = 0;
    unsigned long long fence = 0;
    ck_assert_int_eq(sscanf(slurp("st.out"), "job: held, %lu ms left, fence %llu", &ms, &fence), 2);
    ck_assert_uint_gt(ms, 10000);
    ck_assert_uint_le(ms, 20000);
    ck_assert_uint_eq(fence, last + 1);
    unhold(&h);
}
END_TEST

/* --limit: up to N commands at once; --shared: readers together, the
 * writer (a plain run) alone; status lists the holders. */
START_TEST(test_limit_and_shared)
{
    pid_t a = start_cli("la", srv.url, (const char *[]){"run", "-l", "2", "jobs", "--", "sleep", "2", NULL});
    pid_t b = start_cli("lb", srv.url, (const char *[]){"run", "-l", "2", "jobs", "--", "sleep", "2", NULL});
    char out[64];
    for (int k = 0; k < 300; k++) {
        ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "ZCARD {jobs}:holds"), 0);
        if (strcmp(out, "2") == 0)
            break;
        fx_sleep_ms(10);
    }
    ck_assert_str_eq(out, "2");
    ck_assert_int_eq(run_cli("lc", srv.url, (const char *[]){"run", "-l", "2", "jobs", "--", "true", NULL}), 75);
    ck_assert_ptr_nonnull(strstr(slurp("lc.err"), "all 2 permits of semaphore 'jobs' are held"));
    /* another count: a usage error naming both */
    ck_assert_int_eq(run_cli("ld", srv.url, (const char *[]){"run", "-l", "3", "jobs", "--", "true", NULL}), 64);
    ck_assert_ptr_nonnull(strstr(slurp("ld.err"), "has 2 permits; this handle asks for 3"));
    ck_assert_int_eq(run_cli("ls", srv.url, (const char *[]){"status", "-l", "2", "jobs", NULL}), 0);
    const char *st = slurp("ls.out");
    ck_assert_ptr_nonnull(strstr(st, "jobs: held, fence "));
    int lines = 0;
    for (const char *p = st; (p = strstr(p, ": permit, ")) != NULL; p++)
        lines++;
    ck_assert_int_eq(lines, 2);
    ck_assert_int_eq(wait_cli(a, 10000), 0);
    ck_assert_int_eq(wait_cli(b, 10000), 0);

    /* two readers at once; the writer waits for both, then runs alone */
    pid_t r1 = start_cli("r1", srv.url, (const char *[]){"run", "-s", "data", "--", "sleep", "1", NULL});
    pid_t r2 = start_cli("r2", srv.url, (const char *[]){"run", "-s", "data", "--", "sleep", "1", NULL});
    for (int k = 0; k < 300; k++) {
        ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "ZCARD {data}:reads"), 0);
        if (strcmp(out, "2") == 0)
            break;
        fx_sleep_ms(10);
    }
    ck_assert_str_eq(out, "2");
    ck_assert_int_eq(run_cli("w1", srv.url, (const char *[]){"run", "data", "--", "true", NULL}), 75);
    double t0 = fx_now_ms();
    ck_assert_int_eq(run_cli("w2", srv.url, (const char *[]){"run", "-w", "5s", "data", "--", "true", NULL}), 0);
    ck_assert_double_gt(fx_now_ms() - t0, 300); /* it waited for the readers */
    ck_assert_int_eq(wait_cli(r1, 10000), 0);
    ck_assert_int_eq(wait_cli(r2, 10000), 0);
    ck_assert_int_eq(run_cli("lx", srv.url, (const char *[]){"run", "-l", "2", "-s", "data", "--", "true", NULL}), 64);
}
END_TEST

/* A key without a TTL (set by hand): "no expiry", not "-1 ms left". */
START_TEST(test_status_no_expiry)
{
    char out[64];
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "SET forever someone"), 0);
    ck_assert_int_eq(run_cli("ne", srv.url, (const char *[]){"status", "forever", NULL}), 0);
    ck_assert_str_eq(slurp("ne.out"), "forever: held, no expiry, fence 0\n"
                                      "  someone: writer, no expiry, fence 0\n");
    ck_assert_int_eq(fx_cmd(&srv, out, sizeof out, "SET {forever}:fence 41"), 0);
    ck_assert_int_eq(run_cli("ne", srv.url, (const char *[]){"status", "forever", NULL}), 0);
    ck_assert_str_eq(slurp("ne.out"), "forever: held, no expiry, fence 41\n"
                                      "  someone: writer, no expiry, fence 41\n");
    /* and nobody takes it */
    ck_assert_int_eq(run_cli("ne", srv.url, (const char *[]){"run", "forever", "--", "true", NULL}),
                     75);
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
    ck_assert_ptr_nonnull(strstr(err, "busy is busy: lock 'busy' is held by another owner (expires in "));
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
    ck_assert_uint_eq(strtoull(slurp("w2.out"), NULL, 10), redlock_fence(h.l) + 1);
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
    unsigned long long seen[WORKERS * STEPS];
    int n = 0;
    for (const char *s = fences; *s && n < WORKERS * STEPS;) {
        char *end;
        seen[n] = strtoull(s, &end, 10);
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
    unsigned long long last = 0;
    for (int i = 0; i < 2; i++) {
        char mark[600];
        snprintf(mark, sizeof mark, "echo $REDLOCK_FENCE");
        ck_assert_int_eq(run_cli("q", env, (const char *[]){"run", "-G", "off", "q", "--", "sh", "-c",
                                                             mark, NULL}),
                         0);
        unsigned long long f = strtoull(slurp("q.out"), NULL, 10);
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
    /* the servers are seconds old: with the restart guard (the default for a
     * quorum) their yes does not count yet, so the lock is busy; without it
     * the command runs */
    ck_assert_int_eq(run_cli("q", env, (const char *[]){"run", "q", "--", "true", NULL}), 75);
    ck_assert_ptr_nonnull(strstr(slurp("q.err"), "restart guard"));
    ck_assert_int_eq(run_cli("q", env, (const char *[]){"run", "-G", "off", "q", "--", "true", NULL}),
                     0);
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
    tcase_add_test(t, test_no_arguments_names_every_command);
    tcase_add_test(t, test_run_needs_dashdash);
    tcase_add_test(t, test_server_error_shown_whole);
    tcase_add_test(t, test_usage_errors);
    tcase_add_test(t, test_unreachable);
    tcase_add_test(t, test_quorum_from_env);
    suite_add_tcase(s, t);

    t = tcase_create("one server");
    tcase_add_checked_fixture(t, srv_setup, srv_teardown);
    tcase_set_timeout(t, 90);
    tcase_add_test(t, test_env_fence_and_status);
    tcase_add_test(t, test_status_no_expiry);
    tcase_add_test(t, test_limit_and_shared);
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
