/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The chunk index (cindex_*) against a plain model. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <string.h>

#include "testlib.h"

/* key space: K distinct 64-bit keys, key(k) = k * odd constant (a bijection
 * of 64-bit integers, so distinct k give distinct keys, spread all over) */
#define K (1u << 16)
#define ODD 0x9e3779b97f4a7c15ULL

static uint64_t key_of(uint64_t k)
{
        return k * ODD;
}

struct model {
        uint32_t val[K]; /* 0: absent */
        size_t count;
};

struct collect {
        uint64_t *old, *new_chunk;
        size_t n, cap;
        size_t stop_at;
};

static int collect_fn(uint64_t old, uint64_t new_chunk, void *ud)
{
        struct collect *c = ud;

        if (c->n == c->cap) {
                c->cap = c->cap ? c->cap * 2 : 1024;
                c->old = realloc(c->old, c->cap * sizeof(uint64_t));
                c->new_chunk = realloc(c->new_chunk, c->cap * sizeof(uint64_t));
                cr_assert(c->old && c->new_chunk);
        }
        c->old[c->n] = old;
        c->new_chunk[c->n] = new_chunk;
        c->n++;
        return c->stop_at && c->n == c->stop_at ? 42 : 0;
}

static void collect_free(struct collect *c)
{
        free(c->old);
        free(c->new_chunk);
}

/* ODD's inverse modulo 2^64 (Newton), to get k back from a key */
static uint64_t odd_inverse(void)
{
        uint64_t inv = ODD;

        for (int i = 0; i < 6; i++)
                inv *= 2 - ODD * inv;
        cr_assert_eq(inv * ODD, 1);
        return inv;
}

/* foreach lists exactly the model, ascending, with the model's values */
static void compare_all(const struct cindex *x, const struct model *m)
{
        struct collect c = { 0 };
        uint64_t inv = odd_inverse();

        cr_assert_eq(cindex_count(x), m->count);
        cr_assert_eq(cindex_foreach(x, collect_fn, &c), 0);
        cr_assert_eq(c.n, m->count, "foreach listed %zu, the model has %zu", c.n, m->count);
        for (size_t i = 0; i < c.n; i++) {
                uint64_t k = c.old[i] * inv;
                if (i > 0)
                        cr_assert_lt(c.old[i - 1], c.old[i], "foreach not ascending at %zu", i);
                cr_assert_lt(k, K, "foreach listed a key never inserted");
                cr_assert_eq(c.new_chunk[i], m->val[k], "foreach: key %" PRIu64 " value", c.old[i]);
        }
        collect_free(&c);
}

Test(index, random_ops_against_a_model)
{
        static struct model m;
        struct cindex x;
        uint64_t rng = 2024;
        size_t inserts = 0, hits = 0, removes = 0;

        memset(&m, 0, sizeof(m));
        cindex_init(&x);
        for (int op = 0; op < 200000; op++) {
                uint64_t k = rng_next(&rng) % K, key = key_of(k), v = 0;
                unsigned what = (unsigned)(rng_next(&rng) % 10);
                int r;

                if (what < 5) {
                        uint64_t nv = 1 + rng_next(&rng) % UINT32_MAX;
                        r = cindex_insert(&x, key, nv);
                        if (m.val[k]) {
                                cr_assert_eq(r, -EEXIST, "op %d: insert of a present key gave %d", op, r);
                        } else {
                                cr_assert_eq(r, 0, "op %d: insert gave %d", op, r);
                                m.val[k] = (uint32_t)nv;
                                m.count++;
                                inserts++;
                        }
                } else if (what < 8) {
                        v = 12345;
                        r = cindex_lookup(&x, key, &v);
                        if (m.val[k]) {
                                cr_assert_eq(r, 1, "op %d: key %" PRIu64 " lost", op, key);
                                cr_assert_eq(v, m.val[k], "op %d: key %" PRIu64 " value", op, key);
                                hits++;
                        } else {
                                cr_assert_eq(r, 0, "op %d: removed key %" PRIu64 " found", op, key);
                                cr_assert_eq(v, 12345, "a miss wrote the output");
                        }
                } else {
                        r = cindex_remove(&x, key);
                        if (m.val[k]) {
                                cr_assert_eq(r, 0, "op %d: remove gave %d", op, r);
                                m.val[k] = 0;
                                m.count--;
                                removes++;
                        } else {
                                cr_assert_eq(r, -ENOENT, "op %d: remove of an absent key gave %d", op, r);
                        }
                }
                if (op % 20000 == 19999)
                        compare_all(&x, &m);
        }
        cr_assert_gt(inserts, 30000);
        cr_assert_gt(hits, 10000);
        cr_assert_gt(removes, 10000);
        /* every key of the model, and only those */
        for (uint64_t k = 0; k < K; k++) {
                uint64_t v = 0;
                int r = cindex_lookup(&x, key_of(k), &v);
                cr_assert_eq(r, m.val[k] != 0, "key %" PRIu64 ": lookup %d", key_of(k), r);
                if (r)
                        cr_assert_eq(v, m.val[k]);
        }
        compare_all(&x, &m);
        cindex_done(&x);
}

