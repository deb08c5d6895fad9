/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: cowvold's NBD server, negotiation and requests.  The
 * input is what a client sends, byte for byte, from the client flags on;
 * it goes into one end of a socket pair and the real connection code
 * (nbd_session_main, the engine under it) serves the other, as for an
 * accepted client, with every reply read and thrown away.  The state
 * folder (one volume "vm", 4 MiB, with a snapshot "vm@s" whose store can
 * hold all of it) lives on tmpfs for the whole run: writes change it, as
 * a real client's would.  Neither a crash, a leak, a hang nor a sanitizer
 * report is allowed.
 *
 * TLS: an input that starts with 'T' and a digit is served as a TCP
 * connection with nbd_tls off ('0'), on ('1') or require ('2', and so on
 * modulo 3), with a PSK file loaded: the plaintext part of TLS
 * negotiation (options refused before NBD_OPT_STARTTLS, STARTTLS with
 * data, twice, after other options) and, after STARTTLS is acknowledged,
 * GnuTLS's handshake fed the rest of the input (which fails: no fuzzed
 * bytes make a ClientHello with the key).  Other inputs are the Unix
 * socket's, as before.
 */
#include <ftw.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz-daemon.h"
#include "tls.h"

static char state_dir[] = "/dev/shm/cowvol-fuzz-nbd.XXXXXX";

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st, (void)flag, (void)ftw;
        return remove(p);
}

/* the state folder goes when the run ends */
static void cleanup(void)
{
        nftw(state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* a PSK file for TLS inputs, loaded as cowvold loads it */
static void tls_setup(void)
{
        static const char line[] = "alice:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        char path[sizeof(state_dir) + 16], err[256];
        struct tls_creds *creds;
        FILE *f;

        snprintf(path, sizeof(path), "%s/keys.psk", state_dir);
        if (!(f = fopen(path, "we")) || fputs(line, f) < 0 || fclose(f) != 0)
                abort();
        if (tls_creds_load(path, NULL, &creds, err, sizeof(err)) < 0) {
                fprintf(stderr, "fuzz-nbd: %s\n", err);
                abort();
        }
        tls_creds_install(creds);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        char path[sizeof(state_dir) + 16];

        (void)argc, (void)argv;
        if (!mkdtemp(state_dir) && !mkdtemp(strcpy(state_dir, "/tmp/cowvol-fuzz-nbd.XXXXXX")))
                abort();
        for (size_t i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/%s", state_dir, i ? "stores" : "volumes");
                if (mkdir(path, 0700) < 0)
                        abort();
        }
        atexit(cleanup);
        settings.state_dir = state_dir;
        if (state_open() < 0) /* the descriptor every file of the folder is made through */
                abort();
        settings.autoextend_threshold = 70;
        settings.autoextend_percent = 20;
        settings.nbd_handshake_timeout = 5;
        if (catalogue_load(engine_all) < 0)
                abort();
        tls_setup();
        fuzz_setup_call("fuzz-nbd", "create", "{\"name\": \"vm\", \"size\": 4194304}");
        fuzz_setup_call("fuzz-nbd", "snap", "{\"volume\": \"vm\", \"name\": \"s\", \"store_size\": 8388608}");
        return 0;
}

/* the client's side: send the input, then read every reply until the
 * server closes */
struct client {
        int fd;
        const uint8_t *data;
        size_t len;
};

static void *client_main(void *arg)
{
        struct client *c = arg;
        static uint8_t sink[1 << 16];

        (void)write_all(c->fd, c->data, c->len);
        shutdown(c->fd, SHUT_WR);
        while (read(c->fd, sink, sizeof(sink)) > 0)
                ;
        return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
        struct client c = { .data = data, .len = len };
        bool tcp = len >= 2 && data[0] == 'T' && data[1] >= '0' && data[1] <= '9';
        int sv[2];
        pthread_t t;

        if (tcp) {
                settings.nbd_tls = (enum nbd_tls)((data[1] - '0') % 3);
                c.data += 2;
                c.len -= 2;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        c.fd = sv[1];
        if (pthread_create(&t, NULL, client_main, &c) != 0)
                abort();
        __atomic_add_fetch(&catalogue.n_clients, 1, __ATOMIC_RELAXED); /* as listen.c: session_main's end takes it back */
        if (tcp)
                nbd_session_run(sv[0], true, true); /* as an accepted TCP client; closes sv[0] */
        else
                nbd_session_main((void *)(intptr_t)sv[0]); /* closes sv[0] */
        pthread_join(t, NULL);
        close(sv[1]);
        return 0;
}
