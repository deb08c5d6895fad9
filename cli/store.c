/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvol store ...: offline commands on an exception store file or device. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void store_help(void)
{
        printf("Usage: %s store create PATH [--chunk-size SIZE] [--size SIZE] [--force]\n"
               "       %s store info PATH [--json]\n"
               "       %s store check PATH\n"
               "       %s store dump PATH [--json]\n"
               "       %s store view ORIGIN STORE OUTPUT\n"
               "\n"
               "PATH is an exception store in the Linux kernel's persistent snapshot format\n"
               "(dm-snapshot 'P'), in a file or on a block device.\n"
               "\n"
               "  --chunk-size SIZE  4K to 512K, a power of two (default 4K)\n"
               "  --size SIZE        size of a store file (needed when it does not exist)\n"
               "  --force            overwrite a store that is already there\n"
               "  --json             machine-readable output\n",
               program_name, program_name, program_name, program_name, program_name);
}

/* Parse the options of one store subcommand; the positionals stay in argv. */
struct store_opts {
        uint64_t chunk_size, size;
        bool json, force, has_chunk_size;
};

static int parse_opts(const char *cmd, int argc, char **argv, const char *allowed, struct store_opts *o,
                      int *ret_optind)
{
        static const struct option longopts[] = {
                { "chunk-size", required_argument, NULL, 'c' },
                { "size", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                { "force", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c, r;

        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                if (c == 'h') {
                        store_help();
                        exit(EXIT_SUCCESS);
                }
                if (c == '?')
                        return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
                if (c == ':')
                        return usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
                if (!strchr(allowed, c))
                        return usage_error(cmd, "option '%s' does not apply here", argv[optind - 1]);
                switch (c) {
                case 'c':
                        r = parse_size_arg(cmd, "--chunk-size", optarg, &o->chunk_size);
                        if (r)
                                return r;
                        o->has_chunk_size = true;
                        break;
                case 's':
                        r = parse_size_arg(cmd, "--size", optarg, &o->size);
                        if (r)
                                return r;
                        if (o->size == 0)
                                return usage_error(cmd, "--size must be more than 0");
                        break;
                case 'j':
                        o->json = true;
                        break;
                case 'f':
                        o->force = true;
                        break;
                }
        }
        *ret_optind = optind;
        return 0;
}

static int want_args(const char *cmd, int have, int want, const char *names)
{
        if (have < want)
                return usage_error(cmd, "missing %s", names);
        if (have > want)
                return usage_error(cmd, "too many arguments (expected %s)", names);
        return 0;
}

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

static int store_create(int argc, char **argv)
{
        struct store_opts o = { .chunk_size = COWVOL_CHUNK_DEFAULT };
        cowvol_store *s;
        char a[32], b[32];
        int r, i;

        r = parse_opts("store create ", argc, argv, "csf", &o, &i);
        if (r)
                return r;
        r = want_args("store create ", argc - i, 1, "PATH");
        if (r)
                return r;
        if (!cowvol_chunk_size_valid(o.chunk_size))
                return usage_error("store create ",
                                   "--chunk-size must be a power of two from 4K to 512K, not %" PRIu64,
                                   o.chunk_size);
        log_context = argv[i];
        r = cowvol_store_create(argv[i], (uint32_t)o.chunk_size, o.size, o.force ? COWVOL_STORE_FORCE : 0,
                                &s);
        if (r < 0 && !lib_logged)
                return log_error("cannot create a store on %s: %s", argv[i], strerror(-r));
        if (r < 0)
                return EXIT_FAILURE;
        printf("Created store %s: %s, chunk size %s, room for %" PRIu64 " exceptions\n", argv[i],
               cowvol_format_size(cowvol_store_chunks(s) * cowvol_store_chunk_size(s), a, sizeof(a)),
               cowvol_format_size(cowvol_store_chunk_size(s), b, sizeof(b)),
               cowvol_store_capacity(s));
        cowvol_store_close(s);
        return EXIT_SUCCESS;
}

static int store_info(int argc, char **argv)
{
        struct store_opts o = {};
        struct cowvol_store_usage u;
        cowvol_store *s;
        char status[96], a[32], b[32];
        double pct;
        int r, i;

        r = parse_opts("store info ", argc, argv, "j", &o, &i);
        if (r)
                return r;
        r = want_args("store info ", argc - i, 1, "PATH");
        if (r)
                return r;
        r = open_store(argv[i], COWVOL_STORE_RDONLY, &s);
        if (r)
                return r;
        cowvol_store_usage(s, &u);
        cowvol_store_status_line(s, status, sizeof(status));
        pct = u.total_sectors ? 100.0 * (double)u.allocated_sectors / (double)u.total_sectors : 0;
        if (o.json) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "path", json_object_new_string(argv[i]));
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
                printf("Store:       %s\n", argv[i]);
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

static int store_check(int argc, char **argv)
{
        struct store_opts o = {};
        cowvol_store *s;
        char cs[32];
        int r, i;

        r = parse_opts("store check ", argc, argv, "", &o, &i);
        if (r)
                return r;
        r = want_args("store check ", argc - i, 1, "PATH");
        if (r)
                return r;
        r = cowvol_store_check(argv[i], print_fault, argv[i]);
        if (r < 0)
                return log_error("cannot check %s: %s", argv[i], strerror(-r));
        if (r > 0) {
                printf("%s: %d fault%s found\n", argv[i], r, r == 1 ? "" : "s");
                return EXIT_FAILURE;
        }
        /* sound: say what was checked */
        cowvol_set_log_callback(NULL, NULL);
        if (cowvol_store_open(argv[i], COWVOL_STORE_RDONLY, &s) < 0)
                return log_error("%s: changed while it was checked", argv[i]);
        printf("%s: sound: %" PRIu64 " exceptions, chunk size %s\n", argv[i], cowvol_store_count(s),
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

static int store_dump(int argc, char **argv)
{
        struct store_opts o = {};
        cowvol_store *s;
        int r, i;

        r = parse_opts("store dump ", argc, argv, "j", &o, &i);
        if (r)
                return r;
        r = want_args("store dump ", argc - i, 1, "PATH");
        if (r)
                return r;
        r = open_store(argv[i], COWVOL_STORE_RDONLY, &s);
        if (r)
                return r;
        if (!cowvol_store_is_valid(s)) {
                cowvol_store_close(s);
                return log_error("%s: the store is marked invalid; its table is not usable", argv[i]);
        }
        if (o.json) {
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
                return log_error("%s: dump failed: %s", argv[i], strerror(r < 0 ? -r : errno));
        return EXIT_SUCCESS;
}

static int store_view(int argc, char **argv)
{
        struct store_opts o = {};
        cowvol_store *s;
        int r, i;

        r = parse_opts("store view ", argc, argv, "", &o, &i);
        if (r)
                return r;
        r = want_args("store view ", argc - i, 3, "ORIGIN STORE OUTPUT");
        if (r)
                return r;
        r = open_store(argv[i + 1], COWVOL_STORE_RDONLY, &s);
        if (r)
                return r;
        lib_logged = false;
        log_context = NULL;
        r = cowvol_store_view(s, argv[i], argv[i + 2]);
        cowvol_store_close(s);
        if (r < 0 && lib_logged)
                return EXIT_FAILURE;
        if (r < 0)
                return log_error("cannot write the view to %s: %s", argv[i + 2], strerror(-r));
        return EXIT_SUCCESS;
}

int cmd_store(int argc, char **argv)
{
        static const struct {
                const char *name;
                int (*fn)(int, char **);
        } cmds[] = {
                { "create", store_create }, { "info", store_info }, { "check", store_check },
                { "dump", store_dump },     { "view", store_view },
        };

        if (argc < 2)
                return usage_error("store ", "missing subcommand (create, info, check, dump, view)");
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                store_help();
                return EXIT_SUCCESS;
        }
        for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
                if (strcmp(argv[1], cmds[k].name) == 0)
                        return cmds[k].fn(argc - 1, argv + 1);
        return usage_error("store ", "unknown subcommand '%s'", argv[1]);
}
