/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot chains in the userspace engine (DESIGN.md, "Snapshot chains"):
 * where each copy goes, what each store holds, and that every snapshot
 * reads back as the volume was when it was taken, through removals, writes
 * into snapshots, full stores in the middle of the chain, and stores made
 * before chains (adopt).  Each test keeps a model of every snapshot's bytes.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define CH 4096u
#define NCH 64u
#define VOL (NCH * CH)
#define MAXS 12

struct chain {
        char *dir, *img;
        cowvol_volume *v;
        cowvol_snapshot *sn[MAXS];
        uint8_t *want[MAXS]; /* each snapshot's content, as the model has it */
        int n;
        uint8_t cur[VOL];
        uint64_t seq;
};

static void chain_open(struct chain *c)
{
        int fd;

        memset(c, 0, sizeof(*c));
        c->dir = tmpdir_make();
        c->img = path_in(c->dir, "vol.img");
        fill_pattern(c->cur, VOL, 1, 0);
        fd = open(c->img, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pwrite(fd, c->cur, VOL, 0), (ssize_t)VOL);
        close(fd);
        cr_assert_eq(cowvol_volume_open(c->img, CH, &c->v), 0);
}

static void chain_close(struct chain *c)
{
        cowvol_volume_close(c->v);
        for (int i = 0; i < MAXS; i++)
                free(c->want[i]);
        free(c->img);
        tmpdir_remove(c->dir);
}

static int snap(struct chain *c, uint64_t store_bytes)
{
        char name[32], *path;
        int i = c->n++;

        snprintf(name, sizeof(name), "s%d.cow", i);
        path = path_in(c->dir, name);
        cr_assert_eq(cowvol_volume_snapshot_create(c->v, path, store_bytes, &c->sn[i]), 0);
        c->want[i] = malloc(VOL);
        memcpy(c->want[i], c->cur, VOL);
        free(path);
        return i;
}

/* origin chunks [first, first+n) get new bytes */
static void owrite(struct chain *c, uint64_t first, size_t n)
{
        fill_pattern(c->cur + first * CH, n * CH, 2, ++c->seq);
        cr_assert_eq(cowvol_volume_pwrite(c->v, NULL, c->cur + first * CH, n * CH, first * CH), 0);
}

/* 100 bytes into snapshot @i at chunk @k */
static void swrite(struct chain *c, int i, uint64_t k)
{
        uint8_t b[100];

        fill_pattern(b, sizeof(b), 3, ++c->seq);
        cr_assert_eq(cowvol_volume_pwrite(c->v, c->sn[i], b, sizeof(b), k * CH + 10), 0);
        memcpy(c->want[i] + k * CH + 10, b, sizeof(b));
}

static uint64_t count(struct chain *c, int i)
{
        struct cowvol_snapshot_info si;

        cr_assert_eq(cowvol_snapshot_info(c->v, c->sn[i], &si), 0);
        return si.exceptions;
}

static bool valid(struct chain *c, int i)
{
        struct cowvol_snapshot_info si;

        cr_assert_eq(cowvol_snapshot_info(c->v, c->sn[i], &si), 0);
        return si.valid;
}

static void check_all(struct chain *c, const char *when)
{
        static uint8_t got[VOL];

        cr_assert_eq(cowvol_volume_pread(c->v, NULL, got, VOL, 0), 0);
        cr_assert(memcmp(got, c->cur, VOL) == 0, "%s: the volume is not the model", when);
        for (int i = 0; i < c->n; i++) {
                if (!c->sn[i] || !valid(c, i))
                        continue;
                cr_assert_eq(cowvol_volume_pread(c->v, c->sn[i], got, VOL, 0), 0);
                for (uint64_t k = 0; k < NCH; k++)
                        cr_assert(memcmp(got + k * CH, c->want[i] + k * CH, CH) == 0,
                                  "%s: snapshot s%d differs from the model at chunk %" PRIu64, when, i, k);
        }
}

