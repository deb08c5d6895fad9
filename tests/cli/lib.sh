# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers for CLI tests: each check prints "ok - ..." or "not ok - ...".
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${COWVOL_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
COWVOL=$BUILD/cowvol
COWTOOL=$BUILD/tests/cowtool
T=$(mktemp -d /tmp/cowvol-cli.XXXXXX)
NOTOK=0
# the exit code says whether every check passed
# (bash runs it in a subshell that a signal kills right after its fork too:
# only the main shell cleans up)
MAIN_PID=$BASHPID
trap '[ "$BASHPID" = "$MAIN_PID" ] || exit; rm -rf "$T"; exit $((NOTOK > 0))' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; NOTOK=$((NOTOK + 1)); }
check() { # DESC CMD...: ok when CMD succeeds
	local d=$1; shift
	if "$@"; then ok "$d"; else notok "$d"; fi
}

# expect RC DESC CMD...: run CMD, want exit code RC; output in $T/out, $T/err
expect() {
	local want=$1 desc=$2 rc
	shift 2
	"$@" >"$T/out" 2>"$T/err"
	rc=$?
	if [ "$rc" = "$want" ]; then
		ok "$desc"
	else
		notok "$desc (exit $rc, want $want)"
		sed 's/^/#   /' "$T/err" | head -5
	fi
}

# grep_out FILE PATTERN DESC
expect_in() {
	if grep -qiE -- "$2" "$T/$1"; then ok "$3"; else notok "$3 (no /$2/ in $1)"; sed 's/^/#   /' "$T/$1" | head -5; fi
}
