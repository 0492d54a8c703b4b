/*
 * memverify — memory integrity workload for the agile guest.
 *
 * Fills an anonymous mapping with self-checking 4 KiB pages, then keeps
 * rewriting random pages (each rewrite bumps that page's generation) while a
 * sweep verifies every page against its own checksum and against the
 * generation this process remembers writing.  A page that migrated with old
 * contents (a lost write) still has a valid checksum, so the generation check
 * is what catches it ("stale").
 *
 * Parameters are argv words key=value (see README.md); /init passes the
 * kernel command line's memverify.* keys with the prefix stripped.
 */
#define _GNU_SOURCE
#include "guest_common.h"

#include <sys/mman.h>

#define PAGE_MAGIC 0x4147494c454d5631ull /* "AGILEMV1" */
#define WORDS_PER_PAGE (GUEST_PAGE_SIZE / sizeof(uint64_t))

/* Header words; the body is everything after them. */
enum { H_MAGIC, H_INDEX, H_GEN, H_CHECKSUM, HEADER_WORDS };

/* Pacing granularity: small enough that work is spread evenly over the
 * second, large enough that sleeping costs nothing on a slow TCG CPU. */
#define TICK_NS (10ull * 1000 * 1000)
/* Page operations between clock reads while working through a batch. */
#define CLOCK_CHECK_OPS 64
#define SELFTEST_DELAY_NS (3ull * NS_PER_SEC)
#define NO_PAGE SIZE_MAX

struct config {
    uint64_t size_mib;
    uint64_t rate;        /* page rewrites per second */
    uint64_t verify_rate; /* page verifications per second; 0 = auto */
    uint64_t seed;
    uint64_t selftest_corrupt;
    uint64_t duration_s; /* 0 = run forever */
};

struct state {
    uint64_t *area;
    size_t npages;
    uint32_t *gen_of; /* generation last written to each page */
    uint64_t seed;
    uint64_t rng;
    uint64_t rewrites; /* global generation counter: rewrites so far */
    uint64_t errors;   /* bad page detections so far */
    uint64_t verified; /* pages verified so far (rewrites + verified = ops) */
    size_t cursor;     /* next page the sweep verifies */
    uint64_t sweeps;
    uint64_t sweep_start_ns;
    size_t pinned; /* selftest page the rewriter must not heal unseen */
};

/* Converts a per-second rate into "operations due now", forgiving debt older
 * than one second so a stall (slow CPU, VM paused during migration) does not
 * turn into a burst afterwards. */
struct pacer {
    uint64_t rate;
    uint64_t start_ns;
    uint64_t done;
};

static const char *const reason_names[] = {
    "ok", "zero", "magic", "index", "checksum", "stale",
};
enum page_status { PAGE_OK, BAD_ZERO, BAD_MAGIC, BAD_INDEX, BAD_CHECKSUM, BAD_STALE };

/* ---- page format -------------------------------------------------------- */

static uint64_t *page_words(const struct state *s, size_t index)
{
    return s->area + index * WORDS_PER_PAGE;
}

/* Seed of the body stream: a pure function of (seed, index, gen) so any
 * page's expected body can be recomputed. */
static uint64_t body_key(uint64_t seed, uint64_t index, uint64_t gen)
{
    return mix64(mix64(seed ^ mix64(index)) ^ gen);
}

/*
 * Covers magic, index, gen and the whole body.  Each step is a bijection of
 * the running hash for a fixed word and of the word for a fixed hash, so any
 * single changed word always changes the result; the xor-shift carries high
 * bits down so that flips in the top bit of two words cannot cancel.
 */
static uint64_t page_checksum(const uint64_t *w)
{
    uint64_t h = 0x6a09e667f3bcc908ull;
    for (size_t j = 0; j < WORDS_PER_PAGE; j++) {
        if (j == H_CHECKSUM)
            continue;
        h = (h ^ w[j]) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 32;
    }
    return mix64(h);
}

static void write_page(struct state *s, size_t index, uint64_t gen)
{
    uint64_t *w = page_words(s, index);
    uint64_t stream = body_key(s->seed, index, gen);
    for (size_t j = HEADER_WORDS; j < WORDS_PER_PAGE; j++)
        w[j] = rng_next(&stream);
    w[H_MAGIC] = PAGE_MAGIC;
    w[H_INDEX] = index;
    w[H_GEN] = gen;
    w[H_CHECKSUM] = page_checksum(w);
}

