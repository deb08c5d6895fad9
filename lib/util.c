/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small helpers: full-length I/O, sizes of files and devices, size strings. */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "internal.h"

int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = pread(fd, p, len, (off_t)off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO; /* past the end */
                p += n;
                len -= (size_t)n;
                off += (uint64_t)n;
        }
        return 0;
}

int preadv_full(int fd, struct iovec *iov, int n, uint64_t off)
{
        while (n > 0) {
                ssize_t got = preadv(fd, iov, n > IOV_MAX ? IOV_MAX : n, (off_t)off);
                if (got < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (got == 0)
                        return -EIO; /* past the end */
                off += (uint64_t)got;
                while (n > 0 && (size_t)got >= iov->iov_len) {
                        got -= (ssize_t)iov->iov_len;
                        iov++;
                        n--;
                }
                if (n > 0) {
                        iov->iov_base = (uint8_t *)iov->iov_base + got;
                        iov->iov_len -= (size_t)got;
                }
        }
        return 0;
}

ssize_t pread_cached(int fd, void *buf, size_t len, uint64_t off)
{
        size_t done = 0;

        while (done < len) {
                struct iovec iov = { (uint8_t *)buf + done, len - done };
                ssize_t n = preadv2(fd, &iov, 1, (off_t)(off + done), RWF_NOWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS)
                        return -errno;
                if (n <= 0)
                        break; /* not cached (being read now), or the kernel cannot say */
                done += (size_t)n;
        }
        return (ssize_t)done;
}

/* The hooks of the tests.  The engine writes from two threads (its group
 * commit runs on one of its own): while a hook is set, each watched call
 * runs whole under hook_lock, hook and system call together, so that the
 * order the hooks see is the order the calls took effect in, and a flush
 * covers exactly the writes seen before it.  Without hooks, nothing is
 * serialized. */
static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static sys_watch_fn sys_watch;     /* written under hook_lock */
static void *sys_watch_userdata;
static sys_fault_fn sys_fault;
static void *sys_fault_userdata;

void sys_watch_set(sys_watch_fn fn, void *userdata)
{
        pthread_mutex_lock(&hook_lock);
        __atomic_store_n(&sys_watch, fn, __ATOMIC_RELAXED);
        sys_watch_userdata = userdata;
        pthread_mutex_unlock(&hook_lock);
}

void sys_fault_set(sys_fault_fn fn, void *userdata)
{
        pthread_mutex_lock(&hook_lock);
        __atomic_store_n(&sys_fault, fn, __ATOMIC_RELAXED);
        sys_fault_userdata = userdata;
        pthread_mutex_unlock(&hook_lock);
}

/* true: hooks are set, and hook_lock is held until hook_leave() */
static bool hook_enter(void)
{
        if (!__atomic_load_n(&sys_watch, __ATOMIC_RELAXED) && !__atomic_load_n(&sys_fault, __ATOMIC_RELAXED))
                return false;
        pthread_mutex_lock(&hook_lock);
        return true;
}

static void hook_leave(bool held)
{
        if (held)
                pthread_mutex_unlock(&hook_lock);
}

#define HOOKED(call)                             \
        do {                                     \
                bool held_ = hook_enter();       \
                int r_ = (call);                 \
                hook_leave(held_);               \
                return r_;                       \
        } while (0)

/* the hooks are read under hook_lock (hook_enter() took it when set) */
static int fault(int fd, enum sys_op op, uint64_t len, uint64_t off)
{
        sys_fault_fn fn = __atomic_load_n(&sys_fault, __ATOMIC_RELAXED);

        return fn ? fn(fd, op, len, off, sys_fault_userdata) : 0;
}

static void watch(int fd, enum sys_op op, const void *buf, uint64_t len, uint64_t off)
{
        sys_watch_fn fn = __atomic_load_n(&sys_watch, __ATOMIC_RELAXED);

        if (fn)
                fn(fd, op, buf, len, off, sys_watch_userdata);
}

static int pwrite_full_unhooked(int fd, const void *buf, size_t len, uint64_t off)
{
        const uint8_t *p = buf;
        int r = fault(fd, SYS_WRITE, len, off);

        if (r < 0)
                return r;
        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, (off_t)off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -ENOSPC;
                watch(fd, SYS_WRITE, p, (uint64_t)n, off);
                p += n;
                len -= (size_t)n;
                off += (uint64_t)n;
        }
        return 0;
}

int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
        HOOKED(pwrite_full_unhooked(fd, buf, len, off));
}

