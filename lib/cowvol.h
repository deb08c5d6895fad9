/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libcowvol: the public interface.
 *
 * The exception store is the Linux kernel's persistent snapshot store
 * (drivers/md/dm-snap-persistent.c), byte for byte.  Every function that can
 * fail returns 0 (or a count) on success and a negative errno on failure;
 * output parameters are written only on success.  The library never prints:
 * details of a failure go to the log callback (cowvol_set_log_callback).
 */
#ifndef COWVOL_H
#define COWVOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COWVOL_SECTOR_SIZE 512u
/* The kernel's store: magic "SnAp" (le32 0x70416e53), version 1. */
#define COWVOL_STORE_MAGIC 0x70416e53u
#define COWVOL_STORE_VERSION 1u
/* Chunk sizes a new store may use (LVM2's range), in bytes: a power of two
 * from COWVOL_CHUNK_MIN to COWVOL_CHUNK_MAX (cowvol_chunk_size_valid()). */
#define COWVOL_CHUNK_MIN 4096u
#define COWVOL_CHUNK_MAX (512u * 1024u)
#define COWVOL_CHUNK_DEFAULT 4096u
/* A new store holds at least the header, one metadata area and one data chunk. */
#define COWVOL_STORE_MIN_CHUNKS 3u

/** The library's version string, "MAJOR.MINOR.PATCH". */
const char *cowvol_version(void);

/**
 * True when @bytes may be the chunk size of a new store, volume or kernel
 * snapshot: a power of two from COWVOL_CHUNK_MIN (4 KiB) to COWVOL_CHUNK_MAX
 * (512 KiB), LVM2's range.  (An existing store written by someone else may
 * have another size: cowvol_store_open() checks it against the kernel's rules.)
 * Since LIBCOWVOL_0.2.
 */
bool cowvol_chunk_size_valid(uint64_t bytes);

enum cowvol_log_level {
        COWVOL_LOG_ERROR = 0,
        COWVOL_LOG_WARNING = 1,
        COWVOL_LOG_INFO = 2,
        COWVOL_LOG_DEBUG = 3,
};

typedef void (*cowvol_log_fn)(int level, const char *msg, void *userdata);

/**
 * Route the library's messages to @fn (NULL: drop them).  Messages do not
 * name the file or device they are about: the caller knows it and adds it.  Messages of level
 * DEBUG are passed only when the environment has COWVOL_DEBUG set.
 * Process-wide; set it once before using the library.
 */
void cowvol_set_log_callback(cowvol_log_fn fn, void *userdata);

/**
 * Parse a size: a decimal number with an optional suffix K, M, G, T
 * (powers of 1024), alone or followed by "iB" or "B" ("4K", "4KiB", "1G").
 * A plain number is bytes.  Returns -EINVAL for anything else and
 * -ERANGE when the value does not fit in 64 bits.
 */
int cowvol_parse_size(const char *s, uint64_t *ret_bytes);

/** Format @bytes for people ("4.0 KiB", "1.5 GiB") into @buf. */
const char *cowvol_format_size(uint64_t bytes, char *buf, size_t len);

typedef struct cowvol_store cowvol_store;

enum cowvol_store_flags {
        COWVOL_STORE_RDONLY = 1u << 0, /* open: never write */
        COWVOL_STORE_FORCE = 1u << 1,  /* create: overwrite an existing store */
        COWVOL_STORE_PREALLOCATE = 1u << 2, /* allocate blocks ahead of use (fallocate), 64 MiB at a time */
        COWVOL_STORE_LINK = 1u << 3,   /* open: read the table of an invalid store too (a link of a
                                        * snapshot chain, which older snapshots still read through) */
};

/**
 * Create a new, empty store on @path (a regular file or a block device):
 * area 0 zeroed and flushed first, then the header the kernel writes for a
 * new store (valid=1, version 1, chunk size in sectors), flushed.
 * @chunk_bytes: a power of two from COWVOL_CHUNK_MIN to COWVOL_CHUNK_MAX.
 * @size_bytes: for a file, its new size (0: keep the present size; a file
 *   that does not exist is created); must be 0 for a block device.
 * A path that already holds a store is refused with -EEXIST unless
 * COWVOL_STORE_FORCE.  On success *ret (if not NULL) is the open store.
 */
