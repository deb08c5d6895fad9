/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libcowvol: declarations shared by the library's files, never installed. */
#ifndef COWVOL_INTERNAL_H
#define COWVOL_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include "cowvol.h"

#define _public_ __attribute__((visibility("default")))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

/* cleanup helpers (systemd's habit) */
static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd) { if (*fd >= 0) { int e = errno; close(*fd); errno = e; } }
#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))

/* log.c */
void cvlog(int level, const char *fmt, ...) _printf_(2, 3);
/* Log at ERROR and return @r (a negative errno): "return log_err(-EINVAL, ...)". */
int cvlog_errno(int r, const char *fmt, ...) _printf_(2, 3);
#define log_err(r, ...) cvlog_errno((r), __VA_ARGS__)
#define log_debug(...) cvlog(COWVOL_LOG_DEBUG, __VA_ARGS__)
/* A call's own log callback (struct cowvol_kernel_volume's log_fn): set for the
 * calling thread until the scope ends, the previous one restored then. */
struct log_scope {
        cowvol_log_fn fn;
        void *userdata;
        const struct log_scope *prev;
};
void log_scope_enter(struct log_scope *s, cowvol_log_fn fn, void *userdata);
void log_scope_leave(struct log_scope *s);
#define LOG_SCOPE(fn, ud) \
        __attribute__((cleanup(log_scope_leave))) struct log_scope _log_scope_; \
        log_scope_enter(&_log_scope_, (fn), (ud))

/* util.c */
/* Full pread/pwrite: -errno, or -EIO on a short transfer past the end. */
int pread_full(int fd, void *buf, size_t len, uint64_t off);
int pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

struct iovec;
/* pread_full() into several buffers (@iov is used up). */
int preadv_full(int fd, struct iovec *iov, int n, uint64_t off);
/* What the page cache holds of [off, off+len), read without waiting for
 * the disk (RWF_NOWAIT): the bytes read from the start, 0 when none or when
 * the kernel cannot tell; the kernel starts reading what it lacks.  -errno
 * on an I/O error. */
ssize_t pread_cached(int fd, void *buf, size_t len, uint64_t off);

/* Every change the library makes to a file's content or its durability goes
 * through pwrite_full() and these (system calls returning 0 or -errno), so
 * that a test can watch them in order and replay any prefix as a power cut
 * (tests/unit/test-powercut.c).  Reads are not watched. */
int pwritev_full(int fd, const struct iovec *iov, int n, uint64_t off);
int sys_fdatasync(int fd);
int sys_fallocate(int fd, int mode, uint64_t off, uint64_t len);
int sys_ftruncate(int fd, uint64_t size);
enum sys_op { SYS_WRITE, SYS_SYNC, SYS_ALLOCATE, SYS_PUNCH, SYS_TRUNCATE };
/* Called after each of them succeeds: SYS_WRITE with the bytes written at
 * @off (one call per buffer); SYS_SYNC; SYS_ALLOCATE/SYS_PUNCH with the
 * range; SYS_TRUNCATE with the new size in @len.  NULL: none (the default). */
typedef void (*sys_watch_fn)(int fd, enum sys_op op, const void *buf, uint64_t len, uint64_t off, void *userdata);
void sys_watch_set(sys_watch_fn fn, void *userdata);
/* Called before each of them: a negative errno fails it without doing it (a
 * test's failing disk).  NULL: none (the default). */
typedef int (*sys_fault_fn)(int fd, enum sys_op op, uint64_t len, uint64_t off, void *userdata);
void sys_fault_set(sys_fault_fn fn, void *userdata);
/* Size of a regular file or block device. */
int fd_size(int fd, uint64_t *ret);
/* True when every byte of @buf is zero. */
bool mem_is_zero(const void *buf, size_t len);

/* writes at least this long start their writeback at once (sync_file_range);
 * shorter ones wait for the flush */
#define COWVOL_WRITEBACK_MIN (256u << 10)

/*
 * The store's I/O layer.  The default goes to a file descriptor; tests plug
 * in their own to record every write and flush and cut the sequence.
 */
