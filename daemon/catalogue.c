/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The catalogue: every volume and snapshot, in STATE_DIR/catalogue.json.
 * It is the truth after a restart.  Saves are atomic: the whole catalogue
 * goes to a temporary file, which is flushed, renamed over the old one, and
 * the folder flushed; a crash leaves either the old or the new catalogue.
 * A store is made before the catalogue names it (snap) and removed after the
 * catalogue stopped naming it (rm, the end of a restore): a crash between
 * leaves a store no snapshot owns, which the next start removes.  So with
 * an image that create made before the catalogue named it: the start
 * removes it while it holds no data (a create cut short); one with data
 * (an rm of a volume cut short) stays, with a warning, for the
 * administrator to remove or `cowvol add`.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include <json-c/json.h>

#include "../common/util.h"
#include "catalogue.h"
#include "config.h"
#include "engine.h"
#include "log.h"

#define CATALOGUE "catalogue.json"

struct catalogue catalogue = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .changed = PTHREAD_COND_INITIALIZER,
};

void new_uuid(char out[UUID_LEN + 1])
{
        uuid_t u;

        uuid_generate_random(u);
        uuid_unparse_lower(u, out);
}

struct vol *vol_find(const char *name)
{
        for (struct vol *v = catalogue.vols; v; v = v->next)
                if (strcmp(v->name, name) == 0)
                        return v;
        return NULL;
}

struct snap *snap_find(const struct vol *v, const char *name)
{
        for (struct snap *s = v->snaps; s; s = s->next)
                if (strcmp(s->name, name) == 0)
                        return s;
        return NULL;
}

struct snap *snap_find_uuid(const struct vol *v, const char *uuid)
{
        for (struct snap *s = v->snaps; s; s = s->next)
                if (strcmp(s->uuid, uuid) == 0)
                        return s;
        return NULL;
}

void snap_free_meta(struct snap *s)
{
        if (!s)
                return;
        free(s->store);
        free(s->reason);
        free(s);
}

void vol_free(struct vol *v)
{
        if (!v)
                return;
        while (v->snaps) {
                struct snap *n = v->snaps->next;
                snap_free_meta(v->snaps);
                v->snaps = n;
        }
        free(v->path);
        free(v->source);
        free(v);
}

bool name_valid(const char *s, char *why, size_t len)
{
        size_t n = strlen(s);

        if (n == 0) {
                snprintf(why, len, "a name cannot be empty");
                return false;
        }
        if (n > NAME_MAX_LEN) {
                snprintf(why, len, "name is %zu characters long; at most %d", n, NAME_MAX_LEN);
                return false;
        }
        if (s[0] == '.' || s[0] == '-') {
                snprintf(why, len, "name '%s' starts with '%c'", s, s[0]);
                return false;
        }
        for (const char *p = s; *p; p++) {
                unsigned char c = (unsigned char)*p;
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                      c == '.' || c == '+' || c == '-')) {
                        if (c < 0x20 || c == 0x7f)
                                snprintf(why, len, "name contains the control character 0x%02x", c);
                        else if (c >= 0x80)
                                snprintf(why, len, "name contains the byte 0x%02x (allowed: ASCII letters, digits, "
                                         "_ . + -)", c);
                        else
                                snprintf(why, len, "name contains '%c' (allowed: letters, digits, _ . + -)", c);
                        return false;
                }
        }
        return true;
}

/* --- reading ---------------------------------------------------------------- */

static const char *jstr(json_object *o, const char *k)
{
        json_object *x;

        return json_object_object_get_ex(o, k, &x) && json_object_is_type(x, json_type_string)
                       ? json_object_get_string(x)
                       : NULL;
}

static bool jint(json_object *o, const char *k, int64_t *ret)
{
        json_object *x;

        if (!json_object_object_get_ex(o, k, &x) || !json_object_is_type(x, json_type_int))
                return false;
        *ret = json_object_get_int64(x);
        return true;
}

