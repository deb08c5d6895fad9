/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Serving every volume and snapshot over NBD (NetworkBlockDevice/nbd
 * doc/proto.md): fixed newstyle negotiation and simple replies, on a Unix
 * socket of its own beside the control socket.
 *
 * One thread a connection, requests handled in order.  Export names are
 * "VOLUME" and "VOLUME@SNAP".  The peer must be root or in the configured
 * group (SO_PEERCRED), as for the control socket's data operations;
 * anyone else gets NBD_REP_ERR_POLICY (or a closed connection after
 * NBD_OPT_EXPORT_NAME, which has no error reply).
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
 * - Reads past the end get EINVAL, writes past the end ENOSPC (the spec's
 *   SHOULD).  Engine errors map to NBD errors: -EINVAL -> EINVAL, -ENOSPC,
 *   -EDQUOT, -EFBIG -> ENOSPC, -ENOMEM -> ENOMEM; anything else, writes during a restore (-EBUSY) and
 *   reads of a snapshot that became invalid (-ESTALE) included, -> EIO.
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
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "nbd-proto.h"

#define EXPORT_NAME_MAX (NAME_MAX_LEN * 2 + 1)
#define ZERO_BUF (1u << 20)

struct nbd_conn {
        int fd;
        bool admin;
        bool no_zeroes;
        struct vol *v;  /* held while the connection is open */
        struct snap *s; /* held too, or NULL for the volume */
        uint64_t size;
};

static const uint16_t export_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                                     NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN;

/* --- the wire --------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t x) { x = htobe16(x); memcpy(p, &x, 2); }
static void put32(uint8_t *p, uint32_t x) { x = htobe32(x); memcpy(p, &x, 4); }
static void put64(uint8_t *p, uint64_t x) { x = htobe64(x); memcpy(p, &x, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t x; memcpy(&x, p, 2); return be16toh(x); }
static uint32_t get32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return be32toh(x); }
static uint64_t get64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return be64toh(x); }

/* All of @n bytes, or -ECONNRESET when the peer closed first. */
static int read_exact(int fd, void *buf, size_t n)
{
        uint8_t *p = buf;

        while (n > 0) {
                ssize_t r = read(fd, p, n);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        return -ECONNRESET;
                p += r;
                n -= (size_t)r;
        }
        return 0;
}

static int discard(int fd, uint64_t n)
{
        uint8_t buf[4096];

        while (n > 0) {
                size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
                int r = read_exact(fd, buf, k);
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
        struct cowvol_snap_info si;
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
                if (!s->eng || cowvol_snap_info(v->eng, s->eng, &si) < 0 || !si.valid) {
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
        struct cowvol_snap_info si;
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
                        if (s->eng && v->restoring != s && cowvol_snap_info(v->eng, s->eng, &si) == 0 && si.valid)
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
                if (opt == NBD_OPT_GO)
                        conn_hold(c, v, s);
        }
        pthread_mutex_unlock(&D.lock);
        if (r < 0)
                return opt_error(c->fd, opt, r == -ESHUTDOWN ? NBD_REP_ERR_SHUTDOWN : NBD_REP_ERR_UNKNOWN, "%s",
                                 why);
        put16(info, NBD_INFO_EXPORT);
        put64(info + 2, size);
        put16(info + 10, export_flags);
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
        return opt == NBD_OPT_GO;
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
        put64(buf, c->size);
        put16(buf + 8, export_flags);
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
        if ((r = write_all(c->fd, hello, sizeof(hello))) < 0 || (r = read_exact(c->fd, h, 4)) < 0)
                return r;
        cflags = get32(h);
        if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
                return -EPROTO; /* unknown client flags: the spec says close */
        c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
        if (!(data = malloc(NBD_MAX_OPTION)))
                return -ENOMEM;
        for (;;) {
                uint32_t opt, len;

                if ((r = read_exact(c->fd, h, 16)) < 0)
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
                        if ((r = discard(c->fd, len)) < 0 ||
                            (r = opt_error(c->fd, opt, NBD_REP_ERR_TOO_BIG, "option data longer than %u bytes",
                                           NBD_MAX_OPTION)) < 0)
                                break;
                        continue;
                }
                if ((r = read_exact(c->fd, data, len)) < 0)
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
                default:
                        /* NBD_OPT_STRUCTURED_REPLY, STARTTLS, meta contexts: not yet */
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
        case EINVAL: return NBD_EINVAL;
        case ENOSPC:
        case EDQUOT:
        case EFBIG: return NBD_ENOSPC;
        case ENOMEM: return NBD_ENOMEM;
        default: return NBD_EIO;
        }
}

static int simple_reply(int fd, uint64_t cookie, uint32_t err, const void *data, size_t len)
{
        uint8_t h[16];
        int r;

        put32(h, NBD_SIMPLE_REPLY_MAGIC);
        put32(h + 4, err);
        put64(h + 8, cookie);
        r = write_all(fd, h, sizeof(h));
        if (r >= 0 && !err && len)
                r = write_all(fd, data, len);
        return r;
}

