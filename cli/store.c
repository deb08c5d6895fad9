/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvol store ...: offline commands on an exception store file or device. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

/* The scope bits of the store subcommands whose options are not all the same. */
enum { STORE_CREATE = 1 << 0, STORE_JSON = 1 << 1 };

/* The options of the store subcommands */
struct store_opts {
        uint64_t chunk_size, size;
        bool json, force;
};

static const struct cli_option store_options[] = {
        { "chunk-size", .kind = CLI_SIZE, .offset = offsetof(struct store_opts, chunk_size),
          .check = cli_check_chunk_size, .only = STORE_CREATE, .arg = "SIZE",
          .help = "4K to 512K, a power of two (default 4K)" },
        { "size", .kind = CLI_SIZE, .offset = offsetof(struct store_opts, size), .check = cli_check_positive,
          .only = STORE_CREATE, .arg = "SIZE", .help = "size of a store file (needed when it does not exist)" },
        { "force", .short_name = 'f', .kind = CLI_FLAG, .offset = offsetof(struct store_opts, force),
          .only = STORE_CREATE,
          .help = "overwrite a store that is already there" },
        { "json", .short_name = 'j', .kind = CLI_FLAG, .offset = offsetof(struct store_opts, json),
          .only = STORE_JSON,
          .help = "machine-readable output" },
        {},
};

static void print_json(json_object *o)
{
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
}

static int open_store(const char *path, unsigned flags, cowvol_store **ret)
{
        int r;

        log_context = path;
        lib_logged = false;
        r = cowvol_store_open(path, flags, ret);
        if (r == -EUCLEAN)
                return log_error("%s: not a usable store; 'cowvol store check %s' lists every fault", path,
                                 path);
        if (r < 0 && !lib_logged)
                return log_error("%s: cannot open the store: %s", path, strerror(-r));
        return r < 0 ? EXIT_FAILURE : 0;
}

static int store_create(const void *opts, char **arg)
{
        const struct store_opts *o = opts;
        cowvol_store *s;
        char a[32], b[32];
        int r;

        log_context = arg[0];
        r = cowvol_store_create(arg[0], (uint32_t)o->chunk_size, o->size, o->force ? COWVOL_STORE_FORCE : 0,
                                &s);
        if (r < 0 && !lib_logged)
                return log_error("cannot create a store on %s: %s", arg[0], strerror(-r));
        if (r < 0)
                return EXIT_FAILURE;
        printf("Created store %s: %s, chunk size %s, room for %" PRIu64 " exceptions\n", arg[0],
               cowvol_format_size(cowvol_store_chunks(s) * cowvol_store_chunk_size(s), a, sizeof(a)),
               cowvol_format_size(cowvol_store_chunk_size(s), b, sizeof(b)),
               cowvol_store_capacity(s));
        cowvol_store_close(s);
        return EXIT_SUCCESS;
}

