/* sha1check.c - run by `make`: the SHA1 built into redlock.c for each
 * script is the SHA1 of its text, as Redis computes it for EVALSHA. A stale
 * one would not fail any call; it would cost an EVAL (the whole script sent
 * and compiled) on every call. And the shipped function library
 * (functions/redlock_vN.lua, what administrators load) is the text the
 * library builds from the same scripts. No Redis needed. Includes scripts.h,
 * where the texts and the table live.
 *
 *   sha1check            check both (from the source tree's top)
 *   sha1check --write    write functions/redlock_vN.lua from scripts.h
 */
#include "../scripts.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sha1 {
    uint32_t h[5];
    uint64_t len;
    unsigned char block[64];
    size_t used;
} sha1;

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(sha1 *s, const unsigned char *p)
{
    uint32_t w[80], a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20)
            f = (b & c) | (~b & d), k = 0x5a827999;
        else if (i < 40)
            f = b ^ c ^ d, k = 0x6ed9eba1;
        else if (i < 60)
            f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
        else
            f = b ^ c ^ d, k = 0xca62c1d6;
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e;
}

static void sha1_hex(const char *text, char out[41])
{
    sha1 s = {{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0}, 0, {0}, 0};
    size_t n = strlen(text);
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < n; i++) {
        s.block[s.used++] = p[i];
        if (s.used == 64) {
            sha1_block(&s, s.block);
            s.used = 0;
        }
    }
    uint64_t bits = (uint64_t)n * 8;
    s.block[s.used++] = 0x80;
    if (s.used > 56) {
        memset(s.block + s.used, 0, 64 - s.used);
        sha1_block(&s, s.block);
        s.used = 0;
    }
    memset(s.block + s.used, 0, 56 - s.used);
    for (int i = 0; i < 8; i++)
        s.block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha1_block(&s, s.block);
    for (int i = 0; i < 5; i++)
        snprintf(out + 8 * i, 9, "%08x", s.h[i]);
}

/* The shipped library file equals library_text(); --write makes it so. */
static int check_library(int write)
{
    size_t n = library_text(NULL, 0);
    char *text = malloc(n + 1), *file = malloc(n + 2);
    int bad = 1;
    if (!text || !file)
        goto out;
    library_text(text, n + 1);
    FILE *f = fopen(FUNCTIONS_FILE, write ? "w" : "r");
    if (!f) {
        fprintf(stderr, "sha1check: cannot open %s: %s\n", FUNCTIONS_FILE, strerror(errno));
        goto out;
    }
    if (write) {
        bad = fwrite(text, 1, n, f) != n;
        bad |= fclose(f) != 0;
        goto out;
    }
    size_t got = fread(file, 1, n + 1, f);
    fclose(f);
    bad = got != n || memcmp(file, text, n) != 0;
    if (bad)
        fprintf(stderr,
                "sha1check: %s is not the library built into redlock.c (scripts.h). If a script changed, "
                "give the library a new version (FUNCTIONS_VERSION: a server keeps the code it "
                "loaded under a name), then run `make functions-file`.\n",
                FUNCTIONS_FILE);
out:
    free(text);
    free(file);
    return bad;
}

int main(int argc, char **argv)
{
    char want[41];
    int bad = 0;
    if (argc == 2 && strcmp(argv[1], "--write") == 0)
        return check_library(1);
    sha1_hex("abc", want); /* FIPS 180 test vector: the checker checks itself */
    if (strcmp(want, "a9993e364706816aba3e25717850c26c9cd0d89d") != 0) {
        fprintf(stderr, "sha1check: broken SHA-1 (%s)\n", want);
        return 2;
    }
    for (int i = 0; i < S_COUNT; i++) {
        if (!functions[i].name || !functions[i].local) {
            fprintf(stderr, "sha1check: script %s has no function in the library table\n",
                    scripts[i].name);
            return 1;
        }
        sha1_hex(scripts[i].lua, want);
        if (strcmp(want, scripts[i].sha) != 0) {
            fprintf(stderr, "sha1check: script %s: built-in SHA1 %s, its text hashes to %s\n",
                    scripts[i].name, scripts[i].sha, want);
            bad = 1;
        }
    }
    return bad | check_library(0);
}
