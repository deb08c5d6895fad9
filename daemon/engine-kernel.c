/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The kernel engine: block devices under device-mapper, layered as LVM2
 * layers its snapshots (lib/kengine.c builds the tables; the kernel copies).
 * The catalogue is the truth; the tables are rebuilt from it at start (they
 * vanish at reboot).  The monitor's round (watch) follows fill levels,
 * grows file stores before they fill, records snapshots the kernel
 * invalidated, and follows merges (restores) to their end, as dmeventd's
 * snapshot plugin does for LVM.
 *
 * Every operation runs with the catalogue's lock held.  A library call's
 * reason for a failure comes back through the volume descriptor's own log
 * callback (struct libmsg), never through a shared buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "catalogue.h"
#include "config.h"
#include "engine.h"
#include "log.h"
#include "statedir.h"

#define WARN_PERCENT 80

/* The library's messages of one call, for the client: the last error is
 * the reason. */
struct libmsg {
        char text[512];
};

static void libmsg_note(int level, const char *msg, void *userdata)
{
        struct libmsg *m = userdata;

        if (level == COWVOL_LOG_ERROR)
                snprintf(m->text, sizeof(m->text), "%s", msg);
}

static void kv_of(const struct vol *v, struct cowvol_kernel_volume *kv, struct libmsg *m)
{
        *kv = (struct cowvol_kernel_volume){ .name = v->name, .uuid = v->uuid, .device = v->path };
        if (m) {
                m->text[0] = '\0';
                kv->log_fn = libmsg_note;
                kv->log_userdata = m;
        }
}

static void ks_of(const struct vol *v, const struct snap *s, struct cowvol_kernel_snapshot *ks)
{
        *ks = (struct cowvol_kernel_snapshot){ .name = s->name, .uuid = s->uuid, .store = s->store, .chunk_bytes = v->chunk };
}

/* A kernel call's descriptors, with the library's reason if it fails. */
struct kdesc {
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;
        struct libmsg m;
};

static void kdesc_of(const struct vol *v, const struct snap *s, struct kdesc *d)
{
        kv_of(v, &d->kv, &d->m);
        if (s)
                ks_of(v, s, &d->ks);
}

/* "WHAT: the library's reason" (or the errno's) into @f; returns @r */
static int failf(struct failure *f, int r, const struct libmsg *m, const char *what)
{
        return fail(f, r, "%s: %s", what, m && m->text[0] ? m->text : strerror(-r));
}

/* cowvol_device_resolve's reasons (it has no descriptor to carry them) */
static int resolve_fail(struct failure *f, int r, const char *spec, const char *what)
{
        if (r == -EINVAL)
                return fail(f, r, "%s: '%s' is not a NAME=value tag", what, spec);
        if (r == -ENOENT)
                return fail(f, r, "%s: No device has %s", what, spec);
        return fail(f, r, "%s: %s", what, strerror(-r));
}

static int kstatus(const struct vol *v, const struct snap *s, struct cowvol_kernel_status *st)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;

        kv_of(v, &kv, NULL);
        if (s)
                ks_of(v, s, &ks);
        return cowvol_kernel_status(&kv, s ? &ks : NULL, st);
}

static int kpath(const struct vol *v, const struct snap *s, char *buf, size_t len)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;

        kv_of(v, &kv, NULL);
        if (s)
                ks_of(v, s, &ks);
        return cowvol_kernel_path(&kv, s ? &ks : NULL, buf, len);
}

/* open_count of @v (@s NULL) or of its snapshot @s; 0 when it does not exist */
static int kopen_count(const struct vol *v, const struct snap *s)
{
        struct cowvol_kernel_status st;

        return kstatus(v, s, &st) == 0 && st.exists ? st.open_count : 0;
}

static void merge_resume(struct vol *v);

/*
 * A volume moved from the userspace engine over a loop device of its image
 * (or any kernel volume over a loop device): the loop device reads and
 * writes the file through a file of its own, which takes no QEMU lock, but
 * the image is still cowvold's, and a qemu-io writing it would change the
 * origin behind the snapshots.  So cowvold holds a descriptor of the file
 * behind the loop device with QEMU's image locks for as long as the kernel
 * engine serves the volume (lib/imagelock.c), and takes it again at each
 * start.  A lock that cannot be taken (QEMU got there first) is logged,
 * and the volume served all the same: its devices exist already.
 */
static void image_hold(struct vol *v)
{
        char sys[300], file[4096], why[256];
        ssize_t n;
        int fd, r;

        if (v->image_held || strncmp(v->path, "/dev/loop", 9) != 0 || strchr(v->path + 5, '/'))
                return;
        snprintf(sys, sizeof(sys), "/sys/block/%s/loop/backing_file", v->path + 5);
        fd = open(sys, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return; /* no file behind it */
        n = read(fd, file, sizeof(file) - 1);
        close(fd);
        if (n <= 0)
                return;
        file[n] = '\0';
        file[strcspn(file, "\n")] = '\0';
        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                dlog(LOG_WARN_, "Volume %s: cannot open %s, the image behind %s, to hold QEMU's lock on it: %m",
                     v->name, file, v->path);
                return;
        }
        r = cowvol_image_lock(fd, why, sizeof(why));
        if (r < 0) {
                dlog(LOG_WARN_, "Volume %s: QEMU's image lock on %s (behind %s) cannot be held: %s", v->name, file,
                     v->path, why);
                close(fd);
                return;
        }
        v->image_fd = fd;
        v->image_held = true;
}

static void image_release(struct vol *v)
{
        if (!v->image_held)
                return;
        close(v->image_fd);
        v->image_held = false;
}

