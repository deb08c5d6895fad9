/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The cleanup rules (daemon/cleanup.c, snapper's number, timeline and
 * empty-pre-post) on explicit UTC times: calendar edges, limits, ranges,
 * min-age, busy, pairs, and against a brute-force reference whose units
 * come from gmtime/strftime (%G-%V for ISO weeks). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../daemon/cleanup.h"

#define HOUR 3600
#define DAY 86400

static int64_t utc(int y, int mo, int d, int h, int mi)
{
        struct tm tm = {
                .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi,
        };

        return (int64_t)timegm(&tm);
}

static struct cleanup_snap tl(uint64_t number, int64_t created)
{
        return (struct cleanup_snap){ .number = number, .created = created, .cls = CLEANUP_TIMELINE };
}

static struct cleanup_snap nb(uint64_t number, int64_t created)
{
        return (struct cleanup_snap){ .number = number, .created = created, .cls = CLEANUP_NUMBER };
}

/* a snapshot of no cleanup class */
static struct cleanup_snap nc(uint64_t number, int64_t created)
{
        return (struct cleanup_snap){ .number = number, .created = created };
}

static struct cleanup_limit lim(unsigned n)
{
        return (struct cleanup_limit){ n, n };
}

/* every cleanup on, every limit 0, min-ages of an hour */
static struct cleanup_policy zero_policy(void)
{
        return (struct cleanup_policy){
                .number_cleanup = true,
                .timeline_cleanup = true,
                .empty_pre_post_cleanup = true,
                .number_min_age = HOUR,
                .timeline_min_age = HOUR,
                .empty_pre_post_min_age = HOUR,
        };
}

/* n timeline snapshots, numbered 1.., from start every step seconds */
static struct cleanup_snap *series(int64_t start, int64_t step, size_t n)
{
        struct cleanup_snap *s = calloc(n, sizeof(*s));

        cr_assert(s);
        for (size_t i = 0; i < n; i++)
                s[i] = tl(i + 1, start + (int64_t)i * step);
        return s;
}

static struct cleanup_decision *plan(const struct cleanup_snap *s, size_t n,
                                     const struct cleanup_policy *p, int64_t now)
{
        struct cleanup_decision *d = calloc(n ? n : 1, sizeof(*d));

        cr_assert(d);
        cr_assert_eq(cleanup_plan(s, n, p, now, d), 0);
        for (size_t i = 0; i < n; i++) {
                const char *want = d[i].verdict == CLEANUP_KEEP ? "kept: " : "removed: ";

                cr_assert(d[i].why, "snapshot %zu has no reason", i);
                cr_assert_eq(strncmp(d[i].why, want, strlen(want)), 0,
                             "snapshot %zu: verdict %d but \"%s\"", i, d[i].verdict, d[i].why);
        }
        return d;
}

static bool in(int64_t t, const int64_t *set, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (set[i] == t)
                        return true;
        return false;
}

static void fmt(int64_t t, char buf[32])
{
        time_t tt = (time_t)t;
        struct tm tm;

        gmtime_r(&tt, &tm);
        strftime(buf, 32, "%Y-%m-%d %H:%M %a", &tm);
}

/* exactly the snapshots created at kept[] stay */
static void expect_kept(const struct cleanup_snap *s, const struct cleanup_decision *d, size_t n,
                        const int64_t *kept, size_t nkept)
{
        size_t count = 0;

        for (size_t i = 0; i < n; i++) {
                bool want = in(s[i].created, kept, nkept);
                char buf[32];

                fmt(s[i].created, buf);
                cr_assert_eq(d[i].verdict == CLEANUP_KEEP, want, "%s: %s, expected %s", buf, d[i].why,
                             want ? "kept" : "removed");
                count += d[i].verdict == CLEANUP_KEEP;
        }
        cr_assert_eq(count, nkept);
}

static size_t find_at(const struct cleanup_snap *s, size_t n, int64_t t)
{
        for (size_t i = 0; i < n; i++)
                if (s[i].created == t)
                        return i;
        cr_assert_fail("no snapshot at %lld", (long long)t);
        return 0;
}

/* --- calendar edges -------------------------------------------------------- */

/* ISO weeks run Monday to Sunday across a year's end: 2026-12-28 (Mon) to
 * 2027-01-03 (Sun) is one week (2026-W53), 2027-01-04 starts 2027-W01 */
