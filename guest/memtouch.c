/*
 * memtouch — working-set workload for the agile guest.
 *
 * Allocates and touches a large area, then hammers a smaller "hot" region of
 * it as fast as it can with 64-byte reads and writes.  The host sees a
 * working set of hot_mib with a known write share, which is what live
 * migration's dirty-page tracking has to keep up with.  Optionally the hot
 * region jumps to a fresh, non-overlapping part of the area every phase_s
 * seconds, to exercise working-set changes.
 *
 * Parameters are argv words key=value (see README.md); /init passes the
 * kernel command line's memtouch.* keys with the prefix stripped.
 */
#define _GNU_SOURCE
#include "guest_common.h"

#include <math.h>
#include <sys/mman.h>

#define PAGES_PER_MIB (1024 * 1024 / GUEST_PAGE_SIZE)
#define WORDS_PER_PAGE (GUEST_PAGE_SIZE / sizeof(uint64_t))
#define WORDS_PER_LINE 8 /* one 64-byte cache line */
#define LINES_PER_PAGE (WORDS_PER_PAGE / WORDS_PER_LINE)
/* vDSO clock reads are cheap but not free under TCG: look at the clock once
 * per batch of operations. */
#define OPS_PER_CLOCK_CHECK 1024
#define ZIPF_S 0.99

enum pattern { PATTERN_UNIFORM, PATTERN_ZIPF };

struct config {
    uint64_t size_mib;
    uint64_t hot_mib;
    uint64_t write_pct;
    enum pattern pattern;
    uint64_t phase_s; /* 0 = the hot set never moves */
    uint64_t seed;
    uint64_t duration_s; /* 0 = run forever */
};

struct state {
    uint64_t *area;
    size_t total_pages;
    size_t hot_pages;
    size_t regions; /* how many disjoint hot regions fit in the area */
    uint64_t *hot;  /* first word of the current hot region */
    uint64_t phase;
    double *zipf_cdf; /* NULL for the uniform pattern */
    uint64_t rng;
    uint64_t acc; /* everything read flows in here, so reads stay real */
};

/* Written once at exit so the compiler must keep every read feeding acc. */
static volatile uint64_t sink;

/* ---- page choice -------------------------------------------------------- */

/* Rank r (0 = hottest) has weight 1/(r+1)^s; a table lookup keeps the
 * per-operation cost at one binary search. */
static double *build_zipf_cdf(size_t n)
{
    double *cdf = malloc(n * sizeof *cdf);
    if (cdf == NULL)
        return NULL;
    double sum = 0;
    for (size_t r = 0; r < n; r++) {
        sum += 1.0 / pow((double)(r + 1), ZIPF_S);
        cdf[r] = sum;
    }
    for (size_t r = 0; r < n; r++)
        cdf[r] /= sum;
    cdf[n - 1] = 1.0; /* rounding must not leave a gap at the top */
    return cdf;
}

/* Smallest rank whose cumulative probability exceeds u. */
static size_t zipf_rank(const double *cdf, size_t n, double u)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Rank r maps to page r of the hot region: where the hottest pages sit in
 * guest-virtual space says nothing about guest-physical placement anyway. */
static size_t pick_hot_page(struct state *s, uint64_t r)
{
    if (s->zipf_cdf != NULL)
        return zipf_rank(s->zipf_cdf, s->hot_pages, rng_unit(&s->rng));
    return (size_t)(((r >> 32) * (uint64_t)s->hot_pages) >> 32);
}

/* ---- operations --------------------------------------------------------- */

static void set_phase(struct state *s, uint64_t phase)
{
    s->phase = phase;
    size_t region = (size_t)(phase % s->regions);
    s->hot = s->area + region * s->hot_pages * WORDS_PER_PAGE;
}

/* One random 64-byte read or write in the hot set.  A single random word
 * supplies the page (uniform), the line and the read/write choice. */