static bool page_is_zero(const uint64_t *w)
{
    for (size_t j = 0; j < WORDS_PER_PAGE; j++)
        if (w[j] != 0)
            return false;
    return true;
}

/* Order matters: a page that is not ours at all (zero/magic/index) says more
 * than a checksum mismatch, and only an intact page can be judged stale. */
static enum page_status check_page(const struct state *s, size_t index)
{
    const uint64_t *w = page_words(s, index);
    if (w[H_MAGIC] != PAGE_MAGIC)
        return page_is_zero(w) ? BAD_ZERO : BAD_MAGIC;
    if (w[H_INDEX] != index)
        return BAD_INDEX;
    if (w[H_CHECKSUM] != page_checksum(w))
        return BAD_CHECKSUM;
    if (w[H_GEN] != s->gen_of[index])
        return BAD_STALE;
    return PAGE_OK;
}

/* ---- workload steps ----------------------------------------------------- */

static void rewrite_page(struct state *s, size_t index)
{
    s->gen_of[index]++;
    write_page(s, index, s->gen_of[index]);
    s->rewrites++;
}

static void report_bad(const struct state *s, size_t index, enum page_status st)
{
    const uint64_t *w = page_words(s, index);
    printf("memverify: BAD page=%zu reason=%s want_gen=%" PRIu32 " got_gen=%" PRIu64
           " got_index=%" PRIu64 " got_magic=0x%016" PRIx64 "\n",
           index, reason_names[st], s->gen_of[index], w[H_GEN], w[H_INDEX],
           w[H_MAGIC]);
}

static void rewrite_random_page(struct state *s)
{
    size_t index = (size_t)rng_below(&s->rng, s->npages);
    /* Healing the selftest's page before the sweep sees it would make the
     * selftest flaky; skipping one rewrite instead changes nothing else. */
    if (index != s->pinned)
        rewrite_page(s, index);
}

/* A bad page is reported once and then rewritten, so `errors` counts
 * corruption events rather than growing on every sweep over the same page. */
static void verify_next_page(struct state *s)
{
    size_t index = s->cursor;
    enum page_status st = check_page(s, index);
    s->verified++;
    if (st != PAGE_OK) {
        s->errors++;
        report_bad(s, index, st);
        rewrite_page(s, index);
    }
    if (index == s->pinned)
        s->pinned = NO_PAGE;

    if (++s->cursor == s->npages) {
        uint64_t now = now_ns(); /* once per sweep: cheap, and exact */
        s->cursor = 0;
        s->sweeps++;
        printf("memverify: sweep=%" PRIu64 " pages=%zu ms=%" PRIu64 "\n", s->sweeps,
               s->npages, (now - s->sweep_start_ns) / 1000000);
        s->sweep_start_ns = now;
    }
}

/* Flips one bit in the body of the page the sweep checks next, so the
 * detection is quick and must come from the checksum. */
static void selftest_corrupt(struct state *s)
{
    size_t index = s->cursor;
    uint64_t *w = page_words(s, index);
    w[HEADER_WORDS + (index % (WORDS_PER_PAGE - HEADER_WORDS))] ^= 1ull << 17;
    s->pinned = index;
    printf("memverify: selftest corrupting page=%zu\n", index);
}

static void print_status(const struct state *s)
{
    printf("memverify: %s pages=%zu gen=%" PRIu64 " errors=%" PRIu64 " ops=%" PRIu64 "\n",
           s->errors == 0 ? "ok" : "FAIL", s->npages, s->rewrites, s->errors,
           s->rewrites + s->verified);
}

/* ---- pacing ------------------------------------------------------------- */

static uint64_t pacer_due(struct pacer *p, uint64_t now)
{
    uint64_t target =
        (uint64_t)((unsigned __int128)(now - p->start_ns) * p->rate / NS_PER_SEC);
    if (target > p->done + p->rate)
        p->done = target - p->rate;
    return target - p->done;
}

/* True when the kind with done/want is no further ahead than the other. */
static bool behind_or_even(uint64_t done, uint64_t want, uint64_t other_done,
                           uint64_t other_want)
{
    return done < want &&
           (other_done >= other_want || done * other_want <= other_done * want);
}

/*
 * Runs the rewrites and verifications due now, interleaved in proportion so
 * both rates degrade together when the CPU cannot keep up, and for at most
 * one tick so the status line stays on time; what is left stays due.
 */