Test(cleanup, weeks_across_2026_2027)
{
        size_t n = 14;
        struct cleanup_snap *s = series(utc(2026, 12, 24, 12, 0), DAY, n); /* Thu .. Wed */
        struct cleanup_policy p = zero_policy();
        int64_t now = utc(2027, 1, 10, 0, 0);
        struct cleanup_decision *d;

        p.weekly = lim(3);
        d = plan(s, n, &p, now);
        const int64_t three[] = { utc(2027, 1, 4, 12, 0), utc(2026, 12, 28, 12, 0),
                                  utc(2026, 12, 24, 12, 0) };
        expect_kept(s, d, n, three, 3);
        cr_assert_str_eq(d[find_at(s, n, utc(2026, 12, 28, 12, 0))].why, "kept: first of its ISO week");
        cr_assert_eq(d[find_at(s, n, utc(2026, 12, 28, 12, 0))].rank, 2);
        free(d);

        p.weekly = lim(2);
        d = plan(s, n, &p, now);
        expect_kept(s, d, n, three, 2);
        free(d);
        free(s);
}

/* 2020 has an ISO week 53 (2020-12-28 .. 2021-01-03); the new year starts
 * a new year and day but not a new week */
Test(cleanup, iso_week_53_of_2020)
{
        size_t n = 11;
        struct cleanup_snap *s = series(utc(2020, 12, 26, 6, 0), DAY, n); /* Sat .. Tue */
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        p.weekly = lim(10);
        d = plan(s, n, &p, utc(2021, 2, 1, 0, 0));
        const int64_t weeks[] = { utc(2020, 12, 26, 6, 0), utc(2020, 12, 28, 6, 0),
                                  utc(2021, 1, 4, 6, 0) };
        expect_kept(s, d, n, weeks, 3);
        free(d);
        free(s);

        /* hourly over midnight of 2020-12-31 (Thu) */
        n = 9;
        s = series(utc(2020, 12, 31, 20, 0), HOUR, n);
        p = zero_policy();
        p.daily = lim(5);
        p.weekly = lim(5);
        p.yearly = lim(5);
        d = plan(s, n, &p, utc(2021, 2, 1, 0, 0));
        const int64_t two[] = { utc(2020, 12, 31, 20, 0), utc(2021, 1, 1, 0, 0) };
        expect_kept(s, d, n, two, 2);
        cr_assert_eq(d[0].kept_as, CLEANUP_KEPT_DAILY | CLEANUP_KEPT_WEEKLY | CLEANUP_KEPT_YEARLY);
        cr_assert_eq(d[4].kept_as, CLEANUP_KEPT_DAILY | CLEANUP_KEPT_YEARLY,
                     "2021-01-01 00:00 is first of its day and year, not of its week");
        free(d);
        free(s);
}

/* months end on their last day, whatever its number */
Test(cleanup, month_ends)
{
        size_t n = 9;
        struct cleanup_snap *s = series(utc(2027, 1, 31, 20, 0), HOUR, n);
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        p.monthly = lim(5);
        d = plan(s, n, &p, utc(2027, 3, 1, 0, 0));
        const int64_t two[] = { utc(2027, 1, 31, 20, 0), utc(2027, 2, 1, 0, 0) };
        expect_kept(s, d, n, two, 2);
        free(d);
        free(s);

        /* a daily snapshot 2028-01-15 .. 2028-04-15 (2028 is a leap year) */
        n = (size_t)((utc(2028, 4, 15, 6, 0) - utc(2028, 1, 15, 6, 0)) / DAY + 1);
        s = series(utc(2028, 1, 15, 6, 0), DAY, n);
        p.monthly = lim(10);
        d = plan(s, n, &p, utc(2028, 6, 1, 0, 0));
        const int64_t months[] = { utc(2028, 1, 15, 6, 0), utc(2028, 2, 1, 6, 0), utc(2028, 3, 1, 6, 0),
                                   utc(2028, 4, 1, 6, 0) };
        expect_kept(s, d, n, months, 4);
        free(d);
        free(s);
}

Test(cleanup, leap_day_2028)
{
        size_t n = 29; /* 2028-02-28 22:00 .. 2028-03-01 02:00 */
        struct cleanup_snap *s = series(utc(2028, 2, 28, 22, 0), HOUR, n);
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        p.daily = lim(10);
        p.monthly = lim(10);
        d = plan(s, n, &p, utc(2028, 4, 1, 0, 0));
        const int64_t kept[] = { utc(2028, 2, 28, 22, 0), utc(2028, 2, 29, 0, 0), utc(2028, 3, 1, 0, 0) };
        expect_kept(s, d, n, kept, 3);
        cr_assert_eq(d[find_at(s, n, utc(2028, 2, 29, 0, 0))].kept_as, CLEANUP_KEPT_DAILY);
        cr_assert_eq(d[find_at(s, n, utc(2028, 3, 1, 0, 0))].kept_as,
                     CLEANUP_KEPT_DAILY | CLEANUP_KEPT_MONTHLY);
        cr_assert_eq(d[0].kept_as, CLEANUP_KEPT_DAILY | CLEANUP_KEPT_MONTHLY);
        free(d);
        free(s);
}

