/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvol: the command line of cowvol.  Subcommands live in their own files. */
#include <errno.h>
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
        fprintf(stderr, "\nTry '%s %s--help'.\n", program_name, cmd ? cmd : "");
        return EXIT_USAGE;
}

int parse_size_arg(const char *cmd, const char *opt, const char *arg, uint64_t *ret)
{
        int r = cowvol_parse_size(arg, ret);

        if (r == -ERANGE)
                return usage_error(cmd, "%s '%s' is too large", opt, arg);
        if (r < 0)
                return usage_error(cmd, "%s '%s' is not a size (a number with K, M, G or T, e.g. 64K)",
                                   opt, arg);
        return 0;
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
        printf("Usage: %s COMMAND [ARGS...]\n"
               "\n"
               "Copy-on-write snapshots of volumes, in the kernel's dm-snapshot format.\n"
               "\n"
               "Offline store commands (no daemon needed; PATH is a file or a block device):\n"
               "  store create PATH [--chunk-size SIZE] [--size SIZE] [--force]\n"
               "                                Make a new, empty exception store\n"
               "  store info PATH [--json]      Chunk size, validity, exceptions, usage\n"
               "  store check PATH              Validate; list every fault found\n"
               "  store dump PATH [--json]      One exception per line: origin chunk, store chunk\n"
               "  store view ORIGIN STORE OUTPUT\n"
               "                                Write the snapshot's content (origin + exceptions)\n"
               "\n"
               "Options:\n"
               "  -h, --help      Show this help\n"
               "  -V, --version   Show the version\n"
               "\n"
               "Sizes take the suffixes K, M, G, T (powers of 1024), with or without iB.\n"
               "See cowvol(8).\n",
               program_name);
}

int main(int argc, char **argv)
{
        cowvol_set_log_callback(lib_log, NULL);
        if (argc < 2)
                return usage_error(NULL, "no command given");
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
                help();
                return EXIT_SUCCESS;
        }
        if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
                printf("cowvol %s\n", cowvol_version());
                return EXIT_SUCCESS;
        }
        if (strcmp(argv[1], "store") == 0)
                return cmd_store(argc - 1, argv + 1);
        return usage_error(NULL, "unknown command '%s'", argv[1]);
}