static int load_snap(struct vol *v, json_object *o)
{
        struct snap *s = calloc(1, sizeof(*s));
        const char *name = jstr(o, "name"), *uuid = jstr(o, "uuid"), *store = jstr(o, "store"),
                   *reason = jstr(o, "reason");
        char why[128];

        if (!s)
                return -ENOMEM;
        if (!name || !uuid || !store || strlen(uuid) != UUID_LEN || !name_valid(name, why, sizeof(why)) ||
            !jint(o, "created", &s->created)) {
                free(s);
                return dlog_errno(-EINVAL, "Catalogue: a snapshot of volume %s is malformed", v->name);
        }
        snprintf(s->name, sizeof(s->name), "%s", name);
        snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
        s->store = strdup(store);
        s->reason = reason ? strdup(reason) : NULL;
        {
                json_object *x;
                s->store_device = json_object_object_get_ex(o, "store_device", &x) && json_object_get_boolean(x);
        }
        /* keep the order of the file: append */
        struct snap **p = &v->snaps;
        while (*p)
                p = &(*p)->next;
        *p = s;
        return 0;
}

static int load_vol(json_object *o, const struct engine_ops *const *engines, struct vol ***tail)
{
        struct vol *v = calloc(1, sizeof(*v));
        const char *name = jstr(o, "name"), *uuid = jstr(o, "uuid"), *path = jstr(o, "path");
        json_object *snaps, *owned, *restore;
        int64_t size, chunk;
        char why[128];
        int r;

        if (!v)
                return -ENOMEM;
        if (!name || !uuid || !path || !name_valid(name, why, sizeof(why)) || strlen(uuid) != UUID_LEN ||
            !jint(o, "size", &size) || !jint(o, "chunk_size", &chunk) || !jint(o, "created", &v->created) ||
            size <= 0 || chunk < (int64_t)COWVOL_CHUNK_MIN || chunk > (int64_t)COWVOL_CHUNK_MAX) {
                free(v);
                return dlog_errno(-EINVAL, "Catalogue: a volume entry is malformed");
        }
        snprintf(v->name, sizeof(v->name), "%s", name);
        snprintf(v->uuid, sizeof(v->uuid), "%s", uuid);
        v->path = strdup(path);
        v->size = (uint64_t)size;
        v->chunk = (uint32_t)chunk;
        v->owned = json_object_object_get_ex(o, "owned", &owned) && json_object_get_boolean(owned);
        {
                const char *engine = jstr(o, "engine"), *source = jstr(o, "source");
                /* no engine: written before there was a second one */
                for (size_t i = 0; engines[i] && !v->ops; i++)
                        if (!strcmp(engine ? engine : "userspace", engines[i]->name))
                                v->ops = engines[i];
                if (!v->ops) {
                        vol_free(v);
                        return dlog_errno(-EINVAL, "Catalogue: volume %s has an unknown engine '%s'", name, engine);
                }
                v->source = source ? strdup(source) : NULL;
        }
        if (json_object_object_get_ex(o, "snapshots", &snaps) && json_object_is_type(snaps, json_type_array))
                for (size_t i = 0; i < json_object_array_length(snaps); i++) {
                        r = load_snap(v, json_object_array_get_idx(snaps, i));
                        if (r < 0) {
                                vol_free(v);
                                return r;
                        }
                }
        if (json_object_object_get_ex(o, "restore", &restore) && json_object_is_type(restore, json_type_object)) {
                const char *su = jstr(restore, "snapshot");
                json_object *keep;
                v->restoring = su ? snap_find_uuid(v, su) : NULL;
                if (!v->restoring) {
                        vol_free(v);
                        return dlog_errno(-EINVAL, "Catalogue: volume %s restores from an unknown snapshot", name);
                }
                v->restore_keep = json_object_object_get_ex(restore, "keep", &keep) && json_object_get_boolean(keep);
        }
        **tail = v;
        *tail = &v->next;
        return 0;
}

