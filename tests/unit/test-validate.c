/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Validation: every fault a store can have fails cowvol_store_open with the
 * errno cowvol.h documents, and cowvol_store_check reports it (all of them,
 * naming what and where).  Opening and checking never change the file.
 * Corrupt stores are made by patching a valid one (little-endian fields).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"

#define CH 4096ull

/* byte offset of the entry in slot @slot of area @area (4K chunks: epa 256) */
static uint64_t entry_off(uint64_t area, uint64_t slot)
{
        return (1 + 257 * area) * CH + 16 * slot;
}

struct fx {
        char *dir, *path;
        uint64_t old[1024], new_chunk[1024];
        size_t n;
};

/* A valid 4K store of @chunks chunks with @n exceptions, origin chunks
 * 100 + 3i, committed in groups of 50. */
static void fx_make(struct fx *f, uint64_t chunks, size_t n)
{
        cowvol_store *s = NULL;

        memset(f, 0, sizeof(*f));
        f->dir = tmpdir_make();
        f->path = path_in(f->dir, "store");
        cr_assert_eq(cowvol_store_create(f->path, CH, chunks * CH, 0, &s), 0);
        for (size_t i = 0; i < n; i++) {
                f->old[i] = 100 + 3 * i;
                cr_assert_eq(cowvol_store_allocate(s, &f->new_chunk[i]), 0);
                cr_assert_eq(cowvol_store_add(s, f->old[i], f->new_chunk[i]), 0);
                if (i % 50 == 49)
                        cr_assert_eq(cowvol_store_commit(s), 50);
        }
        cr_assert_geq(cowvol_store_commit(s), 0);
        cowvol_store_close(s);
        f->n = n;
}

static void fx_done(struct fx *f)
{
        free(f->path);
        tmpdir_remove(f->dir);
}

struct snap {
        uint8_t *data;
        size_t len;
        struct timespec mtime;
};

static void snap_take(const char *path, struct snap *sn)
{
        struct stat st;
        /* an old mtime, so that any write would show */
        struct timespec ts[2] = { { 1000000000, 0 }, { 1000000000, 0 } };

        cr_assert_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
        cr_assert_eq(stat(path, &st), 0);
        sn->mtime = st.st_mtim;
        sn->data = file_read_all(path, &sn->len);
}

static void snap_same(const char *path, struct snap *sn)
{
        struct stat st;
        size_t len;
        uint8_t *now = file_read_all(path, &len);

        cr_assert_eq(len, sn->len, "the file changed size");
        cr_assert(memcmp(now, sn->data, len) == 0, "the file's bytes changed");
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mtim.tv_sec, sn->mtime.tv_sec, "the file's mtime changed");
        cr_assert_eq(st.st_mtim.tv_nsec, sn->mtime.tv_nsec, "the file's mtime changed");
        free(now);
        free(sn->data);
        sn->data = NULL;
}

/*
 * Open (read-write and read-only) must fail with @err and log the fault;
 * check must report a fault whose what contains @what, at @area/@slot,
 * whose message contains @m1 and @m2 (either may be NULL).  Nothing of
 * the file may change.  Returns the number of faults check reported.
 */
