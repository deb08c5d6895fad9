/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The catalogue: every volume and snapshot (catalogue.c keeps it in
 * STATE_DIR/catalogue.json), under one lock.
 *
 * Locks, and the order they are taken in (a thread holding one may take
 * only those below it):
 *   1. catalogue.lock        here: the catalogue, every struct vol and snap,
 *                            `stopping`; held by requests (handlers.c), the
 *                            monitor, restores' ends, NBD's export lookup
 *   2. clients_lock          listen.c: the table of client sockets (accept
 *                            must not wait for lock 1, which a snapshot
 *                            holds through its stores' flushes)
 *   3. an NBD connection's   nbd*.c: its reply stream and request queue
 *      send/queue locks
 *   4. a volume's rwlock     lib/engine.c: the userspace engine's state of
 *                            one volume (copies, commits, merges)
 *   5. the dm lock           lib/dm.c: every libdevmapper call
 * Data moves (cat, write, NBD I/O) let lock 1 go and hold references
 * (refs) instead, which keep rm, restore and moves away.
 */
#ifndef COWVOLD_CATALOGUE_H
#define COWVOLD_CATALOGUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "cowvol.h"

#define NAME_MAX_LEN 64
/* a snapshot's description: bytes, printable (no control characters) */
#define DESCRIPTION_MAX 1024
/* a snapshot's userdata, "KEY=VALUE[,KEY=VALUE...]": at most USERDATA_PAIRS
 * pairs, a key 1..USERDATA_KEY_MAX bytes, a value 0..USERDATA_VALUE_MAX */
#define USERDATA_PAIRS 16
#define USERDATA_KEY_MAX 64
#define USERDATA_VALUE_MAX 256
#define UUID_LEN 36

struct engine_ops;

struct snap {
        char name[NAME_MAX_LEN + 1];
        char uuid[UUID_LEN + 1];
        char *store;   /* path of the store file (or block device: store_device) */
        bool store_device; /* a block device the user named: rm leaves it */
        bool warned;       /* kernel: its store passed 80 % (logged once) */
        int64_t created;
        /* bytes: the volume's when taken (a volume grows; its snapshots
         * keep their size); never above a newer snapshot's */
        uint64_t size;
        char *reason;  /* why invalid (persisted), or NULL */
        cowvol_snapshot *eng; /* userspace: the library's snapshot */
        unsigned refs; /* I/O in flight through it */
        /* what the snapshot is, as snapper's (catalogue "number",
         * "cleanup", "type", "pre", "description", "userdata"; a catalogue
         * of before them: numbered by creation at load, the rest absent) */
        uint64_t number;        /* its volume's, from 1, never reused */
        enum cleanup_class cleanup;
        enum snap_kind type;
        uint64_t pre_number;    /* SNAP_POST: its pre's number */
        char *description;      /* or NULL */
        char *userdata;         /* "KEY=VALUE,..." as checked, or NULL */
        /* no writes into it (catalogue "read_only"; cowvol set): cowvol
         * write and NBD refuse them, its exports say so */
        bool read_only;
        struct snap *next;
};

/* Who holds a volume (or one of its snapshots) open: an NBD connection,
 * a cat or a write; what "in use" messages name. */
struct vol_user {
        struct vol_user *next;
        struct snap *s; /* the snapshot it reads or writes, or NULL */
        char what[8];   /* "NBD", "cat", "write" */
        char who[64];   /* "uid 1000 pid 4242", "192.0.2.7 port 50012" */
};

/* A volume's schedule (catalogue "schedule"): the clock's timeline
 * snapshots and cleanups (schedule.c) */
struct schedule {
        bool on;
        struct cleanup_policy policy; /* the limits and min-ages */
        unsigned free_limit;          /* percent of free space kept; 0: none */
        unsigned long changes;        /* in memory: counts the changes (the clock's cue) */
};

struct vol {
        char name[NAME_MAX_LEN + 1];
        char uuid[UUID_LEN + 1];
        char *path; /* image file; for a kernel volume the block device */
        const struct engine_ops *ops; /* the engine that serves it (engine.h) */
        char *source; /* kernel: as the user named the device (UUID=..., /dev/...) */
        bool kactive; /* kernel: its device-mapper stack is built */
        /* kernel, over a loop device: the image file behind it, held open
         * with QEMU's image locks (engine-kernel.c, image_hold) */
        bool image_held;
        int image_fd;
        uint64_t size;
        uint32_t chunk;
        bool owned; /* made by create: rm deletes the image */
        /* userspace: the stores are a chain (engine.c); absent in catalogues
         * of before chains and for kernel volumes, whose stores are
         * independent: the userspace engine adopts them at activation */
        bool chain;
        /* added by a user other than root, who lent the daemon this image
         * (catalogue "lent"): it must stay that file, or that user's */
        bool lent;
        uint32_t lent_uid;
        uint64_t lent_dev, lent_ino;
        int64_t created;
        struct snap *snaps;
        uint64_t next_number; /* the next snapshot's number (catalogue "next_number") */
        struct schedule schedule;
        cowvol_volume *eng; /* userspace: the library's volume */
        unsigned refs;
        struct vol_user *users; /* the refs, each named (one may lack a name: out of memory) */

        /* a restore (persisted: snapshot uuid and keep) */
        struct snap *restoring;
        bool restore_keep;
        /* how the restore runs, and resumes (catalogue "mode"): through
         * the chain, from its start (RESTORE_CHAIN: every restore begun
         * now), or consuming the snapshot's store as dm-snapshot's merge
         * does (RESTORE_CONSUME: one begun by a cowvold that flattened a
         * chain's snapshot first, "flattened": true, or from before
         * chains, no "flattened").  RESTORE_UNSURE: "flattened": false
         * without "mode", from a cowvold that sometimes consumed without
         * saying so: either mode is right when the snapshot is the
         * newest; otherwise the restore cannot resume (restore_stalled). */
        enum restore_mode { RESTORE_CHAIN, RESTORE_CONSUME, RESTORE_UNSURE } restore_mode;
        /* userspace: why the recorded restore cannot run now (NULL: it
         * can); the volume is held meanwhile: writes and exports refused */
        char *restore_stalled;
        /* restore_finish is saving the restore's end: catalogue_save writes
         * no restore, and without the snapshot when restore_drop */
        bool restore_ending, restore_drop;
        uint64_t restore_total, restore_left;
        bool restore_thread;
        pthread_t restore_tid;
        /* the restore waits: kernel, for the next activation; userspace, for
         * its users to leave (users_gone), or the next start */
        bool restore_pending;

        struct vol *next;
};

struct catalogue {
        pthread_mutex_t lock;
        pthread_cond_t changed; /* a restore moved, a volume went, stopping */
        struct vol *vols;
        volatile int stopping;  /* SIGTERM: requests in flight finish */
        /* what status shows, published with __atomic (counts_publish, the
         * client table): status answers without waiting for the lock */
        unsigned n_vols, n_snaps, n_clients;
        unsigned n_strays; /* files in STATE_DIR/stray/ at start */
        double started; /* the monotonic clock at start */
};

extern struct catalogue catalogue;

/* catalogue.c: the truth about volumes and snapshots, in state_dir.  Load:
 * a volume's "engine" is the name of one of @engines (NULL-terminated). */
int catalogue_load(const struct engine_ops *const *engines);
int catalogue_save(void); /* atomic: write, fsync, rename, fsync the folder */
void counts_publish(void); /* lock held: n_vols, n_snaps for status */
/* at start, after a whole load: the files STATE_DIR/stores/UUID.cow that no
 * snapshot of the catalogue owns (left by a crash in a snap or rm) are
 * removed when they hold no exception, else moved to STATE_DIR/stray/; how
 * many, or -errno */
int catalogue_sweep_stores(void);
/* the same for STATE_DIR/volumes/NAME.img that no volume owns, by data */
int catalogue_sweep_images(void);
#define STRAY_DIR "stray"
void catalogue_count_strays(void); /* n_strays */
struct vol *vol_find(const char *name);
struct snap *snap_find(const struct vol *v, const char *name);
struct snap *snap_find_uuid(const struct vol *v, const char *uuid);
void vol_free(struct vol *v);
void snap_free_meta(struct snap *s);

/* A user of @v (and @s) comes and goes: the references counted, and named
 * for messages.  Catalogue lock held.  add never fails: without memory the
 * user counts but is not named (NULL, which remove takes too). */
struct vol_user *vol_user_add(struct vol *v, struct snap *s, const char *what, const char *who);
void vol_user_remove(struct vol *v, struct snap *s, struct vol_user *u);
/* What rm of @v deletes: the bytes its image holds on disk when create made
 * it (rm deletes it) and it holds data; 0 for an image added where it was,
 * a block device, or an image of holes only. */
uint64_t vol_rm_deletes(const struct vol *v);
/* "2 NBD connections (uid 1000 pid 4242; 192.0.2.7 port 50012) and a cat
 * (uid 0 pid 77)": who holds @v (@s: only those of that snapshot) */
const char *vol_users_describe(const struct vol *v, const struct snap *s, char *buf, size_t len);
void new_uuid(char out[UUID_LEN + 1]);
/* name, uuid, path, size, chunk_size of @v into @o (the catalogue, list) */
void vol_json_identity(const struct vol *v, json_object *o);
/* A volume or snapshot name: [A-Za-z0-9_.+-], 1 to NAME_MAX_LEN, not
 * starting with '.' or '-'; else false and @why says what is wrong. */
bool name_valid(const char *s, char *why, size_t len);
/* A description: at most DESCRIPTION_MAX bytes, no control character. */
bool description_valid(const char *s, char *why, size_t len);
/* Userdata "KEY=VALUE[,KEY=VALUE...]" (USERDATA_*: keys not empty, no '='
 * or ',' in a key, no ',' in a value, printable ASCII, no key twice). */
bool userdata_valid(const char *s, char *why, size_t len);
/* The value of @key in userdata @ud (NULL: none) into @buf; false if absent. */
bool userdata_get(const char *ud, const char *key, char *buf, size_t len);
const char *cleanup_class_name(enum cleanup_class c);
const char *snap_kind_name(enum snap_kind k);
/* "none", "number", "timeline" / "single", "pre", "post": 0 or -EINVAL */
int cleanup_class_parse(const char *s, enum cleanup_class *ret);
int snap_kind_parse(const char *s, enum snap_kind *ret);
struct snap *snap_find_number(const struct vol *v, uint64_t number);
/* a snapshot's number, cleanup, type, pre, description, userdata into @o */
void snap_json_meta(const struct snap *s, json_object *o);

/* A schedule as ten numbers, in the order of schedule_keys (the catalogue's
 * and the protocol's names): hourly daily weekly monthly quarterly yearly
 * number number_important (limits), min_age (seconds), free_limit (%). */
extern const char *const schedule_keys[10];
#define SCHEDULE_LIMIT_MAX 100000
#define SCHEDULE_MIN_AGE_MAX (366LL * 86400)
/* @sc from @x (checked), on */
void schedule_set(struct schedule *sc, const int64_t x[10]);
void schedule_json(const struct schedule *sc, json_object *o);

#endif
