/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvold: what the daemon's files share. */
#ifndef COWVOLD_H
#define COWVOLD_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "cowvol.h"

#define NAME_MAX_LEN 64
#define UUID_LEN 36
#define PROTOCOL_VERSION 1
#define LINE_MAX_BYTES (64 * 1024)

struct snap {
        char name[NAME_MAX_LEN + 1];
        char uuid[UUID_LEN + 1];
        char *store;   /* path of the store file (or block device: store_device) */
        bool store_device; /* a block device the user named: rm leaves it */
        bool warned;       /* kernel: its store passed 80 % (logged once) */
        int64_t created;
        char *reason;  /* why invalid (persisted), or NULL */
        cowvol_snapshot *eng;
        unsigned refs; /* I/O in flight through it */
        struct snap *next;
};

struct vol {
        char name[NAME_MAX_LEN + 1];
        char uuid[UUID_LEN + 1];
        char *path; /* image file; for a kernel volume the block device */
        bool kernel;  /* the kernel engine (device-mapper) serves it */
        char *source; /* kernel: as the user named the device (UUID=..., /dev/...) */
        bool kactive; /* kernel: its device-mapper stack is built */
        uint64_t size;
        uint32_t chunk;
        bool owned; /* made by create: rm deletes the image */
        int64_t created;
        struct snap *snaps;
        cowvol_volume *eng;
        unsigned refs;

        /* a restore (persisted: snapshot uuid and keep) */
        struct snap *restoring;
        bool restore_keep;
        uint64_t restore_total, restore_left;
        bool restore_thread;
        pthread_t restore_tid;
        bool restore_pending; /* kernel: the merge waits for the next activation */

        struct vol *next;
};

struct config {
        const char *state_dir;
        const char *socket_path;
        char *nbd_socket_path; /* the NBD socket (nbd.c) */
        char *nbd_tcp;         /* "HOST:PORT" NBD also listens on, or NULL */
        char *nbd_tcp_uri_host; /* the host part of nbd:// URIs */
        unsigned nbd_tcp_port;
        unsigned nbd_handshake_timeout; /* seconds a client may take to choose an export */
        enum { NBD_RW = 0, NBD_RO_SNAPSHOTS, NBD_RO_ALL } nbd_read_only;
        const char *config_file;
        char *group; /* may read and change volumes, beside root */
        gid_t gid;
        bool have_gid;
        unsigned autoextend_threshold, autoextend_percent;
        bool foreground;
};

struct daemon {
        pthread_mutex_t lock; /* the catalogue and every struct vol/snap */
        pthread_cond_t changed;
        struct vol *vols;
        struct config cfg;
        double started;
        unsigned clients; /* changed under cowvold.c's clients_lock, with __atomic: status reads it */
        /* the counts status shows, published under lock (counts_publish) and
         * read with __atomic: status answers without waiting for the lock,
         * which a snapshot holds through its stores' flushes */
        unsigned n_vols, n_snaps;
        volatile int stopping;
};

extern struct daemon D;

/* log.c-like helpers in main.c */
void dlog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_ERR_ 3
#define LOG_WARN_ 4
#define LOG_INFO_ 6
int dlog_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* catalogue.c: the truth about volumes and snapshots, in state_dir */
int catalogue_load(void);
int catalogue_save(void); /* atomic: write, fsync, rename, fsync the folder */
void counts_publish(void); /* D.lock held: D.n_vols, D.n_snaps for status */
/* at start: remove the files STATE_DIR/stores/UUID.cow that no snapshot of
 * the catalogue owns (left by a crash in a snap or rm); how many, or -errno */
int catalogue_sweep_stores(void);
/* the same for STATE_DIR/volumes/NAME.img that no volume owns: removed when
 * they hold no data, else left with a warning */
int catalogue_sweep_images(void);
struct vol *vol_find(const char *name);
struct snap *snap_find(const struct vol *v, const char *name);
struct snap *snap_find_uuid(const struct vol *v, const char *uuid);
void vol_free(struct vol *v);
void snap_free_meta(struct snap *s);
void new_uuid(char out[UUID_LEN + 1]);

/* engine glue (volumes.c) */
int vol_activate(struct vol *v);      /* open the engine and attach the snapshots */
void vol_deactivate(struct vol *v);
/* D.lock held: copy the engine's invalidation reasons into the catalogue;
 * true when one was new (save the catalogue then) */
