/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The userspace engine: image files whose snapshots libcowvol copies
 * (lib/engine.c), in the kernel's crash order; volumes and snapshots are
 * also served over NBD (nbd*.c).  Restores run in a thread of their own,
 * one merge step at a time, so that the daemon goes on serving and a crash
 * resumes where the store says.
 *
 * Every operation runs with the catalogue's lock held, but for the data
 * calls (pread, pwrite, flush), whose caller holds references instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "catalogue.h"
#include "config.h"
#include "engine.h"
#include "log.h"
#include "statedir.h"

static void on_event(cowvol_volume *ev, cowvol_snapshot *sn, enum cowvol_event e, const char *msg, void *ud)
{
        struct vol *v = ud;
        struct snap *s;

        (void)ev;
        for (s = v->snaps; s; s = s->next)
                if (s->eng == sn)
                        break;
        switch (e) {
        case COWVOL_EVENT_EXTENDED:
                dlog(LOG_INFO_, "%s@%s: %s", v->name, s ? s->name : "?", msg);
                break;
        case COWVOL_EVENT_WARNING:
                dlog(LOG_WARN_, "%s@%s: %s", v->name, s ? s->name : "?", msg);
                break;
        case COWVOL_EVENT_INVALID:
                /* only logged here: this runs under the volume's lock, maybe
                 * without the catalogue's; the engine keeps the reason, and
                 * note_reasons copies it into the catalogue */
                dlog(LOG_ERR_, "%s@%s is now invalid: %s", v->name, s ? s->name : "?", msg);
                break;
        }
}

static void restore_resume(struct vol *v);

static void u_settings_changed(struct vol *v)
{
        if (v->eng)
                cowvol_volume_set_autoextend(v->eng, __atomic_load_n(&settings.autoextend_threshold, __ATOMIC_RELAXED),
                                             __atomic_load_n(&settings.autoextend_percent, __ATOMIC_RELAXED));
}

/* An image a user other than root lent (added) must still be the file they
 * lent, or theirs: a path swapped since (a link, a folder of theirs moved)
 * must not make the daemon serve them someone else's file. */
static int lent_check(const struct vol *v)
{
        struct stat st;
        int r;

        if (!v->lent)
                return 0;
        if ((r = cowvol_volume_fstat(v->eng, &st)) < 0)
                return dlog_errno(r, "Volume %s: cannot tell what its image %s is: %m", v->name, v->path);
        if (((uint64_t)st.st_dev == v->lent_dev && (uint64_t)st.st_ino == v->lent_ino) || st.st_uid == v->lent_uid)
                return 0;
        dlog(LOG_ERR_, "Volume %s: %s is no longer the image uid %" PRIu32 " added (device %" PRIu64 ", inode %" PRIu64
             ") nor theirs; it stays unavailable", v->name, v->path, v->lent_uid, v->lent_dev, v->lent_ino);
        return -EACCES;
}

static void u_deactivate(struct vol *v);

/* The newest snapshot whose store is not attached (it could not be
 * opened, or it reads through one that could not), or NULL; *ret_newer:
 * whether an attached one is newer than it. */
static struct snap *u_newest_lost(const struct vol *v, bool *ret_newer)
{
        struct snap *lost = NULL;

        *ret_newer = false;
        for (struct snap *s = v->snaps; s; s = s->next) {
                if (!s->eng) {
                        lost = s;
                        *ret_newer = false;
                } else if (lost) {
                        *ret_newer = true;
                }
        }
        return lost;
}

/* A chain whose store cannot be opened: the older snapshots read through
 * it, and without it they would read wrong data.  They let go too (the
 * oldest first, which copies nothing) and say why; their stores stay as
 * they are, so once the lost store is back (the next start) they read
 * right again. */