/* Build @v's stack and its snapshots'.  A device that moved (UUID=,
 * LABEL= resolve again); a snapshot that cannot be built gets a reason,
 * the others go on; a merge waiting for this activation starts. */
static int kactivate(struct vol *v, struct libmsg *m)
{
        struct cowvol_kernel_volume kv;
        char *dev = NULL;
        int r;

        v->kactive = false;
        if (v->source && cowvol_device_resolve(v->source, &dev) == 0 && strcmp(dev, v->path) != 0) {
                dlog(LOG_INFO_, "Volume %s: %s is now %s", v->name, v->source, dev);
                free(v->path);
                v->path = dev;
                dev = NULL;
        }
        free(dev);
        kv_of(v, &kv, m);
        r = cowvol_kernel_volume_activate(&kv);
        if (r < 0)
                return dlog_errno(r, "Volume %s: cannot build its device-mapper stack over %s", v->name, v->path);
        v->kactive = true;
        v->chain = false; /* the kernel's snapshot-origin copies into every store: independent */
        image_hold(v);
        for (struct snap *s = v->snaps; s; s = s->next) {
                struct cowvol_kernel_snapshot ks;
                if (s == v->restoring)
                        continue; /* its store is the merge's: no snapshot device over it */
                ks_of(v, s, &ks);
                r = cowvol_kernel_snapshot_activate(&kv, &ks);
                if (r < 0) {
                        dlog_errno(r, "Snapshot %s@%s: cannot build it over its store %s", v->name, s->name, s->store);
                        if (!s->reason)
                                s->reason = strdup("its device-mapper devices could not be built");
                }
        }
        merge_resume(v);
        return 0;
}

static int k_activate(struct vol *v)
{
        struct libmsg m;

        return kactivate(v, &m);
}

/* device-mapper tables outlive the daemon: only the image's lock goes */
static void k_deactivate(struct vol *v)
{
        image_release(v);
}

static bool k_is_active(const struct vol *v)
{
        return v->kactive;
}

/* UUID= and LABEL= may appear any time; a path once it exists */
static bool k_can_retry(const struct vol *v)
{
        struct stat st;

        return strchr(v->source ? v->source : "", '=') || stat(v->path, &st) == 0;
}

static int k_reactivate(struct vol *v, struct failure *f)
{
        if (k_activate(v) < 0)
                return fail(f, -EIO, "cannot activate '%s' (see cowvold's log)", v->name);
        return 0;
}

int engine_kernel_add(const char *spec, const char *name, uint32_t chunk, struct vol **ret, struct failure *f)
{
        struct cowvol_kernel_status st;
        struct cowvol_kernel_volume kv;
        struct libmsg m;
        char *dev = NULL;
        struct vol *v;
        int r;

        if ((r = cowvol_kernel_available()) < 0)
                return fail(f, r, "cannot add %s: the kernel engine cannot be used here: no device-mapper (no "
                            "/dev/mapper/control, or its driver does not answer): the kernel engine, which serves "
                            "block devices, needs the dm-mod and dm-snapshot modules (modprobe dm-snapshot)", spec);
        if ((r = cowvol_device_resolve(spec, &dev)) < 0) {
                resolve_fail(f, r, spec, "cannot find the device");
                return fail_wrap(f, "cannot add %s", spec);
        }
        for (struct vol *o = catalogue.vols; o; o = o->next)
                if (strcmp(o->path, dev) == 0) {
                        fail(f, -EEXIST, "cannot add %s: %s is volume '%s' already", spec, dev, o->name);
                        free(dev);
                        return -EEXIST;
                }
        /* a device someone holds (mounted, under LVM, RAID, another dm
         * device) stays theirs: an exclusive open says so */
        {
                int fd = open(dev, O_RDONLY | O_EXCL | O_CLOEXEC);
                if (fd < 0) {
                        r = -errno;
                        if (r == -EBUSY)
                                fail(f, r, "cannot add %s: %s is in use (mounted, or held by another device: LVM, "
                                     "RAID, device-mapper); unmount or release it first", spec, dev);
                        else
                                fail(f, r, "cannot add %s: cannot open %s: %s", spec, dev, strerror(-r));
                        free(dev);
                        return r;
                }
                close(fd);
        }
        v = calloc(1, sizeof(*v));
        if (!v || !(v->source = strdup(spec))) {
                free(v);
                free(dev);
                return fail(f, -ENOMEM, "out of memory");
        }
        snprintf(v->name, sizeof(v->name), "%s", name);
        new_uuid(v->uuid);
        v->path = dev;
        v->chunk = chunk;
        v->ops = &kernel_engine;
        v->created = (int64_t)time(NULL);
        kv_of(v, &kv, &m);
        r = cowvol_kernel_volume_activate(&kv);
        if (r < 0) {
                failf(f, r, &m, "cannot build the device-mapper stack");
                fail_wrap(f, "cannot add %s", spec);
                vol_free(v);
                return r;
        }
        v->kactive = true;
        if (kstatus(v, NULL, &st) == 0)
                v->size = st.size;
        *ret = v;
        return 0;
}

/* --- snapshots ------------------------------------------------------------ */

static int k_snapshot_check(const struct vol *v, const char *name, const struct snap_options *o, struct failure *f)
{
        (void)o;
        if (!strcmp(name, "real"))
                return fail(f, -EINVAL, "'real' is the name of a kernel volume's own layer: choose another");
        if (!v->kactive)
                return fail(f, -EIO, "volume '%s' is unavailable (its device-mapper stack could not be built)",
                            v->name);
        return 0;
}