int cowvol_store_create(const char *path, uint32_t chunk_bytes, uint64_t size_bytes,
                        unsigned flags, cowvol_store **ret);

/**
 * Open an existing store, whoever wrote it, and validate it: header, every
 * exception (inside the store, not on a metadata chunk, no origin chunk or
 * store chunk twice).  The first fault fails the open with -EUCLEAN (corrupt
 * content), -EPROTONOSUPPORT (version) or -ENODATA (an all-zero header: a
 * store the kernel has not initialised yet); the log callback names it.
 * Opening writes nothing.  A store whose header says valid=0 opens (its
 * exceptions are not read, as in the kernel, unless COWVOL_STORE_LINK);
 * see cowvol_store_is_valid().
 */
int cowvol_store_open(const char *path, unsigned flags, cowvol_store **ret);

/** Flush pending exceptions (if writable) and free.  Accepts NULL; returns NULL. */
cowvol_store *cowvol_store_close(cowvol_store *s);

/** One fault of a store, as cowvol_store_check() reports it. */
struct cowvol_fault {
        const char *what;  /* e.g. "duplicate origin chunk" */
        int64_t area;      /* metadata area, or -1 when not about an entry */
        int64_t slot;      /* slot in that area, or -1 */
        char message[256]; /* the whole sentence, naming where */
};

typedef void (*cowvol_fault_fn)(const struct cowvol_fault *f, void *userdata);

/**
 * Check the store on @path without changing it; call @fn for every fault
 * found (not only the first).  Returns the number of faults (0: sound), or a
 * negative errno when the path cannot be read at all.
 */
int cowvol_store_check(const char *path, cowvol_fault_fn fn, void *userdata);

/** Chunk size in bytes. */
uint32_t cowvol_store_chunk_size(const cowvol_store *s);
/** Exceptions per metadata area: chunk_size / 16. */
uint32_t cowvol_store_exceptions_per_area(const cowvol_store *s);
/** Number of exceptions committed or pending. */
uint64_t cowvol_store_count(const cowvol_store *s);
/** Store size in chunks (whole chunks only). */
uint64_t cowvol_store_chunks(const cowvol_store *s);
/** False when the header says valid=0. */
bool cowvol_store_is_valid(const cowvol_store *s);
/** How many data chunks the store can hold in all (so many exceptions). */
uint64_t cowvol_store_capacity(const cowvol_store *s);
/** True when no further data chunk can be allocated. */
bool cowvol_store_is_full(const cowvol_store *s);
/** Memory held by the in-memory index, in bytes. */
size_t cowvol_store_index_bytes(const cowvol_store *s);

/** The figures of the kernel's status line for this store. */
struct cowvol_store_usage {
        uint64_t allocated_sectors; /* next_free * chunk sectors */
        uint64_t total_sectors;     /* size of the store in sectors */
        uint64_t metadata_sectors;  /* (current area + 2) * chunk sectors */
};

/** Fill @ret with the figures `dmsetup status` would print for this store. */
int cowvol_store_usage(const cowvol_store *s, struct cowvol_store_usage *ret);

/**
 * Format the kernel's status text: "Invalid" or "A/T M".  Returns @buf.
 */
const char *cowvol_store_status_line(const cowvol_store *s, char *buf, size_t len);

/**
 * Look up origin chunk @old.  Returns 1 and sets *ret_new when the store has
 * an exception for it (committed or pending), 0 when it has none.
 */
int cowvol_store_lookup(const cowvol_store *s, uint64_t old, uint64_t *ret_new);

/**
 * As cowvol_store_lookup, for a run: returns how many origin chunks from
 * @old on (at most @max) have exceptions at consecutive store chunks from
 * *ret_new on; 0 when @old has no exception.  (It may stop a run early.)
 */
size_t cowvol_store_lookup_run(const cowvol_store *s, uint64_t old, size_t max, uint64_t *ret_new);

/**
 * Reserve the next free data chunk (skipping metadata chunks, as the
 * kernel).  -ENOSPC when the store is full, -EROFS on a read-only store,
 * -ESTALE on an invalid one, -EBUSY while merging.  The chunk is used only
 * once an exception names it (cowvol_store_add).
 */
int cowvol_store_allocate(cowvol_store *s, uint64_t *ret_new);

