/* The seed's second example: wait up to 5 seconds for the lock. A waiter
 * is woken by the holder's release (pub/sub), not by polling.
 * Run: ./wait [redis-url] */
#include "redlock.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("REDLOCK_URL");
    const char *urls[1] = {url ? url : "redis://127.0.0.1:6379"};
    redlock_client *client;
    redlock *lock;

    if (redlock_client_new(&client, urls, 1, NULL) != REDLOCK_OK) {
        fprintf(stderr, "client: %s\n", redlock_last_errstr());
        return 1;
    }
    /* NULL value: a random 128-bit owner token */
    if (redlock_new(&lock, client, "my-resource-lock", NULL, 30000) != REDLOCK_OK) {
        fprintf(stderr, "lock: %s\n", redlock_client_errstr(client));
        redlock_client_free(client);
        return 1;
    }

    int rc = redlock_lock(lock, 5000);
    if (rc != REDLOCK_OK) {
        fprintf(stderr, "could not get the lock: %s: %s\n", redlock_strerror(rc),
                redlock_client_errstr(client));
    } else {
        printf("got the lock (fencing token %llu, %lld ms valid)\n",
               (unsigned long long)redlock_fence(lock), (long long)redlock_validity_ms(lock));
        /* ... work on the protected resource here ... */
        redlock_unlock(lock);
        printf("released\n");
    }
    redlock_free(lock);
    redlock_client_free(client);
    return rc == REDLOCK_OK ? 0 : rc == REDLOCK_NOT_ACQUIRED ? 2 : 1;
}
