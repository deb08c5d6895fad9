/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Requests of the control protocol (doc/protocol.md), checked before they
 * act, as nbdkit's validate_request() before handle_request():
 *
 *   request_parse()  the JSON arguments into a typed struct request: types,
 *                    names, ranges; reads nothing else.
 *   request_check()  against the catalogue, with its lock held by the
 *                    caller: the volume and snapshot named exist, are in a
 *                    state that allows the operation, the engine agrees.
 *                    Changes nothing and takes no lock.
 *   handlers.c       acts, short, without checking again.
 *
 * A refused request changed nothing.
 */
#ifndef COWVOLD_REQUEST_H
#define COWVOLD_REQUEST_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "catalogue.h"
#include "engine.h"

struct peer {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        bool admin; /* root or the configured group */
        int fd;     /* file descriptor passed with the request, or -1 */
};

enum op_id {
        OP_STATUS,
        OP_CREATE,
        OP_ADD,
        OP_SNAP,
        OP_LIST,
        OP_RESTORE,
        OP_RESTORE_WAIT,
        OP_RM,
        OP_ACTIVATE,
        OP_CAT,
        OP_WRITE,
        OP_DIFF,
        OP_EXPORT,
        OP_RESIZE,
        OP_RENAME,
        OP_SET,
        OP_CLEANUP,
        OP_SCHEDULE,
        _OP_MAX,
};


struct request {
        enum op_id op;
        const char *op_name;
        bool unlocked; /* runs without the catalogue's lock */
        struct peer *peer;

        /* strings point into the request's JSON, alive until the answer */
        const char *name;   /* create, add, snap (or auto_name), rename (the new name) */
        const char *volume; /* snap, list, restore-wait, activate */
        const char *target; /* VOLUME or VOLUME@SNAPSHOT */
        const char *path;   /* add */
        char auto_name[NAME_MAX_LEN + 1]; /* snap, add without a name */
        uint64_t size;      /* create, resize (checked: the new size) */
        int64_t grow_by;    /* resize: "add" as given, or 0 */
        bool force;         /* resize */
        uint32_t chunk;     /* create, add (checked with what it is for) */
        int64_t chunk_given; /* add: as given */
        bool store_size_given;
        int64_t store_size; /* snap: as given */
        struct snap_options snap; /* snap */
        /* snap: what the snapshot is (checked); pre_name: a post's pre,
         * found by request_check (pre_number) */
        const char *description, *userdata, *pre_name;
        enum cleanup_class cleanup;
        enum snap_kind kind;
        uint64_t pre_number;
        int64_t pre_number_given; /* snap: "pre_number", or 0 */
        /* snap, set: "read_only" as given (read_only_given), else snap's
         * default: read-only for the cleanup classes number and timeline */
        bool read_only, read_only_given;
        bool dry_run;       /* cleanup */
        /* schedule: the volumes (an array of checked names), --off, and
         * the numbers given (schedule_keys' order) */
        json_object *volumes;
        bool off, sched_given[10];
        int64_t sched[10];
        bool keep, recursive, progress;
        int64_t offset, length; /* cat (length -1: to the end), write */
        bool add_block_device;  /* add: a block device (or UUID=, LABEL=) */

        /* found by request_check, under the catalogue's lock */
        struct vol *v;
        struct snap *s;
        struct vol *moving; /* add: a volume that moves between the engines */
        struct vol_user *user; /* cat, write: its hold on v while the lock is let go */
        /* rm: "targets" (an array of names) or NULL; "older_than" (seconds,
         * -1: not given); "yes"; what check_rm found, in the order to go */
        json_object *targets;
        int64_t older_than;
        bool yes;
        struct rm_item {
                struct vol *v;
                struct snap *s;
        } *items;
        size_t n_items;
        char device[4096];  /* add, snap --store: the block device a spec names, resolved */
};

/* Parse @args (an object, or NULL) of operation @op; 0 or -errno with @f. */
int request_parse(const char *op, json_object *args, struct peer *p, struct request *ret, struct failure *f);
/* Check @r against the catalogue (its lock held); 0 or -errno with @f. */
int request_check(struct request *r, struct failure *f);

/* @a and @b are one file: the same device and inode, or the same block
 * device (a device node's own inode differs between /dev and a copy). */
bool request_same_file(const struct stat *a, const struct stat *b);

/* Copy @in for a message: printable ASCII kept, other bytes as '?', cut
 * with "..." to fit: answers stay valid UTF-8 whatever came in. */
const char *ascii_safe(const char *in, char *out, size_t len);

/* A JSON string holding a NUL: as a C string it would read as something
 * else ("rm\u0000x" as "rm"), so requests refuse it. */
bool json_string_has_nul(json_object *s);

#endif
