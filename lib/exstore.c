/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The exception store: the Linux kernel's persistent snapshot store
 * (drivers/md/dm-snap-persistent.c), byte for byte.
 *
 * Layout, in chunks of chunk_size sectors, all little-endian:
 *   chunk 0      header {le32 magic "SnAp", le32 valid, le32 version 1,
 *                le32 chunk_size in sectors}, the rest zero;
 *   chunk 1      metadata area 0: epa = chunk_bytes / 16 slots of
 *                {le64 old_chunk, le64 new_chunk};
 *   chunks 2..   area 0's epa data chunks, then area 1's metadata chunk at
 *                1 + (epa + 1), and so on: area i at 1 + (epa + 1) * i.
 * The table is read area by area, slot by slot, up to the first entry whose
 * new_chunk is 0 (it would name the header); a full area continues into the
 * next.  next_free is max(new_chunk) + 1, stepping over metadata chunks.
 *
 * Crash order of a commit (the kernel's):
 *   1. the data chunks are written (cowvol_store_write_chunk) and flushed;
 *   2. if an area is about to fill, the next area is zeroed and flushed, so
 *      that a reader going on past a full area stops there;
 *   3. the whole metadata area is written and flushed;
 *   4. only then may the caller let the origin write go.
 * A cut anywhere leaves a table whose every entry points at flushed data:
 * either the area write landed (whole sectors) or the old area stands.
 *
 * Merging consumes entries from the end of the table, as the kernel's
 * snapshot-merge: the caller copies a run (or, exstore_merge_peek, many
 * runs across areas) back and flushes the origin, then the entries are
 * zeroed and the areas that held them written with a flush, so a crash
 * resumes at the first entry not yet cleared: any of those writes may land
 * without the others, and each leaves a table that is a prefix of the old.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "internal.h"

struct disk_header {
        uint32_t magic;
        uint32_t valid;
        uint32_t version;
        uint32_t chunk_size;
};

struct disk_exception {
        uint64_t old_chunk;
        uint64_t new_chunk;
};

struct pending {
        uint64_t old, new_chunk;
};

struct cowvol_store {
        const struct store_io *io;
        void *io_ctx;
        bool rdonly;
        bool link; /* an invalid store's table is read and kept */
        bool merging;
        bool merge_failed; /* as the kernel's: no retry after a merge I/O error */

        uint32_t chunk_sectors, chunk_bytes, epa;
        uint32_t valid, version;
        uint64_t size_bytes, chunks;

        uint64_t next_free;
        /* COWVOL_STORE_PREALLOCATE: blocks are allocated ahead of next_free,
         * a step at a time, so a flush of new chunks allocates nothing and
         * creating a store costs the same whatever its size */
        bool prealloc;
        uint64_t prealloc_end; /* bytes */
        uint64_t current_area;
        uint32_t current_committed;
        uint8_t *area; /* the current metadata area, as on disk */

        struct pending *pending;
        size_t n_pending, cap_pending;

        /* chunks handed out by allocate and not yet named by an exception */
        uint64_t *reserved;
        size_t n_reserved, cap_reserved;

        struct cindex index;
};

/* --- the default I/O layer: a file descriptor --------------------------- */

struct fd_ctx {
        int fd;
};

static int fd_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
        return pread_full(((struct fd_ctx *)ctx)->fd, buf, len, off);
}

static ssize_t fd_pread_cached(void *ctx, void *buf, size_t len, uint64_t off)
{
        return pread_cached(((struct fd_ctx *)ctx)->fd, buf, len, off);
}

static int fd_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
        return pwrite_full(((struct fd_ctx *)ctx)->fd, buf, len, off);
}

static int fd_sync(void *ctx)
{
        return sys_fdatasync(((struct fd_ctx *)ctx)->fd);
}

static int fd_getsize(void *ctx, uint64_t *ret)
{
        return fd_size(((struct fd_ctx *)ctx)->fd, ret);
}

static int fd_resize(void *ctx, uint64_t size)
{
        struct stat st;
        int fd = ((struct fd_ctx *)ctx)->fd;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -ENOTTY;
        return sys_ftruncate(fd, size);
}

static int fd_preallocate(void *ctx, uint64_t off, uint64_t len)
{
        return sys_fallocate(((struct fd_ctx *)ctx)->fd, 0, off, len);
}

