/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Parse and check requests (request.h): every argument of every operation
 * is looked at here, before anything changes.  The order of the checks is
 * the order of the messages a client sees for a request with several
 * faults: its arguments' types and names first, then the catalogue.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "catalogue.h"
#include "config.h"
#include "engine.h"
#include "request.h"
#include "statedir.h"

#define SIZE_MAX_BYTES (1ull << 50) /* 1 PiB: anything larger is a typo */

const char *ascii_safe(const char *in, char *out, size_t len)
{
        size_t i = 0;

        for (; *in && i + 4 < len; in++)
                out[i++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
        if (*in)
                out[i++] = '.', out[i++] = '.', out[i++] = '.';
        out[i] = '\0';
        return out;
}

bool json_string_has_nul(json_object *s)
{
        return strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s);
}

/* --- arguments -------------------------------------------------------------- */

struct argspec {
        const char *name;
        json_type type;
        bool required;
};

static int check_args(json_object *args, const char *op, const struct argspec *spec, struct failure *f)
{
        json_object_object_foreach(args, key, val) {
                const struct argspec *a;
                for (a = spec; a->name; a++)
                        if (strcmp(a->name, key) == 0)
                                break;
                if (!a->name) {
                        char safe[72];
                        return fail(f, -EINVAL, "%s: unknown argument '%s'", op, ascii_safe(key, safe, sizeof(safe)));
                }
                if (!json_object_is_type(val, a->type))
                        return fail(f, -EINVAL, "%s: argument '%s' must be %s", op, key,
                                    a->type == json_type_int       ? "an integer"
                                    : a->type == json_type_boolean ? "true or false"
                                    : a->type == json_type_array   ? "an array"
                                                                   : "a string");
                if (a->type == json_type_string && json_string_has_nul(val))
                        return fail(f, -EINVAL, "%s: argument '%s' contains the control character 0x00", op, key);
        }
        for (const struct argspec *a = spec; a->name; a++)
                if (a->required && !json_object_object_get_ex(args, a->name, NULL))
                        return fail(f, -EINVAL, "%s: missing argument '%s'", op, a->name);
        return 0;
}

static const char *arg_str(json_object *args, const char *k)
{
        json_object *x;

        return json_object_object_get_ex(args, k, &x) ? json_object_get_string(x) : NULL;
}

static bool arg_int(json_object *args, const char *k, int64_t *ret)
{
        json_object *x;

        if (!json_object_object_get_ex(args, k, &x))
                return false;
        *ret = json_object_get_int64(x);
        return true;
}

static bool arg_bool(json_object *args, const char *k)
{
        json_object *x;

        return json_object_object_get_ex(args, k, &x) && json_object_get_boolean(x);
}

static int check_name(const char *what, const char *name, struct failure *f)
{
        char why[160];

        if (!name_valid(name, why, sizeof(why)))
                return fail(f, -EINVAL, "bad %s name: %s", what, why);
        return 0;
}

static int check_chunk(int64_t chunk, struct failure *f)
{
        if (!cowvol_chunk_size_valid(chunk))
                return fail(f, -EINVAL, "chunk size %" PRId64 " is not a power of two from 4 KiB to 512 KiB", chunk);
        return 0;
}

/* "vol" or "vol@snap": both names well formed; a snapshot when @want_snap */
static int check_target(const char *target, bool want_snap, struct failure *f)
{
        char vname[NAME_MAX_LEN * 2 + 2];
        const char *at = strchr(target, '@');

        if (strlen(target) >= sizeof(vname)) {
                char safe[48];
                return fail(f, -EINVAL, "bad name: '%s' is too long", ascii_safe(target, safe, sizeof(safe)));
        }
        snprintf(vname, sizeof(vname), "%.*s", at ? (int)(at - target) : (int)strlen(target), target);
        if (check_name("volume", vname, f) < 0)
                return f->err;
        if (at && check_name("snapshot", at + 1, f) < 0)
                return f->err;
        if (want_snap && !at)
                return fail(f, -EINVAL, "'%s' names a volume; give VOLUME@SNAPSHOT", target);
        return 0;
}

/* --- parsing: one function an operation --------------------------------------------- */

#define ARGS(...) ((const struct argspec[]){ __VA_ARGS__, {} })

static int parse_status(json_object *a, struct request *r, struct failure *f)
{
        (void)r;
        return check_args(a, "status", ARGS({ NULL, 0, false }), f);
}

static int parse_create(json_object *a, struct request *r, struct failure *f)
{
        int64_t size = 0, chunk = COWVOL_CHUNK_DEFAULT;

        if (check_args(a, "create", ARGS({ "name", json_type_string, true }, { "size", json_type_int, true },
                                         { "chunk_size", json_type_int, false }), f) < 0 ||
            check_name("volume", (r->name = arg_str(a, "name")), f) < 0)
                return f->err;
        arg_int(a, "size", &size);
        arg_int(a, "chunk_size", &chunk);
        if (size <= 0 || (uint64_t)size > SIZE_MAX_BYTES)
                return fail(f, -EINVAL, "size %" PRId64 " is out of range (1 byte to 1 PiB)", size);
        if (size % COWVOL_SECTOR_SIZE)
                return fail(f, -EINVAL, "size %" PRId64 " is not a multiple of 512 bytes", size);
        if (check_chunk(chunk, f) < 0)
                return f->err;
        r->size = (uint64_t)size;
        r->chunk = (uint32_t)chunk;
        return 0;
}

static int parse_add(json_object *a, struct request *r, struct failure *f)
{
        int64_t chunk = COWVOL_CHUNK_DEFAULT;

        if (check_args(a, "add", ARGS({ "path", json_type_string, true }, { "name", json_type_string, false },
                                      { "chunk_size", json_type_int, false }), f) < 0)
                return f->err;
        r->path = arg_str(a, "path");
        r->name = arg_str(a, "name");
        arg_int(a, "chunk_size", &chunk);
        /* checked with the device or image it is for (check_add) */
        r->chunk_given = chunk;
        return 0;
}

