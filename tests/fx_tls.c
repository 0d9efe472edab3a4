/* fx_tls.c - test certificates made with the openssl CLI, TLS redis-server
 * processes, and redis-cli / openssl s_client as independent TLS clients. */
#define _GNU_SOURCE
/* 64-bit directory offsets for readdir on 32-bit targets: the non-LFS
 * readdir fails with EOVERFLOW where the file system hands out 64-bit
 * cookies (ext4 seen from qemu-user on a 64-bit host), and the temp dir
 * would be left behind. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
#include "fx_tls.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPENSSL_WAIT_MS 10000
#define CLIENT_WAIT_MS 5000
#define DAYS "3"

/* Extensions for each kind of certificate. Server certificates may also
 * act as TLS clients (tls-replication, tls-cluster use the same one). */
static const char config[] =
    "[req]\n"
    "distinguished_name = dn\n"
    "prompt = no\n"
    "[dn]\n"
    "CN = unused\n"
    "[ca_ext]\n"
    "basicConstraints = critical,CA:TRUE\n"
    "keyUsage = critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "[server_ext]\n"
    "basicConstraints = critical,CA:FALSE\n"
    "keyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = serverAuth,clientAuth\n"
    "subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost\n"
    "[wrong_ext]\n"
    "basicConstraints = critical,CA:FALSE\n"
    "keyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = serverAuth,clientAuth\n"
    "subjectAltName = DNS:wrong.example\n"
    "[client_ext]\n"
    "basicConstraints = critical,CA:FALSE\n"
    "keyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = clientAuth\n";

/* ---- files ------------------------------------------------------------------- */

static void path_of(const fx_tls *t, char *dst, size_t cap, const char *name)
{
    snprintf(dst, cap, "%s/%s", t->dir, name);
}

static int write_config(const fx_tls *t)
{
    char path[400];
    path_of(t, path, sizeof path, "openssl.cnf");
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t n = fwrite(config, 1, sizeof config - 1, f);
    return fclose(f) == 0 && n == sizeof config - 1 ? 0 : -1;
}

/* openssl with argv, quietly; its output goes to stderr only on failure. */
static int openssl(const char *const *argv)
{
    char out[4096];
    int rc = fx_run(out, sizeof out, OPENSSL_WAIT_MS, argv);
    if (rc != 0)
        fprintf(stderr, "fx_tls: openssl %s: exit %d\n%s\n", argv[1], rc, out);
    return rc == 0 ? 0 : -1;
}

/* The subject, as openssl wants it. */
static void subject(char *dst, size_t cap, const char *cn)
{
    snprintf(dst, cap, "/CN=%s", cn);
}

/* A new key and a self-signed certificate with the extensions of section ext. */
static int make_self(const fx_tls *t, const char *crt, const char *key, const char *cn,
                     const char *ext)
{
    char cnf[400], subj[128];
    path_of(t, cnf, sizeof cnf, "openssl.cnf");
    subject(subj, sizeof subj, cn);
    const char *argv[] = {"openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                          "-days", DAYS, "-subj", subj, "-config", cnf, "-extensions", ext,
                          NULL};
    return openssl(argv);
}

/* A new key and a certificate for it signed by ca_crt/ca_key. */
static int make_signed(const fx_tls *t, const char *crt, const char *key, const char *cn,
                       const char *ext, const char *ca_crt, const char *ca_key, int serial)
{
    char cnf[400], csr[400], subj[128], ser[16];
    path_of(t, cnf, sizeof cnf, "openssl.cnf");
    snprintf(csr, sizeof csr, "%s.csr", crt);
    subject(subj, sizeof subj, cn);
    snprintf(ser, sizeof ser, "%d", serial);
    const char *req[] = {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                         "-subj", subj, "-config", cnf, NULL};
    const char *sign[] = {"openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey",
                          ca_key, "-set_serial", ser, "-days", DAYS, "-out", crt, "-extfile",
                          cnf, "-extensions", ext, NULL};
    int rc = openssl(req) == 0 && openssl(sign) == 0 ? 0 : -1;
    unlink(csr);
    return rc;
}

