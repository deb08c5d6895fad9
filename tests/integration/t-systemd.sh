#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvold under systemd: (a) the units in systemd/ pass `systemd-analyze
# verify` with no error and no warning (and a broken copy of them does not,
# so the check can fail); they agree with the daemon's own defaults;
# (b) socket activation: started by systemd-socket-activate with the
# listening socket in LISTEN_FDS, cowvold serves it (status, create) and says
# so in its log; (c) sd_notify: READY=1 once it answers, STOPPING=1 on
# SIGTERM, then exit 0.
. "$(dirname "$0")/../lib.sh"

# systemd-analyze and systemd-socket-activate come with Debian's systemd
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-socket-activate >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y systemd >"$T/apt.log" 2>&1 ||
			tail -5 "$T/apt.log" | sed 's/^/#   /'
	fi
fi
check "systemd-analyze and systemd-socket-activate are installed (apt-get install systemd)" \
	eval 'command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null'
command -v systemd-analyze >/dev/null || exit 1
requires "$PYTHON" # the notification socket

# --- (a) the units --------------------------------------------------------------
U=$T/units
mkdir -p "$U/good" "$U/bad-key" "$U/bad-exec" "$U/bad-value" "$U/man/man8"
sed "s|@SBINDIR@|$BUILD|g" "$REPO/systemd/cowvold.service.in" >"$U/good/cowvold.service"
cp "$REPO/systemd/cowvold.socket" "$REPO/systemd/cowvold-nbd.socket" "$U/good/"
# Documentation=man:cowvold(8) man:cowvol(8): verify runs man(1) on each
cp "$REPO"/doc/*.8 "$U/man/man8/"

# verify DIR: success only when systemd-analyze exits 0 AND says nothing at
# warning level (an unknown key or a bad value is only a warning to it)
verify() {
	(cd "$1" && MANPATH=$U/man SYSTEMD_LOG_LEVEL=warning SYSTEMD_LOG_COLOR=0 \
		systemd-analyze verify "$1/cowvold.service" "$1/cowvold.socket" "$1/cowvold-nbd.socket") >"$T/verify.out" 2>&1
	local rc=$?
	[ "$rc" = 0 ] && [ ! -s "$T/verify.out" ]
}
show_verify() { sed 's/^/#   /' "$T/verify.out" | head -10; }

check "the service and socket units pass systemd-analyze verify with no error or warning" verify "$U/good"
[ -s "$T/verify.out" ] && show_verify
check "no @VARIABLE@ is left in the service after substituting @SBINDIR@" \
	eval "! grep -q '@[A-Z_]*@' '$U/good/cowvold.service'"

# broken copies must fail the same check, or it proves nothing
cp "$U/good/cowvold.socket" "$U/good/cowvold-nbd.socket" "$U/bad-key/"
sed '/^\[Service\]/a Frobnicate=yes' "$U/good/cowvold.service" >"$U/bad-key/cowvold.service"
check "a copy with an unknown key fails the check" \
	eval "! verify '$U/bad-key' && grep -q Frobnicate '$T/verify.out'"
cp "$U/good/cowvold.socket" "$U/good/cowvold-nbd.socket" "$U/bad-value/"
sed 's/^Type=notify$/Type=notifyy/' "$U/good/cowvold.service" >"$U/bad-value/cowvold.service"
check "a copy with a bad value (Type=notifyy) fails the check" \
	eval "! verify '$U/bad-value' && grep -q notifyy '$T/verify.out'"
cp "$U/good/cowvold.socket" "$U/good/cowvold-nbd.socket" "$U/bad-exec/"
sed "s|^ExecStart=[^ ]*|ExecStart=$T/no-such-cowvold|" "$U/good/cowvold.service" >"$U/bad-exec/cowvold.service"
check "a copy whose ExecStart does not exist fails the check" \
	eval "! verify '$U/bad-exec' && grep -q no-such-cowvold '$T/verify.out'"

# the units and the daemon agree on where things are
default_sock=$("$COWVOLD" --help | sed -n 's/.*--socket PATH.*(default \([^)]*\)).*/\1/p')
default_state=$("$COWVOLD" --help | sed -n 's/.*--state-dir DIR.*(default \([^)]*\)).*/\1/p')
check "cowvold.socket listens where cowvold listens by default ($default_sock)" \
	grep -qx "ListenStream=$default_sock" "$REPO/systemd/cowvold.socket"
