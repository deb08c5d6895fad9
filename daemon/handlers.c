/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One handler per operation of the control protocol (doc/protocol.md).
 * Each checks every argument before it changes anything; a refused request
 * changed nothing.  D.lock guards the catalogue; data moves (cat, write)
 * run without it, holding references that keep rm away.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

#define SIZE_MAX_BYTES (1ull << 50) /* 1 PiB: anything larger is a typo */
#define IO_BUF (1u << 20)

/* Copy @in for a message: printable ASCII kept, other bytes as '?', cut
 * with "..." to fit: answers stay valid UTF-8 whatever came in. */
static const char *ascii_safe(const char *in, char *out, size_t len)
{
        size_t i = 0;

        for (; *in && i + 4 < len; in++)
                out[i++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
        if (*in)
                out[i++] = '.', out[i++] = '.', out[i++] = '.';
        out[i] = '\0';
        return out;
}

struct ctx {
        json_object *args;
        struct peer *peer;
        int err;
        char *msg;
};

__attribute__((format(printf, 3, 4))) static int fail(struct ctx *c, int err, const char *fmt, ...)
{
        va_list ap;

        if (c->err)
                return c->err;
        va_start(ap, fmt);
        if (vasprintf(&c->msg, fmt, ap) < 0)
                c->msg = NULL;
        va_end(ap);
        c->err = err;
        return err;
}

/* --- arguments ------------------------------------------------------------ */

struct argspec {
        const char *name;
        json_type type;
        bool required;
};

static int check_args(struct ctx *c, const char *op, const struct argspec *spec)
{
        json_object_object_foreach(c->args, key, val) {
                const struct argspec *a;
                for (a = spec; a->name; a++)
                        if (strcmp(a->name, key) == 0)
                                break;
                if (!a->name) {
                        char safe[72];
                        return fail(c, -EINVAL, "%s: unknown argument '%s'", op, ascii_safe(key, safe, sizeof(safe)));
                }
                if (!json_object_is_type(val, a->type))
                        return fail(c, -EINVAL, "%s: argument '%s' must be %s", op, key,
                                    a->type == json_type_int       ? "an integer"
                                    : a->type == json_type_boolean ? "true or false"
                                                                   : "a string");
                if (a->type == json_type_string && json_string_has_nul(val))
                        return fail(c, -EINVAL, "%s: argument '%s' contains the control character 0x00", op, key);
        }
        for (const struct argspec *a = spec; a->name; a++)
                if (a->required && !json_object_object_get_ex(c->args, a->name, NULL))
                        return fail(c, -EINVAL, "%s: missing argument '%s'", op, a->name);
        return 0;
}

static const char *arg_str(struct ctx *c, const char *k)
{
        json_object *x;

        return json_object_object_get_ex(c->args, k, &x) ? json_object_get_string(x) : NULL;
}

static bool arg_int(struct ctx *c, const char *k, int64_t *ret)
{
        json_object *x;

        if (!json_object_object_get_ex(c->args, k, &x))
                return false;
        *ret = json_object_get_int64(x);
        return true;
}

static bool arg_bool(struct ctx *c, const char *k)
{
        json_object *x;

        return json_object_object_get_ex(c->args, k, &x) && json_object_get_boolean(x);
}

static int check_name(struct ctx *c, const char *what, const char *name)
{
        char why[160];

        if (!name_valid(name, why, sizeof(why)))
                return fail(c, -EINVAL, "bad %s name: %s", what, why);
        return 0;
}

static int check_chunk(struct ctx *c, int64_t chunk)
{
        if (chunk < (int64_t)COWVOL_CHUNK_MIN || chunk > (int64_t)COWVOL_CHUNK_MAX || (chunk & (chunk - 1)))
                return fail(c, -EINVAL, "chunk size %" PRId64 " is not a power of two from 4 KiB to 512 KiB",
                            chunk);
        return 0;
}

/* "vol" or "vol@snap": find both; *ret_snap NULL when no '@'. */
static int find_target(struct ctx *c, const char *target, bool want_snap, struct vol **ret_vol,
                       struct snap **ret_snap)
{
        char vname[NAME_MAX_LEN * 2 + 2];
        const char *at = strchr(target, '@');
        struct vol *v;
        struct snap *s = NULL;

        if (strlen(target) >= sizeof(vname)) {
                char safe[48];
                return fail(c, -EINVAL, "bad name: '%s' is too long", ascii_safe(target, safe, sizeof(safe)));
        }
        snprintf(vname, sizeof(vname), "%.*s", at ? (int)(at - target) : (int)strlen(target), target);
        if (check_name(c, "volume", vname) < 0)
                return c->err;
        if (at && check_name(c, "snapshot", at + 1) < 0)
                return c->err;
        if (want_snap && !at)
                return fail(c, -EINVAL, "'%s' names a volume; give VOLUME@SNAPSHOT", target);
        v = vol_find(vname);
        if (!v)
                return fail(c, -ENOENT, "no volume named '%s'", vname);
        if (at) {
                s = snap_find(v, at + 1);
                if (!s)
                        return fail(c, -ENOENT, "volume '%s' has no snapshot named '%s'", vname, at + 1);
        }
        *ret_vol = v;
        *ret_snap = s;
        return 0;
}

/* A snapshot or volume that could not be opened: say which, and why. */
static int fail_unavailable(struct ctx *c, const struct vol *v, const struct snap *s)
{
        if (s)
                return fail(c, -ESTALE, "snapshot %s@%s is invalid: %s", v->name, s->name,
                            s->reason ? s->reason : "its store cannot be used");
        return fail(c, -EIO, "volume '%s' is unavailable: its image %s could not be opened", v->name, v->path);
}

/* A kernel volume or snapshot is a block device: its data is read and
 * written there, not through cowvold. */
static int kernel_device_only(struct ctx *c, const struct vol *v, const struct snap *s)
{
        struct cowvol_kvolume kv = { .name = v->name, .uuid = v->uuid, .device = v->path };
        struct cowvol_ksnapshot ks = { .name = s ? s->name : "", .uuid = s ? s->uuid : "", .store = "" };
        char path[300] = "its device";

        (void)cowvol_kernel_path(&kv, s ? &ks : NULL, path, sizeof(path));
        return fail(c, -ENOTSUP, "%s%s%s is a block device under the kernel engine: use %s directly", v->name,
                    s ? "@" : "", s ? s->name : "", path);
}

/* --- views ------------------------------------------------------------------- */

static double merge_percent(const struct vol *v)
{
        if (v->restore_pending)
                return 0; /* not started: waits for the next activation */
        if (!v->restore_total)
                return 100.0;
        return 100.0 * (double)(v->restore_total - v->restore_left) / (double)v->restore_total;
}

static json_object *snap_view(const struct vol *v, const struct snap *s)
{
        json_object *o = json_object_new_object();
        struct cowvol_snap_info si = {};
        char full[NAME_MAX_LEN * 2 + 2];
        bool have = s->eng && cowvol_snap_info(v->eng, s->eng, &si) == 0;
        const char *state = "active";
        double pct = 0;

        snprintf(full, sizeof(full), "%s@%s", v->name, s->name);
        if (v->kernel) {
                /* the kernel's status line says it all */
                struct ksnap_state ks;
                ksnap_view(v, s, &ks);
                have = true;
                si.valid = ks.valid;
                snprintf(si.reason, sizeof(si.reason), "%s", ks.reason);
                si.usage = ks.usage;
                si.exceptions = ks.exceptions;
                si.store_bytes = ks.store_bytes;
                json_object_object_add(o, "dm_path", json_object_new_string(ks.dm_path));
                if (s->store_device)
                        json_object_object_add(o, "store_device", json_object_new_boolean(true));
        } else if (!have) {
                /* a store that cannot be opened still has a size on disk */
                struct stat st;
                if (stat(s->store, &st) == 0)
                        si.store_bytes = (uint64_t)st.st_size;
        }
        if (have && si.usage.total_sectors && si.usage.allocated_sectors != si.usage.metadata_sectors)
                pct = 100.0 * (double)si.usage.allocated_sectors / (double)si.usage.total_sectors;
        if (v->restoring == s)
                state = "merging";
        else if (!have || !si.valid)
                state = "invalid";
        json_object_object_add(o, "name", json_object_new_string(s->name));
        json_object_object_add(o, "full_name", json_object_new_string(full));
        json_object_object_add(o, "uuid", json_object_new_string(s->uuid));
        json_object_object_add(o, "store", json_object_new_string(s->store));
        json_object_object_add(o, "store_size", json_object_new_int64((int64_t)si.store_bytes));
        json_object_object_add(o, "allocated",
                               json_object_new_int64((int64_t)(si.usage.allocated_sectors * COWVOL_SECTOR_SIZE)));
        json_object_object_add(o, "exceptions", json_object_new_int64((int64_t)si.exceptions));
        json_object_object_add(o, "data_percent", json_object_new_double(round(pct * 100) / 100));
        json_object_object_add(o, "created", json_object_new_int64(s->created));
        json_object_object_add(o, "state", json_object_new_string(state));
        json_object_object_add(o, "reason",
                               strcmp(state, "invalid") == 0
                                       ? json_object_new_string(s->reason ? s->reason
                                                                : si.reason[0] ? si.reason
                                                                               : "invalidated")
                                       : NULL);
        json_object_object_add(o, "merge_percent",
                               v->restoring == s ? json_object_new_double(round(merge_percent(v) * 10) / 10) : NULL);
        return o;
}

static json_object *vol_view(const struct vol *v)
{
        json_object *o = json_object_new_object(), *a = json_object_new_array();

        json_object_object_add(o, "name", json_object_new_string(v->name));
        json_object_object_add(o, "uuid", json_object_new_string(v->uuid));
        json_object_object_add(o, "path", json_object_new_string(v->path));
        json_object_object_add(o, "size", json_object_new_int64((int64_t)v->size));
        json_object_object_add(o, "chunk_size", json_object_new_int64(v->chunk));
        json_object_object_add(o, "created", json_object_new_int64(v->created));
        json_object_object_add(o, "engine", json_object_new_string(v->kernel ? "kernel" : "userspace"));
        json_object_object_add(o, "state", json_object_new_string(v->eng || v->kactive ? "active" : "unavailable"));
        if (v->kernel) {
                json_object_object_add(o, "source", json_object_new_string(v->source ? v->source : v->path));
                kvol_view(v, o);
        } else {
                /* the image's filesystem, as blkid sees it on disk */
                char type[32] = "", label[128] = "";
                if (v->eng)
                        (void)cowvol_device_probe(v->path, type, sizeof(type), label, sizeof(label));
                json_object_object_add(o, "fstype", json_object_new_string(type));
                json_object_object_add(o, "label", json_object_new_string(label));
        }
        if (v->restoring) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "snapshot", json_object_new_string(v->restoring->name));
                json_object_object_add(r, "keep", json_object_new_boolean(v->restore_keep));
                json_object_object_add(r, "percent", json_object_new_double(round(merge_percent(v) * 10) / 10));
                json_object_object_add(r, "pending", json_object_new_boolean(v->restore_pending));
                json_object_object_add(o, "restore", r);
        } else {
                json_object_object_add(o, "restore", NULL);
        }
        for (struct snap *s = v->snaps; s; s = s->next)
                json_object_array_add(a, snap_view(v, s));
        json_object_object_add(o, "snapshots", a);
        return o;
}

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- operations ----------------------------------------------------------------- */

