/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A disk that fails under the engine (sys_fault_set(), util.c): writes to
 * the image fail with EIO for a while.  A write that had to copy is answered
 * with its new data waiting in memory; when the commit cannot write it to
 * the image, the flush says so, and the data keeps waiting: reads still
 * return it, the next commit writes it, and nothing acknowledged is lost.
 * While the image refuses, no more than a commit's worth may wait.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define CHUNK 4096u
#define NCHUNK 16384u /* 64 MiB: more than may wait in memory */
#define VSIZE ((uint64_t)CHUNK * NCHUNK)

static char *dir, *img, *store;
static cowvol_volume *vol;
static cowvol_snapshot *snap;
static ino_t img_ino;
static bool failing;
static unsigned refused;

static int image_fails(int fd, enum sys_op op, uint64_t len, uint64_t off, void *ud)
{
        struct stat st;

        (void)len, (void)off, (void)ud;
        if (!failing || op != SYS_WRITE || fstat(fd, &st) < 0 || st.st_ino != img_ino)
                return 0;
        refused++;
        return -EIO;
}

static void setup(void)
{
        struct stat st;
        uint8_t buf[CHUNK];
        int fd;

        dir = tmpdir_make();
        img = path_in(dir, "img");
        store = path_in(dir, "s.cow");
        fd = open(img, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, (off_t)VSIZE), 0);
        for (unsigned c = 0; c < 8; c++) {
                fill_pattern(buf, CHUNK, 1, c);
                cr_assert_eq(pwrite(fd, buf, CHUNK, (off_t)c * CHUNK), (ssize_t)CHUNK);
        }
        cr_assert_eq(fstat(fd, &st), 0);
        img_ino = st.st_ino;
        close(fd);
        cr_assert_eq(cowvol_volume_open(img, CHUNK, &vol), 0);
        cr_assert_eq(cowvol_volume_snapshot_create(vol, store, VSIZE + (1u << 20), &snap), 0);
        sys_fault_set(image_fails, NULL);
}

static void teardown(void)
{
        sys_fault_set(NULL, NULL);
        failing = false;
        cowvol_volume_close(vol);
        tmpdir_remove(dir);
        free(img);
        free(store);
}

TestSuite(ioerror, .init = setup, .fini = teardown);

Test(ioerror, a_failed_commit_keeps_the_waiting_data)
{
        uint8_t nw[CHUNK], old[CHUNK], got[CHUNK];

        fill_pattern(nw, CHUNK, 2, 3);
        fill_pattern(old, CHUNK, 1, 3);
        /* chunk 3 is copied into the snapshot; its new data waits */
        cr_assert_eq(cowvol_volume_pwrite(vol, NULL, nw, CHUNK, 3 * CHUNK), 0);
        failing = true;
        cr_assert_eq(cowvol_volume_flush(vol), -EIO, "the flush says the image refused");
        cr_assert_gt(refused, 0);
        cr_assert_eq(cowvol_volume_pread(vol, NULL, got, CHUNK, 3 * CHUNK), 0);
        cr_assert_arr_eq(got, nw, CHUNK, "after the failed commit the volume still reads the acknowledged data");
        cr_assert_eq(cowvol_volume_pread(vol, snap, got, CHUNK, 3 * CHUNK), 0);
        cr_assert_arr_eq(got, old, CHUNK, "the snapshot keeps the old data");
        failing = false;
        cr_assert_eq(cowvol_volume_flush(vol), 0, "the next flush writes what waited");
        /* reopened: the image itself holds it */
        cowvol_volume_close(vol);
        cr_assert_eq(cowvol_volume_open(img, CHUNK, &vol), 0);
        cr_assert_eq(cowvol_volume_snapshot_attach(vol, store, &snap), 0);
        cr_assert_eq(cowvol_volume_pread(vol, NULL, got, CHUNK, 3 * CHUNK), 0);
        cr_assert_arr_eq(got, nw, CHUNK);
        cr_assert_eq(cowvol_volume_pread(vol, snap, got, CHUNK, 3 * CHUNK), 0);
        cr_assert_arr_eq(got, old, CHUNK);
}