/* snap's description, cleanup, type, pre, userdata */
static int parse_snap_meta(json_object *a, struct request *r, struct failure *f)
{
        const char *cls = arg_str(a, "cleanup"), *kind = arg_str(a, "type");
        char why[160], safe[48];

        r->description = arg_str(a, "description");
        r->userdata = arg_str(a, "userdata");
        r->pre_name = arg_str(a, "pre");
        if (arg_int(a, "pre_number", &r->pre_number_given) && (r->pre_number_given <= 0 || r->pre_name))
                return fail(f, -EINVAL, r->pre_name ? "give the pre snapshot's name ('pre') or number ('pre_number'), "
                                                      "one of them"
                                                    : "'pre_number' is not a snapshot's number (1 or more)");
        r->read_only_given = json_object_object_get_ex(a, "read_only", NULL);
        r->read_only = arg_bool(a, "read_only");
        if (cls && cleanup_class_parse(cls, &r->cleanup) < 0)
                return fail(f, -EINVAL, "bad cleanup class '%s': give none, number or timeline",
                            ascii_safe(cls, safe, sizeof(safe)));
        if (kind && snap_kind_parse(kind, &r->kind) < 0)
                return fail(f, -EINVAL, "bad snapshot type '%s': give single, pre or post",
                            ascii_safe(kind, safe, sizeof(safe)));
        if ((r->pre_name || r->pre_number_given) && !kind)
                r->kind = SNAP_POST;
        if (r->kind == SNAP_POST && !r->pre_name && !r->pre_number_given)
                return fail(f, -EINVAL, "a post snapshot needs --post PRE, its pre snapshot");
        if (r->kind != SNAP_POST && (r->pre_name || r->pre_number_given))
                return fail(f, -EINVAL, "--post goes with a post snapshot, not a %s one", snap_kind_name(r->kind));
        if (r->pre_name && check_name("pre snapshot", r->pre_name, f) < 0)
                return f->err;
        if (r->description && !description_valid(r->description, why, sizeof(why)))
                return fail(f, -EINVAL, "bad --description: %s", why);
        if (r->userdata && !userdata_valid(r->userdata, why, sizeof(why)))
                return fail(f, -EINVAL, "bad --userdata: %s", why);
        return 0;
}

static int parse_snap(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "snap", ARGS({ "volume", json_type_string, true }, { "name", json_type_string, false },
                                       { "store_size", json_type_int, false }, { "store", json_type_string, false },
                                       { "force", json_type_boolean, false }, { "description", json_type_string, false },
                                       { "cleanup", json_type_string, false }, { "type", json_type_string, false },
                                       { "pre", json_type_string, false }, { "userdata", json_type_string, false },
                                       { "read_only", json_type_boolean, false },
                                       { "pre_number", json_type_int, false }),
                       f) < 0 ||
            check_name("volume", (r->volume = arg_str(a, "volume")), f) < 0)
                return f->err;
        r->name = arg_str(a, "name");
        if (!r->name) {
                time_t t = time(NULL);
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(r->auto_name, sizeof(r->auto_name), "%Y%m%dT%H%M%SZ", &tm);
                r->name = r->auto_name;
        }
        if (check_name("snapshot", r->name, f) < 0)
                return f->err;
        r->snap.store_device = arg_str(a, "store");
        r->snap.force = arg_bool(a, "force");
        r->store_size_given = arg_int(a, "store_size", &r->store_size);
        if (r->snap.store_device && r->store_size_given)
                return fail(f, -EINVAL, "give --store-size or --store, not both");
        return parse_snap_meta(a, r, f);
}

static int parse_resize(json_object *a, struct request *r, struct failure *f)
{
        int64_t size = 0;
        bool sized;

        if (check_args(a, "resize", ARGS({ "volume", json_type_string, true }, { "size", json_type_int, false },
                                         { "add", json_type_int, false }, { "force", json_type_boolean, false }),
                       f) < 0 ||
            check_name("volume", (r->volume = arg_str(a, "volume")), f) < 0)
                return f->err;
        sized = arg_int(a, "size", &size);
        if (sized == arg_int(a, "add", &r->grow_by))
                return fail(f, -EINVAL, "give the new size ('size') or what to add ('add'), one of them");
        if (sized && (size <= 0 || (uint64_t)size > SIZE_MAX_BYTES))
                return fail(f, -EINVAL, "size %" PRId64 " is out of range (1 byte to 1 PiB)", size);
        if (!sized && (r->grow_by <= 0 || (uint64_t)r->grow_by > SIZE_MAX_BYTES))
                return fail(f, -EINVAL, "add %" PRId64 " is out of range (1 byte to 1 PiB)", r->grow_by);
        if ((sized ? size : r->grow_by) % COWVOL_SECTOR_SIZE)
                return fail(f, -EINVAL, "%s %" PRId64 " is not a multiple of 512 bytes", sized ? "size" : "add",
                            sized ? size : r->grow_by);
        r->size = (uint64_t)size;
        r->force = arg_bool(a, "force");
        return 0;
}

static int parse_rename(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "rename", ARGS({ "target", json_type_string, true }, { "name", json_type_string, true }),
                       f) < 0 ||
            check_target((r->target = arg_str(a, "target")), false, f) < 0)
                return f->err;
        r->name = arg_str(a, "name");
        return check_name(strchr(r->target, '@') ? "snapshot" : "volume", r->name, f);
}

static int parse_set(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "set", ARGS({ "target", json_type_string, true }, { "read_only", json_type_boolean, false }),
                       f) < 0 ||
            check_target((r->target = arg_str(a, "target")), true, f) < 0)
                return f->err;
        r->read_only_given = json_object_object_get_ex(a, "read_only", NULL);
        r->read_only = arg_bool(a, "read_only");
        if (!r->read_only_given)
                return fail(f, -EINVAL, "set: nothing to set (read_only)");
        return 0;
}

static int parse_list(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "list", ARGS({ "volume", json_type_string, false }), f) < 0)
                return f->err;
        r->volume = arg_str(a, "volume");
        if (r->volume && check_name("volume", r->volume, f) < 0)
                return f->err;
        return 0;
}

static int parse_restore(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "restore", ARGS({ "snapshot", json_type_string, true }, { "keep", json_type_boolean, false }),
                       f) < 0 ||
            check_target((r->target = arg_str(a, "snapshot")), true, f) < 0)
                return f->err;
        r->keep = arg_bool(a, "keep");
        return 0;
}

static int parse_restore_wait(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "restore-wait", ARGS({ "volume", json_type_string, true },
                                               { "progress", json_type_boolean, false }), f) < 0 ||
            check_name("volume", (r->volume = arg_str(a, "volume")), f) < 0)
                return f->err;
        r->progress = arg_bool(a, "progress");
        return 0;
}

#define RM_TARGETS_MAX 256
#define OLDER_THAN_MAX (100 * 366 * 86400LL)

