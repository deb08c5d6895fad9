/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Crash order (store-format.md, "Writing" and "Merging").  A workload runs
 * over a recording in-memory disk; then every prefix of its I/O log is
 * replayed onto the initial image, as if the power went at that point, and
 * the image is opened read-only:
 *   - it opens, with no fault;
 *   - every exception it lists points at the data written for its origin
 *     chunk;
 *   - every exception whose commit had returned is there, every exception
 *     whose merge had returned is gone.
 * Variants of the disk: writes land in order; every write not followed by
 * a flush is lost; only the last un-flushed write lands (reordering); the
 * last write is torn at sector granularity.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "testlib.h"

#define CH 4096u
#define STORE_CHUNKS 610u /* data chunks: 610 - 4 metadata/header = 606 */
#define NO_OP SIZE_MAX

struct cex {
        uint64_t old, new_chunk;
        size_t commit_ret;  /* ops done when its commit returned */
        size_t merge_start; /* ops done when its merge commit was called */
        size_t merge_ret;   /* ops done when its merge commit returned */
        uint8_t *data;      /* what was written for it */
};

struct crash {
        struct memdisk *d;
        uint8_t *initial;
        uint64_t size;
        struct cex e[1024];
        size_t n;
        /* (old, index) sorted by old, for the foreach check */
        struct {
                uint64_t old;
                size_t i;
        } by_old[1024];
        /* statistics: what the cuts covered */
        size_t cuts, opened, with_merged;
};

static struct crash C;

static struct cex *add_one(cowvol_store *s, uint64_t old)
{
        struct cex *e = &C.e[C.n++];

        cr_assert_lt(C.n, 1024);
        e->old = old;
        cr_assert_eq(cowvol_store_allocate(s, &e->new_chunk), 0);
        e->data = malloc(CH);
        fill_pattern(e->data, CH, old, e->new_chunk);
        cr_assert_eq(cowvol_store_write_chunk(s, e->new_chunk, e->data), 0);
        cr_assert_eq(cowvol_store_add(s, old, e->new_chunk), 0);
        e->commit_ret = NO_OP;
        e->merge_start = NO_OP;
        e->merge_ret = NO_OP;
        return e;
}

static void commit_group(cowvol_store *s, size_t from)
{
        int r = cowvol_store_commit(s);

        cr_assert_eq(r, (int)(C.n - from));
        for (size_t i = from; i < C.n; i++)
                C.e[i].commit_ret = C.d->n_ops;
}

