/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Regression tests for faults found in review of the store. */
#include <criterion/criterion.h>
#include <string.h>

#include "internal.h"
#include "testlib.h"

#define CH 4096u

static cowvol_store *fill(struct memdisk *d, unsigned n, uint64_t first_old)
{
        cowvol_store *s = NULL;
        uint8_t buf[CH];

        cr_assert_eq(exstore_create_io(&memdisk_io, d, CH, 0, &s), 0);
        for (unsigned i = 0; i < n; i++) {
                uint64_t c;
                cr_assert_eq(cowvol_store_allocate(s, &c), 0);
                fill_pattern(buf, sizeof(buf), first_old + i, c);
                cr_assert_eq(cowvol_store_write_chunk(s, c, buf), 0);
                cr_assert_eq(cowvol_store_add(s, first_old + i, c), 0);
        }
        cr_assert_geq(cowvol_store_commit(s), 0);
        return s;
}

/* A create that is refused must not have resized (and so cut) the file. */
Test(regress, refused_create_keeps_the_file)
{
        char *dir = tmpdir_make(), *p = path_in(dir, "s.cow");
        cowvol_store *s;

        cr_assert_eq(cowvol_store_create(p, CH, 1 << 20, 0, &s), 0);
        cowvol_store_close(s);
        cr_assert_eq(cowvol_store_create(p, CH, 8192, 0, NULL), -EEXIST);
        cr_assert_eq(file_size(p), 1 << 20, "the refused create changed the size");
        cr_assert_eq(cowvol_store_open(p, COWVOL_STORE_RDONLY, &s), 0);
        cowvol_store_close(s);
        free(p);
        tmpdir_remove(dir);
}

/* Leftovers of a torn area write past the table's end stay dead after the
 * next commit. */
Test(regress, torn_area_leftovers_not_revived)
{
        struct memdisk *d = memdisk_new(400ull * CH);
        cowvol_store *s = fill(d, 30, 1000);
        uint8_t junk[16];

        cowvol_store_close(s);
        /* slots 32..39 of area 0 hold stale entries naming origin chunk 2000+ */
        for (unsigned slot = 32; slot < 40; slot++) {
                uint64_t old = 2000 + slot, nw = 100 + slot;
                memcpy(junk, &old, 8);
                memcpy(junk + 8, &nw, 8);
                memcpy(d->data + CH + slot * 16, junk, 16);
        }
        cr_assert_eq(exstore_open_io(&memdisk_io, d, 0, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 30);
        /* two more commits fill slots 30 and 31 */
        for (unsigned i = 0; i < 2; i++) {
                uint64_t c;
                cr_assert_eq(cowvol_store_allocate(s, &c), 0);
                cr_assert_eq(cowvol_store_add(s, 2032 + i, c), 0);
        }
        cr_assert_eq(cowvol_store_commit(s), 2);
        cowvol_store_close(s);
        cr_assert_eq(exstore_open_io(&memdisk_io, d, 0, &s), 0, "the stale slots came back");
        cr_assert_eq(cowvol_store_count(s), 32);
        cowvol_store_close(s);
        memdisk_free(d);
}

/* A read error while merging back into an earlier area stops the merge; it
 * never skips the area. */
Test(regress, merge_read_error_stops)
{
        struct memdisk *d = memdisk_new(800ull * CH);
        cowvol_store *s = fill(d, 300, 10); /* area 0 full, area 1 with 44 */
        uint64_t o, n;
        int r;

        while ((r = cowvol_store_merge_prepare(s, &o, &n)) > 0) {
                cr_assert_eq(cowvol_store_merge_commit(s, r), 0);
                if (cowvol_store_count(s) == 256)
                        break;
        }
        cr_assert_eq(cowvol_store_count(s), 256);
        d->read_hook = memdisk_fail_area_0;
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &n), -EIO);
        d->read_hook = NULL;
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &n), -EIO, "a failed merge went on");
        cowvol_store_close(s);
        /* reopened, the 256 exceptions of area 0 are all still there */
        cr_assert_eq(exstore_open_io(&memdisk_io, d, 0, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 256);
        cowvol_store_close(s);
        memdisk_free(d);
}

/* A failed merge write stops the merge instead of handing out chunk 0. */
Test(regress, merge_write_error_stops)
{
        struct memdisk *d = memdisk_new(100ull * CH);
        cowvol_store *s = fill(d, 10, 50);
        uint64_t o, n;
        int r;

        r = cowvol_store_merge_prepare(s, &o, &n);
        cr_assert_eq(r, 10);
        d->write_hook = memdisk_fail_area_0;
        cr_assert_eq(cowvol_store_merge_commit(s, 1), -EIO);
        d->write_hook = NULL;
        cr_assert_eq(cowvol_store_merge_prepare(s, &o, &n), -EIO);
        cowvol_store_close(s);
        cr_assert_eq(exstore_open_io(&memdisk_io, d, 0, &s), 0);
        cr_assert_eq(cowvol_store_count(s), 10, "nothing was merged on disk");
        cowvol_store_close(s);
        memdisk_free(d);
}
