/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvol create, add, snap, list, restore, rm, status: the catalogue of
 * volumes and snapshots, kept by cowvold.  Each command builds the request's
 * arguments, lets client.c carry it, and prints the result for people; the
 * daemon validates names and sizes and its message is printed as it is.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* Sizes in results, for people; "-" when the daemon did not send one. */
static const char *size_field(json_object *o, const char *key, char *buf, size_t len)
{
        int64_t v;

        if (!result_int(o, key, &v) || v < 0) {
                snprintf(buf, len, "-");
                return buf;
        }
        return cowvol_format_size((uint64_t)v, buf, len);
}

static const char *string_field(json_object *o, const char *key)
{
        const char *s = result_string(o, key);
        return s ? s : "?";
}

/* --- create ------------------------------------------------------------- */

/* A volume's name: a target without '@'. */
static int check_volume_name(const char *cmd, const char *name)
{
        int r = check_target(cmd, name);

        if (r)
                return r;
        if (strchr(name, '@'))
                return usage_error(cmd, "'%s' is a snapshot name; a volume's name has no '@'", name);
        return 0;
}

#define CHUNK_SIZE_HELP "copy-on-write unit of its snapshots: 4K to 512K, a power of\ntwo (default 4K)"

static void print_volume_made(const char *verb, json_object *v)
{
        const char *engine = result_string(v, "engine"), *dm = result_string(v, "dm_path");
        char a[32], b[32];

        if (engine && !strcmp(engine, "kernel") && dm) {
                /* what matters from now on: the device to mount */
                printf("%s volume %s: %s (chunk size %s) on %s, under the kernel engine\n"
                       "Use %s from now on (mount it, not %s).\n",
                       verb, string_field(v, "name"), size_field(v, "size", a, sizeof(a)),
                       size_field(v, "chunk_size", b, sizeof(b)), string_field(v, "path"), dm,
                       string_field(v, "path"));
                return;
        }
        printf("%s volume %s: %s (chunk size %s), image %s\n", verb, string_field(v, "name"),
               size_field(v, "size", a, sizeof(a)), size_field(v, "chunk_size", b, sizeof(b)),
               string_field(v, "path"));
}

struct create_opts {
        uint64_t size, chunk_size; /* 0: not given */
};

static const struct cli_option create_options[] = {
        { "size", .kind = CLI_BYTES, .offset = offsetof(struct create_opts, size), .check = cli_check_positive,
          .arg = "SIZE", .help = "the volume's size" },
        { "chunk-size", .kind = CLI_BYTES, .offset = offsetof(struct create_opts, chunk_size),
          .check = cli_check_chunk_size, .arg = "SIZE", .help = CHUNK_SIZE_HELP },
        {},
};

static int create_run(const void *opts, char **name)
{
        const struct create_opts *o = opts;
        json_object *args, *res;
        int r;

        if (!o->size)
                return usage_error(cmd_create.name, "missing --size");

        args = json_object_new_object();
        json_object_object_add(args, "name", json_object_new_string(name[0]));
        json_object_object_add(args, "size", json_object_new_int64((int64_t)o->size));
        if (o->chunk_size)
                json_object_object_add(args, "chunk_size", json_object_new_int64((int64_t)o->chunk_size));
        r = daemon_call("create", args, -1, &res);
        if (r)
                return r;
        print_volume_made("Created", res);
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_create = {
        .name = "create", .args = "NAME", .check_arg = check_volume_name, .run = create_run,
        .options = create_options, .opts_size = sizeof(struct create_opts),
        .usage = "create NAME --size SIZE [--chunk-size SIZE]",
        .about = "Make a new volume NAME: a sparse image file in cowvold's state folder.\n",
};

/* --- add ---------------------------------------------------------------- */

struct add_opts {
        const char *name;    /* NULL: not given */
        uint64_t chunk_size; /* 0: not given */
};

/* --name: a volume's name */
static int check_name_option(const char *cmd, const struct cli_option *opt, const void *value)
{
        (void)opt;
        return check_volume_name(cmd, *(const char *const *)value);
}

static const struct cli_option add_options[] = {
        { "name", .kind = CLI_STRING, .offset = offsetof(struct add_opts, name), .check = check_name_option,
          .arg = "NAME", .help = "the volume's name (default: the file name without its\nextension)" },
        { "chunk-size", .kind = CLI_BYTES, .offset = offsetof(struct add_opts, chunk_size),
          .check = cli_check_chunk_size, .arg = "SIZE", .help = CHUNK_SIZE_HELP },
        {},
};

/*
 * Open what add or snap --store names, for reading and writing, as the
 * caller: the descriptor travels with the request, and the daemon adopts
 * only the file it is (a user can lend the daemon only what they may open
 * themselves).  @spec: a path, or UUID=/LABEL= of a block device.  Root
 * may name what it cannot open here (the daemon says why): -1 then.
 */
static int open_as_caller(const char *spec, int *ret_fd)
{
        char *dev = NULL;
        const char *path = spec;
        int fd;

        *ret_fd = -1;
        if (spec[0] != '/' && cowvol_device_resolve(spec, &dev) == 0)
                path = dev;
        fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 && geteuid() != 0) {
                int r = log_error("cannot open %s for reading and writing: %s", path, strerror(errno));
                free(dev);
                return r;
        }
        free(dev);
        *ret_fd = fd;
        return 0;
}

/* A volume that moved to the kernel engine: what the stores of its chain
 * took first, the kernel copying into every snapshot. */
static void print_standalone(json_object *res)
{
        json_object *o;
        int64_t chunks = 0, bytes = 0, stores = 0;
        char b[32];

        if (!json_object_object_get_ex(res, "standalone", &o) || !result_int(o, "chunks", &chunks) || chunks <= 0)
                return;
        result_int(o, "bytes", &bytes);
        result_int(o, "stores", &stores);
        printf("The kernel copies into every snapshot, so the stores of its snapshots were made standalone first:\n"
               "%" PRId64 " chunks (%s) copied into %" PRId64 " store%s.\n",
               chunks, cowvol_format_size((uint64_t)bytes, b, sizeof(b)), stores, stores == 1 ? "" : "s");
}

