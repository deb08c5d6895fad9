/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvold's log: stderr, each line with its syslog priority as "<N>", which
 * journald keeps; elsewhere (a file, a terminal) each line starts with its
 * local time, and the priority is a word.  A line logged while a request
 * is handled ends with the peer's uid and pid. */
#ifndef COWVOLD_LOG_H
#define COWVOLD_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define LOG_ERR_ 3
#define LOG_WARN_ 4
#define LOG_INFO_ 6

void dlog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The peer whose request the calling thread handles (its lines name it);
 * uid (uid_t)-1: none. */
void dlog_peer(uid_t uid, pid_t pid);
/* Log at LOG_ERR_ and return @r (a negative errno); %m is strerror(-r). */
int dlog_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line that a flood (of clients, of failed thread starts) could repeat:
 * at most one every 10 s.  log_allowed: may it be logged now; @note gets
 * " (and N more like it in S s)" for the ones held back, or "". */
struct log_limit {
        pthread_mutex_t lock;
        double last;
        unsigned held;
};
#define LOG_LIMIT_INIT { PTHREAD_MUTEX_INITIALIZER, 0, 0 }
bool log_allowed(struct log_limit *l, char *note, size_t len);
/* The library's messages (cowvol_set_log_callback) into this log. */
void dlog_library(int level, const char *msg, void *userdata);
/* The last error the library logged in the calling thread ("" if none). */
const char *dlog_library_last(void);
void dlog_library_forget(void);

#endif
