/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Serving every volume and snapshot over NBD (NetworkBlockDevice/nbd
 * doc/proto.md): fixed newstyle negotiation, simple and structured replies,
 * the base:allocation metadata context; on a Unix socket of its own beside
 * the control socket, and on TCP when configured.  doc/protocol.md says
 * what is served and how.
 *
 * One thread a connection reads its requests; it serves one itself while
 * no other is waiting, and hands them to up to NBD_WORKERS threads of the
 * connection when they queue up (replies may then come out of order, as
 * the protocol allows; each is sent whole under a lock).  Export names are
 * "VOLUME" and "VOLUME@SNAP".  On the Unix socket the peer must be root or
 * in the configured group (SO_PEERCRED), as for the control socket's data
 * operations; anyone else gets NBD_REP_ERR_POLICY (or a closed connection
 * after NBD_OPT_EXPORT_NAME, which has no error reply).  TCP has no
 * credentials: whoever reaches the address (loopback by default) is let in.
 * Negotiation must end within nbd_handshake_timeout seconds in all.
 *
 * Invariants:
 * - From NBD_OPT_GO / NBD_OPT_EXPORT_NAME until the connection closes it
 *   holds a reference on its struct vol (and struct snap), taken under
 *   D.lock, so rm and restore refuse with EBUSY; I/O runs without D.lock.
 * - A write is acknowledged only after the engine took all of it (and, with
 *   NBD_CMD_FLAG_FUA, after cowvol_volume_flush); a client that goes away
 *   before its whole payload arrived gets nothing written.  NBD_CMD_FLUSH is
 *   cowvol_volume_flush: every acknowledged write durable, stores included.
 *   Writes through one connection are durable for all after a flush on any
 *   (the engine serializes under the volume lock), hence CAN_MULTI_CONN.
 * - Reads and block status past the end get EINVAL; writes, zeroes and
 *   trims past the end ENOSPC (the spec's SHOULD), on a read-only export
 *   EPERM.  Engine errors map to NBD errors: -EPERM, -EROFS -> EPERM,
 *   -EINVAL -> EINVAL, -ENOSPC, -EDQUOT, -EFBIG -> ENOSPC, -ENOMEM ->
 *   ENOMEM, -ESHUTDOWN -> ESHUTDOWN; anything else, writes during a restore
 *   (-EBUSY) and reads of a snapshot that became invalid (-ESTALE)
 *   included, -> EIO.  With structured replies, errors carry a message.
 * - A request with a bad magic, or a write longer than 32 MiB (its payload
 *   cannot be trusted), closes the connection; other bad requests get
 *   EINVAL and the connection goes on.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "daemon.h"
#include "nbd-proto.h"

#define EXPORT_NAME_MAX (NAME_MAX_LEN * 2 + 1)
/* requests of one connection served at once, at most (qemu-nbd: 16 in flight) */
#define NBD_WORKERS 8
/* requests served faster than this (the page cache) are served by the
 * reading thread, one after the other: a hand-off to a worker would cost
 * more than it saves; slower ones (the disk) go to workers, side by side */
#define NBD_DISPATCH_NS 30000u
/* payloads and read buffers of one connection in memory, at most (one
 * request alone may use NBD_MAX_PAYLOAD whatever the others hold) */
#define NBD_IN_FLIGHT_MAX (64u << 20)

struct nbd_conn {
        int fd;
        uint64_t deadline_ms; /* negotiation must end by then (CLOCK_MONOTONIC), or 0 */
        bool admin;
        bool tcp;
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
        pthread_mutex_t q_lock;
        pthread_cond_t q_work;     /* queued work, or stop */
        pthread_cond_t q_done;     /* a request finished */
        struct nbd_req *q_head, *q_tail;
        unsigned workers, idle, in_flight; /* in_flight: queued or being served */
        uint64_t in_flight_bytes;          /* their payloads and read buffers */
        bool stop;
        int error; /* the first failed reply: the connection is done */
        uint64_t ewma_ns; /* how long a request takes to serve, lately */
        pthread_t tids[NBD_WORKERS];
};

struct nbd_req {
        uint16_t flags, type;
        uint64_t cookie, off;
        uint32_t len;
        uint8_t *buf; /* a write's payload */
        struct nbd_req *next;
};

/* The transmission flags of an export: a read-only one takes no writes,
 * zeroes or trims.  NBD_FLAG_SEND_DF: a read is always one chunk. */
static uint16_t export_flags(const struct nbd_conn *c, bool read_only)
{
        uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;

        if (read_only)
                f |= NBD_FLAG_READ_ONLY;
        else
                f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_TRIM;
        if (c->structured)
                f |= NBD_FLAG_SEND_DF;
        return f;
}

bool nbd_export_read_only(const struct snap *s)
{
        return D.cfg.nbd_read_only == NBD_RO_ALL || (s && D.cfg.nbd_read_only == NBD_RO_SNAPSHOTS);
}

/* --- the wire --------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t x) { x = htobe16(x); memcpy(p, &x, 2); }
static void put32(uint8_t *p, uint32_t x) { x = htobe32(x); memcpy(p, &x, 4); }
static void put64(uint8_t *p, uint64_t x) { x = htobe64(x); memcpy(p, &x, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t x; memcpy(&x, p, 2); return be16toh(x); }
static uint32_t get32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return be32toh(x); }
static uint64_t get64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return be64toh(x); }

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void set_timeouts(int fd, uint64_t ms)
{
        struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* All of @n bytes, or -ECONNRESET when the peer closed first; during
 * negotiation -ETIMEDOUT once the deadline passed, however the bytes
 * trickle in. */
static int read_exact(struct nbd_conn *c, void *buf, size_t n)
{
        uint8_t *p = buf;

        while (n > 0) {
                ssize_t r;
                if (c->deadline_ms) {
                        uint64_t now = now_ms();
                        if (now >= c->deadline_ms)
                                return -ETIMEDOUT;
                        set_timeouts(c->fd, c->deadline_ms - now);
                }
                r = read(c->fd, p, n);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return -ETIMEDOUT;
                        return -errno;
                }
                if (r == 0)
                        return -ECONNRESET;
                p += r;
                n -= (size_t)r;
        }
        return 0;
}