/* The bytes allocated and not freed, for tests/integration/t-load.sh's leak
 * check (status answers it with COWVOL_DEBUG_HEAP set): ASan's count in the
 * sanitizer build (its quarantine excluded), glibc's in-use bytes otherwise;
 * neither counts free memory that arenas keep, as RSS does. */
size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));
static size_t heap_in_use(void)
{
        struct mallinfo2 m;

        if (__sanitizer_get_current_allocated_bytes)
                return __sanitizer_get_current_allocated_bytes();
        m = mallinfo2();
        return m.uordblks + m.hblkhd;
}

/* Without D.lock: the health check answers while a snapshot holds the lock
 * through its stores' flushes; the counts are those last published. */
static json_object *op_status(struct ctx *c)
{
        static const struct argspec spec[] = { {} };
        json_object *o;

        if (check_args(c, "status", spec) < 0)
                return NULL;
        o = json_object_new_object();
        json_object_object_add(o, "version", json_object_new_string(cowvol_version()));
        json_object_object_add(o, "protocol", json_object_new_int(PROTOCOL_VERSION));
        json_object_object_add(o, "uptime", json_object_new_double(round((now_s() - D.started) * 10) / 10));
        json_object_object_add(o, "volumes", json_object_new_int((int)__atomic_load_n(&D.n_vols, __ATOMIC_RELAXED)));
        json_object_object_add(o, "snapshots", json_object_new_int((int)__atomic_load_n(&D.n_snaps, __ATOMIC_RELAXED)));
        json_object_object_add(o, "clients", json_object_new_int((int)__atomic_load_n(&D.clients, __ATOMIC_RELAXED)));
        {
                /* the engines that serve volumes here */
                json_object *e = json_object_new_array();
                json_object_array_add(e, json_object_new_string("userspace"));
                if (cowvol_kernel_present()) /* a status poll must not fill the log */
                        json_object_array_add(e, json_object_new_string("kernel"));
                json_object_object_add(o, "engines", e);
        }
        if (getenv("COWVOL_DEBUG_HEAP"))
                json_object_object_add(o, "heap_in_use", json_object_new_int64((int64_t)heap_in_use()));
        return o;
}