struct store_io {
        int (*pread)(void *ctx, void *buf, size_t len, uint64_t off);
        int (*pwrite)(void *ctx, const void *buf, size_t len, uint64_t off);
        int (*sync)(void *ctx);
        int (*size)(void *ctx, uint64_t *ret);
        int (*resize)(void *ctx, uint64_t size); /* NULL: cannot grow */
        /* start writing [off, off+len) back now, so that a later sync has
         * less to wait for; NULL: nothing to do */
        void (*writeback)(void *ctx, uint64_t off, uint64_t len);
        /* allocate the blocks of [off, off+len) (within the size); NULL: cannot */
        int (*preallocate)(void *ctx, uint64_t off, uint64_t len);
        /* give back the blocks of [off, off+len) (they read as zeros); NULL: cannot */
        int (*punch)(void *ctx, uint64_t off, uint64_t len);
        /* 1 when [off, off+len) is a hole (reads as zeros), 0 when not or unknown */
        int (*is_hole)(void *ctx, uint64_t off, uint64_t len);
        /* pread_cached(): what the cache holds, without waiting (a count of
         * bytes, or -errno); NULL: the layer cannot tell (0) */
        ssize_t (*pread_cached)(void *ctx, void *buf, size_t len, uint64_t off);
        /* start reading [off, off+len) into the page cache; NULL: nothing */
        void (*readahead)(void *ctx, uint64_t off, uint64_t len);
        void (*free)(void *ctx);                 /* NULL: nothing to free */
};

/* exstore.c, over any I/O layer; the store takes ownership of ctx. */
int exstore_create_io(const struct store_io *io, void *ctx, uint32_t chunk_bytes,
                      unsigned flags, cowvol_store **ret);
/* The same, resizing the file to @size_bytes (0: keep) once the checks pass. */
int exstore_create_sized_io(const struct store_io *io, void *ctx, uint32_t chunk_bytes, uint64_t size_bytes,
                            unsigned flags, cowvol_store **ret);
int exstore_open_io(const struct store_io *io, void *ctx, unsigned flags, cowvol_store **ret);
/* cindex_lookup_range() on the store's index (a read of many chunks). */
size_t exstore_lookup_range(const cowvol_store *s, uint64_t first, size_t n, uint64_t *ret_new);
/* cowvol_store_pread(), but only what the page cache holds (pread_cached):
 * the bytes read from the start, 0 when none; -errno. */
ssize_t exstore_pread_cached(const cowvol_store *s, uint64_t new_chunk, void *buf, size_t len, uint32_t off);
/* Start reading store chunks [first, first+n) into the page cache. */
void exstore_readahead(const cowvol_store *s, uint64_t first, uint64_t n);
/* Merging many runs at a time.  exstore_merge_peek: the last @max entries
 * of the table at most, the last first, into @out (fewer where the table
 * starts): their count, 0 when it is empty; nothing changes but that the
 * store is merging (it allocates nothing more).  exstore_merge_clear: once
 * the origin holds the last @n entries durably, clear them: the areas they
 * held are written, between two flushes; a failure stops the merge until
 * the store is opened again, as cowvol_store_merge_commit(). */
struct exstore_entry {
        uint64_t old, new_chunk;
};
ssize_t exstore_merge_peek(cowvol_store *s, size_t max, struct exstore_entry *out);
int exstore_merge_clear(cowvol_store *s, size_t n);
/* 1 when store chunk @chunk is a hole of a sparse file (its data is zeros). */
int exstore_chunk_is_hole(const cowvol_store *s, uint64_t chunk);
/* The same question about any file: 1 hole, 0 data or unknown. */
int fd_range_is_hole(int fd, uint64_t off, uint64_t len);
int exstore_check_io(const struct store_io *io, void *ctx, cowvol_fault_fn fn, void *userdata);
/* The store's table was read: it is valid, or a link (COWVOL_STORE_LINK). */
bool exstore_table_read(const cowvol_store *s);
/* The store size in chunks that @n more allocations need (0 for none),
 * from next_free, metadata chunks counted. */