/** Write one whole chunk of data into store chunk @new_chunk. */
int cowvol_store_write_chunk(cowvol_store *s, uint64_t new_chunk, const void *buf);
/** Write @n whole chunks into consecutive data chunks from @first (no metadata chunk between). */
int cowvol_store_write_chunks(cowvol_store *s, uint64_t first, uint64_t n, const void *buf);
/** Read one whole chunk of data from store chunk @new_chunk. */
int cowvol_store_read_chunk(const cowvol_store *s, uint64_t new_chunk, void *buf);

/**
 * Record exception @old -> @new in memory (pending).  @new must come from
 * cowvol_store_allocate() and its data be written: -EINVAL for a chunk that
 * was not handed out or is named by an exception already.  -EEXIST when
 * @old has an exception already.  Nothing is durable until
 * cowvol_store_commit().
 */
int cowvol_store_add(cowvol_store *s, uint64_t old, uint64_t new_chunk);

/**
 * Make every pending exception durable, in the kernel's order: flush the
 * data, zero the next area before an area fills, write each touched
 * metadata area, flush.  All pending exceptions go in one write per area.
 * Returns the number of exceptions committed.  On an I/O error the store is
 * marked invalid (as the kernel does) and the error returned.
 */
int cowvol_store_commit(cowvol_store *s);

/** Mark the store invalid: rewrite the header with valid=0 and flush. */
int cowvol_store_invalidate(cowvol_store *s);

/**
 * Re-read the size of the file or device: a grown store uses the new space.
 * Returns the size in chunks.  Shrinking below what is in use: -EFBIG.
 */
int64_t cowvol_store_refresh_size(cowvol_store *s);

/**
 * Grow a store file to @size_bytes (never shrinks) and use the new space.
 * -ENOTTY on a block device (grow the device, then refresh).
 */
int cowvol_store_grow(cowvol_store *s, uint64_t size_bytes);

/**
 * Merge step 1, as the kernel's prepare_merge: find the last exception and
 * the run before it whose origin and store chunks both step down by one.
 * Returns the run length n (0 when nothing is left) and sets *ret_old and
 * *ret_new to the FIRST (lowest) chunks of the run: the caller copies store
 * chunks [new, new+n) onto origin chunks [old, old+n), flushes the origin,
 * then calls cowvol_store_merge_commit(s, n).
 */
int cowvol_store_merge_prepare(cowvol_store *s, uint64_t *ret_old, uint64_t *ret_new);

/** Merge step 2: drop the last @n exceptions; write the area, flushed. */
int cowvol_store_merge_commit(cowvol_store *s, int n);

/**
 * Keep blocks allocated ahead of use (@on), or stop and give back those
 * allocated past the last chunk in use (a store that is no longer the
 * newest of its chain takes few copies).  Needs a writable store.
 */
int cowvol_store_set_preallocate(cowvol_store *s, bool on);

/** Flush the data written to the store (cowvol_store_pwrite) to stable storage. */
int cowvol_store_sync(cowvol_store *s);

/**
 * Read or write @len bytes at @off within store chunk @new_chunk, going on
 * into the data chunks after it when the span is longer (never across a
 * metadata chunk: -ERANGE).  For writable snapshots, whose chunks that
 * already have an exception are written in place.
 */
int cowvol_store_pread(const cowvol_store *s, uint64_t new_chunk, void *buf, size_t len, uint32_t off);
int cowvol_store_pwrite(cowvol_store *s, uint64_t new_chunk, const void *buf, size_t len, uint32_t off);

/**
 * Call @fn for each exception (committed or pending) in origin-chunk order,
 * from memory.  A non-zero return from @fn stops the walk and is returned.
 */
int cowvol_store_foreach_sorted(const cowvol_store *s,
                                int (*fn)(uint64_t old_chunk, uint64_t new_chunk, void *userdata),
                                void *userdata);

/** One exception, as stored: slot @slot of metadata area @area. */
struct cowvol_exception {
        uint64_t old_chunk;
        uint64_t new_chunk;
        uint64_t area;
        uint32_t slot;
};

typedef int (*cowvol_exception_fn)(const struct cowvol_exception *e, void *userdata);

/**
 * Call @fn for each committed exception in store order (area by area, slot
 * by slot), read from the disk.  A non-zero return from @fn stops the walk
 * and is returned.
 */
