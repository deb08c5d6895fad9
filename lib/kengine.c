/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kernel engine: device-mapper snapshot stacks over block devices, in
 * LVM2's layering and order of operations (shared/store-format.md).  The
 * kernel copies chunks; this file plans and changes tables.  Every
 * device-mapper call goes through dm.c, every libblkid call through
 * blkid.c, loop devices through loop.c.
 *
 * Invariants:
 *  - A device is changed only when its dm uuid is the one this object owns
 *    (COWVOL-<uuid>[-layer]); a device of the same name with another uuid
 *    is refused with -EEXIST, and nothing is changed.
 *  - A snapshot table is loaded before its origin is suspended (it joins
 *    the origin's list inactive, reading its store), then resumed or
 *    removed only while the origin is suspended, and the origin resumes
 *    after it (it sizes its I/O to its snapshots' chunks as it resumes).
 *    Taking a snapshot suspends the origin with lockfs, so a mounted
 *    filesystem is frozen, consistent, at that moment; the store's new
 *    header is flushed before the call returns.
 *  - A device is taken under a stack only when nobody holds it open
 *    exclusively (O_EXCL: a mount, another dm table, md): the kernel would
 *    let two of our tables share a device (they all claim with one holder),
 *    so two snapshots over one store, or a store that is a volume, are
 *    refused here.
 *  - Activating a snapshot over a store without the store's header is
 *    refused: the kernel would take a zeroed header for a new, empty store
 *    and show the origin as it is now.
 *  - A failure half-way undoes what it did: the origin is resumed, devices
 *    made for the operation are removed.
 */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"

#define NAME_LEN 128
#define UUID_LEN 130

struct names {
        char origin[NAME_LEN], real[NAME_LEN], snap[NAME_LEN], cow[NAME_LEN];
        char origin_uuid[UUID_LEN], real_uuid[UUID_LEN], snap_uuid[UUID_LEN], cow_uuid[UUID_LEN];
};

/* A name part LVM's escaping keeps apart: not empty, no leading hyphen
 * ("a-" + "b" and "a" + "-b" would both give "a---b"), no '/'. */
static int name_ok(const char *what, const char *name)
{
        if (!name[0] || name[0] == '-' || strchr(name, '/'))
                return log_err(-EINVAL, "The %s name '%s' cannot name a device-mapper device (empty, a leading '-' "
                                        "or a '/')", what, name);
        return 0;
}

/* "COWVOL-" + uuid + "-real" must fit the kernel's 128 characters */
static int uuid_ok(const char *uuid)
{
        if (!uuid[0] || strlen(uuid) > 128 - strlen("COWVOL-") - strlen("-real"))
                return log_err(-EINVAL, "The uuid '%s' cannot make a device-mapper uuid (empty or too long)", uuid);
        return 0;
}

static int names_of(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s, struct names *n)
{
        int r;

        if (!v || !v->name || !v->uuid || (s && (!s->name || !s->uuid)))
                return -EINVAL;
        if ((r = name_ok("volume", v->name)) < 0 || (r = uuid_ok(v->uuid)) < 0 ||
            (s && ((r = name_ok("snapshot", s->name)) < 0 || (r = uuid_ok(s->uuid)) < 0)))
                return r;
        memset(n, 0, sizeof(*n));
        if ((r = cvdm_name(n->origin, NAME_LEN, v->name, NULL, NULL)) < 0 ||
            (r = cvdm_name(n->real, NAME_LEN, v->name, NULL, "real")) < 0)
                return log_err(r, "The volume name '%s' is too long for device-mapper", v->name);
        snprintf(n->origin_uuid, UUID_LEN, "COWVOL-%s", v->uuid);
        snprintf(n->real_uuid, UUID_LEN, "COWVOL-%s-real", v->uuid);
        if (s) {
                /* "cowvol-V-real" is the volume's own layer */
                if (!strcmp(s->name, "real"))
                        return log_err(-EINVAL, "A snapshot of a kernel volume cannot be named 'real'");
                if ((r = cvdm_name(n->snap, NAME_LEN, v->name, s->name, NULL)) < 0 ||
                    (r = cvdm_name(n->cow, NAME_LEN, v->name, s->name, "cow")) < 0)
                        return log_err(r, "The snapshot name %s@%s is too long for device-mapper", v->name,
                                       s->name);
                snprintf(n->snap_uuid, UUID_LEN, "COWVOL-%s", s->uuid);
                snprintf(n->cow_uuid, UUID_LEN, "COWVOL-%s-cow", s->uuid);
        }
        return 0;
}

/* @name's state: 1 ours (info filled), 0 absent, -EEXIST someone else's. */
static int ours(const char *name, const char *uuid, struct cvdm_info *info)
{
        int r = cvdm_info(name, info);

        if (r < 0)
                return r;
        if (!info->exists)
                return 0;
        if (strcmp(info->uuid, uuid) != 0)
                return log_err(-EEXIST,
                               "Device-mapper device %s exists and is not this object's (uuid '%s', not '%s'): "
                               "cowvol leaves it alone",
                               name, info->uuid, uuid);
        return 1;
}

_public_ int cowvol_kernel_available(void)
{
        return cvdm_available();
}

_public_ bool cowvol_kernel_present(void)
{
        return cvdm_probe(false) == 0;
}

_public_ int cowvol_kernel_path(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s,
                                char *out, size_t len)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        int r = names_of(v, s, &n);

        if (r < 0)
                return r;
        snprintf(out, len, "/dev/mapper/%s", s ? n.snap : n.origin);
        return 0;
}

/* -EBUSY (logged) when someone holds block device @dev exclusively: a
 * mounted filesystem, a device-mapper table (ours too), md. */
static int not_held(const char *dev)
{
        int fd = open(dev, O_RDONLY | O_EXCL | O_CLOEXEC);

        if (fd < 0)
                return errno == EBUSY ? log_err(-EBUSY, "%s is in use (mounted, or under a device-mapper table: "
                                                        "another volume or snapshot?)", dev)
                                      : log_err(-errno, "Cannot open %s: %m", dev);
        close(fd);
        return 0;
}

/* sectors of a block device */
static int sectors_of(const char *dev, uint64_t *ret)
{
        struct stat st;
        uint64_t bytes;
        int r;

        if (stat(dev, &st) < 0)
                return log_err(-errno, "Cannot use %s: %m", dev);
        if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
                return log_err(-ENOTBLK, "%s is not a block device", dev);
        if ((r = cvdev_size(dev, &bytes)) < 0)
                return r;
        if (bytes < 512)
                return log_err(-EINVAL, "%s is empty", dev);
        *ret = bytes / 512;
        return 0;
}

_public_ int cowvol_kernel_volume_activate(const struct cowvol_kernel_volume *v)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        struct cvdm_info ri, oi;
        uint64_t sectors;
        char params[320];
        int r, have_real, have_origin;

        if ((r = names_of(v, NULL, &n)) < 0 || (r = cvdm_available()) < 0)
                return r;
        if ((have_real = ours(n.real, n.real_uuid, &ri)) < 0 || (have_origin = ours(n.origin, n.origin_uuid, &oi)) < 0)
                return have_real < 0 ? have_real : have_origin;
        if (!have_real) {
                struct stat st;
                if ((r = sectors_of(v->device, &sectors)) < 0)
                        return r;
                if (stat(v->device, &st) < 0 || !S_ISBLK(st.st_mode))
                        return log_err(-ENOTBLK, "%s is not a block device", v->device);
                if ((r = not_held(v->device)) < 0)
                        return r;
                snprintf(params, sizeof(params), "%u:%u 0", major(st.st_rdev), minor(st.st_rdev));
                r = cvdm_create(n.real, n.real_uuid, &(struct cvdm_target){ 0, sectors, "linear", params }, 1, true,
                                true);
                if (r < 0)
                        return r;
                if ((r = cvdm_info(n.real, &ri)) < 0)
                        return r;
        }
        if (!have_origin) {
                uint64_t len;
                char type[32];
                if ((r = cvdm_table(n.real, type, sizeof(type), params, sizeof(params), &len)) < 0)
                        goto undo;
                snprintf(params, sizeof(params), "%u:%u", ri.major, ri.minor);
                r = cvdm_create(n.origin, n.origin_uuid, &(struct cvdm_target){ 0, len, "snapshot-origin", params }, 1,
                                true, false);
                if (r < 0)
                        goto undo;
        }
        return 0;
undo:
        if (!have_real)
                (void)cvdm_remove(n.real, true);
        return r;
}

