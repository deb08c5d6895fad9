/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One interface, two engines.  A volume holds a pointer to the table of
 * operations of the engine that serves it (vol->ops): the userspace engine
 * (engine-userspace.c: libcowvol copies chunks; volumes are image files
 * served over NBD) or the kernel engine (engine-kernel.c: device-mapper
 * tables, the kernel copies).  Handlers, the monitor and the start call the
 * table and never ask which engine they hold, as the kernel's
 * struct dm_exception_store_type and nbdkit's struct backend.
 *
 * Every operation runs with the catalogue's lock held (catalogue.h) unless
 * it says otherwise.  An operation that can fail returns a negative errno
 * and, where a client waits for the answer, fills a struct failure with the
 * sentence to tell it: errors travel back with the call, never through a
 * side channel.
 */
#ifndef COWVOLD_ENGINE_H
#define COWVOLD_ENGINE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "cowvol.h"

struct vol;
struct snap;

/* Why a request failed: -errno and a sentence for the client. */
struct failure {
        int err;
        char msg[768];
};

/* Set @f (the first failure wins) and return @err: `return fail(f, -EBUSY, ...)`. */
int fail(struct failure *f, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Put "WHAT: " before @f's sentence; returns f->err. */
int fail_wrap(struct failure *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What `snap` asks for, checked already (sizes in bytes, rounded to chunks). */
struct snap_options {
        uint64_t store_bytes;
        const char *store_device; /* a block device for the store, or NULL */
        bool force;               /* use it even though it carries a signature */
};

/* A snapshot as the engine sees it now, for `list`. */
struct snap_state {
        bool have;  /* the engine could look at it */
        bool valid;
        char reason[128];
        struct cowvol_store_usage usage;
        uint64_t exceptions, store_bytes;
};

typedef int (*range_fn)(uint64_t off, uint64_t len, void *userdata);

struct engine_ops {
        const char *name; /* in the catalogue and in answers: "userspace", "kernel" */

        /* Open @v with its snapshots as the catalogue has them (start,
         * a retry of an unavailable volume, `cowvol activate`); a snapshot
         * that cannot be opened gets a reason and the others go on.  Also
         * resumes a restore the catalogue records. */
        int (*activate)(struct vol *v);
        /* At stop: flush and let go (device-mapper tables stay). */
        void (*deactivate)(struct vol *v);
        bool (*is_active)(const struct vol *v);
        /* A volume whose file or device is not there yet is not retried. */
        bool (*can_retry)(const struct vol *v);
        /* `cowvol activate`: NULL when the engine's volumes are always active. */
        int (*reactivate)(struct vol *v, struct failure *f);

        /* snap: checks that change nothing; then make the store and the
         * snapshot, or nothing; undo what snapshot did (the catalogue could
         * not be saved). */
        int (*snapshot_check)(const struct vol *v, const char *name, const struct snap_options *o,
                              struct failure *f);
        int (*snapshot)(struct vol *v, struct snap *s, const struct snap_options *o, struct failure *f);
        void (*snapshot_undo)(struct vol *v, struct snap *s);

        /* rm: let go of it before the catalogue forgets it
         * (undone by snapshot_release_undo if the catalogue cannot be saved);
         * its store goes after the catalogue forgot it. */
        int (*snapshot_release)(struct vol *v, struct snap *s, struct failure *f);
        void (*snapshot_release_undo)(struct vol *v, struct snap *s);
        void (*snapshot_drop)(struct vol *v, struct snap *s);
        /* rm of a volume: in use; then let go of it (its snapshots removed
         * one by one as the catalogue forgets each: 0, or -errno with @f);
         * its files after the catalogue forgot it. */
        int (*volume_busy)(const struct vol *v, struct failure *f);
        int (*volume_release)(struct vol *v, struct failure *f);
        void (*volume_drop)(struct vol *v);

        /* restore @s into @v: 0 started, 1 recorded to start at the next
         * activation (@f->msg says why), or -errno with @f.  The catalogue
         * records the restore before it starts. */
        int (*restore)(struct vol *v, struct snap *s, bool keep, struct failure *f);
        /* is the restore moving now (not paused, not waiting) */
        bool (*restore_running)(const struct vol *v);
        /* @v's size becomes @size (checked: no restore, no shrinking under
         * snapshots), durably; the caller records it.  NULL: the engine
         * cannot resize its volumes. */
        int (*resize)(struct vol *v, uint64_t size, struct failure *f);
        /* @v's last user (vol_user_remove) let go: a restore that waited
         * for it starts.  NULL: the engine's restores wait for activation. */
        void (*users_gone)(struct vol *v);
        /* @v takes the name @name (its image too when the state folder
         * holds it), durably with the catalogue; a snapshot's name is the
         * catalogue's alone.  NULL: the engine's devices carry the names. */
        int (*rename)(struct vol *v, const char *name, struct failure *f);

        /* list: the engine's own fields of a volume and a snapshot; a
         * snapshot's state (also: may it be restored, exported) */
        void (*volume_view)(const struct vol *v, json_object *o);
        void (*snapshot_view)(const struct vol *v, const struct snap *s, json_object *o);
        void (*snapshot_state)(const struct vol *v, const struct snap *s, struct snap_state *ret);
        /* the byte ranges changed since @s, as runs */
        int (*diff)(struct vol *v, struct snap *s, range_fn fn, void *userdata);

        /* Data through cowvold (cat, write, export): without the lock, the
         * caller holding references.  NULL when the engine's volumes are
         * block devices: device_path then names the one to use.
         * snapshot_open: its store is open (else it reads as invalid). */
        int (*pread)(struct vol *v, struct snap *s, void *buf, size_t len, uint64_t off);
        int (*pwrite)(struct vol *v, struct snap *s, const void *buf, size_t len, uint64_t off);
        int (*flush)(struct vol *v);
        int (*device_path)(const struct vol *v, const struct snap *s, char *buf, size_t len);
        bool (*snapshot_open)(const struct vol *v, const struct snap *s);

        /* The monitor's round: fill levels, growth, invalidation, merges
         * (true when the catalogue changed); the reasons an engine found
         * since, copied into the catalogue (true when one was new). */
        bool (*watch)(struct vol *v);
        bool (*note_reasons)(struct vol *v);

        /* SIGHUP changed autoextend: NULL when the engine reads the
         * settings at each use */
        void (*settings_changed)(struct vol *v);
};

extern const struct engine_ops userspace_engine;
extern const struct engine_ops kernel_engine;

/* Every engine, NULL-terminated: the catalogue names each volume's. */
extern const struct engine_ops *const engine_all[];

/* Both engines: a volume moves from one to the other with its snapshots
 * (engine-kernel.c).  The userspace volume whose image backs loop device
 * @dev; the kernel volume over a loop device of @image. */
struct vol *engine_userspace_behind(const char *dev);
struct vol *engine_kernel_over(const char *image);
/* What a move to the kernel engine copied first to make the stores of a
 * chain standalone (the kernel copies into every snapshot). */
struct move_report {
        uint64_t chunks, bytes;
        unsigned stores; /* how many took copies */
};
int engine_move_to_kernel(struct vol *v, const char *spec, const char *dev, struct move_report *rep,
                          struct failure *f);
int engine_move_to_userspace(struct vol *v, const char *image, struct failure *f);
/* add of a block device: a new kernel volume, not yet in the catalogue.
 * These three return whole sentences ("cannot add SPEC: ..."). */
int engine_kernel_add(const char *spec, const char *name, uint32_t chunk, struct vol **ret, struct failure *f);

/* restores of the userspace engine run in threads: wait for all of them
 * to leave (stopping set; the catalogue's lock held) */
void engine_restore_join_all(void);

#endif
