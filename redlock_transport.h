/* redlock_transport.h - the TLS transport table and its parameter types.
 *
 * Public; included by redlock.h (a user includes redlock.h only). It is a
 * header of its own so that the connection layer (net.c), which drives a
 * transport, sees the table without the lock API above it. A transport
 * implementation (tls_openssl.c, or one of your own) includes redlock.h
 * for the status codes it returns.
 *
 * A rediss:// URL connects over TLS through a transport: a table of
 * non-blocking functions that the connection layer calls instead of
 * recv()/send() once TCP is connected. The core has no TLS code and no
 * dependency; redlock_tls_openssl() (tls_openssl.c, built by
 * `make TLS=openssl`, linked with -lssl -lcrypto) is one transport, and a
 * table of your own over mbedTLS, wolfSSL or BearSSL plugs in the same way.
 *
 * How the library drives a transport, per TCP connection:
 *   open -> handshake ... (until REDLOCK_OK) -> read/write ... -> close
 * everything on the thread that uses the client, never two calls at once
 * for one client. The handshake runs under connect_timeout_ms, like the
 * TCP connect and AUTH/SELECT; each request keeps its io_timeout_ms.
 * Besides REDLOCK_OK and the status codes, a step may return
 * REDLOCK_WANT_READ or REDLOCK_WANT_WRITE: the library polls the socket
 * for that readiness (or gives up at the deadline) and calls the same step
 * again. No function may block, sleep, raise SIGPIPE (send with
 * MSG_NOSIGNAL) or close the socket.
 *
 * Statuses a transport returns: REDLOCK_ERR_TLS for what TLS refused
 * (certificate verification, host name mismatch, an alert from the server
 * such as "certificate required", a peer that is not a TLS server); the
 * library never retries these by itself. REDLOCK_ERR_IO for what a
 * reconnect may cure (reset, end of stream in the middle of the
 * handshake). REDLOCK_ERR_NOMEM. Write the reason into err (errlen bytes,
 * NUL-terminated, one line, no secrets): it becomes redlock_client_errstr.
 */
#ifndef REDLOCK_TRANSPORT_H
#define REDLOCK_TRANSPORT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct redlock_transport redlock_transport;

/* What to verify and present, from the rediss:// URL (its parameters win)
 * and the options. Strings are never NULL: "" means unset. Valid only
 * during config_new: copy what you keep. */
typedef struct redlock_tls_params {
    const char *host; /* the URL's host: a DNS name or an IP address (no brackets)      */
    const char *sni;  /* sni=: name to send (SNI) and to verify the certificate against;
                         "": host (an IP address is verified, and not sent as SNI)      */
    const char *ca;   /* ca=: PEM file of trusted CAs; "": the system's default store   */
    const char *cert; /* cert=: client certificate chain (PEM); "": no client certificate */
    const char *key;  /* key=: its private key (PEM, unencrypted); "": read from cert   */
    int insecure;     /* insecure=1: verify neither chain nor name (never the default)  */
} redlock_tls_params;

/* Besides the status codes: call the same step again once the socket is
 * readable (WANT_READ) or writable (WANT_WRITE). */
enum { REDLOCK_WANT_READ = -1, REDLOCK_WANT_WRITE = -2 };

struct redlock_transport {
    const char *name; /* for messages, e.g. "openssl" */
    /* Make the settings of one connection object from p: trust store,
     * client certificate, verification. Called before its first handshake
     * and kept across reconnects until config_free (a node has up to two
     * connection objects: commands, and the listener for waiters). May
     * read files. REDLOCK_OK and *cfg; REDLOCK_ERR_TLS (a file cannot be
     * loaded, a key does not match its certificate) or REDLOCK_ERR_NOMEM,
     * with err. Those fail the requests waiting for the connection, and
     * the next attempt calls config_new again. */
    int (*config_new)(void **cfg, const redlock_tls_params *p, char *err, size_t errlen);
    void (*config_free)(void *cfg); /* NULL ok */
    /* Start a client session on fd: a connected, non-blocking TCP socket
     * owned by the library. No I/O needed. REDLOCK_OK and *conn, or an
     * error with err. */
    int (*open)(void **conn, void *cfg, int fd, char *err, size_t errlen);
    /* One non-blocking step of the handshake, including verification:
     * REDLOCK_OK once done; REDLOCK_WANT_READ / REDLOCK_WANT_WRITE; or an
     * error (REDLOCK_ERR_TLS: verification failed and why, the server's
     * alert, not a TLS server; REDLOCK_ERR_IO: reset or closed). */
    int (*handshake)(void *conn, char *err, size_t errlen);
    /* Decrypt up to len bytes into buf. REDLOCK_OK with *got > 0 bytes,
     * or *got == 0: the peer closed the connection; REDLOCK_WANT_*: no
     * data now; REDLOCK_ERR_IO (reset, truncated stream, corrupt record)
     * or REDLOCK_ERR_TLS (an alert that a reconnect will not cure, e.g.
     * TLS 1.3's "certificate required", which arrives with the first read
     * after the handshake). */
    int (*read)(void *conn, char *buf, size_t len, size_t *got, char *err, size_t errlen);
    /* Encrypt and send bytes from buf[0..len). REDLOCK_OK with *put > 0
     * bytes taken; REDLOCK_WANT_*: call again with the same bytes first
     * (the buffer may have moved and len may have grown): like OpenSSL and
     * mbedTLS, a transport may already hold a record made of up to len of
     * them, so the library counts those bytes as sent from here on.
     * Errors as for read. The library passes at most 16 KiB per call. */
    int (*write)(void *conn, const char *buf, size_t len, size_t *put, char *err, size_t errlen);
    /* Non-zero when read would make progress without new bytes from the
     * socket: decrypted bytes not yet returned, or whole records buffered.
     * The library then calls read before it polls again (poll() cannot see
     * them). It must become zero once read only waits for the socket
     * (e.g. a partial record), or the caller's loop spins. */
    int (*pending)(void *conn);
    /* End the session (a close_notify may be sent without blocking) and
     * free it; the library closes the socket afterwards. NULL ok. */
    void (*close)(void *conn);
};

#ifdef __cplusplus
}
#endif

#endif
