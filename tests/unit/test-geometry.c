/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Geometry of the kernel's persistent store (store-format.md, "Geometry"):
 * exceptions per area, where the metadata areas lie, the allocation order,
 * the status figures, the header bytes, the capacity; and size parsing.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "testlib.h"

#define K4 4096u

/* The kernel's allocator, as the format notes state it. */
static uint64_t spec_alloc(uint64_t *next_free, uint64_t epa)
{
        uint64_t c = (*next_free)++;

        if (*next_free % (epa + 1) == 1)
                (*next_free)++;
        return c;
}

static cowvol_store *md_create(struct memdisk *d, uint32_t chunk)
{
        cowvol_store *s = NULL;

        cr_assert_eq(exstore_create_io(&memdisk_io, d, chunk, 0, &s), 0);
        cr_assert_not_null(s);
        return s;
}

static cowvol_store *md_open(struct memdisk *d)
{
        cowvol_store *s = NULL;

        cr_assert_eq(exstore_open_io(&memdisk_io, d, 0, &s), 0);
        cr_assert_not_null(s);
        return s;
}

/* Allocate, add (origin old0 + i) and commit @n exceptions, one by one or as
 * one group; returns the store chunks in *ret (caller frees). */
static uint64_t *add_many(cowvol_store *s, uint64_t n, uint64_t old0, bool one_group)
{
        uint64_t *c = calloc(n ? n : 1, sizeof(*c));

        cr_assert_not_null(c);
        for (uint64_t i = 0; i < n; i++) {
                cr_assert_eq(cowvol_store_allocate(s, &c[i]), 0, "allocation %" PRIu64, i);
                cr_assert_eq(cowvol_store_add(s, old0 + i, c[i]), 0);
                if (!one_group)
                        cr_assert_eq(cowvol_store_commit(s), 1);
        }
        if (one_group && n)
                cr_assert_eq(cowvol_store_commit(s), (int)n);
        return c;
}

Test(geometry, exceptions_per_area)
{
        static const struct {
                uint32_t chunk, epa;
        } t[] = { { 4096, 256 }, { 65536, 4096 }, { 524288, 32768 } };
        char *dir = tmpdir_make();

        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                char name[32];
                snprintf(name, sizeof(name), "s%zu", i);
                char *p = path_in(dir, name);
                cowvol_store *s = NULL;

                cr_assert_eq(cowvol_store_create(p, t[i].chunk, 3ull * t[i].chunk, 0, &s), 0);
                cr_assert_eq(cowvol_store_chunk_size(s), t[i].chunk);
                cr_assert_eq(cowvol_store_exceptions_per_area(s), t[i].epa);
                cr_assert_eq(cowvol_store_chunks(s), 3);
                /* one exception, so the reopened store is not empty */
                uint64_t c;
                cr_assert_eq(cowvol_store_allocate(s, &c), 0);
                cr_assert_eq(c, 2);
                cr_assert_eq(cowvol_store_add(s, 9, c), 0);
                cr_assert_eq(cowvol_store_commit(s), 1);
                s = cowvol_store_close(s);
                /* and so after reopening, from the header */
                cr_assert_eq(cowvol_store_open(p, COWVOL_STORE_RDONLY, &s), 0);
                cr_assert_eq(cowvol_store_exceptions_per_area(s), t[i].epa);
                cr_assert_eq(cowvol_store_chunk_size(s), t[i].chunk);
                cr_assert_eq(cowvol_store_count(s), 1);
                cowvol_store_close(s);
                free(p);
        }
        tmpdir_remove(dir);
}

Test(geometry, create_refuses_bad_chunk_sizes_and_tiny_stores)
{
        static const uint32_t bad[] = { 0, 512, 2048, 4095, 12288, 1u << 20, 3u << 12 };
        struct memdisk *d = memdisk_new(64 * 4096);

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cowvol_store *s = NULL;
                cr_assert_eq(exstore_create_io(&memdisk_io, d, bad[i], 0, &s), -EINVAL, "chunk %u", bad[i]);
                cr_assert_null(s);
        }
        cr_assert_eq(d->n_pwrite, 0, "a refused create wrote");
        memdisk_free(d);

        /* fewer than 3 chunks: no room for header, area 0 and one data chunk */
        d = memdisk_new(2 * 4096 + 4095);
        cowvol_store *s = NULL;
        cr_assert_lt(exstore_create_io(&memdisk_io, d, 4096, 0, &s), 0);
        cr_assert_null(s);
        cr_assert_eq(d->n_pwrite, 0);
        memdisk_free(d);
}