static int store_info(const void *opts, char **arg)
{
        const struct store_opts *o = opts;
        struct cowvol_store_usage u;
        cowvol_store *s;
        char status[96], a[32], b[32];
        double pct;
        int r;

        r = open_store(arg[0], COWVOL_STORE_RDONLY, &s);
        if (r)
                return r;
        cowvol_store_usage(s, &u);
        cowvol_store_status_line(s, status, sizeof(status));
        pct = u.total_sectors ? 100.0 * (double)u.allocated_sectors / (double)u.total_sectors : 0;
        if (o->json) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "path", json_object_new_string(arg[0]));
                json_object_object_add(j, "version", json_object_new_int(COWVOL_STORE_VERSION));
                json_object_object_add(j, "valid", json_object_new_boolean(cowvol_store_is_valid(s)));
                json_object_object_add(j, "chunk_size", json_object_new_int64(cowvol_store_chunk_size(s)));
                json_object_object_add(j, "chunk_sectors",
                                       json_object_new_int64(cowvol_store_chunk_size(s) / COWVOL_SECTOR_SIZE));
                json_object_object_add(j, "exceptions_per_area",
                                       json_object_new_int64(cowvol_store_exceptions_per_area(s)));
                json_object_object_add(j, "exceptions",
                                       cowvol_store_is_valid(s) ? json_object_new_int64((int64_t)cowvol_store_count(s))
                                                                : NULL);
                json_object_object_add(j, "allocated_sectors", json_object_new_int64((int64_t)u.allocated_sectors));
                json_object_object_add(j, "total_sectors", json_object_new_int64((int64_t)u.total_sectors));
                json_object_object_add(j, "metadata_sectors", json_object_new_int64((int64_t)u.metadata_sectors));
                json_object_object_add(j, "percent_used", json_object_new_double(pct));
                json_object_object_add(j, "full", json_object_new_boolean(cowvol_store_is_full(s)));
                json_object_object_add(j, "status", json_object_new_string(status));
                print_json(j);
        } else {
                uint32_t cs = cowvol_store_chunk_size(s);
                printf("Store:       %s\n", arg[0]);
                printf("Version:     %u\n", COWVOL_STORE_VERSION);
                printf("Valid:       %s\n", cowvol_store_is_valid(s) ? "yes" : "no (invalidated: overflow or I/O error)");
                printf("Chunk size:  %s (%u sectors)\n", cowvol_format_size(cs, a, sizeof(a)),
                       cs / COWVOL_SECTOR_SIZE);
                if (cowvol_store_is_valid(s))
                        printf("Exceptions:  %" PRIu64 " (%u per metadata area, %" PRIu64 " area(s) in use)\n",
                               cowvol_store_count(s), cowvol_store_exceptions_per_area(s),
                               u.metadata_sectors / (cs / COWVOL_SECTOR_SIZE) - 1);
                else
                        printf("Exceptions:  - (an invalid store's table is not read)\n");
                printf("Allocated:   %" PRIu64 " sectors (%s)\n", u.allocated_sectors,
                       cowvol_format_size(u.allocated_sectors * COWVOL_SECTOR_SIZE, a, sizeof(a)));
                printf("Total:       %" PRIu64 " sectors (%s)\n", u.total_sectors,
                       cowvol_format_size(u.total_sectors * COWVOL_SECTOR_SIZE, b, sizeof(b)));
                printf("Metadata:    %" PRIu64 " sectors\n", u.metadata_sectors);
                printf("Used:        %.2f%%%s\n", pct, cowvol_store_is_full(s) ? " (full)" : "");
                printf("Status:      %s\n", status);
        }
        cowvol_store_close(s);
        return EXIT_SUCCESS;
}

static void print_fault(const struct cowvol_fault *f, void *userdata)
{
        printf("%s: %s\n", (const char *)userdata, f->message);
}

static int store_check(const void *opts, char **arg)
{
        cowvol_store *s;
        char cs[32];
        int r;

        (void)opts;
        r = cowvol_store_check(arg[0], print_fault, arg[0]);
        if (r < 0)
                return log_error("cannot check %s: %s", arg[0], strerror(-r));
        if (r > 0) {
                printf("%s: %d fault%s found\n", arg[0], r, r == 1 ? "" : "s");
                return EXIT_FAILURE;
        }
        /* sound: say what was checked */
        cowvol_set_log_callback(NULL, NULL);
        if (cowvol_store_open(arg[0], COWVOL_STORE_RDONLY, &s) < 0)
                return log_error("%s: changed while it was checked", arg[0]);
        printf("%s: sound: %" PRIu64 " exceptions, chunk size %s\n", arg[0], cowvol_store_count(s),
               cowvol_format_size(cowvol_store_chunk_size(s), cs, sizeof(cs)));
        cowvol_store_close(s);
        return EXIT_SUCCESS;
}

static int dump_text(const struct cowvol_exception *e, void *userdata)
{
        (void)userdata;
        if (printf("%" PRIu64 " %" PRIu64 "\n", e->old_chunk, e->new_chunk) < 0)
                return -errno;
        return 0;
}

