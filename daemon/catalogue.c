/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The catalogue: every volume and snapshot, in STATE_DIR/catalogue.json.
 * It is the truth after a restart.  Saves are atomic: the whole catalogue
 * goes to a temporary file, which is flushed, renamed over the old one, and
 * the folder flushed; a crash leaves either the old or the new catalogue.
 * A store is made before the catalogue names it (snap) and removed after the
 * catalogue stopped naming it (rm, the end of a restore): a crash between
 * leaves a store no snapshot owns, which the next start removes while it
 * holds no exception (a snap cut short).  So with an image that create made
 * before the catalogue named it: the start removes it while it holds no data
 * (a create cut short).  A stray with data (an rm cut short) is never
 * deleted: it moves to STATE_DIR/stray/, with a warning in the log and a
 * count in status, for the administrator.  The sweep runs only after the
 * whole catalogue loaded: it trusts the catalogue to name every store.
 * Every file here is reached through the state folder's descriptor
 * (statedir.c), never through a link: a link planted at the temporary
 * file's name is removed (the link, not what it names) and the file made
 * anew; one at catalogue.json is replaced by the rename.
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
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
#include "statedir.h"

#define CATALOGUE "catalogue.json"
#define TMP "." CATALOGUE ".tmp"

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

struct snap *snap_find_number(const struct vol *v, uint64_t number)
{
        for (struct snap *s = v->snaps; s; s = s->next)
                if (s->number == number)
                        return s;
        return NULL;
}

void snap_free_meta(struct snap *s)
{
        if (!s)
                return;
        free(s->store);
        free(s->reason);
        free(s->description);
        free(s->userdata);
        free(s);
}

static const char *const class_names[] = { [CLEANUP_NONE] = "none", [CLEANUP_NUMBER] = "number",
                                           [CLEANUP_TIMELINE] = "timeline" };
static const char *const kind_names[] = { [SNAP_SINGLE] = "single", [SNAP_PRE] = "pre", [SNAP_POST] = "post" };

const char *cleanup_class_name(enum cleanup_class c)
{
        return (unsigned)c < 3 ? class_names[c] : "?";
}

const char *snap_kind_name(enum snap_kind k)
{
        return (unsigned)k < 3 ? kind_names[k] : "?";
}

int cleanup_class_parse(const char *s, enum cleanup_class *ret)
{
        for (unsigned i = 0; i < 3; i++)
                if (strcmp(s, class_names[i]) == 0) {
                        *ret = (enum cleanup_class)i;
                        return 0;
                }
        return -EINVAL;
}

int snap_kind_parse(const char *s, enum snap_kind *ret)
{
        for (unsigned i = 0; i < 3; i++)
                if (strcmp(s, kind_names[i]) == 0) {
                        *ret = (enum snap_kind)i;
                        return 0;
                }
        return -EINVAL;
}

bool description_valid(const char *s, char *why, size_t len)
{
        size_t n = strlen(s);

        if (n > DESCRIPTION_MAX) {
                snprintf(why, len, "it is %zu bytes long; at most %d", n, DESCRIPTION_MAX);
                return false;
        }
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f) {
                        snprintf(why, len, "it contains the control character 0x%02x", *p);
                        return false;
                }
        return true;
}

/* printable ASCII but @stop */
static bool userdata_text(const char *s, size_t n, const char *stop)
{
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x20 || s[i] >= 0x7f || strchr(stop, s[i]))
                        return false;
        return true;
}

bool userdata_valid(const char *s, char *why, size_t len)
{
        const char *keys[USERDATA_PAIRS];
        size_t klen[USERDATA_PAIRS];
        unsigned n = 0;

        if (!*s) {
                snprintf(why, len, "it is empty; give KEY=VALUE[,KEY=VALUE...]");
                return false;
        }
        for (const char *p = s;;) {
                const char *end = strchrnul(p, ','), *eq = memchr(p, '=', (size_t)(end - p));
                size_t kl = eq ? (size_t)(eq - p) : 0, vl = eq ? (size_t)(end - eq - 1) : 0;

                if (!eq) {
                        snprintf(why, len, "pair %u is not KEY=VALUE", n + 1);
                        return false;
                }
                if (kl == 0 || kl > USERDATA_KEY_MAX || !userdata_text(p, kl, "=,")) {
                        snprintf(why, len, "key %u must be 1 to %d printable ASCII characters without "
                                 "'=' or ','", n + 1, USERDATA_KEY_MAX);
                        return false;
                }
                if (vl > USERDATA_VALUE_MAX || !userdata_text(eq + 1, vl, ",")) {
                        snprintf(why, len, "value %u must be at most %d printable ASCII characters "
                                 "without ','", n + 1, USERDATA_VALUE_MAX);
                        return false;
                }
                if (n == USERDATA_PAIRS) {
                        snprintf(why, len, "more than %d pairs", USERDATA_PAIRS);
                        return false;
                }
                for (unsigned i = 0; i < n; i++)
                        if (klen[i] == kl && memcmp(keys[i], p, kl) == 0) {
                                snprintf(why, len, "key '%.*s' is given twice", (int)kl, p);
                                return false;
                        }
                keys[n] = p;
                klen[n++] = kl;
                if (!*end)
                        return true;
                p = end + 1;
        }
}