static struct vol *vol_new(const char *name, const char *path, uint64_t size, uint32_t chunk, bool owned)
{
        struct vol *v = calloc(1, sizeof(*v));

        if (!v || !(v->path = strdup(path))) {
                free(v);
                return NULL;
        }
        snprintf(v->name, sizeof(v->name), "%s", name);
        new_uuid(v->uuid);
        v->size = size;
        v->chunk = chunk;
        v->owned = owned;
        v->created = (int64_t)time(NULL);
        return v;
}

/* Append @v to the catalogue and save; on failure nothing stays. */
static int vol_commit(struct ctx *c, struct vol *v)
{
        struct vol **p = &D.vols;
        int r;

        while (*p)
                p = &(*p)->next;
        *p = v;
        r = catalogue_save();
        if (r < 0) {
                *p = NULL;
                return fail(c, r, "cannot save the catalogue: %s", strerror(-r));
        }
        return 0;
}

static json_object *op_create(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "name", json_type_string, true },
                { "size", json_type_int, true },
                { "chunk_size", json_type_int, false },
                {},
        };
        const char *name;
        int64_t size = 0, chunk = COWVOL_CHUNK_DEFAULT;
        char path[4096];
        struct vol *v;
        int fd;

        if (check_args(c, "create", spec) < 0 || check_name(c, "volume", (name = arg_str(c, "name"))) < 0)
                return NULL;
        arg_int(c, "size", &size);
        arg_int(c, "chunk_size", &chunk);
        if (size <= 0 || (uint64_t)size > SIZE_MAX_BYTES)
                return fail(c, -EINVAL, "size %" PRId64 " is out of range (1 byte to 1 PiB)", size), NULL;
        if (size % COWVOL_SECTOR_SIZE)
                return fail(c, -EINVAL, "size %" PRId64 " is not a multiple of 512 bytes", size), NULL;
        if (check_chunk(c, chunk) < 0)
                return NULL;
        if (vol_find(name))
                return fail(c, -EEXIST, "a volume named '%s' exists already", name), NULL;
        snprintf(path, sizeof(path), "%s/volumes/%s.img", D.cfg.state_dir, name);
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return fail(c, -errno, "cannot create %s: %s", path, strerror(errno)), NULL;
        if (ftruncate(fd, size) < 0 || fsync(fd) < 0) {
                int e = errno;
                close(fd);
                unlink(path);
                return fail(c, -e, "cannot size %s to %" PRId64 " bytes: %s", path, size, strerror(e)), NULL;
        }
        close(fd);
        v = vol_new(name, path, (uint64_t)size, (uint32_t)chunk, true);
        if (!v || vol_activate(v) < 0 || vol_commit(c, v) < 0) {
                if (v)
                        vol_deactivate(v);
                vol_free(v);
                unlink(path);
                return fail(c, -EIO, "cannot create volume '%s'", name), NULL;
        }
        dlog(LOG_INFO_, "Created volume %s (%" PRId64 " bytes, chunk %" PRId64 ")", name, size, chunk);
        return vol_view(v);
}

static json_object *add_kernel(struct ctx *c, const char *spec, int64_t chunk)
{
        const char *name = arg_str(c, "name");
        char nbuf[NAME_MAX_LEN + 1], why[512], *dev = NULL;
        struct vol *v;
        int r;

        if (check_chunk(c, chunk) < 0)
                return NULL;
        /* a loop device over a userspace volume's image: that volume moves
         * to the kernel engine, with its snapshots */
        if (cowvol_device_resolve(spec, &dev) == 0 && (v = kvol_userspace_behind(dev))) {
                if (name && strcmp(name, v->name))
                        return free(dev), fail(c, -EINVAL, "%s is the image of volume '%s' (via %s): it moves "
                                               "with its name", v->path, v->name, dev), NULL;
                r = kvol_from_userspace(v, spec, dev, why, sizeof(why));
                free(dev);
                if (r < 0)
                        return fail(c, r, "cannot move volume '%s': %s", v->name, why), NULL;
                dlog(LOG_INFO_, "Volume %s moved to the kernel engine over %s, with its snapshots", v->name, v->path);
                return vol_view(v);
        }
        free(dev);
        dev = NULL;
        if (!name) {
                /* LABEL=x names it x; a device path its last part (sdb1) */
                const char *eq = strchr(spec, '=');
                if (eq && !strncmp(spec, "LABEL=", 6))
                        snprintf(nbuf, sizeof(nbuf), "%s", eq + 1);
                else if (!eq)
                        snprintf(nbuf, sizeof(nbuf), "%s", strrchr(spec, '/') ? strrchr(spec, '/') + 1 : spec);
                else if (cowvol_device_resolve(spec, &dev) == 0)
                        snprintf(nbuf, sizeof(nbuf), "%s", strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev);
                else
                        return fail(c, -ENOENT, "no device has %s", spec), NULL;
                free(dev);
                name = nbuf;
        }
        if (check_name(c, "volume", name) < 0)
                return NULL;
        if (vol_find(name))
                return fail(c, -EEXIST, "a volume named '%s' exists already", name), NULL;
        r = kvol_add(spec, name, (uint32_t)chunk, &v, why, sizeof(why));
        if (r < 0)
                return fail(c, r, "cannot add %s: %s", spec, why), NULL;
        if (vol_commit(c, v) < 0) {
                (void)kvol_remove(v, why, sizeof(why));
                vol_free(v);
                return NULL;
        }
        dlog(LOG_INFO_, "Added volume %s: %s under the kernel engine, as /dev/mapper/cowvol-%s", name, v->path, name);
        return vol_view(v);
}

