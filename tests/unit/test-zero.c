/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The engine's write-zeroes, discard and block status: what NBD's
 * WRITE_ZEROES, TRIM and BLOCK_STATUS stand on.  Real files in a temp dir
 * (tmpfs or the like: both punch holes and SEEK_DATA). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define CHUNK 4096u
#define NCHUNK 64u
#define VSIZE ((uint64_t)CHUNK * NCHUNK)

static char *dir, *img;
static cowvol_volume *vol;
static uint8_t model[VSIZE];

static void setup(void)
{
        uint8_t *buf = malloc(VSIZE);

        dir = tmpdir_make();
        img = path_in(dir, "img");
        int fd = open(img, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);

        cr_assert_geq(fd, 0);
        close(fd);
        fill_pattern(buf, VSIZE, 1, 0);
        file_put_bytes(img, 0, buf, VSIZE);
        memcpy(model, buf, VSIZE);
        free(buf);
        cr_assert_eq(cowvol_volume_open(img, CHUNK, &vol), 0);
}

static void teardown(void)
{
        cowvol_volume_close(vol);
        free(img);
        tmpdir_remove(dir);
}

static void assert_reads(cowvol_snapshot *sn, const uint8_t *want)
{
        uint8_t *got = malloc(VSIZE);

        cr_assert_eq(cowvol_volume_pread(vol, sn, got, VSIZE, 0), 0);
        for (uint64_t i = 0; i < VSIZE; i++)
                if (got[i] != want[i])
                        cr_assert_fail("byte %llu is %u, want %u", (unsigned long long)i, got[i], want[i]);
        free(got);
}

/* allocated bytes of the image file */
static uint64_t image_blocks(void)
{
        struct stat st;

        cr_assert_eq(stat(img, &st), 0);
        return (uint64_t)st.st_blocks * 512;
}

TestSuite(zero, .init = setup, .fini = teardown);

Test(zero, punches_whole_chunks_and_writes_the_edges)
{
        uint64_t before = image_blocks(), off = CHUNK + 100, len = 5 * CHUNK;

        cr_assert_eq(cowvol_volume_write_zeroes(vol, NULL, len, off, COWVOL_ZERO_PUNCH), 0);
        memset(model + off, 0, len);
        assert_reads(NULL, model);
        /* chunks 2..5 are whole and became a hole; 1 and 6 were written */
        cr_assert_eq(image_blocks(), before - 4 * CHUNK, "blocks %llu, before %llu",
                     (unsigned long long)image_blocks(), (unsigned long long)before);
        cr_assert_eq(cowvol_volume_flush(vol), 0);
}

Test(zero, without_punch_writes_zeroes)
{
        uint64_t before = image_blocks();

        cr_assert_eq(cowvol_volume_write_zeroes(vol, NULL, 8 * CHUNK, 8 * CHUNK, 0), 0);
        memset(model + 8 * CHUNK, 0, 8 * CHUNK);
        assert_reads(NULL, model);
        cr_assert_eq(image_blocks(), before);
}