/* --store: a block device nobody uses, without a signature unless --force */
static int store_device_take(struct snap *s, const struct snap_options *o, struct failure *f)
{
        struct stat st;
        char what[64], *dev = NULL;
        int r;

        if ((r = cowvol_device_resolve(o->store_device, &dev)) < 0)
                return resolve_fail(f, r, o->store_device, "cannot find the store device");
        if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode)) {
                fail(f, -ENOTBLK, "%s is not a block device", dev);
                free(dev);
                return -ENOTBLK;
        }
        for (struct vol *x = catalogue.vols; x; x = x->next) {
                bool used = strcmp(x->path, dev) == 0;
                for (struct snap *y = x->snaps; y && !used; y = y->next)
                        used = strcmp(y->store, dev) == 0;
                if (used) {
                        fail(f, -EBUSY, "%s is in use by volume '%s'", dev, x->name);
                        free(dev);
                        return -EBUSY;
                }
        }
        r = cowvol_device_signature(dev, what, sizeof(what));
        if (r < 0 && !o->force) {
                fail(f, r, "cannot look for signatures on %s (%s): use --force only if it holds nothing of value", dev,
                     strerror(-r));
                free(dev);
                return r;
        }
        if (r > 0 && !o->force) {
                fail(f, -EEXIST, "%s carries a %s signature: it would be destroyed (--force to use it anyway)", dev,
                     what);
                free(dev);
                return -EEXIST;
        }
        s->store = dev;
        s->store_device = true;
        return 0;
}

/* a store file in the state folder, allocated: a kernel store must never
 * meet a full filesystem */
static int store_file_make(struct snap *s, uint64_t bytes, struct failure *f)
{
        char path[4096], name[UUID_LEN + 8];
        int fd, r;

        snprintf(path, sizeof(path), "%s/stores/%s.cow", settings.state_dir, s->uuid);
        snprintf(name, sizeof(name), "%s.cow", s->uuid);
        fd = state_create("stores", name, O_RDWR); /* never through a link */
        if (fd < 0)
                return fail(f, fd, "cannot create %s: %s", path, strerror(-fd));
        r = fallocate(fd, 0, 0, (off_t)bytes);
        if (r < 0 && (errno == EOPNOTSUPP ? ftruncate(fd, (off_t)bytes) : -1) < 0) {
                r = -errno;
                close(fd);
                state_remove(path);
                return fail(f, r, "cannot allocate %" PRIu64 " bytes for %s: %s", bytes, path, strerror(-r));
        }
        fsync(fd);
        close(fd);
        if (!(s->store = strdup(path))) {
                state_remove(path);
                return fail(f, -ENOMEM, "out of memory");
        }
        return 0;
}

static int k_snapshot(struct vol *v, struct snap *s, const struct snap_options *o, struct failure *f)
{
        struct kdesc d;
        int r;

        r = o->store_device ? store_device_take(s, o, f) : store_file_make(s, o->store_bytes, f);
        if (r < 0)
                return fail_wrap(f, "cannot take %s@%s", v->name, s->name);
        kdesc_of(v, s, &d);
        r = cowvol_kernel_snapshot_create(&d.kv, &d.ks);
        if (r < 0) {
                if (!s->store_device)
                        state_remove(s->store);
                failf(f, r, &d.m, "cannot take the snapshot");
                return fail_wrap(f, "cannot take %s@%s", v->name, s->name);
        }
        return 0;
}

/* The devices only: the store stays until the catalogue lost the snapshot
 * (snapshot_drop). */
static int k_snapshot_release(struct vol *v, struct snap *s, struct failure *f)
{
        struct kdesc d;
        int r;

        kdesc_of(v, s, &d);
        r = cowvol_kernel_snapshot_remove(&d.kv, &d.ks);
        if (r < 0) {
                failf(f, r, &d.m, "cannot remove its devices");
                return fail_wrap(f, "cannot remove %s@%s", v->name, s->name);
        }
        return 0;
}

static void k_snapshot_drop(struct vol *v, struct snap *s)
{
        int r;

        if (!s->store_device && (r = state_remove(s->store)) < 0 && r != -ENOENT)
                dlog(LOG_WARN_, "Snapshot %s@%s: cannot remove its store %s: %s", v->name, s->name, s->store,
                     strerror(-r));
}

static void k_snapshot_undo(struct vol *v, struct snap *s)
{
        struct failure f = {};

        if (k_snapshot_release(v, s, &f) >= 0)
                k_snapshot_drop(v, s);
}

/* its devices back, as the catalogue has them: nothing changed */
static void k_snapshot_release_undo(struct vol *v, struct snap *s)
{
        (void)s;
        (void)k_activate(v);
}

static int k_volume_busy(const struct vol *v, struct failure *f)
{
        int n;

        /* in use: refuse before anything goes */
        if ((n = kopen_count(v, NULL)) > 0)
                return fail(f, -EBUSY, "volume '%s' is in use (open %d times: mounted?); nothing was removed", v->name,
                            n);
        for (struct snap *s = v->snaps; s; s = s->next)
                if ((n = kopen_count(v, s)) > 0)
                        return fail(f, -EBUSY, "snapshot %s@%s is in use (open %d times: mounted?); nothing was "
                                    "removed", v->name, s->name, n);
        return 0;
}

/* A kernel volume's devices, snapshots first: all, or (the first that is
 * in use) none of the volume's own; snapshots removed stay removed. */