static int expect_fault(const char *path, int err, const char *what, int64_t area, int64_t slot, const char *m1,
                        const char *m2)
{
        struct fault_list *fl = calloc(1, sizeof(*fl));
        struct snap sn;
        cowvol_store *s = NULL;
        int found = -1, n;

        snap_take(path, &sn);
        for (int ro = 0; ro < 2; ro++) {
                log_capture_start();
                int r = cowvol_store_open(path, ro ? COWVOL_STORE_RDONLY : 0, &s);
                cr_assert_eq(r, err, "open%s: %d (%s), expected %d (%s)", ro ? " read-only" : "", r, strerror(-r),
                             err, strerror(-err));
                cr_assert_null(s, "a failed open set its output");
                if (m1)
                        cr_assert(contains_ci(log_text(), m1), "the log does not name the fault: \"%s\"",
                                  log_text());
        }
        cowvol_set_log_callback(NULL, NULL);

        n = cowvol_store_check(path, fault_collect, fl);
        cr_assert_gt(n, 0, "check found no fault");
        cr_assert_eq(n, fl->n, "check returned %d but reported %d", n, fl->n);
        /* the fault of that kind at that place, else the first of that kind */
        for (int i = 0; i < fl->n && i < MAX_FAULTS; i++)
                if (contains_ci(fl->f[i].what, what) &&
                    (found < 0 || (fl->f[i].area == area && fl->f[i].slot == slot)))
                        found = i;
        cr_assert_geq(found, 0, "no \"%s\" fault; the first: %s: %s", what, fl->f[0].what, fl->f[0].message);
        cr_assert_eq(fl->f[found].area, area, "fault area %" PRId64 ", expected %" PRId64 ": %s", fl->f[found].area,
                     area, fl->f[found].message);
        cr_assert_eq(fl->f[found].slot, slot, "fault slot %" PRId64 ", expected %" PRId64 ": %s", fl->f[found].slot,
                     slot, fl->f[found].message);
        if (m1)
                cr_assert(contains_ci(fl->f[found].message, m1), "\"%s\" does not say \"%s\"", fl->f[found].message,
                          m1);
        if (m2)
                cr_assert(contains_ci(fl->f[found].message, m2), "\"%s\" does not say \"%s\"", fl->f[found].message,
                          m2);
        snap_same(path, &sn);
        free(fl);
        return n;
}

/* --- truncated ---------------------------------------------------------------- */

Test(validate, truncated_empty_file)
{
        struct fx f;

        fx_make(&f, 20, 3);
        file_truncate(f.path, 0);
        cr_assert_eq(expect_fault(f.path, -EUCLEAN, "truncated", -1, -1, "0 bytes", NULL), 1);
        fx_done(&f);
}

Test(validate, truncated_100_bytes)
{
        struct fx f;

        fx_make(&f, 20, 3);
        file_truncate(f.path, 100);
        cr_assert_eq(expect_fault(f.path, -EUCLEAN, "truncated", -1, -1, "100 bytes", NULL), 1);
        fx_done(&f);
}

Test(validate, truncated_header_only)
{
        struct fx f;

        fx_make(&f, 20, 3);
        file_truncate(f.path, CH);
        cr_assert_eq(expect_fault(f.path, -EUCLEAN, "truncated", -1, -1, "4096 bytes", NULL), 1);
        /* and with part of area 0 */
        file_truncate(f.path, CH + 512);
        cr_assert_eq(expect_fault(f.path, -EUCLEAN, "truncated", -1, -1, "4608 bytes", NULL), 1);
        fx_done(&f);
}

Test(validate, truncated_area_1_past_the_end)
{
        struct fx f;

        /* area 0 full (256 entries on chunks 2..257): the reader goes on to
         * area 1 at chunk 258, which the truncated file lacks */
        fx_make(&f, 300, 256);
        cr_assert_eq(f.new_chunk[255], 257);
        file_truncate(f.path, 258 * CH + 100);
        cr_assert_eq(expect_fault(f.path, -EUCLEAN, "truncated", 1, -1, "area 1", "258"), 1);
        fx_done(&f);
}

Test(validate, truncated_cuts_data_chunks)
{
        struct fx f;
        struct fault_list *fl = calloc(1, sizeof(*fl));

        /* 50 entries on chunks 2..51; cut at 30 chunks: 22 entries point past the end */
        fx_make(&f, 100, 50);
        file_truncate(f.path, 30 * CH);
        expect_fault(f.path, -EUCLEAN, "range", 0, 28, "area 0 slot 28", "30");
        cr_assert_eq(cowvol_store_check(f.path, fault_collect, fl), 22);
        for (int i = 0; i < 22; i++) {
                cr_assert_eq(fl->f[i].area, 0);
                cr_assert_eq(fl->f[i].slot, 28 + i);
        }
        free(fl);
        fx_done(&f);
}

/* --- the header ---------------------------------------------------------------- */

