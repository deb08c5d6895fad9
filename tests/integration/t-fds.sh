#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Descriptors: every open snapshot holds one, so cowvold raises its soft
# limit of open files to the hard one at start (the unit sets
# LimitNOFILE=).  Here the script runs with a soft limit of 64 and a hard
# one of 512: the daemon serves 200 snapshots of one volume (more than 64),
# restarts with all of them, and when the hard limit is hit anyway the
# refused snap names it, and nothing else is lost.
. "$(dirname "$0")/../lib.sh"

ulimit -Sn 64 && ulimit -Hn 512 || { notok "the test can lower its limits of open files"; exit 1; }
RAW=$REPO/tests/integration/rawsock.py
start_daemon || exit 1
check "cowvold raised its soft limit to the hard one (512)" \
	grep -qE '^Max open files +512 +512 ' "/proc/$DAEMON_PID/limits"
must "create v (16 MiB)" cv create v --size 16M
snaps() { # FROM TO: snap v@sN for N in FROM..TO on one connection
	local i
	for i in $(seq "$1" "$2"); do
		printf '{"v": 1, "id": %d, "op": "snap", "args": {"volume": "v", "name": "s%d", "store_size": 1048576}}\n' "$i" "$i"
	done | "$PYTHON" "$RAW" "$SOCK" >"$T/snaps.out"
}
snaps 1 200
check "200 snapshots taken, each answered ok" test "$(grep -c 'ok=true' "$T/snaps.out")" = 200
check "list shows 200 active snapshots" eval "[ \$(cv list v | grep -c '^ *v@s[0-9]* .* active') = 200 ]"
stop_daemon
rc=$?
check "SIGTERM: exit 0 (got $rc)" test $rc = 0
start_daemon || exit 1
check "restarted: the 200 snapshots are active again" eval "[ \$(cv list v | grep -c '^ *v@s[0-9]* .* active') = 200 ]"

# past the hard limit: the snap that cannot open its store says why
snaps 201 700
grep -m1 'ok=false' "$T/snaps.out" >"$T/first-refusal"
sed 's/^/#   /' "$T/first-refusal"
check "past the hard limit a snap is refused" test -s "$T/first-refusal"
check "and the error names the limit" grep -q "RLIMIT_NOFILE, is 512" "$T/first-refusal"
n=$(grep -c 'ok=true' "$T/snaps.out")
check "cowvold still serves: list answers" eval "cv list v >'$T/list'"
check "every snapshot taken is listed ($((200 + n)))" test "$(grep -c '^ *v@s[0-9]' "$T/list")" = $((200 + n))
# take some away: the room comes back
for i in $(seq 1 50); do
	printf '{"v": 1, "id": %d, "op": "rm", "args": {"target": "v@s%d"}}\n' "$i" "$i"
done | "$PYTHON" "$RAW" "$SOCK" >"$T/rm.out"
check "50 removed" test "$(grep -c 'ok=true' "$T/rm.out")" = 50
check "then a snap works again" cv snap v@again --store-size 1M
stop_daemon
rc=$?
check "SIGTERM: exit 0 (got $rc)" test $rc = 0
