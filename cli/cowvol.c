/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvol: the command line of cowvol.  Subcommands live in their own files. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *program_name = "cowvol";
const char *log_context;
bool lib_logged;

int log_error(const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", program_name);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_FAILURE;
}

int usage_error(const char *cmd, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", program_name);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry '%s %s%s--help'.\n", program_name, cmd ? cmd : "", cmd ? " " : "");
        return EXIT_USAGE;
}

static void lib_log(int level, const char *msg, void *userdata)
{
        (void)userdata;
        if (level == COWVOL_LOG_ERROR)
                lib_logged = true;
        fprintf(stderr, "%s: %s%s%s%s\n", program_name, log_context ? log_context : "",
                log_context ? ": " : "", level == COWVOL_LOG_WARNING ? "warning: " : "", msg);
}

static void help(void)
{
        printf("Usage: %s [--socket PATH] COMMAND [ARGS...]\n"
               "\n"
               "Copy-on-write snapshots of volumes, in the kernel's dm-snapshot format.\n"
               "\n"
               "Volumes and snapshots (through the daemon, cowvold):\n"
               "  create NAME --size SIZE [--chunk-size SIZE]\n"
               "                                Make a new volume (a sparse image file)\n"
               "  add PATH [--name NAME] [--chunk-size SIZE]\n"
               "                                Adopt an image file, or a block device (also\n"
               "                                UUID=..., LABEL=...: the kernel engine)\n"
               "  snap VOLUME[@NAME] [--store-size SIZE | --store DEVICE [--force]]\n"
               "      [--description TEXT] [--cleanup number|timeline] [--type pre|post]\n"
               "      [--pre SNAP] [--userdata KEY=VALUE,...]\n"
               "                                Take a snapshot (NAME: a UTC timestamp if not given;\n"
               "                                the rest says what it is, as snapper's create)\n"
               "  list [VOLUME] [--json]        Volumes and their snapshots, with store use\n"
               "  restore VOLUME@SNAP [--keep] [--no-wait]\n"
               "                                Give the volume the snapshot's content\n"
               "  rename VOLUME[@SNAP] NEW      Give a volume or a snapshot another name\n"
               "  set VOLUME@SNAP read-only=on|off\n"
               "                                Make a snapshot read-only, or writable\n"
               "  resize VOLUME --size [+]SIZE [--force]\n"
               "                                Grow a volume (its snapshots keep their size)\n"
               "  activate VOLUME               Rebuild a kernel volume's devices; start a waiting restore\n"
               "  rm TARGET [--recursive]       Remove a snapshot, or a volume\n"
               "  cat TARGET [--offset BYTES] [--length BYTES]\n"
               "                                Write a volume's or snapshot's content to stdout\n"
               "  write TARGET [--offset BYTES] Write stdin into a volume at BYTES\n"
               "  diff VOLUME@SNAP [--json]     Byte ranges changed since the snapshot\n"
               "  export TARGET [--json]        The NBD URI serving a volume or snapshot\n"
               "  status [--json]               The daemon's version, uptime and counts\n"
               "  cleanup VOLUME [--dry-run] [--json]\n"
               "                                Remove what snapper's cleanup rules remove now\n"
               "  schedule VOLUME... [--hourly N] [--daily N] ... [--min-age DURATION] [--off]\n"
               "                                Hourly timeline snapshots and cleanup by cowvold\n"
               "\n"
               "Offline store commands (no daemon needed; PATH is a file or a block device):\n"
               "  store create PATH [--chunk-size SIZE] [--size SIZE] [--force]\n"
               "                                Make a new, empty exception store\n"
               "  store info PATH [--json]      Chunk size, validity, exceptions, usage\n"
               "  store check PATH              Validate; list every fault found\n"
               "  store dump PATH [--json]      One exception per line: origin chunk, store chunk\n"
               "  store view ORIGIN STORE [NEWER_STORE...] OUTPUT\n"
               "                                Write the snapshot's content (origin + exceptions;\n"
               "                                in a chain, through the newer stores, newest last)\n"
               "\n"
               "Options:\n"
               "  --socket PATH   cowvold's socket (default: $COWVOL_SOCKET, else\n"
               "                  %s)\n"
               "  -h, --help      Show this help\n"
               "  -V, --version   Show the version\n"
               "\n"
               "Sizes take the suffixes K, M, G, T (powers of 1024), with or without iB.\n"
               "'%s COMMAND --help' tells more about one command.  See cowvol(8).\n",
               program_name, COWVOL_SOCKET_DEFAULT, program_name);
}

