/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The NBD handshake: fixed newstyle negotiation (NetworkBlockDevice/nbd
 * doc/proto.md), from the server's greeting until an export is chosen.
 *
 * - The server greets (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES); client
 *   flags it does not know close the connection, as the spec says.
 * - Then options, one at a time.  Each option is checked in this order: its
 *   header's magic (bad: close); its length (over NBD_MAX_OPTION: the data
 *   is read and thrown away, NBD_REP_ERR_TOO_BIG, except for
 *   NBD_OPT_EXPORT_NAME, which closes); the shape of its data
 *   (NBD_REP_ERR_INVALID); the peer's right (NBD_REP_ERR_POLICY: root or the
 *   configured group on the Unix socket, anyone on TCP); the export name
 *   (NBD_REP_ERR_UNKNOWN, or NBD_REP_ERR_SHUTDOWN while cowvold stops).
 *   NBD_OPT_EXPORT_NAME has no error reply: refusing it closes.  Options
 *   this server lacks (extended headers) get NBD_REP_ERR_UNSUP.
 * - TLS (TCP only; settings.nbd_tls as the connection found it): with
 *   "require", every option before NBD_OPT_STARTTLS but NBD_OPT_ABORT gets
 *   NBD_REP_ERR_TLS_REQD (NBD_OPT_EXPORT_NAME closes) once its length
 *   passed, before any other check; with "on" plaintext goes on as without TLS.  NBD_OPT_STARTTLS
 *   is acknowledged, then the TLS handshake runs within the same deadline;
 *   from then on every byte goes through the session (c->io), and what was
 *   negotiated before it (structured replies, contexts) is forgotten, as
 *   the spec says.  On the Unix socket, where the file mode and the group
 *   decide, and on TCP with TLS off, STARTTLS gets NBD_REP_ERR_POLICY, as
 *   qemu-nbd answers when it has no TLS credentials.
 * - Exports are "VOLUME" and "VOLUME@SNAP", looked up under catalogue.lock.  From
 *   NBD_OPT_GO / NBD_OPT_EXPORT_NAME the connection holds a reference on
 *   its struct vol (and struct snap), taken under catalogue.lock, so rm and restore
 *   refuse with EBUSY until it closes (nbd-listen.c drops it).
 * - Negotiation must end within settings.nbd_handshake_timeout seconds in all,
 *   however slowly the bytes trickle in: every read is bounded by what is
 *   left of the deadline.  Transmission has none.
 *
 * One thread a connection: nothing here is shared but D, under catalogue.lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

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

static int discard(struct nbd_conn *c, uint64_t n)
{
        uint8_t buf[4096];

        while (n > 0) {
                size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
                int r = nbd_read_exact(c, buf, k);
                if (r < 0)
                        return r;
                n -= k;
        }
        return 0;
}

static int opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
        uint8_t h[20];
        struct iovec iov[2] = { { h, sizeof(h) }, { (void *)data, len } };

        put64(h, NBD_REP_MAGIC);
        put32(h + 8, opt);
        put32(h + 12, type);
        put32(h + 16, len);
        return c->io->send(c, iov, len ? 2 : 1);
}

