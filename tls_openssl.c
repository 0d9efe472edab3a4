/* tls_openssl.c - the TLS transport of redlock.h ("TLS") on OpenSSL 3.
 *
 * Optional: `make TLS=openssl` builds it into the library and the command;
 * vendored, it is a fourth file next to redlock.c, resp.c and net.c, linked
 * with -lssl -lcrypto. It uses the transport table exactly as a transport
 * for another TLS library would (plus the library's allocator from resp.h).
 *
 * Nothing here is process-wide. Each connection object gets its own
 * SSL_CTX and BIO method; no global callbacks, no init flags, no
 * CRYPTO_set_mem_functions, no signal handling; OpenSSL's thread-local
 * error queue is emptied after every call that can fill it (and before, as
 * SSL_get_error needs).
 *
 * Socket I/O goes through a BIO of our own over the library's socket:
 * send(MSG_NOSIGNAL) and recv(). OpenSSL's socket BIO writes with write(),
 * which raises SIGPIPE when the server has gone, and the only cure from
 * outside would be to ignore SIGPIPE for the whole application. Memory
 * BIOs would avoid that too, but cost a copy of every byte and another
 * buffer per connection; this BIO keeps OpenSSL's own buffering (with
 * read-ahead: one recv per burst of records) and copies nothing.
 */
#define _GNU_SOURCE /* MSG_NOSIGNAL */
#include "redlock.h"
#include "resp.h" /* the library's allocator */

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* the library sets SO_NOSIGPIPE on the socket instead */
#endif

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "tls_openssl.c needs OpenSSL 3"
#endif

/* Our BIO's type: a source/sink with an index of our own. Fixed on
 * purpose: BIO_get_new_index() hands out a process-wide counter that runs
 * out after 127 calls. */
#define BIO_TYPE_REDLOCK (0x7d | BIO_TYPE_SOURCE_SINK)
#define FIRST_BYTES 24 /* kept to tell a server that is not TLS */

/* The settings of one connection object (redlock.h: config_new). */
typedef struct tls_cfg {
    SSL_CTX *ctx;
    BIO_METHOD *bio;
    char name[256]; /* verified against the certificate: sni= or the host */
    int name_is_ip; /* verified as an IP address, and not sent as SNI */
    int insecure;
} tls_cfg;

/* One session on one socket. */
typedef struct tls_conn {
    SSL *ssl;
    const tls_cfg *cfg;
    int fd;
    int done;       /* the handshake is through                               */
    int failed;     /* a fatal error: OpenSSL forbids a close_notify now      */
    int starved;    /* the last read waited for the socket: what OpenSSL holds
                       is at most a partial record                            */
    int eof;        /* recv() saw the end of the stream                       */
    int sock_errno; /* the last send/recv failure                             */
    unsigned char first[FIRST_BYTES];
    size_t nfirst;
    char names[200]; /* a certificate that failed the name check: its names */
} tls_conn;

/* ---- messages -------------------------------------------------------------------- */

static int fail(int status, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(int status, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    ERR_clear_error(); /* leave the thread's error queue as we found it: empty */
    return status;
}

/* The first error OpenSSL queued that has a reason, as text ("" if none);
 * it empties the queue, as fail() would. OpenSSL 3 queues a failed
 * fopen() as a system error whose reason is the errno and has no string
 * of its own: that one reads as strerror(). */
static const char *first_error(char *buf, size_t len)
{
    unsigned long first = ERR_peek_error(), e;
    snprintf(buf, len, "%s", "");
    while ((e = ERR_get_error()) != 0) {
        const char *r = ERR_SYSTEM_ERROR(e) ? strerror((int)ERR_GET_REASON(e))
                                            : ERR_reason_error_string(e);
        if (r && !buf[0])
            snprintf(buf, len, "%s", r);
    }
    if (!buf[0] && first)
        snprintf(buf, len, "OpenSSL error %lx", first);
    return buf;
}

/* Why path cannot be read, or NULL when it can: the system's reason
 * (errno), which OpenSSL 3 would not name. Read, not only opened, so that
 * a directory says so. */
static const char *unreadable(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return strerror(errno);
    errno = 0;
    int ch = fgetc(f);
    int e = ch == EOF && ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    return e ? strerror(e) : NULL;
}

/* ---- the BIO: send(MSG_NOSIGNAL) and recv() on the library's socket ------------------------ */

static int bio_write(BIO *b, const char *buf, int len)
{
    tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(b);
        else
            t->sock_errno = errno;
        return -1;
    }
}

