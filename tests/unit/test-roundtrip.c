/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Round trips through the store: what is committed comes back after a
 * reopen, with its data; the I/O of a commit follows the kernel's order
 * (store-format.md, "Writing"); merging follows the kernel's rule
 * ("Merging"); the view is the origin overlaid by the exceptions.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"

#define CH 4096u
#define EPA 256u

struct ex {
        uint64_t old, new_chunk;
};

struct model {
        struct ex *e; /* in commit (slot) order */
        size_t n, cap;
};

static void model_push(struct model *m, uint64_t old, uint64_t new_chunk)
{
        if (m->n == m->cap) {
                m->cap = m->cap ? m->cap * 2 : 256;
                m->e = realloc(m->e, m->cap * sizeof(*m->e));
                cr_assert_not_null(m->e);
        }
        m->e[m->n++] = (struct ex){ old, new_chunk };
}

static bool model_has_old(const struct model *m, uint64_t old)
{
        for (size_t i = 0; i < m->n; i++)
                if (m->e[i].old == old)
                        return true;
        return false;
}

/* allocate, write the chunk's pattern, add; recorded in @m */
static uint64_t put(cowvol_store *s, struct model *m, uint64_t old)
{
        uint8_t buf[CH];
        uint64_t c;

        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        fill_pattern(buf, sizeof(buf), old, c);
        cr_assert_eq(cowvol_store_write_chunk(s, c, buf), 0);
        cr_assert_eq(cowvol_store_add(s, old, c), 0, "add %" PRIu64 " -> %" PRIu64, old, c);
        if (m)
                model_push(m, old, c);
        return c;
}

/* every exception of @m looks up to its chunk, whose data is its pattern */
static void verify(const cowvol_store *s, const struct model *m, bool data)
{
        uint8_t buf[CH], want[CH];

        cr_assert_eq(cowvol_store_count(s), m->n);
        for (size_t i = 0; i < m->n; i++) {
                uint64_t c = 0;
                cr_assert_eq(cowvol_store_lookup(s, m->e[i].old, &c), 1, "origin chunk %" PRIu64 " lost",
                             m->e[i].old);
                cr_assert_eq(c, m->e[i].new_chunk, "origin chunk %" PRIu64, m->e[i].old);
                if (data) {
                        cr_assert_eq(cowvol_store_read_chunk(s, c, buf), 0);
                        fill_pattern(want, sizeof(want), m->e[i].old, c);
                        cr_assert_arr_eq(buf, want, CH, "data of origin chunk %" PRIu64, m->e[i].old);
                }
        }
}

struct walk {
        struct ex e[2048];
        uint64_t area[2048];
        uint32_t slot[2048];
        size_t n;
        size_t stop_at;
        int stop_with;
};

static int walk_fn(const struct cowvol_exception *e, void *userdata)
{
        struct walk *w = userdata;

        cr_assert_lt(w->n, 2048);
        w->e[w->n] = (struct ex){ e->old_chunk, e->new_chunk };
        w->area[w->n] = e->area;
        w->slot[w->n] = e->slot;
        w->n++;
        if (w->stop_at && w->n == w->stop_at)
                return w->stop_with;
        return 0;
}

/* foreach lists exactly @m in order, at area i / EPA, slot i % EPA */
static void verify_order(const cowvol_store *s, const struct model *m)
{
        static struct walk w;

        memset(&w, 0, sizeof(w));
        cr_assert_eq(cowvol_store_foreach(s, walk_fn, &w), 0);
        cr_assert_eq(w.n, m->n, "foreach listed %zu, expected %zu", w.n, m->n);
        for (size_t i = 0; i < m->n; i++) {
                cr_assert_eq(w.e[i].old, m->e[i].old, "entry %zu", i);
                cr_assert_eq(w.e[i].new_chunk, m->e[i].new_chunk, "entry %zu", i);
                cr_assert_eq(w.area[i], i / EPA, "entry %zu area", i);
                cr_assert_eq(w.slot[i], i % EPA, "entry %zu slot", i);
        }
}

static cowvol_store *md_create(struct memdisk *d)
{
        cowvol_store *s = NULL;

        cr_assert_eq(exstore_create_io(&memdisk_io, d, CH, 0, &s), 0);
        return s;
}

static cowvol_store *md_open(struct memdisk *d, unsigned flags)
{
        cowvol_store *s = NULL;
        int r = exstore_open_io(&memdisk_io, d, flags, &s);

        cr_assert_eq(r, 0, "open: %d", r);
        return s;
}

/* The end of a test over @d: close @s, open the store again and find @m in
 * it (with the data when @data; in store order too when @order), then free
 * the store, the model and the disk. */
static void reopen_verify_free(cowvol_store *s, struct memdisk *d, struct model *m, bool data, bool order)
{
        cowvol_store_close(s);
        s = md_open(d, 0);
        verify(s, m, data);
        if (order)
                verify_order(s, m);
        cowvol_store_close(s);
        free(m->e);
        memdisk_free(d);
}

/* Close @s and count the exceptions of the store on @d opened again. */
static uint64_t count_after_reopen(cowvol_store *s, struct memdisk *d)
{
        uint64_t n;

        cowvol_store_close(s);
        s = md_open(d, 0);
        n = cowvol_store_count(s);
        cowvol_store_close(s);
        return n;
}

/* distinct random origin chunks */
static uint64_t fresh_old(const struct model *m, uint64_t *rng, uint64_t range)
{
        for (;;) {
                uint64_t o = rng_next(rng) % range;
                if (!model_has_old(m, o))
                        return o;
        }
}