uint64_t exstore_chunks_for(const cowvol_store *s, uint64_t n);
/* Room for @n more chunks before any is copied: grow the store (@slack
 * chunks more if the file may be that long: sparse, it costs nothing yet)
 * and allocate the blocks they will use.  -ENOSPC (logged), the store's
 * size as it was, when there is none. */
int exstore_make_room(cowvol_store *s, uint64_t n, uint64_t slack);
/* Forget the exceptions added and not committed, without invalidating:
 * the table on disk stands (a copy that failed before its commit). */
void exstore_forget_pending(cowvol_store *s);
/* cowvol_store_commit(), but a failure forgets the pending exceptions
 * instead of invalidating the store: for copies that the store's view has
 * already (chain.c), whose loss changes nothing. */
int exstore_commit_or_forget(cowvol_store *s);
/* A commit in three steps (exstore.c, before commit()): seal takes the
 * pending exceptions into a batch (0 and *ret NULL: none pending), write
 * does its I/O and touches nothing else of the store (any thread, while the
 * lock holder adds more), finish (lock holder) installs it or, when @r is
 * an error, forgets its exceptions and the pending ones, invalidating the
 * store unless @keep_valid; it frees the batch and returns as commit does.
 * One batch of a store at a time. */
struct exstore_batch;
int exstore_commit_seal(cowvol_store *s, struct exstore_batch **ret);
int exstore_commit_write(struct exstore_batch *b);
int exstore_commit_finish(struct exstore_batch *b, int r, bool keep_valid);
/* chain.c: commit the copies a group of so many bytes at a time (tests
 * lower it to cut between groups) */
extern uint64_t chain_commit_bytes;
/* engine.c: a restore (flattening, merging) goes so many bytes a step
 * (tests lower it to cut between steps and across metadata areas) */
extern uint64_t merge_step_bytes;
/* engine.c: the bytes of origin chunks waiting in memory that make a group
 * for the committer thread (tests lower it to run the pipeline often) */
extern uint64_t engine_group_bytes;

/*
 * chunk-index.c: origin chunk -> store chunk, 12 bytes an entry.
 * A sorted array (binary search) plus a small hash of recent inserts that is
 * merged into the array when it fills; removals leave tombstones.
 */
struct cindex_entry {
        uint64_t old;
        uint32_t new_chunk; /* 0: removed (chunk 0 is the header, never data) */
} __attribute__((packed));

struct cindex {
        struct cindex_entry *main;
        size_t n_main, cap_main, n_dead;
        struct cindex_entry *tail; /* open addressing, new_chunk 0 = empty */
        size_t n_tail, cap_tail;
        bool bulk; /* main is unsorted until cindex_bulk_finish() */
};

#define CINDEX_MAX_NEW UINT32_MAX

void cindex_init(struct cindex *x);
void cindex_done(struct cindex *x);
/* 1 and *ret_new if present, 0 if absent. */
int cindex_lookup(const struct cindex *x, uint64_t old, uint64_t *ret_new);
/* As lookup; then how many chunks from @old on (at most @max) map to
 * consecutive store chunks: 0 when @old has no entry. */
size_t cindex_lookup_run(const struct cindex *x, uint64_t old, size_t max, uint64_t *ret_new);
/* For each chunk first+i (i < n) whose ret_new[i] is 0 and that has an
 * entry, its store chunk into ret_new[i]; slots already set stay as they
 * are.  Returns how many it set.  One bisection for the whole range. */
size_t cindex_lookup_range(const struct cindex *x, uint64_t first, size_t n, uint64_t *ret_new);
/* -EEXIST if present, -EFBIG if new_chunk does not fit, -ENOMEM. */
int cindex_insert(struct cindex *x, uint64_t old, uint64_t new_chunk);
/* 0 if removed, -ENOENT if absent. */
int cindex_remove(struct cindex *x, uint64_t old);
size_t cindex_count(const struct cindex *x);
size_t cindex_bytes(const struct cindex *x);
/* Loading many at once: append unsorted, then sort once. */
int cindex_bulk_append(struct cindex *x, uint64_t old, uint64_t new_chunk);
/* Sort; calls @dup for each origin chunk present twice (both store chunks). */
int cindex_bulk_finish(struct cindex *x, void (*dup)(uint64_t old, uint64_t a, uint64_t b, void *ud),
                       void *ud);
