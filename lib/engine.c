/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The userspace engine: copy-on-write over an image file, with snapshots
 * kept in stores of the kernel's format.
 *
 * Invariants:
 *  - The snapshots form a chain, newest first in v->snaps.  A snapshot's
 *    content is, chunk by chunk, its store's chunk when it has an
 *    exception, else the content of the next newer snapshot, else the
 *    origin's chunk (DESIGN.md, "Snapshot chains").  Independent stores
 *    satisfy this too, so stores written before chains open unchanged.
 *  - Before a chunk changes under the snapshots older than some place in
 *    the chain (an origin write: all of them; a write into snapshot S: those
 *    older than S; a removal of S: those older than S), the old content
 *    goes to the newest of them that would read through the change: the
 *    walk (preserve_walk) goes from newer to older, stops at a snapshot
 *    whose store holds the chunk, skips invalid ones (links: their table
 *    stays readable), and copies into the first valid one.  One copy,
 *    whatever the number of snapshots.  The copy is committed (data, flush,
 *    metadata, flush) before the chunk changes.  A snapshot being removed
 *    ("leaving") takes the copy too but does not stop the walk, so that
 *    until the catalogue forgets it, both it and those below stay exact.
 *  - A store that fails (full, I/O error) forgets its uncommitted copies;
 *    the walk then copies into the next valid snapshot below, and copies
 *    that waited for a group commit are made again from the image, which
 *    still holds the old chunks until that commit.
 *  - Readers take the read lock, writers the write lock: a reader never sees
 *    an origin chunk between "no exception yet" and its copy.
 *  - A restore of snapshot M writes M's content onto the origin where it
 *    may differ: the chunks any store from M to the newest holds (the todo
 *    list, sorted), a step (16 MiB) at a time: the origin's chunks go to
 *    the newer snapshots that need them (the walk from the newest; one
 *    group commit for the step), then M's content, read through the chain
 *    as any snapshot read, is written onto the origin, which is flushed.
 *    No store loses anything and M's content does not change (no copy goes
 *    to M or below it: the walk stops at M at the latest), so every
 *    snapshot stays exact, and a crash resumes by doing it all again: a
 *    chunk the newest holds is not copied twice, and the origin takes the
 *    same bytes.  Then, if M has newer snapshots, the older ones take what
 *    they read through M (as a removal gives them) and M becomes the
 *    newest: exact there, since the origin is its content and the newer
 *    ones hold the origin's old chunks wherever M's store holds one.  The
 *    caller records that order (COWVOL_MERGE_NEWEST) before M's store
 *    empties from its end, each clear durable: the newest, M reads the
 *    origin where it no longer holds a chunk, the same bytes.  A restore
 *    begun by an older cowvold (merge_begin_at(.., true)) consumed M's
 *    store from the end instead, as the kernel's snapshot-merge, and
 *    resumes so: copy the origin chunks into the other snapshots that need
 *    them, M's chunks into the older ones, commit, copy M's chunks onto
 *    the origin, flush, then clear the entries.
 *    While either runs, volume reads come from M, and writes are refused
 *    (-EBUSY).
 *  - Group commit: the copies a write makes are added as pending exceptions
 *    and the new origin data waits in memory (the "deferred" chunks, which
 *    reads are served from) until a commit: on flush, on snapshot changes,
 *    or when a group (16 MiB) waits (the pipeline below).  A commit makes
 *    every store durable (data, flush, metadata, flush) and only then
 *    writes the deferred chunks to the image.  So the order above holds, and a write costs two flushes per
 *    commit, not per request.
 *  - The pipeline: when 16 MiB wait (a group), the writer seals them (each
 *    store's pending exceptions become a batch, the waiting chunks move to
 *    the sealed table) and a thread of the volume, the committer, makes
 *    the batches durable and then writes the sealed chunks to the image,
 *    while the writer goes on copying into fresh store chunks and gathers
 *    the next group.  One group at a time is sealed: the next waits for
 *    it, and so does every other commit, a flush, a write into a snapshot
 *    and a snapshot change (pipeline_wait), so at most two groups wait in
 *    memory (32 MiB).  A sealed chunk is read from memory and never written
 *    to in place: a write takes it into the open group.  If a batch fails,
 *    the committer writes nothing to the image and the whole group goes
 *    back to the open one (lost copies are made again, as below, before
 *    anything reads or writes the chain: settle_lost); chunks the image
 *    refused go back too.  A store invalidated by the writer while its
 *    batch is in flight keeps that batch's copies if the batch lands: its
 *    table, read as a link, holds them.  As with a disk's write cache, a
 *    write is durable once a flush returns.  Chunks the image refuses at a commit
 *    (an I/O error) keep waiting, and are read from memory, until a commit
 *    writes them; while they do, no write copies more (-EIO).
 *  - A snapshot whose store cannot take a copy (full, I/O error, or no
 *    room left on the filesystem under a store file that grew past its
 *    preallocation) is invalidated (header valid=0, as the kernel does),
 *    with that reason; the origin write goes on: the volume is never
 *    harmed by a snapshot.
 *  - A full filesystem under the image refuses the origin write that
 *    needs new blocks with -ENOSPC, before anything is copied: the image's
 *    blocks are allocated first (image_reserve), since copied chunks reach
 *    the image only at the next commit.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "internal.h"

struct cowvol_snapshot {
        cowvol_store *store;
        char *path;
        char reason[128];
        /* bytes: the volume's when taken.  Older snapshots are never
         * larger than newer ones (a volume grows, never shrinks under
         * snapshots; a restored one grows to the volume's as it becomes
         * the newest), so a chunk past a snapshot's end is past every
         * older one's: no copy goes there, and the chain's rule holds
         * below it. */
        uint64_t size;
        struct cowvol_snapshot *next; /* older */
        struct cowvol_snapshot *prev; /* newer */
        bool leaving;                 /* being removed: unchained, not yet forgotten */
};

struct cowvol_volume {
        pthread_rwlock_t lock;
        int fd;
        uint64_t size;
        uint32_t chunk;
        unsigned threshold, percent;
        cowvol_event_fn event_fn;
        void *event_ud;
        struct cowvol_snapshot *snaps;
        struct cowvol_snapshot *merging;
        uint64_t merge_total;
        /* origin writes refused (-ENOLINK): a lost store would leave the
         * older snapshots without their copies; a new newest ends it */
        bool origin_held;
        /* the restore: M's store consumed from its end (a restore begun so
         * by an older cowvold), or the todo list, sorted, done up to
         * todo_at */
        bool consume;
        bool merge_done;
        uint64_t *todo;
        size_t n_todo, todo_at;
        bool lost;       /* a store failed and forgot copies: make them again */
        uint8_t *buf; /* one chunk, used under the write lock */

        /* origin chunks written since the last commit whose copies are not
         * committed yet: they wait here (and are read from here) until the
         * exceptions are durable, then go to the image */
        struct deferred **dtab;
        size_t n_deferred;
        uint8_t *big;       /* a request's worth of old chunks */
        size_t big_chunks;
        bool *copied;
        bool *need;
        bool *here;

        /* the pipeline: the group sealed and in the committer's hands.
         * stab and n_sealed change under the write lock only; n_deferred
         * counts both tables.  job, and a group's ready, are protected by
         * pipe_lock.  Lock order: v->lock, then pipe_lock; the committer
         * takes pipe_lock only. */
        struct deferred **stab;
        size_t n_sealed;
        struct group *inflight;
        pthread_mutex_t pipe_lock;
        pthread_cond_t pipe_cond;
        struct group *job;
        bool stop;
        bool committer_on;
        pthread_t committer;
};

/* A sealed group: a batch per store that had pending exceptions, and the
 * chunks that go to the image once they are all durable.  The committer
 * owns it from the hand-over until ready; nobody changes it meanwhile. */
struct group {
        struct exstore_batch **b;
        struct cowvol_snapshot **bsn;
        int *br;             /* each batch's result */
        size_t nb;
        struct deferred **list;
        size_t n, done;      /* how many of the sorted list reached the image */
        int r_image;
        bool ready;
};

struct deferred {
        uint64_t chunk;
        struct deferred *next;
        uint8_t data[];
};

#define DTAB_SIZE 4096u
/* how much may wait in memory: a group sealed and one gathering */
#define DEFER_MAX_BYTES (32u << 20)
#define GROUP_BYTES (DEFER_MAX_BYTES / 2)
uint64_t engine_group_bytes = GROUP_BYTES;

_public_ int cowvol_volume_open(const char *path, uint32_t chunk_bytes, cowvol_volume **ret)
{
        cowvol_volume *v;
        struct stat st;
        char why[256];
        int fd, r;

        if (!path || !ret)
                return -EINVAL;
        if (!cowvol_chunk_size_valid(chunk_bytes))
                return log_err(-EINVAL, "Chunk size %" PRIu32 " is not a power of two from 4 KiB to 512 KiB",
                               chunk_bytes);
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return log_err(-errno, "Cannot open the image: %m");
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return log_err(-EINVAL, "Not a regular file: the userspace engine serves image files");
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                close(fd);
                return log_err(-EBUSY, "The image is in use by another process (another cowvold, or a program "
                               "of libcowvol)");
        }
        /* and QEMU's locks, so that no qemu-io, qemu-nbd or VM writes the
         * origin behind the snapshots, and none that holds it is joined */
        r = cowvol_image_lock(fd, why, sizeof(why));
        if (r < 0) {
                close(fd);
                return log_err(r, "The image is held: %s", why);
        }
        v = calloc(1, sizeof(*v));
        if (!v || !(v->buf = malloc(chunk_bytes)) || !(v->dtab = calloc(DTAB_SIZE, sizeof(*v->dtab)))) {
                if (v) {
                        free(v->buf);
                        free(v);
                }
                close(fd);
                return -ENOMEM;
        }
        r = pthread_rwlock_init(&v->lock, NULL);
        if (!r && (r = pthread_mutex_init(&v->pipe_lock, NULL)) != 0)
                pthread_rwlock_destroy(&v->lock);
        if (!r && (r = pthread_cond_init(&v->pipe_cond, NULL)) != 0) {
                pthread_mutex_destroy(&v->pipe_lock);
                pthread_rwlock_destroy(&v->lock);
        }
        if (r) {
                free(v->buf);
                free(v->dtab);
                free(v);
                close(fd);
                return -r;
        }
        v->fd = fd;
        v->size = (uint64_t)st.st_size;
        v->chunk = chunk_bytes;
        v->threshold = 70;
        v->percent = 20;
        *ret = v;
        return 0;
}

static int commit_deferred(cowvol_volume *v);
static size_t deferred_drop(cowvol_volume *v);
static int recopy_deferred(cowvol_volume *v);
static int settle_lost(cowvol_volume *v);
static int pipeline_wait(cowvol_volume *v);
static void committer_stop(cowvol_volume *v);

static void snap_free(struct cowvol_snapshot *sn)
{
        if (!sn)
                return;
        cowvol_store_close(sn->store);
        free(sn->path);
        free(sn);
}

_public_ cowvol_volume *cowvol_volume_close(cowvol_volume *v)
{
        if (!v)
                return NULL;
        (void)cowvol_volume_flush(v);
        committer_stop(v);
        if (v->n_deferred)
                log_err(-EIO, "Closing the volume: %zu chunks written since the last successful flush never "
                              "reached the image", deferred_drop(v));
        while (v->snaps) {
                struct cowvol_snapshot *n = v->snaps->next;
                snap_free(v->snaps);
                v->snaps = n;
        }
        pthread_rwlock_destroy(&v->lock);
        pthread_cond_destroy(&v->pipe_cond);
        pthread_mutex_destroy(&v->pipe_lock);
        close(v->fd);
        free(v->buf);
        free(v->dtab);
        free(v->stab);
        free(v->big);
        free(v->copied);
        free(v->need);
        free(v->here);
        free(v->todo);
        free(v);
        return NULL;
}

_public_ uint64_t cowvol_volume_size(const cowvol_volume *v)
{
        return v->size;
}

static bool snap_attached(const cowvol_volume *v, const struct cowvol_snapshot *sn);