static json_object *op_add(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "path", json_type_string, true },
                { "name", json_type_string, false },
                { "chunk_size", json_type_int, false },
                {},
        };
        const char *path, *name;
        char nbuf[NAME_MAX_LEN + 1], *base, *copy, *dot;
        int64_t chunk = COWVOL_CHUNK_DEFAULT;
        struct stat st;
        struct vol *v;

        if (check_args(c, "add", spec) < 0)
                return NULL;
        path = arg_str(c, "path");
        arg_int(c, "chunk_size", &chunk);
        /* a block device (or UUID=, LABEL=): the kernel engine */
        if ((path[0] != '/' && strchr(path, '=')) || (stat(path, &st) == 0 && S_ISBLK(st.st_mode)))
                return add_kernel(c, path, chunk);
        if (path[0] != '/')
                return fail(c, -EINVAL, "path '%s' is not absolute", path), NULL;
        if (stat(path, &st) < 0)
                return fail(c, -errno, "cannot add %s: %s", path, strerror(errno)), NULL;
        if (!S_ISREG(st.st_mode))
                return fail(c, -EINVAL, "%s is not an image file", path), NULL;
        /* the image behind a kernel volume's loop device: that volume moves
         * to the userspace engine, with its snapshots */
        if ((v = kvol_kernel_over(path))) {
                char why[512];
                int r;
                if (arg_str(c, "name") && strcmp(arg_str(c, "name"), v->name))
                        return fail(c, -EINVAL, "%s backs volume '%s' (via %s): it moves with its name", path,
                                    v->name, v->path), NULL;
                r = kvol_to_userspace(v, path, why, sizeof(why));
                if (r < 0)
                        return fail(c, r, "cannot move volume '%s': %s", v->name, why), NULL;
                dlog(LOG_INFO_, "Volume %s moved to the userspace engine over %s, with its snapshots", v->name, path);
                return vol_view(v);
        }
        if (st.st_size <= 0 || st.st_size % COWVOL_SECTOR_SIZE)
                return fail(c, -EINVAL, "%s is %lld bytes: an image must be a non-empty multiple of 512 bytes",
                            path, (long long)st.st_size), NULL;
        if (check_chunk(c, chunk) < 0)
                return NULL;
        name = arg_str(c, "name");
        if (!name) {
                copy = strdup(path);
                base = basename(copy);
                if ((dot = strrchr(base, '.')) && dot != base)
                        *dot = '\0';
                snprintf(nbuf, sizeof(nbuf), "%s", base);
                free(copy);
                name = nbuf;
        }
        if (check_name(c, "volume", name) < 0)
                return NULL;
        if (vol_find(name))
                return fail(c, -EEXIST, "a volume named '%s' exists already", name), NULL;
        for (struct vol *o = D.vols; o; o = o->next)
                if (strcmp(o->path, path) == 0)
                        return fail(c, -EEXIST, "%s is volume '%s' already", path, o->name), NULL;
        v = vol_new(name, path, (uint64_t)st.st_size, (uint32_t)chunk, false);
        if (!v)
                return fail(c, -ENOMEM, "out of memory"), NULL;
        if (vol_activate(v) < 0) {
                vol_free(v);
                return fail(c, -EBUSY, "cannot open %s (in use by another process?)", path), NULL;
        }
        if (vol_commit(c, v) < 0) {
                vol_deactivate(v);
                vol_free(v);
                return NULL;
        }
        dlog(LOG_INFO_, "Added volume %s: %s", name, path);
        return vol_view(v);
}

static json_object *op_snap(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "volume", json_type_string, true },
                { "name", json_type_string, false },
                { "store_size", json_type_int, false },
                { "store", json_type_string, false },
                { "force", json_type_boolean, false },
                {},
        };
        const char *vname, *name, *store_dev;
        char nbuf[32], path[4096];
        struct snap *s, **p;
        struct vol *v;
        int64_t store;
        int r;

        if (check_args(c, "snap", spec) < 0 || check_name(c, "volume", (vname = arg_str(c, "volume"))) < 0)
                return NULL;
        v = vol_find(vname);
        if (!v)
                return fail(c, -ENOENT, "no volume named '%s'", vname), NULL;
        name = arg_str(c, "name");
        if (!name) {
                time_t t = time(NULL);
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(nbuf, sizeof(nbuf), "%Y%m%dT%H%M%SZ", &tm);
                name = nbuf;
        }
        if (check_name(c, "snapshot", name) < 0)
                return NULL;
        if (snap_find(v, name))
                return fail(c, -EEXIST, "volume '%s' has a snapshot named '%s' already", v->name, name), NULL;
        store_dev = arg_str(c, "store");
        if (store_dev && !v->kernel)
                return fail(c, -EINVAL, "--store names a block device for a kernel volume; '%s' is an image "
                            "file volume, whose stores live in the state folder", v->name), NULL;
        if (store_dev && arg_int(c, "store_size", &store))
                return fail(c, -EINVAL, "give --store-size or --store, not both"), NULL;
        if (v->kernel && !strcmp(name, "real"))
                return fail(c, -EINVAL, "'real' is the name of a kernel volume's own layer: choose another"), NULL;
        if (!v->eng && !v->kactive)
                return fail(c, -EIO, "volume '%s' is unavailable (%s)", v->name,
                            v->kernel ? "its device-mapper stack could not be built" : "its image could not be opened"), NULL;
        if (v->restoring)
                return fail(c, -EBUSY, "volume '%s' is being restored; snapshot it when that ends", v->name), NULL;
        if (!arg_int(c, "store_size", &store)) {
                /* default: 20 % of the volume, at least 1 MiB */
                store = (int64_t)(v->size / 5);
                if (store < (1 << 20))
                        store = 1 << 20;
        }
        if (store < (int64_t)COWVOL_STORE_MIN_CHUNKS * v->chunk || (uint64_t)store > SIZE_MAX_BYTES)
                return fail(c, -EINVAL, "store size %" PRId64 " is out of range (%u chunks of %" PRIu32
                            " bytes to 1 PiB)", store, COWVOL_STORE_MIN_CHUNKS, v->chunk), NULL;
        store = (store + v->chunk - 1) / v->chunk * v->chunk;
        s = calloc(1, sizeof(*s));
        if (!s)
                return fail(c, -ENOMEM, "out of memory"), NULL;
        snprintf(s->name, sizeof(s->name), "%s", name);
        new_uuid(s->uuid);
        s->created = (int64_t)time(NULL);
        if (v->kernel) {
                char why[512];
                r = ksnap_take(v, s, (uint64_t)store, store_dev, arg_bool(c, "force"), why, sizeof(why));
                if (r < 0) {
                        snap_free_meta(s);
                        return fail(c, r, "cannot take %s@%s: %s", v->name, name, why), NULL;
                }
                snprintf(path, sizeof(path), "%s", s->store);
                goto taken;
        }
        snprintf(path, sizeof(path), "%s/stores/%s.cow", D.cfg.state_dir, s->uuid);
        s->store = strdup(path);
        r = cowvol_volume_snapshot_create(v->eng, path, (uint64_t)store, &s->eng);
        if (r < 0) {
                snap_free_meta(s);
                return fail(c, r, "cannot create the store of %s@%s: %s", v->name, name, strerror(-r)), NULL;
        }