static int bio_read(BIO *b, char *buf, int len)
{
    tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = recv(t->fd, buf, (size_t)len, 0);
        if (n > 0) {
            t->starved = 0;
            if (t->nfirst < FIRST_BYTES) {
                size_t k =
                    FIRST_BYTES - t->nfirst < (size_t)n ? FIRST_BYTES - t->nfirst : (size_t)n;
                memcpy(t->first + t->nfirst, buf, k);
                t->nfirst += k;
            }
            return (int)n;
        }
        if (n == 0) {
            t->eof = 1;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_read(b);
        else
            t->sock_errno = errno;
        return -1;
    }
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    if (cmd == BIO_CTRL_FLUSH)
        return 1; /* nothing buffered here: every write went to send() */
    if (cmd == BIO_CTRL_EOF) {
        const tls_conn *t = BIO_get_data(b);
        return t && t->eof;
    }
    return 0;
}

/* ---- settings ------------------------------------------------------------------------- */

/* The certificate's names, for a mismatch message: "DNS:a, IP:1.2.3.4". */
static void cert_names(X509 *x, char *dst, size_t cap)
{
    size_t o = 0;
    dst[0] = '\0';
    GENERAL_NAMES *names = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && o + 1 < cap; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char ip[INET6_ADDRSTRLEN];
        int w = 0;
        if (g->type == GEN_DNS) {
            w = snprintf(dst + o, cap - o, "%sDNS:%.*s", o ? ", " : "",
                         ASN1_STRING_length(g->d.dNSName),
                         (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        } else if (g->type == GEN_IPADD) {
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            if ((len == 4 || len == 16) &&
                inet_ntop(len == 4 ? AF_INET : AF_INET6, a, ip, sizeof ip))
                w = snprintf(dst + o, cap - o, "%sIP:%s", o ? ", " : "", ip);
        }
        if (w > 0)
            o += (size_t)w < cap - o ? (size_t)w : cap - o - 1;
    }
    GENERAL_NAMES_free(names);
    if (o == 0 && x &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, dst, (int)cap) < 0)
        snprintf(dst, cap, "no names");
}

/* Verification failed on the name: keep the certificate's names for the
 * message (OpenSSL keeps no peer certificate after a failed handshake).
 * The verdict is OpenSSL's, unchanged. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
    int e = X509_STORE_CTX_get_error(x);
    if (ok || (e != X509_V_ERR_HOSTNAME_MISMATCH && e != X509_V_ERR_IP_ADDRESS_MISMATCH))
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls_conn *t = ssl ? SSL_get_app_data(ssl) : NULL;
    if (t)
        cert_names(X509_STORE_CTX_get_current_cert(x), t->names, sizeof t->names);
    return ok;
}

/* A key file asks for a passphrase: refuse (OpenSSL's default would prompt
 * on the terminal and block). */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

static int is_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* A PEM file with an encrypted key in it (which we do not decrypt: a
 * passphrase prompt would block). */
static int pem_encrypted(const char *path)
{
    char buf[8192];
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, "ENCRYPTED") != NULL;
}

/* Each file is tried by hand first, so that a missing or unreadable one
 * says why in the system's words; a file that reads but does not load
 * gets OpenSSL's reason. */
