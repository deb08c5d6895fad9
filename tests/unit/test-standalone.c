/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot chains (lib/chain.c): stores built the way the chain engine
 * builds them (an origin write copies into the newest store only), so that
 * older stores lack chunks newer ones have.  The rule every test checks:
 * view(Si, c) = Si's chunk if Si has c, else view(Si+1, c), else the
 * origin, and each snapshot's view is the origin as it was when it was
 * taken.  cowvol_chain_make_standalone() must leave every view as it was
 * and make each valid store hold its whole view; a cut of the I/O at any
 * point (a crash) must leave every view as it was and a rerun must finish;
 * no room is -ENOSPC with the store valid and unchanged.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "testlib.h"

#define CH 4096u
#define NCH 1024u /* origin chunks */
#define MAXS 6

/* --- a store I/O over memdisks that logs every disk's writes and flushes in
 * one sequence: a power cut hits all the stores at the same moment -------- */

struct gop {
        struct memdisk *d;
        bool sync;
        uint64_t off;
        size_t len;
        uint8_t *data;
};

static struct {
        bool on;
        struct gop *v;
        size_t n, cap;
} G;

static void glog(struct memdisk *d, bool sync, const void *buf, size_t len, uint64_t off)
{
        if (!G.on)
                return;
        if (G.n == G.cap) {
                G.cap = G.cap ? G.cap * 2 : 1024;
                G.v = realloc(G.v, G.cap * sizeof(*G.v));
                cr_assert_not_null(G.v);
        }
        G.v[G.n] = (struct gop){ .d = d, .sync = sync, .off = off, .len = len };
        if (!sync) {
                G.v[G.n].data = malloc(len);
                cr_assert_not_null(G.v[G.n].data);
                memcpy(G.v[G.n].data, buf, len);
        }
        G.n++;
}

static int g_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
        return memdisk_io.pread(ctx, buf, len, off);
}

static int g_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
        int r = memdisk_io.pwrite(ctx, buf, len, off);

        if (r >= 0)
                glog(ctx, false, buf, len, off);
        return r;
}

static int g_sync(void *ctx)
{
        int r = memdisk_io.sync(ctx);

        if (r >= 0)
                glog(ctx, true, NULL, 0, 0);
        return r;
}

static int g_size(void *ctx, uint64_t *ret)
{
        return memdisk_io.size(ctx, ret);
}

static int g_resize(void *ctx, uint64_t size)
{
        cr_assert(!G.on, "a store grew during a logged run");
        return memdisk_io.resize(ctx, size);
}

static const struct store_io gio = {
        .pread = g_pread, .pwrite = g_pwrite, .sync = g_sync, .size = g_size, .resize = g_resize,
};

/* --- the chain, and what each snapshot must show --------------------------- */

struct chain {
        size_t n;
        uint8_t *origin;       /* NCH chunks */
        uint8_t *expect[MAXS]; /* the origin when snapshot i was taken */
        struct memdisk *d[MAXS];
        cowvol_store *s[MAXS];
        uint64_t version;
};

static void chain_free(struct chain *c)
{
        for (size_t i = 0; i < c->n; i++) {
                cowvol_store_close(c->s[i]);
                memdisk_free(c->d[i]);
                free(c->expect[i]);
        }
        free(c->origin);
        memset(c, 0, sizeof(*c));
}

/* An origin write of chunk @ch, as the chain engine does it: copy into the
 * newest store @s if it lacks the chunk, then write the origin. */
static void origin_write(struct chain *c, cowvol_store *s, uint64_t ch)
{
        uint64_t nw;

        if (cowvol_store_lookup(s, ch, &nw) == 0) {
                cr_assert_eq(cowvol_store_allocate(s, &nw), 0);
                cr_assert_eq(cowvol_store_write_chunk(s, nw, c->origin + ch * CH), 0);
                cr_assert_eq(cowvol_store_add(s, ch, nw), 0);
        }
        fill_pattern(c->origin + ch * CH, CH, ch, ++c->version);
}