static int parse_rm(json_object *a, struct request *r, struct failure *f)
{
        json_object *t = NULL;

        if (check_args(a, "rm", ARGS({ "target", json_type_string, false }, { "targets", json_type_array, false },
                                     { "recursive", json_type_boolean, false }, { "older_than", json_type_int, false },
                                     { "yes", json_type_boolean, false }), f) < 0)
                return f->err;
        r->target = arg_str(a, "target");
        (void)json_object_object_get_ex(a, "targets", &t);
        if (!r->target == !t)
                return fail(f, -EINVAL, "rm: give 'target' or 'targets', one of them");
        if (r->target && check_target(r->target, false, f) < 0)
                return f->err;
        if (t) {
                size_t n = json_object_array_length(t);
                if (n == 0 || n > RM_TARGETS_MAX)
                        return fail(f, -EINVAL, "rm: 'targets' holds 1 to %d names, not %zu", RM_TARGETS_MAX, n);
                for (size_t i = 0; i < n; i++) {
                        json_object *x = json_object_array_get_idx(t, i);
                        if (!json_object_is_type(x, json_type_string) || json_string_has_nul(x))
                                return fail(f, -EINVAL, "rm: 'targets' holds something that is not a name");
                        if (check_target(json_object_get_string(x), false, f) < 0)
                                return f->err;
                }
                r->targets = t;
        }
        r->recursive = arg_bool(a, "recursive");
        r->yes = arg_bool(a, "yes");
        r->older_than = -1;
        if (arg_int(a, "older_than", &r->older_than)) {
                if (r->older_than < 0 || r->older_than > OLDER_THAN_MAX)
                        return fail(f, -EINVAL, "rm: 'older_than' is out of range (0 to 100 years in seconds)");
                if (!r->target || strchr(r->target, '@'))
                        return fail(f, -EINVAL, "rm: 'older_than' takes one volume ('target'), whose snapshots go");
                if (r->recursive)
                        return fail(f, -EINVAL, "rm: 'older_than' removes snapshots only; not with 'recursive'");
        }
        return 0;
}

static int parse_activate(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "activate", ARGS({ "volume", json_type_string, true }), f) < 0 ||
            check_name("volume", (r->volume = arg_str(a, "volume")), f) < 0)
                return f->err;
        return 0;
}

static int parse_cat(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "cat", ARGS({ "target", json_type_string, true }, { "offset", json_type_int, false },
                                      { "length", json_type_int, false }), f) < 0 ||
            check_target((r->target = arg_str(a, "target")), false, f) < 0)
                return f->err;
        r->offset = 0;
        r->length = -1;
        arg_int(a, "offset", &r->offset);
        arg_int(a, "length", &r->length);
        return 0;
}

static int parse_write(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "write", ARGS({ "target", json_type_string, true }, { "offset", json_type_int, false },
                                        { "length", json_type_int, true }), f) < 0 ||
            check_target((r->target = arg_str(a, "target")), false, f) < 0)
                return f->err;
        r->offset = r->length = 0;
        arg_int(a, "offset", &r->offset);
        arg_int(a, "length", &r->length);
        return 0;
}

static int parse_diff(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "diff", ARGS({ "target", json_type_string, true }), f) < 0 ||
            check_target((r->target = arg_str(a, "target")), true, f) < 0)
                return f->err;
        return 0;
}

static int parse_export(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "export", ARGS({ "target", json_type_string, true }), f) < 0 ||
            check_target((r->target = arg_str(a, "target")), false, f) < 0)
                return f->err;
        return 0;
}

static int parse_cleanup(json_object *a, struct request *r, struct failure *f)
{
        if (check_args(a, "cleanup", ARGS({ "volume", json_type_string, true }, { "dry_run", json_type_boolean, false }),
                       f) < 0)
                return f->err;
        r->volume = arg_str(a, "volume");
        if (strchr(r->volume, '@'))
                return fail(f, -EINVAL, "'%s' is a snapshot; cleanup takes a volume", r->volume);
        if (check_name("volume", r->volume, f) < 0)
                return f->err;
        r->dry_run = arg_bool(a, "dry_run");
        return 0;
}

static int parse_schedule(json_object *a, struct request *r, struct failure *f)
{
        size_t n;

        if (check_args(a, "schedule", ARGS({ "volumes", json_type_array, true }, { "off", json_type_boolean, false },
                                           { "hourly", json_type_int, false }, { "daily", json_type_int, false },
                                           { "weekly", json_type_int, false }, { "monthly", json_type_int, false },
                                           { "quarterly", json_type_int, false }, { "yearly", json_type_int, false },
                                           { "number", json_type_int, false },
                                           { "number_important", json_type_int, false },
                                           { "min_age", json_type_int, false }, { "free_limit", json_type_int, false }),
                       f) < 0)
                return f->err;
        r->volumes = json_object_object_get(a, "volumes");
        n = json_object_array_length(r->volumes);
        if (n == 0 || n > 256)
                return fail(f, -EINVAL, "schedule: give 1 to 256 volumes, not %zu", n);
        for (size_t i = 0; i < n; i++) {
                json_object *x = json_object_array_get_idx(r->volumes, i);
                const char *name;
                char safe[72];
                if (!json_object_is_type(x, json_type_string) || json_string_has_nul(x))
                        return fail(f, -EINVAL, "schedule: 'volumes' must hold names (strings)");
                name = json_object_get_string(x);
                if (strchr(name, '@'))
                        return fail(f, -EINVAL, "'%s' is a snapshot; a schedule is a volume's",
                                    ascii_safe(name, safe, sizeof(safe)));
                if (check_name("volume", name, f) < 0)
                        return f->err;
        }
        r->off = arg_bool(a, "off");
        for (unsigned k = 0; k < 10; k++) {
                int64_t max = k == 8 ? SCHEDULE_MIN_AGE_MAX : k == 9 ? 99 : SCHEDULE_LIMIT_MAX;
                if (!(r->sched_given[k] = arg_int(a, schedule_keys[k], &r->sched[k])))
                        continue;
                if (r->off)
                        return fail(f, -EINVAL, "give --off alone: it stops the schedule");
                if (r->sched[k] < 0 || r->sched[k] > max)
                        return fail(f, -EINVAL, "%s %" PRId64 " is out of range (0 to %" PRId64 "%s)", schedule_keys[k],
                                    r->sched[k], max, k == 8 ? " seconds" : k == 9 ? " %" : "");
        }
        return 0;
}

/* --- checking against the catalogue ---------------------------------------------------- */

static int find_volume(const char *name, struct vol **ret, struct failure *f)
{
        if (!(*ret = vol_find(name)))
                return fail(f, -ENOENT, "no volume named '%s'", name);
        return 0;
}