static int cmp_by_old(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

/* The workload: a 4K store for ~600 exceptions; a few exceptions in the
 * initial image; groups of varying size, two of them crossing area
 * boundaries; then a merge of some runs. */
static void run_workload(void)
{
        static const size_t groups[] = { 1, 2, 7, 30, 64, 120, 40, 5, 1, 250, 3, 1, 60 };
        uint64_t rng = 99;
        cowvol_store *s = NULL;

        memset(&C, 0, sizeof(C));
        C.size = (uint64_t)STORE_CHUNKS * CH;
        C.d = memdisk_new(C.size);
        cr_assert_eq(exstore_create_io(&memdisk_io, C.d, CH, 0, &s), 0);
        for (int i = 0; i < 3; i++)
                add_one(s, 5000000 + (uint64_t)i * 7);
        commit_group(s, 0);
        for (size_t i = 0; i < C.n; i++)
                C.e[i].commit_ret = 0; /* in the initial image */
        /* a used device: where areas 1 and 2 will go lies old junk, random
         * bytes in one, a plausible old table in the other; only the
         * zeroing before an area fills keeps a reader out of it */
        for (uint64_t i = 0; i < CH; i += 8) {
                uint64_t v = rng_next(&rng);
                memcpy(C.d->data + 258ull * CH + i, &v, 8);
        }
        for (uint64_t i = 0; i < 256; i++) {
                uint64_t e[2] = { htole64(7777777 + i), htole64(2 + i) };
                memcpy(C.d->data + 515ull * CH + i * 16, e, 16);
        }
        C.initial = malloc(C.size);
        memcpy(C.initial, C.d->data, C.size);
        C.d->record = true;

        for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
                size_t from = C.n;
                bool last = g + 1 == sizeof(groups) / sizeof(groups[0]);
                for (size_t i = 0; i < groups[g]; i++) {
                        /* random origin chunks; the last group is one run */
                        uint64_t old = last ? 9000000 + i : (rng_next(&rng) % 4000000);
                        bool dup = false;
                        for (size_t j = 0; j < C.n && !dup; j++)
                                dup = C.e[j].old == old;
                        if (dup) {
                                i--;
                                continue;
                        }
                        add_one(s, old);
                }
                commit_group(s, from);
        }
        cr_assert_geq(C.n, 580);
        cr_assert_lt(C.n, cowvol_store_capacity(s));

        /* merge: the run of 60, then single entries */
        for (int step = 0; step < 6; step++) {
                uint64_t o, w;
                int n = cowvol_store_merge_prepare(s, &o, &w);
                cr_assert_gt(n, 0);
                if (step == 0)
                        cr_assert_eq(n, 60, "the last group is one run");
                size_t start = C.d->n_ops;
                cr_assert_eq(cowvol_store_merge_commit(s, n), 0);
                for (int i = 0; i < n; i++) {
                        size_t k;
                        for (k = 0; k < C.n && C.e[k].old != o + (uint64_t)i; k++)
                                ;
                        cr_assert_lt(k, C.n);
                        cr_assert_eq(C.e[k].new_chunk, w + (uint64_t)i);
                        C.e[k].merge_start = start;
                        C.e[k].merge_ret = C.d->n_ops;
                }
        }
        cowvol_store_close(s);
        cr_assert_eq(C.d->rdonly, false);

        for (size_t i = 0; i < C.n; i++) {
                C.by_old[i].old = C.e[i].old;
                C.by_old[i].i = i;
        }
        qsort(C.by_old, C.n, sizeof(C.by_old[0]), cmp_by_old);
}

static void crash_done(void)
{
        for (size_t i = 0; i < C.n; i++)
                free(C.e[i].data);
        free(C.initial);
        memdisk_free(C.d);
}

struct listing {
        const uint8_t *img;
        size_t k;
        const char *variant;
        size_t n;
};

static int check_listed(const struct cowvol_exception *x, void *userdata)
{
        struct listing *l = userdata;
        size_t lo = 0, hi = C.n;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (C.by_old[mid].old < x->old_chunk)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        cr_assert(lo < C.n && C.by_old[lo].old == x->old_chunk,
                  "%s, cut after %zu ops: listed origin chunk %" PRIu64 " was never added", l->variant, l->k,
                  x->old_chunk);
        const struct cex *e = &C.e[C.by_old[lo].i];
        cr_assert_eq(x->new_chunk, e->new_chunk, "%s, cut after %zu ops: origin chunk %" PRIu64 " -> %" PRIu64
                     ", written as -> %" PRIu64, l->variant, l->k, x->old_chunk, x->new_chunk, e->new_chunk);
        cr_assert(memcmp(l->img + x->new_chunk * CH, e->data, CH) == 0,
                  "%s, cut after %zu ops: origin chunk %" PRIu64 " listed, but store chunk %" PRIu64
                  " does not hold its data",
                  l->variant, l->k, x->old_chunk, x->new_chunk);
        cr_assert(e->merge_ret == NO_OP || e->merge_ret > l->k,
                  "%s, cut after %zu ops: origin chunk %" PRIu64 " listed after its merge returned", l->variant,
                  l->k, x->old_chunk);
        l->n++;
        return 0;
}

