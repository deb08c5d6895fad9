/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What each operation of the control protocol does, once request.c has
 * parsed and checked it: short, without checking again, through the
 * volume's engine (engine.h) and never asking which one it is.  A change
 * that the catalogue cannot record is undone.  The catalogue's lock is held
 * throughout, but for status (none) and the data moves of cat and write,
 * which let it go and hold references that keep rm and restore away.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "tls.h"

#define IO_BUF (1u << 20)

int fail(struct failure *f, int err, const char *fmt, ...)
{
        va_list ap;

        if (f->err)
                return f->err;
        va_start(ap, fmt);
        vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
        va_end(ap);
        f->err = err;
        return err;
}

/* "Too many open files" says which limit */
static void limit_named(struct failure *f)
{
        struct rlimit rl;
        size_t n = strlen(f->msg);

        if (f->err == -ENFILE)
                snprintf(f->msg + n, sizeof(f->msg) - n, " (the system's limit, fs.file-max)");
        else if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
                snprintf(f->msg + n, sizeof(f->msg) - n,
                         " (cowvold's limit of open files, RLIMIT_NOFILE, is %llu: raise LimitNOFILE=)",
                         (unsigned long long)rl.rlim_cur);
}

int fail_wrap(struct failure *f, const char *fmt, ...)
{
        char what[sizeof(f->msg)], old[sizeof(f->msg)];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        memcpy(old, f->msg, sizeof(old));
        /* cut to fit */
        if (snprintf(f->msg, sizeof(f->msg), "%.*s: %s", (int)(sizeof(f->msg) / 2), what, old) < 0)
                f->msg[0] = '\0';
        return f->err;
}

/* --- views ------------------------------------------------------------------- */

static double merge_percent(const struct vol *v)
{
        if (v->restore_pending)
                return 0; /* not started: waits for the next activation */
        if (!v->restore_total)
                return 100.0;
        return 100.0 * (double)(v->restore_total - v->restore_left) / (double)v->restore_total;
}

static json_object *snap_view(const struct vol *v, const struct snap *s)
{
        json_object *o = json_object_new_object();
        struct snap_state st;
        char full[NAME_MAX_LEN * 2 + 2];
        const char *state = "active";
        double pct = 0;

        snprintf(full, sizeof(full), "%s@%s", v->name, s->name);
        v->ops->snapshot_state(v, s, &st);
        v->ops->snapshot_view(v, s, o);
        if (st.have && st.usage.total_sectors && st.usage.allocated_sectors != st.usage.metadata_sectors)
                pct = 100.0 * (double)st.usage.allocated_sectors / (double)st.usage.total_sectors;
        if (v->restoring == s)
                state = "merging";
        else if (!st.have || !st.valid)
                state = "invalid";
        json_object_object_add(o, "name", json_object_new_string(s->name));
        json_object_object_add(o, "full_name", json_object_new_string(full));
        json_object_object_add(o, "uuid", json_object_new_string(s->uuid));
        json_object_object_add(o, "store", json_object_new_string(s->store));
        json_object_object_add(o, "size", json_object_new_int64((int64_t)s->size));
        json_object_object_add(o, "store_size", json_object_new_int64((int64_t)st.store_bytes));
        json_object_object_add(o, "allocated",
                               json_object_new_int64((int64_t)(st.usage.allocated_sectors * COWVOL_SECTOR_SIZE)));
        json_object_object_add(o, "exceptions", json_object_new_int64((int64_t)st.exceptions));
        json_object_object_add(o, "data_percent", json_object_new_double(round(pct * 100) / 100));
        json_object_object_add(o, "created", json_object_new_int64(s->created));
        snap_json_meta(s, o);
        json_object_object_add(o, "state", json_object_new_string(state));
        json_object_object_add(o, "reason",
                               strcmp(state, "invalid") == 0
                                       ? json_object_new_string(s->reason ? s->reason
                                                                : st.reason[0] ? st.reason
                                                                               : "invalidated")
                                       : NULL);
        json_object_object_add(o, "merge_percent",
                               v->restoring == s ? json_object_new_double(round(merge_percent(v) * 10) / 10) : NULL);
        return o;
}

static json_object *vol_view(const struct vol *v)
{
        json_object *o = json_object_new_object(), *a = json_object_new_array();
        int64_t used = 0;

        vol_json_identity(v, o);
        json_object_object_add(o, "created", json_object_new_int64(v->created));
        json_object_object_add(o, "engine", json_object_new_string(v->ops->name));
        json_object_object_add(o, "state", json_object_new_string(v->ops->is_active(v) ? "active" : "unavailable"));
        /* what rm deletes (rm asks for --yes then) */
        json_object_object_add(o, "rm_deletes", json_object_new_int64((int64_t)vol_rm_deletes(v)));
        v->ops->volume_view(v, o);
        if (v->restoring) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "snapshot", json_object_new_string(v->restoring->name));
                json_object_object_add(r, "keep", json_object_new_boolean(v->restore_keep));
                json_object_object_add(r, "percent", json_object_new_double(round(merge_percent(v) * 10) / 10));
                json_object_object_add(r, "pending", json_object_new_boolean(v->restore_pending));
                json_object_object_add(r, "waits_for", !v->restore_pending ? NULL
                                                       : json_object_new_string(v->ops->users_gone ? "users"
                                                                                                   : "activation"));
                json_object_object_add(r, "stalled", v->restore_stalled ? json_object_new_string(v->restore_stalled)
                                                                        : NULL);
                json_object_object_add(o, "restore", r);
        } else {
                json_object_object_add(o, "restore", NULL);
        }
        for (struct snap *s = v->snaps; s; s = s->next) {
                json_object *sv = snap_view(v, s), *x;
                json_object_array_add(a, sv);
                if (json_object_object_get_ex(sv, "allocated", &x))
                        used += json_object_get_int64(x);
        }
        json_object_object_add(o, "snapshots", a);
        /* the stores' use, all snapshots together */
        json_object_object_add(o, "snapshots_allocated", json_object_new_int64(used));
        return o;
}

