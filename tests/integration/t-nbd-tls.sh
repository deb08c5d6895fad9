#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# NBD over TCP with TLS (cowvold(8), TLS): pre-shared keys (psktool) and
# x509 certificates (certtool), with Debian's real clients: libnbd's
# nbdinfo and nbdcopy (nbds:// URIs) and qemu-img (tls-creds-psk,
# tls-creds-x509), reading and writing.  Refused: plaintext clients when TLS
# is required (an answer, not a hang), a wrong key, an unknown user, a
# client without a certificate or with one another CA signed; a client
# stalled in the TLS handshake is dropped after nbd_handshake_timeout and
# holds nobody up.  The daemon serves others after each failure.  SIGHUP
# takes new keys (new handshakes use them); a bad key file changes nothing.
# The Unix socket has no TLS (NBD_REP_ERR_POLICY); TCP without TLS warns.
. "$(dirname "$0")/../lib.sh"
RAW=$REPO/tests/integration/nbd-raw.py

if ! command -v nbdinfo >/dev/null || ! command -v qemu-img >/dev/null || ! command -v psktool >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libnbd-bin qemu-utils gnutls-bin \
			>"$T/apt.log" 2>&1
	fi
fi
requires nbdinfo nbdcopy qemu-img psktool certtool "$PYTHON"

# --- credentials ---------------------------------------------------------------------
K=$T/keys
mkdir -p "$K/qemu" "$K/qemu-wrong" "$K/server" "$K/client" "$K/nocert" "$K/stranger"
psk() { psktool -u "$1" -p "$2" >/dev/null 2>&1; }
psk alice "$K/keys.psk" && psk alice "$K/wrong.psk" && psk bob "$K/bob.psk"
check "psktool wrote alice's key (and another one for the wrong-key test)" \
	eval "grep -q '^alice:' '$K/keys.psk' && ! cmp -s '$K/keys.psk' '$K/wrong.psk'"
cp "$K/keys.psk" "$K/qemu/keys.psk"     # qemu's tls-creds-psk reads DIR/keys.psk
cp "$K/wrong.psk" "$K/qemu-wrong/keys.psk"
# certtool CERT-NAME SIGNER TEMPLATE-LINES: DIR/NAME-key.pem and NAME-cert.pem
cert() {
	local dir=$1 name=$2 ca=$3
	shift 3
	printf '%s\n' "$@" "expiration_days = 2" >"$K/$name.info"
	certtool --generate-privkey --outfile "$dir/$name-key.pem" >/dev/null 2>&1 || return 1
	if [ "$ca" = self ]; then
		certtool --generate-self-signed --load-privkey "$dir/$name-key.pem" --template "$K/$name.info" \
			--outfile "$dir/$name-cert.pem" >/dev/null 2>&1
	else
		certtool --generate-certificate --load-privkey "$dir/$name-key.pem" --load-ca-certificate "$ca-cert.pem" \
			--load-ca-privkey "$ca-key.pem" --template "$K/$name.info" --outfile "$dir/$name-cert.pem" >/dev/null 2>&1
	fi
}
setup_x509() {
	cert "$K" ca self "cn = cowvol test CA" ca cert_signing_key &&
		cert "$K" other self "cn = another CA" ca cert_signing_key &&
		cert "$K/server" server "$K/ca" "cn = localhost" "dns_name = localhost" "ip_address = 127.0.0.1" \
			tls_www_server encryption_key signing_key &&
		cert "$K/client" client "$K/ca" "cn = alice" tls_www_client encryption_key signing_key &&
		cert "$K/stranger" client "$K/other" "cn = mallory" tls_www_client encryption_key signing_key &&
		for sub in server client nocert stranger; do cp "$K/ca-cert.pem" "$K/$sub/"; done
}
check "certtool made a CA, a server certificate (127.0.0.1) and client certificates" setup_x509

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CONF=$T/cowvold.conf
printf 'nbd_tls = require\nnbd_tls_psk_file = %s\nnbd_tls_certs = %s\nnbd_handshake_timeout = 3\n' \
	"$K/keys.psk" "$K/server" >"$CONF"
start_daemon --nbd-tcp="$PORT" --config "$CONF" || exit 1
check "the log says TLS is required on TCP" grep -q "Serving NBD on TCP 127.0.0.1 port $PORT (TLS required)" "$T/daemon.log"
check "and does not warn about TCP without TLS" eval "! grep -q 'without TLS' '$T/daemon.log'"
expect 0 "status" cv status
expect_in out "^NBD: socket $T/nbd.sock, TCP 127.0.0.1:$PORT, TLS require \([0-9]+ PSK users? and x509 certificates\)$" \
	"status names TCP and the TLS mode with its credentials"