static int dump_json(const struct cowvol_exception *e, void *userdata)
{
        json_object *o = json_object_new_object();

        json_object_object_add(o, "origin_chunk", json_object_new_int64((int64_t)e->old_chunk));
        json_object_object_add(o, "store_chunk", json_object_new_int64((int64_t)e->new_chunk));
        json_object_object_add(o, "area", json_object_new_int64((int64_t)e->area));
        json_object_object_add(o, "slot", json_object_new_int64(e->slot));
        json_object_array_add(userdata, o);
        return 0;
}

static int store_dump(const void *opts, char **arg)
{
        const struct store_opts *o = opts;
        cowvol_store *s;
        int r;

        r = open_store(arg[0], COWVOL_STORE_RDONLY, &s);
        if (r)
                return r;
        if (!cowvol_store_is_valid(s)) {
                cowvol_store_close(s);
                return log_error("%s: the store is marked invalid; its table is not usable", arg[0]);
        }
        if (o->json) {
                json_object *j = json_object_new_object(), *a = json_object_new_array();
                json_object_object_add(j, "chunk_size", json_object_new_int64(cowvol_store_chunk_size(s)));
                r = cowvol_store_foreach(s, dump_json, a);
                json_object_object_add(j, "exceptions", a);
                if (r >= 0)
                        print_json(j);
                else
                        json_object_put(j);
        } else {
                r = cowvol_store_foreach(s, dump_text, NULL);
        }
        cowvol_store_close(s);
        if (r < 0 || fflush(stdout) != 0)
                return log_error("%s: dump failed: %s", arg[0], strerror(r < 0 ? -r : errno));
        return EXIT_SUCCESS;
}

/* The view's OUTPUT must not be its ORIGIN or one of its stores, nor hold
 * a store: with a chain of stores a forgotten OUTPUT makes the newest
 * store the output, which the view would overwrite. */
static int check_view_files(char **arg, size_t n)
{
        struct stat *st = calloc(n, sizeof(*st));
        bool *have = calloc(n, sizeof(*have));
        uint32_t magic;
        int r = 0;

        if (!st || !have) {
                free(st), free(have);
                return log_error("out of memory");
        }
        for (size_t i = 0; i < n; i++)
                have[i] = stat(arg[i], &st[i]) == 0;
        for (size_t i = 1; i < n && r == 0; i++)
                for (size_t j = 0; j < i && r == 0; j++) {
                        if (!have[i] || !have[j] || st[i].st_dev != st[j].st_dev || st[i].st_ino != st[j].st_ino)
                                continue;
                        if (i == n - 1)
                                r = log_error("output %s is %s %s: the view would overwrite it", arg[i],
                                              j == 0 ? "the origin" : "the store", arg[j]);
                        else if (j == 0)
                                r = log_error("%s is the origin and a store", arg[i]);
                        else
                                r = log_error("%s is given twice: each store of the chain once, the snapshot's "
                                              "first", arg[i]);
                }
        if (r == 0 && have[n - 1] && (S_ISREG(st[n - 1].st_mode) || S_ISBLK(st[n - 1].st_mode))) {
                FILE *f = fopen(arg[n - 1], "rbe");
                bool is_store = f && fread(&magic, sizeof(magic), 1, f) == 1 && le32toh(magic) == COWVOL_STORE_MAGIC;
                if (f)
                        fclose(f);
                if (is_store)
                        r = log_error("output %s holds a snapshot store, which the view would overwrite; the "
                                      "output comes last: ORIGIN STORE [NEWER_STORE...] OUTPUT", arg[n - 1]);
        }
        free(st);
        free(have);
        return r;
}

/* view ORIGIN STORE [NEWER_STORE...] OUTPUT: the snapshot of STORE, read
 * through the newer stores of its chain, the newest last. */