/* quarters: months 1-3, 4-6, 7-9, 10-12; years: calendar years */
Test(cleanup, quarters_and_years)
{
        const int64_t starts[] = { utc(2026, 3, 30, 12, 0), utc(2026, 6, 29, 12, 0),
                                   utc(2026, 9, 29, 12, 0), utc(2026, 12, 30, 12, 0) };
        struct cleanup_snap s[16];
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;
        size_t n = 0;

        for (size_t i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++, n++)
                        s[n] = tl(n + 1, starts[i] + j * DAY);
        p.quarterly = lim(10);
        d = plan(s, n, &p, utc(2027, 6, 1, 0, 0));
        const int64_t quarters[] = { utc(2026, 3, 30, 12, 0), utc(2026, 4, 1, 12, 0), utc(2026, 7, 1, 12, 0),
                                     utc(2026, 10, 1, 12, 0), utc(2027, 1, 1, 12, 0) };
        expect_kept(s, d, n, quarters, 5);
        free(d);

        p = zero_policy();
        p.yearly = lim(10);
        d = plan(s, n, &p, utc(2027, 6, 1, 0, 0));
        const int64_t years[] = { utc(2026, 3, 30, 12, 0), utc(2027, 1, 1, 12, 0) };
        expect_kept(s, d, n, years, 2);
        free(d);
}

/* --- limits ---------------------------------------------------------------- */

Test(cleanup, limits_zero_one_large)
{
        size_t n = 72;
        struct cleanup_snap *s = series(utc(2026, 5, 4, 0, 0), HOUR, n);
        int64_t now = utc(2026, 5, 8, 0, 0);
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        d = plan(s, n, &p, now);
        expect_kept(s, d, n, NULL, 0);
        for (size_t i = 0; i < n; i++)
                cr_assert_str_eq(d[i].why, "removed: timeline, beyond the limits");
        free(d);

        p.hourly = lim(1);
        d = plan(s, n, &p, now);
        const int64_t newest[] = { s[n - 1].created };
        expect_kept(s, d, n, newest, 1);
        free(d);

        p.hourly = lim(100000);
        d = plan(s, n, &p, now);
        cr_assert_eq(d[0].rank, 72);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(d[i].verdict, CLEANUP_KEEP);
        free(d);
        free(s);

        /* two an hour: only the :00 ones are first of their hour */
        s = series(utc(2026, 5, 4, 0, 0), HOUR / 2, n);
        d = plan(s, n, &p, now);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(d[i].verdict, i % 2 == 0 ? CLEANUP_KEEP : CLEANUP_REMOVE, "%zu", i);
        free(d);
        free(s);
}

Test(cleanup, ranges_and_space_short)
{
        size_t n = 10;
        struct cleanup_snap *s = series(utc(2026, 5, 4, 0, 0), HOUR, n);
        struct cleanup_snap num[10];
        int64_t now = utc(2026, 5, 8, 0, 0);
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;
        size_t kept;

        p.hourly = (struct cleanup_limit){ 2, 5 };
        for (int pass = 0; pass < 2; pass++) {
                p.space_short = pass;
                d = plan(s, n, &p, now);
                kept = 0;
                for (size_t i = 0; i < n; i++)
                        kept += d[i].verdict == CLEANUP_KEEP;
                cr_assert_eq(kept, pass ? 2 : 5);
                cr_assert_eq(d[n - 1].limit, pass ? 2 : 5);
                free(d);
        }

        for (size_t i = 0; i < 10; i++)
                num[i] = nb(i + 1, s[i].created);
        p = zero_policy();
        p.number = (struct cleanup_limit){ 3, 6 };
        for (int pass = 0; pass < 2; pass++) {
                p.space_short = pass;
                d = plan(num, 10, &p, now);
                for (size_t i = 0; i < 10; i++)
                        cr_assert_eq(d[i].verdict, i >= (pass ? 7u : 4u) ? CLEANUP_KEEP : CLEANUP_REMOVE);
                free(d);
        }
        free(s);
}

/* --- what stays whatever the limits --------------------------------------- */

Test(cleanup, min_age)
{
        int64_t now = utc(2026, 5, 8, 12, 0);
        struct cleanup_snap s[] = {
                tl(1, now - 2 * HOUR), tl(2, now - HOUR), tl(3, now - HOUR + 1), tl(4, now + 60),
                nb(5, now - 200), nb(6, now - 50),
        };
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        p.number_min_age = 100;
        d = plan(s, 6, &p, now);
        cr_assert_eq(d[0].verdict, CLEANUP_REMOVE);
        cr_assert_eq(d[1].verdict, CLEANUP_REMOVE, "exactly min-age old goes (snapper: younger stays)");
        cr_assert_str_eq(d[2].why, "kept: younger than min-age");
        cr_assert_str_eq(d[3].why, "kept: younger than min-age");
        cr_assert_eq(d[4].verdict, CLEANUP_REMOVE, "number has its own min-age");
        cr_assert_str_eq(d[5].why, "kept: younger than min-age");
        free(d);

        /* min-age 0: everything past goes, one made this second too */
        p.timeline_min_age = 0;
        d = plan(s, 4, &p, now);
        cr_assert_eq(d[2].verdict, CLEANUP_REMOVE);
        cr_assert_eq(d[3].verdict, CLEANUP_KEEP);
        free(d);
}

