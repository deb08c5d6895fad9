/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Listeners and the client table: the control socket (made here, or
 * passed by systemd: LISTEN_FDS) and the NBD sockets, each accepted client
 * a thread of its own; at stop, every client is shut down and waited for.
 * Transient accept() errors are not fatal (a client gone before accept,
 * descriptors short).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon.h"

/*
 * Who holds how many connections (issue: no peer may lock out root): each
 * listener takes at most settings.max_connections, of which the last
 * RESERVED_SLOTS only go to root and the group; one user (Unix socket) or
 * one address (TCP) at most max_connections_per_peer, root not counted and
 * root never refused for the listener's count.  The table grows as
 * needed; its size is bounded by those counts.
 */
#define RESERVED_SLOTS 16u

enum listener_kind { L_CONTROL, L_NBD, L_TCP, _L_MAX };
static const char *const kind_names[_L_MAX] = { "the control socket", "the NBD socket", "NBD over TCP" };

struct client {
        int fd; /* -1: a free slot */
        uint8_t kind;
        bool root, admin;
        uid_t uid;                  /* Unix sockets */
        struct sockaddr_storage ss; /* TCP: the peer's address (port zeroed) */
};

/* The client table has a lock of its own (catalogue.h: lock 2): accepting
 * a client must not wait for the catalogue's, which a snapshot holds
 * through its stores' flushes. */
static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t clients_gone = PTHREAD_COND_INITIALIZER;
static struct client *clients;
static size_t n_slots;
static unsigned n_kind[_L_MAX];
static int stop_efd = -1; /* readable once the daemon stops (clients_stop) */

static int listen_socket(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char dir[sizeof(sa.sun_path)];
        struct stat st;
        int fd, r;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                fprintf(stderr, "cowvold: socket path %s is longer than %zu bytes\n", path, sizeof(sa.sun_path) - 1);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        snprintf(dir, sizeof(dir), "%s", path);
        if (strrchr(dir, '/') && strrchr(dir, '/') != dir) {
                *strrchr(dir, '/') = '\0';
                r = mkdir_p(dir, 0755);
                if (r < 0)
                        return dlog_errno(r, "Cannot create %s: %m", dir);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* a socket file that nobody answers on is a leftover of a crash */
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                close(fd);
                fprintf(stderr, "cowvold: another cowvold is serving %s\n", path);
                return -EADDRINUSE;
        }
        close(fd);
        /* only a socket is ours to replace: a file named by mistake stays */
        if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
                fprintf(stderr, "cowvold: %s exists and is not a socket; it was left as it is\n", path);
                return -EEXIST;
        }
        unlink(path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
                r = -errno;
                close(fd);
                return dlog_errno(r, "Cannot listen on %s: %m", path);
        }
        /* 0660: root and the group may connect; others get status only */
        if (chmod(path, 0660) < 0 || (settings.have_gid && chown(path, 0, settings.gid) < 0 && geteuid() == 0))
                dlog(LOG_WARN_, "Cannot set the mode of %s: %s", path, strerror(errno));
        return fd;
}

/* clients_lock held: a free slot (the table grows), or NULL */
static struct client *slot_free(void)
{
        struct client *t;
        size_t n, old = n_slots;

        for (size_t i = 0; i < n_slots; i++)
                if (clients[i].fd < 0)
                        return &clients[i];
        n = n_slots ? n_slots * 2 : 256;
        if (!(t = realloc(clients, n * sizeof(*t))))
                return NULL;
        for (size_t i = n_slots; i < n; i++)
                t[i].fd = -1;
        clients = t;
        n_slots = n;
        return &clients[old];
}

static bool same_peer(const struct client *a, const struct client *b)
{
        if (a->kind == L_TCP || b->kind == L_TCP)
                return a->kind == b->kind && !memcmp(&a->ss, &b->ss, sizeof(a->ss));
        return a->uid == b->uid;
}

/* clients_lock held: why @c may not have a slot now, or NULL */
static const char *refused(const struct client *c, unsigned *limit)
{
        unsigned max = __atomic_load_n(&settings.max_connections, __ATOMIC_RELAXED);
        unsigned per = __atomic_load_n(&settings.max_connections_per_peer, __ATOMIC_RELAXED);
        unsigned same = 0;

        if (c->root)
                return NULL;
        *limit = max;
        if (n_kind[c->kind] >= max)
                return "the socket's limit (max_connections)";
        *limit = max - RESERVED_SLOTS;
        if (!c->admin && n_kind[c->kind] >= max - RESERVED_SLOTS)
                return "the slots left are kept for root and the group";
        for (size_t i = 0; i < n_slots; i++)
                if (clients[i].fd >= 0 && same_peer(&clients[i], c))
                        same++;
        *limit = per;
        if (same >= per)
                return "one peer's limit (max_connections_per_peer)";
        return NULL;
}