_public_ int cowvol_kernel_volume_deactivate(const struct cowvol_kernel_volume *v)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        struct cvdm_info ri, oi;
        int r, have_real, have_origin;

        if ((r = names_of(v, NULL, &n)) < 0)
                return r;
        if ((have_origin = ours(n.origin, n.origin_uuid, &oi)) < 0 || (have_real = ours(n.real, n.real_uuid, &ri)) < 0)
                return have_origin < 0 ? have_origin : have_real;
        if (have_origin && oi.open_count > 0)
                return log_err(-EBUSY, "%s is in use (open %d times: mounted?)", n.origin, oi.open_count);
        /* each snapshot holds -real open, as the origin does: check before
         * anything goes, or the origin would go and -real stay */
        if (have_real && ri.open_count > (have_origin ? 1 : 0))
                return log_err(-EBUSY, "%s still has snapshots (%s is open %d times): remove them first", v->name,
                               n.real, ri.open_count);
        if (have_origin && (r = cvdm_remove(n.origin, false)) < 0)
                return r;
        if (have_real && (r = cvdm_remove(n.real, true)) < 0)
                return r;
        return 0;
}

/* The store's device for the -cow layer: a block device as it is, a file
 * through its loop device (found, or attached: *ret_fd then holds it until
 * the table does). */
