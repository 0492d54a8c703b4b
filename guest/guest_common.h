/*
 * Helpers shared by the agile guest workloads (memverify, memtouch).
 *
 * Everything is static inline so each program stays a single translation
 * unit that builds with one gcc call and no library.
 */
#ifndef AGILE_GUEST_COMMON_H
#define AGILE_GUEST_COMMON_H

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GUEST_PAGE_SIZE 4096u
#define NS_PER_SEC 1000000000ull

/* ---- clock ------------------------------------------------------------ */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Absolute sleep, so pacing does not drift by the time spent working. */
static inline void sleep_until_ns(uint64_t deadline)
{
    struct timespec ts = {
        .tv_sec = (time_t)(deadline / NS_PER_SEC),
        .tv_nsec = (long)(deadline % NS_PER_SEC),
    };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* ---- random numbers ----------------------------------------------------- */

/* splitmix64: tiny, fast, good enough statistically, and a pure function of
 * its input, which memverify needs to recompute page bodies. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rng_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ull;
    return mix64(*state);
}

/* Uniform in [0, n) without a division (Lemire's multiply-shift; the tiny
 * bias for n << 2^32 does not matter for a workload generator). */
static inline uint64_t rng_below(uint64_t *state, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(state) * n) >> 64);
}

/* Uniform double in [0, 1). */
static inline double rng_unit(uint64_t *state)
{
    return (double)(rng_next(state) >> 11) * 0x1.0p-53;
}

/* ---- parameters --------------------------------------------------------- */

/*
 * The programs take their parameters as argv words "key=value"; /init strips
 * the "memverify." / "memtouch." prefix from the kernel command line before
 * passing them, so the same binary also runs on a host for quick checks.
 */
struct param {
    const char *key;
    uint64_t *value;
    uint64_t min;
    uint64_t max;
};

static inline bool parse_u64(const char *s, uint64_t *out)
{
    if (*s == '\0' || *s == '-')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Returns false (after printing why) if word is not "key=value" for one of
 * the params or its value is out of range. */
static inline bool apply_param(const char *prog, const struct param *params,
                               size_t nparams, const char *word)
{
    const char *eq = strchr(word, '=');
    if (eq == NULL) {
        fprintf(stderr, "%s: expected key=value, got '%s'\n", prog, word);
        return false;
    }
    size_t keylen = (size_t)(eq - word);
    for (size_t i = 0; i < nparams; i++) {
        const struct param *p = &params[i];
        if (strlen(p->key) != keylen || strncmp(p->key, word, keylen) != 0)
            continue;
        uint64_t v;
        if (!parse_u64(eq + 1, &v) || v < p->min || v > p->max) {
            fprintf(stderr, "%s: %s must be an integer in [%" PRIu64 ", %" PRIu64
                    "], got '%s'\n", prog, p->key, p->min, p->max, eq + 1);
            return false;
        }
        *p->value = v;
        return true;
    }
    fprintf(stderr, "%s: unknown key '%.*s'\n", prog, (int)keylen, word);
    return false;
}

/* Every status line must reach the serial console as soon as it is printed,
 * even when stdout is a pipe or file (host runs, tests). */
static inline void line_buffer_output(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IOLBF, 0);
}

#endif /* AGILE_GUEST_COMMON_H */
