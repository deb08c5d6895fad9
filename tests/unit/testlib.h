/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared by the unit tests: an in-memory, recording store_io, temp
 * directories, data patterns, raw patching of store files. */
#ifndef COWVOL_TESTLIB_H
#define COWVOL_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* --- an in-memory disk ----------------------------------------------------- */

enum md_op_kind { MD_WRITE, MD_SYNC };

struct md_op {
        enum md_op_kind kind;
        uint64_t off;  /* MD_WRITE */
        size_t len;    /* MD_WRITE */
        uint8_t *data; /* MD_WRITE: a copy of what was written */
};

struct memdisk {
        uint8_t *data;
        uint64_t size;
        bool rdonly;          /* pwrite fails with -EROFS (and is counted) */
        bool record;          /* append every pwrite and sync to ops[] */
        bool can_resize;      /* resize() allowed */
        /* when set, called before each pwrite: a negative errno fails it */
        int (*write_hook)(struct memdisk *d, uint64_t off, size_t len);
        /* the same before each pread */
        int (*read_hook)(struct memdisk *d, uint64_t off, size_t len);
        unsigned n_pread, n_pwrite, n_sync, n_refused;
        struct md_op *ops;
        size_t n_ops, cap_ops;
};

/* The store_io over a struct memdisk; .free is NULL: the test owns the disk. */
extern const struct store_io memdisk_io;

struct memdisk *memdisk_new(uint64_t size);
/* A disk over a copy of @data (rdonly as asked). */
struct memdisk *memdisk_from(const uint8_t *data, uint64_t size, bool rdonly);
void memdisk_free(struct memdisk *d);
void memdisk_clear_log(struct memdisk *d);
/* A write_hook or read_hook: -EIO for I/O at chunk 1 (metadata area 0 of a
 * store of 4 KiB chunks), else 0. */
int memdisk_fail_area_0(struct memdisk *d, uint64_t off, size_t len);

/* --- temp dirs -------------------------------------------------------------- */

/* A fresh directory (on tmpfs when there is one); free with tmpdir_remove. */
char *tmpdir_make(void);
void tmpdir_remove(char *dir);
/* "dir/name", malloc'ed. */
char *path_in(const char *dir, const char *name);

/* --- data ----------------------------------------------------------------------- */

uint64_t rng_next(uint64_t *state); /* splitmix64 */
/* Deterministic bytes from (a, b): distinct (a, b) give distinct content. */
void fill_pattern(void *buf, size_t len, uint64_t a, uint64_t b);

/* --- raw file access ---------------------------------------------------------- */

void file_put_le32(const char *path, uint64_t off, uint32_t v);
void file_put_le64(const char *path, uint64_t off, uint64_t v);
void file_put_bytes(const char *path, uint64_t off, const void *buf, size_t len);
void file_get_bytes(const char *path, uint64_t off, void *buf, size_t len);
uint64_t file_get_le64(const char *path, uint64_t off);
uint64_t file_size(const char *path);
void file_truncate(const char *path, uint64_t size);
/* The whole file, malloc'ed; *ret_len its length. */
uint8_t *file_read_all(const char *path, size_t *ret_len);

/* --- faults and log ---------------------------------------------------------- */

#define MAX_FAULTS 64
struct fault_list {
        int n;
        struct {
                const char *what;
                int64_t area, slot;
                char message[256];
        } f[MAX_FAULTS];
};
void fault_collect(const struct cowvol_fault *f, void *userdata);

/* Capture the library's log into a buffer (log_text()). */
void log_capture_start(void);
const char *log_text(void);

/* Case-insensitive substring. */
bool contains_ci(const char *hay, const char *needle);

#endif