static int store_device(const char *store, char *dev, size_t len, int *ret_fd)
{
        struct stat st;
        int r;

        *ret_fd = -1;
        if (stat(store, &st) < 0)
                return log_err(-errno, "Cannot use the store %s: %m", store);
        if (S_ISBLK(st.st_mode)) {
                snprintf(dev, len, "%s", store);
                return 0;
        }
        if (!S_ISREG(st.st_mode))
                return log_err(-EINVAL, "The store %s is neither a file nor a block device", store);
        if (cvloop_find(store, dev, len) == 0)
                return 0;
        r = cvloop_attach(store, dev, len);
        if (r < 0)
                return r;
        *ret_fd = r;
        return 0;
}

/*
 * Open the store's device @dev exclusively (nobody else may hold it: not a
 * mount, not another -cow table), then @fresh: zero its first chunk (the
 * kernel then writes a new header), else check that it holds a store's
 * header.  The descriptor is closed again: the -cow table claims it next.
 */
static int store_prepare(const char *store, const char *dev, uint32_t chunk_bytes, bool fresh)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ void *buf = NULL;
        uint32_t h[4];
        int r;

        fd = open(dev, (fresh ? O_RDWR : O_RDONLY) | O_EXCL | O_CLOEXEC);
        if (fd < 0)
                return errno == EBUSY ? log_err(-EBUSY, "The store %s (%s) is in use: by another snapshot, a "
                                                        "mount or a device-mapper table", store, dev)
                                      : log_err(-errno, "Cannot open the store %s: %m", dev);
        if (fresh) {
                if (!(buf = calloc(1, chunk_bytes)))
                        return -ENOMEM;
                if ((r = pwrite_full(fd, buf, chunk_bytes, 0)) < 0 || (r = fsync(fd) < 0 ? -errno : 0) < 0)
                        return log_err(r, "Cannot zero the store's header on %s: %m", dev);
                return 0;
        }
        /* O_DIRECT: a page cache of the device may predate the kernel's
         * last writes through the -cow layer */
        if (posix_memalign(&buf, 4096, 4096) != 0)
                return -ENOMEM;
        {
                int dfd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
                r = dfd < 0 ? -EINVAL : pread_full(dfd, buf, 4096, 0);
                if (dfd >= 0)
                        close(dfd);
                if (r < 0 && (r = pread_full(fd, buf, 4096, 0)) < 0)
                        return log_err(r, "Cannot read the store's header on %s: %m", dev);
        }
        memcpy(h, buf, sizeof(h));
        if (h[0] == 0)
                return log_err(-EINVAL, "The store %s holds no snapshot store (its header is zero): activating it "
                                        "would show the volume as it is now, not the snapshot", store);
        if (le32toh(h[0]) != COWVOL_STORE_MAGIC || le32toh(h[2]) != 1)
                return log_err(-EINVAL, "The store %s is not a snapshot store (no \"SnAp\" header of version 1)",
                               store);
        return 0;
}

