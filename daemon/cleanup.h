/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which snapshots a cleanup removes: snapper's three cleanup algorithms
 * (number, timeline, empty-pre-post) as one pure function, no I/O, no
 * globals.  The rules, and where they come from, are in cleanup.c's head.
 *
 * The caller gives every snapshot of a volume (any order) and the policy;
 * cleanup_plan says for each one whether it goes, and why.  "Youngest" is
 * by number, as in snapper (the higher, the younger); created (UTC seconds)
 * places a snapshot in its hour, day, ISO week, month, quarter and year,
 * and measures its age.
 */
#ifndef COWVOLD_CLEANUP_H
#define COWVOLD_CLEANUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cleanup_class { CLEANUP_NONE, CLEANUP_NUMBER, CLEANUP_TIMELINE };
enum snap_kind { SNAP_SINGLE, SNAP_PRE, SNAP_POST };

struct cleanup_snap {
        uint64_t number;        /* unique among snaps[] */
        int64_t created;        /* seconds since the epoch, UTC */
        enum cleanup_class cls; /* the algorithm that may remove it */
        enum snap_kind kind;
        uint64_t pre_number;    /* SNAP_POST: its pre's number (which may be gone) */
        bool important;         /* userdata important=yes: NUMBER_LIMIT_IMPORTANT */
        bool busy;              /* restored, exported, mapped or read now: stays */
        bool empty_pair;        /* SNAP_POST: no chunk changed since its pre */
};

/* A limit, or a range "min-max": max applies, min when space is short.  A
 * plain N is min = max = N. */
struct cleanup_limit {
        unsigned min, max;
};

struct cleanup_policy {
        /* NUMBER_CLEANUP, TIMELINE_CLEANUP, EMPTY_PRE_POST_CLEANUP */
        bool number_cleanup, timeline_cleanup, empty_pre_post_cleanup;
        struct cleanup_limit number, number_important;
        struct cleanup_limit hourly, daily, weekly, monthly, quarterly, yearly;
        /* seconds: a snapshot younger than its algorithm's min-age stays */
        int64_t number_min_age, timeline_min_age, empty_pre_post_min_age;
        bool space_short;       /* the limits' min applies instead of their max */
};

enum cleanup_verdict { CLEANUP_KEEP, CLEANUP_REMOVE };

/* cleanup_decision.kept_as: every count a snapshot was kept under */
enum {
        CLEANUP_KEPT_HOURLY = 1 << 0,
        CLEANUP_KEPT_DAILY = 1 << 1,
        CLEANUP_KEPT_WEEKLY = 1 << 2,
        CLEANUP_KEPT_MONTHLY = 1 << 3,
        CLEANUP_KEPT_QUARTERLY = 1 << 4,
        CLEANUP_KEPT_YEARLY = 1 << 5,
        CLEANUP_KEPT_NUMBER = 1 << 6,
        CLEANUP_KEPT_IMPORTANT = 1 << 7,
};

struct cleanup_decision {
        enum cleanup_verdict verdict;
        /* static text, "kept: ..." or "removed: ...", e.g. "kept: first of
         * its day", "kept: busy", "removed: empty pre/post pair" */
        const char *why;
        unsigned kept_as;       /* CLEANUP_KEPT_* */
        /* for the count why names ("first of its day", "number, ..."): the
         * snapshot's place in it (1: the youngest) and the limit in force;
         * print "%s (%u of %u)"; 0 and 0 when why names no count */
        unsigned rank, limit;
};

/* snapper's default-config: number 50, important 10, hourly 10, daily 10,
 * weekly 0, monthly 10, quarterly 0, yearly 10, min-ages 3600, all on */
void cleanup_policy_default(struct cleanup_policy *p);

/* out[i] for snaps[i].  0, or -EINVAL (NULL pointers with n > 0, a limit's
 * min above its max, a negative min-age, an unknown class or kind, two
 * snapshots with one number), or -ENOMEM.  O(n log n). */
int cleanup_plan(const struct cleanup_snap *snaps, size_t n, const struct cleanup_policy *p,
                 int64_t now, struct cleanup_decision *out);

#endif
