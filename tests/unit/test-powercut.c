/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Power cuts in the userspace engine.  A seeded workload runs the engine on
 * real files (an image, and a store per snapshot): writes of 512 B to three
 * chunks, write-zeroes (punching or not), flushes, snapshots, and in one
 * test a restore at the end; a third of the snapshots get a store of room
 * for 1 to 3 chunks, which grows (autoextend, in the first test) or fills
 * and turns invalid (in the others: a full store in the middle of the
 * chain, the older snapshots read through what it holds).
 * Every write, flush, allocation and truncation
 * the library makes to its files is recorded in order (sys_watch_set(),
 * util.c).  Then cuts are replayed: the files as they would be after a power
 * cut once the first K operations were issued, in three variants:
 *   all     every operation up to K landed (as after kill -9);
 *   synced  of each file, only what its last flush before K covered;
 *   pages   what that flush covered, then for each 4 KiB page of the file
 *           a random prefix of the later operations on it (the page cache
 *           writes pages back in any order, each with its content of the
 *           moment).
 * K runs over every point just before and just after a flush, and a sample
 * of the points between.  For each cut the test checks, as a restart would
 * see it:
 *   - every snapshot whose creation had returned passes cowvol_store_check()
 *     and attaches, valid (a small store: or marked invalid, then skipped);
 *   - every 512-byte sector of the volume holds what the last write before
 *     the last returned flush (or snapshot) left there, or what a later
 *     write issued before the cut wrote: acknowledged data is never lost,
 *     and nothing that was never written appears;
 *   - every snapshot reads back exactly as the volume was when it was taken;
 *   - a restore whose start had returned resumes: at once the volume reads
 *     as the snapshot, and after it ends the volume equals it, the other
 *     snapshots unchanged, every store sound.
 * What a filesystem does with names (a store file created, its directory
 * entry) is the catalogue's business (daemon/catalogue.c), not tested here.
 * One test runs groups of a few chunks, so that the engine's committer thread
 * commits a group while the next writes copy (the records of both threads
 * are in one order: util.c runs a watched call whole under one lock).
 *   COWVOL_POWERCUT_SEEDS=N   seeds a test runs (default 1)
 *   COWVOL_POWERCUT_SEED=S    the first seed (default: fixed per test)
 *   COWVOL_POWERCUT_STEPS=N   workload steps (default 160)
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define SECT 512u
#define PAGE 4096u
#define VOL_BYTES ((uint64_t)(1u << 20) + 12 * 1024) /* not a whole number of 64 KiB chunks */
#define MAX_FILES 8
#define WORK_SNAPS 6                /* the workload's snapshots at most */
#define MAX_SNAPS (WORK_SNAPS + 1) /* and one to restore if none of them is left */

/* --- the recording --------------------------------------------------------- */

struct rop {
        int file;
        enum sys_op op;
        uint64_t off, len;
        uint8_t *data; /* SYS_WRITE */
};

struct rfile {
        dev_t dev;
        ino_t ino;
        char name[64];
};

static struct {
        struct rop *ops;
        size_t n, cap;
        struct rfile files[MAX_FILES];
        int n_files;
} R;

static int file_index(int fd)
{
        char link[64], target[PATH_MAX];
        struct stat st;
        ssize_t n;
        const char *base;

        cr_assert_eq(fstat(fd, &st), 0);
        for (int i = 0; i < R.n_files; i++)
                if (R.files[i].dev == st.st_dev && R.files[i].ino == st.st_ino)
                        return i;
        cr_assert_lt(R.n_files, MAX_FILES);
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        n = readlink(link, target, sizeof(target) - 1);
        cr_assert_gt(n, 0);
        target[n] = 0;
        base = strrchr(target, '/');
        base = base ? base + 1 : target;
        R.files[R.n_files] = (struct rfile){ .dev = st.st_dev, .ino = st.st_ino };
        cr_assert_lt(strlen(base), sizeof(R.files[0].name));
        strcpy(R.files[R.n_files].name, base);
        return R.n_files++;
}

static void watch(int fd, enum sys_op op, const void *buf, uint64_t len, uint64_t off, void *ud)
{
        struct rop *o;

        (void)ud;
        if (R.n == R.cap) {
                R.cap = R.cap ? R.cap * 2 : 1024;
                R.ops = realloc(R.ops, R.cap * sizeof(*R.ops));
                cr_assert_not_null(R.ops);
        }
        o = &R.ops[R.n++];
        *o = (struct rop){ .file = file_index(fd), .op = op, .off = off, .len = len };
        if (op == SYS_WRITE) {
                o->data = malloc(len);
                cr_assert_not_null(o->data);
                memcpy(o->data, buf, len);
        }
}

/* --- the workload and its model ---------------------------------------------- */

