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

/*
 * One corruption of a valid store and the fault it must give: the field at
 * @off set to @val (a little-endian field of @bits 32 or 64 bits), or with
 * @bits 0 the file cut to @val bytes; then expect_fault() with the rest,
 * and with @faults non-zero, check must report exactly so many.
 */
struct corruption {
        uint64_t off;
        unsigned bits;
        uint64_t val;
        int err;
        const char *what;
        int64_t area, slot;
        const char *m1, *m2;
        int faults;
};
#define CUT 0u
/* the new_chunk field of an entry */
#define NEW_OF(area, slot) (entry_off((area), (slot)) + 8)

/* On a valid store of @chunks chunks with @n exceptions (fx_make), each of
 * @c in turn, on the same file. */
static void corrupt_and_expect(uint64_t chunks, size_t n, const struct corruption *c, size_t nc)
{
        struct fx f;

        fx_make(&f, chunks, n);
        for (size_t i = 0; i < nc; i++) {
                if (c[i].bits == CUT)
                        file_truncate(f.path, c[i].val);
                else if (c[i].bits == 32)
                        file_put_le32(f.path, c[i].off, (uint32_t)c[i].val);
                else
                        file_put_le64(f.path, c[i].off, c[i].val);
                int r = expect_fault(f.path, c[i].err, c[i].what, c[i].area, c[i].slot, c[i].m1, c[i].m2);
                if (c[i].faults)
                        cr_assert_eq(r, c[i].faults, "check reported %d faults, expected %d", r, c[i].faults);
        }
        fx_done(&f);
}
#define CORRUPT(chunks, n, ...)                                                                           \
        do {                                                                                              \
                const struct corruption c_[] = { __VA_ARGS__ };                                           \
                corrupt_and_expect((chunks), (n), c_, sizeof(c_) / sizeof(c_[0]));                        \
        } while (0)

/* --- truncated ---------------------------------------------------------------- */

Test(validate, truncated_empty_file)
{
        CORRUPT(20, 3, { 0, CUT, 0, -EUCLEAN, "truncated", -1, -1, "0 bytes", NULL, 1 });
}

Test(validate, truncated_100_bytes)
{
        CORRUPT(20, 3, { 0, CUT, 100, -EUCLEAN, "truncated", -1, -1, "100 bytes", NULL, 1 });
}

Test(validate, truncated_header_only)
{
        CORRUPT(20, 3, { 0, CUT, CH, -EUCLEAN, "truncated", -1, -1, "4096 bytes", NULL, 1 },
                /* and with part of area 0 */
                { 0, CUT, CH + 512, -EUCLEAN, "truncated", -1, -1, "4608 bytes", NULL, 1 });
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
        CORRUPT(20, 3, { 0, 32, 0x12345678, -EUCLEAN, "magic", -1, -1, "0x12345678", NULL, 0 },
                /* one byte off: "SnAq" */
                { 0, 32, 0x71416e53, -EUCLEAN, "magic", -1, -1, "magic", NULL, 0 });
}

Test(validate, version_2)
{
        CORRUPT(20, 3, { 8, 32, 2, -EPROTONOSUPPORT, "version", -1, -1, "version 2", NULL, 0 },
                { 8, 32, 0, -EPROTONOSUPPORT, "version", -1, -1, "version 0", NULL, 0 });
}

Test(validate, chunk_size_0)
{
        CORRUPT(20, 3, { 12, 32, 0, -EUCLEAN, "chunk size", -1, -1, "chunk size 0", NULL, 0 });
}

Test(validate, chunk_size_3)
{
        CORRUPT(20, 3, { 12, 32, 3, -EUCLEAN, "chunk size", -1, -1, "chunk size 3", NULL, 0 },
                { 12, 32, 24, -EUCLEAN, "chunk size", -1, -1, "chunk size 24", NULL, 0 });
}