Test(chain, one_copy_into_the_newest)
{
        struct chain c;

        chain_open(&c);
        for (int i = 0; i < 8; i++) {
                snap(&c, 1 << 20);
                owrite(&c, (uint64_t)i * 4, 4);
        }
        /* every first write copied once, into the snapshot newest then */
        for (int i = 0; i < 8; i++)
                cr_assert_eq(count(&c, i), 4, "s%d holds %" PRIu64 " chunks, want 4", i, count(&c, i));
        owrite(&c, 0, 32); /* all of them again: only s7 takes copies */
        cr_assert_eq(count(&c, 7), 32);
        for (int i = 0; i < 7; i++)
                cr_assert_eq(count(&c, i), 4);
        check_all(&c, "after the writes");
        cowvol_volume_flush(c.v);
        check_all(&c, "after a flush");
        chain_close(&c);
}

Test(chain, writes_into_old_and_middle_snapshots)
{
        struct chain c;

        chain_open(&c);
        for (int i = 0; i < 5; i++) {
                snap(&c, 1 << 20);
                owrite(&c, (uint64_t)i, 1);
        }
        /* s2 at chunk 40 (nobody holds it): s1 first takes its view */
        swrite(&c, 2, 40);
        cr_assert_eq(count(&c, 1), 2);
        cr_assert_eq(count(&c, 2), 2);
        cr_assert_eq(count(&c, 0), 1, "s0 reads through s1, which holds chunk 40 now");
        swrite(&c, 2, 40); /* again: s1 has it already */
        cr_assert_eq(count(&c, 1), 2);
        swrite(&c, 0, 41); /* the oldest: nobody below */
        swrite(&c, 4, 3);  /* the newest, at a chunk it holds */
        check_all(&c, "after the snapshot writes");
        chain_close(&c);
}

Test(chain, removals_give_the_older_neighbour_what_it_read)
{
        struct chain c;
        uint64_t before;

        chain_open(&c);
        for (int i = 0; i < 6; i++) {
                snap(&c, 1 << 20);
                owrite(&c, (uint64_t)i * 2, 3); /* overlapping: chunk 2i+2 is copied twice */
        }
        /* s(i) holds 2i..2i+2.  The middle one, s3 (6,7,8): s2 (4,5,6)
         * takes 7 and 8 */
        cr_assert_eq(cowvol_volume_snapshot_detach(c.v, c.sn[3]), 0);
        c.sn[3] = NULL;
        cr_assert_eq(count(&c, 2), 5);
        check_all(&c, "after removing s3");
        /* then s2 (4..8): s1 (2,3,4) takes 5..8 */
        before = count(&c, 1);
        cr_assert_eq(cowvol_volume_snapshot_detach(c.v, c.sn[2]), 0);
        c.sn[2] = NULL;
        cr_assert_eq(count(&c, 1), before + 4, "s1 takes only what it lacked of s2");
        check_all(&c, "after removing s2");
        /* the oldest: nothing to give */
        before = count(&c, 1);
        cr_assert_eq(cowvol_volume_snapshot_detach(c.v, c.sn[0]), 0);
        c.sn[0] = NULL;
        cr_assert_eq(count(&c, 1), before);
        /* the newest: the one below takes its chunks, then the origin's */
        cr_assert_eq(cowvol_volume_snapshot_detach(c.v, c.sn[5]), 0);
        c.sn[5] = NULL;
        owrite(&c, 30, 2);
        check_all(&c, "after removing the newest and writing");
        /* an unchain that is undone leaves everything exact */
        cr_assert_eq(cowvol_volume_snapshot_unchain(c.v, c.sn[4]), 0);
        owrite(&c, 40, 2); /* s4 leaving: it and s1 both take copies */
        cr_assert_eq(cowvol_volume_snapshot_rechain(c.v, c.sn[4]), 0);
        check_all(&c, "after an undone removal");
        chain_close(&c);
}