/* Who is on the other end of @fd, accepted on a listener of @kind. */
static void identify(int fd, enum listener_kind kind, struct client *c)
{
        memset(c, 0, sizeof(*c));
        c->fd = fd;
        c->kind = (uint8_t)kind;
        if (kind == L_TCP) {
                socklen_t len = sizeof(c->ss);
                if (getpeername(fd, (struct sockaddr *)&c->ss, &len) == 0) {
                        if (c->ss.ss_family == AF_INET)
                                ((struct sockaddr_in *)&c->ss)->sin_port = 0;
                        else if (c->ss.ss_family == AF_INET6) {
                                /* one peer: a /64 (a host picks any address in
                                 * its own), an IPv4 address mapped whole */
                                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c->ss;
                                a->sin6_port = 0;
                                a->sin6_flowinfo = 0;
                                a->sin6_scope_id = 0;
                                if (!IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
                                        memset(a->sin6_addr.s6_addr + 8, 0, 8);
                        }
                }
        } else {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
                        c->uid = cred.uid;
                        c->root = cred.uid == 0;
                        c->admin = peer_is_admin(fd, &cred);
                } else
                        c->uid = (uid_t)-1;
        }
}

static const char *peer_name(const struct client *c, char *buf, size_t len)
{
        char addr[INET6_ADDRSTRLEN] = "?";

        if (c->kind != L_TCP) {
                snprintf(buf, len, "uid %u", (unsigned)c->uid);
                return buf;
        }
        if (c->ss.ss_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)&c->ss)->sin_addr, addr, sizeof(addr));
        else if (c->ss.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&c->ss)->sin6_addr, addr, sizeof(addr));
        snprintf(buf, len, "%s", addr);
        return buf;
}

/* clients_lock held */
static void clients_forget(int fd)
{
        for (size_t i = 0; i < n_slots; i++)
                if (clients[i].fd == fd) {
                        n_kind[clients[i].kind]--;
                        clients[i].fd = -1;
                }
}

void client_done(int fd)
{
        pthread_mutex_lock(&clients_lock);
        clients_forget(fd); /* before close: the number may be reused at once */
        close(fd);
        __atomic_sub_fetch(&catalogue.n_clients, 1, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&clients_gone);
        pthread_mutex_unlock(&clients_lock);
}

int clients_stop_fd(void)
{
        return stop_efd;
}

/* the listening thread's flood-prone lines */
static struct log_limit accept_log = LOG_LIMIT_INIT, full_log = LOG_LIMIT_INIT, thread_log = LOG_LIMIT_INIT;

/* Accept one client on @lfd and give it a thread running @fn. */
static void accept_client(int lfd, enum listener_kind kind, void *(*fn)(void *))
{
        struct client c, *slot = NULL;
        const char *why;
        unsigned limit = 0;
        char note[64], who[INET6_ADDRSTRLEN + 8];
        int cfd, r;
        pthread_t t;
        pthread_attr_t attr;

        cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
                int e = errno;
                struct rlimit rl = { 0 };

                /* transient: a client gone before accept, fds short */
                if (e == EINTR || e == ECONNABORTED || e == EAGAIN || !log_allowed(&accept_log, note, sizeof(note)))
                        ;
                else if (e == EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0)
                        dlog(LOG_WARN_, "Cannot accept a client: %s (cowvold's limit, RLIMIT_NOFILE, is %llu)%s",
                             strerror(e), (unsigned long long)rl.rlim_cur, note);
                else
                        dlog(LOG_WARN_, "Cannot accept a client: %s%s", strerror(e), note);
                if (e == EMFILE || e == ENFILE)
                        usleep(100000);
                return;
        }
        identify(cfd, kind, &c);
        pthread_mutex_lock(&clients_lock);
        why = refused(&c, &limit);
        if (!why && !(slot = slot_free()))
                why = "out of memory";
        if (why) {
                pthread_mutex_unlock(&clients_lock);
                if (log_allowed(&full_log, note, sizeof(note)))
                        dlog(LOG_WARN_, "Too many connections on %s: closing a new one from %s (%s: %u)%s",
                             kind_names[kind], peer_name(&c, who, sizeof(who)), why, limit, note);
                close(cfd);
                return;
        }
        *slot = c;
        n_kind[kind]++;
        __atomic_add_fetch(&catalogue.n_clients, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&clients_lock);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&t, &attr, fn, (void *)(intptr_t)cfd);
        pthread_attr_destroy(&attr);
        if (r) {
                if (log_allowed(&thread_log, note, sizeof(note)))
                        dlog(LOG_WARN_, "Cannot start a client thread: %s; closing the new client%s", strerror(r),
                             note);
                client_done(cfd);
        }
}

