/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The monitor of kernel volumes, as dmeventd's snapshot plugin is LVM's:
 * on every device-mapper event (the control device's poll: a snapshot
 * invalidated, a merge ended), every MONITOR_INTERVAL_S seconds at most
 * (fill levels raise no event) and when woken, it reads each kernel
 * snapshot's status line; warns once a store passes 80 %; grows a file
 * store by autoextend_percent once it passes autoextend_threshold (the
 * file, its loop device, the -cow table), before it overflows; records a
 * snapshot the kernel invalidated, with the reason, in the catalogue and
 * the log; and follows kernel merges (restores) to their end.  It also
 * opens volumes that were unavailable at start once their image or device
 * appears (cowvold starts before local filesystems are mounted).
 *
 * It works under D.lock, so it never races a request on the same volume.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

#define MONITOR_INTERVAL_S 2
#define WARN_PERCENT 80
#define RETRY_ROUNDS 5 /* unavailable volumes: tried again every 5 rounds */

static pthread_t tid;
static bool running;
static int wake_fd = -1; /* an eventfd: monitor_wake(), monitor_stop() */

static double used_percent(const struct cowvol_store_usage *u)
{
        return u->total_sectors ? 100.0 * (double)u->allocated_sectors / (double)u->total_sectors : 0;
}

/* Grow @s's store file by the configured step; D.lock held. */
static void grow(struct vol *v, struct snap *s, const struct cowvol_store_usage *u)
{
        struct cowvol_kernel_volume kv = { .name = v->name, .uuid = v->uuid, .device = v->path };
        struct cowvol_kernel_snapshot ks = { .name = s->name, .uuid = s->uuid, .store = s->store, .chunk_bytes = v->chunk };
        uint64_t old = u->total_sectors * COWVOL_SECTOR_SIZE;
        uint64_t step = old / 100 * D.cfg.autoextend_percent, size;
        int fd, r;

        step = (step + v->chunk - 1) / v->chunk * v->chunk;
        if (step < v->chunk)
                step = v->chunk;
        size = old + step;
        fd = open(s->store, O_RDWR | O_CLOEXEC);
        if (fd < 0 || fallocate(fd, 0, 0, (off_t)size) < 0) {
                dlog(LOG_ERR_, "%s@%s: cannot grow its store %s to %" PRIu64 " bytes: %s", v->name, s->name, s->store,
                     size, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return;
        }
        fsync(fd);
        close(fd);
        r = cowvol_kernel_store_grown(&kv, &ks);
        if (r < 0) {
                dlog_errno(r, "%s@%s: its store file grew to %" PRIu64 " bytes, but the kernel cannot use it yet: %m",
                           v->name, s->name, size);
                return;
        }
        dlog(LOG_INFO_, "%s@%s: store %.0f%% full; extended from %" PRIu64 " to %" PRIu64 " bytes (autoextend)",
             v->name, s->name, used_percent(u), old, size);
}

/* A volume unavailable at start (its image on a filesystem mounted later,
 * its device not there yet): opened once its file or device exists.
 * D.lock held; true when the catalogue changed. */
static bool retry_unavailable(struct vol *v)
{
        struct stat st;

        if (v->kernel ? v->kactive : v->eng != NULL)
                return false;
        if (!v->kernel && v->source == NULL && stat(v->path, &st) != 0)
                return false; /* not there yet: no noise in the log */
        if (v->kernel && !strchr(v->source ? v->source : "", '=') && stat(v->path, &st) != 0)
                return false;
        if (v->kernel) {
                if (kvol_activate(v) < 0)
                        return false;
        } else {
                if (vol_activate(v) < 0)
                        return false;
                if (v->restoring && restore_start(v) < 0)
                        dlog(LOG_ERR_, "Volume %s: the restore from %s cannot resume", v->name, v->restoring->name);
        }
        dlog(LOG_INFO_, "Volume %s is available now (%s)", v->name, v->path);
        return true;
}

/* One look at @v's snapshots; D.lock held.  True when the catalogue changed. */
static bool watch_snapshots(struct vol *v)
{
        struct cowvol_kernel_volume kv = { .name = v->name, .uuid = v->uuid, .device = v->path };
        bool changed = false;

        for (struct snap *s = v->snaps; s; s = s->next) {
                struct cowvol_kernel_snapshot ks = { .name = s->name, .uuid = s->uuid, .store = s->store,
                                               .chunk_bytes = v->chunk };
                struct cowvol_kernel_status st;
                double pct;

                if (s->reason || s == v->restoring || cowvol_kernel_status(&kv, &ks, &st) < 0 || !st.exists)
                        continue;
                if (!st.valid) {
                        s->reason = strdup(st.overflow       ? "overflow: the store is full"
                                           : st.merge_failed ? "the kernel's merge failed"
                                                             : "invalidated by the kernel (store full or I/O error)");
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
                if (!s->store_device && D.cfg.autoextend_threshold < 100 && pct >= D.cfg.autoextend_threshold)
                        grow(v, s, &st.usage);
        }
        return changed;
}

static void *monitor_main(void *arg)
{
        /* no device-mapper here, or too old a kernel: polling alone */
        int ev = cowvol_kernel_events_open();
        uint64_t n, round = 0;

        (void)arg;
        for (;;) {
                struct pollfd pf[2] = { { .fd = wake_fd, .events = POLLIN }, { .fd = ev, .events = POLLIN } };
                bool changed = false, retry_due = ++round % RETRY_ROUNDS == 0;

                pthread_mutex_lock(&D.lock);
                if (D.stopping) {
                        pthread_mutex_unlock(&D.lock);
                        break;
                }
                for (struct vol *v = D.vols; v; v = v->next) {
                        if (retry_due)
                                changed |= retry_unavailable(v);
                        if (v->kernel && v->kactive) {
                                changed |= watch_snapshots(v);
                                changed |= kvol_merge_watch(v);
                        }
                }
                if (changed)
                        (void)catalogue_save();
                pthread_mutex_unlock(&D.lock);
                if (poll(pf, 2, MONITOR_INTERVAL_S * 1000) > 0) {
                        if (pf[0].revents & POLLIN)
                                (void)!read(wake_fd, &n, sizeof(n));
                        if (pf[1].revents & POLLIN)
                                (void)cowvol_kernel_events_arm(ev); /* the event is seen: the next one */
                }
        }
        if (ev >= 0)
                close(ev);
        return NULL;
}

int monitor_start(void)
{
        int r;

        wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake_fd < 0)
                return -errno;
        r = -pthread_create(&tid, NULL, monitor_main, NULL);
        if (r == 0)
                running = true;
        return r;
}

void monitor_wake(void)
{
        uint64_t one = 1;

        if (wake_fd >= 0)
                (void)!write(wake_fd, &one, sizeof(one));
}

/* D.stopping set, D.lock NOT held */
void monitor_stop(void)
{
        if (!running)
                return;
        monitor_wake();
        pthread_join(tid, NULL);
        running = false;
        close(wake_fd);
        wake_fd = -1;
}
