/* SPDX-License-Identifier: GPL-2.0-or-later */
/* cowvol, the command line: what the subcommand files share. */
#ifndef COWVOL_CLI_H
#define COWVOL_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "cowvol.h"

/* Exit codes: 0 success, 1 failure (or faults found), 2 wrong usage. */
#define EXIT_USAGE 2

extern const char *program_name;
/* The library's messages are printed as "cowvol: CONTEXT: message". */
extern const char *log_context;
/* Set when the library printed an error since it was last cleared. */
extern bool lib_logged;

/* Print "cowvol: MSG" to stderr; returns EXIT_FAILURE. */
int log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Print "cowvol: MSG" and a hint at --help: "Try 'cowvol CMD --help'." (@cmd
 * such as "create" or "store info"; NULL: the program's help); returns EXIT_USAGE.
 */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --- options: a table per command, one parser (options.c) ----------------- */

enum cli_kind {
        CLI_FLAG,   /* no value: sets a bool */
        CLI_SIZE,   /* a size with K, M, G or T (cowvol_parse_size): a uint64_t */
        CLI_BYTES,  /* a size that fits a JSON integer (at most INT64_MAX): a uint64_t */
        CLI_STRING, /* the value as given: a const char * */
};

/* A CLI_BYTES option's default that no value can be: "not given". */
#define CLI_UNSET UINT64_MAX

struct cli_option;
/* Checks an option's @value once it is parsed: 0, or a usage error printed. */
typedef int cli_check_fn(const char *cmd, const struct cli_option *opt, const void *value);

struct cli_option {
        const char *name;    /* the long name, without "--" */
        char short_name;     /* its letter, or 0 */
        enum cli_kind kind;
        size_t offset;       /* where the value goes in the command's options struct */
        cli_check_fn *check; /* may be NULL */
        /* Where one table serves several commands: the scope bits of those it
         * applies to (0: all); the others refuse it ("does not apply here"). */
        unsigned only;
        const char *arg;     /* the value's name in the help ("SIZE"); NULL for a flag */
        const char *help;    /* its help; a '\n' goes on in the column of the first line */
};

struct cli_command {
        const char *name; /* "create", "store info": the hint names it */
        /* The help: "Usage: cowvol " and each line of @usage (the forms of the
         * command), a blank line, @about, a blank line and the options. */
        const char *usage;
        const char *about;
        const struct cli_option *options; /* ends with an empty entry; may be NULL */
        size_t opts_size;                 /* the options struct's size */
        const void *defaults;             /* its values before the options (NULL: zeros) */
        /* The positionals' names, as errors name them: "NAME", "ORIGIN STORE
         * OUTPUT"; one in brackets ("[VOLUME]") may be left out; one ending
         * in "..." ("[NEWER_STORE...]") may come any number of times. */
        const char *args;
        int (*check_arg)(const char *cmd, const char *arg); /* on each positional; may be NULL */
        unsigned scope; /* this command's bit for cli_option.only */
        /* The work, once the options are in @opts and the positionals in @args
         * (NULL-terminated); returns the exit code. */
        int (*run)(const void *opts, char **args);
};

/*
 * Run @cmd with @argv (argv[0] is the command's name): -h and --help print the
 * help; each option's value is parsed, checked and stored where its entry
 * says; the positionals are counted, then each checked by check_arg; then
 * cmd->run.  A wrong option or count is a usage error ("Try 'cowvol CMD
 * --help'.", exit code 2).  Returns the exit code.
 */
int cli_run(const struct cli_command *cmd, int argc, char **argv);
/* Print @cmd's help on stdout. */
/* A duration, "90s", "30m", "1h", "2d", "1w": seconds in *ret, 0; -EINVAL,
 * or -ERANGE past @max_days days (cli/schedule.c) */
int cli_parse_duration(const char *s, int64_t max_days, int64_t *ret);
void cli_help(const struct cli_command *cmd);
/* The help of every command that shares @cmd's table (store --help) */
void cli_help_all(const struct cli_command *cmd);
/* The table of a command whose one option is --json ("the daemon's answer, as
 * it is"): its options struct is that bool. */
extern const struct cli_option cli_json_options[];
/* cli_option.check: the size is more than 0. */
int cli_check_positive(const char *cmd, const struct cli_option *opt, const void *value);
/* cli_option.check: a chunk size, a power of two from 4K to 512K. */
int cli_check_chunk_size(const char *cmd, const struct cli_option *opt, const void *value);

int cmd_store(int argc, char **argv);

/* --- the daemon's control protocol (client.c, doc/protocol.md) ------------ */

struct json_object;

#define COWVOL_SOCKET_DEFAULT "/run/cowvol/cowvold.sock"
#define COWVOL_PROTOCOL_VERSION 1
/* A protocol message, newline included, is at most this long. */
#define COWVOL_MESSAGE_MAX (64u * 1024u)
/* answers may be longer (a diff of many ranges): up to this */
#define COWVOL_ANSWER_MAX (256u << 20)

/* --socket PATH (before the command); NULL: $COWVOL_SOCKET, else the default. */
extern const char *arg_socket;

/* The socket path in use: arg_socket, else $COWVOL_SOCKET, else the default. */
const char *client_socket_path(void);

typedef struct client client;

/*
 * Connect to cowvold.  On failure prints why ("cannot reach cowvold at ...",
 * "permission denied: ...") and returns EXIT_FAILURE; else 0 and *ret.
 */
int client_open(client **ret);
/* Close the connection and free.  Accepts NULL; returns NULL. */
client *client_close(client *c);

/*
 * Send one request and read its response.  @args (may be NULL) is consumed.
 * @fd, unless -1, travels with the request line (SCM_RIGHTS).  On success
 * returns 0 and *ret_result is the result object (the caller puts it; an
 * empty object when the daemon sent none).  On failure, an error response or
 * a broken connection, prints "cowvol: MESSAGE" and returns EXIT_FAILURE.
 */
int client_call(client *c, const char *op, struct json_object *args, int fd,
                struct json_object **ret_result);

/* client_open + client_call + client_close: one request on its own connection. */
int daemon_call(const char *op, struct json_object *args, int fd, struct json_object **ret_result);

/* Reading a result: NULL / false when @key is absent or of another type. */
const char *result_string(struct json_object *o, const char *key);
bool result_int(struct json_object *o, const char *key, int64_t *ret);
bool result_double(struct json_object *o, const char *key, double *ret);
/* Print @o as pretty JSON on stdout (--json); returns 0 or EXIT_FAILURE. */
int print_json_result(struct json_object *o);
/* @target as "VOLUME" or "VOLUME@SNAP": not empty, one '@' at most, no empty half. */
int check_target(const char *cmd, const char *target);

/* --- commands that talk to cowvold ---------------------------------------- */

/* volume.c, content.c, export.c: one table each */
extern const struct cli_command cmd_resize, cmd_rename, cmd_set;
extern const struct cli_command cmd_create, cmd_add, cmd_snap, cmd_list, cmd_restore, cmd_activate, cmd_rm,
        cmd_status, cmd_cat, cmd_write, cmd_diff, cmd_export;
/* schedule.c */
extern const struct cli_command cmd_cleanup, cmd_schedule;
/* schedule.c */
extern const struct cli_command cmd_cleanup, cmd_schedule;

#endif
