# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Integration tests: the real cowvold on a private socket and state folder,
# driven by the real cowvol CLI.  Each check prints "ok - ..." or
# "not ok - ..."; the script's exit code says whether all passed.
#   start_daemon [ARGS...]   cowvold --state-dir $STATE --socket $SOCK
#   stop_daemon              SIGTERM and wait; kill9_daemon for a crash
#   cv ARGS...               the CLI against that daemon
#   expect RC DESC CMD...    run CMD, want exit RC; output in $T/out, $T/err
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${COWVOL_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
COWVOL=$BUILD/cowvol
COWVOLD=$BUILD/cowvold
COWTOOL=$BUILD/tests/cowtool
T=$(mktemp -d /tmp/cowvol-it.XXXXXX)
chmod 755 "$T"
STATE=$T/state
SOCK=$T/cowvold.sock
DAEMON_PID=
NOTOK=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export COWVOL_SOCKET=$SOCK

ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; NOTOK=$((NOTOK + 1)); }
check() { # DESC CMD...: ok when CMD succeeds
	local d=$1; shift
	if "$@"; then ok "$d"; else notok "$d"; fi
}

# Bash runs the EXIT trap in a subshell that a signal kills right after its
# fork, before it has reset its traps (a poller killed at once, say): only
# the main shell may clean up.
MAIN_PID=$BASHPID
_cleanup() {
	[ "$BASHPID" = "$MAIN_PID" ] || return 0
	[ -n "$DAEMON_PID" ] && { kill -9 "$DAEMON_PID"; wait "$DAEMON_PID"; } 2>/dev/null
	wait 2>/dev/null
	if [ "$NOTOK" -gt 0 ] && [ -f "$T/daemon.log" ]; then
		echo "# daemon log:"
		tail -20 "$T/daemon.log" | sed 's/^/#   /'
	fi
	rm -rf "$T"
	exit $((NOTOK > 0))
}
trap _cleanup EXIT

start_daemon() {
	"$COWVOLD" --state-dir "$STATE" --socket "$SOCK" "$@" >>"$T/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 1 200); do
		[ -S "$SOCK" ] && "$COWVOL" status >/dev/null 2>&1 && return 0
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.05
	done
	notok "cowvold started"
	return 1
}

stop_daemon() {
	[ -n "$DAEMON_PID" ] || return 0
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID"
	local rc=$?
	DAEMON_PID=
	return $rc
}

kill9_daemon() {
	[ -n "$DAEMON_PID" ] || return 0
	{ kill -9 "$DAEMON_PID"; wait "$DAEMON_PID"; } 2>/dev/null
	DAEMON_PID=
}

cv() { "$COWVOL" "$@"; }

expect() {
	local want=$1 desc=$2 rc
	shift 2
	"$@" >"$T/out" 2>"$T/err" </dev/null
	rc=$?
	if [ "$rc" = "$want" ]; then
		ok "$desc"
	else
		notok "$desc (exit $rc, want $want)"
		sed 's/^/#   /' "$T/err" | head -5
	fi
}

expect_in() { # FILE(out|err) PATTERN DESC
	if grep -qiE -- "$2" "$T/$1"; then ok "$3"; else
		notok "$3 (no /$2/ in $1)"
		sed 's/^/#   /' "$T/$1" | head -5
	fi
}
