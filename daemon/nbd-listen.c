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
 *    reply).  TCP has no peer credentials: whoever reaches the address
 *    (loopback by default) is let in, unless TLS is required (--nbd-tls,
 *    then the handshake's PSK user or client certificate decides).  A
 *    socket that answers neither closes at once.
 * 2. nbd_handshake(), within nbd_handshake_timeout seconds in all; it ends
 *    holding a reference on the export's struct vol (and struct snap).
 * 3. nbd_transmit(), until the client leaves.
 * 4. The reference is dropped under catalogue.lock (rm and restore, which refuse
 *    with EBUSY while it is held, are woken by catalogue.changed), a TLS
 *    session ended, and the socket closed by client_done().
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

/* Listen on settings.nbd_tcp / nbd_tcp_port; sets the host for URIs. */
int nbd_tcp_listen(void)
{
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *ai = NULL;
        char port[8], name[256], num[INET6_ADDRSTRLEN + 1] = "";
        int fd = -1, one = 1, r;

        snprintf(port, sizeof(port), "%u", settings.nbd_tcp_port);
        r = getaddrinfo(settings.nbd_tcp, port, &hints, &ai);
        if (r) {
                dlog(LOG_ERR_, "NBD over TCP: cannot resolve '%s': %s", settings.nbd_tcp, gai_strerror(r));
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
                dlog(LOG_ERR_, "NBD over TCP: cannot listen on %s port %u: %s", settings.nbd_tcp, settings.nbd_tcp_port,
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
        settings.nbd_tcp_uri_host = strdup(name);
        return fd;
}

/* --- a connection ---------------------------------------------------------------- */

/* its reference on the export, if it holds one */
static void conn_release(struct nbd_conn *c)
{
        if (!c->v)
                return;
        pthread_mutex_lock(&catalogue.lock);
        vol_user_remove(c->v, c->s, c->user);
        c->user = NULL;
        pthread_cond_broadcast(&catalogue.changed);
        pthread_mutex_unlock(&catalogue.lock);
        c->v = NULL;
        c->s = NULL;
}

/* "ADDRESS port N" of a TCP peer, for the log */
static void peer_name(int fd, char *buf, size_t len)
{
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        char host[INET6_ADDRSTRLEN + 1], port[8];

        if (getpeername(fd, (struct sockaddr *)&sa, &sl) < 0 || (sa.ss_family != AF_INET && sa.ss_family != AF_INET6) ||
            getnameinfo((struct sockaddr *)&sa, sl, host, sizeof(host), port, sizeof(port),
                        NI_NUMERICHOST | NI_NUMERICSERV))
                snprintf(buf, len, "a TCP client");
        else
                snprintf(buf, len, "%s port %s", host, port);
}

void nbd_session_run(int fd, bool tcp, bool admin)
{
        struct nbd_conn c = { .fd = fd,
                              .io = &nbd_io_plain,
                              .admin = admin,
                              .tcp = tcp,
                              .send_lock = PTHREAD_MUTEX_INITIALIZER,
                              .q_lock = PTHREAD_MUTEX_INITIALIZER,
                              .q_work = PTHREAD_COND_INITIALIZER,
                              .q_done = PTHREAD_COND_INITIALIZER };
        int r;

        if (tcp)
                peer_name(fd, c.peer, sizeof(c.peer));
        else {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
                        snprintf(c.peer, sizeof(c.peer), "uid %u pid %d", (unsigned)cred.uid, (int)cred.pid);
                else
                        snprintf(c.peer, sizeof(c.peer), "a local client");
        }
        if ((r = nbd_handshake(&c)) == 1) {
                r = nbd_transmit(&c);
                if (r < 0 && r != -ECONNRESET && r != -EPIPE)
                        dlog(LOG_INFO_, "NBD: closing a connection to %s%s%s: %s", c.v->name, c.s ? "@" : "",
                             c.s ? c.s->name : "", strerror(-r));
        }
        /* a goodbye only to a peer that left in order (NBD_CMD_DISC) */
        nbd_io_close(&c, r == 0);
        conn_release(&c);
        client_done(c.fd);
}

void *nbd_session_main(void *arg)
{
        int fd = (int)(intptr_t)arg;
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        struct ucred cred;
        socklen_t cl = sizeof(cred);

        if (getsockname(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.ss_family != AF_UNIX) {
                /* TCP: no peer credentials; whoever reaches the address is
                 * let in (it is loopback unless the administrator chose
                 * otherwise), or TLS decides when it is required */
                int one = 1;
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                nbd_session_run(fd, true, true);
        } else if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
                nbd_session_run(fd, false, peer_is_admin(fd, &cred));
        else
                client_done(fd);
        return NULL;
}
