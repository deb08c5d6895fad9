/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvol create, add, snap, list, restore, rm, status: the catalogue of
 * volumes and snapshots, kept by cowvold.  Each command builds the request's
 * arguments, lets client.c carry it, and prints the result for people; the
 * daemon validates names and sizes and its message is printed as it is.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
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

static int check_chunk_size(const char *cmd, uint64_t cs)
{
        if (!cowvol_chunk_size_valid(cs))
                return usage_error(cmd, "--chunk-size must be a power of two from 4K to 512K, not %" PRIu64, cs);
        return 0;
}

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

static void create_help(void)
{
        printf("Usage: %s create NAME --size SIZE [--chunk-size SIZE]\n"
               "\n"
               "Make a new volume NAME: a sparse image file in cowvold's state folder.\n"
               "\n"
               "  --size SIZE        the volume's size\n"
               "  --chunk-size SIZE  copy-on-write unit of its snapshots: 4K to 512K, a power of\n"
               "                     two (default 4K)\n",
               program_name);
}

int cmd_create(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "size", required_argument, NULL, 's' },
                { "chunk-size", required_argument, NULL, 'c' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "create ";
        uint64_t size = 0, chunk_size = 0;
        bool has_size = false, has_chunk = false;
        json_object *args, *res;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        create_help();
                        return EXIT_SUCCESS;
                case 's':
                        r = parse_bytes_arg(cmd, "--size", optarg, &size);
                        if (r)
                                return r;
                        if (size == 0)
                                return usage_error(cmd, "--size must be more than 0");
                        has_size = true;
                        break;
                case 'c':
                        r = parse_bytes_arg(cmd, "--chunk-size", optarg, &chunk_size);
                        if (r)
                                return r;
                        r = check_chunk_size(cmd, chunk_size);
                        if (r)
                                return r;
                        has_chunk = true;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        r = check_arg_count(cmd, argc - optind, 1, "NAME");
        if (r)
                return r;
        r = check_target(cmd, argv[optind]);
        if (r)
                return r;
        if (strchr(argv[optind], '@'))
                return usage_error(cmd, "'%s' is a snapshot name; a volume's name has no '@'", argv[optind]);
        if (!has_size)
                return usage_error(cmd, "missing --size");

        args = json_object_new_object();
        json_object_object_add(args, "name", json_object_new_string(argv[optind]));
        json_object_object_add(args, "size", json_object_new_int64((int64_t)size));
        if (has_chunk)
                json_object_object_add(args, "chunk_size", json_object_new_int64((int64_t)chunk_size));
        r = daemon_call("create", args, -1, &res);
        if (r)
                return r;
        print_volume_made("Created", res);
        json_object_put(res);
        return EXIT_SUCCESS;
}

/* --- add ---------------------------------------------------------------- */

static void add_help(void)
{
        printf("Usage: %s add PATH [--name NAME] [--chunk-size SIZE]\n"
               "\n"
               "Adopt the existing image file PATH as a volume, where it is.  Removing the\n"
               "volume later keeps the file.\n"
               "\n"
               "  --name NAME        the volume's name (default: the file name without its\n"
               "                     extension)\n"
               "  --chunk-size SIZE  copy-on-write unit of its snapshots: 4K to 512K, a power of\n"
               "                     two (default 4K)\n",
               program_name);
}

int cmd_add(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "name", required_argument, NULL, 'n' },
                { "chunk-size", required_argument, NULL, 'c' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "add ", *name = NULL;
        uint64_t chunk_size = 0;
        bool has_chunk = false;
        json_object *args, *res;
        char *path;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        add_help();
                        return EXIT_SUCCESS;
                case 'n':
                        name = optarg;
                        r = check_target(cmd, name);
                        if (r)
                                return r;
                        if (strchr(name, '@'))
                                return usage_error(cmd, "'%s' is a snapshot name; a volume's name has no '@'",
                                                   name);
                        break;
                case 'c':
                        r = parse_bytes_arg(cmd, "--chunk-size", optarg, &chunk_size);
                        if (r)
                                return r;
                        r = check_chunk_size(cmd, chunk_size);
                        if (r)
                                return r;
                        has_chunk = true;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        r = check_arg_count(cmd, argc - optind, 1, "PATH");
        if (r)
                return r;
        /* UUID=..., LABEL=...: the daemon finds the device (libblkid); a path
         * must be absolute for it, this one's cwd means nothing there */
        if (argv[optind][0] != '/' && argv[optind][0] != '.' && strchr(argv[optind], '='))
                path = strdup(argv[optind]);
        else
                path = realpath(argv[optind], NULL);
        if (!path)
                return log_error("%s: %s", argv[optind], strerror(errno));

        args = json_object_new_object();
        json_object_object_add(args, "path", json_object_new_string(path));
        if (name)
                json_object_object_add(args, "name", json_object_new_string(name));
        if (has_chunk)
                json_object_object_add(args, "chunk_size", json_object_new_int64((int64_t)chunk_size));
        free(path);
        r = daemon_call("add", args, -1, &res);
        if (r)
                return r;
        print_volume_made("Added", res);
        json_object_put(res);
        return EXIT_SUCCESS;
}

