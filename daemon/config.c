/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvold's settings (config.h): defaults, then the config file (`key =
 * value` lines; '#' starts a comment; an unknown key is an error), then the
 * command line.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cowvol.h"
#include "config.h"
#include "log.h"
#include "nbd-proto.h" /* NBD_DEFAULT_PORT */
#include "tls.h"

struct settings settings;

static void help(void)
{
        printf("Usage: cowvold [OPTIONS]\n"
               "\n"
               "The cowvol daemon: owns volumes and their copy-on-write snapshots and\n"
               "serves the cowvol command over a Unix socket.\n"
               "\n"
               "  -s, --state-dir DIR   catalogue, volumes and stores (default /var/lib/cowvol)\n"
               "  -S, --socket PATH     control socket (default /run/cowvol/cowvold.sock)\n"
               "  -N, --nbd-socket PATH NBD socket serving every volume and snapshot\n"
               "                        (default: nbd.sock beside the control socket)\n"
               "  -T, --nbd-tcp[=ADDR]  serve NBD on TCP too: HOST, HOST:PORT, [IPV6]:PORT\n"
               "                        or PORT (no ADDR: 127.0.0.1:10809).  Off by default:\n"
               "                        whoever reaches the address may use every volume,\n"
               "                        unless --nbd-tls=require\n"
               "  -R, --nbd-read-only=WHAT  export 'snapshots' or 'all' read-only over NBD\n"
               "                        (default: no, every export is writable)\n"
               "      --nbd-tls=MODE    TLS on NBD over TCP: off (default), on (offered;\n"
               "                        plaintext clients too) or require\n"
               "      --nbd-tls-psk-file=FILE  pre-shared keys, USERNAME:HEXKEY lines (psktool)\n"
               "      --nbd-tls-certs=DIR  x509: DIR/ca-cert.pem, server-cert.pem, server-key.pem;\n"
               "                        clients need a certificate the CA signed\n"
               "  -c, --config FILE     settings (default /etc/cowvol/cowvold.conf if present)\n"
               "  -f, --foreground      stay in the foreground (it always does; for systemd)\n"
               "  -h, --help            show this help\n"
               "  -V, --version         show the version\n"
               "\n"
               "Settings in the config file, one 'key = value' a line:\n"
               "  group = cowvol                   who may use volumes beside root\n"
               "  autoextend_threshold = 70        grow a store when its use passes this %%\n"
               "  autoextend_percent = 20          by this %% of its size (threshold 100: never)\n"
               "  state_dir = /var/lib/cowvol\n"
               "  socket = /run/cowvol/cowvold.sock\n"
               "  nbd_socket = /run/cowvol/nbd.sock\n"
               "  nbd_tcp = no                     yes (loopback), or an address as --nbd-tcp\n"
               "  nbd_read_only = no               snapshots, all\n"
               "  nbd_handshake_timeout = 30       seconds an NBD client may take to choose\n"
               "                                   an export\n"
               "  client_timeout = 60              seconds a client may leave an answer or\n"
               "                                   data it asked for unread (or unsent)\n"
               "  idle_timeout = 120               seconds a control connection may wait\n"
               "                                   between requests\n"
               "  max_connections = 1024           connections at once on each socket\n"
               "  max_connections_per_peer = 64    of them from one user (or TCP address);\n"
               "                                   root is not counted\n"
               "  nbd_in_flight_mib = 128          MiB of NBD requests and replies in memory,\n"
               "                                   all connections together\n"
               "  nbd_tls = off                    on, require: as --nbd-tls\n"
               "  nbd_tls_psk_file = FILE          as --nbd-tls-psk-file\n"
               "  nbd_tls_certs = DIR              as --nbd-tls-certs\n");
}

static char *trim(char *s)
{
        char *e;

        while (*s == ' ' || *s == '\t')
                s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
                *--e = '\0';
        return s;
}

static int parse_uint(const char *file, unsigned line, const char *key, const char *val, unsigned lo,
                         unsigned hi, unsigned *ret)
{
        char *end;
        unsigned long v = strtoul(val, &end, 10);

        if (!*val || *end || v < lo || v > hi) {
                fprintf(stderr, "cowvold: %s:%u: %s must be a whole number from %u to %u, not '%s'\n", file, line,
                        key, lo, hi, val);
                return -EINVAL;
        }
        *ret = (unsigned)v;
        return 0;
}

/* @key's path value into *@to: an empty value names none */
static void path_set(char **to, const char *v)
{
        free(*to);
        *to = *v ? strdup(v) : NULL;
}

/* key = value lines; '#' starts a comment.  Unknown keys are errors.  The
 * values go to @to (its group, autoextend, NBD fields), the three paths to
 * @to's conf_* fields; *group_named: the file names a group (it must exist). */
static int config_load(const char *file, bool must_exist, struct settings *to, bool *group_named)
{
        FILE *f = fopen(file, "re");
        char buf[1024];
        unsigned line = 0;
        int r = 0;

        if (!f) {
                if (errno == ENOENT && !must_exist)
                        return 0;
                fprintf(stderr, "cowvold: cannot read %s: %s\n", file, strerror(errno));
                return -errno;
        }
        while (r == 0 && fgets(buf, sizeof(buf), f)) {
                char *k, *v, *eq, *hash;
                line++;
                if ((hash = strchr(buf, '#')))
                        *hash = '\0';
                k = trim(buf);
                if (!*k)
                        continue;
                eq = strchr(k, '=');
                if (!eq) {
                        fprintf(stderr, "cowvold: %s:%u: expected 'key = value'\n", file, line);
                        r = -EINVAL;
                        break;
                }
                *eq = '\0';
                v = trim(eq + 1);
                k = trim(k);
                if (strcmp(k, "group") == 0) {
                        free(to->group);
                        to->group = strdup(v);
                        *group_named = true;
                } else if (strcmp(k, "autoextend_threshold") == 0)
                        r = parse_uint(file, line, k, v, 50, 100, &to->autoextend_threshold);
                else if (strcmp(k, "autoextend_percent") == 0)
                        r = parse_uint(file, line, k, v, 1, 1000, &to->autoextend_percent);
                else if (strcmp(k, "nbd_handshake_timeout") == 0)
                        r = parse_uint(file, line, k, v, 1, 3600, &to->nbd_handshake_timeout);
                else if (strcmp(k, "client_timeout") == 0)
                        r = parse_uint(file, line, k, v, 1, 3600, &to->client_timeout);
                else if (strcmp(k, "idle_timeout") == 0)
                        r = parse_uint(file, line, k, v, 1, 86400, &to->idle_timeout);
                else if (strcmp(k, "max_connections") == 0)
                        r = parse_uint(file, line, k, v, 32, 65536, &to->max_connections);
                else if (strcmp(k, "max_connections_per_peer") == 0)
                        r = parse_uint(file, line, k, v, 1, 65536, &to->max_connections_per_peer);
                else if (strcmp(k, "nbd_in_flight_mib") == 0)
                        r = parse_uint(file, line, k, v, 32, 65536, &to->nbd_in_flight_mib);
                else if (strcmp(k, "state_dir") == 0) {
                        free(to->conf_state_dir);
                        to->conf_state_dir = strdup(v);
                } else if (strcmp(k, "socket") == 0) {
                        free(to->conf_socket);
                        to->conf_socket = strdup(v);
                } else if (strcmp(k, "nbd_socket") == 0) {
                        free(to->conf_nbd_socket);
                        to->conf_nbd_socket = strdup(v);
                } else if (strcmp(k, "nbd_tcp") == 0) {
                        free(to->nbd_tcp);
                        free(to->conf_nbd_tcp);
                        to->conf_nbd_tcp = strdup(v);
                        if (nbd_tcp_parse(v, &to->nbd_tcp, &to->nbd_tcp_port) < 0) {
                                fprintf(stderr,
                                        "cowvold: %s:%u: nbd_tcp must be no, yes, HOST, HOST:PORT, [IPV6], [IPV6]:PORT "
                                        "or PORT, not '%s'\n",
                                        file, line, v);
                                r = -EINVAL;
                        }
                } else if (strcmp(k, "nbd_tls") == 0) {
                        int t = nbd_tls_parse(v);
                        if (t < 0) {
                                fprintf(stderr, "cowvold: %s:%u: nbd_tls must be off, on or require, not '%s'\n", file,
                                        line, v);
                                r = -EINVAL;
                        } else
                                to->nbd_tls = t;
                } else if (strcmp(k, "nbd_tls_psk_file") == 0)
                        path_set(&to->nbd_tls_psk_file, v);
                else if (strcmp(k, "nbd_tls_certs") == 0)
                        path_set(&to->nbd_tls_certs, v);
                else if (strcmp(k, "nbd_read_only") == 0) {
                        int ro = nbd_read_only_parse(v);
                        if (ro < 0) {
                                fprintf(stderr, "cowvold: %s:%u: nbd_read_only must be no, snapshots or all, not '%s'\n",
                                        file, line, v);
                                r = -EINVAL;
                        } else
                                to->nbd_read_only = ro;
                } else {
                        fprintf(stderr, "cowvold: %s:%u: unknown setting '%s'\n", file, line, k);
                        r = -EINVAL;
                }
        }
        fclose(f);
        return r;
}

int nbd_tls_parse(const char *s)
{
        if (!strcmp(s, "off") || !strcmp(s, "no"))
                return NBD_TLS_OFF;
        if (!strcmp(s, "on") || !strcmp(s, "yes"))
                return NBD_TLS_ON;
        if (!strcmp(s, "require") || !strcmp(s, "required"))
                return NBD_TLS_REQUIRE;
        return -EINVAL;
}

const char *nbd_tls_name(enum nbd_tls t)
{
        return t == NBD_TLS_REQUIRE ? "require" : t == NBD_TLS_ON ? "on" : "off";
}

int nbd_read_only_parse(const char *s)
{
        if (!strcmp(s, "no") || !strcmp(s, "none"))
                return NBD_RW;
        if (!strcmp(s, "snapshots"))
                return NBD_RO_SNAPSHOTS;
        if (!strcmp(s, "all") || !strcmp(s, "yes"))
                return NBD_RO_ALL;
        return -EINVAL;
}

/* "yes" (loopback, port 10809), "PORT", "HOST", "HOST:PORT", "[V6]" or
 * "[V6]:PORT" into a host and a port; "no" into NULL.  -EINVAL when it is
 * none of these. */
int nbd_tcp_parse(const char *spec, char **ret_host, unsigned *ret_port)
{
        const char *host = spec, *port = NULL, *end;
        size_t hlen;
        char *e;
        unsigned long p = NBD_DEFAULT_PORT;

        *ret_host = NULL;
        if (!strcmp(spec, "no") || !strcmp(spec, "off") || !*spec)
                return 0;
        if (!strcmp(spec, "yes") || !strcmp(spec, "on") || !strcmp(spec, "loopback"))
                spec = host = "127.0.0.1";
        if (strspn(spec, "0123456789") == strlen(spec)) {
                host = "127.0.0.1";
                port = spec;
                hlen = strlen(host);
        } else if (spec[0] == '[') {
                if (!(end = strchr(spec, ']')) || (end[1] && end[1] != ':'))
                        return -EINVAL;
                host = spec + 1;
                hlen = (size_t)(end - host);
                if (end[1] == ':')
                        port = end + 2;
        } else {
                end = strchr(spec, ':');
                if (end && strchr(end + 1, ':'))
                        return -EINVAL; /* a bare IPv6 address: it needs [ ] */
                hlen = end ? (size_t)(end - spec) : strlen(spec);
                if (end)
                        port = end + 1;
        }
        if (port) {
                errno = 0;
                p = strtoul(port, &e, 10);
                if (!*port || *e || errno || p == 0 || p > 65535)
                        return -EINVAL;
        }
        if (hlen == 0 || !(*ret_host = strndup(host, hlen)))
                return hlen == 0 ? -EINVAL : -ENOMEM;
        *ret_port = (unsigned)p;
        return 0;
}

bool settings_export_read_only(bool snapshot)
{
        enum nbd_read_only ro = __atomic_load_n(&settings.nbd_read_only, __ATOMIC_RELAXED);

        return ro == NBD_RO_ALL || (snapshot && ro == NBD_RO_SNAPSHOTS);
}

/* The NBD socket's path: --nbd-socket, nbd_socket =, else nbd.sock beside
 * the control socket; made absolute, since it goes into URIs. */
static char *nbd_socket_default(const char *arg, const char *conf)
{
        const char *p = arg ? arg : conf;
        char *out = NULL, cwd[4096];

        if (!p) {
                const char *slash = strrchr(settings.socket_path, '/');
                if (asprintf(&out, "%.*s%snbd.sock", slash ? (int)(slash - settings.socket_path) : 0,
                             settings.socket_path, slash ? "/" : "") < 0)
                        return NULL;
        } else if (!(out = strdup(p)))
                return NULL;
        if (out[0] != '/' && getcwd(cwd, sizeof(cwd))) {
                char *abs;
                if (asprintf(&abs, "%s/%s", cwd, out) < 0)
                        abs = NULL;
                free(out);
                out = abs;
        }
        return out;
}

char *settings_nbd_socket(void)
{
        return nbd_socket_default(settings.arg_nbd_socket, settings.conf_nbd_socket);
}

static void defaults(struct settings *to)
{
        to->autoextend_threshold = 70;
        to->autoextend_percent = 20;
        to->nbd_handshake_timeout = 30;
        to->client_timeout = 60;
        to->idle_timeout = 120;
        to->max_connections = 1024;
        to->max_connections_per_peer = 64;
        to->nbd_in_flight_mib = 128;
        to->group = strdup("cowvol");
}

/* @to's gid from its group name; a group the file named must exist */
static int group_resolve(struct settings *to, bool named)
{
        struct group *g;

        to->have_gid = false;
        to->admin_gid = -1;
        if (!to->group || !*to->group)
                return 0;
        g = getgrnam(to->group);
        if (g) {
                to->gid = g->gr_gid;
                to->have_gid = true;
                to->admin_gid = g->gr_gid;
        } else if (named) {
                fprintf(stderr, "cowvold: group '%s' does not exist\n", to->group);
                return -ENOENT;
        }
        return 0;
}

/* @to's TLS settings hold together, and their credentials can be read:
 * 0 and *ret (NULL when none are named), or -EINVAL (the reason printed).
 * Credentials named while TLS is off are read too: a mistake in them shows
 * now, not when a reload turns TLS on. */
static int tls_settle(const struct settings *to, struct tls_creds **ret)
{
        char err[512];

        *ret = NULL;
        if (to->nbd_tls != NBD_TLS_OFF && !to->nbd_tls_psk_file && !to->nbd_tls_certs) {
                fprintf(stderr, "cowvold: nbd_tls = %s needs credentials: --nbd-tls-psk-file=FILE or "
                        "--nbd-tls-certs=DIR (nbd_tls_psk_file, nbd_tls_certs in the config)\n",
                        nbd_tls_name(to->nbd_tls));
                return -EINVAL;
        }
        if (!to->nbd_tls_psk_file && !to->nbd_tls_certs)
                return 0;
        if (tls_creds_load(to->nbd_tls_psk_file, to->nbd_tls_certs, ret, err, sizeof(err)) < 0) {
                fprintf(stderr, "cowvold: TLS credentials: %s\n", err);
                return -EINVAL;
        }
        return 0;
}

/* the TLS options, which have no short form */
enum { OPT_NBD_TLS = 256, OPT_NBD_TLS_PSK_FILE, OPT_NBD_TLS_CERTS };

int settings_load(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "state-dir", required_argument, NULL, 's' },
                { "socket", required_argument, NULL, 'S' },
                { "nbd-socket", required_argument, NULL, 'N' },
                { "nbd-tcp", optional_argument, NULL, 'T' },
                { "nbd-read-only", required_argument, NULL, 'R' },
                { "nbd-tls", required_argument, NULL, OPT_NBD_TLS },
                { "nbd-tls-psk-file", required_argument, NULL, OPT_NBD_TLS_PSK_FILE },
                { "nbd-tls-certs", required_argument, NULL, OPT_NBD_TLS_CERTS },
                { "config", required_argument, NULL, 'c' },
                { "foreground", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        const char *arg_state = NULL, *arg_sock = NULL, *config = NULL, *arg_tcp = NULL, *arg_ro = NULL;
        const char *arg_tls = NULL, *arg_psk = NULL, *arg_certs = NULL;
        struct tls_creds *creds;
        bool group_named = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "s:S:N:T::R:c:fhV", longopts, NULL)) >= 0) {
                switch (c) {
                case 's': arg_state = optarg; break;
                case 'S': arg_sock = optarg; break;
                case 'N': settings.arg_nbd_socket = optarg; break;
                case 'T': arg_tcp = optarg ? optarg : "yes"; break;
                case 'R': arg_ro = optarg; break;
                case OPT_NBD_TLS: arg_tls = optarg; break;
                case OPT_NBD_TLS_PSK_FILE: arg_psk = optarg; break;
                case OPT_NBD_TLS_CERTS: arg_certs = optarg; break;
                case 'c': config = optarg; break;
                case 'f': settings.foreground = true; break;
                case 'h': help(); return EXIT_SUCCESS;
                case 'V': printf("cowvold %s\n", cowvol_version()); return EXIT_SUCCESS;
                default: fprintf(stderr, "Try 'cowvold --help'.\n"); return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "cowvold: unexpected argument '%s'\nTry 'cowvold --help'.\n", argv[optind]);
                return 2;
        }
        defaults(&settings);
        settings.config_file = config ? config : "/etc/cowvol/cowvold.conf";
        settings.config_named = config != NULL;
        settings.arg_nbd_read_only = arg_ro != NULL;
        settings.arg_nbd_tls = arg_tls != NULL;
        settings.arg_nbd_tls_psk_file = arg_psk != NULL;
        settings.arg_nbd_tls_certs = arg_certs != NULL;
        settings.arg_state_dir = arg_state != NULL;
        settings.arg_socket = arg_sock != NULL;
        r = config_load(settings.config_file, settings.config_named, &settings, &group_named);
        if (r < 0)
                return EXIT_FAILURE;
        if (arg_tcp) {
                free(settings.nbd_tcp);
                if (nbd_tcp_parse(arg_tcp, &settings.nbd_tcp, &settings.nbd_tcp_port) < 0) {
                        fprintf(stderr, "cowvold: --nbd-tcp wants HOST, HOST:PORT, [IPV6], [IPV6]:PORT, PORT or no, not '%s'\n",
                                arg_tcp);
                        return 2;
                }
        }
        if (arg_ro) {
                int ro = nbd_read_only_parse(arg_ro);
                if (ro < 0) {
                        fprintf(stderr, "cowvold: --nbd-read-only wants no, snapshots or all, not '%s'\n", arg_ro);
                        return 2;
                }
                settings.nbd_read_only = ro;
        }
        if (arg_tls) {
                int t = nbd_tls_parse(arg_tls);
                if (t < 0) {
                        fprintf(stderr, "cowvold: --nbd-tls wants off, on or require, not '%s'\n", arg_tls);
                        return 2;
                }
                settings.nbd_tls = t;
        }
        if (arg_psk)
                path_set(&settings.nbd_tls_psk_file, arg_psk);
        if (arg_certs)
                path_set(&settings.nbd_tls_certs, arg_certs);
        if (tls_settle(&settings, &creds) < 0)
                /* --nbd-tls=require alone is wrong usage; a bad file is not */
                return arg_tls && !settings.nbd_tls_psk_file && !settings.nbd_tls_certs ? 2 : EXIT_FAILURE;
        tls_creds_install(creds);
        settings.state_dir = arg_state ? arg_state : settings.conf_state_dir ? settings.conf_state_dir : "/var/lib/cowvol";
        settings.socket_path = arg_sock ? arg_sock : settings.conf_socket ? settings.conf_socket : "/run/cowvol/cowvold.sock";
        if (group_resolve(&settings, group_named) < 0)
                return EXIT_FAILURE;
        return -1;
}

static bool same(const char *a, const char *b)
{
        return (!a && !b) || (a && b && !strcmp(a, b));
}

/* a group name another thread may be printing: kept until exit */
static char *retired[64];
static unsigned n_retired;

static void changed_uint(const char *key, unsigned *cur, unsigned now)
{
        if (*cur == now)
                return;
        dlog(LOG_INFO_, "Reload: %s %u -> %u", key, *cur, now);
        __atomic_store_n(cur, now, __ATOMIC_RELAXED);
}

/* a path setting of the command line stays; the file's may change */
static void path_keep(bool from_arg, char **to, const char *cur)
{
        if (!from_arg)
                return;
        free(*to);
        *to = cur ? strdup(cur) : NULL;
}

static void changed_path(const char *key, char **cur, char **now)
{
        char *old = *cur;

        if (same(*cur, *now))
                return;
        dlog(LOG_INFO_, "Reload: %s %s -> %s", key, *cur ? *cur : "(none)", *now ? *now : "(none)");
        *cur = *now; /* the main thread's alone */
        *now = old;
}

/* TLS: the mode, the files named, and the credentials read again from them
 * (a key rotated in the same file counts); new handshakes use them */
static void tls_apply(struct settings *n, struct tls_creds *creds, unsigned *changes)
{
        struct tls_creds *old = tls_creds_current();
        char what[128];

        if (n->nbd_tls != settings.nbd_tls) {
                dlog(LOG_INFO_, "Reload: nbd_tls %s -> %s (connections from now on)%s", nbd_tls_name(settings.nbd_tls),
                     nbd_tls_name(n->nbd_tls),
                     settings.nbd_tcp ? "" : "; NBD is not served over TCP, and TLS is for TCP only");
                __atomic_store_n(&settings.nbd_tls, n->nbd_tls, __ATOMIC_RELAXED);
                *changes |= SETTINGS_TLS;
        }
        changed_path("nbd_tls_psk_file", &settings.nbd_tls_psk_file, &n->nbd_tls_psk_file);
        changed_path("nbd_tls_certs", &settings.nbd_tls_certs, &n->nbd_tls_certs);
        if (!tls_creds_same(old, creds)) {
                dlog(LOG_INFO_, "Reload: TLS credentials changed (now %s): new handshakes use them",
                     tls_creds_describe(creds, what, sizeof(what)));
                *changes |= SETTINGS_TLS;
        }
        tls_creds_unref(old);
        tls_creds_install(creds);
}

int settings_reload(unsigned *changes)
{
        struct settings n = { 0 };
        struct tls_creds *creds = NULL;
        bool named = false;
        int r;

        *changes = 0;
        defaults(&n);
        r = config_load(settings.config_file, settings.config_named, &n, &named);
        if (r >= 0)
                r = group_resolve(&n, named);
        if (r >= 0) {
                if (settings.arg_nbd_tls)
                        n.nbd_tls = settings.nbd_tls;
                path_keep(settings.arg_nbd_tls_psk_file, &n.nbd_tls_psk_file, settings.nbd_tls_psk_file);
                path_keep(settings.arg_nbd_tls_certs, &n.nbd_tls_certs, settings.nbd_tls_certs);
                r = tls_settle(&n, &creds);
        }
        if (r < 0) {
                dlog(LOG_ERR_, "Reload of %s failed (above); every setting stays as it was", settings.config_file);
                goto out;
        }
        if (n.autoextend_threshold != settings.autoextend_threshold ||
            n.autoextend_percent != settings.autoextend_percent)
                *changes |= SETTINGS_AUTOEXTEND;
        changed_uint("autoextend_threshold", &settings.autoextend_threshold, n.autoextend_threshold);
        changed_uint("autoextend_percent", &settings.autoextend_percent, n.autoextend_percent);
        changed_uint("nbd_handshake_timeout", &settings.nbd_handshake_timeout, n.nbd_handshake_timeout);
        changed_uint("client_timeout", &settings.client_timeout, n.client_timeout);
        changed_uint("idle_timeout", &settings.idle_timeout, n.idle_timeout);
        changed_uint("max_connections", &settings.max_connections, n.max_connections);
        changed_uint("max_connections_per_peer", &settings.max_connections_per_peer, n.max_connections_per_peer);
        changed_uint("nbd_in_flight_mib", &settings.nbd_in_flight_mib, n.nbd_in_flight_mib);
        if (!settings.arg_nbd_read_only && n.nbd_read_only != settings.nbd_read_only) {
                static const char *const names[] = { "no", "snapshots", "all" };
                dlog(LOG_INFO_, "Reload: nbd_read_only %s -> %s (exports opened from now on)",
                     names[settings.nbd_read_only], names[n.nbd_read_only]);
                __atomic_store_n(&settings.nbd_read_only, n.nbd_read_only, __ATOMIC_RELAXED);
        }
        tls_apply(&n, creds, changes);
        if (!same(n.group, settings.group) || n.have_gid != settings.have_gid || n.gid != settings.gid) {
                if (n_retired == sizeof(retired) / sizeof(retired[0])) {
                        dlog(LOG_WARN_, "Reload: the group cannot change again before a restart (%u changes)",
                             n_retired);
                } else {
                        dlog(LOG_INFO_, "Reload: group %s -> %s%s", settings.group ? settings.group : "(none)",
                             n.group ? n.group : "(none)", n.have_gid ? "" : " (no such group: root only)");
                        retired[n_retired++] = settings.group;
                        settings.gid = n.gid; /* the main thread's own */
                        settings.have_gid = n.have_gid;
                        __atomic_store_n(&settings.group, n.group, __ATOMIC_SEQ_CST);
                        __atomic_store_n(&settings.admin_gid, n.have_gid ? (int64_t)n.gid : -1, __ATOMIC_SEQ_CST);
                        n.group = NULL;
                        *changes |= SETTINGS_GROUP;
                }
        }
        /* what only a start reads */
        /* (only where the command line did not name it) */
        if (!settings.arg_state_dir && !same(n.conf_state_dir, settings.conf_state_dir))
                dlog(LOG_WARN_, "Reload: state_dir changed in %s: it takes effect at the next start", settings.config_file);
        if (!settings.arg_socket && !same(n.conf_socket, settings.conf_socket))
                dlog(LOG_WARN_, "Reload: socket changed in %s: it takes effect at the next start", settings.config_file);
        if (!settings.arg_nbd_socket && !same(n.conf_nbd_socket, settings.conf_nbd_socket))
                dlog(LOG_WARN_, "Reload: nbd_socket changed in %s: it takes effect at the next start", settings.config_file);
        if (!same(n.conf_nbd_tcp, settings.conf_nbd_tcp))
                dlog(LOG_WARN_, "Reload: nbd_tcp changed in %s: it takes effect at the next start", settings.config_file);
out:
        free(n.group);
        free(n.nbd_tcp);
        free(n.nbd_tls_psk_file);
        free(n.nbd_tls_certs);
        free(n.conf_state_dir);
        free(n.conf_socket);
        free(n.conf_nbd_socket);
        free(n.conf_nbd_tcp);
        return r;
}

void settings_free(void)
{
        for (unsigned i = 0; i < n_retired; i++)
                free(retired[i]);
        free(settings.group);
        free(settings.nbd_tcp);
        free(settings.nbd_tcp_uri_host);
        free(settings.conf_state_dir);
        free(settings.conf_socket);
        free(settings.conf_nbd_socket);
        free(settings.conf_nbd_tcp);
        free(settings.nbd_socket_path);
        free(settings.nbd_tls_psk_file);
        free(settings.nbd_tls_certs);
        tls_creds_install(NULL);
}