void counts_publish(void)
{
        unsigned nv = 0, ns = 0;

        for (struct vol *v = catalogue.vols; v; v = v->next) {
                nv++;
                for (struct snap *s = v->snaps; s; s = s->next)
                        ns++;
        }
        __atomic_store_n(&catalogue.n_vols, nv, __ATOMIC_RELAXED);
        __atomic_store_n(&catalogue.n_snaps, ns, __ATOMIC_RELAXED);
}

int catalogue_load(const struct engine_ops *const *engines)
{
        char path[4096];
        json_object *root, *vols;
        struct vol **tail = &catalogue.vols;
        int64_t version;
        int r = 0;

        snprintf(path, sizeof(path), "%s/" CATALOGUE, settings.state_dir);
        if (access(path, F_OK) < 0 && errno == ENOENT)
                return 0; /* a new state folder */
        root = json_object_from_file(path);
        if (!root)
                return dlog_errno(-EINVAL, "Cannot read the catalogue %s: %s", path, json_util_get_last_err());
        if (!jint(root, "version", &version) || version != 1) {
                json_object_put(root);
                return dlog_errno(-EPROTONOSUPPORT, "Catalogue %s: unknown version", path);
        }
        if (json_object_object_get_ex(root, "volumes", &vols) && json_object_is_type(vols, json_type_array))
                for (size_t i = 0; i < json_object_array_length(vols) && r >= 0; i++)
                        r = load_vol(json_object_array_get_idx(vols, i), engines, &tail);
        json_object_put(root);
        counts_publish();
        return r;
}

/* --- writing ---------------------------------------------------------------- */

static json_object *snap_json(const struct snap *s)
{
        json_object *o = json_object_new_object();

        json_object_object_add(o, "name", json_object_new_string(s->name));
        json_object_object_add(o, "uuid", json_object_new_string(s->uuid));
        json_object_object_add(o, "store", json_object_new_string(s->store));
        if (s->store_device)
                json_object_object_add(o, "store_device", json_object_new_boolean(true));
        json_object_object_add(o, "created", json_object_new_int64(s->created));
        if (s->reason)
                json_object_object_add(o, "reason", json_object_new_string(s->reason));
        return o;
}

void vol_json_identity(const struct vol *v, json_object *o)
{
        json_object_object_add(o, "name", json_object_new_string(v->name));
        json_object_object_add(o, "uuid", json_object_new_string(v->uuid));
        json_object_object_add(o, "path", json_object_new_string(v->path));
        json_object_object_add(o, "size", json_object_new_int64((int64_t)v->size));
        json_object_object_add(o, "chunk_size", json_object_new_int64(v->chunk));
}

static json_object *vol_json(const struct vol *v)
{
        json_object *o = json_object_new_object(), *a = json_object_new_array();

        vol_json_identity(v, o);
        json_object_object_add(o, "owned", json_object_new_boolean(v->owned));
        json_object_object_add(o, "engine", json_object_new_string(v->ops->name));
        if (v->source)
                json_object_object_add(o, "source", json_object_new_string(v->source));
        json_object_object_add(o, "created", json_object_new_int64(v->created));
        for (struct snap *s = v->snaps; s; s = s->next)
                json_object_array_add(a, snap_json(s));
        json_object_object_add(o, "snapshots", a);
        if (v->restoring) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "snapshot", json_object_new_string(v->restoring->uuid));
                json_object_object_add(r, "keep", json_object_new_boolean(v->restore_keep));
                json_object_object_add(o, "restore", r);
        }
        return o;
}

int catalogue_save(void)
{
        char path[4096], tmp[4096];
        json_object *root = json_object_new_object(), *a = json_object_new_array();
        const char *text;
        size_t len;
        int fd, dfd, r = 0;

        counts_publish(); /* a failed save is undone by the caller, who publishes again */
        json_object_object_add(root, "version", json_object_new_int(1));
        for (struct vol *v = catalogue.vols; v; v = v->next)
                json_object_array_add(a, vol_json(v));
        json_object_object_add(root, "volumes", a);
        text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        len = strlen(text);

        snprintf(path, sizeof(path), "%s/" CATALOGUE, settings.state_dir);
        snprintf(tmp, sizeof(tmp), "%s/." CATALOGUE ".tmp", settings.state_dir);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                r = -errno;
                goto out;
        }
        r = write_all(fd, text, len);
        if (r == 0)
                r = write_all(fd, "\n", 1);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                unlink(tmp);
                goto out;
        }
        dfd = open(settings.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
                if (fsync(dfd) < 0)
                        r = -errno;
                close(dfd);
        }