Test(roundtrip, file_commit_reopen)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "store");
        cowvol_store *s = NULL;
        struct model m = { 0 };
        uint64_t rng = 42;

        cr_assert_eq(cowvol_store_create(p, CH, 800ull * CH, 0, &s), 0);
        while (m.n < 600) {
                size_t g = 1 + rng_next(&rng) % 60;
                for (size_t i = 0; i < g && m.n < 600; i++)
                        put(s, &m, fresh_old(&m, &rng, 1ull << 40));
                cr_assert_gt(cowvol_store_commit(s), 0);
        }
        verify(s, &m, true);
        cowvol_store_close(s);

        cr_assert_eq(cowvol_store_open(p, 0, &s), 0);
        verify(s, &m, true);
        verify_order(s, &m);
        uint64_t c = 99;
        cr_assert_eq(cowvol_store_lookup(s, (1ull << 40) + 5, &c), 0);
        cr_assert_eq(c, 99, "lookup of an absent chunk wrote its output");
        cowvol_store_close(s);

        cr_assert_eq(cowvol_store_open(p, COWVOL_STORE_RDONLY, &s), 0);
        verify(s, &m, true);
        cowvol_store_close(s);
        free(m.e);
        free(p);
        tmpdir_remove(dir);
}

Test(roundtrip, one_area_write_per_group)
{
        struct memdisk *d = memdisk_new(100ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };

        d->record = true;
        for (int i = 0; i < 10; i++)
                put(s, &m, 1000 + 3 * (uint64_t)i);
        /* nothing of the table is written before the commit */
        for (size_t i = 0; i < d->n_ops; i++)
                cr_assert(d->ops[i].kind != MD_WRITE || d->ops[i].off >= 2ull * CH);
        memdisk_clear_log(d);
        cr_assert_eq(cowvol_store_commit(s), 10);
        cr_assert_eq(d->n_ops, 3, "a group of 10 made %zu I/Os", d->n_ops);
        cr_assert_eq(d->ops[0].kind, MD_SYNC, "no flush of the data before the area write");
        cr_assert_eq(d->ops[1].kind, MD_WRITE);
        cr_assert_eq(d->ops[1].off, 1ull * CH, "area 0 is chunk 1");
        cr_assert_eq(d->ops[1].len, CH, "the whole area is written");
        cr_assert_eq(d->ops[2].kind, MD_SYNC, "no flush after the area write");
        for (size_t i = 0; i < 10; i++) {
                uint64_t e[2];
                memcpy(e, d->ops[1].data + i * 16, 16);
                cr_assert_eq(le64toh(e[0]), m.e[i].old);
                cr_assert_eq(le64toh(e[1]), m.e[i].new_chunk);
        }
        cr_assert(mem_is_zero(d->ops[1].data + 160, CH - 160));

        /* nothing pending: nothing written */
        memdisk_clear_log(d);
        cr_assert_eq(cowvol_store_commit(s), 0);
        cr_assert_eq(d->n_ops, 0);

        /* a second group rewrites area 0 with all 13 entries, once */
        for (int i = 0; i < 3; i++)
                put(s, &m, 5000 + (uint64_t)i);
        memdisk_clear_log(d);
        cr_assert_eq(cowvol_store_commit(s), 3);
        cr_assert_eq(d->n_ops, 3);
        cr_assert_eq(d->ops[1].off, 1ull * CH);
        for (size_t i = 0; i < 13; i++) {
                uint64_t e[2];
                memcpy(e, d->ops[1].data + i * 16, 16);
                cr_assert_eq(le64toh(e[0]), m.e[i].old);
        }
        reopen_verify_free(s, d, &m, true, false);
}

static ssize_t find_write(const struct memdisk *d, uint64_t off, bool zero, size_t from)
{
        for (size_t i = from; i < d->n_ops; i++)
                if (d->ops[i].kind == MD_WRITE && d->ops[i].off == off &&
                    mem_is_zero(d->ops[i].data, d->ops[i].len) == zero)
                        return (ssize_t)i;
        return -1;
}

static size_t count_writes(const struct memdisk *d, uint64_t off)
{
        size_t n = 0;

        for (size_t i = 0; i < d->n_ops; i++)
                n += d->ops[i].kind == MD_WRITE && d->ops[i].off == off;
        return n;
}

static bool sync_between(const struct memdisk *d, ssize_t a, ssize_t b)
{
        for (ssize_t i = a + 1; i < b; i++)
                if (d->ops[i].kind == MD_SYNC)
                        return true;
        return false;
}

/* Start with @before entries committed, then commit a group of @add. */
static void crossing(unsigned before, unsigned add)
{
        struct memdisk *d = memdisk_new(1000ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };
        unsigned total = before + add;
        uint64_t area1 = 258ull * CH, area0 = 1ull * CH;

        for (unsigned i = 0; i < before; i++)
                put(s, &m, 7 * (uint64_t)i + 1);
        if (before)
                cr_assert_eq(cowvol_store_commit(s), (int)before);
        /* junk where area 1 will be: the commit must zero it */
        memset(d->data + area1, 0xee, CH);
        for (unsigned i = before; i < total; i++)
                put(s, &m, 7 * (uint64_t)i + 1);
        d->record = true;
        cr_assert_eq(cowvol_store_commit(s), (int)add);

        /* the rule: before the full area 0 can land, area 1 holds zeros or
         * its new entries, durably (a reader goes on past a full area) */
        ssize_t z = total > EPA ? find_write(d, area1, false, 0) : find_write(d, area1, true, 0);
        ssize_t w0 = find_write(d, area0, false, 0);
        cr_assert_geq(z, 0, "area 1 was not made readable (zeros or entries)");
        cr_assert_geq(w0, 0, "area 0 was not written");
        cr_assert_lt(z, w0, "area 1 must be written before the full area 0 is written");
        cr_assert(sync_between(d, z, w0), "no flush between writing area 1 and writing area 0");
        cr_assert_eq(d->ops[0].kind, MD_SYNC, "data not flushed first");
        cr_assert_eq(d->ops[d->n_ops - 1].kind, MD_SYNC, "no flush at the end");
        cr_assert_eq(count_writes(d, area0), 1, "area 0 written %zu times", count_writes(d, area0));
        /* area 0, full, holds entries 0..255 */
        for (size_t i = 0; i < EPA; i++) {
                uint64_t e[2];
                memcpy(e, d->ops[w0].data + i * 16, 16);
                cr_assert_eq(le64toh(e[0]), m.e[i].old, "area 0 slot %zu", i);
                cr_assert_eq(le64toh(e[1]), m.e[i].new_chunk, "area 0 slot %zu", i);
        }
        if (total > EPA) {
                ssize_t w1 = z;
                cr_assert_eq(count_writes(d, area1), 1, "area 1: written once, with its entries");
                for (size_t i = EPA; i < total; i++) {
                        uint64_t e[2];
                        memcpy(e, d->ops[w1].data + (i - EPA) * 16, 16);
                        cr_assert_eq(le64toh(e[0]), m.e[i].old, "area 1 slot %zu", i - EPA);
                }
                cr_assert(mem_is_zero(d->ops[w1].data + (total - EPA) * 16, CH - (total - EPA) * 16));
        } else {
                cr_assert_eq(count_writes(d, area1), 1);
        }
        /* only the two areas and flushes */
        for (size_t i = 0; i < d->n_ops; i++)
                if (d->ops[i].kind == MD_WRITE)
                        cr_assert(d->ops[i].off == area0 || d->ops[i].off == area1, "stray write at %" PRIu64,
                                  d->ops[i].off);
        cowvol_store_close(s);

        s = md_open(d, 0);
        verify(s, &m, true);
        verify_order(s, &m);
        /* the next commit goes on in area 1 */
        put(s, &m, 999999);
        cr_assert_eq(cowvol_store_commit(s), 1);
        reopen_verify_free(s, d, &m, true, true);
}

