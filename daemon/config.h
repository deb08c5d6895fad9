/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvold's settings: the command line over the config file over the
 * defaults.  Set at start (config.c); SIGHUP's reload (settings_reload)
 * may change group, admin_gid, autoextend_*, nbd_read_only,
 * nbd_handshake_timeout and nbd_tls with atomic stores, so other threads
 * read those with __atomic_load_n, once per use; the TLS credentials are
 * swapped in tls.c.  The rest is fixed after start.
 */
#ifndef COWVOLD_CONFIG_H
#define COWVOLD_CONFIG_H

#include <stdbool.h>
#include <sys/types.h>

enum nbd_read_only { NBD_RW = 0, NBD_RO_SNAPSHOTS, NBD_RO_ALL };
/* TLS on NBD over TCP: none, offered (plaintext clients too), required */
enum nbd_tls { NBD_TLS_OFF = 0, NBD_TLS_ON, NBD_TLS_REQUIRE };

struct settings {
        const char *state_dir;
        const char *socket_path;
        char *nbd_socket_path; /* the NBD socket, or NULL when not serving it */
        char *nbd_tcp;         /* "HOST:PORT" NBD also listens on, or NULL */
        char *nbd_tcp_uri_host; /* the host part of nbd:// URIs */
        unsigned nbd_tcp_port;
        unsigned nbd_handshake_timeout; /* seconds a client may take to choose an export */
        unsigned client_timeout;  /* seconds a peer may leave what it asked for unread (or unsent) */
        unsigned idle_timeout;    /* seconds a control connection may wait between requests */
        unsigned max_connections; /* on each listener */
        unsigned max_connections_per_peer; /* from one uid or TCP address (root: not counted) */
        unsigned nbd_in_flight_mib; /* NBD payloads in memory, all connections */
        enum nbd_read_only nbd_read_only;
        enum nbd_tls nbd_tls;
        char *nbd_tls_psk_file; /* psktool's USERNAME:HEXKEY file, or NULL */
        char *nbd_tls_certs;    /* the x509 folder (ca-cert.pem, server-*.pem), or NULL */
        char *group; /* may read and change volumes, beside root */
        gid_t gid;
        bool have_gid;
        int64_t admin_gid; /* gid, or -1 without one: what other threads read, in one load */
        unsigned autoextend_threshold, autoextend_percent;
        bool foreground;

        /* what the command line and the file named, before socket activation */
        const char *arg_nbd_socket;
        char *conf_state_dir, *conf_socket, *conf_nbd_socket, *conf_nbd_tcp;
        const char *config_file; /* read again on SIGHUP */
        bool config_named;       /* --config: the file must exist */
        bool arg_nbd_read_only;  /* --nbd-read-only: a reload leaves it */
        bool arg_nbd_tls, arg_nbd_tls_psk_file, arg_nbd_tls_certs; /* the same for these */
        bool arg_state_dir, arg_socket; /* given on the command line */
};

extern struct settings settings;

/* Parse the command line and the config file into `settings`: -1 to go on,
 * else the exit code (--help, --version: 0; wrong usage: 2; a bad config
 * file or group: 1), the message printed. */
int settings_load(int argc, char **argv);
/* The NBD socket's path once the control socket's is known (malloc'd). */
char *settings_nbd_socket(void);
void settings_free(void);
/* SIGHUP: read the config file again and apply what may change at run time
 * (logged, one line a change); what only a start reads is logged as such.
 * A file with an error changes nothing.  *changes: SETTINGS_* bits. */
#define SETTINGS_AUTOEXTEND (1u << 0)
#define SETTINGS_GROUP (1u << 1)
#define SETTINGS_TLS (1u << 2)
int settings_reload(unsigned *changes);

/* the nbd_read_only setting: an NBD_RW.. value or -EINVAL */
int nbd_read_only_parse(const char *s);
/* the nbd_tls setting: an NBD_TLS_* value or -EINVAL */
int nbd_tls_parse(const char *s);
const char *nbd_tls_name(enum nbd_tls t);
/* the nbd_tcp setting into host and port (host NULL: off) */
int nbd_tcp_parse(const char *spec, char **ret_host, unsigned *ret_port);
/* the group's name for messages (a reload may change it) */
static inline const char *settings_group(void)
{
        const char *g = __atomic_load_n(&settings.group, __ATOMIC_SEQ_CST);

        return g ? g : "cowvol";
}

/* is the export of the volume (@snapshot false) or of a snapshot read-only */
bool settings_export_read_only(bool snapshot);

#endif
