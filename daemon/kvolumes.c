/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Between the catalogue and the kernel engine: block devices under cowvol.
 * The catalogue is the truth; device-mapper tables are rebuilt from it at
 * start (they vanish at reboot).  Every function here is called with
 * D.lock held, and says what went wrong in @why for the client.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

static void kv_of(const struct vol *v, struct cowvol_kernel_volume *kv)
{
        *kv = (struct cowvol_kernel_volume){ .name = v->name, .uuid = v->uuid, .device = v->path };
}

static void ks_of(const struct vol *v, const struct snap *s, struct cowvol_kernel_snapshot *ks)
{
        *ks = (struct cowvol_kernel_snapshot){ .name = s->name, .uuid = s->uuid, .store = s->store, .chunk_bytes = v->chunk };
}

/* The library's last error, for a client: its log goes to ours as well. */
static __thread char last_error[256];

void kvol_note_error(const char *msg)
{
        snprintf(last_error, sizeof(last_error), "%s", msg);
}

static int failf(int r, char *why, size_t len, const char *what)
{
        snprintf(why, len, "%s: %s", what, last_error[0] ? last_error : strerror(-r));
        last_error[0] = '\0';
        return r;
}

/* Build @v's stack and its snapshots' (start, add).  A device that moved
 * (UUID=, LABEL= resolve again); a snapshot that cannot be built gets a
 * reason, the others go on. */
int kvol_activate(struct vol *v)
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
        kv_of(v, &kv);
        r = cowvol_kernel_volume_activate(&kv);
        if (r < 0)
                return dlog_errno(r, "Volume %s: cannot build its device-mapper stack over %s", v->name, v->path);
        v->kactive = true;
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
        kvol_merge_resume(v);
        return 0;
}

int kvol_add(const char *spec, const char *name, uint32_t chunk, struct vol **ret, char *why, size_t len)
{
        struct cowvol_kernel_status st;
        struct cowvol_kernel_volume kv;
        char *dev = NULL;
        struct vol *v;
        int r;

        if ((r = cowvol_kernel_available()) < 0)
                return failf(r, why, len, "the kernel engine cannot be used here");
        if ((r = cowvol_device_resolve(spec, &dev)) < 0)
                return failf(r, why, len, "cannot find the device");
        for (struct vol *o = D.vols; o; o = o->next)
                if (strcmp(o->path, dev) == 0) {
                        snprintf(why, len, "%s is volume '%s' already", dev, o->name);
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
                                snprintf(why, len, "%s is in use (mounted, or held by another device: LVM, RAID, "
                                         "device-mapper); unmount or release it first", dev);
                        else
                                snprintf(why, len, "cannot open %s: %s", dev, strerror(-r));
                        free(dev);
                        return r;
                }
                close(fd);
        }
        v = calloc(1, sizeof(*v));
        if (!v || !(v->source = strdup(spec))) {
                free(v);
                free(dev);
                return -ENOMEM;
        }
        snprintf(v->name, sizeof(v->name), "%s", name);
        new_uuid(v->uuid);
        v->path = dev;
        v->chunk = chunk;
        v->kernel = true;
        v->created = (int64_t)time(NULL);
        kv_of(v, &kv);
        r = cowvol_kernel_volume_activate(&kv);
        if (r < 0) {
                vol_free(v);
                return failf(r, why, len, "cannot build the device-mapper stack");
        }
        v->kactive = true;
        if (cowvol_kernel_status(&kv, NULL, &st) == 0)
                v->size = st.size;
        *ret = v;
        return 0;
}

int kvol_remove(struct vol *v, char *why, size_t len)
{
        struct cowvol_kernel_volume kv;
        int r;

        kv_of(v, &kv);
        r = cowvol_kernel_volume_deactivate(&kv);
        if (r < 0)
                return failf(r, why, len, "cannot remove its devices");
        v->kactive = false;
        return 0;
}