/* the one chunk-size check every part of cowvol calls */
Test(geometry, chunk_size_valid)
{
        static const uint64_t good[] = { 4096, 8192, 16384, 65536, 256u << 10, 512u << 10 };
        static const uint64_t bad[] = { 0, 1, 512, 2048, 4095, 4097, 12288, 3u << 12, (512u << 10) + 4096,
                                        1u << 20, 1ull << 32, (1ull << 32) + 4096, UINT64_MAX,
                                        (uint64_t)-4096, 1ull << 63 };

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                cr_assert(cowvol_chunk_size_valid(good[i]), "%" PRIu64 " refused", good[i]);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_assert_not(cowvol_chunk_size_valid(bad[i]), "%" PRIu64 " accepted", bad[i]);
        cr_assert(cowvol_chunk_size_valid(COWVOL_CHUNK_MIN));
        cr_assert(cowvol_chunk_size_valid(COWVOL_CHUNK_MAX));
        cr_assert(cowvol_chunk_size_valid(COWVOL_CHUNK_DEFAULT));
}

Test(geometry, metadata_areas_at_1_258_515)
{
        struct memdisk *d = memdisk_new(600ull * K4);
        cowvol_store *s = md_create(d, K4);
        const uint64_t n = 256 + 256 + 1;
        uint64_t *c = add_many(s, n, 1000, false);

        for (uint64_t i = 0; i < n; i++) {
                cr_assert_neq(c[i], 0);
                cr_assert_neq(c[i], 1);
                cr_assert_neq(c[i], 258);
                cr_assert_neq(c[i], 515);
        }
        /* the entries, raw: area 0 in chunk 1, area 1 in chunk 258, area 2 in 515 */
        static const uint64_t loc[] = { 1, 258, 515 };
        for (uint64_t i = 0; i < n; i++) {
                uint64_t a = i / 256, slot = i % 256, e[2];
                memcpy(e, d->data + loc[a] * K4 + slot * 16, 16);
                cr_assert_eq(le64toh(e[0]), 1000 + i, "entry %" PRIu64 " old", i);
                cr_assert_eq(le64toh(e[1]), c[i], "entry %" PRIu64 " new", i);
        }
        /* area 2 ends after its one entry */
        cr_assert(mem_is_zero(d->data + 515 * K4 + 16, K4 - 16));
        cowvol_store_close(s);
        free(c);
        memdisk_free(d);
}

Test(geometry, allocation_order_skips_metadata)
{
        struct memdisk *d = memdisk_new(1000ull * K4);
        cowvol_store *s = md_create(d, K4);
        uint64_t c, want = 2;

        for (int i = 0; i < 300; i++) {
                cr_assert_eq(cowvol_store_allocate(s, &c), 0);
                cr_assert_neq(c, 0);
                cr_assert_neq(c, 1);
                cr_assert_neq(c, 258);
                if (i < 256)
                        cr_assert_eq(c, 2 + (uint64_t)i, "allocation %d gave %" PRIu64, i, c);
                else
                        cr_assert_eq(c, 259 + (uint64_t)(i - 256), "allocation %d gave %" PRIu64, i, c);
                cr_assert_eq(c, want);
                want++;
                if (want == 258)
                        want = 259;
        }
        cowvol_store_close(s);
        memdisk_free(d);
}

Test(geometry, allocation_order_64k)
{
        struct memdisk *d = memdisk_new(8ull * 65536);
        cowvol_store *s = md_create(d, 65536);
        uint64_t c;

        for (uint64_t i = 0; i < 6; i++) {
                cr_assert_eq(cowvol_store_allocate(s, &c), 0);
                cr_assert_eq(c, 2 + i);
        }
        cowvol_store_close(s);
        memdisk_free(d);
}

Test(geometry, usage_of_a_fresh_store)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "s");
        cowvol_store *s = NULL;
        struct cowvol_store_usage u;
        char line[128], want[128];

        cr_assert_eq(cowvol_store_create(p, K4, 1000ull * K4, 0, &s), 0);
        cr_assert_eq(cowvol_store_usage(s, &u), 0);
        /* allocated = next_free (2) * 8, metadata = (area 0 + 2) * 8 */
        cr_assert_eq(u.allocated_sectors, 16);
        cr_assert_eq(u.metadata_sectors, 16);
        cr_assert_eq(u.total_sectors, 1000ull * 8);
        snprintf(want, sizeof(want), "16/%u 16", 1000u * 8);
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), want);
        cowvol_store_close(s);

        /* 64K chunks: 128 sectors a chunk */
        free(p);
        p = path_in(dir, "s64");
        cr_assert_eq(cowvol_store_create(p, 65536, 10ull * 65536, 0, &s), 0);
        snprintf(want, sizeof(want), "256/%u 256", 10u * 128);
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), want);
        cowvol_store_close(s);
        free(p);
        tmpdir_remove(dir);
}