Test(roundtrip, group_crossing_an_area_boundary)
{
        crossing(250, 20);
}

Test(roundtrip, group_filling_an_area_exactly)
{
        crossing(250, 6);
}

Test(roundtrip, one_group_of_a_whole_area)
{
        crossing(0, 256);
}

Test(roundtrip, group_crossing_two_boundaries)
{
        struct memdisk *d = memdisk_new(1000ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };

        for (unsigned i = 0; i < 10; i++)
                put(s, &m, 3 * (uint64_t)i);
        cr_assert_eq(cowvol_store_commit(s), 10);
        memset(d->data + 258ull * CH, 0xee, CH);
        memset(d->data + 515ull * CH, 0xee, CH);
        for (unsigned i = 10; i < 600; i++)
                put(s, &m, 3 * (uint64_t)i);
        d->record = true;
        cr_assert_eq(cowvol_store_commit(s), 590);
        /* areas 1 (full) and 2 (its entries) are durable before area 0,
         * the gate a reader passes to reach them, is written full */
        ssize_t w2 = find_write(d, 515ull * CH, false, 0), w1 = find_write(d, 258ull * CH, false, 0),
                w0 = find_write(d, 1ull * CH, false, 0);
        cr_assert_geq(w2, 0);
        cr_assert_geq(w1, 0);
        cr_assert_geq(w0, 0);
        cr_assert_lt(w2, w0);
        cr_assert_lt(w1, w0);
        cr_assert(sync_between(d, w2 > w1 ? w2 : w1, w0));
        cr_assert_eq(count_writes(d, 1ull * CH), 1);
        reopen_verify_free(s, d, &m, true, true);
}

Test(roundtrip, pending_visible_before_commit)
{
        struct memdisk *d = memdisk_new(100ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };
        struct walk w = { 0 };
        uint64_t c;

        put(s, &m, 17);
        cr_assert_eq(cowvol_store_commit(s), 1);
        c = put(s, &m, 23);
        uint64_t got = 0;
        cr_assert_eq(cowvol_store_lookup(s, 23, &got), 1);
        cr_assert_eq(got, c);
        cr_assert_eq(cowvol_store_count(s), 2);
        /* foreach lists what is committed, read from the disk */
        cr_assert_eq(cowvol_store_foreach(s, walk_fn, &w), 0);
        cr_assert_eq(w.n, 1);
        cr_assert_eq(w.e[0].old, 17);
        /* nothing of it reached the table on disk */
        uint64_t e[2];
        memcpy(e, d->data + CH + 16, 16);
        cr_assert_eq(e[0], 0);
        cr_assert_eq(e[1], 0);
        /* close commits what is pending */
        reopen_verify_free(s, d, &m, true, false);
}

Test(roundtrip, add_duplicate_origin_chunk)
{
        struct memdisk *d = memdisk_new(100ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };
        uint64_t c, got;

        put(s, &m, 5);
        /* pending duplicate */
        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(cowvol_store_add(s, 5, c), -EEXIST);
        cr_assert_eq(cowvol_store_count(s), 1);
        cr_assert_eq(cowvol_store_commit(s), 1);
        /* committed duplicate */
        cr_assert_eq(cowvol_store_add(s, 5, c), -EEXIST);
        cr_assert_eq(cowvol_store_lookup(s, 5, &got), 1);
        cr_assert_eq(got, m.e[0].new_chunk);
        cowvol_store_close(s);
        /* after a reopen */
        s = md_open(d, 0);
        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(cowvol_store_add(s, 5, c), -EEXIST);
        cr_assert_eq(cowvol_store_add(s, 6, c), 0);
        cr_assert_eq(cowvol_store_commit(s), 1);
        cr_assert_eq(count_after_reopen(s, d), 2);
        free(m.e);
        memdisk_free(d);
}

Test(roundtrip, add_unallocated_chunk)
{
        struct memdisk *d = memdisk_new(600ull * CH);
        cowvol_store *s = md_create(d);
        uint64_t c = 0;

        for (int i = 0; i < 300; i++)
                cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(c, 302);
        static const uint64_t bad[] = { 0, 1, 258, 303, 400, 599, 600, 100000, UINT64_MAX };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_assert_lt(cowvol_store_add(s, 10 + i, bad[i]), 0, "store chunk %" PRIu64 " accepted", bad[i]);
        cr_assert_eq(cowvol_store_count(s), 0);
        cr_assert_eq(cowvol_store_add(s, 10, 302), 0);
        cr_assert_eq(cowvol_store_commit(s), 1);
        cr_assert_eq(count_after_reopen(s, d), 1);
        memdisk_free(d);
}

/* The API lets a caller write only what its own open accepts: one store
 * chunk cannot hold the data of two exceptions. */