bool userdata_get(const char *ud, const char *key, char *buf, size_t len)
{
        size_t kl = strlen(key);

        for (const char *p = ud; p && *p;) {
                const char *end = strchrnul(p, ',');
                if ((size_t)(end - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') {
                        snprintf(buf, len, "%.*s", (int)(end - p - (ptrdiff_t)kl - 1), p + kl + 1);
                        return true;
                }
                p = *end ? end + 1 : end;
        }
        return false;
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
        free(v->restore_stalled);
        free(v);
}

struct vol_user *vol_user_add(struct vol *v, struct snap *s, const char *what, const char *who)
{
        struct vol_user *u = calloc(1, sizeof(*u));

        v->refs++;
        if (s)
                s->refs++;
        if (!u)
                return NULL;
        u->s = s;
        snprintf(u->what, sizeof(u->what), "%s", what);
        snprintf(u->who, sizeof(u->who), "%s", who);
        u->next = v->users;
        v->users = u;
        return u;
}

void vol_user_remove(struct vol *v, struct snap *s, struct vol_user *u)
{
        v->refs--;
        if (s)
                s->refs--;
        for (struct vol_user **p = &v->users; *p; p = &(*p)->next)
                if (*p == u) {
                        *p = u->next;
                        free(u);
                        break;
                }
        if (!v->refs && v->restoring && v->restore_pending && v->ops->users_gone)
                v->ops->users_gone(v);
}

uint64_t vol_rm_deletes(const struct vol *v)
{
        struct stat st;
        uint64_t bytes = 0;
        int fd;

        if (!v->owned || (fd = open(v->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
                return 0;
        if (lseek(fd, 0, SEEK_DATA) >= 0 && fstat(fd, &st) == 0)
                bytes = st.st_blocks ? (uint64_t)st.st_blocks * 512 : 1;
        close(fd);
        return bytes;
}

const char *vol_users_describe(const struct vol *v, const struct snap *s, char *buf, size_t len)
{
        static const char *const kinds[] = { "NBD", "cat", "write" };
        static const char *const nouns[][2] = { { "an NBD connection", "NBD connections" }, { "a cat", "cats" },
                                                { "a write", "writes" } };
        unsigned total = s ? s->refs : v->refs, named = 0;
        size_t n = 0;
        int k;

        buf[0] = '\0';
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
                unsigned count = 0, shown = 0;

                for (const struct vol_user *u = v->users; u; u = u->next)
                        count += (!s || u->s == s) && !strcmp(u->what, kinds[i]);
                if (!count)
                        continue;
                named += count;
                if (count == 1)
                        k = snprintf(buf + n, len - n, "%s%s (", n ? ", " : "", nouns[i][0]);
                else
                        k = snprintf(buf + n, len - n, "%s%u %s (", n ? ", " : "", count, nouns[i][1]);
                n += k > 0 && (size_t)k < len - n ? (size_t)k : 0;
                for (const struct vol_user *u = v->users; u && shown < 3; u = u->next)
                        if ((!s || u->s == s) && !strcmp(u->what, kinds[i])) {
                                k = snprintf(buf + n, len - n, "%s%s", shown++ ? "; " : "", u->who);
                                n += k > 0 && (size_t)k < len - n ? (size_t)k : 0;
                        }
                k = snprintf(buf + n, len - n, "%s)", count > shown ? "; ..." : "");
                n += k > 0 && (size_t)k < len - n ? (size_t)k : 0;
        }
        if (total > named) {
                k = snprintf(buf + n, len - n, "%s%u more", n ? " and " : "", total - named);
                n += k > 0 && (size_t)k < len - n ? (size_t)k : 0;
        }
        return buf;
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

/*
 * A catalogue that parses but is wrong (a member missing, null or of
 * another type) is refused whole, naming the place: the start stops before
 * the sweep of strays, which trusts the catalogue to name every store.
 * @where is "volume 2 (v1)" or "volume v1, snapshot 3 (s1)".
 */
static int malformed(const char *where, const char *key, const char *why)
{
        return dlog_errno(-EINVAL, "Catalogue: %s: \"%s\" %s", where, key, why);
}

static const char *type_name(json_object *x)
{
        return x ? json_type_to_name(json_object_get_type(x)) : "missing";
}

/* @o's member @key of type @t: 0 and *ret (NULL when an optional member is
 * absent or null), or -EINVAL logged */
static int member(json_object *o, const char *where, const char *key, json_type t, bool required,
                  json_object **ret)
{
        bool present = json_object_object_get_ex(o, key, ret);
        char why[64];

        if (!*ret) {
                if (!required)
                        return 0;
                snprintf(why, sizeof(why), "is %s, want %s", present ? "null" : "missing", json_type_to_name(t));
                return malformed(where, key, why);
        }
        if (!json_object_is_type(*ret, t)) {
                snprintf(why, sizeof(why), "is %s, want %s", type_name(*ret), json_type_to_name(t));
                return malformed(where, key, why);
        }
        return 0;
}

static int text(json_object *o, const char *where, const char *key, bool required, const char **ret)
{
        json_object *x;
        int r = member(o, where, key, json_type_string, required, &x);

        *ret = x ? json_object_get_string(x) : NULL;
        return r;
}

static int number(json_object *o, const char *where, const char *key, int64_t *ret)
{
        json_object *x;
        int r = member(o, where, key, json_type_int, true, &x);

        *ret = x ? json_object_get_int64(x) : 0;
        return r;
}

static int flag(json_object *o, const char *where, const char *key, bool *ret)
{
        json_object *x;
        int r = member(o, where, key, json_type_boolean, false, &x);

        *ret = x && json_object_get_boolean(x);
        return r;
}

/* a volume's or a snapshot's name and uuid */
static int identity_check(const char *where, const char *name, const char *uuid)
{
        char why[128];

        if (!name_valid(name, why, sizeof(why)))
                return malformed(where, "name", why);
        if (strlen(uuid) != UUID_LEN)
                return malformed(where, "uuid", "is not a UUID");
        return 0;
}

/* an optional integer member, 0 when absent; in [1, max] when present */
static int counter(json_object *o, const char *where, const char *key, int64_t max, int64_t *ret)
{
        json_object *x;
        int r = member(o, where, key, json_type_int, false, &x);

        *ret = 0;
        if (r < 0 || !x)
                return r;
        *ret = json_object_get_int64(x);
        if (*ret < 1 || *ret > max)
                return malformed(where, key, "is out of range");
        return 0;
}

/* "userdata": an object of strings, into "KEY=VALUE,..." (checked) */
static int load_userdata(json_object *o, const char *where, char **ret)
{
        char buf[USERDATA_PAIRS * (USERDATA_KEY_MAX + USERDATA_VALUE_MAX + 2) + 1], why[160];
        json_object *u;
        size_t n = 0;
        int r = member(o, where, "userdata", json_type_object, false, &u);

        *ret = NULL;
        if (r < 0 || !u)
                return r;
        if (json_object_object_length(u) == 0)
                return 0;
        json_object_object_foreach(u, key, val) {
                int m;
                if (!json_object_is_type(val, json_type_string))
                        return malformed(where, "userdata", "has a value that is not a string");
                if (strpbrk(key, "=,") || strchr(json_object_get_string(val), ','))
                        return malformed(where, "userdata", "has a key with '=' or ',' or a value with ','");
                m = snprintf(buf + n, sizeof(buf) - n, "%s%s=%s", n ? "," : "", key, json_object_get_string(val));
                if (m < 0 || (size_t)m >= sizeof(buf) - n)
                        return malformed(where, "userdata", "is too long");
                n += (size_t)m;
        }
        if (!userdata_valid(buf, why, sizeof(why)))
                return malformed(where, "userdata", why);
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

/* number, cleanup, type, pre, description, userdata: all optional */
static int load_snap_meta(struct snap *s, json_object *o, const char *where)
{
        const char *cls = NULL, *kind = NULL, *desc = NULL;
        char why[160];
        int64_t number = 0, pre = 0;
        int r;

        if ((r = counter(o, where, "number", INT64_MAX, &number)) < 0 ||
            (r = counter(o, where, "pre", INT64_MAX, &pre)) < 0 || (r = text(o, where, "cleanup", false, &cls)) < 0 ||
            (r = text(o, where, "type", false, &kind)) < 0 || (r = text(o, where, "description", false, &desc)) < 0)
                return r;
        if (cls && cleanup_class_parse(cls, &s->cleanup) < 0)
                return malformed(where, "cleanup", "is not none, number or timeline");
        if (kind && snap_kind_parse(kind, &s->type) < 0)
                return malformed(where, "type", "is not single, pre or post");
        if ((s->type == SNAP_POST) != (pre != 0))
                return malformed(where, "pre", s->type == SNAP_POST ? "is missing for a post snapshot"
                                                                    : "is given for a snapshot that is not a post");
        if (desc && !description_valid(desc, why, sizeof(why)))
                return malformed(where, "description", why);
        if ((r = flag(o, where, "read_only", &s->read_only)) < 0)
                return r;
        s->number = (uint64_t)number;
        s->pre_number = (uint64_t)pre;
        if (desc && !(s->description = strdup(desc)))
                return -ENOMEM;
        return load_userdata(o, where, &s->userdata);
}

static int load_snap(struct vol *v, json_object *o, size_t i)
{
        const char *name = NULL, *uuid = NULL, *store = NULL, *reason = NULL;
        char where[256];
        struct snap *s, **p;
        json_object *x;
        int64_t created = 0, size;
        bool device = false;
        int r;

        snprintf(where, sizeof(where), "volume %s, snapshot %zu", v->name, i + 1);
        if (!json_object_is_type(o, json_type_object))
                return dlog_errno(-EINVAL, "Catalogue: %s is %s, want object", where, type_name(o));
        if ((r = text(o, where, "name", true, &name)) < 0)
                return r;
        snprintf(where, sizeof(where), "volume %s, snapshot %zu (%s)", v->name, i + 1, name);
        if ((r = text(o, where, "uuid", true, &uuid)) < 0 || (r = text(o, where, "store", true, &store)) < 0 ||
            (r = text(o, where, "reason", false, &reason)) < 0 || (r = number(o, where, "created", &created)) < 0 ||
            (r = flag(o, where, "store_device", &device)) < 0)
                return r;
        if ((r = identity_check(where, name, uuid)) < 0)
                return r;
        if (!*store)
                return malformed(where, "store", "is empty");
        /* absent: from before volumes grew, the volume's */
        if ((r = member(o, where, "size", json_type_int, false, &x)) < 0)
                return r;
        size = x ? json_object_get_int64(x) : (int64_t)v->size;
        if (size <= 0 || (uint64_t)size > v->size)
                return malformed(where, "size", "is not from 1 byte to the volume's size");
        for (p = &v->snaps; *p; p = &(*p)->next)
                if ((*p)->size > (uint64_t)size)
                        return malformed(where, "size", "is below an older snapshot's");
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        snprintf(s->name, sizeof(s->name), "%s", name);
        snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
        s->created = created;
        s->store = strdup(store);
        s->reason = reason ? strdup(reason) : NULL;
        s->store_device = device;
        s->size = (uint64_t)size;
        if ((r = load_snap_meta(s, o, where)) < 0) {
                snap_free_meta(s);
                return r;
        }
        if (s->number && snap_find_number(v, s->number)) {
                snap_free_meta(s);
                return malformed(where, "number", "is another snapshot's of the volume");
        }
        /* keep the order of the file: append */
        *p = s;
        return 0;
}

/* Snapshots of a catalogue of before numbers get them in the order they
 * were taken, after the highest number any has: the file's order, which is
 * the order of the snaps (each appended as taken; a chain's order), where
 * "created" can go back with the clock; "next_number" is above every number. */
static int load_numbers(struct vol *v, json_object *o, const char *where)
{
        uint64_t max = 0;
        int64_t next = 0;
        int r = counter(o, where, "next_number", INT64_MAX, &next);

        if (r < 0)
                return r;
        for (struct snap *s = v->snaps; s; s = s->next)
                if (s->number > max)
                        max = s->number;
        for (struct snap *s = v->snaps; s; s = s->next)
                if (!s->number)
                        s->number = ++max;
        if (next && (uint64_t)next <= max)
                return malformed(where, "next_number", "is not above every snapshot's number");
        v->next_number = next ? (uint64_t)next : max + 1;
        return 0;
}

static int limit_member(json_object *o, const char *where, const char *key, int64_t max, int64_t *ret)
{
        json_object *x;
        int r = member(o, where, key, json_type_int, false, &x);

        if (r < 0 || !x)
                return r;
        *ret = json_object_get_int64(x);
        if (*ret < 0 || *ret > max)
                return malformed(where, key, "is out of range");
        return 0;
}

/* "schedule": absent (none), or every limit (an absent one: snapper's
 * default), the min-age and the free limit */
static int load_schedule(struct vol *v, json_object *o, const char *where)
{
        struct cleanup_policy *p = &v->schedule.policy;
        char at[300];
        json_object *sc;
        int64_t x[10];
        int r = member(o, where, "schedule", json_type_object, false, &sc);

        cleanup_policy_default(p);
        if (r < 0 || !sc)
                return r;
        snprintf(at, sizeof(at), "%s, schedule", where);
        x[0] = p->hourly.max, x[1] = p->daily.max, x[2] = p->weekly.max, x[3] = p->monthly.max;
        x[4] = p->quarterly.max, x[5] = p->yearly.max, x[6] = p->number.max, x[7] = p->number_important.max;
        x[8] = p->timeline_min_age, x[9] = 0;
        for (unsigned k = 0; k < 10; k++)
                if ((r = limit_member(sc, at, schedule_keys[k], k == 8 ? SCHEDULE_MIN_AGE_MAX
                                                                : k == 9 ? 99 : SCHEDULE_LIMIT_MAX, &x[k])) < 0)
                        return r;
        schedule_set(&v->schedule, x);
        return 0;
}

static int load_vol(json_object *o, size_t i, const struct engine_ops *const *engines, struct vol ***tail)
{
        const char *name = NULL, *uuid = NULL, *path = NULL, *engine = NULL, *source = NULL;
        json_object *snaps, *restore, *lent;
        char where[128];
        int64_t size = 0, chunk = 0, created = 0;
        bool owned = false, chain = false;
        uint32_t lent_uid = 0;
        uint64_t lent_dev = 0, lent_ino = 0;
        struct vol *v;
        int r;

        snprintf(where, sizeof(where), "volume %zu", i + 1);
        if (!json_object_is_type(o, json_type_object))
                return dlog_errno(-EINVAL, "Catalogue: %s is %s, want object", where, type_name(o));
        if ((r = text(o, where, "name", true, &name)) < 0)
                return r;
        snprintf(where, sizeof(where), "volume %zu (%s)", i + 1, name);
        if ((r = text(o, where, "uuid", true, &uuid)) < 0 || (r = text(o, where, "path", true, &path)) < 0 ||
            (r = number(o, where, "size", &size)) < 0 || (r = number(o, where, "chunk_size", &chunk)) < 0 ||
            (r = number(o, where, "created", &created)) < 0 || (r = flag(o, where, "owned", &owned)) < 0 ||
            (r = flag(o, where, "chain", &chain)) < 0 ||
            (r = text(o, where, "engine", false, &engine)) < 0 || (r = text(o, where, "source", false, &source)) < 0 ||
            (r = member(o, where, "snapshots", json_type_array, true, &snaps)) < 0 ||
            (r = member(o, where, "restore", json_type_object, false, &restore)) < 0 ||
            (r = member(o, where, "lent", json_type_object, false, &lent)) < 0)
                return r;
        if ((r = identity_check(where, name, uuid)) < 0)
                return r;
        if (lent) {
                char at[sizeof(where) + 16];
                int64_t uid = -1, dev = -1, ino = -1;

                snprintf(at, sizeof(at), "%s, lent", where);
                if ((r = number(lent, at, "uid", &uid)) < 0 || (r = number(lent, at, "dev", &dev)) < 0 ||
                    (r = number(lent, at, "ino", &ino)) < 0)
                        return r;
                if (uid <= 0 || uid > UINT32_MAX || dev < 0 || ino <= 0)
                        return malformed(at, "uid", "is not a user other than root with a device and an inode");
                lent_uid = (uint32_t)uid;
                lent_dev = (uint64_t)dev;
                lent_ino = (uint64_t)ino;
        }
        if (size <= 0)
                return malformed(where, "size", "is not positive");
        if (!cowvol_chunk_size_valid((uint64_t)chunk))
                return malformed(where, "chunk_size", "is not a power of two from 4 KiB to 512 KiB");
        v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        snprintf(v->name, sizeof(v->name), "%s", name);
        snprintf(v->uuid, sizeof(v->uuid), "%s", uuid);
        v->path = strdup(path);
        v->size = (uint64_t)size;
        v->chunk = (uint32_t)chunk;
        v->created = created;
        v->owned = owned;
        v->chain = chain;
        v->lent = lent != NULL;
        v->lent_uid = lent_uid;
        v->lent_dev = lent_dev;
        v->lent_ino = lent_ino;
        /* no engine: written before there was a second one */
        for (size_t k = 0; engines[k] && !v->ops; k++)
                if (!strcmp(engine ? engine : "userspace", engines[k]->name))
                        v->ops = engines[k];
        if (!v->ops) {
                vol_free(v);
                return malformed(where, "engine", "names no engine this cowvold has");
        }
        v->source = source ? strdup(source) : NULL;
        for (size_t k = 0; k < json_object_array_length(snaps); k++) {
                r = load_snap(v, json_object_array_get_idx(snaps, k), k);
                if (r < 0) {
                        vol_free(v);
                        return r;
                }
        }
        if ((r = load_numbers(v, o, where)) < 0 || (r = load_schedule(v, o, where)) < 0) {
                vol_free(v);
                return r;
        }
        if (restore) {
                const char *su = NULL;
                char at[sizeof(where) + 16];

                snprintf(at, sizeof(at), "%s, restore", where);
                r = text(restore, at, "snapshot", true, &su);
                if (r >= 0)
                        r = flag(restore, at, "keep", &v->restore_keep);
                if (r >= 0) {
                        const char *mode = NULL;
                        json_object *x = NULL;

                        r = member(restore, at, "flattened", json_type_boolean, false, &x);
                        if (r >= 0)
                                r = text(restore, at, "mode", false, &mode);
                        if (r < 0)
                                ;
                        else if (mode && !strcmp(mode, "chain"))
                                v->restore_mode = RESTORE_CHAIN;
                        else if (mode && !strcmp(mode, "consume"))
                                v->restore_mode = RESTORE_CONSUME;
                        else if (mode)
                                r = malformed(at, "mode", "is neither \"chain\" nor \"consume\"");
                        else
                                v->restore_mode = !x || json_object_get_boolean(x) ? RESTORE_CONSUME
                                                                                   : RESTORE_UNSURE;
                }
                v->restoring = su ? snap_find_uuid(v, su) : NULL;
                if (r >= 0 && !v->restoring)
                        r = malformed(at, "snapshot", "names no snapshot of the volume");
                if (r < 0) {
                        vol_free(v);
                        return r;
                }
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
        json_object *root, *vols, *version;
        struct vol **tail = &catalogue.vols;
        int fd, r;

        snprintf(path, sizeof(path), "%s/" CATALOGUE, settings.state_dir);
        fd = openat(state_fd, CATALOGUE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
                return 0; /* a new state folder */
        if (fd < 0)
                return dlog_errno(-errno, "Cannot read the catalogue %s: %m%s", path,
                                  errno == ELOOP ? " (a symbolic link: cowvold follows none in its state folder)" : "");
        root = json_object_from_fd(fd);
        close(fd);
        if (!root)
                return dlog_errno(-EINVAL, "Cannot read the catalogue %s: %s", path, json_util_get_last_err());
        if (!json_object_is_type(root, json_type_object))
                r = dlog_errno(-EINVAL, "Catalogue: the file is %s, want object", type_name(root));
        else if ((r = member(root, "the top", "version", json_type_int, true, &version)) >= 0 &&
                 json_object_get_int64(version) != 1)
                r = dlog_errno(-EPROTONOSUPPORT, "Catalogue %s: unknown version", path);
        if (r >= 0)
                r = member(root, "the top", "volumes", json_type_array, true, &vols);
        for (size_t i = 0; r >= 0 && i < json_object_array_length(vols); i++)
                r = load_vol(json_object_array_get_idx(vols, i), i, engines, &tail);
        json_object_put(root);
        if (r < 0) { /* all or nothing: nothing half-loaded is served or swept by */
                while (catalogue.vols) {
                        struct vol *x = catalogue.vols->next;
                        vol_free(catalogue.vols);
                        catalogue.vols = x;
                }
                return r;
        }
        counts_publish();
        return 0;
}

/* --- writing ---------------------------------------------------------------- */

static void snap_json_meta_saved(const struct snap *s, json_object *o);

static json_object *snap_json(const struct snap *s)
{
        json_object *o = json_object_new_object();

        json_object_object_add(o, "name", json_object_new_string(s->name));
        json_object_object_add(o, "uuid", json_object_new_string(s->uuid));
        json_object_object_add(o, "store", json_object_new_string(s->store));
        if (s->store_device)
                json_object_object_add(o, "store_device", json_object_new_boolean(true));
        json_object_object_add(o, "created", json_object_new_int64(s->created));
        json_object_object_add(o, "size", json_object_new_int64((int64_t)s->size));
        if (s->reason)
                json_object_object_add(o, "reason", json_object_new_string(s->reason));
        snap_json_meta_saved(s, o);
        return o;
}

void snap_json_meta(const struct snap *s, json_object *o)
{
        json_object *u = json_object_new_object();

        /* the catalogue's snap_json names userdata only when there is some */
        json_object_object_add(o, "number", json_object_new_int64((int64_t)s->number));
        json_object_object_add(o, "cleanup", json_object_new_string(cleanup_class_name(s->cleanup)));
        json_object_object_add(o, "type", json_object_new_string(snap_kind_name(s->type)));
        if (s->type == SNAP_POST)
                json_object_object_add(o, "pre", json_object_new_int64((int64_t)s->pre_number));
        if (s->description)
                json_object_object_add(o, "description", json_object_new_string(s->description));
        json_object_object_add(o, "read_only", json_object_new_boolean(s->read_only));
        for (const char *p = s->userdata; p && *p;) {
                const char *end = strchrnul(p, ','), *eq = memchr(p, '=', (size_t)(end - p));
                char key[USERDATA_KEY_MAX + 1];
                snprintf(key, sizeof(key), "%.*s", (int)(eq - p), p);
                json_object_object_add(u, key, json_object_new_string_len(eq + 1, (int)(end - eq - 1)));
                p = *end ? end + 1 : end;
        }
        json_object_object_add(o, "userdata", u);
}

static void snap_json_meta_saved(const struct snap *s, json_object *o)
{
        json_object *u;

        snap_json_meta(s, o);
        if (json_object_object_get_ex(o, "userdata", &u) && json_object_object_length(u) == 0)
                json_object_object_del(o, "userdata");
}

void schedule_json(const struct schedule *sc, json_object *o)
{
        const struct cleanup_policy *p = &sc->policy;
        int64_t x[10] = { p->hourly.max, p->daily.max,  p->weekly.max,       p->monthly.max,   p->quarterly.max,
                          p->yearly.max, p->number.max, p->number_important.max, p->timeline_min_age, sc->free_limit };

        for (unsigned k = 0; k < 10; k++)
                json_object_object_add(o, schedule_keys[k], json_object_new_int64(x[k]));
}

const char *const schedule_keys[10] = { "hourly", "daily",  "weekly",           "monthly", "quarterly",
                                        "yearly", "number", "number_important", "min_age", "free_limit" };

void schedule_set(struct schedule *sc, const int64_t x[10])
{
        struct cleanup_policy *p = &sc->policy;
        struct cleanup_limit *l[8] = { &p->hourly, &p->daily,  &p->weekly, &p->monthly,
                                       &p->quarterly, &p->yearly, &p->number, &p->number_important };

        cleanup_policy_default(p);
        for (unsigned k = 0; k < 8; k++)
                l[k]->min = l[k]->max = (unsigned)x[k];
        p->number_min_age = p->timeline_min_age = p->empty_pre_post_min_age = x[8];
        sc->free_limit = (unsigned)x[9];
        sc->on = true;
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
        if (v->chain)
                json_object_object_add(o, "chain", json_object_new_boolean(true));
        json_object_object_add(o, "engine", json_object_new_string(v->ops->name));
        if (v->source)
                json_object_object_add(o, "source", json_object_new_string(v->source));
        if (v->lent) {
                json_object *l = json_object_new_object();
                json_object_object_add(l, "uid", json_object_new_int64(v->lent_uid));
                json_object_object_add(l, "dev", json_object_new_int64((int64_t)v->lent_dev));
                json_object_object_add(l, "ino", json_object_new_int64((int64_t)v->lent_ino));
                json_object_object_add(o, "lent", l);
        }
        json_object_object_add(o, "created", json_object_new_int64(v->created));
        json_object_object_add(o, "next_number", json_object_new_int64((int64_t)v->next_number));
        if (v->schedule.on) {
                json_object *sc = json_object_new_object();
                schedule_json(&v->schedule, sc);
                json_object_object_add(o, "schedule", sc);
        }
        for (struct snap *s = v->snaps; s; s = s->next)
                if (!(v->restore_ending && v->restore_drop && s == v->restoring))
                        json_object_array_add(a, snap_json(s));
        json_object_object_add(o, "snapshots", a);
        if (v->restoring && !v->restore_ending) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "snapshot", json_object_new_string(v->restoring->uuid));
                json_object_object_add(r, "keep", json_object_new_boolean(v->restore_keep));
                /* "flattened" for the cowvolds before "mode", which read
                 * false as: through the chain (or flatten, then consume:
                 * right too); an unsure one is written back as it came */
                if (v->restore_mode != RESTORE_UNSURE)
                        json_object_object_add(r, "mode", json_object_new_string(
                                                       v->restore_mode == RESTORE_CHAIN ? "chain" : "consume"));
                json_object_object_add(r, "flattened",
                                       json_object_new_boolean(v->restore_mode == RESTORE_CONSUME));
                json_object_object_add(o, "restore", r);
        }
        return o;
}

int catalogue_save(void)
{
        char path[4096];
        json_object *root = json_object_new_object(), *a = json_object_new_array();
        const char *text;
        size_t len;
        int fd, r = 0;

        counts_publish(); /* a failed save is undone by the caller, who publishes again */
        json_object_object_add(root, "version", json_object_new_int(1));
        for (struct vol *v = catalogue.vols; v; v = v->next)
                json_object_array_add(a, vol_json(v));
        json_object_object_add(root, "volumes", a);
        text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        len = strlen(text);

        snprintf(path, sizeof(path), "%s/" CATALOGUE, settings.state_dir);
        /* one left by a crash, or a link someone planted: it goes (the
         * link itself), and the file is made anew, never through a link */
        if (unlinkat(state_fd, TMP, 0) < 0 && errno != ENOENT) {
                r = -errno;
                goto out;
        }
        fd = openat(state_fd, TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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
        if (r == 0 && renameat(state_fd, TMP, state_fd, CATALOGUE) < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(state_fd, TMP, 0);
                goto out;
        }
        if (fsync(state_fd) < 0)
                r = -errno;
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

/* Call @fn on each regular file of STATE_DIR/@sub (@dfd, the folder; @path,
 * its path for the log); the number it removed.  Not without a catalogue:
 * then nothing says what is left over.  A link is nobody's: left alone. */
static int sweep(const char *sub, bool (*fn)(int dfd, const char *path, const char *name))
{
        char path[4096 + 256];
        struct dirent *de;
        struct stat st;
        DIR *d;
        int dfd, n = 0;

        if (faccessat(state_fd, CATALOGUE, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
                return 0;
        dfd = state_subdir(sub);
        if (dfd < 0)
                return dfd == -ENOENT ? 0 : dlog_errno(dfd, "Cannot read %s/%s: %m", settings.state_dir, sub);
        d = fdopendir(dfd);
        if (!d) {
                close(dfd);
                return dlog_errno(-errno, "Cannot read %s/%s: %m", settings.state_dir, sub);
        }
        while ((de = readdir(d))) {
                if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                snprintf(path, sizeof(path), "%s/%s/%s", settings.state_dir, sub, de->d_name);
                n += fn(dfd, path, de->d_name);
        }
        closedir(d);
        return n;
}

static bool remove_logged(int dfd, const char *path, const char *name, const char *why)
{
        if (unlinkat(dfd, name, 0) < 0) {
                dlog_errno(-errno, "Cannot remove %s (%s): %m", path, why);
                return false;
        }
        dlog(LOG_INFO_, "Removed %s: %s", path, why);
        return true;
}

static unsigned strays_in_place; /* with data, and could not be moved */

/* A stray that holds data is never deleted: it goes to STATE_DIR/stray/,
 * under its name (or NAME.N when that is taken), for the administrator. */
static bool move_aside(int dfd, const char *path, const char *name, const char *why)
{
        char dir[4096], to[300];
        int sfd, r = state_subdir_make(STRAY_DIR);

        snprintf(dir, sizeof(dir), "%s/" STRAY_DIR, settings.state_dir);
        sfd = r < 0 ? r : state_subdir(STRAY_DIR);
        if (sfd < 0) {
                dlog_errno(sfd, "Cannot create %s to move %s aside (%s): %m; it stays", dir, path, why);
                strays_in_place++;
                return false;
        }
        for (int i = 0; i < 1000; i++) {
                if (i)
                        snprintf(to, sizeof(to), "%s.%d", name, i);
                else
                        snprintf(to, sizeof(to), "%s", name);
                r = renameat2(dfd, name, sfd, to, RENAME_NOREPLACE);

                /* a filesystem without RENAME_NOREPLACE: link, which never
                 * replaces either, then unlink */
                if (r < 0 && (errno == EINVAL || errno == ENOSYS))
                        r = linkat(dfd, name, sfd, to, 0) == 0 ? unlinkat(dfd, name, 0) : -1;
                if (r == 0) {
                        dlog(LOG_WARN_, "Moved %s to %s/%s: %s; remove it once nothing in it is needed", path, dir,
                             to, why);
                        close(sfd);
                        return true;
                }
                if (errno != EEXIST)
                        break;
        }
        dlog_errno(-errno, "Cannot move %s aside to %s (%s): %m; it stays where it is", path, dir, why);
        close(sfd);
        strays_in_place++;
        return false;
}

/* a store holds data when it has an exception, or cannot be read as empty */
static bool store_holds_data(const char *path)
{
        cowvol_store *st;
        bool data;
        int r = cowvol_store_open(path, COWVOL_STORE_RDONLY, &st);

        if (r == -ENODATA) /* a header the kernel never wrote: nothing in it */
                return false;
        if (r < 0)
                return true;
        data = cowvol_store_count(st) > 0;
        cowvol_store_close(st);
        return data;
}

static bool sweep_store(int dfd, const char *path, const char *name)
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
        if (store_holds_data(path))
                return move_aside(dfd, path, name, "no snapshot owns it and it holds exceptions (an rm cut short?)");
        return remove_logged(dfd, path, name, "no snapshot owns it and it is empty (a snap cut short)");
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

/* Is @name a second name of an image a volume owns (a rename cut short)? */
static bool image_second_name(int dfd, const char *name)
{
        struct stat st, o;

        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_nlink < 2)
                return false;
        for (struct vol *v = catalogue.vols; v; v = v->next) {
                const char *b = v->path ? strrchr(v->path, '/') : NULL;
                if (b && fstatat(dfd, b + 1, &o, AT_SYMLINK_NOFOLLOW) == 0 && o.st_dev == st.st_dev &&
                    o.st_ino == st.st_ino)
                        return true;
        }
        return false;
}

static bool sweep_image(int dfd, const char *path, const char *name)
{
        size_t len = strlen(name);
        off_t data;
        int fd;

        /* only names create gives its images: NAME.img */
        if (len <= 4 || strcmp(name + len - 4, ".img") != 0 || image_owned(name))
                return false;
        if (image_second_name(dfd, name))
                return remove_logged(dfd, path, name, "a second name of a volume's image (a rename cut short)");
        fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return false;
        data = lseek(fd, 0, SEEK_DATA);
        close(fd);
        if (data >= 0 || errno != ENXIO)
                return move_aside(dfd, path, name, "no volume owns it and it holds data (a volume's rm cut short?)");
        return remove_logged(dfd, path, name, "empty, and no volume owns it (a create was cut short)");
}

int catalogue_sweep_images(void)
{
        return sweep("volumes", sweep_image);
}

/* what STATE_DIR/stray/ holds, and the strays with data that could not be
 * moved there, for status */
void catalogue_count_strays(void)
{
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        int dfd = state_subdir(STRAY_DIR);

        d = dfd < 0 ? NULL : fdopendir(dfd);
        if (!d && dfd >= 0)
                close(dfd);
        if (d) {
                while ((de = readdir(d)))
                        n += de->d_name[0] != '.';
                closedir(d);
        }
        catalogue.n_strays = n + strays_in_place;
}