int ksnap_take(struct vol *v, struct snap *s, uint64_t store_bytes, const char *store_dev, bool force, char *why,
               size_t len)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;
        char path[4096], what[64];
        int r, fd = -1;

        if (!v->kactive) {
                snprintf(why, len, "volume '%s' is unavailable: its devices could not be built", v->name);
                return -EIO;
        }
        if (store_dev) {
                struct stat st;
                char *dev = NULL;
                if ((r = cowvol_device_resolve(store_dev, &dev)) < 0)
                        return failf(r, why, len, "cannot find the store device");
                if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode)) {
                        snprintf(why, len, "%s is not a block device", dev);
                        free(dev);
                        return -ENOTBLK;
                }
                for (struct vol *o = D.vols; o; o = o->next) {
                        bool used = strcmp(o->path, dev) == 0;
                        for (struct snap *x = o->snaps; x && !used; x = x->next)
                                used = strcmp(x->store, dev) == 0;
                        if (used) {
                                snprintf(why, len, "%s is in use by volume '%s'", dev, o->name);
                                free(dev);
                                return -EBUSY;
                        }
                }
                r = cowvol_device_signature(dev, what, sizeof(what));
                if (r < 0 && !force) {
                        snprintf(why, len, "cannot look for signatures on %s (%s): use --force only if it holds "
                                 "nothing of value", dev, strerror(-r));
                        free(dev);
                        return r;
                }
                if (r > 0 && !force) {
                        snprintf(why, len, "%s carries a %s signature: it would be destroyed (--force to use it anyway)",
                                 dev, what);
                        free(dev);
                        return -EEXIST;
                }
                s->store = dev;
                s->store_device = true;
        } else {
                snprintf(path, sizeof(path), "%s/stores/%s.cow", D.cfg.state_dir, s->uuid);
                fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0) {
                        snprintf(why, len, "cannot create %s: %s", path, strerror(errno));
                        return -errno;
                }
                /* allocated: a kernel store must never meet a full filesystem */
                r = fallocate(fd, 0, 0, (off_t)store_bytes);
                if (r < 0 && (errno == EOPNOTSUPP ? ftruncate(fd, (off_t)store_bytes) : -1) < 0) {
                        r = -errno;
                        snprintf(why, len, "cannot allocate %" PRIu64 " bytes for %s: %s", store_bytes, path,
                                 strerror(-r));
                        close(fd);
                        unlink(path);
                        return r;
                }
                fsync(fd);
                close(fd);
                if (!(s->store = strdup(path))) {
                        unlink(path);
                        return -ENOMEM;
                }
        }
        kv_of(v, &kv);
        ks_of(v, s, &ks);
        r = cowvol_kernel_snapshot_create(&kv, &ks);
        if (r < 0) {
                if (!s->store_device)
                        unlink(s->store);
                return failf(r, why, len, "cannot take the snapshot");
        }
        return 0;
}

/* The devices only: the store stays until the catalogue lost the snapshot
 * (ksnap_drop_store). */
int ksnap_remove(struct vol *v, struct snap *s, char *why, size_t len)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;
        int r;

        kv_of(v, &kv);
        ks_of(v, s, &ks);
        r = cowvol_kernel_snapshot_remove(&kv, &ks);
        if (r < 0)
                return failf(r, why, len, "cannot remove its devices");
        return 0;
}

void ksnap_drop_store(struct vol *v, struct snap *s)
{
        if (!s->store_device && unlink(s->store) < 0 && errno != ENOENT)
                dlog(LOG_WARN_, "Snapshot %s@%s: cannot remove its store %s: %m", v->name, s->name, s->store);
}