/* --- snap --------------------------------------------------------------- */

static void snap_help(void)
{
        printf("Usage: %s snap VOLUME[@NAME] [--store-size SIZE | --store DEVICE [--force]]\n"
               "\n"
               "Take a snapshot of VOLUME.  Without NAME, the snapshot is named after the\n"
               "time, in UTC (YYYYMMDDTHHMMSSZ).\n"
               "\n"
               "  --store-size SIZE  room for copied chunks (default: 20%% of the volume, at\n"
               "                     least 1M; the store grows when it fills)\n"
               "  --store DEVICE     a kernel volume's store on this block device (or\n"
               "                     UUID=..., LABEL=...) instead of a file; its content is lost\n"
               "  --force            use a --store device that carries a filesystem or\n"
               "                     another signature anyway\n",
               program_name);
}

int cmd_snap(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "store-size", required_argument, NULL, 's' },
                { "store", required_argument, NULL, 'S' },
                { "force", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "snap ", *at, *store = NULL;
        bool force = false;
        uint64_t store_size = 0;
        bool has_store_size = false;
        json_object *args, *res;
        char a[32];
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        snap_help();
                        return EXIT_SUCCESS;
                case 's':
                        r = parse_bytes_arg(cmd, "--store-size", optarg, &store_size);
                        if (r)
                                return r;
                        if (store_size == 0)
                                return usage_error(cmd, "--store-size must be more than 0");
                        has_store_size = true;
                        break;
                case 'S':
                        store = optarg;
                        break;
                case 'f':
                        force = true;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        r = check_arg_count(cmd, argc - optind, 1, "VOLUME[@NAME]");
        if (r)
                return r;
        r = check_target(cmd, argv[optind]);
        if (r)
                return r;
        if (store && has_store_size)
                return usage_error(cmd, "give --store-size or --store, not both");
        if (force && !store)
                return usage_error(cmd, "--force goes with --store");

        args = json_object_new_object();
        at = strchr(argv[optind], '@');
        if (at) {
                json_object_object_add(args, "volume",
                                       json_object_new_string_len(argv[optind], (int)(at - argv[optind])));
                json_object_object_add(args, "name", json_object_new_string(at + 1));
        } else {
                json_object_object_add(args, "volume", json_object_new_string(argv[optind]));
        }
        if (has_store_size)
                json_object_object_add(args, "store_size", json_object_new_int64((int64_t)store_size));
        if (store)
                json_object_object_add(args, "store", json_object_new_string(store));
        if (force)
                json_object_object_add(args, "force", json_object_new_boolean(true));
        r = daemon_call("snap", args, -1, &res);
        if (r)
                return r;
        printf("Created snapshot %s (store %s)\n", string_field(res, "full_name"),
               size_field(res, "store_size", a, sizeof(a)));
        json_object_put(res);
        return EXIT_SUCCESS;
}

/* --- list --------------------------------------------------------------- */

/*
 * The table: one row per volume, its snapshots indented below it.  Column
 * widths come from the data; sizes and DATA% are aligned right.
 */
enum { COL_NAME, COL_ORIGIN, COL_SIZE, COL_CHUNK, COL_DATA, COL_FS, COL_LABEL, COL_STATE, COL_CREATED, N_COLS };

static const char *const col_title[N_COLS] = { "NAME", "ORIGIN", "SIZE",  "CHUNK",  "DATA%",
                                               "FS",   "LABEL",  "STATE", "CREATED" };
static const bool col_right[N_COLS] = { [COL_SIZE] = true, [COL_CHUNK] = true, [COL_DATA] = true };