check "cowvold.service's StateDirectory=cowvol is cowvold's default state folder ($default_state)" \
	eval "[ '$default_state' = /var/lib/cowvol ] && grep -qx 'StateDirectory=cowvol' '$REPO/systemd/cowvold.service.in'"
check "cowvold.socket: mode 0660, group cowvol (as the daemon's own socket; sysusers makes the group)" \
	eval "grep -qx 'SocketMode=0660' '$REPO/systemd/cowvold.socket' && grep -qx 'SocketGroup=cowvol' '$REPO/systemd/cowvold.socket' && grep -qx 'g cowvol -' '$REPO/systemd/cowvol-sysusers.conf'"
check "cowvold.service is Type=notify (cowvold sends READY=1)" grep -qx 'Type=notify' "$U/good/cowvold.service"
check "cowvold.service runs before local filesystems are mounted (kernel volumes exist by then)" \
	eval "grep -q '^Before=.*local-fs.target' '$U/good/cowvold.service' && grep -q '^WantedBy=.*local-fs.target' '$U/good/cowvold.service' && grep -qx 'DefaultDependencies=no' '$U/good/cowvold.service'"
default_nbd=$("$COWVOLD" --help | sed -n 's/.*nbd_socket = \(.*\)$/\1/p')
check "cowvold-nbd.socket listens where cowvold serves NBD by default ($default_nbd)" \
	grep -qx "ListenStream=$default_nbd" "$REPO/systemd/cowvold-nbd.socket"
check "cowvold-nbd.socket names its socket 'nbd' and starts cowvold.service" \
	eval "grep -qx 'FileDescriptorName=nbd' '$REPO/systemd/cowvold-nbd.socket' && grep -qx 'Service=cowvold.service' '$REPO/systemd/cowvold-nbd.socket'"
check "cowvold-nbd.socket: mode 0660, group cowvol" \
	eval "grep -qx 'SocketMode=0660' '$REPO/systemd/cowvold-nbd.socket' && grep -qx 'SocketGroup=cowvol' '$REPO/systemd/cowvold-nbd.socket'"

# --- (b) socket activation --------------------------------------------------------
ACT=$T/act.sock
systemd-socket-activate -l "$ACT" -- "$COWVOLD" --foreground --state-dir "$T/state-act" \
	>"$T/act.log" 2>&1 &
ACT_PID=$!
for _ in $(seq 1 100); do
	[ -S "$ACT" ] && break
	sleep 0.05
done
check "systemd-socket-activate listens on $ACT" test -S "$ACT"
# the first connection starts cowvold, which is handed the listening socket
expect 0 "cowvol status through the socket from systemd" env COWVOL_SOCKET="$ACT" "$COWVOL" status
expect_in out "cowvold 0\.|protocol 1" "status answers with the daemon's version"
check "cowvold's log says it serves the socket from systemd" grep -q "serving the socket from systemd" "$T/act.log"
expect 0 "create a volume through the activated socket" \
	env COWVOL_SOCKET="$ACT" "$COWVOL" create actvol --size 1M
check "the volume is in the activated daemon's catalogue" \
	grep -q '"name": *"actvol"' "$T/state-act/catalogue.json"
expect 0 "list through the activated socket" env COWVOL_SOCKET="$ACT" "$COWVOL" list
expect_in out "^actvol " "list shows the new volume"
expect 0 "cowvol export: NBD beside the activated socket" env COWVOL_SOCKET="$ACT" "$COWVOL" export actvol
check "the URI names $T/nbd.sock" grep -q "socket=$T/nbd.sock\$" "$T/out"
kill -TERM "$ACT_PID"
wait "$ACT_PID"
rc=$?
check "the socket-activated cowvold exits 0 on SIGTERM (exit $rc)" test "$rc" = 0
check "it stopped cleanly (log)" grep -q "Stopped cleanly" "$T/act.log"
check "it leaves systemd's socket file in place (systemd removes it, RemoveOnStop=)" test -S "$ACT"
[ "$NOTOK" -gt 0 ] && sed 's/^/#   act: /' "$T/act.log" | tail -10

