/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * TLS for NBD over TCP, the one wrapper of GnuTLS (nobody else includes
 * <gnutls/gnutls.h>): credentials read from files, and a server session
 * over a connected socket.
 *
 * Credentials are a pre-shared key file (psktool's USERNAME:HEXKEY lines)
 * and/or an x509 folder as qemu's tls-creds-x509 reads it (ca-cert.pem,
 * server-cert.pem, server-key.pem, ca-crl.pem if present); clients of the
 * x509 kind must present a certificate the CA signed.  The credentials new
 * handshakes use are installed once at start and replaced by a reload;
 * each session holds a reference on the ones it began with, so a reload
 * never pulls them from under a connection.
 *
 * Locks: tls_lock (tls.c) protects which credentials are current; it is a
 * leaf, taken with no other held.  A session's own lock serializes GnuTLS
 * calls on it (tls.c says why); a sender takes it under the connection's
 * send_lock, the receiver with nothing else held.
 */
#ifndef COWVOLD_TLS_H
#define COWVOLD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct tls_creds;
struct tls_session;

/* Read @psk_file and/or @certs_dir (NULL: not used; one at least) into new
 * credentials, checking every file: 0 and *ret, or a negative errno with a
 * message for people in @err ("FILE:3: ..."). */
int tls_creds_load(const char *psk_file, const char *certs_dir, struct tls_creds **ret, char *err, size_t len);
struct tls_creds *tls_creds_ref(struct tls_creds *c);
/* Drop a reference (NULL is fine); returns NULL. */
struct tls_creds *tls_creds_unref(struct tls_creds *c);
/* Did both read the same bytes from the same files?  (NULL equals NULL.) */
bool tls_creds_same(const struct tls_creds *a, const struct tls_creds *b);
/* "2 PSK users, x509" for the log. */
const char *tls_creds_describe(const struct tls_creds *c, char *buf, size_t len);

/* The credentials new handshakes use, with a reference for the caller, or
 * NULL when there are none. */
struct tls_creds *tls_creds_current(void);
/* Replace them with @c (its reference passes to the table; NULL: none). */
void tls_creds_install(struct tls_creds *c);

/* The server's side of a TLS handshake on @fd, a blocking socket, over by
 * @deadline_ms (CLOCK_MONOTONIC, in ms): 0 and *ret, or a negative errno
 * (-ETIMEDOUT when the deadline passed) and the reason in @why. */
int tls_session_start(int fd, struct tls_creds *c, uint64_t deadline_ms, struct tls_session **ret, char *why,
                      size_t len);
/* Up to @n bytes: their count, 0 when the peer closed, or a negative
 * errno (-EAGAIN: nothing came within @timeout_ms; -1 waits for ever). */
ssize_t tls_session_recv(struct tls_session *s, void *buf, size_t n, int timeout_ms);
/* All of @iov (small parts go out in one record), or a negative errno.
 * One thread may send while another receives, never two of either. */
int tls_session_send(struct tls_session *s, struct iovec *iov, int n);
/* Decrypted bytes wait in the session, or raw ones on the socket. */
bool tls_session_pending(struct tls_session *s, int fd);
/* Who the peer proved to be: "PSK user 'alice'" or "certificate 'CN=...'". */
const char *tls_session_peer(struct tls_session *s, char *buf, size_t len);
/* End the session (a close_notify first when @clean) and free it. */
void tls_session_free(struct tls_session *s, bool clean);

#endif
