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

/* CLOCK_MONOTONIC in ms, and a sleep that resumes after signals. */
double fx_now_ms(void);
void fx_sleep_ms(int ms);

/* A loopback TCP port that was free a moment ago. */
int fx_free_port(void);

#endif