# both sockets from systemd, as cowvold.socket and cowvold-nbd.socket pass them
ACT2=$T/act2.sock
NBD2=$T/act2-nbd.sock
systemd-socket-activate -l "$ACT2" -l "$NBD2" --fdname=cowvold.socket:nbd -- "$COWVOLD" --foreground \
	--state-dir "$T/state-act" >"$T/act2.log" 2>&1 &
ACT_PID=$!
for _ in $(seq 1 100); do
	[ -S "$ACT2" ] && [ -S "$NBD2" ] && break
	sleep 0.05
done
check "systemd-socket-activate listens on both sockets" eval "[ -S '$ACT2' ] && [ -S '$NBD2' ]"
expect 0 "cowvol export through the activated control socket" env COWVOL_SOCKET="$ACT2" "$COWVOL" export actvol
check "the URI names the NBD socket systemd passed" grep -q "socket=$NBD2\$" "$T/out"
if command -v nbdinfo >/dev/null; then
	expect 0 "nbdinfo through the activated NBD socket" nbdinfo "$(cat "$T/out")"
	expect_in out "export-size: 1048576 " "it serves actvol"
else
	notok "nbdinfo is installed (libnbd-bin; t-nbd installs it)"
fi
kill -TERM "$ACT_PID"
wait "$ACT_PID"
rc=$?
check "it exits 0 on SIGTERM (exit $rc)" test "$rc" = 0
check "it leaves both of systemd's socket files in place" eval "[ -S '$ACT2' ] && [ -S '$NBD2' ]"
[ "$NOTOK" -gt 0 ] && sed 's/^/#   act2: /' "$T/act2.log" | tail -10

# --- (c) sd_notify ----------------------------------------------------------------
NS=$T/notify.sock
"$PYTHON" "$(dirname "$0")/notify-listen.py" "$NS" 30 >"$T/notify.out" 2>&1 &
LISTEN_PID=$!
for _ in $(seq 1 100); do
	grep -q '^listening$' "$T/notify.out" 2>/dev/null && break
	sleep 0.05
done
check "the notification socket is bound" test -S "$NS"
NOTIFY_SOCKET=$NS "$COWVOLD" --foreground --state-dir "$T/state-notify" --socket "$T/notify-daemon.sock" \
	>"$T/notify-daemon.log" 2>&1 &
N_PID=$!
for _ in $(seq 1 200); do
	grep -qx 'READY=1' "$T/notify.out" && break
	kill -0 "$N_PID" 2>/dev/null || break
	sleep 0.05
done
check "READY=1 arrives" grep -qx 'READY=1' "$T/notify.out"
# ready means serving: the socket answers at once, no retry
expect 0 "the daemon answers as soon as READY=1 arrived" "$COWVOL" --socket "$T/notify-daemon.sock" status
check "a STATUS= line names the socket it serves" grep -qx "STATUS=Serving $T/notify-daemon.sock" "$T/notify.out"
check "no STOPPING=1 before SIGTERM" eval "! grep -qx 'STOPPING=1' '$T/notify.out'"
kill -TERM "$N_PID"
wait "$N_PID"
rc=$?
check "cowvold exits 0 on SIGTERM (exit $rc)" test "$rc" = 0
for _ in $(seq 1 100); do
	grep -qx 'STOPPING=1' "$T/notify.out" && break
	sleep 0.05
done
check "STOPPING=1 arrives on SIGTERM" grep -qx 'STOPPING=1' "$T/notify.out"
check "READY=1 came before STOPPING=1" \
	eval "[ \$(grep -nx 'READY=1' '$T/notify.out' | cut -d: -f1 | head -1) -lt \$(grep -nx 'STOPPING=1' '$T/notify.out' | cut -d: -f1 | head -1) ]"
check "its own socket is removed when it stops" test ! -e "$T/notify-daemon.sock"
wait "$LISTEN_PID" 2>/dev/null
if [ "$NOTOK" -gt 0 ]; then
	sed 's/^/#   notify: /' "$T/notify.out"
	sed 's/^/#   daemon: /' "$T/notify-daemon.log" | tail -10
fi
