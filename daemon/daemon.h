/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvold's files, from the bottom up; each uses only what is below it:
 *
 *   common/util.h      write loops, the clock, mkdir -p (also cowvol's)
 *   log.c              the log
 *   tls.c              TLS credentials and sessions (the one GnuTLS wrapper)
 *   config.c           settings: fixed after start, but for a reload
 *   statedir.c         the state folder's descriptor: files made under it
 *   catalogue.c        volumes and snapshots under catalogue.lock, and the
 *                      lock order (catalogue.h)
 *   engine-userspace.c, engine-kernel.c
 *                      the two implementations of struct engine_ops (engine.h)
 *   request.c          requests parsed and checked, changing nothing
 *   monitor.c          a thread: fill levels, growth, merges, retries
 *   handlers.c         each request acted on, through the engine
 *   session.c          a control client's thread: lines in, answers out
 *   nbd-io.c, nbd-handshake.c, nbd-transmit.c, nbd-listen.c
 *                      an NBD client's thread: its transport (plain or
 *                      TLS), negotiation, then requests validated before
 *                      they act
 *   listen.c           listeners and the client table
 *   cowvold.c          main(): starts things
 *
 * This header gathers the lower ones for the files at the top.
 */
#ifndef COWVOLD_H
#define COWVOLD_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "../common/util.h"
#include "catalogue.h"
#include "config.h"
#include "cowvol.h"
#include "engine.h"
#include "log.h"
#include "request.h"
#include "schedule.h"
#include "statedir.h"

#define PROTOCOL_VERSION 1
#define LINE_MAX_BYTES (64 * 1024)

/* monitor.c: engines' rounds (fill levels, growth, invalidation, merges)
 * and retries of unavailable volumes */
int monitor_start(void);
void monitor_wake(void);
void monitor_stop(void); /* after catalogue.stopping is set, without its lock */

/* handlers.c: remove snapshot @s of @v, as `cowvol rm` (checked by the
 * caller: not in use, no restore on @v); 0 or -errno with @f */
int snapshot_remove(struct vol *v, struct snap *s, struct failure *f);
/* handlers.c: act on one request: *ret_result, or @f says why not */
void handle_request(const char *op, json_object *args, struct peer *p, json_object **ret_result,
                    struct failure *f);

/* session.c: one control connection (the accepted socket as the argument) */
void *session_main(void *arg);
struct ucred;
/* root, or a member of the configured group (SO_PEERCRED, SO_PEERGROUPS) */
bool peer_is_admin(int fd, const struct ucred *cred);

/* nbd-listen.c (with nbd-handshake.c and nbd-transmit.c, the NBD server):
 * one NBD connection (the accepted socket as the argument) */
void *nbd_session_main(void *arg);
/* one NBD connection on @fd, of TCP or not, whose peer may use volumes
 * (@admin), until it ends; closes @fd through client_done() */
void nbd_session_run(int fd, bool tcp, bool admin);
/* listen on settings.nbd_tcp; the socket or a negative errno (logged) */
int nbd_tcp_listen(void);

/* listen.c */
struct listeners {
        int control, nbd, tcp;
        bool activated, nbd_activated; /* passed by systemd */
        char *control_path;
};
/* systemd's sockets, or our own; 0 or -errno (the reason printed) */
int listeners_open(struct listeners *l);
/* accept clients until SIGTERM or SIGINT arrives on @signal_fd; SIGHUP
 * calls @on_hup and goes on */
int listeners_serve(struct listeners *l, int signal_fd, void (*on_hup)(void));
/* the group changed: our own sockets (not systemd's) follow it */
void listeners_regroup(const struct listeners *l);
void listeners_close(struct listeners *l);
/* shut every client down and wait until all are gone */
void clients_stop(void);
void client_done(int fd); /* a client thread's last act: forget and close @fd */
int clients_stop_fd(void); /* readable once the daemon stops */
/* SO_RCVTIMEO or SO_SNDTIMEO of socket @fd (0: none) */
void set_timeout(int fd, int which, unsigned seconds);

/* peerfd.c: a descriptor a client passed (cat's output, write's input),
 * whose waits end after client_timeout without progress or at the stop:
 * -ETIMEDOUT, -ESHUTDOWN. */
struct peer_fd {
        int fd;
        bool own; /* opened again here (a pipe's own description) */
        enum { PEER_FD_PLAIN, PEER_FD_NONBLOCK, PEER_FD_SOCKET, PEER_FD_POLL } how;
};
int peer_fd_open(struct peer_fd *p, int fd, bool out);
/* all of @n bytes; *moved: how many went, all of them unless it failed */
int peer_fd_write(struct peer_fd *p, const void *buf, size_t n, size_t *moved);
/* up to @n bytes, fewer only at the end of the input */
int peer_fd_read(struct peer_fd *p, void *buf, size_t n, size_t *got);
void peer_fd_close(struct peer_fd *p);

#endif