bool vol_note_reasons(struct vol *v);
int restore_start(struct vol *v);     /* spawn the thread; D.lock held */
void restore_join_all(void);

/* A JSON string holding a NUL: as a C string it would read as something
 * else ("rm\u0000x" as "rm"), so requests refuse it. */
static inline bool json_string_has_nul(json_object *s)
{
        return strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s);
}

/* cowvold.c */
void client_done(int fd); /* a client thread's last act: forget and close @fd */
/* Write all of @buf (retrying short writes and EINTR); 0 or -errno. */
int write_all(int fd, const void *buf, size_t n);

/* kvolumes.c: block devices under the kernel engine; D.lock held, @why
 * says what went wrong for the client */
struct ksnap_state {
        bool valid;
        char reason[128];
        struct cowvol_store_usage usage;
        uint64_t exceptions, store_bytes;
        char dm_path[300];
};
void kvol_note_error(const char *msg); /* the library's last error, per thread */
int kvol_activate(struct vol *v);      /* start: rebuild the stack and its snapshots */
int kvol_add(const char *spec, const char *name, uint32_t chunk, struct vol **ret, char *why, size_t len);
int kvol_remove(struct vol *v, char *why, size_t len);
int ksnap_take(struct vol *v, struct snap *s, uint64_t store_bytes, const char *store_dev, bool force, char *why,
               size_t len);
int ksnap_remove(struct vol *v, struct snap *s, char *why, size_t len); /* devices */
void ksnap_drop_store(struct vol *v, struct snap *s);                  /* then its file */
void kvol_view(const struct vol *v, json_object *o);
/* restore @s into @v (snapshot-merge): 0 started, 1 recorded for the next
 * activation (the volume or snapshot is open), or a negative errno */
int kvol_restore(struct vol *v, struct snap *s, bool keep, char *why, size_t len);
/* the monitor: follow @v's merge; true when the catalogue changed */
bool kvol_merge_watch(struct vol *v);
void kvol_merge_resume(struct vol *v); /* at activation: a pending merge starts */
/* between the engines: the userspace volume behind loop device @dev, the
 * kernel volume over a loop device of @image; moving a volume with its
 * snapshots (same stores) from one engine to the other */
struct vol *kvol_userspace_behind(const char *dev);
struct vol *kvol_kernel_over(const char *image);
int kvol_from_userspace(struct vol *v, const char *spec, const char *dev, char *why, size_t len);
int kvol_to_userspace(struct vol *v, const char *image, char *why, size_t len);

/* monitor.c: kernel snapshots' fill levels, growth, invalidation, merges */
int monitor_start(void);
void monitor_wake(void);
void monitor_stop(void); /* after D.stopping is set, without D.lock */
void ksnap_view(const struct vol *v, const struct snap *s, struct ksnap_state *ret);

/* session.c */
void *session_main(void *arg);
struct ucred;
/* root, or a member of the configured group (SO_PEERCRED, SO_PEERGROUPS) */
bool peer_is_admin(int fd, const struct ucred *cred);

/* nbd.c: one NBD connection (the accepted socket as the argument) */
void *nbd_session_main(void *arg);
/* the nbd_read_only setting: an NBD_RW.. value or -EINVAL */
int nbd_read_only_parse(const char *s);
/* is the export of the volume (@s NULL) or snapshot @s read-only */
bool nbd_export_read_only(const struct snap *s);
/* the nbd_tcp setting into host and port (host NULL: off) */
int nbd_tcp_parse(const char *spec, char **ret_host, unsigned *ret_port);
/* listen on D.cfg.nbd_tcp; the socket or a negative errno (logged) */
int nbd_tcp_listen(void);

/* handlers.c */
struct peer {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        bool admin; /* root or the configured group */
        int fd;     /* file descriptor passed with the request, or -1 */
};

/* Fill *ret_result, or set *ret_err to a negative errno and *ret_msg to a
 * malloc'd sentence. */
void handle_request(const char *op, json_object *args, struct peer *p, json_object **ret_result, int *ret_err,
                    char **ret_msg);

bool name_valid(const char *s, char *why, size_t len);

#endif
