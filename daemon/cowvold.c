/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvold: the daemon that owns volumes and their snapshots.
 *
 * Start: read the config, open the catalogue in the state folder, open
 * every volume with its snapshots and resume interrupted restores; then
 * listen on the control socket (or take it from systemd, LISTEN_FDS) and
 * tell systemd it is ready.  Each client gets a thread.  SIGTERM/SIGINT:
 * stop accepting, let requests in flight finish, stop restores between
 * steps (they resume at the next start), flush every volume, exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

struct daemon D = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .changed = PTHREAD_COND_INITIALIZER,
};

#define MAX_CLIENTS 1024
/* The client table has a lock of its own: accepting a client must not wait
 * for D.lock, which a snapshot holds through its stores' flushes. */
static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t clients_gone = PTHREAD_COND_INITIALIZER;
static int client_fds[MAX_CLIENTS];

void dlog(int prio, const char *fmt, ...)
{
        va_list ap;

        /* "<N>" lets journald keep the priority of each line */
        fprintf(stderr, "<%d>", prio);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

int dlog_errno(int r, const char *fmt, ...)
{
        va_list ap;
        int saved = errno;

        errno = r < 0 ? -r : r;
        fprintf(stderr, "<%d>", LOG_ERR_);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        errno = saved;
        return r;
}

int write_all(int fd, const void *buf, size_t n)
{
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

static void lib_log(int level, const char *msg, void *ud)
{
        (void)ud;
        if (level == COWVOL_LOG_ERROR)
                kvol_note_error(msg); /* the reason a client is told */
        dlog(level == COWVOL_LOG_ERROR ? LOG_ERR_ : level == COWVOL_LOG_WARNING ? LOG_WARN_ : LOG_INFO_, "%s", msg);
}

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void help(void)
{
        printf("Usage: cowvold [OPTIONS]\n"
               "\n"
               "The cowvol daemon: owns volumes and their copy-on-write snapshots and\n"
               "serves the cowvol command over a Unix socket.\n"
               "\n"
               "  -s, --state-dir DIR   catalogue, volumes and stores (default /var/lib/cowvol)\n"
               "  -S, --socket PATH     control socket (default /run/cowvol/cowvold.sock)\n"
               "  -N, --nbd-socket PATH NBD socket serving every volume and snapshot\n"
               "                        (default: nbd.sock beside the control socket)\n"
               "  -T, --nbd-tcp[=ADDR]  serve NBD on TCP too: HOST, HOST:PORT, [IPV6]:PORT\n"
               "                        or PORT (no ADDR: 127.0.0.1:10809).  Off by default:\n"
               "                        whoever reaches the address may use every volume\n"
               "  -R, --nbd-read-only=WHAT  export 'snapshots' or 'all' read-only over NBD\n"
               "                        (default: no, every export is writable)\n"
               "  -c, --config FILE     settings (default /etc/cowvol/cowvold.conf if present)\n"
               "  -f, --foreground      stay in the foreground (it always does; for systemd)\n"
               "  -h, --help            show this help\n"
               "  -V, --version         show the version\n"
               "\n"
               "Settings in the config file, one 'key = value' a line:\n"
               "  group = cowvol                   who may use volumes beside root\n"
               "  autoextend_threshold = 70        grow a store when its use passes this %%\n"
               "  autoextend_percent = 20          by this %% of its size (threshold 100: never)\n"
               "  state_dir = /var/lib/cowvol\n"
               "  socket = /run/cowvol/cowvold.sock\n"
               "  nbd_socket = /run/cowvol/nbd.sock\n"
               "  nbd_tcp = no                     yes (loopback), or an address as --nbd-tcp\n"
               "  nbd_read_only = no               snapshots, all\n"
               "  nbd_handshake_timeout = 30       seconds an NBD client may take to choose\n"
               "                                   an export\n");
}

static char *trim(char *s)
{
        char *e;

        while (*s == ' ' || *s == '\t')
                s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
                *--e = '\0';
        return s;
}

static int parse_uint(const char *file, unsigned line, const char *key, const char *val, unsigned lo,
                         unsigned hi, unsigned *ret)
{
        char *end;
        unsigned long v = strtoul(val, &end, 10);

        if (!*val || *end || v < lo || v > hi) {
                fprintf(stderr, "cowvold: %s:%u: %s must be a whole number from %u to %u, not '%s'\n", file, line,
                        key, lo, hi, val);
                return -EINVAL;
        }
        *ret = (unsigned)v;
        return 0;
}

static bool group_named; /* the config names a group: it must exist */

/* key = value lines; '#' starts a comment.  Unknown keys are errors. */
static int config_load(const char *file, bool must_exist, char **ret_state, char **ret_socket,
                       char **ret_nbd_socket)
{
        FILE *f = fopen(file, "re");
        char buf[1024];
        unsigned line = 0;
        int r = 0;

        if (!f) {
                if (errno == ENOENT && !must_exist)
                        return 0;
                fprintf(stderr, "cowvold: cannot read %s: %s\n", file, strerror(errno));
                return -errno;
        }
        while (r == 0 && fgets(buf, sizeof(buf), f)) {
                char *k, *v, *eq, *hash;
                line++;
                if ((hash = strchr(buf, '#')))
                        *hash = '\0';
                k = trim(buf);
                if (!*k)
                        continue;
                eq = strchr(k, '=');
                if (!eq) {
                        fprintf(stderr, "cowvold: %s:%u: expected 'key = value'\n", file, line);
                        r = -EINVAL;
                        break;
                }
                *eq = '\0';
                v = trim(eq + 1);
                k = trim(k);
                if (strcmp(k, "group") == 0) {
                        free(D.cfg.group);
                        D.cfg.group = strdup(v);
                        group_named = true;
                } else if (strcmp(k, "autoextend_threshold") == 0)
                        r = parse_uint(file, line, k, v, 50, 100, &D.cfg.autoextend_threshold);
                else if (strcmp(k, "autoextend_percent") == 0)
                        r = parse_uint(file, line, k, v, 1, 1000, &D.cfg.autoextend_percent);
                else if (strcmp(k, "nbd_handshake_timeout") == 0)
                        r = parse_uint(file, line, k, v, 1, 3600, &D.cfg.nbd_handshake_timeout);
                else if (strcmp(k, "state_dir") == 0) {
                        free(*ret_state);
                        *ret_state = strdup(v);
                } else if (strcmp(k, "socket") == 0) {
                        free(*ret_socket);
                        *ret_socket = strdup(v);
                } else if (strcmp(k, "nbd_socket") == 0) {
                        free(*ret_nbd_socket);
                        *ret_nbd_socket = strdup(v);
                } else if (strcmp(k, "nbd_tcp") == 0) {
                        free(D.cfg.nbd_tcp);
                        if (nbd_tcp_parse(v, &D.cfg.nbd_tcp, &D.cfg.nbd_tcp_port) < 0) {
                                fprintf(stderr,
                                        "cowvold: %s:%u: nbd_tcp must be no, yes, HOST, HOST:PORT, [IPV6], [IPV6]:PORT "
                                        "or PORT, not '%s'\n",
                                        file, line, v);
                                r = -EINVAL;
                        }
                } else if (strcmp(k, "nbd_read_only") == 0) {
                        int ro = nbd_read_only_parse(v);
                        if (ro < 0) {
                                fprintf(stderr, "cowvold: %s:%u: nbd_read_only must be no, snapshots or all, not '%s'\n",
                                        file, line, v);
                                r = -EINVAL;
                        } else
                                D.cfg.nbd_read_only = ro;
                } else {
                        fprintf(stderr, "cowvold: %s:%u: unknown setting '%s'\n", file, line, k);
                        r = -EINVAL;
                }
        }
        fclose(f);
        return r;
}

static int mkdir_p(const char *path, mode_t mode)
{
        char buf[4096];

        if (strlen(path) >= sizeof(buf))
                return -ENAMETOOLONG;
        strcpy(buf, path);
        for (char *p = buf + 1; *p; p++)
                if (*p == '/') {
                        *p = '\0';
                        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        *p = '/';
                }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int listen_socket(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char dir[sizeof(sa.sun_path)];
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
        if (chmod(path, 0660) < 0 || (D.cfg.have_gid && chown(path, 0, D.cfg.gid) < 0 && geteuid() == 0))
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
        __atomic_sub_fetch(&D.clients, 1, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&clients_gone);
        pthread_mutex_unlock(&clients_lock);
}

static void *session_start(void *arg)
{
        return session_main(arg);
}

/* Accept one client on @lfd and give it a thread running @fn. */
static void accept_client(int lfd, void *(*fn)(void *))
{
        int cfd, r;
        pthread_t t;
        pthread_attr_t attr;

        cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
                /* transient: a client gone before accept, fds short */
                if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN)
                        dlog(LOG_WARN_, "accept: %s", strerror(errno));
                if (errno == EMFILE || errno == ENFILE)
                        usleep(100000);
                return;
        }
        pthread_mutex_lock(&clients_lock);
        if (D.clients >= MAX_CLIENTS) {
                pthread_mutex_unlock(&clients_lock);
                dlog(LOG_WARN_, "Too many clients (%d); closing a new one", MAX_CLIENTS);
                close(cfd);
                return;
        }
        clients_add(cfd);
        __atomic_add_fetch(&D.clients, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&clients_lock);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&t, &attr, fn, (void *)(intptr_t)cfd);
        pthread_attr_destroy(&attr);
        if (r) {
                dlog(LOG_WARN_, "Cannot start a client thread: %s", strerror(r));
                client_done(cfd);
        }
}

