/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the three parts of the NBD server share (nbd-proto.h holds the
 * protocol's numbers): the connection, a request, the wire's big-endian
 * fields.  nbd-listen.c accepts a connection and runs its two phases in
 * turn: nbd_handshake() (nbd-handshake.c) until an export is chosen, then
 * nbd_transmit() (nbd-transmit.c) until the client leaves.  Bytes go
 * through the connection's transport (struct nbd_io, nbd-io.c): the plain
 * socket, or a TLS session once NBD_OPT_STARTTLS succeeded.
 *
 * Locks: catalogue.lock (exports looked up and held, snapshots a write
 * invalidated), a connection's q_lock (its queue) and send_lock (its
 * replies).  None is taken with another held, but a TLS session's own
 * lock (tls.c), which a sender takes under send_lock; tls.h's tls_lock is
 * a leaf too.
 */
#ifndef COWVOLD_NBD_H
#define COWVOLD_NBD_H

#include <endian.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "daemon.h"
#include "nbd-proto.h"
#include "tls.h"

#define EXPORT_NAME_MAX (NAME_MAX_LEN * 2 + 1)
/* requests of one connection served at once, at most (qemu-nbd: 16 in flight) */
#define NBD_WORKERS 8

struct nbd_conn;

/* A connection's transport: one way for the plain socket, one for TLS.
 * The connection's thread receives while a sender (under send_lock) may
 * send. */
struct nbd_io {
        /* up to @n bytes: their count, 0 when the peer closed, or a
         * negative errno (-EAGAIN: the socket's receive timeout passed) */
        ssize_t (*recv)(struct nbd_conn *c, void *buf, size_t n);
        /* all of @iov (changed on the way), or a negative errno */
        int (*send)(struct nbd_conn *c, struct iovec *iov, int n);
        /* bytes are waiting to be read */
        bool (*pending)(struct nbd_conn *c);
};
extern const struct nbd_io nbd_io_plain, nbd_io_tls;

struct nbd_conn {
        int fd;
        const struct nbd_io *io;  /* &nbd_io_plain, until STARTTLS */
        struct tls_session *tls;  /* after STARTTLS, or NULL */
        uint64_t deadline_ms; /* negotiation must end by then (CLOCK_MONOTONIC), or 0 */
        bool admin;
        bool tcp;
        enum nbd_tls tls_mode; /* TCP: settings.nbd_tls when it connected; else NBD_TLS_OFF */
        char peer[64];         /* "ADDRESS port N" (TCP) or "uid U pid P", for the log and "in use" */
        struct vol_user *user; /* its hold on v, named */

        /* set by the handshake, fixed during transmission (read without a lock) */
        bool no_zeroes;
        bool structured; /* NBD_OPT_STRUCTURED_REPLY acknowledged */
        bool meta_alloc; /* base:allocation selected ... */
        char meta_export[EXPORT_NAME_MAX + 1]; /* ... for this export */
        struct vol *v;  /* held while the connection is open */
        struct snap *s; /* held too, or NULL for the volume */
        uint64_t size;
        bool read_only;

        /* transmission: the connection's thread reads requests and serves
         * them itself while no other waits; when more arrive, workers serve
         * them concurrently (up to NBD_WORKERS) */
        pthread_mutex_t send_lock; /* one reply at a time */
        pthread_mutex_t q_lock;    /* protects what follows, up to ewma_ns */
        pthread_cond_t q_work;     /* queued work, or stop */
        pthread_cond_t q_done;     /* a request finished */
        struct nbd_req *q_head, *q_tail;
        unsigned workers, idle, in_flight; /* in_flight: queued or being served */
        uint64_t in_flight_bytes;          /* their payloads and read buffers */
        bool stop;
        int error; /* the first failed reply: the connection is done */
        uint64_t ewma_ns; /* how long a request takes to serve, lately (atomic) */
        pthread_t tids[NBD_WORKERS];
};

struct nbd_req {
        uint16_t flags, type;
        uint64_t cookie, off;
        uint32_t len;
        uint8_t *buf; /* a write's payload */
        uint64_t budget; /* bytes taken from the daemon's in-flight budget */
        struct nbd_req *next;
};

/* --- the wire ------------------------------------------------------------------ */

static inline void put16(uint8_t *p, uint16_t x) { x = htobe16(x); memcpy(p, &x, 2); }
static inline void put32(uint8_t *p, uint32_t x) { x = htobe32(x); memcpy(p, &x, 4); }
static inline void put64(uint8_t *p, uint64_t x) { x = htobe64(x); memcpy(p, &x, 8); }
static inline uint16_t get16(const uint8_t *p) { uint16_t x; memcpy(&x, p, 2); return be16toh(x); }
static inline uint32_t get32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return be32toh(x); }
static inline uint64_t get64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return be64toh(x); }

/* A message for people into @buf (cut to fit): its length, without the NUL.
 * Option errors and transmission errors carry one. */
__attribute__((format(printf, 3, 0))) static inline uint32_t nbd_vformat(char *buf, size_t size, const char *fmt,
                                                                          va_list ap)
{
        int n = vsnprintf(buf, size, fmt, ap);

        if (n < 0)
                n = 0;
        if ((size_t)n >= size)
                n = (int)size - 1;
        return (uint32_t)n;
}

/* nbd-io.c */
/* All of @n bytes, or -ECONNRESET when the peer closed first; during the
 * handshake -ETIMEDOUT once its deadline passed. */
int nbd_read_exact(struct nbd_conn *c, void *buf, size_t n);
/* All of @buf (@n bytes), or a negative errno. */
int nbd_send(struct nbd_conn *c, const void *buf, size_t n);
uint64_t nbd_now_ms(void);
/* Receive and send timeouts on the socket (0: none). */
void nbd_set_timeouts(int fd, uint64_t ms);
/* The transport's end: TLS says goodbye when @clean. */
void nbd_io_close(struct nbd_conn *c, bool clean);

/* nbd-handshake.c */
/* Negotiation, within settings.nbd_handshake_timeout seconds.  1: an export is
 * held (c->v, c->s), transmission begins; otherwise the connection closes. */
int nbd_handshake(struct nbd_conn *c);

/* nbd-transmit.c */
/* Serve requests until the client disconnects or a reply cannot be sent;
 * every request read is answered before it returns.  0 or a negative errno. */
int nbd_transmit(struct nbd_conn *c);

#endif