/* @n snapshots on stores of @store_chunks chunks; after snapshot i,
 * writes[i] origin writes of random chunks (some twice, some in earlier
 * rounds too), committed every 40. */
static void chain_build(struct chain *c, size_t n, uint64_t store_chunks, const unsigned *writes, uint64_t seed)
{
        memset(c, 0, sizeof(*c));
        c->n = n;
        c->origin = malloc((size_t)NCH * CH);
        cr_assert_not_null(c->origin);
        for (uint64_t ch = 0; ch < NCH; ch++)
                fill_pattern(c->origin + ch * CH, CH, ch, 0);
        for (size_t i = 0; i < n; i++) {
                c->d[i] = memdisk_new(store_chunks * CH);
                cr_assert_eq(exstore_create_io(&gio, c->d[i], CH, 0, &c->s[i]), 0);
                c->expect[i] = malloc((size_t)NCH * CH);
                cr_assert_not_null(c->expect[i]);
                memcpy(c->expect[i], c->origin, (size_t)NCH * CH);
                for (unsigned w = 0; w < writes[i]; w++) {
                        origin_write(c, c->s[i], rng_next(&seed) % NCH);
                        if (w % 40 == 39)
                                cr_assert_geq(cowvol_store_commit(c->s[i]), 0);
                }
                cr_assert_geq(cowvol_store_commit(c->s[i]), 0);
        }
}

/* Snapshot @i's chunk @ch through the chain @s[i..n), else the origin. */
static const uint8_t *view_chunk(const struct chain *c, cowvol_store *const *s, size_t i, size_t n, uint64_t ch,
                                 uint8_t *buf)
{
        for (size_t j = i; j < n; j++) {
                uint64_t nw;
                if (cowvol_store_lookup(s[j], ch, &nw) == 1) {
                        if (cowvol_store_read_chunk(s[j], nw, buf) < 0)
                                cr_assert_fail("cannot read chunk %" PRIu64 " of store %zu", nw, j + 1);
                        return buf;
                }
        }
        return c->origin + ch * CH;
}

/* Every valid snapshot reads through the chain as it was taken (@alone:
 * through its own store only, the kernel's rule). */
static void check_views(const struct chain *c, cowvol_store *const *s, bool alone, const char *what)
{
        uint8_t buf[CH];

        for (size_t i = 0; i < c->n; i++) {
                if (!cowvol_store_is_valid(s[i]))
                        continue;
                /* (Criterion reports every assertion to its runner: only failures here) */
                for (uint64_t ch = 0; ch < NCH; ch++)
                        if (memcmp(view_chunk(c, s, i, alone ? i + 1 : c->n, ch, buf), c->expect[i] + ch * CH, CH))
                                cr_assert_fail("%s: snapshot %zu, chunk %" PRIu64 " %s", what, i + 1, ch,
                                               alone ? "is not in its own store (not standalone)"
                                                     : "reads wrong through the chain");
        }
}

/* True when some valid snapshot does not read right through its store alone. */
static bool some_not_standalone(const struct chain *c)
{
        uint8_t buf[CH];

        for (size_t i = 0; i < c->n; i++)
                for (uint64_t ch = 0; cowvol_store_is_valid(c->s[i]) && ch < NCH; ch++)
                        if (memcmp(view_chunk(c, c->s, i, i + 1, ch, buf), c->expect[i] + ch * CH, CH) != 0)
                                return true;
        return false;
}

static void check_sound(const struct chain *c, const char *what)
{
        for (size_t i = 0; i < c->n; i++) {
                struct fault_list fl = {};
                int r = exstore_check_io(&memdisk_io, c->d[i], fault_collect, &fl);
                cr_assert(r == 0 || (r == 1 && !cowvol_store_is_valid(c->s[i])), "%s: store %zu has %d faults: %s",
                          what, i + 1, r, fl.n ? fl.f[0].message : "");
        }
}

static const unsigned four_rounds[] = { 150, 150, 150, 150 };

/* The chain rule holds as built, older stores lack what newer ones have;
 * the count is what the copy copies; afterwards every store is standalone,
 * every view as it was, every store sound; a second run copies nothing. */