Test(roundtrip, add_reused_store_chunk_refused)
{
        struct memdisk *d = memdisk_new(100ull * CH);
        cowvol_store *s = md_create(d);
        uint64_t c;

        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(cowvol_store_add(s, 1, c), 0);
        int r = cowvol_store_add(s, 2, c);
        cr_assert_lt(r, 0, "store chunk %" PRIu64 " given to a second exception", c);
        cowvol_store_close(s);
        s = NULL;
        r = exstore_open_io(&memdisk_io, d, 0, &s);
        cr_assert_eq(r, 0, "the store written through the API does not open: %d", r);
        cowvol_store_close(s);
        memdisk_free(d);
}

Test(roundtrip, allocate_until_enospc)
{
        struct memdisk *d = memdisk_new(40ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };
        uint64_t c, n = 0;
        int r;

        for (;;) {
                r = cowvol_store_allocate(s, &c);
                if (r < 0)
                        break;
                cr_assert_eq(cowvol_store_add(s, 500 + n, c), 0);
                model_push(&m, 500 + n, c);
                n++;
        }
        cr_assert_eq(r, -ENOSPC);
        cr_assert_eq(n, 38);
        cr_assert_eq(n, cowvol_store_capacity(s));
        cr_assert(cowvol_store_is_full(s));
        cr_assert_eq(cowvol_store_commit(s), (int)n);
        cr_assert(cowvol_store_is_valid(s));
        cr_assert_eq(cowvol_store_allocate(s, &c), -ENOSPC);
        cowvol_store_close(s);
        s = md_open(d, 0);
        verify(s, &m, false);
        cr_assert_eq(cowvol_store_allocate(s, &c), -ENOSPC);
        cowvol_store_close(s);
        free(m.e);
        memdisk_free(d);
}

Test(roundtrip, invalidate)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "store");
        cowvol_store *s = NULL;
        struct model m = { 0 };
        char line[64];
        uint64_t c;

        cr_assert_eq(cowvol_store_create(p, CH, 50ull * CH, 0, &s), 0);
        for (int i = 0; i < 5; i++)
                put(s, &m, 40 + (uint64_t)i);
        cr_assert_eq(cowvol_store_commit(s), 5);
        cr_assert_eq(cowvol_store_invalidate(s), 0);
        cr_assert_not(cowvol_store_is_valid(s));
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), "Invalid");
        cr_assert_lt(cowvol_store_allocate(s, &c), 0);
        cr_assert_lt(cowvol_store_add(s, 1, 10), 0);
        cowvol_store_close(s);

        /* the header: magic, valid=0, version 1, chunk size, as the kernel writes it */
        uint8_t h[16];
        const uint8_t want[16] = { 0x53, 0x6e, 0x41, 0x70, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0 };
        file_get_bytes(p, 0, h, 16);
        cr_assert_arr_eq(h, want, 16);

        cr_assert_eq(cowvol_store_open(p, 0, &s), 0, "an invalid store opens");
        cr_assert_not(cowvol_store_is_valid(s));
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), "Invalid");
        cr_assert_eq(cowvol_store_lookup(s, 40, &c), 0, "an invalid store's exceptions are not read");
        struct walk w = { 0 };
        cr_assert_eq(cowvol_store_foreach(s, walk_fn, &w), 0);
        cr_assert_eq(w.n, 0);
        cr_assert_lt(cowvol_store_allocate(s, &c), 0);
        cowvol_store_close(s);

        struct fault_list fl = { 0 };
        cr_assert_eq(cowvol_store_check(p, fault_collect, &fl), 1);
        cr_assert(contains_ci(fl.f[0].message, "invalid"), "%s", fl.f[0].message);
        free(m.e);
        free(p);
        tmpdir_remove(dir);
}

/* cowvol.h: "-EROFS on a read-only or invalid store" */
Test(roundtrip, allocate_errors_as_documented)
{
        struct memdisk *d = memdisk_new(50ull * CH);
        cowvol_store *s = md_create(d);
        uint64_t c;

        put(s, NULL, 3);
        cr_assert_eq(cowvol_store_commit(s), 1);
        cowvol_store_close(s);
        s = md_open(d, COWVOL_STORE_RDONLY);
        cr_assert_eq(cowvol_store_allocate(s, &c), -EROFS);
        cr_assert_eq(cowvol_store_invalidate(s), -EROFS);
        cowvol_store_close(s);
        cr_assert_eq(d->n_refused, 0, "a read-only store tried to write");

        s = md_open(d, 0);
        cr_assert_eq(cowvol_store_invalidate(s), 0);
        int r = cowvol_store_allocate(s, &c);
        cr_assert_eq(r, -ESTALE, "allocate on an invalid store: %d (%s), cowvol.h documents -ESTALE", r, strerror(-r));
        cowvol_store_close(s);
        memdisk_free(d);
}

Test(roundtrip, commit_io_error_invalidates)
{
        struct memdisk *d = memdisk_new(50ull * CH);
        cowvol_store *s = md_create(d);
        char line[64];

        put(s, NULL, 3);
        d->write_hook = memdisk_fail_area_0;
        cr_assert_eq(cowvol_store_commit(s), -EIO);
        cr_assert_not(cowvol_store_is_valid(s));
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), "Invalid");
        cowvol_store_close(s);
        d->write_hook = NULL;
        /* the header on disk says invalid */
        uint32_t valid;
        memcpy(&valid, d->data + 4, 4);
        cr_assert_eq(le32toh(valid), 0);
        s = md_open(d, 0);
        cr_assert_not(cowvol_store_is_valid(s));
        cowvol_store_close(s);
        memdisk_free(d);
}

