/* SPDX-License-Identifier: GPL-2.0-or-later */
/* schedule.c: cleanups carried out, and the clock of timeline snapshots. */
#ifndef COWVOLD_SCHEDULE_H
#define COWVOLD_SCHEDULE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "catalogue.h"

/* The cleanup of @v at @now (catalogue.lock held): what cleanup_plan
 * removes goes through snapshot_remove, oldest first, each logged with its
 * reason (@by: who asked); with @dry_run nothing goes.  Every snapshot's
 * decision is appended to @report (an array of {name, number, created,
 * why, removed[, error]}).  How many went, or -errno. */
int schedule_cleanup(struct vol *v, int64_t now, bool dry_run, const char *by, json_object *report);
/* The policy @v's cleanup uses: its schedule's, or snapper's default
 * (into @buf) */
const struct cleanup_policy *schedule_policy(const struct vol *v, struct cleanup_policy *buf);
/* on, with a timeline limit above 0: the clock takes timeline snapshots */
bool schedule_timeline(const struct schedule *sc);

/* The clock's thread: start; wake (a schedule changed); stop (after
 * catalogue.stopping is set, without its lock). */
int schedule_start(void);
void schedule_wake(void);
void schedule_stop(void);
/* the wall clock (seconds) as the clock's last whole round read it; 0
 * before the first */
int64_t schedule_clock_seen(void);
/* how many rounds the clock has done: one that began after a moment is
 * done once this passes its value then by 2 */
uint64_t schedule_clock_rounds(void);

#endif