Test(standalone, standalone_keeps_every_view)
{
        struct chain c;
        struct cowvol_chain_copy plan[4], done[4], again[4];
        uint64_t before[4];

        chain_build(&c, 4, 1024, four_rounds, 7);
        check_views(&c, c.s, false, "as built");
        cr_assert(some_not_standalone(&c), "setup: the stores are standalone already (the engine copied into all)");
        for (size_t i = 0; i < 4; i++)
                before[i] = cowvol_store_count(c.s[i]);

        cr_assert_eq(cowvol_chain_count_standalone(c.s, 4, plan), 0);
        cr_assert_eq(plan[3].chunks, 0, "nothing goes into the newest store");
        cr_assert_gt(plan[0].chunks, plan[2].chunks, "the oldest store lacks the most");
        for (size_t i = 0; i < 4; i++) {
                cr_assert_eq(cowvol_store_count(c.s[i]), before[i], "counting wrote into store %zu", i + 1);
                cr_assert_eq(plan[i].bytes, plan[i].chunks * CH);
        }
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 4, done), 0);
        for (size_t i = 0; i < 4; i++) {
                cr_assert_eq(done[i].chunks, plan[i].chunks, "store %zu: counted %" PRIu64 ", copied %" PRIu64, i + 1,
                             plan[i].chunks, done[i].chunks);
                cr_assert_eq(cowvol_store_count(c.s[i]), before[i] + plan[i].chunks);
                cr_assert_eq(done[i].grow_bytes, 0);
        }
        check_views(&c, c.s, false, "after");
        check_views(&c, c.s, true, "after");
        check_sound(&c, "after");
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 4, again), 0);
        for (size_t i = 0; i < 4; i++)
                cr_assert_eq(again[i].chunks, 0, "a second run copied %" PRIu64 " into store %zu", again[i].chunks, i + 1);
        chain_free(&c);
}

/* The copies are committed in large groups, not one by one: a few flushes
 * a store. */
Test(standalone, copies_commit_in_groups)
{
        struct chain c;
        struct cowvol_chain_copy plan[4];

        chain_build(&c, 4, 1024, four_rounds, 8);
        cr_assert_eq(cowvol_chain_count_standalone(c.s, 4, plan), 0);
        cr_assert_gt(plan[0].chunks, 200);
        for (size_t i = 0; i < 4; i++)
                c.d[i]->n_sync = 0;
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 4, NULL), 0);
        for (size_t i = 0; i < 3; i++)
                cr_assert_leq(c.d[i]->n_sync, 3, "store %zu: %u flushes for %" PRIu64 " copies", i + 1, c.d[i]->n_sync,
                              plan[i].chunks);
        chain_free(&c);
}

/* --- power cuts ----------------------------------------------------------------- */

/* How a disk treats the writes after its last flush when the power goes. */
enum cut_kind {
        CUT_IN_ORDER,  /* they landed, in order */
        CUT_LOST,      /* none landed */
        CUT_REORDERED, /* only the last one landed */
        CUT_KINDS
};
static const char *const cut_name[] = { "", ", unflushed writes lost", ", only the last unflushed write landed" };

/* The disks after the first @k logged operations, onto @initial. */
static void replay(const struct chain *c, uint8_t *const *initial, size_t k, enum cut_kind kind, uint8_t **out)
{
        for (size_t i = 0; i < c->n; i++) {
                size_t last_sync = 0, last_write = SIZE_MAX;
                memcpy(out[i], initial[i], c->d[i]->size);
                for (size_t o = 0; o < k; o++)
                        if (G.v[o].d == c->d[i] && G.v[o].sync)
                                last_sync = o + 1;
                for (size_t o = last_sync; o < k; o++)
                        if (G.v[o].d == c->d[i])
                                last_write = o;
                for (size_t o = 0; o < k; o++)
                        if (G.v[o].d == c->d[i] && !G.v[o].sync &&
                            (o < last_sync || kind == CUT_IN_ORDER || (kind == CUT_REORDERED && o == last_write)))
                                memcpy(out[i] + G.v[o].off, G.v[o].data, G.v[o].len);
        }
}

