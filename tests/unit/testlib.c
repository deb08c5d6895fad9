/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <criterion/criterion.h>
#include <endian.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "testlib.h"

/* --- memdisk ------------------------------------------------------------------ */

static void md_log(struct memdisk *d, enum md_op_kind kind, const void *buf, size_t len, uint64_t off)
{
        struct md_op *op;

        if (!d->record)
                return;
        if (d->n_ops == d->cap_ops) {
                d->cap_ops = d->cap_ops ? d->cap_ops * 2 : 256;
                d->ops = realloc(d->ops, d->cap_ops * sizeof(*d->ops));
                cr_assert_not_null(d->ops);
        }
        op = &d->ops[d->n_ops++];
        *op = (struct md_op){ .kind = kind, .off = off, .len = len };
        if (kind == MD_WRITE) {
                op->data = malloc(len);
                cr_assert_not_null(op->data);
                memcpy(op->data, buf, len);
        }
}

static int md_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
        struct memdisk *d = ctx;

        d->n_pread++;
        if (d->read_hook) {
                int r = d->read_hook(d, off, len);
                if (r < 0)
                        return r;
        }
        if (off > d->size || len > d->size - off)
                return -EIO;
        memcpy(buf, d->data + off, len);
        return 0;
}

static int md_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
        struct memdisk *d = ctx;

        if (d->rdonly) {
                d->n_refused++;
                return -EROFS;
        }
        if (d->write_hook) {
                int r = d->write_hook(d, off, len);
                if (r < 0)
                        return r;
        }
        d->n_pwrite++;
        if (off > d->size || len > d->size - off)
                return -ENOSPC; /* a device does not grow */
        memcpy(d->data + off, buf, len);
        md_log(d, MD_WRITE, buf, len, off);
        return 0;
}

static int md_sync(void *ctx)
{
        struct memdisk *d = ctx;

        d->n_sync++;
        md_log(d, MD_SYNC, NULL, 0, 0);
        return 0;
}

static int md_size(void *ctx, uint64_t *ret)
{
        *ret = ((struct memdisk *)ctx)->size;
        return 0;
}

static int md_resize(void *ctx, uint64_t size)
{
        struct memdisk *d = ctx;
        uint8_t *p;

        if (!d->can_resize)
                return -ENOTTY;
        p = realloc(d->data, size ? size : 1);
        if (!p)
                return -ENOMEM;
        if (size > d->size)
                memset(p + d->size, 0, size - d->size);
        d->data = p;
        d->size = size;
        return 0;
}

int memdisk_fail_area_0(struct memdisk *d, uint64_t off, size_t len)
{
        (void)d;
        (void)len;
        return off == 4096 ? -EIO : 0;
}

const struct store_io memdisk_io = {
        .pread = md_pread,
        .pwrite = md_pwrite,
        .sync = md_sync,
        .size = md_size,
        .resize = md_resize,
        .free = NULL,
};

struct memdisk *memdisk_new(uint64_t size)
{
        struct memdisk *d = calloc(1, sizeof(*d));

        cr_assert_not_null(d);
        d->data = calloc(1, size ? size : 1);
        cr_assert_not_null(d->data);
        d->size = size;
        return d;
}

struct memdisk *memdisk_from(const uint8_t *data, uint64_t size, bool rdonly)
{
        struct memdisk *d = memdisk_new(size);

        memcpy(d->data, data, size);
        d->rdonly = rdonly;
        return d;
}

void memdisk_clear_log(struct memdisk *d)
{
        for (size_t i = 0; i < d->n_ops; i++)
                free(d->ops[i].data);
        d->n_ops = 0;
}

void memdisk_free(struct memdisk *d)
{
        if (!d)
                return;
        memdisk_clear_log(d);
        free(d->ops);
        free(d->data);
        free(d);
}

/* --- temp dirs ---------------------------------------------------------------- */

/* dirs not yet removed: removed at exit, so that a failed assertion (which
 * ends the test early) leaves nothing behind */
static char *live_dirs[32];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw);

