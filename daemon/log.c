/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvold's log (log.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

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

void dlog_library(int level, const char *msg, void *userdata)
{
        (void)userdata;
        dlog(level == COWVOL_LOG_ERROR ? LOG_ERR_ : level == COWVOL_LOG_WARNING ? LOG_WARN_ : LOG_INFO_, "%s", msg);
}