struct call {
        size_t start, end; /* R.n when called, when returned */
};

struct wr {
        struct call c;
        uint64_t off, len;
        uint8_t *data; /* NULL: zeroes */
};

struct snapm {
        struct call c;
        char name[32];
        uint8_t *content; /* the volume when it was taken */
        bool removed;
        bool small;   /* room for a few chunks: it fills and turns invalid */
        struct call unchain; /* a removal: the catalogue forgets it once unchain returned */
};

/* a write into a snapshot, then a flush: durable at c.end */
struct swr {
        struct call c;
        int snap;
        uint64_t off, len;
        uint8_t *data;
};

struct work {
        uint64_t seed;
        uint32_t chunk;
        char *dir, *img;
        uint8_t *initial;
        struct wr *w;
        size_t n_w;
        struct call *barriers; /* flushes and snapshots: the volume durable */
        size_t n_barriers;
        struct snapm snaps[MAX_SNAPS];
        int n_snaps;
        struct swr *sw;
        size_t n_sw;
        bool restore;
        bool grow; /* autoextend on: stores grow (the small ones often) */
        struct call merge_begin; /* restore of snaps[restore_i] */
        int restore_i;           /* any of the chain: the oldest, a middle one, the newest */
        bool consume;            /* the restore of the newest consumes its store (as one begun by an older cowvold) */
        size_t newest_at;        /* operations issued when the restored snapshot became the newest (SIZE_MAX: never) */
        /* what the cuts covered */
        size_t cuts, checks, resumed, small_invalid;
};

static uint64_t store_bytes(uint32_t chunk)
{
        uint64_t chunks = (VOL_BYTES + chunk - 1) / chunk;

        return (chunks + 8) * chunk; /* every chunk once, metadata, room */
}

static void do_write(struct work *W, cowvol_volume *v, uint8_t *cur, uint64_t *rng)
{
        uint64_t sects = VOL_BYTES / SECT, max = 3 * W->chunk / SECT;
        uint64_t off = (rng_next(rng) % sects) * SECT, len = (1 + rng_next(rng) % max) * SECT;
        bool zero = rng_next(rng) % 8 == 0;
        struct wr *w;
        int r;

        if (len > VOL_BYTES - off)
                len = VOL_BYTES - off;
        W->w = realloc(W->w, (W->n_w + 1) * sizeof(*W->w));
        cr_assert_not_null(W->w);
        w = &W->w[W->n_w++];
        *w = (struct wr){ .off = off, .len = len };
        w->c.start = R.n;
        if (zero) {
                r = cowvol_volume_write_zeroes(v, NULL, len, off, rng_next(rng) % 2 ? COWVOL_ZERO_PUNCH : 0);
                memset(cur + off, 0, len);
        } else {
                w->data = malloc(len);
                cr_assert_not_null(w->data);
                fill_pattern(w->data, len, W->seed << 20 | W->n_w, off);
                r = cowvol_volume_pwrite(v, NULL, w->data, len, off);
                memcpy(cur + off, w->data, len);
        }
        cr_assert_eq(r, 0, "write %" PRIu64 "+%" PRIu64 ": %d", off, len, r);
        w->c.end = R.n;
}

static int live_snaps(const struct work *W)
{
        int n = 0;

        for (int i = 0; i < W->n_snaps; i++)
                n += !W->snaps[i].removed;
        return n;
}

static int pick_live(const struct work *W, uint64_t *rng)
{
        int k = (int)(rng_next(rng) % (uint64_t)live_snaps(W));

        for (int i = 0; i < W->n_snaps; i++)
                if (!W->snaps[i].removed && k-- == 0)
                        return i;
        cr_assert_fail("no snapshot left");
        return -1;
}

static int small_snaps(const struct work *W)
{
        int n = 0;

        for (int i = 0; i < W->n_snaps; i++)
                n += W->snaps[i].small;
        return n;
}

static bool snap_valid(cowvol_volume *v, cowvol_snapshot *sn)
{
        struct cowvol_snapshot_info info;

        cr_assert_eq(cowvol_snapshot_info(v, sn, &info), 0);
        return info.valid;
}

/* A live snapshot that is valid (one may write into it, restore it), or -1. */
static int pick_valid(const struct work *W, cowvol_volume *v, cowvol_snapshot **sn, uint64_t *rng)
{
        int ok[MAX_SNAPS], n = 0;

        for (int i = 0; i < W->n_snaps; i++)
                if (!W->snaps[i].removed && snap_valid(v, sn[i]))
                        ok[n++] = i;
        return n ? ok[rng_next(rng) % (uint64_t)n] : -1;
}

static void add_barrier(struct work *W, struct call c);

