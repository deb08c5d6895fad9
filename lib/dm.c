/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one libdevmapper wrapper: every device-mapper call of cowvol is here.
 *
 * Tasks follow the sequence libdevmapper documents (and cryptsetup's
 * lib/libdevmapper.c uses): create a task, name it, add targets, run, read
 * the answer, destroy.  Devices are created empty, loaded, then resumed, so
 * the caller decides when a table goes live (LVM's order for snapshots).
 * Resume and remove carry a udev cookie and wait for udev; with
 * DM_DISABLE_UDEV=1 in the environment (no udev) libdevmapper makes the
 * /dev/mapper nodes itself, and the wait only flushes that.  Create carries
 * none: the kernel sends no uevent with a cookie for a device created
 * without a table (only resume, remove and rename do, and libdevmapper
 * completes a cookie itself only for those), so a wait after a create would
 * never end where udev runs; the node comes with the resume.  The hidden
 * layers (-real, -cow) ask udev to skip their rules, as LVM's do, so no one
 * probes or mounts them.
 *
 * libdevmapper is not thread-safe (one control descriptor, a list of node
 * operations, a count of suspended devices, all global; dmeventd serialises
 * it with a mutex) and cowvold runs a thread per client: every call here
 * holds one recursive lock, so a composite step (create, load, resume, and
 * the undo of a failure) runs whole.
 *
 * libdevmapper's own messages go to the cowvol log at debug level, never to
 * stderr; run() logs every failure at error level with what was asked (an
 * info on a missing device is no error to us).
 */
#include <fcntl.h>
#include <libdevmapper.h>
#include <linux/dm-ioctl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static void dm_log(int level, const char *file, int line, int dm_errno, const char *f, ...)
        __attribute__((format(printf, 5, 6)));
static void dm_log(int level, const char *file, int line, int dm_errno, const char *f, ...)
{
        char msg[512];
        va_list ap;

        (void)file, (void)line, (void)dm_errno, (void)level;
        va_start(ap, f);
        vsnprintf(msg, sizeof(msg), f, ap);
        va_end(ap);
        cvlog(COWVOL_LOG_DEBUG, "libdevmapper: %s", msg);
}

static pthread_mutex_t dm_mutex = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static pthread_once_t dm_once = PTHREAD_ONCE_INIT;

static void dm_setup(void)
{
        dm_log_with_errno_init(dm_log);
}

/* Every use of libdevmapper holds this (set up once). */
static void dm_lock(void)
{
        (void)pthread_once(&dm_once, dm_setup);
        (void)pthread_mutex_lock(&dm_mutex);
}

static void dm_unlock(void)
{
        (void)pthread_mutex_unlock(&dm_mutex);
}

/* 0 when device-mapper answers here; -ENODEV otherwise, logged when @log. */
int cvdm_probe(bool log)
{
        struct stat st;
        char v[64];
        int ok;

        if (stat("/dev/mapper/control", &st) < 0)
                return !log ? -ENODEV
                            : log_err(-ENODEV, "No device-mapper here (no /dev/mapper/control): the kernel engine, "
                                               "which serves block devices, needs the dm-mod and dm-snapshot "
                                               "modules (modprobe dm-snapshot)");
        dm_lock();
        ok = dm_driver_version(v, sizeof(v));
        dm_unlock();
        if (!ok)
                return !log ? -ENODEV : log_err(-ENODEV, "The device-mapper driver does not answer");
        return 0;
}

int cvdm_available(void)
{
        return cvdm_probe(true);
}

static void task_free(struct dm_task *t)
{
        dm_task_destroy(t);
        dm_unlock();
}

/* A task of @type on @name, or NULL (logged); it holds the lock until
 * task_free(). */
static struct dm_task *task(int type, const char *name)
{
        struct dm_task *t;

        dm_lock();
        t = dm_task_create(type);
        if (!t) {
                dm_unlock();
                log_err(-ENOMEM, "libdevmapper: cannot create a task");
                return NULL;
        }
        if (name && !dm_task_set_name(t, name)) {
                task_free(t);
                log_err(-EINVAL, "Device-mapper name '%s' is not acceptable", name);
                return NULL;
        }
        return t;
}

/* Run @t; on failure a negative errno, logged with @what. */
static int run(struct dm_task *t, const char *what, const char *name)
{
        int e;

        if (dm_task_run(t))
                return 0;
        e = dm_task_get_errno(t);
        if (e <= 0)
                e = EIO;
        return log_err(-e, "Device-mapper %s of %s failed: %s", what, name ? name : "", strerror(e));
}

/* Run @t with a udev cookie and wait for udev (or for the nodes libdm made). */
static int run_udev(struct dm_task *t, const char *what, const char *name, bool hidden)
{
        uint32_t cookie = 0;
        uint16_t flags = hidden ? DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG | DM_UDEV_DISABLE_DISK_RULES_FLAG |
                                          DM_UDEV_DISABLE_OTHER_RULES_FLAG
                                : 0;
        int r;

        if (!dm_task_set_cookie(t, &cookie, flags))
                return log_err(-EIO, "libdevmapper: cannot set a udev cookie for %s", name);
        r = run(t, what, name);
        (void)dm_udev_wait(cookie);
        return r;
}

static int add_targets(struct dm_task *t, const struct cvdm_target *tg, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!dm_task_add_target(t, tg[i].start, tg[i].len, tg[i].type, tg[i].params))
                        return log_err(-ENOMEM, "libdevmapper: cannot add a %s target", tg[i].type);
        return 0;
}