/* The status figures after @n one-by-one commits in a 4K store of 1000
 * chunks, from the spec's formulas. */
static void check_status_after(uint64_t n)
{
        struct memdisk *d = memdisk_new(1000ull * K4);
        cowvol_store *s = md_create(d, K4);
        uint64_t nf = 2, *c;
        char line[128], want[128];
        struct cowvol_store_usage u;

        for (uint64_t i = 0; i < n; i++)
                spec_alloc(&nf, 256);
        c = add_many(s, n, 7, false);
        /* current area: the one the next entry goes to */
        uint64_t current_area = n / 256;
        snprintf(want, sizeof(want), "%" PRIu64 "/%u %" PRIu64, nf * 8, 1000u * 8, (current_area + 2) * 8);
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), want, "after %" PRIu64, n);
        cr_assert_eq(cowvol_store_usage(s, &u), 0);
        cr_assert_eq(u.allocated_sectors, nf * 8);
        cr_assert_eq(u.metadata_sectors, (current_area + 2) * 8);
        cowvol_store_close(s);

        if (n == 0) { /* reopening an empty store: see test-validate.c */
                free(c);
                memdisk_free(d);
                return;
        }
        /* reopened: next_free = max(new) + 1 then the skip; same figures */
        s = md_open(d);
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), want, "reopened after %" PRIu64, n);
        cr_assert_eq(cowvol_store_count(s), n);
        cowvol_store_close(s);
        free(c);
        memdisk_free(d);
}

Test(geometry, status_after_300_commits)
{
        /* 300 allocations: 2..257, 259..302, next_free 303; area 0 full, area 1
         * current: metadata = 3 * 8 */
        check_status_after(300);
        {
                struct memdisk *d = memdisk_new(1000ull * K4);
                cowvol_store *s = md_create(d, K4);
                uint64_t *c = add_many(s, 300, 0, false);
                char line[64];
                cr_assert_eq(c[299], 302);
                cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), "2424/8000 24");
                cowvol_store_close(s);
                free(c);
                memdisk_free(d);
        }
}

Test(geometry, status_at_area_boundaries)
{
        check_status_after(0);
        check_status_after(1);
        check_status_after(255);
        check_status_after(256); /* area 0 full: area 1 current, next_free 259 */
        check_status_after(257);
        check_status_after(512);
}

static void check_header(uint32_t chunk)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "s");
        uint8_t *junk = malloc(4ull * chunk), *buf;
        size_t len;
        cowvol_store *s = NULL;
        uint32_t sectors = chunk / 512;
        const uint8_t want[16] = {
                0x53, 0x6e, 0x41, 0x70, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                (uint8_t)sectors, (uint8_t)(sectors >> 8), (uint8_t)(sectors >> 16), (uint8_t)(sectors >> 24),
        };

        /* the file holds junk before: create must zero what it claims */
        memset(junk, 0xa5, 4ull * chunk);
        FILE *f = fopen(p, "w");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(junk, 1, 4ull * chunk, f), 4ull * chunk);
        fclose(f);
        /* data that is not a store is not overwritten unless forced */
        cr_assert_eq(cowvol_store_create(p, chunk, 0, 0, &s), -EEXIST);
        buf = file_read_all(p, &len);
        cr_assert_arr_eq(buf, junk, 4ull * chunk, "a refused create changed the file");
        free(buf);
        if (chunk == 4096) {
                cr_assert_eq(cowvol_store_create(p, chunk, 0, COWVOL_STORE_FORCE, &s), 0);
        } else {
                /* LVM's way: the first 4 KiB zeroed, junk after it */
                file_put_bytes(p, 0, (uint8_t[4096]){ 0 }, 4096);
                cr_assert_eq(cowvol_store_create(p, chunk, 0, 0, &s), 0);
        }
        cowvol_store_close(s);

        buf = file_read_all(p, &len);
        cr_assert_eq(len, 4ull * chunk);
        cr_assert_arr_eq(buf, want, 16, "header bytes for chunk %u", chunk);
        cr_assert(mem_is_zero(buf + 16, chunk - 16), "rest of chunk 0 not zero");
        cr_assert(mem_is_zero(buf + chunk, chunk), "chunk 1 (area 0) not zero");
        /* the data chunks are not the store's business */
        cr_assert_eq(buf[2ull * chunk], 0xa5);
        free(buf);
        free(junk);
        free(p);
        tmpdir_remove(dir);
}