/* r->target, well formed already: r->v and r->s (NULL without '@') */
static int find_target(struct request *r, struct failure *f)
{
        char vname[NAME_MAX_LEN + 1];
        const char *at = strchr(r->target, '@');

        snprintf(vname, sizeof(vname), "%.*s", at ? (int)(at - r->target) : (int)strlen(r->target), r->target);
        if (find_volume(vname, &r->v, f) < 0)
                return f->err;
        r->s = NULL;
        if (at && !(r->s = snap_find(r->v, at + 1)))
                return fail(f, -ENOENT, "volume '%s' has no snapshot named '%s'", vname, at + 1);
        return 0;
}

/* A snapshot or volume whose files could not be opened: say which, and why. */
static int fail_unavailable(const struct vol *v, const struct snap *s, struct failure *f)
{
        if (s)
                return fail(f, -ESTALE, "snapshot %s@%s is invalid: %s", v->name, s->name,
                            s->reason ? s->reason : "its store cannot be used");
        return fail(f, -EIO, "volume '%s' is unavailable: its image %s could not be opened", v->name, v->path);
}

/* cat, write, export: the data goes through cowvold, unless the engine's
 * volumes are block devices, to be used directly */
static int check_data_path(const struct vol *v, const struct snap *s, struct failure *f)
{
        char path[300] = "its device";

        if (!v->ops->pread) {
                (void)v->ops->device_path(v, s, path, sizeof(path));
                return fail(f, -ENOTSUP, "%s%s%s is a block device under the kernel engine: use %s directly",
                            v->name, s ? "@" : "", s ? s->name : "", path);
        }
        return 0;
}

static int check_data_open(const struct vol *v, const struct snap *s, struct failure *f)
{
        if (!v->ops->is_active(v) || (s && !v->ops->snapshot_open(v, s)))
                return fail_unavailable(v, s && !v->ops->snapshot_open(v, s) ? s : NULL, f);
        if (!s && v->restore_stalled)
                return fail(f, -EBUSY, "volume '%s' is held: its restore from %s cannot resume: %s", v->name,
                            v->restoring->name, v->restore_stalled);
        return 0;
}

static int check_create(struct request *r, struct failure *f)
{
        if (vol_find(r->name))
                return fail(f, -EEXIST, "a volume named '%s' exists already", r->name);
        return 0;
}

/* Kernel interfaces that look like files: never a volume's data, whoever
 * asks (a write to one of them is a write to the kernel's settings). */
static bool pseudo_fs(long type)
{
        static const long types[] = {
                PROC_SUPER_MAGIC, SYSFS_MAGIC,   DEBUGFS_MAGIC,  TRACEFS_MAGIC,   SECURITYFS_MAGIC,
                CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, BPF_FS_MAGIC, PSTOREFS_MAGIC, EFIVARFS_MAGIC,
                DEVPTS_SUPER_MAGIC, SELINUX_MAGIC, SMACK_MAGIC,    NSFS_MAGIC,      BINFMTFS_MAGIC,
                0x62656570 /* configfs */, 0x65735543 /* fusectl */,
        };
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
                if (type == types[i])
                        return true;
        return false;
}

/* What a request may name as a volume's data or a store: an image file or
 * a block device, on a real filesystem.  @st is what @path is now. */
static int check_kind(const char *what, const char *path, const struct stat *st, bool want_block,
                      struct failure *f)
{
        struct statfs sf;

        if (statfs(path, &sf) == 0 && pseudo_fs(sf.f_type))
                return fail(f, -EACCES, "%s is a kernel interface, not %s", path, what);
        if (S_ISCHR(st->st_mode))
                return fail(f, -EINVAL, "%s is a character device, not %s", path, what);
        if (want_block ? !S_ISBLK(st->st_mode) : !S_ISREG(st->st_mode))
                return fail(f, -EINVAL, "%s is not %s", path, what);
        return 0;
}

/* A descriptor a caller other than root passes must not be on a FUSE
 * filesystem: its server (maybe the caller's) could leave the daemon
 * waiting in read() or write() for good, where no timeout reaches. */
static int check_not_fuse(const struct request *r, struct failure *f)
{
        struct statfs sf;

        if (r->peer->uid != 0 && r->peer->fd >= 0 && fstatfs(r->peer->fd, &sf) == 0 && sf.f_type == FUSE_SUPER_MAGIC)
                return fail(f, -EACCES, "permission denied: the descriptor passed with %s is on a FUSE filesystem",
                            r->op_name);
        return 0;
}

/*
 * A caller other than root adopts only what it could open itself: the
 * request carries its own descriptor, open for reading and writing, of the
 * very file @path names now (@st: the same device and inode, or the same
 * block device).  Root may name anything; a descriptor it passes is held
 * to the same rule.  handlers.c checks the file again once it is open
 * (request_same_file), so a path swapped in between is caught too.
 */
static int check_caller_file(const struct request *r, const char *path, const struct stat *st, struct failure *f)
{
        struct stat fst;
        int fl;

        if (r->peer->fd < 0) {
                if (r->peer->uid == 0)
                        return 0;
                return fail(f, -EACCES, "permission denied: %s needs %s opened by the caller, for reading and writing, "
                            "passed with the request (cowvol does this)", r->op_name, path);
        }
        if ((fl = fcntl(r->peer->fd, F_GETFL)) < 0 || fstat(r->peer->fd, &fst) < 0)
                return fail(f, -EBADF, "the descriptor passed with %s cannot be used: %s", r->op_name, strerror(errno));
        if ((fl & O_ACCMODE) != O_RDWR)
                return fail(f, -EACCES, "permission denied: the descriptor passed with %s is not open for reading "
                            "and writing", r->op_name);
        if (check_not_fuse(r, f) < 0)
                return f->err;
        if (!request_same_file(&fst, st))
                return fail(f, -EACCES, "permission denied: the descriptor passed with %s is not %s", r->op_name,
                            path);
        return 0;
}