/* An error reply with a message for people, as the spec allows. */
__attribute__((format(printf, 4, 5))) static int opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type,
                                                             const char *fmt, ...)
{
        char msg[256];
        va_list ap;
        uint32_t n;

        va_start(ap, fmt);
        n = nbd_vformat(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return opt_reply(c, opt, type, msg, n);
}

/* --- exports ------------------------------------------------------------------ */

/* catalogue.lock held.  "VOLUME" or "VOLUME@SNAP" that can be served now; on failure
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
        if (catalogue.stopping) {
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
        } else if (v->restore_stalled) {
                snprintf(why, len, "volume '%s' is held: its restore from %s cannot resume: %s", v->name,
                         v->restoring->name, v->restore_stalled);
                return -EBUSY;
        }
        *ret_v = v;
        *ret_s = s;
        return 0;
}

static void conn_hold(struct nbd_conn *c, struct vol *v, struct snap *s)
{
        c->user = vol_user_add(v, s, "NBD", c->peer);
        c->v = v;
        c->s = s;
        c->size = s ? s->size : v->size;
        c->read_only = settings_export_read_only(s != NULL) || (s && s->read_only);
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

/* NBD_OPT_LIST: every volume and every valid snapshot, gathered under catalogue.lock
 * and sent without it. */
static int opt_list(struct nbd_conn *c, uint32_t len)
{
        struct cowvol_snapshot_info si;
        struct name_list l = { 0 };
        int r = 0;

        if (len)
                return opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
        if (!c->admin)
                return opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_POLICY,
                                 "permission denied: root or membership of group '%s' needed",
                                 settings_group());
        pthread_mutex_lock(&catalogue.lock);
        for (struct vol *v = catalogue.vols; v && r == 0; v = v->next) {
                if (!v->eng)
                        continue;
                r = names_add(&l, v->name, NULL);
                for (struct snap *s = v->snaps; s && r == 0; s = s->next)
                        if (s->eng && v->restoring != s && cowvol_snapshot_info(v->eng, s->eng, &si) == 0 && si.valid)
                                r = names_add(&l, v->name, s->name);
        }
        pthread_mutex_unlock(&catalogue.lock);
        if (r < 0) {
                free(l.names);
                return opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_TOO_BIG, "out of memory");
        }
        for (size_t i = 0; i < l.n && r >= 0; i++) {
                uint8_t buf[4 + sizeof(l.names[0])];
                uint32_t n = (uint32_t)strlen(l.names[i]);
                put32(buf, n);
                memcpy(buf + 4, l.names[i], n);
                r = opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, 4 + n);
        }
        free(l.names);
        if (r >= 0)
                r = opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
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
                return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed %s request",
                                 opt == NBD_OPT_GO ? "NBD_OPT_GO" : "NBD_OPT_INFO");
        if (!c->admin)
                return opt_error(c, opt, NBD_REP_ERR_POLICY,
                                 "permission denied: root or membership of group '%s' needed",
                                 settings_group());
        if (nlen == 0)
                return opt_error(c, opt, NBD_REP_ERR_UNKNOWN,
                                 "there is no default export; name one: VOLUME or VOLUME@SNAPSHOT");
        if (nlen > EXPORT_NAME_MAX || memchr(data + 4, '\0', nlen))
                return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export (a bad name)");
        memcpy(name, data + 4, nlen);
        name[nlen] = '\0';
        pthread_mutex_lock(&catalogue.lock);
        r = export_find(name, &v, &s, why, sizeof(why));
        if (r == 0) {
                size = s ? s->size : v->size;
                chunk = v->chunk;
                ro = settings_export_read_only(s != NULL) || (s && s->read_only);
                if (opt == NBD_OPT_GO)
                        conn_hold(c, v, s);
        }
        pthread_mutex_unlock(&catalogue.lock);
        if (r < 0)
                return opt_error(c, opt, r == -ESHUTDOWN ? NBD_REP_ERR_SHUTDOWN : NBD_REP_ERR_UNKNOWN, "%s",
                                 why);
        put16(info, NBD_INFO_EXPORT);
        put64(info + 2, size);
        put16(info + 10, export_flags(c, ro));
        r = opt_reply(c, opt, NBD_REP_INFO, info, 12);
        if (r >= 0) {
                /* a server may send block sizes unasked: bytes are fine, the
                 * chunk size is best, 32 MiB at most */
                put16(info, NBD_INFO_BLOCK_SIZE);
                put32(info + 2, 1);
                put32(info + 6, chunk);
                put32(info + 10, NBD_MAX_PAYLOAD);
                r = opt_reply(c, opt, NBD_REP_INFO, info, 14);
        }
        if (r >= 0)
                r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
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
                return opt_error(c, opt, NBD_REP_ERR_INVALID, "%s needs NBD_OPT_STRUCTURED_REPLY first", oname);
        if (len < 8 || (nlen = get32(data)) > len - 8)
                return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed %s request", oname);
        pos = 4 + nlen;
        count = get32(data + pos);
        pos += 4;
        for (uint32_t i = 0; i < count; i++) {
                uint32_t qlen;
                if (len - pos < 4 || (qlen = get32(data + pos)) > len - pos - 4)
                        return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed %s request", oname);
                alloc = alloc || meta_selects_alloc(opt, data + pos + 4, qlen);
                pos += 4 + qlen;
        }
        if (pos != len)
                return opt_error(c, opt, NBD_REP_ERR_INVALID, "malformed %s request", oname);
        if (count == 0 && opt == NBD_OPT_LIST_META_CONTEXT)
                alloc = true; /* no query: every context */
        if (!c->admin)
                return opt_error(c, opt, NBD_REP_ERR_POLICY,
                                 "permission denied: root or membership of group '%s' needed",
                                 settings_group());
        if (nlen == 0 || nlen > EXPORT_NAME_MAX || memchr(data + 4, '\0', nlen))
                return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
        memcpy(name, data + 4, nlen);
        name[nlen] = '\0';
        pthread_mutex_lock(&catalogue.lock);
        r = export_find(name, &v, &s, why, sizeof(why));
        pthread_mutex_unlock(&catalogue.lock);
        if (r < 0)
                return opt_error(c, opt, r == -ESHUTDOWN ? NBD_REP_ERR_SHUTDOWN : NBD_REP_ERR_UNKNOWN, "%s",
                                 why);
        if (opt == NBD_OPT_SET_META_CONTEXT) {
                c->meta_alloc = alloc;
                memcpy(c->meta_export, name, nlen + 1);
        }
        if (alloc) {
                put32(rep, opt == NBD_OPT_SET_META_CONTEXT ? 1 : 0);
                memcpy(rep + 4, NBD_META_BASE_ALLOCATION, strlen(NBD_META_BASE_ALLOCATION));
                r = opt_reply(c, opt, NBD_REP_META_CONTEXT, rep, 4 + (uint32_t)strlen(NBD_META_BASE_ALLOCATION));
                if (r < 0)
                        return r;
        }
        return opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
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
        pthread_mutex_lock(&catalogue.lock);
        r = export_find(name, &v, &s, why, sizeof(why));
        if (r == 0)
                conn_hold(c, v, s);
        pthread_mutex_unlock(&catalogue.lock);
        if (r < 0) {
                dlog(LOG_INFO_, "NBD: refused export '%s': %s", name, why);
                return r;
        }
        if (c->meta_alloc && strcmp(c->meta_export, name) != 0)
                c->meta_alloc = false; /* as for NBD_OPT_GO */
        put64(buf, c->size);
        put16(buf + 8, export_flags(c, c->read_only));
        r = nbd_send(c, buf, c->no_zeroes ? 10 : sizeof(buf));
        return r < 0 ? r : 1;
}

