/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU's image locking, shared so that qemu-img, qemu-io, qemu-nbd and a VM
 * refuse an image (or a store) that libcowvol writes, and libcowvol refuses
 * one they hold.  The scheme is QEMU's (block/file-posix.c since QEMU 2.10),
 * learnt from its behaviour and its source, no code taken:
 *
 *  - open file description (OFD) byte-range locks, every one shared
 *    (F_RDLCK), one byte per permission: consistent read (bit 0), write
 *    (1), write unchanged (2), resize (3);
 *  - a holder locks byte 100 + bit for each permission it uses and byte
 *    200 + bit for each one it does not let others use;
 *  - a newcomer locks its own bytes first, then tests (F_OFD_GETLK for an
 *    exclusive lock, which only another description's lock blocks) that no
 *    one locks 200 + a bit it wants, or 100 + a bit it does not share.  Two
 *    that race both see each other and both give up, as QEMU's do.
 *
 * libcowvol writes what it holds and lets no one else write or resize it:
 * it uses consistent read, write and resize, and shares consistent read
 * and write unchanged, as a QEMU guest device does.  So qemu-io's writes
 * are refused ("Failed to get "write" lock"), and so is a plain qemu-img
 * info, which does not share write; qemu-img info -U and qemu-io -r -U
 * (force share) still read.
 *
 * OFD locks belong to the open file description, not to the process: they
 * last until its last descriptor closes, closing another descriptor of the
 * same file does not drop them (the flaw of POSIX locks that QEMU avoids
 * with them), and a second description of the file in the same process
 * conflicts with them as another process would.  flock() locks, which
 * libcowvol also takes (one writer among its own users), are another
 * kind: neither sees the other.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define PERM_BASE 100
#define SHARED_BASE 200

enum {
        PERM_CONSISTENT_READ = 1u << 0,
        PERM_WRITE = 1u << 1,
        PERM_WRITE_UNCHANGED = 1u << 2,
        PERM_RESIZE = 1u << 3,
        PERM_COUNT = 4,
};

/* QEMU's names, as its own messages print them */
static const char *const perm_names[PERM_COUNT] = { "consistent read", "write", "write unchanged", "resize" };

#define WE_USE (PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE)
#define WE_SHARE (PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED)

static int lock_byte(int fd, int off)
{
        struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

        return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 when another open file description holds a lock on byte @off */
static int byte_held(int fd, int off)
{
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

        if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
                return -errno;
        return fl.l_type != F_UNLCK;
}

static int test(int fd, char *why, size_t len)
{
        int r;

        for (unsigned i = 0; i < PERM_COUNT; i++) {
                if (!(WE_USE & (1u << i)))
                        continue;
                if ((r = byte_held(fd, SHARED_BASE + (int)i)) != 0) {
                        if (r > 0)
                                snprintf(why, len, "another process (qemu-img, qemu-io, qemu-nbd or a VM) has it open "
                                         "and does not share the \"%s\" permission (QEMU's image lock)", perm_names[i]);
                        return r > 0 ? -EBUSY : r;
                }
        }
        for (unsigned i = 0; i < PERM_COUNT; i++) {
                if (WE_SHARE & (1u << i))
                        continue;
                if ((r = byte_held(fd, PERM_BASE + (int)i)) != 0) {
                        if (r > 0)
                                snprintf(why, len, "another process (qemu-img, qemu-io, qemu-nbd or a VM) has it open "
                                         "with the \"%s\" permission (QEMU's image lock)", perm_names[i]);
                        return r > 0 ? -EBUSY : r;
                }
        }
        return 0;
}

/* The caller's @why, or a scratch byte when it gave none; emptied. */
#define WHY_OR_NONE(why, len, none)         \
        do {                                \
                if (!(why) || !(len)) {     \
                        (why) = (none);     \
                        (len) = sizeof(none); \
                }                           \
                (why)[0] = '\0';            \
        } while (0)

_public_ int cowvol_image_lock_test(int fd, char *why, size_t len)
{
        char none[1];

        if (fd < 0)
                return -EBADF;
        WHY_OR_NONE(why, len, none);
        return test(fd, why, len);
}

_public_ int cowvol_image_lock(int fd, char *why, size_t len)
{
        char none[1];
        int r;

        if (fd < 0)
                return -EBADF;
        WHY_OR_NONE(why, len, none);
        for (unsigned i = 0; i < PERM_COUNT; i++) {
                r = 0;
                if (WE_USE & (1u << i))
                        r = lock_byte(fd, PERM_BASE + (int)i);
                if (r == 0 && !(WE_SHARE & (1u << i)))
                        r = lock_byte(fd, SHARED_BASE + (int)i);
                if (r < 0) {
                        snprintf(why, len, "cannot take QEMU's image lock: %s", strerror(-r));
                        cowvol_image_unlock(fd);
                        return r;
                }
        }
        r = test(fd, why, len);
        if (r < 0)
                cowvol_image_unlock(fd); /* the other holder's open must not fail on ours */
        return r;
}

_public_ void cowvol_image_unlock(int fd)
{
        struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = PERM_BASE,
                            .l_len = SHARED_BASE + PERM_COUNT - PERM_BASE };

        if (fd >= 0)
                (void)fcntl(fd, F_OFD_SETLK, &fl);
}
