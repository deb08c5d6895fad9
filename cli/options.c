/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvol's options: every command describes its options in a table (struct
 * cli_option: name, kind, where the value goes, its check, its help) and its
 * positionals by their names; cli_run() here builds getopt_long's arrays
 * from the table, parses and checks the values, answers --help from the same
 * table and counts the positionals.  So every command reports a wrong option
 * in the same words, with exit code 2 and "Try 'cowvol CMD --help'.", and its
 * help lists what it parses.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The most options one table holds (getopt_long's array is on the stack). */
#define CLI_OPTIONS_MAX 16
/* getopt_long's value for option i of a table that has no letter */
#define LONG_ONLY 0x100

static int option_value_id(const struct cli_option *o, size_t i)
{
        return o->short_name ? o->short_name : LONG_ONLY + (int)i;
}

/* "--size SIZE" (with "-s, " before it when @o has a letter), for the help. */
static int option_label(const struct cli_option *o, char *buf, size_t len)
{
        char letter[5] = "";

        if (o->short_name)
                snprintf(letter, sizeof(letter), "-%c, ", o->short_name);
        return snprintf(buf, len, "%s--%s%s%s", letter, o->name, o->arg ? " " : "", o->arg ? o->arg : "");
}

/* Does @o apply to @cmd (a table several commands share, @all: every one)? */
static bool option_applies(const struct cli_command *cmd, const struct cli_option *o, bool all)
{
        return all || !o->only || (o->only & cmd->scope);
}

/* Does the usage line @line (@len bytes) belong to @cmd (@all: any)?  A
 * table of several commands has a line for each, starting with its name. */
static bool usage_applies(const struct cli_command *cmd, const char *line, size_t len, bool all)
{
        size_t n = strlen(cmd->name);

        return all || !strchr(cmd->usage, '\n') ||
               (len >= n && !strncmp(line, cmd->name, n) && (len == n || line[n] == ' '));
}

static void help(const struct cli_command *cmd, bool all)
{
        const struct cli_option *o;
        const char *line, *nl;
        bool first = true;
        int width = 0;
        char label[64];

        for (line = cmd->usage; line; line = nl ? nl + 1 : NULL) {
                size_t len;

                nl = strchr(line, '\n');
                len = nl ? (size_t)(nl - line) : strlen(line);
                if (!usage_applies(cmd, line, len, all))
                        continue;
                printf("%s%s %.*s\n", first ? "Usage: " : "       ", program_name, (int)len, line);
                first = false;
        }
        printf("\n%s", cmd->about);
        if (!cmd->options || !cmd->options->name)
                return;
        for (o = cmd->options; o->name; o++) {
                int n = option_label(o, label, sizeof(label));
                if (option_applies(cmd, o, all) && n > width)
                        width = n;
        }
        if (width)
                putchar('\n');
        for (o = cmd->options; o->name; o++) {
                if (!option_applies(cmd, o, all))
                        continue;
                option_label(o, label, sizeof(label));
                printf("  %-*s", width, label);
                /* the help's further lines in the column of its first */
                for (line = o->help; line; line = nl ? nl + 1 : NULL) {
                        nl = strchr(line, '\n');
                        printf("%*s%.*s\n", line == o->help ? 2 : width + 4, "",
                               nl ? (int)(nl - line) : (int)strlen(line), line);
                }
        }
}

void cli_help(const struct cli_command *cmd)
{
        help(cmd, false);
}

void cli_help_all(const struct cli_command *cmd)
{
        help(cmd, true);
}

/* Report getopt_long's '?' or ':' (@c) as a usage error; returns EXIT_USAGE. */
static int getopt_error(const char *cmd, int c, char **argv)
{
        const char *a = argv[optind - 1], *eq;

        if (c == ':')
                return usage_error(cmd, "option '%s' needs a value", a);
        if (strncmp(a, "--", 2) == 0) {
                eq = strchr(a, '=');
                /* getopt_long names the option in optopt when it got a value it takes none of */
                if (eq && optopt)
                        return usage_error(cmd, "option '%.*s' takes no value", (int)(eq - a), a);
                return usage_error(cmd, "unknown option '%s'", a);
        }
        /* a short option inside a cluster ("-hx") is not the whole argument */
        return usage_error(cmd, "unknown option '-%c'", optopt);
}

/* A size for @opt ("--size"); prints the error itself. */
static int parse_size_arg(const char *cmd, const char *opt, const char *arg, uint64_t *ret)
{
        int r = cowvol_parse_size(arg, ret);

        if (r == -ERANGE)
                return usage_error(cmd, "%s '%s' is too large", opt, arg);
        if (r < 0)
                return usage_error(cmd, "%s '%s' is not a size (a number with K, M, G or T, e.g. 64K)",
                                   opt, arg);
        return 0;
}

/* Parse @arg for @o and store it in @opts; a usage error, or 0. */
static int option_set(const struct cli_command *cmd, const struct cli_option *o, const char *arg, void *opts)
{
        void *value = (char *)opts + o->offset;
        char opt[64];
        int r = 0;

        snprintf(opt, sizeof(opt), "--%s", o->name);
        if (o->only && !(o->only & cmd->scope))
                return usage_error(cmd->name, "option '%s' does not apply here", opt);
        switch (o->kind) {
        case CLI_FLAG:
                *(bool *)value = true;
                break;
        case CLI_SIZE:
        case CLI_BYTES:
                r = parse_size_arg(cmd->name, opt, arg, value);
                if (!r && o->kind == CLI_BYTES && *(uint64_t *)value > INT64_MAX)
                        r = usage_error(cmd->name, "%s '%s' is too large", opt, arg);
                break;
        case CLI_STRING:
                *(const char **)value = arg;
                break;
        }
        if (r)
                return r;
        return o->check ? o->check(cmd->name, o, value) : 0;
}

/* Check @have positionals against @cmd->args; a usage error, or 0.  A
 * name in brackets may be left out; one ending in "..." ("[STORE...]")
 * may be given any number of times. */
static int check_arg_count(const struct cli_command *cmd, int have)
{
        int need = 0, most = 0;

        for (const char *p = cmd->args; p && *p; p++)
                if (p == cmd->args || p[-1] == ' ') {
                        most++;
                        need += *p != '[';
                }
        if (have < need)
                return usage_error(cmd->name, "missing %s", cmd->args);
        if (have > most && most == 0)
                return usage_error(cmd->name, "%s takes no arguments", cmd->name);
        if (have > most && !strstr(cmd->args, "..."))
                return usage_error(cmd->name, "too many arguments (expected %s)", cmd->args);
        return 0;
}

/* What cli_parse() returns when it printed the help. */
#define PARSED_HELP (-1)

/*
 * Parse @argv into @opts and *ret_args: 0 when the command goes on,
 * PARSED_HELP, or EXIT_USAGE after a usage error it printed.
 */
static int cli_parse(const struct cli_command *cmd, int argc, char **argv, void *opts, char ***ret_args)
{
        struct option longtable[CLI_OPTIONS_MAX + 2];
        char shorttable[2 + 2 * CLI_OPTIONS_MAX + 1] = ":h", *s = shorttable + 2;
        const struct cli_option *table = cmd->options;
        size_t n = 0, i;
        int c, r;

        for (; table && table[n].name; n++) {
                assert(n < CLI_OPTIONS_MAX);
                longtable[n] = (struct option){ table[n].name, table[n].kind == CLI_FLAG ? no_argument : required_argument,
                                               NULL, option_value_id(&table[n], n) };
                if (table[n].short_name) {
                        *s++ = table[n].short_name;
                        if (table[n].kind != CLI_FLAG)
                                *s++ = ':';
                }
        }
        *s = '\0';
        longtable[n] = (struct option){ "help", no_argument, NULL, 'h' };
        longtable[n + 1] = (struct option){};

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, shorttable, longtable, NULL)) >= 0) {
                if (c == 'h') {
                        cli_help(cmd);
                        return PARSED_HELP;
                }
                for (i = 0; i < n && option_value_id(&table[i], i) != c; i++)
                        ;
                if (i == n)
                        return getopt_error(cmd->name, c, argv);
                r = option_set(cmd, &table[i], optarg, opts);
                if (r)
                        return r;
        }
        r = check_arg_count(cmd, argc - optind);
        if (r)
                return r;
        for (i = (size_t)optind; cmd->check_arg && i < (size_t)argc; i++) {
                r = cmd->check_arg(cmd->name, argv[i]);
                if (r)
                        return r;
        }
        *ret_args = argv + optind;
        return 0;
}