/* --- operations ----------------------------------------------------------------- */

/* The bytes allocated and not freed, for tests/integration/t-load.sh's leak
 * check (status answers it with COWVOL_DEBUG_HEAP set): ASan's count in the
 * sanitizer build (its quarantine excluded), glibc's in-use bytes otherwise;
 * neither counts free memory that arenas keep, as RSS does. */
size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));
static size_t heap_in_use(void)
{
        struct mallinfo2 m;

        if (__sanitizer_get_current_allocated_bytes)
                return __sanitizer_get_current_allocated_bytes();
        m = mallinfo2();
        return m.uordblks + m.hblkhd;
}

/* Without the catalogue's lock: the health check answers while a snapshot
 * holds it through its stores' flushes; the counts are those last published. */
static json_object *string_or_null(const char *s)
{
        return s ? json_object_new_string(s) : NULL;
}

/* Where things are, for the peers who may change them: the state folder,
 * its stores and the room left under it, the sockets, TCP and TLS.  None
 * of it under the catalogue's lock: set at start, or read whole. */
static void status_places(json_object *o)
{
        struct tls_creds *c = tls_creds_current();
        struct statvfs fs;
        uint64_t stores;
        char what[128];

        json_object_object_add(o, "state_dir", string_or_null(settings.state_dir));
        json_object_object_add(o, "socket", string_or_null(settings.socket_path));
        json_object_object_add(o, "nbd_socket", string_or_null(settings.nbd_socket_path));
        if (settings.nbd_tcp && settings.nbd_tcp_uri_host) { /* listening: the address bound (IPv6 in []) */
                bool v6 = strchr(settings.nbd_tcp, ':');
                char tcp[300];
                snprintf(tcp, sizeof(tcp), "%s%s%s:%u", v6 ? "[" : "", settings.nbd_tcp, v6 ? "]" : "",
                         settings.nbd_tcp_port);
                json_object_object_add(o, "nbd_tcp", json_object_new_string(tcp));
        } else
                json_object_object_add(o, "nbd_tcp", NULL);
        json_object_object_add(o, "nbd_tls",
                               json_object_new_string(nbd_tls_name(__atomic_load_n(&settings.nbd_tls, __ATOMIC_RELAXED))));
        json_object_object_add(o, "nbd_tls_credentials", c ? json_object_new_string(tls_creds_describe(c, what, sizeof(what)))
                                                           : NULL);
        tls_creds_unref(c);
        json_object_object_add(o, "stores_bytes",
                               state_stores_bytes(&stores) == 0 ? json_object_new_int64((int64_t)stores) : NULL);
        if (fstatvfs(state_fd, &fs) == 0) {
                json_object_object_add(o, "state_fs_size", json_object_new_int64((int64_t)(fs.f_blocks * fs.f_frsize)));
                json_object_object_add(o, "state_fs_free", json_object_new_int64((int64_t)(fs.f_bavail * fs.f_frsize)));
        } else {
                json_object_object_add(o, "state_fs_size", NULL);
                json_object_object_add(o, "state_fs_free", NULL);
        }
}

static int do_status(struct request *r, json_object **ret, struct failure *f)
{
        json_object *o = json_object_new_object(), *e = json_object_new_array();

        (void)f;
        json_object_object_add(o, "version", json_object_new_string(cowvol_version()));
        json_object_object_add(o, "protocol", json_object_new_int(PROTOCOL_VERSION));
        /* whole seconds, as systemd and ps give it */
        json_object_object_add(o, "uptime", json_object_new_int64((int64_t)(now_monotonic() - catalogue.started)));
        json_object_object_add(o, "volumes",
                               json_object_new_int((int)__atomic_load_n(&catalogue.n_vols, __ATOMIC_RELAXED)));
        json_object_object_add(o, "snapshots",
                               json_object_new_int((int)__atomic_load_n(&catalogue.n_snaps, __ATOMIC_RELAXED)));
        json_object_object_add(o, "clients", json_object_new_int((int)__atomic_load_n(&catalogue.n_clients, __ATOMIC_RELAXED)));
        /* the engines that serve volumes here */
        json_object_array_add(e, json_object_new_string(userspace_engine.name));
        if (cowvol_kernel_present()) /* a status poll must not fill the log */
                json_object_array_add(e, json_object_new_string(kernel_engine.name));
        json_object_object_add(o, "engines", e);
        if (catalogue.n_strays) { /* fixed at start: no lock needed */
                char dir[4096];
                snprintf(dir, sizeof(dir), "%s/" STRAY_DIR, settings.state_dir);
                json_object_object_add(o, "stray_folder", json_object_new_string(dir));
                json_object_object_add(o, "strays", json_object_new_int((int)catalogue.n_strays));
        }
        if (r->peer->admin)
                status_places(o);
        if (getenv("COWVOL_DEBUG_HEAP"))
                json_object_object_add(o, "heap_in_use", json_object_new_int64((int64_t)heap_in_use()));
        *ret = o;
        return 0;
}

