/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The client side of cowvold's control protocol (doc/protocol.md).
 *
 * One JSON object per line each way, at most COWVOL_MESSAGE_MAX bytes with
 * the newline; one response per request, in order.  A descriptor for cat and
 * write rides on the sendmsg() that carries the first byte of the request
 * line, so the daemon finds it with the line's first read.  Everything read
 * after a response's newline stays in the buffer for the next response.
 */
#include <errno.h>
#include <grp.h>
#include <sys/stat.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"

const char *arg_socket;

struct client {
        int fd;
        const char *path;
        int64_t next_id;
        bool debug;
        size_t len;  /* bytes in buf */
        size_t cap;
        char *buf;   /* what was read and not consumed yet */
};

const char *client_socket_path(void)
{
        const char *e;

        if (arg_socket)
                return arg_socket;
        e = getenv("COWVOL_SOCKET");
        return e && *e ? e : COWVOL_SOCKET_DEFAULT;
}

client *client_close(client *c)
{
        if (!c)
                return NULL;
        if (c->fd >= 0)
                close(c->fd);
        free(c->buf);
        free(c);
        return NULL;
}

int client_open(client **ret)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *path = client_socket_path();
        size_t n = strlen(path);
        client *c;
        int fd, r;

        if (n == 0)
                return log_error("the socket path is empty");
        if (n >= sizeof(sa.sun_path))
                return log_error("socket path too long (at most %zu bytes): %s", sizeof(sa.sun_path) - 1,
                                 path);
        memcpy(sa.sun_path, path, n + 1);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error("cannot make a socket: %s", strerror(errno));
        do
                r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        while (r < 0 && errno == EINTR);
        if (r < 0) {
                int e = errno;
                close(fd);
                if (e == EACCES || e == EPERM) {
                        /* name the group that may: the socket's own */
                        struct stat st;
                        struct group *g = stat(path, &st) == 0 ? getgrgid(st.st_gid) : NULL;
                        if (g && st.st_gid != 0)
                                return log_error("permission denied: %s (needs root or the %s group)", path,
                                                 g->gr_name);
                        return log_error("permission denied: %s (needs root)", path);
                }
                if (e == ENOENT || e == ECONNREFUSED)
                        return log_error("cannot reach cowvold at %s: %s (is the daemon running?)", path,
                                         strerror(e));
                return log_error("cannot reach cowvold at %s: %s", path, strerror(e));
        }

        c = malloc(sizeof(*c));
        if (!c) {
                close(fd);
                return log_error("out of memory");
        }
        c->fd = fd;
        c->path = path;
        c->next_id = 1;
        c->debug = getenv("COWVOL_DEBUG") != NULL;
        c->len = 0;
        c->cap = COWVOL_MESSAGE_MAX;
        c->buf = malloc(c->cap);
        if (!c->buf) {
                close(fd);
                free(c);
                return log_error("out of memory");
        }
        *ret = c;
        return 0;
}

/* Send @line (@len bytes), @pass_fd (unless -1) with its first bytes. */
static int send_line(client *c, const char *line, size_t len, int pass_fd)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;
        size_t done = 0;

        memset(&control, 0, sizeof(control));
        while (done < len) {
                struct iovec iov = { .iov_base = (char *)line + done, .iov_len = len - done };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
                ssize_t n;

                if (pass_fd >= 0 && done == 0) {
                        struct cmsghdr *cm;
                        mh.msg_control = control.buf;
                        mh.msg_controllen = sizeof(control.buf);
                        cm = CMSG_FIRSTHDR(&mh);
                        cm->cmsg_level = SOL_SOCKET;
                        cm->cmsg_type = SCM_RIGHTS;
                        cm->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
                }
                n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
                        return log_error("cowvold at %s closed the connection", c->path);
                if (n < 0)
                        return log_error("cannot send to cowvold at %s: %s", c->path, strerror(errno));
                done += (size_t)n;
        }
        return 0;
}

/* Read up to the next newline; *ret_len is the line's length without it. */
static int recv_line(client *c, size_t *ret_len)
{
        size_t scanned = 0;

        for (;;) {
                char *nl = memchr(c->buf + scanned, '\n', c->len - scanned);
                ssize_t n;

                if (nl) {
                        *ret_len = (size_t)(nl - c->buf);
                        return 0;
                }
                scanned = c->len;
                if (c->len == c->cap) {
                        /* answers (a list, a diff) may be long; requests may not */
                        char *nb;
                        if (c->cap >= COWVOL_ANSWER_MAX)
                                return log_error("the answer from cowvold is longer than %u MiB",
                                                 COWVOL_ANSWER_MAX >> 20);
                        nb = realloc(c->buf, c->cap * 2);
                        if (!nb)
                                return log_error("out of memory");
                        c->buf = nb;
                        c->cap *= 2;
                }
                n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == ECONNRESET)
                        n = 0;
                if (n < 0)
                        return log_error("cannot read from cowvold at %s: %s", c->path, strerror(errno));
                if (n == 0)
                        return log_error("cowvold at %s closed the connection without an answer", c->path);
                c->len += (size_t)n;
        }
}

/* Drop the line of @len bytes and its newline from the buffer. */
static void consume_line(client *c, size_t len)
{
        memmove(c->buf, c->buf + len + 1, c->len - len - 1);
        c->len -= len + 1;
}