int cvdm_create(const char *name, const char *uuid, const struct cvdm_target *tg, size_t n, bool activate,
                bool hidden)
{
        struct dm_task *t;
        int r;

        dm_lock();
        if (!(t = task(DM_DEVICE_CREATE, name))) {
                dm_unlock();
                return -ENOMEM;
        }
        if (uuid && !dm_task_set_uuid(t, uuid)) {
                task_free(t);
                dm_unlock();
                return log_err(-EINVAL, "Device-mapper uuid '%s' is not acceptable", uuid);
        }
        /* no udev cookie: nothing would ever complete it (see the top) */
        r = run(t, "create", name);
        task_free(t);
        /* a failed create made nothing: what has that name is not ours */
        if (r >= 0 && n) {
                if ((r = cvdm_reload(name, tg, n)) >= 0 && activate)
                        r = cvdm_resume(name, hidden);
                if (r < 0)
                        (void)cvdm_remove(name, hidden);
        }
        dm_unlock();
        return r;
}

int cvdm_reload(const char *name, const struct cvdm_target *tg, size_t n)
{
        struct dm_task *t = task(DM_DEVICE_RELOAD, name);
        int r;

        if (!t)
                return -ENOMEM;
        r = add_targets(t, tg, n);
        if (r >= 0)
                r = run(t, "table load", name);
        task_free(t);
        return r;
}

int cvdm_suspend(const char *name, bool lockfs)
{
        struct dm_task *t = task(DM_DEVICE_SUSPEND, name);
        int r;

        if (!t)
                return -ENOMEM;
        /* lockfs freezes a mounted filesystem; queued I/O is always flushed */
        if (!lockfs && !dm_task_skip_lockfs(t)) {
                task_free(t);
                return -ENOMEM;
        }
        r = run(t, "suspend", name);
        task_free(t);
        return r;
}

int cvdm_resume(const char *name, bool hidden)
{
        struct dm_task *t = task(DM_DEVICE_RESUME, name);
        int r;

        if (!t)
                return -ENOMEM;
        r = run_udev(t, "resume", name, hidden);
        task_free(t);
        return r;
}

int cvdm_remove(const char *name, bool hidden)
{
        struct dm_task *t = task(DM_DEVICE_REMOVE, name);
        int r;

        if (!t)
                return -ENOMEM;
        /* a short-lived opener (udev's blkid) may hold it a moment */
        dm_task_retry_remove(t);
        r = run_udev(t, "remove", name, hidden);
        task_free(t);
        return r;
}

int cvdm_info(const char *name, struct cvdm_info *ret)
{
        struct dm_task *t = task(DM_DEVICE_INFO, name);
        struct dm_info info;
        const char *uuid;
        int r;

        memset(ret, 0, sizeof(*ret));
        if (!t)
                return -ENOMEM;
        r = run(t, "info", name);
        if (r >= 0 && !dm_task_get_info(t, &info))
                r = log_err(-EIO, "libdevmapper: no info for %s", name);
        if (r >= 0 && info.exists) {
                ret->exists = true;
                ret->suspended = info.suspended;
                ret->live_table = info.live_table;
                ret->inactive_table = info.inactive_table;
                ret->open_count = info.open_count;
                ret->event_nr = info.event_nr;
                ret->major = info.major;
                ret->minor = info.minor;
                uuid = dm_task_get_uuid(t);
                snprintf(ret->uuid, sizeof(ret->uuid), "%s", uuid ? uuid : "");
        }
        task_free(t);
        return r;
}