static void u_unchain_below_lost(struct vol *v)
{
        bool newer;
        struct snap *lost = u_newest_lost(v, &newer);

        if (!lost)
                return;
        for (struct snap *s = v->snaps; s != lost; s = s->next) {
                char why[NAME_MAX_LEN * 2 + 96];

                if (!s->eng)
                        continue;
                (void)cowvol_volume_snapshot_detach(v->eng, s->eng);
                s->eng = NULL;
                snprintf(why, sizeof(why), "it reads through %s@%s, whose store cannot be opened", v->name,
                         lost->name);
                dlog(LOG_ERR_, "Snapshot %s@%s: %s", v->name, s->name, why);
                free(s->reason);
                s->reason = strdup(why);
        }
}

/* With the newest store lost and older snapshots reading through it, an
 * origin write would have nowhere to put its copies: writes wait until a
 * new snapshot is taken, the older ones are removed, or the store is back
 * (the next start). */
static void u_hold_check(struct vol *v)
{
        struct snap *lost;
        bool newer, hold;

        if (!v->eng)
                return;
        lost = u_newest_lost(v, &newer);
        hold = v->chain && lost && lost != v->snaps && !newer;
        /* a restore that cannot run holds it too (restore_stall) */
        cowvol_volume_hold_origin(v->eng, hold || v->restore_stalled);
        if (hold)
                dlog(LOG_ERR_, "Volume %s: writes are refused: the store of its newest snapshot %s@%s cannot be "
                     "opened and older snapshots read through it; take a snapshot (cowvol snap %s) to write on, "
                     "remove the older ones, or bring the store back", v->name, v->name, lost->name, v->name);
}

/* Open the image and attach the snapshots; resume a restore. */
static int u_activate(struct vol *v)
{
        int r;

        r = cowvol_volume_open(v->path, v->chunk, &v->eng);
        if (r < 0)
                return dlog_errno(r, "Volume %s: cannot open its image %s", v->name, v->path);
        if ((r = lent_check(v)) < 0) {
                v->eng = cowvol_volume_close(v->eng);
                return r;
        }
        cowvol_volume_set_event_callback(v->eng, on_event, v);
        u_settings_changed(v);
        if (cowvol_volume_size(v->eng) != v->size)
                dlog(LOG_WARN_, "Volume %s: its image is now %llu bytes (catalogue: %llu)", v->name,
                     (unsigned long long)cowvol_volume_size(v->eng), (unsigned long long)v->size);
        v->size = cowvol_volume_size(v->eng);
        for (struct snap *s = v->snaps; s; s = s->next) {
                r = cowvol_volume_snapshot_attach(v->eng, s->store, &s->eng);
                if (r < 0) {
                        dlog_errno(r, "Snapshot %s@%s: cannot open its store %s", v->name, s->name, s->store);
                        if (!s->reason)
                                s->reason = strdup("its store cannot be opened");
                }
        }
        /* each snapshot's own size, oldest first (never above a newer one's) */
        for (struct snap *s = v->snaps; s; s = s->next) {
                uint64_t want = s->size;

                if (!s->eng || (r = cowvol_snapshot_set_size(v->eng, s->eng, want)) >= 0)
                        continue;
                s->size = cowvol_snapshot_size(v->eng, s->eng);
                dlog_errno(r, "Snapshot %s@%s: its size (%" PRIu64 " bytes) does not fit the volume's (%" PRIu64
                           "): it reads as %" PRIu64 " bytes", v->name, s->name, want, v->size, s->size);
        }
        if (v->chain) {
                u_unchain_below_lost(v);
                u_hold_check(v);
        } else {
                /* independent stores (the kernel engine's, or from before
                 * chains): written snapshots make them differ from a chain */
                uint64_t copied = 0;
                r = cowvol_volume_chain_adopt(v->eng, &copied);
                if (r < 0)
                        dlog_errno(r, "Volume %s: cannot make its snapshots a chain; it stays unavailable: %m",
                                   v->name);
                if (r < 0) {
                        u_deactivate(v);
                        return r;
                }
                v->chain = true;
                if (copied)
                        dlog(LOG_INFO_, "Volume %s: its snapshots are now a chain (%" PRIu64 " chunks copied "
                             "where snapshots had been written into)", v->name, copied);
                (void)catalogue_save();
        }
        if (v->restoring)
                restore_resume(v);
        return 0;
}