static struct vol *vol_new(const char *name, const char *path, uint64_t size, uint32_t chunk, bool owned)
{
        struct vol *v = calloc(1, sizeof(*v));

        if (!v || !(v->path = strdup(path))) {
                free(v);
                return NULL;
        }
        snprintf(v->name, sizeof(v->name), "%s", name);
        new_uuid(v->uuid);
        v->size = size;
        v->chunk = chunk;
        v->owned = owned;
        v->ops = &userspace_engine;
        v->created = (int64_t)time(NULL);
        v->next_number = 1;
        return v;
}

/* Append @v to the catalogue and save; on failure nothing stays. */
static int vol_commit(struct vol *v, struct failure *f)
{
        struct vol **p = &catalogue.vols;
        int r;

        while (*p)
                p = &(*p)->next;
        *p = v;
        r = catalogue_save();
        if (r < 0) {
                *p = NULL;
                return fail(f, r, "cannot save the catalogue: %s", strerror(-r));
        }
        return 0;
}

static int do_create(struct request *r, json_object **ret, struct failure *f)
{
        char path[4096], name[NAME_MAX_LEN + 8];
        struct vol *v;
        int fd;

        /* a new file of the state folder's volumes/, never through a link */
        snprintf(path, sizeof(path), "%s/volumes/%s.img", settings.state_dir, r->name);
        snprintf(name, sizeof(name), "%s.img", r->name);
        fd = state_create("volumes", name, O_RDWR);
        if (fd < 0)
                return fail(f, fd, "cannot create %s: %s", path, strerror(-fd));
        if (ftruncate(fd, (off_t)r->size) < 0 || fsync(fd) < 0) {
                int e = errno;
                close(fd);
                state_remove(path);
                return fail(f, -e, "cannot size %s to %" PRIu64 " bytes: %s", path, r->size, strerror(e));
        }
        close(fd);
        v = vol_new(r->name, path, r->size, r->chunk, true);
        if (!v || v->ops->activate(v) < 0 || vol_commit(v, f) < 0) {
                if (v)
                        v->ops->deactivate(v);
                vol_free(v);
                state_remove(path);
                return fail(f, -EIO, "cannot create volume '%s'", r->name);
        }
        dlog(LOG_INFO_, "Created volume %s (%" PRIu64 " bytes, chunk %" PRIu32 ")", r->name, r->size, r->chunk);
        *ret = vol_view(v);
        return 0;
}

/* The image the daemon opened is the file the caller passed (check_add
 * compared it with the path; here the path cannot have been swapped). */
static int same_as_passed(const struct request *r, const struct vol *v, struct failure *f)
{
        struct stat a, b;

        if (r->peer->fd < 0)
                return 0;
        if (fstat(r->peer->fd, &a) < 0 || !v->eng || cowvol_volume_fstat(v->eng, &b) < 0 || !request_same_file(&a, &b))
                return fail(f, -EACCES, "permission denied: %s changed while it was being added, it is not the file "
                            "passed with the request", r->path);
        return 0;
}

/* A user other than root lent the daemon this image: the catalogue keeps
 * who and which file (engine-userspace.c checks it at every start). */
static int lend(const struct request *r, struct vol *v, struct failure *f)
{
        struct stat st;

        if (r->peer->uid == 0)
                return 0;
        if (fstat(r->peer->fd, &st) < 0)
                return fail(f, -errno, "cannot tell what %s is: %s", r->path, strerror(errno));
        v->lent = true;
        v->lent_uid = (uint32_t)r->peer->uid;
        v->lent_dev = (uint64_t)st.st_dev;
        v->lent_ino = (uint64_t)st.st_ino;
        return 0;
}

static int do_add(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->moving;
        struct move_report rep = {};
        int e;

        if (v && r->add_block_device) {
                if (engine_move_to_kernel(v, r->path, r->device, &rep, f) < 0)
                        return f->err;
                dlog(LOG_INFO_, "Volume %s moved to the kernel engine over %s, with its snapshots", v->name, v->path);
        } else if (v) {
                if (engine_move_to_userspace(v, r->path, f) < 0)
                        return f->err;
                dlog(LOG_INFO_, "Volume %s moved to the userspace engine over %s, with its snapshots", v->name,
                     r->path);
        } else if (r->add_block_device) {
                /* a user other than root: the device checked, not the spec again */
                if (engine_kernel_add(r->peer->uid ? r->device : r->path, r->name, r->chunk, &v, f) < 0)
                        return f->err;
                if (vol_commit(v, f) < 0) {
                        struct failure ignored = {};
                        (void)v->ops->volume_release(v, &ignored);
                        vol_free(v);
                        return f->err;
                }
                dlog(LOG_INFO_, "Added volume %s: %s under the kernel engine, as /dev/mapper/cowvol-%s", r->name,
                     v->path, r->name);
        } else {
                if (!(v = vol_new(r->name, r->path, r->size, r->chunk, false)))
                        return fail(f, -ENOMEM, "out of memory");
                dlog_library_forget();
                if ((e = v->ops->activate(v)) < 0) {
                        vol_free(v);
                        return fail(f, e, "cannot add %s: %s; nothing was changed", r->path,
                                    *dlog_library_last() ? dlog_library_last() : strerror(-e));
                }
                if (same_as_passed(r, v, f) < 0 || lend(r, v, f) < 0 || vol_commit(v, f) < 0) {
                        v->ops->deactivate(v);
                        vol_free(v);
                        return f->err;
                }
                dlog(LOG_INFO_, "Added volume %s: %s", r->name, r->path);
        }
        *ret = vol_view(v);
        if (r->moving && r->add_block_device) {
                /* what the stores of its chain took first */
                json_object *o = json_object_new_object();
                json_object_object_add(o, "chunks", json_object_new_int64((int64_t)rep.chunks));
                json_object_object_add(o, "bytes", json_object_new_int64((int64_t)rep.bytes));
                json_object_object_add(o, "stores", json_object_new_int64(rep.stores));
                json_object_object_add(*ret, "standalone", o);
        }
        return 0;
}