/* Take snapshot W->n_snaps of @cur; with @may_be_small, a third of them
 * get a store of room for 3-5 chunks. */
static void take_snap(struct work *W, cowvol_volume *v, cowvol_snapshot **sn, const uint8_t *cur, uint64_t *rng,
                      bool may_be_small)
{
        struct snapm *s = &W->snaps[W->n_snaps];
        char *path;

        snprintf(s->name, sizeof(s->name), "s%d.cow", W->n_snaps);
        path = path_in(W->dir, s->name);
        s->content = malloc(VOL_BYTES);
        cr_assert_not_null(s->content);
        memcpy(s->content, cur, VOL_BYTES);
        s->small = may_be_small && rng_next(rng) % 3 == 0;
        s->c.start = R.n;
        cr_assert_eq(cowvol_volume_snapshot_create(v, path,
                                                   s->small ? (3 + rng_next(rng) % 3) * W->chunk : store_bytes(W->chunk),
                                                   &sn[W->n_snaps]),
                     0);
        s->c.end = R.n;
        add_barrier(W, s->c);
        W->n_snaps++;
        free(path);
}

/* Snapshot @i as the writes into it before cut @k left it: *ret_alt, when
 * not NULL, is the content with the write in flight at @k as well (each
 * sector may be either).  Both malloc'ed. */
static uint8_t *snap_want(const struct work *W, int i, size_t k, uint8_t **ret_alt)
{
        uint8_t *want = malloc(VOL_BYTES);

        cr_assert_not_null(want);
        memcpy(want, W->snaps[i].content, VOL_BYTES);
        *ret_alt = NULL;
        for (size_t j = 0; j < W->n_sw; j++) {
                const struct swr *w = &W->sw[j];
                if (w->snap != i || w->c.start >= k)
                        continue;
                if (w->c.end <= k) {
                        memcpy(want + w->off, w->data, w->len);
                        continue;
                }
                *ret_alt = malloc(VOL_BYTES);
                cr_assert_not_null(*ret_alt);
                memcpy(*ret_alt, want, VOL_BYTES);
                memcpy(*ret_alt + w->off, w->data, w->len);
        }
        return want;
}

static void add_barrier(struct work *W, struct call c)
{
        W->barriers = realloc(W->barriers, (W->n_barriers + 1) * sizeof(*W->barriers));
        cr_assert_not_null(W->barriers);
        W->barriers[W->n_barriers++] = c;
}

