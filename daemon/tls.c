/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * TLS through GnuTLS (tls.h): credentials and server sessions.
 *
 * - The PSK file is read here, not by GnuTLS's own file reader, which
 *   opens it again at each handshake: a file read once can be checked at
 *   start (a bad line stops cowvold), and changes only at a reload, as
 *   every other setting.  Keys live in memory; a handshake looks its user
 *   up in the session's own credentials.
 * - x509: the three files of qemu's tls-creds-x509 folder are required,
 *   ca-crl.pem is read when present.  The CA also checks clients: a client
 *   must present a certificate it signed (qemu's verify-peer=yes), else
 *   TLS would encrypt but let anyone in.
 * - Priorities: GnuTLS's NORMAL with the PSK key exchanges added, as qemu
 *   and libnbd use, so both TLS 1.3 and 1.2 clients agree.
 * - Each set of credentials keeps a SHA-256 of the files it read, so a
 *   reload can tell whether anything changed.
 * - A session is used by two threads, one receiving, one sending (under
 *   the connection's send_lock).  GnuTLS allows that, but a TLS 1.3
 *   KeyUpdate the peer asks for is answered from inside the receiving
 *   call, which would then send beside the sender.  So every GnuTLS call
 *   on an established session runs under the session's lock, and the
 *   receiver never blocks in one: it waits for bytes with poll() outside
 *   the lock, then reads what is there (MSG_DONTWAIT; a partial record
 *   waits for more, buffered by GnuTLS).  A sender may block under the
 *   lock while the peer does not read: only that connection waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls.h"

#define TLS_PRIORITY "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"
#define PSK_USER_MAX 128
#define PSK_KEY_MAX 512 /* bytes; psktool writes 32 */
#define TLS_FILE_MAX (1 << 20)
/* parts of a send smaller than this go out together in one record */
#define TLS_CORK_MAX 16384

struct psk_user {
        char name[PSK_USER_MAX + 1];
        uint8_t *key;
        size_t key_len;
};

struct tls_creds {
        unsigned refs; /* atomic */
        gnutls_psk_server_credentials_t psk;
        gnutls_certificate_credentials_t x509;
        gnutls_priority_t prio;
        struct psk_user *users;
        size_t n_users;
        uint8_t digest[32]; /* of every file read */
};

struct tls_session {
        gnutls_session_t s;
        struct tls_creds *creds;
        int fd;
        pthread_mutex_t lock; /* every GnuTLS call once established; lock order: after send_lock */
};

/* set by the receiving thread around its GnuTLS call: reads take only what
 * is there */
static __thread bool recv_nonblocking;

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_creds *current; /* protected by tls_lock */

/* --- credentials ---------------------------------------------------------------- */

/* A whole file into *ret (malloc'd, NUL-terminated); -errno and the message. */
static int file_read(const char *path, char **ret, size_t *ret_len, char *err, size_t len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        char *buf = NULL;
        size_t got = 0;
        int r = 0;

        if (fd < 0) {
                r = -errno;
                snprintf(err, len, "cannot read %s: %s", path, strerror(-r));
                return r;
        }
        if (!(buf = malloc(TLS_FILE_MAX + 1)))
                r = -ENOMEM;
        while (r == 0) {
                ssize_t n = read(fd, buf + got, TLS_FILE_MAX + 1 - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        r = -errno;
                else if (n == 0)
                        break;
                else if ((got += (size_t)n) > TLS_FILE_MAX)
                        r = -EFBIG;
        }
        close(fd);
        if (r < 0) {
                snprintf(err, len, "cannot read %s: %s", path, r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
                free(buf);
                return r;
        }
        buf[got] = '\0';
        *ret = buf;
        *ret_len = got;
        return 0;
}

static int hex_digit(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* One "USERNAME:HEXKEY" line (without its newline) into @u. */
static int psk_line(const char *file, unsigned lineno, char *line, struct psk_user *u, char *err, size_t len)
{
        char *colon = strchr(line, ':');
        size_t hex;

        if (!colon || colon == line) {
                snprintf(err, len, "%s:%u: expected USERNAME:HEXKEY (as psktool writes)", file, lineno);
                return -EINVAL;
        }
        *colon = '\0';
        hex = strlen(colon + 1);
        if ((size_t)(colon - line) > PSK_USER_MAX) {
                snprintf(err, len, "%s:%u: the user name is longer than %u bytes", file, lineno, PSK_USER_MAX);
                return -EINVAL;
        }
        if (hex == 0 || hex % 2 || hex / 2 > PSK_KEY_MAX) {
                snprintf(err, len, "%s:%u: the key of '%s' must be 2 to %u hexadecimal digits, an even number",
                         file, lineno, line, PSK_KEY_MAX * 2);
                return -EINVAL;
        }
        if (!(u->key = malloc(hex / 2)))
                return -ENOMEM;
        for (size_t i = 0; i < hex / 2; i++) {
                int hi = hex_digit(colon[1 + 2 * i]), lo = hex_digit(colon[2 + 2 * i]);
                if (hi < 0 || lo < 0) {
                        snprintf(err, len, "%s:%u: the key of '%s' is not hexadecimal", file, lineno, line);
                        return -EINVAL;
                }
                u->key[i] = (uint8_t)(hi << 4 | lo);
        }
        u->key_len = hex / 2;
        snprintf(u->name, sizeof(u->name), "%s", line);
        return 0;
}

/* psktool's file: one USERNAME:HEXKEY a line; blank lines are skipped. */
static int psk_parse(struct tls_creds *c, const char *file, char *text, char *err, size_t len)
{
        unsigned lineno = 0;
        char *save = NULL;

        for (char *p = text; p; p = save) {
                struct psk_user *u;
                char *nl = strchr(p, '\n');
                int r;

                save = nl ? nl + 1 : NULL;
                if (nl)
                        *nl = '\0';
                lineno++;
                if (nl && nl > p && nl[-1] == '\r')
                        nl[-1] = '\0';
                if (!*p)
                        continue;
                if (!(u = realloc(c->users, (c->n_users + 1) * sizeof(*u))))
                        return -ENOMEM;
                c->users = u;
                u = &c->users[c->n_users];
                memset(u, 0, sizeof(*u));
                r = psk_line(file, lineno, p, u, err, len);
                if (r < 0) {
                        free(u->key);
                        return r;
                }
                c->n_users++;
                for (size_t i = 0; i + 1 < c->n_users; i++)
                        if (!strcmp(c->users[i].name, u->name)) {
                                snprintf(err, len, "%s:%u: user '%s' appears twice", file, lineno, u->name);
                                return -EINVAL;
                        }
        }
        if (c->n_users == 0) {
                snprintf(err, len, "%s holds no key (psktool -u USER -p %s writes one)", file, file);
                return -EINVAL;
        }
        return 0;
}

/* The handshake's lookup: the key of @user in the session's credentials. */
static int psk_lookup(gnutls_session_t s, const char *user, gnutls_datum_t *key)
{
        const struct tls_creds *c = gnutls_session_get_ptr(s);

        for (size_t i = 0; c && i < c->n_users; i++)
                if (!strcmp(c->users[i].name, user)) {
                        if (!(key->data = gnutls_malloc(c->users[i].key_len)))
                                return -1;
                        memcpy(key->data, c->users[i].key, c->users[i].key_len);
                        key->size = (unsigned)c->users[i].key_len;
                        return 0;
                }
        return -1; /* an unknown user: the handshake fails */
}

static int psk_load(struct tls_creds *c, const char *file, gnutls_hash_hd_t h, char *err, size_t len)
{
        char *text;
        size_t n;
        int r;

        if ((r = file_read(file, &text, &n, err, len)) < 0)
                return r;
        gnutls_hash(h, text, n);
        r = psk_parse(c, file, text, err, len);
        explicit_bzero(text, n);
        free(text);
        if (r < 0)
                return r;
        if (gnutls_psk_allocate_server_credentials(&c->psk) < 0)
                return -ENOMEM;
        gnutls_psk_set_server_credentials_function(c->psk, psk_lookup);
        (void)gnutls_psk_set_server_known_dh_params(c->psk, GNUTLS_SEC_PARAM_MEDIUM);
        return 0;
}

/* One PEM file of the x509 folder: @required, or skipped when absent. */
static int x509_file(const char *dir, const char *name, bool required, gnutls_hash_hd_t h, gnutls_datum_t *d,
                     char *err, size_t len)
{
        char path[4096];
        char *text;
        size_t n;
        int r;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        d->data = NULL;
        d->size = 0;
        r = file_read(path, &text, &n, err, len);
        if (r == -ENOENT && !required)
                return 0;
        if (r < 0)
                return r;
        gnutls_hash(h, name, strlen(name));
        gnutls_hash(h, text, n);
        d->data = (unsigned char *)text;
        d->size = (unsigned)n;
        return 0;
}

static int x509_load(struct tls_creds *c, const char *dir, gnutls_hash_hd_t h, char *err, size_t len)
{
        gnutls_datum_t ca = { 0 }, cert = { 0 }, key = { 0 }, crl = { 0 };
        int r, g = 0;
        const char *what = "";

        if ((r = x509_file(dir, "ca-cert.pem", true, h, &ca, err, len)) < 0 ||
            (r = x509_file(dir, "server-cert.pem", true, h, &cert, err, len)) < 0 ||
            (r = x509_file(dir, "server-key.pem", true, h, &key, err, len)) < 0 ||
            (r = x509_file(dir, "ca-crl.pem", false, h, &crl, err, len)) < 0)
                goto out;
        r = -EINVAL;
        if (gnutls_certificate_allocate_credentials(&c->x509) < 0) {
                r = -ENOMEM;
                goto out;
        }
        if ((g = gnutls_certificate_set_x509_trust_mem(c->x509, &ca, GNUTLS_X509_FMT_PEM)) <= 0)
                what = "ca-cert.pem";
        else if ((g = gnutls_certificate_set_x509_key_mem(c->x509, &cert, &key, GNUTLS_X509_FMT_PEM)) < 0)
                what = "server-cert.pem and server-key.pem";
        else if (crl.data && (g = gnutls_certificate_set_x509_crl_mem(c->x509, &crl, GNUTLS_X509_FMT_PEM)) < 0)
                what = "ca-crl.pem";
        else
                r = 0;
        if (r < 0)
                snprintf(err, len, "%s/%s: %s", dir, what, g == 0 ? "no certificate in it" : gnutls_strerror(g));
        else
                (void)gnutls_certificate_set_known_dh_params(c->x509, GNUTLS_SEC_PARAM_MEDIUM);
out:
        free(ca.data);
        free(cert.data);
        if (key.data)
                explicit_bzero(key.data, key.size);
        free(key.data);
        free(crl.data);
        return r;
}

int tls_creds_load(const char *psk_file, const char *certs_dir, struct tls_creds **ret, char *err, size_t len)
{
        struct tls_creds *c = calloc(1, sizeof(*c));
        gnutls_hash_hd_t h = NULL;
        const char *pos;
        int r = -ENOMEM;

        err[0] = '\0';
        if (!c || gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
                snprintf(err, len, "out of memory");
                goto fail;
        }
        c->refs = 1;
        if (psk_file && (r = psk_load(c, psk_file, h, err, len)) < 0)
                goto fail;
        if (certs_dir && (r = x509_load(c, certs_dir, h, err, len)) < 0)
                goto fail;
        if (!c->psk && !c->x509) {
                snprintf(err, len, "no credentials: a PSK file or an x509 folder is needed");
                r = -EINVAL;
                goto fail;
        }
        if (gnutls_priority_init(&c->prio, TLS_PRIORITY, &pos) < 0) {
                snprintf(err, len, "GnuTLS refuses the priority string at '%s'", pos);
                r = -EINVAL;
                goto fail;
        }
        gnutls_hash_deinit(h, c->digest);
        *ret = c;
        return 0;
fail:
        if (h)
                gnutls_hash_deinit(h, NULL);
        if (r == -ENOMEM && !*err)
                snprintf(err, len, "out of memory");
        tls_creds_unref(c);
        return r;
}

struct tls_creds *tls_creds_ref(struct tls_creds *c)
{
        if (c)
                __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
        return c;
}

struct tls_creds *tls_creds_unref(struct tls_creds *c)
{
        if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
                return NULL;
        for (size_t i = 0; i < c->n_users; i++) {
                explicit_bzero(c->users[i].key, c->users[i].key_len);
                free(c->users[i].key);
        }
        free(c->users);
        if (c->psk)
                gnutls_psk_free_server_credentials(c->psk);
        if (c->x509)
                gnutls_certificate_free_credentials(c->x509);
        if (c->prio)
                gnutls_priority_deinit(c->prio);
        free(c);
        return NULL;
}

bool tls_creds_same(const struct tls_creds *a, const struct tls_creds *b)
{
        if (!a || !b)
                return a == b;
        return !!a->psk == !!b->psk && !!a->x509 == !!b->x509 && !memcmp(a->digest, b->digest, sizeof(a->digest));
}

const char *tls_creds_describe(const struct tls_creds *c, char *buf, size_t len)
{
        if (!c)
                snprintf(buf, len, "none");
        else if (c->psk)
                snprintf(buf, len, "%zu PSK user%s%s", c->n_users, c->n_users == 1 ? "" : "s",
                         c->x509 ? " and x509 certificates" : "");
        else
                snprintf(buf, len, "x509 certificates");
        return buf;
}

struct tls_creds *tls_creds_current(void)
{
        struct tls_creds *c;

        pthread_mutex_lock(&tls_lock);
        c = tls_creds_ref(current);
        pthread_mutex_unlock(&tls_lock);
        return c;
}

void tls_creds_install(struct tls_creds *c)
{
        struct tls_creds *old;

        pthread_mutex_lock(&tls_lock);
        old = current;
        current = c;
        pthread_mutex_unlock(&tls_lock);
        tls_creds_unref(old); /* sessions that use them keep their own reference */
}

/* --- sessions -------------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* GnuTLS's reads: blocking (the socket's timeouts bound them) but for
 * the receiving thread's */
static ssize_t session_pull(gnutls_transport_ptr_t fd, void *buf, size_t n)
{
        return recv((int)(intptr_t)fd, buf, n, recv_nonblocking ? MSG_DONTWAIT : 0);
}

int tls_session_start(int fd, struct tls_creds *c, uint64_t deadline_ms, struct tls_session **ret, char *why,
                      size_t len)
{
        struct tls_session *t = calloc(1, sizeof(*t));
        int g;

        if (!t || gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) < 0) {
                free(t);
                snprintf(why, len, "out of memory");
                return -ENOMEM;
        }
        t->creds = tls_creds_ref(c);
        t->fd = fd;
        pthread_mutex_init(&t->lock, NULL);
        gnutls_session_set_ptr(t->s, c);
        gnutls_priority_set(t->s, c->prio);
        if (c->psk)
                gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, c->psk);
        if (c->x509) {
                gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->x509);
                /* a client certificate the CA signed, checked in the handshake */
                gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
                gnutls_session_set_verify_cert(t->s, NULL, 0);
        }
        gnutls_transport_set_int(t->s, fd);
        /* the negotiation's deadline bounds the handshake too, however the
         * peer trickles its bytes: GnuTLS waits at most this long in all */
        for (;;) {
                uint64_t now = mono_ms();
                if (now >= deadline_ms) {
                        g = GNUTLS_E_TIMEDOUT;
                        break;
                }
                gnutls_handshake_set_timeout(t->s, (unsigned)(deadline_ms - now));
                g = gnutls_handshake(t->s);
                if (g == 0 || (g != GNUTLS_E_AGAIN && g != GNUTLS_E_INTERRUPTED && gnutls_error_is_fatal(g)))
                        break;
                if (g == GNUTLS_E_AGAIN) { /* the socket's timeout: the deadline */
                        g = GNUTLS_E_TIMEDOUT;
                        break;
                }
        }
        if (g < 0) {
                snprintf(why, len, "%s", gnutls_strerror(g));
                tls_session_free(t, false);
                return g == GNUTLS_E_TIMEDOUT ? -ETIMEDOUT : -EPROTO;
        }
        /* from now on two threads: the receiver reads only what is there
         * (set after the handshake, whose timeout wants GnuTLS's own reads) */
        gnutls_transport_set_pull_function(t->s, session_pull);
        *ret = t;
        return 0;
}

ssize_t tls_session_recv(struct tls_session *t, void *buf, size_t n, int timeout_ms)
{
        uint64_t end = timeout_ms < 0 ? 0 : mono_ms() + (uint64_t)timeout_ms;

        for (;;) {
                struct pollfd p = { .fd = t->fd, .events = POLLIN };
                ssize_t r;

                pthread_mutex_lock(&t->lock);
                if (gnutls_record_check_pending(t->s) == 0) {
                        /* nothing decrypted: wait for bytes without the lock */
                        pthread_mutex_unlock(&t->lock);
                        if (end) {
                                uint64_t now = mono_ms();
                                r = now >= end ? 0 : poll(&p, 1, (int)(end - now));
                        } else
                                r = poll(&p, 1, -1);
                        if (r < 0 && errno == EINTR)
                                continue;
                        if (r == 0)
                                return -EAGAIN;
                        pthread_mutex_lock(&t->lock);
                }
                recv_nonblocking = true;
                r = gnutls_record_recv(t->s, buf, n);
                recv_nonblocking = false;
                pthread_mutex_unlock(&t->lock);
                if (r >= 0)
                        return r;
                switch (r) {
                case GNUTLS_E_INTERRUPTED:
                case GNUTLS_E_AGAIN: continue; /* part of a record: wait for the rest */
                case GNUTLS_E_PREMATURE_TERMINATION: return 0; /* closed without close_notify */
                default: return -EPROTO; /* bad records, renegotiation: the connection is done */
                }
        }
}

static int send_all(struct tls_session *t, const uint8_t *p, size_t n)
{
        while (n > 0) {
                ssize_t w = gnutls_record_send(t->s, p, n);
                if (w == GNUTLS_E_INTERRUPTED)
                        continue;
                if (w < 0)
                        return w == GNUTLS_E_AGAIN ? -ETIMEDOUT : -EPIPE;
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

static int uncork(struct tls_session *t)
{
        int g = gnutls_record_uncork(t->s, GNUTLS_RECORD_WAIT);

        return g < 0 ? (g == GNUTLS_E_AGAIN ? -ETIMEDOUT : -EPIPE) : 0;
}

int tls_session_send(struct tls_session *t, struct iovec *iov, int n)
{
        int r = 0;

        pthread_mutex_lock(&t->lock);
        /* headers and small payloads in one record; a large payload goes
         * straight through (corking would copy it whole first) */
        gnutls_record_cork(t->s);
        for (int i = 0; i < n && r == 0; i++) {
                if (iov[i].iov_len > TLS_CORK_MAX) {
                        if ((r = uncork(t)) < 0)
                                break;
                        r = send_all(t, iov[i].iov_base, iov[i].iov_len);
                        gnutls_record_cork(t->s);
                } else
                        r = send_all(t, iov[i].iov_base, iov[i].iov_len);
        }
        if (r == 0)
                r = uncork(t);
        else
                (void)gnutls_record_uncork(t->s, 0);
        pthread_mutex_unlock(&t->lock);
        return r;
}

bool tls_session_pending(struct tls_session *t, int fd)
{
        int waiting = 0;
        size_t decrypted;

        pthread_mutex_lock(&t->lock);
        decrypted = gnutls_record_check_pending(t->s);
        pthread_mutex_unlock(&t->lock);
        return decrypted > 0 || (ioctl(fd, FIONREAD, &waiting) == 0 && waiting > 0);
}

const char *tls_session_peer(struct tls_session *t, char *buf, size_t len)
{
        const char *user;
        const gnutls_datum_t *certs;
        unsigned n = 0;
        gnutls_x509_crt_t crt;
        gnutls_datum_t dn = { 0 };

        snprintf(buf, len, "an unknown peer");
        if (gnutls_auth_get_type(t->s) == GNUTLS_CRD_PSK && (user = gnutls_psk_server_get_username(t->s)))
                snprintf(buf, len, "PSK user '%s'", user);
        else if ((certs = gnutls_certificate_get_peers(t->s, &n)) && n > 0 && gnutls_x509_crt_init(&crt) == 0) {
                if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
                    gnutls_x509_crt_get_dn2(crt, &dn) == 0) {
                        snprintf(buf, len, "certificate '%.*s'", (int)dn.size, (const char *)dn.data);
                        gnutls_free(dn.data);
                }
                gnutls_x509_crt_deinit(crt);
        }
        return buf;
}

void tls_session_free(struct tls_session *t, bool clean)
{
        if (!t)
                return;
        if (clean)
                (void)gnutls_bye(t->s, GNUTLS_SHUT_WR); /* the socket's send timeout bounds it */
        gnutls_deinit(t->s);
        tls_creds_unref(t->creds);
        pthread_mutex_destroy(&t->lock);
        free(t);
}