/* Make the header the kernel wrote on a new store durable: it writes it
 * without a flush, and a crash before the first copy would leave the
 * zeroed one. */
static int store_sync(const char *store)
{
        int fd = open(store, O_RDONLY | O_CLOEXEC), r = 0;

        if (fd < 0)
                return log_err(-errno, "Cannot open the store %s: %m", store);
        if (fsync(fd) < 0)
                r = log_err(-errno, "Cannot flush the store %s: %m", store);
        close(fd);
        return r;
}

/* Build -cow over the store (its header zeroed first when @fresh); a file
 * store's loop device stays held by *loop_fd until the caller closes it. */
static int cow_build(const struct names *n, const struct cowvol_kernel_snapshot *s, bool fresh, int *loop_fd)
{
        char dev[300], params[320];
        uint64_t cow_sectors;
        struct stat st;
        int r;

        if ((r = store_device(s->store, dev, sizeof(dev), loop_fd)) < 0)
                return r;
        if ((r = sectors_of(dev, &cow_sectors)) < 0)
                return r;
        if (cow_sectors < 3ull * (s->chunk_bytes / 512))
                return log_err(-ENOSPC, "The store %s is too small: at least 3 chunks", s->store);
        if ((r = store_prepare(s->store, dev, s->chunk_bytes, fresh)) < 0)
                return r;
        if (stat(dev, &st) < 0)
                return log_err(-errno, "Cannot use %s: %m", dev);
        snprintf(params, sizeof(params), "%u:%u 0", major(st.st_rdev), minor(st.st_rdev));
        return cvdm_create(n->cow, n->cow_uuid, &(struct cvdm_target){ 0, cow_sectors, "linear", params }, 1, true,
                           true);
}

/* Build -cow and the snapshot; @fresh: zero the header first (a new one). */
static int snapshot_build(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s, bool fresh)
{
        struct names n;
        struct cvdm_info oi, ri, si, ci;
        char params[320];
        uint64_t len;
        int r, have_snap, have_cow, loop_fd = -1;
        bool made_cow = false, made_snap = false, suspended = false;

        if ((r = names_of(v, s, &n)) < 0 || (r = cvdm_available()) < 0)
                return r;
        if (!cowvol_chunk_size_valid(s->chunk_bytes))
                return log_err(-EINVAL, "Chunk size %" PRIu32 " is not a power of two from 4 KiB to 512 KiB",
                               s->chunk_bytes);
        if ((r = ours(n.origin, n.origin_uuid, &oi)) <= 0 || (r = ours(n.real, n.real_uuid, &ri)) <= 0)
                return r < 0 ? r : log_err(-ENODEV, "The volume %s is not active", v->name);
        if ((have_snap = ours(n.snap, n.snap_uuid, &si)) < 0 || (have_cow = ours(n.cow, n.cow_uuid, &ci)) < 0)
                return have_snap < 0 ? have_snap : have_cow;
        if (have_snap && si.live_table)
                return fresh ? log_err(-EEXIST, "%s exists already", n.snap) : 0;
        if (fresh) {
                char type[32];
                if ((r = cvdm_table(n.origin, type, sizeof(type), NULL, 0, NULL)) < 0)
                        return r;
                /* as LVM: no new snapshot of an origin that is merging one */
                if (!strcmp(type, "snapshot-merge"))
                        return log_err(-EBUSY, "%s is merging a snapshot: a new one waits for the merge's end",
                                       v->name);
        }
        if (!have_cow) {
                if ((r = cow_build(&n, s, fresh, &loop_fd)) < 0)
                        goto out;
                made_cow = true;
        } else if (fresh) {
                r = log_err(-EEXIST, "%s exists already", n.cow);
                goto out;
        }
        if ((r = cvdm_info(n.cow, &ci)) < 0 || (r = cvdm_table(n.real, NULL, 0, NULL, 0, &len)) < 0)
                goto out;
        /* snapshot <origin> <cow> P <chunk sectors> */
        snprintf(params, sizeof(params), "%u:%u %u:%u P %u", ri.major, ri.minor, ci.major, ci.minor,
                 s->chunk_bytes / 512);
        if (!have_snap) {
                r = cvdm_create(n.snap, n.snap_uuid, NULL, 0, false, false);
                if (r < 0)
                        goto out;
                made_snap = true;
        }
        if ((r = cvdm_reload(n.snap, &(struct cvdm_target){ 0, len, "snapshot", params }, 1)) < 0)
                goto out;
        /* loading the table wrote the new header: durable before we go on */
        if (fresh && (r = store_sync(s->store)) < 0)
                goto out;
        /* the origin suspended (a mounted filesystem frozen): the snapshot
         * registers with it as it resumes, then the origin goes on */
        if ((r = cvdm_suspend(n.origin, true)) < 0)
                goto out;
        suspended = true;
        r = cvdm_resume(n.snap, false);
out:
        if (suspended) {
                int q = cvdm_resume(n.origin, false);
                if (r >= 0)
                        r = q;
        }
        if (r < 0 && made_snap)
                (void)cvdm_remove(n.snap, false);
        if (r < 0 && made_cow)
                (void)cvdm_remove(n.cow, true);
        if (loop_fd >= 0)
                close(loop_fd); /* the table holds the loop device now, or it goes */
        return r;
}