void kvol_view(const struct vol *v, json_object *o)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_status st;
        char path[300], type[32] = "", label[128] = "";

        kv_of(v, &kv);
        if (cowvol_kernel_path(&kv, NULL, path, sizeof(path)) == 0) {
                json_object_object_add(o, "dm_path", json_object_new_string(path));
                if (v->kactive)
                        (void)cowvol_device_probe(path, type, sizeof(type), label, sizeof(label));
        }
        json_object_object_add(o, "fstype", json_object_new_string(type));
        json_object_object_add(o, "label", json_object_new_string(label));
        if (v->kactive && cowvol_kernel_status(&kv, NULL, &st) == 0 && st.exists)
                json_object_object_add(o, "open_count", json_object_new_int(st.open_count));
}

void ksnap_view(const struct vol *v, const struct snap *s, struct ksnap_state *ret)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;
        struct cowvol_kernel_status st;
        struct stat sb;

        memset(ret, 0, sizeof(*ret));
        kv_of(v, &kv);
        ks_of(v, s, &ks);
        (void)cowvol_kernel_path(&kv, &ks, ret->dm_path, sizeof(ret->dm_path));
        if (stat(s->store, &sb) == 0)
                ret->store_bytes = S_ISBLK(sb.st_mode) ? 0 : (uint64_t)sb.st_size;
        if (!v->kactive || cowvol_kernel_status(&kv, &ks, &st) < 0 || !st.exists) {
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
                snprintf(ret->reason, sizeof(ret->reason), "%s",
                         st.overflow       ? "overflow: the store is full"
                         : st.merge_failed ? "the kernel's merge failed"
                                           : "invalidated by the kernel (store full or I/O error)");
}

/* Start the merge of v->restoring when nothing holds the devices open;
 * otherwise it stays pending, as LVM's "merge on next activation". */
static int merge_try(struct vol *v, char *why, size_t len)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;
        struct cowvol_kernel_status st;
        struct snap *s = v->restoring;
        int r;

        kv_of(v, &kv);
        ks_of(v, s, &ks);
        if (cowvol_kernel_status(&kv, NULL, &st) == 0 && st.exists && st.open_count > 0 && !st.merging) {
                v->restore_pending = true;
                snprintf(why, len, "volume '%s' is open (mounted?)", v->name);
                return 1;
        }
        if (cowvol_kernel_status(&kv, &ks, &st) == 0 && st.exists && st.open_count > 0) {
                v->restore_pending = true;
                snprintf(why, len, "snapshot %s@%s is open (mounted?)", v->name, s->name);
                return 1;
        }
        r = cowvol_kernel_merge_start(&kv, &ks);
        if (r < 0)
                return failf(r, why, len, "cannot start the merge");
        v->restore_pending = false;
        if (cowvol_kernel_status(&kv, NULL, &st) == 0 && st.merging)
                v->restore_total = v->restore_left =
                        (st.usage.allocated_sectors - st.usage.metadata_sectors) / (v->chunk / COWVOL_SECTOR_SIZE);
        return 0;
}

int kvol_restore(struct vol *v, struct snap *s, bool keep, char *why, size_t len)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;
        struct cowvol_kernel_status st;
        int r;

        kv_of(v, &kv);
        ks_of(v, s, &ks);
        if (!v->kactive) {
                snprintf(why, len, "volume '%s' is unavailable: its devices could not be built", v->name);
                return -EIO;
        }
        if (s->reason || cowvol_kernel_status(&kv, &ks, &st) < 0 || !st.exists || !st.valid) {
                snprintf(why, len, "snapshot %s@%s is invalid (%s): it cannot be restored", v->name, s->name,
                         s->reason ? s->reason : "see cowvol list");
                return -ESTALE;
        }
        v->restoring = s;
        v->restore_keep = keep;
        v->restore_total = v->restore_left = 0;
        if (catalogue_save() < 0) {
                v->restoring = NULL;
                snprintf(why, len, "cannot save the catalogue");
                return -EIO;
        }
        r = merge_try(v, why, len);
        if (r < 0) {
                v->restoring = NULL;
                (void)catalogue_save();
        }
        return r;
}