static int pwritev_full_unhooked(int fd, const struct iovec *iov_in, int n, uint64_t off)
{
        struct iovec iov[IOV_MAX];
        uint64_t len = 0;
        int j = 0, r;

        if (n < 0 || n > IOV_MAX)
                return -EINVAL;
        for (int i = 0; i < n; i++)
                len += iov_in[i].iov_len;
        if ((r = fault(fd, SYS_WRITE, len, off)) < 0)
                return r;
        memcpy(iov, iov_in, (size_t)n * sizeof(*iov));
        while (j < n) {
                ssize_t w = pwritev(fd, iov + j, n - j, (off_t)off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return -errno;
                if (w == 0)
                        return -ENOSPC;
                /* step over the buffers written whole; trim a partial one */
                while (j < n && w > 0) {
                        size_t take = (size_t)w < iov[j].iov_len ? (size_t)w : iov[j].iov_len;

                        watch(fd, SYS_WRITE, iov[j].iov_base, take, off);
                        off += take;
                        w -= (ssize_t)take;
                        iov[j].iov_base = (uint8_t *)iov[j].iov_base + take;
                        iov[j].iov_len -= take;
                        if (!iov[j].iov_len)
                                j++;
                }
        }
        return 0;
}

int pwritev_full(int fd, const struct iovec *iov_in, int n, uint64_t off)
{
        HOOKED(pwritev_full_unhooked(fd, iov_in, n, off));
}

static int sys_fdatasync_unhooked(int fd)
{
        int r = fault(fd, SYS_SYNC, 0, 0);

        if (r < 0)
                return r;
        if (fdatasync(fd) < 0)
                return -errno;
        watch(fd, SYS_SYNC, NULL, 0, 0);
        return 0;
}

int sys_fdatasync(int fd)
{
        HOOKED(sys_fdatasync_unhooked(fd));
}

static int sys_fallocate_unhooked(int fd, int mode, uint64_t off, uint64_t len)
{
        int r = fault(fd, (mode & FALLOC_FL_PUNCH_HOLE) ? SYS_PUNCH : SYS_ALLOCATE, len, off);

        if (r < 0)
                return r;
        if (fallocate(fd, mode, (off_t)off, (off_t)len) < 0)
                return -errno;
        /* an allocation within the size changes nothing a reader sees */
        if (mode & FALLOC_FL_PUNCH_HOLE)
                watch(fd, SYS_PUNCH, NULL, len, off);
        else if (!(mode & FALLOC_FL_KEEP_SIZE))
                watch(fd, SYS_ALLOCATE, NULL, len, off);
        return 0;
}

int sys_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
        HOOKED(sys_fallocate_unhooked(fd, mode, off, len));
}

static int sys_ftruncate_unhooked(int fd, uint64_t size)
{
        int r = fault(fd, SYS_TRUNCATE, size, 0);

        if (r < 0)
                return r;
        if (ftruncate(fd, (off_t)size) < 0)
                return -errno;
        watch(fd, SYS_TRUNCATE, NULL, size, 0);
        return 0;
}

int sys_ftruncate(int fd, uint64_t size)
{
        HOOKED(sys_ftruncate_unhooked(fd, size));
}

int fd_size(int fd, uint64_t *ret)
{
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode)) {
                uint64_t sz;
                if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
                        return -errno;
                *ret = sz;
                return 0;
        }
        if (!S_ISREG(st.st_mode))
                return -ENOTBLK;
        *ret = (uint64_t)st.st_size;
        return 0;
}

bool mem_is_zero(const void *buf, size_t len)
{
        const uint8_t *p = buf;

        /* compare the buffer with itself shifted by one byte */
        if (len == 0)
                return true;
        return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

_public_ int cowvol_parse_size(const char *s, uint64_t *ret_bytes)
{
        const char *p = s;
        uint64_t v = 0;
        unsigned shift = 0;

        if (!s || !isdigit((unsigned char)*p))
                return -EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
                unsigned d = (unsigned)(*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        switch (toupper((unsigned char)*p)) {
        case '\0':
                break;
        case 'K': shift = 10; p++; break;
        case 'M': shift = 20; p++; break;
        case 'G': shift = 30; p++; break;
        case 'T': shift = 40; p++; break;
        case 'B':
                p++;
                break;
        default:
                return -EINVAL;
        }
        if (shift && *p) {
                /* "KiB", "KB", "K" */
                if (strcmp(p, "iB") == 0 || strcmp(p, "ib") == 0 || strcmp(p, "B") == 0)
                        p += strlen(p);
        }
        if (*p)
                return -EINVAL;
        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;
        *ret_bytes = v << shift;
        return 0;
}

_public_ const char *cowvol_format_size(uint64_t bytes, char *buf, size_t len)
{
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        unsigned u = 0;
        double v = (double)bytes;

        while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024.0;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%" PRIu64 " B", bytes);
        else
                snprintf(buf, len, "%.1f %s", v, units[u]);
        return buf;
}

int fd_range_is_hole(int fd, uint64_t off, uint64_t len)
{
        off_t d = lseek(fd, (off_t)off, SEEK_DATA);

        if (d < 0)
                return errno == ENXIO; /* ENXIO: no data after off at all */
        return (uint64_t)d >= off + len;
}
