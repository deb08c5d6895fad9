/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: cowvold's control protocol.  The input is what a client
 * sends on the control socket, byte for byte: request lines (any number,
 * pipelined), a last line without its newline, more than 64 KiB, not JSON.
 * It goes into one end of a socket pair and the real connection code
 * (session_main: line framing, JSON, versions; handle_request: argument
 * checks and every operation) serves the other, as for an accepted client;
 * the peer is root.  Every reply is read and thrown away.
 *
 * As the CLI does, a cat or write request whose "length" is an integer from
 * 0 to 1 MiB is sent alone with a file descriptor (/dev/null for cat, a
 * 64 KiB memfd for write, read from its start), once every earlier request
 * was answered; any other cat or write goes without one.
 *
 * Each input starts from the same state folder on tmpfs: volume "vm"
 * (4 MiB) with snapshot "vm@s", and image files "spare.img" (1 MiB) and
 * "odd.img" (1000 bytes) that add may adopt; "$STATE" in the input stands
 * for the folder's path (random: mkdtemp).  After the input, restores
 * still running end, every volume is closed and the folder is made again,
 * so runs are deterministic and nothing piles up.  add may only name an
 * absolute path inside the state folder, or a relative one (refused by
 * cowvold) that is no block device and has no '=': the input is cut before
 * a line that names another (nothing outside may be adopted, and written,
 * or handed to the kernel engine).  Neither a crash, a leak, a hang nor a sanitizer report
 * is allowed.  FUZZ_CTL_VERBOSE=1 prints the replies (on stderr).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuzz-daemon.h"

#define FD_LENGTH_MAX (1 << 20) /* cat and write with a descriptor: at most this */
#define WRITE_SOURCE (64 << 10) /* what the write descriptor holds */

static char state_dir[] = "/dev/shm/cowvol-fuzz-ctl.XXXXXX";
static int null_fd = -1, source_fd = -1;
static bool verbose; /* FUZZ_CTL_VERBOSE=1: the replies on stderr */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag;
        return ftw->level > 0 ? remove(p) : 0; /* everything in the folder */
}

static void write_file(const char *name, size_t size)
{
        char path[sizeof(state_dir) + 32];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", state_dir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)size) < 0 || close(fd) < 0)
                abort();
}