int cli_run(const struct cli_command *cmd, int argc, char **argv)
{
        void *opts = calloc(1, cmd->opts_size ? cmd->opts_size : 1);
        char **args;
        int r;

        if (!opts)
                return log_error("out of memory");
        if (cmd->defaults)
                memcpy(opts, cmd->defaults, cmd->opts_size);
        r = cli_parse(cmd, argc, argv, opts, &args);
        if (r == 0)
                r = cmd->run(opts, args);
        else if (r == PARSED_HELP)
                r = EXIT_SUCCESS;
        free(opts);
        return r;
}

const struct cli_option cli_json_options[] = {
        { "json", .short_name = 'j', .kind = CLI_FLAG, .offset = 0, .help = "the daemon's answer, as it is" },
        {},
};

int cli_check_positive(const char *cmd, const struct cli_option *opt, const void *value)
{
        if (*(const uint64_t *)value == 0)
                return usage_error(cmd, "--%s must be more than 0", opt->name);
        return 0;
}

int cli_check_chunk_size(const char *cmd, const struct cli_option *opt, const void *value)
{
        uint64_t cs = *(const uint64_t *)value;

        if (!cowvol_chunk_size_valid(cs))
                return usage_error(cmd, "--%s must be a power of two from 4K to 512K, not %" PRIu64, opt->name, cs);
        return 0;
}