/* Every cut of make_standalone: each store opens sound, every view is as
 * it was; a rerun from there finishes, every store standalone.  The
 * commit group is small, so that cuts fall between groups too.  The disk
 * may keep, lose or reorder what was written since its last flush. */
Test(standalone, power_cut_anywhere_then_rerun, .timeout = 600)
{
        static const unsigned rounds[] = { 120, 100, 120, 90 };
        struct chain c, cut;
        uint8_t *initial[4], *img[4];
        struct memdisk *d[4];
        size_t ops, cuts = 0;

        chain_commit_bytes = 24 * CH;
        chain_build(&c, 4, 640, rounds, 11);
        for (size_t i = 0; i < 4; i++) {
                initial[i] = malloc(c.d[i]->size);
                memcpy(initial[i], c.d[i]->data, c.d[i]->size);
                /* one set of disks for every cut (fresh memory a cut is slow in a VM) */
                d[i] = memdisk_new(c.d[i]->size);
                img[i] = d[i]->data;
        }
        G.on = true;
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 4, NULL), 0);
        G.on = false;
        ops = G.n;
        cr_assert_gt(ops, 40, "setup: the run did %zu operations", ops);

        cut = c;
        for (size_t i = 0; i < 4; i++)
                cut.d[i] = d[i];
        for (int kind = 0; kind < CUT_KINDS; kind++)
                for (size_t k = 0; k <= ops; k++) {
                        char what[128];

                        snprintf(what, sizeof(what), "cut after %zu of %zu operations%s", k, ops, cut_name[kind]);
                        replay(&c, initial, k, kind, img);
                        for (size_t i = 0; i < 4; i++) {
                                cr_assert_eq(exstore_open_io(&memdisk_io, d[i], 0, &cut.s[i]), 0, "%s: store %zu does not open",
                                             what, i + 1);
                                cr_assert(cowvol_store_is_valid(cut.s[i]), "%s: store %zu is invalid", what, i + 1);
                        }
                        check_views(&cut, cut.s, false, what);
                        cr_assert_eq(cowvol_chain_make_standalone(cut.s, 4, NULL), 0, "%s: the rerun failed", what);
                        check_views(&cut, cut.s, true, what);
                        check_sound(&cut, what);
                        for (size_t i = 0; i < 4; i++)
                                cut.s[i] = cowvol_store_close(cut.s[i]);
                        cuts++;
                }
        cr_assert_gt(cuts, 60);
        cr_log_info("%zu operations, %zu cuts", ops, cuts);
        for (size_t i = 0; i < 4; i++) {
                free(initial[i]);
                memdisk_free(d[i]);
        }
        for (size_t o = 0; o < G.n; o++)
                free(G.v[o].data);
        free(G.v);
        chain_free(&c);
}

/* --- room ---------------------------------------------------------------------- */

/* Data writes that fail (a filesystem that fills although nothing was
 * preallocated): an error, the store valid, every view as it was; the
 * rerun once there is room finishes. */
static unsigned writes_left;
static int fail_after(struct memdisk *d, uint64_t off, size_t len)
{
        (void)d, (void)off, (void)len;
        if (writes_left == 0)
                return -ENOSPC;
        writes_left--;
        return 0;
}

Test(standalone, failed_write_keeps_store_valid)
{
        struct chain c;

        chain_commit_bytes = 16 * CH;
        chain_build(&c, 3, 1024, four_rounds, 12);
        writes_left = 3;
        c.d[1]->write_hook = fail_after;
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 3, NULL), -ENOSPC);
        c.d[1]->write_hook = NULL;
        cr_assert(cowvol_store_is_valid(c.s[1]), "a failed copy invalidated the store");
        check_views(&c, c.s, false, "after the failure");
        check_sound(&c, "after the failure");
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 3, NULL), 0);
        check_views(&c, c.s, true, "after the rerun");
        chain_free(&c);
}

