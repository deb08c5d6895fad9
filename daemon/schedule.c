/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The scheduler: a volume's cleanup (snapper's rules, cleanup.c) carried
 * out, and the clock that takes timeline snapshots, as snapper's timer
 * and cleanup services do, with cowvold as the timer.
 *
 * Cleanup (schedule_cleanup, catalogue.lock held): every snapshot of the
 * volume goes to cleanup_plan with the volume's policy (its schedule's, or
 * snapper's default-config without one), and what it removes goes through
 * snapshot_remove, the path of `cowvol rm`, oldest first (the oldest of a
 * chain goes for free).  Busy, so kept whatever the rules say: every
 * snapshot while its volume is being restored (rm refuses then too), and
 * one that holds references (refs: an NBD connection to it, which `cowvol
 * map` is too, or a cat or write in flight).  A removal the engine refuses
 * (a kernel snapshot's device held open) keeps the snapshot, said so.
 * A post is an empty pair with its pre when no store from the pre up to
 * the post holds an exception: the content of a snapshot differs from the
 * next newer one's only where its store holds one (DESIGN.md, chains; the
 * stores of the kernel engine, independent, satisfy the same equation).
 * --free-limit: while the free space of the state folder's filesystem is
 * under it, the limits' minimum applies (space_short) and, that reached,
 * the oldest snapshot that only a count keeps (a single one of class
 * number or timeline, not busy, not younger than min-age) goes, one at a
 * time, oldest first, until there is room (snapper's FREE_LIMIT loop).
 * Hours, days and weeks are local time: cleanup_plan gets each time moved
 * by its UTC offset (localtime's tm_gmtoff), as snapper's local times.
 *
 * The clock (a thread): wakes at least once a minute (clock_tick) and
 * reads the wall clock anew each time, so a jump, a suspend or faketime
 * is seen at the next wake.  A volume with a schedule whose hourly..yearly
 * limits are not all 0 gets a timeline snapshot when its newest timeline
 * snapshot was taken in an earlier hour (local) than now: one at the start
 * of every hour, and after a gap (the daemon down, the machine asleep) one,
 * never one for each hour missed; a clock that went back takes none until
 * it passes the newest again.  It is tried once an hour: a failure is
 * logged and waits for the next hour.  After every timeline snapshot, and
 * once an hour, the volume's cleanup runs.  Snapshots and cleanups go
 * through handle_request, as a client's with root's rights: the same
 * checks, the same lock, the same engine path (a kernel volume's
 * filesystem frozen as for any snapshot).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "schedule.h"

/* --- cleanup ------------------------------------------------------------------ */

/* @t moved by its UTC offset: local time read as UTC (cleanup_plan's) */
static int64_t local_of(int64_t t)
{
        time_t tt = (time_t)t;
        struct tm tm;

        if (!localtime_r(&tt, &tm))
                return t;
        return t + tm.tm_gmtoff;
}

/* hours of local time since the epoch */
static int64_t hour_of(int64_t t)
{
        int64_t l = local_of(t);

        return l >= 0 ? l / 3600 : -((-l + 3599) / 3600);
}

static bool snap_important(const struct snap *s)
{
        char val[USERDATA_VALUE_MAX + 1];

        return userdata_get(s->userdata, "important", val, sizeof(val)) && strcmp(val, "yes") == 0;
}

/* no store from @pre up to, not including, @post holds an exception */
static bool pair_empty(const struct vol *v, const struct snap *pre, const struct snap *post)
{
        bool in = false;

        for (const struct snap *s = v->snaps; s; s = s->next) {
                struct snap_state st;
                if (s == pre)
                        in = true;
                if (s == post)
                        return in;
                if (!in)
                        continue;
                v->ops->snapshot_state(v, s, &st);
                if (!st.have || st.exceptions)
                        return false;
        }
        return false; /* the post is older than its pre */
}

/* busy: its volume being restored, or references held (NBD, cat, write) */
static const char *snap_busy(const struct vol *v, const struct snap *s)
{
        if (v->restoring == s)
                return "being restored";
        if (v->restoring)
                return "its volume is being restored";
        if (s->refs)
                return "in use (an NBD connection, cat or write)";
        return NULL;
}

const struct cleanup_policy *schedule_policy(const struct vol *v, struct cleanup_policy *buf)
{
        if (v->schedule.on)
                return &v->schedule.policy;
        cleanup_policy_default(buf);
        return buf;
}

/* free space of the state folder's filesystem, in percent, or -1 */
static int free_percent(void)
{
        struct statvfs sv;

        if (fstatvfs(state_fd, &sv) < 0 || !sv.f_blocks)
                return -1;
        return (int)((uint64_t)sv.f_bavail * 100 / sv.f_blocks);
}

static void report_add(json_object *a, const struct snap *s, const char *why, const struct cleanup_decision *d,
                       bool removed, const char *error)
{
        json_object *o = json_object_new_object();
        char text[200];

        if (d && d->limit && d->verdict == CLEANUP_KEEP)
                snprintf(text, sizeof(text), "%s (%u of %u)", why, d->rank, d->limit);
        else if (d && d->limit)
                snprintf(text, sizeof(text), "%s (the %u. youngest, limit %u)", why, d->rank, d->limit);
        else
                snprintf(text, sizeof(text), "%s", why);
        json_object_object_add(o, "name", json_object_new_string(s->name));
        json_object_object_add(o, "number", json_object_new_int64((int64_t)s->number));
        json_object_object_add(o, "created", json_object_new_int64(s->created));
        json_object_object_add(o, "why", json_object_new_string(text));
        json_object_object_add(o, "removed", json_object_new_boolean(removed));
        if (error)
                json_object_object_add(o, "error", json_object_new_string(error));
        json_object_array_add(a, o);
}

/* One plan of @v at @now: the snapshots in catalogue order in @ret_snaps
 * (n of them), the decisions in @ret_out.  0 or -errno. */
static int plan_make(struct vol *v, const struct cleanup_policy *p, int64_t now, struct snap ***ret_snaps,
                     struct cleanup_decision **ret_out, size_t *ret_n)
{
        struct cleanup_snap *cs;
        struct cleanup_decision *out;
        struct snap **ss;
        size_t n = 0, i = 0;
        int r;

        for (struct snap *s = v->snaps; s; s = s->next)
                n++;
        cs = calloc(n ? n : 1, sizeof(*cs));
        out = calloc(n ? n : 1, sizeof(*out));
        ss = calloc(n ? n : 1, sizeof(*ss));
        if (!cs || !out || !ss) {
                free(cs);
                free(out);
                free(ss);
                return -ENOMEM;
        }
        for (struct snap *s = v->snaps; s; s = s->next, i++) {
                struct snap *pre = s->type == SNAP_POST ? snap_find_number(v, s->pre_number) : NULL;
                ss[i] = s;
                cs[i] = (struct cleanup_snap){
                        .number = s->number,
                        .created = local_of(s->created),
                        .cls = s->cleanup,
                        .kind = s->type,
                        .pre_number = s->pre_number,
                        .important = snap_important(s),
                        .busy = snap_busy(v, s) != NULL,
                        .empty_pair = pre && pair_empty(v, pre, s),
                };
        }
        r = cleanup_plan(cs, n, p, local_of(now), out);
        free(cs);
        if (r < 0) {
                free(out);
                free(ss);
                return r;
        }
        *ret_snaps = ss;
        *ret_out = out;
        *ret_n = n;
        return 0;
}

int schedule_cleanup(struct vol *v, int64_t now, bool dry_run, const char *by, json_object *report)
{
        struct cleanup_policy buf, p = *schedule_policy(v, &buf);
        struct cleanup_decision *out;
        struct snap **ss;
        size_t n;
        unsigned removed = 0;
        int r, pct;

        r = plan_make(v, &p, now, &ss, &out, &n);
        if (r < 0)
                return r;
        /* oldest first: ss is in catalogue order, the order they were taken */
        for (size_t i = 0; i < n; i++) {
                struct failure f = {};
                struct snap *s = ss[i];
                char full[NAME_MAX_LEN * 2 + 2], why[200];

                /* the plan saw it busy already (the same hold of the lock);
                 * rm's own check, kept: a removal under a reader is the
                 * one mistake that must never happen */
                if (out[i].verdict == CLEANUP_REMOVE && snap_busy(v, s)) {
                        report_add(report, s, "kept: busy", NULL, false, snap_busy(v, s));
                        continue;
                }
                if (out[i].verdict != CLEANUP_REMOVE) {
                        const char *busy = snap_busy(v, s);
                        if (busy && strcmp(out[i].why, "kept: busy") == 0)
                                report_add(report, s, "kept: busy", NULL, false, busy);
                        else
                                report_add(report, s, out[i].why, &out[i], false, NULL);
                        continue;
                }
                snprintf(full, sizeof(full), "%s@%s", v->name, s->name);
                if (out[i].limit)
                        snprintf(why, sizeof(why), "%s (the %u. youngest, limit %u)", out[i].why, out[i].rank,
                                 out[i].limit);
                else
                        snprintf(why, sizeof(why), "%s", out[i].why);
                if (dry_run) {
                        report_add(report, s, out[i].why, &out[i], false, NULL);
                        continue;
                }
                /* the report first: snapshot_remove frees s */
                report_add(report, s, out[i].why, &out[i], true, NULL);
                dlog(LOG_INFO_, "Cleanup (%s) removes snapshot %s, number %" PRIu64 ": %s", by, full, s->number, why);
                if (snapshot_remove(v, s, &f) < 0) {
                        json_object *last = json_object_array_get_idx(report, json_object_array_length(report) - 1);
                        json_object_object_add(last, "removed", json_object_new_boolean(false));
                        json_object_object_add(last, "error", json_object_new_string(f.msg));
                        dlog(LOG_WARN_, "Cleanup (%s) keeps snapshot %s: %s", by, full, f.msg);
                        continue;
                }
                removed++;
        }
        free(ss);
        free(out);

        /* --free-limit: short of space, the limits' minimum, and what goes
         * goes oldest first, one at a time, until there is room again
         * (snapper's FREE_LIMIT loop) */
        if (dry_run || !v->schedule.on || !v->schedule.free_limit)
                return (int)removed;
        p.space_short = true;
        while ((pct = free_percent()) >= 0 && (unsigned)pct < v->schedule.free_limit) {
                struct snap *gone = NULL;
                struct cleanup_decision *d = NULL;
                struct failure f = {};
                char full[NAME_MAX_LEN * 2 + 2];

                if (plan_make(v, &p, now, &ss, &out, &n) < 0)
                        break;
                for (size_t i = 0; i < n && !gone; i++)
                        if (out[i].verdict == CLEANUP_REMOVE)
                                gone = ss[i], d = &out[i];
                /* the limits' minimum reached: the oldest that only a
                 * count keeps (not busy, young, a pair's half or of no
                 * class): cleanup-eligible, going oldest first */
                for (size_t i = 0; i < n && !gone; i++)
                        if (out[i].verdict == CLEANUP_KEEP && out[i].kept_as && ss[i]->type == SNAP_SINGLE)
                                gone = ss[i], d = &out[i];
                if (gone) {
                        char why[120];
                        snprintf(full, sizeof(full), "%s@%s", v->name, gone->name);
                        snprintf(why, sizeof(why), "removed: free space %d%% under the free limit %u%%", pct,
                                 v->schedule.free_limit);
                        report_add(report, gone, why, NULL, true, NULL);
                        dlog(LOG_INFO_, "Cleanup (%s) removes snapshot %s, number %" PRIu64 ": the free space of "
                             "%s (%d %%) is under the free limit (%u %%); the rules said \"%s\"", by, full,
                             gone->number, settings.state_dir, pct, v->schedule.free_limit, d->why);
                        if (snapshot_remove(v, gone, &f) < 0) {
                                json_object *last = json_object_array_get_idx(report,
                                                                              json_object_array_length(report) - 1);
                                json_object_object_add(last, "removed", json_object_new_boolean(false));
                                json_object_object_add(last, "error", json_object_new_string(f.msg));
                                dlog(LOG_WARN_, "Cleanup (%s) keeps snapshot %s: %s", by, full, f.msg);
                                gone = NULL;
                        } else {
                                removed++;
                        }
                }
                free(ss);
                free(out);
                if (!gone)
                        break;
        }
        return (int)removed;
}

/* --- the clock ------------------------------------------------------------------ */

#define CLOCK_TICK_MS_DEFAULT 60000

static pthread_t tid;
static bool running;
static int wake_fd = -1;
static int64_t clock_seen; /* the wall clock of the last round done (__atomic) */
static uint64_t clock_rounds; /* rounds done (__atomic) */

/* in memory, by volume uuid: the hour a timeline snapshot was last tried and
 * the hour the cleanup last ran, so each happens once an hour */
struct clock_mark {
        char uuid[UUID_LEN + 1];
        unsigned long changes; /* the schedule's, when these were set */
        int64_t tried_hour, cleaned_hour;
        struct clock_mark *next;
};
static struct clock_mark *marks; /* the clock thread's alone */

static struct clock_mark *mark_of(const struct vol *v)
{
        struct clock_mark *m;

        for (m = marks; m; m = m->next)
                if (strcmp(m->uuid, v->uuid) == 0)
                        return m;
        m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        snprintf(m->uuid, sizeof(m->uuid), "%s", v->uuid);
        m->tried_hour = m->cleaned_hour = INT64_MIN;
        m->next = marks;
        marks = m;
        return m;
}

bool schedule_timeline(const struct schedule *sc)
{
        const struct cleanup_policy *p = &sc->policy;

        return sc->on && (p->hourly.max || p->daily.max || p->weekly.max || p->monthly.max || p->quarterly.max ||
                          p->yearly.max);
}

static const struct snap *newest_timeline(const struct vol *v)
{
        const struct snap *last = NULL;

        for (const struct snap *s = v->snaps; s; s = s->next)
                if (s->cleanup == CLEANUP_TIMELINE && (!last || s->number > last->number))
                        last = s;
        return last;
}

/* the name of a timeline snapshot taken at @now: its UTC time, and when
 * that is taken (a snapshot of the same second), ".N" with its number */
static void timeline_name(const struct vol *v, int64_t now, char *buf, size_t len)
{
        time_t t = (time_t)now;
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(buf, len, "%Y%m%dT%H%M%SZ", &tm);
        if (snap_find(v, buf)) {
                size_t n = strlen(buf);
                snprintf(buf + n, len - n, ".%" PRIu64, v->next_number);
        }
}

struct job {
        char volume[NAME_MAX_LEN + 1];
        char name[NAME_MAX_LEN + 1]; /* a timeline snapshot to take, or "" */
        bool cleanup;
};

static void clock_request(const char *op, json_object *args)
{
        struct peer root = { .pid = getpid(), .uid = 0, .gid = 0, .admin = true, .fd = -1 };
        struct failure f = {};
        json_object *res = NULL;
        const char *vol = json_object_get_string(json_object_object_get(args, "volume"));
        char what[NAME_MAX_LEN * 2 + 2];

        snprintf(what, sizeof(what), "%s", vol ? vol : "?");
        handle_request(op, args, &root, &res, &f);
        if (f.err)
                dlog(LOG_WARN_, "Schedule of %s: the %s failed: %s", what, strcmp(op, "snap") ? "cleanup" :
                                                                                 "timeline snapshot", f.msg);
        json_object_put(res);
        json_object_put(args);
}

static void clock_round(void)
{
        struct job *jobs = NULL;
        size_t n = 0, cap = 0;
        int64_t now;

        pthread_mutex_lock(&catalogue.lock);
        if (catalogue.stopping) {
                pthread_mutex_unlock(&catalogue.lock);
                return;
        }
        now = (int64_t)time(NULL);
        for (struct vol *v = catalogue.vols; v; v = v->next) {
                struct clock_mark *m;
                const struct snap *last;
                int64_t hour = hour_of(now);
                struct job j = {};

                if (!v->schedule.on || !(m = mark_of(v)))
                        continue;
                if (m->changes != v->schedule.changes) { /* a new schedule: at once */
                        m->changes = v->schedule.changes;
                        m->tried_hour = m->cleaned_hour = INT64_MIN;
                }
                last = newest_timeline(v);
                if (schedule_timeline(&v->schedule) && m->tried_hour != hour && (!last || hour_of(last->created) < hour)) {
                        m->tried_hour = hour;
                        timeline_name(v, now, j.name, sizeof(j.name));
                        j.cleanup = true;
                }
                if (m->cleaned_hour != hour) {
                        m->cleaned_hour = hour;
                        j.cleanup = true;
                }
                if (!j.cleanup)
                        continue;
                snprintf(j.volume, sizeof(j.volume), "%s", v->name);
                if (n == cap) {
                        struct job *x = reallocarray(jobs, cap ? cap * 2 : 8, sizeof(*jobs));
                        if (!x)
                                break;
                        jobs = x;
                        cap = cap ? cap * 2 : 8;
                }
                jobs[n++] = j;
        }
        pthread_mutex_unlock(&catalogue.lock);

        for (size_t i = 0; i < n; i++) {
                json_object *a;
                if (jobs[i].name[0]) {
                        a = json_object_new_object();
                        json_object_object_add(a, "volume", json_object_new_string(jobs[i].volume));
                        json_object_object_add(a, "name", json_object_new_string(jobs[i].name));
                        json_object_object_add(a, "cleanup", json_object_new_string("timeline"));
                        json_object_object_add(a, "description", json_object_new_string("timeline"));
                        clock_request("snap", a);
                }
                a = json_object_new_object();
                json_object_object_add(a, "volume", json_object_new_string(jobs[i].volume));
                clock_request("cleanup", a);
        }
        free(jobs);
        __atomic_store_n(&clock_seen, now, __ATOMIC_RELAXED);
        __atomic_add_fetch(&clock_rounds, 1, __ATOMIC_RELEASE);
}

uint64_t schedule_clock_rounds(void)
{
        return __atomic_load_n(&clock_rounds, __ATOMIC_ACQUIRE);
}

int64_t schedule_clock_seen(void)
{
        return __atomic_load_n(&clock_seen, __ATOMIC_RELAXED);
}

/* COWVOLD_CLOCK_TICK_MS: a shorter wake for tests (1 to 60000 ms) */
static int clock_tick(void)
{
        const char *e = getenv("COWVOLD_CLOCK_TICK_MS");
        char *end;
        long ms;

        if (!e)
                return CLOCK_TICK_MS_DEFAULT;
        ms = strtol(e, &end, 10);
        if (*end || ms < 1 || ms > CLOCK_TICK_MS_DEFAULT)
                return CLOCK_TICK_MS_DEFAULT;
        return (int)ms;
}

static void *clock_main(void *arg)
{
        int tick = clock_tick();
        uint64_t n;

        (void)arg;
        for (;;) {
                struct pollfd pf = { .fd = wake_fd, .events = POLLIN };

                if (__atomic_load_n(&catalogue.stopping, __ATOMIC_RELAXED))
                        break;
                clock_round();
                if (poll(&pf, 1, tick) > 0 && (pf.revents & POLLIN))
                        (void)!read(wake_fd, &n, sizeof(n));
        }
        while (marks) {
                struct clock_mark *x = marks->next;
                free(marks);
                marks = x;
        }
        return NULL;
}

int schedule_start(void)
{
        int r;

        wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake_fd < 0)
                return -errno;
        r = -pthread_create(&tid, NULL, clock_main, NULL);
        if (r == 0)
                running = true;
        return r;
}

void schedule_wake(void)
{
        uint64_t one = 1;

        if (wake_fd >= 0)
                (void)!write(wake_fd, &one, sizeof(one));
}

void schedule_stop(void)
{
        if (!running)
                return;
        schedule_wake();
        pthread_join(tid, NULL);
        running = false;
        close(wake_fd);
        wake_fd = -1;
}
