/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Listeners and the client table: the control socket (made here, or
 * passed by systemd: LISTEN_FDS) and the NBD sockets, each accepted client
 * a thread of its own; at stop, every client is shut down and waited for.
 * Transient accept() errors are not fatal (a client gone before accept,
 * descriptors short).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon.h"

#define MAX_CLIENTS 1024
/* The client table has a lock of its own (catalogue.h: lock 2): accepting
 * a client must not wait for the catalogue's, which a snapshot holds
 * through its stores' flushes. */
static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t clients_gone = PTHREAD_COND_INITIALIZER;
static int client_fds[MAX_CLIENTS] = { [0 ... MAX_CLIENTS - 1] = -1 };

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

static void clients_add(int fd)
{
        for (int i = 0; i < MAX_CLIENTS; i++)
                if (client_fds[i] < 0) {
                        client_fds[i] = fd;
                        return;
                }
}

/* clients_lock held */
static void clients_forget(int fd)
{
        for (int i = 0; i < MAX_CLIENTS; i++)
                if (client_fds[i] == fd)
                        client_fds[i] = -1;
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

/* the listening thread's flood-prone lines */
static struct log_limit accept_log = LOG_LIMIT_INIT, full_log = LOG_LIMIT_INIT, thread_log = LOG_LIMIT_INIT;

/* Accept one client on @lfd and give it a thread running @fn. */
static void accept_client(int lfd, void *(*fn)(void *))
{
        char note[64];
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
        pthread_mutex_lock(&clients_lock);
        if (catalogue.n_clients >= MAX_CLIENTS) {
                pthread_mutex_unlock(&clients_lock);
                if (log_allowed(&full_log, note, sizeof(note)))
                        dlog(LOG_WARN_, "Too many clients (%d); closing a new one%s", MAX_CLIENTS, note);
                close(cfd);
                return;
        }
        clients_add(cfd);
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
                        accept_client(lfd, session_main);
                if (pf[2].revents & POLLIN)
                        accept_client(nfd, nbd_session_main);
                if (pf[3].revents & POLLIN)
                        accept_client(tfd, nbd_session_main);
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

void clients_stop(void)
{
        pthread_mutex_lock(&clients_lock);
        for (int i = 0; i < MAX_CLIENTS; i++)
                if (client_fds[i] >= 0)
                        shutdown(client_fds[i], SHUT_RD);
        while (catalogue.n_clients > 0)
                pthread_cond_wait(&clients_gone, &clients_lock);
        pthread_mutex_unlock(&clients_lock);
}