/* Called at activation (start, cowvol activate): a pending merge starts. */
void kvol_merge_resume(struct vol *v)
{
        char why[512];
        int r;

        if (!v->kernel || !v->restoring || !v->kactive)
                return;
        r = merge_try(v, why, sizeof(why));
        if (r < 0)
                dlog(LOG_ERR_, "Volume %s: the restore from %s cannot start: %s", v->name, v->restoring->name, why);
        else if (r > 0)
                dlog(LOG_WARN_, "Volume %s: the restore from %s waits for the next activation: %s", v->name,
                     v->restoring->name, why);
        else
                dlog(LOG_INFO_, "Volume %s: merging %s@%s (snapshot-merge)", v->name, v->name, v->restoring->name);
}

bool kvol_merge_watch(struct vol *v)
{
        struct cowvol_kernel_volume kv;
        struct cowvol_kernel_snapshot ks;
        struct cowvol_kernel_status st;
        struct snap *s = v->restoring;
        char why[512];
        int r;

        if (!s || v->restore_pending)
                return false;
        kv_of(v, &kv);
        ks_of(v, s, &ks);
        if (cowvol_kernel_status(&kv, NULL, &st) < 0 || !st.merging)
                return false;
        v->restore_left = (st.usage.allocated_sectors - st.usage.metadata_sectors) / (v->chunk / COWVOL_SECTOR_SIZE);
        if (v->restore_left > v->restore_total)
                v->restore_total = v->restore_left;
        pthread_cond_broadcast(&D.changed);
        if (st.usage.allocated_sectors != st.usage.metadata_sectors)
                return false;
        /* merged: the volume goes back to snapshot-origin; the store goes,
         * or with --keep becomes a new, empty snapshot of the result */
        r = cowvol_kernel_merge_finish(&kv, &ks);
        if (r < 0) {
                dlog_errno(r, "Volume %s: the merge of %s ended but cannot be finished: %m", v->name, s->name);
                return false;
        }
        v->restoring = NULL;
        v->restore_left = 0;
        if (v->restore_keep) {
                r = cowvol_kernel_snapshot_create(&kv, &ks);
                if (r < 0) {
                        (void)failf(r, why, sizeof(why), "cannot take it again");
                        s->reason = strdup("restored, then it could not be taken again");
                        dlog(LOG_ERR_, "Volume %s restored from %s; keeping the snapshot failed: %s", v->name, s->name,
                             why);
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
                        ksnap_drop_store(v, s);
                snap_free_meta(s);
                pthread_cond_broadcast(&D.changed);
                return false; /* saved already */
        }
        pthread_cond_broadcast(&D.changed);
        return true;
}

/* --- between the engines ---------------------------------------------------------- */

/* The userspace volume whose image backs the loop device @dev, if any. */
struct vol *kvol_userspace_behind(const char *dev)
{
        char loop[300];

        for (struct vol *v = D.vols; v; v = v->next)
                if (!v->kernel && cowvol_loop_find(v->path, loop, sizeof(loop)) == 0 && strcmp(loop, dev) == 0)
                        return v;
        return NULL;
}

/* The kernel volume over a loop device that @image backs, if any. */
struct vol *kvol_kernel_over(const char *image)
{
        char loop[300];

        if (cowvol_loop_find(image, loop, sizeof(loop)) < 0)
                return NULL;
        for (struct vol *v = D.vols; v; v = v->next)
                if (v->kernel && strcmp(v->path, loop) == 0)
                        return v;
        return NULL;
}

int kvol_from_userspace(struct vol *v, const char *spec, const char *dev, char *why, size_t len)
{
        char *path = strdup(v->path), *ndev = strdup(dev), *nsrc = strdup(spec);
        int r;

        if (!path || !ndev || !nsrc) {
                free(path), free(ndev), free(nsrc);
                return -ENOMEM;
        }
        if (v->refs || v->restoring) {
                snprintf(why, len, "volume '%s' is %s", v->name, v->restoring ? "being restored" : "in use (NBD, cat, write)");
                free(path), free(ndev), free(nsrc);
                return -EBUSY;
        }
        /* the userspace engine lets go (flushed); the kernel takes the image
         * through the loop device, and every store as it is */
        vol_deactivate(v);
        free(v->path);
        v->path = ndev;
        free(v->source);
        v->source = nsrc;
        v->kernel = true;
        r = kvol_activate(v);
        if (r >= 0 && (r = catalogue_save()) >= 0) {
                free(path);
                return 0;
        }
        /* back as it was */
        {
                struct cowvol_kernel_volume kv = { .name = v->name, .uuid = v->uuid, .device = v->path };
                for (struct snap *s = v->snaps; s; s = s->next) {
                        struct cowvol_kernel_snapshot ks = { .name = s->name, .uuid = s->uuid, .store = s->store,
                                                       .chunk_bytes = v->chunk };
                        (void)cowvol_kernel_snapshot_remove(&kv, &ks);
                }
                (void)cowvol_kernel_volume_deactivate(&kv);
        }
        free(v->path);
        v->path = path;
        free(v->source);
        v->source = NULL;
        v->kernel = v->kactive = false;
        (void)vol_activate(v);
        return failf(r, why, len, "cannot move it to the kernel engine");
}

int kvol_to_userspace(struct vol *v, const char *image, char *why, size_t len)
{
        struct cowvol_kernel_volume kv = { .name = v->name, .uuid = v->uuid, .device = v->path };
        struct cowvol_kernel_status st;
        char *img = strdup(image), *old = v->path;
        int r;

        if (!img)
                return -ENOMEM;
        if (v->restoring) {
                snprintf(why, len, "volume '%s' is being restored", v->name);
                free(img);
                return -EBUSY;
        }
        for (struct snap *s = v->snaps; s; s = s->next)
                if (s->store_device) {
                        snprintf(why, len, "snapshot %s@%s keeps its store on the block device %s: the userspace engine "
                                 "keeps stores in files", v->name, s->name, s->store);
                        free(img);
                        return -EINVAL;
                }
        /* nothing may hold the devices: the kernel flushes every store as
         * the snapshots go */
        if (cowvol_kernel_status(&kv, NULL, &st) == 0 && st.open_count > 0) {
                snprintf(why, len, "volume '%s' is in use (open %d times: mounted?)", v->name, st.open_count);
                free(img);
                return -EBUSY;
        }
        for (struct snap *s = v->snaps; s; s = s->next) {
                struct cowvol_kernel_snapshot ks = { .name = s->name, .uuid = s->uuid, .store = s->store,
                                               .chunk_bytes = v->chunk };
                if (cowvol_kernel_status(&kv, &ks, &st) == 0 && st.open_count > 0) {
                        snprintf(why, len, "snapshot %s@%s is in use (mounted?)", v->name, s->name);
                        free(img);
                        return -EBUSY;
                }
        }
        for (struct snap *s = v->snaps; s; s = s->next) {
                struct cowvol_kernel_snapshot ks = { .name = s->name, .uuid = s->uuid, .store = s->store,
                                               .chunk_bytes = v->chunk };
                if ((r = cowvol_kernel_snapshot_remove(&kv, &ks)) < 0) {
                        (void)kvol_activate(v);
                        free(img);
                        return failf(r, why, len, "cannot release its snapshots");
                }
        }
        if ((r = cowvol_kernel_volume_deactivate(&kv)) < 0) {
                (void)kvol_activate(v);
                free(img);
                return failf(r, why, len, "cannot release the volume");
        }
        v->path = img;
        v->kernel = v->kactive = false;
        r = vol_activate(v);
        if (r >= 0 && (r = catalogue_save()) >= 0) {
                free(old);
                free(v->source);
                v->source = NULL;
                return 0;
        }
        vol_deactivate(v);
        v->path = old;
        v->kernel = true;
        free(img);
        (void)kvol_activate(v);
        return failf(r, why, len, "cannot open it in the userspace engine");
}
