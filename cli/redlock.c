/* redlock - run a program under a Redis distributed lock, as flock(1) does
 * on one machine.
 *
 *   redlock run [OPTIONS] NAME -- COMMAND [ARG...]
 *   redlock status [OPTIONS] NAME
 *
 * While COMMAND runs, the lock is refreshed every TTL/3. If it is lost,
 * COMMAND gets SIGTERM, then SIGKILL after a grace period. Signals sent to
 * redlock are passed on to COMMAND; when COMMAND ends the lock is released.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "redlock.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 64       /* EX_USAGE */
#define EXIT_UNAVAILABLE 69 /* EX_UNAVAILABLE: Redis unreachable or erroring */
#define EXIT_CONFLICT 75    /* EX_TEMPFAIL: the lock is busy (-E changes it) */
#define EXIT_LOST 76        /* the lock was lost while COMMAND ran */
#define MAX_URLS 32

typedef struct cli {
    const char *urls[MAX_URLS];
    size_t nurls;
    char *url_env; /* owns the strings split from $REDLOCK_URL */
    uint32_t ttl_ms, wait_ms, grace_ms;
    int conflict_code;
    int quiet, verbose, fair;
    const char *name;
    char **command;
} cli;

#ifdef REDLOCK_WITH_TLS
#define TLS_STATE "built in"
#else
#define TLS_STATE "not built in: make TLS=openssl"
#endif

static const char usage_text[] =
    "usage: redlock run [OPTIONS] NAME -- COMMAND [ARG...]\n"
    "       redlock status [OPTIONS] NAME\n"
    "       redlock --help | --version\n"
    "\n"
    "Run COMMAND while holding the Redis lock NAME (refreshed every TTL/3).\n"
    "\n"
    "options:\n"
    "  -u, --url URL               a Redis node; repeat for a quorum of independent\n"
    "                              masters (default: $REDLOCK_URL, comma-separated,\n"
    "                              else redis://127.0.0.1:6379); TLS: rediss://HOST:PORT\n"
    "                              [?ca=FILE&cert=FILE&key=FILE&sni=NAME&insecure=1]\n"
    "                              (" TLS_STATE ")\n"
    "  -t, --ttl DURATION          lock TTL (default 30s)\n"
    "  -w, --wait DURATION         how long to wait for the lock (default 0: fail at once)\n"
    "  -g, --grace DURATION        after a lost lock, SIGTERM then SIGKILL after this\n"
    "                              long (default 5s)\n"
    "  -E, --conflict-exit-code N  exit status when the lock is busy (default 75)\n"
    "  -F, --fair                  wait in line: waiters get the lock in the order they\n"
    "                              began to wait (all users of NAME should pass it)\n"
    "  -q, --quiet                 no message when the lock is busy\n"
    "  -v, --verbose               report acquire, refresh and release on stderr\n"
    "  -h, --help                  this text\n"
    "  -V, --version               the version\n"
    "\n"
    "DURATION: a number with ms, s or m (500ms, 10s, 2m); a bare number is seconds.\n"
    "\n"
    "COMMAND gets REDLOCK_NAME, REDLOCK_VALUE and REDLOCK_FENCE (the fencing token)\n"
    "in its environment, and redlock's stdin, stdout and stderr.\n"
    "\n"
    "exit status:\n"
    "  COMMAND's own status (128+N if signal N killed it)\n"
    "  75   the lock is busy (see -E)\n"
    "  76   the lock was lost while COMMAND ran; COMMAND was stopped\n"
    "  64   usage error\n"
    "  69   Redis unreachable or answered with an error\n"
    "  126  COMMAND is not executable; 127 COMMAND not found\n"
    "status: 0 when NAME is held, 1 when it is free, 69 on errors.\n";

/* ---- messages ----------------------------------------------------------------- */

static void say(const char *fmt, ...)
{
    va_list ap;
    char line[1024];
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "redlock: %s\n", line);
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    char line[512];
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "redlock: %s (see redlock --help)\n", line);
    return EXIT_USAGE;
}

/* ---- parsing ------------------------------------------------------------------ */

/* "500ms", "10s", "2m", "1.5s", "30" (seconds) into ms. 0 on success. */
static int parse_duration(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || !(v >= 0) || isinf(v))
        return -1;
    double scale;
    if (strcmp(end, "ms") == 0)
        scale = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        scale = 1000;
    else if (strcmp(end, "m") == 0)
        scale = 60000;
    else
        return -1;
    double ms = v * scale;
    if (ms > 4294967295.0)
        return -1;
    *out = (uint32_t)(ms + 0.5);
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int add_url(cli *o, const char *url)
{
    if (o->nurls == MAX_URLS)
        return usage_error("at most %d URLs", MAX_URLS);
    o->urls[o->nurls++] = url;
    return 0;
}