static void fill_paths(fx_tls *t, char *ca_key, char *other_ca_key, size_t cap)
{
    path_of(t, t->ca, sizeof t->ca, "ca.crt");
    path_of(t, ca_key, cap, "ca.key");
    path_of(t, t->server_cert, sizeof t->server_cert, "server.crt");
    path_of(t, t->server_key, sizeof t->server_key, "server.key");
    path_of(t, t->wrong_cert, sizeof t->wrong_cert, "wrong.crt");
    path_of(t, t->wrong_key, sizeof t->wrong_key, "wrong.key");
    path_of(t, t->client_cert, sizeof t->client_cert, "client.crt");
    path_of(t, t->client_key, sizeof t->client_key, "client.key");
    path_of(t, t->other_ca, sizeof t->other_ca, "other-ca.crt");
    path_of(t, other_ca_key, cap, "other-ca.key");
    path_of(t, t->other_cert, sizeof t->other_cert, "other.crt");
    path_of(t, t->other_key, sizeof t->other_key, "other.key");
    path_of(t, t->self_cert, sizeof t->self_cert, "self.crt");
    path_of(t, t->self_key, sizeof t->self_key, "self.key");
}

int fx_tls_make(fx_tls *t)
{
    char ca_key[400], other_ca_key[400];
    memset(t, 0, sizeof *t);
    snprintf(t->dir, sizeof t->dir, "/tmp/redlock-tls-XXXXXX");
    if (!mkdtemp(t->dir)) {
        perror("fx_tls: mkdtemp");
        t->dir[0] = '\0';
        return -1;
    }
    fill_paths(t, ca_key, other_ca_key, sizeof ca_key);
    if (write_config(t) != 0 ||
        make_self(t, t->ca, ca_key, "redlock-test-ca", "ca_ext") != 0 ||
        make_signed(t, t->server_cert, t->server_key, "localhost", "server_ext", t->ca, ca_key,
                    2) != 0 ||
        make_signed(t, t->wrong_cert, t->wrong_key, "wrong.example", "wrong_ext", t->ca, ca_key,
                    3) != 0 ||
        make_signed(t, t->client_cert, t->client_key, "redlock-test-client", "client_ext", t->ca,
                    ca_key, 4) != 0 ||
        make_self(t, t->other_ca, other_ca_key, "redlock-other-ca", "ca_ext") != 0 ||
        make_signed(t, t->other_cert, t->other_key, "localhost", "server_ext", t->other_ca,
                    other_ca_key, 2) != 0 ||
        make_self(t, t->self_cert, t->self_key, "localhost", "server_ext") != 0) {
        fx_tls_free(t);
        return -1;
    }
    return 0;
}

