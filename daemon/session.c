/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One client connection, in a thread of its own: read request lines
 * (with a file descriptor passed beside a cat or write request), answer
 * each in order.  A line that is not a JSON object, or longer than
 * LINE_MAX_BYTES, gets an error and the connection is closed; the daemon
 * keeps serving everyone else.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "daemon.h"

struct session {
        int fd;
        struct peer peer;
        char *buf;
        size_t len;
        int pending_fd; /* received with the line being read */
};

bool peer_is_admin(int fd, const struct ucred *cred)
{
        int64_t admin = __atomic_load_n(&settings.admin_gid, __ATOMIC_SEQ_CST); /* one load: gid and whether */
        gid_t groups[256], gid = (gid_t)admin;
        socklen_t len = sizeof(groups);

        if (cred->uid == 0)
                return true;
        if (admin < 0)
                return false;
        if (cred->gid == gid)
                return true;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
                for (size_t i = 0; i < len / sizeof(gid_t); i++)
                        if (groups[i] == gid)
                                return true;
        return false;
}

static const char *errno_name(int e)
{
        switch (e) {
        case EINVAL: return "EINVAL";
        case ENOENT: return "ENOENT";
        case EEXIST: return "EEXIST";
        case EACCES: return "EACCES";
        case EPERM: return "EPERM";
        case ENOSPC: return "ENOSPC";
        case EBUSY: return "EBUSY";
        case EPROTO: return "EPROTO";
        case E2BIG: return "E2BIG";
        case EIO: return "EIO";
        case ESTALE: return "ESTALE";
        case EUCLEAN: return "EUCLEAN";
        case ENOMEM: return "ENOMEM";
        case EBADF: return "EBADF";
        case EFBIG: return "EFBIG";
        case ENOTSUP: return "ENOTSUP";
        case ERANGE: return "ERANGE";
        case ETIMEDOUT: return "ETIMEDOUT";
        case ESHUTDOWN: return "ESHUTDOWN";
        default: return "EIO";
        }
}

static int reply(struct session *s, int64_t id, json_object *result, int err, const char *msg)
{
        json_object *o = json_object_new_object();
        const char *text;
        int r;

        json_object_object_add(o, "v", json_object_new_int(PROTOCOL_VERSION));
        json_object_object_add(o, "id", json_object_new_int64(id));
        json_object_object_add(o, "ok", json_object_new_boolean(err == 0));
        if (err == 0) {
                json_object_object_add(o, "result", result ? result : json_object_new_object());
        } else {
                json_object *e = json_object_new_object();
                json_object_object_add(e, "code", json_object_new_string(errno_name(-err)));
                json_object_object_add(e, "errno", json_object_new_int(-err));
                json_object_object_add(e, "message", json_object_new_string(msg ? msg : strerror(-err)));
                json_object_object_add(o, "error", e);
                json_object_put(result);
        }
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        r = write_all(s->fd, text, strlen(text));
        if (r >= 0)
                r = write_all(s->fd, "\n", 1);
        json_object_put(o);
        return r;
}

