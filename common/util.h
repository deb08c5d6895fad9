/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Small helpers both programs need (cowvol and cowvold), in one place:
 * whole reads and writes that retry short transfers and EINTR, the
 * monotonic clock, a mkdir -p.  Header-only: each
 * program compiles what it uses; libcowvol keeps its own (lib/internal.h)
 * and exports none of these.
 */
#ifndef COWVOL_COMMON_UTIL_H
#define COWVOL_COMMON_UTIL_H

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Write all of @buf; 0 or -errno. */
static inline int write_all(int fd, const void *buf, size_t n)
{
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

/* Read up to @n bytes, stopping early only at the end of the input;
 * *ret_got says how many came.  0 or -errno. */
static inline int read_full(int fd, void *buf, size_t n, size_t *ret_got)
{
        uint8_t *p = buf;
        size_t got = 0;

        while (got < n) {
                ssize_t r = read(fd, p + got, n - got);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        break;
                got += (size_t)r;
        }
        *ret_got = got;
        return 0;
}

/* Seconds on the monotonic clock. */
static inline double now_monotonic(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Make @path and its parents (0755), @path itself with @mode; 0 or -errno. */
static inline int mkdir_p(const char *path, mode_t mode)
{
        char buf[4096];

        if (strlen(path) >= sizeof(buf))
                return -ENAMETOOLONG;
        strcpy(buf, path);
        for (char *p = buf + 1; *p; p++)
                if (*p == '/') {
                        *p = '\0';
                        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        *p = '/';
                }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

#endif
