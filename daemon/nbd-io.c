/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * An NBD connection's transport (struct nbd_io in nbd.h), and the reads
 * and writes the handshake and transmission build on.
 *
 * - nbd_io_plain: read() and writev() on the socket, as before TLS
 *   existed; its cost is one indirect call a read or a reply.
 * - nbd_io_tls: records of the connection's TLS session (tls.c), from the
 *   moment NBD_OPT_STARTTLS succeeded to the end: the rest of the option
 *   haggling and all of transmission.
 *
 * Timeouts: during negotiation the socket's SO_RCVTIMEO and SO_SNDTIMEO
 * hold what is left of its deadline (nbd_read_exact sets them before each
 * read), so a read that times out returns -EAGAIN under either transport;
 * transmission clears them.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

uint64_t nbd_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void nbd_set_timeouts(int fd, uint64_t ms)
{
        struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* --- the plain socket ------------------------------------------------------------- */

static ssize_t plain_recv(struct nbd_conn *c, void *buf, size_t n)
{
        for (;;) {
                ssize_t r = read(c->fd, buf, n);
                if (r >= 0)
                        return r;
                if (errno != EINTR)
                        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
}

/* All of @iov, with as few system calls as the socket allows. */
static int plain_send(struct nbd_conn *c, struct iovec *iov, int n)
{
        while (n > 0) {
                ssize_t w = writev(c->fd, iov, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                while (n > 0 && (size_t)w >= iov->iov_len) {
                        w -= (ssize_t)iov->iov_len;
                        iov++;
                        n--;
                }
                if (n > 0) {
                        iov->iov_base = (uint8_t *)iov->iov_base + w;
                        iov->iov_len -= (size_t)w;
                }
        }
        return 0;
}

static bool plain_pending(struct nbd_conn *c)
{
        int waiting = 0;

        return ioctl(c->fd, FIONREAD, &waiting) == 0 && waiting > 0;
}

const struct nbd_io nbd_io_plain = { .recv = plain_recv, .send = plain_send, .pending = plain_pending };

/* --- TLS ------------------------------------------------------------------------------ */

/* during negotiation, no longer than its deadline (as the plain socket's
 * timeouts do) */
static ssize_t tls_recv(struct nbd_conn *c, void *buf, size_t n)
{
        uint64_t now;

        if (!c->deadline_ms)
                return tls_session_recv(c->tls, buf, n, -1);
        now = nbd_now_ms();
        return now >= c->deadline_ms ? -EAGAIN : tls_session_recv(c->tls, buf, n, (int)(c->deadline_ms - now));
}

static int tls_send(struct nbd_conn *c, struct iovec *iov, int n)
{
        return tls_session_send(c->tls, iov, n);
}

static bool tls_pending(struct nbd_conn *c)
{
        return tls_session_pending(c->tls, c->fd);
}

const struct nbd_io nbd_io_tls = { .recv = tls_recv, .send = tls_send, .pending = tls_pending };

/* --- what the two phases use ------------------------------------------------------ */

int nbd_read_exact(struct nbd_conn *c, void *buf, size_t n)
{
        uint8_t *p = buf;

        while (n > 0) {
                ssize_t r;
                if (c->deadline_ms) {
                        uint64_t now = nbd_now_ms();
                        if (now >= c->deadline_ms)
                                return -ETIMEDOUT;
                        nbd_set_timeouts(c->fd, c->deadline_ms - now);
                }
                r = c->io->recv(c, p, n);
                if (r == -EAGAIN)
                        return -ETIMEDOUT;
                if (r < 0)
                        return (int)r;
                if (r == 0)
                        return -ECONNRESET;
                p += r;
                n -= (size_t)r;
        }
        return 0;
}

int nbd_send(struct nbd_conn *c, const void *buf, size_t n)
{
        struct iovec iov = { (void *)buf, n };

        return c->io->send(c, &iov, 1);
}

void nbd_io_close(struct nbd_conn *c, bool clean)
{
        if (!c->tls)
                return;
        if (clean)
                nbd_set_timeouts(c->fd, 1000); /* a goodbye is no reason to wait long */
        tls_session_free(c->tls, clean);
        c->tls = NULL;
        c->io = &nbd_io_plain;
}
