/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot chains (shared/DESIGN.md, "Snapshot chains").  The stores of a
 * volume's snapshots S1 (oldest) .. Sn (newest) form a chain:
 *
 *     view(Si, c) = Si's chunk for c    if Si has an exception for c
 *                 = view(Si+1, c)       otherwise      (view(Sn+1) = origin)
 *
 * An invalid store (valid=0) stays a link of the chain: opened with
 * COWVOL_STORE_LINK its table is read, and older snapshots read through it.
 *
 * Standalone stores.  The kernel's snapshot-origin copies into every
 * snapshot, so under the kernel each store must hold its whole view's
 * differences from the origin: the union of its own and every newer
 * store's exceptions.  cowvol_store_copy_missing() copies into Si the
 * exceptions of Si+1 that Si lacks, with Si+1's data; done from Sn-1 down to
 * S1 (cowvol_chain_make_standalone), each store then holds the union.
 *
 * Crash safety.  For an origin chunk c that Si lacks, view(Si, c) is
 * view(Si+1, c), which is Si+1's chunk when Si+1 has it.  So every chunk
 * copied equals what Si shows already: adding it changes no snapshot's
 * content, whether or not it became durable (and a commit that fails
 * forgets them rather than invalidating the store).  The copies go in the
 * store's own order (cowvol_store_commit): data written and flushed, then
 * the metadata areas; 64 MiB of copies a group (chain_commit_bytes).  A
 * cut anywhere leaves every view as it was, and running again copies only
 * what is still missing.
 *
 * Room.  Before the first copy the store grows to hold them all (and a
 * sparse fifth more, so that it does not fill at the next copy after) and
 * the blocks they will use are allocated (exstore_make_room): a full
 * filesystem refuses then, with the store as it was, rather than halfway
 * through a commit, which would invalidate it.
 */
#include <inttypes.h>
#include <string.h>

#include "internal.h"

/* a commit after so many bytes of copies (tests lower it); a write of at
 * most COPY_BYTES */
uint64_t chain_commit_bytes = 64u << 20;
#define COPY_BYTES (1u << 20)

/* origin chunk -> store chunk of the newer store, sorted by origin chunk */
struct missing {
        uint64_t old, src;
};

struct collect {
        const cowvol_store *older;
        struct missing *v;
        size_t n, cap;
};

static int collect_one(uint64_t old, uint64_t nw, void *userdata)
{
        struct collect *c = userdata;
        uint64_t ignored;

        if (cowvol_store_lookup(c->older, old, &ignored) == 1)
                return 0;
        if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 1024;
                struct missing *p = realloc(c->v, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                c->v = p;
                c->cap = cap;
        }
        c->v[c->n++] = (struct missing){ old, nw };
        return 0;
}

static int check_pair(const cowvol_store *older, const cowvol_store *newer)
{
        if (!older || !newer || older == newer)
                return -EINVAL;
        if (cowvol_store_chunk_size(older) != cowvol_store_chunk_size(newer))
                return log_err(-EINVAL, "The stores of one chain have different chunk sizes (%" PRIu32 " and %" PRIu32
                               " bytes)", cowvol_store_chunk_size(older), cowvol_store_chunk_size(newer));
        if (!exstore_table_read(newer))
                return log_err(-EINVAL, "A newer store is invalid and was not opened as a link "
                               "(COWVOL_STORE_LINK): its exceptions are unknown");
        return 0;
}

/* Write the batch of @n chunks at store chunks first.. and record their
 * exceptions (pending until the commit). */
static int batch_flush(cowvol_store *s, const struct missing *m, const uint64_t *dst, size_t n, const uint8_t *buf)
{
        int r;

        if (n == 0)
                return 0;
        r = cowvol_store_write_chunks(s, dst[0], n, buf);
        if (r < 0)
                return log_err(r, "Cannot write the copies at store chunk %" PRIu64 ": %m", dst[0]);
        for (size_t i = 0; i < n; i++) {
                r = cowvol_store_add(s, m[i].old, dst[i]);
                if (r < 0)
                        return log_err(r, "Cannot record the copy of origin chunk %" PRIu64 ": %m", m[i].old);
        }
        return 0;
}