Test(cleanup, busy_stays)
{
        int64_t now = utc(2026, 5, 8, 12, 0);
        struct cleanup_snap s[] = { tl(1, now - 9 * HOUR), tl(2, now - 8 * HOUR), tl(3, now - 10),
                                    nb(4, now - DAY) };
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        s[1].busy = true;
        s[2].busy = true;
        s[3].busy = true;
        d = plan(s, 4, &p, now);
        cr_assert_eq(d[0].verdict, CLEANUP_REMOVE);
        cr_assert_str_eq(d[1].why, "kept: busy");
        cr_assert_str_eq(d[2].why, "kept: busy", "busy is filtered before min-age");
        cr_assert_str_eq(d[3].why, "kept: busy");
        free(d);
}

/* --- number ---------------------------------------------------------------- */

Test(cleanup, number_and_important)
{
        int64_t now = utc(2026, 5, 8, 12, 0);
        struct cleanup_snap s[10];
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        for (size_t i = 0; i < 10; i++) {
                s[i] = nb(i + 1, now - DAY + (int64_t)i * 60);
                s[i].important = i + 1 == 10 || i + 1 == 6 || i + 1 == 4 || i + 1 == 2;
        }
        p.number = lim(3);
        p.number_important = lim(2);
        d = plan(s, 10, &p, now);
        for (size_t i = 0; i < 10; i++) {
                unsigned num = i + 1;
                bool keep = num >= 8 || num == 6;

                cr_assert_eq(d[i].verdict, keep ? CLEANUP_KEEP : CLEANUP_REMOVE, "#%u: %s", num, d[i].why);
        }
        cr_assert_eq(d[9].kept_as, CLEANUP_KEPT_NUMBER | CLEANUP_KEPT_IMPORTANT,
                     "an important one among the youngest counts in both");
        cr_assert_eq(d[8].kept_as, CLEANUP_KEPT_NUMBER);
        cr_assert_str_eq(d[5].why, "kept: number, one of the youngest important");
        cr_assert_eq(d[5].rank, 2);
        cr_assert_eq(d[5].limit, 2);
        cr_assert_str_eq(d[7].why, "kept: number, one of the youngest");
        cr_assert_eq(d[7].rank, 3);
        cr_assert_str_eq(d[6].why, "removed: number, beyond the limits");
        cr_assert_eq(d[6].rank, 4);
        cr_assert_eq(d[6].limit, 3);
        free(d);

        /* youngest is by number, not by creation time */
        struct cleanup_snap t[] = { nb(1, now - DAY), nb(2, now - 2 * DAY) };
        p.number = lim(1);
        p.number_important = lim(0);
        d = plan(t, 2, &p, now);
        cr_assert_eq(d[0].verdict, CLEANUP_REMOVE);
        cr_assert_eq(d[1].verdict, CLEANUP_KEEP);
        free(d);

        /* number off: number snapshots stay */
        p.number_cleanup = false;
        d = plan(s, 10, &p, now);
        for (size_t i = 0; i < 10; i++)
                cr_assert_str_eq(d[i].why, "kept: its cleanup is off");
        free(d);
}

/* --- pairs ----------------------------------------------------------------- */

static struct cleanup_snap pre(struct cleanup_snap s)
{
        s.kind = SNAP_PRE;
        return s;
}

static struct cleanup_snap post(struct cleanup_snap s, uint64_t pre_number)
{
        s.kind = SNAP_POST;
        s.pre_number = pre_number;
        return s;
}