static int do_snap(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->v;
        struct snap *s, **p;
        int e;

        if (!(s = calloc(1, sizeof(*s))))
                return fail(f, -ENOMEM, "out of memory");
        snprintf(s->name, sizeof(s->name), "%s", r->name);
        new_uuid(s->uuid);
        s->created = (int64_t)time(NULL);
        s->size = v->size;
        s->cleanup = r->cleanup;
        s->type = r->kind;
        s->pre_number = r->pre_number;
        s->read_only = r->read_only;
        if ((r->description && !(s->description = strdup(r->description))) ||
            (r->userdata && !(s->userdata = strdup(r->userdata)))) {
                snap_free_meta(s);
                return fail(f, -ENOMEM, "out of memory");
        }
        if (v->ops->snapshot(v, s, &r->snap, f) < 0) {
                snap_free_meta(s);
                return f->err;
        }
        if (!v->next_number) /* a volume made elsewhere (engine_kernel_add) */
                v->next_number = 1;
        s->number = v->next_number++;
        for (p = &v->snaps; *p; p = &(*p)->next)
                ;
        *p = s;
        e = catalogue_save();
        if (e < 0) {
                *p = NULL;
                v->next_number--; /* nobody saw it */
                v->ops->snapshot_undo(v, s);
                snap_free_meta(s);
                return fail(f, e, "cannot save the catalogue: %s", strerror(-e));
        }
        dlog(LOG_INFO_, "Snapshot %s@%s taken (store %s, %" PRIu64 " bytes)", v->name, s->name, s->store,
             r->snap.store_bytes);
        *ret = snap_view(v, s);
        return 0;
}

static int do_resize(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->v;
        uint64_t old = v->size;
        char a[32], b[32];
        int e;

        if (v->ops->resize(v, r->size, f) < 0)
                return f->err;
        v->size = r->size;
        e = catalogue_save();
        if (e < 0) {
                struct failure ignored = {};

                /* a grown image's new space holds nothing yet: it goes */
                if (r->size > old && v->ops->resize(v, old, &ignored) == 0) {
                        v->size = old;
                        return fail(f, e, "cannot save the catalogue: %s; volume '%s' keeps its size", strerror(-e),
                                    v->name);
                }
                return fail(f, e, "volume '%s' is now %" PRIu64 " bytes, but the catalogue cannot be saved (%s); "
                            "the next start reads the size from the image", v->name, r->size, strerror(-e));
        }
        dlog(LOG_INFO_, "Volume %s resized from %s to %s (%" PRIu64 " bytes)", v->name,
             cowvol_format_size(old, a, sizeof(a)), cowvol_format_size(r->size, b, sizeof(b)), r->size);
        *ret = vol_view(v);
        return 0;
}

static int do_set(struct request *r, json_object **ret, struct failure *f)
{
        struct snap *s = r->s;
        bool was = s->read_only;
        int e;

        s->read_only = r->read_only;
        if (was != s->read_only && (e = catalogue_save()) < 0) {
                s->read_only = was;
                return fail(f, e, "cannot save the catalogue: %s", strerror(-e));
        }
        if (was != s->read_only)
                dlog(LOG_INFO_, "Snapshot %s@%s is now %s", r->v->name, s->name, s->read_only ? "read-only" : "writable");
        *ret = snap_view(r->v, s);
        return 0;
}

static int do_rename(struct request *r, json_object **ret, struct failure *f)
{
        char old[NAME_MAX_LEN + 1];
        struct vol *v = r->v;
        struct snap *s = r->s;
        int e;

        snprintf(old, sizeof(old), "%s", s ? s->name : v->name);
        if (s) {
                /* a snapshot's name is the catalogue's alone (its store is
                 * named by its uuid) */
                snprintf(s->name, sizeof(s->name), "%s", r->name);
                e = catalogue_save();
                if (e < 0) {
                        snprintf(s->name, sizeof(s->name), "%s", old);
                        return fail(f, e, "cannot save the catalogue: %s", strerror(-e));
                }
                dlog(LOG_INFO_, "Renamed snapshot %s@%s to %s@%s", v->name, old, v->name, s->name);
                *ret = snap_view(v, s);
                return 0;
        }
        if (v->ops->rename(v, r->name, f) < 0)
                return f->err;
        dlog(LOG_INFO_, "Renamed volume %s to %s (image %s)", old, v->name, v->path);
        *ret = vol_view(v);
        return 0;
}