/* NBD_OPT_STARTTLS: acknowledge, then the TLS handshake; 0 to go on
 * negotiating (through TLS, or in plaintext after a refusal), or a
 * negative errno to close. */
static int opt_starttls(struct nbd_conn *c, uint32_t len)
{
        static struct log_limit failed_log = LOG_LIMIT_INIT;
        struct tls_creds *creds;
        char why[256], note[64];
        int r;

        if (len)
                return opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
        if (c->tls)
                return opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is on already");
        if (!c->tcp)
                return opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY,
                                 "TLS is for NBD over TCP: on the Unix socket the socket's mode and group decide");
        if (c->tls_mode == NBD_TLS_OFF || !(creds = tls_creds_current()))
                return opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, "TLS is not configured on this server");
        r = opt_reply(c, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0);
        if (r >= 0)
                r = tls_session_start(c->fd, creds, c->deadline_ms, &c->tls, why, sizeof(why));
        tls_creds_unref(creds); /* the session holds its own */
        if (r < 0) {
                if (log_allowed(&failed_log, note, sizeof(note)))
                        dlog(LOG_INFO_, "NBD: TLS handshake with %s failed: %s%s", c->peer, why, note);
                return r;
        }
        c->io = &nbd_io_tls;
        c->structured = false;
        c->meta_alloc = false;
        return 0;
}