Test(roundtrip, grow_file)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "store");
        cowvol_store *s = NULL;
        struct model m = { 0 };
        uint64_t c;
        int n = 0;

        cr_assert_eq(cowvol_store_create(p, CH, 10ull * CH, 0, &s), 0);
        while (cowvol_store_allocate(s, &c) == 0) {
                uint8_t buf[CH];
                fill_pattern(buf, CH, 77 + (uint64_t)n, c);
                cr_assert_eq(cowvol_store_write_chunk(s, c, buf), 0);
                cr_assert_eq(cowvol_store_add(s, 77 + (uint64_t)n, c), 0);
                model_push(&m, 77 + (uint64_t)n, c);
                n++;
        }
        cr_assert_eq(n, 8);
        cr_assert_eq(cowvol_store_commit(s), 8);
        cr_assert(cowvol_store_is_full(s));
        /* never shrinks */
        cr_assert_eq(cowvol_store_grow(s, 5ull * CH), 0);
        cr_assert_eq(cowvol_store_chunks(s), 10);
        cr_assert_eq(file_size(p), 10ull * CH);

        cr_assert_eq(cowvol_store_grow(s, 600ull * CH), 0);
        cr_assert_eq(cowvol_store_chunks(s), 600);
        cr_assert_eq(file_size(p), 600ull * CH);
        cr_assert_not(cowvol_store_is_full(s));
        c = put(s, &m, 5000);
        cr_assert_eq(c, 10, "allocation goes on at the old end");
        for (int i = 1; i < 300; i++)
                put(s, &m, 5000 + (uint64_t)i);
        cr_assert_eq(cowvol_store_commit(s), 300);
        cowvol_store_close(s);

        cr_assert_eq(cowvol_store_open(p, 0, &s), 0);
        cr_assert_eq(cowvol_store_chunks(s), 600);
        verify(s, &m, true);
        verify_order(s, &m);
        cowvol_store_close(s);

        cr_assert_eq(cowvol_store_open(p, COWVOL_STORE_RDONLY, &s), 0);
        cr_assert_eq(cowvol_store_grow(s, 700ull * CH), -EROFS);
        cowvol_store_close(s);
        cr_assert_eq(file_size(p), 600ull * CH);
        free(m.e);
        free(p);
        tmpdir_remove(dir);
}

/* A store of 258 chunks cannot take chunk 257 (area 1 would lie past the
 * end); grown, it can, and the commit that fills area 0 zeroes area 1. */
Test(roundtrip, grow_past_an_area_boundary)
{
        struct memdisk *d = memdisk_new(258ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };
        uint64_t c;

        d->can_resize = true;
        while (cowvol_store_allocate(s, &c) == 0) {
                cr_assert_eq(cowvol_store_add(s, 3 * c, c), 0);
                model_push(&m, 3 * c, c);
        }
        cr_assert_eq(cowvol_store_commit(s), (int)m.n);
        cr_assert_eq(cowvol_store_grow(s, 300ull * CH), 0);
        for (int i = 0; i < 5; i++) {
                cr_assert_eq(cowvol_store_allocate(s, &c), 0);
                cr_assert_eq(cowvol_store_add(s, 3 * c, c), 0);
                model_push(&m, 3 * c, c);
        }
        cr_assert_eq(cowvol_store_commit(s), 5);
        reopen_verify_free(s, d, &m, false, true);
}

Test(roundtrip, foreach_order)
{
        struct memdisk *d = memdisk_new(800ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };
        uint64_t rng = 7;

        while (m.n < 700) {
                size_t g = 1 + rng_next(&rng) % 90;
                for (size_t i = 0; i < g && m.n < 700; i++)
                        put(s, &m, fresh_old(&m, &rng, 1ull << 30));
                cr_assert_gt(cowvol_store_commit(s), 0);
        }
        verify_order(s, &m);
        /* pending entries are not listed */
        uint64_t c = put(s, NULL, (1ull << 30) + 1);
        verify_order(s, &m);
        cr_assert_eq(cowvol_store_commit(s), 1);
        model_push(&m, (1ull << 30) + 1, c);
        verify_order(s, &m);

        /* a non-zero return stops the walk and is returned */
        static struct walk w;
        memset(&w, 0, sizeof(w));
        w.stop_at = 300;
        w.stop_with = 7;
        cr_assert_eq(cowvol_store_foreach(s, walk_fn, &w), 7);
        cr_assert_eq(w.n, 300);
        cowvol_store_close(s);
        free(m.e);
        memdisk_free(d);
}

/* --- merging ------------------------------------------------------------------- */

struct run {
        uint64_t old, new_chunk; /* lowest of the run */
        int n;
        size_t first;            /* index in the model of the run's first entry */
};

/*
 * The kernel's prepare_merge over the model: the last entry of the current
 * area and the entries before it, in the same area, whose old and new chunks
 * both step down by one.
 */
static size_t spec_runs(const struct model *m, struct run *out)
{
        size_t end = m->n, k = 0;

        while (end > 0) {
                size_t last = end - 1, area_start = last / EPA * EPA, i = last;
                while (i > area_start && m->e[i - 1].old == m->e[i].old - 1 &&
                       m->e[i - 1].new_chunk == m->e[i].new_chunk - 1)
                        i--;
                out[k++] = (struct run){ m->e[i].old, m->e[i].new_chunk, (int)(last - i + 1), i };
                end = i;
        }
        return k;
}

/* write @old's pattern into the allocated chunk @c and add old -> c */
static void put_at(cowvol_store *s, struct model *m, uint64_t old, uint64_t c)
{
        uint8_t buf[CH];

        fill_pattern(buf, sizeof(buf), old, c);
        cr_assert_eq(cowvol_store_write_chunk(s, c, buf), 0);
        cr_assert_eq(cowvol_store_add(s, old, c), 0, "add %" PRIu64 " -> %" PRIu64, old, c);
        model_push(m, old, c);
}

#define MERGE_N 560u

/* Which allocated chunk slot i gets: slots 250..261 swap with 300..311, so
 * that the run at slots 250..261 has consecutive store chunks (they do not
 * straddle metadata chunk 258) and only the area boundary splits it. */
static size_t merge_pool_index(size_t slot)
{
        if (slot >= 250 && slot < 262)
                return slot + 50;
        if (slot >= 300 && slot < 312)
                return slot - 50;
        return slot;
}

/* A workload of runs (consecutive old and new chunks), scattered entries,
 * near-runs that must not merge, and a run straddling areas 0 and 1. */