static int do_list(struct request *r, json_object **ret, struct failure *f)
{
        json_object *o = json_object_new_object(), *a = json_object_new_array();

        (void)f;
        for (struct vol *v = catalogue.vols; v; v = v->next)
                if (!r->v || r->v == v)
                        json_object_array_add(a, vol_view(v));
        json_object_object_add(o, "volumes", a);
        *ret = o;
        return 0;
}

static int do_restore(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->v;
        struct snap *s = r->s;
        json_object *o;
        int e;

        e = v->ops->restore(v, s, r->keep, f);
        if (e < 0)
                return e;
        monitor_wake(); /* a kernel merge is the monitor's to follow */
        if (e > 0 && v->ops->users_gone)
                dlog(LOG_INFO_, "Restore of %s from %s@%s recorded: %s; it starts when they leave (or at the "
                     "daemon's start)", v->name, v->name, s->name, f->msg);
        else if (e > 0)
                dlog(LOG_INFO_, "Restore of %s from %s@%s recorded: %s; it starts at the next activation "
                     "(cowvol activate %s, or the daemon's start)", v->name, v->name, s->name, f->msg, v->name);
        else
                dlog(LOG_INFO_, "Restoring %s from %s@%s (%" PRIu64 " chunks%s)", v->name, v->name, s->name,
                     v->restore_total, v->restore_keep ? ", keeping the snapshot" : "");
        o = json_object_new_object();
        json_object_object_add(o, "started", json_object_new_boolean(e == 0));
        json_object_object_add(o, "pending", json_object_new_boolean(e > 0));
        if (e > 0) {
                json_object_object_add(o, "why", json_object_new_string(f->msg));
                json_object_object_add(o, "waits_for", json_object_new_string(v->ops->users_gone ? "users"
                                                                                                : "activation"));
        }
        json_object_object_add(o, "chunks", json_object_new_int64((int64_t)v->restore_total));
        f->err = 0; /* a restore that waits is no failure */
        *ret = o;
        return 0;
}

static int do_restore_wait(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->v;
        json_object *o;

        /* the volume may go while the lock is let go: found again by name */
        if (!r->progress)
                while (v && v->restoring && v->ops->restore_running(v) && !catalogue.stopping) {
                        pthread_cond_wait(&catalogue.changed, &catalogue.lock);
                        v = vol_find(r->volume);
                }
        if (!v)
                return fail(f, -ENOENT, "volume '%s' was removed while its restore was awaited", r->volume);
        o = json_object_new_object();
        json_object_object_add(o, "done", json_object_new_boolean(!v->restoring));
        if (v->restoring) {
                json_object_object_add(o, "percent", json_object_new_double(round(merge_percent(v) * 10) / 10));
                json_object_object_add(o, "running", json_object_new_boolean(v->ops->restore_running(v)));
                if (v->restore_pending)
                        json_object_object_add(o, "pending", json_object_new_boolean(true));
        }
        *ret = o;
        return 0;
}

static void vol_unlink(struct vol *v)
{
        struct vol **p;

        for (p = &catalogue.vols; *p; p = &(*p)->next)
                if (*p == v) {
                        *p = v->next;
                        return;
                }
}

/* cowvol activate VOLUME: its stack rebuilt from the catalogue (what
 * exists is kept), and a pending restore started */
static int do_activate(struct request *r, json_object **ret, struct failure *f)
{
        if (r->v->ops->reactivate(r->v, f) < 0)
                return f->err;
        (void)catalogue_save();
        monitor_wake();
        *ret = vol_view(r->v); /* its "restore" says whether a merge still waits */
        return 0;
}

int snapshot_remove(struct vol *v, struct snap *s, struct failure *f)
{
        struct snap **p;
        int e;

        /* the engine lets go first (a kernel snapshot's devices: a mounted
         * one stays, whole) */
        if (v->ops->snapshot_release(v, s, f) < 0)
                return f->err;
        for (p = &v->snaps; *p != s; p = &(*p)->next)
                ;
        *p = s->next;
        e = catalogue_save();
        if (e < 0) {
                *p = s;
                v->ops->snapshot_release_undo(v, s);
                return fail(f, e, "cannot save the catalogue: %s", strerror(-e));
        }
        v->ops->snapshot_drop(v, s);
        dlog(LOG_INFO_, "Removed snapshot %s@%s", v->name, s->name);
        snap_free_meta(s);
        return 0;
}

static int rm_volume(struct vol *v, struct failure *f)
{
        int e;

        if (v->ops->volume_release(v, f) < 0)
                return f->err;
        vol_unlink(v);
        e = catalogue_save();
        if (e < 0) {
                v->next = catalogue.vols;
                catalogue.vols = v;
                return fail(f, e, "cannot save the catalogue: %s", strerror(-e));
        }
        v->ops->volume_drop(v); /* and its image, if create made it */
        dlog(LOG_INFO_, "Removed volume %s", v->name);
        vol_free(v);
        return 0;
}

/* What check_rm found, in order; each durable before the next.  Checked
 * first, all of them, so only the engine or the disk can fail one: what
 * went before it stays gone, and the error says so. */
