/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The descriptor a client passes with cat (its output) or write (its
 * input), used so that no peer can hold the daemon: a wait on it ends after
 * settings.client_timeout seconds without progress, or at once when the
 * daemon stops (clients_stop_fd).  Without this, `cowvol cat v1 | sleep
 * 1d` kept the volume busy (rm: "in use") and SIGTERM waiting for a day.
 *
 * The descriptor must be open in the direction asked (never O_PATH, which
 * needs no permission).  Regular files and block devices are used as they
 * are: they wait for the disk, not for a peer.  A pipe or FIFO is opened
 * again through /proc/self/fd, in the same direction, which gives the
 * daemon a description of its own to make non-blocking (O_NONBLOCK on the
 * client's would change the client's stdout); a socket takes MSG_DONTWAIT
 * on each call.  Anything else (a terminal), or a FIFO the second open
 * fails for, is never opened again: each call waits for poll() first and
 * moves at most PIPE_BUF bytes, which a pipe that polled writable takes
 * without blocking.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"

static int wait_for(const struct peer_fd *p, short events)
{
        struct pollfd pf[2] = { { .fd = p->fd, .events = events }, { .fd = clients_stop_fd(), .events = POLLIN } };
        unsigned t = __atomic_load_n(&settings.client_timeout, __ATOMIC_RELAXED);
        int r;

        do
                r = poll(pf, 2, (int)t * 1000);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return -errno;
        if (pf[1].revents)
                return -ESHUTDOWN;
        return r == 0 ? -ETIMEDOUT : 0; /* POLLHUP, POLLERR: the call says what */
}

int peer_fd_open(struct peer_fd *p, int fd, bool out)
{
        struct stat st;
        char path[64];
        int fl;

        p->fd = fd;
        p->own = false;
        p->how = PEER_FD_PLAIN;
        /* the client's own access, in the direction asked: an O_PATH
         * descriptor (which needs no permission) or one open the other way
         * lends nothing (and the reopen below must not lend it either) */
        if ((fl = fcntl(fd, F_GETFL)) < 0 || fstat(fd, &st) < 0)
                return -errno;
        if ((fl & O_PATH) || (fl & O_ACCMODE) == (out ? O_RDONLY : O_WRONLY))
                return -EBADF;
        if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))
                return 0;
        if (S_ISSOCK(st.st_mode)) {
                p->how = PEER_FD_SOCKET;
                return 0;
        }
        if (!S_ISFIFO(st.st_mode)) { /* a terminal, another device: never opened again */
                p->how = PEER_FD_POLL;
                return 0;
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        p->fd = open(path, (out ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (p->fd >= 0) {
                p->own = true;
                p->how = PEER_FD_NONBLOCK;
        } else {
                p->fd = fd;
                p->how = PEER_FD_POLL;
        }
        return 0;
}

void peer_fd_close(struct peer_fd *p)
{
        if (p->own)
                close(p->fd);
        p->own = false;
        p->fd = -1;
}

/* One call: what it moved, or -errno (-EAGAIN: wait and call again). */
static ssize_t one(const struct peer_fd *p, void *buf, size_t n, bool out)
{
        ssize_t r;

        switch (p->how) {
        case PEER_FD_SOCKET:
                r = out ? send(p->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL) : recv(p->fd, buf, n, MSG_DONTWAIT);
                break;
        case PEER_FD_POLL:
                if (n > PIPE_BUF)
                        n = PIPE_BUF;
                /* fall through */
        default:
                r = out ? write(p->fd, buf, n) : read(p->fd, buf, n);
        }
        if (r < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        return r;
}

static int peer_fd_move(struct peer_fd *p, void *buf, size_t n, size_t *done, bool out)
{
        *done = 0;
        while (*done < n) {
                ssize_t r;
                int e;

                if (p->how == PEER_FD_POLL && (e = wait_for(p, out ? POLLOUT : POLLIN)) < 0)
                        return e;
                r = one(p, (char *)buf + *done, n - *done, out);
                if (r == -EINTR)
                        continue;
                if (r == -EAGAIN) {
                        if ((e = wait_for(p, out ? POLLOUT : POLLIN)) < 0)
                                return e;
                        continue;
                }
                if (r < 0)
                        return (int)r;
                if (r == 0 && !out)
                        break; /* the end of the input */
                *done += (size_t)r;
        }
        return 0;
}

int peer_fd_write(struct peer_fd *p, const void *buf, size_t n, size_t *moved)
{
        return peer_fd_move(p, (void *)buf, n, moved, true);
}

int peer_fd_read(struct peer_fd *p, void *buf, size_t n, size_t *got)
{
        return peer_fd_move(p, buf, n, got, false);
}