bool request_same_file(const struct stat *a, const struct stat *b)
{
        if (S_ISBLK(a->st_mode) || S_ISBLK(b->st_mode))
                return S_ISBLK(a->st_mode) && S_ISBLK(b->st_mode) && a->st_rdev == b->st_rdev;
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* the name a volume gets from what it was added by: LABEL=x names it x; a
 * path its last part (sdb1, or vm1 for vm1.img) */
static int default_name(struct request *r, const char *dev, struct failure *f)
{
        const char *spec = r->path, *eq = strchr(spec, '=');
        char *copy, *base, *dot;

        if (r->name)
                return 0;
        if (!r->add_block_device) {
                if (!(copy = strdup(spec)))
                        return fail(f, -ENOMEM, "out of memory");
                base = basename(copy);
                if ((dot = strrchr(base, '.')) && dot != base)
                        *dot = '\0';
                snprintf(r->auto_name, sizeof(r->auto_name), "%s", base);
                free(copy);
        } else if (eq && !strncmp(spec, "LABEL=", 6))
                snprintf(r->auto_name, sizeof(r->auto_name), "%s", eq + 1);
        else if (!eq)
                snprintf(r->auto_name, sizeof(r->auto_name), "%s", strrchr(spec, '/') ? strrchr(spec, '/') + 1 : spec);
        else if (dev)
                snprintf(r->auto_name, sizeof(r->auto_name), "%s", strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev);
        else
                return fail(f, -ENOENT, "no device has %s", spec);
        r->name = r->auto_name;
        return 0;
}

/* An image that QEMU (qemu-io, qemu-nbd, a VM) holds stays its own: its
 * writes would change the origin behind the snapshots.  The test takes
 * nothing; the open that takes the locks tests again (a QEMU that comes in
 * between).  Through the caller's descriptor when it passed one (checked
 * to be this file); else opened without blocking on what is no file. */
static int check_qemu_lock(const struct request *r, const char *path, struct failure *f)
{
        bool own = r->peer->fd < 0;
        char why[256];
        int fd, e;

        fd = own ? open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) : r->peer->fd;
        if (fd < 0)
                return fail(f, -errno, "cannot add %s: %s", path, strerror(errno));
        e = cowvol_image_lock_test(fd, why, sizeof(why));
        if (own)
                close(fd);
        if (e == -EBUSY)
                return fail(f, e, "cannot add %s: it is in use: %s; nothing was changed", path, why);
        if (e < 0)
                return fail(f, e, "cannot add %s: cannot test QEMU's image lock on it: %s", path, strerror(-e));
        return 0;
}

static int check_add(struct request *r, struct failure *f)
{
        const char *path = r->path;
        struct stat st;
        char *dev = NULL;
        int e;

        /* a block device (or UUID=, LABEL=): the kernel engine */
        r->add_block_device = (path[0] != '/' && strchr(path, '=')) || (stat(path, &st) == 0 && S_ISBLK(st.st_mode));
        if (r->add_block_device) {
                if (check_chunk(r->chunk_given, f) < 0)
                        return f->err;
                if (cowvol_device_resolve(path, &dev) == 0) {
                        snprintf(r->device, sizeof(r->device), "%s", dev);
                        if (stat(dev, &st) < 0) {
                                e = fail(f, -errno, "cannot add %s: %s", dev, strerror(errno));
                                free(dev);
                                return e;
                        }
                        if (check_kind("a block device", dev, &st, true, f) < 0 ||
                            check_caller_file(r, dev, &st, f) < 0) {
                                free(dev);
                                return f->err;
                        }
                } else if (r->peer->uid != 0 || r->peer->fd >= 0) {
                        /* the caller's descriptor is checked against a device */
                        return fail(f, -ENOENT, "no block device has %s", path);
                }
                /* a loop device over a userspace volume's image: that
                 * volume moves to the kernel engine, with its snapshots */
                if (dev && (r->moving = engine_userspace_behind(dev))) {
                        struct vol *v = r->moving;
                        if (r->peer->uid != 0)
                                fail(f, -EACCES, "permission denied: moving volume '%s' between the engines needs "
                                     "root", v->name);
                        else if (r->name && strcmp(r->name, v->name))
                                fail(f, -EINVAL, "%s is the image of volume '%s' (via %s): it moves with its name",
                                     v->path, v->name, dev);
                        free(dev);
                        return f->err;
                }
                e = default_name(r, dev, f);
                free(dev);
        } else {
                if (path[0] != '/')
                        return fail(f, -EINVAL, "path '%s' is not absolute", path);
                if (stat(path, &st) < 0)
                        return fail(f, -errno, "cannot add %s: %s", path, strerror(errno));
                if (check_kind("an image file", path, &st, false, f) < 0 || check_caller_file(r, path, &st, f) < 0)
                        return f->err;
                /* the image behind a kernel volume's loop device: that
                 * volume moves to the userspace engine, with its snapshots */
                if ((r->moving = engine_kernel_over(path))) {
                        struct vol *v = r->moving;
                        if (r->peer->uid != 0)
                                return fail(f, -EACCES, "permission denied: moving volume '%s' between the engines "
                                            "needs root", v->name);
                        if (r->name && strcmp(r->name, v->name))
                                return fail(f, -EINVAL, "%s backs volume '%s' (via %s): it moves with its name", path,
                                            v->name, v->path);
                        return 0;
                }
                if (st.st_size <= 0 || st.st_size % COWVOL_SECTOR_SIZE)
                        return fail(f, -EINVAL, "%s is %lld bytes: an image must be a non-empty multiple of 512 bytes",
                                    path, (long long)st.st_size);
                if (check_chunk(r->chunk_given, f) < 0)
                        return f->err;
                r->size = (uint64_t)st.st_size;
                e = default_name(r, NULL, f);
        }
        r->chunk = (uint32_t)r->chunk_given; /* checked above */
        if (e < 0 || check_name("volume", r->name, f) < 0)
                return f->err;
        if (vol_find(r->name))
                return fail(f, -EEXIST, "a volume named '%s' exists already", r->name);
        if (!r->add_block_device)
                for (struct vol *o = catalogue.vols; o; o = o->next)
                        if (strcmp(o->path, path) == 0)
                                return fail(f, -EEXIST, "%s is volume '%s' already", path, o->name);
        if (!r->add_block_device)
                return check_qemu_lock(r, path, f);
        return 0;
}

/* --store DEVICE: a block device the caller could open itself (as add) */
static int check_store_device(struct request *r, struct failure *f)
{
        struct stat st;
        char *dev = NULL;

        if (!r->snap.store_device)
                return 0;
        if (cowvol_device_resolve(r->snap.store_device, &dev) < 0)
                return r->peer->uid == 0 && r->peer->fd < 0 ? 0 /* the engine says why */ :
                       fail(f, -ENOENT, "no block device has %s", r->snap.store_device);
        if (stat(dev, &st) < 0)
                fail(f, -errno, "cannot use %s: %s", dev, strerror(errno));
        else if (check_kind("a block device", dev, &st, true, f) == 0 && check_caller_file(r, dev, &st, f) == 0 &&
                 r->peer->uid != 0) {
                /* a user other than root: the device checked, not the spec again */
                snprintf(r->device, sizeof(r->device), "%s", dev);
                r->snap.store_device = r->device;
        }
        free(dev);
        return f->err;
}