Test(validate, bad_magic)
{
        struct fx f;

        fx_make(&f, 20, 3);
        file_put_le32(f.path, 0, 0x12345678);
        expect_fault(f.path, -EUCLEAN, "magic", -1, -1, "0x12345678", NULL);
        /* one byte off: "SnAq" */
        file_put_bytes(f.path, 0, "SnAq", 4);
        expect_fault(f.path, -EUCLEAN, "magic", -1, -1, "magic", NULL);
        fx_done(&f);
}

Test(validate, version_2)
{
        struct fx f;

        fx_make(&f, 20, 3);
        file_put_le32(f.path, 8, 2);
        expect_fault(f.path, -EPROTONOSUPPORT, "version", -1, -1, "version 2", NULL);
        file_put_le32(f.path, 8, 0);
        expect_fault(f.path, -EPROTONOSUPPORT, "version", -1, -1, "version 0", NULL);
        fx_done(&f);
}

Test(validate, chunk_size_0)
{
        struct fx f;

        fx_make(&f, 20, 3);
        file_put_le32(f.path, 12, 0);
        expect_fault(f.path, -EUCLEAN, "chunk size", -1, -1, "chunk size 0", NULL);
        fx_done(&f);
}

Test(validate, chunk_size_3)
{
        struct fx f;

        fx_make(&f, 20, 3);
        file_put_le32(f.path, 12, 3);
        expect_fault(f.path, -EUCLEAN, "chunk size", -1, -1, "chunk size 3", NULL);
        file_put_le32(f.path, 12, 24);
        expect_fault(f.path, -EUCLEAN, "chunk size", -1, -1, "chunk size 24", NULL);
        fx_done(&f);
}

Test(validate, all_zero_header_is_a_new_store)
{
        struct fx f;
        uint8_t zero[CH] = { 0 };

        fx_make(&f, 20, 3);
        file_put_bytes(f.path, 0, zero, CH);
        expect_fault(f.path, -ENODATA, "header", -1, -1, NULL, NULL);
        /* the kernel takes magic 0 as new whatever follows: so does open */
        fx_done(&f);
        fx_make(&f, 20, 3);
        file_put_le32(f.path, 0, 0);
        expect_fault(f.path, -ENODATA, "header", -1, -1, NULL, NULL);
        fx_done(&f);
}

/* --- entries -------------------------------------------------------------------- */

Test(validate, entry_past_the_end)
{
        struct fx f;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 3) + 8, 40);
        expect_fault(f.path, -EUCLEAN, "range", 0, 3, "area 0 slot 3", "40");
        file_put_le64(f.path, entry_off(0, 3) + 8, 1ull << 40);
        expect_fault(f.path, -EUCLEAN, "range", 0, 3, "area 0 slot 3", "1099511627776");
        fx_done(&f);
}

Test(validate, entry_on_metadata_area_0)
{
        struct fx f;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 3) + 8, 1);
        expect_fault(f.path, -EUCLEAN, "metadata", 0, 3, "area 0 slot 3", "metadata");
        fx_done(&f);
}

Test(validate, entry_on_metadata_area_1)
{
        struct fx f;

        fx_make(&f, 300, 10);
        file_put_le64(f.path, entry_off(0, 3) + 8, 258);
        expect_fault(f.path, -EUCLEAN, "metadata", 0, 3, "area 0 slot 3", "258");
        fx_done(&f);
}

Test(validate, entry_in_area_1_on_metadata_area_2)
{
        struct fx f;

        fx_make(&f, 600, 300);
        file_put_le64(f.path, entry_off(1, 10) + 8, 515);
        expect_fault(f.path, -EUCLEAN, "metadata", 1, 10, "area 1 slot 10", "515");
        fx_done(&f);
}

