/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The state folder, reached through one descriptor opened at start.  Every
 * file cowvold creates, replaces or removes under it (volumes/NAME.img,
 * stores/UUID.cow, catalogue.json and its temporary file, stray/, lock)
 * is reached relative to that descriptor, the subfolders opened with
 * O_NOFOLLOW | O_DIRECTORY and new files made with O_CREAT | O_EXCL |
 * O_NOFOLLOW: a symbolic link planted in the folder is never followed, and
 * a rename of the folder's path meanwhile changes nothing.  The path to
 * the folder is the administrator's, links and all.
 *
 * Such links could be planted, and files swapped under the daemon, by
 * whoever may write the folder: a folder that others may write (by all,
 * sticky or not, or by a group other than root's and the daemon's own) or
 * that another user owns is refused at start, before anything changes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/util.h"
#include "config.h"
#include "statedir.h"

int state_fd = -1;

static int refuse(const char *why, const struct stat *st)
{
        fprintf(stderr, "cowvold: the state folder %s %s (mode %04o): anyone who can write it could plant links "
                "and swap files under cowvold; make it the daemon's alone (chmod 0700 %s); nothing was changed\n",
                settings.state_dir, why, (unsigned)(st->st_mode & 07777), settings.state_dir);
        return -EPERM;
}

int state_open(void)
{
        struct stat st;
        int fd, r;

        r = mkdir_p(settings.state_dir, 0700);
        if (r < 0) {
                fprintf(stderr, "cowvold: cannot create %s: %s\n", settings.state_dir, strerror(-r));
                return r;
        }
        fd = open(settings.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = -errno;
                fprintf(stderr, "cowvold: cannot open the state folder %s: %s\n", settings.state_dir, strerror(-r));
                if (fd >= 0)
                        close(fd);
                return r;
        }
        r = 0;
        if (st.st_mode & S_IWOTH)
                r = refuse("is writable by every user", &st);
        else if ((st.st_mode & S_IWGRP) && st.st_gid != 0 && st.st_gid != getegid()) {
                struct group *g = getgrgid(st.st_gid);
                char why[128];

                if (g)
                        snprintf(why, sizeof(why), "is writable by the group %s", g->gr_name);
                else
                        snprintf(why, sizeof(why), "is writable by the group %u", (unsigned)st.st_gid);
                r = refuse(why, &st);
        } else if (st.st_uid != 0 && st.st_uid != geteuid())
                r = refuse("belongs to another user", &st);
        if (r < 0) {
                close(fd);
                return r;
        }
        state_fd = fd;
        return 0;
}

int state_subdir(const char *sub)
{
        int fd = openat(state_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        return fd < 0 ? -errno : fd;
}

int state_subdir_make(const char *sub)
{
        int fd;

        if (mkdirat(state_fd, sub, 0700) < 0 && errno != EEXIST)
                return -errno;
        fd = state_subdir(sub); /* a folder, not a link to one */
        if (fd < 0)
                return fd;
        close(fd);
        return 0;
}

int state_create(const char *sub, const char *name, int flags)
{
        int dfd = state_subdir(sub), fd;

        if (dfd < 0)
                return dfd;
        fd = openat(dfd, name, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                fd = -errno;
        close(dfd);
        return fd;
}

int state_remove(const char *path)
{
        size_t n = strlen(settings.state_dir);
        const char *rel = path + n, *slash;
        char sub[64];
        int dfd, r = 0;

        /* STATE_DIR/SUB/NAME: SUB opened without following a link */
        if (strncmp(path, settings.state_dir, n) != 0 || rel[0] != '/' || !(slash = strchr(rel + 1, '/')) ||
            strchr(slash + 1, '/') || (size_t)(slash - rel - 1) >= sizeof(sub) || state_fd < 0)
                return unlink(path) < 0 ? -errno : 0;
        snprintf(sub, sizeof(sub), "%.*s", (int)(slash - rel - 1), rel + 1);
        dfd = state_subdir(sub);
        if (dfd < 0)
                return dfd;
        if (unlinkat(dfd, slash + 1, 0) < 0)
                r = -errno;
        close(dfd);
        return r;
}

int state_stores_bytes(uint64_t *ret)
{
        struct dirent *e;
        uint64_t sum = 0;
        DIR *d;
        int fd = state_subdir("stores");

        if (fd < 0)
                return fd;
        if (!(d = fdopendir(fd))) {
                close(fd);
                return -errno;
        }
        while ((e = readdir(d))) {
                struct stat st;

                if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISREG(st.st_mode))
                        sum += (uint64_t)st.st_blocks * 512;
        }
        closedir(d);
        *ret = sum;
        return 0;
}
