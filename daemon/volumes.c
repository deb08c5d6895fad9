/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Between the catalogue and the userspace engine: opening volumes with
 * their snapshots at start, engine events, and restores, which run in a
 * thread of their own, one merge step at a time, so that the daemon goes
 * on serving and a crash resumes where the store says.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"

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
                 * without D.lock; the engine keeps the reason, and
                 * vol_note_reasons() copies it into the catalogue */
                dlog(LOG_ERR_, "%s@%s is now invalid: %s", v->name, s ? s->name : "?", msg);
                break;
        }
}

int vol_activate(struct vol *v)
{
        int r;

        r = cowvol_volume_open(v->path, v->chunk, &v->eng);
        if (r < 0)
                return dlog_errno(r, "Volume %s: cannot open its image %s", v->name, v->path);
        cowvol_volume_set_event_callback(v->eng, on_event, v);
        cowvol_volume_set_autoextend(v->eng, D.cfg.autoextend_threshold, D.cfg.autoextend_percent);
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
        return 0;
}

bool vol_note_reasons(struct vol *v)
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

void vol_deactivate(struct vol *v)
{
        for (struct snap *s = v->snaps; s; s = s->next)
                s->eng = NULL;
        v->eng = cowvol_volume_close(v->eng);
}

/* The end of a restore: the store is empty; drop or keep the snapshot. */
static void restore_finish(struct vol *v)
{
        struct snap *s = v->restoring, **p;

        cowvol_volume_merge_end(v->eng);
        v->restoring = NULL;
        if (!v->restore_keep) {
                for (p = &v->snaps; *p; p = &(*p)->next)
                        if (*p == s) {
                                *p = s->next;
                                break;
                        }
                cowvol_volume_snapshot_detach(v->eng, s->eng);
        }
        if (catalogue_save() < 0 && !v->restore_keep)
                dlog(LOG_ERR_, "Restore of %s: the catalogue could not be saved; the snapshot %s is "
                     "merged and will be dropped at the next start", v->name, s->name);
        if (!v->restore_keep) {
                if (unlink(s->store) < 0 && errno != ENOENT)
                        dlog(LOG_WARN_, "Cannot remove the store %s: %s", s->store, strerror(errno));
                dlog(LOG_INFO_, "Restored %s from %s@%s; the snapshot is consumed", v->name, v->name, s->name);
                snap_free_meta(s);
        } else {
                dlog(LOG_INFO_, "Restored %s from %s@%s; the snapshot is kept", v->name, v->name, s->name);
        }
}

static void *restore_main(void *arg)
{
        struct vol *v = arg;
        uint64_t left = 0;
        int r = 0;

        for (;;) {
                if (D.stopping)
                        break; /* the next start resumes from the store */
                r = cowvol_volume_merge_step(v->eng, &left);
                pthread_mutex_lock(&D.lock);
                v->restore_left = left;
                pthread_cond_broadcast(&D.changed);
                pthread_mutex_unlock(&D.lock);
                if (r <= 0)
                        break;
        }
        pthread_mutex_lock(&D.lock);
        if (r == 0 && !D.stopping)
                restore_finish(v);
        else if (r < 0)
                dlog_errno(r, "Restore of %s stopped: %m; it resumes when the daemon restarts", v->name);
        v->restore_thread = false;
        pthread_cond_broadcast(&D.changed);
        pthread_mutex_unlock(&D.lock);
        return NULL;
}

int restore_start(struct vol *v)
{
        int r;

        r = cowvol_volume_merge_begin(v->eng, v->restoring->eng);
        if (r < 0)
                return r;
        {
                struct cowvol_snapshot_info si;
                cowvol_snapshot_info(v->eng, v->restoring->eng, &si);
                v->restore_total = v->restore_left = si.exceptions;
        }
        r = -pthread_create(&v->restore_tid, NULL, restore_main, v);
        if (r < 0) {
                cowvol_volume_merge_end(v->eng);
                return r;
        }
        pthread_detach(v->restore_tid);
        v->restore_thread = true;
        return 0;
}

/* D.lock held; waits until every restore thread has left (D.stopping set). */
void restore_join_all(void)
{
        for (;;) {
                bool any = false;
                for (struct vol *v = D.vols; v; v = v->next)
                        any = any || v->restore_thread;
                if (!any)
                        return;
                pthread_cond_wait(&D.changed, &D.lock);
        }
}