static int store_view(const void *opts, char **arg)
{
        cowvol_store **s;
        size_t n = 0, k;
        char a[32], b[32];
        int r;

        (void)opts;
        while (arg[n])
                n++;
        k = n - 2; /* the stores, between ORIGIN and OUTPUT */
        r = check_view_files(arg, n);
        if (r)
                return r;
        s = calloc(k, sizeof(*s));
        if (!s)
                return log_error("out of memory");
        for (size_t i = 0; i < k && r == 0; i++) {
                const char *path = arg[1 + i];
                /* newer stores are links of the chain: read, valid or not */
                r = open_store(path, COWVOL_STORE_RDONLY | (i ? COWVOL_STORE_LINK : 0), &s[i]);
                if (r)
                        break;
                if (i == 0 && !cowvol_store_is_valid(s[0]))
                        r = log_error("%s: the store is marked invalid: its snapshot has no content to show", path);
                else if (cowvol_store_chunk_size(s[i]) != cowvol_store_chunk_size(s[0]))
                        r = log_error("%s: chunk size %s, but %s has %s: the stores of one chain share one chunk "
                                      "size", path, cowvol_format_size(cowvol_store_chunk_size(s[i]), a, sizeof(a)),
                                      arg[1], cowvol_format_size(cowvol_store_chunk_size(s[0]), b, sizeof(b)));
        }
        if (r == 0) {
                lib_logged = false;
                log_context = NULL;
                r = cowvol_chain_view(s, k, arg[0], arg[n - 1]);
                if (r < 0 && !lib_logged)
                        log_error("cannot write the view to %s: %s", arg[n - 1], strerror(-r));
                r = r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }
        for (size_t i = 0; i < k; i++)
                cowvol_store_close(s[i]);
        free(s);
        return r;
}

/* The store subcommands: one table of options and one help for all. */
static const struct store_opts store_defaults = { .chunk_size = COWVOL_CHUNK_DEFAULT };
#define STORE_SHARED                                                                                       \
        .options = store_options, .opts_size = sizeof(struct store_opts), .defaults = &store_defaults,     \
        .usage = "store create PATH [--chunk-size SIZE] [--size SIZE] [--force]\n"                         \
                 "store info PATH [--json]\n"                                                              \
                 "store check PATH\n"                                                                      \
                 "store dump PATH [--json]\n"                                                              \
                 "store view ORIGIN STORE [NEWER_STORE...] OUTPUT",                                        \
        .about = "PATH is an exception store in the Linux kernel's persistent snapshot format\n"           \
                 "(dm-snapshot 'P'), in a file or on a block device.  view writes the content of\n"    \
                 "STORE's snapshot; in a chain of snapshots, name the stores of the newer ones\n"       \
                 "after it, the newest last.\n"

static const struct cli_command store_commands[] = {
        { .name = "store create", .args = "PATH", .scope = STORE_CREATE, .run = store_create, STORE_SHARED },
        { .name = "store info", .args = "PATH", .scope = STORE_JSON, .run = store_info, STORE_SHARED },
        { .name = "store check", .args = "PATH", .run = store_check, STORE_SHARED },
        { .name = "store dump", .args = "PATH", .scope = STORE_JSON, .run = store_dump, STORE_SHARED },
        { .name = "store view", .args = "ORIGIN STORE [NEWER_STORE...] OUTPUT", .run = store_view, STORE_SHARED },
};

int cmd_store(int argc, char **argv)
{
        if (argc < 2)
                return usage_error("store", "missing subcommand (create, info, check, dump, view)");
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                cli_help_all(&store_commands[0]);
                return EXIT_SUCCESS;
        }
        for (size_t k = 0; k < sizeof(store_commands) / sizeof(store_commands[0]); k++)
                if (strcmp(argv[1], store_commands[k].name + strlen("store ")) == 0)
                        return cli_run(&store_commands[k], argc - 1, argv + 1);
        return usage_error("store", "unknown subcommand '%s'", argv[1]);
}