static void run_workload(struct work *W, unsigned steps)
{
        cowvol_volume *v;
        cowvol_snapshot *sn[MAX_SNAPS];
        uint8_t *cur;
        uint64_t rng = W->seed * 0x9e3779b97f4a7c15ull + W->chunk;
        int fd;

        W->dir = tmpdir_make();
        W->img = path_in(W->dir, "vol.img");
        /* the image before: data with holes, not recorded */
        W->initial = calloc(1, VOL_BYTES);
        cr_assert_not_null(W->initial);
        for (uint64_t off = 0; off < VOL_BYTES; off += 64 * 1024)
                if (rng_next(&rng) % 3)
                        fill_pattern(W->initial + off, VOL_BYTES - off < 64 * 1024 ? VOL_BYTES - off : 64 * 1024,
                                     W->seed, off);
        fd = open(W->img, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, (off_t)VOL_BYTES), 0);
        for (uint64_t off = 0; off < VOL_BYTES; off += PAGE)
                if (!mem_is_zero(W->initial + off, PAGE))
                        cr_assert_eq(pwrite(fd, W->initial + off, PAGE, (off_t)off), (ssize_t)PAGE);
        close(fd);
        cur = malloc(VOL_BYTES);
        cr_assert_not_null(cur);
        memcpy(cur, W->initial, VOL_BYTES);

        memset(&R, 0, sizeof(R));
        sys_watch_set(watch, NULL);
        cr_assert_eq(cowvol_volume_open(W->img, W->chunk, &v), 0);
        if (!W->grow) /* the small stores fill instead of growing */
                cr_assert_eq(cowvol_volume_set_autoextend(v, 100, 20), 0);
        for (unsigned i = 0; i < steps; i++) {
                unsigned p = (unsigned)(rng_next(&rng) % 100);

                if (i == steps / 5 && W->n_snaps == 0)
                        p = 14; /* at least one snapshot, early */
                if (p < 14) {
                        struct call c = { .start = R.n };
                        cr_assert_eq(cowvol_volume_flush(v), 0);
                        c.end = R.n;
                        add_barrier(W, c);
                } else if (p < 18 && W->n_snaps < WORK_SNAPS) {
                        take_snap(W, v, sn, cur, &rng, true);
                } else if (p < 24 && pick_valid(W, v, sn, &rng) >= 0) {
                        /* into any valid snapshot of the chain: the older
                         * ones keep what they read through it, at every cut */
                        struct swr *w;
                        int si = pick_valid(W, v, sn, &rng);

                        W->sw = realloc(W->sw, (W->n_sw + 1) * sizeof(*W->sw));
                        cr_assert_not_null(W->sw);
                        w = &W->sw[W->n_sw++];
                        w->snap = si;
                        w->off = (rng_next(&rng) % (VOL_BYTES / SECT)) * SECT;
                        w->len = (1 + rng_next(&rng) % (3 * W->chunk / SECT)) * SECT;
                        if (w->len > VOL_BYTES - w->off)
                                w->len = VOL_BYTES - w->off;
                        w->data = malloc(w->len);
                        cr_assert_not_null(w->data);
                        fill_pattern(w->data, w->len, W->seed << 20 | 1u << 19 | W->n_sw, w->off);
                        w->c.start = R.n;
                        if (cowvol_volume_pwrite(v, sn[si], w->data, w->len, w->off) < 0) {
                                /* a small store that fills under the write
                                 * itself: invalid now, so never read again;
                                 * until then each sector old or new */
                                cr_assert(W->snaps[si].small && !snap_valid(v, sn[si]),
                                          "a write into %s failed", W->snaps[si].name);
                                w->c.end = SIZE_MAX;
                                continue;
                        }
                        cr_assert_eq(cowvol_volume_flush(v), 0);
                        w->c.end = R.n;
                        add_barrier(W, w->c);
                } else if (p < 26 && live_snaps(W) > 1) {
                        /* a removal, as the daemon does it: unchain, the
                         * catalogue forgets it, detach */
                        struct snapm *s = &W->snaps[pick_live(W, &rng)];
                        int si = (int)(s - W->snaps);

                        s->unchain.start = R.n;
                        cr_assert_eq(cowvol_volume_snapshot_unchain(v, sn[si]), 0);
                        s->unchain.end = R.n;
                        s->removed = true;
                        cr_assert_eq(cowvol_volume_snapshot_detach(v, sn[si]), 0);
                        sn[si] = NULL;
                } else {
                        do_write(W, v, cur, &rng);
                }
        }
        if (W->restore) {
                uint64_t left = 0;
                int r;

                /* every snapshot removed or full: one more to restore */
                if (pick_valid(W, v, sn, &rng) < 0 && W->n_snaps < MAX_SNAPS)
                        take_snap(W, v, sn, cur, &rng, false);
                W->restore_i = pick_valid(W, v, sn, &rng);
                cr_assert_geq(W->restore_i, 0, "no valid snapshot to restore");
                /* the newest, every other seed: as a restore begun before
                 * chains resumes (its store holds all it differs in) */
                W->consume = W->seed % 2;
                for (int j = W->restore_i + 1; j < W->n_snaps; j++)
                        if (sn[j])
                                W->consume = false;
                W->newest_at = SIZE_MAX;
                W->merge_begin.start = R.n;
                cr_assert_eq(cowvol_volume_merge_begin_at(v, sn[W->restore_i], W->consume), 0);
                W->merge_begin.end = R.n;
                /* the caller records the new order (the daemon: in its
                 * catalogue) before the next step */
                while ((r = cowvol_volume_merge_step(v, &left)) > 0)
                        if (r == COWVOL_MERGE_NEWEST)
                                W->newest_at = R.n;
                cr_assert_eq(r, 0);
                cr_assert_eq(left, 0);
                cr_assert_eq(cowvol_volume_merge_end(v), 0);
        }
        cowvol_volume_close(v);
        sys_watch_set(NULL, NULL);
        free(cur);
}

/* --- replaying a cut ------------------------------------------------------------ */

struct fstate {
        uint8_t *data;
        uint64_t size, cap;
};

static void fs_reserve(struct fstate *f, uint64_t size)
{
        if (size <= f->cap)
                return;
        f->data = realloc(f->data, size);
        cr_assert_not_null(f->data);
        memset(f->data + f->cap, 0, size - f->cap);
        f->cap = size;
}

static void fs_resize(struct fstate *f, uint64_t size)
{
        fs_reserve(f, size);
        if (size < f->size)
                memset(f->data + size, 0, f->size - size);
        f->size = size;
}