static int k_volume_release(struct vol *v, struct failure *f)
{
        struct cowvol_kernel_volume kv;
        struct libmsg m;
        int r;

        while (v->snaps) {
                struct snap *s = v->snaps;
                r = k_snapshot_release(v, s, f);
                if (r < 0)
                        return r;
                v->snaps = s->next;
                dlog(LOG_INFO_, "Removed snapshot %s@%s", v->name, s->name);
                if (catalogue_save() >= 0)
                        k_snapshot_drop(v, s); /* else the next start finds it unlisted */
                snap_free_meta(s);
        }
        kv_of(v, &kv, &m);
        r = cowvol_kernel_volume_deactivate(&kv);
        if (r < 0) {
                failf(f, r, &m, "cannot remove its devices");
                return fail_wrap(f, "cannot remove volume '%s'", v->name);
        }
        v->kactive = false;
        image_release(v);
        return 0;
}

/* a block device of the user's: it stays */
static void k_volume_drop(struct vol *v)
{
        (void)v;
}

/* --- list -------------------------------------------------------------------- */

static void k_volume_view(const struct vol *v, json_object *o)
{
        struct cowvol_kernel_status st;
        char path[300], type[32] = "", label[128] = "";

        json_object_object_add(o, "source", json_object_new_string(v->source ? v->source : v->path));
        if (kpath(v, NULL, path, sizeof(path)) == 0) {
                json_object_object_add(o, "dm_path", json_object_new_string(path));
                if (v->kactive)
                        (void)cowvol_device_probe(path, type, sizeof(type), label, sizeof(label));
        }
        json_object_object_add(o, "fstype", json_object_new_string(type));
        json_object_object_add(o, "label", json_object_new_string(label));
        if (v->kactive && kstatus(v, NULL, &st) == 0 && st.exists)
                json_object_object_add(o, "open_count", json_object_new_int(st.open_count));
}

static const char *invalid_reason(const struct cowvol_kernel_status *st)
{
        return st->overflow       ? "overflow: the store is full"
               : st->merge_failed ? "the kernel's merge failed"
                                  : "invalidated by the kernel (store full or I/O error)";
}

static void k_snapshot_view(const struct vol *v, const struct snap *s, json_object *o)
{
        char dm_path[300] = "";

        (void)kpath(v, s, dm_path, sizeof(dm_path));
        json_object_object_add(o, "dm_path", json_object_new_string(dm_path));
        if (s->store_device)
                json_object_object_add(o, "store_device", json_object_new_boolean(true));
}

/* the kernel's status line says it all */
static void k_snapshot_state(const struct vol *v, const struct snap *s, struct snap_state *ret)
{
        struct cowvol_kernel_status st;
        struct stat sb;

        memset(ret, 0, sizeof(*ret));
        ret->have = true;
        if (stat(s->store, &sb) == 0)
                ret->store_bytes = S_ISBLK(sb.st_mode) ? 0 : (uint64_t)sb.st_size;
        if (!v->kactive || kstatus(v, s, &st) < 0 || !st.exists) {
                snprintf(ret->reason, sizeof(ret->reason), "its device-mapper devices are missing");
                return;
        }
        ret->valid = st.valid;
        ret->usage = st.usage;
        if (st.valid) {
                uint64_t cs = v->chunk / COWVOL_SECTOR_SIZE;
                ret->exceptions = st.usage.allocated_sectors > st.usage.metadata_sectors
                                          ? (st.usage.allocated_sectors - st.usage.metadata_sectors) / cs
                                          : 0;
                ret->store_bytes = st.usage.total_sectors * COWVOL_SECTOR_SIZE;
        } else
                snprintf(ret->reason, sizeof(ret->reason), "%s", invalid_reason(&st));
}

/* A kernel snapshot's store, read as it is (the kernel writes it): its
 * origin chunks in order, merged into runs, clipped to the volume. */
struct kdiff {
        range_fn fn;
        void *userdata;
        uint64_t run_off, run_len, chunk, size;
};

static int kdiff_one(uint64_t old, uint64_t nw, void *ud)
{
        struct kdiff *d = ud;
        uint64_t off = old * d->chunk, len = d->chunk;
        int r = 0;

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
                r = d->fn(d->run_off, d->run_len, d->userdata);
        d->run_off = off;
        d->run_len = len;
        return r;
}

static int k_diff(struct vol *v, struct snap *s, range_fn fn, void *userdata)
{
        struct kdiff d = { .fn = fn, .userdata = userdata, .chunk = v->chunk, .size = v->size };
        cowvol_store *st;
        int r = cowvol_store_open(s->store, COWVOL_STORE_RDONLY, &st);

        if (r < 0)
                return r;
        if (!cowvol_store_is_valid(st))
                r = -ESTALE;
        else
                r = cowvol_store_foreach_sorted(st, kdiff_one, &d);
        if (r >= 0 && d.run_len)
                r = fn(d.run_off, d.run_len, userdata);
        cowvol_store_close(st);
        return r;
}

/* a kernel volume or snapshot is a block device: its data is read and
 * written there, not through cowvold */
static int k_device_path(const struct vol *v, const struct snap *s, char *buf, size_t len)
{
        return kpath(v, s, buf, len);
}

static bool k_snapshot_open(const struct vol *v, const struct snap *s)
{
        (void)v;
        (void)s;
        return true;
}

/* --- restores: snapshot-merge ------------------------------------------------- */

/* Start the merge of v->restoring when nothing holds the devices open;
 * otherwise it stays pending, as LVM's "merge on next activation"
 * (1, @f->msg says why). */
