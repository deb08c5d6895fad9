/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Serving every volume and snapshot over NBD (NetworkBlockDevice/nbd
 * doc/proto.md): the settings, the TCP listener, and one connection's life.
 * doc/protocol.md says what is served and how.  The NBD server is this file,
 * nbd-handshake.c (negotiation: options and the export chosen) and
 * nbd-transmit.c (requests and replies); nbd.h is what they share.
 *
 * NBD listens on a Unix socket of its own beside the control socket (bound
 * by cowvold.c), and on TCP when configured.  A connection, in order:
 * 1. Who: on the Unix socket the peer must be root or in the configured
 *    group (SO_PEERCRED), as for the control socket's data operations;
 *    anyone else may connect but is refused every export (NBD_REP_ERR_POLICY,
 *    or a closed connection after NBD_OPT_EXPORT_NAME, which has no error
 *    reply).  TCP has no credentials: whoever reaches the address (loopback
 *    by default) is let in.  A socket that answers neither closes at once.
 * 2. nbd_handshake(), within nbd_handshake_timeout seconds in all; it ends
 *    holding a reference on the export's struct vol (and struct snap).
 * 3. nbd_transmit(), until the client leaves.
 * 4. The reference is dropped under D.lock (rm and restore, which refuse
 *    with EBUSY while it is held, are woken by D.changed), and the socket
 *    closed by client_done().
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd.h"

/* --- settings ------------------------------------------------------------------ */

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

bool nbd_export_read_only(const struct snap *s)
{
        return D.cfg.nbd_read_only == NBD_RO_ALL || (s && D.cfg.nbd_read_only == NBD_RO_SNAPSHOTS);
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

/* --- a connection ---------------------------------------------------------------- */

/* its reference on the export, if it holds one */
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
        if (r == 0 && (r = nbd_handshake(&c)) == 1) {
                r = nbd_transmit(&c);
                if (r < 0 && r != -ECONNRESET && r != -EPIPE)
                        dlog(LOG_INFO_, "NBD: closing a connection to %s%s%s: %s", c.v->name, c.s ? "@" : "",
                             c.s ? c.s->name : "", strerror(-r));
        }
        conn_release(&c);
        client_done(c.fd);
        return NULL;
}
