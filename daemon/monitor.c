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
 * It works under catalogue.lock, so it never races a request on the same volume.
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
#define RETRY_ROUNDS 5 /* unavailable volumes: tried again every 5 rounds */

static pthread_t tid;
static bool running;
static int wake_fd = -1; /* an eventfd: monitor_wake(), monitor_stop() */

/* A volume unavailable at start (its image on a filesystem mounted later,
 * its device not there yet): opened once its file or device exists.
 * catalogue.lock held; true when the catalogue changed. */
static bool retry_unavailable(struct vol *v)
{
        if (v->ops->is_active(v) || !v->ops->can_retry(v))
                return false; /* not there yet: no noise in the log */
        if (v->ops->activate(v) < 0)
                return false;
        dlog(LOG_INFO_, "Volume %s is available now (%s)", v->name, v->path);
        return true;
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

                pthread_mutex_lock(&catalogue.lock);
                if (catalogue.stopping) {
                        pthread_mutex_unlock(&catalogue.lock);
                        break;
                }
                for (struct vol *v = catalogue.vols; v; v = v->next) {
                        if (retry_due)
                                changed |= retry_unavailable(v);
                        changed |= v->ops->watch(v);
                }
                if (changed)
                        (void)catalogue_save();
                pthread_mutex_unlock(&catalogue.lock);
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

/* catalogue.stopping set, catalogue.lock NOT held */
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