Test(geometry, header_bytes)
{
        check_header(4096);
        check_header(65536);
        check_header(524288);
}

Test(geometry, create_refuses_an_existing_store)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "s");
        cowvol_store *s = NULL;

        cr_assert_eq(cowvol_store_create(p, K4, 10 * K4, 0, &s), 0);
        uint64_t c;
        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(cowvol_store_add(s, 5, c), 0);
        cr_assert_eq(cowvol_store_commit(s), 1);
        cowvol_store_close(s);
        s = NULL;
        cr_assert_eq(cowvol_store_create(p, K4, 0, 0, &s), -EEXIST);
        cr_assert_null(s);
        /* untouched */
        cr_assert_eq(cowvol_store_open(p, COWVOL_STORE_RDONLY, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 1);
        cowvol_store_close(s);
        /* forced: a new, empty store */
        cr_assert_eq(cowvol_store_create(p, K4, 0, COWVOL_STORE_FORCE, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 0);
        cowvol_store_close(s);
        /* on disk: area 0 zeroed again (reopening an empty store is tested in
         * test-validate.c) */
        uint8_t area[4096];
        file_get_bytes(p, 4096, area, sizeof(area));
        cr_assert(mem_is_zero(area, sizeof(area)));
        free(p);
        tmpdir_remove(dir);
}

/*
 * How many exceptions a store of @chunks 4K chunks can take, from the spec:
 * the kernel allocates next_free while (next_free + 1) * chunk <= size; but
 * the commit that fills an area must zero the next area first, so an
 * allocation that fills an area whose successor lies past the end can never
 * be committed (the kernel would invalidate): it does not count.
 */
static uint64_t spec_capacity(uint64_t chunks, uint64_t epa)
{
        uint64_t nf = 2, n = 0;

        while (nf + 1 <= chunks) {
                uint64_t c = spec_alloc(&nf, epa);
                uint64_t slot = (c - 2) % (epa + 1); /* data slot within its area */
                uint64_t area = (c - 2) / (epa + 1);
                if (slot == epa - 1 && 1 + (epa + 1) * (area + 1) >= chunks)
                        break;
                n++;
        }
        return n;
}

Test(geometry, spec_capacity_sanity)
{
        /* hand-counted: data chunks 2..257 in area 0, 259.. in area 1 */
        cr_assert_eq(spec_capacity(3, 256), 1);
        cr_assert_eq(spec_capacity(257, 256), 255);
        cr_assert_eq(spec_capacity(258, 256), 255); /* 257 would fill area 0; area 1 missing */
        cr_assert_eq(spec_capacity(259, 256), 256);
        cr_assert_eq(spec_capacity(260, 256), 257);
        cr_assert_eq(spec_capacity(515, 256), 511);
        cr_assert_eq(spec_capacity(516, 256), 512);
}

Test(geometry, capacity_matches_brute_force)
{
        static const uint64_t sizes[] = { 3, 4, 200, 257, 258, 259, 260, 514, 515, 516, 517, 1000 };

        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                struct memdisk *d = memdisk_new(sizes[i] * K4 + 1000); /* a partial chunk is not used */
                cowvol_store *s = md_create(d, K4);
                uint64_t cap = cowvol_store_capacity(s), n = 0, c;
                int r;

                cr_assert_eq(cowvol_store_chunks(s), sizes[i]);
                for (;;) {
                        bool full = cowvol_store_is_full(s);
                        r = cowvol_store_allocate(s, &c);
                        if (r < 0) {
                                cr_assert(full, "is_full false but allocation failed (%d) at %" PRIu64, r, n);
                                break;
                        }
                        cr_assert_not(full, "is_full true but allocation %" PRIu64 " succeeded", n);
                        cr_assert_lt(c, sizes[i]);
                        cr_assert_eq(cowvol_store_add(s, 100000 + n, c), 0);
                        cr_assert_eq(cowvol_store_commit(s), 1, "commit %" PRIu64 " of a %" PRIu64 "-chunk store", n,
                                     sizes[i]);
                        n++;
                }
                cr_assert_eq(r, -ENOSPC);
                cr_assert(cowvol_store_is_full(s));
                cr_assert(cowvol_store_is_valid(s));
                cr_assert_eq(n, cap, "%" PRIu64 " chunks: capacity says %" PRIu64 ", %" PRIu64 " allocated", sizes[i],
                             cap, n);
                cr_assert_eq(n, spec_capacity(sizes[i], 256), "%" PRIu64 " chunks", sizes[i]);
                cowvol_store_close(s);
                /* everything committed is there */
                s = md_open(d);
                cr_assert_eq(cowvol_store_count(s), n);
                cr_assert(cowvol_store_is_full(s));
                cr_assert_eq(cowvol_store_capacity(s), cap);
                cowvol_store_close(s);
                memdisk_free(d);
        }
}