Test(cleanup, pre_post_go_together)
{
        int64_t now = utc(2026, 5, 8, 12, 0), old = now - 2 * DAY;
        struct cleanup_snap s[] = {
                pre(nb(1, old)), post(nb(2, old + 60), 1),              /* both beyond: both go */
                pre(nb(3, old + 120)), post(nb(20, now - 10 * HOUR), 3), /* post kept: pre stays */
                pre(nb(4, old + 180)), post(nb(5, old + 240), 4),       /* post busy: pre stays */
                pre(nb(6, old + 300)), post(nb(22, now - 60), 6),       /* post young: pre stays */
                post(nb(7, old + 360), 99),                             /* its pre is gone: goes */
                pre(nb(8, old + 420)),                                  /* no post: goes */
                pre(nb(9, old + 480)), post(tl(10, old + 540), 9),      /* two classes: both stay */
                (struct cleanup_snap){ .number = 11, .created = old + 600 }, /* single, no class */
                post(nb(12, old + 660), 11),                            /* its "pre" stays: stays */
                /* a pre's post is the lowest numbered one: #14, young, keeps
                 * #13; #15 names a pre that is a candidate: goes alone */
                pre(nb(13, old + 720)), post(nb(14, now - 60), 13), post(nb(15, old + 840), 13),
        };
        size_t n = sizeof(s) / sizeof(s[0]);
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        s[5].busy = true;
        p.number = lim(2); /* #22 and #20 */
        d = plan(s, n, &p, now);
        for (size_t i = 0; i < n; i++) {
                uint64_t num = s[i].number;
                bool gone = num == 1 || num == 2 || num == 7 || num == 8 || num == 15;

                cr_assert_eq(d[i].verdict, gone ? CLEANUP_REMOVE : CLEANUP_KEEP, "#%llu: %s",
                             (unsigned long long)num, d[i].why);
        }
        cr_assert_str_eq(d[2].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[4].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[5].why, "kept: busy");
        cr_assert_str_eq(d[6].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[10].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[11].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[13].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[14].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[15].why, "kept: younger than min-age");
        free(d);
}

Test(cleanup, empty_pairs)
{
        int64_t now = utc(2026, 5, 8, 12, 0), old = now - DAY;
        struct cleanup_snap s[] = {
                pre(nc(1, old)),
                post(nc(2, old + 60), 1), /* empty: both go */
                pre(nc(3, old)),
                post(nc(4, now - 60), 3), /* post young */
                pre(nc(5, old)),
                post(nc(6, old), 5),      /* pre busy */
                pre(nc(7, old)),
                post(nc(8, old), 7),      /* not empty */
                pre(nb(9, old)), post(nb(10, old), 9),                     /* number, kept, empty */
        };
        size_t n = sizeof(s) / sizeof(s[0]);
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        s[1].empty_pair = s[3].empty_pair = s[5].empty_pair = s[9].empty_pair = true;
        s[4].busy = true;
        p.number = lim(10);
        p.number_min_age = 2 * DAY;
        d = plan(s, n, &p, now);
        cr_assert_str_eq(d[0].why, "removed: empty pre/post pair");
        cr_assert_str_eq(d[1].why, "removed: empty pre/post pair");
        cr_assert_str_eq(d[2].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[3].why, "kept: younger than min-age");
        cr_assert_str_eq(d[4].why, "kept: busy");
        cr_assert_str_eq(d[5].why, "kept: its pre/post partner stays");
        cr_assert_str_eq(d[6].why, "kept: no cleanup class");
        cr_assert_str_eq(d[7].why, "kept: no cleanup class");
        cr_assert_eq(d[8].verdict, CLEANUP_REMOVE, "empty pairs go whatever their class and count");
        cr_assert_eq(d[9].verdict, CLEANUP_REMOVE);
        cr_assert_eq(d[9].kept_as, CLEANUP_KEPT_NUMBER);
        free(d);

        /* its own min-age */
        p.empty_pre_post_min_age = 2 * DAY;
        d = plan(s, n, &p, now);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(d[i].verdict, CLEANUP_KEEP, "%zu: %s", i, d[i].why);
        free(d);

        p.empty_pre_post_min_age = HOUR;
        p.empty_pre_post_cleanup = false;
        d = plan(s, n, &p, now);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(d[i].verdict, CLEANUP_KEEP, "%zu: %s", i, d[i].why);
        free(d);
}

/* --- snapper's walk, where times and numbers disagree ---------------------- */

Test(cleanup, snapper_walk)
{
        int64_t h = utc(2026, 5, 8, 10, 0), now = h + DAY;
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;

        p.hourly = lim(5);
        /* the clock went back: #2 is earlier than #1, both in hour 10; #3
         * later.  Walking older from #2 meets only #1, later: #2 is first;
         * #1 meets nothing: first too.  #3 meets #2, earlier: not first. */
        struct cleanup_snap a[] = { tl(1, h + 600), tl(2, h + 300), tl(3, h + 1200) };
        d = plan(a, 3, &p, now);
        cr_assert_eq(d[0].verdict, CLEANUP_KEEP);
        cr_assert_eq(d[1].verdict, CLEANUP_KEEP);
        cr_assert_eq(d[2].verdict, CLEANUP_REMOVE);
        free(d);

        /* the walk stops at the first other unit: #3 (hour 10) meets #2 in
         * hour 11 and is first, though #1 in hour 10 is older */
        struct cleanup_snap b[] = { tl(1, h + 600), tl(2, h + HOUR), tl(3, h + 300) };
        d = plan(b, 3, &p, now);
        for (size_t i = 0; i < 3; i++)
                cr_assert_eq(d[i].verdict, CLEANUP_KEEP, "%zu", i);
        cr_assert_eq(d[0].rank, 3);
        free(d);

        /* two in one second are both first */
        struct cleanup_snap c[] = { tl(1, h), tl(2, h), tl(3, h + 60) };
        d = plan(c, 3, &p, now);
        cr_assert_eq(d[0].verdict, CLEANUP_KEEP);
        cr_assert_eq(d[1].verdict, CLEANUP_KEEP);
        cr_assert_eq(d[2].verdict, CLEANUP_REMOVE);
        free(d);
}