int cowvol_store_foreach(const cowvol_store *s, cowvol_exception_fn fn, void *userdata);

/**
 * Write the snapshot's content to @output: @origin overlaid by the store's
 * exceptions, what the kernel's snapshot device shows.  @output is created
 * or truncated when it is a file; holes of the origin stay holes.
 */
int cowvol_store_view(const cowvol_store *s, const char *origin, const char *output);

/* --- snapshot chains (lib/chain.c, shared/DESIGN.md "Snapshot chains") ------
 * The stores of a volume's snapshots S1 (oldest) .. Sn (newest) form a chain:
 * view(Si, c) is Si's chunk when Si has an exception for c, else
 * view(Si+1, c); view(Sn+1) is the origin.  Every function here takes the
 * stores oldest first, as the catalogue lists them.  An invalid store is a
 * link of the chain: open it with COWVOL_STORE_LINK and it is read through,
 * never written.  The stores of one chain share one chunk size (-EINVAL). */

/** What making stores standalone copies into one store. */
struct cowvol_chain_copy {
        uint64_t chunks;      /* exceptions copied in (to copy, when counting) */
        uint64_t bytes;       /* their data: chunks * chunk size */
        uint64_t grow_bytes;  /* how much the store file grew (must grow at least, when counting) */
        uint64_t space_bytes; /* counting: the space the copies and their metadata chunks take */
};

/**
 * Copy into @older every exception of @newer that @older lacks, the chunk
 * data read from @newer; @newer is the next newer store of the chain (or,
 * once that one's exceptions are in, the one after it).  Each chunk copied
 * is what @older shows already, so no snapshot's content changes, and a
 * crash at any point is harmless: run it again to finish.  Data before
 * metadata, in large groups, as cowvol_store_commit().  Before the first
 * copy, a store file that would fill grows to hold them all (and a sparse
 * fifth more) and their blocks are allocated: -ENOSPC when the filesystem
 * (or a block device) has no room, the store valid and as it was.
 * -ESTALE when @older is invalid, -EROFS when it is read-only.  *ret (if
 * not NULL) says what was copied.  Since LIBCOWVOL_0.4.
 */
int cowvol_store_copy_missing(cowvol_store *older, const cowvol_store *newer, struct cowvol_chain_copy *ret);

/**
 * Make every valid store of the chain @stores[0..n) (oldest first)
 * standalone: holding its whole view's differences from the origin, as
 * the kernel's snapshot-origin keeps its snapshots.  From the newest but
 * one down to the oldest, cowvol_store_copy_missing() from the next newer
 * store (and past it to the next valid one, when it is an invalid link).
 * Crash-safe and idempotent: a rerun copies only what is still missing.
 * @ret (if not NULL) gets n entries, the newest's all zero.  On an error
 * the stores done stay done (harmless: their views are unchanged).
 * Since LIBCOWVOL_0.4.
 */
int cowvol_chain_make_standalone(cowvol_store *const *stores, size_t n, struct cowvol_chain_copy *ret);

/**
 * Count what cowvol_chain_make_standalone() would copy into each store,
 * writing nothing: @ret gets n entries (links and the newest: zero).
 * Since LIBCOWVOL_0.4.
 */
int cowvol_chain_count_standalone(cowvol_store *const *stores, size_t n, struct cowvol_chain_copy *ret);

/**
 * Write the content of the snapshot whose store is @stores[0] to @output,
 * in the chain @stores[0..n): @stores[1] is the next newer store, ...,
 * @stores[n-1] the newest; under them @origin.  Each chunk comes from the
 * first store that has it, else from the origin (n = 1:
 * cowvol_store_view()).  @stores[0] must be valid (-ESTALE); newer ones
 * may be invalid links.  @output as for cowvol_store_view().
 * Since LIBCOWVOL_0.4.
 */
int cowvol_chain_view(cowvol_store *const *stores, size_t n, const char *origin, const char *output);

/* --- the userspace engine: volumes (image files) and their snapshots ------- */

/* A volume (an image file) and one of its snapshots, both opaque.  A
 * snapshot belongs to its volume: every call on one names both. */
typedef struct cowvol_volume cowvol_volume;
typedef struct cowvol_snapshot cowvol_snapshot;