Test(zero, a_snapshot_keeps_its_content)
{
        cowvol_snapshot *sn;
        uint8_t *snap_model = malloc(VSIZE);
        char *store = path_in(dir, "s1");
        struct cowvol_snapshot_info si;

        memcpy(snap_model, model, VSIZE);
        cr_assert_eq(cowvol_volume_snapshot_create(vol, store, 1 << 20, &sn), 0);
        /* zeroes over chunks 0..15: each is copied first, then written (no
         * punch: the snapshot needed them, and their new data waits) */
        cr_assert_eq(cowvol_volume_write_zeroes(vol, NULL, 16 * CHUNK, 0, COWVOL_ZERO_PUNCH), 0);
        memset(model, 0, 16 * CHUNK);
        assert_reads(NULL, model);
        assert_reads(sn, snap_model);
        cr_assert_eq(cowvol_snapshot_info(vol, sn, &si), 0);
        cr_assert_eq(si.exceptions, 16);
        /* once copied, a discard may punch them: the snapshot holds copies */
        cr_assert_eq(cowvol_volume_flush(vol), 0);
        uint64_t before = image_blocks();
        cr_assert_eq(cowvol_volume_discard(vol, NULL, 16 * CHUNK, 0), 0);
        cr_assert_eq(image_blocks(), before - 16 * CHUNK);
        assert_reads(sn, snap_model);
        /* a discard of chunks the snapshot still needs changes nothing */
        before = image_blocks();
        cr_assert_eq(cowvol_volume_discard(vol, NULL, 16 * CHUNK, 16 * CHUNK), 0);
        cr_assert_eq(image_blocks(), before);
        assert_reads(NULL, model);
        assert_reads(sn, snap_model);
        cr_assert_eq(cowvol_snapshot_info(vol, sn, &si), 0);
        cr_assert_eq(si.exceptions, 16, "a discard copies nothing");
        /* zeroes into the snapshot: only it changes */
        cr_assert_eq(cowvol_volume_write_zeroes(vol, sn, 2 * CHUNK, 40 * CHUNK, COWVOL_ZERO_PUNCH), 0);
        memset(snap_model + 40 * CHUNK, 0, 2 * CHUNK);
        assert_reads(sn, snap_model);
        assert_reads(NULL, model);
        /* a discard on a snapshot keeps its content */
        cr_assert_eq(cowvol_volume_discard(vol, sn, VSIZE, 0), 0);
        assert_reads(sn, snap_model);
        free(snap_model);
        free(store);
}

Test(zero, past_the_end_is_refused)
{
        struct cowvol_extent e[4];

        cr_assert_eq(cowvol_volume_write_zeroes(vol, NULL, CHUNK, VSIZE, 0), -EINVAL);
        cr_assert_eq(cowvol_volume_write_zeroes(vol, NULL, 2, VSIZE - 1, 0), -EINVAL);
        cr_assert_eq(cowvol_volume_discard(vol, NULL, UINT64_MAX, 1), -EINVAL);
        cr_assert_eq(cowvol_volume_block_status(vol, NULL, 0, 0, e, 4), -EINVAL);
        cr_assert_eq(cowvol_volume_block_status(vol, NULL, 1, VSIZE, e, 4), -EINVAL);
        assert_reads(NULL, model);
}

/* expand extents into a per-chunk flag string: 'd' data, 'h' hole */
static void status_string(cowvol_snapshot *sn, char *out)
{
        struct cowvol_extent e[NCHUNK];
        uint64_t pos = 0;
        size_t k = 0;

        while (pos < VSIZE) {
                int n = cowvol_volume_block_status(vol, sn, VSIZE - pos, pos, e, NCHUNK);
                cr_assert_gt(n, 0, "block status at %llu: %d", (unsigned long long)pos, n);
                for (int i = 0; i < n; i++) {
                        cr_assert_eq(e[i].len % CHUNK, 0);
                        cr_assert(e[i].flags == 0 || e[i].flags == (COWVOL_EXTENT_HOLE | COWVOL_EXTENT_ZERO));
                        if (i)
                                cr_assert_neq(e[i].flags, e[i - 1].flags, "neighbours are merged");
                        for (uint64_t j = 0; j < e[i].len / CHUNK; j++)
                                out[k++] = e[i].flags ? 'h' : 'd';
                        pos += e[i].len;
                }
        }
        out[k] = '\0';
        cr_assert_eq(pos, VSIZE);
}

