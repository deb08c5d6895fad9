/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which snapshots a cleanup removes: the rules of snapper's cleanup
 * (openSUSE/snapper client/cleanup.cc: NumberCleaner, TimelineCleaner,
 * EmptyPrePostCleaner and Cleaner::filter; client/utils/equal-date.cc,
 * client/utils/Range.cc; doc/snapper.xml.in, doc/snapper-configs.xml.in,
 * data/default-config), written anew here.  Times are UTC.
 *
 * Snapshots are walked youngest first, which is highest number first.
 *
 * number: the snapshots of class number.  One is kept when fewer than
 * NUMBER_LIMIT_IMPORTANT important ones were kept and it is important (it
 * counts there), and when fewer than NUMBER_LIMIT were kept (it counts
 * there too: the two counts are independent, an important one may count
 * in both).  The others are candidates.
 *
 * timeline: the snapshots of class timeline.  For each of hour, day, week
 * (Monday to Sunday, ISO 8601; a week may span two years), month, quarter
 * (months 1-3, 4-6, 7-9, 10-12) and year a snapshot is kept when fewer than
 * that kind's limit were kept for it and it is the first of its unit, and
 * it counts for every kind it is kept for (the 00:00 snapshot of a day may
 * count as hourly, daily, weekly, ...).  "First" is snapper's is_first: walk
 * the older timeline snapshots, by number, from this one; at the first one
 * in another unit it is first; at one in its unit that was created earlier
 * it is not.  So with creation times in number order it is the earliest
 * snapshot of its unit among all timeline snapshots, kept or not; when the
 * clock went back, a walk that meets only later ones in its unit before
 * the unit changes finds it first too, and two made in one second are both
 * first.  The others are candidates.
 *
 * empty-pre-post: every pre (of any class) whose post's contents equal it
 * is a candidate, with that post.  A pre's post is the lowest numbered post
 * naming it; a post's pre is the snapshot of the number it names.
 *
 * A limit "min-max" keeps max, or min when space is short (snapper's second
 * pass, "until the limits for the snapshot and filesystem are reached":
 * there it removes the candidates oldest first, one at a time, until space
 * suffices; that loop is the caller's).
 *
 * Each algorithm then filters its candidates, in this order (Cleaner::
 * filter): busy ones stay (snapper: the default and active subvolume);
 * ones younger than the algorithm's min-age stay (created > now - min_age:
 * one exactly min-age old goes); then a pre whose post exists but is not
 * among the remaining candidates stays, and a post whose pre exists but is
 * not among them stays: a pair goes together or not at all, a half whose
 * other half is gone goes alone, and a pair whose halves have different
 * classes never goes but as an empty pair.  The rest are removed.
 *
 * snapper runs number, timeline, then empty-pre-post, each on what the one
 * before left; none of them removes the other half of a pair another one
 * considers, and each counts only its own class, so running the three on
 * the whole set and removing what any of them removes is the same.
 *
 * Cost: one sort by number; the rest is linear (a unit's "first" is read
 * from the minimum creation time of the run of its unit after it).
 */
#include <errno.h>
#include <stdlib.h>

#include "cleanup.h"

#define NONE SIZE_MAX

enum { HOUR, DAY, WEEK, MONTH, QUARTER, YEAR, KINDS };

/* what a pass makes of a snapshot: ST_CAND while it is a candidate; the
 * others, told in out[], ordered so that the higher wins over what another
 * pass told (a removal over busy over young over partner over a count) */
enum { ST_OUT, ST_KEPT, ST_PARTNER, ST_YOUNG, ST_BUSY, ST_CAND, ST_GONE };

static const char *const first_of[KINDS] = {
        "kept: first of its hour",
        "kept: first of its day",
        "kept: first of its ISO week",
        "kept: first of its month",
        "kept: first of its quarter",
        "kept: first of its year",
};

struct ent {
        uint64_t number;
        size_t idx;
};

struct plan {
        const struct cleanup_snap *snaps;
        size_t n;
        const struct ent *ord;  /* youngest (highest number) first */
        size_t *partner;        /* by place in ord: the other half, or NONE */
        uint8_t *st;            /* by place in ord: ST_* of the current pass */
        uint8_t *said;          /* by place in ord: the ST_* out[] tells */
        unsigned *rank;         /* by place in ord: in the current pass's count */
        struct cleanup_decision *out;
};

static const struct cleanup_snap *at(const struct plan *pl, size_t k)
{
        return &pl->snaps[pl->ord[k].idx];
}