Test(validate, all_zero_header_is_a_new_store)
{
        struct fx f;
        uint8_t zero[CH] = { 0 };

        fx_make(&f, 20, 3);
        file_put_bytes(f.path, 0, zero, CH);
        expect_fault(f.path, -ENODATA, "header", -1, -1, NULL, NULL);
        fx_done(&f);
        /* the kernel takes magic 0 as new whatever follows: so does open */
        CORRUPT(20, 3, { 0, 32, 0, -ENODATA, "header", -1, -1, NULL, NULL, 0 });
}

/* --- entries -------------------------------------------------------------------- */

Test(validate, entry_past_the_end)
{
        CORRUPT(40, 10, { NEW_OF(0, 3), 64, 40, -EUCLEAN, "range", 0, 3, "area 0 slot 3", "40", 0 },
                { NEW_OF(0, 3), 64, 1ull << 40, -EUCLEAN, "range", 0, 3, "area 0 slot 3", "1099511627776", 0 });
}

Test(validate, entry_on_metadata_area_0)
{
        CORRUPT(40, 10, { NEW_OF(0, 3), 64, 1, -EUCLEAN, "metadata", 0, 3, "area 0 slot 3", "metadata", 0 });
}

Test(validate, entry_on_metadata_area_1)
{
        CORRUPT(300, 10, { NEW_OF(0, 3), 64, 258, -EUCLEAN, "metadata", 0, 3, "area 0 slot 3", "258", 0 });
}

Test(validate, entry_in_area_1_on_metadata_area_2)
{
        CORRUPT(600, 300, { NEW_OF(1, 10), 64, 515, -EUCLEAN, "metadata", 1, 10, "area 1 slot 10", "515", 0 });
}

/*
 * Entry @slot of area 0 given @val (its origin chunk when @field is 0, its
 * store chunk when 8), which another entry has: open fails with -EUCLEAN
 * and logs @val; check reports one fault, whose what says @what1 (and
 * @what2) and whose message says @val.
 */
static void expect_shared(uint64_t slot, uint64_t field, size_t other, const char *what1, const char *what2)
{
        struct fx f;
        struct fault_list *fl = calloc(1, sizeof(*fl));
        cowvol_store *s = NULL;
        char num[32];

        fx_make(&f, 40, 10);
        uint64_t val = field == 0 ? f.old[other] : f.new_chunk[other];
        file_put_le64(f.path, entry_off(0, slot) + field, val);
        snprintf(num, sizeof(num), "%" PRIu64, val);
        log_capture_start();
        cr_assert_eq(cowvol_store_open(f.path, 0, &s), -EUCLEAN);
        cr_assert(contains_ci(log_text(), num), "%s", log_text());
        cr_assert_eq(cowvol_store_check(f.path, fault_collect, fl), 1);
        cr_assert(contains_ci(fl->f[0].what, what1), "%s", fl->f[0].what);
        if (what2)
                cr_assert(contains_ci(fl->f[0].what, what2), "%s", fl->f[0].what);
        cr_assert(contains_ci(fl->f[0].message, num), "%s", fl->f[0].message);
        free(fl);
        fx_done(&f);
}

Test(validate, duplicate_origin_chunk)
{
        expect_shared(5, 0, 2, "duplicate", "origin");
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
        expect_shared(6, 8, 1, "store chunk", NULL);
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

/* A store patched into another sound one: check finds nothing, open succeeds. */
static cowvol_store *open_sound(const struct fx *f)
{
        cowvol_store *s = NULL;

        cr_assert_eq(cowvol_store_check(f->path, NULL, NULL), 0);
        cr_assert_eq(cowvol_store_open(f->path, 0, &s), 0);
        return s;
}

/* new_chunk 0 ends the table: what follows is ignored, not a fault */
Test(validate, zero_entry_ends_the_table)
{
        struct fx f;
        uint64_t c;

        fx_make(&f, 40, 10);
        file_put_le64(f.path, entry_off(0, 3) + 8, 0);
        cowvol_store *s = open_sound(&f);
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
        uint64_t c;

        fx_make(&f, 40, 3);
        file_put_le64(f.path, entry_off(0, 0) + 8, 30);
        file_put_le64(f.path, entry_off(0, 2) + 8, 2);
        cowvol_store *s = open_sound(&f);
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