struct table {
        char **cells; /* rows * N_COLS strings */
        size_t rows, alloc;
};

static void table_free(struct table *t)
{
        for (size_t i = 0; i < t->rows * N_COLS; i++)
                free(t->cells[i]);
        free(t->cells);
}

/* Add an empty row; returns its cells, or NULL when out of memory. */
static char **table_add_row(struct table *t)
{
        char **row;

        if (t->rows == t->alloc) {
                size_t n = t->alloc ? t->alloc * 2 : 16;
                char **p = reallocarray(t->cells, n * N_COLS, sizeof(char *));
                if (!p)
                        return NULL;
                t->cells = p;
                t->alloc = n;
        }
        row = t->cells + t->rows * N_COLS;
        memset(row, 0, N_COLS * sizeof(char *));
        t->rows++;
        return row;
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

static char *created_cell(json_object *o)
{
        double t;
        time_t tt;
        struct tm tm;
        char buf[32];

        /* seconds since the epoch; a fraction, if any, is dropped */
        if (!result_double(o, "created", &t) || t < 0 || t > 253402300799.0)
                return strdup("");
        tt = (time_t)t;
        if (!gmtime_r(&tt, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &tm) == 0)
                return strdup("");
        return strdup(buf);
}

static char *size_cell(json_object *o, const char *key)
{
        char buf[32];
        int64_t v;

        if (!result_int(o, key, &v) || v < 0)
                return strdup("");
        return strdup(cowvol_format_size((uint64_t)v, buf, sizeof(buf)));
}

static char *volume_state_cell(json_object *v)
{
        json_object *restore;
        double pct;

        if (json_object_object_get_ex(v, "restore", &restore) && json_object_is_type(restore, json_type_object)) {
                const char *from = result_string(restore, "snapshot");
                json_object *pending;
                if (json_object_object_get_ex(restore, "pending", &pending) && json_object_get_boolean(pending))
                        return cell("restore from %s waits for activation", from ? from : "?");
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

static int table_fill(struct table *t, json_object *volumes)
{
        size_t nv = json_object_array_length(volumes);

        for (size_t i = 0; i < nv; i++) {
                json_object *v = json_object_array_get_idx(volumes, i), *snaps;
                const char *vname = string_field(v, "name");
                char **row = table_add_row(t);
                size_t ns;

                if (!row)
                        return -ENOMEM;
                row[COL_NAME] = cell("%s", vname);
                row[COL_ORIGIN] = strdup("");
                row[COL_SIZE] = size_cell(v, "size");
                row[COL_CHUNK] = size_cell(v, "chunk_size");
                row[COL_DATA] = strdup("");
                row[COL_FS] = cell("%s", result_string(v, "fstype") ? result_string(v, "fstype") : "");
                row[COL_LABEL] = cell("%s", result_string(v, "label") ? result_string(v, "label") : "");
                row[COL_STATE] = volume_state_cell(v);
                row[COL_CREATED] = created_cell(v);

                if (!json_object_object_get_ex(v, "snapshots", &snaps) || !json_object_is_type(snaps, json_type_array))
                        continue;
                ns = json_object_array_length(snaps);
                for (size_t k = 0; k < ns; k++) {
                        json_object *s = json_object_array_get_idx(snaps, k);
                        const char *full = result_string(s, "full_name");
                        double pct;

                        row = table_add_row(t);
                        if (!row)
                                return -ENOMEM;
                        row[COL_NAME] = full ? cell("  %s", full) : cell("  %s@%s", vname, string_field(s, "name"));
                        row[COL_ORIGIN] = cell("%s", vname);
                        row[COL_SIZE] = size_cell(s, "store_size");
                        /* a store's chunk size is its volume's */
                        row[COL_CHUNK] = size_cell(v, "chunk_size");
                        row[COL_DATA] = result_double(s, "data_percent", &pct) ? cell("%.1f", pct) : strdup("");
                        row[COL_FS] = strdup("");
                        row[COL_LABEL] = strdup("");
                        row[COL_STATE] = snapshot_state_cell(s);
                        row[COL_CREATED] = created_cell(s);
                }
        }
        for (size_t i = 0; i < t->rows * N_COLS; i++)
                if (!t->cells[i])
                        return -ENOMEM;
        return 0;
}

static void table_print_row(char *const *row, const size_t *width)
{
        char line[4096];
        size_t n = 0;

        /* built in a buffer so that trailing blanks can be cut */
        for (int c = 0; c < N_COLS; c++) {
                size_t w = text_width(row[c]), pad = width[c] - w;
                int m;

                m = snprintf(line + n, sizeof(line) - n, "%s%*s%s%*s", c ? "  " : "", col_right[c] ? (int)pad : 0,
                             "", row[c], col_right[c] ? 0 : (int)pad, "");
                if (m < 0 || (size_t)m >= sizeof(line) - n) {
                        n = sizeof(line) - 1;
                        break;
                }
                n += (size_t)m;
        }
        while (n > 0 && line[n - 1] == ' ')
                n--;
        printf("%.*s\n", (int)n, line);
}

static int list_print(json_object *res)
{
        json_object *volumes;
        struct table t = {};
        size_t width[N_COLS];
        int r;

        if (!json_object_object_get_ex(res, "volumes", &volumes) || !json_object_is_type(volumes, json_type_array))
                return log_error("cowvold's list has no \"volumes\" array");
        if (json_object_array_length(volumes) == 0) {
                printf("No volumes.\n");
                return EXIT_SUCCESS;
        }
        r = table_fill(&t, volumes);
        if (r < 0) {
                table_free(&t);
                return log_error("out of memory");
        }
        for (int c = 0; c < N_COLS; c++) {
                width[c] = strlen(col_title[c]);
                for (size_t i = 0; i < t.rows; i++) {
                        size_t w = text_width(t.cells[i * N_COLS + c]);
                        if (w > width[c])
                                width[c] = w;
                }
        }
        table_print_row((char *const *)col_title, width);
        for (size_t i = 0; i < t.rows; i++)
                table_print_row(t.cells + i * N_COLS, width);
        table_free(&t);
        if (fflush(stdout) != 0)
                return log_error("cannot write the output: %s", strerror(errno));
        return EXIT_SUCCESS;
}

static void list_help(void)
{
        printf("Usage: %s list [VOLUME] [--json]\n"
               "\n"
               "List the volumes (or only VOLUME) and their snapshots: NAME, ORIGIN (a\n"
               "snapshot's volume), SIZE (a snapshot's: its store), CHUNK, DATA%% (how full a\n"
               "snapshot's store is), FS and LABEL (the volume's filesystem, as blkid sees\n"
               "it), STATE and CREATED (UTC).\n"
               "\n"
               "  --json  the daemon's answer, as it is\n",
               program_name);
}

int cmd_list(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "list ";
        json_object *args = NULL, *res;
        bool json = false;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        list_help();
                        return EXIT_SUCCESS;
                case 'j':
                        json = true;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        if (argc - optind > 1)
                return usage_error(cmd, "too many arguments (expected [VOLUME])");
        if (argc - optind == 1) {
                r = check_target(cmd, argv[optind]);
                if (r)
                        return r;
                if (strchr(argv[optind], '@'))
                        return usage_error(cmd, "'%s' is a snapshot; list takes a volume", argv[optind]);
                args = json_object_new_object();
                json_object_object_add(args, "volume", json_object_new_string(argv[optind]));
        }
        r = daemon_call("list", args, -1, &res);
        if (r)
                return r;
        r = json ? print_json_result(res) : list_print(res);
        json_object_put(res);
        return r;
}

/* --- restore ------------------------------------------------------------ */

#define RESTORE_POLL_NS (200 * 1000 * 1000)
#define RESTORE_BAR 20

static void restore_help(void)
{
        printf("Usage: %s restore VOLUME@SNAP [--keep] [--no-wait]\n"
               "\n"
               "Give VOLUME the content of its snapshot SNAP, and wait until that is done\n"
               "(with a progress bar on a terminal).  Without --keep the snapshot is used up.\n"
               "\n"
               "  --keep     keep the snapshot (as a snapshot of the restored content)\n"
               "  --no-wait  return once the restore has started; 'cowvol list' shows it\n",
               program_name);
}

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

int cmd_restore(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "keep", no_argument, NULL, 'k' },
                { "no-wait", no_argument, NULL, 'n' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "restore ", *snapshot, *at;
        bool keep = false, wait = true;
        json_object *args, *res;
        client *cl = NULL;
        char *volume;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        restore_help();
                        return EXIT_SUCCESS;
                case 'k':
                        keep = true;
                        break;
                case 'n':
                        wait = false;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        r = check_arg_count(cmd, argc - optind, 1, "VOLUME@SNAP");
        if (r)
                return r;
        snapshot = argv[optind];
        r = check_target(cmd, snapshot);
        if (r)
                return r;
        at = strchr(snapshot, '@');
        if (!at)
                return usage_error(cmd, "'%s' is not a snapshot (VOLUME@SNAP)", snapshot);
        volume = strndup(snapshot, (size_t)(at - snapshot));
        if (!volume)
                return log_error("out of memory");

        r = client_open(&cl);
        if (r)
                goto out;
        args = json_object_new_object();
        json_object_object_add(args, "snapshot", json_object_new_string(snapshot));
        json_object_object_add(args, "keep", json_object_new_boolean(keep));
        r = client_call(cl, "restore", args, -1, &res);
        if (r)
                goto out;
        {
                json_object *pending;
                if (json_object_object_get_ex(res, "pending", &pending) && json_object_get_boolean(pending)) {
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
        if (wait) {
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

/* --- activate ------------------------------------------------------------ */

int cmd_activate(int argc, char **argv)
{
        static const struct option longopts[] = { { "help", no_argument, NULL, 'h' }, {} };
        const char *cmd = "activate ";
        json_object *args, *res;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                if (c == 'h') {
                        printf("Usage: %s activate VOLUME\n"
                               "\n"
                               "Build a kernel volume's device-mapper devices again from the catalogue\n"
                               "(what exists is kept) and start a restore that waited for it.\n",
                               program_name);
                        return EXIT_SUCCESS;
                }
                return getopt_error(cmd, c, argv);
        }
        r = check_arg_count(cmd, argc - optind, 1, "VOLUME");
        if (r)
                return r;
        r = check_target(cmd, argv[optind]);
        if (r)
                return r;
        if (strchr(argv[optind], '@'))
                return usage_error(cmd, "'%s' is a snapshot; activate takes a volume", argv[optind]);
        args = json_object_new_object();
        json_object_object_add(args, "volume", json_object_new_string(argv[optind]));
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

/* --- rm ----------------------------------------------------------------- */

static void rm_help(void)
{
        printf("Usage: %s rm TARGET [--recursive]\n"
               "\n"
               "Remove the snapshot VOLUME@SNAP, or the volume VOLUME.  A volume made by\n"
               "'create' loses its image file; one adopted by 'add' keeps it.\n"
               "\n"
               "  --recursive  remove a volume together with its snapshots\n",
               program_name);
}

int cmd_rm(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "recursive", no_argument, NULL, 'r' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "rm ";
        bool recursive = false;
        json_object *args, *res;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        rm_help();
                        return EXIT_SUCCESS;
                case 'r':
                        recursive = true;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        r = check_arg_count(cmd, argc - optind, 1, "TARGET");
        if (r)
                return r;
        r = check_target(cmd, argv[optind]);
        if (r)
                return r;
        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(argv[optind]));
        if (recursive)
                json_object_object_add(args, "recursive", json_object_new_boolean(true));
        r = daemon_call("rm", args, -1, &res);
        if (r)
                return r;
        json_object_put(res);
        printf("Removed %s\n", argv[optind]);
        return EXIT_SUCCESS;
}

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

static void status_help(void)
{
        printf("Usage: %s status [--json]\n"
               "\n"
               "The daemon's version, protocol, uptime and engine, and how many volumes,\n"
               "snapshots and clients it has.  Anyone who can reach the socket may ask.\n"
               "\n"
               "  --json  the daemon's answer, as it is\n",
               program_name);
}

int cmd_status(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "status ";
        int64_t protocol = 0, volumes = 0, snapshots = 0, clients = 0;
        double uptime = 0;
        json_object *res;
        bool json = false;
        char up[64];
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        status_help();
                        return EXIT_SUCCESS;
                case 'j':
                        json = true;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        if (argc > optind)
                return usage_error(cmd, "status takes no arguments");
        r = daemon_call("status", NULL, -1, &res);
        if (r)
                return r;
        if (json) {
                r = print_json_result(res);
                json_object_put(res);
                return r;
        }
        result_int(res, "protocol", &protocol);
        result_double(res, "uptime", &uptime);
        result_int(res, "volumes", &volumes);
        result_int(res, "snapshots", &snapshots);
        result_int(res, "clients", &clients);
        format_uptime(uptime, up, sizeof(up));
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
        json_object_put(res);
        return EXIT_SUCCESS;
}