static int copy_all(cowvol_store *older, const cowvol_store *newer, const struct missing *m, size_t n)
{
        uint32_t cb = cowvol_store_chunk_size(older);
        size_t per_write = COPY_BYTES / cb ? COPY_BYTES / cb : 1, held = 0;
        size_t per_commit = chain_commit_bytes / cb ? (size_t)(chain_commit_bytes / cb) : 1;
        size_t first = 0, k = 0; /* the batch: m[first..first+k) at dst[0..k) */
        _cleanup_free_ uint8_t *buf = malloc((size_t)cb * per_write);
        _cleanup_free_ uint64_t *dst = malloc(per_write * sizeof(*dst));
        int r = 0;

        if (!buf || !dst)
                return -ENOMEM;
        if (per_write > per_commit)
                per_write = per_commit;
        for (size_t i = 0; i < n; i++) {
                uint64_t nw;
                r = cowvol_store_allocate(older, &nw);
                if (r < 0) {
                        log_err(r, "Cannot allocate a chunk for origin chunk %" PRIu64 ": %m", m[i].old);
                        break;
                }
                /* a batch is one run of store chunks (no metadata chunk inside) */
                if (k && (k == per_write || nw != dst[k - 1] + 1)) {
                        r = batch_flush(older, m + first, dst, k, buf);
                        if (r < 0)
                                break;
                        held += k;
                        first = i;
                        k = 0;
                }
                if (k == 0)
                        first = i;
                r = cowvol_store_read_chunk(newer, m[i].src, buf + (size_t)k * cb);
                if (r < 0) {
                        log_err(r, "Cannot read chunk %" PRIu64 " of the newer store: %m", m[i].src);
                        break;
                }
                dst[k++] = nw;
                if (held >= per_commit) {
                        r = exstore_commit_or_forget(older);
                        if (r < 0)
                                return r; /* forgotten; the store stays valid */
                        held = 0;
                }
        }
        if (r >= 0)
                r = batch_flush(older, m + first, dst, k, buf);
        if (r < 0) {
                /* what was committed stands; the rest is redone by the next run */
                exstore_forget_pending(older);
                return r;
        }
        r = exstore_commit_or_forget(older);
        return r < 0 ? r : 0;
}

_public_ int cowvol_store_copy_missing(cowvol_store *older, const cowvol_store *newer,
                                       struct cowvol_chain_copy *ret)
{
        struct collect c = { .older = older };
        uint64_t size_before, n;
        int r = check_pair(older, newer);

        if (r < 0)
                return r;
        if (!cowvol_store_is_valid(older))
                return log_err(-ESTALE, "The store to copy into is invalid: it is a link of the chain, never written");
        size_before = cowvol_store_chunks(older) * cowvol_store_chunk_size(older);
        r = cowvol_store_foreach_sorted(newer, collect_one, &c);
        if (r < 0) {
                free(c.v);
                return r;
        }
        n = c.n;
        r = exstore_make_room(older, n, exstore_chunks_for(older, n) / 5);
        if (r >= 0 && n)
                r = copy_all(older, newer, c.v, c.n);
        free(c.v);
        if (r < 0)
                return r;
        log_debug("Copied %" PRIu64 " chunks from the newer store", n);
        if (ret) {
                uint64_t size = cowvol_store_chunks(older) * cowvol_store_chunk_size(older);
                *ret = (struct cowvol_chain_copy){
                        .chunks = n,
                        .bytes = n * cowvol_store_chunk_size(older),
                        .grow_bytes = size - size_before,
                };
        }
        return 0;
}

static int check_chain(cowvol_store *const *stores, size_t n)
{
        if (!stores || n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!stores[i])
                        return -EINVAL;
                if (i && cowvol_store_chunk_size(stores[i]) != cowvol_store_chunk_size(stores[0]))
                        return log_err(-EINVAL, "The stores of one chain have different chunk sizes (%" PRIu32
                                       " and %" PRIu32 " bytes)", cowvol_store_chunk_size(stores[0]),
                                       cowvol_store_chunk_size(stores[i]));
                if (!exstore_table_read(stores[i]))
                        return log_err(-EINVAL, "Store %zu of the chain is invalid and was not opened as a link "
                                       "(COWVOL_STORE_LINK): its exceptions are unknown", i + 1);
        }
        return 0;
}