/* A store file may not promise more than its filesystem has free, as
 * lvcreate refuses more than the VG's free extents: it would fill, and
 * invalidate its snapshot, with the space gone.  --force takes the risk.
 * (A store on a device the user named is that device's size.) */
static int check_store_room(struct request *r, struct failure *f)
{
        char a[32], b[32];
        struct statvfs fs;
        uint64_t avail;

        if (r->snap.store_device || r->snap.force || fstatvfs(state_fd, &fs) < 0)
                return 0;
        avail = (uint64_t)fs.f_bavail * fs.f_frsize;
        if (r->snap.store_bytes <= avail)
                return 0;
        return fail(f, -ENOSPC, "a store of %s is more than the %s free in the state folder's filesystem: it could "
                    "fill up and invalidate its snapshot; give a smaller --store-size, or --force to make it anyway",
                    cowvol_format_size(r->snap.store_bytes, a, sizeof(a)), cowvol_format_size(avail, b, sizeof(b)));
}

static int check_snap(struct request *r, struct failure *f)
{
        struct vol *v;
        int64_t store;

        if (find_volume(r->volume, &r->v, f) < 0)
                return f->err;
        v = r->v;
        /* no name given, and one taken this second: the time and ".N",
         * the number it gets (never used again, so never taken) */
        if (r->name == r->auto_name && snap_find(v, r->name)) {
                size_t n = strlen(r->auto_name);
                snprintf(r->auto_name + n, sizeof(r->auto_name) - n, ".%" PRIu64,
                         v->next_number ? v->next_number : 1);
        }
        if (snap_find(v, r->name))
                return fail(f, -EEXIST, "volume '%s' has a snapshot named '%s' already", v->name, r->name);
        if (r->pre_name || r->pre_number_given) {
                struct snap *pre = r->pre_name ? snap_find(v, r->pre_name)
                                               : snap_find_number(v, (uint64_t)r->pre_number_given);
                if (!pre && r->pre_name)
                        return fail(f, -ENOENT, "volume '%s' has no snapshot named '%s' (--post)", v->name,
                                    r->pre_name);
                if (!pre)
                        return fail(f, -ENOENT, "volume '%s' has no snapshot numbered %" PRId64 " (--post)", v->name,
                                    r->pre_number_given);
                if (pre->type != SNAP_PRE)
                        return fail(f, -EINVAL, "%s@%s is a %s snapshot, not a pre snapshot (--post)", v->name,
                                    pre->name, snap_kind_name(pre->type));
                r->pre_number = pre->number;
        }
        if (v->ops->snapshot_check(v, r->name, &r->snap, f) < 0 || check_store_device(r, f) < 0)
                return f->err;
        if (v->restoring)
                return fail(f, -EBUSY, "volume '%s' is being restored; snapshot it when that ends", v->name);
        /* the kernel's snapshot devices are writable: not promised otherwise */
        if (!r->read_only_given)
                r->read_only = v->ops->pread && (r->cleanup == CLEANUP_NUMBER || r->cleanup == CLEANUP_TIMELINE);
        else if (r->read_only && !v->ops->pread)
                return fail(f, -ENOTSUP, "volume '%s' is under the kernel engine: its snapshots cannot be made "
                            "read-only yet", v->name);
        if (!r->store_size_given) {
                /* default: 20 % of the volume, at least 1 MiB */
                store = (int64_t)(v->size / 5);
                if (store < (1 << 20))
                        store = 1 << 20;
        } else
                store = r->store_size;
        if (store < (int64_t)COWVOL_STORE_MIN_CHUNKS * v->chunk || (uint64_t)store > SIZE_MAX_BYTES)
                return fail(f, -EINVAL, "store size %" PRId64 " is out of range (%u chunks of %" PRIu32
                            " bytes to 1 PiB)", store, COWVOL_STORE_MIN_CHUNKS, v->chunk);
        r->snap.store_bytes = ((uint64_t)store + v->chunk - 1) / v->chunk * v->chunk;
        return check_store_room(r, f);
}

static int check_list(struct request *r, struct failure *f)
{
        r->v = NULL;
        if (r->volume && find_volume(r->volume, &r->v, f) < 0)
                return f->err;
        return 0;
}

static int check_restore(struct request *r, struct failure *f)
{
        if (find_target(r, f) < 0)
                return f->err;
        if (r->v->restoring)
                return fail(f, -EBUSY, "volume '%s' is being restored from '%s' already", r->v->name,
                            r->v->restoring->name);
        return 0;
}

static int check_resize(struct request *r, struct failure *f)
{
        char a[32], b[32], users[256];
        struct vol *v;

        if (find_volume(r->volume, &r->v, f) < 0)
                return f->err;
        v = r->v;
        if (!v->ops->resize)
                return fail(f, -ENOTSUP, "volume '%s' is under the %s engine: cowvol cannot resize its device-mapper "
                            "devices yet", v->name, v->ops->name);
        if (r->grow_by) {
                if ((uint64_t)r->grow_by > SIZE_MAX_BYTES - v->size)
                        return fail(f, -EINVAL, "%" PRIu64 " + %" PRId64 " bytes is past 1 PiB", v->size, r->grow_by);
                r->size = v->size + (uint64_t)r->grow_by;
        }
        if (v->restoring)
                return fail(f, -EBUSY, "volume '%s' is being restored; resize it when that ends", v->name);
        if (!v->ops->is_active(v))
                return fail_unavailable(v, NULL, f);
        if (r->size == v->size)
                return fail(f, -EINVAL, "volume '%s' is %s (%" PRIu64 " bytes) already", v->name,
                            cowvol_format_size(v->size, a, sizeof(a)), v->size);
        if (v->snaps && (v->size % v->chunk || r->size % v->chunk))
                return fail(f, -EINVAL, "volume '%s' has snapshots: it grows from and to whole chunks of %s "
                            "(%" PRIu64 " bytes is not)", v->name, cowvol_format_size(v->chunk, a, sizeof(a)),
                            v->size % v->chunk ? v->size : r->size);
        if (r->size < v->size) {
                if (v->snaps)
                        return fail(f, -EBUSY, "volume '%s' has snapshots: they read the end that shrinking would "
                                    "cut off; remove them first (LVM will not reduce a snapshot origin either)",
                                    v->name);
                if (v->refs)
                        return fail(f, -EBUSY, "volume '%s' is in use by %s; shrink it when they end", v->name,
                                    vol_users_describe(v, NULL, users, sizeof(users)));
                if (!r->force)
                        return fail(f, -EINVAL, "shrinking volume '%s' from %s to %s destroys the data past %s "
                                    "(a filesystem on it must be shrunk first); give --force to do it", v->name,
                                    cowvol_format_size(v->size, a, sizeof(a)),
                                    cowvol_format_size(r->size, b, sizeof(b)), b);
        }
        return 0;
}

