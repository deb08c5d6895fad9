/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The in-memory index of a store: origin chunk -> store chunk.
 *
 * Design: the kernel keeps a hash of 32-byte list nodes per exception; we
 * hold 12 packed bytes (le64 origin chunk, 32-bit store chunk) in
 *  - main: an array sorted by origin chunk, searched by bisection, with
 *    spare room of 1/8 at most;
 *  - tail: a small open-addressing hash (linear probing) of recent inserts,
 *    at most half full, sized to n/64 so it costs under half a byte an entry;
 *    when it fills it is sorted and merged into main from the back, in place.
 * Removals (merges) mark main entries dead (store chunk 0, which is always
 * the header and never data) and compact when half are dead.
 * Store chunks must fit in 32 bits: a store of at most 2^32 chunks (16 TiB at
 * 4 KiB chunks); the store refuses larger ones.
 */
#include <string.h>

#include "internal.h"

#define TAIL_MIN 256u      /* slots */
#define TAIL_MAX (1u << 17)

void cindex_init(struct cindex *x)
{
        memset(x, 0, sizeof(*x));
}

void cindex_done(struct cindex *x)
{
        free(x->main);
        free(x->tail);
        cindex_init(x);
}

static inline uint64_t hash64(uint64_t k)
{
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdULL;
        k ^= k >> 33;
        return k;
}