SIZE=$((8 * 1024 * 1024))
cv create vm1 --size 8M >/dev/null
head -c $SIZE /dev/urandom >"$T/v1"
cv write vm1 <"$T/v1" >/dev/null
check "setup: vm1 holds 8 MiB of data" eval "cv cat vm1 | cmp -s - '$T/v1'"
# cmp_vm1 FILE [BYTES]: vm1 reads as FILE
cmp_vm1() { cv cat vm1 2>/dev/null | cmp -s ${2:+-n "$2"} - "$1"; }

# --- PSK: libnbd ---------------------------------------------------------------------
# a refusal must come as an answer: 20 s is far beyond any handshake here
TO="timeout 20"
PSK="nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$K/keys.psk"
serves() { $TO nbdinfo "$PSK" >/dev/null 2>&1; }
expect 0 "nbdinfo with alice's key (nbds://, tls-psk-file)" $TO nbdinfo "$PSK"
expect_in out "newstyle-fixed with TLS" "nbdinfo says the connection is TLS"
expect_in out "export-size: $SIZE " "nbdinfo gives the size over TLS"
expect 0 "nbdcopy reads vm1 over TLS" $TO nbdcopy "$PSK" "$T/copy"
check "the copy equals vm1" cmp -s "$T/copy" "$T/v1"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$T/w1"
expect 0 "nbdcopy writes 3 MiB into vm1 over TLS" $TO nbdcopy "$T/w1" "$PSK"
check "cowvol cat vm1 shows the write" cmp_vm1 "$T/w1" $((3 * 1024 * 1024))

# --- PSK: qemu-img -----------------------------------------------------------------------
# qemu_rw WHAT OBJECT OPTS BYTES: qemu-img writes BYTES random bytes into vm1
# and reads all of vm1 back, with the credentials of --object OBJECT
qemu_rw() {
	local what=$1 obj=$2 opts=$3 n=$4
	head -c "$n" /dev/urandom >"$T/qw"
	expect 0 "qemu-img writes $n bytes into vm1 over TLS ($what)" \
		$TO qemu-img convert --object "$obj" -n -f raw "$T/qw" --target-image-opts "$opts"
	check "cowvol cat vm1 shows qemu-img's write ($what)" cmp_vm1 "$T/qw" "$n"
	expect 0 "qemu-img reads vm1 over TLS ($what)" \
		$TO qemu-img convert --object "$obj" --image-opts "$opts" -O raw "$T/qr.img"
	check "qemu-img's copy equals cowvol cat vm1 ($what)" cmp_vm1 "$T/qr.img"
}
QOPTS="driver=nbd,host=127.0.0.1,port=$PORT,export=vm1,tls-creds=tls0"
qemu_rw tls-creds-psk "tls-creds-psk,id=tls0,endpoint=client,dir=$K/qemu,username=alice" "$QOPTS" 524288

# --- x509 ------------------------------------------------------------------------------------
X509="nbds://127.0.0.1:$PORT/vm1?tls-certificates=$K/client"
expect 0 "nbdinfo with a client certificate (tls-certificates=DIR)" $TO nbdinfo "$X509"
expect_in out "newstyle-fixed with TLS" "nbdinfo says the connection is TLS"
expect 0 "nbdcopy reads vm1 with the client certificate" $TO nbdcopy "$X509" "$T/copy.x509"
check "the copy equals vm1" cmp_vm1 "$T/copy.x509"
qemu_rw tls-creds-x509 "tls-creds-x509,id=tls1,endpoint=client,dir=$K/client" \
	"driver=nbd,host=127.0.0.1,port=$PORT,export=vm1,tls-creds=tls1" 65536

# --- refused, and the daemon serves on ---------------------------------------------------
expect 1 "a plaintext client (nbd://) is refused, with an answer" $TO nbdinfo "nbd://127.0.0.1:$PORT/vm1"
check "the daemon still serves TLS clients" serves
"$PYTHON" "$RAW" "tcp:127.0.0.1:$PORT" tls-required vm1
check "the daemon still serves TLS clients" serves
expect 1 "a wrong key for alice fails the handshake" \
	$TO nbdinfo "nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$K/wrong.psk"
check "the log names the failed handshake and the peer" \
	grep -q "NBD: TLS handshake with 127.0.0.1 port [0-9]* failed" "$T/daemon.log"
check "the daemon still serves TLS clients" serves
expect 1 "an unknown user (bob) fails the handshake" \
	$TO nbdinfo "nbds://bob@127.0.0.1:$PORT/vm1?tls-psk-file=$K/bob.psk"
expect 1 "qemu-img with a wrong key fails" \
	$TO qemu-img info --object "tls-creds-psk,id=tls0,endpoint=client,dir=$K/qemu-wrong,username=alice" \
	--image-opts "$QOPTS"
check "the daemon still serves TLS clients" serves
expect 1 "a client without a certificate is refused" \
	$TO nbdinfo "nbds://127.0.0.1:$PORT/vm1?tls-certificates=$K/nocert"