enum cowvol_event {
        COWVOL_EVENT_EXTENDED, /* a store grew (autoextend) */
        COWVOL_EVENT_WARNING,  /* a store passed 80 % and cannot grow */
        COWVOL_EVENT_INVALID,  /* a snapshot became invalid (reason in the message) */
};

typedef void (*cowvol_event_fn)(cowvol_volume *v, cowvol_snapshot *sn, enum cowvol_event ev,
                                const char *msg, void *userdata);

/**
 * Open the image file @path as a volume with chunks of @chunk_bytes (a power
 * of two from 4 KiB to 512 KiB).  Its size is the file's.
 */
int cowvol_volume_open(const char *path, uint32_t chunk_bytes, cowvol_volume **ret);

/** Flush and close the volume and every snapshot attached.  Accepts NULL. */
cowvol_volume *cowvol_volume_close(cowvol_volume *v);

/** The volume's size in bytes (its image file's). */
uint64_t cowvol_volume_size(const cowvol_volume *v);

/**
 * Grow the volume (its image) to @size bytes; the new space reads zero.
 * Snapshots keep their own size and content: no copy goes past a
 * snapshot's end, and a read of it stops there.  Shrinking is refused
 * (-EBUSY) while the volume has snapshots, as LVM refuses to reduce a
 * snapshot origin, and while a restore runs; with snapshots, the old size
 * and the new one must be whole chunks (-EINVAL).  Durable when it returns.
 */
int cowvol_volume_resize(cowvol_volume *v, uint64_t size);

/**
 * A snapshot's size: the volume's when it was taken (create and attach
 * give it the volume's; set it after attach from what the caller
 * recorded).  An older snapshot is never larger than a newer one: a size
 * that would make it so is -EINVAL, and so is one above the volume's.
 * A restored snapshot takes the volume's size as it becomes the newest.
 */
uint64_t cowvol_snapshot_size(cowvol_volume *v, cowvol_snapshot *sn);
int cowvol_snapshot_set_size(cowvol_volume *v, cowvol_snapshot *sn, uint64_t size);
/** The volume's chunk size in bytes, which its snapshots share. */
uint32_t cowvol_volume_chunk_size(const cowvol_volume *v);
/** fstat() of the image file the volume holds open: which file it is. */
int cowvol_volume_fstat(const cowvol_volume *v, struct stat *ret);

/**
 * Grow stores as LVM's autoextend does: when a store's use passes
 * @threshold percent (50..100; 100 turns growth off), grow it by @percent
 * of its size.  Defaults: 70 and 20.
 */
int cowvol_volume_set_autoextend(cowvol_volume *v, unsigned threshold, unsigned percent);

/** Be told of store growth, warnings and invalidation (called with the volume locked). */
void cowvol_volume_set_event_callback(cowvol_volume *v, cowvol_event_fn fn, void *userdata);

/**
 * Take a snapshot now: create a new store file @store_path of @store_bytes
 * (chunk size the volume's) and attach it.  From this call on, origin writes
 * copy into it.  -EBUSY during a restore.
 */
int cowvol_volume_snapshot_create(cowvol_volume *v, const char *store_path, uint64_t store_bytes,
                                  cowvol_snapshot **ret);

/** Attach an existing store (after a restart).  Its chunk size must be the volume's. */
int cowvol_volume_snapshot_attach(cowvol_volume *v, const char *store_path, cowvol_snapshot **ret);

/** Detach a snapshot: flush and close its store (the file stays). */
int cowvol_volume_snapshot_detach(cowvol_volume *v, cowvol_snapshot *sn);

/**
 * Snapshots form a chain (oldest to newest in the order they were attached
 * or created): a snapshot's chunk that its store lacks is the next newer
 * snapshot's.  Removing @sn: unchain first gives the older snapshots, durably,
 * the chunks they read through it, and marks it leaving (it still takes the
 * origin's copies, but they no longer count for those below; writes into it
 * get -EBUSY); then detach forgets it, or rechain undoes the unchain (the
 * removal failed: @sn is exact still).  detach alone unchains first.
 */
int cowvol_volume_snapshot_unchain(cowvol_volume *v, cowvol_snapshot *sn);

/**
 * Make independent stores (the kernel engine's, or this library's before
 * chains) a chain: where a snapshot was written into, a newer store holds a
 * chunk an older one lacks; each older valid snapshot takes the origin's
 * chunk there as its own.  No snapshot's content changes; a crash at any
 * point is harmless, and calling it again finishes.  Call it once, after
 * attaching the snapshots, before any write.  *ret_copied: chunks copied.
 */
