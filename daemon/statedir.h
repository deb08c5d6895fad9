/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The state folder, through the descriptor opened at start (statedir.c). */
#ifndef COWVOLD_STATEDIR_H
#define COWVOLD_STATEDIR_H

#include <stdint.h>
#include <sys/types.h>

/* settings.state_dir, opened at start (state_open); -1 before */
extern int state_fd;

/* Open settings.state_dir (made first, 0700, if it is missing) and refuse
 * one that others may write or that someone else owns: 0, or -errno with
 * one line on stderr.  Changes nothing but a missing folder. */
int state_open(void);
/* STATE_DIR/@sub (a folder, never a link to one), opened; -errno */
int state_subdir(const char *sub);
/* STATE_DIR/@sub (mkdir, 0700) when it is missing; 0 or -errno */
int state_subdir_make(const char *sub);
/* a new file STATE_DIR/@sub/@name (0600): never an existing file or link;
 * the descriptor (@flags: O_RDWR or O_WRONLY and more), or -errno */
int state_create(const char *sub, const char *name, int flags);
/* Remove @path: through the folder's descriptor when it names a file of
 * STATE_DIR/SUB/ (the link itself, never what a link names); 0 or -errno */
int state_remove(const char *path);
/* The bytes STATE_DIR/stores/'s files take on disk (allocated blocks);
 * without the catalogue's lock: a store made or removed meanwhile may
 * count or not.  0 or -errno */
int state_stores_bytes(uint64_t *ret);

#endif