static void one_op(struct state *s, uint64_t write_pct)
{
    uint64_t r = rng_next(&s->rng);
    size_t page = pick_hot_page(s, r);
    size_t line = (size_t)(r & (LINES_PER_PAGE - 1));
    uint64_t *w = s->hot + page * WORDS_PER_PAGE + line * WORDS_PER_LINE;
    bool is_write = (((r >> 8) & 0xffff) * 100 >> 16) < write_pct;

    if (is_write) {
        for (size_t k = 0; k < WORDS_PER_LINE; k++)
            w[k] = s->acc + k;
    } else {
        uint64_t sum = 0;
        for (size_t k = 0; k < WORDS_PER_LINE; k++)
            sum += w[k];
        s->acc = s->acc * 31 + sum;
    }
}

/* ---- setup -------------------------------------------------------------- */

static bool parse_pattern(const char *word, struct config *cfg, bool *matched)
{
    static const char key[] = "pattern=";
    *matched = strncmp(word, key, sizeof key - 1) == 0;
    if (!*matched)
        return true;
    const char *v = word + sizeof key - 1;
    if (strcmp(v, "uniform") == 0)
        cfg->pattern = PATTERN_UNIFORM;
    else if (strcmp(v, "zipf") == 0)
        cfg->pattern = PATTERN_ZIPF;
    else {
        fprintf(stderr, "memtouch: pattern must be uniform or zipf, got '%s'\n", v);
        return false;
    }
    return true;
}

static bool parse_args(int argc, char **argv, struct config *cfg)
{
    const struct param params[] = {
        {"size_mib", &cfg->size_mib, 1, 1u << 20},
        {"hot_mib", &cfg->hot_mib, 1, 1u << 20},
        {"write_pct", &cfg->write_pct, 0, 100},
        {"phase_s", &cfg->phase_s, 0, UINT64_MAX / NS_PER_SEC},
        {"seed", &cfg->seed, 0, UINT64_MAX},
        {"duration_s", &cfg->duration_s, 0, UINT64_MAX / NS_PER_SEC},
    };
    for (int i = 1; i < argc; i++) {
        bool matched;
        if (!parse_pattern(argv[i], cfg, &matched))
            return false;
        if (!matched &&
            !apply_param("memtouch", params, sizeof params / sizeof params[0], argv[i]))
            return false;
    }
    if (cfg->hot_mib > cfg->size_mib) {
        fprintf(stderr, "memtouch: hot_mib (%" PRIu64 ") exceeds size_mib (%" PRIu64 ")\n",
                cfg->hot_mib, cfg->size_mib);
        return false;
    }
    return true;
}

static bool init_state(struct state *s, const struct config *cfg)
{
    memset(s, 0, sizeof *s);
    s->total_pages = (size_t)(cfg->size_mib * PAGES_PER_MIB);
    s->hot_pages = (size_t)(cfg->hot_mib * PAGES_PER_MIB);
    s->regions = s->total_pages / s->hot_pages;
    s->rng = mix64(cfg->seed ^ 0x6d656d746f756368ull);
    void *area = mmap(NULL, s->total_pages * GUEST_PAGE_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        perror("memtouch: mmap");
        return false;
    }
    s->area = area;
    if (cfg->pattern == PATTERN_ZIPF && (s->zipf_cdf = build_zipf_cdf(s->hot_pages)) == NULL) {
        perror("memtouch: zipf table");
        return false;
    }
    set_phase(s, 0);
    return true;
}

/* Writes every word with page-specific, non-zero data: the area must really
 * be allocated, and zero pages would let migration skip them as "empty". */
static void fill(struct state *s)
{
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < s->total_pages; i++) {
        uint64_t *w = s->area + i * WORDS_PER_PAGE;
        uint64_t key = mix64(i + 1);
        for (size_t j = 0; j < WORDS_PER_PAGE; j++)
            w[j] = key + j;
    }
    printf("memtouch: filled pages=%zu in %" PRIu64 " ms\n", s->total_pages,
           (now_ns() - t0) / 1000000);
}

