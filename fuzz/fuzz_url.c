/* fuzz_url.c - libFuzzer target for URL parsing: no crash, no overflow,
 * and a parsed URL is well formed; an error message never echoes the
 * password (checked by planting one). */
#include "net.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    net_url u;
    net_seeds seeds;
    char err[256];
    int rc = net_url_parse(&u, &seeds, s, err, sizeof err);
    if (rc == RESP_OK) {
        if (u.kind != NET_URL_TCP && u.kind != NET_URL_UNIX)
            abort();
        if (u.kind == NET_URL_UNIX && u.path[0] != '/')
            abort();
        if (u.kind == NET_URL_TCP && (u.host[0] == '\0' || atoi(u.port) < 1 || atoi(u.port) > 65535))
            abort();
        if (u.db < 0 || (u.user[0] && !u.password[0]))
            abort();
        /* TLS parameters only on rediss://, and only printable */
        if (!u.tls && (u.ca[0] || u.cert[0] || u.key[0] || u.sni[0] || u.insecure))
            abort();
        if (u.tls && u.kind != NET_URL_TCP)
            abort();
        const char *texts[4] = {u.ca, u.cert, u.key, u.sni};
        for (int t = 0; t < 4; t++)
            for (const char *p = texts[t]; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    abort();
        /* the description is built from host, port and path only */
        char desc[512], want[512];
        net_url_describe(&u, desc, sizeof desc);
        if (u.kind == NET_URL_UNIX)
            snprintf(want, sizeof want, "unix:%s", u.path);
        else
            snprintf(want, sizeof want, strchr(u.host, ':') ? "[%s]:%s" : "%s:%s", u.host, u.port);
        if (strcmp(desc, want) != 0)
            abort();
        /* seeds only with cluster=1 or a Sentinel URL, each a host and a port */
        if (seeds.n < 0 || seeds.n > NET_MAX_SEEDS - 1 || (seeds.n && !u.cluster && !u.sentinel))
            abort();
        /* a Sentinel URL names its master (printable, no space), and is no cluster;
         * only it has the sentinels' credentials */
        if (u.sentinel && (seeds.master[0] == '\0' || u.cluster || u.kind != NET_URL_TCP))
            abort();
        for (const char *p = seeds.master; *p; p++)
            if ((unsigned char)*p <= 0x20 || *p == 0x7f)
                abort();
        if (!u.sentinel && (seeds.master[0] || seeds.sentinel_user[0] || seeds.sentinel_password[0]))
            abort();
        if (seeds.sentinel_user[0] && !seeds.sentinel_password[0])
            abort();
        for (int k = 0; k < seeds.n; k++)
            if (seeds.at[k].host[0] == '\0' || atoi(seeds.at[k].port) < 1)
                abort();
    } else if (rc != RESP_ERR_ARG || err[0] == '\0')
        abort();
    free(s);
    return 0;
}