static void u_deactivate(struct vol *v)
{
        for (struct snap *s = v->snaps; s; s = s->next)
                s->eng = NULL;
        v->eng = cowvol_volume_close(v->eng); /* flushes the image and the stores */
}

static bool u_is_active(const struct vol *v)
{
        return v->eng != NULL;
}

/* an image on a filesystem mounted later: once it is there */
static bool u_can_retry(const struct vol *v)
{
        struct stat st;

        return stat(v->path, &st) == 0;
}

static bool u_note_reasons(struct vol *v)
{
        bool changed = false;

        for (struct snap *s = v->snaps; s; s = s->next) {
                struct cowvol_snapshot_info si;
                if (s->reason || !s->eng || cowvol_snapshot_info(v->eng, s->eng, &si) < 0 || si.valid || !si.reason[0])
                        continue;
                s->reason = strdup(si.reason);
                changed = true;
        }
        return changed;
}

/* --- snapshots ------------------------------------------------------------ */

static int u_snapshot_check(const struct vol *v, const char *name, const struct snap_options *o, struct failure *f)
{
        (void)name;
        if (o->store_device)
                return fail(f, -EINVAL, "--store names a block device for a kernel volume; '%s' is an image file "
                            "volume, whose stores live in the state folder", v->name);
        if (!v->eng)
                return fail(f, -EIO, "volume '%s' is unavailable (its image could not be opened)", v->name);
        return 0;
}

static int u_snapshot(struct vol *v, struct snap *s, const struct snap_options *o, struct failure *f)
{
        char path[4096], name[UUID_LEN + 8];
        int fd, r;

        snprintf(path, sizeof(path), "%s/stores/%s.cow", settings.state_dir, s->uuid);
        if (!(s->store = strdup(path)))
                return fail(f, -ENOMEM, "out of memory");
        /* made here, empty, through the state folder's descriptor and never
         * through a link; the library makes it a store */
        snprintf(name, sizeof(name), "%s.cow", s->uuid);
        fd = state_create("stores", name, O_RDWR);
        if (fd < 0)
                return fail(f, fd, "cannot create the store of %s@%s, %s: %s", v->name, s->name, path,
                            strerror(-fd));
        close(fd);
        r = cowvol_volume_snapshot_create(v->eng, path, o->store_bytes, &s->eng);
        if (r < 0) {
                state_remove(path);
                return fail(f, r, "cannot create the store of %s@%s: %s", v->name, s->name, strerror(-r));
        }
        return 0;
}

/* the store goes after the catalogue forgot the snapshot */
static void u_snapshot_drop(struct vol *v, struct snap *s)
{
        int r;

        if (s->eng)
                cowvol_volume_snapshot_detach(v->eng, s->eng);
        s->eng = NULL;
        if ((r = state_remove(s->store)) < 0 && r != -ENOENT)
                dlog(LOG_WARN_, "Snapshot %s@%s: cannot remove its store %s: %s", v->name, s->name, s->store,
                     strerror(-r));
        u_hold_check(v); /* the last one reading through a lost store gone */
}

/* Before the catalogue forgets it, the older snapshots get what they read
 * through it (a chain): a crash after this loses nothing. */
static int u_snapshot_release(struct vol *v, struct snap *s, struct failure *f)
{
        int r;

        if (!s->eng) {
                /* a lost store (or one that reads through it): the older
                 * snapshots read through it, and without its chunks they
                 * would read wrong data once it is back */
                if (v->eng && v->chain && v->snaps != s)
                        return fail(f, -EBUSY,
                                    "cannot remove %s@%s: it cannot be read (%s) and the older snapshots read "
                                    "through it (%s@%s is the oldest): remove them first, or bring its store back",
                                    v->name, s->name, s->reason ? s->reason : "its store cannot be opened", v->name,
                                    v->snaps->name);
                return 0;
        }
        r = cowvol_volume_snapshot_unchain(v->eng, s->eng);
        if (r < 0)
                return fail(f, r, "cannot remove %s@%s: %s", v->name, s->name,
                            r == -EBUSY ? "a restore is running on the volume"
                                        : "the older snapshots could not be given the chunks they read through it");
        return 0;
}