taken:
        for (p = &v->snaps; *p; p = &(*p)->next)
                ;
        *p = s;
        r = catalogue_save();
        if (r < 0) {
                *p = NULL;
                if (v->kernel) {
                        char why[512];
                        if (ksnap_remove(v, s, why, sizeof(why)) >= 0)
                                ksnap_drop_store(v, s);
                } else {
                        cowvol_volume_snapshot_detach(v->eng, s->eng);
                        unlink(path);
                }
                snap_free_meta(s);
                return fail(c, r, "cannot save the catalogue: %s", strerror(-r)), NULL;
        }
        dlog(LOG_INFO_, "Snapshot %s@%s taken (store %s, %" PRId64 " bytes)", v->name, name, path, store);
        return snap_view(v, s);
}

static json_object *op_list(struct ctx *c)
{
        static const struct argspec spec[] = { { "volume", json_type_string, false }, {} };
        const char *only;
        json_object *o, *a;

        if (check_args(c, "list", spec) < 0)
                return NULL;
        only = arg_str(c, "volume");
        if (only && check_name(c, "volume", only) < 0)
                return NULL;
        if (only && !vol_find(only))
                return fail(c, -ENOENT, "no volume named '%s'", only), NULL;
        o = json_object_new_object();
        a = json_object_new_array();
        for (struct vol *v = D.vols; v; v = v->next)
                if (!only || strcmp(only, v->name) == 0)
                        json_object_array_add(a, vol_view(v));
        json_object_object_add(o, "volumes", a);
        return o;
}

static json_object *op_restore(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "snapshot", json_type_string, true },
                { "keep", json_type_boolean, false },
                {},
        };
        struct cowvol_snap_info si;
        struct vol *v;
        struct snap *s;
        json_object *o;
        int r;

        if (check_args(c, "restore", spec) < 0 || find_target(c, arg_str(c, "snapshot"), true, &v, &s) < 0)
                return NULL;
        if (v->restoring)
                return fail(c, -EBUSY, "volume '%s' is being restored from '%s' already", v->name,
                            v->restoring->name), NULL;
        if (v->kernel) {
                char why[512];
                r = kvol_restore(v, s, arg_bool(c, "keep"), why, sizeof(why));
                if (r < 0)
                        return fail(c, r, "cannot restore %s@%s: %s", v->name, s->name, why), NULL;
                if (r > 0)
                        dlog(LOG_INFO_, "Restore of %s from %s@%s recorded: %s; it starts at the next activation "
                             "(cowvol activate %s, or the daemon's start)", v->name, v->name, s->name, why, v->name);
                else
                        dlog(LOG_INFO_, "Restoring %s from %s@%s (snapshot-merge%s)", v->name, v->name, s->name,
                             v->restore_keep ? ", keeping the snapshot" : "");
                monitor_wake();
                o = json_object_new_object();
                json_object_object_add(o, "started", json_object_new_boolean(r == 0));
                json_object_object_add(o, "pending", json_object_new_boolean(r > 0));
                if (r > 0)
                        json_object_object_add(o, "why", json_object_new_string(why));
                json_object_object_add(o, "chunks", json_object_new_int64((int64_t)v->restore_total));
                return o;
        }
        if (!s->eng || cowvol_snap_info(v->eng, s->eng, &si) < 0 || !si.valid)
                return fail(c, -ESTALE, "snapshot %s@%s is invalid (%s): it cannot be restored", v->name, s->name,
                            s->reason ? s->reason : "store unusable"), NULL;
        if (v->refs)
                return fail(c, -EBUSY, "volume '%s' is in use by %u transfer(s)", v->name, v->refs), NULL;
        v->restoring = s;
        v->restore_keep = arg_bool(c, "keep");
        /* recorded first: a crash from here on resumes the restore */
        r = catalogue_save();
        if (r < 0) {
                v->restoring = NULL;
                return fail(c, r, "cannot save the catalogue: %s", strerror(-r)), NULL;
        }
        r = restore_start(v);
        if (r < 0) {
                v->restoring = NULL;
                catalogue_save();
                return fail(c, r, "cannot start the restore: %s", strerror(-r)), NULL;
        }
        dlog(LOG_INFO_, "Restoring %s from %s@%s (%" PRIu64 " chunks%s)", v->name, v->name, s->name,
             v->restore_total, v->restore_keep ? ", keeping the snapshot" : "");
        o = json_object_new_object();
        json_object_object_add(o, "started", json_object_new_boolean(true));
        json_object_object_add(o, "chunks", json_object_new_int64((int64_t)v->restore_total));
        return o;
}

static json_object *op_restore_wait(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "volume", json_type_string, true },
                { "progress", json_type_boolean, false },
                {},
        };
        const char *name;
        struct vol *v;
        json_object *o;

        if (check_args(c, "restore-wait", spec) < 0 || check_name(c, "volume", (name = arg_str(c, "volume"))) < 0)
                return NULL;
        if (!(v = vol_find(name)))
                return fail(c, -ENOENT, "no volume named '%s'", name), NULL;
        if (!arg_bool(c, "progress"))
                while (v->restoring && (v->kernel ? !v->restore_pending : v->restore_thread) && !D.stopping)
                        pthread_cond_wait(&D.changed, &D.lock);
        o = json_object_new_object();
        json_object_object_add(o, "done", json_object_new_boolean(!v->restoring));
        if (v->restoring) {
                json_object_object_add(o, "percent", json_object_new_double(round(merge_percent(v) * 10) / 10));
                json_object_object_add(o, "running",
                                       json_object_new_boolean(v->kernel ? !v->restore_pending : v->restore_thread));
                if (v->kernel && v->restore_pending)
                        json_object_object_add(o, "pending", json_object_new_boolean(true));
        }
        return o;
}

static void vol_unlink(struct vol *v)
{
        struct vol **p;

        for (p = &D.vols; *p; p = &(*p)->next)
                if (*p == v) {
                        *p = v->next;
                        return;
                }
}

/* A kernel volume's devices, snapshots first: all, or (the first that is
 * in use) none of the volume's own; snapshots removed stay removed. */