int cowvol_volume_chain_adopt(cowvol_volume *v, uint64_t *ret_copied);
int cowvol_volume_snapshot_rechain(cowvol_volume *v, cowvol_snapshot *sn);

/**
 * Refuse writes to the origin (-ENOLINK) while @hold: the caller could not
 * attach the newest snapshot's store, and the older snapshots read through
 * it, so the origin's copies would have nowhere to go.  A snapshot that
 * becomes the newest (created, or kept by a restore) lifts it.
 * Since LIBCOWVOL_0.4.
 */
void cowvol_volume_hold_origin(cowvol_volume *v, bool hold);

/** What cowvol_snapshot_info() tells of a snapshot. */
struct cowvol_snapshot_info {
        bool valid;
        char reason[128];               /* why it is invalid, "" if valid */
        uint64_t exceptions;
        uint64_t store_bytes;
        struct cowvol_store_usage usage; /* as the kernel's status line */
};

/** Fill @ret with snapshot @sn's state: valid or why not, exceptions, store size and usage. */
int cowvol_snapshot_info(cowvol_volume *v, cowvol_snapshot *sn, struct cowvol_snapshot_info *ret);

/**
 * Read or write @len bytes at @off of the volume (@sn NULL) or of snapshot
 * @sn.  An origin write first copies each chunk it changes into every
 * snapshot that has no exception for it, commits those exceptions (data,
 * flush, metadata, flush), and only then writes.  A snapshot that cannot
 * take its copy (store full, I/O error) is invalidated; the volume's write
 * goes on.  -EINVAL past the end, -ESTALE reading an invalid snapshot,
 * -EBUSY writing during a restore.
 */
int cowvol_volume_pread(cowvol_volume *v, cowvol_snapshot *sn, void *buf, size_t len, uint64_t off);
int cowvol_volume_pwrite(cowvol_volume *v, cowvol_snapshot *sn, const void *buf, size_t len, uint64_t off);

/** Make every acknowledged write durable: the image and every store. */
int cowvol_volume_flush(cowvol_volume *v);

/**
 * Zero @len bytes at @off of the volume (@sn NULL) or of snapshot @sn.  With
 * COWVOL_ZERO_PUNCH, whole origin chunks that no snapshot still needs are
 * deallocated (a hole in the image) instead of written; every other chunk
 * is written with zeroes through the ordinary path (copies first).
 */
#define COWVOL_ZERO_PUNCH 1u
int cowvol_volume_write_zeroes(cowvol_volume *v, cowvol_snapshot *sn, uint64_t len, uint64_t off, unsigned flags);

/**
 * Discard (TRIM) @len bytes at @off: advice that the content is no longer
 * needed.  Whole origin chunks that no snapshot still needs are
 * deallocated and then read as zeroes; everything else, and every snapshot,
 * keeps its content.  -EBUSY during a restore.
 */
int cowvol_volume_discard(cowvol_volume *v, cowvol_snapshot *sn, uint64_t len, uint64_t off);

/** One extent of cowvol_volume_block_status(). */
struct cowvol_extent {
        uint64_t len;
        unsigned flags; /* COWVOL_EXTENT_* */
};
#define COWVOL_EXTENT_HOLE 1u /* not allocated */
#define COWVOL_EXTENT_ZERO 2u /* reads as zeroes */

/**
 * The allocation of [@off, @off+@len) of the volume or of snapshot @sn, as
 * at most @max extents in order, neighbours with equal flags merged: a
 * snapshot's chunks in its store are data, its other chunks are as the
 * origin's.  Returns the number of extents, which may cover less than
 * @len (never nothing), or -EINVAL, -ESTALE.
 */
int cowvol_volume_block_status(cowvol_volume *v, cowvol_snapshot *sn, uint64_t len, uint64_t off,
                               struct cowvol_extent *ext, size_t max);

