/* fixture.h - real redis-server processes for the tests.
 *
 * Each server runs on a free loopback port (and, if asked, a unix socket
 * and ::1) with its files in a fresh temp dir. The child is started with
 * PR_SET_PDEATHSIG, so a test process that dies takes its servers with it.
 * Only PIDs started here are ever signalled.
 */
#ifndef FIXTURE_H
#define FIXTURE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct fx_opts {
    const char *password;     /* requirepass                           */
    const char *acl_user;     /* an ACL user with every permission     */
    const char *acl_password; /* its password                          */
    int unix_socket;          /* also listen on DIR/redis.sock         */
    int ipv6;                 /* also bind ::1 when the host has it    */
    int debug;                /* enable-debug-command yes (DEBUG SLEEP) */
    /* For fx_cluster and fx_tls; zero leaves each off. Strings and the
     * argument list are the caller's and must outlive the server (a restart
     * reads them again). */
    const char *const *extra_args; /* more redis-server arguments, NULL-ended (at most 32) */
    int cluster;                   /* cluster-enabled, DIR/nodes.conf, bus on a free bus_port */
    const char *tls_cert;          /* set: TLS on a free tls_port with this certificate */
    const char *tls_key;           /* its key                                           */
    const char *tls_ca;            /* tls-ca-cert-file: verifies client certificates    */
    const char *tls_auth_clients;  /* "yes", "no" or "optional"; NULL: "no"             */
    int tls_plain;                 /* with TLS, also plain TCP on port (else port is 0) */
} fx_opts;

typedef struct fx_server {
    pid_t pid; /* 0 when not running */
    int port;
    int has_ipv6;
    fx_opts opts;
    char dir[256];
    char sock[320];
    char url[384];      /* redis://127.0.0.1:PORT, without credentials */
    char unix_url[400]; /* unix://DIR/redis.sock, when unix_socket     */
    int tls_port;       /* with tls_cert: the TLS port (port is 0 unless tls_plain; url
                           is then "") */
    int bus_port;       /* with cluster: the cluster bus port */
    char tls_url[384];  /* rediss://127.0.0.1:TLS_PORT, without parameters (fx_tls_url) */
} fx_server;

/* Start a server (o may be NULL). 0, or -1 with a message on stderr. */
int fx_server_start(fx_server *s, const fx_opts *o);
/* SIGTERM, bounded wait, SIGKILL; removes the temp dir. Safe twice. */
void fx_server_stop(fx_server *s);
/* SIGKILL now (a crash); the temp dir stays for a restart. */
void fx_server_kill(fx_server *s);
/* Stop (if running) and start again on the same port and socket, empty. */
int fx_server_restart(fx_server *s);
void fx_server_pause(fx_server *s);  /* SIGSTOP */
void fx_server_resume(fx_server *s); /* SIGCONT */

/* Run one command (words split on spaces) on its own connection and write
 * the reply as text into out: status, error ("-ERR ..."), integer or bulk
 * as is, nil as "", arrays as elements joined by "\n". 0, or -1 on an I/O
 * or protocol failure. Independent of the library under test. */
int fx_cmd(fx_server *s, char *out, size_t outlen, const char *cmd);
/* Same with explicit arguments (binary-safe). */
int fx_cmdv(fx_server *s, char *out, size_t outlen, int argc, const char *const *argv,
            const size_t *lens);
/* Several commands (each split on spaces) in order on one connection, for
 * what needs connection state: SET then WAIT, ASKING then GET, READONLY
 * then GET. out gets the last reply, or the first error reply of an earlier
 * command. 0, or -1 on an I/O or protocol failure. */
int fx_cmds(fx_server *s, char *out, size_t outlen, int ncmd, const char *const *cmds);

/* CLOCK_MONOTONIC in ms, and a sleep that resumes after signals. */
double fx_now_ms(void);
void fx_sleep_ms(int ms);

/* A loopback TCP port that was free a moment ago. */
int fx_free_port(void);

/* Run a program (argv[0] from PATH, argv NULL-ended) with stdin on /dev/null
 * and PR_SET_PDEATHSIG; its stdout and stderr together go into out (cut to
 * outlen - 1 bytes, always terminated). After timeout_ms it is SIGKILLed.
 * Returns its exit status, or -1 if it did not start, timed out or died of
 * a signal. */
int fx_run(char *out, size_t outlen, int timeout_ms, const char *const *argv);

#endif
