/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvold's log (log.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "cowvol.h"
#include "log.h"

/* Is standard error the journal (systemd's JOURNAL_STREAM names it)?
 * Then journald stamps each line; otherwise the line carries its time. */
static bool to_journal(void)
{
        static int known = -1; /* a benign race: every thread finds the same */
        int k = __atomic_load_n(&known, __ATOMIC_RELAXED);

        if (k < 0) {
                const char *e = getenv("JOURNAL_STREAM");
                unsigned long long dev, ino;
                struct stat st;

                k = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
                    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
                __atomic_store_n(&known, k, __ATOMIC_RELAXED);
        }
        return k;
}

static __thread uid_t peer_uid = (uid_t)-1;
static __thread pid_t peer_pid;

void dlog_peer(uid_t uid, pid_t pid)
{
        peer_uid = uid;
        peer_pid = pid;
}

static const char *prio_word(int prio)
{
        return prio <= LOG_ERR_ ? "error" : prio == LOG_WARN_ ? "warning" : prio == LOG_INFO_ ? "info" : "debug";
}

__attribute__((format(printf, 2, 0))) static void dlog_va(int prio, const char *fmt, va_list ap)
{
        char line[4096];
        size_t n = 0;
        bool journal = to_journal();
        int k;

        if (!journal) {
                struct timespec ts;
                struct tm tm;

                clock_gettime(CLOCK_REALTIME, &ts);
                localtime_r(&ts.tv_sec, &tm);
                n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
                k = snprintf(line + n, sizeof(line) - n, ".%03ld", ts.tv_nsec / 1000000);
                n += k > 0 ? (size_t)k : 0;
                n += strftime(line + n, sizeof(line) - n, "%z ", &tm);
        }
        /* "<N>" lets journald keep the priority of each line */
        if (journal)
                k = snprintf(line + n, sizeof(line) - n, "<%d>", prio);
        else
                k = snprintf(line + n, sizeof(line) - n, "%s: ", prio_word(prio));
        n += k > 0 ? (size_t)k : 0;
        k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
        n += k < 0 ? 0 : (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
        if (peer_uid != (uid_t)-1) {
                k = snprintf(line + n, sizeof(line) - n - 1, " [uid %u, pid %d]", (unsigned)peer_uid, (int)peer_pid);
                n += k < 0 ? 0 : (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
        }
        line[n++] = '\n';
        /* one write: lines of several threads never interleave */
        (void)!write(STDERR_FILENO, line, n);
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
