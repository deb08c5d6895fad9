/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvol cat, write, diff: the content of volumes and snapshots.
 *
 * cat and write hand the daemon a descriptor (SCM_RIGHTS) rather than
 * streaming bytes through the control socket: cat passes stdout, which the
 * daemon writes into; write passes something the daemon reads exactly
 * `length` bytes from, so the length must be known before the request goes:
 * stdin itself when it is a regular file (what is left from its offset),
 * else a sealed memfd filled from stdin first.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/util.h"
#include "cli.h"

#define COPY_BUFFER (1024 * 1024)

/* --- cat ---------------------------------------------------------------- */

struct cat_opts {
        uint64_t offset, length;
};

static const struct cli_option cat_options[] = {
        { "offset", .kind = CLI_BYTES, .offset = offsetof(struct cat_opts, offset), .arg = "BYTES",
          .help = "start there (default 0)" },
        { "length", .kind = CLI_BYTES, .offset = offsetof(struct cat_opts, length), .arg = "BYTES",
          .help = "so many bytes (default: to the end)" },
        {},
};

static int cat_run(const void *opts, char **target)
{
        const struct cat_opts *o = opts;
        json_object *args, *res;
        int r, fl;

        fl = fcntl(STDOUT_FILENO, F_GETFL);
        if (fl < 0)
                return log_error("stdout is not open: %s", strerror(errno));
        if ((fl & O_ACCMODE) == O_RDONLY)
                return log_error("stdout is not open for writing");
        fflush(stdout);

        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(target[0]));
        if (o->offset != CLI_UNSET)
                json_object_object_add(args, "offset", json_object_new_int64((int64_t)o->offset));
        if (o->length != CLI_UNSET)
                json_object_object_add(args, "length", json_object_new_int64((int64_t)o->length));
        r = daemon_call("cat", args, STDOUT_FILENO, &res);
        if (r)
                return r;
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_cat = {
        .name = "cat", .args = "TARGET", .check_arg = check_target, .run = cat_run, .options = cat_options,
        .opts_size = sizeof(struct cat_opts), .defaults = &(struct cat_opts){ CLI_UNSET, CLI_UNSET },
        .usage = "cat TARGET [--offset BYTES] [--length BYTES]",
        .about = "Write the content of the volume or snapshot TARGET (VOLUME or VOLUME@SNAP)\n"
                 "to stdout; cowvold writes it there itself.\n",
};

/* --- write -------------------------------------------------------------- */

/* Copy all of stdin into a new memfd, sealed and rewound; *ret_fd, *ret_len. */
static int stdin_to_memfd(int *ret_fd, uint64_t *ret_len)
{
        uint64_t total = 0;
        char *buf;
        int fd;

        fd = memfd_create("cowvol-write", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return log_error("cannot make a memfd for stdin: %s", strerror(errno));
        buf = malloc(COPY_BUFFER);
        if (!buf) {
                close(fd);
                return log_error("out of memory");
        }
        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, COPY_BUFFER);
                int r;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        log_error("cannot read stdin: %s", strerror(errno));
                        goto fail;
                }
                if (n == 0)
                        break;
                r = write_all(fd, buf, (size_t)n);
                if (r < 0) {
                        log_error("cannot keep stdin in memory: %s", strerror(-r));
                        goto fail;
                }
                total += (uint64_t)n;
        }
        free(buf);
        /* the length sent is the length the daemon finds: nothing may change it */
        (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
        if (lseek(fd, 0, SEEK_SET) < 0) {
                close(fd);
                return log_error("cannot rewind the memfd: %s", strerror(errno));
        }
        *ret_fd = fd;
        *ret_len = total;
        return 0;
fail:
        free(buf);
        close(fd);
        return EXIT_FAILURE;
}