static void merge_workload(cowvol_store *s, struct model *m)
{
        uint64_t rng = 1234, base = 1000000, pool[MERGE_N + 16];

        for (size_t i = 0; i < MERGE_N + 16; i++)
                cr_assert_eq(cowvol_store_allocate(s, &pool[i]), 0);
#define NEXT_CHUNK() pool[merge_pool_index(m->n)]
        while (m->n < MERGE_N) {
                unsigned kind = (unsigned)(rng_next(&rng) % 4);
                if (m->n == 250) {
                        /* a run of 12 from slot 250 of area 0 into area 1 */
                        for (uint64_t i = 0; i < 12; i++)
                                put_at(s, m, base + i, NEXT_CHUNK());
                        base += 1000;
                } else if (kind == 1 || (m->n >= 235 && m->n < 250)) {
                        put_at(s, m, fresh_old(m, &rng, 500000), NEXT_CHUNK());
                } else if (kind == 0) {
                        unsigned len = 2 + (unsigned)(rng_next(&rng) % 9);
                        for (uint64_t i = 0; i < len; i++)
                                put_at(s, m, base + i, NEXT_CHUNK());
                        base += 1000;
                } else if (kind == 2) {
                        /* consecutive origin chunks, store chunks swapped */
                        uint64_t a = pool[merge_pool_index(m->n)], b = pool[merge_pool_index(m->n + 1)];
                        put_at(s, m, base, b);
                        put_at(s, m, base + 1, a);
                        base += 1000;
                } else {
                        /* descending origin chunks */
                        put_at(s, m, base + 5, NEXT_CHUNK());
                        put_at(s, m, base + 4, NEXT_CHUNK());
                        base += 1000;
                }
                if (rng_next(&rng) % 3 == 0)
                        cr_assert_geq(cowvol_store_commit(s), 0);
        }
#undef NEXT_CHUNK
        cr_assert_geq(cowvol_store_commit(s), 0);
}

static void merge_setup(struct memdisk **ret_d, cowvol_store **ret_s, struct model *m, struct run *runs,
                        size_t *ret_nruns)
{
        struct memdisk *d = memdisk_new(1000ull * CH);
        cowvol_store *s = md_create(d);
        bool long_run = false, split = false, swapped = false;

        merge_workload(s, m);
        *ret_nruns = spec_runs(m, runs);
        /* the workload has what the test claims to test */
        for (size_t i = 0; i < *ret_nruns; i++) {
                long_run |= runs[i].n >= 3;
                split |= runs[i].first == EPA && runs[i].n == 6 && i + 1 < *ret_nruns && runs[i + 1].first == 250;
        }
        for (size_t i = 1; i < m->n; i++)
                swapped |= m->e[i].old == m->e[i - 1].old + 1 && m->e[i].new_chunk + 1 == m->e[i - 1].new_chunk;
        cr_assert(long_run);
        cr_assert(swapped);
        cr_assert(split, "no run split at the area boundary");
        /* only the area boundary splits it: old and new both step across it */
        cr_assert_eq(m->e[EPA].old, m->e[EPA - 1].old + 1);
        cr_assert_eq(m->e[EPA].new_chunk, m->e[EPA - 1].new_chunk + 1);
        cr_assert_gt(m->n, 2 * EPA);
        *ret_d = d;
        *ret_s = s;
}

/* One merge step: prepare must name @r; the run is looked up, then gone. */
static void merge_step(cowvol_store *s, const struct model *m, const struct run *r, size_t remaining_before)
{
        uint64_t old = 0, nw = 0, got;

        int n = cowvol_store_merge_prepare(s, &old, &nw);
        cr_assert_eq(n, r->n, "run at entry %zu: prepare gave %d, the kernel's rule %d", r->first, n, r->n);
        cr_assert_eq(old, r->old, "run at entry %zu: old %" PRIu64 ", expected %" PRIu64, r->first, old, r->old);
        cr_assert_eq(nw, r->new_chunk, "run at entry %zu", r->first);
        for (int i = 0; i < n; i++) {
                cr_assert_eq(cowvol_store_lookup(s, old + (uint64_t)i, &got), 1);
                cr_assert_eq(got, nw + (uint64_t)i);
        }
        cr_assert_eq(cowvol_store_merge_commit(s, n), 0);
        for (int i = 0; i < n; i++)
                cr_assert_eq(cowvol_store_lookup(s, old + (uint64_t)i, &got), 0, "merged chunk still there");
        cr_assert_eq(cowvol_store_count(s), remaining_before - (size_t)n);
        /* the entries before the run are all still there */
        if (r->first > 0) {
                cr_assert_eq(cowvol_store_lookup(s, m->e[r->first - 1].old, &got), 1);
                cr_assert_eq(cowvol_store_lookup(s, m->e[0].old, &got), 1);
        }
}

static void check_remaining(const cowvol_store *s, struct model *m, size_t remaining)
{
        size_t n = m->n;

        m->n = remaining;
        verify(s, m, true);
        verify_order(s, m);
        m->n = n;
}

/* A merged store: what its status line counts as allocated is metadata alone. */
static void assert_only_metadata(const cowvol_store *s)
{
        struct cowvol_store_usage u;

        cr_assert_eq(cowvol_store_usage(s, &u), 0);
        cr_assert_eq(u.allocated_sectors, u.metadata_sectors);
}