void fx_tls_free(fx_tls *t)
{
    char path[600];
    if (!t->dir[0])
        return;
    DIR *d = opendir(t->dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", t->dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(t->dir);
    t->dir[0] = '\0';
}

/* ---- servers --------------------------------------------------------------- */

void fx_tls_opts(fx_opts *o, const fx_tls *t, int cert, const char *auth)
{
    switch (cert) {
    case FX_TLS_WRONG_NAME:
        o->tls_cert = t->wrong_cert;
        o->tls_key = t->wrong_key;
        break;
    case FX_TLS_OTHER_CA:
        o->tls_cert = t->other_cert;
        o->tls_key = t->other_key;
        break;
    case FX_TLS_SELF_SIGNED:
        o->tls_cert = t->self_cert;
        o->tls_key = t->self_key;
        break;
    default:
        o->tls_cert = t->server_cert;
        o->tls_key = t->server_key;
        break;
    }
    o->tls_ca = t->ca;
    o->tls_auth_clients = auth;
}

int fx_tls_server_start(fx_server *s, const fx_tls *t, int cert, const char *auth, int plain)
{
    fx_opts o;
    memset(&o, 0, sizeof o);
    fx_tls_opts(&o, t, cert, auth);
    o.tls_plain = plain;
    return fx_server_start(s, &o);
}

/* ---- clients ---------------------------------------------------------------- */

static const char *host_of(const fx_tls_client *c)
{
    return c && c->host ? c->host : "127.0.0.1";
}

/* argv[a..] += name value, when value is set. */
static int opt(const char **argv, int a, const char *name, const char *value)
{
    if (!value)
        return a;
    argv[a++] = name;
    argv[a++] = value;
    return a;
}

int fx_tls_cli(const fx_server *s, const fx_tls_client *c, char *out, size_t outlen,
               const char *cmd)
{
    static const fx_tls_client none;
    const char *argv[64];
    char port[16], copy[1024];
    int a = 0;
    c = c ? c : &none;
    snprintf(port, sizeof port, "%d", s->tls_port);
    argv[a++] = "redis-cli";
    argv[a++] = "--tls";
    a = opt(argv, a, "-h", host_of(c));
    a = opt(argv, a, "-p", port);
    a = opt(argv, a, "--cacert", c->ca);
    a = opt(argv, a, "--cert", c->cert);
    a = opt(argv, a, "--key", c->key);
    a = opt(argv, a, "--sni", c->sni);
    if (c->insecure)
        argv[a++] = "--insecure";
    snprintf(copy, sizeof copy, "%s", cmd);
    for (char *save = NULL, *w = strtok_r(copy, " ", &save); w && a < 63;
         w = strtok_r(NULL, " ", &save))
        argv[a++] = w;
    argv[a] = NULL;
    return fx_run(out, outlen, CLIENT_WAIT_MS, argv);
}

static int is_ip(const char *name)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int fx_tls_handshake(const fx_server *s, const fx_tls_client *c, const char *name, char *out,
                     size_t outlen)
{
    static const fx_tls_client none;
    const char *argv[32];
    char addr[300];
    int a = 0;
    c = c ? c : &none;
    const char *host = host_of(c);
    snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, s->tls_port);
    argv[a++] = "openssl";
    argv[a++] = "s_client";
    argv[a++] = "-brief";
    a = opt(argv, a, "-connect", addr);
    a = opt(argv, a, "-CAfile", c->ca);
    a = opt(argv, a, "-cert", c->cert);
    a = opt(argv, a, "-key", c->key);
    a = opt(argv, a, "-servername", c->sni);
    if (name)
        a = opt(argv, a, is_ip(name) ? "-verify_ip" : "-verify_hostname", name);
    if (!c->insecure)
        argv[a++] = "-verify_return_error";
    argv[a] = NULL;
    int rc = fx_run(out, outlen, CLIENT_WAIT_MS, argv);
    if (rc < 0)
        return -1;
    return rc == 0 && strstr(out, "CONNECTION ESTABLISHED") ? 0 : 1;
}

/* ---- URLs ----------------------------------------------------------------- */

/* Append s if it fits; o counts what was asked for, so o >= cap means cut. */
static void put(char *out, size_t cap, size_t *o, const char *s)
{
    size_t n = strlen(s);
    if (*o + n < cap)
        memcpy(out + *o, s, n + 1);
    *o += n;
}

/* &name=value with value percent-encoded outside unreserved characters and '/'. */
static void param(char *out, size_t cap, size_t *o, const char *name, const char *value)
{
    char enc[4];
    if (!value)
        return;
    put(out, cap, o, strchr(out, '?') ? "&" : "?");
    put(out, cap, o, name);
    put(out, cap, o, "=");
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~/", *p))
            snprintf(enc, sizeof enc, "%c", *p);
        else
            snprintf(enc, sizeof enc, "%%%02X", *p);
        put(out, cap, o, enc);
    }
}

int fx_tls_url(char *out, size_t outlen, const fx_server *s, const fx_tls_client *c)
{
    static const fx_tls_client none;
    char head[300];
    size_t o = 0;
    c = c ? c : &none;
    const char *host = host_of(c);
    snprintf(head, sizeof head, strchr(host, ':') ? "rediss://[%s]:%d" : "rediss://%s:%d", host,
             s->tls_port);
    if (outlen == 0)
        return -1;
    out[0] = '\0';
    put(out, outlen, &o, head);
    param(out, outlen, &o, "ca", c->ca);
    param(out, outlen, &o, "cert", c->cert);
    param(out, outlen, &o, "key", c->key);
    param(out, outlen, &o, "sni", c->sni);
    param(out, outlen, &o, "insecure", c->insecure ? "1" : NULL);
    return o < outlen ? 0 : -1;
}