static int add_run(const void *opts, char **pos)
{
        const struct add_opts *o = opts;
        json_object *args, *res;
        char *path;
        int r, fd;

        /* UUID=..., LABEL=...: the daemon finds the device (libblkid); a path
         * must be absolute for it, this one's cwd means nothing there */
        if (pos[0][0] != '/' && pos[0][0] != '.' && strchr(pos[0], '='))
                path = strdup(pos[0]);
        else
                path = realpath(pos[0], NULL);
        if (!path)
                return log_error("%s: %s", pos[0], strerror(errno));

        args = json_object_new_object();
        json_object_object_add(args, "path", json_object_new_string(path));
        if (o->name)
                json_object_object_add(args, "name", json_object_new_string(o->name));
        if (o->chunk_size)
                json_object_object_add(args, "chunk_size", json_object_new_int64((int64_t)o->chunk_size));
        r = open_as_caller(path, &fd);
        free(path);
        if (r) {
                json_object_put(args);
                return r;
        }
        r = daemon_call("add", args, fd, &res);
        if (fd >= 0)
                close(fd);
        if (r)
                return r;
        print_volume_made("Added", res);
        print_standalone(res);
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_add = {
        .name = "add", .args = "PATH", .run = add_run, .options = add_options, .opts_size = sizeof(struct add_opts),
        .usage = "add PATH [--name NAME] [--chunk-size SIZE]",
        .about = "Adopt the existing image file PATH as a volume, where it is.  Removing the\n"
                 "volume later keeps the file.\n",
};

/* --- snap --------------------------------------------------------------- */

struct snap_opts {
        uint64_t store_size; /* 0: not given */
        const char *store;
        bool force, read_only, writable, pre;
        const char *description, *cleanup, *type, *post, *userdata; /* NULL: not given */
};

/* --cleanup, --type: one of a few words (the daemon checks the rest) */
static int check_word(const char *cmd, const struct cli_option *opt, const char *v, const char *const *words)
{
        for (const char *const *w = words; *w; w++)
                if (strcmp(v, *w) == 0)
                        return 0;
        return usage_error(cmd, "--%s '%s' is not one of %s, %s or %s", opt->name, v, words[0], words[1], words[2]);
}

static int check_cleanup_class(const char *cmd, const struct cli_option *opt, const void *value)
{
        static const char *const w[] = { "none", "number", "timeline", NULL };
        return check_word(cmd, opt, *(const char *const *)value, w);
}

static int check_snap_type(const char *cmd, const struct cli_option *opt, const void *value)
{
        static const char *const w[] = { "single", "pre", "post", NULL };
        return check_word(cmd, opt, *(const char *const *)value, w);
}

static const struct cli_option snap_options[] = {
        { "store-size", .kind = CLI_BYTES, .offset = offsetof(struct snap_opts, store_size),
          .check = cli_check_positive, .arg = "SIZE",
          .help = "room for copied chunks (default: 20% of the volume, at\n"
                  "least 1M; the store grows when it fills)" },
        { "store", .kind = CLI_STRING, .offset = offsetof(struct snap_opts, store), .arg = "DEVICE",
          .help = "a kernel volume's store on this block device (or\n"
                  "UUID=..., LABEL=...) instead of a file; its content is lost" },
        { "force", .short_name = 'f', .kind = CLI_FLAG, .offset = offsetof(struct snap_opts, force),
          .help = "use a --store device that carries a filesystem or\nanother signature anyway; make a store file larger than\nthe free space" },
        { "description", .kind = CLI_STRING, .offset = offsetof(struct snap_opts, description), .arg = "TEXT",
          .help = "what the snapshot is for (at most 1 KiB, no control\ncharacters)" },
        { "cleanup", .kind = CLI_STRING, .offset = offsetof(struct snap_opts, cleanup), .check = check_cleanup_class,
          .arg = "CLASS", .help = "the cleanup that may remove it: none (default), number\nor timeline" },
        { "type", .kind = CLI_STRING, .offset = offsetof(struct snap_opts, type), .check = check_snap_type,
          .arg = "TYPE", .help = "single (default), pre or post (as --pre, --post)" },
        { "pre", .kind = CLI_FLAG, .offset = offsetof(struct snap_opts, pre),
          .help = "a pre snapshot, before a change (it prints its number)" },
        { "post", .kind = CLI_STRING, .offset = offsetof(struct snap_opts, post), .arg = "PRE",
          .help = "a post snapshot, after the change, paired with its pre\nsnapshot PRE: a number or a name" },
        { "read-only", .kind = CLI_FLAG, .offset = offsetof(struct snap_opts, read_only),
          .help = "no writes into it (the default for --cleanup number and\ntimeline)" },
        { "writable", .kind = CLI_FLAG, .offset = offsetof(struct snap_opts, writable),
          .help = "writes into it allowed (the default otherwise)" },
        { "userdata", .kind = CLI_STRING, .offset = offsetof(struct snap_opts, userdata),
          .arg = "KEY=VALUE[,...]", .help = "its userdata; important=yes counts under\n--number-important" },
        {},
};

static int snap_run(const void *opts, char **pos)
{
        const struct snap_opts *o = opts;
        json_object *args, *res;
        const char *at;
        char a[32];
        int64_t number = 0;
        int r, fd = -1;

        if (o->store && o->store_size)
                return usage_error(cmd_snap.name, "give --store-size or --store, not both");

        args = json_object_new_object();
        at = strchr(pos[0], '@');
        if (at) {
                json_object_object_add(args, "volume",
                                       json_object_new_string_len(pos[0], (int)(at - pos[0])));
                json_object_object_add(args, "name", json_object_new_string(at + 1));
        } else {
                json_object_object_add(args, "volume", json_object_new_string(pos[0]));
        }
        if (o->store_size)
                json_object_object_add(args, "store_size", json_object_new_int64((int64_t)o->store_size));
        if (o->store)
                json_object_object_add(args, "store", json_object_new_string(o->store));
        if (o->force)
                json_object_object_add(args, "force", json_object_new_boolean(true));
        if (o->description)
                json_object_object_add(args, "description", json_object_new_string(o->description));
        if (o->cleanup)
                json_object_object_add(args, "cleanup", json_object_new_string(o->cleanup));
        if (o->pre && (o->post || (o->type && strcmp(o->type, "pre")))) {
                json_object_put(args);
                return usage_error(cmd_snap.name, "--pre makes a pre snapshot: not with --post or another --type");
        }
        if (o->type || o->pre)
                json_object_object_add(args, "type", json_object_new_string(o->pre ? "pre" : o->type));
        if (o->post) {
                char *end;
                long long n = strtoll(o->post, &end, 10);
                if (o->post[0] >= '0' && o->post[0] <= '9' && !*end && n > 0)
                        json_object_object_add(args, "pre_number", json_object_new_int64(n));
                else
                        json_object_object_add(args, "pre", json_object_new_string(o->post));
        }
        if (o->userdata)
                json_object_object_add(args, "userdata", json_object_new_string(o->userdata));
        if (o->read_only && o->writable) {
                json_object_put(args);
                return usage_error(cmd_snap.name, "give --read-only or --writable, not both");
        }
        if (o->read_only || o->writable)
                json_object_object_add(args, "read_only", json_object_new_boolean(o->read_only));
        if (o->store && (r = open_as_caller(o->store, &fd))) {
                json_object_put(args);
                return r;
        }
        r = daemon_call("snap", args, fd, &res);
        if (fd >= 0)
                close(fd);
        if (r)
                return r;
        result_int(res, "number", &number);
        printf("Created snapshot %s (store %s), number %" PRId64 "\n", string_field(res, "full_name"),
               size_field(res, "store_size", a, sizeof(a)), number);
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_snap = {
        .name = "snap", .args = "VOLUME[@NAME]", .check_arg = check_target, .run = snap_run,
        .options = snap_options, .opts_size = sizeof(struct snap_opts),
        .usage = "snap VOLUME[@NAME] [--store-size SIZE | --store DEVICE] [--force] [--description TEXT]\n"
                 "snap VOLUME[@NAME] ... [--cleanup CLASS] [--pre | --post PRE] [--userdata KEY=VALUE,...]\n"
                 "snap VOLUME[@NAME] ... [--read-only | --writable]",
        .about = "Take a snapshot of VOLUME.  Without NAME, the snapshot is named after the\n"
                 "time, in UTC (YYYYMMDDTHHMMSSZ; and .N, its number, when that second has one).\n",
};

/* --- list --------------------------------------------------------------- */

/*
 * The table, as lvs prints it: one row per volume, its snapshots indented
 * below it; the fields of -o (the default set, +FIELD to add), sorted by
 * -O within each level, sizes in --units, with or without headings, padded
 * columns or --separator.  Each field is a cell of text and a sort key.
 */
enum field_kind { F_TEXT, F_SIZE, F_NUMBER, F_TIME };

struct field {
        const char *name, *title, *help;
        enum field_kind kind;
        bool right;
        /* the JSON keys of a volume's and a snapshot's value (NULL: empty) */
        const char *vol_key, *snap_key;
};

static const struct field fields[] = {
        { "name", "NAME", "a volume's name; a snapshot's VOLUME@SNAP, indented", F_TEXT, false, "name", "full_name" },
        { "origin", "ORIGIN", "a snapshot's volume", F_TEXT, false, NULL, NULL },
        { "size", "SIZE", "a volume's size; a snapshot's store size (as lvs's LSize)", F_SIZE, true, "size",
          "store_size" },
        { "used", "USED", "what a snapshot's store holds; a volume's: all its stores", F_SIZE, true,
          "snapshots_allocated", "allocated" },
        { "chunk_size", "CHUNK", "the chunk size", F_SIZE, true, "chunk_size", NULL },
        { "data_percent", "DATA%", "how full a snapshot's store is", F_NUMBER, true, NULL, "data_percent" },
        { "fstype", "FS", "a volume's filesystem, as blkid sees it", F_TEXT, false, "fstype", NULL },
        { "label", "LABEL", "its label", F_TEXT, false, "label", NULL },
        { "state", "STATE", "active, unavailable, restoring, invalid: REASON, merging", F_TEXT, false, NULL, NULL },
        { "created", "CREATED", "when it was made (UTC; --time-format iso)", F_TIME, false, "created", "created" },
        { "number", "#", "a snapshot's number in its volume", F_NUMBER, true, NULL, "number" },
        { "type", "TYPE", "single, pre, post of N", F_TEXT, false, NULL, NULL },
        { "cleanup", "CLEANUP", "the cleanup that may remove it", F_TEXT, false, NULL, "cleanup" },
        { "description", "DESCRIPTION", "what it is for", F_TEXT, false, NULL, "description" },
        { "userdata", "USERDATA", "KEY=VALUE,...", F_TEXT, false, NULL, NULL },
        /* not shown unless asked for */
        { "origin_size", "OSIZE", "a snapshot's size: its volume's when taken", F_SIZE, true, "size", "size" },
        { "store_size", "STORE", "a snapshot's store size", F_SIZE, true, NULL, "store_size" },
        { "allocated", "ALLOC", "a snapshot's store's allocated bytes; a volume's: all", F_SIZE, true,
          "snapshots_allocated", "allocated" },
        { "exceptions", "EXC", "the chunks a snapshot's store holds", F_NUMBER, true, NULL, "exceptions" },
        { "read_only", "RO", "a snapshot that takes no writes: ro", F_TEXT, false, NULL, "read_only" },
        { "engine", "ENGINE", "userspace or kernel", F_TEXT, false, "engine", NULL },
        { "path", "PATH", "a volume's image or device; a snapshot's store", F_TEXT, false, "path", "store" },
        { "dm_path", "DEVICE", "a kernel volume's or snapshot's /dev/mapper device", F_TEXT, false, "dm_path",
          "dm_path" },
        { "uuid", "UUID", "its uuid", F_TEXT, false, "uuid", "uuid" },
        { "rm_deletes", "RMDATA", "the bytes of data rm deletes with a volume", F_SIZE, true, "rm_deletes", NULL },
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))
#define FIELDS_DEFAULT "name,origin,size,used,chunk_size,data_percent,fstype,label,state,created,number,type," \
                       "cleanup,description,userdata"
#define FIELDS_MAX 32

struct list_opts {
        bool json, noheadings, nosuffix;
        const char *fields, *sort, *units, *separator, *time_format;
};

struct list_cfg {
        size_t cols[FIELDS_MAX], n_cols;
        int sort[FIELDS_MAX]; /* field index + 1, negative: descending */
        size_t n_sort;
        char units; /* 'h', or b k m g t */
        bool nosuffix, noheadings, iso;
        const char *separator;
};

static int field_find(const char *name, size_t len)
{
        for (size_t i = 0; i < N_FIELDS; i++)
                if (strlen(fields[i].name) == len && !strncmp(fields[i].name, name, len))
                        return (int)i;
        return -1;
}

/* "a,b,c" into field indexes; a usage error for an unknown one */
static int fields_parse(const char *opt, const char *list, bool signs, int *out, size_t *n)
{
        for (const char *p = list; *p;) {
                size_t len = strcspn(p, ",");
                bool minus = signs && *p == '-';
                int f = field_find(p + minus, len - minus);

                if (f < 0)
                        return usage_error(cmd_list.name, "%s: unknown field '%.*s' ('-o help' lists them)", opt,
                                           (int)(len - minus), p + minus);
                if (*n == FIELDS_MAX)
                        return usage_error(cmd_list.name, "%s: more than %d fields", opt, FIELDS_MAX);
                out[(*n)++] = minus ? -(f + 1) : f + 1;
                p += len + (p[len] == ',');
        }
        return 0;
}

static void fields_help(void)
{
        printf("Fields for -o and -O (default: %s):\n", FIELDS_DEFAULT);
        for (size_t i = 0; i < N_FIELDS; i++)
                printf("  %-14s %-12s %s\n", fields[i].name, fields[i].title, fields[i].help);
}

static int list_cfg_make(const struct list_opts *o, struct list_cfg *c)
{
        int idx[FIELDS_MAX];
        size_t n = 0;
        int r;

        memset(c, 0, sizeof(*c));
        c->units = o->units ? o->units[0] : 'h';
        c->nosuffix = o->nosuffix;
        c->noheadings = o->noheadings;
        c->separator = o->separator;
        c->iso = o->time_format && !strcmp(o->time_format, "iso");
        /* -o FIELDS replaces the default; -o +FIELDS adds to it */
        if (!o->fields || o->fields[0] == '+')
                if ((r = fields_parse("-o", FIELDS_DEFAULT, false, idx, &n)))
                        return r;
        if (o->fields && (r = fields_parse("-o", o->fields + (o->fields[0] == '+'), false, idx, &n)))
                return r;
        for (size_t i = 0; i < n; i++)
                c->cols[c->n_cols++] = (size_t)(idx[i] - 1);
        if (o->sort && (r = fields_parse("-O", o->sort, true, c->sort, &c->n_sort)))
                return r;
        return 0;
}

/* A copy of @s fit for one cell: control characters (from the daemon) become '?'. */
static char *cell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *cell(const char *fmt, ...)
{
        va_list ap;
        char *s;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        for (char *p = s; p && *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = '?';
        return s;
}

/* Columns on a terminal: UTF-8 code points (names are ASCII; reasons may not be). */
static size_t text_width(const char *s)
{
        size_t w = 0;

        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        w++;
        return w;
}

static char *time_cell(const struct list_cfg *c, double t)
{
        time_t tt;
        struct tm tm;
        char buf[32];

        /* seconds since the epoch; a fraction, if any, is dropped */
        if (t < 0 || t > 253402300799.0)
                return strdup("");
        tt = (time_t)t;
        if (!gmtime_r(&tt, &tm) ||
            strftime(buf, sizeof(buf), c->iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S", &tm) == 0)
                return strdup("");
        return strdup(buf);
}

/* A size in --units: h as cowvol prints sizes (1.5 GiB); b bytes; k m g t
 * in units of 1024^n with two decimals, as lvs (1.50g); --nosuffix drops
 * the unit. */
static char *size_text(const struct list_cfg *c, uint64_t v)
{
        static const char units[] = "bkmgt";
        const char *u = strchr(units, c->units);
        char buf[48];

        if (c->units == 'h' || !u) {
                cowvol_format_size(v, buf, sizeof(buf));
                if (c->nosuffix)
                        buf[strcspn(buf, " ")] = '\0';
                return strdup(buf);
        }
        if (c->units == 'b')
                return cell("%" PRIu64 "%s", v, c->nosuffix ? "" : "B");
        return cell("%.2f%s", (double)v / (double)(1ull << (10 * (u - units))), c->nosuffix ? "" : (char[2]){ c->units, 0 });
}

static char *volume_state_cell(json_object *v)
{
        json_object *restore;
        double pct;

        if (json_object_object_get_ex(v, "restore", &restore) && json_object_is_type(restore, json_type_object)) {
                const char *from = result_string(restore, "snapshot");
                json_object *pending;
                if (json_object_object_get_ex(restore, "pending", &pending) && json_object_get_boolean(pending)) {
                        const char *waits = result_string(restore, "waits_for");
                        return cell("restore from %s waits for %s", from ? from : "?",
                                    waits && !strcmp(waits, "users") ? "its users" : "activation");
                }
                if (result_string(restore, "stalled"))
                        return cell("restore from %s held: it cannot resume", from ? from : "?");
                if (result_double(restore, "percent", &pct))
                        return cell("restoring from %s %.1f%%", from ? from : "?", pct);
                return cell("restoring from %s", from ? from : "?");
        }
        return cell("%s", string_field(v, "state"));
}

static char *snapshot_state_cell(json_object *s)
{
        const char *state = string_field(s, "state"), *reason;
        double pct;

        if (strcmp(state, "invalid") == 0) {
                reason = result_string(s, "reason");
                return reason ? cell("invalid: %s", reason) : cell("invalid");
        }
        if (strcmp(state, "merging") == 0 && result_double(s, "merge_percent", &pct))
                return cell("merging %.1f%%", pct);
        return cell("%s", state);
}

static char *userdata_cell(json_object *s)
{
        json_object *u;
        char *ud = NULL, *r;
        size_t len = 0;
        FILE *m = open_memstream(&ud, &len);
        bool first = true;

        if (m && json_object_object_get_ex(s, "userdata", &u) && json_object_is_type(u, json_type_object)) {
                json_object_object_foreach(u, key, val) {
                        fprintf(m, "%s%s=%s", first ? "" : ",", key, json_object_get_string(val));
                        first = false;
                }
        }
        if (m)
                fclose(m);
        r = cell("%s", ud ? ud : "");
        free(ud);
        return r;
}

/* One cell of field @f for the volume @v, or its snapshot @s; *key gets
 * its sort value (numbers; text sorts by the cell) */
static char *field_cell(const struct list_cfg *c, const struct field *f, json_object *v, json_object *s,
                        double *key)
{
        const char *k = s ? f->snap_key : f->vol_key;
        json_object *o = s ? s : v;
        double d;
        int64_t n;

        *key = 0;
        if (!strcmp(f->name, "state"))
                return s ? snapshot_state_cell(s) : volume_state_cell(v);
        if (!strcmp(f->name, "origin"))
                return cell("%s", s ? string_field(v, "name") : "");
        if (!strcmp(f->name, "type")) {
                const char *type = s ? result_string(s, "type") : NULL;
                if (type && !strcmp(type, "post") && result_int(s, "pre", &n))
                        return cell("post of %" PRId64, n);
                return cell("%s", type ? type : "");
        }
        if (!strcmp(f->name, "userdata"))
                return s ? userdata_cell(s) : strdup("");
        if (!strcmp(f->name, "read_only")) {
                json_object *x;
                return strdup(s && json_object_object_get_ex(s, "read_only", &x) && json_object_get_boolean(x) ? "ro"
                                                                                                             : "");
        }
        if (!strcmp(f->name, "name") && s)
                return cell("  %s", result_string(s, "full_name") ? result_string(s, "full_name") : "?");
        if (!strcmp(f->name, "chunk_size"))
                o = v; /* a store's chunk size is its volume's */
        if (!k && strcmp(f->name, "chunk_size"))
                return strdup("");
        if (!k)
                k = "chunk_size";
        switch (f->kind) {
        case F_SIZE:
                if (!result_int(o, k, &n) || n < 0)
                        return strdup("");
                *key = (double)n;
                return size_text(c, (uint64_t)n);
        case F_NUMBER:
                if (!result_double(o, k, &d))
                        return strdup("");
                *key = d;
                return result_int(o, k, &n) ? cell("%" PRId64, n) : cell("%.1f", d);
        case F_TIME:
                if (!result_double(o, k, &d))
                        return strdup("");
                *key = d;
                return time_cell(c, d);
        case F_TEXT:
        default:
                return cell("%s", result_string(o, k) ? result_string(o, k) : "");
        }
}

struct row {
        char *cell[FIELDS_MAX];      /* by column */
        char *skey_text[FIELDS_MAX]; /* by -O field: its cell ... */
        double skey[FIELDS_MAX];     /* ... and its value */
};

static void row_free(struct row *r)
{
        for (size_t i = 0; i < FIELDS_MAX; i++) {
                free(r->cell[i]);
                free(r->skey_text[i]);
        }
}

static int row_fill(const struct list_cfg *c, struct row *r, json_object *v, json_object *s)
{
        memset(r, 0, sizeof(*r));
        for (size_t i = 0; i < c->n_cols; i++) {
                double unused;
                if (!(r->cell[i] = field_cell(c, &fields[c->cols[i]], v, s, &unused)))
                        return -ENOMEM;
        }
        for (size_t i = 0; i < c->n_sort; i++) {
                int f = abs(c->sort[i]) - 1;
                if (!(r->skey_text[i] = field_cell(c, &fields[f], v, s, &r->skey[i])))
                        return -ENOMEM;
        }
        return 0;
}

static const struct list_cfg *sort_cfg;

static int row_cmp(const void *pa, const void *pb)
{
        const struct row *a = pa, *b = pb;

        for (size_t i = 0; i < sort_cfg->n_sort; i++) {
                int f = abs(sort_cfg->sort[i]) - 1, d;
                if (fields[f].kind == F_TEXT)
                        d = strcmp(a->skey_text[i], b->skey_text[i]);
                else
                        d = (a->skey[i] > b->skey[i]) - (a->skey[i] < b->skey[i]);
                if (d)
                        return sort_cfg->sort[i] < 0 ? -d : d;
        }
        return 0;
}

static void row_print(const struct list_cfg *c, char *const *cells, const size_t *width)
{
        char line[8192];
        size_t n = 0;

        /* built in a buffer so that trailing blanks can be cut */
        for (size_t i = 0; i < c->n_cols; i++) {
                const struct field *f = &fields[c->cols[i]];
                size_t w = text_width(cells[i]), pad = c->separator ? 0 : width[i] - w;
                int m;

                m = snprintf(line + n, sizeof(line) - n, "%s%*s%s%*s", i ? (c->separator ? c->separator : "  ") : "",
                             f->right ? (int)pad : 0, "", cells[i], f->right ? 0 : (int)pad, "");
                if (m < 0 || (size_t)m >= sizeof(line) - n) {
                        n = sizeof(line) - 1;
                        break;
                }
                n += (size_t)m;
        }
        while (!c->separator && n > 0 && line[n - 1] == ' ')
                n--;
        printf("%.*s\n", (int)n, line);
}

/* The volumes' rows, each followed by its snapshots' (each level sorted by
 * -O, stably: the daemon's order, oldest snapshot first, otherwise). */
static int list_rows(const struct list_cfg *c, json_object *volumes, struct row **ret, size_t *ret_n)
{
        size_t nv = json_object_array_length(volumes), n = 0, cap = 0;
        struct row *rows = NULL, *vr = calloc(nv ? nv : 1, sizeof(*vr));
        size_t *order = calloc(nv ? nv : 1, sizeof(*order));
        int r = vr && order ? 0 : -ENOMEM;

        for (size_t i = 0; i < nv && r == 0; i++)
                r = row_fill(c, &vr[i], json_object_array_get_idx(volumes, i), NULL);
        /* stable: ties keep the daemon's order */
        for (size_t i = 0; i < nv; i++)
                order[i] = i;
        sort_cfg = c;
        for (size_t i = 1; r == 0 && c->n_sort && i < nv; i++)
                for (size_t k = i; k > 0 && row_cmp(&vr[order[k - 1]], &vr[order[k]]) > 0; k--) {
                        size_t t = order[k];
                        order[k] = order[k - 1];
                        order[k - 1] = t;
                }
        for (size_t i = 0; i < nv && r == 0; i++) {
                json_object *v = json_object_array_get_idx(volumes, order[i]), *snaps;
                size_t ns = json_object_object_get_ex(v, "snapshots", &snaps) &&
                                            json_object_is_type(snaps, json_type_array)
                                    ? json_object_array_length(snaps)
                                    : 0;
                size_t first;

                if (n + 1 + ns > cap) {
                        struct row *p = reallocarray(rows, cap = (n + 1 + ns) * 2, sizeof(*rows));
                        if (!p) {
                                r = -ENOMEM;
                                break;
                        }
                        rows = p;
                }
                rows[n++] = vr[order[i]];
                memset(&vr[order[i]], 0, sizeof(vr[0]));
                first = n;
                for (size_t k = 0; k < ns && r == 0; k++)
                        if ((r = row_fill(c, &rows[n], v, json_object_array_get_idx(snaps, k))) == 0)
                                n++;
                for (size_t a = first + 1; r == 0 && c->n_sort && a < n; a++)
                        for (size_t k = a; k > first && row_cmp(&rows[k - 1], &rows[k]) > 0; k--) {
                                struct row t = rows[k];
                                rows[k] = rows[k - 1];
                                rows[k - 1] = t;
                        }
        }
        for (size_t i = 0; vr && i < nv; i++)
                row_free(&vr[i]);
        free(vr);
        free(order);
        *ret = rows;
        *ret_n = n;
        return r;
}

static int list_print(const struct list_cfg *c, json_object *res)
{
        json_object *volumes;
        struct row *rows = NULL;
        size_t n = 0, width[FIELDS_MAX];
        const char *titles[FIELDS_MAX];
        int r;

        if (!json_object_object_get_ex(res, "volumes", &volumes) || !json_object_is_type(volumes, json_type_array))
                return log_error("cowvold's list has no \"volumes\" array");
        if (json_object_array_length(volumes) == 0) {
                if (!c->noheadings)
                        printf("No volumes.\n");
                return EXIT_SUCCESS;
        }
        r = list_rows(c, volumes, &rows, &n);
        for (size_t i = 0; i < c->n_cols; i++) {
                titles[i] = fields[c->cols[i]].title;
                width[i] = c->noheadings ? 0 : strlen(titles[i]);
                for (size_t k = 0; r == 0 && k < n; k++)
                        if (text_width(rows[k].cell[i]) > width[i])
                                width[i] = text_width(rows[k].cell[i]);
        }
        if (r == 0) {
                if (!c->noheadings)
                        row_print(c, (char *const *)titles, width);
                for (size_t k = 0; k < n; k++)
                        row_print(c, rows[k].cell, width);
        }
        for (size_t k = 0; k < n; k++)
                row_free(&rows[k]);
        free(rows);
        if (r < 0)
                return log_error("out of memory");
        if (fflush(stdout) != 0)
                return log_error("cannot write the output: %s", strerror(errno));
        return EXIT_SUCCESS;
}

static int check_units(const char *cmd, const struct cli_option *opt, const void *value)
{
        const char *s = *(const char *const *)value;

        (void)opt;
        if (strlen(s) != 1 || !strchr("hbkmgt", s[0]))
                return usage_error(cmd, "--units '%s' is not one of h, b, k, m, g, t", s);
        return 0;
}

static int check_time_format(const char *cmd, const struct cli_option *opt, const void *value)
{
        const char *s = *(const char *const *)value;

        (void)opt;
        if (strcmp(s, "iso") && strcmp(s, "default"))
                return usage_error(cmd, "--time-format '%s' is not iso or default", s);
        return 0;
}

static const struct cli_option list_options[] = {
        { "options", .short_name = 'o', .kind = CLI_STRING, .offset = offsetof(struct list_opts, fields),
          .arg = "FIELD,...", .help = "the columns (+FIELD,...: added to the default; help: list\nthem)" },
        { "sort", .short_name = 'O', .kind = CLI_STRING, .offset = offsetof(struct list_opts, sort),
          .arg = "[-]FIELD,...", .help = "sort volumes, and each one's snapshots, by these\n(-: descending)" },
        { "units", .kind = CLI_STRING, .offset = offsetof(struct list_opts, units), .check = check_units,
          .arg = "h|b|k|m|g|t", .help = "sizes: h readable (default), b bytes, k m g t in\n1024^n with two decimals" },
        { "nosuffix", .kind = CLI_FLAG, .offset = offsetof(struct list_opts, nosuffix),
          .help = "sizes without their unit" },
        { "noheadings", .kind = CLI_FLAG, .offset = offsetof(struct list_opts, noheadings),
          .help = "no heading line" },
        { "separator", .kind = CLI_STRING, .offset = offsetof(struct list_opts, separator), .arg = "S",
          .help = "S between columns, unpadded" },
        { "time-format", .kind = CLI_STRING, .offset = offsetof(struct list_opts, time_format),
          .check = check_time_format, .arg = "iso", .help = "CREATED as ISO 8601 (2026-12-03T14:09:27Z)" },
        { "json", .short_name = 'j', .kind = CLI_FLAG, .offset = offsetof(struct list_opts, json),
          .help = "the daemon's answer, as it is" },
        {},
};

static int list_run(const void *opts, char **pos)
{
        const struct list_opts *o = opts;
        json_object *args = NULL, *res;
        struct list_cfg c;
        int r;

        if (o->fields && !strcmp(o->fields, "help")) {
                fields_help();
                return EXIT_SUCCESS;
        }
        if ((r = list_cfg_make(o, &c)))
                return r;
        if (pos[0]) {
                if (strchr(pos[0], '@'))
                        return usage_error(cmd_list.name, "'%s' is a snapshot; list takes a volume", pos[0]);
                args = json_object_new_object();
                json_object_object_add(args, "volume", json_object_new_string(pos[0]));
        }
        r = daemon_call("list", args, -1, &res);
        if (r)
                return r;
        r = o->json ? print_json_result(res) : list_print(&c, res);
        json_object_put(res);
        return r;
}

const struct cli_command cmd_list = {
        .name = "list", .args = "[VOLUME]", .check_arg = check_target, .run = list_run,
        .options = list_options, .opts_size = sizeof(struct list_opts),
        .usage = "list [VOLUME] [-o [+]FIELD,...] [-O [-]FIELD,...] [--units h|b|k|m|g|t] [--nosuffix]\n"
                 "list [VOLUME] ... [--noheadings] [--separator S] [--time-format iso] [--json]",
        .about = "List the volumes (or only VOLUME) and their snapshots, as lvs: NAME, ORIGIN (a\n"
                 "snapshot's volume), SIZE (a snapshot's: its store), USED, CHUNK, DATA% (how full\n"
                 "a snapshot's store is), FS and LABEL (the volume's filesystem, as blkid sees\n"
                 "it), STATE, CREATED (UTC), and a snapshot's #, TYPE, CLEANUP, DESCRIPTION and\n"
                 "USERDATA.  '-o help' lists every field.\n",
};

/* --- restore ------------------------------------------------------------ */

#define RESTORE_POLL_NS (200 * 1000 * 1000)
#define RESTORE_BAR 20

static void draw_bar(const char *volume, const char *snapshot, double pct)
{
        char bar[RESTORE_BAR + 1];
        int fill;

        if (pct < 0)
                pct = 0;
        if (pct > 100)
                pct = 100;
        fill = (int)(pct * RESTORE_BAR / 100.0);
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(RESTORE_BAR - fill));
        bar[RESTORE_BAR] = '\0';
        fprintf(stderr, "\rRestoring %s from %s [%s] %.1f%%", volume, snapshot, bar, pct);
        fflush(stderr);
}

/* Ask restore-wait for progress every RESTORE_POLL_NS until the restore is done. */
static int restore_wait(client *cl, const char *volume, const char *snapshot)
{
        bool tty = isatty(STDERR_FILENO), drawn = false;
        const struct timespec poll = { .tv_nsec = RESTORE_POLL_NS };

        for (;;) {
                json_object *args = json_object_new_object(), *res, *done, *running, *pending;
                bool finished, stopped, waits;
                double pct = 0;
                int r;

                json_object_object_add(args, "volume", json_object_new_string(volume));
                json_object_object_add(args, "progress", json_object_new_boolean(true));
                r = client_call(cl, "restore-wait", args, -1, &res);
                if (r) {
                        if (drawn)
                                fputc('\n', stderr);
                        return r;
                }
                finished = json_object_object_get_ex(res, "done", &done) && json_object_get_boolean(done);
                /* a restore that stopped (an error; it resumes at the daemon's
                 * next start) or waits for an activation: no use waiting */
                stopped = !finished && json_object_object_get_ex(res, "running", &running) &&
                          !json_object_get_boolean(running);
                waits = json_object_object_get_ex(res, "pending", &pending) && json_object_get_boolean(pending);
                result_double(res, "percent", &pct);
                json_object_put(res);
                if (finished)
                        break;
                if (stopped) {
                        if (drawn)
                                fputc('\n', stderr);
                        if (waits)
                                printf("The restore of %s from %s waits for the next activation ('cowvol activate "
                                       "%s' once it is unmounted)\n", volume, snapshot, volume);
                        else
                                return log_error("the restore of %s from %s stopped at %.1f%% (see cowvold's log); "
                                                 "it resumes when cowvold starts again", volume, snapshot, pct);
                        return EXIT_SUCCESS;
                }
                if (tty) {
                        draw_bar(volume, snapshot, pct);
                        drawn = true;
                }
                nanosleep(&poll, NULL);
        }
        if (drawn)
                fputs("\r\033[K", stderr);
        printf("Restored %s from %s\n", volume, snapshot);
        return EXIT_SUCCESS;
}

struct restore_opts {
        bool keep, no_wait;
};

static const struct cli_option restore_options[] = {
        { "keep", .kind = CLI_FLAG, .offset = offsetof(struct restore_opts, keep),
          .help = "keep the snapshot (as a snapshot of the restored content)" },
        { "no-wait", .kind = CLI_FLAG, .offset = offsetof(struct restore_opts, no_wait),
          .help = "return once the restore has started; 'cowvol list' shows it" },
        {},
};

static int restore_run(const void *opts, char **pos)
{
        const struct restore_opts *o = opts;
        const char *snapshot = pos[0], *at;
        json_object *args, *res;
        client *cl = NULL;
        char *volume;
        int r;

        at = strchr(snapshot, '@');
        if (!at)
                return usage_error(cmd_restore.name, "'%s' is not a snapshot (VOLUME@SNAP)", snapshot);
        volume = strndup(snapshot, (size_t)(at - snapshot));
        if (!volume)
                return log_error("out of memory");

        r = client_open(&cl);
        if (r)
                goto out;
        args = json_object_new_object();
        json_object_object_add(args, "snapshot", json_object_new_string(snapshot));
        json_object_object_add(args, "keep", json_object_new_boolean(o->keep));
        r = client_call(cl, "restore", args, -1, &res);
        if (r)
                goto out;
        {
                json_object *pending;
                if (json_object_object_get_ex(res, "pending", &pending) && json_object_get_boolean(pending)) {
                        const char *waits = result_string(res, "waits_for");
                        if (waits && !strcmp(waits, "users"))
                                /* an image-file volume: when its NBD clients, cats and writes are gone */
                                printf("Restore of %s from %s recorded: %s.\n"
                                       "It starts when they leave (or at cowvold's next start); 'cowvol list' shows "
                                       "it.\n", volume, snapshot, string_field(res, "why"));
                        else
                                /* LVM's way: the merge starts when the volume is next activated */
                                printf("Restore of %s from %s recorded: %s.\n"
                                       "It starts at the next activation: unmount it and run 'cowvol activate %s'\n"
                                       "(or at cowvold's next start); 'cowvol list' shows it.\n",
                                       volume, snapshot, string_field(res, "why"), volume);
                        json_object_put(res);
                        r = EXIT_SUCCESS;
                        goto out;
                }
        }
        json_object_put(res);
        if (!o->no_wait) {
                r = restore_wait(cl, volume, snapshot);
        } else {
                printf("Restore of %s from %s started; see 'cowvol list'\n", volume, snapshot);
                r = EXIT_SUCCESS;
        }
out:
        client_close(cl);
        free(volume);
        return r;
}

const struct cli_command cmd_restore = {
        .name = "restore", .args = "VOLUME@SNAP", .check_arg = check_target, .run = restore_run,
        .options = restore_options, .opts_size = sizeof(struct restore_opts),
        .usage = "restore VOLUME@SNAP [--keep] [--no-wait]",
        .about = "Give VOLUME the content of its snapshot SNAP, and wait until that is done\n"
                 "(with a progress bar on a terminal).  Without --keep the snapshot is used up.\n",
};

/* --- resize ------------------------------------------------------------ */

struct resize_opts {
        const char *size; /* SIZE or +SIZE; NULL: not given */
        bool force;
};

/* --size: SIZE, or +SIZE to grow by it */
static int check_resize_size(const char *cmd, const struct cli_option *opt, const void *value)
{
        const char *s = *(const char *const *)value;
        uint64_t bytes;
        int r;

        (void)opt;
        r = cowvol_parse_size(s + (*s == '+'), &bytes);
        if (r == -ERANGE || (r >= 0 && bytes > INT64_MAX))
                return usage_error(cmd, "--size '%s' is too large", s);
        if (r < 0 || bytes == 0)
                return usage_error(cmd, "--size '%s' is not a size (SIZE or +SIZE, a number with K, M, G or T, "
                                   "e.g. 20G or +1G)", s);
        return 0;
}

static const struct cli_option resize_options[] = {
        { "size", .kind = CLI_STRING, .offset = offsetof(struct resize_opts, size), .check = check_resize_size,
          .arg = "[+]SIZE", .help = "the new size, or +SIZE: what to add" },
        { "force", .short_name = 'f', .kind = CLI_FLAG, .offset = offsetof(struct resize_opts, force),
          .help = "shrink, destroying the data past the new end" },
        {},
};

static int resize_run(const void *opts, char **pos)
{
        const struct resize_opts *o = opts;
        json_object *args, *res;
        uint64_t bytes = 0;
        char a[32];
        int r;

        if (strchr(pos[0], '@'))
                return usage_error(cmd_resize.name, "'%s' is a snapshot; a snapshot keeps its size", pos[0]);
        if (!o->size)
                return usage_error(cmd_resize.name, "missing --size");
        (void)cowvol_parse_size(o->size + (*o->size == '+'), &bytes); /* checked */
        args = json_object_new_object();
        json_object_object_add(args, "volume", json_object_new_string(pos[0]));
        json_object_object_add(args, *o->size == '+' ? "add" : "size", json_object_new_int64((int64_t)bytes));
        if (o->force)
                json_object_object_add(args, "force", json_object_new_boolean(true));
        r = daemon_call("resize", args, -1, &res);
        if (r)
                return r;
        printf("Resized volume %s to %s\n", string_field(res, "name"), size_field(res, "size", a, sizeof(a)));
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_resize = {
        .name = "resize", .args = "VOLUME", .check_arg = check_target, .run = resize_run,
        .options = resize_options, .opts_size = sizeof(struct resize_opts),
        .usage = "resize VOLUME --size [+]SIZE [--force]",
        .about = "Grow VOLUME to SIZE, or by SIZE with +SIZE; the new space reads zero.  Its\n"
                 "snapshots keep their own size and content.  Shrinking needs --force, and a\n"
                 "volume without snapshots (as lvreduce's origin).\n",
};

/* --- set --------------------------------------------------------------- */

static int set_run(const void *opts, char **pos)
{
        json_object *args, *res;
        const char *kv = pos[1];
        bool on;
        int r;

        (void)opts;
        if (!strchr(pos[0], '@'))
                return usage_error(cmd_set.name, "'%s' is a volume; set takes VOLUME@SNAP", pos[0]);
        if (!strcmp(kv, "read-only=on") || !strcmp(kv, "read-only=yes"))
                on = true;
        else if (!strcmp(kv, "read-only=off") || !strcmp(kv, "read-only=no"))
                on = false;
        else
                return usage_error(cmd_set.name, "'%s' is not read-only=on or read-only=off", kv);
        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(pos[0]));
        json_object_object_add(args, "read_only", json_object_new_boolean(on));
        r = daemon_call("set", args, -1, &res);
        if (r)
                return r;
        printf("Snapshot %s is %s\n", pos[0], on ? "read-only" : "writable");
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_set = {
        .name = "set", .args = "VOLUME@SNAP PROPERTY=VALUE", .check_arg = NULL, .run = set_run,
        .usage = "set VOLUME@SNAP read-only=on|off",
        .about = "Make a snapshot read-only (cowvol write and NBD refuse writes into it; its\n"
                 "exports say so) or writable again, as lvchange -p r|rw.  Refused while an\n"
                 "NBD connection or a transfer holds it.\n",
};

/* --- rename ------------------------------------------------------------ */

static int rename_run(const void *opts, char **pos)
{
        const char *at = strchr(pos[0], '@');
        json_object *args, *res;
        int r;

        (void)opts;
        if (strchr(pos[1], '@'))
                return usage_error(cmd_rename.name, "the new name '%s' is a name alone, without '@'", pos[1]);
        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(pos[0]));
        json_object_object_add(args, "name", json_object_new_string(pos[1]));
        r = daemon_call("rename", args, -1, &res);
        if (r)
                return r;
        if (at)
                printf("Renamed snapshot %s to %.*s@%s\n", pos[0], (int)(at - pos[0]), pos[0], pos[1]);
        else
                printf("Renamed volume %s to %s, image %s\n", pos[0], pos[1], string_field(res, "path"));
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_rename = {
        .name = "rename", .args = "TARGET NEW", .check_arg = check_target, .run = rename_run,
        .usage = "rename VOLUME[@SNAP] NEW",
        .about = "Give a volume, or a snapshot, the name NEW (as lvrename).  An image the daemon\n"
                 "made is renamed with its volume; NBD exports follow the new name.\n",
};

/* --- activate ------------------------------------------------------------ */

static int activate_run(const void *opts, char **pos)
{
        json_object *args, *res;
        int r;

        (void)opts;
        if (strchr(pos[0], '@'))
                return usage_error(cmd_activate.name, "'%s' is a snapshot; activate takes a volume", pos[0]);
        args = json_object_new_object();
        json_object_object_add(args, "volume", json_object_new_string(pos[0]));
        r = daemon_call("activate", args, -1, &res);
        if (r)
                return r;
        printf("Activated %s\n", string_field(res, "name"));
        {
                json_object *restore, *pending;
                if (json_object_object_get_ex(res, "restore", &restore) && json_object_is_type(restore, json_type_object)) {
                        bool waits = json_object_object_get_ex(restore, "pending", &pending) &&
                                     json_object_get_boolean(pending);
                        printf(waits ? "The restore from %s still waits: %s is open (mounted?); unmount it and "
                                       "activate again\n"
                                     : "Restoring from %s (see 'cowvol list %s')\n",
                               string_field(restore, "snapshot"), string_field(res, "name"));
                }
        }
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_activate = {
        .name = "activate", .args = "VOLUME", .check_arg = check_target, .run = activate_run,
        .usage = "activate VOLUME",
        .about = "Build a kernel volume's device-mapper devices again from the catalogue\n"
                 "(what exists is kept) and start a restore that waited for it.\n",
};

/* --- rm ----------------------------------------------------------------- */

struct rm_opts {
        bool recursive, yes;
        const char *older_than; /* DURATION, or NULL */
};

static int check_older_than(const char *cmd, const struct cli_option *opt, const void *value)
{
        const char *s = *(const char *const *)value;
        int64_t v;
        int r = cli_parse_duration(s, 100 * 366, &v);

        (void)opt;
        if (r == -ERANGE)
                return usage_error(cmd, "--older-than '%s' is out of range (at most 100 years)", s);
        if (r < 0)
                return usage_error(cmd, "--older-than '%s' is not a duration: a number and one unit of s, m, h, d, "
                                   "w (e.g. 2w, 36h)", s);
        return 0;
}

static const struct cli_option rm_options[] = {
        { "recursive", .kind = CLI_FLAG, .offset = offsetof(struct rm_opts, recursive),
          .help = "remove a volume together with its snapshots" },
        { "older-than", .kind = CLI_STRING, .offset = offsetof(struct rm_opts, older_than),
          .check = check_older_than, .arg = "DURATION",
          .help = "the snapshots of VOLUME taken longer ago than that\n(s, m, h, d, w: 2w, 36h)" },
        { "yes", .short_name = 'y', .kind = CLI_FLAG, .offset = offsetof(struct rm_opts, yes),
          .help = "remove volumes that hold data without asking" },
        {},
};

/* On a terminal, a volume whose image rm deletes (and that holds data) is
 * confirmed first, as lvremove asks; elsewhere the daemon refuses it
 * without --yes.  true: go on (and say yes). */
static bool rm_confirmed(char **target, size_t n)
{
        json_object *res, *vols, *x;
        bool ask = false, yes = true;
        char a[32], answer[16];

        if (!isatty(STDIN_FILENO))
                return false;
        for (size_t i = 0; i < n; i++)
                ask = ask || !strchr(target[i], '@');
        if (!ask || daemon_call("list", NULL, -1, &res))
                return false;
        if (json_object_object_get_ex(res, "volumes", &vols) && json_object_is_type(vols, json_type_array))
                for (size_t i = 0; i < n && yes; i++)
                        for (size_t k = 0; k < json_object_array_length(vols) && yes; k++) {
                                int64_t bytes = 0;
                                x = json_object_array_get_idx(vols, k);
                                if (strcmp(target[i], string_field(x, "name")) || !result_int(x, "rm_deletes", &bytes) ||
                                    bytes <= 0)
                                        continue;
                                fprintf(stderr, "Do you really want to remove volume %s? Its image %s holds %s of data, "
                                        "and goes with it. [y/n]: ", target[i], string_field(x, "path"),
                                        cowvol_format_size((uint64_t)bytes, a, sizeof(a)));
                                yes = fgets(answer, sizeof(answer), stdin) && (answer[0] == 'y' || answer[0] == 'Y');
                                if (!yes)
                                        fprintf(stderr, "  Volume %s not removed.\n", target[i]);
                        }
        json_object_put(res);
        return yes;
}

static int rm_run(const void *opts, char **target)
{
        const struct rm_opts *o = opts;
        json_object *args, *res, *gone;
        size_t n = 0;
        int64_t secs = 0;
        bool yes = o->yes;
        int r;

        while (target[n])
                n++;
        if (o->older_than && (n != 1 || strchr(target[0], '@')))
                return usage_error(cmd_rm.name, "--older-than takes one VOLUME, whose snapshots go");
        if (o->older_than && o->recursive)
                return usage_error(cmd_rm.name, "--older-than removes snapshots; not with --recursive");
        if (!yes && !o->older_than && isatty(STDIN_FILENO)) {
                if (!rm_confirmed(target, n))
                        return EXIT_FAILURE;
                yes = true;
        }
        args = json_object_new_object();
        if (n == 1) {
                json_object_object_add(args, "target", json_object_new_string(target[0]));
        } else {
                json_object *t = json_object_new_array();
                for (size_t i = 0; i < n; i++)
                        json_object_array_add(t, json_object_new_string(target[i]));
                json_object_object_add(args, "targets", t);
        }
        if (o->recursive)
                json_object_object_add(args, "recursive", json_object_new_boolean(true));
        if (yes)
                json_object_object_add(args, "yes", json_object_new_boolean(true));
        if (o->older_than) {
                (void)cli_parse_duration(o->older_than, 100 * 366, &secs); /* checked */
                json_object_object_add(args, "older_than", json_object_new_int64(secs));
        }
        r = daemon_call("rm", args, -1, &res);
        if (r)
                return r;
        if (json_object_object_get_ex(res, "removed", &gone) && json_object_is_type(gone, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(gone); i++)
                        printf("Removed %s\n", json_object_get_string(json_object_array_get_idx(gone, i)));
                if (o->older_than && !json_object_array_length(gone))
                        printf("No snapshot of %s is older than %s\n", target[0], o->older_than);
        }
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_rm = {
        .name = "rm", .args = "TARGET [TARGET...]", .check_arg = check_target, .run = rm_run,
        .options = rm_options, .opts_size = sizeof(struct rm_opts),
        .usage = "rm TARGET... [--recursive] [-y|--yes]\n"
                 "rm VOLUME --older-than DURATION",
        .about = "Remove the snapshots VOLUME@SNAP, or the volumes VOLUME, named: each checked\n"
                 "first, all or none.  A volume made by 'create' loses its image file, and when\n"
                 "it holds data rm asks first on a terminal (elsewhere it needs --yes); one\n"
                 "adopted by 'add' keeps it.  --older-than removes VOLUME's snapshots taken\n"
                 "longer ago than DURATION, oldest first.\n",
};

/* --- status ------------------------------------------------------------- */

static void format_uptime(double seconds, char *buf, size_t len)
{
        uint64_t s = seconds > 0 ? (uint64_t)seconds : 0;
        uint64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;

        s %= 60;
        if (d)
                snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", d, h, m, s);
        else if (h)
                snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", h, m, s);
        else if (m)
                snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", m, s);
        else
                snprintf(buf, len, "%" PRIu64 "s", s);
}

/* @opts: --json (cli_json_options) */
static int status_run(const void *opts, char **none)
{
        int64_t protocol = 0, volumes = 0, snapshots = 0, clients = 0, strays = 0, uptime = 0, stores = 0,
                fs_size = 0, fs_free = 0;
        json_object *res;
        char up[64], a[32], b[32], c[32];
        int r;

        (void)none;
        r = daemon_call("status", NULL, -1, &res);
        if (r)
                return r;
        if (*(const bool *)opts) {
                r = print_json_result(res);
                json_object_put(res);
                return r;
        }
        result_int(res, "protocol", &protocol);
        result_int(res, "uptime", &uptime);
        result_int(res, "volumes", &volumes);
        result_int(res, "snapshots", &snapshots);
        result_int(res, "clients", &clients);
        format_uptime((double)uptime, up, sizeof(up));
        {
                /* "userspace" or "userspace and kernel" */
                json_object *e;
                char engines[64] = "";
                if (json_object_object_get_ex(res, "engines", &e) && json_object_is_type(e, json_type_array))
                        for (size_t i = 0; i < json_object_array_length(e); i++)
                                snprintf(engines + strlen(engines), sizeof(engines) - strlen(engines), "%s%s",
                                         i ? " and " : "", json_object_get_string(json_object_array_get_idx(e, i)));
                printf("cowvold %s (protocol %" PRId64 "), up %s, engines: %s\n"
                       "volumes: %" PRId64 ", snapshots: %" PRId64 ", clients: %" PRId64 "\n",
                       string_field(res, "version"), protocol, up, engines[0] ? engines : "?", volumes, snapshots,
                       clients);
        }
        /* where things are: for root and the group only */
        if (result_string(res, "state_dir")) {
                const char *nbd = result_string(res, "nbd_socket"), *tcp = result_string(res, "nbd_tcp"),
                           *creds = result_string(res, "nbd_tls_credentials");
                printf("state folder: %s", result_string(res, "state_dir"));
                if (result_int(res, "stores_bytes", &stores))
                        printf(", stores %s", cowvol_format_size((uint64_t)stores, a, sizeof(a)));
                if (result_int(res, "state_fs_size", &fs_size) && result_int(res, "state_fs_free", &fs_free) &&
                    fs_size > 0)
                        printf("; its filesystem: %s free of %s (%.0f%%)",
                               cowvol_format_size((uint64_t)fs_free, b, sizeof(b)),
                               cowvol_format_size((uint64_t)fs_size, c, sizeof(c)),
                               100.0 * (double)fs_free / (double)fs_size);
                printf("\ncontrol socket: %s\nNBD: %s%s, TCP %s", string_field(res, "socket"), nbd ? "socket " : "",
                       nbd ? nbd : "no socket", tcp ? tcp : "off");
                if (tcp)
                        printf(", TLS %s%s%s%s", string_field(res, "nbd_tls"), creds ? " (" : "", creds ? creds : "",
                               creds ? ")" : "");
                printf("\n");
        }
        if (result_int(res, "strays", &strays) && strays > 0)
                printf("strays: %" PRId64 " file(s) with data that no volume or snapshot owns, in %s (see the log)\n",
                       strays, string_field(res, "stray_folder"));
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_status = {
        .name = "status", .run = status_run, .options = cli_json_options, .opts_size = sizeof(bool),
        .usage = "status [--json]",
        .about = "The daemon's version, protocol, uptime and engine, and how many volumes,\n"
                 "snapshots and clients it has.  Anyone who can reach the socket may ask.\n",
};