/**
 * Restore: the volume's content becomes @sn's.  merge_begin marks the merge
 * (reads of the volume show @sn's content at once; writes get -EBUSY);
 * merge_step does one step and returns 1 while more is left, 0 when done
 * (*ret_left: chunks left).  The steps put back, 16 MiB at a time, the
 * chunks any store from @sn to the newest holds (the origin's chunks go to
 * the newer snapshots that lack them first); then, if @sn has newer
 * snapshots, the older ones take the chunks they read through @sn and @sn
 * becomes the newest: that step returns COWVOL_MERGE_NEWEST, and the caller
 * records the new order durably before the next step; then @sn's store
 * empties.  merge_end ends it: @sn is then the newest, empty, a snapshot of
 * the restored content (detach it to consume it); or, when its emptied
 * store cannot be opened again, merge_end lets it go (detached and freed:
 * the caller forgets it) and returns < 0.  A crash at any point
 * resumes with merge_begin on the same snapshot, in the order recorded
 * (steps are done again; nothing is copied twice).
 */
#define COWVOL_MERGE_NEWEST 2
int cowvol_volume_merge_begin(cowvol_volume *v, cowvol_snapshot *sn);
int cowvol_volume_merge_step(cowvol_volume *v, uint64_t *ret_left);
int cowvol_volume_merge_end(cowvol_volume *v);

/**
 * merge_begin_at(v, sn, false) is merge_begin.  With @consume, the restore
 * consumes @sn's store from its end, as the kernel's snapshot-merge and
 * older cowvold did (the older ones take @sn's chunks as it goes): only to
 * resume such a restore (its store then holds every chunk of its
 * content that differs from the origin's).  merge_progress gives the
 * chunks to put back in all and those left (-EINVAL: no restore runs).
 */
int cowvol_volume_merge_begin_at(cowvol_volume *v, cowvol_snapshot *sn, bool consume);
int cowvol_volume_merge_progress(cowvol_volume *v, uint64_t *ret_total, uint64_t *ret_left);

/**
 * The byte ranges of the volume that changed since @sn was taken (or were
 * written in @sn): runs of consecutive chunks with an exception, clipped to
 * the volume's size, in order.
 */
int cowvol_snapshot_diff(cowvol_volume *v, cowvol_snapshot *sn,
                         int (*fn)(uint64_t off, uint64_t len, void *userdata), void *userdata);


/* ==========================================================================
 * The kernel engine: device-mapper snapshots of block devices, layered as
 * LVM2 layers them.  For volume V and snapshot S:
 *   cowvol-V-real    linear over the block device (hidden)
 *   cowvol-V         snapshot-origin over -real: what users mount
 *   cowvol-V-S-cow   linear over the store: a file through a loop device,
 *                    or a block device (hidden)
 *   cowvol-V-S       snapshot of -real, store -cow, persistent
 * Hyphens inside V and S are doubled, as LVM does.  Every device's dm uuid
 * is COWVOL-<the object's uuid>[-real|-cow]; a device of that name with
 * another uuid is never touched.  The kernel copies; these calls build,
 * change and read the stacks, and are idempotent where they can be (what
 * exists with the right uuid is kept).
 * ========================================================================== */

/** A volume of the kernel engine, as the caller's catalogue knows it. */
struct cowvol_kernel_volume {
        const char *name;   /* the volume's name */
        const char *uuid;   /* its uuid, in its dm uuids */
        const char *device; /* the block device under it */
        /* Optional: the messages of one call made with this volume (or one
         * of its snapshots) go here as well as to the process-wide
         * callback, so that a caller serving many clients tells each the
         * reason of its own call (cryptsetup's per-device log callback).
         * Called in the calling thread, before the call returns. */
        cowvol_log_fn log_fn;
        void *log_userdata;
};

/** A snapshot of the kernel engine, as the caller's catalogue knows it. */
struct cowvol_kernel_snapshot {
        const char *name, *uuid;
        const char *store;    /* a store file (attached through a loop device) or a block device */
        uint32_t chunk_bytes; /* 4 KiB to 512 KiB, a power of two */
};

/** 0 when device-mapper can be used here; -ENODEV (logged) when not. */
int cowvol_kernel_available(void);
/** The same question, never logged: true when device-mapper answers here. */
bool cowvol_kernel_present(void);

/** /dev/mapper/cowvol-V, or (@s) /dev/mapper/cowvol-V-S. */
int cowvol_kernel_path(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s, char *out,
                       size_t len);

/** Build the volume's -real and origin devices (kept when they exist).
 * -EEXIST when a device of those names belongs to someone else. */