/* @nfd, @tfd: the NBD sockets (Unix, TCP), or -1 (poll skips them) */
static int serve(int lfd, int sfd, int nfd, int tfd, void (*on_hup)(void))
{
        struct pollfd pf[4] = { { .fd = lfd, .events = POLLIN }, { .fd = sfd, .events = POLLIN },
                                { .fd = nfd, .events = POLLIN }, { .fd = tfd, .events = POLLIN } };

        for (;;) {
                if (poll(pf, 4, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (pf[1].revents) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
                                continue;
                        if (si.ssi_signo == SIGHUP) {
                                on_hup();
                                continue;
                        }
                        dlog(LOG_INFO_, "Received %s, stopping", strsignal((int)si.ssi_signo));
                        return 0;
                }
                if (pf[0].revents & POLLIN)
                        accept_client(lfd, L_CONTROL, session_main);
                if (pf[2].revents & POLLIN)
                        accept_client(nfd, L_NBD, nbd_session_main);
                if (pf[3].revents & POLLIN)
                        accept_client(tfd, L_TCP, nbd_session_main);
        }
}

static void strv_free(char **v)
{
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
}

/* The path a listening Unix socket is bound to (malloc'ed), or NULL. */
static char *socket_path_of(int fd)
{
        struct sockaddr_un sa;
        socklen_t len = sizeof(sa);

        memset(&sa, 0, sizeof(sa));
        if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX || !sa.sun_path[0])
                return NULL;
        return strndup(sa.sun_path, sizeof(sa.sun_path));
}

int listeners_open(struct listeners *l)
{
        char **fdnames = NULL;
        int n;

        if (stop_efd < 0 && (stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
                return dlog_errno(-errno, "Cannot make an eventfd: %m");

        /* sockets from systemd: the control socket (cowvold.socket) and
         * maybe the NBD socket (cowvold-nbd.socket, FileDescriptorName=nbd) */
        l->control = l->nbd = l->tcp = -1;
        n = sd_listen_fds_with_names(1, &fdnames);
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                bool is_nbd = fdnames && fdnames[i] && strcmp(fdnames[i], "nbd") == 0;
                if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0 || (is_nbd ? l->nbd : l->control) >= 0) {
                        fprintf(stderr, "cowvold: systemd passed %s; expected a listening Unix stream socket for "
                                        "control and at most one named 'nbd'\n",
                                (is_nbd ? l->nbd : l->control) >= 0 ? "more sockets" : "a socket of the wrong kind");
                        strv_free(fdnames);
                        return -EINVAL;
                }
                fcntl(fd, F_SETFD, FD_CLOEXEC);
                *(is_nbd ? &l->nbd : &l->control) = fd;
        }
        strv_free(fdnames);
        if (n > 0 && l->control < 0) {
                fprintf(stderr, "cowvold: systemd passed only the NBD socket; the control socket is missing\n");
                return -EINVAL;
        }
        l->activated = l->control >= 0;
        if (l->activated) {
                /* the paths systemd chose are the paths: URIs and nbd.sock follow them */
                settings.socket_path = l->control_path = socket_path_of(l->control);
                l->nbd_activated = l->nbd >= 0;
                settings.nbd_socket_path = l->nbd_activated ? socket_path_of(l->nbd) : settings_nbd_socket();
        } else {
                settings.nbd_socket_path = settings_nbd_socket();
                l->control = listen_socket(settings.socket_path);
                if (l->control < 0)
                        return l->control;
        }
        if (!settings.socket_path || !settings.nbd_socket_path) {
                fprintf(stderr, "cowvold: %s\n", l->activated ? "cannot tell the path of a socket systemd passed (a "
                                                                 "Unix socket with a path is needed)" : "out of memory");
                return -EINVAL;
        }
        /* NBD beside it; without it the control socket still serves */
        if (l->nbd < 0)
                l->nbd = listen_socket(settings.nbd_socket_path);
        if (l->nbd < 0) {
                dlog(LOG_WARN_, "Not serving NBD: cannot listen on %s", settings.nbd_socket_path);
                free(settings.nbd_socket_path);
                settings.nbd_socket_path = NULL; /* export says so */
        } else
                dlog(LOG_INFO_, "Serving NBD on %s%s", settings.nbd_socket_path,
                     settings.nbd_read_only == NBD_RO_ALL         ? " (every export read-only)"
                     : settings.nbd_read_only == NBD_RO_SNAPSHOTS ? " (snapshots read-only)"
                                                                  : "");
        /* TCP only when asked for; a wrong address is a wrong setting */
        if (settings.nbd_tcp) {
                l->tcp = nbd_tcp_listen();
                if (l->tcp < 0)
                        return l->tcp;
                dlog(LOG_INFO_, "Serving NBD on TCP %s port %u%s", settings.nbd_tcp, settings.nbd_tcp_port,
                     settings.nbd_tls == NBD_TLS_REQUIRE ? " (TLS required)"
                     : settings.nbd_tls == NBD_TLS_ON   ? " (TLS offered; plaintext clients accepted too)"
                                                        : "");
                if (settings.nbd_tls == NBD_TLS_OFF)
                        dlog(LOG_WARN_, "NBD over TCP without TLS: whoever reaches %s port %u may read and write "
                             "every volume (--nbd-tls=require with --nbd-tls-psk-file or --nbd-tls-certs)",
                             settings.nbd_tcp, settings.nbd_tcp_port);
        } else if (settings.nbd_tls != NBD_TLS_OFF)
                dlog(LOG_WARN_, "nbd_tls = %s does nothing while NBD is not served over TCP (--nbd-tcp): TLS is "
                     "for TCP only", nbd_tls_name(settings.nbd_tls));
        return 0;
}