/* Parse one line as exactly one JSON object (trailing blanks allowed). */
static json_object *parse_object(const char *line, size_t len)
{
        json_tokener *tok = json_tokener_new();
        json_object *o;
        size_t end;

        if (!tok)
                return NULL;
        o = json_tokener_parse_ex(tok, line, (int)len);
        if (o && json_tokener_get_error(tok) == json_tokener_success) {
                for (end = json_tokener_get_parse_end(tok); end < len; end++)
                        if (!strchr(" \t\r", line[end]))
                                break;
        } else {
                end = 0;
        }
        json_tokener_free(tok);
        if (o && (end != len || !json_object_is_type(o, json_type_object))) {
                json_object_put(o);
                o = NULL;
        }
        return o;
}

/* Print the daemon's error object as "cowvol: MESSAGE"; returns EXIT_FAILURE. */
static int print_daemon_error(json_object *err)
{
        json_object *m = NULL, *code = NULL;

        if (json_object_object_get_ex(err, "message", &m) && json_object_is_type(m, json_type_string))
                return log_error("%s", json_object_get_string(m));
        if (json_object_object_get_ex(err, "code", &code) && json_object_is_type(code, json_type_string))
                return log_error("cowvold refused the request (%s)", json_object_get_string(code));
        return log_error("cowvold refused the request");
}

int client_call(client *c, const char *op, json_object *args, int fd, json_object **ret_result)
{
        json_object *req = json_object_new_object(), *resp = NULL, *v, *ok, *result = NULL;
        int64_t id = c->next_id++;
        const char *text;
        size_t len;
        char *line = NULL;
        int r = EXIT_FAILURE;

        if (!req) {
                json_object_put(args);
                return log_error("out of memory");
        }
        json_object_object_add(req, "v", json_object_new_int(COWVOL_PROTOCOL_VERSION));
        json_object_object_add(req, "id", json_object_new_int64(id));
        json_object_object_add(req, "op", json_object_new_string(op));
        if (args)
                json_object_object_add(req, "args", args);
        text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        len = strlen(text);
        if (len + 1 > COWVOL_MESSAGE_MAX) {
                log_error("the request is longer than %u KiB", COWVOL_MESSAGE_MAX / 1024);
                goto out;
        }
        line = malloc(len + 1);
        if (!line) {
                log_error("out of memory");
                goto out;
        }
        memcpy(line, text, len);
        line[len] = '\n';
        if (c->debug)
                fprintf(stderr, "%s: -> %s\n", program_name, text);
        if (send_line(c, line, len + 1, fd))
                goto out;

        if (recv_line(c, &len))
                goto out;
        if (c->debug)
                fprintf(stderr, "%s: <- %.*s\n", program_name, (int)len, c->buf);
        resp = parse_object(c->buf, len);
        consume_line(c, len);
        if (!resp) {
                log_error("cowvold sent an answer that is not a JSON object");
                goto out;
        }
        if (json_object_object_get_ex(resp, "v", &v) && json_object_get_int64(v) != COWVOL_PROTOCOL_VERSION) {
                log_error("cowvold speaks protocol version %s, this cowvol speaks %d",
                          json_object_get_string(v), COWVOL_PROTOCOL_VERSION);
                goto out;
        }
        if (!json_object_object_get_ex(resp, "ok", &ok) || !json_object_is_type(ok, json_type_boolean)) {
                log_error("cowvold sent an answer without \"ok\"");
                goto out;
        }
        if (!json_object_get_boolean(ok)) {
                /* an error about the line itself comes with id 0: print it all the same */
                json_object *err = NULL;
                json_object_object_get_ex(resp, "error", &err);
                print_daemon_error(err);
                goto out;
        }
        if (!json_object_object_get_ex(resp, "id", &v) || json_object_get_int64(v) != id) {
                log_error("cowvold answered request %s, not %lld", v ? json_object_get_string(v) : "(none)",
                          (long long)id);
                goto out;
        }
        if (json_object_object_get_ex(resp, "result", &result) && result) {
                if (!json_object_is_type(result, json_type_object)) {
                        log_error("cowvold sent a result that is not an object");
                        goto out;
                }
                *ret_result = json_object_get(result);
        } else {
                *ret_result = json_object_new_object();
        }
        r = 0;
out:
        free(line);
        json_object_put(resp);
        json_object_put(req);
        return r;
}

int daemon_call(const char *op, json_object *args, int fd, json_object **ret_result)
{
        client *c;
        int r;

        r = client_open(&c);
        if (r) {
                json_object_put(args);
                return r;
        }
        r = client_call(c, op, args, fd, ret_result);
        client_close(c);
        return r;
}

const char *result_string(json_object *o, const char *key)
{
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

bool result_int(json_object *o, const char *key, int64_t *ret)
{
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return false;
        *ret = json_object_get_int64(v);
        return true;
}

bool result_double(json_object *o, const char *key, double *ret)
{
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) ||
            !(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
                return false;
        *ret = json_object_get_double(v);
        return true;
}

int print_json_result(json_object *o)
{
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        if (fflush(stdout) != 0)
                return log_error("cannot write the output: %s", strerror(errno));
        return 0;
}

int check_target(const char *cmd, const char *target)
{
        const char *at = strchr(target, '@');

        if (!*target)
                return usage_error(cmd, "the name is empty");
        if (at && strchr(at + 1, '@'))
                return usage_error(cmd, "'%s' has more than one '@'", target);
        if (at == target || (at && !at[1]))
                return usage_error(cmd, "'%s' is not VOLUME@SNAP", target);
        return 0;
}
