/* qemu_so_error.c - preloaded into the suites by make cross ARCH=mips only.
 *
 * qemu-user 7.2 (Debian 12) passes getsockopt(SO_ERROR) through from the
 * host kernel without translating the value into the target's errno
 * numbers. x86-64, ARM, RISC-V and s390x share Linux's generic numbers, so
 * nothing shows; MIPS has its own (ECONNREFUSED is 146 there, 111 on the
 * host), and a refused non-blocking connect reads as "Unknown error 111".
 * On MIPS hardware the kernel hands out MIPS numbers. This shim translates
 * the errors a connect can report, so the suites see what MIPS hardware
 * would; the library is not changed for an emulator's bug.
 *
 * When loaded it puts back the LD_PRELOAD the caller had (make cross saves
 * it in REDLOCK_SAVED_PRELOAD; a test preloads libfaketime into host
 * programs that way), so the host programs the suites start never see a
 * MIPS library in it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

/* Linux's generic errno numbers (the host's) and the target's names. */
static const struct {
    int host, target;
} errnos[] = {
    {99, EADDRNOTAVAIL}, {101, ENETUNREACH}, {103, ECONNABORTED}, {104, ECONNRESET},
    {110, ETIMEDOUT},    {111, ECONNREFUSED}, {113, EHOSTUNREACH}, {114, EALREADY},
    {115, EINPROGRESS},  {32, EPIPE},
};

typedef int (*getsockopt_fn)(int, int, int, void *, socklen_t *);

int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    static getsockopt_fn real;
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "getsockopt");
    int rc = real(fd, level, name, val, len);
    if (rc == 0 && level == SOL_SOCKET && name == SO_ERROR && *len >= sizeof(int)) {
        int *e = val;
        for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
            if (*e == errnos[i].host) {
                *e = errnos[i].target;
                break;
            }
    }
    return rc;
}

__attribute__((constructor)) static void forget_preload(void)
{
    const char *saved = getenv("REDLOCK_SAVED_PRELOAD");
    if (saved && *saved)
        setenv("LD_PRELOAD", saved, 1);
    else
        unsetenv("LD_PRELOAD");
    unsetenv("REDLOCK_SAVED_PRELOAD");
}