/* @nfd, @tfd: the NBD sockets (Unix, TCP), or -1 (poll skips them) */
static int serve(int lfd, int sfd, int nfd, int tfd)
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
                        if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                                dlog(LOG_INFO_, "Received %s, stopping", strsignal((int)si.ssi_signo));
                        return 0;
                }
                if (pf[0].revents & POLLIN)
                        accept_client(lfd, session_start);
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

/* The NBD socket's path: --nbd-socket, nbd_socket =, else nbd.sock beside
 * the control socket; made absolute, since it goes into URIs. */
static char *nbd_socket_default(const char *arg, const char *conf)
{
        const char *p = arg ? arg : conf;
        char *out = NULL, cwd[4096];

        if (!p) {
                const char *slash = strrchr(D.cfg.socket_path, '/');
                if (asprintf(&out, "%.*s%snbd.sock", slash ? (int)(slash - D.cfg.socket_path) : 0,
                             D.cfg.socket_path, slash ? "/" : "") < 0)
                        return NULL;
        } else if (!(out = strdup(p)))
                return NULL;
        if (out[0] != '/' && getcwd(cwd, sizeof(cwd))) {
                char *abs;
                if (asprintf(&abs, "%s/%s", cwd, out) < 0)
                        abs = NULL;
                free(out);
                out = abs;
        }
        return out;
}

