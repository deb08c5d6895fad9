/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot's content without a kernel: the origin, overlaid chunk by
 * chunk by the store's exceptions.  This is what the kernel's snapshot
 * device reads.  Holes of a sparse origin stay holes in a file output.
 * In a chain (chain.c) the stores from the newest down to the snapshot's
 * own overlay it in turn, each chunk written once: from the first store,
 * counted from the snapshot's, that has it.
 */
#include <fcntl.h>
#include <linux/falloc.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define COPY_BUF (1u << 20)

/* Copy [off, off+len) from @in to @out; all-zero blocks are skipped when
 * @out is a fresh file (they read back as zero). */
static int copy_range(int in, int out, uint64_t off, uint64_t len, bool out_fresh, uint8_t *buf)
{
        while (len > 0) {
                size_t n = len > COPY_BUF ? COPY_BUF : (size_t)len;
                int r = pread_full(in, buf, n, off);
                if (r < 0)
                        return r;
                if (!(out_fresh && mem_is_zero(buf, n))) {
                        r = pwrite_full(out, buf, n, off);
                        if (r < 0)
                                return r;
                }
                off += n;
                len -= n;
        }
        return 0;
}

/* Copy the origin's data extents (SEEK_DATA/SEEK_HOLE where it has them);
 * an output that is not a fresh file gets every byte, holes as zeros. */
static int copy_origin(int in, int out, uint64_t size, bool out_fresh, uint8_t *buf)
{
        uint64_t pos = 0;

        if (!out_fresh)
                return copy_range(in, out, 0, size, false, buf);

        while (pos < size) {
                off_t d = lseek(in, (off_t)pos, SEEK_DATA), h;
                if (d < 0) {
                        if (errno == ENXIO)
                                return 0; /* only a hole is left */
                        /* no SEEK_DATA here (a block device): copy it all */
                        return copy_range(in, out, pos, size - pos, out_fresh, buf);
                }
                h = lseek(in, d, SEEK_HOLE);
                if (h < 0 || (uint64_t)h > size)
                        h = (off_t)size;
                if ((uint64_t)d >= size)
                        return 0;
                int r = copy_range(in, out, (uint64_t)d, (uint64_t)(h - d), out_fresh, buf);
                if (r < 0)
                        return r;
                pos = (uint64_t)h;
        }
        return 0;
}

struct overlay {
        const cowvol_store *s;
        /* the older stores of the chain: a chunk one of them has is theirs */
        cowvol_store *const *older;
        size_t n_older;
        int out;
        uint64_t size;
        uint8_t *buf;
        bool fresh;
};

static int overlay_one(const struct cowvol_exception *e, void *userdata)
{
        struct overlay *o = userdata;
        uint64_t cb = cowvol_store_chunk_size(o->s), off = e->old_chunk * cb, len, ignored;
        int r;

        if (off >= o->size)
                return 0; /* beyond the origin: the snapshot device does not show it */
        for (size_t i = 0; i < o->n_older; i++)
                if (cowvol_store_lookup(o->older[i], e->old_chunk, &ignored) == 1)
                        return 0;
        len = o->size - off < cb ? o->size - off : cb;
        /* a sparse store's hole over a fresh file's hole: nothing to copy */
        if (o->fresh && exstore_chunk_is_hole(o->s, e->new_chunk) &&
            (fd_range_is_hole(o->out, off, len) ||
             fallocate(o->out, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0))
                return 0;
        r = cowvol_store_read_chunk(o->s, e->new_chunk, o->buf);
        if (r < 0)
                return log_err(r, "Cannot read store chunk %" PRIu64 ": %m", e->new_chunk);
        r = pwrite_full(o->out, o->buf, (size_t)len, off);
        if (r < 0)
                return log_err(r, "Cannot write the view at offset %" PRIu64 ": %m", off);
        return 0;
}

_public_ int cowvol_chain_view(cowvol_store *const *stores, size_t n, const char *origin, const char *output)
{
        _cleanup_close_ int in = -1, out = -1;
        _cleanup_free_ uint8_t *buf = NULL;
        struct stat st;
        uint64_t size;
        bool fresh;
        int r;

        uint32_t cb;

        if (!stores || n == 0 || !origin || !output)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!stores[i])
                        return -EINVAL;
        if (!cowvol_store_is_valid(stores[0]))
                return log_err(-ESTALE, "The store is marked invalid: the snapshot has no content to show");
        cb = cowvol_store_chunk_size(stores[0]);
        for (size_t i = 1; i < n; i++) {
                if (cowvol_store_chunk_size(stores[i]) != cb)
                        return log_err(-EINVAL, "Newer store %zu has chunks of %" PRIu32 " bytes, the snapshot's "
                                       "store %" PRIu32 ": not one chain", i, cowvol_store_chunk_size(stores[i]), cb);
                if (!exstore_table_read(stores[i]))
                        return log_err(-EINVAL, "Newer store %zu is invalid and was not opened as a link "
                                       "(COWVOL_STORE_LINK): its exceptions are unknown", i);
        }
        in = open(origin, O_RDONLY | O_CLOEXEC);
        if (in < 0)
                return log_err(-errno, "Cannot open origin %s: %m", origin);
        r = fd_size(in, &size);
        if (r < 0)
                return log_err(r, "Cannot get the size of origin %s: %m", origin);
        if (stat(output, &st) == 0 && S_ISBLK(st.st_mode)) {
                out = open(output, O_WRONLY | O_CLOEXEC | O_EXCL);
                fresh = false;
        } else {
                out = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                fresh = true;
        }
        if (out < 0)
                return log_err(-errno, "Cannot open output %s: %m", output);
        if (fresh && ftruncate(out, (off_t)size) < 0)
                return log_err(-errno, "Cannot size output %s: %m", output);
        buf = malloc(COPY_BUF > cb ? COPY_BUF : cb);
        if (!buf)
                return -ENOMEM;
        r = copy_origin(in, out, size, fresh, buf);
        if (r < 0)
                return log_err(r, "Cannot copy origin %s: %m", origin);
        /* the newest first; each chunk once, from the oldest store that has it */
        for (size_t i = n; i-- > 0;) {
                r = cowvol_store_foreach(stores[i], overlay_one,
                                         &(struct overlay){ stores[i], stores, i, out, size, buf, fresh });
                if (r < 0)
                        return r;
        }
        if (fsync(out) < 0)
                return log_err(-errno, "Cannot flush output %s: %m", output);
        return 0;
}

_public_ int cowvol_store_view(const cowvol_store *s, const char *origin, const char *output)
{
        /* one store is a chain of one; it is only read */
        cowvol_store *chain[1] = { (cowvol_store *)s };

        return cowvol_chain_view(chain, 1, origin, output);
}