static void u_snapshot_release_undo(struct vol *v, struct snap *s)
{
        if (s->eng)
                (void)cowvol_volume_snapshot_rechain(v->eng, s->eng);
}

static int u_volume_busy(const struct vol *v, struct failure *f)
{
        (void)v;
        (void)f;
        return 0; /* references (NBD, cat, write) are the handler's to count */
}

static int u_volume_release(struct vol *v, struct failure *f)
{
        (void)v;
        (void)f;
        return 0;
}

/* the catalogue forgot it: close, and remove its stores, and its image
 * when create made it */
static void u_volume_drop(struct vol *v)
{
        u_deactivate(v);
        for (struct snap *s = v->snaps; s; s = s->next)
                if (!s->store_device)
                        state_remove(s->store);
        if (v->owned) {
                state_remove(v->path);
                dlog(LOG_INFO_, "Removed the image of volume %s, %s", v->name, v->path);
        }
}

/* --- restores: a thread of merge steps ----------------------------------------- */

/* Take @s out of @v's list. */
static void snap_unlist(struct vol *v, struct snap *s)
{
        for (struct snap **p = &v->snaps; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        break;
                }
}

/* Move @s to the end of @v's list: the newest of the chain, as the engine
 * now has it. */
static void snap_to_newest(struct vol *v, struct snap *s)
{
        struct snap **p;

        snap_unlist(v, s);
        for (p = &v->snaps; *p; p = &(*p)->next)
                ;
        *p = s;
        s->next = NULL;
}

/* How long a restore waits before it tries again to save the catalogue
 * (a full disk, say), unless the daemon stops first. */
#define RESTORE_RETRY_S 5

/* Catalogue lock held. */
static void restore_backoff(void)
{
        struct timespec t;

        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += RESTORE_RETRY_S;
        while (!catalogue.stopping && pthread_cond_timedwait(&catalogue.changed, &catalogue.lock, &t) != ETIMEDOUT)
                ;
}

/* Save the catalogue, again every RESTORE_RETRY_S until it works or the
 * daemon stops.  Catalogue lock held; the restore holds the volume's
 * writes all along (merging, or its origin held). */
static int restore_save(struct vol *v, const char *what)
{
        int r;

        while ((r = catalogue_save()) < 0) {
                if (catalogue.stopping)
                        return r;
                dlog(LOG_ERR_, "Restore of %s: %s waits until the catalogue can be saved (tried again every "
                     "%d s); the volume's writes wait too", v->name, what, RESTORE_RETRY_S);
                restore_backoff();
        }
        return 0;
}

/* The end of a restore: the snapshot is the newest, its store empty (the
 * volume is its content); drop it, or keep it as a snapshot of the
 * restored content.  The catalogue says so before the volume takes writes
 * again: until then a crash resumes the restore, which would put the
 * snapshot's content back over them (with --keep, it has their copies).
 * 0, or < 0 when the daemon stopped first (the next start finishes it). */