static int load_files(tls_cfg *cfg, const redlock_tls_params *p, char *err, size_t errlen)
{
    char why[200];
    const char *sys;
    if (p->ca[0]) {
        if ((sys = unreadable(p->ca)) != NULL)
            return fail(REDLOCK_ERR_TLS, err, errlen, "cannot load ca=%s: %s", p->ca, sys);
        if (SSL_CTX_load_verify_locations(cfg->ctx, p->ca, NULL) != 1)
            return fail(REDLOCK_ERR_TLS, err, errlen, "cannot load ca=%s: %s", p->ca,
                        first_error(why, sizeof why));
    } else if (!p->insecure && SSL_CTX_set_default_verify_paths(cfg->ctx) != 1) {
        return fail(REDLOCK_ERR_TLS, err, errlen, "cannot use the system's CA store: %s",
                    first_error(why, sizeof why));
    }
    if (p->key[0] && !p->cert[0])
        return fail(REDLOCK_ERR_TLS, err, errlen, "key= needs its certificate: cert=");
    if (!p->cert[0])
        return REDLOCK_OK;
    if ((sys = unreadable(p->cert)) != NULL)
        return fail(REDLOCK_ERR_TLS, err, errlen, "cannot load cert=%s: %s", p->cert, sys);
    if (SSL_CTX_use_certificate_chain_file(cfg->ctx, p->cert) != 1)
        return fail(REDLOCK_ERR_TLS, err, errlen, "cannot load cert=%s: %s", p->cert,
                    first_error(why, sizeof why));
    /* no key=: the key is read from the cert= file */
    const char *key = p->key[0] ? p->key : p->cert;
    const char *what = p->key[0] ? "key" : "the key from cert";
    if ((sys = unreadable(key)) != NULL)
        return fail(REDLOCK_ERR_TLS, err, errlen, "cannot load %s=%s: %s", what, key, sys);
    if (SSL_CTX_use_PrivateKey_file(cfg->ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            return fail(REDLOCK_ERR_TLS, err, errlen, "the key in %s does not match cert=%s", key,
                        p->cert);
        if (pem_encrypted(key))
            return fail(REDLOCK_ERR_TLS, err, errlen,
                        "the key in %s is encrypted: give an unencrypted key", key);
        return fail(REDLOCK_ERR_TLS, err, errlen, "cannot load %s=%s: %s", what, key,
                    first_error(why, sizeof why));
    }
    if (SSL_CTX_check_private_key(cfg->ctx) != 1)
        return fail(REDLOCK_ERR_TLS, err, errlen, "the key in %s does not match cert=%s", key,
                    p->cert);
    return REDLOCK_OK;
}

static BIO_METHOD *new_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_REDLOCK, "redlock socket");
    if (m && (BIO_meth_set_write(m, bio_write) != 1 || BIO_meth_set_read(m, bio_read) != 1 ||
              BIO_meth_set_ctrl(m, bio_ctrl) != 1)) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

static void cfg_free(void *p)
{
    tls_cfg *cfg = p;
    if (!cfg)
        return;
    SSL_CTX_free(cfg->ctx);
    BIO_meth_free(cfg->bio);
    resp_free(cfg);
}