/* A store too small that cannot grow: -ENOSPC before anything is written,
 * the store byte for byte as it was and valid. */
Test(standalone, no_room_changes_nothing)
{
        struct chain c;
        uint8_t *copy;
        size_t size;

        /* 330 chunks: room for the oldest's own ~150 copies, not the ~400 more */
        chain_build(&c, 3, 330, four_rounds, 13);
        size = c.d[0]->size;
        copy = malloc(size);
        memcpy(copy, c.d[0]->data, size);
        log_capture_start();
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 3, NULL), -ENOSPC);
        cr_assert(contains_ci(log_text(), "cannot grow"), "the log says why: %s", log_text());
        cr_assert_eq(c.d[0]->size, size);
        cr_assert(memcmp(copy, c.d[0]->data, size) == 0, "a refused copy changed the oldest store");
        cr_assert(cowvol_store_is_valid(c.s[0]));
        check_views(&c, c.s, false, "after the refusal");
        free(copy);
        chain_free(&c);
}

/* A store that can grow does, with a little slack, and is sound. */
Test(standalone, grows_the_store)
{
        struct chain c;
        struct cowvol_chain_copy plan[3], done[3];

        chain_build(&c, 3, 330, four_rounds, 13);
        for (size_t i = 0; i < 3; i++)
                c.d[i]->can_resize = true;
        cr_assert_eq(cowvol_chain_count_standalone(c.s, 3, plan), 0);
        cr_assert_gt(plan[0].grow_bytes, 0, "setup: the oldest store must grow");
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 3, done), 0);
        cr_assert_geq(done[0].grow_bytes, plan[0].grow_bytes);
        cr_assert_eq(done[0].grow_bytes, c.d[0]->size - 330ull * CH);
        cr_assert(!cowvol_store_is_full(c.s[0]), "grown to exactly full: the next copy would invalidate it");
        check_views(&c, c.s, true, "after growing");
        check_sound(&c, "after growing");
        chain_free(&c);
}

/* The same on a file, on a filesystem that refuses to let it grow (a file
 * size limit): -ENOSPC, the file as it was. */
Test(standalone, file_that_cannot_grow)
{
        char *dir = tmpdir_make(), *p[3];
        cowvol_store *s[3];
        struct chain c;
        struct rlimit rl;
        uint8_t *before;
        size_t len, len2;

        /* the stores of a built chain, copied into files */
        chain_build(&c, 3, 330, four_rounds, 14);
        for (size_t i = 0; i < 3; i++) {
                char name[16];
                snprintf(name, sizeof(name), "s%zu.cow", i);
                p[i] = path_in(dir, name);
                cr_assert_eq(cowvol_store_create(p[i], CH, c.d[i]->size, 0, NULL), 0);
                file_put_bytes(p[i], 0, c.d[i]->data, c.d[i]->size);
                cr_assert_eq(cowvol_store_open(p[i], 0, &s[i]), 0);
        }
        before = file_read_all(p[0], &len);
        signal(SIGXFSZ, SIG_IGN);
        rl.rlim_cur = rl.rlim_max = len + CH;
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
        cr_assert_eq(cowvol_chain_make_standalone(s, 3, NULL), -ENOSPC);
        for (size_t i = 0; i < 3; i++)
                cowvol_store_close(s[i]);
        {
                uint8_t *after = file_read_all(p[0], &len2);
                cr_assert_eq(len2, len, "the file's size changed");
                cr_assert(memcmp(before, after, len) == 0, "a refused copy changed the file");
                free(after);
        }
        cr_assert_eq(cowvol_store_open(p[0], COWVOL_STORE_RDONLY, &s[0]), 0);
        cr_assert(cowvol_store_is_valid(s[0]));
        cowvol_store_close(s[0]);
        free(before);
        for (size_t i = 0; i < 3; i++)
                free(p[i]);
        chain_free(&c);
        tmpdir_remove(dir);
}

/* --- links and mismatches ------------------------------------------------------- */