_public_ int cowvol_kernel_snapshot_create(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        return snapshot_build(v, s, true);
}

_public_ int cowvol_kernel_snapshot_activate(const struct cowvol_kernel_volume *v,
                                             const struct cowvol_kernel_snapshot *s)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        return snapshot_build(v, s, false);
}

_public_ int cowvol_kernel_snapshot_remove(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        struct cvdm_info oi, si, ci;
        int r, have_origin, have_snap, have_cow;

        if ((r = names_of(v, s, &n)) < 0)
                return r;
        if ((have_snap = ours(n.snap, n.snap_uuid, &si)) < 0 || (have_cow = ours(n.cow, n.cow_uuid, &ci)) < 0 ||
            (have_origin = ours(n.origin, n.origin_uuid, &oi)) < 0)
                return have_snap < 0 ? have_snap : have_cow < 0 ? have_cow : have_origin;
        if (have_snap && si.open_count > 0)
                return log_err(-EBUSY, "%s is in use (open %d times: mounted?)", n.snap, si.open_count);
        if (have_snap) {
                /* unloading a snapshot table needs its origin suspended */
                if (have_origin && (r = cvdm_suspend(n.origin, false)) < 0)
                        return r;
                r = cvdm_remove(n.snap, false);
                if (have_origin) {
                        int q = cvdm_resume(n.origin, false);
                        if (r >= 0)
                                r = q;
                }
                if (r < 0)
                        return r;
        }
        if (have_cow && (r = cvdm_remove(n.cow, true)) < 0)
                return r;
        return 0; /* the loop device, autoclear, went with -cow */
}

/* "A/T M", "Invalid", "Overflow", "Merge failed" */
static void parse_snapshot_status(const char *p, struct cowvol_kernel_status *ret)
{
        unsigned long long a, t, m;

        if (sscanf(p, "%llu/%llu %llu", &a, &t, &m) == 3) {
                ret->valid = true;
                ret->usage.allocated_sectors = a;
                ret->usage.total_sectors = t;
                ret->usage.metadata_sectors = m;
        } else {
                ret->valid = false;
                ret->overflow = strstr(p, "Overflow") != NULL;
                ret->merge_failed = strstr(p, "Merge failed") != NULL;
        }
}