/* Remove most, insert them again: removed entries come back with their new
 * value, never the old one. */
Test(index, remove_then_insert_again)
{
        struct cindex x;
        const uint64_t n = 20000;

        cindex_init(&x);
        for (uint64_t i = 0; i < n; i++)
                cr_assert_eq(cindex_insert(&x, key_of(i), 1 + i), 0);
        for (uint64_t i = 0; i < n; i += 3)
                cr_assert_eq(cindex_remove(&x, key_of(i)), 0);
        for (uint64_t i = 0; i < n; i += 3) {
                uint64_t v;
                cr_assert_eq(cindex_lookup(&x, key_of(i), &v), 0);
                cr_assert_eq(cindex_remove(&x, key_of(i)), -ENOENT);
        }
        for (uint64_t i = 0; i < n; i += 6)
                cr_assert_eq(cindex_insert(&x, key_of(i), 100000 + i), 0);
        size_t expect = 0;
        for (uint64_t i = 0; i < n; i++) {
                uint64_t v = 0;
                int r = cindex_lookup(&x, key_of(i), &v);
                if (i % 3 != 0) {
                        cr_assert_eq(r, 1);
                        cr_assert_eq(v, 1 + i);
                        expect++;
                } else if (i % 6 == 0) {
                        cr_assert_eq(r, 1);
                        cr_assert_eq(v, 100000 + i, "key %" PRIu64 " came back with %" PRIu64, i, v);
                        expect++;
                } else {
                        cr_assert_eq(r, 0);
                }
        }
        cr_assert_eq(cindex_count(&x), expect);
        /* remove everything */
        for (uint64_t i = 0; i < n; i++)
                (void)cindex_remove(&x, key_of(i));
        cr_assert_eq(cindex_count(&x), 0);
        struct collect c = { 0 };
        cr_assert_eq(cindex_foreach(&x, collect_fn, &c), 0);
        cr_assert_eq(c.n, 0);
        cindex_done(&x);
}

Test(index, limits)
{
        struct cindex x;
        uint64_t v = 7;

        cindex_init(&x);
        cr_assert_eq(cindex_count(&x), 0);
        cr_assert_eq(cindex_lookup(&x, 5, &v), 0);
        cr_assert_eq(v, 7);
        cr_assert_eq(cindex_remove(&x, 5), -ENOENT);
        cr_assert_eq(cindex_insert(&x, 5, 0), -EFBIG, "store chunk 0 is the header");
        cr_assert_eq(cindex_insert(&x, 5, (uint64_t)UINT32_MAX + 1), -EFBIG);
        cr_assert_eq(cindex_count(&x), 0);
        cr_assert_eq(cindex_insert(&x, 5, UINT32_MAX), 0);
        cr_assert_eq(cindex_insert(&x, 0, 1), 0);
        cr_assert_eq(cindex_insert(&x, UINT64_MAX, 2), 0);
        cr_assert_eq(cindex_lookup(&x, 5, &v), 1);
        cr_assert_eq(v, UINT32_MAX);
        cr_assert_eq(cindex_lookup(&x, 0, &v), 1);
        cr_assert_eq(v, 1);
        cr_assert_eq(cindex_lookup(&x, UINT64_MAX, &v), 1);
        cr_assert_eq(v, 2);
        cr_assert_eq(cindex_insert(&x, 0, 3), -EEXIST);
        cr_assert_eq(cindex_count(&x), 3);
        struct collect c = { 0 };
        cr_assert_eq(cindex_foreach(&x, collect_fn, &c), 0);
        cr_assert_eq(c.n, 3);
        cr_assert_eq(c.old[0], 0);
        cr_assert_eq(c.old[1], 5);
        cr_assert_eq(c.old[2], UINT64_MAX);
        collect_free(&c);
        cr_assert_eq(cindex_bulk_append(&x, 9, 0), -EFBIG);
        cindex_done(&x);
}