/* Handle one line; returns false when the connection must close. */
static bool handle_line(struct session *s, const char *line, size_t len)
{
        json_tokener *tok = json_tokener_new();
        json_object *req, *x, *args = NULL, *result = NULL;
        struct failure f = {};
        int64_t id = 0;
        bool keep = true;

        req = json_tokener_parse_ex(tok, line, (int)len);
        if (!req || json_tokener_get_error(tok) != json_tokener_success ||
            (size_t)json_tokener_get_parse_end(tok) != len) {
                json_object_put(req);
                json_tokener_free(tok);
                reply(s, 0, NULL, -EPROTO, "malformed request: not a JSON object on one line");
                return false;
        }
        json_tokener_free(tok);
        if (!json_object_is_type(req, json_type_object)) {
                reply(s, 0, NULL, -EPROTO, "malformed request: not a JSON object");
                json_object_put(req);
                return false;
        }
        if (json_object_object_get_ex(req, "id", &x) && json_object_is_type(x, json_type_int))
                id = json_object_get_int64(x);
        if (!json_object_object_get_ex(req, "v", &x) || !json_object_is_type(x, json_type_int) ||
            json_object_get_int64(x) != PROTOCOL_VERSION)
                fail(&f, -EPROTO, "unsupported protocol version (this daemon speaks version 1)");
        else if (!json_object_object_get_ex(req, "op", &x) || !json_object_is_type(x, json_type_string))
                fail(&f, -EINVAL, "the request has no \"op\"");
        else if (json_string_has_nul(x))
                fail(&f, -EINVAL, "\"op\" contains the control character 0x00");
        else if (json_object_object_get_ex(req, "args", &args) && !json_object_is_type(args, json_type_object))
                fail(&f, -EINVAL, "\"args\" must be an object");
        else {
                s->peer.fd = s->pending_fd;
                handle_request(json_object_get_string(x), args, &s->peer, &result, &f);
        }
        if (reply(s, id, result, f.err, f.err ? f.msg : NULL) < 0)
                keep = false;
        json_object_put(req);
        if (s->pending_fd >= 0) {
                close(s->pending_fd);
                s->pending_fd = -1;
        }
        return keep;
}

static void session_free(struct session *s)
{
        if (s->pending_fd >= 0)
                close(s->pending_fd);
        free(s->buf);
        free(s);
}

void set_timeout(int fd, int which, unsigned seconds)
{
        struct timeval tv = { .tv_sec = seconds };

        (void)setsockopt(fd, SOL_SOCKET, which, &tv, sizeof(tv));
}

void *session_main(void *arg)
{
        struct session *s = calloc(1, sizeof(*s));
        int fd = (int)(intptr_t)arg;
        struct ucred cred;
        socklen_t cl = sizeof(cred);

        if (!s || !(s->buf = malloc(LINE_MAX_BYTES))) {
                free(s);
                goto out;
        }
        s->fd = fd;
        s->pending_fd = -1;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
                session_free(s);
                goto out;
        }
        s->peer.pid = cred.pid;
        s->peer.uid = cred.uid;
        s->peer.gid = cred.gid;
        s->peer.admin = peer_is_admin(fd, &cred);
        /* an idle connection ends after idle_timeout; an answer its client
         * does not read ends it after client_timeout */
        set_timeout(fd, SO_RCVTIMEO, __atomic_load_n(&settings.idle_timeout, __ATOMIC_RELAXED));
        set_timeout(fd, SO_SNDTIMEO, __atomic_load_n(&settings.client_timeout, __ATOMIC_RELAXED));

        for (;;) {
                char cbuf[CMSG_SPACE(sizeof(int) * 4)];
                struct iovec iov = { s->buf + s->len, LINE_MAX_BYTES - s->len };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                                     .msg_controllen = sizeof(cbuf) };
                char *nl;
                ssize_t n = recvmsg(s->fd, &mh, MSG_CMSG_CLOEXEC);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                                continue;
                        int *fds = (int *)CMSG_DATA(c);
                        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < k; i++) {
                                /* one descriptor a request: extras are closed */
                                if (s->pending_fd < 0)
                                        s->pending_fd = fds[i];
                                else
                                        close(fds[i]);
                        }
                }
                s->len += (size_t)n;
                while ((nl = memchr(s->buf, '\n', s->len))) {
                        size_t l = (size_t)(nl - s->buf);
                        bool keep = handle_line(s, s->buf, l);
                        memmove(s->buf, nl + 1, s->len - l - 1);
                        s->len -= l + 1;
                        if (!keep)
                                goto done;
                }
                if (s->len == LINE_MAX_BYTES) {
                        reply(s, 0, NULL, -E2BIG, "request line longer than 64 KiB");
                        break;
                }
        }
done:
        session_free(s);
out:
        client_done(fd);
        return NULL;
}
