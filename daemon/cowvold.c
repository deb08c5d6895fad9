/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvold: the daemon that owns volumes and their snapshots.  main() only
 * starts things, in this order, and stops them in the reverse:
 *
 *   settings (config.c) -> the state folder (statedir.c: refused when others
 *   may write it), locked, and the catalogue (catalogue.c)
 *   -> signals through a descriptor -> every volume through its engine
 *   (engine.h; restores resume) -> listeners (listen.c: systemd's sockets
 *   or our own) -> sd_notify READY -> the monitor (monitor.c) -> serve.
 *
 * SIGTERM/SIGINT: stop accepting, let requests in flight finish, stop
 * restores between steps (they resume at the next start), flush every
 * volume, save the catalogue, exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "daemon.h"

/* the state folder's two subfolders, once the folder is ours: made
 * relative to its descriptor, and never links */
static int state_dir_make(void)
{
        static const char *const subs[] = { "volumes", "stores" };
        int r;

        for (size_t i = 0; i < 2; i++) {
                r = state_subdir_make(subs[i]);
                if (r < 0) {
                        fprintf(stderr, "cowvold: cannot make %s/%s a folder of the state folder's own: %s\n",
                                settings.state_dir, subs[i], strerror(-r));
                        return r;
                }
        }
        return 0;
}

/*
 * One daemon per state folder: DIR/lock, held (flock) for the daemon's life
 * and released by the kernel however it ends, names the holder's PID.  A
 * second cowvold on the folder, whatever its socket, stops here, before it
 * reads or changes anything.  The descriptor stays open until exit.
 */
static int state_dir_lock(void)
{
        char path[4096], pid[32];
        ssize_t n = 0;
        int fd;

        snprintf(path, sizeof(path), "%s/lock", settings.state_dir);
        fd = openat(state_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                int e = errno;

                fprintf(stderr, "cowvold: cannot open %s: %s\n", path, strerror(e));
                return -e;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int e = errno;

                /* the holder writes its PID just after it locks: give it a moment */
                for (int i = 0; e == EWOULDBLOCK && i < 20; i++) {
                        n = pread(fd, pid, sizeof(pid) - 1, 0);
                        if (n > 0)
                                break;
                        usleep(10000);
                }
                pid[n > 0 ? n : 0] = '\0';
                pid[strcspn(pid, "\n")] = '\0';
                if (e == EWOULDBLOCK)
                        fprintf(stderr, "cowvold: the state folder %s is in use by cowvold (PID %s); "
                                "nothing was changed\n", settings.state_dir, *pid ? pid : "unknown");
                else
                        fprintf(stderr, "cowvold: cannot lock %s: %s\n", path, strerror(e));
                close(fd);
                return -e;
        }
        /* the lock is on the file the path names now, not on one that was
         * removed meanwhile (a second daemon would lock the new one) */
        {
                struct stat a, b;

                if (fstat(fd, &a) < 0 || fstatat(state_fd, "lock", &b, AT_SYMLINK_NOFOLLOW) < 0 ||
                    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
                        close(fd);
                        fprintf(stderr, "cowvold: %s changed while it was being locked; start again\n", path);
                        return -EAGAIN;
                }
        }
        n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
                fprintf(stderr, "cowvold: cannot write %s: %m\n", path);
                close(fd);
                return -EIO;
        }
        return fd;
}

/* every volume through its engine: tables vanish at reboot and are rebuilt
 * from the catalogue; restores resume; how many could not be opened */
static int volumes_start(void)
{
        int failed = 0;

        /* a resumed restore's thread may save the catalogue at once */
        pthread_mutex_lock(&catalogue.lock);
        for (struct vol *v = catalogue.vols; v; v = v->next)
                if (v->ops->activate(v) < 0)
                        failed++;
        pthread_mutex_unlock(&catalogue.lock);
        return failed;
}

static void volumes_stop(void)
{
        pthread_mutex_lock(&catalogue.lock);
        engine_restore_join_all();
        for (struct vol *v = catalogue.vols; v; v = v->next)
                v->ops->deactivate(v); /* flushes the image and the stores */
        catalogue_save();
        while (catalogue.vols) {
                struct vol *x = catalogue.vols->next;
                vol_free(catalogue.vols);
                catalogue.vols = x;
        }
        pthread_mutex_unlock(&catalogue.lock);
}

