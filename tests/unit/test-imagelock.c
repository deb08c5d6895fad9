/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* QEMU's image locks (lib/imagelock.c): the bytes a holder takes, how a
 * second open file description of the image meets them (refused, as
 * another process would be), that closing another descriptor of the file
 * keeps them (OFD locks, not POSIX ones), and that a volume and a writable
 * store take them.  /proc/locks is not needed: F_OFD_GETLK tells. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

static char *dir, *img;

static void setup(void)
{
        int fd;

        dir = tmpdir_make();
        img = path_in(dir, "img");
        fd = open(img, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, 1 << 20), 0);
        close(fd);
}

static void teardown(void)
{
        free(img);
        tmpdir_remove(dir);
}

/* is byte @off locked by another open file description than @fd's? */
static bool held(int fd, int off)
{
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

        cr_assert_eq(fcntl(fd, F_OFD_GETLK, &fl), 0);
        return fl.l_type != F_UNLCK;
}

static int open_img(void)
{
        int fd = open(img, O_RDWR | O_CLOEXEC);

        cr_assert_geq(fd, 0);
        return fd;
}

TestSuite(imagelock, .init = setup, .fini = teardown);

Test(imagelock, qemus_bytes)
{
        int a = open_img(), b = open_img();

        cr_assert_eq(cowvol_image_lock(a, NULL, 0), 0);
        /* used: consistent read, write, resize; not shared: write, resize */
        cr_expect(held(b, 100) && held(b, 101) && !held(b, 102) && held(b, 103));
        cr_expect(!held(b, 200) && held(b, 201) && !held(b, 202) && held(b, 203));
        cowvol_image_unlock(a);
        for (int off = 100; off < 204; off++)
                cr_expect(!held(b, off), "byte %d still locked", off);
        close(a);
        close(b);
}

Test(imagelock, second_description_refused)
{
        int a = open_img(), b = open_img(), c = open_img();
        char why[256];

        cr_assert_eq(cowvol_image_lock(a, NULL, 0), 0);
        cr_expect_eq(cowvol_image_lock(b, why, sizeof(why)), -EBUSY);
        cr_expect(strstr(why, "\"write\"") != NULL, "why: %s", why);
        /* the refused one let go of what it took: the holder's stand alone */
        close(b);
        cr_expect_eq(cowvol_image_lock_test(c, why, sizeof(why)), -EBUSY);
        /* another descriptor of the file closing does not drop them */
        close(c);
        c = open_img();
        cr_expect(held(c, 101), "the holder's write lock went with another descriptor");
        close(a);
        cr_expect(!held(c, 101), "the lock outlived its file description");
        cr_expect_eq(cowvol_image_lock_test(c, NULL, 0), 0);
        close(c);
}

Test(imagelock, volume_and_store_hold_them)
{
        cowvol_volume *v;
        cowvol_snapshot *sn;
        char *store = path_in(dir, "s.cow");
        int fd = open_img(), sfd;

        cr_assert_eq(cowvol_volume_open(img, 4096, &v), 0);
        cr_expect(held(fd, 101) && held(fd, 201));
        cr_assert_eq(cowvol_volume_snapshot_create(v, store, 1 << 20, &sn), 0);
        sfd = open(store, O_RDONLY | O_CLOEXEC);
        cr_assert_geq(sfd, 0);
        cr_expect(held(sfd, 101) && held(sfd, 201), "the store is not locked");
        cowvol_volume_close(v);
        cr_expect(!held(fd, 101) && !held(sfd, 101), "close left a lock behind");
        close(sfd);
        /* an image someone else holds the QEMU way is refused */
        cr_assert_eq(cowvol_image_lock(fd, NULL, 0), 0);
        cr_expect_eq(cowvol_volume_open(img, 4096, &v), -EBUSY);
        close(fd);
        free(store);
}
