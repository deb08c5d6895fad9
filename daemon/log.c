/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvold's log (log.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "../common/util.h"
#include "cowvol.h"
#include "log.h"

__attribute__((format(printf, 2, 0))) static void dlog_va(int prio, const char *fmt, va_list ap)
{
        /* "<N>" lets journald keep the priority of each line */
        fprintf(stderr, "<%d>", prio);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
}

void dlog(int prio, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        dlog_va(prio, fmt, ap);
        va_end(ap);
}

int dlog_errno(int r, const char *fmt, ...)
{
        va_list ap;
        int saved = errno;

        errno = r < 0 ? -r : r;
        va_start(ap, fmt);
        dlog_va(LOG_ERR_, fmt, ap);
        va_end(ap);
        errno = saved;
        return r;
}

/* the calling thread's last library error: library calls run in their
 * caller's thread, so this is the reason of the call that just failed */
static __thread char last_error[512];

const char *dlog_library_last(void)
{
        return last_error;
}

void dlog_library_forget(void)
{
        last_error[0] = '\0';
}

void dlog_library(int level, const char *msg, void *userdata)
{
        (void)userdata;
        if (level == COWVOL_LOG_ERROR)
                snprintf(last_error, sizeof(last_error), "%s", msg);
        dlog(level == COWVOL_LOG_ERROR ? LOG_ERR_ : level == COWVOL_LOG_WARNING ? LOG_WARN_ : LOG_INFO_, "%s", msg);
}

bool log_allowed(struct log_limit *l, char *note, size_t len)
{
        double now = now_monotonic();
        bool ok = false;

        pthread_mutex_lock(&l->lock);
        if (l->last && now - l->last < 10)
                l->held++;
        else {
                ok = true;
                note[0] = '\0';
                if (l->held)
                        snprintf(note, len, " (and %u more like it in %.0f s)", l->held, now - l->last);
                l->last = now;
                l->held = 0;
        }
        pthread_mutex_unlock(&l->lock);
        return ok;
}