Test(validate, duplicate_origin_chunk)
{
        struct fx f;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 5), f.old[2]);
        char num[32];
        snprintf(num, sizeof(num), "%" PRIu64, f.old[2]);
        struct fault_list *fl = calloc(1, sizeof(*fl));
        log_capture_start();
        cowvol_store *s = NULL;
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), -EUCLEAN);
        cr_assert(contains_ci(log_text(), num), "%s", log_text());
        cr_assert_eq(cowvol_store_check(f.path, fault_collect, fl), 1);
        cr_assert(contains_ci(fl->f[0].what, "duplicate"), "%s", fl->f[0].what);
        cr_assert(contains_ci(fl->f[0].what, "origin"), "%s", fl->f[0].what);
        cr_assert(contains_ci(fl->f[0].message, num), "%s", fl->f[0].message);
        free(fl);
        fx_done(&f);
}

/* A duplicate is about an entry: the fault names where (cowvol_fault: area
 * is -1 only "when not about an entry"). */
Test(validate, duplicate_origin_chunk_located)
{
        struct fx f;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 5), f.old[2]);
        expect_fault(f.path, -EUCLEAN, "duplicate", 0, 5, "area 0 slot 5", NULL);
        fx_done(&f);
}

Test(validate, shared_store_chunk)
{
        struct fx f;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 6) + 8, f.new_chunk[1]);
        char num[32];
        snprintf(num, sizeof(num), "%" PRIu64, f.new_chunk[1]);
        struct fault_list *fl = calloc(1, sizeof(*fl));
        cowvol_store *s = NULL;
        log_capture_start();
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), -EUCLEAN);
        cr_assert(contains_ci(log_text(), num), "%s", log_text());
        cr_assert_eq(cowvol_store_check(f.path, fault_collect, fl), 1);
        cr_assert(contains_ci(fl->f[0].what, "store chunk"), "%s", fl->f[0].what);
        cr_assert(contains_ci(fl->f[0].message, num), "%s", fl->f[0].message);
        free(fl);
        fx_done(&f);
}

Test(validate, shared_store_chunk_located)
{
        struct fx f;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 6) + 8, f.new_chunk[1]);
        expect_fault(f.path, -EUCLEAN, "store chunk", 0, 6, "area 0 slot 6", NULL);
        fx_done(&f);
}

Test(validate, check_lists_every_fault)
{
        struct fx f;
        struct fault_list *fl = calloc(1, sizeof(*fl));
        struct snap sn;

        fx_make(&f, 40, 12);
        file_put_le64(f.path, entry_off(0, 3) + 8, 1000);  /* past the end */
        file_put_le64(f.path, entry_off(0, 7) + 8, 1);     /* metadata */
        file_put_le64(f.path, entry_off(0, 9), f.old[1]);  /* duplicate origin */
        snap_take(f.path, &sn);
        cr_assert_eq(cowvol_store_check(f.path, fault_collect, fl), 3);
        cr_assert_eq(fl->n, 3);
        bool past = false, meta = false, dup = false;
        for (int i = 0; i < 3; i++) {
                if (fl->f[i].area == 0 && fl->f[i].slot == 3 && contains_ci(fl->f[i].message, "area 0 slot 3"))
                        past = true;
                if (fl->f[i].area == 0 && fl->f[i].slot == 7 && contains_ci(fl->f[i].what, "metadata") &&
                    contains_ci(fl->f[i].message, "area 0 slot 7"))
                        meta = true;
                if (contains_ci(fl->f[i].what, "duplicate"))
                        dup = true;
        }
        cr_assert(past && meta && dup, "faults: %s | %s | %s", fl->f[0].message, fl->f[1].message, fl->f[2].message);
        snap_same(f.path, &sn);

        cowvol_store *s = NULL;
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), -EUCLEAN);
        free(fl);
        fx_done(&f);
}

Test(validate, check_of_a_sound_store)
{
        struct fx f;
        struct fault_list *fl = calloc(1, sizeof(*fl));
        cowvol_store *s = NULL;

        fx_make(&f, 600, 400);
        cr_assert_eq(cowvol_store_check(f.path, fault_collect, fl), 0);
        cr_assert_eq(fl->n, 0);
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 400);
        cowvol_store_close(s);
        /* a path that is not there cannot be read at all */
        char *p = path_in(f.dir, "nothing");
        cr_assert_lt(cowvol_store_check(p, fault_collect, fl), 0);
        cr_assert_eq(fl->n, 0);
        cr_assert_lt(cowvol_store_open(p, 0, &s), 0);
        free(p);
        free(fl);
        fx_done(&f);
}