/* ---- main loop ---------------------------------------------------------- */

static uint64_t phase_at(const struct config *cfg, uint64_t elapsed_ns)
{
    return cfg->phase_s ? elapsed_ns / (cfg->phase_s * NS_PER_SEC) : 0;
}

static void run(struct state *s, const struct config *cfg)
{
    uint64_t start = now_ns();
    uint64_t interval_start = start;
    uint64_t interval_ops = 0;
    /* Cumulative, so a reader that misses lines (or reads the console of a
     * VM that moved) still gets the work done between two reads by a
     * difference; per-second rates cannot be summed back across gaps. */
    uint64_t total_ops = 0;
    /* Progress ticks are the clock checks, one per batch (well under a
     * millisecond at normal speed): the longest time between two of them in
     * the second is the longest stall the workload saw. */
    uint64_t last_tick = start;
    uint64_t max_gap_ns = 0;

    for (;;) {
        for (int n = 0; n < OPS_PER_CLOCK_CHECK; n++)
            one_op(s, cfg->write_pct);
        interval_ops += OPS_PER_CLOCK_CHECK;
        total_ops += OPS_PER_CLOCK_CHECK;

        uint64_t now = now_ns();
        if (now - last_tick > max_gap_ns)
            max_gap_ns = now - last_tick;
        last_tick = now;
        if (now - interval_start >= NS_PER_SEC) {
            /* Normalised to one second: the batch granularity (and any VM
             * pause) makes the interval a little longer than a second. */
            uint64_t per_s = (uint64_t)((unsigned __int128)interval_ops * NS_PER_SEC /
                                        (now - interval_start));
            /* t_ms: the guest's clock, for a reader that compares it with
             * its own: under TCG the guest's clock stands still while QEMU
             * has the VM stopped, so such a pause is in no max_gap_ms. */
            printf("memtouch: ops/s=%" PRIu64 " hot_mib=%" PRIu64 " phase=%" PRIu64
                   " write_pct=%" PRIu64 " ops=%" PRIu64 " max_gap_ms=%" PRIu64 " t_ms=%" PRIu64 "\n",
                   per_s, cfg->hot_mib, s->phase, cfg->write_pct, total_ops,
                   max_gap_ns / 1000000, (now - start) / 1000000);
            interval_start = now;
            interval_ops = 0;
            max_gap_ns = 0;
            /* The printf itself (a slow serial port under TCG) is not a stall
             * of the workload: start the next gap after it. */
            last_tick = now_ns();
        }
        /* After the status line, so each line's phase is the one its ops ran in. */
        uint64_t phase = phase_at(cfg, now - start);
        if (phase != s->phase) {
            set_phase(s, phase);
            printf("memtouch: phase=%" PRIu64 " hot_offset_mib=%" PRIu64 "\n", phase,
                   (uint64_t)((size_t)(s->hot - s->area) / WORDS_PER_PAGE / PAGES_PER_MIB));
        }
        if (cfg->duration_s && now - start >= cfg->duration_s * NS_PER_SEC)
            return;
    }
}

int main(int argc, char **argv)
{
    line_buffer_output();
    struct config cfg = {.size_mib = 256, .hot_mib = 32, .write_pct = 50, .seed = 1};
    if (!parse_args(argc, argv, &cfg))
        return 2;

    struct state s;
    if (!init_state(&s, &cfg))
        return 3;
    printf("memtouch: config size_mib=%" PRIu64 " hot_mib=%" PRIu64 " write_pct=%" PRIu64
           " pattern=%s phase_s=%" PRIu64 " seed=%" PRIu64 " regions=%zu\n",
           cfg.size_mib, cfg.hot_mib, cfg.write_pct,
           cfg.pattern == PATTERN_ZIPF ? "zipf" : "uniform", cfg.phase_s, cfg.seed,
           s.regions);
    fill(&s);
    run(&s, &cfg);
    sink = s.acc;
    return 0;
}
