/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowtool: a test helper that drives libcowvol the way the userspace engine
 * does, to make stores for the kernel to read, and fast data generators and
 * comparers for the test scripts (the VM runs under emulation: one process
 * doing a thousand writes beats a thousand dd calls).
 *
 *   cowtool pattern PATH SIZE SEED        fill PATH with seeded pseudo-random data
 *   cowtool tag PATH CHUNK N SEED         write a 512-byte tag into the first
 *                                         sector of N seeded distinct chunks
 *   cowtool fill ORIGIN STORE N SEED [GROUP] [sparse]
 *                                         userspace copy-on-write of N seeded
 *                                         distinct chunks of ORIGIN: copy the old
 *                                         chunk into STORE, commit (GROUP at a
 *                                         time), then write a tag over the origin
 *                                         chunk; "sparse" skips writing all-zero
 *                                         chunks into a freshly created store
 *   cowtool cmpchunks A B CHUNK N SEED    compare A and B on the N seeded chunks
 *                                         plus the first and last chunk
 *
 * The kernel engine's public API, called directly (errors: the library's
 * log on stderr, then "cowtool: CMD: <strerror> (errno N)", exit 1):
 *   cowtool kavailable
 *   cowtool kvol-activate NAME UUID DEVICE
 *   cowtool kvol-deactivate NAME UUID
 *   cowtool ksnap-create VOLNAME VOLUUID DEVICE SNAPNAME SNAPUUID STORE CHUNK
 *   cowtool ksnap-activate VOLNAME VOLUUID DEVICE SNAPNAME SNAPUUID STORE CHUNK
 *   cowtool ksnap-remove VOLNAME VOLUUID SNAPNAME SNAPUUID
 *   cowtool kstatus VOLNAME VOLUUID [SNAPNAME SNAPUUID]
 *                                         "key value" lines: exists, valid,
 *                                         overflow, merge_failed, usage (as
 *                                         dmsetup status: A/T M), open_count,
 *                                         size (bytes)
 *   cowtool kpath VOLNAME VOLUUID [SNAPNAME SNAPUUID]
 *   cowtool device-probe DEV              "type T" and "label L" lines
 *   cowtool device-signature DEV          "1 NAME" or "0"
 *   cowtool device-resolve SPEC           the device's path
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cowvol.h"
#include "internal.h"