Test(chain, a_full_store_in_the_middle)
{
        struct chain c;
        int small;

        chain_open(&c);
        cowvol_volume_set_autoextend(c.v, 100, 1); /* no growth */
        snap(&c, 1 << 20);
        owrite(&c, 0, 4);
        /* header, one area, 10 data chunks */
        small = snap(&c, 12 * CH);
        owrite(&c, 8, 4);
        cowvol_volume_flush(c.v);
        snap(&c, 1 << 20);
        owrite(&c, 20, 2);
        /* back to the small one's time: newer writes fill the newest, not it */
        cr_assert(valid(&c, small));
        cr_assert_eq(cowvol_volume_snapshot_detach(c.v, c.sn[2]), 0); /* s1 is the newest again */
        c.sn[2] = NULL;
        /* s1 holds 6 (4 + 2 from s2), takes 4 more waiting for a commit,
         * and fails at the fifth: s0 takes that one, and the 4 s1 forgot,
         * from the image, before the new data goes there */
        for (uint64_t k = 30; k < 38; k++)
                owrite(&c, k, 1);
        cr_assert(!valid(&c, small), "s1 overflowed");
        check_all(&c, "after s1 overflowed");
        cowvol_volume_flush(c.v);
        owrite(&c, 50, 3);
        check_all(&c, "after more writes with s1 invalid");
        chain_close(&c);
}

/* A write into a snapshot whose older neighbour fills under it while origin
 * writes wait in memory: the full store forgets copies, those of the waiting
 * chunks are made again from the image, and the snapshot's new chunks must
 * still start as its view (making them again once read the image into the
 * buffer that held the view: the snapshot took another chunk's bytes). */
Test(chain, a_snapshot_write_that_fills_the_older_store)
{
        struct chain c;
        uint8_t b[2 * CH + 100];
        int small, mid;

        chain_open(&c);
        cowvol_volume_set_autoextend(c.v, 100, 1); /* no growth */
        small = snap(&c, 4 * CH); /* header, one area, 2 data chunks */
        mid = snap(&c, 1 << 20);
        snap(&c, 1 << 20);
        owrite(&c, 40, 2); /* waits for a commit; the newest holds its copies */
        fill_pattern(b, sizeof(b), 4, ++c.seq);
        cr_assert_eq(cowvol_volume_pwrite(c.v, c.sn[mid], b, sizeof(b), 10 * CH + 10), 0);
        memcpy(c.want[mid] + 10 * CH + 10, b, sizeof(b));
        cr_assert(!valid(&c, small), "s0 overflowed");
        check_all(&c, "after the write into s1");
        cowvol_volume_flush(c.v);
        check_all(&c, "after a flush");
        chain_close(&c);
}

Test(chain, restores_of_old_and_middle_snapshots)
{
        for (int target = 0; target < 4; target++) {
                struct chain c;
                uint64_t left;
                int r;

                chain_open(&c);
                for (int i = 0; i < 4; i++) {
                        snap(&c, 1 << 20);
                        owrite(&c, (uint64_t)i * 3, 5);
                        swrite(&c, i, 50 + (uint64_t)i);
                }
                cr_assert_eq(cowvol_volume_merge_begin(c.v, c.sn[target]), 0);
                while ((r = cowvol_volume_merge_step(c.v, &left)) > 0)
                        ;
                cr_assert_eq(r, 0);
                cr_assert_eq(cowvol_volume_merge_end(c.v), 0);
                memcpy(c.cur, c.want[target], VOL);
                check_all(&c, "after the restore (kept)");
                owrite(&c, 60, 2); /* the kept one is the newest now */
                check_all(&c, "after a write after the restore");
                chain_close(&c);
        }
}

/* The restored snapshot's emptied store cannot be opened again at the end
 * (a folder in its place): merge_end lets the snapshot go and says so; the
 * others stay exact, and the origin's next writes give their copies to
 * the newest that is left. */