static void run_due_work(struct state *s, struct pacer *writes, struct pacer *verifies)
{
    uint64_t start = now_ns();
    uint64_t want_w = pacer_due(writes, start), want_v = pacer_due(verifies, start);
    uint64_t did_w = 0, did_v = 0;

    while (did_w < want_w || did_v < want_v) {
        if (behind_or_even(did_w, want_w, did_v, want_v)) {
            rewrite_random_page(s);
            did_w++;
        } else {
            verify_next_page(s);
            did_v++;
        }
        if ((did_w + did_v) % CLOCK_CHECK_OPS == 0 && now_ns() - start >= TICK_NS)
            break;
    }
    writes->done += did_w;
    verifies->done += did_v;
}

/* ---- setup -------------------------------------------------------------- */

static bool parse_args(int argc, char **argv, struct config *cfg)
{
    const struct param params[] = {
        {"size_mib", &cfg->size_mib, 1, 1u << 20},
        {"rate", &cfg->rate, 0, 100000000},
        {"verify_rate", &cfg->verify_rate, 0, 100000000},
        {"seed", &cfg->seed, 0, UINT64_MAX},
        {"selftest_corrupt", &cfg->selftest_corrupt, 0, 1},
        {"duration_s", &cfg->duration_s, 0, UINT64_MAX / NS_PER_SEC},
    };
    for (int i = 1; i < argc; i++)
        if (!apply_param("memverify", params, sizeof params / sizeof params[0], argv[i]))
            return false;
    return true;
}

static bool init_state(struct state *s, const struct config *cfg)
{
    memset(s, 0, sizeof *s);
    s->npages = (size_t)(cfg->size_mib * (1024 * 1024 / GUEST_PAGE_SIZE));
    s->seed = cfg->seed;
    s->rng = mix64(cfg->seed ^ 0x6d656d7665726679ull);
    s->pinned = NO_PAGE;
    s->gen_of = calloc(s->npages, sizeof *s->gen_of);
    void *area = mmap(NULL, s->npages * GUEST_PAGE_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->gen_of == NULL || area == MAP_FAILED) {
        perror("memverify: allocating memory");
        return false;
    }
    s->area = area;
    return true;
}

static void fill(struct state *s)
{
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < s->npages; i++)
        write_page(s, i, s->gen_of[i]);
    printf("memverify: filled pages=%zu in %" PRIu64 " ms\n", s->npages,
           (now_ns() - t0) / 1000000);
}

/* ---- main loop ---------------------------------------------------------- */

static int run(struct state *s, const struct config *cfg)
{
    uint64_t start = now_ns();
    struct pacer writes = {.rate = cfg->rate, .start_ns = start};
    struct pacer verifies = {.rate = cfg->verify_rate, .start_ns = start};
    uint64_t next_status = start + NS_PER_SEC;
    uint64_t next_tick = start;
    bool selftest_pending = cfg->selftest_corrupt != 0;
    s->sweep_start_ns = start;

    for (;;) {
        uint64_t now = now_ns();
        if (selftest_pending && now - start >= SELFTEST_DELAY_NS) {
            selftest_corrupt(s);
            selftest_pending = false;
        }
        run_due_work(s, &writes, &verifies);

        now = now_ns();
        if (now >= next_status) {
            print_status(s);
            next_status += NS_PER_SEC;
            if (next_status <= now) /* after a stall: no burst of lines */
                next_status = now + NS_PER_SEC;
        }
        if (cfg->duration_s && now - start >= cfg->duration_s * NS_PER_SEC)
            break;
        next_tick += TICK_NS;
        if (next_tick > now)
            sleep_until_ns(next_tick);
        else
            next_tick = now; /* behind: go straight on, don't accumulate */
    }
    return s->errors == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    line_buffer_output();
    struct config cfg = {.size_mib = 64, .rate = 1000, .seed = 1};
    if (!parse_args(argc, argv, &cfg))
        return 2;

    struct state s;
    if (!init_state(&s, &cfg))
        return 3;
    if (cfg.verify_rate == 0) /* auto: the whole area every ~2 s */
        cfg.verify_rate = (s.npages + 1) / 2;
    printf("memverify: config size_mib=%" PRIu64 " pages=%zu rate=%" PRIu64
           " verify_rate=%" PRIu64 " seed=%" PRIu64 "\n",
           cfg.size_mib, s.npages, cfg.rate, cfg.verify_rate, cfg.seed);
    fill(&s);
    return run(&s, &cfg);
}