/* Apply @o's part in [lo, hi) of the file (the whole op: 0, UINT64_MAX). */
static void fs_apply(struct fstate *f, const struct rop *o, uint64_t lo, uint64_t hi)
{
        uint64_t a, b;

        switch (o->op) {
        case SYS_WRITE:
        case SYS_PUNCH:
                a = o->off > lo ? o->off : lo;
                b = o->off + o->len < hi ? o->off + o->len : hi;
                if (a >= b)
                        return;
                if (o->op == SYS_WRITE) {
                        if (b > f->size)
                                fs_resize(f, b);
                        memcpy(f->data + a, o->data + (a - o->off), b - a);
                } else if (a < f->size) {
                        memset(f->data + a, 0, (b < f->size ? b : f->size) - a);
                }
                break;
        case SYS_ALLOCATE:
                if (o->off + o->len > f->size)
                        fs_resize(f, o->off + o->len);
                break;
        case SYS_TRUNCATE:
                fs_resize(f, o->len);
                break;
        case SYS_SYNC:
                break;
        }
}

enum variant { V_ALL, V_SYNCED, V_PAGES, N_VARIANTS };
static const char *const variant_name[] = { "all", "synced", "pages" };

struct replay {
        struct work *W;
        struct fstate dur[MAX_FILES]; /* each file as its last flush left it */
        size_t dur_upto[MAX_FILES];   /* ops applied to dur[] */
        struct fstate cut[MAX_FILES];
        size_t first_op[MAX_FILES];   /* the file exists from then on */
        uint64_t pages[MAX_FILES];    /* the most pages it ever has */
        int img;                      /* the image's index */
        size_t **sect_writes;         /* for each sector, the writes to it, in order */
        size_t *n_sect_writes;
        char *dir;
        uint64_t rng;
};

static size_t last_sync_before(int file, size_t k)
{
        for (size_t i = k; i-- > 0;)
                if (R.ops[i].file == file && R.ops[i].op == SYS_SYNC)
                        return i;
        return SIZE_MAX;
}

/* Build the files of cut @k in P->cut[] and write them into P->dir. */
static void materialize(struct replay *P, size_t k, enum variant var)
{
        for (int f = 0; f < R.n_files; f++) {
                size_t ls = last_sync_before(f, k);
                struct fstate *c = &P->cut[f];
                uint64_t *stopped = NULL; /* V_PAGES: pages that took their last update */
                char *path;
                int fd;

                /* durable: every op of the file before its last flush */
                for (size_t i = P->dur_upto[f]; ls != SIZE_MAX && i < ls; i++)
                        if (R.ops[i].file == f)
                                fs_apply(&P->dur[f], &R.ops[i], 0, UINT64_MAX);
                if (ls != SIZE_MAX && ls > P->dur_upto[f])
                        P->dur_upto[f] = ls;
                fs_resize(c, P->dur[f].size);
                if (P->dur[f].size)
                        memcpy(c->data, P->dur[f].data, P->dur[f].size);
                if (var == V_PAGES) {
                        stopped = calloc(P->pages[f] / 64 + 1, sizeof(*stopped));
                        cr_assert_not_null(stopped);
                }
                for (size_t i = ls == SIZE_MAX ? 0 : ls + 1; var != V_SYNCED && i < k; i++) {
                        const struct rop *o = &R.ops[i];

                        if (o->file != f)
                                continue;
                        if (var == V_ALL || o->op == SYS_SYNC) {
                                fs_apply(c, o, 0, UINT64_MAX);
                                continue;
                        }
                        if (o->op == SYS_ALLOCATE || o->op == SYS_TRUNCATE) {
                                if (rng_next(&P->rng) % 2)
                                        fs_apply(c, o, 0, UINT64_MAX);
                                continue;
                        }
                        for (uint64_t pg = o->off / PAGE; pg * PAGE < o->off + o->len; pg++) {
                                uint64_t *word = &stopped[pg / 64], bit = 1ull << (pg % 64);

                                if (*word & bit)
                                        continue;
                                if (rng_next(&P->rng) % 4 == 0) {
                                        *word |= bit; /* this page went out before this op */
                                        continue;
                                }
                                fs_apply(c, o, pg * PAGE, (pg + 1) * PAGE);
                        }
                }
                free(stopped);
                path = path_in(P->dir, R.files[f].name);
                (void)unlink(path);
                /* a store exists once it was created (its name is the catalogue's concern) */
                if (f == P->img || P->first_op[f] < k) {
                        fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
                        cr_assert_geq(fd, 0);
                        cr_assert_eq(ftruncate(fd, (off_t)c->size), 0);
                        for (uint64_t off = 0; off < c->size; off += PAGE) {
                                size_t n = c->size - off < PAGE ? (size_t)(c->size - off) : PAGE;
                                if (!mem_is_zero(c->data + off, n))
                                        cr_assert_eq(pwrite(fd, c->data + off, n, (off_t)off), (ssize_t)n);
                        }
                        close(fd);
                }
                free(path);
        }
}

static void store_fault(const struct cowvol_fault *f, void *ud)
{
        char *msg = ud;

        if (!msg[0])
                snprintf(msg, 256, "%s", f->message);
}