static int do_rm(struct request *r, json_object **ret, struct failure *f)
{
        json_object *o = json_object_new_object(), *gone = json_object_new_array();
        char name[NAME_MAX_LEN * 2 + 2];

        for (size_t i = 0; i < r->n_items; i++) {
                struct vol *v = r->items[i].v;
                struct snap *s = r->items[i].s;

                snprintf(name, sizeof(name), "%s%s%s", v->name, s ? "@" : "", s ? s->name : "");
                if ((s ? snapshot_remove(v, s, f) : rm_volume(v, f)) < 0) {
                        if (json_object_array_length(gone)) {
                                char why[sizeof(f->msg)];
                                snprintf(why, sizeof(why), "%s", f->msg);
                                fail(f, f->err, "%s (%zu of %zu removed before it, the first %s)", why,
                                     json_object_array_length(gone), r->n_items,
                                     json_object_get_string(json_object_array_get_idx(gone, 0)));
                        }
                        json_object_put(o);
                        json_object_put(gone);
                        return f->err;
                }
                json_object_array_add(gone, json_object_new_string(name));
        }
        json_object_object_add(o, "removed", gone);
        *ret = o;
        return 0;
}

/* --- data: cat and write run without the lock, holding references ------------- */

/* The descriptor the client passed, opened for @out (cat) or not (write),
 * a buffer, references on the volume and snapshot, and the lock let go. */
static uint8_t *transfer_begin(struct request *r, struct peer_fd *p, bool out, struct failure *f)
{
        int e = peer_fd_open(p, r->peer->fd, out);
        uint8_t *buf;

        if (e < 0) {
                if (e == -EBADF)
                        fail(f, e, "the descriptor passed with %s is not open for %s", r->op_name,
                             out ? "writing" : "reading");
                else
                        fail(f, e, "cannot use the descriptor passed with %s: %s", r->op_name, strerror(-e));
                return NULL;
        }
        if (!(buf = malloc(IO_BUF))) {
                peer_fd_close(p);
                fail(f, -ENOMEM, "out of memory");
                return NULL;
        }
        {
                char who[64];
                snprintf(who, sizeof(who), "uid %u pid %d", (unsigned)r->peer->uid, (int)r->peer->pid);
                r->user = vol_user_add(r->v, r->s, r->op_name, who);
        }
        pthread_mutex_unlock(&catalogue.lock);
        return buf;
}

static void transfer_end(struct request *r, struct peer_fd *p, uint8_t *buf)
{
        peer_fd_close(p);
        pthread_mutex_lock(&catalogue.lock);
        vol_user_remove(r->v, r->s, r->user);
        r->user = NULL;
        free(buf);
}

static int answer_bytes(uint64_t done, json_object **ret)
{
        json_object *o = json_object_new_object();

        json_object_object_add(o, "bytes", json_object_new_int64((int64_t)done));
        *ret = o;
        return 0;
}

static int do_cat(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->v;
        struct snap *s = r->s;
        uint64_t done = 0, len = (uint64_t)r->length, off = (uint64_t)r->offset;
        struct peer_fd out;
        uint8_t *buf = transfer_begin(r, &out, true, f);
        int e = 0;

        if (!buf)
                return f->err;
        while (done < len && !catalogue.stopping) {
                size_t n = len - done < IO_BUF ? (size_t)(len - done) : IO_BUF, moved = 0;
                e = v->ops->pread(v, s, buf, n, off + done);
                if (e < 0)
                        break;
                e = peer_fd_write(&out, buf, n, &moved);
                done += moved; /* all of it, or what went before a failure */
                if (e < 0)
                        break;
        }
        transfer_end(r, &out, buf);
        if (e == -ESTALE)
                return fail(f, e, "snapshot %s@%s is invalid: %s", v->name, s->name,
                            s->reason ? s->reason : "its store is unusable");
        if (e == -ETIMEDOUT)
                return fail(f, e, "cat stopped after %" PRIu64 " bytes: nothing was read for %u s (client_timeout)",
                            done, settings.client_timeout);
        if (catalogue.stopping || e == -ESHUTDOWN)
                return fail(f, -ESHUTDOWN, "cat stopped after %" PRIu64 " bytes: the daemon is stopping", done);
        if (e < 0)
                return fail(f, e, "cat stopped after %" PRIu64 " bytes: %s", done, strerror(-e));
        return answer_bytes(done, ret);
}

static int do_write(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->v;
        struct snap *s = r->s;
        uint64_t done = 0, len = (uint64_t)r->length, off = (uint64_t)r->offset;
        struct peer_fd in;
        bool short_input = false;
        uint8_t *buf = transfer_begin(r, &in, false, f);
        int e = 0;

        if (!buf)
                return f->err;
        while (done < len) {
                size_t want = len - done < IO_BUF ? (size_t)(len - done) : IO_BUF, got = 0;
                e = peer_fd_read(&in, buf, want, &got);
                if (got > 0) {
                        int w = v->ops->pwrite(v, s, buf, got, off + done);
                        if (w < 0)
                                e = w;
                        else
                                done += got;
                }
                if (e < 0)
                        break;
                if (got < want) {
                        short_input = true;
                        break;
                }
        }
        /* acknowledged means durable: the image and the stores */
        if (done > 0) {
                int q = v->ops->flush(v);
                if (e >= 0)
                        e = q;
        }
        transfer_end(r, &in, buf);
        if (v->ops->note_reasons(v))
                catalogue_save();
        if (short_input)
                return fail(f, -EIO, "the input ended after %" PRIu64 " of %" PRIu64 " bytes (all written)", done,
                            len);
        if (e == -ETIMEDOUT)
                return fail(f, e, "write stopped after %" PRIu64 " of %" PRIu64 " bytes (all written): nothing came "
                            "for %u s (client_timeout)", done, len, settings.client_timeout);
        if (e == -ESHUTDOWN)
                return fail(f, e, "write stopped after %" PRIu64 " of %" PRIu64 " bytes (all written): the daemon "
                            "is stopping", done, len);
        if (e == -ENOLINK)
                return fail(f, e, "cannot write %s: the store of its newest snapshot cannot be opened and older "
                            "snapshots read through it (cowvol list says which); take a snapshot first (cowvol "
                            "snap %s), remove the older ones, or bring the store back", v->name, v->name);
        if (e < 0)
                return fail(f, e, "write failed after %" PRIu64 " bytes: %s", done, strerror(-e));
        return answer_bytes(done, ret);
}