/* --- against a brute-force reference --------------------------------------- */

static void ref_key(int kind, int64_t t, char buf[32])
{
        time_t tt = (time_t)t;
        struct tm tm;

        gmtime_r(&tt, &tm);
        switch (kind) {
        case 0:
                strftime(buf, 32, "%Y-%m-%d %H", &tm);
                break;
        case 1:
                strftime(buf, 32, "%Y-%m-%d", &tm);
                break;
        case 2:
                strftime(buf, 32, "%G-W%V", &tm); /* ISO 8601 week-year and week */
                break;
        case 3:
                strftime(buf, 32, "%Y-%m", &tm);
                break;
        case 4:
                snprintf(buf, 32, "%d-Q%d", tm.tm_year + 1900, tm.tm_mon / 3 + 1);
                break;
        default:
                strftime(buf, 32, "%Y", &tm);
        }
}

/* Numbers in creation order.  A snapshot is first of its unit when no
 * snapshot in that unit was created before it (all pairs compared); walking
 * youngest first, it is kept when first and its kind's count is short. */
static bool *reference(const struct cleanup_snap *s, size_t n, const unsigned lims[6], int64_t now,
                       int64_t min_age)
{
        char (*key)[6][32] = calloc(n, sizeof(*key));
        bool *keep = calloc(n, sizeof(*keep));
        unsigned count[6] = { 0 };

        cr_assert(key && keep);
        for (size_t i = 0; i < n; i++) {
                cr_assert(i == 0 || s[i].number > s[i - 1].number);
                cr_assert(i == 0 || s[i].created >= s[i - 1].created);
                for (int k = 0; k < 6; k++)
                        ref_key(k, s[i].created, key[i][k]);
        }
        for (size_t i = n; i-- > 0;) {
                for (int k = 0; k < 6; k++) {
                        bool first = true;

                        for (size_t j = 0; j < n; j++)
                                if (strcmp(key[j][k], key[i][k]) == 0 && s[j].created < s[i].created)
                                        first = false;
                        if (first && count[k] < lims[k]) {
                                count[k]++;
                                keep[i] = true;
                        }
                }
                if (now - s[i].created < min_age)
                        keep[i] = true;
        }
        free(key);
        return keep;
}

static void against_reference(const struct cleanup_snap *s, size_t n, const unsigned lims[6], int64_t now)
{
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;
        bool *keep = reference(s, n, lims, now, HOUR);
        size_t kept = 0;

        p.hourly = lim(lims[0]);
        p.daily = lim(lims[1]);
        p.weekly = lim(lims[2]);
        p.monthly = lim(lims[3]);
        p.quarterly = lim(lims[4]);
        p.yearly = lim(lims[5]);
        d = plan(s, n, &p, now);
        for (size_t i = 0; i < n; i++) {
                char buf[32];

                fmt(s[i].created, buf);
                cr_assert_eq(d[i].verdict == CLEANUP_KEEP, keep[i], "#%zu %s: %s, the reference %s", i, buf,
                             d[i].why, keep[i] ? "keeps it" : "removes it");
                kept += keep[i];
        }
        cr_assert_gt(kept, 0);
        free(keep);
        free(d);
}

/* a week and a day of hourly snapshots over the 2026/2027 year's end, with
 * hourly 24, daily 7, weekly 4; then other windows, with jitter */