#define CUT_FAIL(P, k, var, ...)                                                                               \
        cr_assert_fail("seed %" PRIu64 ", chunk %" PRIu32 ", cut after %zu of %zu operations, variant %s: %s", \
                       (P)->W->seed, (P)->W->chunk, (k), R.n, variant_name[var], __VA_ARGS__)

/* The sectors of the volume: each the last durable write's, or a later one's. */
static void check_volume(struct replay *P, size_t k, enum variant var, const uint8_t *got)
{
        struct work *W = P->W;
        size_t barrier_start = 0;
        char msg[256];

        for (size_t b = 0; b < W->n_barriers; b++)
                if (W->barriers[b].end <= k)
                        barrier_start = W->barriers[b].start;
        for (uint64_t s = 0; s < VOL_BYTES; s += SECT) {
                const size_t *list = P->sect_writes[s / SECT], n = P->n_sect_writes[s / SECT];
                const uint8_t *base = W->initial + s;
                size_t j = 0;
                bool ok;

                /* the last write to this sector before the last barrier */
                for (; j < n && W->w[list[j]].c.end <= barrier_start; j++) {
                        const struct wr *w = &W->w[list[j]];
                        base = w->data ? w->data + (s - w->off) : NULL;
                }
                ok = base ? !memcmp(got + s, base, SECT) : mem_is_zero(got + s, SECT);
                /* or one issued after it */
                for (; !ok && j < n && W->w[list[j]].c.start < k; j++) {
                        const struct wr *w = &W->w[list[j]];
                        ok = w->data ? !memcmp(got + s, w->data + (s - w->off), SECT) : mem_is_zero(got + s, SECT);
                }
                if (!ok) {
                        snprintf(msg, sizeof(msg),
                                 "volume sector at %" PRIu64 " holds neither its acknowledged data nor a later write's",
                                 s);
                        CUT_FAIL(P, k, var, msg);
                }
        }
}

static void check_cut(struct replay *P, size_t k, enum variant var)
{
        struct work *W = P->W;
        cowvol_volume *v;
        cowvol_snapshot *sn[MAX_SNAPS] = { 0 };
        bool invalid[MAX_SNAPS] = { 0 };
        uint8_t *got;
        char msg[256], *img;
        int n = 0, r;
        bool resume = W->restore && W->merge_begin.end <= k;

        materialize(P, k, var);
        got = malloc(VOL_BYTES);
        cr_assert_not_null(got);
        for (int i = 0; i < W->n_snaps && W->snaps[i].c.end <= k; i++) {
                char *path = path_in(P->dir, W->snaps[i].name);

                msg[0] = 0;
                r = cowvol_store_check(path, store_fault, msg);
                if (r != 0 && !(W->snaps[i].small && strstr(msg, "marked invalid"))) {
                        char m2[300];
                        snprintf(m2, sizeof(m2), "store %s: check returned %d: %s", W->snaps[i].name, r, msg);
                        CUT_FAIL(P, k, var, m2);
                }
                free(path);
                n = i + 1;
        }
        img = path_in(P->dir, "vol.img");
        cr_assert_eq(cowvol_volume_open(img, W->chunk, &v), 0);
        /* in the order recorded: the restored one last once it became the newest */
        bool last = resume && k >= W->newest_at;
        for (int j = 0; j < n + last; j++) {
                int i = j < n ? j : W->restore_i;
                char *path;
                struct cowvol_snapshot_info info;

                if (last && j < n && i == W->restore_i)
                        continue;
                if (W->snaps[i].removed && W->snaps[i].unchain.end <= k)
                        continue; /* the catalogue forgot it */
                path = path_in(P->dir, W->snaps[i].name);
                r = cowvol_volume_snapshot_attach(v, path, &sn[i]);
                if (r < 0) {
                        snprintf(msg, sizeof(msg), "snapshot %s does not attach: %d", W->snaps[i].name, r);
                        CUT_FAIL(P, k, var, msg);
                }
                cowvol_snapshot_info(v, sn[i], &info);
                if (!info.valid && W->snaps[i].small) {
                        W->small_invalid++;
                        invalid[i] = true; /* full: a link of the chain, not read */
                } else if (!info.valid) {
                        snprintf(msg, sizeof(msg), "snapshot %s is invalid: %s", W->snaps[i].name, info.reason);
                        CUT_FAIL(P, k, var, msg);
                }
                free(path);
        }
        if (resume) {
                uint64_t left;

                uint8_t *alt, *want = snap_want(W, W->restore_i, k, &alt);

                cr_assert_null(alt, "every write into a snapshot was flushed before the restore");
                free(want);
                cr_assert_eq(cowvol_volume_merge_begin_at(v, sn[W->restore_i], W->consume), 0);
                cr_assert_eq(cowvol_volume_pread(v, NULL, got, VOL_BYTES, 0), 0);
                want = snap_want(W, W->restore_i, k, &alt);
                if (memcmp(got, want, VOL_BYTES))
                        CUT_FAIL(P, k, var, "the resumed restore's volume does not read as the snapshot");
                while ((r = cowvol_volume_merge_step(v, &left)) > 0)
                        ;
                cr_assert_eq(r, 0);
                cr_assert_eq(cowvol_volume_merge_end(v), 0);
                cr_assert_eq(cowvol_volume_pread(v, NULL, got, VOL_BYTES, 0), 0);
                if (memcmp(got, want, VOL_BYTES))
                        CUT_FAIL(P, k, var, "after the resumed restore the volume is not the snapshot");
                free(want);
                P->W->resumed++;
        } else {
                cr_assert_eq(cowvol_volume_pread(v, NULL, got, VOL_BYTES, 0), 0);
                check_volume(P, k, var, got);
        }
        /* every snapshot as taken, with the writes into it: exact, but for
         * the sectors of a write in flight at the cut (old or new) */
        for (int i = 0; i < n; i++) {
                uint8_t *alt, *want;

                if (!sn[i] || invalid[i])
                        continue;
                want = snap_want(W, i, k, &alt);
                cr_assert_eq(cowvol_volume_pread(v, sn[i], got, VOL_BYTES, 0), 0);
                for (uint64_t o = 0; o < VOL_BYTES; o += SECT)
                        if (memcmp(got + o, want + o, SECT) && !(alt && !memcmp(got + o, alt + o, SECT))) {
                                snprintf(msg, sizeof(msg),
                                         "snapshot %s does not read as taken (with the writes into it) at %" PRIu64,
                                         W->snaps[i].name, o);
                                CUT_FAIL(P, k, var, msg);
                        }
                free(want);
                free(alt);
        }
        cowvol_volume_close(v);
        if (resume)
                for (int i = 0; i < n; i++) {
                        char *path;
                        if (!sn[i])
                                continue;
                        path = path_in(P->dir, W->snaps[i].name);
                        msg[0] = 0;
                        if (cowvol_store_check(path, store_fault, msg) != 0 &&
                            !(W->snaps[i].small && strstr(msg, "marked invalid"))) {
                                char m2[340];
                                snprintf(m2, sizeof(m2), "store %s is unsound after the resumed restore: %s",
                                         W->snaps[i].name, msg);
                                CUT_FAIL(P, k, var, m2);
                        }
                        free(path);
                }
        free(img);
        free(got);
        W->checks++;
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
        const char *s = getenv(name);

        return s && *s ? (unsigned)strtoul(s, NULL, 10) : dflt;
}