static int check_rename(struct request *r, struct failure *f)
{
        struct vol *v;

        if (find_target(r, f) < 0)
                return f->err;
        v = r->v;
        if (!v->ops->rename)
                return fail(f, -ENOTSUP, "volume '%s' is under the %s engine: cowvol cannot rename its device-mapper "
                            "devices yet", v->name, v->ops->name);
        if (v->restoring)
                return fail(f, -EBUSY, "volume '%s' is being restored; rename it when that ends", v->name);
        if (r->s ? !strcmp(r->s->name, r->name) : !strcmp(v->name, r->name))
                return fail(f, -EINVAL, "'%s' is its name already", r->name);
        if (r->s && snap_find(v, r->name))
                return fail(f, -EEXIST, "volume '%s' has a snapshot named '%s' already", v->name, r->name);
        if (!r->s && vol_find(r->name))
                return fail(f, -EEXIST, "a volume named '%s' exists already", r->name);
        return 0;
}

static int check_set(struct request *r, struct failure *f)
{
        char users[256];

        if (find_target(r, f) < 0)
                return f->err;
        if (r->read_only && !r->v->ops->pread)
                return fail(f, -ENOTSUP, "volume '%s' is under the kernel engine: its snapshots cannot be made "
                            "read-only yet", r->v->name);
        /* an NBD connection keeps the flags it was given: not under it */
        if (r->read_only != r->s->read_only && r->s->refs)
                return fail(f, -EBUSY, "snapshot %s@%s is in use by %s; change it when they end", r->v->name,
                            r->s->name, vol_users_describe(r->v, r->s, users, sizeof(users)));
        return 0;
}

static int check_volume(struct request *r, struct failure *f)
{
        return find_volume(r->volume, &r->v, f);
}

static int check_activate(struct request *r, struct failure *f)
{
        if (find_volume(r->volume, &r->v, f) < 0)
                return f->err;
        if (!r->v->ops->reactivate)
                return fail(f, -EINVAL, "'%s' is an image file volume: it is always active while cowvold runs",
                            r->v->name);
        return 0;
}

/* May @v (@s NULL) or its snapshot @s go? */
static int check_rm_one(const struct request *r, struct vol *v, struct snap *s, struct failure *f)
{
        char users[256];
        unsigned n = 0;

        if (v->restoring)
                return fail(f, -EBUSY, "volume '%s' is being restored; wait for it to end", v->name);
        if (s) {
                if (s->refs)
                        return fail(f, -EBUSY, "snapshot %s@%s is in use by %s", v->name, s->name,
                                    vol_users_describe(v, s, users, sizeof(users)));
                return 0;
        }
        for (struct snap *x = v->snaps; x; x = x->next)
                n++;
        if (n && !r->recursive)
                return fail(f, -EBUSY, "volume '%s' has %u snapshot%s; remove them first or use --recursive", v->name,
                            n, n == 1 ? "" : "s");
        if (v->refs)
                return fail(f, -EBUSY, "volume '%s' is in use by %s", v->name,
                            vol_users_describe(v, NULL, users, sizeof(users)));
        if (!r->yes) {
                uint64_t bytes = vol_rm_deletes(v);
                char a[32];
                if (bytes)
                        return fail(f, -EPERM, "volume '%s' holds data (%s in its image %s, which rm deletes): "
                                    "removing it needs --yes (or a yes on a terminal)", v->name,
                                    cowvol_format_size(bytes, a, sizeof(a)), v->path);
        }
        return v->ops->volume_busy(v, f);
}

static int rm_item_add(struct request *r, struct vol *v, struct snap *s, struct failure *f)
{
        struct rm_item *n;

        for (size_t i = 0; i < r->n_items; i++)
                if (r->items[i].v == v && (r->items[i].s == s || !r->items[i].s || !s))
                        return fail(f, -EINVAL, "rm: %s%s%s is named twice (or with its volume)", v->name,
                                    s ? "@" : "", s ? s->name : "");
        n = realloc(r->items, (r->n_items + 1) * sizeof(*n));
        if (!n)
                return fail(f, -ENOMEM, "out of memory");
        r->items = n;
        r->items[r->n_items++] = (struct rm_item){ v, s };
        return 0;
}

/* Every target checked before anything goes: all or nothing. */
static int check_rm(struct request *r, struct failure *f)
{
        if (r->targets) {
                for (size_t i = 0; i < json_object_array_length(r->targets); i++) {
                        r->target = json_object_get_string(json_object_array_get_idx(r->targets, i));
                        if (find_target(r, f) < 0 || check_rm_one(r, r->v, r->s, f) < 0 ||
                            rm_item_add(r, r->v, r->s, f) < 0)
                                return f->err;
                }
                return 0;
        }
        if (r->older_than >= 0) {
                int64_t before = (int64_t)time(NULL) - r->older_than;
                if (find_target(r, f) < 0)
                        return f->err;
                /* oldest first: removing the oldest of a chain copies nothing */
                for (struct snap *s = r->v->snaps; s; s = s->next) {
                        if (s->created >= before)
                                continue;
                        if (check_rm_one(r, r->v, s, f) < 0 || rm_item_add(r, r->v, s, f) < 0)
                                return f->err;
                }
                return 0;
        }
        if (find_target(r, f) < 0 || check_rm_one(r, r->v, r->s, f) < 0)
                return f->err;
        return rm_item_add(r, r->v, r->s, f);
}

static int check_cat(struct request *r, struct failure *f)
{
        struct vol *v;
        uint64_t size;

        if (find_target(r, f) < 0 || check_data_path(r->v, r->s, f) < 0)
                return f->err;
        v = r->v;
        /* the restore drops the snapshot at its end, whoever still reads
         * it; one that cannot resume leaves it as it is, to be read */
        if (r->s && v->restoring == r->s && !v->restore_stalled)
                return fail(f, -EBUSY, "snapshot %s@%s is being restored into its volume", v->name, r->s->name);
        if (r->peer->fd < 0)
                return fail(f, -EBADF, "cat needs a file descriptor passed with the request");
        if (check_not_fuse(r, f) < 0)
                return f->err;
        size = r->s ? r->s->size : v->size; /* a snapshot keeps its size when the volume grows */
        if (r->offset < 0 || (uint64_t)r->offset > size)
                return fail(f, -EINVAL, "offset %" PRId64 " is outside the %s (%" PRIu64 " bytes)", r->offset,
                            r->s ? "snapshot" : "volume", size);
        if (r->length < 0 || (uint64_t)r->length > size - (uint64_t)r->offset)
                r->length = (int64_t)(size - (uint64_t)r->offset);
        return check_data_open(v, r->s, f);
}