/* The first target of @name's live table (@status: its status line). */
static int first_target(int type, const char *name, char *ret_type, size_t tlen, char *ret_params, size_t plen,
                        uint64_t *ret_len)
{
        struct dm_task *t = task(type, name);
        uint64_t start = 0, len = 0;
        char *ttype = NULL, *params = NULL;
        int r;

        if (!t)
                return -ENOMEM;
        r = run(t, type == DM_DEVICE_STATUS ? "status" : "table", name);
        if (r >= 0) {
                (void)dm_get_next_target(t, NULL, &start, &len, &ttype, &params);
                if (!ttype)
                        r = -ENODATA; /* no live table */
        }
        if (r >= 0) {
                if (ret_type)
                        snprintf(ret_type, tlen, "%s", ttype);
                if (ret_params)
                        snprintf(ret_params, plen, "%s", params ? params : "");
                if (ret_len)
                        *ret_len = len;
        }
        task_free(t);
        return r;
}

int cvdm_status(const char *name, char *ret_type, size_t tlen, char *ret_params, size_t plen, uint64_t *ret_len)
{
        return first_target(DM_DEVICE_STATUS, name, ret_type, tlen, ret_params, plen, ret_len);
}

int cvdm_table(const char *name, char *ret_type, size_t tlen, char *ret_params, size_t plen, uint64_t *ret_len)
{
        return first_target(DM_DEVICE_TABLE, name, ret_type, tlen, ret_params, plen, ret_len);
}

int cvdm_list(int (*fn)(const char *name, const struct cvdm_info *info, void *ud), void *ud)
{
        struct dm_task *t = task(DM_DEVICE_LIST, NULL);
        struct dm_names *names;
        int r;

        if (!t)
                return -ENOMEM;
        r = run(t, "list", NULL);
        if (r >= 0 && (names = dm_task_get_names(t)) && names->dev) {
                for (unsigned next = 0;; next = names->next) {
                        struct cvdm_info info;
                        names = (struct dm_names *)((char *)names + next);
                        /* gone since the list: skip it */
                        if (cvdm_info(names->name, &info) >= 0 && info.exists && (r = fn(names->name, &info, ud)) != 0)
                                break;
                        if (!names->next)
                                break;
                }
        }
        task_free(t);
        return r < 0 ? r : 0;
}

int cvdm_wait_event(const char *name, uint32_t event_nr)
{
        struct dm_task *t = task(DM_DEVICE_WAITEVENT, name);
        int r;

        if (!t)
                return -ENOMEM;
        if (!dm_task_set_event_nr(t, event_nr)) {
                task_free(t);
                return -ENOMEM;
        }
        /* the only call that may block for long: not under the lock (the
         * control device is open already, task() ran under it) */
        dm_unlock();
        r = run(t, "wait for an event", name);
        dm_lock();
        task_free(t);
        return r;
}

/* LVM's escaping: a hyphen inside a name is doubled, so single hyphens
 * separate the parts.  @k counts every character, written or not (past
 * @len nothing is written), so a name too long is seen, never cut. */
static size_t escape(char *out, size_t len, size_t k, const char *s)
{
        for (; *s; s++) {
                if (*s == '-') {
                        if (k + 1 < len)
                                out[k] = '-';
                        k++;
                }
                if (k + 1 < len)
                        out[k] = *s;
                k++;
        }
        return k;
}

int cvdm_name(char *out, size_t len, const char *vol, const char *snap, const char *layer)
{
        static const char prefix[] = "cowvol-";
        size_t k = sizeof(prefix) - 1;

        if (len <= k)
                return -ENAMETOOLONG;
        memcpy(out, prefix, k);
        k = escape(out, len, k, vol);
        if (snap) {
                if (k + 1 < len)
                        out[k] = '-';
                k = escape(out, len, k + 1, snap);
        }
        if (layer) {
                if (k + 1 < len)
                        out[k] = '-';
                k = escape(out, len, k + 1, layer);
        }
        out[k < len ? k : len - 1] = '\0';
        /* the kernel's limit: DM_NAME_LEN 128 with its NUL */
        return k >= len || k >= 128 ? -ENAMETOOLONG : 0;
}

/* --- events ------------------------------------------------------------------- */

/* Device-mapper raises an event when a table says something changed (a
 * snapshot invalidated, a merge ended...).  libdevmapper waits on one
 * device at a time; the control device's poll (DM_DEV_ARM_POLL, Linux
 * 4.13) wakes for any of them, so one descriptor serves the monitor. */
int cvdm_event_open(void)
{
        int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);

        return fd < 0 ? -errno : fd;
}

int cvdm_event_arm(int fd)
{
        struct dm_ioctl io;

        memset(&io, 0, sizeof(io));
        io.version[0] = DM_VERSION_MAJOR;
        io.data_size = sizeof(io);
        io.data_start = sizeof(io);
        return ioctl(fd, DM_DEV_ARM_POLL, &io) < 0 ? -errno : 0;
}