struct dups {
        uint64_t old[64], a[64], b[64];
        int n;
};

static void dup_fn(uint64_t old, uint64_t a, uint64_t b, void *ud)
{
        struct dups *d = ud;

        cr_assert_lt(d->n, 64);
        d->old[d->n] = old;
        d->a[d->n] = a;
        d->b[d->n] = b;
        d->n++;
}

static void bulk_case(size_t n, uint64_t (*keyf)(uint64_t i), size_t ndup)
{
        struct cindex x;
        struct dups d = { 0 };
        uint64_t *perm = malloc(n * sizeof(*perm)), rng = n;

        /* append in a shuffled order */
        for (size_t i = 0; i < n; i++)
                perm[i] = i;
        for (size_t i = n; i > 1; i--) {
                size_t j = rng_next(&rng) % i;
                uint64_t t = perm[i - 1];
                perm[i - 1] = perm[j];
                perm[j] = t;
        }
        cindex_init(&x);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(cindex_bulk_append(&x, keyf(perm[i]), 1 + perm[i]), 0);
        /* duplicates: entries 0, 2, 4, ... get a second store chunk */
        for (size_t i = 0; i < ndup; i++)
                cr_assert_eq(cindex_bulk_append(&x, keyf(2 * i), 3000000 + i), 0);
        cr_assert_eq(cindex_bulk_finish(&x, dup_fn, &d), 0);
        cr_assert_eq(d.n, (int)ndup, "%d duplicates reported, %zu made", d.n, ndup);
        for (int i = 0; i < d.n; i++) {
                /* which one: the old chunk names it; both store chunks given */
                size_t which = SIZE_MAX;
                for (size_t j = 0; j < ndup; j++)
                        if (keyf(2 * j) == d.old[i])
                                which = j;
                cr_assert_neq(which, SIZE_MAX, "duplicate reported for a key that has none");
                uint64_t lo = d.a[i] < d.b[i] ? d.a[i] : d.b[i], hi = d.a[i] < d.b[i] ? d.b[i] : d.a[i];
                cr_assert_eq(lo, 1 + 2 * which);
                cr_assert_eq(hi, 3000000 + which);
        }
        if (!ndup) {
                cr_assert_eq(cindex_count(&x), n);
                struct collect c = { 0 };
                cr_assert_eq(cindex_foreach(&x, collect_fn, &c), 0);
                cr_assert_eq(c.n, n);
                for (size_t i = 1; i < n; i++)
                        cr_assert_lt(c.old[i - 1], c.old[i], "not sorted at %zu", i);
                collect_free(&c);
                /* the loaded index works as any other */
                cr_assert_eq(cindex_insert(&x, keyf(0), 5), -EEXIST);
                cr_assert_eq(cindex_remove(&x, keyf(1)), 0);
                cr_assert_eq(cindex_insert(&x, keyf(1), 77), 0);
                cr_assert_eq(cindex_count(&x), n);
        }
        for (size_t i = 0; i < n; i++) {
                uint64_t v = 0;
                cr_assert_eq(cindex_lookup(&x, keyf(i), &v), 1, "entry %zu lost", i);
                if (i >= 2 * ndup && !(i == 1 && !ndup))
                        cr_assert_eq(v, 1 + i, "entry %zu", i);
        }
        cindex_done(&x);
        free(perm);
}

static uint64_t key_spread(uint64_t i)
{
        return key_of(i);
}

static uint64_t key_high_bits(uint64_t i)
{
        /* differ only in the top 16 bits */
        return (i << 48) | 0x123456789abULL;
}

static uint64_t key_mixed(uint64_t i)
{
        /* digits that differ in some 16-bit passes only */
        return ((i & 0xff) << 40) | ((i >> 8) << 8) | 0x8000000000000000ULL;
}

/* the loads both bulk tests run: how many keys, which keys, and how many of
 * them the duplicates test repeats */
static const struct {
        size_t n;
        uint64_t (*key)(uint64_t i);
        size_t dups;
} bulk_loads[] = {
        { 10, key_spread, 2 },       { 200, key_spread, 7 }, { 5000, key_spread, 7 },
        { 3000, key_high_bits, 5 }, { 30000, key_mixed, 9 },
};

