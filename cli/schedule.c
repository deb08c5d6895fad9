/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvol cleanup and cowvol schedule: snapper's cleanup of a volume's
 * snapshots, now or by cowvold's clock.  Limits and durations are parsed
 * here (usage errors); the daemon checks their ranges again.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* --- cleanup ------------------------------------------------------------ */

struct cleanup_opts {
        bool dry_run, json;
};

static const struct cli_option cleanup_options[] = {
        { "dry-run", .kind = CLI_FLAG, .offset = offsetof(struct cleanup_opts, dry_run),
          .help = "say what would go, and remove nothing" },
        { "json", .kind = CLI_FLAG, .offset = offsetof(struct cleanup_opts, json),
          .help = "the daemon's answer, as it is: every snapshot's decision" },
        {},
};

static int check_volume_arg(const char *cmd, const char *arg)
{
        if (!*arg)
                return usage_error(cmd, "a volume's name cannot be empty");
        if (strchr(arg, '@'))
                return usage_error(cmd, "'%s' is a snapshot; give a volume", arg);
        return 0;
}

static int cleanup_run(const void *opts, char **pos)
{
        const struct cleanup_opts *o = opts;
        json_object *args = json_object_new_object(), *res, *a;
        int64_t removed = 0;
        unsigned going = 0;
        int r;

        json_object_object_add(args, "volume", json_object_new_string(pos[0]));
        if (o->dry_run)
                json_object_object_add(args, "dry_run", json_object_new_boolean(true));
        r = daemon_call("cleanup", args, -1, &res);
        if (r)
                return r;
        if (o->json) {
                r = print_json_result(res);
                json_object_put(res);
                return r;
        }
        result_int(res, "removed", &removed);
        if (json_object_object_get_ex(res, "snapshots", &a) && json_object_is_type(a, json_type_array))
                for (size_t i = 0; i < json_object_array_length(a); i++) {
                        json_object *s = json_object_array_get_idx(a, i), *x;
                        const char *why = result_string(s, "why"), *err = result_string(s, "error");
                        bool gone = json_object_object_get_ex(s, "removed", &x) && json_object_get_boolean(x);
                        int64_t num = 0;

                        result_int(s, "number", &num);
                        if (why && strncmp(why, "removed", 7) == 0) {
                                going++;
                                printf("%s %s@%s (number %" PRId64 "): %s%s%s\n",
                                       o->dry_run ? "Would remove" : gone ? "Removed" : "Kept",
                                       pos[0], result_string(s, "name") ? result_string(s, "name") : "?", num,
                                       why + 9, err ? "; not removed: " : "", err ? err : "");
                        }
                }
        if (!going)
                printf("Nothing to remove from %s.\n", pos[0]);
        else if (!o->dry_run)
                printf("%" PRId64 " snapshot%s removed.\n", removed, removed == 1 ? "" : "s");
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_cleanup = {
        .name = "cleanup", .args = "VOLUME", .check_arg = check_volume_arg, .run = cleanup_run,
        .options = cleanup_options, .opts_size = sizeof(struct cleanup_opts),
        .usage = "cleanup VOLUME [--dry-run] [--json]",
        .about = "Remove the snapshots of VOLUME that snapper's cleanup rules (number, timeline,\n"
                 "empty pre/post) remove now, with the volume's schedule (or snapper's defaults),\n"
                 "and say why each goes.\n",
};

/* --- schedule ----------------------------------------------------------- */

enum { S_HOURLY, S_DAILY, S_WEEKLY, S_MONTHLY, S_QUARTERLY, S_YEARLY, S_NUMBER, S_IMPORTANT, S_MIN_AGE,
       S_FREE_LIMIT, S_N };
/* the protocol's names, in the order of the enum */
static const char *const keys[S_N] = { "hourly", "daily",  "weekly",           "monthly", "quarterly",
                                       "yearly", "number", "number_important", "min_age", "free_limit" };

struct schedule_opts {
        const char *value[S_N]; /* NULL: not given */
        bool off, json;
};

#define LIMIT_MAX 100000

/* a count: digits only, 0 to LIMIT_MAX */
static int parse_count(const char *s, int64_t max, int64_t *ret)
{
        char *end;
        long long v;

        if (!*s || strspn(s, "0123456789") != strlen(s))
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

/* a duration: digits and one unit of s, m, h, d, w; seconds, at most
 * @max_days days (-ERANGE) */
int cli_parse_duration(const char *s, int64_t max_days, int64_t *ret)
{
        static const struct { char unit; int64_t secs; } units[] = {
                { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 }, { 'w', 604800 },
        };
        size_t n = strlen(s), digits = strspn(s, "0123456789");
        int64_t v;

        if (n < 2 || digits != n - 1)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                if (s[n - 1] == units[i].unit) {
                        char num[32];
                        if (digits >= sizeof(num))
                                return -ERANGE;
                        memcpy(num, s, digits);
                        num[digits] = 0;
                        if (parse_count(num, max_days * 86400 / units[i].secs, &v) < 0)
                                return -ERANGE;
                        *ret = v * units[i].secs;
                        return 0;
                }
        return -EINVAL;
}

static int check_limit(const char *cmd, const struct cli_option *opt, const void *value)
{
        const char *s = *(const char *const *)value;
        int64_t v;
        int r = parse_count(s, LIMIT_MAX, &v);

        if (r == -ERANGE)
                return usage_error(cmd, "--%s '%s' is out of range (0 to %d)", opt->name, s, LIMIT_MAX);
        if (r < 0)
                return usage_error(cmd, "--%s '%s' is not a count (0 or more)", opt->name, s);
        return 0;
}

static int check_percent(const char *cmd, const struct cli_option *opt, const void *value)
{
        const char *s = *(const char *const *)value;
        int64_t v;

        if (parse_count(s, 99, &v) < 0)
                return usage_error(cmd, "--%s '%s' is not a percentage from 0 to 99", opt->name, s);
        return 0;
}

static int check_duration(const char *cmd, const struct cli_option *opt, const void *value)
{
        const char *s = *(const char *const *)value;
        int64_t v;
        int r = cli_parse_duration(s, 366, &v);

        if (r == -ERANGE)
                return usage_error(cmd, "--%s '%s' is out of range (at most 366 days)", opt->name, s);
        if (r < 0)
                return usage_error(cmd, "--%s '%s' is not a duration: a number and one unit of s, m, h, d, w "
                                   "(e.g. 1h, 30m)", opt->name, s);
        return 0;
}

#define LIMIT(key, field, what)                                                                       \
        { key, .kind = CLI_STRING, .offset = offsetof(struct schedule_opts, value[field]),            \
          .check = check_limit, .arg = "N", .help = what }

static const struct cli_option schedule_options[] = {
        LIMIT("hourly", S_HOURLY, "timeline: keep the first of each of the last N hours"),
        LIMIT("daily", S_DAILY, "timeline: ... of the last N days"),
        LIMIT("weekly", S_WEEKLY, "timeline: ... of the last N ISO weeks"),
        LIMIT("monthly", S_MONTHLY, "timeline: ... of the last N months"),
        LIMIT("quarterly", S_QUARTERLY, "timeline: ... of the last N quarters"),
        LIMIT("yearly", S_YEARLY, "timeline: ... of the last N years"),
        LIMIT("number", S_NUMBER, "number: keep the youngest N snapshots of class number"),
        LIMIT("number-important", S_IMPORTANT, "number: and the youngest N with important=yes"),
        { "min-age", .kind = CLI_STRING, .offset = offsetof(struct schedule_opts, value[S_MIN_AGE]),
          .check = check_duration, .arg = "DURATION",
          .help = "never remove a snapshot younger than this (s, m, h, d,\nw; default 1h)" },
        { "free-limit", .kind = CLI_STRING, .offset = offsetof(struct schedule_opts, value[S_FREE_LIMIT]),
          .check = check_percent, .arg = "PERCENT",
          .help = "under this much free space in the state folder's\nfilesystem, remove what cleanup may, oldest "
                  "first (0: off)" },
        { "off", .kind = CLI_FLAG, .offset = offsetof(struct schedule_opts, off),
          .help = "stop the schedule (the snapshots stay)" },
        { "json", .kind = CLI_FLAG, .offset = offsetof(struct schedule_opts, json),
          .help = "the daemon's answer, as it is" },
        {},
};

static void duration_text(int64_t s, char *buf, size_t len)
{
        if (s && s % 604800 == 0)
                snprintf(buf, len, "%" PRId64 "w", s / 604800);
        else if (s && s % 86400 == 0)
                snprintf(buf, len, "%" PRId64 "d", s / 86400);
        else if (s && s % 3600 == 0)
                snprintf(buf, len, "%" PRId64 "h", s / 3600);
        else if (s && s % 60 == 0)
                snprintf(buf, len, "%" PRId64 "m", s / 60);
        else
                snprintf(buf, len, "%" PRId64 "s", s);
}

static void schedule_print(json_object *res)
{
        json_object *a, *x;

        if (!json_object_object_get_ex(res, "schedules", &a) || !json_object_is_type(a, json_type_array))
                return;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *s = json_object_array_get_idx(a, i);
                const char *vol = result_string(s, "volume");
                int64_t v[S_N] = {};
                char age[32], limit[32];

                if (!json_object_object_get_ex(s, "on", &x) || !json_object_get_boolean(x)) {
                        printf("%s: no schedule\n", vol ? vol : "?");
                        continue;
                }
                for (int k = 0; k < S_N; k++)
                        result_int(s, keys[k], &v[k]);
                duration_text(v[S_MIN_AGE], age, sizeof(age));
                if (v[S_FREE_LIMIT])
                        snprintf(limit, sizeof(limit), "%" PRId64 "%%", v[S_FREE_LIMIT]);
                else
                        snprintf(limit, sizeof(limit), "off");
                printf("%s: timeline snapshots %s; keep hourly %" PRId64 ", daily %" PRId64 ", weekly %" PRId64
                       ", monthly %" PRId64 ", quarterly %" PRId64 ", yearly %" PRId64 "; number %" PRId64
                       ", important %" PRId64 "; min-age %s; free-limit %s\n",
                       vol ? vol : "?",
                       json_object_object_get_ex(s, "timeline", &x) && json_object_get_boolean(x) ? "every hour" : "off",
                       v[S_HOURLY], v[S_DAILY], v[S_WEEKLY], v[S_MONTHLY], v[S_QUARTERLY], v[S_YEARLY], v[S_NUMBER],
                       v[S_IMPORTANT], age, limit);
        }
}

static int schedule_run(const void *opts, char **pos)
{
        const struct schedule_opts *o = opts;
        json_object *args = json_object_new_object(), *vols = json_object_new_array(), *res;
        bool given = false;
        int r;

        for (char **p = pos; *p; p++)
                json_object_array_add(vols, json_object_new_string(*p));
        json_object_object_add(args, "volumes", vols);
        for (int k = 0; k < S_N; k++) {
                int64_t v = 0;
                if (!o->value[k])
                        continue;
                given = true;
                if (k == S_MIN_AGE)
                        (void)cli_parse_duration(o->value[k], 366, &v); /* checked */
                else
                        (void)parse_count(o->value[k], LIMIT_MAX, &v);
                json_object_object_add(args, keys[k], json_object_new_int64(v));
        }
        if (o->off && given) {
                json_object_put(args);
                return usage_error(cmd_schedule.name, "give --off alone: it stops the schedule");
        }
        if (o->off)
                json_object_object_add(args, "off", json_object_new_boolean(true));
        r = daemon_call("schedule", args, -1, &res);
        if (r)
                return r;
        if (o->json)
                r = print_json_result(res);
        else
                schedule_print(res);
        json_object_put(res);
        return r;
}

const struct cli_command cmd_schedule = {
        .name = "schedule", .args = "VOLUME...", .check_arg = check_volume_arg, .run = schedule_run,
        .options = schedule_options, .opts_size = sizeof(struct schedule_opts),
        .usage = "schedule VOLUME... [--hourly N] [--daily N] [--weekly N] [--monthly N] [--quarterly N]\n"
                 "schedule VOLUME... [--yearly N] [--number N] [--number-important N] [--min-age DURATION]\n"
                 "schedule VOLUME... [--free-limit PERCENT]\n"
                 "schedule VOLUME... --off\n"
                 "schedule VOLUME [--json]",
        .about = "Set, show or stop the schedule of VOLUME: cowvold takes a timeline snapshot at\n"
                 "the start of every hour (while an hourly..yearly limit is above 0) and runs the\n"
                 "cleanup after it and every hour.  Options not given keep the schedule's values,\n"
                 "or snapper's defaults for a new one (hourly 10, daily 10, weekly 0, monthly 10,\n"
                 "quarterly 0, yearly 10, number 50, number-important 10, min-age 1h).\n"
                 "Without options it shows the schedule.\n",
};