/* the state every input starts from */
static void state_make(void)
{
        char path[sizeof(state_dir) + 16];

        nftw(state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        for (size_t i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/%s", state_dir, i ? "stores" : "volumes");
                if (mkdir(path, 0700) < 0)
                        abort();
        }
        write_file("spare.img", 1 << 20);
        write_file("odd.img", 1000);
        fuzz_setup_call("fuzz-ctl", "create", "{\"name\": \"vm\", \"size\": 4194304}");
        fuzz_setup_call("fuzz-ctl", "snap", "{\"volume\": \"vm\", \"name\": \"s\"}");
}

/* what the input left: restores end, every volume closes and is forgotten */
static void state_drop(void)
{
        pthread_mutex_lock(&catalogue.lock);
        engine_restore_join_all();
        while (catalogue.vols) {
                struct vol *x = catalogue.vols->next;
                catalogue.vols->ops->deactivate(catalogue.vols);
                vol_free(catalogue.vols);
                catalogue.vols = x;
        }
        pthread_mutex_unlock(&catalogue.lock);
}

/* the state folder goes when the run ends */
static void cleanup(void)
{
        state_drop();
        nftw(state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        rmdir(state_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        struct timespec ts;
        char buf[4096];

        (void)argc, (void)argv;
        if (!mkdtemp(state_dir) && !mkdtemp(strcpy(state_dir, "/tmp/cowvol-fuzz-ctl.XXXXXX")))
                abort();
        atexit(cleanup);
        signal(SIGPIPE, SIG_IGN); /* as cowvold */
        verbose = getenv("FUZZ_CTL_VERBOSE") != NULL;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        catalogue.started = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        settings.state_dir = state_dir;
        if (state_open() < 0) /* the descriptor every file of the folder is made through */
                abort();
        settings.autoextend_threshold = 70;
        settings.autoextend_percent = 20;
        settings.nbd_socket_path = strdup("/run/cowvol fuzz/nbd.sock"); /* export answers with a URI */
        null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        source_fd = memfd_create("fuzz-ctl-write", MFD_CLOEXEC);
        if (null_fd < 0 || source_fd < 0)
                abort();
        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (char)('a' + i % 26);
        for (size_t i = 0; i < WRITE_SOURCE / sizeof(buf); i++)
                if (write_all(source_fd, buf, sizeof(buf)) < 0)
                        abort();
        if (catalogue_load(engine_all) < 0)
                abort();
        return 0;
}

/* --- the client's side ------------------------------------------------------ */

enum line_kind { LINE_PLAIN, LINE_CAT_FD, LINE_WRITE_FD, LINE_REFUSED };

/* What the session will make of @line (the same parse as session.c's):
 * whether it goes with a descriptor, or must not be sent at all. */
static enum line_kind line_kind(const char *line, size_t len)
{
        json_tokener *tok = json_tokener_new();
        json_object *req, *x, *args = NULL;
        enum line_kind k = LINE_PLAIN;
        const char *op;

        if (!tok)
                abort();
        req = json_tokener_parse_ex(tok, line, (int)len);
        if (!req || json_tokener_get_error(tok) != json_tokener_success ||
            (size_t)json_tokener_get_parse_end(tok) != len || !json_object_is_type(req, json_type_object) ||
            !json_object_object_get_ex(req, "op", &x) || !json_object_is_type(x, json_type_string) ||
            (json_object_object_get_ex(req, "args", &args) && !json_object_is_type(args, json_type_object)))
                goto out;
        op = json_object_get_string(x); /* as handle_request: up to a NUL */
        if (!strcmp(op, "add") && json_object_object_get_ex(args, "path", &x) &&
            json_object_is_type(x, json_type_string)) {
                const char *path = json_object_get_string(x);
                size_t n = strlen(state_dir);
                struct stat st;
                if (path[0] == '/' ? strncmp(path, state_dir, n) || path[n] != '/' || strstr(path, "/..")
                                   : strchr(path, '=') || (stat(path, &st) == 0 && S_ISBLK(st.st_mode)))
                        k = LINE_REFUSED;
        } else if ((!strcmp(op, "cat") || !strcmp(op, "write")) && json_object_object_get_ex(args, "length", &x) &&
                   json_object_is_type(x, json_type_int) && json_object_get_int64(x) >= 0 &&
                   json_object_get_int64(x) <= FD_LENGTH_MAX) {
                k = op[0] == 'c' ? LINE_CAT_FD : LINE_WRITE_FD;
        }
out:
        json_object_put(req);
        json_tokener_free(tok);
        return k;
}

struct client {
        int fd;
        const uint8_t *data;
        size_t len;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        size_t replies; /* newlines read */
        bool closed;    /* the server closed the connection */
};

static void *reader_main(void *arg)
{
        struct client *c = arg;
        static char sink[1 << 16];
        ssize_t n;

        while ((n = read(c->fd, sink, sizeof(sink))) > 0) {
                size_t nl = 0;
                for (ssize_t i = 0; i < n; i++)
                        nl += sink[i] == '\n';
                if (verbose)
                        (void)write_all(STDERR_FILENO, sink, (size_t)n);
                pthread_mutex_lock(&c->lock);
                c->replies += nl;
                pthread_cond_broadcast(&c->cond);
                pthread_mutex_unlock(&c->lock);
        }
        pthread_mutex_lock(&c->lock);
        c->closed = true;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* false when the server is gone */
static bool wait_replies(struct client *c, size_t n)
{
        bool open;

        pthread_mutex_lock(&c->lock);
        while (c->replies < n && !c->closed)
                pthread_cond_wait(&c->cond, &c->lock);
        open = !c->closed;
        pthread_mutex_unlock(&c->lock);
        return open;
}

static bool send_bytes(struct client *c, const uint8_t *p, size_t n, int pass_fd)
{
        char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
        bool first = true;

        while (n > 0) {
                struct iovec iov = { (void *)p, n };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
                ssize_t w;
                if (first && pass_fd >= 0) {
                        struct cmsghdr *cm;
                        mh.msg_control = cbuf;
                        mh.msg_controllen = sizeof(cbuf);
                        cm = CMSG_FIRSTHDR(&mh);
                        cm->cmsg_level = SOL_SOCKET;
                        cm->cmsg_type = SCM_RIGHTS;
                        cm->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
                }
                w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false; /* the server closed the connection */
                first = false;
                p += w;
                n -= (size_t)w;
        }
        return true;
}

/* Lines without a descriptor go in batches (pipelined); a line with one
 * goes alone, after every earlier line was answered, and is answered
 * before the next batch goes (as the CLI: one request at a time). */
static void *writer_main(void *arg)
{
        struct client *c = arg;
        size_t pos = 0, batch = 0, lines = 0;

        while (pos < c->len) {
                const uint8_t *nl = memchr(c->data + pos, '\n', c->len - pos);
                size_t end = nl ? (size_t)(nl - c->data) : c->len;
                enum line_kind k = nl ? line_kind((const char *)c->data + pos, end - pos) : LINE_PLAIN;

                if (k == LINE_REFUSED)
                        break;
                if (k == LINE_CAT_FD || k == LINE_WRITE_FD) {
                        if (!send_bytes(c, c->data + batch, pos - batch, -1) || !wait_replies(c, lines))
                                goto out;
                        if (k == LINE_WRITE_FD && lseek(source_fd, 0, SEEK_SET) < 0)
                                abort();
                        if (!send_bytes(c, c->data + pos, end + 1 - pos, k == LINE_CAT_FD ? null_fd : source_fd) ||
                            !wait_replies(c, ++lines))
                                goto out;
                        batch = end + 1;
                } else if (nl) {
                        lines++;
                }
                pos = nl ? end + 1 : c->len;
        }
        (void)send_bytes(c, c->data + batch, pos - batch, -1);
out:
        shutdown(c->fd, SHUT_WR);
        return NULL;
}

/* the input with "$STATE" made the state folder's path: malloc'd */
static uint8_t *expand(const uint8_t *data, size_t len, size_t *ret_len)
{
        static const char token[] = "$STATE";
        size_t tl = sizeof(token) - 1, sl = strlen(state_dir), n = 0, k = 0;
        uint8_t *out;

        for (size_t i = 0; i + tl <= len; i++)
                if (!memcmp(data + i, token, tl))
                        n++, i += tl - 1;
        if (!(out = malloc(len + n * sl + 1)))
                abort();
        for (size_t i = 0; i < len;) {
                if (i + tl <= len && !memcmp(data + i, token, tl)) {
                        memcpy(out + k, state_dir, sl);
                        k += sl, i += tl;
                } else {
                        out[k++] = data[i++];
                }
        }
        *ret_len = k;
        return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
        struct client c = {
                .lock = PTHREAD_MUTEX_INITIALIZER,
                .cond = PTHREAD_COND_INITIALIZER,
        };
        pthread_t w, r;
        int sv[2];

        c.data = expand(data, len, &c.len);
        state_make();
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        c.fd = sv[1];
        if (pthread_create(&r, NULL, reader_main, &c) != 0 || pthread_create(&w, NULL, writer_main, &c) != 0)
                abort();
        __atomic_add_fetch(&catalogue.n_clients, 1, __ATOMIC_RELAXED); /* as listen.c: session_main's end takes it back */
        session_main((void *)(intptr_t)sv[0]); /* closes sv[0] */
        pthread_join(w, NULL);
        pthread_join(r, NULL);
        close(sv[1]);
        pthread_cond_destroy(&c.cond);
        pthread_mutex_destroy(&c.lock);
        state_drop();
        free((void *)c.data);
        return 0;
}