static int default_urls(cli *o)
{
    const char *env = getenv("REDLOCK_URL");
    if (!env || !*env)
        return add_url(o, "redis://127.0.0.1:6379");
    o->url_env = strdup(env);
    if (!o->url_env)
        return usage_error("out of memory");
    char *save = NULL;
    for (char *u = strtok_r(o->url_env, ",", &save); u; u = strtok_r(NULL, ",", &save))
        if (*u && add_url(o, u) != 0)
            return EXIT_USAGE;
    return o->nurls ? 0 : usage_error("$REDLOCK_URL has no URL");
}

static const struct option long_opts[] = {
    {"url", required_argument, NULL, 'u'},
    {"ttl", required_argument, NULL, 't'},
    {"wait", required_argument, NULL, 'w'},
    {"grace", required_argument, NULL, 'g'},
    {"conflict-exit-code", required_argument, NULL, 'E'},
    {"fair", no_argument, NULL, 'F'},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* Parse argv[0..argc) (the subcommand's words). Returns -1 to go on, or an
 * exit status. */
static int parse_options(cli *o, int argc, char **argv, int stop_at_name)
{
    int ch;
    opterr = 0;
    optind = 1;
    const char *spec = stop_at_name ? "+:u:t:w:g:E:FqvhV" : ":u:t:w:g:E:FqvhV";
    while ((ch = getopt_long(argc, argv, spec, long_opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            if (add_url(o, optarg) != 0)
                return EXIT_USAGE;
            break;
        case 't':
            if (parse_duration(optarg, &o->ttl_ms) != 0 || o->ttl_ms == 0)
                return usage_error("bad TTL '%s': want a positive DURATION like 500ms, 10s, 2m",
                                   optarg);
            break;
        case 'w':
            if (parse_duration(optarg, &o->wait_ms) != 0)
                return usage_error("bad wait '%s': want a DURATION like 0, 500ms, 10s, 2m", optarg);
            break;
        case 'g':
            if (parse_duration(optarg, &o->grace_ms) != 0)
                return usage_error("bad grace period '%s': want a DURATION like 5s", optarg);
            break;
        case 'E':
            if (parse_int(optarg, 0, 255, &o->conflict_code) != 0)
                return usage_error("bad exit code '%s': want 0 to 255", optarg);
            break;
        case 'F':
            o->fair = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'v':
            o->verbose = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case 'V':
            printf("redlock %s\n", REDLOCK_VERSION);
            return 0;
        case ':':
            return usage_error("option %s needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    return -1;
}

/* ---- the client ---------------------------------------------------------------- */

#ifndef REDLOCK_WITH_TLS
/* A rediss:// URL given to a redlock built without TLS. */
static int wants_tls(const cli *o)
{
    for (size_t i = 0; i < o->nurls; i++)
        if (strncasecmp(o->urls[i], "rediss://", 9) == 0)
            return 1;
    return 0;
}
#endif

static int open_lock(cli *o, redlock_client **c, redlock **l)
{
    redlock_options opts;
    redlock_options_init(&opts);
    opts.fair = o->fair;
#ifdef REDLOCK_WITH_TLS
    opts.tls = redlock_tls_openssl();
#else
    if (wants_tls(o))
        return usage_error("rediss:// URLs need TLS, and this redlock was built without it "
                           "(build with make TLS=openssl)");
#endif
    /* One refresh attempt must not outlast much of the lease: a stalled
     * node costs at most a fifth of the TTL per try. */
    int cap = (int)(o->ttl_ms / 5 > 20 ? o->ttl_ms / 5 : 20);
    if (opts.io_timeout_ms > cap)
        opts.io_timeout_ms = cap;
    if (opts.connect_timeout_ms > cap)
        opts.connect_timeout_ms = cap;
    int rc = redlock_client_new(c, o->urls, o->nurls, &opts);
    if (rc == REDLOCK_ERR_ARG)
        return usage_error("%s", redlock_last_errstr());
    if (rc != REDLOCK_OK) {
        say("%s", redlock_last_errstr());
        return EXIT_UNAVAILABLE;
    }
    rc = redlock_new(l, *c, o->name, NULL, o->ttl_ms);
    if (rc != REDLOCK_OK) {
        say("%s", redlock_client_errstr(*c));
        return rc == REDLOCK_ERR_ARG ? EXIT_USAGE : EXIT_UNAVAILABLE;
    }
    return -1;
}

/* ---- signals: a self-pipe wakes the poll loop --------------------------------------- */

static int sigpipe_fds[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(sigpipe_fds[1], &b, 1) < 0) {
        /* full pipe: the loop is already awake */
    }
    errno = saved;
}

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static int setup_signals(void)
{
    if (pipe(sigpipe_fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(sigpipe_fds[i], F_SETFL, fcntl(sigpipe_fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(sigpipe_fds[i], F_SETFD, FD_CLOEXEC);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &sa, NULL);
    return 0;
}

static void restore_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &sa, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- run ------------------------------------------------------------------------------ */

static pid_t spawn(cli *o, redlock *l)
{
    char fence[24];
    snprintf(fence, sizeof fence, "%" PRIu64, redlock_fence(l));
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    restore_signals();
    setenv("REDLOCK_NAME", o->name, 1);
    setenv("REDLOCK_VALUE", redlock_value(l), 1);
    setenv("REDLOCK_FENCE", fence, 1);
    execvp(o->command[0], o->command);
    int e = errno;
    say("cannot run %s: %s", o->command[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

static int exit_status_of(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return 1;
}

typedef struct runstate {
    pid_t child;
    int status;       /* child's wait status, once reaped */
    int done;         /* child reaped */
    int lost;         /* the lock was lost */
    int64_t kill_at;  /* lost: SIGKILL at this time (0: not yet due) */
    int64_t next_refresh;
    char why[512];
} runstate;

static void drain_signals(cli *o, runstate *rs)
{
    unsigned char buf[64];
    ssize_t n;
    while ((n = read(sigpipe_fds[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != SIGCHLD && !rs->done) {
                if (o->verbose)
                    say("passing signal %d to COMMAND", buf[i]);
                kill(rs->child, buf[i]);
            }
    int st;
    if (!rs->done && waitpid(rs->child, &st, WNOHANG) == rs->child) {
        rs->done = 1;
        rs->status = st;
    }
}

static void lose(cli *o, runstate *rs, const char *why)
{
    rs->lost = 1;
    snprintf(rs->why, sizeof rs->why, "%s", why);
    rs->kill_at = now_ms() + o->grace_ms;
    if (!rs->done)
        kill(rs->child, SIGTERM);
}

static void refresh_tick(cli *o, runstate *rs, redlock *l, redlock_client *c)
{
    int rc = redlock_refresh(l);
    int64_t now = now_ms();
    if (rc == REDLOCK_OK) {
        rs->next_refresh = now + o->ttl_ms / 3;
        if (o->verbose)
            say("refreshed %s (%" PRId64 " ms valid)", o->name, redlock_validity_ms(l));
        return;
    }
    if (rc == REDLOCK_NOT_HELD) {
        lose(o, rs, redlock_client_errstr(c));
        return;
    }
    if (redlock_validity_ms(l) <= 0) {
        char why[300];
        snprintf(why, sizeof why, "its TTL ran out while Redis was unreachable (%s)",
                 redlock_client_errstr(c));
        lose(o, rs, why);
        return;
    }
    /* a passing error: try again soon, while the lease lasts */
    if (o->verbose)
        say("refresh failed, retrying: %s", redlock_client_errstr(c));
    int64_t retry = o->ttl_ms / 10 > 1000 ? 1000 : o->ttl_ms / 10;
    rs->next_refresh = now + (retry > 10 ? retry : 10);
}

static int run_command(cli *o)
{
    redlock_client *c = NULL;
    redlock *l = NULL;
    int rc = open_lock(o, &c, &l);
    if (rc >= 0)
        goto out;
    rc = o->wait_ms ? redlock_lock(l, o->wait_ms) : redlock_trylock(l);
    if (rc == REDLOCK_NOT_ACQUIRED) {
        if (!o->quiet)
            say("%s is held by another owner%s", o->name, o->wait_ms ? " (wait ran out)" : "");
        rc = o->conflict_code;
        goto out;
    }
    if (rc != REDLOCK_OK) {
        say("cannot take %s: %s", o->name, redlock_client_errstr(c));
        rc = EXIT_UNAVAILABLE;
        goto out;
    }
    if (o->verbose)
        say("acquired %s, fence %" PRIu64, o->name, redlock_fence(l));
    if (setup_signals() != 0) {
        say("cannot set up signals: %s", strerror(errno));
        redlock_unlock(l);
        rc = EXIT_UNAVAILABLE;
        goto out;
    }

    runstate rs;
    memset(&rs, 0, sizeof rs);
    rs.child = spawn(o, l);
    if (rs.child < 0) {
        say("cannot fork: %s", strerror(errno));
        redlock_unlock(l);
        rc = EXIT_UNAVAILABLE;
        goto out;
    }
    rs.next_refresh = now_ms() + o->ttl_ms / 3;
    while (!rs.done) {
        int64_t now = now_ms();
        int64_t due = rs.lost ? rs.kill_at : rs.next_refresh;
        if (!rs.lost) {
            /* The lease is gone by our own clock: stop COMMAND now rather
             * than after one more refresh attempt. */
            int64_t valid = redlock_validity_ms(l);
            if (valid <= 0) {
                char why[300];
                const char *e = redlock_client_errstr(c);
                snprintf(why, sizeof why, "its TTL ran out before a refresh succeeded%s%s%s",
                         *e ? " (last error: " : "", e, *e ? ")" : "");
                lose(o, &rs, why);
                continue;
            }
            if (now + valid < due)
                due = now + valid;
        }
        if (!rs.lost && now >= rs.next_refresh) {
            refresh_tick(o, &rs, l, c);
            continue;
        }
        if (rs.lost && rs.kill_at && now >= rs.kill_at) {
            kill(rs.child, SIGKILL);
            rs.kill_at = 0;
            due = now + 1000;
        }
        struct pollfd p = {sigpipe_fds[0], POLLIN, 0};
        int wait = due > now ? (int)(due - now) : 0;
        if (poll(&p, 1, rs.lost && !rs.kill_at ? 1000 : wait) < 0 && errno != EINTR)
            break;
        drain_signals(o, &rs);
    }
    if (rs.lost) {
        say("lost the lock %s: %s; COMMAND was stopped", o->name, rs.why);
        /* Compare-and-delete, so harmless if someone else holds it now; frees
         * the lock at once if it was still ours on a slow node. */
        redlock_unlock(l);
        rc = EXIT_LOST;
        goto out;
    }
    rc = exit_status_of(rs.status);
    int u = redlock_unlock(l);
    if (u != REDLOCK_OK)
        say("releasing %s: %s", o->name, redlock_client_errstr(c));
    else if (o->verbose)
        say("released %s", o->name);
out:
    redlock_free(l);
    redlock_client_free(c);
    return rc;
}

/* ---- status ---------------------------------------------------------------------------- */

static int status_command(cli *o)
{
    redlock_client *c = NULL;
    redlock *l = NULL;
    int rc = open_lock(o, &c, &l);
    if (rc >= 0)
        goto out;
    redlock_info info;
    if (redlock_inspect(l, &info) != REDLOCK_OK) {
        say("cannot read %s: %s", o->name, redlock_client_errstr(c));
        rc = EXIT_UNAVAILABLE;
        goto out;
    }
    if (info.held)
        printf("%s: held, %" PRId64 " ms left, fence %" PRIu64 "\n", o->name, info.ttl_ms,
               info.fence);
    else
        printf("%s: free, fence %" PRIu64 "\n", o->name, info.fence);
    rc = info.held ? 0 : 1;
out:
    redlock_free(l);
    redlock_client_free(c);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int find_dashdash(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0)
            return i;
    return -1;
}

int main(int argc, char **argv)
{
    cli o;
    memset(&o, 0, sizeof o);
    o.ttl_ms = 30000;
    o.grace_ms = 5000;
    o.conflict_code = EXIT_CONFLICT;

    if (argc < 2)
        return usage_error("missing command: run or status");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(sub, "--version") == 0 || strcmp(sub, "-V") == 0) {
        printf("redlock %s\n", REDLOCK_VERSION);
        return 0;
    }
    int is_run = strcmp(sub, "run") == 0;
    if (!is_run && strcmp(sub, "status") != 0)
        return usage_error("unknown command '%s': want run or status", sub);

    int sargc = argc - 1;
    char **sargv = argv + 1;
    int dd = is_run ? find_dashdash(sargc, sargv) : -1;
    int rc = parse_options(&o, dd >= 0 ? dd : sargc, sargv, is_run && dd < 0);
    if (rc >= 0)
        goto done;
    int limit = dd >= 0 ? dd : sargc;
    if (optind >= limit) {
        rc = usage_error("missing lock NAME");
        goto done;
    }
    o.name = sargv[optind];
    if (!*o.name) {
        rc = usage_error("lock NAME is empty");
        goto done;
    }
    if (is_run) {
        o.command = dd >= 0 ? sargv + dd + 1 : sargv + optind + 1;
        if (dd >= 0 && optind + 1 < dd) {
            rc = usage_error("unexpected '%s' before --", sargv[optind + 1]);
            goto done;
        }
        if (!o.command[0]) {
            rc = usage_error("missing COMMAND after NAME --");
            goto done;
        }
    } else if (optind + 1 < sargc) {
        rc = usage_error("unexpected '%s' after NAME", sargv[optind + 1]);
        goto done;
    }
    if (o.nurls == 0 && default_urls(&o) != 0) {
        rc = EXIT_USAGE;
        goto done;
    }
    rc = is_run ? run_command(&o) : status_command(&o);
done:
    free(o.url_env);
    return rc;
}