/* after a write: invalidations the engine reported go to the catalogue */
static void note_reasons(struct nbd_conn *c)
{
        pthread_mutex_lock(&D.lock);
        if (vol_note_reasons(c->v))
                catalogue_save();
        pthread_mutex_unlock(&D.lock);
}

static int write_zeroes(struct nbd_conn *c, uint64_t off, uint32_t len)
{
        static const uint8_t zeros[ZERO_BUF];
        int r = 0;

        while (len > 0 && r >= 0) {
                uint32_t n = len < ZERO_BUF ? len : ZERO_BUF;
                r = cowvol_volume_pwrite(c->v->eng, c->s ? c->s->eng : NULL, zeros, n, off);
                off += n;
                len -= n;
        }
        return r;
}

static int transmit(struct nbd_conn *c)
{
        uint8_t h[NBD_REQUEST_SIZE];
        cowvol_volume *eng = c->v->eng;
        cowvol_snap *sn = c->s ? c->s->eng : NULL;
        int r;

        for (;;) {
                uint16_t flags, type;
                uint64_t cookie, off;
                uint32_t len;
                uint8_t *buf = NULL;
                bool in_range;
                int e = 0;

                r = read_exact(c->fd, h, sizeof(h));
                if (r < 0)
                        return r == -ECONNRESET ? 0 : r;
                if (get32(h) != NBD_REQUEST_MAGIC)
                        return -EPROTO;
                flags = get16(h + 4);
                type = get16(h + 6);
                cookie = get64(h + 8);
                off = get64(h + 16);
                len = get32(h + 24);
                in_range = off <= c->size && len <= c->size - off;

                switch (type) {
                case NBD_CMD_READ:
                        if (flags || len > NBD_MAX_PAYLOAD || !in_range)
                                e = -EINVAL;
                        else if (len && !(buf = malloc(len)))
                                e = -ENOMEM;
                        else if (len)
                                e = cowvol_volume_pread(eng, sn, buf, len, off);
                        r = simple_reply(c->fd, cookie, nbd_errno(e), buf, len);
                        break;
                case NBD_CMD_WRITE:
                        /* a payload this large cannot be a real request: stop */
                        if (len > NBD_MAX_PAYLOAD)
                                return -EPROTO;
                        if (len && !(buf = malloc(len)))
                                return -ENOMEM;
                        /* the whole payload first: a client gone halfway gets nothing written */
                        r = read_exact(c->fd, buf, len);
                        if (r < 0) {
                                free(buf);
                                return r == -ECONNRESET ? 0 : r;
                        }
                        if (flags & ~NBD_CMD_FLAG_FUA)
                                e = -EINVAL;
                        else if (!in_range)
                                e = -ENOSPC; /* the spec's SHOULD for writes past the end */
                        else if (len)
                                e = cowvol_volume_pwrite(eng, sn, buf, len, off);
                        if (e >= 0 && (flags & NBD_CMD_FLAG_FUA))
                                e = cowvol_volume_flush(eng);
                        if (len && in_range)
                                note_reasons(c);
                        r = simple_reply(c->fd, cookie, nbd_errno(e), NULL, 0);
                        break;
                case NBD_CMD_WRITE_ZEROES:
                        if (flags & ~(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE))
                                e = -EINVAL;
                        else if (!in_range)
                                e = -ENOSPC;
                        else
                                e = write_zeroes(c, off, len);
                        if (e >= 0 && (flags & NBD_CMD_FLAG_FUA))
                                e = cowvol_volume_flush(eng);
                        if (len && in_range)
                                note_reasons(c);
                        r = simple_reply(c->fd, cookie, nbd_errno(e), NULL, 0);
                        break;
                case NBD_CMD_FLUSH:
                        e = flags || off || len ? -EINVAL : cowvol_volume_flush(eng);
                        r = simple_reply(c->fd, cookie, nbd_errno(e), NULL, 0);
                        break;
                case NBD_CMD_DISC:
                        return 0;
                default:
                        /* TRIM (not advertised), CACHE, BLOCK_STATUS, unknown */
                        r = simple_reply(c->fd, cookie, NBD_EINVAL, NULL, 0);
                        break;
                }
                free(buf);
                if (r < 0)
                        return r;
        }
}

void *nbd_session_main(void *arg)
{
        struct nbd_conn c = { .fd = (int)(intptr_t)arg };
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        int r;

        if (getsockopt(c.fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) {
                c.admin = peer_is_admin(c.fd, &cred);
                r = negotiate(&c);
                if (r == 1) {
                        r = transmit(&c);
                        if (r < 0 && r != -ECONNRESET && r != -EPIPE)
                                dlog(LOG_INFO_, "NBD: closing a connection to %s%s%s: %s", c.v->name,
                                     c.s ? "@" : "", c.s ? c.s->name : "", strerror(-r));
                }
        }
        conn_release(&c);
        pthread_mutex_lock(&D.lock);
        clients_forget(c.fd);
        close(c.fd);
        D.clients--;
        pthread_cond_broadcast(&D.changed);
        pthread_mutex_unlock(&D.lock);
        return NULL;
}