static int merge_try(struct vol *v, struct failure *f)
{
        struct kdesc d;
        struct cowvol_kernel_status st;
        struct snap *s = v->restoring;
        int r;

        if (kstatus(v, NULL, &st) == 0 && st.exists && st.open_count > 0 && !st.merging) {
                v->restore_pending = true;
                fail(f, 1, "volume '%s' is open (mounted?)", v->name);
                return 1;
        }
        if (kopen_count(v, s) > 0) {
                v->restore_pending = true;
                fail(f, 1, "snapshot %s@%s is open (mounted?)", v->name, s->name);
                return 1;
        }
        kdesc_of(v, s, &d);
        r = cowvol_kernel_merge_start(&d.kv, &d.ks);
        if (r < 0)
                return failf(f, r, &d.m, "cannot start the merge");
        v->restore_pending = false;
        if (kstatus(v, NULL, &st) == 0 && st.merging)
                v->restore_total = v->restore_left =
                        (st.usage.allocated_sectors - st.usage.metadata_sectors) / (v->chunk / COWVOL_SECTOR_SIZE);
        return 0;
}

static int k_restore(struct vol *v, struct snap *s, bool keep, struct failure *f)
{
        struct cowvol_kernel_status st;
        int r;

        if (!v->kactive)
                return fail(f, -EIO, "cannot restore %s@%s: volume '%s' is unavailable: its devices could not be "
                            "built", v->name, s->name, v->name);
        if (s->reason || kstatus(v, s, &st) < 0 || !st.exists || !st.valid)
                return fail(f, -ESTALE, "cannot restore %s@%s: snapshot %s@%s is invalid (%s): it cannot be restored",
                            v->name, s->name, v->name, s->name, s->reason ? s->reason : "see cowvol list");
        v->restoring = s;
        v->restore_keep = keep;
        v->restore_mode = RESTORE_CONSUME; /* snapshot-merge consumes the store */
        v->restore_total = v->restore_left = 0;
        if ((r = catalogue_save()) < 0) {
                v->restoring = NULL;
                return fail(f, -EIO, "cannot restore %s@%s: cannot save the catalogue", v->name, s->name);
        }
        r = merge_try(v, f);
        if (r < 0) {
                v->restoring = NULL;
                (void)catalogue_save();
                fail_wrap(f, "cannot restore %s@%s", v->name, s->name);
        }
        return r;
}

static bool k_restore_running(const struct vol *v)
{
        return v->restoring && !v->restore_pending;
}

/* at activation (start, cowvol activate): a pending merge starts */
static void merge_resume(struct vol *v)
{
        struct failure f = {};
        int r;

        if (!v->restoring || !v->kactive)
                return;
        r = merge_try(v, &f);
        if (r < 0)
                dlog(LOG_ERR_, "Volume %s: the restore from %s cannot start: %s", v->name, v->restoring->name, f.msg);
        else if (r > 0)
                dlog(LOG_WARN_, "Volume %s: the restore from %s waits for the next activation: %s", v->name,
                     v->restoring->name, f.msg);
        else
                dlog(LOG_INFO_, "Volume %s: merging %s@%s (snapshot-merge)", v->name, v->name, v->restoring->name);
}

/* the monitor follows @v's merge; true when the catalogue changed */
static bool merge_watch(struct vol *v)
{
        struct kdesc d;
        struct cowvol_kernel_status st;
        struct snap *s = v->restoring;
        int r;

        if (!s || v->restore_pending)
                return false;
        if (kstatus(v, NULL, &st) < 0 || !st.merging)
                return false;
        v->restore_left = (st.usage.allocated_sectors - st.usage.metadata_sectors) / (v->chunk / COWVOL_SECTOR_SIZE);
        if (v->restore_left > v->restore_total)
                v->restore_total = v->restore_left;
        pthread_cond_broadcast(&catalogue.changed);
        if (st.usage.allocated_sectors != st.usage.metadata_sectors)
                return false;
        /* merged: the volume goes back to snapshot-origin; the store goes,
         * or with --keep becomes a new, empty snapshot of the result */
        kdesc_of(v, s, &d);
        r = cowvol_kernel_merge_finish(&d.kv, &d.ks);
        if (r < 0) {
                dlog_errno(r, "Volume %s: the merge of %s ended but cannot be finished: %m", v->name, s->name);
                return false;
        }
        v->restoring = NULL;
        v->restore_left = 0;
        if (v->restore_keep) {
                r = cowvol_kernel_snapshot_create(&d.kv, &d.ks);
                if (r < 0) {
                        s->reason = strdup("restored, then it could not be taken again");
                        dlog(LOG_ERR_, "Volume %s restored from %s; keeping the snapshot failed: cannot take it again: %s",
                             v->name, s->name, d.m.text[0] ? d.m.text : strerror(-r));
                } else
                        dlog(LOG_INFO_, "Restored %s from %s@%s; the snapshot is kept", v->name, v->name, s->name);
        } else {
                struct snap **p;
                for (p = &v->snaps; *p && *p != s; p = &(*p)->next)
                        ;
                if (*p)
                        *p = s->next;
                dlog(LOG_INFO_, "Restored %s from %s@%s; the snapshot is consumed", v->name, v->name, s->name);
                /* the store goes once the catalogue no longer lists it */
                if (catalogue_save() >= 0)
                        k_snapshot_drop(v, s);
                snap_free_meta(s);
                pthread_cond_broadcast(&catalogue.changed);
                return false; /* saved already */
        }
        pthread_cond_broadcast(&catalogue.changed);
        return true;
}

/* --- the monitor's round -------------------------------------------------------- */