static const struct cli_command *const commands[] = {
        &cmd_create, &cmd_add,   &cmd_snap, &cmd_list,   &cmd_restore, &cmd_resize,  &cmd_rename, &cmd_set,
        &cmd_activate, &cmd_rm,  &cmd_cat,  &cmd_write,  &cmd_diff,    &cmd_status,  &cmd_export, &cmd_cleanup,
        &cmd_schedule,
};

/* Edits (insert, delete, replace, swap two neighbours) from @a to @b, up
 * to 3 (more: 3); names are short. */
static unsigned edits(const char *a, const char *b)
{
        size_t n = strlen(a), m = strlen(b);
        unsigned d[16][16];

        if (n > 14 || m > 14)
                return 3;
        for (size_t i = 0; i <= n; i++)
                for (size_t j = 0; j <= m; j++) {
                        unsigned best;
                        if (!i || !j) {
                                d[i][j] = (unsigned)(i + j);
                                continue;
                        }
                        best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
                        if (d[i - 1][j] + 1 < best)
                                best = d[i - 1][j] + 1;
                        if (d[i][j - 1] + 1 < best)
                                best = d[i][j - 1] + 1;
                        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                                best = d[i - 2][j - 2] + 1;
                        d[i][j] = best;
                }
        return d[n][m] < 3 ? d[n][m] : 3;
}

/* The command a mistyped @name most likely meant, or NULL (git's "did you
 * mean"): at most two edits away, and the only one that near. */
static const char *nearest_command(const char *name)
{
        static const char *const extra[] = { "store", "help" };
        const size_t n = sizeof(commands) / sizeof(commands[0]);
        const char *best = NULL;
        unsigned best_d = 3;
        bool tie = false;

        for (size_t k = 0; k < n + 2; k++) {
                const char *c = k < n ? commands[k]->name : extra[k - n];
                unsigned d = edits(name, c);

                if (d < best_d) {
                        best = c;
                        best_d = d;
                        tie = false;
                } else if (d == best_d) {
                        tie = true;
                }
        }
        return best && !tie && best_d <= (strlen(name) > 3 ? 2u : 1u) ? best : NULL;
}

int main(int argc, char **argv)
{
        int i;

        cowvol_set_log_callback(lib_log, NULL);
        /* global options, before the command */
        for (i = 1; i < argc && argv[i][0] == '-'; i++) {
                const char *a = argv[i];

                if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                        help();
                        return EXIT_SUCCESS;
                }
                if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
                        printf("cowvol %s\n", cowvol_version());
                        return EXIT_SUCCESS;
                }
                if (strcmp(a, "--socket") == 0) {
                        if (i + 1 >= argc)
                                return usage_error(NULL, "option '--socket' needs a value");
                        arg_socket = argv[++i];
                } else if (strncmp(a, "--socket=", 9) == 0) {
                        arg_socket = a + 9;
                } else {
                        return usage_error(NULL, "unknown option '%s'", a);
                }
                if (!*arg_socket)
                        return usage_error(NULL, "--socket needs a path, not an empty string");
        }
        if (i >= argc)
                return usage_error(NULL, "no command given");
        if (strcmp(argv[i], "help") == 0) {
                help();
                return EXIT_SUCCESS;
        }
        if (strcmp(argv[i], "store") == 0)
                return cmd_store(argc - i, argv + i);
        for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
                if (strcmp(argv[i], commands[k]->name) == 0)
                        return cli_run(commands[k], argc - i, argv + i);
        {
                const char *near = nearest_command(argv[i]);
                if (near)
                        return usage_error(NULL, "unknown command '%s'; did you mean '%s'?", argv[i], near);
        }
        return usage_error(NULL, "unknown command '%s'", argv[i]);
}