Test(cleanup, week_of_hourly_against_reference)
{
        const unsigned lims[6] = { 24, 7, 4, 0, 0, 0 };
        int64_t start = utc(2026, 12, 28, 0, 0);
        size_t n = 8 * 24 + 1; /* to 2027-01-05 00:00 */
        struct cleanup_snap *s = series(start, HOUR, n);
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;
        size_t kept = 0;

        against_reference(s, n, lims, s[n - 1].created + 10);
        /* by hand: 24 hourly (the newest 2027-01-05 00:00 first), daily
         * 01-05 (counted), 01-04 .. 12-30 (6 more), weekly 01-05 00:00's
         * week starts 01-04 (counted), 12-28 (new) */
        p.hourly = lim(24);
        p.daily = lim(7);
        p.weekly = lim(4);
        d = plan(s, n, &p, s[n - 1].created + 10);
        for (size_t i = 0; i < n; i++)
                kept += d[i].verdict == CLEANUP_KEEP;
        cr_assert_eq(kept, 24 + 6 + 1);
        cr_assert_eq(d[0].kept_as, CLEANUP_KEPT_WEEKLY);
        free(d);
        free(s);

        /* irregular: every 37-83 minutes, from several starting points */
        const int64_t starts[] = { utc(2020, 12, 20, 0, 0), utc(2026, 3, 25, 5, 0), utc(2028, 2, 20, 0, 0),
                                   utc(2027, 1, 25, 0, 0), utc(2026, 9, 24, 0, 0) };
        const unsigned lims2[][6] = { { 24, 7, 4, 0, 0, 0 }, { 5, 3, 2, 12, 4, 2 }, { 0, 0, 3, 2, 2, 1 },
                                      { 1000, 1000, 1000, 1000, 1000, 1000 } };
        uint64_t x = 12345;

        for (size_t a = 0; a < sizeof(starts) / sizeof(starts[0]); a++) {
                n = 400;
                s = calloc(n, sizeof(*s));
                cr_assert(s);
                int64_t t = starts[a];
                for (size_t i = 0; i < n; i++) {
                        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                        t += 37 * 60 + (int64_t)((x >> 33) % (46 * 60));
                        s[i] = tl(i + 1, t);
                }
                for (size_t l = 0; l < sizeof(lims2) / sizeof(lims2[0]); l++)
                        against_reference(s, n, lims2[l], t + HOUR / 2);
                free(s);
        }
}

/* 2026 hourly: 8760 snapshots, 2026-01-01 00:00 (Thu) .. 2026-12-31 23:00 */
Test(cleanup, year_of_hourly)
{
        size_t n = 8760;
        struct cleanup_snap *s = series(utc(2026, 1, 1, 0, 0), HOUR, n);
        int64_t now = s[n - 1].created + 2 * HOUR;
        struct cleanup_policy p = zero_policy();
        struct cleanup_decision *d;
        size_t kept = 0;

        cr_assert_eq(s[n - 1].created, utc(2026, 12, 31, 23, 0));
        /* hourly 24: 12-31 00:00 .. 23:00.  daily 7: 12-31 (counted above),
         * 12-30 .. 12-25: 6 new.  weekly 4: Mondays 12-28 (among the daily),
         * 12-21, 12-14, 12-07: 3 new.  monthly 12: 12-01 .. 01-01, 12 new
         * (no 1st of a month in 2026-12 is a Monday).  quarterly 4: 10-01,
         * 07-01, 04-01, 01-01, all monthly.  yearly 2: 01-01, the only one.
         * 24 + 6 + 3 + 12 = 45. */
        p.hourly = lim(24);
        p.daily = lim(7);
        p.weekly = lim(4);
        p.monthly = lim(12);
        p.quarterly = lim(4);
        p.yearly = lim(2);
        d = plan(s, n, &p, now);
        for (size_t i = 0; i < n; i++)
                kept += d[i].verdict == CLEANUP_KEEP;
        cr_assert_eq(kept, 45);
        const int64_t some[] = { utc(2026, 12, 31, 0, 0), utc(2026, 12, 25, 0, 0), utc(2026, 12, 7, 0, 0),
                                 utc(2026, 12, 1, 0, 0), utc(2026, 1, 1, 0, 0), utc(2026, 2, 1, 0, 0) };
        for (size_t i = 0; i < sizeof(some) / sizeof(some[0]); i++)
                cr_assert_eq(d[find_at(s, n, some[i])].verdict, CLEANUP_KEEP);
        cr_assert_eq(d[find_at(s, n, utc(2026, 11, 30, 0, 0))].verdict, CLEANUP_REMOVE,
                     "the 5th Monday back is beyond weekly 4");
        cr_assert_eq(d[find_at(s, n, utc(2026, 12, 24, 0, 0))].verdict, CLEANUP_REMOVE);
        cr_assert_eq(d[0].kept_as, CLEANUP_KEPT_MONTHLY | CLEANUP_KEPT_QUARTERLY | CLEANUP_KEPT_YEARLY);
        cr_assert_str_eq(d[0].why, "kept: first of its month");
        cr_assert_eq(d[0].rank, 12);
        free(d);

        /* snapper's default-config: hourly 10 (12-31 14:00 ..), daily 10
         * (12-31 .. 12-22 00:00), monthly 10 (12-01 .. 03-01), yearly 10
         * (01-01 only): 31 */
        cleanup_policy_default(&p);
        d = plan(s, n, &p, now);
        kept = 0;
        for (size_t i = 0; i < n; i++)
                kept += d[i].verdict == CLEANUP_KEEP;
        cr_assert_eq(kept, 31);
        free(d);
        free(s);
}

/* --- the API ---------------------------------------------------------------- */

