/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvold's settings: the command line over the config file over the
 * defaults.  Set once at start (config.c), read-only after: no lock.
 */
#ifndef COWVOLD_CONFIG_H
#define COWVOLD_CONFIG_H

#include <stdbool.h>
#include <sys/types.h>

enum nbd_read_only { NBD_RW = 0, NBD_RO_SNAPSHOTS, NBD_RO_ALL };

struct settings {
        const char *state_dir;
        const char *socket_path;
        char *nbd_socket_path; /* the NBD socket, or NULL when not serving it */
        char *nbd_tcp;         /* "HOST:PORT" NBD also listens on, or NULL */
        char *nbd_tcp_uri_host; /* the host part of nbd:// URIs */
        unsigned nbd_tcp_port;
        unsigned nbd_handshake_timeout; /* seconds a client may take to choose an export */
        enum nbd_read_only nbd_read_only;
        char *group; /* may read and change volumes, beside root */
        gid_t gid;
        bool have_gid;
        unsigned autoextend_threshold, autoextend_percent;
        bool foreground;

        /* what the command line and the file named, before socket activation */
        const char *arg_nbd_socket;
        char *conf_state_dir, *conf_socket, *conf_nbd_socket;
};

extern struct settings settings;

/* Parse the command line and the config file into `settings`: -1 to go on,
 * else the exit code (--help, --version: 0; wrong usage: 2; a bad config
 * file or group: 1), the message printed. */
int settings_load(int argc, char **argv);
/* The NBD socket's path once the control socket's is known (malloc'd). */
char *settings_nbd_socket(void);
void settings_free(void);

/* the nbd_read_only setting: an NBD_RW.. value or -EINVAL */
int nbd_read_only_parse(const char *s);
/* the nbd_tcp setting into host and port (host NULL: off) */
int nbd_tcp_parse(const char *spec, char **ret_host, unsigned *ret_port);
/* is the export of the volume (@snapshot false) or of a snapshot read-only */
bool settings_export_read_only(bool snapshot);

#endif