static int rm_kernel_devices(struct ctx *c, struct vol *v)
{
        struct cowvol_kvolume kv = { .name = v->name, .uuid = v->uuid, .device = v->path };
        struct cowvol_kernel_status st;
        char why[512];
        int r;

        /* in use: refuse before anything goes */
        if (cowvol_kernel_status(&kv, NULL, &st) == 0 && st.open_count > 0)
                return fail(c, -EBUSY, "volume '%s' is in use (open %d times: mounted?); nothing was removed",
                            v->name, st.open_count);
        for (struct snap *s = v->snaps; s; s = s->next) {
                struct cowvol_ksnapshot ks = { .name = s->name, .uuid = s->uuid, .store = s->store };
                if (cowvol_kernel_status(&kv, &ks, &st) == 0 && st.open_count > 0)
                        return fail(c, -EBUSY, "snapshot %s@%s is in use (open %d times: mounted?); nothing was "
                                    "removed", v->name, s->name, st.open_count);
        }

        while (v->snaps) {
                struct snap *s = v->snaps;
                r = ksnap_remove(v, s, why, sizeof(why));
                if (r < 0)
                        return fail(c, r, "cannot remove %s@%s: %s", v->name, s->name, why);
                v->snaps = s->next;
                dlog(LOG_INFO_, "Removed snapshot %s@%s", v->name, s->name);
                if (catalogue_save() >= 0)
                        ksnap_drop_store(v, s); /* else the next start finds it unlisted */
                snap_free_meta(s);
        }
        r = kvol_remove(v, why, sizeof(why));
        if (r < 0)
                return fail(c, r, "cannot remove volume '%s': %s", v->name, why);
        return 0;
}

/* cowvol activate VOLUME: a kernel volume's stack rebuilt from the
 * catalogue (what exists is kept), and a pending merge started. */
static json_object *op_activate(struct ctx *c)
{
        static const struct argspec spec[] = { { "volume", json_type_string, true }, {} };
        const char *name;
        struct vol *v;

        if (check_args(c, "activate", spec) < 0 || check_name(c, "volume", (name = arg_str(c, "volume"))) < 0)
                return NULL;
        if (!(v = vol_find(name)))
                return fail(c, -ENOENT, "no volume named '%s'", name), NULL;
        if (!v->kernel)
                return fail(c, -EINVAL, "'%s' is an image file volume: it is always active while cowvold runs",
                            v->name), NULL;
        if (kvol_activate(v) < 0)
                return fail(c, -EIO, "cannot activate '%s' (see cowvold's log)", v->name), NULL;
        (void)catalogue_save();
        monitor_wake();
        return vol_view(v); /* its "restore" says whether a merge still waits */
}

static json_object *op_rm(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "target", json_type_string, true },
                { "recursive", json_type_boolean, false },
                {},
        };
        struct vol *v;
        struct snap *s, **p;
        json_object *o;
        int r;

        if (check_args(c, "rm", spec) < 0 || find_target(c, arg_str(c, "target"), false, &v, &s) < 0)
                return NULL;
        if (v->restoring)
                return fail(c, -EBUSY, "volume '%s' is being restored; wait for it to end", v->name), NULL;
        if (s) {
                if (s->refs)
                        return fail(c, -EBUSY, "snapshot %s@%s is in use", v->name, s->name), NULL;
                if (v->kernel) {
                        /* the devices first: a mounted snapshot stays, whole */
                        char why[512];
                        r = ksnap_remove(v, s, why, sizeof(why));
                        if (r < 0)
                                return fail(c, r, "cannot remove %s@%s: %s", v->name, s->name, why), NULL;
                }
                for (p = &v->snaps; *p != s; p = &(*p)->next)
                        ;
                *p = s->next;
                r = catalogue_save();
                if (r < 0) {
                        *p = s;
                        if (v->kernel)
                                (void)kvol_activate(v); /* its devices back: nothing changed */
                        return fail(c, r, "cannot save the catalogue: %s", strerror(-r)), NULL;
                }
                if (s->eng)
                        cowvol_volume_snapshot_detach(v->eng, s->eng);
                if (v->kernel)
                        ksnap_drop_store(v, s);
                else
                        unlink(s->store);
                dlog(LOG_INFO_, "Removed snapshot %s@%s", v->name, s->name);
                snap_free_meta(s);
        } else {
                unsigned n = 0;
                for (struct snap *x = v->snaps; x; x = x->next)
                        n++;
                if (n && !arg_bool(c, "recursive"))
                        return fail(c, -EBUSY, "volume '%s' has %u snapshot%s; remove them first or use --recursive",
                                    v->name, n, n == 1 ? "" : "s"), NULL;
                if (v->refs)
                        return fail(c, -EBUSY, "volume '%s' is in use", v->name), NULL;
                for (struct snap *x = v->snaps; x; x = x->next)
                        if (x->refs)
                                return fail(c, -EBUSY, "snapshot %s@%s is in use", v->name, x->name), NULL;
                if (v->kernel && (r = rm_kernel_devices(c, v)) < 0)
                        return NULL;
                vol_unlink(v);
                r = catalogue_save();
                if (r < 0) {
                        v->next = D.vols;
                        D.vols = v;
                        return fail(c, r, "cannot save the catalogue: %s", strerror(-r)), NULL;
                }
                vol_deactivate(v);
                for (struct snap *x = v->snaps; x; x = x->next)
                        if (!x->store_device && !v->kernel)
                                unlink(x->store);
                if (v->owned)
                        unlink(v->path);
                dlog(LOG_INFO_, "Removed volume %s%s", v->name, v->owned ? " and its image" : "");
                vol_free(v);
        }
        o = json_object_new_object();
        json_object_object_add(o, "removed", json_object_new_boolean(true));
        return o;
}

/* --- data: cat and write run without D.lock, holding references ------------- */

static void hold(struct vol *v, struct snap *s, int d)
{
        v->refs += (unsigned)d;
        if (s)
                s->refs += (unsigned)d;
}