static int start_volumes(void)
{
        int failed = 0;

        for (struct vol *v = D.vols; v; v = v->next) {
                if (v->kernel) {
                        /* tables vanish at reboot: rebuilt from the catalogue */
                        if (kvol_activate(v) < 0)
                                failed++;
                        continue;
                }
                if (vol_activate(v) < 0) {
                        failed++;
                        continue;
                }
                if (v->restoring) {
                        int r = restore_start(v);
                        if (r < 0)
                                dlog_errno(r, "Volume %s: cannot resume the restore from %s: %m", v->name,
                                           v->restoring->name);
                        else
                                dlog(LOG_INFO_, "Volume %s: resuming the restore from %s (%llu chunks left)",
                                     v->name, v->restoring->name, (unsigned long long)v->restore_left);
                }
        }
        return failed;
}

int main(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "state-dir", required_argument, NULL, 's' },
                { "socket", required_argument, NULL, 'S' },
                { "nbd-socket", required_argument, NULL, 'N' },
                { "nbd-tcp", optional_argument, NULL, 'T' },
                { "nbd-read-only", required_argument, NULL, 'R' },
                { "config", required_argument, NULL, 'c' },
                { "foreground", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        char *state = NULL, *sock = NULL, *nbd_sock = NULL, *arg_state = NULL, *arg_sock = NULL,
             *arg_nbd_sock = NULL;
        const char *config = NULL, *arg_tcp = NULL, *arg_ro = NULL;
        char **fdnames = NULL;
        bool activated, nbd_activated = false;
        sigset_t mask;
        int c, lfd, sfd, nfd, tfd = -1, n, r;
        char path[4096];

        while ((c = getopt_long(argc, argv, "s:S:N:T::R:c:fhV", longopts, NULL)) >= 0) {
                switch (c) {
                case 's': arg_state = optarg; break;
                case 'S': arg_sock = optarg; break;
                case 'N': arg_nbd_sock = optarg; break;
                case 'T': arg_tcp = optarg ? optarg : "yes"; break;
                case 'R': arg_ro = optarg; break;
                case 'c': config = optarg; break;
                case 'f': D.cfg.foreground = true; break;
                case 'h': help(); return EXIT_SUCCESS;
                case 'V': printf("cowvold %s\n", cowvol_version()); return EXIT_SUCCESS;
                default: fprintf(stderr, "Try 'cowvold --help'.\n"); return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "cowvold: unexpected argument '%s'\nTry 'cowvold --help'.\n", argv[optind]);
                return 2;
        }
        for (int i = 0; i < MAX_CLIENTS; i++)
                client_fds[i] = -1;
        D.cfg.autoextend_threshold = 70;
        D.cfg.autoextend_percent = 20;
        D.cfg.nbd_handshake_timeout = 30;
        D.cfg.group = strdup("cowvol");
        r = config_load(config ? config : "/etc/cowvol/cowvold.conf", config != NULL, &state, &sock, &nbd_sock);
        if (r < 0)
                return EXIT_FAILURE;
        if (arg_tcp) {
                free(D.cfg.nbd_tcp);
                if (nbd_tcp_parse(arg_tcp, &D.cfg.nbd_tcp, &D.cfg.nbd_tcp_port) < 0) {
                        fprintf(stderr, "cowvold: --nbd-tcp wants HOST, HOST:PORT, [IPV6], [IPV6]:PORT, PORT or no, not '%s'\n",
                                arg_tcp);
                        return 2;
                }
        }
        if (arg_ro) {
                int ro = nbd_read_only_parse(arg_ro);
                if (ro < 0) {
                        fprintf(stderr, "cowvold: --nbd-read-only wants no, snapshots or all, not '%s'\n", arg_ro);
                        return 2;
                }
                D.cfg.nbd_read_only = ro;
        }
        D.cfg.state_dir = arg_state ? arg_state : state ? state : "/var/lib/cowvol";
        D.cfg.socket_path = arg_sock ? arg_sock : sock ? sock : "/run/cowvol/cowvold.sock";
        if (D.cfg.group && *D.cfg.group) {
                struct group *g = getgrnam(D.cfg.group);
                if (g) {
                        D.cfg.gid = g->gr_gid;
                        D.cfg.have_gid = true;
                } else if (group_named) {
                        fprintf(stderr, "cowvold: group '%s' does not exist\n", D.cfg.group);
                        return EXIT_FAILURE;
                }
        }
        cowvol_set_log_callback(lib_log, NULL);
        setvbuf(stderr, NULL, _IOLBF, 0);

        /* the state folder: private, with its two subfolders */
        static const char *const subs[] = { "", "/volumes", "/stores" };
        for (size_t i = 0; i < 3; i++) {
                snprintf(path, sizeof(path), "%s%s", D.cfg.state_dir, subs[i]);
                r = mkdir_p(path, 0700);
                if (r < 0) {
                        fprintf(stderr, "cowvold: cannot create %s: %s\n", path, strerror(-r));
                        return EXIT_FAILURE;
                }
        }
        r = catalogue_load();
        if (r < 0) {
                fprintf(stderr, "cowvold: the catalogue in %s cannot be used; nothing was changed\n", D.cfg.state_dir);
                return EXIT_FAILURE;
        }
        (void)catalogue_sweep_stores();
        (void)catalogue_sweep_images();
        D.started = now_s();

        /* signals arrive through a descriptor, never in a thread's way */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0) {
                perror("cowvold: signalfd");
                return EXIT_FAILURE;
        }

        n = start_volumes();
        if (n)
                dlog(LOG_WARN_, "%d volume(s) could not be opened; they are listed as unavailable", n);

        /* sockets from systemd: the control socket (cowvold.socket) and
         * maybe the NBD socket (cowvold-nbd.socket, FileDescriptorName=nbd) */
        lfd = nfd = -1;
        n = sd_listen_fds_with_names(1, &fdnames);
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                bool is_nbd = fdnames && fdnames[i] && strcmp(fdnames[i], "nbd") == 0;
                if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0 || (is_nbd ? nfd : lfd) >= 0) {
                        fprintf(stderr, "cowvold: systemd passed %s; expected a listening Unix stream socket for "
                                        "control and at most one named 'nbd'\n",
                                (is_nbd ? nfd : lfd) >= 0 ? "more sockets" : "a socket of the wrong kind");
                        return EXIT_FAILURE;
                }
                fcntl(fd, F_SETFD, FD_CLOEXEC);
                *(is_nbd ? &nfd : &lfd) = fd;
        }
        strv_free(fdnames);
        if (n > 0 && lfd < 0) {
                fprintf(stderr, "cowvold: systemd passed only the NBD socket; the control socket is missing\n");
                return EXIT_FAILURE;
        }
        activated = lfd >= 0;
        if (activated) {
                /* the paths systemd chose are the paths: URIs and nbd.sock follow them */
                D.cfg.socket_path = socket_path_of(lfd);
                nbd_activated = nfd >= 0;
                D.cfg.nbd_socket_path = nbd_activated ? socket_path_of(nfd) : nbd_socket_default(arg_nbd_sock, nbd_sock);
        } else {
                D.cfg.nbd_socket_path = nbd_socket_default(arg_nbd_sock, nbd_sock);
                lfd = listen_socket(D.cfg.socket_path);
                if (lfd < 0)
                        return EXIT_FAILURE;
        }
        if (!D.cfg.socket_path || !D.cfg.nbd_socket_path) {
                fprintf(stderr, "cowvold: %s\n", activated ? "cannot tell the path of a socket systemd passed (a Unix socket with a path is needed)" : "out of memory");
                return EXIT_FAILURE;
        }
        /* NBD beside it; without it the control socket still serves */
        if (nfd < 0)
                nfd = listen_socket(D.cfg.nbd_socket_path);
        if (nfd < 0) {
                dlog(LOG_WARN_, "Not serving NBD: cannot listen on %s", D.cfg.nbd_socket_path);
                free(D.cfg.nbd_socket_path);
                D.cfg.nbd_socket_path = NULL; /* export says so */
        } else
                dlog(LOG_INFO_, "Serving NBD on %s%s", D.cfg.nbd_socket_path,
                     D.cfg.nbd_read_only == NBD_RO_ALL         ? " (every export read-only)"
                     : D.cfg.nbd_read_only == NBD_RO_SNAPSHOTS ? " (snapshots read-only)"
                                                               : "");
        /* TCP only when asked for; a wrong address is a wrong setting */
        if (D.cfg.nbd_tcp) {
                tfd = nbd_tcp_listen();
                if (tfd < 0)
                        return EXIT_FAILURE;
                dlog(LOG_INFO_, "Serving NBD on TCP %s port %u", D.cfg.nbd_tcp, D.cfg.nbd_tcp_port);
        }
        dlog(LOG_INFO_, "cowvold %s serving %s%s, state in %s", cowvol_version(),
             activated ? "the socket from systemd, " : "", D.cfg.socket_path, D.cfg.state_dir);
        sd_notifyf(0, "READY=1\nSTATUS=Serving %s", D.cfg.socket_path);

        r = monitor_start();
        if (r < 0)
                dlog_errno(r, "Cannot start the monitor of kernel snapshots: %m");
        r = serve(lfd, sfd, nfd, tfd);
        sd_notify(0, "STOPPING=1");

        /* stop: no new clients; requests in flight finish */
        close(lfd);
        if (!activated)
                unlink(D.cfg.socket_path);
        if (nfd >= 0) {
                close(nfd);
                if (!nbd_activated) /* systemd's sockets stay: RemoveOnStop= */
                        unlink(D.cfg.nbd_socket_path);
        }
        if (tfd >= 0)
                close(tfd);
        pthread_mutex_lock(&D.lock);
        D.stopping = 1;
        pthread_cond_broadcast(&D.changed);
        pthread_mutex_unlock(&D.lock);
        pthread_mutex_lock(&clients_lock);
        for (int i = 0; i < MAX_CLIENTS; i++)
                if (client_fds[i] >= 0)
                        shutdown(client_fds[i], SHUT_RD);
        while (D.clients > 0)
                pthread_cond_wait(&clients_gone, &clients_lock);
        pthread_mutex_unlock(&clients_lock);
        monitor_stop();
        pthread_mutex_lock(&D.lock);
        restore_join_all();
        for (struct vol *v = D.vols; v; v = v->next)
                vol_deactivate(v); /* flushes the image and the stores */
        catalogue_save();
        while (D.vols) {
                struct vol *x = D.vols->next;
                vol_free(D.vols);
                D.vols = x;
        }
        pthread_mutex_unlock(&D.lock);
        free(D.cfg.group);
        free(D.cfg.nbd_tcp);
        free(D.cfg.nbd_tcp_uri_host);
        if (activated)
                free((char *)D.cfg.socket_path);
        free(state);
        free(sock);
        free(nbd_sock);
        free(D.cfg.nbd_socket_path);
        close(sfd);
        dlog(LOG_INFO_, "Stopped cleanly");
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