Test(roundtrip, merge_follows_the_kernels_rule)
{
        static struct run runs[1024];
        struct memdisk *d;
        cowvol_store *s;
        struct model m = { 0 };
        size_t nruns, remaining;
        struct cowvol_store_usage u;
        uint64_t o, w;

        merge_setup(&d, &s, &m, runs, &nruns);
        remaining = m.n;
        for (size_t i = 0; i < nruns; i++) {
                merge_step(s, &m, &runs[i], remaining);
                remaining -= (size_t)runs[i].n;
                cr_assert_eq(remaining, runs[i].first);
                cr_assert_eq(cowvol_store_usage(s, &u), 0);
                if (remaining)
                        cr_assert_neq(u.allocated_sectors, u.metadata_sectors, "merge looks finished at %zu",
                                      remaining);
        }
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &w), 0, "something left after the last run");
        cr_assert_eq(cowvol_store_count(s), 0);
        /* finished, as the kernel defines it */
        cr_assert_eq(cowvol_store_usage(s, &u), 0);
        cr_assert_eq(u.allocated_sectors, u.metadata_sectors);
        char line[64], want[64];
        snprintf(want, sizeof(want), "16/%u 16", 1000u * 8);
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), want);
        /* the table on disk is empty: every area zero */
        cr_assert(mem_is_zero(d->data + 1ull * CH, CH));
        cr_assert(mem_is_zero(d->data + 258ull * CH, CH));
        cr_assert(mem_is_zero(d->data + 515ull * CH, CH));
        cowvol_store_close(s);
        free(m.e);
        memdisk_free(d);
}

Test(roundtrip, merge_reopen_midway)
{
        static struct run runs[1024];
        struct memdisk *d;
        cowvol_store *s;
        struct model m = { 0 };
        size_t nruns, remaining, i = 0;
        uint64_t o, w;

        merge_setup(&d, &s, &m, runs, &nruns);
        remaining = m.n;
        /* stop at several points: inside area 2, right at the end of area 1's
         * run, inside area 0 */
        size_t stops[] = { 3, 0, 0 };
        for (size_t k = 0; k < nruns; k++)
                if (runs[k].first <= EPA && !stops[1])
                        stops[1] = k + 1;
        stops[2] = nruns - 4;
        cr_assert(stops[0] < stops[1] && stops[1] < stops[2]);
        cr_assert_eq(runs[stops[1] - 1].first, EPA, "the second stop empties area 1");
        for (size_t st = 0; st < 3; st++) {
                for (; i < stops[st]; i++) {
                        merge_step(s, &m, &runs[i], remaining);
                        remaining -= (size_t)runs[i].n;
                }
                cowvol_store_close(s);
                s = md_open(d, 0);
                check_remaining(s, &m, remaining);
        }
        for (; i < nruns; i++) {
                merge_step(s, &m, &runs[i], remaining);
                remaining -= (size_t)runs[i].n;
        }
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &w), 0);
        assert_only_metadata(s);
        cowvol_store_close(s);
        free(m.e);
        memdisk_free(d);
}

/* An area emptied by the merge stays on disk as zeros; the reopened store
 * goes back to the area before it. */
Test(roundtrip, merge_reopen_after_emptying_an_area)
{
        struct memdisk *d = memdisk_new(600ull * CH);
        cowvol_store *s = md_create(d);
        struct model m = { 0 };
        uint64_t o, w;

        for (uint64_t i = 0; i < 300; i++)
                put(s, &m, 10 * i); /* no runs: one entry a step */
        cr_assert_eq(cowvol_store_commit(s), 300);
        for (size_t i = 0; i < 44; i++) {
                cr_assert_eq(cowvol_store_merge_prepare(s, &o, &w), 1);
                cr_assert_eq(o, m.e[299 - i].old);
                cr_assert_eq(cowvol_store_merge_commit(s, 1), 0);
        }
        cowvol_store_close(s);
        s = md_open(d, 0);
        check_remaining(s, &m, 256);
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &w), 1);
        cr_assert_eq(o, m.e[255].old);
        cr_assert_eq(w, m.e[255].new_chunk);
        cowvol_store_close(s);
        free(m.e);
        memdisk_free(d);
}

/* Steps of many runs (exstore_merge_peek/clear): the last entries, across
 * areas, the last first; cleared, the table on disk is the prefix left,
 * whatever the step's size and wherever it stops in an area. */
Test(roundtrip, merge_many_across_areas)
{
        static struct run runs[1024];
        static struct exstore_entry e[4096];
        struct memdisk *d;
        cowvol_store *s;
        struct model m = { 0 };
        size_t nruns, remaining, sizes[] = { 5, EPA + 7, 1, EPA, 300, 4096 };
        uint64_t got;

        merge_setup(&d, &s, &m, runs, &nruns);
        remaining = m.n;
        for (size_t st = 0; st < sizeof(sizes) / sizeof(*sizes) && remaining; st++) {
                size_t want = sizes[st] < remaining ? sizes[st] : remaining;
                ssize_t n = exstore_merge_peek(s, sizes[st], e);
                cr_assert_eq(n, (ssize_t)want, "step %zu: peek gave %zd of %zu left", st, n, remaining);
                /* a peek changes nothing: again, the same */
                cr_assert_eq(exstore_merge_peek(s, sizes[st], e), n);
                for (size_t i = 0; i < want; i++) {
                        cr_assert_eq(e[i].old, m.e[remaining - 1 - i].old, "step %zu entry %zu", st, i);
                        cr_assert_eq(e[i].new_chunk, m.e[remaining - 1 - i].new_chunk);
                        cr_assert_eq(cowvol_store_lookup(s, e[i].old, &got), 1);
                }
                cr_assert_eq(exstore_merge_clear(s, want), 0);
                remaining -= want;
                for (size_t i = 0; i < want; i++)
                        cr_assert_eq(cowvol_store_lookup(s, e[i].old, &got), 0, "merged chunk still there");
                cr_assert_eq(cowvol_store_count(s), remaining);
                cowvol_store_close(s);
                s = md_open(d, 0);
                check_remaining(s, &m, remaining);
        }
        cr_assert_eq(remaining, 0, "the steps took the whole table (%zu entries)", m.n);
        cr_assert_eq(exstore_merge_peek(s, 10, e), 0);
        assert_only_metadata(s);
        cowvol_store_close(s);
        free(m.e);
        memdisk_free(d);
}

