/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Userspace engine benchmark, each figure a ratio to the same I/O on the raw
 * image file, measured in the same run:
 *  - snapshot creation time on a 1 GiB and a 64 GiB volume (it must not
 *    grow with the size);
 *  - origin first write (every chunk copied), re-write (no copy) and
 *    snapshot read, with 1 and with 8 snapshots, in blocks of BS bytes,
 *    sequential, each write pass ending with a flush (fdatasync) as the
 *    raw pass; reads (from the page cache) are the best of 7 passes.
 * Usage: engine-bench [DIR] [MiB] [BS]   (defaults /var/tmp 256 1M)
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cowvol.h"
#include "internal.h"

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int r)
{
        fprintf(stderr, "engine-bench: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

static char dir[3500];
static uint64_t size, bs;
static uint8_t *buf;

static void path_of(char *out, const char *name)
{
        snprintf(out, 4096, "%s/%s", dir, name);
}

static void make_image(const char *p, uint64_t bytes, bool fill)
{
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);

        if (fd < 0 || ftruncate(fd, (off_t)bytes) < 0)
                die(p, -errno);
        if (fill)
                for (uint64_t off = 0; off < bytes; off += bs) {
                        memset(buf, (int)(off / bs), bs);
                        if (pwrite_full(fd, buf, bs, off) < 0)
                                die("fill", -errno);
                }
        fsync(fd);
        close(fd);
}

/* raw: the same pattern straight on the image file */
static double raw_pass(const char *img, bool write)
{
        int fd = open(img, O_RDWR);
        double t0 = now();

        for (uint64_t off = 0; off < size; off += bs) {
                int r = write ? pwrite_full(fd, buf, bs, off) : pread_full(fd, buf, bs, off);
                if (r < 0)
                        die("raw", r);
        }
        if (write)
                fdatasync(fd);
        close(fd);
        return (double)size / (now() - t0) / 1048576.0;
}

static double engine_pass(cowvol_volume *v, cowvol_snapshot *sn, bool write)
{
        double t0 = now();

        for (uint64_t off = 0; off < size; off += bs) {
                int r = write ? cowvol_volume_pwrite(v, sn, buf, bs, off) : cowvol_volume_pread(v, sn, buf, bs, off);
                if (r < 0)
                        die("engine", r);
        }
        if (write)
                cowvol_volume_flush(v);
        return (double)size / (now() - t0) / 1048576.0;
}

static void creation(uint64_t gib)
{
        char img[4096], st[4096];
        cowvol_volume *v;
        cowvol_snapshot *sn;
        double t0, best = 1e9;

        path_of(img, "bench-create.img");
        make_image(img, gib << 30, false);
        if (cowvol_volume_open(img, 4096, &v) < 0)
                die("open", EIO);
        for (int i = 0; i < 5; i++) {
                snprintf(st, sizeof(st), "%s/bench-create-%d.cow", dir, i);
                unlink(st);
                t0 = now();
                /* the store is 20 % of the volume, as the daemon's default */
                int r = cowvol_volume_snapshot_create(v, st, (gib << 30) / 5, &sn);
                double t = now() - t0;
                if (r < 0)
                        die("snapshot", r);
                if (t < best)
                        best = t;
        }
        cowvol_volume_close(v);
        for (int i = 0; i < 5; i++) {
                snprintf(st, sizeof(st), "%s/bench-create-%d.cow", dir, i);
                unlink(st);
        }
        unlink(img);
        printf("snapshot creation, %3" PRIu64 " GiB volume: %.2f ms (best of 5)\n", gib, best * 1e3);
}

static void throughput(int nsnaps)
{
        char img[4096], st[4096];
        cowvol_volume *v;
        cowvol_snapshot *sn[8];
        double raw_w, raw_r, first, rewrite, sread;

        path_of(img, "bench-io.img");
        make_image(img, size, true);
        raw_w = raw_pass(img, true);
        /* reads from the page cache take ~30 ms a pass: best of 7 */
        raw_r = 0;
        for (int i = 0; i < 7; i++) {
                double x = raw_pass(img, false);
                raw_r = x > raw_r ? x : raw_r;
        }
        if (cowvol_volume_open(img, 4096, &v) < 0)
                die("open", EIO);
        cowvol_volume_set_autoextend(v, 100, 20);
        for (int i = 0; i < nsnaps; i++) {
                snprintf(st, sizeof(st), "%s/bench-io-%d.cow", dir, i);
                unlink(st);
                /* room for every chunk and its metadata */
                if (cowvol_volume_snapshot_create(v, st, size + size / 200 + (1 << 20), &sn[i]) < 0)
                        die("snapshot", EIO);
        }
        memset(buf, 0xab, bs);
        first = engine_pass(v, NULL, true);
        rewrite = engine_pass(v, NULL, true);
        sread = 0;
        for (int i = 0; i < 7; i++) {
                double x = engine_pass(v, sn[0], false);
                sread = x > sread ? x : sread;
        }
        cowvol_volume_close(v);
        for (int i = 0; i < nsnaps; i++) {
                snprintf(st, sizeof(st), "%s/bench-io-%d.cow", dir, i);
                unlink(st);
        }
        unlink(img);
        printf("%d snapshot%s, %" PRIu64 " MiB in %" PRIu64 " KiB blocks:\n", nsnaps, nsnaps > 1 ? "s" : "",
               size >> 20, bs >> 10);
        printf("  raw image:      write %7.1f MiB/s, read %7.1f MiB/s\n", raw_w, raw_r);
        printf("  first write:    %7.1f MiB/s = %5.1f %% of raw write\n", first, 100 * first / raw_w);
        printf("  re-write:       %7.1f MiB/s = %5.1f %% of raw write\n", rewrite, 100 * rewrite / raw_w);
        printf("  snapshot read:  %7.1f MiB/s = %5.1f %% of raw read\n", sread, 100 * sread / raw_r);
}

int main(int argc, char **argv)
{
        snprintf(dir, sizeof(dir), "%s", argc > 1 ? argv[1] : "/var/tmp");
        size = (argc > 2 ? strtoull(argv[2], NULL, 10) : 256) << 20;
        if (argc > 3 && cowvol_parse_size(argv[3], &bs) < 0)
                die("block size", EINVAL);
        if (!bs)
                bs = 1 << 20;
        if (bs % 4096 || size % bs)
                die("block size must be a multiple of 4K dividing the size", EINVAL);
        buf = malloc(bs);
        creation(1);
        creation(64);
        throughput(1);
        throughput(8);
        free(buf);
        return 0;
}
