/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Loop devices: a store file becomes a block device that a device-mapper
 * table can name.  Attached with autoclear, so the loop device goes away by
 * itself once its last user (the -cow layer) lets go of it: nothing to
 * forget after a crash.  The attaching descriptor must stay open until the
 * table holds the device, hence cvloop_attach returns it.  An existing loop
 * device is reused only when it maps the whole file, writable (one page
 * cache per file: two loop devices over a store would not see each other's
 * writes).
 */
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "internal.h"

int cvloop_attach(const char *file, char *ret_dev, size_t len)
{
        int ctl, ffd, lfd = -1, r = 0;

        ffd = open(file, O_RDWR | O_CLOEXEC);
        if (ffd < 0)
                return log_err(-errno, "Cannot open %s: %m", file);
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0) {
                r = log_err(-errno, "Cannot open /dev/loop-control (is the loop module loaded?): %m");
                close(ffd);
                return r;
        }
        /* another process may take the free device first: try again */
        for (int tries = 0; tries < 16; tries++) {
                struct loop_config cfg;
                int n = ioctl(ctl, LOOP_CTL_GET_FREE);

                if (n < 0) {
                        r = log_err(-errno, "No free loop device: %m");
                        break;
                }
                snprintf(ret_dev, len, "/dev/loop%d", n);
                lfd = open(ret_dev, O_RDWR | O_CLOEXEC);
                if (lfd < 0) {
                        r = log_err(-errno, "Cannot open %s: %m", ret_dev);
                        break;
                }
                memset(&cfg, 0, sizeof(cfg));
                cfg.fd = (uint32_t)ffd;
                cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
                snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", file);
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
                        r = 0;
                        break;
                }
                r = -errno;
                if (r == -EINVAL || r == -ENOTTY) {
                        /* before Linux 5.8: two steps */
                        struct loop_info64 info;
                        memset(&info, 0, sizeof(info));
                        info.lo_flags = LO_FLAGS_AUTOCLEAR;
                        snprintf((char *)info.lo_file_name, sizeof(info.lo_file_name), "%s", file);
                        if (ioctl(lfd, LOOP_SET_FD, ffd) == 0) {
                                if (ioctl(lfd, LOOP_SET_STATUS64, &info) == 0) {
                                        r = 0;
                                        break;
                                }
                                r = -errno;
                                ioctl(lfd, LOOP_CLR_FD, 0);
                        } else
                                r = -errno;
                }
                close(lfd);
                lfd = -1;
                if (r != -EBUSY) {
                        r = log_err(r, "Cannot attach %s to a loop device: %m", file);
                        break;
                }
        }
        if (r == -EBUSY)
                r = log_err(-EBUSY, "Cannot attach %s: every free loop device was taken first", file);
        close(ctl);
        close(ffd);
        if (r < 0) {
                if (lfd >= 0)
                        close(lfd);
                return r;
        }
        return lfd;
}

int cvloop_find(const char *file, char *ret_dev, size_t len)
{
        struct stat st;
        DIR *d;
        struct dirent *e;
        int r = -ENOENT;

        if (stat(file, &st) < 0)
                return -errno;
        d = opendir("/sys/block");
        if (!d)
                return -errno;
        while ((e = readdir(d))) {
                struct loop_info64 info;
                char dev[300];
                int fd;

                if (strncmp(e->d_name, "loop", 4) != 0)
                        continue;
                snprintf(dev, sizeof(dev), "/dev/%s", e->d_name);
                fd = open(dev, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                /* the whole file, writable: else it is no store's device
                 * (zeroed first: valgrind does not know this ioctl fills it) */
                memset(&info, 0, sizeof(info));
                if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && info.lo_inode == st.st_ino &&
                    info.lo_device == st.st_dev && info.lo_offset == 0 && info.lo_sizelimit == 0 &&
                    !(info.lo_flags & LO_FLAGS_READ_ONLY)) {
                        snprintf(ret_dev, len, "%s", dev);
                        r = 0;
                }
                close(fd);
                if (r == 0)
                        break;
        }
        closedir(d);
        return r;
}

int cvloop_refresh_size(const char *dev)
{
        int fd = open(dev, O_RDONLY | O_CLOEXEC), r = 0;

        if (fd < 0)
                return log_err(-errno, "Cannot open %s: %m", dev);
        if (ioctl(fd, LOOP_SET_CAPACITY, 0) < 0)
                r = log_err(-errno, "Cannot make %s see its file's new size: %m", dev);
        close(fd);
        return r;
}

int cvdev_size(const char *dev, uint64_t *ret_bytes)
{
        int fd = open(dev, O_RDONLY | O_CLOEXEC), r = 0;
        struct stat st;

        if (fd < 0)
                return log_err(-errno, "Cannot open %s: %m", dev);
        if (fstat(fd, &st) < 0)
                r = -errno;
        else if (S_ISBLK(st.st_mode)) {
                off_t end = lseek(fd, 0, SEEK_END);
                if (end < 0)
                        r = -errno;
                else
                        *ret_bytes = (uint64_t)end;
        } else if (S_ISREG(st.st_mode))
                *ret_bytes = (uint64_t)st.st_size;
        else
                r = log_err(-ENOTBLK, "%s is neither a block device nor a file", dev);
        close(fd);
        return r;
}