static int diff_range(uint64_t off, uint64_t len, void *ud)
{
        json_object *r = json_object_new_object();

        json_object_object_add(r, "offset", json_object_new_int64((int64_t)off));
        json_object_object_add(r, "length", json_object_new_int64((int64_t)len));
        json_object_array_add(ud, r);
        return 0;
}

static int do_diff(struct request *r, json_object **ret, struct failure *f)
{
        struct vol *v = r->v;
        struct snap *s = r->s;
        json_object *o, *a = json_object_new_array();
        int64_t total = 0;
        int e;

        e = v->ops->diff(v, s, diff_range, a);
        if (e < 0) {
                json_object_put(a);
                if (e == -ESTALE)
                        return fail(f, e, "snapshot %s@%s is invalid: %s", v->name, s->name,
                                    s->reason ? s->reason : "its store is unusable");
                return fail(f, e, "diff failed: %s", strerror(-e));
        }
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *len;
                json_object_object_get_ex(json_object_array_get_idx(a, i), "length", &len);
                total += json_object_get_int64(len);
        }
        o = json_object_new_object();
        json_object_object_add(o, "chunk_size", json_object_new_int64(v->chunk));
        json_object_object_add(o, "ranges", a);
        json_object_object_add(o, "bytes", json_object_new_int64(total));
        *ret = o;
        return 0;
}

/* The URI libnbd and qemu take: nbd+unix:///NAME?socket=PATH.  Names are
 * [A-Za-z0-9_.+-] and '@', all allowed in a URI path; the socket path is
 * percent-encoded but for unreserved characters and '/'. */
static char *nbd_uri(const char *name, const char *sock)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(sock), k = 0;
        char *enc = malloc(n * 3 + 1), *uri;

        if (!enc)
                return NULL;
        for (const unsigned char *p = (const unsigned char *)sock; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    strchr("-._~/", *p))
                        enc[k++] = (char)*p;
                else
                        enc[k++] = '%', enc[k++] = hex[*p >> 4], enc[k++] = hex[*p & 15];
        }
        enc[k] = '\0';
        if (asprintf(&uri, "nbd+unix:///%s?socket=%s", name, enc) < 0)
                uri = NULL;
        free(enc);
        return uri;
}

static int do_export(struct request *r, json_object **ret, struct failure *f)
{
        json_object *o = json_object_new_object();
        char *uri;

        json_object_object_add(o, "name", json_object_new_string(r->target));
        json_object_object_add(o, "read_only", json_object_new_boolean(settings_export_read_only(r->s != NULL)));
        /* the Unix socket, and TCP when configured */
        if (settings.nbd_socket_path) {
                if (!(uri = nbd_uri(r->target, settings.nbd_socket_path))) {
                        json_object_put(o);
                        return fail(f, -ENOMEM, "out of memory");
                }
                json_object_object_add(o, "uri", json_object_new_string(uri));
                json_object_object_add(o, "socket", json_object_new_string(settings.nbd_socket_path));
                free(uri);
        }
        if (settings.nbd_tcp_uri_host) {
                if (asprintf(&uri, "nbd://%s:%u/%s", settings.nbd_tcp_uri_host, settings.nbd_tcp_port, r->target) < 0) {
                        json_object_put(o);
                        return fail(f, -ENOMEM, "out of memory");
                }
                json_object_object_add(o, "tcp_uri", json_object_new_string(uri));
                free(uri);
        }
        *ret = o;
        return 0;
}

static int do_cleanup(struct request *r, json_object **ret, struct failure *f)
{
        json_object *o, *a = json_object_new_array();
        char by[64];
        int n;

        if (r->peer->pid == getpid())
                snprintf(by, sizeof(by), "the clock");
        else
                snprintf(by, sizeof(by), "cowvol cleanup%s, pid %d", r->dry_run ? " --dry-run" : "",
                         (int)r->peer->pid);
        n = schedule_cleanup(r->v, (int64_t)time(NULL), r->dry_run, by, a);
        if (n < 0) {
                json_object_put(a);
                return fail(f, n, "cleanup of %s failed: %s", r->v->name, strerror(-n));
        }
        o = json_object_new_object();
        json_object_object_add(o, "volume", json_object_new_string(r->v->name));
        json_object_object_add(o, "dry_run", json_object_new_boolean(r->dry_run));
        json_object_object_add(o, "removed", json_object_new_int(n));
        json_object_object_add(o, "snapshots", a);
        *ret = o;
        return 0;
}

static json_object *schedule_view(const struct vol *v)
{
        json_object *o = json_object_new_object();

        json_object_object_add(o, "volume", json_object_new_string(v->name));
        json_object_object_add(o, "on", json_object_new_boolean(v->schedule.on));
        if (v->schedule.on) {
                schedule_json(&v->schedule, o);
                json_object_object_add(o, "timeline", json_object_new_boolean(schedule_timeline(&v->schedule)));
        }
        /* what the clock last read: tests wait for it to pass a time */
        json_object_object_add(o, "clock", json_object_new_int64(schedule_clock_seen()));
        json_object_object_add(o, "clock_rounds", json_object_new_int64((int64_t)schedule_clock_rounds()));
        return o;
}