/* An invalid store in the middle stays a link: older snapshots read through
 * it, and the older store takes its chunks and the newer ones'. */
Test(standalone, invalid_link_in_the_middle)
{
        struct chain c;
        cowvol_store *plain;

        chain_build(&c, 4, 1024, four_rounds, 15);
        cr_assert_eq(cowvol_store_invalidate(c.s[1]), 0);
        cowvol_store_close(c.s[1]);
        /* opened without COWVOL_STORE_LINK its exceptions are unknown */
        cr_assert_eq(exstore_open_io(&memdisk_io, c.d[1], 0, &plain), 0);
        {
                cowvol_store *s[4] = { c.s[0], plain, c.s[2], c.s[3] };
                cr_assert_eq(cowvol_chain_make_standalone(s, 4, NULL), -EINVAL);
                cr_assert_eq(cowvol_chain_count_standalone(s, 4, NULL), -EINVAL);
        }
        cowvol_store_close(plain);
        cr_assert_eq(exstore_open_io(&gio, c.d[1], COWVOL_STORE_LINK, &c.s[1]), 0);
        cr_assert(!cowvol_store_is_valid(c.s[1]));
        check_views(&c, c.s, false, "through the link");
        cr_assert_eq(cowvol_chain_make_standalone(c.s, 4, NULL), 0);
        check_views(&c, c.s, true, "after");
        check_sound(&c, "after");
        chain_free(&c);
}

Test(standalone, chunk_sizes_must_match)
{
        struct memdisk *a = memdisk_new(64 * CH), *b = memdisk_new(64 * 2 * CH);
        cowvol_store *s[2];

        cr_assert_eq(exstore_create_io(&memdisk_io, a, CH, 0, &s[0]), 0);
        cr_assert_eq(exstore_create_io(&memdisk_io, b, 2 * CH, 0, &s[1]), 0);
        log_capture_start();
        cr_assert_eq(cowvol_chain_make_standalone(s, 2, NULL), -EINVAL);
        cr_assert(contains_ci(log_text(), "different chunk sizes"));
        cr_assert_eq(cowvol_store_copy_missing(s[0], s[1], NULL), -EINVAL);
        cr_assert_eq(cowvol_chain_count_standalone(s, 2, NULL), -EINVAL);
        cowvol_store_close(s[0]);
        cowvol_store_close(s[1]);
        memdisk_free(a);
        memdisk_free(b);
}

/* --- the view of a snapshot in a chain, to a file -------------------------------- */

Test(standalone, view_reads_through_newer_stores)
{
        char *dir = tmpdir_make(), *origin = path_in(dir, "origin.img"), *out = path_in(dir, "view.img");
        struct chain c;
        size_t len;

        chain_build(&c, 3, 1024, four_rounds, 16);
        cr_assert_eq(cowvol_store_invalidate(c.s[2]), 0); /* the newest: a link */
        cowvol_store_close(c.s[2]);
        cr_assert_eq(exstore_open_io(&memdisk_io, c.d[2], COWVOL_STORE_LINK, &c.s[2]), 0);
        {
                FILE *f = fopen(origin, "w");
                cr_assert_not_null(f);
                cr_assert_eq(fwrite(c.origin, CH, NCH, f), NCH);
                cr_assert_eq(fclose(f), 0);
        }
        for (size_t i = 0; i < 2; i++) {
                uint8_t *got;
                cr_assert_eq(cowvol_chain_view(c.s + i, 3 - i, origin, out), 0);
                got = file_read_all(out, &len);
                cr_assert_eq(len, (size_t)NCH * CH);
                for (uint64_t ch = 0; ch < NCH; ch++)
                        if (memcmp(got + ch * CH, c.expect[i] + ch * CH, CH))
                                cr_assert_fail("snapshot %zu's view, chunk %" PRIu64, i + 1, ch);
                free(got);
        }
        cr_assert_eq(cowvol_chain_view(c.s + 2, 1, origin, out), -ESTALE, "an invalid snapshot has no view");
        free(origin);
        free(out);
        chain_free(&c);
        tmpdir_remove(dir);
}