int cowvol_kernel_volume_activate(const struct cowvol_kernel_volume *v);

/** Remove the volume's devices; its snapshots must be gone.  -EBUSY when
 * the volume is open (mounted). */
int cowvol_kernel_volume_deactivate(const struct cowvol_kernel_volume *v);

/**
 * Take a snapshot, in LVM's order: zero the store's header, load the -cow
 * and snapshot tables, suspend the origin (flushing and freezing a mounted
 * filesystem), resume the snapshot, resume the origin.  A file store must
 * exist at its full size.  On failure nothing is left behind.
 */
int cowvol_kernel_snapshot_create(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s);

/** Rebuild an existing snapshot's devices over its store (after a reboot). */
int cowvol_kernel_snapshot_activate(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s);

/** Remove a snapshot's devices (the store stays).  -EBUSY when it is open. */
int cowvol_kernel_snapshot_remove(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s);

/** A file store grew (by the caller): its loop device and -cow see the new
 * size; the snapshot uses it from its next copy. */
int cowvol_kernel_store_grown(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s);

/**
 * Restore (merge) snapshot @s into its volume, as lvconvert --merge: the
 * snapshot's device goes, the volume's table becomes snapshot-merge over
 * the store and the kernel copies the chunks back.  -EBUSY when the volume
 * or the snapshot is open.  Idempotent: a volume merging already is left.
 * cowvol_kernel_status(v, NULL) follows it (merging, usage); when only
 * metadata is left, cowvol_kernel_merge_finish() puts snapshot-origin back
 * and removes the -cow layer.
 */
int cowvol_kernel_merge_start(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s);
int cowvol_kernel_merge_finish(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s);

struct cowvol_kernel_status {
        bool exists;       /* the device is there */
        bool valid;        /* a snapshot: not invalidated */
        bool overflow;     /* ...  it filled up */
        bool merge_failed;
        bool merging;      /* the volume: its table is snapshot-merge (usage: what is left) */
        struct cowvol_store_usage usage; /* a valid snapshot's status line */
        int open_count;    /* openers (a mounted filesystem is one) */
        uint64_t size;     /* bytes */
};

/** The status of the volume (@s NULL) or of snapshot @s, from the kernel. */
int cowvol_kernel_status(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s,
                         struct cowvol_kernel_status *ret);

/**
 * Device-mapper events, for a monitor: a descriptor that polls readable
 * (POLLIN) after any device-mapper event (a snapshot invalidated, a merge
 * ended) that happened since the last cowvol_kernel_events_arm().  Close
 * it with close().  -errno when device-mapper cannot tell (old kernels).
 */
int cowvol_kernel_events_open(void);
int cowvol_kernel_events_arm(int fd);

/* --- QEMU's image locking (lib/imagelock.c) --------------------------------- */

/**
 * Take QEMU's image locks (open file description byte-range locks, as
 * qemu-img, qemu-io, qemu-nbd and QEMU's VMs take them) on @fd, an image
 * opened for reading: as its sole writer, which lets others read it with
 * force-share only.  They last until the file description's last
 * descriptor closes.  0; -EBUSY when another process holds the file in a
 * way that conflicts (why in @why, if given), and then none are held;
 * another -errno when the locks cannot be taken.
 */
int cowvol_image_lock(int fd, char *why, size_t len);
/** The test of cowvol_image_lock() alone, taking nothing: 0 or -EBUSY (why in @why). */
int cowvol_image_lock_test(int fd, char *why, size_t len);
/** Let go of what cowvol_image_lock() took on @fd. */
void cowvol_image_unlock(int fd);

/** The loop device that backs @file, or -ENOENT. */
int cowvol_loop_find(const char *file, char *dev, size_t len);

/** "UUID=...", "LABEL=..." or a path: the device's path (malloc'ed). */
int cowvol_device_resolve(const char *spec, char **ret_path);
/** The filesystem type and label on @dev ("" when none). */
int cowvol_device_probe(const char *dev, char *type, size_t tlen, char *label, size_t llen);
/** 1 when @dev carries a signature (filesystem, RAID, LVM, swap, partition
 * table; its name in @what), 0 when none. */
int cowvol_device_signature(const char *dev, char *what, size_t len);

#ifdef __cplusplus
}
#endif
#endif