static int check_write(struct request *r, struct failure *f)
{
        struct vol *v;
        uint64_t size;

        if (find_target(r, f) < 0 || check_data_path(r->v, r->s, f) < 0)
                return f->err;
        v = r->v;
        if (r->peer->fd < 0)
                return fail(f, -EBADF, "write needs a file descriptor passed with the request");
        if (check_not_fuse(r, f) < 0)
                return f->err;
        if (r->offset < 0 || r->length < 0)
                return fail(f, -EINVAL, "offset and length must not be negative");
        if (r->s && v->restoring == r->s)
                return fail(f, -EBUSY, "snapshot %s@%s is to be restored into its volume; it takes no writes",
                            v->name, r->s->name);
        if (r->s && r->s->read_only)
                return fail(f, -EROFS, "snapshot %s@%s is read-only ('cowvol set %s@%s read-only=off' makes it "
                            "writable)", v->name, r->s->name, v->name, r->s->name);
        size = r->s ? r->s->size : v->size;
        if ((uint64_t)r->offset > size || (uint64_t)r->length > size - (uint64_t)r->offset)
                return fail(f, -ENOSPC, "%" PRId64 " bytes at offset %" PRId64 " go past the end of the %s "
                            "(%" PRIu64 " bytes); nothing was written", r->length, r->offset,
                            r->s ? "snapshot" : "volume", size);
        if (check_data_open(v, r->s, f) < 0)
                return f->err;
        if (v->restoring && !v->restore_pending) /* a restore that waits: the volume is as it was */
                return fail(f, -EBUSY, "volume '%s' is being restored: writes are refused until it ends "
                            "('cowvol list' shows its progress)", v->name);
        return 0;
}

static int check_diff(struct request *r, struct failure *f)
{
        if (find_target(r, f) < 0)
                return f->err;
        if (!r->v->ops->snapshot_open(r->v, r->s))
                return fail_unavailable(r->v, r->s, f);
        return 0;
}

static int check_export(struct request *r, struct failure *f)
{
        struct snap_state st;
        struct vol *v;

        if (find_target(r, f) < 0 || check_data_path(r->v, r->s, f) < 0 || check_data_open(r->v, r->s, f) < 0)
                return f->err;
        v = r->v;
        if (r->s) {
                v->ops->snapshot_state(v, r->s, &st);
                if (!st.have || !st.valid)
                        return fail_unavailable(v, r->s, f);
        }
        if (r->s && v->restoring == r->s)
                return fail(f, -EBUSY, "snapshot %s@%s is being restored into its volume", v->name, r->s->name);
        if (!settings.nbd_socket_path && !settings.nbd_tcp_uri_host)
                return fail(f, -ENOTSUP, "cowvold is not serving NBD");
        return 0;
}

static int check_schedule(struct request *r, struct failure *f)
{
        for (size_t i = 0; i < json_object_array_length(r->volumes); i++) {
                struct vol *v;
                if (find_volume(json_object_get_string(json_object_array_get_idx(r->volumes, i)), &v, f) < 0)
                        return f->err;
        }
        return 0;
}

static int check_nothing(struct request *r, struct failure *f)
{
        (void)r;
        (void)f;
        return 0;
}

static const struct {
        const char *name;
        int (*parse)(json_object *args, struct request *r, struct failure *f);
        int (*check)(struct request *r, struct failure *f);
        bool admin;
        bool unlocked; /* runs without the catalogue's lock (status) */
} ops[_OP_MAX] = {
        [OP_STATUS] = { "status", parse_status, check_nothing, false, true },
        [OP_CREATE] = { "create", parse_create, check_create, true, false },
        [OP_ADD] = { "add", parse_add, check_add, true, false },
        [OP_SNAP] = { "snap", parse_snap, check_snap, true, false },
        [OP_LIST] = { "list", parse_list, check_list, true, false },
        [OP_RESTORE] = { "restore", parse_restore, check_restore, true, false },
        [OP_RESTORE_WAIT] = { "restore-wait", parse_restore_wait, check_volume, true, false },
        [OP_RM] = { "rm", parse_rm, check_rm, true, false },
        [OP_ACTIVATE] = { "activate", parse_activate, check_activate, true, false },
        [OP_CAT] = { "cat", parse_cat, check_cat, true, false },
        [OP_WRITE] = { "write", parse_write, check_write, true, false },
        [OP_DIFF] = { "diff", parse_diff, check_diff, true, false },
        [OP_EXPORT] = { "export", parse_export, check_export, true, false },
        [OP_RESIZE] = { "resize", parse_resize, check_resize, true, false },
        [OP_RENAME] = { "rename", parse_rename, check_rename, true, false },
        [OP_SET] = { "set", parse_set, check_set, true, false },
        [OP_CLEANUP] = { "cleanup", parse_cleanup, check_volume, true, false },
        [OP_SCHEDULE] = { "schedule", parse_schedule, check_schedule, true, false },
};

int request_parse(const char *op, json_object *args, struct peer *p, struct request *ret, struct failure *f)
{
        json_object *empty = NULL;
        int i, r;

        for (i = 0; i < _OP_MAX; i++)
                if (strcmp(ops[i].name, op) == 0)
                        break;
        if (i == _OP_MAX) {
                char safe[72];
                return fail(f, -EINVAL, "unknown operation '%s'", ascii_safe(op, safe, sizeof(safe)));
        }
        if (ops[i].admin && !p->admin)
                return fail(f, -EACCES, "permission denied: '%s' needs root or membership of group '%s'", op,
                            settings_group());
        memset(ret, 0, sizeof(*ret));
        ret->op = (enum op_id)i;
        ret->op_name = ops[i].name;
        ret->unlocked = ops[i].unlocked;
        ret->peer = p;
        if (!args)
                args = empty = json_object_new_object();
        r = ops[i].parse(args, ret, f);
        json_object_put(empty); /* no string of an empty object is kept */
        return r;
}

int request_check(struct request *r, struct failure *f)
{
        return ops[r->op].check(r, f);
}