_public_ int cowvol_kernel_status(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s,
                                  struct cowvol_kernel_status *ret)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        struct cvdm_info info;
        char type[32], params[256];
        uint64_t len = 0;
        int r;

        memset(ret, 0, sizeof(*ret));
        if ((r = names_of(v, s, &n)) < 0)
                return r;
        if ((r = ours(s ? n.snap : n.origin, s ? n.snap_uuid : n.origin_uuid, &info)) <= 0)
                return r;
        ret->exists = true;
        ret->open_count = info.open_count;
        if (!info.live_table)
                return 0;
        if ((r = cvdm_status(s ? n.snap : n.origin, type, sizeof(type), params, sizeof(params), &len)) < 0)
                return r;
        ret->size = len * 512;
        if (s)
                parse_snapshot_status(params, ret);
        else if (!strcmp(type, "snapshot-merge")) {
                /* merging: the same figures; done when only metadata is left */
                parse_snapshot_status(params, ret);
                ret->merging = true;
        } else
                ret->valid = true;
        return 0;
}

_public_ int cowvol_device_resolve(const char *spec, char **ret_path)
{
        return cvblkid_resolve(spec, ret_path);
}

_public_ int cowvol_device_probe(const char *dev, char *type, size_t tlen, char *label, size_t llen)
{
        return cvblkid_probe(dev, type, tlen, label, llen);
}

_public_ int cowvol_device_signature(const char *dev, char *what, size_t len)
{
        return cvblkid_signature(dev, what, len);
}

/* --- growing a store, merging ---------------------------------------------------- */

/* The type of @name's live table ("" when none). */
static int table_type(const char *name, char *type, size_t len)
{
        int r = cvdm_table(name, type, len, NULL, 0, NULL);

        if (r == -ENODATA) {
                type[0] = '\0';
                return 0;
        }
        return r;
}

_public_ int cowvol_kernel_store_grown(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        struct cvdm_info si, ci;
        char dev[300], params[320];
        uint64_t sectors, len;
        struct stat st;
        int r, have_snap;

        if ((r = names_of(v, s, &n)) < 0)
                return r;
        if (stat(s->store, &st) < 0 || !S_ISREG(st.st_mode))
                return log_err(-EINVAL, "The store %s is not a file: it cannot grow", s->store);
        if ((r = ours(n.cow, n.cow_uuid, &ci)) <= 0)
                return r < 0 ? r : log_err(-ENODEV, "%s is not active", n.cow);
        if ((have_snap = ours(n.snap, n.snap_uuid, &si)) < 0)
                return have_snap;
        if ((r = cvloop_find(s->store, dev, sizeof(dev))) < 0)
                return log_err(r, "No loop device backs %s", s->store);
        if ((r = cvloop_refresh_size(dev)) < 0 || (r = sectors_of(dev, &sectors)) < 0 ||
            (r = cvdm_table(n.cow, NULL, 0, NULL, 0, &len)) < 0)
                return r;
        if (sectors <= len)
                return 0; /* nothing new */
        if (stat(dev, &st) < 0)
                return log_err(-errno, "Cannot use %s: %m", dev);
        snprintf(params, sizeof(params), "%u:%u 0", major(st.st_rdev), minor(st.st_rdev));
        if ((r = cvdm_reload(n.cow, &(struct cvdm_target){ 0, sectors, "linear", params }, 1)) < 0)
                return r;
        /* the snapshot holds still while its -cow changes size under it; it
         * reads the new size at its next allocation */
        if (have_snap && (r = cvdm_suspend(n.snap, false)) < 0)
                return r;
        r = cvdm_suspend(n.cow, false);
        if (r >= 0)
                r = cvdm_resume(n.cow, true);
        if (have_snap) {
                int q = cvdm_resume(n.snap, false);
                if (r >= 0)
                        r = q;
        }
        return r;
}