static int do_schedule(struct request *r, json_object **ret, struct failure *f)
{
        size_t n = json_object_array_length(r->volumes);
        bool change = r->off;
        struct schedule *old;
        json_object *o, *a;
        int e;

        for (unsigned k = 0; k < 10; k++)
                change |= r->sched_given[k];
        if (change) {
                if (!(old = calloc(n, sizeof(*old))))
                        return fail(f, -ENOMEM, "out of memory");
                for (size_t i = 0; i < n; i++) {
                        struct vol *v = vol_find(json_object_get_string(json_object_array_get_idx(r->volumes, i)));
                        int64_t x[10];
                        old[i] = v->schedule;
                        if (r->off) {
                                v->schedule.on = false;
                                continue;
                        }
                        /* on top of the schedule it has, else snapper's defaults */
                        if (!v->schedule.on)
                                cleanup_policy_default(&v->schedule.policy);
                        x[0] = v->schedule.policy.hourly.max, x[1] = v->schedule.policy.daily.max;
                        x[2] = v->schedule.policy.weekly.max, x[3] = v->schedule.policy.monthly.max;
                        x[4] = v->schedule.policy.quarterly.max, x[5] = v->schedule.policy.yearly.max;
                        x[6] = v->schedule.policy.number.max, x[7] = v->schedule.policy.number_important.max;
                        x[8] = v->schedule.policy.timeline_min_age, x[9] = v->schedule.on ? v->schedule.free_limit : 0;
                        for (unsigned k = 0; k < 10; k++)
                                if (r->sched_given[k])
                                        x[k] = r->sched[k];
                        schedule_set(&v->schedule, x);
                        v->schedule.changes = old[i].changes + 1;
                }
                e = catalogue_save();
                for (size_t i = n; e < 0 && i-- > 0;) /* undone newest first: a volume named twice */
                        vol_find(json_object_get_string(json_object_array_get_idx(r->volumes, i)))->schedule = old[i];
                for (size_t i = 0; e >= 0 && i < n; i++) {
                        struct vol *v = vol_find(json_object_get_string(json_object_array_get_idx(r->volumes, i)));
                        if (r->off) {
                                if (old[i].on)
                                        dlog(LOG_INFO_, "Schedule of %s stopped", v->name);
                        } else {
                                const struct cleanup_policy *p = &v->schedule.policy;
                                dlog(LOG_INFO_, "Schedule of %s: hourly %u daily %u weekly %u monthly %u "
                                     "quarterly %u yearly %u number %u number-important %u min-age %" PRId64
                                     " s free-limit %u %%", v->name, p->hourly.max, p->daily.max, p->weekly.max,
                                     p->monthly.max, p->quarterly.max, p->yearly.max, p->number.max,
                                     p->number_important.max, p->timeline_min_age, v->schedule.free_limit);
                        }
                }
                free(old);
                if (e < 0)
                        return fail(f, e, "cannot save the catalogue: %s", strerror(-e));
                schedule_wake();
        }
        o = json_object_new_object();
        a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
                json_object_array_add(a, schedule_view(vol_find(json_object_get_string(
                                                 json_object_array_get_idx(r->volumes, i)))));
        json_object_object_add(o, "schedules", a);
        *ret = o;
        return 0;
}

static int (*const act[_OP_MAX])(struct request *r, json_object **ret, struct failure *f) = {
        [OP_STATUS] = do_status,   [OP_CREATE] = do_create,           [OP_ADD] = do_add,
        [OP_SNAP] = do_snap,       [OP_LIST] = do_list,               [OP_RESTORE] = do_restore,
        [OP_RESTORE_WAIT] = do_restore_wait, [OP_RM] = do_rm,          [OP_ACTIVATE] = do_activate,
        [OP_CAT] = do_cat,         [OP_WRITE] = do_write,             [OP_DIFF] = do_diff,
        [OP_EXPORT] = do_export,   [OP_CLEANUP] = do_cleanup,         [OP_SCHEDULE] = do_schedule,
        [OP_RESIZE] = do_resize,   [OP_RENAME] = do_rename,           [OP_SET] = do_set,
};

void handle_request(const char *op, json_object *args, struct peer *p, json_object **ret_result, struct failure *f)
{
        struct request r;
        json_object *result = NULL;

        if (request_parse(op, args, p, &r, f) < 0) {
                *ret_result = NULL;
                return;
        }
        dlog_peer(p->uid, p->pid); /* what it changes is logged with who asked */
        if (r.unlocked) {
                if (request_check(&r, f) >= 0)
                        (void)act[r.op](&r, &result, f);
        } else {
                pthread_mutex_lock(&catalogue.lock);
                if (request_check(&r, f) >= 0)
                        (void)act[r.op](&r, &result, f);
                counts_publish(); /* after any change, and after one undone */
                pthread_mutex_unlock(&catalogue.lock);
        }
        if (f->err) {
                json_object_put(result);
                result = NULL;
        }
        dlog_peer((uid_t)-1, 0);
        free(r.items);
        if (f->err == -EMFILE || f->err == -ENFILE)
                limit_named(f);
        *ret_result = result;
}