_public_ int cowvol_chain_make_standalone(cowvol_store *const *stores, size_t n, struct cowvol_chain_copy *ret)
{
        _cleanup_free_ struct cowvol_chain_copy *done = NULL;
        int r = check_chain(stores, n);

        if (r < 0)
                return r;
        done = calloc(n, sizeof(*done));
        if (!done)
                return -ENOMEM;
        for (size_t i = n - 1; i-- > 0;) {
                if (!cowvol_store_is_valid(stores[i]))
                        continue; /* a link: read through, never written */
                /* the next newer store holds everything newer once it is
                 * standalone; an invalid one was not made so: go on past it */
                for (size_t j = i + 1; j < n; j++) {
                        struct cowvol_chain_copy one;
                        r = cowvol_store_copy_missing(stores[i], stores[j], &one);
                        if (r < 0)
                                return r;
                        done[i].chunks += one.chunks;
                        done[i].bytes += one.bytes;
                        done[i].grow_bytes += one.grow_bytes;
                        if (cowvol_store_is_valid(stores[j]))
                                break;
                }
        }
        if (ret)
                memcpy(ret, done, n * sizeof(*ret));
        return 0;
}

/* --- counting -------------------------------------------------------------- */

struct sorted {
        uint64_t *v;
        size_t n, cap;
};

static int sorted_push(uint64_t old, uint64_t nw, void *userdata)
{
        struct sorted *s = userdata;

        (void)nw;
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 1024;
                uint64_t *p = realloc(s->v, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                s->v = p;
                s->cap = cap;
        }
        s->v[s->n++] = old;
        return 0;
}

/* @u becomes the union of @u and @add, both sorted without repeats. */
static int sorted_merge(struct sorted *u, const struct sorted *add)
{
        uint64_t *out = malloc((u->n + add->n ? u->n + add->n : 1) * sizeof(*out));
        size_t i = 0, j = 0, k = 0;

        if (!out)
                return -ENOMEM;
        while (i < u->n || j < add->n) {
                if (j >= add->n || (i < u->n && u->v[i] < add->v[j]))
                        out[k++] = u->v[i++];
                else if (i >= u->n || add->v[j] < u->v[i])
                        out[k++] = add->v[j++];
                else
                        out[k++] = u->v[i++], j++;
        }
        free(u->v);
        u->v = out;
        u->n = k;
        u->cap = u->n + add->n ? u->n + add->n : 1;
        return 0;
}

_public_ int cowvol_chain_count_standalone(cowvol_store *const *stores, size_t n, struct cowvol_chain_copy *ret)
{
        _cleanup_free_ struct cowvol_chain_copy *plan = NULL;
        struct sorted u = {}, add = {};
        int r = check_chain(stores, n);

        if (r < 0)
                return r;
        plan = calloc(n, sizeof(*plan));
        if (!plan)
                return -ENOMEM;
        for (size_t i = n - 1; i-- > 0;) {
                const cowvol_store *s = stores[i];
                uint64_t cb = cowvol_store_chunk_size(s), missing = 0, need, ignored;
                struct cowvol_store_usage use;

                add.n = 0;
                r = cowvol_store_foreach_sorted(stores[i + 1], sorted_push, &add);
                if (r >= 0)
                        r = sorted_merge(&u, &add);
                if (r < 0)
                        break;
                if (!cowvol_store_is_valid(s))
                        continue; /* a link: nothing is copied into it */
                for (size_t k = 0; k < u.n; k++)
                        missing += cowvol_store_lookup(s, u.v[k], &ignored) != 1;
                need = exstore_chunks_for(s, missing);
                cowvol_store_usage(s, &use);
                plan[i] = (struct cowvol_chain_copy){
                        .chunks = missing,
                        .bytes = missing * cb,
                        .grow_bytes = need > cowvol_store_chunks(s) ? (need - cowvol_store_chunks(s)) * cb : 0,
                        /* from the first free chunk to the last the copies use */
                        .space_bytes = missing ? need * cb - use.allocated_sectors * COWVOL_SECTOR_SIZE : 0,
                };
        }
        free(u.v);
        free(add.v);
        if (r < 0)
                return r;
        if (ret)
                memcpy(ret, plan, n * sizeof(*ret));
        return 0;
}