/* What the daemon reads from: stdin itself if a regular file, else a memfd. */
static int write_source(int *ret_fd, uint64_t *ret_len)
{
        struct stat st;
        off_t pos;
        int fl;

        fl = fcntl(STDIN_FILENO, F_GETFL);
        if (fl < 0)
                return log_error("stdin is not open: %s", strerror(errno));
        if ((fl & O_ACCMODE) == O_WRONLY)
                return log_error("stdin is not open for reading");
        if (fstat(STDIN_FILENO, &st) < 0)
                return log_error("cannot stat stdin: %s", strerror(errno));
        if (!S_ISREG(st.st_mode))
                return stdin_to_memfd(ret_fd, ret_len);
        pos = lseek(STDIN_FILENO, 0, SEEK_CUR);
        if (pos < 0)
                return log_error("cannot tell stdin's offset: %s", strerror(errno));
        *ret_fd = STDIN_FILENO;
        *ret_len = st.st_size > pos ? (uint64_t)(st.st_size - pos) : 0;
        return 0;
}

struct write_opts {
        uint64_t offset;
};

static const struct cli_option write_options[] = {
        { "offset", .kind = CLI_BYTES, .offset = offsetof(struct write_opts, offset), .arg = "BYTES",
          .help = "where to write (default 0)" },
        {},
};

static int write_run(const void *opts, char **target)
{
        uint64_t offset = ((const struct write_opts *)opts)->offset, length = 0;
        json_object *args, *res;
        int r, fd = -1;

        r = write_source(&fd, &length);
        if (r)
                return r;
        if (length > INT64_MAX) {
                if (fd != STDIN_FILENO)
                        close(fd);
                return log_error("stdin is too large");
        }

        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(target[0]));
        json_object_object_add(args, "offset", json_object_new_int64((int64_t)offset));
        json_object_object_add(args, "length", json_object_new_int64((int64_t)length));
        r = daemon_call("write", args, fd, &res);
        if (fd != STDIN_FILENO)
                close(fd);
        if (r)
                return r;
        json_object_put(res);
        return EXIT_SUCCESS;
}

const struct cli_command cmd_write = {
        .name = "write", .args = "TARGET", .check_arg = check_target, .run = write_run, .options = write_options,
        .opts_size = sizeof(struct write_opts),
        .usage = "write TARGET [--offset BYTES] < DATA",
        .about = "Write stdin into the volume TARGET at BYTES (default 0); the volume's\n"
                 "snapshots keep their content.  Writing past the end of the volume is\n"
                 "refused and writes nothing.  Prints nothing on success.\n",
};

/* --- diff --------------------------------------------------------------- */

static int diff_print(json_object *res)
{
        json_object *ranges;
        int64_t bytes = 0, sum = 0;
        size_t n;

        if (!json_object_object_get_ex(res, "ranges", &ranges) || !json_object_is_type(ranges, json_type_array))
                return log_error("cowvold's diff has no \"ranges\" array");
        n = json_object_array_length(ranges);
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(ranges, i);
                int64_t off, len;

                if (!result_int(e, "offset", &off) || !result_int(e, "length", &len))
                        return log_error("cowvold's diff has a range without offset or length");
                printf("%" PRId64 " %" PRId64 "\n", off, len);
                sum += len;
        }
        if (!result_int(res, "bytes", &bytes))
                bytes = sum;
        printf("total: %" PRId64 " bytes in %zu range%s\n", bytes, n, n == 1 ? "" : "s");
        if (fflush(stdout) != 0)
                return log_error("cannot write the output: %s", strerror(errno));
        return EXIT_SUCCESS;
}

/* @opts: --json (cli_json_options) */
static int diff_run(const void *opts, char **target)
{
        json_object *args, *res;
        int r;

        if (!strchr(target[0], '@'))
                return usage_error(cmd_diff.name, "'%s' is not a snapshot (VOLUME@SNAP)", target[0]);
        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(target[0]));
        r = daemon_call("diff", args, -1, &res);
        if (r)
                return r;
        r = *(const bool *)opts ? print_json_result(res) : diff_print(res);
        json_object_put(res);
        return r;
}

const struct cli_command cmd_diff = {
        .name = "diff", .args = "VOLUME@SNAP", .check_arg = check_target, .run = diff_run,
        .options = cli_json_options, .opts_size = sizeof(bool),
        .usage = "diff VOLUME@SNAP [--json]",
        .about = "The byte ranges of VOLUME that changed since the snapshot SNAP, one a line:\n"
                 "offset and length in bytes; then a line \"total: N bytes in M ranges\".\n",
};
