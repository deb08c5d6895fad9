/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The NBD transmission phase: requests in, replies out (simple, or
 * structured once NBD_OPT_STRUCTURED_REPLY was acknowledged), block status
 * for the base:allocation context.
 *
 * A request goes through three steps, as nbdkit's server/protocol.c does:
 * 1. nbd_transmit() reads it.  Only what makes the stream unreadable closes
 *    the connection: a bad magic, or a write longer than NBD_MAX_PAYLOAD
 *    (its payload cannot be trusted).  NBD_CMD_DISC ends it once the
 *    requests in flight are served.  While the requests in flight hold more
 *    than NBD_IN_FLIGHT_MAX bytes, the next waits.  A write's whole payload
 *    is read before anything else: a client gone halfway gets nothing
 *    written.  Steps 2 and 3 run in whichever thread serves the request.
 * 2. nbd_validate_request() checks it, changing nothing.  By command, in
 *    this order: a read's flags (DF only with structured replies), its
 *    length (at most NBD_MAX_PAYLOAD), its range; a write's, write zeroes'
 *    or trim's flags, then the export writable (else EPERM), then its range
 *    (else ENOSPC, the spec's SHOULD); a flush without flags, offset or
 *    length; block status only with base:allocation selected, then its
 *    flags, then a range neither empty nor past the end; any other command
 *    (CACHE, unknown) is refused.  Every refusal but those two is EINVAL.
 *    A refusal is replied at once, with its reason; the connection goes on.
 * 3. serve() acts through the engine without checking again, and replies.
 *    Engine errors map to NBD errors: -EPERM, -EROFS, -ENOLINK (a lost
 *    store holds the origin) -> EPERM, -EINVAL -> EINVAL, -ENOSPC, -EDQUOT,
 *    -EFBIG -> ENOSPC, -ENOMEM -> ENOMEM, -ESHUTDOWN -> ESHUTDOWN; anything else, writes during a restore
 *    (-EBUSY) and reads of a snapshot that became invalid (-ESTALE)
 *    included, -> EIO.  With structured replies, errors carry a message.
 *
 * A write is acknowledged only after the engine took all of it (and, with
 * NBD_CMD_FLAG_FUA, after cowvol_volume_flush).  NBD_CMD_FLUSH is
 * cowvol_volume_flush: every acknowledged write durable, stores included;
 * writes through one connection are durable for all after a flush on any
 * (the engine serializes under the volume lock), hence CAN_MULTI_CONN.
 *
 * Threads and locks: the connection's thread reads requests; it serves one
 * itself while no other is waiting, and hands them to up to NBD_WORKERS
 * threads of the connection when they queue up (replies may then come out
 * of order, as the protocol allows).  The queue and its counters are under
 * c->q_lock; each reply is sent whole under c->send_lock.  Validation reads
 * only what the handshake fixed, so it takes no lock; I/O runs without
 * catalogue.lock, which is taken only to note snapshots a write invalidated.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

/* requests served faster than this (the page cache) are served by the
 * reading thread, one after the other: a hand-off to a worker would cost
 * more than it saves; slower ones (the disk) go to workers, side by side */
#define NBD_DISPATCH_NS 30000u
/* payloads and read buffers of one connection in memory, at most (one
 * request alone may use NBD_MAX_PAYLOAD whatever the others hold) */
#define NBD_IN_FLIGHT_MAX (64u << 20)
/* All connections' payloads and read buffers together, at most
 * settings.nbd_in_flight_mib (a request alone may pass it when nothing else
 * is in flight): 16 clients that never read their 32 MiB replies took the
 * daemon from 8 MB to 532 MB.  A reply its client leaves unread gives its
 * bytes back after client_timeout, when its connection ends. */
static pthread_mutex_t budget_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t budget_freed = PTHREAD_COND_INITIALIZER;
static uint64_t budget_used;

/* Take @n bytes: wait while the others hold too much.  -ESHUTDOWN when
 * the daemon stops or the connection failed meanwhile. */
static int budget_take(struct nbd_conn *c, uint64_t n)
{
        int r = 0;

        if (!n)
                return 0;
        pthread_mutex_lock(&budget_lock);
        for (;;) {
                uint64_t max = (uint64_t)__atomic_load_n(&settings.nbd_in_flight_mib, __ATOMIC_RELAXED) << 20;
                struct timespec t;

                if (!budget_used || budget_used + n <= max)
                        break;
                if (catalogue.stopping || __atomic_load_n(&c->error, __ATOMIC_RELAXED)) {
                        r = -ESHUTDOWN;
                        break;
                }
                /* the stop and a failed connection wake nobody here: look again */
                clock_gettime(CLOCK_REALTIME, &t);
                t.tv_sec++;
                pthread_cond_timedwait(&budget_freed, &budget_lock, &t);
        }
        if (!r)
                budget_used += n;
        pthread_mutex_unlock(&budget_lock);
        return r;
}

static void budget_give(uint64_t n)
{
        if (!n)
                return;
        pthread_mutex_lock(&budget_lock);
        budget_used -= n;
        pthread_cond_broadcast(&budget_freed);
        pthread_mutex_unlock(&budget_lock);
}

/* an error message in a structured reply, its NUL included, at most */
#define NBD_REASON_MAX 200

static uint32_t nbd_errno(int r)
{
        switch (-r) {
        case 0: return 0;
        case EPERM:
        case EROFS:
        case ENOLINK: return NBD_EPERM;
        case EINVAL: return NBD_EINVAL;
        case ENOSPC:
        case EDQUOT:
        case EFBIG: return NBD_ENOSPC;
        case ENOMEM: return NBD_ENOMEM;
        case ESHUTDOWN: return NBD_ESHUTDOWN;
        default: return NBD_EIO;
        }
}

static int reply_simple(struct nbd_conn *c, uint64_t cookie, uint32_t err, void *data, size_t len)
{
        uint8_t h[16];
        struct iovec iov[2] = { { h, sizeof(h) }, { data, err ? 0 : len } };

        int r;

        put32(h, NBD_SIMPLE_REPLY_MAGIC);
        put32(h + 4, err);
        put64(h + 8, cookie);
        pthread_mutex_lock(&c->send_lock);
        r = c->io->send(c, iov, iov[1].iov_len ? 2 : 1);
        pthread_mutex_unlock(&c->send_lock);
        return r;
}

/* One structured reply chunk: header, @pre (a small fixed part), @data. */
static int reply_chunk(struct nbd_conn *c, uint64_t cookie, uint16_t flags, uint16_t type, const void *pre,
                       size_t pre_len, void *data, size_t len)
{
        uint8_t h[20];
        struct iovec iov[3] = { { h, sizeof(h) }, { (void *)pre, pre_len }, { data, len } };

        int r;

        put32(h, NBD_STRUCTURED_REPLY_MAGIC);
        put16(h + 4, flags);
        put16(h + 6, type);
        put64(h + 8, cookie);
        put32(h + 16, (uint32_t)(pre_len + len));
        pthread_mutex_lock(&c->send_lock);
        r = c->io->send(c, iov, len ? 3 : pre_len ? 2 : 1);
        pthread_mutex_unlock(&c->send_lock);
        return r;
}

/* Success without data. */
static int reply_ok(struct nbd_conn *c, uint64_t cookie)
{
        return reply_simple(c, cookie, 0, NULL, 0);
}

/* An error reply: the NBD error @err; with structured replies, with the
 * message @msg (@n bytes) for people too. */
static int reply_refusal(struct nbd_conn *c, uint64_t cookie, uint32_t err, char *msg, uint32_t n)
{
        uint8_t pre[6];

        if (!c->structured)
                return reply_simple(c, cookie, err, NULL, 0);
        put32(pre, err);
        put16(pre + 4, (uint16_t)n);
        return reply_chunk(c, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, pre, sizeof(pre), msg, n);
}

/* An error (a negative errno): with structured replies, with a message for
 * people too. */
__attribute__((format(printf, 4, 5))) static int reply_error(struct nbd_conn *c, uint64_t cookie, int e,
                                                               const char *fmt, ...)
{
        char msg[NBD_REASON_MAX];
        va_list ap;
        uint32_t n;

        if (!c->structured)
                return reply_simple(c, cookie, nbd_errno(e), NULL, 0);
        va_start(ap, fmt);
        n = nbd_vformat(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return reply_refusal(c, cookie, nbd_errno(e), msg, n);
}

static int reply_read(struct nbd_conn *c, uint64_t cookie, uint64_t off, void *buf, size_t len)
{
        uint8_t pre[8];

        if (!c->structured)
                return reply_simple(c, cookie, 0, buf, len);
        if (!len)
                return reply_chunk(c, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, NULL, 0, NULL, 0);
        put64(pre, off);
        return reply_chunk(c, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, pre, sizeof(pre), buf, len);
}

/* An engine error, for people. */
static const char *engine_why(int e)
{
        switch (-e) {
        case EBUSY: return "the volume is being restored: it takes no writes until the restore ends";
        case ESTALE: return "the snapshot became invalid (see cowvol list)";
        case ENOENT: return "the snapshot was removed";
        case ENOSPC: return "no space left";
        default: return strerror(-e);
        }
}

/* after a write: invalidations the engine reported go to the catalogue */
static void note_reasons(struct nbd_conn *c)
{
        pthread_mutex_lock(&catalogue.lock);
        if (c->v->ops->note_reasons(c->v))
                catalogue_save();
        pthread_mutex_unlock(&catalogue.lock);
}

static int cmd_block_status(struct nbd_conn *c, uint64_t cookie, uint16_t flags, uint64_t off, uint32_t len)
{
        struct cowvol_extent *ext = malloc(NBD_MAX_EXTENTS * sizeof(*ext));
        uint8_t *payload;
        uint8_t pre[4];
        int n, r;

        if (!ext)
                return reply_error(c, cookie, -ENOMEM, "out of memory");
        n = cowvol_volume_block_status(c->v->eng, c->s ? c->s->eng : NULL, len, off, ext,
                                       flags & NBD_CMD_FLAG_REQ_ONE ? 1 : NBD_MAX_EXTENTS);
        if (n < 0) {
                free(ext);
                return reply_error(c, cookie, n, "block status: %s", engine_why(n));
        }
        if (!(payload = malloc((size_t)n * 8))) {
                free(ext);
                return reply_error(c, cookie, -ENOMEM, "out of memory");
        }
        for (int i = 0; i < n; i++) {
                uint32_t f = 0;
                if (ext[i].flags & COWVOL_EXTENT_HOLE)
                        f |= NBD_STATE_HOLE;
                if (ext[i].flags & COWVOL_EXTENT_ZERO)
                        f |= NBD_STATE_ZERO;
                put32(payload + 8 * i, (uint32_t)ext[i].len); /* <= len: fits */
                put32(payload + 8 * i + 4, f);
        }
        put32(pre, 1); /* base:allocation's id */
        r = reply_chunk(c, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, pre, sizeof(pre), payload,
                        (size_t)n * 8);
        free(payload);
        free(ext);
        return r;
}

/* A refusal: the NBD error @err, and the reason in @why. */
__attribute__((format(printf, 4, 5))) static uint32_t refuse(char *why, size_t len, uint32_t err, const char *fmt,
                                                               ...)
{
        va_list ap;

        va_start(ap, fmt);
        nbd_vformat(why, len, fmt, ap);
        va_end(ap);
        return err;
}

/* The changing commands (write, write-zeroes, trim) share their checks. */
static uint32_t change_refused(const struct nbd_conn *c, char *why, size_t len, const char *what, uint16_t flags,
                               uint16_t allowed, bool in_range)
{
        if (flags & ~allowed)
                return refuse(why, len, NBD_EINVAL, "%s: unknown flags 0x%x", what, flags & ~allowed);
        if (c->read_only)
                return refuse(why, len, NBD_EPERM, "%s: the export is read-only", what);
        if (!in_range) /* the spec's SHOULD for writes past the end */
                return refuse(why, len, NBD_ENOSPC, "%s past the end of the export (%" PRIu64 " bytes)", what,
                              c->size);
        return 0;
}

/* Check @q against what the handshake fixed (the export, its size and
 * access, the replies and contexts chosen), changing nothing and taking no
 * lock: 0 when serve() may act on it, or the NBD error to reply with and
 * its reason in @why. */
static uint32_t nbd_validate_request(const struct nbd_conn *c, const struct nbd_req *q, char *why, size_t len)
{
        bool in_range = q->off <= c->size && q->len <= c->size - q->off;
        uint16_t flags = q->flags;

        switch (q->type) {
        case NBD_CMD_READ:
                if (flags & ~(c->structured ? NBD_CMD_FLAG_DF : 0))
                        return refuse(why, len, NBD_EINVAL, "read: unknown flags 0x%x", flags);
                if (q->len > NBD_MAX_PAYLOAD)
                        return refuse(why, len, NBD_EINVAL, "read of %" PRIu32 " bytes: at most %u at once", q->len,
                                      NBD_MAX_PAYLOAD);
                if (!in_range)
                        return refuse(why, len, NBD_EINVAL, "read past the end of the export (%" PRIu64 " bytes)",
                                      c->size);
                return 0;
        case NBD_CMD_WRITE:
                return change_refused(c, why, len, "write", flags, NBD_CMD_FLAG_FUA, in_range);
        case NBD_CMD_WRITE_ZEROES:
                return change_refused(c, why, len, "write zeroes", flags, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE,
                                      in_range);
        case NBD_CMD_TRIM:
                return change_refused(c, why, len, "trim", flags, NBD_CMD_FLAG_FUA, in_range);
        case NBD_CMD_FLUSH:
                if (flags || q->off || q->len)
                        return refuse(why, len, NBD_EINVAL, "flush takes no flags, offset or length");
                return 0;
        case NBD_CMD_BLOCK_STATUS:
                if (!c->structured || !c->meta_alloc)
                        return refuse(why, len, NBD_EINVAL, "block status needs the base:allocation context");
                if (flags & ~NBD_CMD_FLAG_REQ_ONE)
                        return refuse(why, len, NBD_EINVAL, "block status: unknown flags 0x%x", flags);
                if (!q->len || !in_range)
                        return refuse(why, len, NBD_EINVAL, "block status: an empty range or one past the end");
                return 0;
        default:
                /* CACHE, unknown */
                return refuse(why, len, NBD_EINVAL, "command %u is not supported", q->type);
        }
}

/* A change went through the engine with result @e: flush for FUA, note
 * invalidated snapshots, reply. */
static int change_done(struct nbd_conn *c, uint64_t cookie, const char *what, uint16_t flags, int e)
{
        if (e >= 0 && (flags & NBD_CMD_FLAG_FUA))
                e = cowvol_volume_flush(c->v->eng);
        note_reasons(c);
        if (e < 0)
                return reply_error(c, cookie, e, "%s: %s", what, engine_why(e));
        return reply_ok(c, cookie);
}

/* Serve one request whose payload (for a write) is in req->buf: validate
 * it, then act on it and reply.  Negative when its reply could not be
 * sent. */
static int serve(struct nbd_conn *c, struct nbd_req *q)
{
        cowvol_volume *eng = c->v->eng;
        cowvol_snapshot *sn = c->s ? c->s->eng : NULL;
        uint64_t cookie = q->cookie, off = q->off;
        uint32_t len = q->len, err;
        uint16_t flags = q->flags;
        uint8_t *buf = NULL;
        char why[NBD_REASON_MAX];
        int r, e;

        if ((err = nbd_validate_request(c, q, why, sizeof(why))))
                return reply_refusal(c, cookie, err, why, (uint32_t)strlen(why));
        /* from here on, nothing is checked again */
        switch (q->type) {
        case NBD_CMD_READ:
                if (len && !(buf = malloc(len)))
                        r = reply_error(c, cookie, -ENOMEM, "out of memory");
                else if (len && (e = cowvol_volume_pread(eng, sn, buf, len, off)) < 0)
                        r = reply_error(c, cookie, e, "read: %s", engine_why(e));
                else
                        r = reply_read(c, cookie, off, buf, len);
                free(buf);
                return r;
        case NBD_CMD_WRITE:
                return change_done(c, cookie, "write", flags,
                                   len ? cowvol_volume_pwrite(eng, sn, q->buf, len, off) : 0);
        case NBD_CMD_WRITE_ZEROES:
                return change_done(c, cookie, "write zeroes", flags,
                                   cowvol_volume_write_zeroes(eng, sn, len, off,
                                                              flags & NBD_CMD_FLAG_NO_HOLE ? 0 : COWVOL_ZERO_PUNCH));
        case NBD_CMD_TRIM:
                return change_done(c, cookie, "trim", flags, cowvol_volume_discard(eng, sn, len, off));
        case NBD_CMD_FLUSH:
                if ((e = cowvol_volume_flush(eng)) < 0)
                        return reply_error(c, cookie, e, "flush: %s", engine_why(e));
                return reply_ok(c, cookie);
        case NBD_CMD_BLOCK_STATUS:
                return cmd_block_status(c, cookie, flags, off, len);
        default:
                return -EPROTO; /* cannot happen: nbd_validate_request refused it */
        }
}

/* what a request holds in memory while it waits and runs */
static uint64_t req_bytes(const struct nbd_req *q)
{
        return (q->type == NBD_CMD_READ || q->type == NBD_CMD_WRITE) && q->len <= NBD_MAX_PAYLOAD ? q->len : 0;
}

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* q_lock held: a request ended with @r after @ns */
static void req_done(struct nbd_conn *c, struct nbd_req *q, int r, uint64_t ns)
{
        if (ns)
                __atomic_store_n(&c->ewma_ns, (c->ewma_ns * 7 + ns) / 8, __ATOMIC_RELAXED);
        c->in_flight--;
        c->in_flight_bytes -= req_bytes(q);
        budget_give(q->budget);
        if (r < 0 && !c->error) {
                c->error = r;
                shutdown(c->fd, SHUT_RD); /* wake the reader: this connection is done */
        }
        pthread_cond_broadcast(&c->q_done);
}

/* q_lock held: take the first queued request, serve it unlocked, account
 * for it; false when the queue was empty */
static bool serve_next(struct nbd_conn *c)
{
        struct nbd_req *q = c->q_head;
        uint64_t t0, t1;
        int r;

        if (!q)
                return false;
        c->q_head = q->next;
        if (!c->q_head)
                c->q_tail = NULL;
        pthread_mutex_unlock(&c->q_lock);
        t0 = now_ns();
        r = serve(c, q);
        t1 = now_ns();
        pthread_mutex_lock(&c->q_lock);
        req_done(c, q, r, t1 - t0);
        free(q->buf);
        free(q);
        return true;
}

static void *worker_main(void *arg)
{
        struct nbd_conn *c = arg;

        pthread_mutex_lock(&c->q_lock);
        for (;;) {
                while (!c->q_head && !c->stop) {
                        c->idle++;
                        pthread_cond_wait(&c->q_work, &c->q_lock);
                        c->idle--;
                }
                if (!serve_next(c))
                        break;
        }
        pthread_mutex_unlock(&c->q_lock);
        return NULL;
}

/* Queue @q for the workers, starting one when none is idle.  When no
 * worker runs and none can start (systemd's TasksMax, a pids cgroup,
 * RLIMIT_NPROC), the connection's own thread serves the queue: slower, one
 * request at a time, but every request is answered. */
static void dispatch(struct nbd_conn *c, struct nbd_req *q)
{
        static struct log_limit no_worker = LOG_LIMIT_INIT;
        char note[64];
        int e = 0;

        pthread_mutex_lock(&c->q_lock);
        if (c->q_tail)
                c->q_tail->next = q;
        else
                c->q_head = q;
        c->q_tail = q;
        if (!c->idle && c->workers < NBD_WORKERS) {
                e = pthread_create(&c->tids[c->workers], NULL, worker_main, c);
                if (!e)
                        c->workers++;
        }
        if (e && !c->workers) {
                if (log_allowed(&no_worker, note, sizeof(note)))
                        dlog(LOG_WARN_, "NBD: cannot start a worker thread (%s): the connection's own thread "
                             "serves its requests%s", strerror(e), note);
                while (serve_next(c))
                        ;
        }
        pthread_cond_signal(&c->q_work);
        pthread_mutex_unlock(&c->q_lock);
}

/* A write's payload, which holds its share of the budget while it comes:
 * it must keep coming, 1 MiB at least every client_timeout seconds, or the
 * connection ends (a client that sends a 32 MiB write's header and then
 * nothing would hold that memory from everyone else for good). */
static int read_payload(struct nbd_conn *c, uint8_t *buf, size_t n)
{
        unsigned t = __atomic_load_n(&settings.client_timeout, __ATOMIC_RELAXED);
        int r = 0;

        while (n > 0 && r == 0) {
                size_t k = n < (1u << 20) ? n : (1u << 20);
                c->deadline_ms = nbd_now_ms() + (uint64_t)t * 1000;
                r = nbd_read_exact(c, buf, k);
                buf += k;
                n -= k;
        }
        /* as after the handshake: reads wait for good, sends client_timeout */
        c->deadline_ms = 0;
        nbd_set_timeouts(c->fd, 0);
        set_timeout(c->fd, SO_SNDTIMEO, t);
        return r;
}

int nbd_transmit(struct nbd_conn *c)
{
        uint8_t h[NBD_REQUEST_SIZE];
        int r = 0;

        for (;;) {
                struct nbd_req *q;

                r = nbd_read_exact(c, h, sizeof(h));
                if (r < 0) {
                        r = r == -ECONNRESET ? 0 : r;
                        break;
                }
                if (get32(h) != NBD_REQUEST_MAGIC) {
                        r = -EPROTO;
                        break;
                }
                if (get16(h + 6) == NBD_CMD_DISC)
                        break; /* the requests in flight are served first */
                if (!(q = calloc(1, sizeof(*q)))) {
                        r = -ENOMEM;
                        break;
                }
                q->flags = get16(h + 4);
                q->type = get16(h + 6);
                q->cookie = get64(h + 8);
                q->off = get64(h + 16);
                q->len = get32(h + 24);
                /* a payload this large cannot be a real request: stop */
                if (q->type == NBD_CMD_WRITE && q->len > NBD_MAX_PAYLOAD) {
                        free(q);
                        r = -EPROTO;
                        break;
                }
                /* memory: wait while the others hold too much */
                pthread_mutex_lock(&c->q_lock);
                while (c->in_flight && c->in_flight_bytes + req_bytes(q) > NBD_IN_FLIGHT_MAX && !c->error)
                        pthread_cond_wait(&c->q_done, &c->q_lock);
                c->in_flight++;
                c->in_flight_bytes += req_bytes(q);
                r = c->error;
                pthread_mutex_unlock(&c->q_lock);
                /* and while all connections together hold too much */
                if (r == 0 && (r = budget_take(c, req_bytes(q))) == 0)
                        q->budget = req_bytes(q);
                /* the whole payload first: a client gone halfway gets nothing written */
                if (r == 0 && q->type == NBD_CMD_WRITE && q->len)
                        r = (q->buf = malloc(q->len)) ? read_payload(c, q->buf, q->len) : -ENOMEM;
                if (r < 0) {
                        pthread_mutex_lock(&c->q_lock);
                        req_done(c, q, 0, 0);
                        pthread_mutex_unlock(&c->q_lock);
                        free(q->buf);
                        free(q);
                        if (r == -ECONNRESET || r == -ESHUTDOWN)
                                r = 0; /* gone, or stopping: not an error to log */
                        break;
                }
                /* the next request already here, and requests are slow: let
                 * a worker serve this one */
                if (__atomic_load_n(&c->ewma_ns, __ATOMIC_RELAXED) > NBD_DISPATCH_NS && c->io->pending(c)) {
                        dispatch(c, q);
                        continue;
                }
                uint64_t t0 = now_ns();
                r = serve(c, q);
                uint64_t t1 = now_ns();
                pthread_mutex_lock(&c->q_lock);
                req_done(c, q, r, t1 - t0);
                pthread_mutex_unlock(&c->q_lock);
                free(q->buf);
                free(q);
                if (r < 0)
                        break;
        }
        /* the end: whatever was read is served, then the workers go */
        pthread_mutex_lock(&c->q_lock);
        c->stop = true;
        pthread_cond_broadcast(&c->q_work);
        while (c->in_flight)
                pthread_cond_wait(&c->q_done, &c->q_lock);
        if (!r)
                r = c->error;
        pthread_mutex_unlock(&c->q_lock);
        for (unsigned i = 0; i < c->workers; i++)
                pthread_join(c->tids[i], NULL);
        return r;
}