static int cmp_younger_first(const void *a, const void *b)
{
        const struct ent *x = a, *y = b;

        return x->number < y->number ? 1 : x->number > y->number ? -1 : 0;
}

/* the place in ord of the snapshot numbered number, or NONE */
static size_t find(const struct plan *pl, uint64_t number)
{
        size_t lo = 0, hi = pl->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (pl->ord[mid].number == number)
                        return mid;
                if (pl->ord[mid].number > number)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NONE;
}

static int64_t floor_div(int64_t a, int64_t b)
{
        int64_t q = a / b;

        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* the Gregorian year and month (0-11) of a day counted from 1970-01-01 */
static void civil(int64_t days, int64_t *year, int *month)
{
        /* years counted from 1 March 0000, so that a leap day ends its year,
         * in eras of 400 years (146097 days) */
        int64_t z = days + 719468;
        int64_t era = floor_div(z, 146097);
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153; /* 0: March ... 11: February */

        *month = (int)(mp < 10 ? mp + 2 : mp - 10);
        *year = era * 400 + yoe + (mp >= 10);
}

/* a number for the hour, day, ... t falls in: equal for one unit */
static int64_t unit_of(int kind, int64_t t)
{
        int64_t day = floor_div(t, 86400), year;
        int month;

        switch (kind) {
        case HOUR:
                return floor_div(t, 3600);
        case DAY:
                return day;
        case WEEK:
                /* 1970-01-01 was a Thursday: weeks from Monday 1969-12-29 */
                return floor_div(day + 3, 7);
        }
        civil(day, &year, &month);
        switch (kind) {
        case MONTH:
                return year * 12 + month;
        case QUARTER:
                return year * 4 + month / 3;
        default:
                return year;
        }
}

static unsigned limit_of(const struct cleanup_limit *l, bool space_short)
{
        return space_short ? l->min : l->max;
}

static bool young(int64_t created, int64_t now, int64_t min_age)
{
        int64_t since;

        if (__builtin_sub_overflow(now, min_age, &since))
                return true;
        return created > since;
}

/* Tell what a pass made of place k, unless another pass told more. */
static void tell(struct plan *pl, size_t k, int st, const char *why, unsigned rank, unsigned limit)
{
        struct cleanup_decision *d = &pl->out[pl->ord[k].idx];

        if (st < pl->said[k])
                return;
        pl->said[k] = (uint8_t)st;
        d->verdict = st == ST_GONE ? CLEANUP_REMOVE : CLEANUP_KEEP;
        d->why = why;
        d->rank = rank;
        d->limit = limit;
}

/* The candidates (ST_CAND) that stay, in snapper's order: busy, young, then
 * a half of a pair whose other half stays; the rest go, told as gone_why
 * (with the pass's rank and gone_limit). */
static void filter(struct plan *pl, int64_t min_age, int64_t now, const char *gone_why,
                   unsigned gone_limit)
{
        uint8_t *st = pl->st;

        for (size_t k = 0; k < pl->n; k++) {
                if (st[k] != ST_CAND)
                        continue;
                if (at(pl, k)->busy)
                        st[k] = ST_BUSY;
                else if (young(at(pl, k)->created, now, min_age))
                        st[k] = ST_YOUNG;
        }
        /* against the candidates left by the two filters above: ST_CAND,
         * or ST_GONE and ST_PARTNER set in this loop */
        for (size_t k = 0; k < pl->n; k++) {
                size_t o = pl->partner[k];

                if (st[k] != ST_CAND)
                        continue;
                if (o != NONE && st[o] != ST_CAND && st[o] != ST_GONE && st[o] != ST_PARTNER)
                        st[k] = ST_PARTNER;
                else
                        st[k] = ST_GONE;
        }
        for (size_t k = 0; k < pl->n; k++) {
                switch (st[k]) {
                case ST_BUSY:
                        tell(pl, k, ST_BUSY, "kept: busy", 0, 0);
                        break;
                case ST_YOUNG:
                        tell(pl, k, ST_YOUNG, "kept: younger than min-age", 0, 0);
                        break;
                case ST_PARTNER:
                        tell(pl, k, ST_PARTNER, "kept: its pre/post partner stays", 0, 0);
                        break;
                case ST_GONE:
                        tell(pl, k, ST_GONE, gone_why, pl->rank[k], gone_limit);
                        break;
                }
        }
}

static void number_pass(struct plan *pl, const struct cleanup_policy *p, int64_t now)
{
        unsigned lim = limit_of(&p->number, p->space_short);
        unsigned lim_imp = limit_of(&p->number_important, p->space_short);
        unsigned num = 0, num_imp = 0, seen = 0;

        for (size_t k = 0; k < pl->n; k++) {
                const struct cleanup_snap *s = at(pl, k);
                struct cleanup_decision *d = &pl->out[pl->ord[k].idx];

                pl->st[k] = ST_OUT;
                pl->rank[k] = 0;
                if (s->cls != CLEANUP_NUMBER)
                        continue;
                pl->rank[k] = ++seen;
                pl->st[k] = ST_CAND;
                if (num_imp < lim_imp && s->important) {
                        d->kept_as |= CLEANUP_KEPT_IMPORTANT;
                        tell(pl, k, ST_KEPT, "kept: number, one of the youngest important",
                             ++num_imp, lim_imp);
                        pl->st[k] = ST_KEPT;
                }
                if (num < lim) {
                        d->kept_as |= CLEANUP_KEPT_NUMBER;
                        num++;
                        if (pl->st[k] != ST_KEPT)
                                tell(pl, k, ST_KEPT, "kept: number, one of the youngest", num, lim);
                        pl->st[k] = ST_KEPT;
                }
        }
        filter(pl, p->number_min_age, now, "removed: number, beyond the limits", lim);
}

static int timeline_pass(struct plan *pl, const struct cleanup_policy *p, int64_t now)
{
        const struct cleanup_limit *limits[KINDS] = {
                &p->hourly, &p->daily, &p->weekly, &p->monthly, &p->quarterly, &p->yearly,
        };
        unsigned lim[KINDS], count[KINDS] = { 0 };
        size_t m = 0, *pos;
        int64_t *unit;
        uint8_t *first;

        for (size_t k = 0; k < pl->n; k++)
                if (at(pl, k)->cls == CLEANUP_TIMELINE)
                        m++;
        pos = calloc(m ? m : 1, sizeof(*pos));
        unit = calloc(m ? m : 1, sizeof(*unit));
        first = calloc(m ? m : 1, sizeof(*first));
        if (!pos || !unit || !first) {
                free(pos);
                free(unit);
                free(first);
                return -ENOMEM;
        }
        m = 0;
        for (size_t k = 0; k < pl->n; k++) {
                pl->st[k] = ST_OUT;
                pl->rank[k] = 0;
                if (at(pl, k)->cls == CLEANUP_TIMELINE)
                        pos[m++] = k;
        }

        /* first of its unit: no snapshot created earlier in the run of its
         * unit that follows it (older by number) */
        for (int kind = 0; kind < KINDS; kind++) {
                int64_t after_min = 0; /* earliest creation in the run after i */
                bool run = false;      /* whether i + 1 is in i's unit */

                for (size_t i = 0; i < m; i++)
                        unit[i] = unit_of(kind, at(pl, pos[i])->created);
                for (size_t i = m; i-- > 0;) {
                        int64_t t = at(pl, pos[i])->created;

                        if (!run || after_min >= t)
                                first[i] |= 1u << kind;
                        if (i > 0 && unit[i - 1] == unit[i]) {
                                after_min = run && after_min < t ? after_min : t;
                                run = true;
                        } else {
                                run = false;
                        }
                }
        }

        for (int kind = 0; kind < KINDS; kind++)
                lim[kind] = limit_of(limits[kind], p->space_short);
        for (size_t i = 0; i < m; i++) {
                size_t k = pos[i];
                struct cleanup_decision *d = &pl->out[pl->ord[k].idx];
                bool kept = false;

                for (int kind = 0; kind < KINDS; kind++) {
                        if (count[kind] >= lim[kind] || !(first[i] & (1u << kind)))
                                continue;
                        count[kind]++;
                        d->kept_as |= 1u << kind;
                        if (!kept)
                                tell(pl, k, ST_KEPT, first_of[kind], count[kind], lim[kind]);
                        kept = true;
                }
                pl->st[k] = kept ? ST_KEPT : ST_CAND;
        }
        free(pos);
        free(unit);
        free(first);
        filter(pl, p->timeline_min_age, now, "removed: timeline, beyond the limits", 0);
        return 0;
}

static void empty_pre_post_pass(struct plan *pl, const struct cleanup_policy *p, int64_t now)
{
        for (size_t k = 0; k < pl->n; k++) {
                pl->st[k] = ST_OUT;
                pl->rank[k] = 0;
        }
        for (size_t k = 0; k < pl->n; k++) {
                size_t post = pl->partner[k];

                if (at(pl, k)->kind != SNAP_PRE || post == NONE || !at(pl, post)->empty_pair)
                        continue;
                pl->st[k] = ST_CAND;
                pl->st[post] = ST_CAND;
        }
        filter(pl, p->empty_pre_post_min_age, now, "removed: empty pre/post pair", 0);
}

static bool limit_ok(const struct cleanup_limit *l)
{
        return l->min <= l->max;
}

static bool policy_ok(const struct cleanup_policy *p)
{
        return limit_ok(&p->number) && limit_ok(&p->number_important) &&
               limit_ok(&p->hourly) && limit_ok(&p->daily) && limit_ok(&p->weekly) &&
               limit_ok(&p->monthly) && limit_ok(&p->quarterly) && limit_ok(&p->yearly) &&
               p->number_min_age >= 0 && p->timeline_min_age >= 0 &&
               p->empty_pre_post_min_age >= 0;
}

void cleanup_policy_default(struct cleanup_policy *p)
{
        *p = (struct cleanup_policy){
                .number_cleanup = true,
                .timeline_cleanup = true,
                .empty_pre_post_cleanup = true,
                .number = { 50, 50 },
                .number_important = { 10, 10 },
                .hourly = { 10, 10 },
                .daily = { 10, 10 },
                .weekly = { 0, 0 },
                .monthly = { 10, 10 },
                .quarterly = { 0, 0 },
                .yearly = { 10, 10 },
                .number_min_age = 3600,
                .timeline_min_age = 3600,
                .empty_pre_post_min_age = 3600,
        };
}

int cleanup_plan(const struct cleanup_snap *snaps, size_t n, const struct cleanup_policy *p,
                 int64_t now, struct cleanup_decision *out)
{
        struct plan pl = { .snaps = snaps, .n = n, .out = out };
        struct ent *ord;
        int r = 0;

        if (!p || (n && (!snaps || !out)) || !policy_ok(p))
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if ((unsigned)snaps[i].cls > CLEANUP_TIMELINE || (unsigned)snaps[i].kind > SNAP_POST)
                        return -EINVAL;
        if (!n)
                return 0;

        ord = calloc(n, sizeof(*ord));
        pl.partner = calloc(n, sizeof(*pl.partner));
        pl.st = calloc(n, 1);
        pl.said = calloc(n, 1);
        pl.rank = calloc(n, sizeof(*pl.rank));
        if (!ord || !pl.partner || !pl.st || !pl.said || !pl.rank) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++)
                ord[i] = (struct ent){ snaps[i].number, i };
        qsort(ord, n, sizeof(*ord), cmp_younger_first);
        pl.ord = ord;
        for (size_t k = 1; k < n; k++) {
                if (ord[k].number == ord[k - 1].number) {
                        r = -EINVAL;
                        goto out;
                }
        }

        /* a post's pre: the snapshot it names; a pre's post: the lowest
         * numbered post naming it (walked oldest first) */
        for (size_t k = 0; k < n; k++)
                pl.partner[k] = NONE;
        for (size_t k = n; k-- > 0;) {
                const struct cleanup_snap *s = at(&pl, k);
                size_t pre;

                if (s->kind != SNAP_POST)
                        continue;
                pre = find(&pl, s->pre_number);
                pl.partner[k] = pre;
                if (pre != NONE && at(&pl, pre)->kind == SNAP_PRE && pl.partner[pre] == NONE)
                        pl.partner[pre] = k;
        }

        for (size_t k = 0; k < n; k++) {
                /* what the passes below leave untold: a class with no
                 * pass, or a pass that is off */
                out[ord[k].idx] = (struct cleanup_decision){
                        .verdict = CLEANUP_KEEP,
                        .why = at(&pl, k)->cls == CLEANUP_NONE ? "kept: no cleanup class" :
                                                                 "kept: its cleanup is off",
                };
        }
        if (p->number_cleanup)
                number_pass(&pl, p, now);
        if (p->timeline_cleanup) {
                r = timeline_pass(&pl, p, now);
                if (r)
                        goto out;
        }
        if (p->empty_pre_post_cleanup)
                empty_pre_post_pass(&pl, p, now);
out:
        free(ord);
        free(pl.partner);
        free(pl.st);
        free(pl.said);
        free(pl.rank);
        return r;
}
