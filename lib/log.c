/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The library never prints: messages go to the caller's log callback. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static cowvol_log_fn log_fn;
static void *log_userdata;
/* the innermost scope of the calling thread (LOG_SCOPE) */
static __thread const struct log_scope *scope;

void log_scope_enter(struct log_scope *s, cowvol_log_fn fn, void *userdata)
{
        s->fn = fn;
        s->userdata = userdata;
        s->prev = scope;
        scope = s;
}

void log_scope_leave(struct log_scope *s)
{
        scope = s->prev;
}

_public_ void cowvol_set_log_callback(cowvol_log_fn fn, void *userdata)
{
        log_fn = fn;
        log_userdata = userdata;
}

_printf_(2, 0) static void log_va(int level, const char *fmt, va_list ap)
{
        char buf[1024];

        const struct log_scope *own = scope;

        while (own && !own->fn)
                own = own->prev;
        if (!log_fn && !own)
                return;
        if (level >= COWVOL_LOG_DEBUG && !getenv("COWVOL_DEBUG"))
                return;
        vsnprintf(buf, sizeof(buf), fmt, ap);
        if (own)
                own->fn(level, buf, own->userdata);
        if (log_fn)
                log_fn(level, buf, log_userdata);
}

void cvlog(int level, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_va(level, fmt, ap);
        va_end(ap);
}

int cvlog_errno(int r, const char *fmt, ...)
{
        va_list ap;
        int saved = errno;

        /* %m in the format means strerror(-r), as in systemd */
        errno = r < 0 ? -r : r;
        va_start(ap, fmt);
        log_va(COWVOL_LOG_ERROR, fmt, ap);
        va_end(ap);
        errno = saved;
        return r;
}

_public_ const char *cowvol_version(void)
{
        return COWVOL_VERSION;
}