static json_object *op_cat(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "target", json_type_string, true },
                { "offset", json_type_int, false },
                { "length", json_type_int, false },
                {},
        };
        int64_t off = 0, len = -1;
        uint64_t done = 0;
        struct vol *v;
        struct snap *s;
        uint8_t *buf;
        json_object *o;
        int r = 0;

        if (check_args(c, "cat", spec) < 0 || find_target(c, arg_str(c, "target"), false, &v, &s) < 0)
                return NULL;
        if (v->kernel)
                return kernel_device_only(c, v, s), NULL;
        /* the restore drops the snapshot at its end, whoever still reads it */
        if (s && v->restoring == s)
                return fail(c, -EBUSY, "snapshot %s@%s is being restored into its volume", v->name, s->name), NULL;
        if (c->peer->fd < 0)
                return fail(c, -EBADF, "cat needs a file descriptor passed with the request"), NULL;
        arg_int(c, "offset", &off);
        arg_int(c, "length", &len);
        if (off < 0 || (uint64_t)off > v->size)
                return fail(c, -EINVAL, "offset %" PRId64 " is outside the volume (%" PRIu64 " bytes)", off,
                            v->size), NULL;
        if (len < 0 || (uint64_t)len > v->size - (uint64_t)off)
                len = (int64_t)(v->size - (uint64_t)off);
        if (!v->eng || (s && !s->eng))
                return fail_unavailable(c, v, s && !s->eng ? s : NULL), NULL;
        if (!(buf = malloc(IO_BUF)))
                return fail(c, -ENOMEM, "out of memory"), NULL;
        hold(v, s, 1);
        pthread_mutex_unlock(&D.lock);
        while (done < (uint64_t)len && !D.stopping) {
                size_t n = (uint64_t)len - done < IO_BUF ? (size_t)((uint64_t)len - done) : IO_BUF;
                r = cowvol_volume_pread(v->eng, s ? s->eng : NULL, buf, n, (uint64_t)off + done);
                if (r < 0)
                        break;
                r = write_all(c->peer->fd, buf, n);
                if (r < 0)
                        break;
                done += n;
        }
        pthread_mutex_lock(&D.lock);
        hold(v, s, -1);
        free(buf);
        if (r == -ESTALE)
                return fail(c, r, "snapshot %s@%s is invalid: %s", v->name, s->name,
                            s->reason ? s->reason : "its store is unusable"), NULL;
        if (r < 0)
                return fail(c, r, "cat stopped after %" PRIu64 " bytes: %s", done, strerror(-r)), NULL;
        if (D.stopping)
                return fail(c, -EINTR, "the daemon is stopping"), NULL;
        o = json_object_new_object();
        json_object_object_add(o, "bytes", json_object_new_int64((int64_t)done));
        return o;
}

static int read_full(int fd, uint8_t *p, size_t n, size_t *ret_got)
{
        size_t got = 0;

        while (got < n) {
                ssize_t r = read(fd, p + got, n - got);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        break;
                got += (size_t)r;
        }
        *ret_got = got;
        return 0;
}

static json_object *op_write(struct ctx *c)
{
        static const struct argspec spec[] = {
                { "target", json_type_string, true },
                { "offset", json_type_int, false },
                { "length", json_type_int, true },
                {},
        };
        int64_t off = 0, len = 0;
        uint64_t done = 0;
        struct vol *v;
        struct snap *s;
        uint8_t *buf;
        json_object *o;
        int r = 0;

        if (check_args(c, "write", spec) < 0 || find_target(c, arg_str(c, "target"), false, &v, &s) < 0)
                return NULL;
        if (v->kernel)
                return kernel_device_only(c, v, s), NULL;
        if (c->peer->fd < 0)
                return fail(c, -EBADF, "write needs a file descriptor passed with the request"), NULL;
        arg_int(c, "offset", &off);
        arg_int(c, "length", &len);
        if (off < 0 || len < 0)
                return fail(c, -EINVAL, "offset and length must not be negative"), NULL;
        if ((uint64_t)off > v->size || (uint64_t)len > v->size - (uint64_t)off)
                return fail(c, -ENOSPC, "%" PRId64 " bytes at offset %" PRId64 " go past the end of the volume "
                            "(%" PRIu64 " bytes); nothing was written", len, off, v->size), NULL;
        if (v->restoring)
                return fail(c, -EBUSY, "volume '%s' is being restored; writes wait until it ends", v->name), NULL;
        if (!v->eng || (s && !s->eng))
                return fail_unavailable(c, v, s && !s->eng ? s : NULL), NULL;
        if (!(buf = malloc(IO_BUF)))
                return fail(c, -ENOMEM, "out of memory"), NULL;
        hold(v, s, 1);
        pthread_mutex_unlock(&D.lock);
        while (done < (uint64_t)len) {
                size_t want = (uint64_t)len - done < IO_BUF ? (size_t)((uint64_t)len - done) : IO_BUF, got = 0;
                r = read_full(c->peer->fd, buf, want, &got);
                if (r < 0)
                        break;
                if (got > 0)
                        r = cowvol_volume_pwrite(v->eng, s ? s->eng : NULL, buf, got, (uint64_t)off + done);
                if (r < 0)
                        break;
                done += got;
                if (got < want) {
                        r = -EIO;
                        break;
                }
        }
        /* acknowledged means durable: the image and the stores */
        if (done > 0) {
                int q = cowvol_volume_flush(v->eng);
                if (r >= 0)
                        r = q;
        }
        pthread_mutex_lock(&D.lock);
        hold(v, s, -1);
        free(buf);
        if (vol_note_reasons(v))
                catalogue_save();
        if (r == -EIO && done < (uint64_t)len)
                return fail(c, r, "the input ended after %" PRIu64 " of %" PRId64 " bytes (all written)", done,
                            len), NULL;
        if (r < 0)
                return fail(c, r, "write failed after %" PRIu64 " bytes: %s", done, strerror(-r)), NULL;
        o = json_object_new_object();
        json_object_object_add(o, "bytes", json_object_new_int64((int64_t)done));
        return o;
}

static int diff_range(uint64_t off, uint64_t len, void *ud)
{
        json_object *r = json_object_new_object();

        json_object_object_add(r, "offset", json_object_new_int64((int64_t)off));
        json_object_object_add(r, "length", json_object_new_int64((int64_t)len));
        json_object_array_add(ud, r);
        return 0;
}

/* A kernel snapshot's store, read as it is (the kernel writes it): its
 * origin chunks in order, merged into runs, clipped to the volume. */
struct kdiff {
        json_object *a;
        uint64_t run_off, run_len, chunk, size;
};

static int kdiff_one(uint64_t old, uint64_t nw, void *ud)
{
        struct kdiff *d = ud;
        uint64_t off = old * d->chunk, len = d->chunk;

        (void)nw;
        if (off >= d->size)
                return 0;
        if (len > d->size - off)
                len = d->size - off;
        if (d->run_len && d->run_off + d->run_len == off) {
                d->run_len += len;
                return 0;
        }
        if (d->run_len)
                diff_range(d->run_off, d->run_len, d->a);
        d->run_off = off;
        d->run_len = len;
        return 0;
}

static int kernel_diff(struct vol *v, struct snap *s, json_object *a)
{
        struct kdiff d = { .a = a, .chunk = v->chunk, .size = v->size };
        cowvol_store *st;
        int r = cowvol_store_open(s->store, COWVOL_STORE_RDONLY, &st);

        if (r < 0)
                return r;
        if (!cowvol_store_is_valid(st))
                r = -ESTALE;
        else
                r = cowvol_store_foreach_sorted(st, kdiff_one, &d);
        if (r >= 0 && d.run_len)
                diff_range(d.run_off, d.run_len, a);
        cowvol_store_close(st);
        return r;
}