static int restore_finish(struct vol *v)
{
        struct snap *s = v->restoring;
        bool keep = v->restore_keep, lost;
        int r;

        cowvol_volume_hold_origin(v->eng, true);
        /* < 0: its emptied store could not be opened again, and the engine
         * let it go (empty and the newest, nothing reads through it) */
        lost = cowvol_volume_merge_end(v->eng) < 0;
        if (lost) {
                s->eng = NULL;
                if (keep)
                        dlog(LOG_ERR_, "Restored %s from %s@%s, but the snapshot cannot be kept: its store cannot "
                             "be opened again", v->name, v->name, s->name);
                keep = false;
        }
        snap_to_newest(v, s);
        s->size = v->size;
        /* the catalogue is saved as after the end (restore_ending: no
         * restore, the snapshot kept or dropped) while the volume still
         * shows a restore: the lock goes between tries, and every check
         * refuses what a restore refuses (rm, snap, restore, writes) */
        v->restore_ending = true;
        v->restore_drop = !keep;
        r = restore_save(v, "its end");
        v->restore_ending = false;
        if (r < 0)
                return r; /* still recorded as restoring: the next start finishes it */
        v->restoring = NULL;
        if (!keep)
                snap_unlist(v, s);
        v->restore_mode = RESTORE_CHAIN;
        if (!keep && !lost && (r = cowvol_volume_snapshot_detach(v->eng, s->eng)) < 0) {
                /* attached, it takes copies the older ones read: listed */
                dlog_errno(r, "Restored %s from %s@%s, but the snapshot cannot be removed: %m; it is kept",
                           v->name, v->name, s->name);
                keep = true;
                snap_to_newest(v, s);
                (void)catalogue_save();
        }
        if (!keep) {
                int e = state_remove(s->store);
                if (e < 0 && e != -ENOENT)
                        dlog(LOG_WARN_, "Cannot remove the store %s: %s", s->store, strerror(-e));
                dlog(LOG_INFO_, "Restored %s from %s@%s; the snapshot is consumed", v->name, v->name, s->name);
                snap_free_meta(s);
        } else {
                dlog(LOG_INFO_, "Restored %s from %s@%s; the snapshot is kept", v->name, v->name, s->name);
        }
        cowvol_volume_hold_origin(v->eng, false);
        u_hold_check(v);
        return 0;
}

static void *restore_main(void *arg)
{
        struct vol *v = arg;
        uint64_t left = 0;
        int r = 0;

        for (;;) {
                if (catalogue.stopping)
                        break; /* the next start resumes from the store */
                r = cowvol_volume_merge_step(v->eng, &left);
                pthread_mutex_lock(&catalogue.lock);
                v->restore_left = left;
                if (r == COWVOL_MERGE_NEWEST) {
                        /* the engine made the snapshot the newest: recorded
                         * before its store empties (in its old place an
                         * empty store would read through the newer ones) */
                        snap_to_newest(v, v->restoring);
                        v->restoring->size = v->size; /* the newest: the volume's size */
                        r = restore_save(v, "its last part");
                        if (r >= 0)
                                r = 1;
                }
                pthread_cond_broadcast(&catalogue.changed);
                pthread_mutex_unlock(&catalogue.lock);
                if (r <= 0)
                        break;
        }
        pthread_mutex_lock(&catalogue.lock);
        if (r == 0 && !catalogue.stopping)
                r = restore_finish(v);
        else if (r < 0 && !catalogue.stopping)
                dlog_errno(r, "Restore of %s stopped: %m; it resumes when the daemon restarts", v->name);
        v->restore_thread = false;
        pthread_cond_broadcast(&catalogue.changed);
        pthread_mutex_unlock(&catalogue.lock);
        return NULL;
}

static int restore_start(struct vol *v)
{
        int r;

        r = cowvol_volume_merge_begin_at(v->eng, v->restoring->eng, v->restore_mode == RESTORE_CONSUME);
        if (r < 0)
                return r;
        cowvol_volume_merge_progress(v->eng, &v->restore_total, &v->restore_left);
        r = -pthread_create(&v->restore_tid, NULL, restore_main, v);
        if (r < 0) {
                cowvol_volume_merge_end(v->eng);
                return r;
        }
        pthread_detach(v->restore_tid);
        v->restore_thread = true;
        return 0;
}

/* A recorded restore that cannot run: the volume is held (its writes,
 * reads and exports refused: it is neither what it was nor the snapshot)
 * until a start can run it. */
static void restore_stall(struct vol *v, const char *why)
{
        free(v->restore_stalled);
        v->restore_stalled = strdup(why);
        dlog(LOG_ERR_, "Volume %s: the restore from %s@%s cannot resume: %s; the volume is held (no writes, reads "
             "or exports) until it can", v->name, v->name, v->restoring->name, why);
        u_hold_check(v);
}

