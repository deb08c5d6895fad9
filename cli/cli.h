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

int cmd_store(int argc, char **argv);

#endif