/* Visit every entry in origin-chunk order. */
int cindex_foreach(const struct cindex *x, int (*fn)(uint64_t old, uint64_t new_chunk, void *ud),
                   void *ud);


/* --- dm.c: the one libdevmapper wrapper ---------------------------------------- */

struct cvdm_target {
        uint64_t start, len; /* sectors */
        const char *type;
        const char *params;
};

struct cvdm_info {
        bool exists, suspended, live_table, inactive_table;
        int open_count;
        uint32_t event_nr, major, minor;
        char uuid[130];
};

/* 0 when device-mapper can be used here, else -ENODEV (logged) */
int cvdm_available(void);
/* The same, silent when @log is false (a status poll). */
int cvdm_probe(bool log);
/* Create @name (dm uuid @uuid), load @n targets (if any) and resume when
 * @activate.  @hidden: udev skips its rules (the -real and -cow layers).
 * On failure nothing is left behind. */
int cvdm_create(const char *name, const char *uuid, const struct cvdm_target *t, size_t n, bool activate,
                bool hidden);
/* load an inactive table; cvdm_resume makes it live */
int cvdm_reload(const char *name, const struct cvdm_target *t, size_t n);
/* suspend, flushing queued I/O; @lockfs also freezes a mounted filesystem */
int cvdm_suspend(const char *name, bool lockfs);
int cvdm_resume(const char *name, bool hidden);
int cvdm_remove(const char *name, bool hidden);
/* info->exists false (and 0) when there is no such device */
int cvdm_info(const char *name, struct cvdm_info *info);
/* the first target's type, status line (or table line) and length */
int cvdm_status(const char *name, char *type, size_t tlen, char *params, size_t plen, uint64_t *len);
int cvdm_table(const char *name, char *type, size_t tlen, char *params, size_t plen, uint64_t *len);
/* every device, with its info; @fn returns non-zero to stop */
int cvdm_list(int (*fn)(const char *name, const struct cvdm_info *info, void *ud), void *ud);
/* wait until @name's event counter passes @event_nr */
int cvdm_wait_event(const char *name, uint32_t event_nr);
/* a descriptor that polls readable after any device-mapper event that
 * follows cvdm_event_arm() (arm again after each); -errno when none */
int cvdm_event_open(void);
int cvdm_event_arm(int fd);
/* "cowvol-VOL[-SNAP][-LAYER]", hyphens inside each part doubled as LVM
 * does; -ENAMETOOLONG past the kernel's 127 characters */
int cvdm_name(char *out, size_t len, const char *vol, const char *snap, const char *layer);


/* --- loop.c: loop devices over store files ------------------------------------ */

/* Attach @file to a free loop device, autoclear (it goes when its last user
 * closes it); its path in @dev.  Returns the open loop device: keep it open
 * until a table holds the device. */
int cvloop_attach(const char *file, char *dev, size_t len);
/* the loop device backing @file, or -ENOENT */
int cvloop_find(const char *file, char *dev, size_t len);
/* the loop device sees its file's new size */
int cvloop_refresh_size(const char *dev);
/* size in bytes of a block device or file */
int cvdev_size(const char *dev, uint64_t *bytes);

/* --- blkid.c: the one libblkid wrapper ------------------------------------------ */

/* "UUID=...", "LABEL=..." (PARTUUID=, PARTLABEL=) or a path: the device
 * path, malloc'ed */
int cvblkid_resolve(const char *spec, char **dev);
/* the filesystem type and label on @dev ("" when none) */
int cvblkid_probe(const char *dev, char *type, size_t tlen, char *label, size_t llen);
/* 1 when @dev carries any signature (its name in @what), 0 when none */
int cvblkid_signature(const char *dev, char *what, size_t len);

#endif