/* Open the image as it would be after a crash once @k ops were issued. */
static void check_image(uint8_t *img, size_t k, const char *variant)
{
        struct memdisk d = { .data = img, .size = C.size, .rdonly = true };
        cowvol_store *s = NULL;
        struct listing l = { img, k, variant, 0 };
        int r;

        C.cuts++;
        log_capture_start();
        r = exstore_open_io(&memdisk_io, &d, COWVOL_STORE_RDONLY, &s);
        cr_assert_eq(r, 0, "%s, cut after %zu ops: open failed: %d (%s): %s", variant, k, r, strerror(-r),
                     log_text());
        C.opened++;
        cr_assert(cowvol_store_is_valid(s));
        cr_assert_eq(cowvol_store_foreach(s, check_listed, &l), 0);
        cr_assert_eq(l.n, cowvol_store_count(s), "%s, cut after %zu ops", variant, k);
        for (size_t i = 0; i < C.n; i++) {
                const struct cex *e = &C.e[i];
                uint64_t c = 0;
                int present = cowvol_store_lookup(s, e->old, &c);
                if (e->commit_ret <= k && e->merge_start >= k) {
                        cr_assert_eq(present, 1, "%s, cut after %zu ops: origin chunk %" PRIu64
                                     " lost: its commit returned after op %zu", variant, k, e->old, e->commit_ret);
                        cr_assert_eq(c, e->new_chunk);
                }
                if (e->merge_ret <= k)
                        cr_assert_eq(present, 0, "%s, cut after %zu ops: origin chunk %" PRIu64
                                     " still there: its merge returned after op %zu", variant, k, e->old,
                                     e->merge_ret);
                if (e->merge_start < k && e->merge_ret > k && !present)
                        C.with_merged++;
        }
        cowvol_store_close(s);
        cr_assert_eq(d.n_refused, 0, "%s: opening read-only tried to write", variant);
        /* check agrees: no fault */
        if (k % 7 == 0) {
                struct fault_list *fl = calloc(1, sizeof(*fl));
                cr_assert_eq(exstore_check_io(&memdisk_io, &d, fault_collect, fl), 0, "%s, cut after %zu: %s",
                             variant, k, fl->n ? fl->f[0].message : "");
                free(fl);
        }
}

static void apply(uint8_t *img, const struct md_op *op)
{
        memcpy(img + op->off, op->data, op->len);
}

static bool is_metadata_write(const struct md_op *op)
{
        return op->kind == MD_WRITE && op->len == CH && op->off / CH % 257 == 1;
}

Test(crash, every_prefix)
{
        uint8_t *inorder, *synced, *saved;
        size_t last_sync = 0, areas = 0, syncs = 0, data_writes = 0;

        run_workload();
        inorder = malloc(C.size);
        synced = malloc(C.size);
        saved = malloc(CH);
        memcpy(inorder, C.initial, C.size);
        memcpy(synced, C.initial, C.size);

        /* the log has what the test is about */
        for (size_t i = 0; i < C.d->n_ops; i++) {
                const struct md_op *op = &C.d->ops[i];
                syncs += op->kind == MD_SYNC;
                areas += is_metadata_write(op);
                data_writes += op->kind == MD_WRITE && !is_metadata_write(op);
        }
        cr_assert_geq(data_writes, 580);
        cr_assert_geq(areas, 13 + 6 + 2);
        cr_assert_geq(syncs, 13);

        check_image(inorder, 0, "in order");
        for (size_t k = 1; k <= C.d->n_ops; k++) {
                const struct md_op *op = &C.d->ops[k - 1];

                /* 1: every write up to the cut landed, in order */
                if (op->kind == MD_WRITE)
                        apply(inorder, op);
                check_image(inorder, k, "in order");

                /* 2: power cut: what was not flushed is lost */
                if (op->kind == MD_SYNC) {
                        for (size_t j = last_sync; j < k - 1; j++)
                                if (C.d->ops[j].kind == MD_WRITE)
                                        apply(synced, &C.d->ops[j]);
                        last_sync = k;
                        check_image(synced, k, "power cut");
                        continue;
                }

                /* 3: of the un-flushed writes, only the last one landed */
                memcpy(saved, synced + op->off, op->len);
                apply(synced, op);
                check_image(synced, k, "reordered");
                memcpy(synced + op->off, saved, op->len);

                /* 4: the last write torn: some of its sectors landed */
                if (is_metadata_write(op)) {
                        static const char *const how[] = { "torn: first half", "torn: second half",
                                                           "torn: odd sectors", "torn: last sector" };
                        for (int t = 0; t < 4; t++) {
                                for (size_t sec = 0; sec < CH / 512; sec++) {
                                        bool land = t == 0   ? sec < 4
                                                    : t == 1 ? sec >= 4
                                                    : t == 2 ? sec % 2 == 1
                                                             : sec == 7;
                                        if (land)
                                                memcpy(synced + op->off + sec * 512, op->data + sec * 512, 512);
                                }
                                check_image(synced, k, how[t]);
                                memcpy(synced + op->off, saved, op->len);
                        }
                }
        }
        /* the replay saw merges in flight */
        cr_assert_gt(C.with_merged, 0);
        cr_assert_eq(C.cuts, C.opened);
        cr_log_info("%zu ops replayed, %zu images opened, %zu in-flight merged entries seen", C.d->n_ops, C.cuts, C.with_merged);
        free(saved);
        free(synced);
        free(inorder);
        crash_done();
}