static void run_cuts(struct work *W)
{
        struct replay P = { .W = W, .rng = W->seed ^ 0x5bd1e995 };
        size_t syncs = 0;

        P.dir = tmpdir_make();
        P.img = -1;
        for (int f = 0; f < R.n_files; f++)
                if (!strcmp(R.files[f].name, "vol.img"))
                        P.img = f;
        if (P.img < 0) { /* no write reached the image */
                cr_assert_lt(R.n_files, MAX_FILES);
                P.img = R.n_files++;
                snprintf(R.files[P.img].name, sizeof(R.files[0].name), "vol.img");
        }
        /* the image starts as it was before the workload, the stores empty */
        fs_resize(&P.dur[P.img], VOL_BYTES);
        memcpy(P.dur[P.img].data, W->initial, VOL_BYTES);
        P.pages[P.img] = VOL_BYTES / PAGE + 1;
        for (int f = 0; f < MAX_FILES; f++)
                P.first_op[f] = SIZE_MAX;
        for (size_t i = 0; i < R.n; i++) {
                const struct rop *o = &R.ops[i];
                uint64_t end = o->op == SYS_TRUNCATE ? o->len : o->off + o->len;

                if (P.first_op[o->file] == SIZE_MAX)
                        P.first_op[o->file] = i;
                if (end / PAGE + 1 > P.pages[o->file])
                        P.pages[o->file] = end / PAGE + 1;
        }
        P.sect_writes = calloc(VOL_BYTES / SECT, sizeof(*P.sect_writes));
        P.n_sect_writes = calloc(VOL_BYTES / SECT, sizeof(*P.n_sect_writes));
        cr_assert(P.sect_writes && P.n_sect_writes);
        for (size_t i = 0; i < W->n_w; i++)
                for (uint64_t s = W->w[i].off / SECT; s < (W->w[i].off + W->w[i].len) / SECT; s++) {
                        P.sect_writes[s] = realloc(P.sect_writes[s], (P.n_sect_writes[s] + 1) * sizeof(size_t));
                        cr_assert_not_null(P.sect_writes[s]);
                        P.sect_writes[s][P.n_sect_writes[s]++] = i;
                }
        for (size_t k = 1; k <= R.n; k++) {
                bool at_flush = R.ops[k - 1].op == SYS_SYNC || (k < R.n && R.ops[k].op == SYS_SYNC);

                syncs += R.ops[k - 1].op == SYS_SYNC;
                if (!at_flush && k != R.n && rng_next(&P.rng) % 8)
                        continue;
                W->cuts++;
                for (int var = 0; var < N_VARIANTS; var++)
                        check_cut(&P, k, (enum variant)var);
        }
        cr_log_info("powercut: seed %" PRIu64 ", chunk %" PRIu32 "%s: %zu writes, %d snapshots, %zu operations "
                    "(%zu flushes) on %d files; %zu cuts, %zu replays checked, %zu restores resumed",
                    W->seed, W->chunk, W->restore ? ", restore" : "", W->n_w, W->n_snaps, R.n, syncs, R.n_files,
                    W->cuts, W->checks, W->resumed);
        fprintf(stderr, "# powercut: seed %" PRIu64 ", chunk %" PRIu32 "%s: %zu operations (%zu flushes), "
                "%zu cuts, %zu replays checked; %d snapshots (%d small), %d removed, %zu writes into them, "
                "%zu replays with a full store; %zu restores resumed%s%s\n",
                W->seed, W->chunk, W->restore ? ", restore" : "", R.n, syncs, W->cuts, W->checks, W->n_snaps,
                small_snaps(W), W->n_snaps - live_snaps(W), W->n_sw, W->small_invalid, W->resumed,
                W->restore ? (W->restore_i + 1 == W->n_snaps ? " (of the newest" : " (of an older one") : "",
                W->restore ? (W->consume ? ", consuming its store)" : W->newest_at != SIZE_MAX ? ", through the chain, then the newest)" : ", through the chain)") : "");
        cr_assert_gt(W->cuts, syncs, "every flush was cut at");
        for (int f = 0; f < MAX_FILES; f++) {
                free(P.dur[f].data);
                free(P.cut[f].data);
        }
        for (uint64_t s = 0; s < VOL_BYTES / SECT; s++)
                free(P.sect_writes[s]);
        free(P.sect_writes);
        free(P.n_sect_writes);
        tmpdir_remove(P.dir);
}