/* Start the recorded restore's thread, or hold the volume saying why. */
static int restore_start_or_stall(struct vol *v)
{
        char why[96];
        int r = restore_start(v);

        if (r < 0) {
                snprintf(why, sizeof(why), "%s; it is tried again at the next start", strerror(-r));
                restore_stall(v, why);
        }
        return r;
}

/* Resume the restore the catalogue records, at activation. */
static void restore_resume(struct vol *v)
{
        struct snap *m = v->restoring;
        char why[NAME_MAX_LEN * 2 + 256];

        free(v->restore_stalled);
        v->restore_stalled = NULL;
        /* the newest: its content is the chain's top, either mode is right */
        if (v->restore_mode == RESTORE_UNSURE && !m->next)
                v->restore_mode = RESTORE_CHAIN;
        if (v->restore_mode == RESTORE_UNSURE) {
                restore_stall(v, "it was begun by an older cowvold, which did not record whether it had begun to "
                              "consume the snapshot's store (\"flattened\": false); finish it with that cowvold");
                return;
        }
        if (!m->eng) {
                snprintf(why, sizeof(why), "the snapshot's store cannot be used (%s); bring it back and restart "
                         "cowvold", m->reason ? m->reason : "it cannot be opened");
                restore_stall(v, why);
                return;
        }
        if (restore_start_or_stall(v) < 0)
                return;
        dlog(LOG_INFO_, "Volume %s: resuming the restore from %s (%llu chunks left)", v->name, m->name,
             (unsigned long long)v->restore_left);
}

static int u_restore(struct vol *v, struct snap *s, bool keep, struct failure *f)
{
        struct cowvol_snapshot_info si;
        int r;

        if (!s->eng || cowvol_snapshot_info(v->eng, s->eng, &si) < 0 || !si.valid)
                return fail(f, -ESTALE, "snapshot %s@%s is invalid (%s): it cannot be restored", v->name, s->name,
                            s->reason ? s->reason : "store unusable");
        v->restoring = s;
        v->restore_keep = keep;
        v->restore_mode = RESTORE_CHAIN;
        if (v->refs) {
                /* as lvconvert --merge of an open volume: recorded, and
                 * started when its last user leaves (or at the next start) */
                char users[256];
                v->restore_pending = true;
                r = catalogue_save();
                if (r < 0) {
                        v->restoring = NULL;
                        v->restore_pending = false;
                        return fail(f, r, "cannot save the catalogue: %s", strerror(-r));
                }
                fail(f, 0, "volume '%s' is in use by %s", v->name, vol_users_describe(v, NULL, users, sizeof(users)));
                return 1;
        }
        /* recorded first: a crash from here on resumes the restore */
        r = catalogue_save();
        if (r < 0) {
                v->restoring = NULL;
                return fail(f, r, "cannot save the catalogue: %s", strerror(-r));
        }
        r = restore_start(v);
        if (r < 0) {
                v->restoring = NULL;
                catalogue_save();
                return fail(f, r, "cannot start the restore: %s", strerror(-r));
        }
        return 0;
}

static int u_resize(struct vol *v, uint64_t size, struct failure *f)
{
        int r;

        if (!v->eng)
                return fail(f, -EIO, "volume '%s' is unavailable: its image could not be opened", v->name);
        r = cowvol_volume_resize(v->eng, size);
        if (r < 0)
                return fail(f, r, "cannot resize %s to %" PRIu64 " bytes: %s", v->path, size, strerror(-r));
        return 0;
}

static bool u_restore_running(const struct vol *v)
{
        return v->restore_thread;
}

/* A volume's new name; an image that create made (STATE_DIR/volumes/
 * NAME.img) takes it too: a second name first, then the catalogue, then
 * the old name goes.  A crash between leaves two names of one file, and
 * the start's sweep removes the one the catalogue does not name. */