int listeners_serve(struct listeners *l, int signal_fd, void (*on_hup)(void))
{
        return serve(l->control, signal_fd, l->nbd, l->tcp, on_hup);
}

void listeners_regroup(const struct listeners *l)
{
        int64_t admin = __atomic_load_n(&settings.admin_gid, __ATOMIC_SEQ_CST);
        gid_t gid = admin < 0 ? 0 : (gid_t)admin; /* no group: root's alone */

        if (geteuid() != 0)
                return;
        if (l->control >= 0 && !l->activated && chown(settings.socket_path, 0, gid) < 0)
                dlog(LOG_WARN_, "Cannot give %s to the new group: %s", settings.socket_path, strerror(errno));
        if (l->nbd >= 0 && !l->nbd_activated && chown(settings.nbd_socket_path, 0, gid) < 0)
                dlog(LOG_WARN_, "Cannot give %s to the new group: %s", settings.nbd_socket_path, strerror(errno));
}

/* our socket file goes at the end; whatever replaced it stays */
static void unlink_socket(const char *path)
{
        struct stat st;

        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path);
}

void listeners_close(struct listeners *l)
{
        if (l->control >= 0) {
                close(l->control);
                if (!l->activated)
                        unlink_socket(settings.socket_path);
        }
        if (l->nbd >= 0) {
                close(l->nbd);
                if (!l->nbd_activated) /* systemd's sockets stay: RemoveOnStop= */
                        unlink_socket(settings.nbd_socket_path);
        }
        if (l->tcp >= 0)
                close(l->tcp);
        l->control = l->nbd = l->tcp = -1;
        free(l->control_path);
        l->control_path = NULL;
}

/* clients_lock held: wait up to @ms for every client to go */
static bool clients_wait(int ms)
{
        struct timespec end;

        clock_gettime(CLOCK_REALTIME, &end); /* the condition's clock */
        end.tv_sec += ms / 1000;
        end.tv_nsec += (long)(ms % 1000) * 1000000;
        if (end.tv_nsec >= 1000000000) {
                end.tv_sec++;
                end.tv_nsec -= 1000000000;
        }
        while (catalogue.n_clients > 0)
                if (pthread_cond_timedwait(&clients_gone, &clients_lock, &end) == ETIMEDOUT)
                        return catalogue.n_clients == 0;
        return true;
}

static void clients_shutdown(int how)
{
        for (size_t i = 0; i < n_slots; i++)
                if (clients[i].fd >= 0)
                        shutdown(clients[i].fd, how);
}

/*
 * The stop: no client reads another request (requests in flight finish and
 * answer); a client that does not take its answer within STOP_GRACE_MS is
 * cut off, both ways, and what waits on a descriptor it passed (cat into a
 * pipe nobody reads) gives up at once (stop_efd).  What is left then waits
 * only for the disk.
 */
#define STOP_GRACE_MS 3000
void clients_stop(void)
{
        uint64_t one = 1;

        if (write(stop_efd, &one, sizeof(one)) < 0)
                dlog(LOG_WARN_, "Cannot wake the clients: %s", strerror(errno));
        pthread_mutex_lock(&clients_lock);
        clients_shutdown(SHUT_RD);
        if (!clients_wait(STOP_GRACE_MS)) {
                dlog(LOG_INFO_, "%u client(s) did not take their answers in %d s: cutting them off",
                     catalogue.n_clients, STOP_GRACE_MS / 1000);
                clients_shutdown(SHUT_RDWR);
                while (catalogue.n_clients > 0)
                        pthread_cond_wait(&clients_gone, &clients_lock);
        }
        pthread_mutex_unlock(&clients_lock);
        free(clients);
        clients = NULL;
        n_slots = 0;
}
