/* fx_tls.h - certificates and TLS redis-server processes for the tests.
 *
 * fx_tls_make writes, with the openssl CLI into a fresh temp dir, every
 * certificate a TLS test needs (EC P-256, valid for a few days). Servers are
 * fx_servers (fixture.h) with the TLS options of fx_opts, so stop, kill,
 * restart and pause work as for any other. fx_cmd speaks plain TCP only:
 * to run a command over TLS use fx_tls_cli (a redis-cli --tls child), or
 * start the server with a plain port next to the TLS one (plain = 1) and use
 * fx_cmd on it. Nothing here uses the library under test.
 *
 * Note: redis-cli (hiredis) checks the certificate chain but not the host
 * name; fx_tls_handshake (openssl s_client) checks both.
 */
#ifndef FX_TLS_H
#define FX_TLS_H

#include "fixture.h"

#include <stddef.h>

typedef struct fx_tls {
    char dir[256];
    char ca[320];          /* the CA; signs server, wrong and client              */
    char server_cert[320]; /* SAN IP:127.0.0.1, IP:::1, DNS:localhost; by ca      */
    char server_key[320];
    char wrong_cert[320]; /* SAN DNS:wrong.example only; by ca (name mismatch)    */
    char wrong_key[320];
    char client_cert[320]; /* a client certificate (clientAuth); by ca            */
    char client_key[320];
    char other_ca[320];   /* an unrelated CA                                      */
    char other_cert[320]; /* the server names again, signed by other_ca          */
    char other_key[320];
    char self_cert[320]; /* the server names again, self-signed                  */
    char self_key[320];
} fx_tls;

/* The server certificates, for fx_tls_server_start / fx_tls_opts. */
enum { FX_TLS_SERVER, FX_TLS_WRONG_NAME, FX_TLS_OTHER_CA, FX_TLS_SELF_SIGNED };

/* Make the certificates (about a dozen openssl runs, each bounded). 0, or -1
 * with openssl's output on stderr and nothing left behind. */
int fx_tls_make(fx_tls *t);
/* Remove the files and the dir. Safe twice. */
void fx_tls_free(fx_tls *t);

/* Set the TLS fields of o: server certificate `cert` (FX_TLS_*), client
 * certificates verified against t->ca, tls-auth-clients `auth` ("yes",
 * "no", "optional"; NULL: "no"). Other fields stay, so TLS combines with
 * password, cluster, extra_args... o points into t: keep t alive. */
void fx_tls_opts(fx_opts *o, const fx_tls *t, int cert, const char *auth);
/* fx_server_start with fx_tls_opts; plain = 1 also opens a plain TCP port
 * (s->port, s->url, fx_cmd), else s->port is 0. 0, or -1. */
int fx_tls_server_start(fx_server *s, const fx_tls *t, int cert, const char *auth, int plain);

/* How a client connects; zero (or NULL) for each default. */
typedef struct fx_tls_client {
    const char *host; /* connect to (and URL host); NULL: 127.0.0.1          */
    const char *ca;   /* trusted CA file; NULL: the system store             */
    const char *cert; /* client certificate and key; NULL: none              */
    const char *key;
    const char *sni;  /* server name to send; NULL: none (redis-cli), host (URL) */
    int insecure;     /* 1: no verification                                   */
} fx_tls_client;

/* Run `redis-cli --tls` with c's options against s->tls_port, the command
 * split on spaces; its output (stdout and stderr, e.g. "PONG\n" or
 * "Could not connect ... certificate verify failed") into out. Returns
 * redis-cli's exit status: 0 when it got a reply (an error reply too), 1
 * when it could not connect or lost the connection; -1 if it did not run
 * or took longer than 5 s. */
int fx_tls_cli(const fx_server *s, const fx_tls_client *c, char *out, size_t outlen,
               const char *cmd);
/* One TLS handshake with `openssl s_client`, verifying the chain against
 * c->ca and, when name is not NULL, that the certificate is for name (an
 * IP address or a DNS name). c->cert/key are sent when set. Output into
 * out. 0 verified and connected, 1 refused or not verified, -1 did not run.
 * It checks the server's certificate; whether the server accepts the
 * client's is for fx_tls_cli to tell: in TLS 1.3 the client's side of the
 * handshake completes and the refusal ("certificate required" alert)
 * arrives on the first read, which s_client may or may not reach. */
int fx_tls_handshake(const fx_server *s, const fx_tls_client *c, const char *name, char *out,
                     size_t outlen);
/* "rediss://HOST:TLS_PORT?ca=FILE&cert=FILE&key=FILE&sni=NAME&insecure=1"
 * with only the parameters c sets (c may be NULL), values percent-encoded
 * where needed, an IPv6 host in brackets. 0, or -1 if out is too small. */
int fx_tls_url(char *out, size_t outlen, const fx_server *s, const fx_tls_client *c);

#endif