_public_ int cowvol_kernel_merge_start(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        struct cvdm_info oi, ri, si, ci;
        char type[32], params[320];
        uint64_t len;
        int r, have_snap, have_cow, loop_fd = -1;
        bool made_cow = false;

        if ((r = names_of(v, s, &n)) < 0 || (r = cvdm_available()) < 0)
                return r;
        if ((r = ours(n.origin, n.origin_uuid, &oi)) <= 0 || (r = ours(n.real, n.real_uuid, &ri)) <= 0)
                return r < 0 ? r : log_err(-ENODEV, "The volume %s is not active", v->name);
        if ((r = table_type(n.origin, type, sizeof(type))) < 0)
                return r;
        if (!strcmp(type, "snapshot-merge"))
                return 0; /* merging already (a restart): the kernel goes on */
        if ((have_snap = ours(n.snap, n.snap_uuid, &si)) < 0 || (have_cow = ours(n.cow, n.cow_uuid, &ci)) < 0)
                return have_snap < 0 ? have_snap : have_cow;
        if (oi.open_count > 0)
                return log_err(-EBUSY, "%s is open (mounted?): the merge waits for its next activation", n.origin);
        if (have_snap && si.open_count > 0)
                return log_err(-EBUSY, "%s is open (mounted?)", n.snap);
        /* the snapshot device lets go of the store (committed as it goes):
         * the merge takes it over */
        if (have_snap) {
                if ((r = cvdm_suspend(n.origin, false)) < 0)
                        return r;
                r = cvdm_remove(n.snap, false);
                int q = cvdm_resume(n.origin, false);
                if (r < 0 || q < 0)
                        return r < 0 ? r : q;
        }
        if (!have_cow) {
                if ((r = cow_build(&n, s, false, &loop_fd)) < 0)
                        goto out;
                made_cow = true;
        }
        if ((r = cvdm_info(n.cow, &ci)) < 0 || (r = cvdm_table(n.real, NULL, 0, NULL, 0, &len)) < 0)
                goto out;
        /* snapshot-merge <origin> <cow> P <chunk sectors>, in the origin's place */
        snprintf(params, sizeof(params), "%u:%u %u:%u P %u", ri.major, ri.minor, ci.major, ci.minor,
                 s->chunk_bytes / 512);
        if ((r = cvdm_reload(n.origin, &(struct cvdm_target){ 0, len, "snapshot-merge", params }, 1)) < 0)
                goto out;
        if ((r = cvdm_suspend(n.origin, false)) >= 0)
                r = cvdm_resume(n.origin, false);
out:
        if (r < 0 && made_cow)
                (void)cvdm_remove(n.cow, true);
        if (loop_fd >= 0)
                close(loop_fd);
        return r;
}

_public_ int cowvol_kernel_merge_finish(const struct cowvol_kernel_volume *v, const struct cowvol_kernel_snapshot *s)
{
        LOG_SCOPE(v ? v->log_fn : NULL, v ? v->log_userdata : NULL);
        struct names n;
        struct cvdm_info oi, ri, ci;
        char type[32], params[320];
        uint64_t len;
        int r, have_cow;

        if ((r = names_of(v, s, &n)) < 0)
                return r;
        if ((r = ours(n.origin, n.origin_uuid, &oi)) <= 0 || (r = ours(n.real, n.real_uuid, &ri)) <= 0)
                return r < 0 ? r : log_err(-ENODEV, "The volume %s is not active", v->name);
        if ((have_cow = ours(n.cow, n.cow_uuid, &ci)) < 0)
                return have_cow;
        if ((r = table_type(n.origin, type, sizeof(type))) < 0)
                return r;
        if (!strcmp(type, "snapshot-merge")) {
                if ((r = cvdm_table(n.real, NULL, 0, NULL, 0, &len)) < 0)
                        return r;
                snprintf(params, sizeof(params), "%u:%u", ri.major, ri.minor);
                if ((r = cvdm_reload(n.origin, &(struct cvdm_target){ 0, len, "snapshot-origin", params }, 1)) < 0)
                        return r;
                if ((r = cvdm_suspend(n.origin, false)) < 0)
                        return r;
                if ((r = cvdm_resume(n.origin, false)) < 0)
                        return r;
        }
        if (have_cow && (r = cvdm_remove(n.cow, true)) < 0)
                return r;
        return 0;
}

_public_ int cowvol_kernel_events_open(void)
{
        int fd = cvdm_event_open(), r;

        if (fd < 0)
                return fd;
        r = cvdm_event_arm(fd);
        if (r < 0) {
                close(fd);
                return r;
        }
        return fd;
}

_public_ int cowvol_kernel_events_arm(int fd)
{
        return cvdm_event_arm(fd);
}

_public_ int cowvol_loop_find(const char *file, char *dev, size_t len)
{
        return cvloop_find(file, dev, len);
}