out:
        json_object_put(root);
        if (r < 0)
                dlog_errno(r, "Cannot save the catalogue %s: %m", path);
        return r;
}

/* Is STATE_DIR/stores/@name the store of a snapshot in the catalogue?  By
 * its name, not its path: the state folder may have been reached by another
 * path when the catalogue was written. */
static bool store_owned(const char *name)
{
        for (struct vol *v = catalogue.vols; v; v = v->next)
                for (struct snap *s = v->snaps; s; s = s->next) {
                        const char *b = s->store ? strrchr(s->store, '/') : NULL;
                        if ((b && strcmp(b + 1, name) == 0) ||
                            (strncmp(name, s->uuid, UUID_LEN) == 0 && strcmp(name + UUID_LEN, ".cow") == 0))
                                return true;
                }
        return false;
}

/* Call @fn on each entry of STATE_DIR/@sub; the number it removed.  Not
 * without a catalogue: then nothing says what is left over. */
static int sweep(const char *sub, bool (*fn)(const char *path, const char *name))
{
        char dir[4096], path[4096 + 256];
        struct dirent *de;
        DIR *d;
        int n = 0;

        snprintf(path, sizeof(path), "%s/" CATALOGUE, settings.state_dir);
        if (access(path, F_OK) < 0)
                return 0;
        snprintf(dir, sizeof(dir), "%s/%s", settings.state_dir, sub);
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : dlog_errno(-errno, "Cannot read %s: %m", dir);
        while ((de = readdir(d))) {
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                n += fn(path, de->d_name);
        }
        closedir(d);
        return n;
}

static bool remove_logged(const char *path, const char *why)
{
        if (unlink(path) < 0) {
                dlog_errno(-errno, "Cannot remove %s (%s): %m", path, why);
                return false;
        }
        dlog(LOG_INFO_, "Removed %s: %s", path, why);
        return true;
}

static bool sweep_store(const char *path, const char *name)
{
        char uuid[UUID_LEN + 1];
        uuid_t u;

        /* only names the daemon gives its stores: UUID.cow */
        if (strlen(name) != UUID_LEN + 4 || strcmp(name + UUID_LEN, ".cow") != 0)
                return false;
        memcpy(uuid, name, UUID_LEN);
        uuid[UUID_LEN] = 0;
        if (uuid_parse(uuid, u) < 0 || store_owned(name))
                return false;
        return remove_logged(path, "no snapshot owns it (a snap or rm was cut short)");
}

int catalogue_sweep_stores(void)
{
        return sweep("stores", sweep_store);
}

/* Is STATE_DIR/volumes/@name the image of a volume in the catalogue? */
static bool image_owned(const char *name)
{
        for (struct vol *v = catalogue.vols; v; v = v->next) {
                const char *b = v->path ? strrchr(v->path, '/') : NULL;
                if (b && strcmp(b + 1, name) == 0)
                        return true;
        }
        return false;
}

static bool sweep_image(const char *path, const char *name)
{
        size_t len = strlen(name);
        off_t data;
        int fd;

        /* only names create gives its images: NAME.img */
        if (len <= 4 || strcmp(name + len - 4, ".img") != 0 || image_owned(name))
                return false;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return false;
        data = lseek(fd, 0, SEEK_DATA);
        close(fd);
        if (data >= 0 || errno != ENXIO) {
                dlog(LOG_WARN_, "%s holds data and no volume owns it (a volume's rm was cut short?): "
                                "left alone; remove it, or 'cowvol add' it",
                     path);
                return false;
        }
        return remove_logged(path, "empty, and no volume owns it (a create was cut short)");
}

int catalogue_sweep_images(void)
{
        return sweep("volumes", sweep_image);
}