static int u_rename(struct vol *v, const char *name, struct failure *f)
{
        char made[4096], oldbase[NAME_MAX_LEN + 8], newbase[NAME_MAX_LEN + 8], oldname[NAME_MAX_LEN + 1];
        char *old_path = v->path, *new_path = NULL;
        int dfd = -1, r;

        snprintf(made, sizeof(made), "%s/volumes/%s.img", settings.state_dir, v->name);
        if (v->owned && !strcmp(v->path, made)) {
                snprintf(oldbase, sizeof(oldbase), "%s.img", v->name);
                snprintf(newbase, sizeof(newbase), "%s.img", name);
                if ((dfd = state_subdir("volumes")) < 0)
                        return fail(f, dfd, "cannot open %s/volumes: %s", settings.state_dir, strerror(-dfd));
                if (linkat(dfd, oldbase, dfd, newbase, 0) < 0 || fsync(dfd) < 0) {
                        r = -errno;
                        if (r != -EEXIST)
                                (void)unlinkat(dfd, newbase, 0);
                        close(dfd);
                        return fail(f, r, r == -EEXIST ? "%s/volumes/%s is in the way (a file no volume names?)"
                                                       : "cannot give %s/volumes/%s its new name: %s",
                                    settings.state_dir, newbase, strerror(-r));
                }
                if (asprintf(&new_path, "%s/volumes/%s", settings.state_dir, newbase) < 0) {
                        (void)unlinkat(dfd, newbase, 0);
                        close(dfd);
                        return fail(f, -ENOMEM, "out of memory");
                }
                v->path = new_path;
        }
        snprintf(oldname, sizeof(oldname), "%s", v->name);
        snprintf(v->name, sizeof(v->name), "%s", name);
        r = catalogue_save();
        if (r < 0) {
                snprintf(v->name, sizeof(v->name), "%s", oldname);
                v->path = old_path;
                if (new_path) {
                        /* both names stay: the save may have replaced the
                         * catalogue and failed after (its folder's fsync);
                         * the next start keeps the name it records */
                        free(new_path);
                        close(dfd);
                }
                return fail(f, r, "cannot save the catalogue: %s", strerror(-r));
        }
        if (new_path) {
                if (unlinkat(dfd, oldbase, 0) < 0 || fsync(dfd) < 0)
                        dlog_errno(-errno, "Volume %s: cannot remove the image's old name %s/volumes/%s: %m (the "
                                   "next start does)", name, settings.state_dir, oldbase);
                free(old_path);
                close(dfd);
        }
        return 0;
}

/* The last user left a volume whose restore waited for it. */
static void u_users_gone(struct vol *v)
{
        struct cowvol_snapshot_info si = {};
        struct snap *m = v->restoring;
        int r;

        v->restore_pending = false;
        if (!m->eng || cowvol_snapshot_info(v->eng, m->eng, &si) < 0 || !si.valid) {
                /* it went invalid while it waited (a store that filled):
                 * nothing was restored yet, the volume is as it was */
                dlog(LOG_ERR_, "Volume %s: the restore from %s@%s is cancelled: the snapshot became invalid (%s) "
                     "before it could start; the volume is as it was", v->name, v->name, m->name,
                     m->reason ? m->reason : si.reason[0] ? si.reason : "its store cannot be used");
                v->restoring = NULL;
                if ((r = catalogue_save()) < 0)
                        dlog_errno(r, "Volume %s: the cancelled restore stays recorded until the catalogue can be "
                                   "saved: %m", v->name);
                pthread_cond_broadcast(&catalogue.changed);
                return;
        }
        if (restore_start_or_stall(v) < 0)
                return;
        dlog(LOG_INFO_, "Volume %s: its last user left; restoring from %s@%s (%" PRIu64 " chunks)", v->name, v->name,
             v->restoring->name, v->restore_total);
        pthread_cond_broadcast(&catalogue.changed);
}