/* Each open snapshot holds descriptors: take the whole hard limit (the
 * unit sets LimitNOFILE=), as systemd advises for daemons that need many;
 * nothing here uses select(), so numbers past 1024 are fine. */
static void fd_limit_raise(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
                return;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                dlog(LOG_WARN_, "Cannot raise the limit of open files to %llu: %m", (unsigned long long)rl.rlim_max);
}

/* signals arrive through a descriptor, never in a thread's way */
static int signals_open(void)
{
        sigset_t mask;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        return signalfd(-1, &mask, SFD_CLOEXEC);
}

static struct listeners l = { .control = -1, .nbd = -1, .tcp = -1 };

/* SIGHUP: the config file again; open volumes follow a new autoextend,
 * our sockets a new group */
static void reload(void)
{
        unsigned changes;

        dlog(LOG_INFO_, "Received SIGHUP, reading %s again", settings.config_file);
        if (settings_reload(&changes) < 0)
                return;
        if (changes & SETTINGS_AUTOEXTEND) {
                pthread_mutex_lock(&catalogue.lock);
                for (struct vol *v = catalogue.vols; v; v = v->next)
                        if (v->ops->settings_changed)
                                v->ops->settings_changed(v);
                pthread_mutex_unlock(&catalogue.lock);
        }
        if (changes & SETTINGS_GROUP)
                listeners_regroup(&l);
        if (!changes)
                dlog(LOG_INFO_, "Reload: nothing that can change at run time changed");
}

int main(int argc, char **argv)
{
        int sfd, n, r;

        r = settings_load(argc, argv);
        if (r >= 0)
                return r;
        cowvol_set_log_callback(dlog_library, NULL);
        setvbuf(stderr, NULL, _IOLBF, 0);
        fd_limit_raise();

        if (state_open() < 0 || state_dir_lock() < 0 || state_dir_make() < 0)
                return EXIT_FAILURE;
        if (catalogue_load(engine_all) < 0) {
                fprintf(stderr, "cowvold: the catalogue in %s cannot be used; nothing was changed\n",
                        settings.state_dir);
                return EXIT_FAILURE;
        }
        (void)catalogue_sweep_stores();
        (void)catalogue_sweep_images();
        catalogue_count_strays();
        if (catalogue.n_strays)
                dlog(LOG_WARN_, "%s/" STRAY_DIR " holds %u file(s) no volume or snapshot owns: look, then remove",
                     settings.state_dir, catalogue.n_strays);
        catalogue.started = now_monotonic();

        sfd = signals_open();
        if (sfd < 0) {
                perror("cowvold: signalfd");
                return EXIT_FAILURE;
        }
        n = volumes_start();
        if (n)
                dlog(LOG_WARN_, "%d volume(s) could not be opened; they are listed as unavailable", n);
        if (listeners_open(&l) < 0)
                return EXIT_FAILURE;
        dlog(LOG_INFO_, "cowvold %s serving %s%s, state in %s", cowvol_version(),
             l.activated ? "the socket from systemd, " : "", settings.socket_path, settings.state_dir);
        sd_notifyf(0, "READY=1\nSTATUS=Serving %s", settings.socket_path);

        r = monitor_start();
        if (r < 0)
                dlog_errno(r, "Cannot start the monitor of kernel snapshots: %m");
        r = schedule_start();
        if (r < 0)
                dlog_errno(r, "Cannot start the clock of timeline snapshots: %m");
        r = listeners_serve(&l, sfd, reload);
        sd_notify(0, "STOPPING=1");

        /* stop: no new clients; requests in flight finish */
        listeners_close(&l);
        pthread_mutex_lock(&catalogue.lock);
        catalogue.stopping = 1;
        pthread_cond_broadcast(&catalogue.changed);
        pthread_mutex_unlock(&catalogue.lock);
        clients_stop();
        schedule_stop();
        monitor_stop();
        volumes_stop();
        settings_free();
        close(sfd);
        dlog(LOG_INFO_, "Stopped cleanly");
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