Test(chain, a_restored_store_that_cannot_be_opened_again)
{
        for (int target = 1; target < 3; target++) {
                struct chain c;
                uint64_t left;
                char name[32], *path, *aside;
                int r;

                chain_open(&c);
                for (int i = 0; i < 3; i++) {
                        snap(&c, 1 << 20);
                        owrite(&c, (uint64_t)i * 3, 5);
                }
                cr_assert_eq(cowvol_volume_merge_begin(c.v, c.sn[target]), 0);
                while ((r = cowvol_volume_merge_step(c.v, &left)) > 0)
                        ;
                cr_assert_eq(r, 0);
                snprintf(name, sizeof(name), "s%d.cow", target);
                path = path_in(c.dir, name);
                aside = path_in(c.dir, "aside.cow");
                cr_assert_eq(rename(path, aside), 0);
                cr_assert_eq(mkdir(path, 0700), 0);
                cr_assert_lt(cowvol_volume_merge_end(c.v), 0, "the store could not be opened again");
                c.sn[target] = NULL; /* let go */
                memcpy(c.cur, c.want[target], VOL);
                check_all(&c, "after the restore whose store is gone");
                owrite(&c, 0, 20);
                check_all(&c, "after an origin write");
                cowvol_volume_flush(c.v);
                check_all(&c, "after a flush");
                cr_assert_eq(rmdir(path), 0);
                free(path);
                free(aside);
                chain_close(&c);
        }
}

/* Stores as the kernel, or this engine before chains, left them: each got
 * every copy, and s1 was written into at chunk 5, which s0 lacks. */
Test(chain, adopt_stores_from_before_chains)
{
        struct chain c;
        cowvol_store *st[2];
        uint8_t old[CH], mine[CH];
        uint64_t nw, copied = 1;
        char *path[2];
        int fd;

        chain_open(&c);
        cowvol_volume_close(c.v);
        memcpy(old, c.cur + 2 * CH, CH);
        for (int i = 0; i < 2; i++) {
                char name[32];
                snprintf(name, sizeof(name), "s%d.cow", i);
                path[i] = path_in(c.dir, name);
                cr_assert_eq(cowvol_store_create(path[i], CH, 1 << 20, 0, &st[i]), 0);
                /* chunk 2 changed after both: both hold the old one */
                cr_assert_eq(cowvol_store_allocate(st[i], &nw), 0);
                cr_assert_eq(cowvol_store_write_chunk(st[i], nw, old), 0);
                cr_assert_eq(cowvol_store_add(st[i], 2, nw), 0);
                c.want[i] = malloc(VOL);
                memcpy(c.want[i], c.cur, VOL);
        }
        fill_pattern(mine, CH, 9, 9);
        cr_assert_eq(cowvol_store_allocate(st[1], &nw), 0);
        cr_assert_eq(cowvol_store_write_chunk(st[1], nw, mine), 0);
        cr_assert_eq(cowvol_store_add(st[1], 5, nw), 0);
        memcpy(c.want[1] + 5 * CH, mine, CH);
        for (int i = 0; i < 2; i++) {
                cr_assert_geq(cowvol_store_commit(st[i]), 0);
                cowvol_store_close(st[i]);
        }
        fill_pattern(c.cur + 2 * CH, CH, 7, 7);
        fd = open(c.img, O_WRONLY | O_CLOEXEC);
        cr_assert_eq(pwrite(fd, c.cur + 2 * CH, CH, 2 * CH), (ssize_t)CH);
        close(fd);

        cr_assert_eq(cowvol_volume_open(c.img, CH, &c.v), 0);
        for (int i = 0; i < 2; i++)
                cr_assert_eq(cowvol_volume_snapshot_attach(c.v, path[i], &c.sn[i]), 0);
        c.n = 2;
        cr_assert_eq(cowvol_volume_chain_adopt(c.v, &copied), 0);
        cr_assert_eq(copied, 1, "s0 takes the origin's chunk 5, %" PRIu64 " copied", copied);
        check_all(&c, "after adopting");
        cr_assert_eq(cowvol_volume_chain_adopt(c.v, &copied), 0);
        cr_assert_eq(copied, 0, "a second adopt copies nothing");
        owrite(&c, 5, 1);
        check_all(&c, "after a write");
        for (int i = 0; i < 2; i++)
                free(path[i]);
        chain_close(&c);
}

/* --- a volume that grows ------------------------------------------------------ */

#define SMALL (NCH / 2 * CH)

