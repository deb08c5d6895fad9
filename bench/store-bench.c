/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Store benchmark: memory of the in-memory index per exception and the time
 * to open a store of N random exceptions (default 1,000,000), each against
 * a baseline measured in the same run:
 *  - memory: the kernel's dm_exception (32 bytes: a list node and two
 *    chunk numbers), and a plain malloc'd node per exception measured here;
 *  - open: reading the same metadata areas with pread, without parsing.
 * Usage: store-bench [DIR] [N]
 */
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
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

static size_t heap_used(void)
{
        struct mallinfo2 mi = mallinfo2();

        return mi.uordblks + mi.hblkhd;
}

static uint64_t rng_state = 42;
static uint64_t rng(void)
{
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static void drop_caches(int fd)
{
        /* cold-ish: ask the kernel to forget the file's pages */
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

int main(int argc, char **argv)
{
        const char *dir = argc > 1 ? argv[1] : "/tmp";
        uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000, i;
        char path[4096];
        cowvol_store *s;
        size_t before, after;
        double t0, t_open, t_raw;
        int r, fd;

        snprintf(path, sizeof(path), "%s/cowvol-bench-store.img", dir);
        unlink(path);
        /* room for n exceptions of 4 KiB, with metadata */
        r = cowvol_store_create(path, 4096, (n + n / 256 + 16) * 4096, 0, &s);
        if (r < 0) {
                fprintf(stderr, "create: %s\n", strerror(-r));
                return 1;
        }

        /* 1: the live index after n random inserts (the copy-on-write path) */
        before = heap_used();
        t0 = now();
        for (i = 0; i < n; i++) {
                uint64_t nw, old;
                do
                        old = rng() & ((1ull << 40) - 1);
                while (cowvol_store_lookup(s, old, &nw) == 1);
                if (cowvol_store_allocate(s, &nw) < 0 || cowvol_store_add(s, old, nw) < 0) {
                        fprintf(stderr, "add failed at %" PRIu64 "\n", i);
                        return 1;
                }
                if ((i + 1) % 8192 == 0 && cowvol_store_commit(s) < 0)
                        return 1;
        }
        if (cowvol_store_commit(s) < 0)
                return 1;
        double t_insert = now() - t0;
        after = heap_used();
        printf("exceptions:                 %" PRIu64 " (random 40-bit origin chunks, 4 KiB chunks)\n", n);
        printf("insert (lookup+add+commit): %.0f ns per exception\n", t_insert / (double)n * 1e9);
        printf("index after inserts:        %.2f bytes per exception (heap growth %.2f)\n",
               (double)cowvol_store_index_bytes(s) / (double)n, (double)(after - before) / (double)n);
        cowvol_store_close(s);

        /* 2: baseline for memory, a kernel-like node per exception */
        {
                struct node {
                        struct node *next, *prev;
                        uint64_t old, new_chunk;
                } **nodes = malloc(n * sizeof(*nodes));
                size_t b0 = heap_used();
                for (i = 0; i < n; i++)
                        nodes[i] = malloc(sizeof(struct node));
                size_t b1 = heap_used();
                printf("baseline, kernel-like node: %zu bytes in the kernel's struct, %.2f bytes per "
                       "exception with malloc here\n",
                       sizeof(struct node), (double)(b1 - b0) / (double)n);
                for (i = 0; i < n; i++)
                        free(nodes[i]);
                free(nodes);
        }

        /* 3: open time against reading the metadata areas raw */
        fd = open(path, O_RDONLY);
        drop_caches(fd);
        t0 = now();
        {
                uint8_t *buf = malloc(4096);
                uint64_t areas = (n + 255) / 256, a;
                for (a = 0; a < areas; a++)
                        if (pread_full(fd, buf, 4096, (1 + 257 * a) * 4096) < 0)
                                return 1;
                free(buf);
        }
        t_raw = now() - t0;
        drop_caches(fd);
        close(fd);

        before = heap_used();
        t0 = now();
        r = cowvol_store_open(path, COWVOL_STORE_RDONLY, &s);
        t_open = now() - t0;
        after = heap_used();
        if (r < 0) {
                fprintf(stderr, "open: %s\n", strerror(-r));
                return 1;
        }
        printf("open, validate, index:      %.3f s (raw read of the metadata areas: %.3f s, ratio %.2f)\n",
               t_open, t_raw, t_open / t_raw);
        printf("index after open:           %.2f bytes per exception (heap %.2f; kernel: 32; ratio %.2f)\n",
               (double)cowvol_store_index_bytes(s) / (double)n, (double)(after - before) / (double)n,
               (double)cowvol_store_index_bytes(s) / (double)n / 32.0);
        cowvol_store_close(s);
        unlink(path);
        return 0;
}