/* new_chunk 0 ends the table: what follows is ignored, not a fault */
Test(validate, zero_entry_ends_the_table)
{
        struct fx f;
        cowvol_store *s = NULL;
        uint64_t c;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 3) + 8, 0);
        cr_assert_eq(cowvol_store_check(f.path, NULL, NULL), 0);
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 3);
        cr_assert_eq(cowvol_store_lookup(s, f.old[2], &c), 1);
        cr_assert_eq(cowvol_store_lookup(s, f.old[4], &c), 0);
        /* next_free = max(new_chunk) + 1: the next allocation follows entry 2's */
        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(c, f.new_chunk[2] + 1);
        cowvol_store_close(s);
        fx_done(&f);
}

/* new_chunk is taken from each entry, never from its slot: a table whose
 * entries are out of order reads as written, next_free after the largest */
Test(validate, entries_out_of_order)
{
        struct fx f;
        cowvol_store *s = NULL;
        uint64_t c;

        fx_make(&f, 40, 3);
        file_put_le64(f.path, entry_off(0, 0) + 8, 30);
        file_put_le64(f.path, entry_off(0, 2) + 8, 2);
        cr_assert_eq(cowvol_store_check(f.path, NULL, NULL), 0);
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), 0);
        cr_assert_eq(cowvol_store_lookup(s, f.old[0], &c), 1);
        cr_assert_eq(c, 30);
        cr_assert_eq(cowvol_store_lookup(s, f.old[2], &c), 1);
        cr_assert_eq(c, 2);
        cr_assert_eq(cowvol_store_allocate(s, &c), 0);
        cr_assert_eq(c, 31);
        cowvol_store_close(s);
        fx_done(&f);
}

Test(validate, open_never_changes_the_file)
{
        struct fx f;
        struct snap sn;
        cowvol_store *s = NULL;

        /* a sound store, opened read-write and read-only, closed, checked */
        fx_make(&f, 600, 300);
        snap_take(f.path, &sn);
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), 0);
        cowvol_store_close(s);
        cr_assert_eq(cowvol_store_open(f.path, COWVOL_STORE_RDONLY, &s), 0);
        cowvol_store_close(s);
        cr_assert_eq(cowvol_store_check(f.path, NULL, NULL), 0);
        snap_same(f.path, &sn);

        /* a new store (zero header): opening does not initialise it */
        uint8_t zero[CH] = { 0 };
        file_put_bytes(f.path, 0, zero, CH);
        snap_take(f.path, &sn);
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), -ENODATA);
        cr_assert_gt(cowvol_store_check(f.path, NULL, NULL), 0);
        snap_same(f.path, &sn);

        /* an invalid store */
        fx_done(&f);
        fx_make(&f, 40, 5);
        file_put_le32(f.path, 4, 0);
        snap_take(f.path, &sn);
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), 0);
        cr_assert_not(cowvol_store_is_valid(s));
        cowvol_store_close(s);
        cr_assert_eq(cowvol_store_check(f.path, NULL, NULL), 1);
        snap_same(f.path, &sn);
        fx_done(&f);
}

/* A new store's table is empty: it opens and checks sound.  (Over the
 * in-memory disk, so that a crash here leaves no temp file.) */
Test(validate, empty_store_opens)
{
        struct memdisk *d = memdisk_new(20 * CH);
        cowvol_store *s = NULL;

        cr_assert_eq(exstore_create_io(&memdisk_io, d, CH, 0, NULL), 0);
        cr_assert_eq(exstore_check_io(&memdisk_io, d, NULL, NULL), 0);
        cr_assert_eq(exstore_open_io(&memdisk_io, d, 0, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 0);
        cowvol_store_close(s);
        memdisk_free(d);
}