/*
 * Creating a store over a device whose first 4 KiB were zeroed (LVM's way)
 * but whose area 0 still holds an old table: no cut may show the old
 * entries under the new header.
 */
Test(crash, create_over_an_old_table)
{
        const uint64_t size = 64ull * CH;
        struct memdisk *d = memdisk_new(size);
        uint8_t *initial = malloc(size), *img = malloc(size);
        cowvol_store *s = NULL;

        for (uint64_t i = 0; i < 256; i++) {
                uint64_t e[2] = { htole64(1000 + i), htole64(2 + i % 60) };
                memcpy(d->data + CH + i * 16, e, 16);
        }
        memcpy(initial, d->data, size);
        d->record = true;
        cr_assert_eq(exstore_create_io(&memdisk_io, d, CH, 0, &s), 0);
        cowvol_store_close(s);

        for (size_t k = 0; k <= d->n_ops; k++) {
                for (int variant = 0; variant < 2; variant++) {
                        /* variant 0: in order; 1: the last write alone over the flushed ones */
                        size_t last_sync = 0;
                        memcpy(img, initial, size);
                        for (size_t j = 0; j < k; j++)
                                if (d->ops[j].kind == MD_SYNC)
                                        last_sync = j + 1;
                        for (size_t j = 0; j < k; j++) {
                                const struct md_op *op = &d->ops[j];
                                if (op->kind != MD_WRITE)
                                        continue;
                                if (variant == 0 || j < last_sync || j == k - 1)
                                        apply(img, op);
                        }
                        struct memdisk ro = { .data = img, .size = size, .rdonly = true };
                        cowvol_store *t = NULL;
                        int r = exstore_open_io(&memdisk_io, &ro, COWVOL_STORE_RDONLY, &t);
                        cr_assert(r == 0 || r == -ENODATA, "cut after %zu ops: %d", k, r);
                        if (r == 0) {
                                cr_assert_eq(cowvol_store_count(t), 0,
                                             "cut after %zu ops: the new store shows the old table", k);
                                cowvol_store_close(t);
                        }
                }
        }
        /* the end: a new, empty, valid store */
        memcpy(img, d->data, size);
        struct memdisk ro = { .data = img, .size = size, .rdonly = true };
        cr_assert_eq(exstore_open_io(&memdisk_io, &ro, COWVOL_STORE_RDONLY, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 0);
        cowvol_store_close(s);
        free(img);
        free(initial);
        memdisk_free(d);
}
