/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvold's log: stderr, each line with its syslog priority as "<N>", which
 * journald keeps. */
#ifndef COWVOLD_LOG_H
#define COWVOLD_LOG_H

#define LOG_ERR_ 3
#define LOG_WARN_ 4
#define LOG_INFO_ 6

void dlog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Log at LOG_ERR_ and return @r (a negative errno); %m is strerror(-r). */
int dlog_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The library's messages (cowvol_set_log_callback) into this log. */
void dlog_library(int level, const char *msg, void *userdata);

#endif