static double used_percent(const struct cowvol_store_usage *u)
{
        return u->total_sectors ? 100.0 * (double)u->allocated_sectors / (double)u->total_sectors : 0;
}

/* Grow @s's store file by the configured step. */
static void grow(struct vol *v, struct snap *s, const struct cowvol_store_usage *u)
{
        struct kdesc d;
        uint64_t old = u->total_sectors * COWVOL_SECTOR_SIZE;
        uint64_t step = old / 100 * __atomic_load_n(&settings.autoextend_percent, __ATOMIC_RELAXED), size;
        int fd, r;

        step = (step + v->chunk - 1) / v->chunk * v->chunk;
        if (step < v->chunk)
                step = v->chunk;
        size = old + step;
        fd = open(s->store, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fallocate(fd, 0, 0, (off_t)size) < 0) {
                dlog(LOG_ERR_, "%s@%s: cannot grow its store %s to %" PRIu64 " bytes: %s", v->name, s->name, s->store,
                     size, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return;
        }
        fsync(fd);
        close(fd);
        kdesc_of(v, s, &d);
        r = cowvol_kernel_store_grown(&d.kv, &d.ks);
        if (r < 0) {
                dlog_errno(r, "%s@%s: its store file grew to %" PRIu64 " bytes, but the kernel cannot use it yet: %m",
                           v->name, s->name, size);
                return;
        }
        dlog(LOG_INFO_, "%s@%s: store %.0f%% full; extended from %" PRIu64 " to %" PRIu64 " bytes (autoextend)",
             v->name, s->name, used_percent(u), old, size);
}

/* One look at @v's snapshots: warn, grow, record invalidation; true when
 * the catalogue changed. */
static bool watch_snapshots(struct vol *v)
{
        bool changed = false;

        for (struct snap *s = v->snaps; s; s = s->next) {
                unsigned threshold = __atomic_load_n(&settings.autoextend_threshold, __ATOMIC_RELAXED);
                struct cowvol_kernel_status st;
                double pct;

                if (s->reason || s == v->restoring || kstatus(v, s, &st) < 0 || !st.exists)
                        continue;
                if (!st.valid) {
                        s->reason = strdup(invalid_reason(&st));
                        dlog(LOG_ERR_, "%s@%s is now invalid: %s; the volume and the other snapshots are intact",
                             v->name, s->name, s->reason ? s->reason : "invalidated");
                        changed = true;
                        continue;
                }
                pct = used_percent(&st.usage);
                if (pct >= WARN_PERCENT && !s->warned) {
                        dlog(LOG_WARN_, "%s@%s: store %.1f%% full", v->name, s->name, pct);
                        s->warned = true;
                } else if (pct < WARN_PERCENT)
                        s->warned = false;
                if (!s->store_device && threshold < 100 && pct >= threshold)
                        grow(v, s, &st.usage);
        }
        return changed;
}

static bool k_watch(struct vol *v)
{
        bool changed;

        if (!v->kactive)
                return false;
        changed = watch_snapshots(v);
        changed |= merge_watch(v);
        return changed;
}

/* the monitor records the kernel's reasons as it finds them */
static bool k_note_reasons(struct vol *v)
{
        (void)v;
        return false;
}

const struct engine_ops kernel_engine = {
        .name = "kernel",
        .activate = k_activate,
        .deactivate = k_deactivate,
        .is_active = k_is_active,
        .can_retry = k_can_retry,
        .reactivate = k_reactivate,
        .snapshot_check = k_snapshot_check,
        .snapshot = k_snapshot,
        .snapshot_undo = k_snapshot_undo,
        .snapshot_release = k_snapshot_release,
        .snapshot_release_undo = k_snapshot_release_undo,
        .snapshot_drop = k_snapshot_drop,
        .volume_busy = k_volume_busy,
        .volume_release = k_volume_release,
        .volume_drop = k_volume_drop,
        .restore = k_restore,
        .restore_running = k_restore_running,
        .volume_view = k_volume_view,
        .snapshot_view = k_snapshot_view,
        .snapshot_state = k_snapshot_state,
        .diff = k_diff,
        .device_path = k_device_path,
        .snapshot_open = k_snapshot_open,
        .watch = k_watch,
        .note_reasons = k_note_reasons,
};

/* --- between the engines ---------------------------------------------------------- */

struct vol *engine_userspace_behind(const char *dev)
{
        char loop[300];

        for (struct vol *v = catalogue.vols; v; v = v->next)
                if (v->ops == &userspace_engine && cowvol_loop_find(v->path, loop, sizeof(loop)) == 0 &&
                    strcmp(loop, dev) == 0)
                        return v;
        return NULL;
}

struct vol *engine_kernel_over(const char *image)
{
        char loop[300];

        if (cowvol_loop_find(image, loop, sizeof(loop)) < 0)
                return NULL;
        for (struct vol *v = catalogue.vols; v; v = v->next)
                if (v->ops == &kernel_engine && strcmp(v->path, loop) == 0)
                        return v;
        return NULL;
}

/* The kernel lets go of @v's devices, snapshots first.  With @f: stop at
 * the first that fails, and say so; without (undoing a move that failed):
 * try every one, whatever fails. */
static int kernel_release_all(struct vol *v, struct failure *f, const char *what_snaps, const char *what_vol)
{
        struct kdesc d;
        int r;

        kdesc_of(v, NULL, &d);
        for (struct snap *s = v->snaps; s; s = s->next) {
                ks_of(v, s, &d.ks);
                if ((r = cowvol_kernel_snapshot_remove(&d.kv, &d.ks)) < 0 && f)
                        return failf(f, r, &d.m, what_snaps);
        }
        if ((r = cowvol_kernel_volume_deactivate(&d.kv)) < 0 && f)
                return failf(f, r, &d.m, what_vol);
        v->kactive = false;
        image_release(v); /* for the userspace engine's own */
        return 0;
}

/* The stores of @v's snapshots, oldest first, opened to be written (an
 * invalid one as a link); NULL in each slot on failure (@f says which). */
static int stores_open(const struct vol *v, cowvol_store **st, size_t n, struct failure *f)
{
        size_t i = 0;
        int r;

        for (const struct snap *s = v->snaps; s && i < n; s = s->next, i++) {
                dlog_library_forget();
                r = cowvol_store_open(s->store, COWVOL_STORE_LINK, &st[i]);
                if (r < 0) {
                        fail(f, r, "snapshot %s@%s: its store %s cannot be opened: %s", v->name, s->name, s->store,
                             *dlog_library_last() ? dlog_library_last() : strerror(-r));
                        while (i-- > 0)
                                st[i] = cowvol_store_close(st[i]);
                        return r;
                }
        }
        return 0;
}

/* Is there room on the stores' filesystems for what @plan copies?  0, or
 * -ENOSPC with @f saying why the copies are needed, where and how much. */
static int room_for(const struct vol *v, const struct cowvol_chain_copy *plan, size_t n,
                    const struct move_report *rep, struct failure *f)
{
        size_t i = 0;

        for (const struct snap *s = v->snaps; s && i < n; s = s->next, i++) {
                struct stat a, b;
                struct statvfs fs;
                uint64_t need = 0, avail;
                char x[32], y[32], z[32];
                bool first = true;
                size_t j = 0;

                if (!plan[i].space_bytes || stat(s->store, &a) < 0)
                        continue;
                /* every store on this filesystem, counted at its first */
                for (const struct snap *t = v->snaps; t && j < n; t = t->next, j++)
                        if (plan[j].space_bytes && stat(t->store, &b) == 0 && b.st_dev == a.st_dev) {
                                first &= j >= i;
                                need += plan[j].space_bytes;
                        }
                if (!first || statvfs(s->store, &fs) < 0)
                        continue;
                avail = (uint64_t)fs.f_bavail * fs.f_frsize;
                if (need > avail)
                        return fail(f, -ENOSPC, "the kernel copies into every snapshot, so the stores of its "
                                    "snapshots must first be made standalone, copying %" PRIu64 " chunks (%s) into "
                                    "%u store%s; that needs %s on the filesystem holding %s, which has %s free; nothing "
                                    "was changed", rep->chunks, cowvol_format_size(rep->bytes, z, sizeof(z)),
                                    rep->stores, rep->stores == 1 ? "" : "s", cowvol_format_size(need, x, sizeof(x)),
                                    s->store, cowvol_format_size(avail, y, sizeof(y)));
        }
        return 0;
}

/*
 * Before the kernel takes @v from the userspace engine (stores closed):
 * the kernel's snapshot-origin copies into every snapshot, so each store
 * must hold its snapshot's whole difference from the origin.  In a chain
 * (shared/DESIGN.md, "Snapshot chains") an older store lacks the chunks
 * that changed after the next snapshot was taken: they are copied in, from
 * the newest but one down to the oldest (cowvol_chain_make_standalone).
 * Counted first: no room (or no device-mapper) refuses the move with
 * nothing written.  Each copy is what its snapshot shows already, so the
 * copies made before a failure change no snapshot, and a later move goes
 * on from there.
 */
static int make_standalone(struct vol *v, struct move_report *rep, struct failure *f)
{
        cowvol_store **st = NULL;
        struct cowvol_chain_copy *plan = NULL;
        char x[32];
        size_t n = 0, i;
        int r;

        *rep = (struct move_report){};
        for (struct snap *s = v->snaps; s; s = s->next)
                n++;
        if (n < 2)
                return 0; /* the newest store holds its whole view */
        st = calloc(n, sizeof(*st));
        plan = calloc(n, sizeof(*plan));
        if (!st || !plan) {
                free(st), free(plan);
                return fail(f, -ENOMEM, "out of memory");
        }
        r = stores_open(v, st, n, f);
        if (r < 0) {
                free(st), free(plan);
                return r;
        }
        dlog_library_forget();
        r = cowvol_chain_count_standalone(st, n, plan);
        if (r < 0) {
                fail(f, r, "cannot read its snapshots' stores as a chain: %s",
                     *dlog_library_last() ? dlog_library_last() : strerror(-r));
                goto out;
        }
        for (i = 0; i < n; i++) {
                rep->chunks += plan[i].chunks;
                rep->bytes += plan[i].bytes;
                rep->stores += plan[i].chunks > 0;
        }
        if (rep->chunks == 0) {
                dlog(LOG_INFO_, "Volume %s: its snapshots' stores are standalone already, as the kernel needs them",
                     v->name);
                goto out;
        }
        r = room_for(v, plan, n, rep, f);
        if (r < 0)
                goto out;
        /* the copies are for the kernel: none without it */
        if ((r = cowvol_kernel_available()) < 0) {
                fail(f, r, "no device-mapper here (no /dev/mapper/control, or its driver does not answer); "
                     "nothing was changed");
                goto out;
        }
        dlog(LOG_INFO_, "Volume %s: the kernel copies into every snapshot: making its snapshots' stores "
             "standalone first, copying %" PRIu64 " chunks (%s) into %u store%s", v->name, rep->chunks,
             cowvol_format_size(rep->bytes, x, sizeof(x)), rep->stores, rep->stores == 1 ? "" : "s");
        i = 0;
        for (struct snap *s = v->snaps; s; s = s->next, i++)
                if (plan[i].chunks)
                        dlog(LOG_INFO_, "Volume %s: %s@%s's store %s takes %" PRIu64 " chunks (%s)", v->name, v->name,
                             s->name, s->store, plan[i].chunks, cowvol_format_size(plan[i].bytes, x, sizeof(x)));
        dlog_library_forget();
        r = cowvol_chain_make_standalone(st, n, NULL);
        if (r < 0) {
                fail(f, r, "the stores of its snapshots could not be made standalone (the kernel copies into "
                     "every snapshot): %s; the copies made change no snapshot",
                     *dlog_library_last() ? dlog_library_last() : strerror(-r));
                goto out;
        }
        dlog(LOG_INFO_, "Volume %s: its snapshots' stores are standalone: %" PRIu64 " chunks (%s) copied", v->name,
             rep->chunks, cowvol_format_size(rep->bytes, x, sizeof(x)));
out:
        for (i = 0; i < n; i++)
                cowvol_store_close(st[i]);
        free(st);
        free(plan);
        return r;
}

int engine_move_to_kernel(struct vol *v, const char *spec, const char *dev, struct move_report *rep,
                          struct failure *f)
{
        struct libmsg m;
        char *path = strdup(v->path), *ndev = strdup(dev), *nsrc = strdup(spec);
        int r;

        if (!path || !ndev || !nsrc) {
                free(path), free(ndev), free(nsrc);
                return fail(f, -ENOMEM, "out of memory");
        }
        if (v->refs || v->restoring) {
                char users[256];
                free(path), free(ndev), free(nsrc);
                return fail(f, -EBUSY, "cannot move volume '%s': volume '%s' is %s%s", v->name, v->name,
                            v->restoring ? "being restored" : "in use by ",
                            v->restoring ? "" : vol_users_describe(v, NULL, users, sizeof(users)));
        }
        for (struct snap *s = v->snaps; s; s = s->next)
                if (s->size != v->size) {
                        free(path), free(ndev), free(nsrc);
                        return fail(f, -ENOTSUP, "cannot move volume '%s' to the kernel engine: its snapshot %s@%s "
                                    "was taken before the volume grew, and cowvol builds kernel snapshots of the "
                                    "volume's size only; remove it first", v->name, v->name, s->name);
                }
        /* the userspace engine lets go (flushed); the stores are made
         * standalone; the kernel takes the image through the loop device,
         * and every store */
        v->ops->deactivate(v);
        if ((r = make_standalone(v, rep, f)) < 0) {
                free(path), free(ndev), free(nsrc);
                (void)v->ops->activate(v);
                return fail_wrap(f, "cannot move volume '%s' to the kernel engine", v->name);
        }
        free(v->path);
        v->path = ndev;
        free(v->source);
        v->source = nsrc;
        v->ops = &kernel_engine;
        r = kactivate(v, &m);
        if (r >= 0 && (r = catalogue_save()) >= 0) {
                free(path);
                return 0;
        }
        /* back as it was */
        (void)kernel_release_all(v, NULL, NULL, NULL);
        free(v->path);
        v->path = path;
        free(v->source);
        v->source = NULL;
        v->ops = &userspace_engine;
        (void)v->ops->activate(v);
        return fail(f, r, "cannot move volume '%s': cannot move it to the kernel engine: %s", v->name,
                    m.text[0] ? m.text : strerror(-r));
}

static int move_to_userspace(struct vol *v, const char *image, struct failure *f)
{
        char *img = strdup(image), *old = v->path;
        int r, n;

        if (!img)
                return fail(f, -ENOMEM, "out of memory");
        if (v->restoring) {
                free(img);
                return fail(f, -EBUSY, "volume '%s' is being restored", v->name);
        }
        for (struct snap *s = v->snaps; s; s = s->next)
                if (s->store_device) {
                        free(img);
                        return fail(f, -EINVAL, "snapshot %s@%s keeps its store on the block device %s: the "
                                    "userspace engine keeps stores in files", v->name, s->name, s->store);
                }
        /* nothing may hold the devices: the kernel flushes every store as
         * the snapshots go */
        if ((n = kopen_count(v, NULL)) > 0) {
                free(img);
                return fail(f, -EBUSY, "volume '%s' is in use (open %d times: mounted?)", v->name, n);
        }
        for (struct snap *s = v->snaps; s; s = s->next)
                if (kopen_count(v, s) > 0) {
                        free(img);
                        return fail(f, -EBUSY, "snapshot %s@%s is in use (mounted?)", v->name, s->name);
                }
        if ((r = kernel_release_all(v, f, "cannot release its snapshots", "cannot release the volume")) < 0) {
                (void)k_activate(v);
                free(img);
                return r;
        }
        v->path = img;
        v->ops = &userspace_engine;
        r = v->ops->activate(v);
        if (r >= 0 && (r = catalogue_save()) >= 0) {
                free(old);
                free(v->source);
                v->source = NULL;
                return 0;
        }
        v->ops->deactivate(v);
        v->path = old;
        v->ops = &kernel_engine;
        free(img);
        (void)k_activate(v);
        return fail(f, r, "cannot open it in the userspace engine: %s", strerror(-r));
}

int engine_move_to_userspace(struct vol *v, const char *image, struct failure *f)
{
        int r = move_to_userspace(v, image, f);

        return r < 0 ? fail_wrap(f, "cannot move volume '%s'", v->name) : 0;
}