/* With TLS required and not on yet: may @opt go ahead?  (Otherwise it was
 * answered, in *r.) */
static bool tls_allows(struct nbd_conn *c, uint32_t opt, int *r)
{
        if (c->tls_mode != NBD_TLS_REQUIRE || c->tls || opt == NBD_OPT_STARTTLS || opt == NBD_OPT_ABORT)
                return true;
        if (opt == NBD_OPT_EXPORT_NAME)
                *r = -EACCES; /* no error reply exists: close */
        else
                *r = opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
                               "TLS is required: NBD_OPT_STARTTLS first (an nbds:// URI, or qemu's tls-creds)");
        return false;
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
        if ((r = nbd_send(c, hello, sizeof(hello))) < 0 || (r = nbd_read_exact(c, h, 4)) < 0)
                return r;
        cflags = get32(h);
        if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
                return -EPROTO; /* unknown client flags: the spec says close */
        c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
        if (!(data = malloc(NBD_MAX_OPTION)))
                return -ENOMEM;
        for (;;) {
                uint32_t opt, len;

                if ((r = nbd_read_exact(c, h, 16)) < 0)
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
                            (r = opt_error(c, opt, NBD_REP_ERR_TOO_BIG, "option data longer than %u bytes",
                                           NBD_MAX_OPTION)) < 0)
                                break;
                        continue;
                }
                if ((r = nbd_read_exact(c, data, len)) < 0)
                        break;
                if (!tls_allows(c, opt, &r)) {
                        if (r < 0)
                                break;
                        continue;
                }
                switch (opt) {
                case NBD_OPT_EXPORT_NAME: r = opt_export_name(c, data, len); break;
                case NBD_OPT_ABORT:
                        opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
                        r = -ECONNABORTED;
                        break;
                case NBD_OPT_LIST: r = opt_list(c, len); break;
                case NBD_OPT_STARTTLS: r = opt_starttls(c, len); break;
                case NBD_OPT_INFO:
                case NBD_OPT_GO: r = opt_info_go(c, opt, data, len); break;
                case NBD_OPT_STRUCTURED_REPLY:
                        if (len)
                                r = opt_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
                        else {
                                c->structured = true;
                                r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
                        }
                        break;
                case NBD_OPT_LIST_META_CONTEXT:
                case NBD_OPT_SET_META_CONTEXT: r = opt_meta(c, opt, data, len); break;
                default:
                        /* extended headers, and what the spec adds later */
                        r = opt_error(c, opt, NBD_REP_ERR_UNSUP, "option %" PRIu32 " is not supported", opt);
                        break;
                }
                if (r != 0)
                        break;
        }
        free(data);
        return r;
}

int nbd_handshake(struct nbd_conn *c)
{
        unsigned limit = __atomic_load_n(&settings.nbd_handshake_timeout, __ATOMIC_RELAXED);
        int r;

        /* TLS as configured when it connected, whatever a reload does meanwhile */
        c->tls_mode = c->tcp ? __atomic_load_n(&settings.nbd_tls, __ATOMIC_RELAXED) : NBD_TLS_OFF;

        /* a client that has not chosen an export in time is dropped */
        c->deadline_ms = nbd_now_ms() + (uint64_t)limit * 1000;
        nbd_set_timeouts(c->fd, (uint64_t)limit * 1000);
        r = negotiate(c);
        if (r == -ETIMEDOUT || r == -EAGAIN)
                dlog(LOG_INFO_, "NBD: a client chose no export within %u s; closing it", limit);
        if (r == 1) {
                c->deadline_ms = 0;
                nbd_set_timeouts(c->fd, 0);
                /* a reply its client leaves unread ends the connection */
                set_timeout(c->fd, SO_SNDTIMEO, __atomic_load_n(&settings.client_timeout, __ATOMIC_RELAXED));
        }
        return r;
}
