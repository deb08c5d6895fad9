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
/* Print "cowvol: MSG" and a hint at --help; returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse a size argument for option @opt; prints the error itself. */
int parse_size_arg(const char *cmd, const char *opt, const char *arg, uint64_t *ret);

/* Parse a size for @opt that must fit a JSON integer (at most INT64_MAX). */
int parse_bytes_arg(const char *cmd, const char *opt, const char *arg, uint64_t *ret);
/* Report getopt_long's '?' or ':' (@c) for @cmd as a usage error; returns EXIT_USAGE. */
int getopt_error(const char *cmd, int c, char **argv);
/* Check that @have positionals are @want; else a usage error naming @names. */
int check_arg_count(const char *cmd, int have, int want, const char *names);

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

/* volume.c */
int cmd_create(int argc, char **argv);
int cmd_add(int argc, char **argv);
int cmd_snap(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_activate(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_status(int argc, char **argv);
/* content.c */
int cmd_cat(int argc, char **argv);
int cmd_write(int argc, char **argv);
int cmd_diff(int argc, char **argv);
/* export.c */
int cmd_export(int argc, char **argv);

#endif