Test(index, bulk_load)
{
        for (size_t i = 0; i < sizeof(bulk_loads) / sizeof(bulk_loads[0]); i++)
                bulk_case(bulk_loads[i].n, bulk_loads[i].key, 0);
}

Test(index, bulk_finish_detects_duplicates)
{
        for (size_t i = 0; i < sizeof(bulk_loads) / sizeof(bulk_loads[0]); i++)
                bulk_case(bulk_loads[i].n, bulk_loads[i].key, bulk_loads[i].dups);
}

Test(index, foreach_ascending_and_stops)
{
        struct cindex x;
        uint64_t rng = 5;
        size_t n = 0;

        cindex_init(&x);
        /* enough for several merges of the recent-insert table, and some recent ones */
        for (int i = 0; i < 50000; i++)
                if (cindex_insert(&x, rng_next(&rng), 1 + (uint64_t)i) == 0)
                        n++;
        for (int i = 0; i < 5000; i += 2)
                (void)cindex_remove(&x, key_of((uint64_t)i)); /* mostly absent: harmless */
        struct collect c = { 0 };
        cr_assert_eq(cindex_foreach(&x, collect_fn, &c), 0);
        cr_assert_eq(c.n, n);
        for (size_t i = 1; i < c.n; i++)
                cr_assert_lt(c.old[i - 1], c.old[i], "not ascending at %zu", i);
        collect_free(&c);

        struct collect s = { .stop_at = 100 };
        cr_assert_eq(cindex_foreach(&x, collect_fn, &s), 42);
        cr_assert_eq(s.n, 100);
        collect_free(&s);
        cindex_done(&x);
}

Test(index, memory_per_entry)
{
        struct cindex x;
        uint64_t rng = 77, probe_rng;
        size_t n = 0;

        cindex_init(&x);
        probe_rng = rng;
        for (int i = 0; i < 1000000; i++) {
                uint64_t key = rng_next(&rng) & ((1ull << 40) - 1);
                int r = cindex_insert(&x, key, 2 + (uint64_t)i);
                cr_assert(r == 0 || r == -EEXIST);
                n += r == 0;
        }
        cr_assert_eq(cindex_count(&x), n);
        cr_assert_geq(n, 999990);
        double per = (double)cindex_bytes(&x) / (double)n;
        cr_assert_leq(cindex_bytes(&x), 16 * n, "%.2f bytes an entry", per);
        /* and it still answers: the first 1000 keys */
        for (int i = 0; i < 1000; i++) {
                uint64_t key = rng_next(&probe_rng) & ((1ull << 40) - 1), v;
                cr_assert_eq(cindex_lookup(&x, key, &v), 1);
        }
        cindex_done(&x);
}

/* A range lookup finds what point lookups find, in main and in the tail,
 * and leaves slots already set alone. */
Test(index, lookup_range_matches_points)
{
        struct cindex x;
        uint64_t rng = 77;
        const uint64_t span = 4096;

        cindex_init(&x);
        for (int round = 0; round < 40; round++) {
                /* dense keys near the top of the key space too (wrap-around) */
                uint64_t base = round % 2 ? UINT64_MAX - span + 1 : 1000;
                for (int k = 0; k < 300; k++) {
                        uint64_t key = base + rng_next(&rng) % span;
                        if (rng_next(&rng) % 4)
                                (void)cindex_insert(&x, key, 1 + rng_next(&rng) % UINT32_MAX);
                        else
                                (void)cindex_remove(&x, key);
                }
                for (int q = 0; q < 50; q++) {
                        uint64_t first = base + rng_next(&rng) % span - 64, got[300];
                        size_t n = 1 + rng_next(&rng) % 300, found = 0;
                        for (size_t i = 0; i < n; i++)
                                got[i] = i % 7 == 3 ? 42 : 0; /* preset: must stay */
                        size_t r = cindex_lookup_range(&x, first, n, got);
                        for (size_t i = 0; i < n; i++) {
                                uint64_t v = 0;
                                int hit = cindex_lookup(&x, first + i, &v);
                                if (i % 7 == 3) {
                                        cr_assert_eq(got[i], 42);
                                        continue;
                                }
                                cr_assert_eq(got[i], hit ? v : 0, "round %d chunk %zu", round, i);
                                found += hit;
                        }
                        cr_assert_eq(r, found);
                }
        }
        cindex_done(&x);
}