static int cfg_new(void **out, const redlock_tls_params *p, char *err, size_t errlen)
{
    *out = NULL;
    const char *name = p->sni[0] ? p->sni : p->host;
    if (strlen(name) >= sizeof((tls_cfg *)0)->name)
        return fail(REDLOCK_ERR_TLS, err, errlen, "server name too long");
    tls_cfg *cfg = resp_alloc_array(1, sizeof *cfg);
    if (!cfg)
        return fail(REDLOCK_ERR_NOMEM, err, errlen, "out of memory");
    ERR_clear_error();
    cfg->ctx = SSL_CTX_new(TLS_client_method());
    cfg->bio = new_bio_method();
    if (!cfg->ctx || !cfg->bio) {
        cfg_free(cfg);
        return fail(REDLOCK_ERR_NOMEM, err, errlen, "cannot make an SSL_CTX");
    }
    snprintf(cfg->name, sizeof cfg->name, "%s", name);
    cfg->name_is_ip = is_ip(name);
    cfg->insecure = p->insecure;
    SSL_CTX_set_min_proto_version(cfg->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(cfg->ctx, SSL_OP_NO_RENEGOTIATION);
    /* the library passes the same bytes again after a retry, maybe moved */
    SSL_CTX_set_mode(cfg->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(cfg->ctx, 1);
    SSL_CTX_set_default_passwd_cb(cfg->ctx, no_passphrase);
    SSL_CTX_set_verify(cfg->ctx, p->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, verify_cb);
    int rc = load_files(cfg, p, err, errlen);
    if (rc != REDLOCK_OK) {
        cfg_free(cfg);
        return rc;
    }
    ERR_clear_error();
    *out = cfg;
    return REDLOCK_OK;
}

/* ---- why a step failed ------------------------------------------------------------------ */

static int verify_failed(const tls_conn *t, char *err, size_t errlen)
{
    long v = SSL_get_verify_result(t->ssl);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
        return fail(REDLOCK_ERR_TLS, err, errlen,
                    "certificate verify failed: host name mismatch: the certificate is not for "
                    "%s (it names %s); connect by one of those names or set sni=",
                    t->cfg->name, t->names[0] ? t->names : "nothing we could read");
    const char *hint = "";
    if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
        v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN || v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
        v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT)
        hint = " (is ca= the CA that signed the server's certificate?)";
    return fail(REDLOCK_ERR_TLS, err, errlen, "certificate verify failed: %s%s",
                X509_verify_cert_error_string(v), hint);
}

/* The peer answered with something that is not a TLS record. */
static int not_tls(const tls_conn *t)
{
    return t->nfirst > 0 && t->first[0] != 0x16 && t->first[0] != 0x15;
}

static int not_tls_server(const tls_conn *t, char *err, size_t errlen)
{
    char shown[FIRST_BYTES + 1];
    size_t k = 0;
    for (; k < t->nfirst && t->first[k] != '\r' && t->first[k] != '\n'; k++)
        shown[k] = t->first[k] >= 0x20 && t->first[k] < 0x7f ? (char)t->first[k] : '?';
    shown[k] = '\0';
    return fail(REDLOCK_ERR_TLS, err, errlen, "not a TLS server: it answered \"%s\"%s", shown,
                " (use a redis:// URL for a plain port)");
}

/* An alert from the server, by OpenSSL's reason code (SSL_AD_REASON_OFFSET
 * + the alert number). Those about certificates are for the user to fix;
 * others after the handshake are like a reset. */
static int alert(int reason, const char *text, int in_handshake, char *err, size_t errlen)
{
    switch (reason) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return fail(REDLOCK_ERR_TLS, err, errlen,
                    "the server requires a client certificate (%s): set cert= and key=", text);
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        return fail(REDLOCK_ERR_TLS, err, errlen,
                    "the server refused the handshake (%s); if it requires a client "
                    "certificate, set cert= and key=",
                    text);
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        return fail(REDLOCK_ERR_TLS, err, errlen,
                    "the server does not accept our client certificate (%s)", text);
    }
    return fail(in_handshake ? REDLOCK_ERR_TLS : REDLOCK_ERR_IO, err, errlen,
                "alert from the server: %s", text);
}

/* Map a failed SSL_* call (ret) to a transport result. in_handshake: the
 * handshake was not through, so anything TLS refused is REDLOCK_ERR_TLS;
 * afterwards only certificate alerts are, and the rest is REDLOCK_ERR_IO
 * (a reconnect may cure it). The end of the stream after the handshake is
 * REDLOCK_OK: a read returns it with nothing read. */
static int failure(tls_conn *t, int ret, int in_handshake, char *err, size_t errlen)
{
    char why[200];
    int e = SSL_get_error(t->ssl, ret);
    if (e == SSL_ERROR_WANT_READ)
        return REDLOCK_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return REDLOCK_WANT_WRITE;
    if (e != SSL_ERROR_ZERO_RETURN)
        t->failed = 1; /* SSL_ERROR_SSL, SSL_ERROR_SYSCALL: no more I/O, no close_notify */
    if (in_handshake && not_tls(t))
        return not_tls_server(t, err, errlen);
    unsigned long code = e == SSL_ERROR_SSL ? ERR_peek_error() : 0;
    int lib = code ? ERR_GET_LIB(code) : 0, reason = code ? ERR_GET_REASON(code) : 0;
    int eof = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !t->sock_errno) ||
              (lib == ERR_LIB_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING);
    if (eof && in_handshake)
        return fail(REDLOCK_ERR_IO, err, errlen,
                    "connection closed in the TLS handshake (not a TLS server, or it refused us)");
    if (eof) {
        ERR_clear_error();
        return REDLOCK_OK;
    }
    if (e == SSL_ERROR_SYSCALL || (lib == ERR_LIB_SYS && t->sock_errno))
        return fail(REDLOCK_ERR_IO, err, errlen, "%s",
                    strerror(t->sock_errno ? t->sock_errno : EIO));
    if (lib == ERR_LIB_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED)
        return verify_failed(t, err, errlen);
    first_error(why, sizeof why);
    if (lib == ERR_LIB_SSL && reason > SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
        return alert(reason, why, in_handshake, err, errlen);
    if (lib == ERR_LIB_SSL &&
        (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG))
        return fail(in_handshake ? REDLOCK_ERR_TLS : REDLOCK_ERR_IO, err, errlen,
                    "%s (not a TLS server?)", why);
    return fail(in_handshake ? REDLOCK_ERR_TLS : REDLOCK_ERR_IO, err, errlen, "%s",
                why[0] ? why : "TLS failure");
}