static void remove_live_dirs(void)
{
        for (size_t i = 0; i < sizeof(live_dirs) / sizeof(live_dirs[0]); i++)
                if (live_dirs[i]) {
                        nftw(live_dirs[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
                        live_dirs[i] = NULL;
                }
}

static void live_dir(char *dir, bool add)
{
        static bool registered;

        if (!registered) {
                atexit(remove_live_dirs);
                registered = true;
        }
        for (size_t i = 0; i < sizeof(live_dirs) / sizeof(live_dirs[0]); i++)
                if (add ? !live_dirs[i] : live_dirs[i] == dir) {
                        live_dirs[i] = add ? dir : NULL;
                        return;
                }
}

char *tmpdir_make(void)
{
        const char *bases[] = { getenv("TMPDIR"), "/dev/shm", "/tmp" };

        for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
                char *t;
                if (!bases[i] || access(bases[i], W_OK) != 0)
                        continue;
                if (asprintf(&t, "%s/cowvol-unit.XXXXXX", bases[i]) < 0)
                        continue;
                if (mkdtemp(t)) {
                        live_dir(t, true);
                        return t;
                }
                free(t);
        }
        cr_assert_fail("cannot make a temp dir");
        return NULL;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        return remove(p);
}

void tmpdir_remove(char *dir)
{
        if (!dir)
                return;
        live_dir(dir, false);
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(dir);
}

char *path_in(const char *dir, const char *name)
{
        char *p;

        cr_assert(asprintf(&p, "%s/%s", dir, name) >= 0);
        return p;
}

/* --- data ------------------------------------------------------------------------- */

uint64_t rng_next(uint64_t *state)
{
        uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

void fill_pattern(void *buf, size_t len, uint64_t a, uint64_t b)
{
        uint64_t st = a * 0x100000001b3ULL ^ (b + 0x5bd1e995);
        uint8_t *p = buf;
        size_t i = 0;

        /* the first 16 bytes name (a, b) outright */
        for (; i + 8 <= len && i < 16; i += 8) {
                uint64_t v = htole64(i == 0 ? a : b);
                memcpy(p + i, &v, 8);
        }
        while (i < len) {
                uint64_t v = rng_next(&st);
                size_t n = len - i < 8 ? len - i : 8;
                memcpy(p + i, &v, n);
                i += n;
        }
}

/* --- raw files ------------------------------------------------------------------- */

void file_put_bytes(const char *path, uint64_t off, const void *buf, size_t len)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);

        cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
        cr_assert_eq(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
        close(fd);
}

void file_get_bytes(const char *path, uint64_t off, void *buf, size_t len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
        cr_assert_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
        close(fd);
}

void file_put_le32(const char *path, uint64_t off, uint32_t v)
{
        uint32_t le = htole32(v);

        file_put_bytes(path, off, &le, sizeof(le));
}

void file_put_le64(const char *path, uint64_t off, uint64_t v)
{
        uint64_t le = htole64(v);

        file_put_bytes(path, off, &le, sizeof(le));
}

uint64_t file_get_le64(const char *path, uint64_t off)
{
        uint64_t le;

        file_get_bytes(path, off, &le, sizeof(le));
        return le64toh(le);
}

uint64_t file_size(const char *path)
{
        struct stat st;

        cr_assert_eq(stat(path, &st), 0);
        return (uint64_t)st.st_size;
}

void file_truncate(const char *path, uint64_t size)
{
        cr_assert_eq(truncate(path, (off_t)size), 0);
}

uint8_t *file_read_all(const char *path, size_t *ret_len)
{
        size_t len = (size_t)file_size(path);
        uint8_t *buf = malloc(len ? len : 1);

        cr_assert_not_null(buf);
        if (len)
                file_get_bytes(path, 0, buf, len);
        *ret_len = len;
        return buf;
}

/* --- faults and log ----------------------------------------------------------- */

void fault_collect(const struct cowvol_fault *f, void *userdata)
{
        struct fault_list *l = userdata;

        if (l->n < MAX_FAULTS) {
                l->f[l->n].what = f->what;
                l->f[l->n].area = f->area;
                l->f[l->n].slot = f->slot;
                snprintf(l->f[l->n].message, sizeof(l->f[l->n].message), "%s", f->message);
        }
        l->n++;
}

static char log_buf[16384];
static size_t log_len;

static void log_to_buf(int level, const char *msg, void *userdata)
{
        (void)level;
        (void)userdata;
        int n = snprintf(log_buf + log_len, sizeof(log_buf) - log_len, "%s\n", msg);
        if (n > 0)
                log_len += (size_t)n < sizeof(log_buf) - log_len ? (size_t)n : sizeof(log_buf) - log_len - 1;
}

void log_capture_start(void)
{
        log_len = 0;
        log_buf[0] = 0;
        cowvol_set_log_callback(log_to_buf, NULL);
}

const char *log_text(void)
{
        return log_buf;
}

bool contains_ci(const char *hay, const char *needle)
{
        return hay && needle && strcasestr(hay, needle) != NULL;
}