static int collect_range(uint64_t off, uint64_t len, void *ud)
{
        uint64_t *r = ud; /* r[0]: count; then off, len pairs */

        if (r[0] < 8) {
                r[1 + 2 * r[0]] = off;
                r[2 + 2 * r[0]] = len;
        }
        r[0]++;
        return 0;
}

/* s0 taken at 32 chunks, the volume grown to 64, s1 taken: s0 keeps its
 * size and content, no copy goes past its end (the tail's first writes
 * copy into s1 only, and none at all before s1), reads past it are
 * refused, its diff counts the grown space as new; shrinking is refused
 * under snapshots; a restore of s0 puts back its 32 chunks, leaves the
 * tail as the volume holds it, and s0 (kept) then covers the whole
 * volume. */
Test(chain, a_volume_that_grows)
{
        static uint8_t cur[VOL], s0[VOL], s1[VOL], got[VOL];
        cowvol_snapshot *sn0, *sn1;
        struct cowvol_snapshot_info si;
        uint64_t ranges[17] = {}, left;
        char *dir = tmpdir_make(), *img = path_in(dir, "vol.img"), *p0 = path_in(dir, "s0.cow"),
             *p1 = path_in(dir, "s1.cow");
        cowvol_volume *v;
        int fd, r;

        fill_pattern(cur, SMALL, 1, 0);
        fd = open(img, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pwrite(fd, cur, SMALL, 0), (ssize_t)SMALL);
        close(fd);
        cr_assert_eq(cowvol_volume_open(img, CH, &v), 0);
        cr_assert_eq(cowvol_volume_snapshot_create(v, p0, 1 << 20, &sn0), 0);
        memcpy(s0, cur, SMALL);
        fill_pattern(cur, 4 * CH, 2, 1);
        cr_assert_eq(cowvol_volume_pwrite(v, NULL, cur, 4 * CH, 0), 0);

        cr_assert_eq(cowvol_volume_resize(v, VOL), 0);
        cr_assert_eq(cowvol_volume_size(v), VOL);
        cr_assert_eq(cowvol_snapshot_size(v, sn0), SMALL, "s0 keeps its size");
        cr_assert_eq(cowvol_volume_pread(v, NULL, got, VOL, 0), 0);
        cr_assert(memcmp(got, cur, VOL) == 0, "the grown space reads zero");
        /* the tail's first writes: no snapshot covers them, nothing copied */
        fill_pattern(cur + SMALL, 8 * CH, 3, 2);
        cr_assert_eq(cowvol_volume_pwrite(v, NULL, cur + SMALL, 8 * CH, SMALL), 0);
        cr_assert_eq(cowvol_volume_flush(v), 0);
        cr_assert_eq(cowvol_snapshot_info(v, sn0, &si), 0);
        cr_assert_eq(si.exceptions, 4, "s0 holds its 4 chunks only, not the tail's (%" PRIu64 ")", si.exceptions);

        cr_assert_eq(cowvol_volume_snapshot_create(v, p1, 1 << 20, &sn1), 0);
        cr_assert_eq(cowvol_snapshot_size(v, sn1), VOL);
        memcpy(s1, cur, VOL);
        fill_pattern(cur + 2 * CH, 40 * CH, 4, 3); /* head and tail */
        cr_assert_eq(cowvol_volume_pwrite(v, NULL, cur + 2 * CH, 40 * CH, 2 * CH), 0);
        fill_pattern(cur + 56 * CH, 4 * CH, 6, 5); /* the tail alone: s1 holds runs past s0's end */
        cr_assert_eq(cowvol_volume_pwrite(v, NULL, cur + 56 * CH, 4 * CH, 56 * CH), 0);
        cr_assert_eq(cowvol_volume_flush(v), 0);
        cr_assert_eq(cowvol_snapshot_info(v, sn0, &si), 0);
        cr_assert_eq(si.exceptions, 4, "the copies went to s1, the newest");

        cr_assert_eq(cowvol_volume_pread(v, sn0, got, SMALL, 0), 0);
        cr_assert(memcmp(got, s0, SMALL) == 0, "s0 reads as taken");
        cr_assert_eq(cowvol_volume_pread(v, sn0, got, CH, SMALL), -EINVAL, "a read past s0's end is refused");
        cr_assert_eq(cowvol_volume_pwrite(v, sn0, got, CH, SMALL - CH / 2), -EINVAL, "and a write");
        cr_assert_eq(cowvol_volume_pread(v, sn1, got, VOL, 0), 0);
        cr_assert(memcmp(got, s1, VOL) == 0, "s1 reads as taken");
        cr_assert_eq(cowvol_snapshot_set_size(v, sn1, SMALL - CH), -EINVAL, "older never larger than newer");
        cr_assert_eq(cowvol_snapshot_set_size(v, sn0, VOL + CH), -EINVAL, "nor larger than the volume");

        cr_assert_eq(cowvol_snapshot_diff(v, sn0, collect_range, ranges), 0);
        cr_assert_geq(ranges[0], 2);
        cr_assert_eq(ranges[1 + 2 * (ranges[0] - 1)], SMALL, "the last range is the grown space");
        cr_assert_eq(ranges[2 + 2 * (ranges[0] - 1)], VOL - SMALL);

        cr_assert_eq(cowvol_volume_resize(v, SMALL), -EBUSY, "no shrinking under snapshots");
        cr_assert_eq(cowvol_volume_resize(v, VOL + 512), -EINVAL, "with snapshots, whole chunks only");
        cr_assert_eq(cowvol_volume_size(v), VOL);

        cr_assert_eq(cowvol_volume_merge_begin(v, sn0), 0);
        cr_assert_eq(cowvol_volume_resize(v, 2 * VOL), -EBUSY, "nor growing during a restore");
        cr_assert_eq(cowvol_volume_pread(v, NULL, got, VOL - SMALL, SMALL), 0);
        cr_assert(memcmp(got, cur + SMALL, VOL - SMALL) == 0,
                  "during the restore, the volume past s0's end reads what it holds, not s1's copies");
        while ((r = cowvol_volume_merge_step(v, &left)) > 0)
                ;
        cr_assert_eq(r, 0);
        cr_assert_eq(cowvol_volume_merge_end(v), 0);
        memcpy(cur, s0, SMALL); /* the tail keeps what the volume holds */
        cr_assert_eq(cowvol_volume_pread(v, NULL, got, VOL, 0), 0);
        cr_assert(memcmp(got, cur, VOL) == 0, "the volume: s0's 32 chunks, then its own tail");
        cr_assert_eq(cowvol_volume_pread(v, sn1, got, VOL, 0), 0);
        cr_assert(memcmp(got, s1, VOL) == 0, "s1 reads as taken, after the restore");
        cr_assert_eq(cowvol_snapshot_size(v, sn0), VOL, "s0, the newest, covers the volume");
        cr_assert_eq(cowvol_volume_pread(v, sn0, got, VOL, 0), 0);
        cr_assert(memcmp(got, cur, VOL) == 0, "s0 is the restored volume");
        memcpy(s0, cur, VOL);
        fill_pattern(cur + 50 * CH, 4 * CH, 5, 4);
        cr_assert_eq(cowvol_volume_pwrite(v, NULL, cur + 50 * CH, 4 * CH, 50 * CH), 0);
        cr_assert_eq(cowvol_volume_pread(v, sn0, got, VOL, 0), 0);
        cr_assert(memcmp(got, s0, VOL) == 0, "s0 keeps the tail it was restored with");
        cr_assert_eq(cowvol_volume_pread(v, sn1, got, VOL, 0), 0);
        cr_assert(memcmp(got, s1, VOL) == 0, "s1 still reads as taken");

        cowvol_volume_close(v);
        cr_assert_eq(cowvol_volume_open(img, CH, &v), 0);
        cr_assert_eq(cowvol_volume_size(v), VOL, "the size is on disk");
        cowvol_volume_close(v);
        free(img);
        free(p0);
        free(p1);
        tmpdir_remove(dir);
}
