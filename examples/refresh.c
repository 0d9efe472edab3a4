/* The seed's third example: a long job keeps its lock alive by refreshing
 * it well before the TTL runs out, and stops working the moment a refresh
 * says the lock is lost. Run: ./refresh [redis-url] [steps] */
#define _POSIX_C_SOURCE 200809L
#include "redlock.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void work_a_little(void)
{
    struct timespec ts = {0, 200 * 1000000L}; /* one step of the long job: 200 ms */
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("REDLOCK_URL");
    const char *urls[1] = {url ? url : "redis://127.0.0.1:6379"};
    int steps = argc > 2 ? atoi(argv[2]) : 10;
    redlock_client *client;
    redlock *lock;

    if (redlock_client_new(&client, urls, 1, NULL) != REDLOCK_OK) {
        fprintf(stderr, "client: %s\n", redlock_last_errstr());
        return 1;
    }
    /* a 1 s TTL, shorter than the job: refreshing keeps it */
    if (redlock_new(&lock, client, "my-lock", "client-1", 1000) != REDLOCK_OK ||
        redlock_trylock(lock) != REDLOCK_OK) {
        fprintf(stderr, "no lock: %s\n", redlock_client_errstr(client));
        redlock_client_free(client);
        return 1;
    }
    int rc = REDLOCK_OK;
    for (int i = 0; i < steps; i++) {
        work_a_little();
        /* refresh at a third of the TTL: two chances before it runs out */
        if (redlock_validity_ms(lock) < 700) {
            rc = redlock_refresh(lock);
            if (rc != REDLOCK_OK) {
                fprintf(stderr, "lock refresh failed, stopping: %s\n",
                        redlock_client_errstr(client));
                break;
            }
        }
        printf("step %d done, %lld ms of the lock left\n", i + 1,
               (long long)redlock_validity_ms(lock));
    }
    if (rc == REDLOCK_OK)
        rc = redlock_unlock(lock);
    redlock_free(lock);
    redlock_client_free(client);
    return rc == REDLOCK_OK ? 0 : 1;
}