Test(cleanup, defaults_are_snappers)
{
        struct cleanup_policy p;

        memset(&p, 0xff, sizeof(p));
        cleanup_policy_default(&p);
        cr_assert(p.number_cleanup && p.timeline_cleanup && p.empty_pre_post_cleanup && !p.space_short);
        cr_assert_eq(p.number.max, 50);
        cr_assert_eq(p.number_important.max, 10);
        cr_assert_eq(p.hourly.min, 10);
        cr_assert_eq(p.daily.max, 10);
        cr_assert_eq(p.weekly.max, 0);
        cr_assert_eq(p.monthly.max, 10);
        cr_assert_eq(p.quarterly.max, 0);
        cr_assert_eq(p.yearly.max, 10);
        cr_assert_eq(p.timeline_min_age, 3600);
        cr_assert_eq(p.number_min_age, 3600);
        cr_assert_eq(p.empty_pre_post_min_age, 3600);
}

Test(cleanup, bad_arguments)
{
        struct cleanup_snap s[2] = { tl(1, 0), tl(2, 10) };
        struct cleanup_decision d[2];
        struct cleanup_policy p = zero_policy();

        cr_assert_eq(cleanup_plan(NULL, 0, &p, 0, NULL), 0);
        cr_assert_eq(cleanup_plan(s, 2, NULL, 0, d), -EINVAL);
        cr_assert_eq(cleanup_plan(NULL, 2, &p, 0, d), -EINVAL);
        cr_assert_eq(cleanup_plan(s, 2, &p, 0, NULL), -EINVAL);
        p.daily = (struct cleanup_limit){ 3, 2 };
        cr_assert_eq(cleanup_plan(s, 2, &p, 0, d), -EINVAL);
        p = zero_policy();
        p.empty_pre_post_min_age = -1;
        cr_assert_eq(cleanup_plan(s, 2, &p, 0, d), -EINVAL);
        p = zero_policy();
        s[1].number = 1;
        cr_assert_eq(cleanup_plan(s, 2, &p, 0, d), -EINVAL);
        s[1].number = 2;
        s[1].cls = (enum cleanup_class)7;
        cr_assert_eq(cleanup_plan(s, 2, &p, 0, d), -EINVAL);
        s[1].cls = CLEANUP_TIMELINE;
        s[1].kind = (enum snap_kind)3;
        cr_assert_eq(cleanup_plan(s, 2, &p, 0, d), -EINVAL);
        s[1].kind = SNAP_SINGLE;
        cr_assert_eq(cleanup_plan(s, 2, &p, INT64_MIN, d), 0);
        cr_assert_eq(d[0].verdict, CLEANUP_KEEP, "now - min-age below INT64_MIN: all young");
}

/* input order does not matter; 10,000 snapshots are quick */
Test(cleanup, any_order_and_large)
{
        size_t n = 10000;
        struct cleanup_snap *s = series(utc(2025, 6, 1, 0, 0), 47 * 60, n);
        struct cleanup_snap *t = calloc(n, sizeof(*t));
        size_t *perm = calloc(n, sizeof(*perm));
        struct cleanup_policy p;
        struct cleanup_decision *d, *e;
        struct timespec a, b;
        uint64_t x = 99;

        cr_assert(t && perm);
        cleanup_policy_default(&p);
        p.weekly = lim(8);
        p.quarterly = lim(4);
        for (size_t i = 0; i < n; i++) {
                perm[i] = i;
                if (i % 3 == 0)
                        s[i].cls = CLEANUP_NUMBER;
                s[i].important = i % 7 == 0;
        }
        for (size_t i = n; i-- > 1;) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t j = (size_t)((x >> 33) % (i + 1)), tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
        }
        for (size_t i = 0; i < n; i++)
                t[i] = s[perm[i]];
        clock_gettime(CLOCK_MONOTONIC, &a);
        d = plan(s, n, &p, s[n - 1].created + DAY);
        clock_gettime(CLOCK_MONOTONIC, &b);
        e = plan(t, n, &p, s[n - 1].created + DAY);
        for (size_t i = 0; i < n; i++) {
                cr_assert_eq(e[i].verdict, d[perm[i]].verdict);
                cr_assert_eq(e[i].why, d[perm[i]].why);
        }
        cr_assert_lt((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000, 500);
        free(d);
        free(e);

        /* all in one second: snapper's walk would be quadratic */
        for (size_t i = 0; i < n; i++)
                s[i] = tl(i + 1, 0);
        p.hourly = lim(100000);
        clock_gettime(CLOCK_MONOTONIC, &a);
        d = plan(s, n, &p, DAY);
        clock_gettime(CLOCK_MONOTONIC, &b);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(d[i].verdict, CLEANUP_KEEP);
        cr_assert_lt((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000, 500);
        free(d);
        free(s);
        free(t);
        free(perm);
}
