/* main.c - a program that uses redlock-c the way a consumer does, through
 * the installed (or vendored) header and library only: one lock cycle
 * against the Redis at argv[1]. tests/packaging.sh builds it with CMake's
 * add_subdirectory and find_package and with pkg-config. */
#include <redlock.h>

#include <inttypes.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s redis://HOST:PORT\n", argv[0]);
        return 2;
    }
    redlock_client *c = NULL;
    redlock *l = NULL;
    const char *urls[1] = {argv[1]};
    if (redlock_client_new(&c, urls, 1, NULL) != REDLOCK_OK) {
        fprintf(stderr, "consumer: %s\n", redlock_last_errstr());
        return 1;
    }
    int rc = redlock_new(&l, c, "packaging-consumer", NULL, 5000);
    if (rc == REDLOCK_OK)
        rc = redlock_trylock(l);
    uint64_t fence = redlock_fence(l);
    if (rc == REDLOCK_OK)
        rc = redlock_unlock(l);
    if (rc != REDLOCK_OK || fence == 0)
        fprintf(stderr, "consumer: %s: %s\n", redlock_strerror(rc), redlock_client_errstr(c));
    else
        printf("consumer (redlock.h %s): lock cycle on %s, fence %" PRIu64 "\n", REDLOCK_VERSION,
               argv[1], fence);
    redlock_free(l);
    redlock_client_free(c);
    return rc == REDLOCK_OK && fence > 0 ? 0 : 1;
}