_public_ int cowvol_volume_resize(cowvol_volume *v, uint64_t size)
{
        int r = 0;

        if (!v || size == 0 || size > (uint64_t)INT64_MAX)
                return -EINVAL;
        pthread_rwlock_wrlock(&v->lock);
        if (v->merging)
                r = -EBUSY; /* a restore runs */
        else if (size < v->size && v->snaps)
                r = -EBUSY; /* the snapshots read what would go */
        else if (v->snaps && (size % v->chunk || v->size % v->chunk))
                r = -EINVAL; /* a snapshot's end is a chunk's: no copy holds part of the grown space */
        else if (size != v->size) {
                /* the new space reads zero: a sparse extension; durable
                 * before the caller records the size */
                r = ftruncate(v->fd, (off_t)size) < 0 ? -errno : 0;
                if (r == 0)
                        r = sys_fdatasync(v->fd);
                if (r == 0)
                        v->size = size;
                else
                        log_err(r, "Cannot resize the volume to %" PRIu64 " bytes: %m", size);
        }
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ uint64_t cowvol_snapshot_size(cowvol_volume *v, cowvol_snapshot *sn)
{
        uint64_t size;

        pthread_rwlock_rdlock(&v->lock);
        size = sn->size;
        pthread_rwlock_unlock(&v->lock);
        return size;
}

_public_ int cowvol_snapshot_set_size(cowvol_volume *v, cowvol_snapshot *sn, uint64_t size)
{
        int r = 0;

        pthread_rwlock_wrlock(&v->lock);
        if (!snap_attached(v, sn))
                r = -ENOENT;
        else if (size == 0 || size > v->size || (sn->next && sn->next->size > size) ||
                 (sn->prev && sn->prev->size < size))
                r = -EINVAL; /* older ones never larger than newer ones */
        else
                sn->size = size;
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ uint32_t cowvol_volume_chunk_size(const cowvol_volume *v)
{
        return v->chunk;
}

_public_ int cowvol_volume_fstat(const cowvol_volume *v, struct stat *ret)
{
        if (!v || !ret)
                return -EINVAL;
        return fstat(v->fd, ret) < 0 ? -errno : 0;
}

_public_ int cowvol_volume_set_autoextend(cowvol_volume *v, unsigned threshold, unsigned percent)
{
        if (threshold < 50 || threshold > 100 || percent < 1 || percent > 1000)
                return -EINVAL;
        pthread_rwlock_wrlock(&v->lock);
        v->threshold = threshold;
        v->percent = percent;
        pthread_rwlock_unlock(&v->lock);
        return 0;
}

_public_ void cowvol_volume_set_event_callback(cowvol_volume *v, cowvol_event_fn fn, void *userdata)
{
        v->event_fn = fn;
        v->event_ud = userdata;
}

_printf_(4, 5) static void event(cowvol_volume *v, cowvol_snapshot *sn, enum cowvol_event ev, const char *fmt, ...)
{
        char msg[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (v->event_fn)
                v->event_fn(v, sn, ev, msg, v->event_ud);
}

static void snap_invalidate(cowvol_volume *v, struct cowvol_snapshot *sn, const char *reason)
{
        if (cowvol_store_is_valid(sn->store)) {
                (void)cowvol_store_invalidate(sn->store);
                v->lost = true; /* its uncommitted copies are gone */
        }
        if (!sn->reason[0]) {
                snprintf(sn->reason, sizeof(sn->reason), "%s", reason);
                event(v, sn, COWVOL_EVENT_INVALID, "%s", reason);
        }
}

/* @sn becomes the newest of the chain; the one before it takes few copies
 * from now on. */
static void link_newest(cowvol_volume *v, struct cowvol_snapshot *sn)
{
        v->origin_held = false; /* the origin's copies have a place again */
        if (v->snaps && cowvol_store_is_valid(v->snaps->store))
                (void)cowvol_store_set_preallocate(v->snaps->store, false);
        sn->prev = NULL;
        sn->next = v->snaps;
        if (v->snaps)
                v->snaps->prev = sn;
        v->snaps = sn;
}

static int attach(cowvol_volume *v, cowvol_store *st, const char *path, cowvol_snapshot **ret)
{
        struct cowvol_snapshot *sn;

        if (cowvol_store_chunk_size(st) != v->chunk) {
                cowvol_store_close(st);
                return log_err(-EINVAL, "The store's chunk size (%" PRIu32 ") is not the volume's (%" PRIu32 ")",
                               cowvol_store_chunk_size(st), v->chunk);
        }
        sn = calloc(1, sizeof(*sn));
        if (!sn || !(sn->path = strdup(path))) {
                free(sn);
                cowvol_store_close(st);
                return -ENOMEM;
        }
        sn->store = st;
        sn->size = v->size;
        if (!cowvol_store_is_valid(st))
                snprintf(sn->reason, sizeof(sn->reason), "invalidated (store full or I/O error)");
        link_newest(v, sn);
        *ret = sn;
        return 0;
}

/* Take @sn out of the chain (the caller frees it). */
static void unlink_snap(cowvol_volume *v, struct cowvol_snapshot *sn)
{
        if (sn->prev)
                sn->prev->next = sn->next;
        else
                v->snaps = sn->next;
        if (sn->next)
                sn->next->prev = sn->prev;
        /* a new newest takes the origin's copies again */
        if (!sn->prev && v->snaps && cowvol_store_is_valid(v->snaps->store))
                (void)cowvol_store_set_preallocate(v->snaps->store, true);
        sn->next = sn->prev = NULL;
}

_public_ int cowvol_volume_snapshot_create(cowvol_volume *v, const char *store_path, uint64_t store_bytes,
                                           cowvol_snapshot **ret)
{
        cowvol_store *st;
        int r;

        if (!v || !store_path || !ret)
                return -EINVAL;
        pthread_rwlock_wrlock(&v->lock);
        if (v->merging) {
                r = log_err(-EBUSY, "A restore is running on this volume");
                goto out;
        }
        /* the origin's acknowledged writes are on disk before the snapshot
         * begins (an unflushed write must not be half in, half out) */
        r = commit_deferred(v);
        if (r < 0)
                goto out;
        r = sys_fdatasync(v->fd);
        if (r < 0) {
                log_err(r, "Cannot flush the volume: %m");
                goto out;
        }
        r = cowvol_store_create(store_path, v->chunk, store_bytes, COWVOL_STORE_PREALLOCATE, &st);
        if (r < 0)
                goto out;
        r = attach(v, st, store_path, ret);
        if (r < 0)
                unlink(store_path);
out:
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_volume_snapshot_attach(cowvol_volume *v, const char *store_path, cowvol_snapshot **ret)
{
        cowvol_store *st;
        int r;

        if (!v || !store_path || !ret)
                return -EINVAL;
        /* an invalid store's table is read too: older snapshots read
         * through it */
        r = cowvol_store_open(store_path, COWVOL_STORE_PREALLOCATE | COWVOL_STORE_LINK, &st);
        if (r < 0)
                return r;
        pthread_rwlock_wrlock(&v->lock);
        r = attach(v, st, store_path, ret);
        pthread_rwlock_unlock(&v->lock);
        return r;
}

static int unchain_locked(cowvol_volume *v, struct cowvol_snapshot *sn);
static bool snap_attached(const cowvol_volume *v, const struct cowvol_snapshot *sn);

_public_ int cowvol_volume_snapshot_unchain(cowvol_volume *v, cowvol_snapshot *sn)
{
        int r;

        if (!v || !sn)
                return -EINVAL;
        pthread_rwlock_wrlock(&v->lock);
        r = snap_attached(v, sn) ? unchain_locked(v, sn) : -ENOENT;
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_volume_snapshot_rechain(cowvol_volume *v, cowvol_snapshot *sn)
{
        int r = -ENOENT;

        if (!v || !sn)
                return -EINVAL;
        pthread_rwlock_wrlock(&v->lock);
        if (snap_attached(v, sn)) {
                sn->leaving = false;
                r = 0;
        }
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ void cowvol_volume_hold_origin(cowvol_volume *v, bool hold)
{
        pthread_rwlock_wrlock(&v->lock);
        v->origin_held = hold;
        pthread_rwlock_unlock(&v->lock);
}

_public_ int cowvol_volume_snapshot_detach(cowvol_volume *v, cowvol_snapshot *sn)
{
        int r;

        pthread_rwlock_wrlock(&v->lock);
        if (!snap_attached(v, sn)) {
                r = -ENOENT;
                goto out;
        }
        if (v->merging == sn) {
                r = -EBUSY;
                goto out;
        }
        /* the older snapshots keep what they read through it */
        r = unchain_locked(v, sn);
        if (r < 0)
                goto out;
        unlink_snap(v, sn);
        if (cowvol_store_is_valid(sn->store))
                (void)cowvol_store_sync(sn->store);
        snap_free(sn);
out:
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_snapshot_info(cowvol_volume *v, cowvol_snapshot *sn, struct cowvol_snapshot_info *ret)
{
        pthread_rwlock_rdlock(&v->lock);
        memset(ret, 0, sizeof(*ret));
        ret->valid = cowvol_store_is_valid(sn->store);
        snprintf(ret->reason, sizeof(ret->reason), "%s", ret->valid ? "" : sn->reason);
        ret->exceptions = ret->valid ? cowvol_store_count(sn->store) : 0;
        cowvol_store_usage(sn->store, &ret->usage);
        ret->store_bytes = ret->usage.total_sectors * COWVOL_SECTOR_SIZE;
        pthread_rwlock_unlock(&v->lock);
        return 0;
}

/* --- I/O ------------------------------------------------------------------- */

/* Read origin chunk @c whole; past the end of the volume reads as zeros. */
static int origin_read_chunk(cowvol_volume *v, uint64_t c, uint8_t *buf)
{
        uint64_t off = c * v->chunk;
        size_t n = v->size - off < v->chunk ? (size_t)(v->size - off) : v->chunk;
        int r = pread_full(v->fd, buf, n, off);

        if (r >= 0 && n < v->chunk)
                memset(buf + n, 0, v->chunk - n);
        return r;
}

/* Grow @sn's store before it fills, as LVM's autoextend. */
static void maybe_extend(cowvol_volume *v, struct cowvol_snapshot *sn)
{
        struct cowvol_store_usage u;
        uint64_t size, grown;
        char a[32], b[32];

        cowvol_store_usage(sn->store, &u);
        if (!u.total_sectors || u.allocated_sectors * 100 < u.total_sectors * v->threshold)
                return;
        size = u.total_sectors * COWVOL_SECTOR_SIZE;
        if (v->threshold >= 100) {
                return;
        }
        grown = size + (size * v->percent + 99) / 100;
        grown = (grown + v->chunk - 1) / v->chunk * v->chunk;
        if (cowvol_store_grow(sn->store, grown) == 0)
                event(v, sn, COWVOL_EVENT_EXTENDED, "store grew from %s to %s (use passed %u%%)",
                      cowvol_format_size(size, a, sizeof(a)), cowvol_format_size(grown, b, sizeof(b)),
                      v->threshold);
        else if (u.allocated_sectors * 100 >= u.total_sectors * 80)
                event(v, sn, COWVOL_EVENT_WARNING, "store is %.0f%% full and cannot grow",
                      100.0 * (double)u.allocated_sectors / (double)u.total_sectors);
}

static void commit_all(cowvol_volume *v)
{
        /* a store's commits run in order: the sealed group's first (its
         * failures come back as lost copies, its refused chunks wait on) */
        (void)pipeline_wait(v);
        for (struct cowvol_snapshot *sn = v->snaps; sn; sn = sn->next)
                if (cowvol_store_is_valid(sn->store) && cowvol_store_commit(sn->store) < 0) {
                        v->lost = true; /* the failed commit forgot its copies */
                        snap_invalidate(v, sn, "I/O error committing exceptions");
                }
}

/* The snapshot from @sn up the chain (newer) whose store holds chunk @c,
 * with its store chunk in *ret_new; NULL: none does, @sn reads the origin. */
static struct cowvol_snapshot *holder(struct cowvol_snapshot *sn, uint64_t c, uint64_t *ret_new)
{
        for (; sn; sn = sn->prev)
                if (cowvol_store_lookup(sn->store, c, ret_new) == 1)
                        return sn;
        return NULL;
}

/* The chunks @sn covers (whole or in part). */
static uint64_t snap_chunks(const cowvol_volume *v, const struct cowvol_snapshot *sn)
{
        return (sn->size + v->chunk - 1) / v->chunk;
}

static int check_range(const cowvol_volume *v, const struct cowvol_snapshot *sn, size_t len, uint64_t off)
{
        uint64_t size = sn ? sn->size : v->size;

        if (off > size || len > size - off)
                return -EINVAL;
        return 0;
}

static bool snap_attached(const cowvol_volume *v, const struct cowvol_snapshot *sn)
{
        for (const struct cowvol_snapshot *p = v->snaps; p; p = p->next)
                if (p == sn)
                        return true;
        return false;
}

/* May the volume (@sn NULL) or snapshot @sn change now?  Lock held. */
static int change_allowed(const cowvol_volume *v, const struct cowvol_snapshot *sn)
{
        if (!sn && v->origin_held)
                return -ENOLINK;
        if (sn && !snap_attached(v, sn))
                return -ENOENT;
        if (v->merging)
                return -EBUSY; /* a restore runs */
        if (sn && !cowvol_store_is_valid(sn->store))
                return -ESTALE;
        if (sn && sn->leaving)
                return -EBUSY; /* being removed */
        return 0;
}

/* --- deferred origin chunks ----------------------------------------------- */

static struct deferred *table_find(struct deferred **tab, uint64_t c)
{
        for (struct deferred *d = tab[c % DTAB_SIZE]; d; d = d->next)
                if (d->chunk == c)
                        return d;
        return NULL;
}

/* The newest data of chunk @c waiting in memory: the open group's, else
 * the sealed group's (read only). */
static struct deferred *deferred_find(const cowvol_volume *v, uint64_t c)
{
        struct deferred *d = table_find(v->dtab, c);

        return d || !v->n_sealed ? d : table_find(v->stab, c);
}

static struct deferred *deferred_add(cowvol_volume *v, uint64_t c, const uint8_t *old)
{
        struct deferred *d = malloc(sizeof(*d) + v->chunk);

        if (!d)
                return NULL;
        d->chunk = c;
        memcpy(d->data, old, v->chunk);
        d->next = v->dtab[c % DTAB_SIZE];
        v->dtab[c % DTAB_SIZE] = d;
        v->n_deferred++;
        return d;
}

/* As much waits as may: time for a commit. */
static bool deferred_full(const cowvol_volume *v)
{
        return v->n_deferred * v->chunk >= DEFER_MAX_BYTES;
}

/* The open group holds a group's worth: time to seal it. */
static bool group_full(const cowvol_volume *v)
{
        return (v->n_deferred - v->n_sealed) * v->chunk >= engine_group_bytes;
}

/* The open group's entry for chunk @c, to write into: a sealed chunk is
 * taken into the open group (the committer writes the sealed data, then a
 * later commit this).  *ret NULL: none waits. */
static int deferred_open(cowvol_volume *v, uint64_t c, struct deferred **ret)
{
        struct deferred *d = table_find(v->dtab, c), *sd;

        if (!d && v->n_sealed && (sd = table_find(v->stab, c)) && !(d = deferred_add(v, c, sd->data)))
                return -ENOMEM;
        *ret = d;
        return 0;
}

/* Free what waits still (a volume closed after a failed commit). */
static size_t deferred_drop(cowvol_volume *v)
{
        size_t n = v->n_deferred;

        for (size_t i = 0; i < DTAB_SIZE; i++)
                while (v->dtab[i]) {
                        struct deferred *d = v->dtab[i];
                        v->dtab[i] = d->next;
                        free(d);
                }
        v->n_deferred = 0;
        return n;
}

static int cmp_deferred(const void *a, const void *b)
{
        uint64_t x = (*(struct deferred *const *)a)->chunk, y = (*(struct deferred *const *)b)->chunk;

        return x < y ? -1 : x > y;
}

/* Write runs of consecutive deferred chunks with one pwritev each;
 * *ret_done: how many of the sorted @list reached the image.  Touches only
 * the image and @list: the committer calls it without the lock. */
static int write_deferred(cowvol_volume *v, struct deferred **list, size_t n, size_t *ret_done)
{
        struct iovec iov[IOV_MAX];
        size_t i = 0;
        int r = 0;

        qsort(list, n, sizeof(*list), cmp_deferred);
        while (i < n) {
                uint64_t off = list[i]->chunk * v->chunk, len = 0;
                size_t k = 0;

                while (i + k < n && k < IOV_MAX && list[i + k]->chunk == list[i]->chunk + k) {
                        uint64_t co = list[i + k]->chunk * v->chunk;
                        size_t cl = v->size - co < v->chunk ? (size_t)(v->size - co) : v->chunk;
                        iov[k] = (struct iovec){ list[i + k]->data, cl };
                        len += cl;
                        k++;
                }
                r = pwritev_full(v->fd, iov, (int)k, off);
                if (r < 0)
                        break; /* the caller says where (the committer does not log) */
                /* the next flush must write these: start now, if the run is long */
                if (len >= COWVOL_WRITEBACK_MIN)
                        (void)sync_file_range(v->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
                i += k;
        }
        *ret_done = i;
        return r;
}

/* The group commit: every store durable, then the waiting origin chunks go
 * to the image.  Chunks the image refused (an I/O error) keep waiting: reads
 * still see them, and the next commit tries again.  Write lock held. */
static int commit_deferred(cowvol_volume *v)
{
        struct deferred **list;
        size_t n = 0, done;
        int r;

        commit_all(v); /* the sealed group's first */
        r = settle_lost(v);
        if (r < 0)
                return r;
        if (!v->n_deferred)
                return 0;
        list = malloc(v->n_deferred * sizeof(*list));
        if (!list)
                return -ENOMEM;
        for (size_t i = 0; i < DTAB_SIZE; i++)
                for (struct deferred *d = v->dtab[i]; d; d = d->next)
                        list[n++] = d;
        r = write_deferred(v, list, n, &done);
        if (r < 0)
                log_err(r, "Cannot write the volume at %" PRIu64 ": %m", list[done]->chunk * v->chunk);
        memset(v->dtab, 0, DTAB_SIZE * sizeof(*v->dtab));
        v->n_deferred = 0;
        for (size_t i = 0; i < n; i++) {
                struct deferred *d = list[i];
                if (i < done) {
                        free(d);
                        continue;
                }
                d->next = v->dtab[d->chunk % DTAB_SIZE];
                v->dtab[d->chunk % DTAB_SIZE] = d;
                v->n_deferred++;
        }
        free(list);
        return r;
}

/* --- the pipeline: group commits on the committer thread ------------------- */

static void group_free(struct group *g)
{
        free(g->b);
        free(g->bsn);
        free(g->br);
        free(g->list);
        free(g);
}

/* The committer: each batch durable, then (all of them were) the sealed
 * chunks to the image.  No lock but pipe_lock: the group is its own, the
 * stores' batches touch only their I/O layer, the image only its chunks. */
static void *committer_main(void *ud)
{
        cowvol_volume *v = ud;

        pthread_mutex_lock(&v->pipe_lock);
        for (;;) {
                struct group *g;
                bool ok = true;

                while (!v->job && !v->stop)
                        pthread_cond_wait(&v->pipe_cond, &v->pipe_lock);
                if (!v->job)
                        break;
                g = v->job;
                v->job = NULL;
                pthread_mutex_unlock(&v->pipe_lock);
                for (size_t i = 0; i < g->nb; i++) {
                        g->br[i] = exstore_commit_write(g->b[i]);
                        ok = ok && g->br[i] >= 0;
                }
                if (ok)
                        g->r_image = write_deferred(v, g->list, g->n, &g->done);
                pthread_mutex_lock(&v->pipe_lock);
                g->ready = true;
                pthread_cond_broadcast(&v->pipe_cond);
        }
        pthread_mutex_unlock(&v->pipe_lock);
        return NULL;
}

static void committer_stop(cowvol_volume *v)
{
        if (!v->committer_on)
                return;
        pthread_mutex_lock(&v->pipe_lock);
        v->stop = true;
        pthread_cond_broadcast(&v->pipe_cond);
        pthread_mutex_unlock(&v->pipe_lock);
        pthread_join(v->committer, NULL);
        v->committer_on = false;
}

/* Wait for the sealed group and take its outcome: batches installed, or
 * failed ones' stores invalidated (their copies lost: v->lost); chunks on
 * the image freed, the others back to the open group unless it has newer
 * data for them.  0, or the first error.  Write lock held. */
static int pipeline_wait(cowvol_volume *v)
{
        struct group *g = v->inflight;
        int r = 0;

        if (!g)
                return 0;
        pthread_mutex_lock(&v->pipe_lock);
        while (!g->ready)
                pthread_cond_wait(&v->pipe_cond, &v->pipe_lock);
        pthread_mutex_unlock(&v->pipe_lock);
        for (size_t i = 0; i < g->nb; i++)
                if (exstore_commit_finish(g->b[i], g->br[i], false) < 0) {
                        v->lost = true; /* the failed commit forgot its copies */
                        snap_invalidate(v, g->bsn[i], "I/O error committing exceptions");
                        r = r < 0 ? r : g->br[i];
                }
        if (g->r_image < 0) {
                log_err(g->r_image, "Cannot write the volume at %" PRIu64 ": %m", g->list[g->done]->chunk * v->chunk);
                r = r < 0 ? r : g->r_image;
        }
        memset(v->stab, 0, DTAB_SIZE * sizeof(*v->stab));
        v->n_sealed = 0;
        for (size_t i = 0; i < g->n; i++) {
                struct deferred *d = g->list[i];
                if (i < g->done || table_find(v->dtab, d->chunk)) {
                        free(d);
                        v->n_deferred--;
                        continue;
                }
                d->next = v->dtab[d->chunk % DTAB_SIZE];
                v->dtab[d->chunk % DTAB_SIZE] = d;
        }
        group_free(g);
        v->inflight = NULL;
        return r;
}

/* Seal the open group and hand it to the committer; where that cannot be
 * (a failure to take back, no memory, no thread), commit it here.  Write
 * lock held. */
static int group_start(cowvol_volume *v)
{
        struct group *g;
        size_t ns = 0, n = 0;
        int r;

        r = pipeline_wait(v);
        if (r < 0 || v->lost || !v->snaps)
                return commit_deferred(v);
        for (struct cowvol_snapshot *sn = v->snaps; sn; sn = sn->next)
                ns++;
        g = calloc(1, sizeof(*g));
        if (!g || !(g->b = calloc(ns, sizeof(*g->b))) || !(g->bsn = calloc(ns, sizeof(*g->bsn))) ||
            !(g->br = calloc(ns, sizeof(*g->br))) || !(g->list = malloc(v->n_deferred * sizeof(*g->list))) ||
            (!v->stab && !(v->stab = calloc(DTAB_SIZE, sizeof(*v->stab))))) {
                if (g)
                        group_free(g);
                return commit_deferred(v);
        }
        if (!v->committer_on) {
                v->stop = false;
                r = -pthread_create(&v->committer, NULL, committer_main, v);
                if (r < 0) {
                        group_free(g);
                        return commit_deferred(v);
                }
                v->committer_on = true;
        }
        for (struct cowvol_snapshot *sn = v->snaps; sn; sn = sn->next) {
                if (!cowvol_store_is_valid(sn->store))
                        continue;
                r = exstore_commit_seal(sn->store, &g->b[g->nb]);
                if (r > 0)
                        g->bsn[g->nb++] = sn;
                else if (r < 0) {
                        v->lost = true;
                        snap_invalidate(v, sn, "I/O error committing exceptions");
                }
        }
        if (v->lost) {
                /* a store forgot copies: no image write before they are
                 * made again; the sealed batches commit here, in order */
                for (size_t i = 0; i < g->nb; i++)
                        if (exstore_commit_finish(g->b[i], exstore_commit_write(g->b[i]), false) < 0)
                                snap_invalidate(v, g->bsn[i], "I/O error committing exceptions");
                group_free(g);
                return commit_deferred(v);
        }
        /* the open table becomes the sealed one */
        for (size_t i = 0; i < DTAB_SIZE; i++)
                for (struct deferred *d = v->dtab[i]; d; d = d->next)
                        g->list[n++] = d;
        g->n = n;
        {
                struct deferred **t = v->stab;
                v->stab = v->dtab;
                v->dtab = t;
        }
        v->n_sealed = n;
        v->inflight = g;
        pthread_mutex_lock(&v->pipe_lock);
        v->job = g;
        pthread_cond_broadcast(&v->pipe_cond);
        pthread_mutex_unlock(&v->pipe_lock);
        return 0;
}

/* --- reads ---------------------------------------------------------------------- */

/* A read goes a window of chunks at a time: the sources of the whole
 * window are looked up with one range lookup a store, then read. */
#define READ_WINDOW 256u
/* the image is read around store chunks (into a scratch buffer) rather than
 * split, for gaps of up to so many bytes: a few chunks more cost less than
 * another request, and the kernel's readahead sees one sequential reader */
#define READ_GAP_BYTES (64u << 10)
/* a store's chunks that a read misses in the page cache are read ahead
 * together with what lies between them and around them, as far as a
 * quarter of the read's length and at most so many bytes: a long read of a
 * snapshot (a backup) soon needs the rest of a store's chunks, a short one
 * (random I/O) reads no more than it needs */
#define READ_AROUND_BYTES (256u << 10)

struct read_run {
        struct cowvol_snapshot *from;
        uint64_t nw;      /* first store chunk */
        uint8_t *dst;
        size_t len, done; /* bytes; done: read already */
        uint32_t in;      /* offset in the first store chunk */
};

static int cmp_run(const void *a, const void *b)
{
        const struct read_run *x = *(struct read_run *const *)a, *y = *(struct read_run *const *)b;

        if (x->from != y->from)
                return (uintptr_t)x->from < (uintptr_t)y->from ? -1 : 1;
        return x->nw < y->nw ? -1 : x->nw > y->nw;
}

/* The runs the page cache lacks, read ahead a store at a time, with what
 * lies between them when that is short: one larger request costs less
 * than many small ones, and a store's chunks are often read soon after. */
static void read_ahead_runs(cowvol_volume *v, struct read_run *runs, size_t n_runs, size_t read_len)
{
        struct read_run *miss[READ_WINDOW];
        uint64_t around = (read_len / 4 < READ_AROUND_BYTES ? read_len / 4 : READ_AROUND_BYTES) / v->chunk;
        uint64_t first = 0, last = 0;
        size_t n = 0;

        for (size_t u = 0; u < n_runs; u++)
                if (runs[u].done < runs[u].len)
                        miss[n++] = &runs[u];
        if (n > 1)
                qsort(miss, n, sizeof(*miss), cmp_run);
        for (size_t u = 0; u < n; u++) {
                uint64_t a = miss[u]->nw + (miss[u]->in + miss[u]->done) / v->chunk,
                         b = miss[u]->nw + (miss[u]->in + miss[u]->len - 1) / v->chunk;
                if (u && miss[u]->from == miss[u - 1]->from && a <= last + 1 + around) {
                        last = b > last ? b : last;
                        continue;
                }
                if (u)
                        exstore_readahead(miss[u - 1]->from->store, first, last - first + 1 + around);
                first = a > around ? a - around : 0;
                last = b;
        }
        if (n)
                exstore_readahead(miss[n - 1]->from->store, first, last - first + 1 + around);
}

/* Where chunks [c0, c0+n), n <= READ_WINDOW, come from for @top (and with
 * @chain, the newer ones): from[i] and its store chunk nw[i], or NULL (the
 * image or the deferred chunks).  Returns how many are NULL. */
static size_t resolve_window(struct cowvol_snapshot *top, bool chain, uint64_t c0, size_t n, uint64_t *nw,
                             struct cowvol_snapshot **from)
{
        size_t left = n;

        memset(nw, 0, n * sizeof(*nw));
        memset(from, 0, n * sizeof(*from));
        for (struct cowvol_snapshot *t = top; t && left; t = chain ? t->prev : NULL) {
                size_t k = exstore_lookup_range(t->store, c0, n, nw);
                if (!k)
                        continue;
                for (size_t i = 0; i < n; i++)
                        if (nw[i] && !from[i])
                                from[i] = t;
                left -= k;
        }
        return left;
}

/* Start reading chunks [first, first+n) as @top (with @chain) shows them
 * into the page cache, without waiting: a restore prefetches a whole step
 * before it reads it run after run. */
static void prefetch_view(cowvol_volume *v, struct cowvol_snapshot *top, bool chain, uint64_t first, uint64_t n)
{
        uint64_t nw[READ_WINDOW], end = first + n;
        struct cowvol_snapshot *from[READ_WINDOW];

        for (uint64_t c0 = first; c0 < end; c0 += READ_WINDOW) {
                size_t w = end - c0 < READ_WINDOW ? (size_t)(end - c0) : READ_WINDOW, i, j;

                resolve_window(top, chain, c0, w, nw, from);
                for (i = 0; i < w; i = j) {
                        for (j = i + 1; j < w && from[j] == from[i] && (!from[i] || nw[j] == nw[i] + (j - i)); j++)
                                ;
                        if (from[i])
                                exstore_readahead(from[i]->store, nw[i], j - i);
                        else if ((c0 + i) * v->chunk < v->size)
                                (void)posix_fadvise(v->fd, (off_t)((c0 + i) * v->chunk), (off_t)((j - i) * v->chunk),
                                                    POSIX_FADV_WILLNEED);
                }
        }
}

/* Read [off, off+len), at most READ_WINDOW chunks, through @top and, with
 * @chain, the snapshots newer than it (@top NULL: the image).  Each chunk
 * comes from the first of them whose store holds it, else from the deferred
 * chunks, else from the image.  Cold chunks are fetched in parallel: every
 * store run is first read from the page cache without waiting (which starts
 * the disk on what is missing), then the image is read, then what the
 * stores still owe, then the deferred chunks go over the image's. */
static int read_window(cowvol_volume *v, struct cowvol_snapshot *top, bool chain, uint8_t *buf, size_t len,
                       uint64_t off, size_t read_len, uint8_t **scratch)
{
        uint64_t c0 = off / v->chunk, end = off + len, nw[READ_WINDOW];
        size_t n = (size_t)((end - 1) / v->chunk - c0 + 1), left, i, j, n_runs = 0;
        size_t max_gap = READ_GAP_BYTES / v->chunk;
        bool dense;
        struct cowvol_snapshot *from[READ_WINDOW];
        struct read_run runs[READ_WINDOW];
        struct iovec iov[READ_WINDOW];
        ssize_t got;
        int r;

        left = resolve_window(top, chain, c0, n, nw, from);
/* chunk @i's bytes in the window */
#define LO(i) ((c0 + (i)) * v->chunk > off ? (c0 + (i)) * v->chunk : off)
#define HI(i) ((c0 + (i) + 1) * v->chunk < end ? (c0 + (i) + 1) * v->chunk : end)
        /* the stores' runs of consecutive store chunks, from the cache */
        for (i = 0; left < n && i < n;) {
                struct read_run *u = &runs[n_runs];
                if (!from[i]) {
                        i++;
                        continue;
                }
                for (j = i + 1; j < n && from[j] == from[i] && nw[j] == nw[i] + (j - i); j++)
                        ;
                *u = (struct read_run){ .from = from[i], .nw = nw[i], .dst = buf + (LO(i) - off),
                                        .len = (size_t)(HI(j - 1) - LO(i)),
                                        .in = (uint32_t)(LO(i) - (c0 + i) * v->chunk) };
                got = exstore_pread_cached(u->from->store, u->nw, u->dst, u->len, u->in);
                if (got < 0)
                        return (int)got;
                u->done = (size_t)got;
                n_runs++;
                i = j;
        }
        read_ahead_runs(v, runs, n_runs, read_len);
        /* the image: runs, read around short gaps; where it gives much of
         * the window, the whole window (a read that skips pages would miss
         * the marks that start the kernel's readahead ahead of it) */
        dense = left * 8 >= n;
        for (i = 0; left && i < n;) {
                int k = 0;
                if (from[i] && !dense) {
                        i++;
                        continue;
                }
                for (j = i; j < n;) {
                        size_t g = j;
                        if (!from[j]) {
                                if (k && iov[k - 1].iov_base == buf + (LO(j) - off) - iov[k - 1].iov_len)
                                        iov[k - 1].iov_len += (size_t)(HI(j) - LO(j));
                                else
                                        iov[k++] = (struct iovec){ buf + (LO(j) - off), (size_t)(HI(j) - LO(j)) };
                                j++;
                                continue;
                        }
                        while (g < n && (dense || g - j < max_gap) && from[g])
                                g++;
                        if (!dense && (g == n || from[g]))
                                break;
                        if (!*scratch && !(*scratch = malloc(v->chunk)))
                                return -ENOMEM;
                        for (; j < g; j++)
                                iov[k++] = (struct iovec){ *scratch, (size_t)(HI(j) - LO(j)) };
                }
                r = k == 1 ? pread_full(v->fd, iov[0].iov_base, iov[0].iov_len, LO(i))
                           : preadv_full(v->fd, iov, k, LO(i));
                if (r < 0)
                        return r;
                i = j;
        }
        /* what the stores still owe */
        for (size_t u = 0; u < n_runs; u++) {
                struct read_run *p = &runs[u];
                uint64_t at = p->in + (uint64_t)p->done;
                if (p->done < p->len &&
                    (r = cowvol_store_pread(p->from->store, p->nw + at / v->chunk, p->dst + p->done,
                                            p->len - p->done, (uint32_t)(at % v->chunk))) < 0)
                        return r;
        }
        /* what waits in memory */
        for (i = 0; left && v->n_deferred && i < n; i++) {
                struct deferred *d = from[i] ? NULL : deferred_find(v, c0 + i);
                if (d)
                        memcpy(buf + (LO(i) - off), d->data + (LO(i) - (c0 + i) * v->chunk),
                               (size_t)(HI(i) - LO(i)));
        }
#undef LO
#undef HI
        return 0;
}

/* Read [off, off+len) through @sn (NULL: the origin, as the volume shows it:
 * deferred chunks from memory; while a restore runs, the merging snapshot:
 * through the chain, or, consuming its store, that store alone, since what
 * it gave the origin is no longer in it). */
static int read_locked(cowvol_volume *v, struct cowvol_snapshot *sn, uint8_t *buf, size_t len, uint64_t off)
{
        struct cowvol_snapshot *top = sn ? sn : v->merging;
        bool chain = sn || !v->consume;

        uint8_t *scratch = NULL; /* where the image's reads around store chunks go */
        size_t read_len = len;
        int r = 0;

        if (!top && !v->n_deferred)
                return len ? pread_full(v->fd, buf, len, off) : 0;
        while (len > 0 && r >= 0) {
                uint64_t win = (uint64_t)READ_WINDOW * v->chunk - off % v->chunk;
                size_t n = len < win ? len : (size_t)win;

                r = read_window(v, top, chain, buf, n, off, read_len, &scratch);
                buf += n;
                off += n;
                len -= n;
        }
        free(scratch);
        return r;
}

_public_ int cowvol_volume_pread(cowvol_volume *v, cowvol_snapshot *sn, void *buf, size_t len, uint64_t off)
{
        int r = check_range(v, sn, len, off);

        if (r < 0)
                return r;
        pthread_rwlock_rdlock(&v->lock);
        if (sn && !snap_attached(v, sn))
                r = -ENOENT;
        else if (sn && !cowvol_store_is_valid(sn->store))
                r = -ESTALE;
        else if (!sn && v->merging && off + len > v->merging->size) {
                /* a restore shows the snapshot, up to its end; past it the
                 * volume keeps what it holds (whole chunks: resize) */
                uint64_t end = v->merging->size;
                size_t head = off < end ? (size_t)(end - off) : 0;

                r = head ? read_locked(v, NULL, buf, head, off) : 0;
                if (r >= 0)
                        r = pread_full(v->fd, (uint8_t *)buf + head, len - head, off + head);
        } else
                r = read_locked(v, sn, buf, len, off);
        pthread_rwlock_unlock(&v->lock);
        return r;
}

/* --- origin writes ---------------------------------------------------------------- */

static int ensure_big(cowvol_volume *v, size_t chunks)
{
        if (chunks <= v->big_chunks)
                return 0;
        uint8_t *b = realloc(v->big, chunks * v->chunk);
        if (b)
                v->big = b;
        bool *c = realloc(v->copied, chunks * sizeof(bool));
        if (c)
                v->copied = c;
        bool *nd = realloc(v->need, chunks * sizeof(bool));
        if (nd)
                v->need = nd;
        bool *h = realloc(v->here, chunks * sizeof(bool));
        if (h)
                v->here = h;
        if (!b || !c || !nd || !h)
                return -ENOMEM;
        v->big_chunks = chunks;
        return 0;
}

/* Why a store that could not take a copy is invalidated: a full filesystem
 * under a store file is not a full store, and says so. */
static const char *store_write_reason(int r)
{
        return r == -ENOSPC || r == -EDQUOT ? "no space left on the store's filesystem (it could not grow)"
                                            : "I/O error writing the store";
}

/* Copy the chunks [first, first+n) whose content is in @data into @t where
 * v->need says so and @t lacks them, as pending exceptions: data first,
 * then the exceptions (the commit makes them durable); runs that land at
 * consecutive store chunks are written with one call.  v->here[i] tells
 * which chunks @t took.  A store that cannot take them is invalidated. */
static void copy_into(cowvol_volume *v, struct cowvol_snapshot *t, uint64_t first, size_t n, const uint8_t *data)
{
        uint64_t run_new = 0, nw = 0;
        size_t run_i = 0, run_n = 0;
        int r = 0;

        memset(v->here, 0, n * sizeof(bool));
        for (size_t i = 0; i <= n && r >= 0; i++) {
                bool take = i < n && v->need[i] && cowvol_store_lookup(t->store, first + i, &nw) == 0;

                if (take) {
                        maybe_extend(v, t);
                        r = cowvol_store_allocate(t->store, &nw);
                        if (r == -ENOSPC) {
                                snap_invalidate(v, t, "overflow: the store is full");
                                break;
                        }
                        if (r < 0)
                                break;
                        if (run_n && nw == run_new + run_n && i == run_i + run_n) {
                                run_n++;
                                continue;
                        }
                }
                if (run_n) {
                        r = cowvol_store_write_chunks(t->store, run_new, run_n, data + run_i * v->chunk);
                        for (size_t k = 0; k < run_n && r >= 0; k++) {
                                r = cowvol_store_add(t->store, first + run_i + k, run_new + k);
                                v->here[run_i + k] = r >= 0;
                        }
                }
                run_n = 0;
                if (take) {
                        run_new = nw;
                        run_i = i;
                        run_n = 1;
                }
        }
        if (r < 0 && cowvol_store_is_valid(t->store))
                snap_invalidate(v, t, store_write_reason(r));
}

/* The walk: chunks [first, first+n), whose content as the snapshots from
 * @from down read it now is in @data, are about to change for them; give
 * each chunk to the first of them, newer to older, that would read through
 * the change.  A snapshot whose store holds the chunk ends the walk for it;
 * an invalid one is passed (its table stays readable); a leaving one takes
 * a copy and passes it on.  With @skip_deferred, chunks whose new data
 * waits in memory were given already (an origin write).  v->copied[i]: the
 * chunk went somewhere. */
static void preserve_range(cowvol_volume *v, uint64_t first, size_t n, const uint8_t *data,
                           struct cowvol_snapshot *from, bool skip_deferred)
{
        size_t left = 0;

        for (size_t i = 0; i < n; i++) {
                v->need[i] = !(skip_deferred && deferred_find(v, first + i));
                v->copied[i] = false;
                left += v->need[i];
        }
        for (struct cowvol_snapshot *t = from; t && left; t = t->next) {
                uint64_t nw, end = snap_chunks(v, t);

                for (size_t i = 0; i < n; i++)
                        if (v->need[i] && (first + i >= end || cowvol_store_lookup(t->store, first + i, &nw) == 1)) {
                                v->need[i] = false; /* past its end: past every older one's */
                                left--;
                        }
                if (!left || !cowvol_store_is_valid(t->store))
                        continue;
                copy_into(v, t, first, n, data);
                if (!cowvol_store_is_valid(t->store))
                        continue; /* it forgot them: the next one below takes them */
                for (size_t i = 0; i < n; i++)
                        if (v->here[i]) {
                                v->copied[i] = true;
                                if (!t->leaving) {
                                        v->need[i] = false;
                                        left--;
                                }
                        }
        }
}

/* Allocate the image's blocks under [off, off+len) before a copy-on-write
 * (KEEP_SIZE; blocks there already cost nothing).  The new data of copied
 * chunks waits in memory and reaches the image only at the next commit,
 * after the write was answered: a full filesystem must refuse the write
 * now (-ENOSPC, nothing copied, nothing changed), not fail that commit
 * later and lose data already acknowledged.  A filesystem without
 * fallocate reserves nothing, as before. */
static int image_reserve(cowvol_volume *v, uint64_t off, size_t len)
{
        int r = sys_fallocate(v->fd, FALLOC_FL_KEEP_SIZE, off, len);

        if (r == 0 || r == -EOPNOTSUPP || r == -ENOSYS)
                return 0;
        return log_err(r, "Cannot allocate the volume's blocks at %" PRIu64 ": %m", off);
}

/* Read origin chunks [first, first+n) into v->big (zeros past the end). */
static int origin_read_range(cowvol_volume *v, uint64_t first, size_t n)
{
        uint64_t off = first * v->chunk, want = (uint64_t)n * v->chunk;
        size_t have = v->size - off < want ? (size_t)(v->size - off) : (size_t)want;
        int r = pread_full(v->fd, v->big, have, off);

        if (r >= 0 && have < want)
                memset(v->big + have, 0, (size_t)(want - have));
        return r;
}

/* Does a write of origin chunks [first, first+n) copy anything?  Only the
 * top of the chain is looked at, down to the first valid snapshot. */
static bool any_copy_needed(cowvol_volume *v, uint64_t first, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                uint64_t nw;

                if (v->n_deferred && deferred_find(v, first + i))
                        continue;
                for (struct cowvol_snapshot *t = v->snaps; t; t = t->next) {
                        if (first + i >= snap_chunks(v, t) || cowvol_store_lookup(t->store, first + i, &nw) == 1)
                                break;
                        if (cowvol_store_is_valid(t->store))
                                return true;
                }
        }
        return false;
}

/* A store that failed forgot copies: the others take them (each round
 * fails one more store, at worst) before anything reads through where they
 * were or the image changes.  Write lock held. */
static int settle_lost(cowvol_volume *v)
{
        while (v->lost) {
                int r = recopy_deferred(v);

                if (r < 0)
                        return r;
                commit_all(v);
        }
        return 0;
}

/* A store failed and forgot copies of origin chunks whose new data waits in
 * memory: the image still holds their old content, give it again to the
 * snapshots below.  Write lock held. */
static int recopy_deferred(cowvol_volume *v)
{
        struct deferred **list;
        size_t n = 0;
        int r = 0;

        v->lost = false;
        if (!v->n_deferred || !v->snaps)
                return 0;
        list = malloc(v->n_deferred * sizeof(*list));
        if (!list) {
                v->lost = true; /* still owed: no commit may write the image */
                return -ENOMEM;
        }
        for (size_t i = 0; i < DTAB_SIZE; i++)
                for (struct deferred *d = v->dtab[i]; d; d = d->next)
                        list[n++] = d;
        qsort(list, n, sizeof(*list), cmp_deferred);
        for (size_t i = 0; i < n && r >= 0;) {
                size_t k = 1;

                while (i + k < n && k < 256 && list[i + k]->chunk == list[i]->chunk + k)
                        k++;
                r = ensure_big(v, k);
                if (r >= 0)
                        r = origin_read_range(v, list[i]->chunk, k);
                if (r >= 0)
                        preserve_range(v, list[i]->chunk, k, v->big, v->snaps, false);
                i += k;
        }
        free(list);
        if (r < 0) {
                v->lost = true; /* still owed: no commit may write the image */
                return log_err(r, "Cannot read the volume to copy its chunks again: %m");
        }
        return 0;
}

static int write_origin(cowvol_volume *v, const uint8_t *buf, size_t len, uint64_t off)
{
        uint64_t first = off / v->chunk, last = (off + len - 1) / v->chunk, end = off + len;
        size_t n = (size_t)(last - first + 1);
        uint64_t direct_off = 0;
        size_t direct_len = 0;
        bool did_cow = false;
        int r;

        /* nothing to copy (re-writes): straight to the image, unless some
         * chunk waits in memory */
        if (!any_copy_needed(v, first, n)) {
                if (!v->n_deferred)
                        return pwrite_full(v->fd, buf, len, off);
        } else {
                /* what waits already is as much as may wait: when the image
                 * refuses it, take no more */
                if (deferred_full(v) && (r = commit_deferred(v)) < 0)
                        return r;
                r = ensure_big(v, n);
                if (r < 0)
                        return r;
                r = image_reserve(v, off, len);
                if (r < 0)
                        return r;
                r = origin_read_range(v, first, n);
                if (r < 0)
                        return log_err(r, "Cannot read the volume at %" PRIu64 ": %m", off);
                preserve_range(v, first, n, v->big, v->snaps, true);
                did_cow = true;
        }
        for (size_t i = 0; i < n; i++) {
                uint64_t c = first + i, cs = c * v->chunk;
                uint64_t lo = off > cs ? off : cs, hi = end < cs + v->chunk ? end : cs + v->chunk;
                struct deferred *d;

                r = deferred_open(v, c, &d);
                if (r >= 0 && !d && did_cow && v->copied[i]) {
                        /* copied just now: the new data waits for the commit */
                        d = deferred_add(v, c, v->big + i * v->chunk);
                        if (!d)
                                r = -ENOMEM;
                }
                if (r < 0) {
                        /* out of memory with chunks copied that have no
                         * waiting entry: their copies are made durable now,
                         * so that no later write reaches the image first */
                        if (did_cow)
                                commit_all(v);
                        return r;
                }
                if (d) {
                        if (direct_len) {
                                r = pwrite_full(v->fd, buf + (direct_off - off), direct_len, direct_off);
                                if (r < 0)
                                        return r;
                                direct_len = 0;
                        }
                        memcpy(d->data + (lo - cs), buf + (lo - off), (size_t)(hi - lo));
                } else {
                        if (!direct_len)
                                direct_off = lo;
                        direct_len += (size_t)(hi - lo);
                }
        }
        if (direct_len) {
                r = pwrite_full(v->fd, buf + (direct_off - off), direct_len, direct_off);
                if (r < 0)
                        return r;
        }
        if (v->lost && (r = recopy_deferred(v)) < 0)
                return r;
        if (group_full(v))
                return group_start(v);
        return 0;
}

/* Chunk @c as snapshot @sn shows it, whole, into @buf (zeros past the end). */
static int view_chunk(cowvol_volume *v, struct cowvol_snapshot *sn, uint64_t c, uint8_t *buf)
{
        struct cowvol_snapshot *h = holder(sn, c, &(uint64_t){ 0 });
        struct deferred *d;
        uint64_t nw;

        if (h) {
                (void)cowvol_store_lookup(h->store, c, &nw);
                return cowvol_store_read_chunk(h->store, nw, buf);
        }
        if (v->n_deferred && (d = deferred_find(v, c))) {
                memcpy(buf, d->data, v->chunk);
                return 0;
        }
        return origin_read_chunk(v, c, buf);
}

/* Read @sn's view of chunks [first, first+n) into v->big, and give the
 * snapshots older than @sn what they read through it there, durably, before
 * @sn changes there.  A store that fails on the way forgets copies: they are
 * made again (recopy_deferred, which reads through v->big) and the view read
 * again, since a store that held part of it may have forgotten it.  Write
 * lock held. */
static int preserve_below(cowvol_volume *v, struct cowvol_snapshot *sn, uint64_t first, size_t n)
{
        int r;

        for (;;) {
                r = ensure_big(v, n);
                for (size_t i = 0; i < n && r >= 0; i++)
                        r = view_chunk(v, sn, first + i, v->big + i * v->chunk);
                if (r < 0)
                        return log_err(r, "Cannot read the snapshot's chunks at %" PRIu64 ": %m", first * v->chunk);
                if (!sn->next)
                        return 0; /* the oldest: nobody reads through it */
                preserve_range(v, first, n, v->big, sn->next, false);
                commit_all(v);
                if (!v->lost)
                        return 0;
                r = recopy_deferred(v);
                if (r < 0)
                        return r;
        }
}

/* A write into snapshot @sn: the older snapshots first keep what they read
 * through it, then @sn changes (a chunk it lacks starts as its view). */
static int write_snapshot(cowvol_volume *v, struct cowvol_snapshot *sn, const uint8_t *buf, size_t len, uint64_t off)
{
        uint64_t first = off / v->chunk, last = (off + len - 1) / v->chunk;
        size_t n = (size_t)(last - first + 1);
        bool added = false;
        int r;

        (void)pipeline_wait(v); /* its store commits below, after the sealed batch */
        /* a sealed batch that failed forgot copies: they go to the other
         * snapshots before the view below reads through where they were */
        r = settle_lost(v);
        if (r < 0)
                return r;
        r = preserve_below(v, sn, first, n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++) {
                uint64_t c = first + i, cs = c * v->chunk, nw;
                uint64_t lo = off > cs ? off : cs, hi = off + len < cs + v->chunk ? off + len : cs + v->chunk;
                uint8_t *chunk = v->big + i * v->chunk;

                if (cowvol_store_lookup(sn->store, c, &nw) == 1) {
                        r = cowvol_store_pwrite(sn->store, nw, buf + (lo - off), (size_t)(hi - lo),
                                                (uint32_t)(lo - cs));
                        continue;
                }
                /* a new exception: its view with this write on it */
                maybe_extend(v, sn);
                r = cowvol_store_allocate(sn->store, &nw);
                if (r >= 0) {
                        memcpy(chunk + (lo - cs), buf + (lo - off), (size_t)(hi - lo));
                        r = cowvol_store_write_chunk(sn->store, nw, chunk);
                }
                if (r >= 0)
                        r = cowvol_store_add(sn->store, c, nw);
                added = added || r >= 0;
        }
        if (added) {
                int q = cowvol_store_commit(sn->store);
                if (q < 0) {
                        snap_invalidate(v, sn, "I/O error committing exceptions");
                        if (r >= 0)
                                r = q;
                }
        }
        if (r == -ENOSPC)
                snap_invalidate(v, sn, "overflow: the store is full");
        else if (r < 0)
                snap_invalidate(v, sn, "I/O error writing the store");
        if (v->lost) {
                int q = settle_lost(v); /* nothing reads the chain with copies missing */
                if (r >= 0)
                        r = q;
        }
        return r;
}

_public_ int cowvol_volume_pwrite(cowvol_volume *v, cowvol_snapshot *sn, const void *buf, size_t len, uint64_t off)
{
        int r = check_range(v, sn, len, off);

        if (r < 0)
                return r;
        if (len == 0)
                return 0;
        pthread_rwlock_wrlock(&v->lock);
        r = change_allowed(v, sn);
        if (r == 0)
                r = sn ? write_snapshot(v, sn, buf, len, off) : write_origin(v, buf, len, off);
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_volume_flush(cowvol_volume *v)
{
        int r, r2;

        pthread_rwlock_wrlock(&v->lock);
        r = commit_deferred(v);
        r2 = sys_fdatasync(v->fd);
        if (r2 < 0 && r == 0)
                r = r2;
        for (struct cowvol_snapshot *sn = v->snaps; sn; sn = sn->next)
                if (cowvol_store_is_valid(sn->store) && cowvol_store_sync(sn->store) < 0 && r == 0)
                        r = -EIO;
        pthread_rwlock_unlock(&v->lock);
        return r;
}

/* --- zeroes, discards, allocation ------------------------------------------ */

static bool image_extent(const cowvol_volume *v, uint64_t off, uint64_t end, uint64_t *ret_end);

/* Origin chunk @c may lose its content: no valid snapshot still needs its
 * copy, and no new data waits for it in memory.  Write lock held. */
static bool chunk_free_to_punch(cowvol_volume *v, uint64_t c)
{
        return !deferred_find(v, c) && !any_copy_needed(v, c, 1);
}

/* Deallocate origin chunks [first, first+n) (clipped to the volume's end):
 * afterwards they read as zeroes.  -EOPNOTSUPP when the filesystem cannot. */
static int punch_chunks(cowvol_volume *v, uint64_t first, uint64_t n)
{
        uint64_t off = first * v->chunk, len = n * v->chunk;

        if (len > v->size - off)
                len = v->size - off;
        return sys_fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
}

static const uint8_t zero_chunk[COWVOL_CHUNK_MAX];

/* Allocate [off, off+len) of a hole in the image: it reads as zeroes
 * still, so no snapshot needs a copy.  Write lock held. */
static int allocate_zeroes(cowvol_volume *v, uint64_t off, uint64_t len)
{
        int r = sys_fallocate(v->fd, 0, off, len);

        if (r != -EOPNOTSUPP)
                return r < 0 ? log_err(r, "Cannot allocate the volume at %" PRIu64 ": %m", off) : 0;
        return pwrite_full(v->fd, zero_chunk, (size_t)len, off); /* len <= one chunk */
}

/* @len bytes of zeroes at @off through the ordinary write path (copies
 * first, where snapshots need them).  Write lock held. */
static int write_zero_bytes(cowvol_volume *v, struct cowvol_snapshot *sn, uint64_t len, uint64_t off)
{
        int r = 0;

        while (len > 0 && r >= 0) {
                size_t n = len < sizeof(zero_chunk) ? (size_t)len : sizeof(zero_chunk);
                r = sn ? write_snapshot(v, sn, zero_chunk, n, off) : write_origin(v, zero_chunk, n, off);
                off += n;
                len -= n;
        }
        return r;
}

/* Write-zeroes and discard on the origin, write lock held.  Whole chunks
 * that may lose their content are punched (when @punch); with @discard the
 * rest is left alone (a discard is advice), else it is written with zeroes.
 * Both kinds of chunk gather into runs. */
static int zero_origin(cowvol_volume *v, uint64_t len, uint64_t off, bool punch, bool discard)
{
        uint64_t end = off + len, hole_c = 0, hole_n = 0, zero_off = 0, zero_len = 0, img_end = 0;
        bool img_hole = false;
        int r = 0;

        for (uint64_t c = off / v->chunk; c <= (end - 1) / v->chunk && r >= 0; c++) {
                uint64_t cs = c * v->chunk, ce = cs + v->chunk < v->size ? cs + v->chunk : v->size;
                uint64_t lo = off > cs ? off : cs, hi = end < ce ? end : ce;
                bool hole;

                /* a hole in the image already reads as zeroes: nothing to
                 * copy (mkfs zeroes whole disks), and nothing to write
                 * unless it must be allocated (no punch: NBD's NO_HOLE) */
                if (lo >= img_end)
                        img_hole = image_extent(v, lo, end, &img_end);
                if (img_hole && hi <= img_end && !deferred_find(v, c)) {
                        if (!punch && !discard)
                                r = allocate_zeroes(v, lo, hi - lo);
                        continue;
                }
                hole = punch && lo == cs && hi == ce && chunk_free_to_punch(v, c);

                if (hole_n && (!hole || hole_c + hole_n != c)) {
                        r = punch_chunks(v, hole_c, hole_n);
                        if (r == -EOPNOTSUPP) {
                                /* this filesystem cannot: zeroes from now on */
                                punch = hole = false;
                                r = discard ? 0 : write_zero_bytes(v, NULL, hole_n * v->chunk, hole_c * v->chunk);
                        }
                        hole_n = 0;
                }
                if (zero_len && (hole || zero_off + zero_len != lo)) {
                        if (r >= 0)
                                r = write_zero_bytes(v, NULL, zero_len, zero_off);
                        zero_len = 0;
                }
                if (hole) {
                        if (!hole_n)
                                hole_c = c;
                        hole_n++;
                } else if (!discard) {
                        if (!zero_len)
                                zero_off = lo;
                        zero_len += hi - lo;
                }
        }
        if (r >= 0 && hole_n) {
                r = punch_chunks(v, hole_c, hole_n);
                if (r == -EOPNOTSUPP)
                        r = discard ? 0 : write_zero_bytes(v, NULL, hole_n * v->chunk, hole_c * v->chunk);
        }
        if (r >= 0 && zero_len)
                r = write_zero_bytes(v, NULL, zero_len, zero_off);
        return r;
}

_public_ int cowvol_volume_write_zeroes(cowvol_volume *v, cowvol_snapshot *sn, uint64_t len, uint64_t off,
                                        unsigned flags)
{
        int r = check_range(v, sn, len, off);

        if (r < 0 || len == 0)
                return r;
        pthread_rwlock_wrlock(&v->lock);
        r = change_allowed(v, sn);
        if (r == 0)
                r = sn ? write_zero_bytes(v, sn, len, off) : zero_origin(v, len, off, flags & COWVOL_ZERO_PUNCH, false);
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_volume_discard(cowvol_volume *v, cowvol_snapshot *sn, uint64_t len, uint64_t off)
{
        int r = check_range(v, sn, len, off);

        if (r < 0 || len == 0)
                return r;
        pthread_rwlock_wrlock(&v->lock);
        r = change_allowed(v, sn);
        /* a snapshot keeps its chunks: the store has no way to drop one */
        if (r == 0 && !sn)
                r = zero_origin(v, len, off, true, true);
        pthread_rwlock_unlock(&v->lock);
        return r;
}

/* The first waiting (deferred) chunk at or after @c, or UINT64_MAX. */
static uint64_t next_deferred(const cowvol_volume *v, uint64_t c)
{
        uint64_t best = UINT64_MAX;

        for (size_t i = 0; i < DTAB_SIZE && v->n_deferred; i++) {
                for (const struct deferred *d = v->dtab[i]; d; d = d->next)
                        if (d->chunk >= c && d->chunk < best)
                                best = d->chunk;
                for (const struct deferred *d = v->n_sealed ? v->stab[i] : NULL; d; d = d->next)
                        if (d->chunk >= c && d->chunk < best)
                                best = d->chunk;
        }
        return best;
}

/* The image's allocation at @off: sets *ret_end to where it changes (at
 * most @end) and returns true for a hole. */
static bool image_extent(const cowvol_volume *v, uint64_t off, uint64_t end, uint64_t *ret_end)
{
        off_t d = lseek(v->fd, (off_t)off, SEEK_DATA), h;

        if (d < 0 && errno == ENXIO) {
                /* no data from here to the end of the file */
                *ret_end = end;
                return true;
        }
        if (d < 0) {
                *ret_end = end; /* unknown: call it data */
                return false;
        }
        if ((uint64_t)d > off) {
                *ret_end = (uint64_t)d < end ? (uint64_t)d : end;
                return true;
        }
        h = lseek(v->fd, (off_t)off, SEEK_HOLE);
        *ret_end = h < 0 || (uint64_t)h > end ? end : (uint64_t)h;
        if (*ret_end <= off)
                *ret_end = end;
        return false;
}

static int extent_add(struct cowvol_extent *ext, size_t max, size_t *n, uint64_t len, unsigned flags)
{
        if (*n && ext[*n - 1].flags == flags) {
                ext[*n - 1].len += len;
                return 0;
        }
        if (*n == max)
                return 1;
        ext[(*n)++] = (struct cowvol_extent){ .len = len, .flags = flags };
        return 0;
}

/* at most this many chunks of a snapshot are looked at per call */
#define STATUS_MAX_CHUNKS (1u << 20)

_public_ int cowvol_volume_block_status(cowvol_volume *v, cowvol_snapshot *sn, uint64_t len, uint64_t off,
                                        struct cowvol_extent *ext, size_t max)
{
        uint64_t end, pos, img_end = 0;
        bool img_hole = false;
        size_t n = 0;
        int r = 0;

        if (check_range(v, sn, len, off) < 0 || len == 0 || max == 0)
                return -EINVAL;
        end = off + len;
        pthread_rwlock_rdlock(&v->lock);
        if (sn && !snap_attached(v, sn))
                r = -ENOENT;
        else if (sn && !cowvol_store_is_valid(sn->store))
                r = -ESTALE;
        else if (!sn && v->merging)
                r = extent_add(ext, max, &n, len, 0); /* chunks come from two places: call it data */
        else if (!sn) {
                for (pos = off; pos < end;) {
                        uint64_t c = pos / v->chunk, e, nd = next_deferred(v, c);
                        bool hole;
                        if (nd == c) {
                                /* new data waits in memory for this chunk */
                                e = (c + 1) * v->chunk < end ? (c + 1) * v->chunk : end;
                                hole = false;
                        } else {
                                hole = image_extent(v, pos, end, &e);
                                if (hole && nd != UINT64_MAX && nd * v->chunk < e)
                                        e = nd * v->chunk;
                        }
                        if (extent_add(ext, max, &n, e - pos, hole ? COWVOL_EXTENT_HOLE | COWVOL_EXTENT_ZERO : 0))
                                break;
                        pos = e;
                }
        } else {
                /* chunk by chunk: a store chunk is data, any other is the origin's */
                uint64_t scanned = 0;
                for (pos = off; pos < end && scanned < STATUS_MAX_CHUNKS; scanned++) {
                        uint64_t c = pos / v->chunk, ce = (c + 1) * v->chunk, nw, e;
                        bool hole;
                        if (ce > end)
                                ce = end;
                        if (holder(sn, c, &nw)) {
                                hole = false;
                                e = ce;
                        } else {
                                if (pos >= img_end)
                                        img_hole = image_extent(v, pos, end, &img_end);
                                hole = img_hole;
                                e = img_end < ce ? img_end : ce;
                        }
                        if (extent_add(ext, max, &n, e - pos, hole ? COWVOL_EXTENT_HOLE | COWVOL_EXTENT_ZERO : 0))
                                break;
                        pos = e;
                }
        }
        pthread_rwlock_unlock(&v->lock);
        return r < 0 ? r : (int)n;
}

/* --- removal --------------------------------------------------------------------- */

struct chunk_list {
        uint64_t *c;
        size_t n, cap;
};

static int chunk_push(uint64_t old, uint64_t nw, void *ud)
{
        struct chunk_list *l = ud;

        (void)nw;
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 1024;
                uint64_t *p = realloc(l->c, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                l->c = p;
                l->cap = cap;
        }
        l->c[l->n++] = old;
        return 0;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

/* Would a change of chunk @c under the snapshots from @from down need a
 * copy?  (The walk, without copying.) */
static bool walk_needs(struct cowvol_snapshot *from, uint64_t c)
{
        uint64_t nw;

        for (struct cowvol_snapshot *t = from; t; t = t->next) {
                if (cowvol_store_lookup(t->store, c, &nw) == 1)
                        return false;
                if (cowvol_store_is_valid(t->store))
                        return true;
        }
        return false;
}

/* @sn leaves the chain: the snapshots older than it first get the chunks of
 * its store they read through it (and lack), durably.  From then on it is
 * "leaving": it still takes the origin's copies (a removal that fails is
 * undone with rechain, and it is exact) but they no longer count for those
 * below.  Removing the oldest copies nothing.  Write lock held. */
/* The snapshots older than @sn get, durably, the chunks they read through
 * @sn's store (each walk from the next older one).  Write lock held. */
static int give_below(cowvol_volume *v, struct cowvol_snapshot *sn)
{
        struct chunk_list l = {};
        uint64_t nw;
        int r;

        if (!sn->next)
                return 0;
        r = cowvol_store_foreach_sorted(sn->store, chunk_push, &l);
        for (;;) {
                size_t i = 0;

                while (r >= 0 && i < l.n) {
                        size_t k = 1;

                        if (!walk_needs(sn->next, l.c[i])) {
                                i++;
                                continue;
                        }
                        while (i + k < l.n && k < 256 && l.c[i + k] == l.c[i] + k && walk_needs(sn->next, l.c[i + k]))
                                k++;
                        r = ensure_big(v, k);
                        for (size_t j = 0; j < k && r >= 0; j++) {
                                (void)cowvol_store_lookup(sn->store, l.c[i + j], &nw);
                                r = cowvol_store_read_chunk(sn->store, nw, v->big + j * v->chunk);
                        }
                        if (r >= 0)
                                preserve_range(v, l.c[i], k, v->big, sn->next, false);
                        i += k;
                }
                if (r >= 0)
                        commit_all(v);
                if (r < 0 || !v->lost)
                        break;
                v->lost = false; /* a store that failed forgot some: walk again */
        }
        free(l.c);
        if (r < 0)
                return log_err(r, "Cannot give the older snapshots the chunks they read through this one: %m");
        return 0;
}

static int unchain_locked(cowvol_volume *v, struct cowvol_snapshot *sn)
{
        int r;

        if (v->merging)
                return log_err(-EBUSY, "A restore is running on this volume");
        r = commit_deferred(v);
        if (r < 0)
                return r;
        sn->leaving = true;
        r = give_below(v, sn);
        if (r < 0)
                sn->leaving = false;
        return r;
}

/* --- stores from before chains ---------------------------------------------------- */

/*
 * Independent stores (the kernel's, or this engine's before chains) read as
 * a chain unless a snapshot was written into: then a newer store holds a
 * chunk an older one lacks, and the older one would read the newer one's
 * write.  Each valid snapshot takes, as its own, the origin's chunk (its
 * content there, independently) wherever a newer store holds one it lacks.
 * Nothing any snapshot shows changes, so a crash at any point is harmless
 * and the next adopt finishes.  Write lock held.
 */
/* Room in @sn's store for @n more chunks (and their table), growing it. */
static int store_room(cowvol_volume *v, struct cowvol_snapshot *sn, size_t n)
{
        struct cowvol_store_usage u;
        uint64_t used, want;
        uint32_t epa = cowvol_store_exceptions_per_area(sn->store);
        char a[32];
        int r;

        cowvol_store_usage(sn->store, &u);
        used = u.allocated_sectors * COWVOL_SECTOR_SIZE / v->chunk;
        want = (used + n + n / epa + 3) * v->chunk;
        if (want <= u.total_sectors * COWVOL_SECTOR_SIZE)
                return 0;
        r = cowvol_store_grow(sn->store, want);
        if (r < 0)
                return log_err(r == -ENOTTY ? -ENOSPC : r,
                               "The snapshot's store must take %zu chunks (the origin's, which newer snapshots "
                               "changed) to join the chain, and cannot grow to %s: %m",
                               n, cowvol_format_size(want, a, sizeof(a)));
        return 0;
}

static int adopt_locked(cowvol_volume *v, uint64_t *ret_copied)
{
        struct chunk_list newer = {};
        uint64_t copied = 0, nw;
        int r = commit_deferred(v);

        for (struct cowvol_snapshot *o = v->snaps; o && o->next && r >= 0; o = o->next) {
                struct cowvol_snapshot *t = o->next; /* takes what o and the newer hold */
                size_t n = 0;

                r = cowvol_store_foreach_sorted(o->store, chunk_push, &newer);
                if (r < 0 || !cowvol_store_is_valid(t->store))
                        continue;
                if (newer.n)
                        qsort(newer.c, newer.n, sizeof(*newer.c), cmp_u64);
                for (size_t i = 0; i < newer.n; i++)
                        if (n == 0 || newer.c[n - 1] != newer.c[i])
                                newer.c[n++] = newer.c[i];
                newer.n = n;
                n = 0;
                for (size_t i = 0; i < newer.n; i++)
                        n += cowvol_store_lookup(t->store, newer.c[i], &nw) == 0;
                if (n && (r = store_room(v, t, n)) < 0)
                        break;
                for (size_t i = 0; i < newer.n && r >= 0; i++) {
                        if (cowvol_store_lookup(t->store, newer.c[i], &nw) == 1)
                                continue;
                        r = origin_read_chunk(v, newer.c[i], v->buf);
                        if (r >= 0)
                                r = cowvol_store_allocate(t->store, &nw);
                        if (r >= 0)
                                r = cowvol_store_write_chunk(t->store, nw, v->buf);
                        if (r >= 0)
                                r = cowvol_store_add(t->store, newer.c[i], nw);
                        copied += r >= 0;
                }
                if (r >= 0 && n)
                        r = cowvol_store_commit(t->store);
        }
        free(newer.c);
        if (ret_copied)
                *ret_copied = copied;
        return r < 0 ? log_err(r, "Cannot make the snapshots a chain: %m") : 0;
}

_public_ int cowvol_volume_chain_adopt(cowvol_volume *v, uint64_t *ret_copied)
{
        int r;

        if (!v)
                return -EINVAL;
        pthread_rwlock_wrlock(&v->lock);
        r = v->merging ? -EBUSY : adopt_locked(v, ret_copied);
        pthread_rwlock_unlock(&v->lock);
        return r;
}

/* --- restore ----------------------------------------------------------------- */

/* The todo list of a restore of @sn: the origin chunks inside the volume
 * that a store from @sn to the newest holds, sorted, each once (elsewhere
 * @sn reads the origin).  Its size is bounded by the stores' own tables.
 * Write lock held. */
static int todo_list(cowvol_volume *v, struct cowvol_snapshot *sn)
{
        struct chunk_list l = {};
        uint64_t last = snap_chunks(v, sn); /* past its end the volume keeps what it holds */
        size_t n = 0;
        int r = 0;

        for (struct cowvol_snapshot *t = sn; t && r >= 0; t = t->prev)
                r = cowvol_store_foreach_sorted(t->store, chunk_push, &l);
        if (r < 0) {
                free(l.c);
                return r;
        }
        if (l.n)
                qsort(l.c, l.n, sizeof(*l.c), cmp_u64);
        for (size_t i = 0; i < l.n; i++)
                if ((n == 0 || l.c[n - 1] != l.c[i]) && l.c[i] < last)
                        l.c[n++] = l.c[i];
        free(v->todo);
        v->todo = l.c;
        v->n_todo = n;
        v->todo_at = 0;
        return 0;
}

_public_ int cowvol_volume_merge_begin_at(cowvol_volume *v, cowvol_snapshot *sn, bool consume)
{
        int r = 0;

        if (!v || !sn)
                return -EINVAL;
        pthread_rwlock_wrlock(&v->lock);
        if (!snap_attached(v, sn))
                r = -ENOENT;
        else if (v->merging && v->merging != sn)
                r = -EBUSY;
        else if (v->merging)
                r = 0;
        else if (!cowvol_store_is_valid(sn->store))
                r = log_err(-ESTALE, "The snapshot is invalid: it cannot be restored");
        else if (sn->leaving)
                r = -EBUSY;
        else if ((r = commit_deferred(v)) >= 0) {
                v->consume = consume;
                v->n_todo = v->todo_at = 0;
                if (!consume)
                        r = todo_list(v, sn);
                if (r >= 0) {
                        v->merging = sn;
                        v->merge_done = false;
                        v->merge_total = cowvol_store_count(sn->store) + v->n_todo;
                }
        }
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_volume_merge_begin(cowvol_volume *v, cowvol_snapshot *sn)
{
        return cowvol_volume_merge_begin_at(v, sn, false);
}

/* A restore goes in steps of this many bytes (merge_step_bytes), each with
 * one group commit and one flush of the origin (a flush per run of one area
 * cost more than the copying), through v->big this many bytes of a run at a
 * time. */
uint64_t merge_step_bytes = 16u << 20;
#define MERGE_BATCH_BYTES (1u << 20)

static size_t merge_step_chunks(const cowvol_volume *v)
{
        return merge_step_bytes / v->chunk ? (size_t)(merge_step_bytes / v->chunk) : 1;
}

static size_t merge_batch_chunks(const cowvol_volume *v)
{
        return MERGE_BATCH_BYTES / v->chunk ? MERGE_BATCH_BYTES / v->chunk : 1;
}

/* The run of consecutive chunks at @c (at most @max of the @n there). */
static size_t todo_run(const uint64_t *c, size_t n, size_t max)
{
        size_t k = 1;

        while (k < n && k < max && c[k] == c[0] + k)
                k++;
        return k;
}

/* A step of a restore by the chain: the next chunks of the todo list.  The
 * origin's chunks first go to the newer snapshots that lack them (read
 * only where the top of the chain needs them), committed once; then @m's
 * content goes onto the origin, which is flushed.  Write lock held. */
static int view_step(cowvol_volume *v, struct cowvol_snapshot *m)
{
        size_t step = merge_step_chunks(v), batch = merge_batch_chunks(v);
        size_t done = v->n_todo - v->todo_at < step ? v->n_todo - v->todo_at : step;
        const uint64_t *c = v->todo + v->todo_at;
        int r = 0;

        /* the whole step on its way from the disk before the first run waits */
        for (size_t i = 0, k; i < done; i += k) {
                k = todo_run(c + i, done - i, SIZE_MAX);
                prefetch_view(v, m, true, c[i], k);
                if (any_copy_needed(v, c[i], k))
                        (void)posix_fadvise(v->fd, (off_t)(c[i] * v->chunk), (off_t)(k * v->chunk),
                                            POSIX_FADV_WILLNEED);
        }
        for (size_t i = 0, k; i < done && r >= 0; i += k) {
                k = todo_run(c + i, done - i, batch);
                if (!any_copy_needed(v, c[i], k))
                        continue;
                r = ensure_big(v, k);
                if (r >= 0)
                        r = origin_read_range(v, c[i], k);
                if (r >= 0)
                        preserve_range(v, c[i], k, v->big, v->snaps, false);
        }
        if (r < 0)
                return log_err(r, "Cannot read the volume to restore it: %m");
        commit_all(v);
        if (v->lost) {
                /* a store failed and forgot some: this step again */
                v->lost = false;
                return 1;
        }
        for (size_t i = 0, k; i < done && r >= 0; i += k) {
                uint64_t off = c[i] * v->chunk;
                size_t len;

                k = todo_run(c + i, done - i, batch);
                if (off >= m->size)
                        continue; /* the todo list stops at its end */
                len = m->size - off < k * v->chunk ? (size_t)(m->size - off) : k * v->chunk;
                r = ensure_big(v, k);
                if (r >= 0)
                        r = read_locked(v, m, v->big, len, off);
                if (r >= 0)
                        r = pwrite_full(v->fd, v->big, len, off);
                if (r < 0)
                        return log_err(r, "Cannot restore chunk %" PRIu64 ": %m", c[i]);
                /* the flush below must write these: start now */
                if (len >= COWVOL_WRITEBACK_MIN)
                        (void)sync_file_range(v->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
        }
        r = sys_fdatasync(v->fd);
        if (r < 0)
                return log_err(r, "Cannot flush the volume: %m");
        v->todo_at += done;
        return 1;
}

/* The newest snapshot @m equals the origin now: its store's entries go, a
 * step at a time from the end, each clear durable (a crash leaves a prefix
 * of its table, and @m as exact), so that it holds nothing, as a snapshot
 * just taken.  Write lock held. */
static int empty_step(cowvol_volume *v, struct cowvol_snapshot *m)
{
        size_t step = merge_step_chunks(v);
        struct exstore_entry *e = malloc(step * sizeof(*e));
        ssize_t n;
        int r;

        if (!e)
                return -ENOMEM;
        n = exstore_merge_peek(m->store, step, e);
        free(e);
        if (n <= 0)
                return (int)n;
        r = exstore_merge_clear(m->store, (size_t)n);
        if (r < 0)
                return r;
        return cowvol_store_count(m->store) > 0;
}

/* A restore by the chain: the todo list; then, the origin being @m's
 * content, @m becomes the newest (the older ones first take what they read
 * through it), which the caller records; then its store empties. */
static int chain_merge_step(cowvol_volume *v, struct cowvol_snapshot *m)
{
        int r;

        if (v->todo_at < v->n_todo)
                return view_step(v, m);
        if (m->prev) {
                r = give_below(v, m);
                if (r < 0)
                        return r;
                unlink_snap(v, m);
                link_newest(v, m);
                m->size = v->size; /* the newest: of the volume's size, as a new snapshot */
                return COWVOL_MERGE_NEWEST;
        }
        return empty_step(v, m);
}

/* The run of entries from @e on (the last first) with consecutive origin
 * and store chunks, at most @max: its length; its first chunks in *ret_*. */
static size_t merge_run(const struct exstore_entry *e, size_t n, size_t max, uint64_t *ret_old, uint64_t *ret_new)
{
        size_t k = 1;

        while (k < n && k < max && e[k].old == e[0].old - k && e[k].new_chunk == e[0].new_chunk - k)
                k++;
        *ret_old = e[0].old - (k - 1);
        *ret_new = e[0].new_chunk - (k - 1);
        return k;
}

/* A step of a restore that consumes @m's store from its end. */
static int consume_step(cowvol_volume *v, struct cowvol_snapshot *m)
{
        struct exstore_entry *e;
        uint64_t old, nw;
        size_t batch = merge_batch_chunks(v);
        ssize_t n;
        int r = 0;

        e = malloc(merge_step_chunks(v) * sizeof(*e));
        if (!e)
                return -ENOMEM;
        n = exstore_merge_peek(m->store, merge_step_chunks(v), e);
        if (n <= 0) {
                r = (int)n;
                goto out;
        }
        /* the whole step on its way from the disk: the origin's chunks and
         * the snapshot's */
        for (size_t i = 0, k; i < (size_t)n; i += k) {
                k = merge_run(e + i, (size_t)n - i, SIZE_MAX, &old, &nw);
                if (old * v->chunk < v->size)
                        (void)posix_fadvise(v->fd, (off_t)(old * v->chunk), (off_t)(k * v->chunk), POSIX_FADV_WILLNEED);
                exstore_readahead(m->store, nw, k);
        }
        /* before the origin changes: the newer snapshots keep its chunks
         * (the walk from the newest stops at @m, which holds them), the
         * older ones what they read through @m; one group commit for all */
        for (size_t i = 0; i < (size_t)n;) {
                size_t k = merge_run(e + i, (size_t)n - i, batch, &old, &nw);
                uint8_t *mine;

                r = ensure_big(v, 2 * k);
                if (r >= 0)
                        r = origin_read_range(v, old, k);
                if (r < 0)
                        goto out;
                preserve_range(v, old, k, v->big, v->snaps, false);
                i += k;
                if (!m->next)
                        continue; /* the oldest: nobody reads through it */
                mine = v->big + k * v->chunk;
                r = cowvol_store_pread(m->store, nw, mine, k * v->chunk, 0);
                if (r < 0) {
                        log_err(r, "Cannot read the snapshot's chunk %" PRIu64 ": %m", old);
                        goto out;
                }
                preserve_range(v, old, k, mine, m->next, false);
        }
        commit_all(v);
        if (v->lost) {
                /* a store failed and forgot some: this step again */
                v->lost = false;
                r = 1;
                goto out;
        }
        for (size_t i = 0; i < (size_t)n;) {
                size_t k = merge_run(e + i, (size_t)n - i, batch, &old, &nw), len;
                uint64_t off = old * v->chunk;

                i += k;
                if (off >= m->size)
                        continue; /* beyond the snapshot: nothing to restore */
                len = m->size - off < k * v->chunk ? (size_t)(m->size - off) : k * v->chunk;
                r = ensure_big(v, k);
                if (r >= 0)
                        r = cowvol_store_pread(m->store, nw, v->big, len, 0);
                if (r >= 0)
                        r = pwrite_full(v->fd, v->big, len, off);
                if (r < 0) {
                        log_err(r, "Cannot restore chunk %" PRIu64 ": %m", old);
                        goto out;
                }
                /* the flush below must write these: start now */
                if (len >= COWVOL_WRITEBACK_MIN)
                        (void)sync_file_range(v->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
        }
        /* the origin holds the step durably before the entries go */
        r = sys_fdatasync(v->fd);
        if (r < 0) {
                log_err(r, "Cannot flush the volume: %m");
                goto out;
        }
        r = exstore_merge_clear(m->store, (size_t)n);
        if (r >= 0)
                r = cowvol_store_count(m->store) > 0 ? 1 : 0;
out:
        free(e);
        return r;
}

static uint64_t merge_left(const cowvol_volume *v)
{
        return cowvol_store_count(v->merging->store) + (v->consume ? 0 : v->n_todo - v->todo_at);
}

_public_ int cowvol_volume_merge_step(cowvol_volume *v, uint64_t *ret_left)
{
        struct cowvol_snapshot *m;
        int r;

        pthread_rwlock_wrlock(&v->lock);
        m = v->merging;
        if (!m)
                r = -EINVAL;
        else
                r = v->consume ? consume_step(v, m) : chain_merge_step(v, m);
        if (r == 0)
                v->merge_done = true;
        if (r >= 0 && ret_left && m)
                *ret_left = merge_left(v);
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_volume_merge_progress(cowvol_volume *v, uint64_t *ret_total, uint64_t *ret_left)
{
        int r = 0;

        if (!v)
                return -EINVAL;
        pthread_rwlock_rdlock(&v->lock);
        if (!v->merging)
                r = -EINVAL;
        else {
                if (ret_total)
                        *ret_total = v->merge_total;
                if (ret_left)
                        *ret_left = merge_left(v);
        }
        pthread_rwlock_unlock(&v->lock);
        return r;
}

_public_ int cowvol_volume_merge_end(cowvol_volume *v)
{
        struct cowvol_snapshot *m;
        cowvol_store *st;
        int r = 0;

        pthread_rwlock_wrlock(&v->lock);
        m = v->merging;
        v->merging = NULL;
        free(v->todo);
        v->todo = NULL;
        v->n_todo = v->todo_at = 0;
        /* an emptied store: reopen it so it serves as a snapshot of the
         * restored content (restore --keep) */
        if (m && (v->consume || v->merge_done) && cowvol_store_count(m->store) == 0) {
                bool held = v->origin_held; /* the caller's, kept over link_newest */

                /* empty, it is the volume as restored: the newest of the
                 * chain (in its old place it would read through the newer
                 * ones; the older ones hold what they read through it) */
                if (m->prev) {
                        unlink_snap(v, m);
                        link_newest(v, m);
                        v->origin_held = held;
                }
                m->size = v->size;
                m->store = cowvol_store_close(m->store);
                r = cowvol_store_open(m->path, COWVOL_STORE_PREALLOCATE, &st);
                if (r >= 0)
                        m->store = st;
                else {
                        /* no store to take the origin's copies: it goes
                         * (empty and the newest, nothing reads through
                         * it), and the caller forgets it */
                        log_err(r, "Cannot open the store %s again after the restore; the snapshot is let go: %m",
                                m->path);
                        unlink_snap(v, m);
                        snap_free(m);
                }
        }
        v->consume = false;
        pthread_rwlock_unlock(&v->lock);
        return r;
}

/* --- diff ------------------------------------------------------------------------ */

struct diff_ctx {
        const cowvol_volume *v;
        uint64_t size;        /* the snapshot's */
        uint64_t start, next; /* current run, in chunks; next == 0: none */
        bool have;
        int (*fn)(uint64_t off, uint64_t len, void *userdata);
        void *ud;
};

static int diff_emit(struct diff_ctx *d)
{
        uint64_t off = d->start * d->v->chunk, end = d->next * d->v->chunk;

        if (end > d->size)
                end = d->size;
        if (!d->have || off >= end)
                return 0;
        return d->fn(off, end - off, d->ud);
}

static int diff_one(uint64_t old, uint64_t nw, void *ud)
{
        struct diff_ctx *d = ud;
        int r;

        (void)nw;
        if (d->have && old == d->next) {
                d->next++;
                return 0;
        }
        r = diff_emit(d);
        if (r)
                return r;
        d->have = true;
        d->start = old;
        d->next = old + 1;
        return 0;
}

_public_ int cowvol_snapshot_diff(cowvol_volume *v, cowvol_snapshot *sn,
                                  int (*fn)(uint64_t off, uint64_t len, void *userdata), void *userdata)
{
        struct diff_ctx d = { .v = v, .fn = fn, .ud = userdata };
        int r;

        pthread_rwlock_rdlock(&v->lock);
        d.size = snap_attached(v, sn) ? sn->size : 0;
        if (!snap_attached(v, sn))
                r = -ENOENT;
        else if (!cowvol_store_is_valid(sn->store))
                r = -ESTALE;
        else if (!sn->prev) {
                r = cowvol_store_foreach_sorted(sn->store, diff_one, &d);
                if (r == 0)
                        r = diff_emit(&d);
        } else {
                /* a chain: what changed since @sn is the union of its store
                 * and every newer one */
                struct chunk_list l = {};
                r = 0;
                for (struct cowvol_snapshot *t = sn; t && r >= 0; t = t->prev)
                        r = cowvol_store_foreach_sorted(t->store, chunk_push, &l);
                if (r >= 0 && l.n)
                        qsort(l.c, l.n, sizeof(*l.c), cmp_u64);
                for (size_t i = 0; i < l.n && r == 0; i++)
                        if (i == 0 || l.c[i] != l.c[i - 1])
                                r = diff_one(l.c[i], 0, &d);
                if (r == 0)
                        r = diff_emit(&d);
                free(l.c);
        }
        /* the volume grew since: all of that is new */
        if (r == 0 && d.size && v->size > d.size)
                r = fn(d.size, v->size - d.size, userdata);
        pthread_rwlock_unlock(&v->lock);
        return r;
}
