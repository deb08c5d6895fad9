/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Snapshot chains (issue 12, DESIGN.md "Snapshot chains"): what many
 * snapshots of one volume cost in the userspace engine.  Every figure is a
 * ratio to a baseline measured in the same run, printed with its goal:
 *  1. first write: a sequential overwrite of the whole volume in BS blocks,
 *     then a flush, after taking 1, 8 and 64 snapshots (no writes between
 *     them), against the 1-snapshot case (goal >= 0.80 at 8 and 64);
 *  2. after that overwrite with 64 snapshots, the stores' disk use
 *     (st_blocks of every store file, less their metadata chunks as the
 *     kernel's status line counts them) against the bytes changed
 *     (goal <= 1.10); the copies alone (exceptions x chunk) beside it;
 *  3. a chain of 64 snapshots with 1 % of the chunks (scattered, one-chunk
 *     writes) changed after each: a full read of the oldest against a raw
 *     read of the image file (goal >= 0.90).  Cold: before each pass the
 *     volume is flushed and every file involved (image, stores) is
 *     fdatasync'ed and dropped from the page cache with
 *     posix_fadvise(DONTNEED), so both sides read from the disk through
 *     the page cache (no O_DIRECT on either); best of 3.  Warm (from the
 *     page cache, best of 3) beside it;
 *  4. removing the middle snapshot of that chain (detach, then unlink its
 *     store, as cowvold does): the bytes copied into the other stores
 *     (their exception counts before and after) against the bytes only it
 *     held (its store's chunks that the next older store lacks, read from
 *     the store files); and whether the oldest still reads the same;
 *  5. restore (merge_begin/step/end) of the only snapshot, with VOLUME/2
 *     written in BS blocks after it, and of the oldest of RESTORE_SNAPS
 *     snapshots, with VOLUME/16 written after each, against a raw copy of
 *     the same bytes (read a file, write an allocated file in BS blocks,
 *     fdatasync: dd conv=fdatasync), both cold (goal >= 0.80); then the
 *     volume must read as the snapshot did.  With newer snapshots, they
 *     first take the origin's old chunks (the bytes they took beside it,
 *     and the rate of all bytes written against dd's);
 *  6. 1,000 snapshots of one volume: creation latency (median of the last
 *     5) against creating the first (median of the first 5), and
 *     cowvol_snapshot_info over all of them (what a list costs) against
 *     the same on a volume with one snapshot, per snapshot.
 * Only lib/cowvol.h is used.  Stores are sized for the whole volume (an
 * engine that keeps independent copies needs that) and autoextend is off.
 *
 * Usage: chain-bench [DIR [WRITE_MiB [CHAIN_MiB [RESTORE_MiB [CHUNK [BS [MANY [RESTORE_SNAPS]]]]]]]]
 *   defaults /var/tmp 16 32 32 4K 1M 1000 8 (about a minute here with an engine
 *   that copies into every snapshot; the fdatasyncs of 64 stores dominate)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cowvol.h"

static char dir[3500];
static uint64_t bs;
static uint32_t chunk;
static uint8_t *buf;

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int r)
{
        fprintf(stderr, "chain-bench: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

static int pwrite_all(int fd, const void *p, size_t len, uint64_t off)
{
        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, (off_t)off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p = (const uint8_t *)p + n;
                len -= (size_t)n;
                off += (uint64_t)n;
        }
        return 0;
}

static int pread_all(int fd, void *p, size_t len, uint64_t off)
{
        while (len > 0) {
                ssize_t n = pread(fd, p, len, (off_t)off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p = (uint8_t *)p + n;
                len -= (size_t)n;
                off += (uint64_t)n;
        }
        return 0;
}

static void path_of(char *out, const char *name, int i)
{
        if (i < 0)
                snprintf(out, 4096, "%s/chain-bench-%s", dir, name);
        else
                snprintf(out, 4096, "%s/chain-bench-%s-%d.cow", dir, name, i);
}

/* block @off's content: seeded pseudo-random, distinct per block and seed */
static void pattern(uint8_t *p, size_t len, uint64_t seed)
{
        uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

        for (size_t i = 0; i + 8 <= len; i += 8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                memcpy(p + i, &x, 8);
        }
}

static void make_image(const char *p, uint64_t bytes, uint64_t seed)
{
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0 || ftruncate(fd, (off_t)bytes) < 0)
                die(p, -errno);
        for (uint64_t off = 0; off < bytes; off += bs) {
                pattern(buf, bs, seed + off / bs);
                if (pwrite_all(fd, buf, bs, off) < 0)
                        die("fill", -errno);
        }
        if (fsync(fd) < 0)
                die("fsync", -errno);
        close(fd);
}

/* written back and out of the page cache: the next read goes to the disk */
static void drop_cache(const char *p)
{
        int fd = open(p, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                die(p, -errno);
        if (fdatasync(fd) < 0)
                die("fdatasync", -errno);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
}

/* room for every chunk of the volume: header, metadata areas, 2 spare */
static uint64_t store_bytes_for(uint64_t vol)
{
        uint64_t data = (vol + chunk - 1) / chunk, epa = chunk / 16;

        return (data + (data + epa - 1) / epa + 3) * chunk;
}

struct vol {
        const char *tag;
        char img[4096];
        cowvol_volume *v;
        cowvol_snapshot **sn;
        char (*paths)[4096];
        int n, cap;
        uint64_t size;
};

static void vol_open(struct vol *c, const char *tag, uint64_t size, int cap, bool fill)
{
        memset(c, 0, sizeof(*c));
        c->tag = tag;
        c->size = size;
        c->cap = cap;
        path_of(c->img, tag, -1);
        if (fill)
                make_image(c->img, size, 1);
        else {
                int fd = open(c->img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
                        die(c->img, -errno);
                close(fd);
        }
        int r = cowvol_volume_open(c->img, chunk, &c->v);
        if (r < 0)
                die("volume open", r);
        cowvol_volume_set_autoextend(c->v, 100, 20);
        c->sn = calloc((size_t)cap, sizeof(*c->sn));
        c->paths = calloc((size_t)cap, sizeof(*c->paths));
        if (!c->sn || !c->paths)
                die("memory", -ENOMEM);
}

/* take snapshot number c->n; returns how long it took */
static double vol_snap(struct vol *c, uint64_t store_bytes)
{
        double t0;
        int r;

        if (c->n == c->cap)
                die("too many snapshots", -E2BIG);
        path_of(c->paths[c->n], c->tag, c->n);
        unlink(c->paths[c->n]);
        t0 = now();
        r = cowvol_volume_snapshot_create(c->v, c->paths[c->n], store_bytes, &c->sn[c->n]);
        t0 = now() - t0;
        if (r < 0)
                die("snapshot create", r);
        c->n++;
        return t0;
}

static void vol_close(struct vol *c)
{
        cowvol_volume_close(c->v);
        for (int i = 0; i < c->n; i++)
                if (c->paths[i][0])
                        unlink(c->paths[i]);
        unlink(c->img);
        free(c->sn);
        free(c->paths);
}

static void vol_drop_caches(struct vol *c)
{
        int r = cowvol_volume_flush(c->v);

        if (r < 0)
                die("flush", r);
        drop_cache(c->img);
        for (int i = 0; i < c->n; i++)
                if (c->paths[i][0])
                        drop_cache(c->paths[i]);
}

static uint64_t info_exceptions(struct vol *c, int i)
{
        struct cowvol_snapshot_info in;
        int r = cowvol_snapshot_info(c->v, c->sn[i], &in);

        if (r < 0)
                die("snapshot info", r);
        return in.exceptions;
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t len)
{
        for (size_t i = 0; i < len; i++)
                h = (h ^ p[i]) * 0x100000001b3ull;
        return h;
}

/* MiB/s of a whole pass over volume (@sn NULL) or snapshot @sn; *ret_sum:
 * a checksum of what was read, not timed (the raw pass it is set against
 * sums nothing; the byte-wise sum costs as much as a cold read here) */
static double vol_pass(struct vol *c, cowvol_snapshot *sn, bool write, uint64_t seed, uint64_t *ret_sum)
{
        uint64_t h = 0xcbf29ce484222325ull;
        double t0 = now(), untimed = 0;
        int r;

        for (uint64_t off = 0; off < c->size; off += bs) {
                if (write) {
                        pattern(buf, bs, seed + off / bs);
                        r = cowvol_volume_pwrite(c->v, sn, buf, bs, off);
                } else {
                        r = cowvol_volume_pread(c->v, sn, buf, bs, off);
                        if (ret_sum) {
                                double t1 = now();
                                h = fnv(h, buf, bs);
                                untimed += now() - t1;
                        }
                }
                if (r < 0)
                        die(write ? "engine write" : "engine read", r);
        }
        if (write && (r = cowvol_volume_flush(c->v)) < 0)
                die("flush", r);
        if (ret_sum)
                *ret_sum = h;
        return (double)c->size / (now() - t0 - untimed) / 1048576.0;
}

/* the same on a plain file (the raw baselines) */
static double raw_pass(const char *p, uint64_t size, bool write, uint64_t seed)
{
        int fd = open(p, O_RDWR | O_CLOEXEC);
        double t0 = now();

        if (fd < 0)
                die(p, -errno);
        for (uint64_t off = 0; off < size; off += bs) {
                int r;
                if (write)
                        pattern(buf, bs, seed + off / bs);
                r = write ? pwrite_all(fd, buf, bs, off) : pread_all(fd, buf, bs, off);
                if (r < 0)
                        die("raw", r);
        }
        if (write && fdatasync(fd) < 0)
                die("fdatasync", -errno);
        close(fd);
        return (double)size / (now() - t0) / 1048576.0;
}

static const char *verdict(double ratio, double goal, bool at_least)
{
        return (at_least ? ratio >= goal : ratio <= goal) ? "meets" : "misses";
}

/* --- 1, 2: first write with 1, 8, 64 snapshots; disk use ------------------------- */

static void first_write(uint64_t size)
{
        static const int counts[] = { 1, 8, 64 };
        double mibs[3], raw;
        uint64_t blocks = 0, meta = 0, exc = 0;

        char img[4096];

        /* the image file alone, for scale: an overwrite, then a flush */
        path_of(img, "raw", -1);
        make_image(img, size, 1);
        raw = raw_pass(img, size, true, 100);
        unlink(img);
        for (int k = 0; k < 3; k++) {
                struct vol c;

                vol_open(&c, "write", size, counts[k], true);
                for (int i = 0; i < counts[k]; i++)
                        vol_snap(&c, store_bytes_for(size));
                mibs[k] = vol_pass(&c, NULL, true, 200, NULL);
                if (counts[k] == 64) {
                        for (int i = 0; i < c.n; i++) {
                                struct cowvol_snapshot_info in;
                                struct stat st;
                                if (cowvol_snapshot_info(c.v, c.sn[i], &in) < 0 || stat(c.paths[i], &st) < 0)
                                        die("store size", -EIO);
                                blocks += (uint64_t)st.st_blocks * 512;
                                meta += in.usage.metadata_sectors * COWVOL_SECTOR_SIZE;
                                exc += in.exceptions;
                        }
                }
                vol_close(&c);
        }
        printf("first write: sequential overwrite of %" PRIu64 " MiB in %" PRIu64 " KiB blocks + flush,"
               " %" PRIu32 " KiB chunks (raw image: %.1f MiB/s)\n",
               size >> 20, bs >> 10, chunk >> 10, raw);
        for (int k = 0; k < 3; k++) {
                double ratio = mibs[k] / mibs[0];
                if (k == 0)
                        printf("  %2d snapshot:  %8.1f MiB/s = 1.00 (baseline; %.2f of the raw image)\n", counts[k],
                               mibs[k], mibs[k] / raw);
                else
                        printf("  %2d snapshots: %8.1f MiB/s = %.2f of 1 snapshot   goal >= 0.80: %s\n", counts[k],
                               mibs[k], ratio, verdict(ratio, 0.80, true));
        }
        double use = (double)(blocks > meta ? blocks - meta : 0) / (double)size;
        printf("store disk use after that overwrite with 64 snapshots (%" PRIu64 " MiB changed):\n", size >> 20);
        printf("  st_blocks of the 64 stores %.1f MiB, less %.1f MiB metadata = %.2f x the bytes changed"
               "   goal <= 1.10: %s\n",
               (double)blocks / 1048576.0, (double)meta / 1048576.0, use, verdict(use, 1.10, false));
        printf("  (copies alone: %" PRIu64 " exceptions = %.2f x the bytes changed)\n", exc,
               (double)exc * chunk / (double)size);
}

/* --- 3, 4: a chain of 64 with 1 % changed after each ------------------------------- */

struct held {
        const cowvol_store *older;
        uint64_t only;
};

static int held_one(uint64_t old, uint64_t nw, void *ud)
{
        struct held *h = ud;
        uint64_t x;

        (void)nw;
        if (cowvol_store_lookup(h->older, old, &x) != 1)
                h->only++;
        return 0;
}

/* chunks in store @newer that store @older lacks (read from the files) */
static uint64_t only_in(const char *newer, const char *older)
{
        cowvol_store *a, *b;
        struct held h = { 0 };
        int r;

        r = cowvol_store_open(newer, COWVOL_STORE_RDONLY | COWVOL_STORE_LINK, &a);
        if (r < 0)
                die("store open", r);
        r = cowvol_store_open(older, COWVOL_STORE_RDONLY | COWVOL_STORE_LINK, &b);
        if (r < 0)
                die("store open", r);
        h.older = b;
        cowvol_store_foreach_sorted(a, held_one, &h);
        cowvol_store_close(a);
        cowvol_store_close(b);
        return h.only;
}

/* Bytes this process had read from the disk so far (/proc/self/io; 0
 * where the kernel does not count them). */
static uint64_t disk_read_bytes(void)
{
        char line[128];
        uint64_t n = 0;
        FILE *f = fopen("/proc/self/io", "re");

        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "read_bytes: %" SCNu64, &n) == 1)
                        break;
        fclose(f);
        return n;
}

static void chain_read_remove(uint64_t size)
{
        const int n = 64;
        uint64_t chunks = size / chunk, per = chunks / 100 ? chunks / 100 : 1, x = 12345, sum, sum2;
        double raw_cold = 0, raw_warm = 0, eng_cold = 0, eng_warm = 0, t, t0;
        uint64_t raw_disk = 0, eng_disk = 0, d0;
        struct vol c;
        int r;

        vol_open(&c, "chain", size, n, true);
        pattern(buf, chunk, 7);
        for (int i = 0; i < n; i++) {
                vol_snap(&c, store_bytes_for(size));
                for (uint64_t k = 0; k < per; k++) {
                        x = x * 6364136223846793005ull + 1442695040888963407ull;
                        uint64_t ch = (x >> 33) % chunks;
                        memcpy(buf, &x, sizeof(x));
                        r = cowvol_volume_pwrite(c.v, NULL, buf, chunk, ch * chunk);
                        if (r < 0)
                                die("origin write", r);
                }
        }
        /* the image read raw must hold what the engine wrote */
        if ((r = cowvol_volume_flush(c.v)) < 0)
                die("flush", r);
        for (int p = 0; p < 3; p++) {
                drop_cache(c.img);
                d0 = disk_read_bytes();
                t = raw_pass(c.img, size, false, 0);
                raw_disk = disk_read_bytes() - d0;
                raw_cold = t > raw_cold ? t : raw_cold;
                vol_drop_caches(&c);
                d0 = disk_read_bytes();
                t = vol_pass(&c, c.sn[0], false, 0, &sum);
                eng_disk = disk_read_bytes() - d0;
                eng_cold = t > eng_cold ? t : eng_cold;
        }
        for (int p = 0; p < 3; p++) {
                t = raw_pass(c.img, size, false, 0);
                raw_warm = t > raw_warm ? t : raw_warm;
                t = vol_pass(&c, c.sn[0], false, 0, NULL);
                eng_warm = t > eng_warm ? t : eng_warm;
        }
        printf("read of the oldest of %d snapshots, %" PRIu64 " MiB, %" PRIu64 " of %" PRIu64
               " chunks (1 %%) changed after each:\n",
               n, size >> 20, per, chunks);
        printf("  cold (flushed, posix_fadvise DONTNEED on image and stores): %.1f MiB/s, raw image %.1f MiB/s"
               " = %.2f   goal >= 0.90: %s\n",
               eng_cold, raw_cold, eng_cold / raw_cold, verdict(eng_cold / raw_cold, 0.90, true));
        if (raw_disk)
                printf("  read from the disk in a cold pass: %.1f MiB (image and stores), raw %.1f MiB = %.2f x\n",
                       (double)eng_disk / 1048576.0, (double)raw_disk / 1048576.0, (double)eng_disk / (double)raw_disk);
        printf("  warm (page cache, best of 3):                              %.1f MiB/s, raw image %.1f MiB/s"
               " = %.2f\n",
               eng_warm, raw_warm, eng_warm / raw_warm);

        /* remove the middle one: S32 of S1..S64 */
        int m = n / 2 - 1;
        uint64_t before[64], copied = 0, only, held;
        if ((r = cowvol_volume_flush(c.v)) < 0)
                die("flush", r);
        for (int i = 0; i < n; i++)
                before[i] = info_exceptions(&c, i);
        held = before[m];
        only = only_in(c.paths[m], c.paths[m - 1]);
        t0 = now();
        r = cowvol_volume_snapshot_detach(c.v, c.sn[m]);
        if (r < 0)
                die("detach", r);
        unlink(c.paths[m]);
        t0 = now() - t0;
        c.paths[m][0] = 0;
        if ((r = cowvol_volume_flush(c.v)) < 0)
                die("flush", r);
        for (int i = 0; i < n; i++)
                if (i != m) {
                        uint64_t e = info_exceptions(&c, i);
                        copied += e > before[i] ? e - before[i] : 0;
                }
        vol_pass(&c, c.sn[0], false, 0, &sum2);
        printf("removing S%d of S1..S%d (detach + unlink, %.1f ms): it held %" PRIu64 " chunks, %" PRIu64
               " of them (%.1f MiB) only it (S%d lacks them)\n",
               m + 1, n, t0 * 1e3, held, only, (double)(only * chunk) / 1048576.0, m);
        if (only)
                printf("  copied %.1f MiB into the other stores = %.2f x what only it held"
                       "   goal <= 1.00 (1.00: moved down; 0: kept as a link): %s\n",
                       (double)(copied * chunk) / 1048576.0, (double)copied / (double)only,
                       verdict((double)copied / (double)only, 1.0, false));
        else
                printf("  copied %.1f MiB into the other stores; ratio n/a: nothing was only its own"
                       "   goal: copy no more than what only it held (0 here): %s\n",
                       (double)(copied * chunk) / 1048576.0, copied ? "misses" : "meets");
        printf("  the oldest reads the same after the removal: %s\n", sum == sum2 ? "yes" : "NO");
        vol_close(&c);
}

/* --- 5: restore ------------------------------------------------------------------- */

/* the exceptions of snapshots [from, n) */
static uint64_t exceptions_of(struct vol *c, int from)
{
        uint64_t n = 0;

        for (int i = from; i < c->n; i++) {
                struct cowvol_snapshot_info si;

                if (cowvol_snapshot_info(c->v, c->sn[i], &si) < 0)
                        die("snapshot info", -EIO);
                n += si.exceptions;
        }
        return n;
}

/* Restore the oldest of @n snapshots, with @per random BS blocks of the
 * volume changed after each. */
static void restore(uint64_t size, int n, uint64_t per)
{
        uint64_t blocks = size / bs, x = 999 + (uint64_t)n, changed = 0, sum, sum2;
        uint8_t *hit = calloc((size_t)blocks, 1);
        char src[4096], dst[4096];
        double raw, eng, t0;
        struct vol c;
        int r;

        if (!hit)
                die("memory", -ENOMEM);
        vol_open(&c, "restore", size, n, true);
        for (int i = 0; i < n; i++) {
                vol_snap(&c, store_bytes_for(size));
                for (uint64_t k = 0; k < per; k++) {
                        x = x * 6364136223846793005ull + 1442695040888963407ull;
                        uint64_t b = (x >> 33) % blocks;
                        pattern(buf, bs, x);
                        if ((r = cowvol_volume_pwrite(c.v, NULL, buf, bs, b * bs)) < 0)
                                die("origin write", r);
                        changed += !hit[b];
                        hit[b] = 1;
                }
        }
        vol_pass(&c, c.sn[0], false, 0, &sum);
        uint64_t bytes = changed * bs;

        /* dd conv=fdatasync: the same bytes from a file into an allocated file, both cold */
        path_of(src, "restore-src", -1);
        path_of(dst, "restore-dst", -1);
        make_image(src, bytes, 3);
        make_image(dst, size, 4);
        drop_cache(src);
        drop_cache(dst);
        {
                int in = open(src, O_RDONLY | O_CLOEXEC), out = open(dst, O_WRONLY | O_CLOEXEC);
                if (in < 0 || out < 0)
                        die("raw copy", -errno);
                t0 = now();
                for (uint64_t off = 0; off < bytes; off += bs)
                        if (pread_all(in, buf, bs, off) < 0 || pwrite_all(out, buf, bs, off) < 0)
                                die("raw copy", -errno);
                if (fdatasync(out) < 0)
                        die("fdatasync", -errno);
                raw = (double)bytes / (now() - t0) / 1048576.0;
                close(in);
                close(out);
        }
        unlink(src);
        unlink(dst);

        vol_drop_caches(&c);
        uint64_t steps = 0, left, before = exceptions_of(&c, 1), copies;
        t0 = now();
        if ((r = cowvol_volume_merge_begin(c.v, c.sn[0])) < 0)
                die("merge begin", r);
        while ((r = cowvol_volume_merge_step(c.v, &left)) > 0)
                steps++;
        if (r < 0)
                die("merge step", r);
        if ((r = cowvol_volume_merge_end(c.v)) < 0)
                die("merge end", r);
        if ((r = cowvol_volume_flush(c.v)) < 0)
                die("flush", r);
        eng = (double)bytes / (now() - t0) / 1048576.0;
        copies = (exceptions_of(&c, 1) - before) * chunk; /* the newer ones' */
        vol_pass(&c, NULL, false, 0, &sum2);
        if (n == 1)
                printf("restore of the only snapshot, %" PRIu64 " MiB volume, %" PRIu64 " x %" PRIu64
                       " KiB changed after it: %.1f MiB to put back, %" PRIu64 " merge steps\n",
                       size >> 20, per, bs >> 10, (double)bytes / 1048576.0, steps + 1);
        else
                printf("restore of the oldest of %d snapshots, %" PRIu64 " MiB volume, %" PRIu64 " x %" PRIu64
                       " KiB changed after each: %.1f MiB to put back, %" PRIu64 " merge steps\n",
                       n, size >> 20, per, bs >> 10, (double)bytes / 1048576.0, steps + 1);
        printf("  merge %.1f MiB/s, raw copy (dd conv=fdatasync, cold) %.1f MiB/s = %.2f   goal >= 0.80: %s\n", eng,
               raw, eng / raw, verdict(eng / raw, 0.80, true));
        if (n > 1)
                printf("  the newer snapshots took %.1f MiB of the origin's old chunks first: %.1f MiB written "
                       "= %.2f of dd's rate\n", (double)copies / 1048576.0,
                       (double)(bytes + copies) / 1048576.0, eng / raw * (double)(bytes + copies) / (double)bytes);
        printf("  the volume reads as the snapshot did: %s\n", sum == sum2 ? "yes" : "NO");
        vol_close(&c);
        free(hit);
}

/* --- 6: a thousand snapshots ------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return x < y ? -1 : x > y;
}

static double median5(double *t)
{
        double s[5];

        memcpy(s, t, sizeof(s));
        qsort(s, 5, sizeof(*s), cmp_double);
        return s[2];
}

/* best of @rounds: cowvol_snapshot_info over every snapshot of @c */
static double list_time(struct vol *c, int rounds)
{
        double best = 1e9;

        for (int p = 0; p < rounds; p++) {
                double t0 = now();
                for (int i = 0; i < c->n; i++)
                        info_exceptions(c, i);
                t0 = now() - t0;
                best = t0 < best ? t0 : best;
        }
        return best;
}

static void many(int n)
{
        struct vol c, one;
        double *t = calloc((size_t)n, sizeof(*t)), first, last, l1, ln;
        const uint64_t store = 1 << 20;

        if (!t || n < 10)
                die("snapshot count (at least 10)", -EINVAL);
        vol_open(&c, "many", 64 << 20, n, false);
        for (int i = 0; i < n; i++)
                t[i] = vol_snap(&c, store);
        first = median5(t);
        last = median5(t + n - 5);
        ln = list_time(&c, 5);
        vol_close(&c);
        vol_open(&one, "one", 64 << 20, 1, false);
        vol_snap(&one, store);
        /* one call is too short to time alone: many, averaged */
        {
                double t0 = now();
                for (int i = 0; i < 10000; i++)
                        info_exceptions(&one, 0);
                l1 = (now() - t0) / 10000;
        }
        vol_close(&one);
        printf("%d snapshots of one volume (stores of 1 MiB):\n", n);
        printf("  creating one: %.2f ms with %d there (median of 5), %.2f ms the first (median of the first 5)"
               " = %.2f   goal <= 1.25 (flat; chosen here): %s\n",
               last * 1e3, n - 1, first * 1e3, last / first, verdict(last / first, 1.25, false));
        printf("  snapshot_info over all %d (a list): %.3f ms, over the 1 of 1: %.3f us = %.2f per snapshot"
               "   goal <= 1.25 (flat; chosen here): %s\n",
               n, ln * 1e3, l1 * 1e6, ln / n / l1, verdict(ln / n / l1, 1.25, false));
        free(t);
}

static uint64_t mib_arg(int argc, char **argv, int i, uint64_t def)
{
        return (argc > i ? strtoull(argv[i], NULL, 10) : def) << 20;
}

int main(int argc, char **argv)
{
        uint64_t wsize, csize, rsize, cb = 4096;
        struct rlimit rl;
        int nmany, nrestore;

        snprintf(dir, sizeof(dir), "%s", argc > 1 ? argv[1] : "/var/tmp");
        wsize = mib_arg(argc, argv, 2, 16);
        csize = mib_arg(argc, argv, 3, 32);
        rsize = mib_arg(argc, argv, 4, 32);
        if (argc > 5 && (cowvol_parse_size(argv[5], &cb) < 0 || !cowvol_chunk_size_valid(cb)))
                die("chunk size (4K..512K, a power of two)", -EINVAL);
        chunk = (uint32_t)cb;
        bs = 1 << 20;
        if (argc > 6 && cowvol_parse_size(argv[6], &bs) < 0)
                die("block size", -EINVAL);
        nmany = argc > 7 ? atoi(argv[7]) : 1000;
        nrestore = argc > 8 ? atoi(argv[8]) : 8;
        if (bs % chunk || !wsize || !csize || !rsize || wsize % bs || csize % bs || rsize % bs || nrestore < 1)
                die("sizes: MiB > 0, multiples of the block size; the block size a multiple of the chunk", -EINVAL);
        /* a store file each: 1,000 snapshots need more than 1,024 descriptors */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        buf = malloc(bs);
        if (!buf)
                die("memory", -ENOMEM);
        double t0 = now(), t1 = t0;
        first_write(wsize);
        printf("(%.1f s)\n", now() - t1);
        t1 = now();
        chain_read_remove(csize);
        printf("(%.1f s)\n", now() - t1);
        t1 = now();
        restore(rsize, 1, rsize / bs / 2);
        restore(rsize, nrestore, rsize / bs / 16 ? rsize / bs / 16 : 1);
        printf("(%.1f s)\n", now() - t1);
        t1 = now();
        many(nmany);
        printf("(%.1f s; %.0f s in all)\n", now() - t1, now() - t0);
        free(buf);
        return 0;
}