Test(zero, block_status_of_volume_and_snapshot)
{
        char got[NCHUNK + 1], want[NCHUNK + 1];
        cowvol_snapshot *sn;
        char *store = path_in(dir, "s1");
        uint8_t buf[CHUNK];
        struct cowvol_extent one;

        /* holes at chunks 4..7 and 20..29 */
        cr_assert_eq(cowvol_volume_discard(vol, NULL, 4 * CHUNK, 4 * CHUNK), 0);
        cr_assert_eq(cowvol_volume_discard(vol, NULL, 10 * CHUNK, 20 * CHUNK), 0);
        memset(want, 'd', NCHUNK);
        want[NCHUNK] = '\0';
        memset(want + 4, 'h', 4);
        memset(want + 20, 'h', 10);
        status_string(NULL, got);
        cr_assert_str_eq(got, want);

        cr_assert_eq(cowvol_volume_snapshot_create(vol, store, 1 << 20, &sn), 0);
        status_string(sn, got);
        cr_assert_str_eq(got, want, "a new snapshot is as its origin");
        /* a write into hole chunk 21: the snapshot gets a store chunk (data,
         * of zeroes); the volume's new data waits in memory (data) */
        fill_pattern(buf, CHUNK, 7, 7);
        cr_assert_eq(cowvol_volume_pwrite(vol, NULL, buf, CHUNK, 21 * CHUNK), 0);
        want[21] = 'd';
        status_string(NULL, got);
        cr_assert_str_eq(got, want, "waiting data counts as data");
        status_string(sn, got);
        cr_assert_str_eq(got, want, "the snapshot's copy is in its store");
        cr_assert_eq(cowvol_volume_flush(vol), 0);
        status_string(NULL, got);
        cr_assert_str_eq(got, want);
        /* one extent at most: the first */
        cr_assert_eq(cowvol_volume_block_status(vol, NULL, VSIZE - 4 * CHUNK, 4 * CHUNK, &one, 1), 1);
        cr_assert_eq(one.len, 4 * CHUNK);
        cr_assert_eq(one.flags, COWVOL_EXTENT_HOLE | COWVOL_EXTENT_ZERO);
        /* a request inside a chunk */
        cr_assert_eq(cowvol_volume_block_status(vol, NULL, 100, 5 * CHUNK + 7, &one, 1), 1);
        cr_assert_eq(one.len, 100);
        cr_assert_eq(one.flags, COWVOL_EXTENT_HOLE | COWVOL_EXTENT_ZERO);
        free(store);
}

Test(zero, zeroes_over_a_hole_copy_nothing)
{
        cowvol_snapshot *sn;
        char *store = path_in(dir, "s1");
        struct cowvol_snapshot_info si;
        uint64_t blocks;

        cr_assert_eq(cowvol_volume_discard(vol, NULL, 8 * CHUNK, 8 * CHUNK), 0);
        memset(model + 8 * CHUNK, 0, 8 * CHUNK);
        cr_assert_eq(cowvol_volume_snapshot_create(vol, store, 1 << 20, &sn), 0);
        blocks = image_blocks();
        /* half in the hole, half over data: only the data half is copied */
        cr_assert_eq(cowvol_volume_write_zeroes(vol, NULL, 8 * CHUNK, 4 * CHUNK, COWVOL_ZERO_PUNCH), 0);
        memset(model + 4 * CHUNK, 0, 8 * CHUNK);
        cr_assert_eq(cowvol_snapshot_info(vol, sn, &si), 0);
        cr_assert_eq(si.exceptions, 4, "chunks 4..7 copied, not the hole (%llu)", (unsigned long long)si.exceptions);
        cr_assert_eq(cowvol_volume_flush(vol), 0);
        cr_assert_leq(image_blocks(), blocks, "the hole stays a hole");
        /* without punching (NBD's NO_HOLE) the hole is allocated, still
         * without a copy: its content does not change */
        cr_assert_eq(cowvol_volume_write_zeroes(vol, NULL, 8 * CHUNK, 8 * CHUNK, 0), 0);
        cr_assert_eq(cowvol_snapshot_info(vol, sn, &si), 0);
        cr_assert_eq(si.exceptions, 4, "no copy of a hole (%llu)", (unsigned long long)si.exceptions);
        cr_assert_geq(image_blocks(), blocks + 8 * CHUNK, "allocated: %llu, before %llu",
                      (unsigned long long)image_blocks(), (unsigned long long)blocks);
        assert_reads(NULL, model);
        free(store);
}