Test(roundtrip, merge_refuses_bad_counts)
{
        struct memdisk *d = memdisk_new(100ull * CH);
        cowvol_store *s = md_create(d);
        uint64_t o, w;

        for (uint64_t i = 0; i < 4; i++)
                put(s, NULL, 100 + i);
        /* pending exceptions: commit first */
        cr_assert_lt(cowvol_store_merge_prepare(s, &o, &w), 0);
        cr_assert_eq(cowvol_store_commit(s), 4);
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &w), 4);
        cr_assert_eq(o, 100);
        cr_assert_eq(w, 2);
        cr_assert_lt(cowvol_store_merge_commit(s, 5), 0);
        cr_assert_lt(cowvol_store_merge_commit(s, 0), 0);
        cr_assert_lt(cowvol_store_merge_commit(s, -1), 0);
        cr_assert_eq(cowvol_store_count(s), 4);
        cr_assert_eq(cowvol_store_merge_commit(s, 2), 0);
        cr_assert_eq(cowvol_store_count(s), 2);
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &w), 2);
        cr_assert_eq(o, 100);
        cowvol_store_close(s);
        memdisk_free(d);
}

/* A store whose merge finished is an empty store: it opens. */
Test(roundtrip, merge_complete_then_reopen)
{
        struct memdisk *d = memdisk_new(100ull * CH);
        cowvol_store *s = md_create(d);
        uint64_t o, w;
        int n;

        for (uint64_t i = 0; i < 5; i++)
                put(s, NULL, 100 + 2 * i);
        cr_assert_eq(cowvol_store_commit(s), 5);
        while ((n = cowvol_store_merge_prepare(s, &o, &w)) > 0)
                cr_assert_eq(cowvol_store_merge_commit(s, n), 0);
        cr_assert_eq(n, 0);
        cowvol_store_close(s);
        s = md_open(d, 0);
        cr_assert_eq(cowvol_store_count(s), 0);
        assert_only_metadata(s);
        cowvol_store_close(s);
        memdisk_free(d);
}

/* --- view ---------------------------------------------------------------------- */

Test(roundtrip, view_overlays_the_origin)
{
        char *dir = tmpdir_make(), *sp = path_in(dir, "store"), *op = path_in(dir, "origin"),
             *vp = path_in(dir, "view");
        const uint64_t osize = 20ull * CH + 1000; /* a partial last chunk */
        uint8_t *expect = calloc(1, osize), *orig = malloc(osize), buf[CH], *got;
        cowvol_store *s = NULL;
        size_t len;
        int fd;

        /* origin: data in chunks 0..4 and 9..19 and the tail, a hole in 5..8 */
        fd = open(op, O_RDWR | O_CREAT | O_TRUNC, 0644);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, (off_t)osize), 0);
        for (uint64_t c = 0; c <= 20; c++) {
                if (c >= 5 && c <= 8)
                        continue;
                size_t n = c == 20 ? 1000 : CH;
                fill_pattern(expect + c * CH, n, 0xdead, c);
                cr_assert_eq(pwrite(fd, expect + c * CH, n, (off_t)(c * CH)), (ssize_t)n);
        }
        close(fd);
        memcpy(orig, expect, osize);

        cr_assert_eq(cowvol_store_create(sp, CH, 64ull * CH, 0, &s), 0);
        /* exceptions: in data, in the hole, on the partial chunk, beyond the origin */
        static const uint64_t olds[] = { 0, 3, 6, 19, 20, 25 };
        for (size_t i = 0; i < sizeof(olds) / sizeof(olds[0]); i++) {
                uint64_t c = put(s, NULL, olds[i]);
                fill_pattern(buf, CH, olds[i], c);
                if (olds[i] * CH < osize)
                        memcpy(expect + olds[i] * CH, buf, olds[i] == 20 ? 1000 : CH);
        }
        /* one whose store chunk was never written (a hole of the store: zeros) */
        uint64_t c;
        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(cowvol_store_add(s, 10, c), 0);
        memset(expect + 10 * CH, 0, CH);
        cr_assert_eq(cowvol_store_commit(s), 7);

        /* the output exists, longer, full of junk: it is replaced */
        fd = open(vp, O_RDWR | O_CREAT | O_TRUNC, 0644);
        cr_assert_geq(fd, 0);
        memset(buf, 0x77, CH);
        for (int i = 0; i < 40; i++)
                cr_assert_eq(write(fd, buf, CH), (ssize_t)CH);
        close(fd);

        cr_assert_eq(cowvol_store_view(s, op, vp), 0);
        got = file_read_all(vp, &len);
        cr_assert_eq(len, osize);
        for (uint64_t k = 0; k <= 20; k++)
                cr_assert_arr_eq(got + k * CH, expect + k * CH, k == 20 ? 1000 : CH, "view chunk %" PRIu64, k);
        free(got);

        /* the origin is untouched */
        got = file_read_all(op, &len);
        cr_assert_eq(len, osize);
        cr_assert_arr_eq(got, orig, osize);
        free(got);

        /* an invalid store has no content */
        cr_assert_eq(cowvol_store_invalidate(s), 0);
        cr_assert_lt(cowvol_store_view(s, op, vp), 0);
        cowvol_store_close(s);
        free(expect);
        free(orig);
        free(sp);
        free(op);
        free(vp);
        tmpdir_remove(dir);
}

Test(roundtrip, one_writer_at_a_time)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "store");
        cowvol_store *s = NULL, *t = NULL;

        cr_assert_eq(cowvol_store_create(p, CH, 20ull * CH, 0, &s), 0);
        put(s, NULL, 1);
        cr_assert_eq(cowvol_store_commit(s), 1);
        /* the creator holds it: a second writer is refused, a reader is not */
        cr_assert_eq(cowvol_store_open(p, 0, &t), -EBUSY);
        cr_assert_null(t);
        cr_assert_eq(cowvol_store_open(p, COWVOL_STORE_RDONLY, &t), 0);
        cr_assert_eq(cowvol_store_count(t), 1);
        cowvol_store_close(t);
        cowvol_store_close(s);
        cr_assert_eq(cowvol_store_open(p, 0, &s), 0);
        cr_assert_eq(cowvol_store_open(p, 0, &t), -EBUSY);
        cowvol_store_close(s);
        cr_assert_eq(cowvol_store_open(p, 0, &s), 0);
        cowvol_store_close(s);
        free(p);
        tmpdir_remove(dir);
}