/* ---- sessions ------------------------------------------------------------------------------- */

static void conn_close(void *p)
{
    tls_conn *t = p;
    if (!t)
        return;
    if (t->done && !t->failed) {
        ERR_clear_error();
        (void)SSL_shutdown(t->ssl); /* one close_notify, if the socket takes it now */
    }
    SSL_free(t->ssl); /* and the BIO; the socket is the library's */
    ERR_clear_error();
    resp_free(t);
}

static int conn_open(void **out, void *cfgp, int fd, char *err, size_t errlen)
{
    const tls_cfg *cfg = cfgp;
    *out = NULL;
    tls_conn *t = resp_alloc_array(1, sizeof *t);
    if (!t)
        return fail(REDLOCK_ERR_NOMEM, err, errlen, "out of memory");
    t->cfg = cfg;
    t->fd = fd;
    ERR_clear_error();
    t->ssl = SSL_new(cfg->ctx);
    BIO *b = t->ssl ? BIO_new(cfg->bio) : NULL;
    if (!b) {
        SSL_free(t->ssl);
        resp_free(t);
        return fail(REDLOCK_ERR_NOMEM, err, errlen, "cannot make an SSL session");
    }
    BIO_set_data(b, t);
    BIO_set_init(b, 1);
    SSL_set_bio(t->ssl, b, b);
    SSL_set_app_data(t->ssl, t); /* for verify_cb */
    SSL_set_connect_state(t->ssl);
    int ok = 1;
    if (!cfg->name_is_ip)
        ok = SSL_set_tlsext_host_name(t->ssl, cfg->name) == 1; /* SNI names hosts, not addresses */
    if (ok && !cfg->insecure && cfg->name_is_ip)
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), cfg->name) == 1;
    else if (ok && !cfg->insecure) {
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set1_host(t->ssl, cfg->name) == 1;
    }
    if (!ok) {
        conn_close(t);
        return fail(REDLOCK_ERR_TLS, err, errlen, "cannot use the server name '%s'", cfg->name);
    }
    ERR_clear_error();
    *out = t;
    return REDLOCK_OK;
}

static int conn_handshake(void *p, char *err, size_t errlen)
{
    tls_conn *t = p;
    ERR_clear_error();
    int r = SSL_connect(t->ssl);
    if (r == 1) {
        t->done = 1;
        return REDLOCK_OK;
    }
    return failure(t, r, 1, err, errlen);
}

static int conn_read(void *p, char *buf, size_t len, size_t *got, char *err, size_t errlen)
{
    tls_conn *t = p;
    *got = 0;
    ERR_clear_error();
    if (SSL_read_ex(t->ssl, buf, len, got) == 1)
        return REDLOCK_OK;
    *got = 0;
    int rc = failure(t, 0, 0, err, errlen);
    if (rc == REDLOCK_WANT_READ)
        t->starved = 1;
    return rc;
}

static int conn_write(void *p, const char *buf, size_t len, size_t *put, char *err, size_t errlen)
{
    tls_conn *t = p;
    *put = 0;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, buf, len, put) == 1)
        return REDLOCK_OK;
    *put = 0;
    int rc = failure(t, 0, 0, err, errlen);
    if (rc == REDLOCK_OK) /* the peer closed while we write */
        return fail(REDLOCK_ERR_IO, err, errlen, "connection closed");
    return rc;
}

/* Decrypted bytes, or whole records read ahead. A partial record does not
 * count once a read has waited on it (starved), or the library's loop
 * would spin until the rest arrives. */
static int conn_pending(void *p)
{
    const tls_conn *t = p;
    return SSL_pending(t->ssl) > 0 || (!t->starved && SSL_has_pending(t->ssl));
}

static const redlock_transport openssl_transport = {
    "openssl", cfg_new,    cfg_free,     conn_open,  conn_handshake,
    conn_read, conn_write, conn_pending, conn_close,
};

const redlock_transport *redlock_tls_openssl(void)
{
    return &openssl_transport;
}