static json_object *op_diff(struct ctx *c)
{
        static const struct argspec spec[] = { { "target", json_type_string, true }, {} };
        struct vol *v;
        struct snap *s;
        json_object *o, *a;
        int64_t total = 0;
        int r;

        if (check_args(c, "diff", spec) < 0 || find_target(c, arg_str(c, "target"), true, &v, &s) < 0)
                return NULL;
        if (!v->kernel && !s->eng)
                return fail_unavailable(c, v, s), NULL;
        a = json_object_new_array();
        r = v->kernel ? kernel_diff(v, s, a) : cowvol_snap_diff(v->eng, s->eng, diff_range, a);
        if (r < 0) {
                json_object_put(a);
                if (r == -ESTALE)
                        return fail(c, r, "snapshot %s@%s is invalid: %s", v->name, s->name,
                                    s->reason ? s->reason : "its store is unusable"), NULL;
                return fail(c, r, "diff failed: %s", strerror(-r)), NULL;
        }
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *len;
                json_object_object_get_ex(json_object_array_get_idx(a, i), "length", &len);
                total += json_object_get_int64(len);
        }
        o = json_object_new_object();
        json_object_object_add(o, "chunk_size", json_object_new_int64(v->chunk));
        json_object_object_add(o, "ranges", a);
        json_object_object_add(o, "bytes", json_object_new_int64(total));
        return o;
}

/* The URI libnbd and qemu take: nbd+unix:///NAME?socket=PATH.  Names are
 * [A-Za-z0-9_.+-] and '@', all allowed in a URI path; the socket path is
 * percent-encoded but for unreserved characters and '/'. */
static char *nbd_uri(const char *name, const char *sock)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(sock), k = 0;
        char *enc = malloc(n * 3 + 1), *uri;

        if (!enc)
                return NULL;
        for (const unsigned char *p = (const unsigned char *)sock; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    strchr("-._~/", *p))
                        enc[k++] = (char)*p;
                else
                        enc[k++] = '%', enc[k++] = hex[*p >> 4], enc[k++] = hex[*p & 15];
        }
        enc[k] = '\0';
        if (asprintf(&uri, "nbd+unix:///%s?socket=%s", name, enc) < 0)
                uri = NULL;
        free(enc);
        return uri;
}

static json_object *op_export(struct ctx *c)
{
        static const struct argspec spec[] = { { "target", json_type_string, true }, {} };
        struct cowvol_snap_info si;
        const char *target;
        struct vol *v;
        struct snap *s;
        json_object *o;
        char *uri;

        if (check_args(c, "export", spec) < 0 || find_target(c, (target = arg_str(c, "target")), false, &v, &s) < 0)
                return NULL;
        if (v->kernel)
                return kernel_device_only(c, v, s), NULL;
        if (!v->eng || (s && !s->eng))
                return fail_unavailable(c, v, s && !s->eng ? s : NULL), NULL;
        if (s && (cowvol_snap_info(v->eng, s->eng, &si) < 0 || !si.valid))
                return fail_unavailable(c, v, s), NULL;
        if (s && v->restoring == s)
                return fail(c, -EBUSY, "snapshot %s@%s is being restored into its volume", v->name, s->name), NULL;
        if (!D.cfg.nbd_socket_path && !D.cfg.nbd_tcp_uri_host)
                return fail(c, -ENOTSUP, "cowvold is not serving NBD"), NULL;
        o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(target));
        json_object_object_add(o, "read_only", json_object_new_boolean(nbd_export_read_only(s)));
        /* the Unix socket, and TCP when configured */
        if (D.cfg.nbd_socket_path) {
                if (!(uri = nbd_uri(target, D.cfg.nbd_socket_path))) {
                        json_object_put(o);
                        return fail(c, -ENOMEM, "out of memory"), NULL;
                }
                json_object_object_add(o, "uri", json_object_new_string(uri));
                json_object_object_add(o, "socket", json_object_new_string(D.cfg.nbd_socket_path));
                free(uri);
        }
        if (D.cfg.nbd_tcp_uri_host) {
                if (asprintf(&uri, "nbd://%s:%u/%s", D.cfg.nbd_tcp_uri_host, D.cfg.nbd_tcp_port, target) < 0) {
                        json_object_put(o);
                        return fail(c, -ENOMEM, "out of memory"), NULL;
                }
                json_object_object_add(o, "tcp_uri", json_object_new_string(uri));
                free(uri);
        }
        return o;
}

static const struct {
        const char *name;
        json_object *(*fn)(struct ctx *c);
        bool admin;
        bool unlocked; /* runs without D.lock */
} ops[] = {
        { "status", op_status, false, true },
        { "create", op_create, true, false },
        { "add", op_add, true, false },
        { "snap", op_snap, true, false },
        { "list", op_list, true, false },
        { "restore", op_restore, true, false },
        { "restore-wait", op_restore_wait, true, false },
        { "rm", op_rm, true, false },
        { "activate", op_activate, true, false },
        { "cat", op_cat, true, false },
        { "write", op_write, true, false },
        { "diff", op_diff, true, false },
        { "export", op_export, true, false },
};

void handle_request(const char *op, json_object *args, struct peer *p, json_object **ret_result, int *ret_err,
                    char **ret_msg)
{
        json_object *empty = NULL, *result = NULL;
        struct ctx c = { .args = args, .peer = p };
        size_t i;

        if (!c.args)
                c.args = empty = json_object_new_object();
        for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
                if (strcmp(ops[i].name, op) == 0)
                        break;
        if (i == sizeof(ops) / sizeof(ops[0])) {
                char safe[72];
                fail(&c, -EINVAL, "unknown operation '%s'", ascii_safe(op, safe, sizeof(safe)));
        } else if (ops[i].admin && !p->admin) {
                fail(&c, -EACCES, "permission denied: '%s' needs root or membership of group '%s'", op,
                     D.cfg.group ? D.cfg.group : "cowvol");
        } else if (ops[i].unlocked) {
                result = ops[i].fn(&c);
        } else {
                pthread_mutex_lock(&D.lock);
                result = ops[i].fn(&c);
                counts_publish(); /* after any change, and after one undone */
                pthread_mutex_unlock(&D.lock);
        }
        if (c.err) {
                json_object_put(result);
                result = NULL;
        }
        json_object_put(empty);
        *ret_result = result;
        *ret_err = c.err;
        *ret_msg = c.msg;
}
