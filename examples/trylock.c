/* The seed's first example: try once; if someone else holds the lock, say
 * so and leave. Run: ./trylock [redis-url] */
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
    /* name, owner value ("client-1"), 30 s TTL */
    int rc = redlock_new(&lock, client, "my-resource-lock", "client-1", 30000);
    if (rc != REDLOCK_OK) {
        fprintf(stderr, "lock: %s\n", redlock_client_errstr(client));
        redlock_client_free(client);
        return 1;
    }

    rc = redlock_trylock(lock);
    if (rc == REDLOCK_NOT_ACQUIRED) {
        printf("resource is locked by someone else\n");
    } else if (rc != REDLOCK_OK) {
        fprintf(stderr, "lock error: %s: %s\n", redlock_strerror(rc),
                redlock_client_errstr(client));
    } else {
        printf("got the lock (fencing token %llu), working on the resource...\n",
               (unsigned long long)redlock_fence(lock));
        /* ... work on the protected resource here ... */
        rc = redlock_unlock(lock);
        if (rc != REDLOCK_OK)
            fprintf(stderr, "unlock error: %s\n", redlock_client_errstr(client));
        else
            printf("released\n");
    }
    redlock_free(lock);
    redlock_client_free(client);
    return rc == REDLOCK_OK ? 0 : rc == REDLOCK_NOT_ACQUIRED ? 2 : 1;
}