expect 1 "a client whose certificate another CA signed is refused" \
	$TO nbdinfo "nbds://127.0.0.1:$PORT/vm1?tls-certificates=$K/stranger"
check "the daemon still serves x509 clients" eval "$TO nbdinfo '$X509' >/dev/null 2>&1"

# a client stalled halfway into the TLS handshake: dropped after 3 s,
# while another is served meanwhile
"$PYTHON" "$RAW" "tcp:127.0.0.1:$PORT" starttls-stall 3 "$T/stalled" >"$T/stall.out" 2>&1 & sp=$!
for _ in $(seq 1 100); do [ -e "$T/stalled" ] && break; sleep 0.05; done
check "a client is stalled in the TLS handshake" test -e "$T/stalled"
check "meanwhile another client is served over TLS" serves
wait $sp
check "the stalled client was acknowledged and closed in time" eval "! grep -q '^not ok' '$T/stall.out' && grep -c '^ok' '$T/stall.out' | grep -qx 2"
sed 's/^/# /' "$T/stall.out"

# --- the Unix socket: no TLS there ---------------------------------------------------------
"$PYTHON" "$RAW" "$T/nbd.sock" starttls-policy vm1
expect 0 "plaintext on the Unix socket works with TLS required on TCP" nbdinfo "$(cv export vm1)"
expect 1 "nbds+unix:// is refused (the Unix socket has no TLS)" \
	$TO nbdinfo "nbds+unix:///vm1?socket=$T/nbd.sock&tls-psk-file=$K/keys.psk"

# --- SIGHUP: new keys for new handshakes ----------------------------------------------------
psk alice "$K/keys2.psk"
printf 'nbd_tls = require\nnbd_tls_psk_file = %s\nnbd_tls_certs = %s\nnbd_handshake_timeout = 3\n' \
	"$K/keys2.psk" "$K/server" >"$CONF"
hup "Reload: nbd_tls_psk_file .*keys.psk -> .*keys2.psk" "another key file"
check "the credentials change is logged" grep -q "Reload: TLS credentials changed (now 1 PSK user and x509 certificates)" "$T/daemon.log"
PSK2="nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$K/keys2.psk"
expect 0 "the new key works" $TO nbdinfo "$PSK2"
expect 1 "the old key no longer does" $TO nbdinfo "$PSK"
cp "$K/keys2.psk" "$K/keys2.old"
psk alice "$K/keys2.psk" # a new key for alice, in the same file
hup "Reload: TLS credentials changed" "a key rotated in the same file"
expect 0 "the rotated key works" $TO nbdinfo "$PSK2"
expect 1 "the key before it no longer does" $TO nbdinfo "nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$K/keys2.old"
cp "$K/keys2.psk" "$K/keys2.good"
printf 'alice:zz00\n' >"$K/keys2.psk"
hup "Reload of .*cowvold.conf failed" "a key file with a bad line"
check "the error names the file and line" grep -q "keys2.psk:1: the key of 'alice' is not hexadecimal" "$T/daemon.log"
expect 0 "the key in use before still works" $TO nbdinfo "nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$K/keys2.good"
cp "$K/keys2.good" "$K/keys2.psk"
printf 'nbd_tls = on\nnbd_tls_psk_file = %s\nnbd_handshake_timeout = 3\n' "$K/keys2.psk" >"$CONF"
hup "Reload: nbd_tls require -> on" "TLS offered, not required"
expect 0 "with nbd_tls = on a plaintext client is served" $TO nbdinfo "nbd://127.0.0.1:$PORT/vm1"
expect_in out "newstyle-fixed without TLS" "in plaintext"
expect 0 "and a TLS client too" $TO nbdinfo "$PSK2"
expect_in out "newstyle-fixed with TLS" "over TLS"
expect 1 "nbd_tls_certs removed: the client certificate is refused" $TO nbdinfo "$X509"
stop_daemon
check "cowvold stopped cleanly" test $? = 0

# --- TCP without TLS warns; TLS without TCP too -----------------------------------------------
: >"$CONF"
start_daemon --nbd-tcp="$PORT" --config "$CONF" || exit 1
check "TCP without TLS: the start warns" grep -q "NBD over TCP without TLS: whoever reaches 127.0.0.1 port $PORT" "$T/daemon.log"
"$PYTHON" "$RAW" "tcp:127.0.0.1:$PORT" starttls-policy vm1
stop_daemon
start_daemon --nbd-tls=require --nbd-tls-psk-file="$K/keys.psk" || exit 1
check "TLS without TCP: the start says it does nothing" grep -q "nbd_tls = require does nothing while NBD is not served over TCP" "$T/daemon.log"
stop_daemon
check "cowvold stopped cleanly" test $? = 0
check "no sanitizer report in the daemon's log" eval "! grep -qE 'AddressSanitizer|runtime error|LeakSanitizer' '$T/daemon.log'"
