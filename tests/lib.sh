# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What every test script shares (tests/cli, tests/integration, and through
# tests/kernel/guest-lib.sh the kernel's guest scripts). Source it:
#   . "$(dirname "$0")/../lib.sh"
# Each check prints "ok - ..." or "not ok - ..." (run.sh counts those lines);
# the exit code is the script's own when that is not 0, else 1 if any check
# failed.
#   ok DESC / notok DESC       print a result; notok counts in $NOTOK
#   check DESC CMD...          ok when CMD succeeds (its output shown)
#   step DESC CMD...           the same with CMD's output in $T/out, its end
#                              shown on a failure; returns CMD's status
#   try DESC CMD... / must DESC CMD...   step that goes on / exits on failure
#   refuse DESC PATTERN CMD... CMD fails and says PATTERN (output in $T/out)
#   expect RC DESC CMD...      want exit RC; output in $T/out, $T/err
#   expect_in out|err PATTERN DESC
#   requires CMD...            "ok - CMD is installed", or fail loudly and exit:
#                              a missing tool is a failure, never a skip
#   on_exit CMD                run CMD (eval'd) at exit, newest first
#   start_daemon [ARGS...]     cowvold --state-dir $STATE --socket $SOCK,
#                              waits until it answers; stop_daemon (SIGTERM,
#                              returns its exit code), kill9_daemon (a crash)
#   cv ARGS...                 the CLI against that daemon
# $T is a private folder, removed at exit; $PYTHON the interpreter for every
# Python start (Debian's: a pyenv shim on the PATH costs 0.4 s a start).
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${COWVOL_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
# shellcheck disable=SC2034 # the scripts use them
{
	COWVOL=$BUILD/cowvol
	COWVOLD=$BUILD/cowvold
	COWTOOL=$BUILD/tests/cowtool
	PYTHON=/usr/bin/python3
}
_name=${0##*/}
T=$(mktemp -d "/tmp/cowvol-${_name%.sh}.XXXXXX")
chmod 755 "$T"
STATE=$T/state
SOCK=$T/cowvold.sock
DAEMON_PID=
NOTOK=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export COWVOL_SOCKET=$SOCK

ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; NOTOK=$((NOTOK + 1)); }
fail() { echo "FAIL: $*"; exit 1; }
check() { # DESC CMD...: ok when CMD succeeds
	local d=$1; shift
	if "$@"; then ok "$d"; else notok "$d"; fi
}
# STEP_TIMEOUT=N: step gives CMD N seconds (STEP_TIMEOUT_HINT: what a
# timeout means)
step() {
	local d=$1 rc=0 why=
	shift
	if [ -n "${STEP_TIMEOUT:-}" ]; then
		timeout "$STEP_TIMEOUT" "$@" >"$T/out" 2>&1 || rc=$?
		[ "$rc" != 124 ] || why=": a timeout${STEP_TIMEOUT_HINT:+: $STEP_TIMEOUT_HINT}"
	else
		"$@" >"$T/out" 2>&1 || rc=$?
	fi
	if [ "$rc" = 0 ]; then ok "$d"; else
		notok "$d (exit $rc$why)"
		sed 's/^/#   /' "$T/out" | tail -15
	fi
	return "$rc"
}
try() { step "$@" || true; }   # the test goes on after a failure
must() { step "$@" || exit 1; } # later steps build on this one
refuse() { # DESC PATTERN CMD...
	local d=$1 p=$2 rc=0
	shift 2
	"$@" >"$T/out" 2>&1 || rc=$?
	if [ "$rc" != 0 ] && grep -qiE -- "$p" "$T/out"; then ok "$d ($(head -1 "$T/out"))"; else
		notok "$d (exit $rc, want a failure saying /$p/)"
		sed 's/^/#   /' "$T/out" | tail -5
	fi
}
expect() {
	local want=$1 desc=$2 rc=0
	shift 2
	"$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
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
requires() { # CMD...
	local c
	for c in "$@"; do
		if command -v "$c" >/dev/null; then ok "$c is installed"; else
			notok "$c is installed (tools/deps.sh test installs what the tests need)"
			exit 1
		fi
	done
}

# The exit steps live in a file: helpers called in $(...) subshells add
# theirs too (tests/kernel/guest-lib.sh's loops and dm devices).
: >"$T/.on_exit"
on_exit() { printf '%s\n' "$*" >>"$T/.on_exit"; }
# Bash runs the EXIT trap in a subshell that a signal kills right after its
# fork, before it has reset its traps (a poller killed at once, say): only
# the main shell may clean up.
_MAIN_PID=$BASHPID
_cleanup() {
	local rc=$? line
	[ "$BASHPID" = "$_MAIN_PID" ] || return 0
	set +e
	while read -r line; do eval "$line"; done < <(tac "$T/.on_exit")
	kill9_daemon
	wait 2>/dev/null
	if [ "$NOTOK" -gt 0 ]; then
		echo "FAIL: $NOTOK check(s) failed"
		if [ -s "$T/daemon.log" ]; then
			echo "# daemon log:"
			tail -20 "$T/daemon.log" | sed 's/^/#   /'
		fi
	fi
	rm -rf -- "$T"
	[ "$rc" != 0 ] || rc=$((NOTOK > 0))
	exit "$rc"
}
trap _cleanup EXIT

# it has 30 s to answer (a sanitizer build on a loaded machine, or under
# the VM's emulation, is slow to start; one that dies ends the wait at once)
start_daemon() {
	local end=$((SECONDS + 30))
	"$COWVOLD" --state-dir "$STATE" --socket "$SOCK" "$@" >>"$T/daemon.log" 2>&1 &
	DAEMON_PID=$!
	while [ "$SECONDS" -lt "$end" ]; do
		[ -S "$SOCK" ] && "$COWVOL" status >/dev/null 2>&1 && return 0
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.05
	done
	notok "cowvold started"
	tail -5 "$T/daemon.log" | sed 's/^/#   /'
	return 1
}
stop_daemon() {
	local rc=0
	[ -n "$DAEMON_PID" ] || return 0
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID" || rc=$?
	DAEMON_PID=
	return "$rc"
}
kill9_daemon() {
	[ -n "$DAEMON_PID" ] || return 0
	{ kill -9 "$DAEMON_PID"; wait "$DAEMON_PID"; } 2>/dev/null || true
	DAEMON_PID=
}
cv() { "$COWVOL" "$@"; }

# hup WHAT-THE-LOG-MUST-SAY DESC: SIGHUP the daemon, wait (up to 20 s) for
# the log to say it, and check that it still serves
hup() {
	local n
	n=$(wc -l <"$T/daemon.log")
	kill -HUP "$DAEMON_PID"
	for _ in $(seq 400); do tail -n +"$((n + 1))" "$T/daemon.log" | grep -qE -- "$1" && break; sleep 0.05; done
	check "$2: the log says /$1/" eval "tail -n +$((n + 1)) '$T/daemon.log' | grep -qE -- '$1'"
	check "$2: cowvold still serves" eval "kill -0 $DAEMON_PID && cv status >/dev/null"
}

# test_group SCRIPT: (root only, else it fails) the group GROUP=cowvoltest
# exists, GID its gid; as_member runs a command as nobody in that group
test_group() {
	GROUP=cowvoltest
	if [ "$(id -u)" != 0 ]; then
		notok "$1 runs as root (groupadd, setpriv)"
		exit 1
	fi
	groupadd -f "$GROUP"
	GID=$(getent group "$GROUP" | cut -d: -f3)
	check "test group $GROUP exists (gid $GID)" test -n "$GID"
}
as_member() { setpriv --reuid=nobody --regid=nogroup --groups="$GID" "$@"; }

# setup_chain_u: the volume u (8 MiB, 4 KiB chunks) with snapshots s1 s2 s3
# taken with writes between: the engine chains them, so an older store lacks
# the chunks that changed after the next snapshot was taken.  $T/s1 $T/s2
# $T/s3 and $T/u hold what each read before; STORES the stores, oldest
# first; IMG the image; DROPPED how many chunks the older stores lack of
# what the newer ones hold (what making them standalone copies), counted
# from `cowvol store dump`.  One check.
setup_chain_u() {
	local i
	"$COWTOOL" pattern "$T/p" 8M 5
	{
		cv create u --size 8M && cv write u --offset 0 <"$T/p" &&
			for i in 1 2 3; do
				cv snap "u@s$i" --store-size 4M && head -c 1500000 /dev/urandom >"$T/w" &&
					cv write u --offset $((i * 700000)) <"$T/w" || return 1
			done
	} >/dev/null
	for i in 1 2 3; do cv cat "u@s$i" >"$T/s$i"; done
	cv cat u >"$T/u"
	mapfile -t STORES < <(cv list u --json | sed -n 's/^ *"store":"\(.*\)",$/\1/p')
	IMG=$(cv list u --json | sed -n 's/^ *"path":"\(.*\)",$/\1/p')
	# newest first: each store lacks what the newer ones hold and it does not
	: >"$T/newer"
	DROPPED=0
	for i in 2 1 0; do
		"$COWVOL" store dump "${STORES[$i]}" | awk '{ print $1 }' | sort -u >"$T/own"
		DROPPED=$((DROPPED + $(comm -23 "$T/newer" "$T/own" | wc -l)))
		sort -u "$T/newer" "$T/own" -o "$T/newer"
	done
	check "setup: u with s1 s2 s3 chained (${#STORES[@]} stores; the older lack $DROPPED chunks)" \
		eval "[ ${#STORES[@]} = 3 ] && [ $DROPPED -gt 100 ] && [ -f '$IMG' ]"
}

# setup_v1_v64: v1 (4 MiB, 4 KiB chunks) with snapshots s1, s2, s3 of
# distinct content (v1@s1 reads as $T/A; $T/B, $T/C, $T/D went at 0, 8192,
# 16384 after s1, s2, s3) and v64 (1 MiB, 64 KiB chunks); one check
setup_v1_v64() {
	head -c $((4 << 20)) /dev/urandom >"$T/A"
	head -c 8192 /dev/urandom >"$T/B"
	head -c 8192 /dev/urandom >"$T/C"
	head -c 8192 /dev/urandom >"$T/D"
	{
		cv create v1 --size 4M &&
			cv write v1 <"$T/A" && cv snap v1@s1 &&
			cv write v1 --offset 0 <"$T/B" && cv snap v1@s2 &&
			cv write v1 --offset 8192 <"$T/C" && cv snap v1@s3 &&
			cv write v1 --offset 16384 <"$T/D" &&
			cv create v64 --size 1M --chunk-size 64K
	} >/dev/null
	check "setup: v1 with s1 s2 s3, and v64" eval "[ \$(cv list --json | grep -c '\"full_name\"') = 3 ]"
}

# A daemon under an accelerated clock (libfaketime, Debian's faketime):
#   faketime_daemon TIME [ARGS...]   start_daemon with its wall clock frozen
#                                    at TIME ("2027-01-04 00:30:00", in its
#                                    TZ: $FAKE_TZ, default UTC), the
#                                    monotonic clock real, and its clock
#                                    thread waking every 100 ms
#   fake_now TIME                    move that wall clock to TIME
#   wait_clock VOLUME TIME           wait (30 s at most) until the daemon's
#                                    clock has done a whole round, begun
#                                    after the call, at TIME or later
#                                    (schedule --json's "clock" and
#                                    "clock_rounds")
# A missing libfaketime fails the test (tools/deps.sh test installs it).
faketime_daemon() {
	local lib
	lib=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1 2>/dev/null | head -1)
	if [ -z "$lib" ]; then
		notok "libfaketime is installed (tools/deps.sh test installs faketime)"
		exit 1
	fi
	fake_now "$1"
	shift
	cat >"$T/cowvold-faked" <<EOS
#!/bin/sh
LD_PRELOAD=$lib FAKETIME_TIMESTAMP_FILE=$T/faketime FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \
TZ=${FAKE_TZ:-UTC} COWVOLD_CLOCK_TICK_MS=100 ASAN_OPTIONS=\${ASAN_OPTIONS:+\$ASAN_OPTIONS:}verify_asan_link_order=0 \
exec "$COWVOLD" "\$@"
EOS
	chmod +x "$T/cowvold-faked"
	COWVOLD=$T/cowvold-faked start_daemon "$@"
}
fake_now() { echo "$1" >"$T/faketime.new" && mv "$T/faketime.new" "$T/faketime"; }
wait_clock() {
	local want seen rounds r0 end=$((SECONDS + 30))
	want=$(TZ=${FAKE_TZ:-UTC} date -d "$2" +%s)
	r0=$("$COWVOL" schedule "$1" --json 2>/dev/null | sed -n 's/^ *"clock_rounds":\([0-9]*\).*/\1/p' | head -1)
	while [ "$SECONDS" -lt "$end" ]; do
		"$COWVOL" schedule "$1" --json >"$T/clock.json" 2>/dev/null
		seen=$(sed -n 's/^ *"clock":\([0-9]*\).*/\1/p' "$T/clock.json" | head -1)
		rounds=$(sed -n 's/^ *"clock_rounds":\([0-9]*\).*/\1/p' "$T/clock.json" | head -1)
		# a whole round that began after the call: r0 + 2
		[ -n "$seen" ] && [ -n "$r0" ] && [ "$seen" -ge "$want" ] && [ "$rounds" -ge $((r0 + 2)) ] && return 0
		sleep 0.05
	done
	notok "the daemon's clock reached $2 (it is at ${seen:-?})"
	return 1
}
