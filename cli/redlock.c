/* redlock - run a program under a Redis distributed lock, as flock(1) does
 * on one machine.
 *
 *   redlock run [OPTIONS] NAME -- COMMAND [ARG...]
 *   redlock status [OPTIONS] NAME
 *   redlock stats [OPTIONS] [NAME]
 *   redlock functions load|status|code [-u URL]...
 *
 * While COMMAND runs, the lock is refreshed every TTL/3. If it is lost,
 * COMMAND gets SIGTERM, then SIGKILL after a grace period. Signals sent to
 * redlock are passed on to COMMAND; when COMMAND ends the lock is released.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "redlock.h"
#include "observe.h"

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
#define MAX_POLL (2 * MAX_URLS + 1) /* the signal pipe and two sockets per node; grows
                                       for more (a cluster's shards, a Sentinel
                                       member's sentinels) */

typedef struct cli {
    const char *urls[MAX_URLS];
    size_t nurls;
    char *url_env; /* owns the strings split from $REDLOCK_URL */
    uint32_t ttl_ms, wait_ms, grace_ms;
    int conflict_code;
    int quiet, verbose, fair, wait_replicas, json;
    int scripts; /* REDLOCK_SCRIPTS_* */
    int restart_guard; /* redlock_options.restart_guard */
    uint32_t limit;    /* --limit: a permit of a semaphore of this many (0: a lock) */
    int shared;        /* --shared: a reader of the read-write lock NAME */
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
    "       redlock stats [OPTIONS] [NAME]\n"
    "       redlock functions load|status|code [-u URL]...\n"
    "       redlock --help | --version\n"
    "\n"
    "Run COMMAND while holding the Redis lock NAME (refreshed every TTL/3).\n"
    "The -- before COMMAND is required; options go before it, before or after NAME.\n"
    "\n"
    "options:\n"
    "  -u, --url URL               a Redis node, a Redis Cluster\n"
    "                              (redis://HOST:PORT?cluster=1[&addr=HOST:PORT]),\n"
    "                              or the master Sentinel names\n"
    "                              (redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER\n"
    "                              [?sentinel_password=P]);\n"
    "                              repeat for a quorum of independent masters\n"
    "                              (default: $REDLOCK_URL, comma-separated,\n"
    "                              else redis://127.0.0.1:6379); TLS: rediss://HOST:PORT\n"
    "                              [?ca=FILE&cert=FILE&key=FILE&sni=NAME&insecure=1]\n"
    "                              (" TLS_STATE ")\n"
    "  -t, --ttl DURATION          lock TTL (default 30s)\n"
    "  -w, --wait DURATION         how long to wait for the lock (default 0: fail at once)\n"
    "  -g, --grace DURATION        after a lost lock, SIGTERM then SIGKILL after this\n"
    "                              long (default 5s)\n"
    "  -E, --conflict-exit-code N  exit status when the lock is busy (default 75)\n"
    "  -l, --limit N               take one of N permits of the counting semaphore NAME\n"
    "                              (all users of NAME must pass the same N)\n"
    "  -s, --shared                take a shared (reader) hold of the read-write lock\n"
    "                              NAME; a plain run is its writer\n"
    "  -F, --fair                  wait in line: waiters get the lock in the order they\n"
    "                              began to wait (all users of NAME should pass it)\n"
    "  -R, --wait-replicas N       after each acquire and refresh, wait for N replicas\n"
    "                              to have the write (WAIT), else count it failed\n"
    "  -S, --scripts MODE          auto (default: EVALSHA, FCALL where EVALSHA is\n"
    "                              not permitted), eval, or functions (FCALL only)\n"
    "  -G, --restart-guard MODE    auto (default: on for a quorum), on or off: a node\n"
    "                              that restarted less than a TTL ago does not count\n"
    "  -q, --quiet                 no message when the lock is busy\n"
    "  -v, --verbose               report acquire, release, each event (connections,\n"
    "                              redirects, scripts loaded, ...) and a timing line\n"
    "                              (connect, wait, hold, release) on stderr\n"
    "  -j, --json                  stats: print JSON instead of text\n"
    "  -h, --help                  this text\n"
    "  -V, --version               the version\n";

/* The rest of --help (one string would be longer than C guarantees). */
static const char usage_notes[] =
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
    "status: 0 when NAME is held, 1 when it is free, 69 on errors. It prints\n"
    "'NAME: held, N ms left, fence F' ('no expiry' for a key without a TTL) or\n"
    "'NAME: free, fence F'.\n"
    "stats: takes and releases NAME (default redlock-stats-probe) once, then prints\n"
    "the client's counters: operations by outcome, latency percentiles, and per\n"
    "node requests, errors, connections, redirects, script loads, restart-guard\n"
    "decisions and round trip; 0 when the probe worked (or found NAME busy), 69\n"
    "when it failed (the counters say where).\n"
    "\n"
    "functions: the scripts as a Redis Functions library, for servers whose ACL\n"
    "denies EVAL/EVALSHA but allows FCALL. 'load' loads this version's library\n"
    "on every node that lacks it (never replacing another library; the user\n"
    "needs FUNCTION LOAD and FUNCTION LIST), 'status' shows which versions each\n"
    "node has, 'code' prints the library (redis-cli -x FUNCTION LOAD takes it).\n"
    "load: 0 when every node has it, 69 otherwise; status: 0 when every node has\n"
    "this version, 1 when one lacks it, 69 on errors.\n";

static void print_usage(void)
{
    fputs(usage_text, stdout);
    fputs(usage_notes, stdout);
}

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

/* s starts with a URL's scheme and "://" (redis://, redis+sentinel://, ...). */
static int starts_url(const char *s)
{
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+");
    return n > 0 && strncmp(s + n, "://", 3) == 0;
}

static int default_urls(cli *o)
{
    const char *env = getenv("REDLOCK_URL");
    if (!env || !*env)
        return add_url(o, "redis://127.0.0.1:6379");
    o->url_env = strdup(env);
    if (!o->url_env)
        return usage_error("out of memory");
    /* URLs are split at the commas that start another URL (SCHEME://): a
     * Sentinel URL's list of sentinels has commas of its own */
    for (char *u = o->url_env, *next; u; u = next) {
        next = NULL;
        for (char *comma = strchr(u, ','); comma && !next; comma = strchr(comma + 1, ','))
            if (starts_url(comma + 1)) {
                *comma = '\0';
                next = comma + 1;
            }
        for (size_t n = strlen(u); n > 0 && u[n - 1] == ','; n--)
            u[n - 1] = '\0'; /* empty entries, as before */
        if (*u && add_url(o, u) != 0)
            return EXIT_USAGE;
    }
    return o->nurls ? 0 : usage_error("$REDLOCK_URL has no URL");
}

static const struct option long_opts[] = {
    {"url", required_argument, NULL, 'u'},
    {"ttl", required_argument, NULL, 't'},
    {"wait", required_argument, NULL, 'w'},
    {"grace", required_argument, NULL, 'g'},
    {"conflict-exit-code", required_argument, NULL, 'E'},
    {"fair", no_argument, NULL, 'F'},
    {"limit", required_argument, NULL, 'l'},
    {"shared", no_argument, NULL, 's'},
    {"wait-replicas", required_argument, NULL, 'R'},
    {"scripts", required_argument, NULL, 'S'},
    {"restart-guard", required_argument, NULL, 'G'},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* arg as one of n words: 0 and *out (the word's value), or -1. */
static int pick_word(const char *arg, const char *const *words, const int *values, int n, int *out)
{
    for (int i = 0; i < n; i++)
        if (strcmp(arg, words[i]) == 0) {
            *out = values[i];
            return 0;
        }
    return -1;
}

/* An option that takes a value: -1 once it is taken, or an exit status. */
static int value_option(cli *o, int ch, const char *arg)
{
    static const char *const modes[3] = {"auto", "eval", "functions"};
    static const int mode_values[3] = {REDLOCK_SCRIPTS_AUTO, REDLOCK_SCRIPTS_EVAL,
                                       REDLOCK_SCRIPTS_FUNCTIONS};
    static const char *const guards[3] = {"auto", "on", "off"};
    static const int guard_values[3] = {-1, 1, 0};
    int n = 0;
    switch (ch) {
    case 'u':
        return add_url(o, arg) != 0 ? EXIT_USAGE : -1;
    case 't':
        if (parse_duration(arg, &o->ttl_ms) != 0 || o->ttl_ms < REDLOCK_MIN_TTL_MS)
            return usage_error("bad TTL '%s': want a DURATION of at least %dms, like 500ms, "
                               "10s, 2m",
                               arg, REDLOCK_MIN_TTL_MS);
        return -1;
    case 'w':
        if (parse_duration(arg, &o->wait_ms) != 0)
            return usage_error("bad wait '%s': want a DURATION like 0, 500ms, 10s, 2m", arg);
        return -1;
    case 'g':
        if (parse_duration(arg, &o->grace_ms) != 0)
            return usage_error("bad grace period '%s': want a DURATION like 5s", arg);
        return -1;
    case 'E':
        if (parse_int(arg, 0, 255, &o->conflict_code) != 0)
            return usage_error("bad exit code '%s': want 0 to 255", arg);
        return -1;
    case 'l':
        if (parse_int(arg, 1, REDLOCK_MAX_PERMITS, &n) != 0)
            return usage_error("bad permit count '%s': want 1 to %d", arg, REDLOCK_MAX_PERMITS);
        o->limit = (uint32_t)n;
        return -1;
    case 'R':
        if (parse_int(arg, 0, 100, &o->wait_replicas) != 0)
            return usage_error("bad replica count '%s': want 0 to 100", arg);
        return -1;
    case 'S':
        if (pick_word(arg, modes, mode_values, 3, &o->scripts) != 0)
            return usage_error("bad scripts mode '%s': want auto, eval or functions", arg);
        return -1;
    case 'G':
        if (pick_word(arg, guards, guard_values, 3, &o->restart_guard) != 0)
            return usage_error("bad restart guard '%s': want auto, on or off", arg);
        return -1;
    }
    return usage_error("unknown option '-%c'", ch);
}

/* Parse argv[0..argc) (the subcommand's words). Returns -1 to go on, or an
 * exit status. */
static int parse_options(cli *o, int argc, char **argv, int stop_at_name)
{
    int ch, rc;
    opterr = 0;
    optind = 1;
    const char *spec = stop_at_name ? "+:u:t:w:g:E:Fl:sR:S:G:qvjhV" : ":u:t:w:g:E:Fl:sR:S:G:qvjhV";
    while ((ch = getopt_long(argc, argv, spec, long_opts, NULL)) != -1) {
        switch (ch) {
        case 'F':
            o->fair = 1;
            break;
        case 's':
            o->shared = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'v':
            o->verbose = 1;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'h':
            print_usage();
            return 0;
        case 'V':
            printf("redlock %s\n", REDLOCK_VERSION);
            return 0;
        case ':':
            return usage_error("option %s needs a value", argv[optind - 1]);
        case '?':
            return usage_error("unknown option '%s'", argv[optind - 1]);
        default:
            if ((rc = value_option(o, ch, optarg)) >= 0)
                return rc;
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
        if (strncasecmp(o->urls[i], "rediss://", 9) == 0 ||
            strncasecmp(o->urls[i], "rediss+sentinel://", 18) == 0)
            return 1;
    return 0;
}
#endif

static int open_lock(cli *o, redlock_client **c, redlock **l)
{
    redlock_options opts;
    redlock_options_init(&opts);
    opts.fair = o->fair;
    opts.wait_replicas = o->wait_replicas;
    opts.restart_guard = o->restart_guard;
    opts.scripts = o->scripts;
#ifdef REDLOCK_WITH_TLS
    opts.tls = redlock_tls_openssl();
#else
    if (wants_tls(o))
        return usage_error("rediss:// (and rediss+sentinel://) URLs need TLS, and this redlock "
                           "was built without it "
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
    if (o->limit && o->shared)
        return usage_error("--limit and --shared: a name is a semaphore or a read-write lock");
    if (o->limit)
        rc = redlock_new_semaphore(l, *c, o->name, o->limit, NULL, o->ttl_ms);
    else if (o->shared)
        rc = redlock_new_shared(l, *c, o->name, NULL, o->ttl_ms);
    else
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

/* Take the lock as the options say: -1 when it is held, else the exit code
 * (with its message; -E may make a conflict 0), as open_lock answers. */
static int take_lock(cli *o, redlock_client *c, redlock *l)
{
    int rc = o->wait_ms ? redlock_lock(l, o->wait_ms) : redlock_trylock(l);
    if (rc == REDLOCK_NOT_ACQUIRED) {
        if (!o->quiet)
            say("%s is busy%s: %s", o->name, o->wait_ms ? " (wait ran out)" : "", redlock_errstr(l));
        return o->conflict_code;
    }
    if (rc != REDLOCK_OK) {
        say("cannot take %s: %s", o->name, redlock_client_errstr(c));
        /* the name is another kind of thing than asked (another permit
         * count, a semaphore asked for as a read-write lock): a usage error */
        return rc == REDLOCK_ERR_ARG ? EXIT_USAGE : EXIT_UNAVAILABLE;
    }
    if (o->verbose)
        say("acquired %s, fence %" PRIu64, o->name, redlock_fence(l));
    return -1;
}

/* Until COMMAND ends: the library refreshes the lease every TTL/3 as this
 * loop runs, and reports a loss (a refresh said lost, or the TTL ran out by
 * our own clock while Redis did not answer) through redlock_client_done;
 * then COMMAND is stopped (SIGTERM, SIGKILL after the grace). Signals to
 * us are passed on. */
/* The client's sockets into *fds after the signal pipe (fds[0]), growing
 * *fds (fixed at first, then malloc'd) when they do not fit; how many. */
static int client_pollfds(redlock_client *c, struct pollfd **fds, int *cap, struct pollfd *fixed)
{
    int n = redlock_client_pollfds(c, *fds + 1, *cap - 1);
    if (n > *cap - 1) {
        struct pollfd *p = realloc(*fds == fixed ? NULL : *fds, (size_t)(n + 1) * 2 * sizeof *p);
        if (p) {
            *fds = p;
            *cap = (n + 1) * 2;
        }
        n = redlock_client_pollfds(c, *fds + 1, *cap - 1);
        if (n > *cap - 1)
            n = *cap - 1;
    }
    (*fds)[0].fd = sigpipe_fds[0];
    (*fds)[0].events = POLLIN;
    (*fds)[0].revents = 0;
    return n;
}

static void supervise(cli *o, redlock_client *c, redlock *l, runstate *rs)
{
    struct pollfd fixed[MAX_POLL], *fds = fixed;
    int cap = MAX_POLL;
    redlock_keepalive(l, 1);
    while (!rs->done) {
        int n = client_pollfds(c, &fds, &cap, fixed);
        int64_t now = now_ms();
        int wait = redlock_client_timeout_ms(c);
        if (rs->lost) {
            int64_t k = rs->kill_at ? rs->kill_at - now : 1000;
            wait = k > 0 ? (int)k : 0;
        }
        if (poll(fds, (nfds_t)n + 1, wait) < 0 && errno != EINTR)
            break;
        redlock_client_process(c, fds + 1, n);
        if (redlock_client_done(c) == l && !rs->lost)
            lose(o, rs, redlock_errstr(l));
        if (rs->lost && rs->kill_at && now_ms() >= rs->kill_at) {
            kill(rs->child, SIGKILL);
            rs->kill_at = 0;
        }
        drain_signals(o, rs);
    }
    redlock_keepalive(l, 0);
    if (fds != fixed)
        free(fds);
}

/* redlock_unlock, with when it began and ended. */
static int release_timed(redlock *l, run_timing *t)
{
    t->release = cli_now_us();
    int rc = redlock_unlock(l);
    t->released = cli_now_us();
    return rc;
}

static int run_command(cli *o)
{
    redlock_client *c = NULL;
    redlock *l = NULL;
    run_timing t = {cli_now_us(), 0, 0, 0, 0};
    int rc = open_lock(o, &c, &l);
    if (rc < 0 && o->verbose)
        redlock_client_on_event(c, cli_event_hook, &t);
    if (rc >= 0 || (rc = take_lock(o, c, l)) >= 0)
        goto out;
    t.acquired = cli_now_us();
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
    supervise(o, c, l, &rs);
    if (rs.lost) {
        say("lost the lock %s: %s; COMMAND was stopped", o->name, rs.why);
        /* Compare-and-delete, so harmless if someone else holds it now; frees
         * the lock at once if it was still ours on a slow node. */
        release_timed(l, &t);
        rc = EXIT_LOST;
        goto out;
    }
    rc = exit_status_of(rs.status);
    if (release_timed(l, &t) != REDLOCK_OK)
        say("releasing %s: %s", o->name, redlock_client_errstr(c));
    else if (o->verbose)
        say("released %s", o->name);
out:
    if (o->verbose && l)
        cli_timing_line(&t);
    redlock_free(l);
    redlock_client_free(c);
    return rc;
}

/* ---- status ---------------------------------------------------------------------------- */

/* Each holder on a line of its own: value, kind, lease left, token. */
static int print_holders(cli *o, redlock_client *c, redlock *l)
{
    redlock_holder h[64];
    size_t n = 0;
    if (redlock_holders(l, h, sizeof h / sizeof h[0], &n) != REDLOCK_OK) {
        say("cannot list the holders of %s: %s", o->name, redlock_client_errstr(c));
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        const char *what = !h[k].shared ? "writer" : o->limit ? "permit" : "reader";
        if (h[k].ttl_ms < 0)
            printf("  %s: %s, no expiry, fence %" PRIu64 "\n", h[k].value, what, h[k].fence);
        else
            printf("  %s: %s, %" PRId64 " ms left, fence %" PRIu64 "\n", h[k].value, what,
                   h[k].ttl_ms, h[k].fence);
    }
    return (int)n;
}

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
    if (info.held && info.ttl_ms < 0 && !o->limit && !o->shared) /* a key set by hand */
        printf("%s: held, no expiry, fence %" PRIu64 "\n", o->name, info.fence);
    else if (info.held && !o->limit && !o->shared)
        printf("%s: held, %" PRId64 " ms left, fence %" PRIu64 "\n", o->name, info.ttl_ms,
               info.fence);
    else if (info.held)
        printf("%s: held, fence %" PRIu64 "\n", o->name, info.fence);
    else
        printf("%s: free, fence %" PRIu64 "\n", o->name, info.fence);
    int holders = print_holders(o, c, l);
    if (holders < 0)
        rc = EXIT_UNAVAILABLE;
    else
        rc = info.held || holders > 0 ? 0 : 1;
out:
    redlock_free(l);
    redlock_client_free(c);
    return rc;
}

/* ---- stats ----------------------------------------------------------------------------------- */

/* A probe (NAME taken and given back once), then the client's counters. */
static int stats_command(cli *o)
{
    redlock_client *c = NULL;
    redlock *l = NULL;
    int rc = open_lock(o, &c, &l);
    if (rc >= 0) {
        redlock_free(l);
        redlock_client_free(c);
        return rc;
    }
    stats_probe p = {o->name, redlock_trylock(l)};
    if (p.status == REDLOCK_OK)
        p.status = redlock_unlock(l);
    if (p.status != REDLOCK_OK && p.status != REDLOCK_NOT_ACQUIRED)
        say("probe %s: %s", o->name, redlock_client_errstr(c));
    redlock_stats s;
    redlock_client_stats(c, &s, sizeof s);
    cli_print_stats(stdout, &s, &p, o->json);
    redlock_free(l);
    redlock_client_free(c);
    return p.status == REDLOCK_OK || p.status == REDLOCK_NOT_ACQUIRED ? 0 : EXIT_UNAVAILABLE;
}

/* ---- functions ------------------------------------------------------------------------------ */

static int print_code(void)
{
    size_t n = redlock_functions_code(NULL, 0);
    char *text = malloc(n + 1);
    if (!text) {
        say("out of memory");
        return EXIT_UNAVAILABLE;
    }
    redlock_functions_code(text, n + 1);
    int bad = fwrite(text, 1, n, stdout) != n || fflush(stdout) != 0;
    free(text);
    return bad ? EXIT_UNAVAILABLE : 0;
}

/* One line per node: stdout for what is there, stderr for errors.
 * Returns how many nodes lack this build's library. */
static int report_nodes(const redlock_functions_node *nodes, size_t n, int load)
{
    const char *lib = redlock_functions_library();
    int missing = 0;
    for (size_t i = 0; i < n; i++) {
        const redlock_functions_node *f = &nodes[i];
        const char *libs = f->libraries[0] ? f->libraries : "none";
        if (f->status != REDLOCK_OK) {
            say("%s: %s", f->node, f->detail);
            missing++;
        } else if (load) {
            printf("%s: %s %s\n", f->node, lib, f->changed ? "loaded" : "already loaded");
        } else if (f->loaded) {
            printf("%s: %s loaded (libraries: %s)\n", f->node, lib, libs);
        } else {
            printf("%s: %s %s (libraries: %s)\n", f->node, lib,
                   f->foreign ? "is there with other code than this build's" : "not loaded", libs);
            missing++;
        }
    }
    return missing;
}

static int functions_command(cli *o, const char *action)
{
    if (strcmp(action, "code") == 0)
        return print_code();
    int load = strcmp(action, "load") == 0;
    redlock_client *c = NULL;
    redlock_options opts;
    redlock_options_init(&opts);
    int rc = redlock_client_new(&c, o->urls, o->nurls, &opts);
    if (rc == REDLOCK_ERR_ARG)
        return usage_error("%s", redlock_last_errstr());
    if (rc != REDLOCK_OK) {
        say("%s", redlock_last_errstr());
        return EXIT_UNAVAILABLE;
    }
    /* One entry per server: a node, or (Redis Cluster) every primary of one. */
    redlock_functions_node fixed[MAX_URLS], *nodes = fixed;
    size_t count = 0;
    rc = load ? redlock_functions_load(c, nodes, MAX_URLS, &count)
              : redlock_functions_status(c, nodes, MAX_URLS, &count);
    if (count > MAX_URLS) {
        nodes = calloc(count, sizeof *nodes);
        if (!nodes) {
            say("out of memory");
            redlock_client_free(c);
            return EXIT_UNAVAILABLE;
        }
        rc = load ? redlock_functions_load(c, nodes, count, &count)
                  : redlock_functions_status(c, nodes, count, &count);
    }
    int missing = report_nodes(nodes, count, load);
    if (nodes != fixed)
        free(nodes);
    if (rc != REDLOCK_OK && count == 0)
        say("%s", redlock_client_errstr(c));
    redlock_client_free(c);
    if (rc != REDLOCK_OK)
        return EXIT_UNAVAILABLE;
    return !load && missing ? 1 : 0;
}

/* ---- main ---------------------------------------------------------------------------------- */

/* redlock functions ACTION [-u URL]... (argv[0] is "functions") */
static int functions_main(cli *o, int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing functions action: want load, status or code");
    const char *action = argv[1];
    if (strcmp(action, "load") != 0 && strcmp(action, "status") != 0 &&
        strcmp(action, "code") != 0)
        return usage_error("unknown functions action '%s': want load, status or code", action);
    int rc = parse_options(o, argc - 1, argv + 1, 0);
    if (rc < 0 && optind < argc - 1)
        rc = usage_error("unexpected '%s' after functions %s", argv[1 + optind], action);
    if (rc < 0 && o->nurls == 0 && default_urls(o) != 0)
        rc = EXIT_USAGE;
    if (rc < 0)
        rc = functions_command(o, action);
    free(o->url_env);
    return rc;
}

static int find_dashdash(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0)
            return i;
    return -1;
}

/* run's words after NAME: -- and COMMAND (dd: the index of --, or -1).
 * -1 when they are right (o->command set), or a usage error's status. */
static int command_words(cli *o, int sargc, char **sargv, int dd)
{
    /* Without --, a word after NAME could be COMMAND or a misplaced option
     * (`run n -v echo hi`): refuse rather than guess. */
    if (dd < 0 && optind + 1 < sargc)
        return usage_error("'%s' after NAME: put -- between NAME and COMMAND", sargv[optind + 1]);
    if (dd < 0)
        return usage_error("missing -- COMMAND after NAME");
    o->command = sargv + dd + 1;
    if (optind + 1 < dd)
        return usage_error("unexpected '%s' before --", sargv[optind + 1]);
    if (!o->command[0])
        return usage_error("missing COMMAND after NAME --");
    return -1;
}

int main(int argc, char **argv)
{
    cli o;
    memset(&o, 0, sizeof o);
    o.ttl_ms = 30000;
    o.restart_guard = -1;
    o.grace_ms = 5000;
    o.conflict_code = EXIT_CONFLICT;

    if (argc < 2)
        return usage_error("missing command: run, status, stats or functions");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        print_usage();
        return 0;
    }
    if (strcmp(sub, "--version") == 0 || strcmp(sub, "-V") == 0) {
        printf("redlock %s\n", REDLOCK_VERSION);
        return 0;
    }
    if (strcmp(sub, "functions") == 0)
        return functions_main(&o, argc - 1, argv + 1);
    int is_run = strcmp(sub, "run") == 0, is_stats = strcmp(sub, "stats") == 0;
    if (!is_run && !is_stats && strcmp(sub, "status") != 0)
        return usage_error("unknown command '%s': want run, status, stats or functions", sub);

    int sargc = argc - 1;
    char **sargv = argv + 1;
    int dd = is_run ? find_dashdash(sargc, sargv) : -1;
    int rc = parse_options(&o, dd >= 0 ? dd : sargc, sargv, is_run && dd < 0);
    if (rc >= 0)
        goto done;
    int limit = dd >= 0 ? dd : sargc;
    if (optind >= limit && !is_stats) {
        rc = usage_error("missing lock NAME");
        goto done;
    }
    o.name = optind < limit ? sargv[optind] : "redlock-stats-probe";
    if (!*o.name) {
        rc = usage_error("lock NAME is empty");
        goto done;
    }
    rc = is_run ? command_words(&o, sargc, sargv, dd) : -1;
    if (rc >= 0)
        goto done;
    if (!is_run && optind + 1 < sargc) {
        rc = usage_error("unexpected '%s' after NAME", sargv[optind + 1]);
        goto done;
    }
    if (o.nurls == 0 && default_urls(&o) != 0) {
        rc = EXIT_USAGE;
        goto done;
    }
    rc = is_run ? run_command(&o) : is_stats ? stats_command(&o) : status_command(&o);
done:
    free(o.url_env);
    return rc;
}