static int fd_punch(void *ctx, uint64_t off, uint64_t len)
{
        return sys_fallocate(((struct fd_ctx *)ctx)->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
}

static void fd_writeback(void *ctx, uint64_t off, uint64_t len)
{
        (void)sync_file_range(((struct fd_ctx *)ctx)->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
}

static void fd_readahead(void *ctx, uint64_t off, uint64_t len)
{
        (void)posix_fadvise(((struct fd_ctx *)ctx)->fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
}

static int fd_is_hole(void *ctx, uint64_t off, uint64_t len)
{
        return fd_range_is_hole(((struct fd_ctx *)ctx)->fd, off, len);
}

static void fd_free(void *ctx)
{
        struct fd_ctx *c = ctx;

        if (c->fd >= 0)
                close(c->fd);
        free(c);
}

static const struct store_io fd_io = {
        .pread = fd_pread,
        .pread_cached = fd_pread_cached,
        .pwrite = fd_pwrite,
        .sync = fd_sync,
        .size = fd_getsize,
        .resize = fd_resize,
        .is_hole = fd_is_hole,
        .writeback = fd_writeback,
        .readahead = fd_readahead,
        .preallocate = fd_preallocate,
        .punch = fd_punch,
        .free = fd_free,
};

/* --- geometry -------------------------------------------------------------- */

static inline uint64_t area_location(const cowvol_store *s, uint64_t area)
{
        return 1 + ((uint64_t)s->epa + 1) * area;
}

static inline bool is_metadata_chunk(const cowvol_store *s, uint64_t chunk)
{
        return chunk >= 1 && (chunk - 1) % ((uint64_t)s->epa + 1) == 0;
}

static inline uint64_t chunk_offset(const cowvol_store *s, uint64_t chunk)
{
        return chunk * s->chunk_bytes;
}

static void preallocate_ahead(cowvol_store *s);

static void skip_metadata(cowvol_store *s)
{
        if (s->next_free % ((uint64_t)s->epa + 1) == 1)
                s->next_free++;
}

_public_ bool cowvol_chunk_size_valid(uint64_t bytes)
{
        return bytes >= COWVOL_CHUNK_MIN && bytes <= COWVOL_CHUNK_MAX && (bytes & (bytes - 1)) == 0;
}

/* Chunk sizes accepted in a header that someone else wrote: the kernel
 * takes any power of two of at least one sector; we stop at 16 MiB. */
#define OPEN_CHUNK_SECTORS_MAX 32768u

static int set_geometry(cowvol_store *s, uint32_t chunk_sectors)
{
        s->chunk_sectors = chunk_sectors;
        s->chunk_bytes = chunk_sectors * COWVOL_SECTOR_SIZE;
        s->epa = s->chunk_bytes / (uint32_t)sizeof(struct disk_exception);
        s->chunks = s->size_bytes / s->chunk_bytes;
        free(s->area);
        s->area = calloc(1, s->chunk_bytes);
        return s->area ? 0 : -ENOMEM;
}

static void header_encode(const cowvol_store *s, uint8_t *buf)
{
        struct disk_header h = {
                .magic = htole32(COWVOL_STORE_MAGIC),
                .valid = htole32(s->valid),
                .version = htole32(COWVOL_STORE_VERSION),
                .chunk_size = htole32(s->chunk_sectors),
        };

        memset(buf, 0, s->chunk_bytes);
        memcpy(buf, &h, sizeof(h));
}

static void area_get(const uint8_t *area, uint32_t slot, uint64_t *ret_old, uint64_t *ret_new)
{
        struct disk_exception e;

        memcpy(&e, area + (size_t)slot * sizeof(e), sizeof(e));
        *ret_old = le64toh(e.old_chunk);
        *ret_new = le64toh(e.new_chunk);
}

static void area_set(uint8_t *area, uint32_t slot, uint64_t old, uint64_t new_chunk)
{
        struct disk_exception e = { htole64(old), htole64(new_chunk) };

        memcpy(area + (size_t)slot * sizeof(e), &e, sizeof(e));
}

static cowvol_store *store_new(const struct store_io *io, void *ctx, unsigned flags)
{
        cowvol_store *s = calloc(1, sizeof(*s));

        if (!s) {
                if (io->free)
                        io->free(ctx);
                return NULL;
        }
        s->io = io;
        s->io_ctx = ctx;
        s->rdonly = flags & COWVOL_STORE_RDONLY;
        s->link = flags & COWVOL_STORE_LINK;
        s->prealloc = (flags & COWVOL_STORE_PREALLOCATE) && !s->rdonly && io->preallocate;
        cindex_init(&s->index);
        return s;
}

static void store_free(cowvol_store *s)
{
        if (!s)
                return;
        if (s->io && s->io->free)
                s->io->free(s->io_ctx);
        cindex_done(&s->index);
        free(s->pending);
        free(s->reserved);
        free(s->area);
        free(s);
}

/* --- faults ---------------------------------------------------------------- */

struct scan {
        cowvol_fault_fn fn;
        void *userdata;
        int faults;
        bool stop_at_first;
};

_printf_(5, 6) static void fault(struct scan *sc, const char *what, int64_t area, int64_t slot,
                                 const char *fmt, ...)
{
        struct cowvol_fault f = { .what = what, .area = area, .slot = slot };
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(f.message, sizeof(f.message), fmt, ap);
        va_end(ap);
        sc->faults++;
        if (sc->fn)
                sc->fn(&f, sc->userdata);
}

/* Duplicates are found after sorting, without their places; a second walk
 * over the table (only for a faulty store) names where each one stands. */
struct dup_key {
        uint64_t key;
        int64_t area, slot; /* first place seen, -1 before */
        uint64_t other;     /* the other chunk of that first entry */
};

struct dups {
        struct dup_key *old, *nw;
        size_t n_old, n_new;
        int err;
};

static void dup_push(struct dup_key **v, size_t *n, uint64_t key, int *err)
{
        struct dup_key *p = realloc(*v, (*n + 1) * sizeof(**v));

        if (!p) {
                *err = -ENOMEM;
                return;
        }
        p[*n] = (struct dup_key){ key, -1, -1, 0 };
        *v = p;
        (*n)++;
}

static void dup_old(uint64_t old, uint64_t a, uint64_t b, void *ud)
{
        struct dups *d = ud;

        (void)a;
        (void)b;
        /* three or more of one key come as several pairs: keep it once */
        if (d->n_old && d->old[d->n_old - 1].key == old)
                return;
        dup_push(&d->old, &d->n_old, old, &d->err);
}

static int cmp_dup(const void *a, const void *b)
{
        uint64_t x = ((const struct dup_key *)a)->key, y = ((const struct dup_key *)b)->key;

        return x < y ? -1 : x > y;
}

static struct dup_key *dup_find(struct dup_key *v, size_t n, uint64_t key)
{
        struct dup_key k = { .key = key };

        return n ? bsearch(&k, v, n, sizeof(*v), cmp_dup) : NULL;
}

static bool entry_usable(const cowvol_store *s, uint64_t old, uint64_t nw);

static int locate_dups(cowvol_store *s, struct dups *d, struct scan *sc)
{
        uint8_t *buf = malloc(s->chunk_bytes);
        uint64_t area;
        int r = 0;

        if (!buf)
                return -ENOMEM;
        if (d->n_new)
                qsort(d->nw, d->n_new, sizeof(*d->nw), cmp_dup);
        for (area = 0; area <= s->current_area; area++) {
                r = s->io->pread(s->io_ctx, buf, s->chunk_bytes, chunk_offset(s, area_location(s, area)));
                if (r < 0)
                        break;
                for (uint32_t slot = 0; slot < s->epa; slot++) {
                        uint64_t old, nw;
                        struct dup_key *k;

                        area_get(buf, slot, &old, &nw);
                        if (nw == 0)
                                break;
                        if (!entry_usable(s, old, nw))
                                continue;
                        if ((k = dup_find(d->old, d->n_old, old))) {
                                if (k->area < 0)
                                        *k = (struct dup_key){ old, (int64_t)area, slot, nw };
                                else
                                        fault(sc, "duplicate origin chunk", (int64_t)area, slot,
                                              "area %" PRIu64 " slot %" PRIu32 ": origin chunk %" PRIu64
                                              " has a second exception (store chunk %" PRIu64
                                              "; the first is at area %" PRId64 " slot %" PRId64
                                              ", store chunk %" PRIu64 ")",
                                              area, slot, old, nw, k->area, k->slot, k->other);
                        }
                        if ((k = dup_find(d->nw, d->n_new, nw))) {
                                if (k->area < 0)
                                        *k = (struct dup_key){ nw, (int64_t)area, slot, old };
                                else
                                        fault(sc, "duplicate store chunk", (int64_t)area, slot,
                                              "area %" PRIu64 " slot %" PRIu32 ": store chunk %" PRIu64
                                              " already holds the data of origin chunk %" PRIu64
                                              " (area %" PRId64 " slot %" PRId64 ")",
                                              area, slot, nw, k->other, k->area, k->slot);
                        }
                }
        }
        free(buf);
        return r;
}

/* The checks of one entry that need nothing but the geometry. */
static bool entry_usable(const cowvol_store *s, uint64_t old, uint64_t nw)
{
        return nw < s->chunks && !is_metadata_chunk(s, nw) && old <= UINT64_MAX / s->chunk_bytes;
}

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

        return x < y ? -1 : x > y;
}

/*
 * Read the header and the table into @s, reporting each fault to @sc.
 * Returns a negative errno for faults that stop the reading (and for I/O
 * errors); faults in entries are counted in sc->faults and reading goes on
 * unless sc->stop_at_first.
 */
static int store_load(cowvol_store *s, struct scan *sc)
{
        struct disk_header h;
        uint8_t hbuf[COWVOL_SECTOR_SIZE];
        uint32_t *seen = NULL;
        size_t n_seen = 0, cap_seen = 0;
        struct dups d = {};
        uint64_t area;
        int r;

        r = s->io->size(s->io_ctx, &s->size_bytes);
        if (r < 0)
                return log_err(r, "Cannot get the size of the store: %m");
        if (s->size_bytes < sizeof(hbuf)) {
                fault(sc, "truncated", -1, -1,
                      "store is %" PRIu64 " bytes: too small to hold a header (%u bytes)", s->size_bytes,
                      COWVOL_SECTOR_SIZE);
                return -EUCLEAN;
        }
        r = s->io->pread(s->io_ctx, hbuf, sizeof(hbuf), 0);
        if (r < 0)
                return log_err(r, "Cannot read the store header: %m");
        memcpy(&h, hbuf, sizeof(h));
        h.magic = le32toh(h.magic);
        h.valid = le32toh(h.valid);
        h.version = le32toh(h.version);
        h.chunk_size = le32toh(h.chunk_size);

        if (h.magic == 0) {
                fault(sc, "no header", -1, -1,
                      "no store header: the first sector is zero (a new store the kernel has not "
                      "initialised yet)");
                return -ENODATA;
        }
        if (h.magic != COWVOL_STORE_MAGIC) {
                fault(sc, "bad magic", -1, -1,
                      "bad magic 0x%08" PRIx32 " at offset 0 (expected 0x%08x, \"SnAp\"): not a "
                      "snapshot store, or a corrupt one",
                      h.magic, COWVOL_STORE_MAGIC);
                return -EUCLEAN;
        }
        if (h.version != COWVOL_STORE_VERSION) {
                fault(sc, "unsupported version", -1, -1,
                      "unsupported store version %" PRIu32 " at offset 8 (only version 1 exists)",
                      h.version);
                return -EPROTONOSUPPORT;
        }
        if (h.chunk_size == 0 || (h.chunk_size & (h.chunk_size - 1)) ||
            h.chunk_size > OPEN_CHUNK_SECTORS_MAX) {
                fault(sc, "bad chunk size", -1, -1,
                      "bad chunk size %" PRIu32 " sectors at offset 12 (a power of two from 1 to %u)",
                      h.chunk_size, OPEN_CHUNK_SECTORS_MAX);
                return -EUCLEAN;
        }
        if (h.valid > 1)
                cvlog(COWVOL_LOG_WARNING, "Valid flag is %" PRIu32 " (0 or 1 expected); read as valid, "
                           "as the kernel does", h.valid);
        s->valid = h.valid ? 1 : 0;
        s->version = h.version;
        r = set_geometry(s, h.chunk_size);
        if (r < 0)
                return r;
        if (s->chunks < 2) {
                fault(sc, "truncated", -1, -1,
                      "store is %" PRIu64 " bytes: smaller than its header and first metadata area "
                      "(2 chunks of %" PRIu32 " bytes)",
                      s->size_bytes, s->chunk_bytes);
                return -EUCLEAN;
        }
        if (s->chunks > CINDEX_MAX_NEW) {
                fault(sc, "too large", -1, -1,
                      "store has %" PRIu64 " chunks: more than 2^32 chunks is not supported", s->chunks);
                return -EFBIG;
        }

        s->next_free = 2;
        s->current_area = 0;
        s->current_committed = 0;
        if (!s->valid && !s->link)
                return 0; /* as the kernel: an invalid store's table is not read */

        for (area = 0;; area++) {
                uint64_t loc = area_location(s, area);
                uint32_t slot;
                bool full = true;

                if (loc >= s->chunks) {
                        fault(sc, "truncated", (int64_t)area, -1,
                              "area %" PRIu64 " (chunk %" PRIu64 ") lies past the end of the store "
                              "(%" PRIu64 " chunks), but area %" PRIu64 " before it is full",
                              area, loc, s->chunks, area - 1);
                        r = -EUCLEAN;
                        goto out;
                }
                r = s->io->pread(s->io_ctx, s->area, s->chunk_bytes, chunk_offset(s, loc));
                if (r < 0) {
                        log_err(r, "Cannot read metadata area %" PRIu64 ": %m", area);
                        goto out;
                }
                for (slot = 0; slot < s->epa; slot++) {
                        uint64_t old, nw;

                        area_get(s->area, slot, &old, &nw);
                        if (nw == 0) {
                                full = false;
                                s->current_committed = slot;
                                break;
                        }
                        if (nw >= s->chunks) {
                                fault(sc, "entry out of range", (int64_t)area, slot,
                                      "area %" PRIu64 " slot %" PRIu32 ": store chunk %" PRIu64
                                      " lies past the end of the store (%" PRIu64 " chunks)",
                                      area, slot, nw, s->chunks);
                                continue;
                        }
                        if (is_metadata_chunk(s, nw)) {
                                fault(sc, "entry on metadata", (int64_t)area, slot,
                                      "area %" PRIu64 " slot %" PRIu32 ": store chunk %" PRIu64
                                      " is a metadata chunk (area %" PRIu64 ")",
                                      area, slot, nw, (nw - 1) / ((uint64_t)s->epa + 1));
                                continue;
                        }
                        if (old > UINT64_MAX / s->chunk_bytes) {
                                fault(sc, "entry out of range", (int64_t)area, slot,
                                      "area %" PRIu64 " slot %" PRIu32 ": origin chunk %" PRIu64
                                      " lies beyond any device (byte offset overflows 64 bits)",
                                      area, slot, old);
                                continue;
                        }
                        if (s->next_free <= nw)
                                s->next_free = nw + 1;
                        r = cindex_bulk_append(&s->index, old, nw);
                        if (r < 0)
                                goto out;
                        if (n_seen == cap_seen) {
                                size_t cap = cap_seen ? cap_seen * 2 : 1024;
                                uint32_t *p = realloc(seen, cap * sizeof(*p));
                                if (!p) {
                                        r = -ENOMEM;
                                        goto out;
                                }
                                seen = p;
                                cap_seen = cap;
                        }
                        seen[n_seen++] = (uint32_t)nw;
                }
                if (sc->stop_at_first && sc->faults) {
                        r = -EUCLEAN;
                        goto out;
                }
                if (!full) {
                        s->current_area = area;
                        /* slots past the end may hold a torn write's leftovers:
                         * a later commit must not bring them back */
                        memset(s->area + (size_t)s->current_committed * sizeof(struct disk_exception), 0,
                               (size_t)(s->epa - s->current_committed) * sizeof(struct disk_exception));
                        break;
                }
        }
        skip_metadata(s);
        s->prealloc_end = s->next_free * s->chunk_bytes;

        r = cindex_bulk_finish(&s->index, dup_old, &d);
        if (r < 0)
                goto out;
        if (n_seen)
                qsort(seen, n_seen, sizeof(*seen), cmp_u32);
        for (size_t i = 1; i < n_seen; i++)
                if (seen[i] == seen[i - 1] && (d.n_new == 0 || d.nw[d.n_new - 1].key != seen[i]))
                        dup_push(&d.nw, &d.n_new, seen[i], &d.err);
        r = d.err;
        if (r >= 0 && (d.n_old || d.n_new))
                r = locate_dups(s, &d, sc);
        if (r >= 0)
                r = sc->faults ? -EUCLEAN : 0;
out:
        free(d.old);
        free(d.nw);
        free(seen);
        return r;
}

/* --- open, create, close ----------------------------------------------------- */

static void log_fault(const struct cowvol_fault *f, void *userdata)
{
        (void)userdata;
        cvlog(COWVOL_LOG_ERROR, "%s", f->message);
}

int exstore_open_io(const struct store_io *io, void *ctx, unsigned flags, cowvol_store **ret)
{
        struct scan sc = { .fn = log_fault, .stop_at_first = true };
        cowvol_store *s = store_new(io, ctx, flags);
        int r;

        if (!s)
                return -ENOMEM;
        r = store_load(s, &sc);
        if (r < 0) {
                store_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

int exstore_check_io(const struct store_io *io, void *ctx, cowvol_fault_fn fn, void *userdata)
{
        struct scan sc = { .fn = fn, .userdata = userdata };
        cowvol_store *s = store_new(io, ctx, COWVOL_STORE_RDONLY);
        int r;

        if (!s)
                return -ENOMEM;
        r = store_load(s, &sc);
        if (r >= 0 && !s->valid)
                fault(&sc, "invalid", -1, -1,
                      "store is marked invalid (valid=0): the snapshot overflowed or had an I/O "
                      "error, its data is not usable");
        store_free(s);
        if (r < 0 && !sc.faults)
                return r; /* could not read at all */
        return sc.faults;
}

int exstore_create_io(const struct store_io *io, void *ctx, uint32_t chunk_bytes, unsigned flags,
                      cowvol_store **ret)
{
        return exstore_create_sized_io(io, ctx, chunk_bytes, 0, flags, ret);
}

int exstore_create_sized_io(const struct store_io *io, void *ctx, uint32_t chunk_bytes, uint64_t size_bytes,
                            unsigned flags, cowvol_store **ret)
{
        cowvol_store *s;
        uint8_t hbuf[COWVOL_SECTOR_SIZE];
        int r;

        if (!cowvol_chunk_size_valid(chunk_bytes)) {
                if (io->free)
                        io->free(ctx);
                return log_err(-EINVAL,
                               "Chunk size %" PRIu32 " is not a power of two from 4 KiB to 512 KiB",
                               chunk_bytes);
        }
        s = store_new(io, ctx, flags & ~COWVOL_STORE_RDONLY);
        if (!s)
                return -ENOMEM;
        r = io->size(ctx, &s->size_bytes);
        if (r < 0) {
                log_err(r, "Cannot get the size of the store: %m");
                goto fail;
        }
        if (s->size_bytes >= sizeof(hbuf) && !(flags & COWVOL_STORE_FORCE)) {
                uint32_t magic;
                r = io->pread(ctx, hbuf, sizeof(hbuf), 0);
                if (r < 0) {
                        log_err(r, "Cannot read the start of the store: %m");
                        goto fail;
                }
                memcpy(&magic, hbuf, sizeof(magic));
                if (le32toh(magic) == COWVOL_STORE_MAGIC) {
                        r = log_err(-EEXIST, "Already holds a snapshot store (--force overwrites it)");
                        goto fail;
                }
                /* anything else that is not zeros may be someone's data */
                if (!mem_is_zero(hbuf, sizeof(hbuf))) {
                        r = log_err(-EEXIST, "Holds data that is not a snapshot store (--force overwrites it)");
                        goto fail;
                }
        }
        /* only once nothing stands against it does the file change size */
        if (size_bytes && size_bytes != s->size_bytes) {
                r = io->resize ? io->resize(ctx, size_bytes) : -ENOTTY;
                if (r < 0) {
                        log_err(r, "Cannot set its size: %m");
                        goto fail;
                }
                s->size_bytes = size_bytes;
        }
        s->valid = 1;
        s->version = COWVOL_STORE_VERSION;
        r = set_geometry(s, chunk_bytes / COWVOL_SECTOR_SIZE);
        if (r < 0)
                goto fail;
        if (s->chunks < COWVOL_STORE_MIN_CHUNKS) {
                r = log_err(-ENOSPC,
                            "Store of %" PRIu64 " bytes is too small: it needs at least %u chunks "
                            "of %" PRIu32 " bytes",
                            s->size_bytes, COWVOL_STORE_MIN_CHUNKS, chunk_bytes);
                goto fail;
        }
        if (s->chunks > CINDEX_MAX_NEW) {
                r = log_err(-EFBIG, "Store of %" PRIu64 " chunks: more than 2^32 chunks is not supported",
                            s->chunks);
                goto fail;
        }
        /* area 0 zeroed and flushed before a header says the store is valid */
        r = io->pwrite(ctx, s->area, s->chunk_bytes, chunk_offset(s, 1));
        if (r >= 0)
                r = io->sync(ctx);
        if (r >= 0) {
                uint8_t *buf = malloc(s->chunk_bytes);
                if (!buf) {
                        r = -ENOMEM;
                        goto fail;
                }
                header_encode(s, buf);
                r = io->pwrite(ctx, buf, s->chunk_bytes, 0);
                free(buf);
        }
        if (r >= 0)
                r = io->sync(ctx);
        if (r < 0) {
                log_err(r, "Cannot write the new store: %m");
                goto fail;
        }
        s->next_free = 2;
        s->prealloc_end = 2ull * s->chunk_bytes;
        preallocate_ahead(s);
        if (ret)
                *ret = s;
        else
                store_free(s);
        return 0;
fail:
        store_free(s);
        return r;
}

static int open_path(const char *path, int oflags, struct fd_ctx **ret)
{
        struct fd_ctx *c = malloc(sizeof(*c));
        struct stat st;

        if (!c)
                return -ENOMEM;
        c->fd = open(path, oflags | O_CLOEXEC, 0600);
        if (c->fd < 0 && errno == EBUSY)
                return free(c), log_err(-EBUSY, "Cannot open it: the device is in use");
        if (c->fd < 0) {
                int r = -errno;
                free(c);
                return log_err(r, "Cannot open it: %m");
        }
        if (fstat(c->fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
                fd_free(c);
                return log_err(-ENOTBLK, "Neither a regular file nor a block device");
        }
        *ret = c;
        return 0;
}

/* a store file in QEMU's terms too: no qemu-io or VM writes it while the
 * store is open for writing (imagelock.c); a block device is O_EXCL */
static int qemu_lock(int fd)
{
        char why[256];
        struct stat st;
        int r;

        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return 0;
        r = cowvol_image_lock(fd, why, sizeof(why));
        return r < 0 ? log_err(r, "Cannot lock it for writing: %s", why) : 0;
}

static bool path_is_blockdev(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0 && S_ISBLK(st.st_mode);
}

_public_ int cowvol_store_create(const char *path, uint32_t chunk_bytes, uint64_t size_bytes,
                                 unsigned flags, cowvol_store **ret)
{
        struct fd_ctx *c;
        bool blk, created = false;
        struct stat st;
        int r;

        if (!path)
                return -EINVAL;
        blk = path_is_blockdev(path);
        if (blk && size_bytes)
                return log_err(-EINVAL, "A block device: its size is the device's, give no size");
        if (!blk && stat(path, &st) < 0) {
                if (errno != ENOENT)
                        return log_err(-errno, "Cannot stat it: %m");
                if (!size_bytes)
                        return log_err(-EINVAL, "Does not exist: give a size to create it");
                created = true;
        }
        /* O_EXCL on a block device: refuse one that is mounted or held */
        r = open_path(path, O_RDWR | (blk ? O_EXCL : O_CREAT), &c);
        if (r < 0)
                return r;
        if (flock(c->fd, LOCK_EX | LOCK_NB) < 0) {
                fd_free(c);
                if (created)
                        unlink(path);
                return log_err(-EBUSY, "Cannot lock it: another process has it open for writing");
        }
        if (!blk && (r = qemu_lock(c->fd)) < 0) {
                fd_free(c);
                if (created)
                        unlink(path);
                return r;
        }
        r = exstore_create_sized_io(&fd_io, c, chunk_bytes, size_bytes, flags, ret);
        if (r < 0 && created)
                unlink(path);
        return r;
}

_public_ int cowvol_store_open(const char *path, unsigned flags, cowvol_store **ret)
{
        struct fd_ctx *c;
        bool rdonly = flags & COWVOL_STORE_RDONLY;
        int r;

        if (!path || !ret)
                return -EINVAL;
        r = open_path(path, rdonly ? O_RDONLY : (O_RDWR | (path_is_blockdev(path) ? O_EXCL : 0)), &c);
        if (r < 0)
                return r;
        /* one writer at a time (a block device is already O_EXCL) */
        if (!rdonly && flock(c->fd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? -EBUSY : -errno;
                fd_free(c);
                return log_err(r, "Cannot lock it for writing: %s",
                               r == -EBUSY ? "another process has it open for writing" : strerror(-r));
        }
        if (!rdonly && (r = qemu_lock(c->fd)) < 0) {
                fd_free(c);
                return r;
        }
        return exstore_open_io(&fd_io, c, flags, ret);
}

_public_ int cowvol_store_check(const char *path, cowvol_fault_fn fn, void *userdata)
{
        struct fd_ctx *c;
        int r;

        if (!path)
                return -EINVAL;
        r = open_path(path, O_RDONLY, &c);
        if (r < 0)
                return r;
        return exstore_check_io(&fd_io, c, fn, userdata);
}

_public_ cowvol_store *cowvol_store_close(cowvol_store *s)
{
        if (!s)
                return NULL;
        if (s->n_pending && cowvol_store_commit(s) < 0)
                cvlog(COWVOL_LOG_ERROR, "Pending exceptions were lost at close");
        store_free(s);
        return NULL;
}

/* --- queries ----------------------------------------------------------------- */

_public_ uint32_t cowvol_store_chunk_size(const cowvol_store *s)
{
        return s->chunk_bytes;
}

_public_ uint32_t cowvol_store_exceptions_per_area(const cowvol_store *s)
{
        return s->epa;
}

_public_ uint64_t cowvol_store_count(const cowvol_store *s)
{
        return cindex_count(&s->index);
}

_public_ uint64_t cowvol_store_chunks(const cowvol_store *s)
{
        return s->chunks;
}

_public_ bool cowvol_store_is_valid(const cowvol_store *s)
{
        return s->valid;
}

_public_ size_t cowvol_store_index_bytes(const cowvol_store *s)
{
        return cindex_bytes(&s->index);
}

/* Chunks an allocation of next_free needs: the chunk itself and, when it is
 * the last data chunk of its area, the metadata chunk after it, which the
 * commit that fills the area has to zero. */
static bool can_allocate(const cowvol_store *s)
{
        uint64_t need = s->next_free + 1;

        if ((s->next_free + 1) % ((uint64_t)s->epa + 1) == 1)
                need++;
        return need <= s->chunks;
}

_public_ uint64_t cowvol_store_capacity(const cowvol_store *s)
{
        uint64_t stride = (uint64_t)s->epa + 1, meta, data;

        if (s->chunks < 3)
                return 0;
        meta = (s->chunks - 2) / stride + 1; /* metadata chunks below s->chunks */
        data = s->chunks - 1 - meta;
        /* the last chunk cannot be allocated if the area after it has no room */
        if (s->chunks % stride == 1)
                data--;
        return data;
}

_public_ bool cowvol_store_is_full(const cowvol_store *s)
{
        return !can_allocate(s);
}

_public_ int cowvol_store_usage(const cowvol_store *s, struct cowvol_store_usage *ret)
{
        if (!s || !ret)
                return -EINVAL;
        ret->allocated_sectors = s->next_free * s->chunk_sectors;
        ret->total_sectors = s->size_bytes / COWVOL_SECTOR_SIZE;
        ret->metadata_sectors = (s->current_area + 2) * s->chunk_sectors;
        return 0;
}

_public_ const char *cowvol_store_status_line(const cowvol_store *s, char *buf, size_t len)
{
        struct cowvol_store_usage u;

        if (!s->valid) {
                snprintf(buf, len, "Invalid");
                return buf;
        }
        cowvol_store_usage(s, &u);
        snprintf(buf, len, "%" PRIu64 "/%" PRIu64 " %" PRIu64, u.allocated_sectors, u.total_sectors,
                 u.metadata_sectors);
        return buf;
}

_public_ int cowvol_store_lookup(const cowvol_store *s, uint64_t old, uint64_t *ret_new)
{
        return cindex_lookup(&s->index, old, ret_new);
}

_public_ size_t cowvol_store_lookup_run(const cowvol_store *s, uint64_t old, size_t max, uint64_t *ret_new)
{
        return cindex_lookup_run(&s->index, old, max ? max : 1, ret_new);
}

size_t exstore_lookup_range(const cowvol_store *s, uint64_t first, size_t n, uint64_t *ret_new)
{
        return cindex_lookup_range(&s->index, first, n, ret_new);
}

/* --- writing ------------------------------------------------------------------ */

static int writable(const cowvol_store *s)
{
        if (s->rdonly)
                return -EROFS;
        if (!s->valid)
                return -ESTALE;
        return 0;
}

#define PREALLOC_STEP (64ull << 20)

/* Keep the blocks ahead of next_free allocated.  A failure (a full disk)
 * stops preallocating; the write that follows reports it. */
static void preallocate_ahead(cowvol_store *s)
{
        uint64_t need = (s->next_free + 2) * s->chunk_bytes, len;

        if (!s->prealloc || need <= s->prealloc_end || s->prealloc_end >= s->size_bytes)
                return;
        len = s->size_bytes - s->prealloc_end < PREALLOC_STEP ? s->size_bytes - s->prealloc_end : PREALLOC_STEP;
        if (s->io->preallocate(s->io_ctx, s->prealloc_end, len) < 0) {
                s->prealloc = false;
                return;
        }
        s->prealloc_end += len;
}

_public_ int cowvol_store_allocate(cowvol_store *s, uint64_t *ret_new)
{
        int r = writable(s);

        if (r < 0)
                return r;
        if (s->merging)
                return -EBUSY;
        if (!can_allocate(s))
                return -ENOSPC;
        preallocate_ahead(s);
        if (s->n_reserved == s->cap_reserved) {
                size_t cap = s->cap_reserved ? s->cap_reserved * 2 : 16;
                uint64_t *p = realloc(s->reserved, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                s->reserved = p;
                s->cap_reserved = cap;
        }
        s->reserved[s->n_reserved++] = s->next_free;
        *ret_new = s->next_free++;
        skip_metadata(s);
        return 0;
}

static int check_data_chunk(const cowvol_store *s, uint64_t chunk)
{
        if (chunk < 2 || chunk >= s->chunks || is_metadata_chunk(s, chunk))
                return -ERANGE;
        return 0;
}

_public_ int cowvol_store_write_chunk(cowvol_store *s, uint64_t new_chunk, const void *buf)
{
        int r = writable(s);

        if (r < 0)
                return r;
        r = check_data_chunk(s, new_chunk);
        if (r < 0)
                return r;
        return s->io->pwrite(s->io_ctx, buf, s->chunk_bytes, chunk_offset(s, new_chunk));
}

_public_ int cowvol_store_write_chunks(cowvol_store *s, uint64_t first, uint64_t n, const void *buf)
{
        int r = writable(s);

        if (r < 0)
                return r;
        if (n == 0)
                return 0;
        if (check_data_chunk(s, first) < 0 || check_data_chunk(s, first + n - 1) < 0 ||
            (first - 1) / ((uint64_t)s->epa + 1) != (first + n - 2) / ((uint64_t)s->epa + 1))
                return -ERANGE; /* outside, or across a metadata chunk */
        r = s->io->pwrite(s->io_ctx, buf, n * s->chunk_bytes, chunk_offset(s, first));
        /* the commit will flush these: have the disk start on long runs now
         * (one call a 4 KiB chunk costs more than it saves: bench/nbd-bench) */
        if (r >= 0 && s->io->writeback && n * s->chunk_bytes >= COWVOL_WRITEBACK_MIN)
                s->io->writeback(s->io_ctx, chunk_offset(s, first), n * s->chunk_bytes);
        return r;
}

_public_ int cowvol_store_read_chunk(const cowvol_store *s, uint64_t new_chunk, void *buf)
{
        int r = check_data_chunk(s, new_chunk);

        if (r < 0)
                return r;
        return s->io->pread(s->io_ctx, buf, s->chunk_bytes, chunk_offset(s, new_chunk));
}

_public_ int cowvol_store_sync(cowvol_store *s)
{
        if (s->rdonly)
                return -EROFS;
        return s->io->sync(s->io_ctx);
}

/* [off, off+len) from the start of data chunk @first may go on into the
 * chunks after it, as long as no metadata chunk lies between. */
static int check_span(const cowvol_store *s, uint64_t first, size_t len, uint64_t off)
{
        uint64_t last;

        if (len == 0 || off >= s->chunk_bytes)
                return -EINVAL;
        last = first + (off + len - 1) / s->chunk_bytes;
        if (check_data_chunk(s, first) < 0 || check_data_chunk(s, last) < 0 ||
            (first - 1) / ((uint64_t)s->epa + 1) != (last - 1) / ((uint64_t)s->epa + 1))
                return -ERANGE;
        return 0;
}

_public_ int cowvol_store_pread(const cowvol_store *s, uint64_t new_chunk, void *buf, size_t len, uint32_t off)
{
        int r = check_span(s, new_chunk, len, off);

        if (r < 0)
                return r;
        return s->io->pread(s->io_ctx, buf, len, chunk_offset(s, new_chunk) + off);
}

ssize_t exstore_pread_cached(const cowvol_store *s, uint64_t new_chunk, void *buf, size_t len, uint32_t off)
{
        int r = check_span(s, new_chunk, len, off);

        if (r < 0)
                return r;
        if (!s->io->pread_cached)
                return 0;
        return s->io->pread_cached(s->io_ctx, buf, len, chunk_offset(s, new_chunk) + off);
}

void exstore_readahead(const cowvol_store *s, uint64_t first, uint64_t n)
{
        /* no further than the chunks in use */
        if (s->io->readahead && first < s->next_free && n)
                s->io->readahead(s->io_ctx, chunk_offset(s, first),
                                 (n < s->next_free - first ? n : s->next_free - first) * s->chunk_bytes);
}

_public_ int cowvol_store_pwrite(cowvol_store *s, uint64_t new_chunk, const void *buf, size_t len, uint32_t off)
{
        int r = writable(s);

        if (r < 0)
                return r;
        r = check_span(s, new_chunk, len, off);
        if (r < 0)
                return r;
        return s->io->pwrite(s->io_ctx, buf, len, chunk_offset(s, new_chunk) + off);
}

_public_ int cowvol_store_foreach_sorted(const cowvol_store *s,
                                         int (*fn)(uint64_t old_chunk, uint64_t new_chunk, void *userdata),
                                         void *userdata)
{
        return cindex_foreach(&s->index, fn, userdata);
}

int exstore_chunk_is_hole(const cowvol_store *s, uint64_t chunk)
{
        if (!s->io->is_hole || check_data_chunk(s, chunk) < 0)
                return 0;
        return s->io->is_hole(s->io_ctx, chunk_offset(s, chunk), s->chunk_bytes);
}

_public_ int cowvol_store_add(cowvol_store *s, uint64_t old, uint64_t new_chunk)
{
        size_t res;
        int r = writable(s);

        if (r < 0)
                return r;
        if (s->merging)
                return -EBUSY;
        if (old > UINT64_MAX / s->chunk_bytes)
                return -ERANGE;
        /* the chunk must be one allocate handed out and nobody has named yet:
         * two exceptions on one chunk make a store the kernel calls corrupt */
        for (res = 0; res < s->n_reserved; res++)
                if (s->reserved[res] == new_chunk)
                        break;
        if (res == s->n_reserved)
                return -EINVAL;
        if (s->n_pending == s->cap_pending) {
                size_t cap = s->cap_pending ? s->cap_pending * 2 : 64;
                struct pending *p = realloc(s->pending, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                s->pending = p;
                s->cap_pending = cap;
        }
        r = cindex_insert(&s->index, old, new_chunk);
        if (r < 0)
                return r;
        s->reserved[res] = s->reserved[--s->n_reserved];
        s->pending[s->n_pending++] = (struct pending){ old, new_chunk };
        return 0;
}

static int write_header(cowvol_store *s)
{
        uint8_t *buf = malloc(s->chunk_bytes);
        int r;

        if (!buf)
                return -ENOMEM;
        header_encode(s, buf);
        r = s->io->pwrite(s->io_ctx, buf, s->chunk_bytes, 0);
        free(buf);
        if (r >= 0)
                r = s->io->sync(s->io_ctx);
        return r;
}

/* Exceptions not committed are forgotten: an invalid store kept as a link
 * shows what its table on disk holds, no more, and its use is what it
 * shows when opened again (the chunks handed out since go back). */
static void drop_pending(cowvol_store *s)
{
        uint64_t first = s->next_free;

        for (size_t i = 0; i < s->n_pending; i++) {
                (void)cindex_remove(&s->index, s->pending[i].old);
                if (s->pending[i].new_chunk < first)
                        first = s->pending[i].new_chunk;
        }
        for (size_t i = 0; i < s->n_reserved; i++)
                if (s->reserved[i] < first)
                        first = s->reserved[i];
        s->next_free = first;
        s->n_pending = 0;
        s->n_reserved = 0;
}

_public_ int cowvol_store_invalidate(cowvol_store *s)
{
        if (s->rdonly)
                return -EROFS;
        drop_pending(s);
        s->valid = 0;
        return write_header(s);
}

_public_ int cowvol_store_set_preallocate(cowvol_store *s, bool on)
{
        uint64_t used;
        int r = 0;

        if (s->rdonly)
                return -EROFS;
        if (on) {
                s->prealloc = s->io->preallocate != NULL;
                return 0;
        }
        s->prealloc = false;
        used = s->next_free * s->chunk_bytes;
        if (s->prealloc_end > used && s->io->punch)
                r = s->io->punch(s->io_ctx, used, s->prealloc_end - used);
        if (r >= 0)
                s->prealloc_end = used;
        return r == -EOPNOTSUPP ? 0 : r;
}

static int area_write(cowvol_store *s)
{
        return s->io->pwrite(s->io_ctx, s->area, s->chunk_bytes, chunk_offset(s, area_location(s, s->current_area)));
}

/*
 * A group commit touches the current area and, when it fills, the areas
 * after it.  Order: (1) flush the data; (2) write the later areas, and zero
 * the area after the last one if that one is full; flush; (3) write the
 * current area; flush.  A reader stops at the first area that is not full,
 * so until (3) lands it sees the old table; after it, areas that (2) made
 * durable.  Three flushes however many areas, two when only one is touched.
 *
 * A commit is three steps, so that the engine can run the I/O on a thread
 * of its own while new copies go on (engine.c, "the pipeline"): seal takes
 * the pending exceptions and lays out the areas to write (the store's lock
 * holder, nothing written); write does the I/O of the order above through
 * the I/O layer alone (any thread, touching no other part of the store);
 * finish, back with the lock holder, makes the areas the store's state, or
 * on failure forgets the batch's exceptions.  Exceptions added after seal
 * are pending for the next commit, whose data goes to chunks of its own; a
 * store's commits run one at a time, in order, each sealed after the one
 * before finished (the areas of the next start from what it wrote).
 */
struct exstore_batch {
        cowvol_store *s;
        const struct store_io *io;
        void *io_ctx;
        struct pending *ents;
        size_t n;
        int r;             /* found while sealing (-ENOSPC): nothing is written */
        size_t n_areas;    /* [0]: the current area; then the later ones, the last maybe zeroes */
        uint8_t *areas;
        uint64_t *offs;
        bool later;
        uint64_t last_area; /* the last area with entries, and its slots */
        uint32_t last_slot;
};

static struct exstore_batch *batch_free(struct exstore_batch *b)
{
        if (b) {
                free(b->ents);
                free(b->areas);
                free(b->offs);
                free(b);
        }
        return NULL;
}

int exstore_commit_seal(cowvol_store *s, struct exstore_batch **ret)
{
        size_t n = s->n_pending, i = 0, max_areas;
        uint64_t area;
        uint32_t slot;
        struct exstore_batch *b;
        uint8_t *a;
        int r = writable(s);

        if (r < 0)
                return r;
        if (n == 0) {
                *ret = NULL;
                return 0;
        }
        /* the current area, the later ones, and one of zeroes */
        max_areas = 2 + (n + s->epa - 1) / s->epa;
        b = calloc(1, sizeof(*b));
        if (!b || !(b->areas = malloc(max_areas * s->chunk_bytes)) || !(b->offs = malloc(max_areas * sizeof(*b->offs)))) {
                batch_free(b);
                return -ENOMEM;
        }
        b->s = s;
        b->io = s->io;
        b->io_ctx = s->io_ctx;
        b->ents = s->pending;
        b->n = n;
        s->pending = NULL;
        s->n_pending = s->cap_pending = 0;

        a = b->areas;
        memcpy(a, s->area, s->chunk_bytes);
        b->offs[0] = chunk_offset(s, area_location(s, s->current_area));
        b->n_areas = 1;
        slot = s->current_committed;
        for (; i < n && slot < s->epa; i++)
                area_set(a, slot++, b->ents[i].old, b->ents[i].new_chunk);
        area = s->current_area;
        if (slot == s->epa) {
                b->later = true;
                while (i < n) {
                        area++;
                        if (area_location(s, area) >= s->chunks) {
                                b->r = -ENOSPC;
                                break;
                        }
                        a = b->areas + b->n_areas * s->chunk_bytes;
                        memset(a, 0, s->chunk_bytes);
                        for (slot = 0; i < n && slot < s->epa; i++)
                                area_set(a, slot++, b->ents[i].old, b->ents[i].new_chunk);
                        b->offs[b->n_areas++] = chunk_offset(s, area_location(s, area));
                }
                /* a reader going past the last full area must find zeros */
                if (!b->r && slot == s->epa) {
                        if (area_location(s, area + 1) >= s->chunks) {
                                b->r = -ENOSPC;
                        } else {
                                memset(b->areas + b->n_areas * s->chunk_bytes, 0, s->chunk_bytes);
                                b->offs[b->n_areas++] = chunk_offset(s, area_location(s, area + 1));
                        }
                }
        }
        b->last_area = area;
        b->last_slot = slot;
        *ret = b;
        return 1;
}

int exstore_commit_write(struct exstore_batch *b)
{
        uint32_t cb = b->s->chunk_bytes;
        int r = b->r;

        /* 1: the data of every pending exception is durable first */
        if (r >= 0)
                r = b->io->sync(b->io_ctx);
        if (r >= 0 && b->later) {
                /* 2: the areas after the current one */
                for (size_t k = 1; k < b->n_areas && r >= 0; k++)
                        r = b->io->pwrite(b->io_ctx, b->areas + k * cb, cb, b->offs[k]);
                if (r >= 0)
                        r = b->io->sync(b->io_ctx);
        }
        /* 3: the current area */
        if (r >= 0)
                r = b->io->pwrite(b->io_ctx, b->areas, cb, b->offs[0]);
        if (r >= 0)
                r = b->io->sync(b->io_ctx);
        return r;
}

int exstore_commit_finish(struct exstore_batch *b, int r, bool keep_valid)
{
        cowvol_store *s = b->s;
        size_t n = b->n;

        if (r >= 0) {
                if (!b->later) {
                        memcpy(s->area, b->areas, s->chunk_bytes);
                        s->current_committed = b->last_slot;
                } else if (b->last_slot == s->epa) {
                        /* the last area written becomes the current one */
                        s->current_area = b->last_area + 1;
                        s->current_committed = 0;
                        memset(s->area, 0, s->chunk_bytes);
                } else {
                        s->current_area = b->last_area;
                        s->current_committed = b->last_slot;
                        memcpy(s->area, b->areas + (b->n_areas - 1) * s->chunk_bytes, s->chunk_bytes);
                }
                batch_free(b);
                return (int)(n > INT32_MAX ? INT32_MAX : n);
        }
        /* the batch's entries are forgotten, and what was added since:
         * every entry that reached the disk names flushed data, and the
         * area in memory is still the one before the batch */
        for (size_t i = 0; i < n; i++)
                (void)cindex_remove(&s->index, b->ents[i].old);
        batch_free(b);
        drop_pending(s);
        if (keep_valid)
                return log_err(r, "Cannot commit exceptions; they are forgotten, the store stays valid: %m");
        /* as the kernel: an exception that cannot be recorded invalidates */
        log_err(r, "Cannot commit exceptions, the snapshot is now invalid: %m");
        if (s->valid) {
                s->valid = 0;
                (void)write_header(s);
        }
        return r;
}

static int commit(cowvol_store *s, bool keep_valid)
{
        struct exstore_batch *b;
        int r = exstore_commit_seal(s, &b);

        if (r <= 0)
                return r;
        return exstore_commit_finish(b, exstore_commit_write(b), keep_valid);
}

_public_ int cowvol_store_commit(cowvol_store *s)
{
        return commit(s, false);
}

int exstore_commit_or_forget(cowvol_store *s)
{
        return commit(s, true);
}

/* --- size ----------------------------------------------------------------------- */

_public_ int64_t cowvol_store_refresh_size(cowvol_store *s)
{
        uint64_t size;
        int r = s->io->size(s->io_ctx, &size);

        if (r < 0)
                return r;
        if (size / s->chunk_bytes < s->next_free)
                return log_err(-EFBIG, "The store shrank below what it uses (%" PRIu64 " chunks)",
                               s->next_free);
        if (size / s->chunk_bytes > CINDEX_MAX_NEW)
                return log_err(-EFBIG, "Store of more than 2^32 chunks is not supported");
        s->size_bytes = size;
        s->chunks = size / s->chunk_bytes;
        return (int64_t)s->chunks;
}

_public_ int cowvol_store_grow(cowvol_store *s, uint64_t size_bytes)
{
        int64_t c;
        int r;

        if (s->rdonly)
                return -EROFS;
        if (size_bytes / s->chunk_bytes > CINDEX_MAX_NEW)
                return log_err(-EFBIG, "Store of more than 2^32 chunks is not supported");
        if (size_bytes <= s->size_bytes)
                return 0;
        if (!s->io->resize)
                return -ENOTTY;
        r = s->io->resize(s->io_ctx, size_bytes);
        if (r < 0)
                return r;
        c = cowvol_store_refresh_size(s);
        return c < 0 ? (int)c : 0;
}

/* --- room for copies (chain.c) ------------------------------------------------ */

bool exstore_table_read(const cowvol_store *s)
{
        return s->valid || s->link;
}

uint64_t exstore_chunks_for(const cowvol_store *s, uint64_t n)
{
        uint64_t stride = (uint64_t)s->epa + 1, nf = s->next_free, idx, last, need;

        if (n == 0)
                return 0;
        if (is_metadata_chunk(s, nf))
                nf++;
        /* the data chunks in allocation order: index a * epa + (o - 1) is
         * chunk 1 + a * stride + o, o from 1 to epa */
        idx = (nf - 1) / stride * s->epa + (nf - 1) % stride - 1;
        if (n - 1 > UINT64_MAX / 2 - idx)
                return UINT64_MAX;
        idx += n - 1;
        last = 1 + idx / s->epa * stride + idx % s->epa + 1;
        need = last + 1;
        /* the last data chunk of an area: the commit that fills the area
         * zeroes the next one (can_allocate's rule) */
        if (need % stride == 1)
                need++;
        return need;
}

void exstore_forget_pending(cowvol_store *s)
{
        drop_pending(s);
}

/* Back to @size bytes (a growth undone); errors are the caller's already. */
static void shrink_back(cowvol_store *s, uint64_t size)
{
        if (s->size_bytes > size && s->io->resize && s->io->resize(s->io_ctx, size) >= 0)
                (void)cowvol_store_refresh_size(s);
}

int exstore_make_room(cowvol_store *s, uint64_t n, uint64_t slack)
{
        uint64_t need = exstore_chunks_for(s, n), old_size = s->size_bytes, start, end;
        int r = writable(s);

        if (r < 0 || n == 0)
                return r;
        if (need > CINDEX_MAX_NEW)
                return log_err(-ENOSPC, "%" PRIu64 " more chunks would make a store of more than 2^32 chunks", n);
        if (need > s->chunks) {
                if (!s->io->resize)
                        return log_err(-ENOSPC, "The store has %" PRIu64 " bytes and needs %" PRIu64
                                       " to take %" PRIu64 " more chunks, and it cannot grow", s->size_bytes,
                                       need * s->chunk_bytes, n);
                r = -EFBIG;
                /* the slack is sparse: it costs no space until used */
                if (slack && slack <= CINDEX_MAX_NEW - need)
                        r = s->io->resize(s->io_ctx, (need + slack) * s->chunk_bytes);
                if (r < 0)
                        r = s->io->resize(s->io_ctx, need * s->chunk_bytes);
                if (r == -ENOTTY)
                        return log_err(-ENOSPC, "The store has %" PRIu64 " bytes and needs %" PRIu64
                                       " to take %" PRIu64 " more chunks, and it cannot grow (a block device)",
                                       s->size_bytes, need * s->chunk_bytes, n);
                if (r < 0) {
                        shrink_back(s, old_size);
                        return log_err(-ENOSPC, "The store has %" PRIu64 " bytes and needs %" PRIu64
                                       " to take %" PRIu64 " more chunks; it cannot grow: %s", s->size_bytes,
                                       need * s->chunk_bytes, n, strerror(-r));
                }
                int64_t c = cowvol_store_refresh_size(s);
                if (c < 0) {
                        shrink_back(s, old_size);
                        return (int)c;
                }
        }
        /* the blocks the copies and their metadata areas will use, now: a
         * full filesystem refuses here, not halfway (a commit that fails
         * would invalidate the store) */
        start = s->next_free * s->chunk_bytes;
        end = need * s->chunk_bytes;
        if (s->io->preallocate && end > start) {
                r = s->io->preallocate(s->io_ctx, start, end - start);
                if (r < 0 && r != -EOPNOTSUPP) {
                        if (s->io->punch)
                                (void)s->io->punch(s->io_ctx, start, end - start);
                        shrink_back(s, old_size);
                        return log_err(-ENOSPC, "No room for %" PRIu64 " more chunks (%" PRIu64
                                       " bytes with their metadata): %s", n, end - start, strerror(-r));
                }
        }
        return 0;
}

/* --- merging -------------------------------------------------------------------- */

/* A merge may take entries now: the store stops allocating from here on. */
static int merge_enter(cowvol_store *s)
{
        int r = writable(s);

        if (r < 0)
                return r;
        if (s->merge_failed)
                return -EIO;
        if (s->n_pending)
                return -EBUSY;
        s->merging = true;
        return 0;
}

_public_ int cowvol_store_merge_prepare(cowvol_store *s, uint64_t *ret_old, uint64_t *ret_new)
{
        uint64_t last_old, last_new;
        uint32_t n;
        int r = merge_enter(s);

        if (r < 0)
                return r;
        if (s->current_committed == 0) {
                if (s->current_area == 0)
                        return 0; /* nothing left */
                /* step back only once the previous area is read */
                r = s->io->pread(s->io_ctx, s->area, s->chunk_bytes,
                                 chunk_offset(s, area_location(s, s->current_area - 1)));
                if (r < 0) {
                        s->merge_failed = true;
                        return log_err(r, "Cannot read metadata area %" PRIu64 " to merge it: %m",
                                       s->current_area - 1);
                }
                s->current_area--;
                s->current_committed = s->epa;
        }
        area_get(s->area, s->current_committed - 1, &last_old, &last_new);
        for (n = 1; n < s->current_committed; n++) {
                uint64_t o, w;
                area_get(s->area, s->current_committed - 1 - n, &o, &w);
                if (o != last_old - n || w != last_new - n)
                        break;
        }
        *ret_old = last_old + 1 - n;
        *ret_new = last_new + 1 - n;
        return (int)n;
}

_public_ int cowvol_store_merge_commit(cowvol_store *s, int n)
{
        int i, r = writable(s);

        if (r < 0)
                return r;
        if (s->merge_failed)
                return -EIO;
        if (!s->merging || n <= 0 || (uint32_t)n > s->current_committed)
                return -EINVAL;
        for (i = 0; i < n; i++) {
                uint64_t o, w;
                uint32_t slot = s->current_committed - 1 - (uint32_t)i;
                area_get(s->area, slot, &o, &w);
                (void)cindex_remove(&s->index, o);
                area_set(s->area, slot, 0, 0);
        }
        /* the caller flushed the origin; the cleared entries go with a flush */
        r = s->io->sync(s->io_ctx);
        if (r >= 0)
                r = area_write(s);
        if (r >= 0)
                r = s->io->sync(s->io_ctx);
        if (r < 0) {
                /* the area in memory no longer matches the disk: stop, as
                 * the kernel's merge does; reopening resumes from the disk */
                s->merge_failed = true;
                return log_err(r, "Cannot write the merged area: %m");
        }
        s->current_committed -= (uint32_t)n;
        s->next_free = area_location(s, s->current_area) + s->current_committed + 1;
        return 0;
}

/* Many runs at once: the last entries of the table, across areas, with one
 * write of each area they held and two flushes for all (steps of many MiB
 * rather than a run, at most one area, at a time). */
ssize_t exstore_merge_peek(cowvol_store *s, size_t max, struct exstore_entry *out)
{
        uint64_t area = s->current_area;
        uint32_t slot = s->current_committed;
        uint8_t *tmp = NULL;
        const uint8_t *a = s->area;
        size_t n = 0;
        int r = merge_enter(s);

        if (r < 0)
                return r;
        while (n < max) {
                if (slot == 0) {
                        if (area == 0)
                                break; /* the start of the table */
                        if (!tmp && !(tmp = malloc(s->chunk_bytes))) {
                                r = -ENOMEM;
                                break;
                        }
                        r = s->io->pread(s->io_ctx, tmp, s->chunk_bytes, chunk_offset(s, area_location(s, area - 1)));
                        if (r < 0) {
                                log_err(r, "Cannot read metadata area %" PRIu64 " to merge it: %m", area - 1);
                                break;
                        }
                        a = tmp;
                        area--;
                        slot = s->epa;
                }
                slot--;
                area_get(a, slot, &out[n].old, &out[n].new_chunk);
                n++;
        }
        free(tmp);
        return r < 0 ? r : (ssize_t)n;
}

int exstore_merge_clear(cowvol_store *s, size_t n)
{
        int r = writable(s);

        if (r < 0)
                return r;
        if (s->merge_failed)
                return -EIO;
        if (!s->merging)
                return -EINVAL;
        /* the caller flushed the origin; the cleared entries go with a flush */
        r = s->io->sync(s->io_ctx);
        while (r >= 0 && n > 0) {
                uint64_t o, w;
                if (s->current_committed == 0) {
                        if (s->current_area == 0) {
                                r = -EINVAL; /* more than the table holds */
                                break;
                        }
                        /* this area is empty now; the one before it goes on */
                        r = area_write(s);
                        if (r >= 0)
                                r = s->io->pread(s->io_ctx, s->area, s->chunk_bytes,
                                                 chunk_offset(s, area_location(s, s->current_area - 1)));
                        if (r < 0)
                                break;
                        s->current_area--;
                        s->current_committed = s->epa;
                }
                s->current_committed--;
                area_get(s->area, s->current_committed, &o, &w);
                (void)cindex_remove(&s->index, o);
                area_set(s->area, s->current_committed, 0, 0);
                n--;
        }
        if (r >= 0)
                r = area_write(s);
        if (r >= 0)
                r = s->io->sync(s->io_ctx);
        if (r < 0) {
                /* the table in memory no longer matches the disk: stop, as
                 * the kernel's merge does; reopening resumes from the disk */
                s->merge_failed = true;
                return log_err(r, "Cannot write the merged areas: %m");
        }
        s->next_free = area_location(s, s->current_area) + s->current_committed + 1;
        return 0;
}

/* --- walking the table ----------------------------------------------------------- */

_public_ int cowvol_store_foreach(const cowvol_store *s, cowvol_exception_fn fn, void *userdata)
{
        uint8_t *buf;
        uint64_t area;
        int r = 0;

        if (!s->valid && !s->link)
                return 0;
        buf = malloc(s->chunk_bytes);
        if (!buf)
                return -ENOMEM;
        for (area = 0; area <= s->current_area && r == 0; area++) {
                uint32_t slot;

                if (area == s->current_area) {
                        memcpy(buf, s->area, s->chunk_bytes);
                        /* pending entries are not in the table yet */
                        memset(buf + (size_t)s->current_committed * sizeof(struct disk_exception), 0,
                               (size_t)(s->epa - s->current_committed) * sizeof(struct disk_exception));
                } else {
                        r = s->io->pread(s->io_ctx, buf, s->chunk_bytes,
                                         chunk_offset(s, area_location(s, area)));
                        if (r < 0)
                                break;
                }
                for (slot = 0; slot < s->epa; slot++) {
                        struct cowvol_exception e = { .area = area, .slot = slot };
                        area_get(buf, slot, &e.old_chunk, &e.new_chunk);
                        if (e.new_chunk == 0)
                                break;
                        r = fn(&e, userdata);
                        if (r)
                                break;
                }
        }
        free(buf);
        return r;
}