Test(ioerror, no_more_waits_while_the_image_refuses)
{
        uint8_t *big = malloc(1u << 20), got[CHUNK];
        struct cowvol_snapshot_info before, after;
        uint64_t off = 0;
        int r = 0;

        cr_assert_not_null(big);
        failing = true;
        /* 1 MiB writes that each copy: the 33rd finds 32 MiB waiting, tries
         * to commit, and is refused before it copies anything */
        for (unsigned i = 0; i < 40 && r == 0; i++, off += 1u << 20) {
                fill_pattern(big, 1u << 20, 3, i);
                r = cowvol_volume_pwrite(vol, NULL, big, 1u << 20, off);
        }
        cr_assert_eq(r, -EIO, "a write is refused once a commit's worth waits and the image refuses it");
        cr_assert_leq(off, 34u << 20, "no more than a commit's worth waited (%llu bytes written)",
                      (unsigned long long)off);
        /* a writer that goes on: refused before anything is copied */
        cr_assert_eq(cowvol_snapshot_info(vol, snap, &before), 0);
        for (unsigned i = 0; i < 4; i++) {
                fill_pattern(big, 1u << 20, 4, i);
                cr_assert_eq(cowvol_volume_pwrite(vol, NULL, big, 1u << 20, (uint64_t)(48 + i) << 20), -EIO);
        }
        cr_assert_eq(cowvol_snapshot_info(vol, snap, &after), 0);
        cr_assert_eq(after.exceptions, before.exceptions, "nothing more was copied (%llu -> %llu exceptions)",
                     (unsigned long long)before.exceptions, (unsigned long long)after.exceptions);
        failing = false;
        cr_assert_eq(cowvol_volume_flush(vol), 0);
        /* every write that was answered is there */
        for (uint64_t o = 0; o + (1u << 20) < off; o += 1u << 20) {
                fill_pattern(big, 1u << 20, 3, o >> 20);
                cr_assert_eq(cowvol_volume_pread(vol, NULL, got, CHUNK, o + 5 * CHUNK), 0);
                cr_assert_arr_eq(got, big + 5 * CHUNK, CHUNK, "MiB %llu", (unsigned long long)(o >> 20));
        }
        free(big);
}

Test(ioerror, closed_while_the_image_refuses)
{
        uint8_t nw[CHUNK];

        fill_pattern(nw, CHUNK, 5, 2);
        cr_assert_eq(cowvol_volume_pwrite(vol, NULL, nw, CHUNK, 2 * CHUNK), 0);
        failing = true;
        log_capture_start();
        /* the waiting chunk is freed (no leak: LeakSanitizer), and the loss said */
        vol = cowvol_volume_close(vol);
        cr_assert(contains_ci(log_text(), "1 chunks written since the last successful flush never reached the image"),
                  "log: %s", log_text());
}

/* The newest store's commit fails on the committer thread (its sync): the
 * group's copies are forgotten and must go to the older snapshot before a
 * write into it reads its view (a chunk it read through the newest one),
 * and before its reads: never the origin's new data. */
static ino_t newest_ino;
static bool newest_sync_fails;

static int newest_fails(int fd, enum sys_op op, uint64_t len, uint64_t off, void *ud)
{
        struct stat st;

        (void)len, (void)off, (void)ud;
        if (!newest_sync_fails || op != SYS_SYNC || fstat(fd, &st) < 0 || st.st_ino != newest_ino)
                return 0;
        newest_sync_fails = false;
        return -EIO;
}

Test(ioerror, a_failed_group_then_a_write_into_the_older_snapshot)
{
        uint64_t saved = engine_group_bytes;
        uint8_t nw[4 * CHUNK], old[CHUNK], part[512], got[CHUNK];
        cowvol_snapshot *newest;
        char *p = path_in(dir, "newest.cow");
        struct stat st;

        engine_group_bytes = 4 * CHUNK; /* the write below seals a group */
        cr_assert_eq(cowvol_volume_snapshot_create(vol, p, 1u << 20, &newest), 0);
        cr_assert_eq(stat(p, &st), 0);
        newest_ino = st.st_ino;
        sys_fault_set(newest_fails, NULL);
        newest_sync_fails = true;
        fill_pattern(nw, sizeof(nw), 9, 0);
        cr_assert_eq(cowvol_volume_pwrite(vol, NULL, nw, sizeof(nw), 0), 0);
        memset(part, 0x77, sizeof(part));
        /* into the older one at chunk 1, which it read through the newest */
        cr_assert_eq(cowvol_volume_pwrite(vol, snap, part, sizeof(part), 1 * CHUNK), 0);
        for (unsigned c = 0; c < 4; c++) {
                fill_pattern(old, CHUNK, 1, c);
                if (c == 1)
                        memcpy(old, part, sizeof(part));
                cr_assert_eq(cowvol_volume_pread(vol, snap, got, CHUNK, c * CHUNK), 0);
                cr_assert_arr_eq(got, old, CHUNK, "the older snapshot's chunk %u, before a flush", c);
        }
        cr_assert_eq(cowvol_volume_flush(vol), 0);
        cowvol_volume_close(vol);
        cr_assert_eq(cowvol_volume_open(img, CHUNK, &vol), 0);
        cr_assert_eq(cowvol_volume_snapshot_attach(vol, store, &snap), 0);
        cr_assert_eq(cowvol_volume_snapshot_attach(vol, p, &newest), 0);
        for (unsigned c = 0; c < 4; c++) {
                fill_pattern(old, CHUNK, 1, c);
                if (c == 1)
                        memcpy(old, part, sizeof(part));
                cr_assert_eq(cowvol_volume_pread(vol, snap, got, CHUNK, c * CHUNK), 0);
                cr_assert_arr_eq(got, old, CHUNK, "the older snapshot's chunk %u, reopened", c);
                cr_assert_eq(cowvol_volume_pread(vol, NULL, got, CHUNK, c * CHUNK), 0);
                cr_assert_arr_eq(got, nw + c * CHUNK, CHUNK, "the volume's chunk %u, reopened", c);
        }
        engine_group_bytes = saved;
        free(p);
}