/* Index of the first main entry with .old >= old. */
static size_t main_lower_bound(const struct cindex *x, uint64_t old)
{
        size_t lo = 0, hi = x->n_main;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (x->main[mid].old < old)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static struct cindex_entry *tail_slot(const struct cindex *x, uint64_t old)
{
        size_t mask, i;

        if (!x->cap_tail)
                return NULL;
        mask = x->cap_tail - 1;
        for (i = hash64(old) & mask;; i = (i + 1) & mask) {
                struct cindex_entry *e = &x->tail[i];
                if (e->new_chunk == 0 || e->old == old)
                        return e;
        }
}

int cindex_lookup(const struct cindex *x, uint64_t old, uint64_t *ret_new)
{
        struct cindex_entry *e = tail_slot(x, old);
        size_t i;

        if (e && e->new_chunk) {
                *ret_new = e->new_chunk;
                return 1;
        }
        i = main_lower_bound(x, old);
        if (i < x->n_main && x->main[i].old == old && x->main[i].new_chunk) {
                *ret_new = x->main[i].new_chunk;
                return 1;
        }
        return 0;
}

size_t cindex_lookup_run(const struct cindex *x, uint64_t old, size_t max, uint64_t *ret_new)
{
        struct cindex_entry *e = tail_slot(x, old);
        size_t i, k;

        if (e && e->new_chunk) {
                *ret_new = e->new_chunk;
                return 1;
        }
        i = main_lower_bound(x, old);
        if (i >= x->n_main || x->main[i].old != old || !x->main[i].new_chunk)
                return 0;
        *ret_new = x->main[i].new_chunk;
        /* neighbours in the sorted array: consecutive on both sides? */
        for (k = 1; k < max && i + k < x->n_main; k++)
                if (x->main[i + k].old != old + k || x->main[i + k].new_chunk != *ret_new + k)
                        break;
        return k;
}

size_t cindex_lookup_range(const struct cindex *x, uint64_t first, size_t n, uint64_t *ret_new)
{
        size_t found = 0, i;

        if (x->n_tail) {
                /* the whole table when that is shorter than probing each
                 * chunk: a slot scanned in order costs a fraction of a probe */
                if (x->cap_tail <= 8 * n) {
                        for (i = 0; i < x->cap_tail; i++) {
                                const struct cindex_entry *e = &x->tail[i];
                                uint64_t k = e->old - first;
                                if (e->new_chunk && k < n && !ret_new[k]) {
                                        ret_new[k] = e->new_chunk;
                                        found++;
                                }
                        }
                } else {
                        for (i = 0; i < n; i++) {
                                const struct cindex_entry *e;
                                if (ret_new[i])
                                        continue;
                                e = tail_slot(x, first + i);
                                if (e && e->new_chunk) {
                                        ret_new[i] = e->new_chunk;
                                        found++;
                                }
                        }
                }
        }
        /* main is sorted: one bisection, then the entries in the range */
        for (i = main_lower_bound(x, first); i < x->n_main && x->main[i].old - first < n; i++) {
                uint64_t k = x->main[i].old - first;
                if (x->main[i].new_chunk && !ret_new[k]) {
                        ret_new[k] = x->main[i].new_chunk;
                        found++;
                }
        }
        return found;
}

static int cmp_entry(const void *a, const void *b)
{
        const struct cindex_entry *x = a, *y = b;
        uint64_t xo = x->old, yo = y->old;

        return xo < yo ? -1 : xo > yo;
}

static int main_reserve(struct cindex *x, size_t need)
{
        struct cindex_entry *m;
        size_t cap;

        if (need <= x->cap_main)
                return 0;
        /* grow by 1/8: at most 1.5 bytes of slack an entry */
        cap = x->cap_main + x->cap_main / 8;
        if (cap < need)
                cap = need;
        if (cap < 64)
                cap = 64;
        m = realloc(x->main, cap * sizeof(*m));
        if (!m)
                return -ENOMEM;
        x->main = m;
        x->cap_main = cap;
        return 0;
}

static void main_compact(struct cindex *x)
{
        size_t r, w = 0;

        for (r = 0; r < x->n_main; r++)
                if (x->main[r].new_chunk)
                        x->main[w++] = x->main[r];
        x->n_main = w;
        x->n_dead = 0;
}

/* Move the tail's entries into main, keeping main sorted. */
static int tail_flush(struct cindex *x)
{
        struct cindex_entry *t = x->tail;
        size_t n = 0, i, r, w;
        int q;

        if (!x->n_tail)
                return 0;
        q = main_reserve(x, x->n_main + x->n_tail);
        if (q < 0)
                return q;
        /* pack the tail's live slots to its front, then sort them */
        for (i = 0; i < x->cap_tail; i++)
                if (t[i].new_chunk)
                        t[n++] = t[i];
        qsort(t, n, sizeof(*t), cmp_entry);
        /* merge from the back into main's spare room */
        r = x->n_main;
        w = x->n_main + n;
        while (n > 0) {
                if (r > 0 && x->main[r - 1].old > t[n - 1].old)
                        x->main[--w] = x->main[--r];
                else
                        x->main[--w] = t[--n];
        }
        x->n_main += x->n_tail;
        x->n_tail = 0;
        memset(t, 0, x->cap_tail * sizeof(*t));
        return 0;
}

static int tail_resize(struct cindex *x)
{
        size_t want = TAIL_MIN, total = x->n_main + x->n_tail;
        struct cindex_entry *t;

        while (want < TAIL_MAX && want < total / 64)
                want <<= 1;
        if (want == x->cap_tail)
                return 0;
        if (x->n_tail) {
                int r = tail_flush(x);
                if (r < 0)
                        return r;
        }
        t = calloc(want, sizeof(*t));
        if (!t)
                return -ENOMEM;
        free(x->tail);
        x->tail = t;
        x->cap_tail = want;
        return 0;
}

int cindex_insert(struct cindex *x, uint64_t old, uint64_t new_chunk)
{
        struct cindex_entry *e;
        uint64_t dummy;
        size_t i;
        int r;

        if (new_chunk == 0 || new_chunk > CINDEX_MAX_NEW)
                return -EFBIG;
        if (cindex_lookup(x, old, &dummy))
                return -EEXIST;
        /* a dead main entry for this chunk can simply come back to life */
        i = main_lower_bound(x, old);
        if (i < x->n_main && x->main[i].old == old) {
                x->main[i].new_chunk = (uint32_t)new_chunk;
                x->n_dead--;
                return 0;
        }
        if (!x->cap_tail || (x->n_tail + 1) * 2 > x->cap_tail) {
                r = tail_resize(x);
                if (r < 0)
                        return r;
                if ((x->n_tail + 1) * 2 > x->cap_tail) {
                        r = tail_flush(x);
                        if (r < 0)
                                return r;
                }
        }
        e = tail_slot(x, old);
        e->old = old;
        e->new_chunk = (uint32_t)new_chunk;
        x->n_tail++;
        return 0;
}

/* Backward-shift deletion keeps linear probing chains whole. */
static void tail_delete(struct cindex *x, struct cindex_entry *e)
{
        size_t mask = x->cap_tail - 1, i = (size_t)(e - x->tail), j = i;

        for (;;) {
                size_t home;
                j = (j + 1) & mask;
                if (x->tail[j].new_chunk == 0)
                        break;
                home = hash64(x->tail[j].old) & mask;
                /* the entry at j may fill the hole at i unless its home
                 * lies cyclically in (i, j] */
                if (((j - home) & mask) >= ((j - i) & mask)) {
                        x->tail[i] = x->tail[j];
                        i = j;
                }
        }
        x->tail[i].new_chunk = 0;
        x->tail[i].old = 0;
        x->n_tail--;
}

int cindex_remove(struct cindex *x, uint64_t old)
{
        struct cindex_entry *e = tail_slot(x, old);
        size_t i;

        if (e && e->new_chunk) {
                tail_delete(x, e);
                return 0;
        }
        i = main_lower_bound(x, old);
        if (i >= x->n_main || x->main[i].old != old || !x->main[i].new_chunk)
                return -ENOENT;
        x->main[i].new_chunk = 0;
        if (++x->n_dead * 2 > x->n_main)
                main_compact(x);
        return 0;
}

size_t cindex_count(const struct cindex *x)
{
        return x->n_main - x->n_dead + x->n_tail;
}

size_t cindex_bytes(const struct cindex *x)
{
        return (x->cap_main + x->cap_tail) * sizeof(struct cindex_entry);
}

int cindex_bulk_append(struct cindex *x, uint64_t old, uint64_t new_chunk)
{
        int r;

        if (new_chunk == 0 || new_chunk > CINDEX_MAX_NEW)
                return -EFBIG;
        if (x->n_tail)
                return -EBUSY;
        r = main_reserve(x, x->n_main + 1);
        if (r < 0)
                return r;
        x->main[x->n_main].old = old;
        x->main[x->n_main].new_chunk = (uint32_t)new_chunk;
        x->n_main++;
        x->bulk = true;
        return 0;
}

/* LSD radix sort on the 64-bit key, 16 bits a pass, skipping passes in
 * which every key has the same digit: 1M entries sort in a few ms. */
static int radix_sort(struct cindex_entry *a, size_t n)
{
        struct cindex_entry *tmp, *src = a, *dst;
        size_t *count;
        unsigned pass;

        if (n < 256) {
                qsort(a, n, sizeof(*a), cmp_entry);
                return 0;
        }
        tmp = malloc(n * sizeof(*tmp));
        if (!tmp)
                return -ENOMEM;
        count = malloc(65536 * sizeof(*count));
        if (!count) {
                free(tmp);
                return -ENOMEM;
        }
        dst = tmp;
        for (pass = 0; pass < 4; pass++) {
                unsigned shift = pass * 16;
                size_t i, sum = 0;

                memset(count, 0, 65536 * sizeof(*count));
                for (i = 0; i < n; i++)
                        count[(src[i].old >> shift) & 0xffff]++;
                if (count[(src[0].old >> shift) & 0xffff] == n)
                        continue; /* one digit for all: nothing to do */
                for (i = 0; i < 65536; i++) {
                        size_t c = count[i];
                        count[i] = sum;
                        sum += c;
                }
                for (i = 0; i < n; i++)
                        dst[count[(src[i].old >> shift) & 0xffff]++] = src[i];
                {
                        struct cindex_entry *t = src;
                        src = dst;
                        dst = t;
                }
        }
        if (src != a)
                memcpy(a, src, n * sizeof(*a));
        free(count);
        free(tmp);
        return 0;
}

int cindex_bulk_finish(struct cindex *x, void (*dup)(uint64_t old, uint64_t a, uint64_t b, void *ud),
                       void *ud)
{
        size_t i;
        int r;

        if (!x->bulk)
                return 0;
        r = radix_sort(x->main, x->n_main);
        if (r < 0)
                return r;
        x->bulk = false;
        /* a loaded index has no slack: growth comes later, 1/8 at a time */
        if (x->n_main && x->n_main < x->cap_main) {
                struct cindex_entry *m = realloc(x->main, x->n_main * sizeof(*m));
                if (m) {
                        x->main = m;
                        x->cap_main = x->n_main;
                }
        }
        for (i = 1; i < x->n_main; i++)
                if (x->main[i].old == x->main[i - 1].old && dup)
                        dup(x->main[i].old, x->main[i - 1].new_chunk, x->main[i].new_chunk, ud);
        return 0;
}

int cindex_foreach(const struct cindex *x, int (*fn)(uint64_t old, uint64_t new_chunk, void *ud),
                   void *ud)
{
        struct cindex_entry *t = NULL;
        size_t n = 0, i, j = 0;
        int r = 0;

        /* tail entries, sorted, merged on the fly with main */
        if (x->n_tail) {
                t = malloc(x->n_tail * sizeof(*t));
                if (!t)
                        return -ENOMEM;
                for (i = 0; i < x->cap_tail; i++)
                        if (x->tail[i].new_chunk)
                                t[n++] = x->tail[i];
                qsort(t, n, sizeof(*t), cmp_entry);
        }
        for (i = 0; i < x->n_main || j < n;) {
                struct cindex_entry e;
                if (j >= n || (i < x->n_main && x->main[i].old < t[j].old))
                        e = x->main[i++];
                else
                        e = t[j++];
                if (!e.new_chunk)
                        continue;
                r = fn(e.old, e.new_chunk, ud);
                if (r)
                        break;
        }
        free(t);
        return r;
}