static int discard(struct nbd_conn *c, uint64_t n)
{
        uint8_t buf[4096];

        while (n > 0) {
                size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
                int r = read_exact(c, buf, k);
                if (r < 0)
                        return r;
                n -= k;
        }
        return 0;
}

static int opt_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
        uint8_t h[20];
        int r;

        put64(h, NBD_REP_MAGIC);
        put32(h + 8, opt);
        put32(h + 12, type);
        put32(h + 16, len);
        r = write_all(fd, h, sizeof(h));
        if (r >= 0 && len)
                r = write_all(fd, data, len);
        return r;
}

/* An error reply with a message for people, as the spec allows. */
__attribute__((format(printf, 4, 5))) static int opt_error(int fd, uint32_t opt, uint32_t type, const char *fmt,
                                                             ...)
{
        char msg[256];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0)
                n = 0;
        if ((size_t)n >= sizeof(msg))
                n = sizeof(msg) - 1;
        return opt_reply(fd, opt, type, msg, (uint32_t)n);
}

/* --- exports ------------------------------------------------------------------ */

/* D.lock held.  "VOLUME" or "VOLUME@SNAP" that can be served now; on failure
 * *ret_why says why, for the client. */
static int export_find(const char *name, struct vol **ret_v, struct snap **ret_s, char *why, size_t len)
{
        char vname[EXPORT_NAME_MAX + 1], bad[160];
        const char *at = strchr(name, '@');
        struct cowvol_snapshot_info si;
        struct vol *v = NULL;
        struct snap *s = NULL;

        snprintf(vname, sizeof(vname), "%.*s", at ? (int)(at - name) : (int)strlen(name), name);
        if (!name_valid(vname, bad, sizeof(bad)) || (at && !name_valid(at + 1, bad, sizeof(bad)))) {
                snprintf(why, len, "bad export name: %s", bad);
                return -EINVAL;
        }
        if (D.stopping) {
                snprintf(why, len, "cowvold is stopping");
                return -ESHUTDOWN;
        }
        v = vol_find(vname);
        if (!v) {
                snprintf(why, len, "no volume named '%s'", vname);
                return -ENOENT;
        }
        if (!v->eng) {
                snprintf(why, len, "volume '%s' is unavailable: its image could not be opened", v->name);
                return -EIO;
        }
        if (at) {
                s = snap_find(v, at + 1);
                if (!s) {
                        snprintf(why, len, "volume '%s' has no snapshot named '%s'", v->name, at + 1);
                        return -ENOENT;
                }
                if (!s->eng || cowvol_snapshot_info(v->eng, s->eng, &si) < 0 || !si.valid) {
                        snprintf(why, len, "snapshot %s@%s is invalid: %s", v->name, s->name,
                                 s->reason ? s->reason : "its store cannot be used");
                        return -ESTALE;
                }
                if (v->restoring == s) {
                        snprintf(why, len, "snapshot %s@%s is being restored into its volume", v->name, s->name);
                        return -EBUSY;
                }
        }
        *ret_v = v;
        *ret_s = s;
        return 0;
}

static void conn_hold(struct nbd_conn *c, struct vol *v, struct snap *s)
{
        v->refs++;
        if (s)
                s->refs++;
        c->v = v;
        c->s = s;
        c->size = v->size;
        c->read_only = nbd_export_read_only(s);
}

static void conn_release(struct nbd_conn *c)
{
        if (!c->v)
                return;
        pthread_mutex_lock(&D.lock);
        c->v->refs--;
        if (c->s)
                c->s->refs--;
        pthread_cond_broadcast(&D.changed);
        pthread_mutex_unlock(&D.lock);
        c->v = NULL;
        c->s = NULL;
}

