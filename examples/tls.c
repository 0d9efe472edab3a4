/* Take a lock on a Redis that speaks TLS (a managed Redis, or
 * redis-server --tls-port). Needs the OpenSSL transport: built by
 * `make examples TLS=openssl`, or by hand:
 *
 *   cc app.c redlock.c resp.c net.c tls_openssl.c -lssl -lcrypto
 *
 * Run: ./tls 'rediss://:PASSWORD@redis.example.com:6380'
 *      ./tls 'rediss://127.0.0.1:6380?ca=/path/ca.crt'           (your own CA)
 *      ./tls 'rediss://10.0.0.5:6380?ca=ca.crt&cert=me.crt&key=me.key'  (client certificate)
 */
#include "redlock.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("REDLOCK_URL");
    const char *urls[1] = {url ? url : "rediss://127.0.0.1:6380"};
    redlock_options opts;
    redlock_client *client;
    redlock *lock;

    redlock_options_init(&opts);
    opts.tls = redlock_tls_openssl(); /* without it, rediss:// is REDLOCK_ERR_ARG */
    if (redlock_client_new(&client, urls, 1, &opts) != REDLOCK_OK) {
        fprintf(stderr, "client: %s\n", redlock_last_errstr());
        return 1;
    }
    if (redlock_new(&lock, client, "my-resource-lock", NULL, 30000) != REDLOCK_OK) {
        fprintf(stderr, "lock: %s\n", redlock_client_errstr(client));
        redlock_client_free(client);
        return 1;
    }
    /* The connection opens here: TCP, the TLS handshake (certificate and
     * host name checked), AUTH, then the acquire. */
    int rc = redlock_trylock(lock);
    if (rc == REDLOCK_ERR_TLS) {
        /* e.g. "certificate verify failed: unable to get local issuer
         * certificate (is ca= the CA that signed the server's certificate?)" */
        fprintf(stderr, "TLS refused: %s\n", redlock_client_errstr(client));
    } else if (rc == REDLOCK_NOT_ACQUIRED) {
        printf("resource is locked by someone else\n");
    } else if (rc != REDLOCK_OK) {
        fprintf(stderr, "lock error: %s: %s\n", redlock_strerror(rc),
                redlock_client_errstr(client));
    } else {
        printf("got the lock over TLS (fencing token %llu)\n",
               (unsigned long long)redlock_fence(lock));
        rc = redlock_unlock(lock);
        if (rc != REDLOCK_OK)
            fprintf(stderr, "unlock error: %s\n", redlock_client_errstr(client));
    }
    redlock_free(lock);
    redlock_client_free(client);
    return rc == REDLOCK_OK ? 0 : rc == REDLOCK_NOT_ACQUIRED ? 2 : rc == REDLOCK_ERR_TLS ? 3 : 1;
}