Test(geometry, parse_size_good)
{
        static const struct {
                const char *s;
                uint64_t v;
        } t[] = {
                { "4K", 4096 },
                { "4KiB", 4096 },
                { "4k", 4096 },
                { "4KB", 4096 },
                { "1M", 1ull << 20 },
                { "1MiB", 1ull << 20 },
                { "2G", 2ull << 30 },
                { "1T", 1ull << 40 },
                { "512", 512 },
                { "0", 0 },
                { "64KB", 64ull << 10 },
                { "18446744073709551615", UINT64_MAX },
                { "16777215T", 16777215ull << 40 },
        };

        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                uint64_t v = 12345;
                cr_assert_eq(cowvol_parse_size(t[i].s, &v), 0, "\"%s\"", t[i].s);
                cr_assert_eq(v, t[i].v, "\"%s\" gave %" PRIu64, t[i].s, v);
        }
}

Test(geometry, parse_size_bad)
{
        static const struct {
                const char *s;
                int r;
        } t[] = {
                { "", -EINVAL },
                { "K", -EINVAL },
                { "4X", -EINVAL },
                { "-1", -EINVAL },
                { "+1", -EINVAL },
                { "4 K", -EINVAL },
                { " 4K", -EINVAL },
                { "4K ", -EINVAL },
                { "4Ki", -EINVAL },
                { "4KiBB", -EINVAL },
                { "4KK", -EINVAL },
                { "1.5G", -EINVAL },
                { "99999999999999999999", -ERANGE },
                { "18446744073709551616", -ERANGE },
                { "16777216T", -ERANGE },
                { "17179869184T", -ERANGE },
        };

        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                uint64_t v = 12345;
                cr_assert_eq(cowvol_parse_size(t[i].s, &v), t[i].r, "\"%s\"", t[i].s);
                cr_assert_eq(v, 12345, "\"%s\": output written on failure", t[i].s);
        }
        uint64_t v;
        cr_assert_eq(cowvol_parse_size(NULL, &v), -EINVAL);
}

/*
 * The kernel takes any power-of-two chunk size, down to one sector; a store
 * it wrote with 512-byte chunks (epa 32: areas at chunks 1, 34, 67) opens
 * and goes on.  Built here byte by byte from the format.
 */
Test(geometry, kernel_store_with_one_sector_chunks)
{
        struct memdisk *d = memdisk_new(100 * 512);
        const uint32_t h[4] = { htole32(0x70416e53), htole32(1), htole32(1), htole32(1) };
        cowvol_store *s;
        char line[64];
        uint64_t c;

        memcpy(d->data, h, sizeof(h));
        /* area 0 full: 32 entries on chunks 2..33; area 1 (chunk 34): one on 35 */
        for (uint64_t i = 0; i < 32; i++) {
                uint64_t e[2] = { htole64(500 + i), htole64(2 + i) };
                memcpy(d->data + 512 + i * 16, e, 16);
        }
        uint64_t e1[2] = { htole64(900), htole64(35) };
        memcpy(d->data + 34 * 512, e1, 16);

        s = md_open(d);
        cr_assert_eq(cowvol_store_chunk_size(s), 512);
        cr_assert_eq(cowvol_store_exceptions_per_area(s), 32);
        cr_assert_eq(cowvol_store_count(s), 33);
        cr_assert_eq(cowvol_store_lookup(s, 531, &c), 1);
        cr_assert_eq(c, 33);
        cr_assert_eq(cowvol_store_lookup(s, 900, &c), 1);
        cr_assert_eq(c, 35);
        /* next_free 36 (1 sector each), area 1 current: metadata (1 + 2) * 1 */
        cr_assert_str_eq(cowvol_store_status_line(s, line, sizeof(line)), "36/100 3");
        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(c, 36);
        cr_assert_eq(cowvol_store_add(s, 901, c), 0);
        cr_assert_eq(cowvol_store_commit(s), 1);
        cowvol_store_close(s);
        /* area 1's second slot, in chunk 34 */
        uint64_t e[2];
        memcpy(e, d->data + 34 * 512 + 16, 16);
        cr_assert_eq(le64toh(e[0]), 901);
        cr_assert_eq(le64toh(e[1]), 36);
        s = md_open(d);
        cr_assert_eq(cowvol_store_count(s), 34);
        cowvol_store_close(s);
        memdisk_free(d);
}
