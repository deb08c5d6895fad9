/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: the catalogue's parser (daemon/catalogue.c).  The input
 * is STATE_DIR/catalogue.json, byte for byte, as a crash, an old cowvold or
 * a hand may leave it: catalogue_load must take it whole or refuse it
 * whole (nothing half loaded), and what it took must go back out and in
 * again unchanged: the catalogue_save of it, loaded again and saved again,
 * is the same file.  Only the parser and the writer run: no volume is
 * activated, no stray swept.  Neither a crash, a leak, a hang nor a
 * sanitizer report is allowed.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz-daemon.h"

static char state_dir[] = "/dev/shm/cowvol-fuzz-catalogue.XXXXXX";

static void put(const uint8_t *data, size_t len)
{
        int fd = openat(state_fd, "catalogue.json", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0 || write_all(fd, data, len) < 0 || close(fd) < 0)
                abort();
}

static char *get(size_t *ret_len)
{
        char *buf = NULL;
        size_t n = 0;
        FILE *m = open_memstream(&buf, &n);
        int fd = openat(state_fd, "catalogue.json", O_RDONLY | O_CLOEXEC);
        char b[4096];
        ssize_t k;

        if (!m || fd < 0)
                abort();
        while ((k = read(fd, b, sizeof(b))) > 0)
                fwrite(b, 1, (size_t)k, m);
        close(fd);
        fclose(m);
        *ret_len = n;
        return buf;
}

static void drop(void)
{
        while (catalogue.vols) {
                struct vol *x = catalogue.vols->next;
                vol_free(catalogue.vols);
                catalogue.vols = x;
        }
}

static void cleanup(void)
{
        unlinkat(state_fd, "catalogue.json", 0);
        unlinkat(state_fd, ".catalogue.json.tmp", 0);
        rmdir(state_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc, (void)argv;
        if (!mkdtemp(state_dir) && !mkdtemp(strcpy(state_dir, "/tmp/cowvol-fuzz-catalogue.XXXXXX")))
                abort();
        settings.state_dir = state_dir;
        if (state_open() < 0)
                abort();
        atexit(cleanup);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
        size_t n1, n2;
        char *one, *two;

        put(data, len);
        if (catalogue_load(engine_all) < 0) {
                if (catalogue.vols) /* refused whole */
                        abort();
                return 0;
        }
        if (catalogue_save() < 0)
                abort();
        drop();
        one = get(&n1);
        if (catalogue_load(engine_all) < 0) /* what it wrote, it reads */
                abort();
        if (catalogue_save() < 0)
                abort();
        drop();
        two = get(&n2);
        if (n1 != n2 || memcmp(one, two, n1) != 0)
                abort(); /* a round trip changed it */
        free(one);
        free(two);
        return 0;
}