void engine_restore_join_all(void)
{
        for (;;) {
                bool any = false;
                for (struct vol *v = catalogue.vols; v; v = v->next)
                        any = any || v->restore_thread;
                if (!any)
                        return;
                pthread_cond_wait(&catalogue.changed, &catalogue.lock);
        }
}

/* --- list, diff, data ---------------------------------------------------------- */

/* the image's filesystem, as blkid sees it on disk */
static void u_volume_view(const struct vol *v, json_object *o)
{
        char type[32] = "", label[128] = "";

        if (v->eng)
                (void)cowvol_device_probe(v->path, type, sizeof(type), label, sizeof(label));
        json_object_object_add(o, "fstype", json_object_new_string(type));
        json_object_object_add(o, "label", json_object_new_string(label));
}

static void u_snapshot_view(const struct vol *v, const struct snap *s, json_object *o)
{
        (void)v;
        (void)s;
        (void)o;
}

static void u_snapshot_state(const struct vol *v, const struct snap *s, struct snap_state *ret)
{
        struct cowvol_snapshot_info si = {};

        memset(ret, 0, sizeof(*ret));
        ret->have = s->eng && cowvol_snapshot_info(v->eng, s->eng, &si) == 0;
        if (!ret->have) {
                /* a store that cannot be opened still has a size on disk */
                struct stat st;
                if (stat(s->store, &st) == 0)
                        ret->store_bytes = (uint64_t)st.st_size;
                return;
        }
        ret->valid = si.valid;
        snprintf(ret->reason, sizeof(ret->reason), "%s", si.reason);
        ret->usage = si.usage;
        ret->exceptions = si.exceptions;
        ret->store_bytes = si.store_bytes;
}

static int u_diff(struct vol *v, struct snap *s, range_fn fn, void *userdata)
{
        if (!s->eng)
                return -ESTALE;
        return cowvol_snapshot_diff(v->eng, s->eng, fn, userdata);
}

static int u_pread(struct vol *v, struct snap *s, void *buf, size_t len, uint64_t off)
{
        return cowvol_volume_pread(v->eng, s ? s->eng : NULL, buf, len, off);
}

static int u_pwrite(struct vol *v, struct snap *s, const void *buf, size_t len, uint64_t off)
{
        return cowvol_volume_pwrite(v->eng, s ? s->eng : NULL, buf, len, off);
}

static int u_flush(struct vol *v)
{
        return cowvol_volume_flush(v->eng);
}

static bool u_snapshot_open(const struct vol *v, const struct snap *s)
{
        (void)v;
        return s->eng != NULL;
}

/* the library grows stores itself; the monitor has nothing to follow */
static bool u_watch(struct vol *v)
{
        (void)v;
        return false;
}

const struct engine_ops userspace_engine = {
        .name = "userspace",
        .activate = u_activate,
        .deactivate = u_deactivate,
        .is_active = u_is_active,
        .can_retry = u_can_retry,
        .snapshot_check = u_snapshot_check,
        .snapshot = u_snapshot,
        .snapshot_undo = u_snapshot_drop,
        .snapshot_release = u_snapshot_release,
        .snapshot_release_undo = u_snapshot_release_undo,
        .snapshot_drop = u_snapshot_drop,
        .volume_busy = u_volume_busy,
        .volume_release = u_volume_release,
        .volume_drop = u_volume_drop,
        .restore = u_restore,
        .restore_running = u_restore_running,
        .resize = u_resize,
        .users_gone = u_users_gone,
        .rename = u_rename,
        .volume_view = u_volume_view,
        .snapshot_view = u_snapshot_view,
        .snapshot_state = u_snapshot_state,
        .diff = u_diff,
        .pread = u_pread,
        .pwrite = u_pwrite,
        .flush = u_flush,
        .snapshot_open = u_snapshot_open,
        .watch = u_watch,
        .note_reasons = u_note_reasons,
        .settings_changed = u_settings_changed,
};

const struct engine_ops *const engine_all[] = { &userspace_engine, &kernel_engine, NULL };