static void powercut(uint32_t chunk, bool restore, bool grow, uint64_t seed0)
{
        unsigned seeds = env_unsigned("COWVOL_POWERCUT_SEEDS", 1);
        unsigned steps = env_unsigned("COWVOL_POWERCUT_STEPS", 160);

        seed0 = env_unsigned("COWVOL_POWERCUT_SEED", (unsigned)seed0);
        for (unsigned s = 0; s < seeds; s++) {
                struct work W = { .seed = seed0 + s, .chunk = chunk, .restore = restore, .grow = grow };

                run_workload(&W, steps);
                cr_assert_geq(W.n_snaps, 1, "seed %" PRIu64 ": the workload took a snapshot", W.seed);
                run_cuts(&W);
                for (size_t i = 0; i < R.n; i++)
                        free(R.ops[i].data);
                free(R.ops);
                for (size_t i = 0; i < W.n_w; i++)
                        free(W.w[i].data);
                free(W.w);
                for (size_t i = 0; i < W.n_sw; i++)
                        free(W.sw[i].data);
                free(W.sw);
                free(W.barriers);
                for (int i = 0; i < W.n_snaps; i++)
                        free(W.snaps[i].content);
                free(W.initial);
                free(W.img);
                tmpdir_remove(W.dir);
        }
}

Test(powercut, writes_flushes_snapshots_4k, .timeout = 600)
{
        powercut(4096, false, true, 11);
}

Test(powercut, writes_flushes_snapshots_64k, .timeout = 600)
{
        powercut(65536, false, false, 23);
}

/* The same with steps of 24 chunks: many steps, each cut between or
 * inside, and steps that empty a metadata area and go on in the one before. */
Test(powercut, restore_resumes_small_steps, .timeout = 600)
{
        merge_step_bytes = 24 * 4096;
        powercut(4096, true, true, 41);
}

Test(powercut, restore_resumes_4k, .timeout = 600)
{
        powercut(4096, true, false, 37);
}

/* groups of a few chunks: the committer thread commits one while the next
 * writes copy (the engine's pipeline), and cuts fall between the two */
Test(powercut, pipelined_groups_4k, .timeout = 600)
{
        uint64_t saved = engine_group_bytes;

        engine_group_bytes = 4 * 4096;
        powercut(4096, false, false, 41);
        engine_group_bytes = saved;
}