struct name_list {
        char (*names)[EXPORT_NAME_MAX + 1];
        size_t n, cap;
};

static int names_add(struct name_list *l, const char *vol, const char *snap)
{
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 16;
                void *x = realloc(l->names, cap * sizeof(*l->names));
                if (!x)
                        return -ENOMEM;
                l->names = x;
                l->cap = cap;
        }
        snprintf(l->names[l->n++], sizeof(l->names[0]), "%s%s%s", vol, snap ? "@" : "", snap ? snap : "");
        return 0;
}

/* NBD_OPT_LIST: every volume and every valid snapshot, gathered under D.lock
 * and sent without it. */
static int opt_list(struct nbd_conn *c, uint32_t len)
{
        struct cowvol_snapshot_info si;
        struct name_list l = { 0 };
        int r = 0;

        if (len)
                return opt_error(c->fd, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
        if (!c->admin)
                return opt_error(c->fd, NBD_OPT_LIST, NBD_REP_ERR_POLICY,
                                 "permission denied: root or membership of group '%s' needed",
                                 D.cfg.group ? D.cfg.group : "cowvol");
        pthread_mutex_lock(&D.lock);
        for (struct vol *v = D.vols; v && r == 0; v = v->next) {
                if (!v->eng)
                        continue;
                r = names_add(&l, v->name, NULL);
                for (struct snap *s = v->snaps; s && r == 0; s = s->next)
                        if (s->eng && v->restoring != s && cowvol_snapshot_info(v->eng, s->eng, &si) == 0 && si.valid)
                                r = names_add(&l, v->name, s->name);
        }
        pthread_mutex_unlock(&D.lock);
        if (r < 0) {
                free(l.names);
                return opt_error(c->fd, NBD_OPT_LIST, NBD_REP_ERR_TOO_BIG, "out of memory");
        }
        for (size_t i = 0; i < l.n && r >= 0; i++) {
                uint8_t buf[4 + sizeof(l.names[0])];
                uint32_t n = (uint32_t)strlen(l.names[i]);
                put32(buf, n);
                memcpy(buf + 4, l.names[i], n);
                r = opt_reply(c->fd, NBD_OPT_LIST, NBD_REP_SERVER, buf, 4 + n);
        }
        free(l.names);
        if (r >= 0)
                r = opt_reply(c->fd, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
        return r;
}

/* NBD_OPT_INFO and NBD_OPT_GO.  Returns 1 when GO succeeded (transmission
 * begins), 0 to go on negotiating, or a negative errno to close. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
        char name[EXPORT_NAME_MAX + 1], why[256];
        uint8_t info[18];
        uint32_t nlen;
        uint64_t size = 0;
        uint32_t chunk = 0;
        bool ro = false;
        struct vol *v = NULL;
        struct snap *s = NULL;
        int r;

        /* u32 name length, name, u16 number of requests, u16 each */
        if (len < 6 || (nlen = get32(data)) > len - 6 || get16(data + 4 + nlen) * 2u != len - 6 - nlen)
                return opt_error(c->fd, opt, NBD_REP_ERR_INVALID, "malformed %s request",
                                 opt == NBD_OPT_GO ? "NBD_OPT_GO" : "NBD_OPT_INFO");
        if (!c->admin)
                return opt_error(c->fd, opt, NBD_REP_ERR_POLICY,
                                 "permission denied: root or membership of group '%s' needed",
                                 D.cfg.group ? D.cfg.group : "cowvol");
        if (nlen == 0)
                return opt_error(c->fd, opt, NBD_REP_ERR_UNKNOWN,
                                 "there is no default export; name one: VOLUME or VOLUME@SNAPSHOT");
        if (nlen > EXPORT_NAME_MAX || memchr(data + 4, '\0', nlen))
                return opt_error(c->fd, opt, NBD_REP_ERR_UNKNOWN, "no such export (a bad name)");
        memcpy(name, data + 4, nlen);
        name[nlen] = '\0';
        pthread_mutex_lock(&D.lock);
        r = export_find(name, &v, &s, why, sizeof(why));
        if (r == 0) {
                size = v->size;
                chunk = v->chunk;
                ro = nbd_export_read_only(s);
                if (opt == NBD_OPT_GO)
                        conn_hold(c, v, s);
        }
        pthread_mutex_unlock(&D.lock);
        if (r < 0)
                return opt_error(c->fd, opt, r == -ESHUTDOWN ? NBD_REP_ERR_SHUTDOWN : NBD_REP_ERR_UNKNOWN, "%s",
                                 why);
        put16(info, NBD_INFO_EXPORT);
        put64(info + 2, size);
        put16(info + 10, export_flags(c, ro));
        r = opt_reply(c->fd, opt, NBD_REP_INFO, info, 12);
        if (r >= 0) {
                /* a server may send block sizes unasked: bytes are fine, the
                 * chunk size is best, 32 MiB at most */
                put16(info, NBD_INFO_BLOCK_SIZE);
                put32(info + 2, 1);
                put32(info + 6, chunk);
                put32(info + 10, NBD_MAX_PAYLOAD);
                r = opt_reply(c->fd, opt, NBD_REP_INFO, info, 14);
        }
        if (r >= 0)
                r = opt_reply(c->fd, opt, NBD_REP_ACK, NULL, 0);
        if (r < 0)
                return r;
        /* contexts chosen for another export do not carry over */
        if (opt == NBD_OPT_GO && c->meta_alloc && strcmp(c->meta_export, name) != 0)
                c->meta_alloc = false;
        return opt == NBD_OPT_GO;
}

/* A metadata context query: does it select base:allocation?  (For LIST,
 * the namespace alone selects everything in it.) */
static bool meta_selects_alloc(uint32_t opt, const uint8_t *q, uint32_t n)
{
        const size_t full = strlen(NBD_META_BASE_ALLOCATION);

        if (n == full && memcmp(q, NBD_META_BASE_ALLOCATION, full) == 0)
                return true;
        return opt == NBD_OPT_LIST_META_CONTEXT && n == 5 && memcmp(q, "base:", 5) == 0;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: u32 name length,
 * export name, u32 number of queries, each a u32 length and a string.  The
 * one context there is: base:allocation, id 1. */
static int opt_meta(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
        const char *oname = opt == NBD_OPT_SET_META_CONTEXT ? "NBD_OPT_SET_META_CONTEXT" : "NBD_OPT_LIST_META_CONTEXT";
        char name[EXPORT_NAME_MAX + 1], why[256];
        uint32_t nlen, count, pos;
        bool alloc = false;
        struct vol *v;
        struct snap *s;
        uint8_t rep[4 + sizeof(NBD_META_BASE_ALLOCATION)];
        int r;

        if (!c->structured)
                return opt_error(c->fd, opt, NBD_REP_ERR_INVALID, "%s needs NBD_OPT_STRUCTURED_REPLY first", oname);
        if (len < 8 || (nlen = get32(data)) > len - 8)
                return opt_error(c->fd, opt, NBD_REP_ERR_INVALID, "malformed %s request", oname);
        pos = 4 + nlen;
        count = get32(data + pos);
        pos += 4;
        for (uint32_t i = 0; i < count; i++) {
                uint32_t qlen;
                if (len - pos < 4 || (qlen = get32(data + pos)) > len - pos - 4)
                        return opt_error(c->fd, opt, NBD_REP_ERR_INVALID, "malformed %s request", oname);
                alloc = alloc || meta_selects_alloc(opt, data + pos + 4, qlen);
                pos += 4 + qlen;
        }
        if (pos != len)
                return opt_error(c->fd, opt, NBD_REP_ERR_INVALID, "malformed %s request", oname);
        if (count == 0 && opt == NBD_OPT_LIST_META_CONTEXT)
                alloc = true; /* no query: every context */
        if (!c->admin)
                return opt_error(c->fd, opt, NBD_REP_ERR_POLICY,
                                 "permission denied: root or membership of group '%s' needed",
                                 D.cfg.group ? D.cfg.group : "cowvol");
        if (nlen == 0 || nlen > EXPORT_NAME_MAX || memchr(data + 4, '\0', nlen))
                return opt_error(c->fd, opt, NBD_REP_ERR_UNKNOWN, "no such export");
        memcpy(name, data + 4, nlen);
        name[nlen] = '\0';
        pthread_mutex_lock(&D.lock);
        r = export_find(name, &v, &s, why, sizeof(why));
        pthread_mutex_unlock(&D.lock);
        if (r < 0)
                return opt_error(c->fd, opt, r == -ESHUTDOWN ? NBD_REP_ERR_SHUTDOWN : NBD_REP_ERR_UNKNOWN, "%s",
                                 why);
        if (opt == NBD_OPT_SET_META_CONTEXT) {
                c->meta_alloc = alloc;
                memcpy(c->meta_export, name, nlen + 1);
        }
        if (alloc) {
                put32(rep, opt == NBD_OPT_SET_META_CONTEXT ? 1 : 0);
                memcpy(rep + 4, NBD_META_BASE_ALLOCATION, strlen(NBD_META_BASE_ALLOCATION));
                r = opt_reply(c->fd, opt, NBD_REP_META_CONTEXT, rep, 4 + (uint32_t)strlen(NBD_META_BASE_ALLOCATION));
                if (r < 0)
                        return r;
        }
        return opt_reply(c->fd, opt, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_EXPORT_NAME: no error reply exists; refusing means closing. */
static int opt_export_name(struct nbd_conn *c, const uint8_t *data, uint32_t len)
{
        char name[EXPORT_NAME_MAX + 1], why[256];
        uint8_t buf[10 + 124] = { 0 };
        struct vol *v = NULL;
        struct snap *s = NULL;
        int r;

        if (!c->admin || len == 0 || len > EXPORT_NAME_MAX || memchr(data, '\0', len))
                return -EACCES;
        memcpy(name, data, len);
        name[len] = '\0';
        pthread_mutex_lock(&D.lock);
        r = export_find(name, &v, &s, why, sizeof(why));
        if (r == 0)
                conn_hold(c, v, s);
        pthread_mutex_unlock(&D.lock);
        if (r < 0) {
                dlog(LOG_INFO_, "NBD: refused export '%s': %s", name, why);
                return r;
        }
        if (c->meta_alloc && strcmp(c->meta_export, name) != 0)
                c->meta_alloc = false; /* as for NBD_OPT_GO */
        put64(buf, c->size);
        put16(buf + 8, export_flags(c, c->read_only));
        r = write_all(c->fd, buf, c->no_zeroes ? 10 : sizeof(buf));
        return r < 0 ? r : 1;
}

/* The handshake and option haggling.  1: an export is held, transmission
 * begins; otherwise the connection closes. */
static int negotiate(struct nbd_conn *c)
{
        uint8_t hello[18], h[16], *data;
        uint32_t cflags;
        int r;

        put64(hello, NBD_MAGIC);
        put64(hello + 8, NBD_IHAVEOPT);
        put16(hello + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
        if ((r = write_all(c->fd, hello, sizeof(hello))) < 0 || (r = read_exact(c, h, 4)) < 0)
                return r;
        cflags = get32(h);
        if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
                return -EPROTO; /* unknown client flags: the spec says close */
        c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
        if (!(data = malloc(NBD_MAX_OPTION)))
                return -ENOMEM;
        for (;;) {
                uint32_t opt, len;

                if ((r = read_exact(c, h, 16)) < 0)
                        break;
                if (get64(h) != NBD_IHAVEOPT) {
                        r = -EPROTO;
                        break;
                }
                opt = get32(h + 8);
                len = get32(h + 12);
                if (len > NBD_MAX_OPTION) {
                        if (opt == NBD_OPT_EXPORT_NAME) {
                                r = -EPROTO;
                                break;
                        }
                        if ((r = discard(c, len)) < 0 ||
                            (r = opt_error(c->fd, opt, NBD_REP_ERR_TOO_BIG, "option data longer than %u bytes",
                                           NBD_MAX_OPTION)) < 0)
                                break;
                        continue;
                }
                if ((r = read_exact(c, data, len)) < 0)
                        break;
                switch (opt) {
                case NBD_OPT_EXPORT_NAME: r = opt_export_name(c, data, len); break;
                case NBD_OPT_ABORT:
                        opt_reply(c->fd, opt, NBD_REP_ACK, NULL, 0);
                        r = -ECONNABORTED;
                        break;
                case NBD_OPT_LIST: r = opt_list(c, len); break;
                case NBD_OPT_INFO:
                case NBD_OPT_GO: r = opt_info_go(c, opt, data, len); break;
                case NBD_OPT_STRUCTURED_REPLY:
                        if (len)
                                r = opt_error(c->fd, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
                        else {
                                c->structured = true;
                                r = opt_reply(c->fd, opt, NBD_REP_ACK, NULL, 0);
                        }
                        break;
                case NBD_OPT_LIST_META_CONTEXT:
                case NBD_OPT_SET_META_CONTEXT: r = opt_meta(c, opt, data, len); break;
                default:
                        /* STARTTLS (Unix sockets and loopback need none), extended headers */
                        r = opt_error(c->fd, opt, NBD_REP_ERR_UNSUP, "option %" PRIu32 " is not supported", opt);
                        break;
                }
                if (r != 0)
                        break;
        }
        free(data);
        return r;
}

/* --- transmission ------------------------------------------------------------- */

static uint32_t nbd_errno(int r)
{
        switch (-r) {
        case 0: return 0;
        case EPERM:
        case EROFS: return NBD_EPERM;
        case EINVAL: return NBD_EINVAL;
        case ENOSPC:
        case EDQUOT:
        case EFBIG: return NBD_ENOSPC;
        case ENOMEM: return NBD_ENOMEM;
        case ESHUTDOWN: return NBD_ESHUTDOWN;
        default: return NBD_EIO;
        }
}

/* All of @iov, with as few system calls as the socket allows. */
static int send_iov(int fd, struct iovec *iov, int n)
{
        while (n > 0) {
                ssize_t w = writev(fd, iov, n);
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

static int reply_simple(struct nbd_conn *c, uint64_t cookie, uint32_t err, void *data, size_t len)
{
        uint8_t h[16];
        struct iovec iov[2] = { { h, sizeof(h) }, { data, err ? 0 : len } };

        int r;

        put32(h, NBD_SIMPLE_REPLY_MAGIC);
        put32(h + 4, err);
        put64(h + 8, cookie);
        pthread_mutex_lock(&c->send_lock);
        r = send_iov(c->fd, iov, iov[1].iov_len ? 2 : 1);
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
        r = send_iov(c->fd, iov, len ? 3 : pre_len ? 2 : 1);
        pthread_mutex_unlock(&c->send_lock);
        return r;
}

/* Success without data. */
static int reply_ok(struct nbd_conn *c, uint64_t cookie)
{
        return reply_simple(c, cookie, 0, NULL, 0);
}

/* An error: with structured replies, with a message for people too. */
__attribute__((format(printf, 4, 5))) static int reply_error(struct nbd_conn *c, uint64_t cookie, int e,
                                                               const char *fmt, ...)
{
        uint8_t pre[6];
        char msg[200];
        va_list ap;
        int n;

        if (!c->structured)
                return reply_simple(c, cookie, nbd_errno(e), NULL, 0);
        va_start(ap, fmt);
        n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0)
                n = 0;
        if ((size_t)n >= sizeof(msg))
                n = sizeof(msg) - 1;
        put32(pre, nbd_errno(e));
        put16(pre + 4, (uint16_t)n);
        return reply_chunk(c, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, pre, sizeof(pre), msg, (size_t)n);
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
        pthread_mutex_lock(&D.lock);
        if (vol_note_reasons(c->v))
                catalogue_save();
        pthread_mutex_unlock(&D.lock);
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

/* The changing commands (write, write-zeroes, trim) share their checks. */
static int change_refused(struct nbd_conn *c, uint64_t cookie, const char *what, uint16_t flags, uint16_t allowed,
                          bool in_range)
{
        if (flags & ~allowed)
                return reply_error(c, cookie, -EINVAL, "%s: unknown flags 0x%x", what, flags & ~allowed);
        if (c->read_only)
                return reply_error(c, cookie, -EPERM, "%s: the export is read-only", what);
        if (!in_range) /* the spec's SHOULD for writes past the end */
                return reply_error(c, cookie, -ENOSPC, "%s past the end of the export (%" PRIu64 " bytes)", what,
                                   c->size);
        return 1;
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

/* Serve one request whose payload (for a write) is in req->buf.  Negative
 * when its reply could not be sent. */
static int serve(struct nbd_conn *c, struct nbd_req *q)
{
        cowvol_volume *eng = c->v->eng;
        cowvol_snapshot *sn = c->s ? c->s->eng : NULL;
        bool in_range = q->off <= c->size && q->len <= c->size - q->off;
        uint64_t cookie = q->cookie, off = q->off;
        uint32_t len = q->len;
        uint16_t flags = q->flags;
        uint8_t *buf = NULL;
        int r, e;

        switch (q->type) {
        case NBD_CMD_READ:
                if (flags & ~(c->structured ? NBD_CMD_FLAG_DF : 0))
                        r = reply_error(c, cookie, -EINVAL, "read: unknown flags 0x%x", flags);
                else if (len > NBD_MAX_PAYLOAD)
                        r = reply_error(c, cookie, -EINVAL, "read of %" PRIu32 " bytes: at most %u at once", len,
                                        NBD_MAX_PAYLOAD);
                else if (!in_range)
                        r = reply_error(c, cookie, -EINVAL, "read past the end of the export (%" PRIu64 " bytes)",
                                        c->size);
                else if (len && !(buf = malloc(len)))
                        r = reply_error(c, cookie, -ENOMEM, "out of memory");
                else if (len && (e = cowvol_volume_pread(eng, sn, buf, len, off)) < 0)
                        r = reply_error(c, cookie, e, "read: %s", engine_why(e));
                else
                        r = reply_read(c, cookie, off, buf, len);
                free(buf);
                return r;
        case NBD_CMD_WRITE:
                r = change_refused(c, cookie, "write", flags, NBD_CMD_FLAG_FUA, in_range);
                if (r == 1)
                        r = change_done(c, cookie, "write", flags,
                                        len ? cowvol_volume_pwrite(eng, sn, q->buf, len, off) : 0);
                return r;
        case NBD_CMD_WRITE_ZEROES:
                r = change_refused(c, cookie, "write zeroes", flags, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE,
                                   in_range);
                if (r == 1)
                        r = change_done(c, cookie, "write zeroes", flags,
                                        cowvol_volume_write_zeroes(eng, sn, len, off,
                                                                   flags & NBD_CMD_FLAG_NO_HOLE ? 0 : COWVOL_ZERO_PUNCH));
                return r;
        case NBD_CMD_TRIM:
                r = change_refused(c, cookie, "trim", flags, NBD_CMD_FLAG_FUA, in_range);
                if (r == 1)
                        r = change_done(c, cookie, "trim", flags, cowvol_volume_discard(eng, sn, len, off));
                return r;
        case NBD_CMD_FLUSH:
                if (flags || off || len)
                        return reply_error(c, cookie, -EINVAL, "flush takes no flags, offset or length");
                if ((e = cowvol_volume_flush(eng)) < 0)
                        return reply_error(c, cookie, e, "flush: %s", engine_why(e));
                return reply_ok(c, cookie);
        case NBD_CMD_BLOCK_STATUS:
                if (!c->structured || !c->meta_alloc)
                        return reply_error(c, cookie, -EINVAL, "block status needs the base:allocation context");
                if (flags & ~NBD_CMD_FLAG_REQ_ONE)
                        return reply_error(c, cookie, -EINVAL, "block status: unknown flags 0x%x", flags);
                if (!len || !in_range)
                        return reply_error(c, cookie, -EINVAL, "block status: an empty range or one past the end");
                return cmd_block_status(c, cookie, flags, off, len);
        default:
                /* CACHE, unknown */
                return reply_error(c, cookie, -EINVAL, "command %u is not supported", q->type);
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
        if (r < 0 && !c->error) {
                c->error = r;
                shutdown(c->fd, SHUT_RD); /* wake the reader: this connection is done */
        }
        pthread_cond_broadcast(&c->q_done);
}

static void *worker_main(void *arg)
{
        struct nbd_conn *c = arg;

        pthread_mutex_lock(&c->q_lock);
        for (;;) {
                struct nbd_req *q;
                int r;

                while (!c->q_head && !c->stop) {
                        c->idle++;
                        pthread_cond_wait(&c->q_work, &c->q_lock);
                        c->idle--;
                }
                if (!(q = c->q_head))
                        break;
                c->q_head = q->next;
                if (!c->q_head)
                        c->q_tail = NULL;
                pthread_mutex_unlock(&c->q_lock);
                uint64_t t0 = now_ns();
                r = serve(c, q);
                uint64_t t1 = now_ns();
                pthread_mutex_lock(&c->q_lock);
                req_done(c, q, r, t1 - t0);
                free(q->buf);
                free(q);
        }
        pthread_mutex_unlock(&c->q_lock);
        return NULL;
}

/* Queue @q for the workers, starting one when none is idle. */
static void dispatch(struct nbd_conn *c, struct nbd_req *q)
{
        pthread_mutex_lock(&c->q_lock);
        if (c->q_tail)
                c->q_tail->next = q;
        else
                c->q_head = q;
        c->q_tail = q;
        if (!c->idle && c->workers < NBD_WORKERS &&
            pthread_create(&c->tids[c->workers], NULL, worker_main, c) == 0)
                c->workers++;
        pthread_cond_signal(&c->q_work);
        pthread_mutex_unlock(&c->q_lock);
}

static int transmit(struct nbd_conn *c)
{
        uint8_t h[NBD_REQUEST_SIZE];
        int r = 0;

        for (;;) {
                struct nbd_req *q;
                int waiting = 0;

                r = read_exact(c, h, sizeof(h));
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
                /* the whole payload first: a client gone halfway gets nothing written */
                if (r == 0 && q->type == NBD_CMD_WRITE && q->len)
                        r = (q->buf = malloc(q->len)) ? read_exact(c, q->buf, q->len) : -ENOMEM;
                if (r < 0) {
                        pthread_mutex_lock(&c->q_lock);
                        req_done(c, q, 0, 0);
                        pthread_mutex_unlock(&c->q_lock);
                        free(q->buf);
                        free(q);
                        if (r == -ECONNRESET)
                                r = 0; /* gone: not an error to log */
                        break;
                }
                /* the next request already here, and requests are slow: let
                 * a worker serve this one */
                if (__atomic_load_n(&c->ewma_ns, __ATOMIC_RELAXED) > NBD_DISPATCH_NS && ioctl(c->fd, FIONREAD, &waiting) == 0 && waiting > 0) {
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

void *nbd_session_main(void *arg)
{
        struct nbd_conn c = { .fd = (int)(intptr_t)arg,
                              .send_lock = PTHREAD_MUTEX_INITIALIZER,
                              .q_lock = PTHREAD_MUTEX_INITIALIZER,
                              .q_work = PTHREAD_COND_INITIALIZER,
                              .q_done = PTHREAD_COND_INITIALIZER };
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        int r = -EINVAL;

        if (getsockname(c.fd, (struct sockaddr *)&sa, &sl) == 0 && sa.ss_family != AF_UNIX) {
                /* TCP: no credentials; whoever reaches the address is let in
                 * (it is loopback unless the administrator chose otherwise) */
                int one = 1;
                (void)setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                c.admin = c.tcp = true;
                r = 0;
        } else if (getsockopt(c.fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) {
                c.admin = peer_is_admin(c.fd, &cred);
                r = 0;
        }
        if (r == 0) {
                /* a client that has not chosen an export in time is dropped */
                c.deadline_ms = now_ms() + (uint64_t)D.cfg.nbd_handshake_timeout * 1000;
                set_timeouts(c.fd, (uint64_t)D.cfg.nbd_handshake_timeout * 1000);
                r = negotiate(&c);
                if (r == -ETIMEDOUT || r == -EAGAIN)
                        dlog(LOG_INFO_, "NBD: a client chose no export within %u s; closing it",
                             D.cfg.nbd_handshake_timeout);
                if (r == 1) {
                        c.deadline_ms = 0;
                        set_timeouts(c.fd, 0);
                        r = transmit(&c);
                        if (r < 0 && r != -ECONNRESET && r != -EPIPE)
                                dlog(LOG_INFO_, "NBD: closing a connection to %s%s%s: %s", c.v->name,
                                     c.s ? "@" : "", c.s ? c.s->name : "", strerror(-r));
                }
        }
        conn_release(&c);
        client_done(c.fd);
        return NULL;
}

/* --- settings and the TCP listener ---------------------------------------------- */

int nbd_read_only_parse(const char *s)
{
        if (!strcmp(s, "no") || !strcmp(s, "none"))
                return NBD_RW;
        if (!strcmp(s, "snapshots"))
                return NBD_RO_SNAPSHOTS;
        if (!strcmp(s, "all") || !strcmp(s, "yes"))
                return NBD_RO_ALL;
        return -EINVAL;
}

/* "yes" (loopback, port 10809), "PORT", "HOST", "HOST:PORT", "[V6]" or
 * "[V6]:PORT" into a host and a port; "no" into NULL.  -EINVAL when it is
 * none of these. */
int nbd_tcp_parse(const char *spec, char **ret_host, unsigned *ret_port)
{
        const char *host = spec, *port = NULL, *end;
        size_t hlen;
        char *e;
        unsigned long p = NBD_DEFAULT_PORT;

        *ret_host = NULL;
        if (!strcmp(spec, "no") || !strcmp(spec, "off") || !*spec)
                return 0;
        if (!strcmp(spec, "yes") || !strcmp(spec, "on") || !strcmp(spec, "loopback"))
                spec = host = "127.0.0.1";
        if (strspn(spec, "0123456789") == strlen(spec)) {
                host = "127.0.0.1";
                port = spec;
                hlen = strlen(host);
        } else if (spec[0] == '[') {
                if (!(end = strchr(spec, ']')) || (end[1] && end[1] != ':'))
                        return -EINVAL;
                host = spec + 1;
                hlen = (size_t)(end - host);
                if (end[1] == ':')
                        port = end + 2;
        } else {
                end = strchr(spec, ':');
                if (end && strchr(end + 1, ':'))
                        return -EINVAL; /* a bare IPv6 address: it needs [ ] */
                hlen = end ? (size_t)(end - spec) : strlen(spec);
                if (end)
                        port = end + 1;
        }
        if (port) {
                errno = 0;
                p = strtoul(port, &e, 10);
                if (!*port || *e || errno || p == 0 || p > 65535)
                        return -EINVAL;
        }
        if (hlen == 0 || !(*ret_host = strndup(host, hlen)))
                return hlen == 0 ? -EINVAL : -ENOMEM;
        *ret_port = (unsigned)p;
        return 0;
}

/* Listen on D.cfg.nbd_tcp / nbd_tcp_port; sets the host for URIs. */
int nbd_tcp_listen(void)
{
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *ai = NULL;
        char port[8], name[256], num[INET6_ADDRSTRLEN + 1] = "";
        int fd = -1, one = 1, r;

        snprintf(port, sizeof(port), "%u", D.cfg.nbd_tcp_port);
        r = getaddrinfo(D.cfg.nbd_tcp, port, &hints, &ai);
        if (r) {
                dlog(LOG_ERR_, "NBD over TCP: cannot resolve '%s': %s", D.cfg.nbd_tcp, gai_strerror(r));
                return -EINVAL;
        }
        for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
                fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        continue;
                (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                /* cowvold starts early in boot: an address not up yet is
                 * bound all the same, and served once it is */
                if (a->ai_family == AF_INET)
                        (void)setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
                else if (a->ai_family == AF_INET6)
                        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
                if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 64) < 0) {
                        r = -errno;
                        close(fd);
                        fd = -1;
                } else if (getnameinfo(a->ai_addr, a->ai_addrlen, num, sizeof(num), NULL, 0, NI_NUMERICHOST))
                        num[0] = '\0';
        }
        freeaddrinfo(ai);
        if (fd < 0) {
                dlog(LOG_ERR_, "NBD over TCP: cannot listen on %s port %u: %s", D.cfg.nbd_tcp, D.cfg.nbd_tcp_port,
                     strerror(r ? -r : EADDRNOTAVAIL));
                return r ? r : -EADDRNOTAVAIL;
        }
        /* URIs name the address bound (a host name may resolve to several);
         * a wildcard address is no host to connect to: name this machine */
        if (!strcmp(num, "0.0.0.0") || !strcmp(num, "::") || !num[0]) {
                if (gethostname(name, sizeof(name)) < 0)
                        snprintf(name, sizeof(name), "localhost");
                name[sizeof(name) - 1] = '\0';
        } else
                snprintf(name, sizeof(name), "%s%s%s", strchr(num, ':') ? "[" : "", num, strchr(num, ':') ? "]" : "");
        D.cfg.nbd_tcp_uri_host = strdup(name);
        return fd;
}