static int die(const char *what, int r)
{
        fprintf(stderr, "cowtool: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

static uint64_t arg_u64(const char *s)
{
        uint64_t v;

        if (cowvol_parse_size(s, &v) < 0)
                die(s, EINVAL);
        return v;
}

static uint64_t rng_state;
static uint64_t rng(void)
{
        /* splitmix64 */
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

/* N distinct chunk numbers below @total, in a seeded random order. */
static uint64_t *pick_chunks(uint64_t total, uint64_t n, uint64_t seed)
{
        uint8_t *used = calloc(total / 8 + 1, 1);
        uint64_t *out = malloc(n * sizeof(*out)), i = 0;

        if (!used || !out || n > total)
                die("pick", ENOMEM);
        rng_state = seed;
        while (i < n) {
                uint64_t c = rng() % total;
                if (used[c / 8] & (1u << (c % 8)))
                        continue;
                used[c / 8] |= (uint8_t)(1u << (c % 8));
                out[i++] = c;
        }
        free(used);
        return out;
}

static void make_tag(uint8_t *buf, uint64_t chunk, uint64_t seed)
{
        for (unsigned i = 0; i < 512; i += 16) {
                memcpy(buf + i, &chunk, 8);
                memcpy(buf + i + 8, &seed, 8);
        }
        memcpy(buf, "COWTAG!!", 8);
}

static int open_rw(const char *path, uint64_t *ret_size)
{
        int fd = open(path, O_RDWR | O_CLOEXEC), r;

        if (fd < 0)
                die(path, -errno);
        r = fd_size(fd, ret_size);
        if (r < 0)
                die(path, r);
        return fd;
}

static int cmd_pattern(char **argv)
{
        uint64_t size = arg_u64(argv[0]), seed = arg_u64(argv[1]), off;
        int fd = open(argv[-1], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        static uint64_t buf[1 << 17];

        if (fd < 0)
                die(argv[-1], -errno);
        rng_state = seed;
        for (off = 0; off < size; off += sizeof(buf)) {
                size_t n = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
                for (size_t i = 0; i < sizeof(buf) / 8; i++)
                        buf[i] = rng();
                int r = pwrite_full(fd, buf, n, off);
                if (r < 0)
                        die("write", r);
        }
        if (fsync(fd) < 0)
                die("fsync", -errno);
        close(fd);
        return 0;
}

static int cmd_tag(char **argv)
{
        uint64_t size, chunk = arg_u64(argv[0]), n = arg_u64(argv[1]), seed = arg_u64(argv[2]);
        int fd = open_rw(argv[-1], &size);
        uint64_t *c = pick_chunks(size / chunk, n, seed);
        uint8_t tag[512];

        for (uint64_t i = 0; i < n; i++) {
                make_tag(tag, c[i], seed);
                int r = pwrite_full(fd, tag, sizeof(tag), c[i] * chunk);
                if (r < 0)
                        die("write", r);
        }
        if (fsync(fd) < 0)
                die("fsync", -errno);
        close(fd);
        free(c);
        return 0;
}

static int cmd_fill(int argc, char **argv)
{
        const char *origin = argv[-1], *store = argv[0];
        uint64_t size, n = arg_u64(argv[1]), seed = arg_u64(argv[2]);
        uint64_t group = argc > 3 ? arg_u64(argv[3]) : 1;
        bool sparse = argc > 4 && strcmp(argv[4], "sparse") == 0;
        int fd = open_rw(origin, &size), r;
        cowvol_store *s;
        uint64_t *c, i, done = 0;
        uint8_t *buf, tag[512];
        uint32_t cs;

        r = cowvol_store_open(store, 0, &s);
        if (r < 0)
                die(store, r);
        cs = cowvol_store_chunk_size(s);
        c = pick_chunks(size / cs, n, seed);
        buf = malloc(cs);
        if (!buf || group == 0)
                die("fill", EINVAL);
        for (i = 0; i < n; i++) {
                uint64_t nw;
                bool hole = sparse && fd_range_is_hole(fd, c[i] * cs, cs);
                r = hole ? (memset(buf, 0, cs), 0) : pread_full(fd, buf, cs, c[i] * cs);
                if (r < 0)
                        die("read origin", r);
                r = cowvol_store_allocate(s, &nw);
                if (r < 0)
                        die("allocate", r);
                if (!(sparse && mem_is_zero(buf, cs))) {
                        r = cowvol_store_write_chunk(s, nw, buf);
                        if (r < 0)
                                die("write store", r);
                }
                r = cowvol_store_add(s, c[i], nw);
                if (r < 0)
                        die("add", r);
                if ((i + 1) % group == 0 || i + 1 == n) {
                        r = cowvol_store_commit(s);
                        if (r < 0)
                                die("commit", r);
                        /* only now the origin writes that caused the copies */
                        for (; done <= i; done++) {
                                make_tag(tag, c[done], seed + 1);
                                r = pwrite_full(fd, tag, sizeof(tag), c[done] * cs);
                                if (r < 0)
                                        die("write origin", r);
                        }
                }
        }
        if (fsync(fd) < 0)
                die("fsync", -errno);
        cowvol_store_close(s);
        close(fd);
        free(buf);
        free(c);
        return 0;
}

static int cmd_cmpchunks(char **argv)
{
        uint64_t sa, sb, chunk = arg_u64(argv[1]), n = arg_u64(argv[2]), seed = arg_u64(argv[3]);
        int a = open(argv[-1], O_RDONLY | O_CLOEXEC), b = open(argv[0], O_RDONLY | O_CLOEXEC);
        uint8_t *x = malloc(chunk), *y = malloc(chunk);
        uint64_t *c, bad = 0, total;

        if (a < 0 || b < 0 || !x || !y)
                die("open", errno);
        if (fd_size(a, &sa) < 0 || fd_size(b, &sb) < 0)
                die("size", errno);
        if (sa != sb) {
                fprintf(stderr, "cowtool: sizes differ: %" PRIu64 " and %" PRIu64 "\n", sa, sb);
                return 1;
        }
        total = sa / chunk;
        c = pick_chunks(total, n, seed);
        for (uint64_t i = 0; i < n + 2; i++) {
                uint64_t k = i < n ? c[i] : (i == n ? 0 : total - 1);
                if (pread_full(a, x, chunk, k * chunk) < 0 || pread_full(b, y, chunk, k * chunk) < 0)
                        die("read", EIO);
                if (memcmp(x, y, chunk) != 0) {
                        if (bad++ < 10)
                                fprintf(stderr, "cowtool: chunk %" PRIu64 " differs\n", k);
                }
        }
        printf("compared %" PRIu64 " chunks: %" PRIu64 " differ\n", n + 2, bad);
        return bad ? 1 : 0;
}

/* --- the kernel engine ------------------------------------------------------ */

static void log_to_stderr(int level, const char *msg, void *userdata)
{
        static const char *const names[] = { "error", "warning", "info", "debug" };

        (void)userdata;
        fprintf(stderr, "cowtool: libcowvol %s: %s\n", level >= 0 && level <= 3 ? names[level] : "?", msg);
}

static int kfail(const char *cmd, int r)
{
        fprintf(stderr, "cowtool: %s: %s (errno %d)\n", cmd, strerror(-r), -r);
        return 1;
}

static uint32_t arg_chunk(const char *s)
{
        uint64_t v = arg_u64(s);

        if (v > UINT32_MAX)
                die(s, EINVAL);
        return (uint32_t)v;
}

static int cmd_kernel(int argc, char **argv)
{
        const char *cmd = argv[1];
        struct cowvol_kernel_volume v = { 0 };
        struct cowvol_kernel_snapshot s = { 0 };
        int r;

        cowvol_set_log_callback(log_to_stderr, NULL);
        if (!strcmp(cmd, "kavailable") && argc == 2) {
                r = cowvol_kernel_available();
                return r < 0 ? kfail(cmd, r) : 0;
        }
        if (!strcmp(cmd, "kvol-activate") && argc == 5) {
                v = (struct cowvol_kernel_volume){ .name = argv[2], .uuid = argv[3], .device = argv[4] };
                r = cowvol_kernel_volume_activate(&v);
                return r < 0 ? kfail(cmd, r) : 0;
        }
        if (!strcmp(cmd, "kvol-deactivate") && argc == 4) {
                v = (struct cowvol_kernel_volume){ .name = argv[2], .uuid = argv[3], .device = NULL };
                r = cowvol_kernel_volume_deactivate(&v);
                return r < 0 ? kfail(cmd, r) : 0;
        }
        if ((!strcmp(cmd, "ksnap-create") || !strcmp(cmd, "ksnap-activate")) && argc == 9) {
                v = (struct cowvol_kernel_volume){ .name = argv[2], .uuid = argv[3], .device = argv[4] };
                s = (struct cowvol_kernel_snapshot){ argv[5], argv[6], argv[7], arg_chunk(argv[8]) };
                r = !strcmp(cmd, "ksnap-create") ? cowvol_kernel_snapshot_create(&v, &s)
                                                 : cowvol_kernel_snapshot_activate(&v, &s);
                return r < 0 ? kfail(cmd, r) : 0;
        }
        if (!strcmp(cmd, "ksnap-remove") && argc == 6) {
                v = (struct cowvol_kernel_volume){ .name = argv[2], .uuid = argv[3], .device = NULL };
                s = (struct cowvol_kernel_snapshot){ argv[4], argv[5], NULL, 0 };
                r = cowvol_kernel_snapshot_remove(&v, &s);
                return r < 0 ? kfail(cmd, r) : 0;
        }
        if ((!strcmp(cmd, "kstatus") || !strcmp(cmd, "kpath")) && (argc == 4 || argc == 6)) {
                struct cowvol_kernel_status st;
                char path[300];
                v = (struct cowvol_kernel_volume){ .name = argv[2], .uuid = argv[3], .device = NULL };
                if (argc == 6)
                        s = (struct cowvol_kernel_snapshot){ argv[4], argv[5], NULL, 0 };
                if (!strcmp(cmd, "kpath")) {
                        r = cowvol_kernel_path(&v, argc == 6 ? &s : NULL, path, sizeof(path));
                        if (r < 0)
                                return kfail(cmd, r);
                        printf("%s\n", path);
                        return 0;
                }
                r = cowvol_kernel_status(&v, argc == 6 ? &s : NULL, &st);
                if (r < 0)
                        return kfail(cmd, r);
                printf("exists %d\nvalid %d\noverflow %d\nmerge_failed %d\n", st.exists, st.valid, st.overflow,
                       st.merge_failed);
                printf("usage %" PRIu64 "/%" PRIu64 " %" PRIu64 "\n", st.usage.allocated_sectors,
                       st.usage.total_sectors, st.usage.metadata_sectors);
                printf("open_count %d\nsize %" PRIu64 "\n", st.open_count, st.size);
                return 0;
        }
        if (!strcmp(cmd, "device-probe") && argc == 3) {
                char type[64], label[256];
                r = cowvol_device_probe(argv[2], type, sizeof(type), label, sizeof(label));
                if (r < 0)
                        return kfail(cmd, r);
                printf("type %s\nlabel %s\n", type, label);
                return 0;
        }
        if (!strcmp(cmd, "device-signature") && argc == 3) {
                char what[64];
                r = cowvol_device_signature(argv[2], what, sizeof(what));
                if (r < 0)
                        return kfail(cmd, r);
                printf(r ? "1 %s\n" : "0\n", what);
                return 0;
        }
        if (!strcmp(cmd, "device-resolve") && argc == 3) {
                char *path = NULL;
                r = cowvol_device_resolve(argv[2], &path);
                if (r < 0)
                        return kfail(cmd, r);
                printf("%s\n", path);
                free(path);
                return 0;
        }
        return -1;
}

int main(int argc, char **argv)
{
        int r;

        if (argc < 2)
                goto usage;
        if ((r = cmd_kernel(argc, argv)) >= 0)
                return r;
        if (strcmp(argv[1], "pattern") == 0 && argc == 5)
                return cmd_pattern(argv + 3);
        if (strcmp(argv[1], "tag") == 0 && argc == 6)
                return cmd_tag(argv + 3);
        if (strcmp(argv[1], "fill") == 0 && argc >= 6 && argc <= 8)
                return cmd_fill(argc - 3, argv + 3);
        if (strcmp(argv[1], "cmpchunks") == 0 && argc == 7)
                return cmd_cmpchunks(argv + 3);
usage:
        fprintf(stderr, "usage: see the comment at the top of tests/helpers/cowtool.c\n");
        return 2;
}
