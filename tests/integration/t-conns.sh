#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Connection budgets (cowvold(8), LIMITS): 1,100 idle NBD connections over
# TCP from an unprivileged user, and idle control connections from twenty
# users who may only ask status, do not lock root or the group out: one
# peer (user, or TCP address) holds at most max_connections_per_peer, and
# the last 16 slots of each socket are kept for root and the group.  Idle
# control connections end after idle_timeout; the refusals are logged a few
# times, not once per connection.  Needs root (setpriv, groupadd).
. "$(dirname "$0")/../lib.sh"

test_group t-conns.sh
STALL="$PYTHON $(dirname "$0")/nbd-stall.py"
as_uid() { local u=$1; shift; setpriv --reuid="$u" --regid=65534 --clear-groups "$@"; }
# the clients hold many descriptors; the daemon raises its own limit
ulimit -n 4096

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'group = %s\nidle_timeout = 600\n' "$GROUP" >"$T/cowvold.conf"
start_daemon --config "$T/cowvold.conf" --nbd-tcp="127.0.0.1:$PORT" || exit 1
cv create v1 --size 1M >/dev/null
chmod 0666 "$SOCK" # status for anyone: the peers this test is about

# wait_line FILE: until the stall script printed its count
wait_line() {
	local end=$((SECONDS + 120))
	until grep -q connected "$1" 2>/dev/null || [ "$SECONDS" -ge "$end" ]; do sleep 0.2; done
}
alive() { sed -n 's/.*alive \([0-9]*\).*/\1/p' "$1"; }

# --- 1,100 idle NBD connections from nobody over TCP ----------------------------------
as_uid 65534 $STALL "127.0.0.1:$PORT" 1100 --go v1 >"$T/tcp" 2>&1 &
PIDS=$!
wait_line "$T/tcp"
check "nobody opened 1,100 NBD connections over TCP ($(cat "$T/tcp"))" grep -q "connected" "$T/tcp"
check "64 of them stay (max_connections_per_peer), the rest are closed ($(alive "$T/tcp") alive)" \
	test "$(alive "$T/tcp")" = 64
expect 0 "root's status answers" cv status
expect 0 "root reads v1 over NBD (Unix socket)" nbdinfo --size "nbd+unix:///v1?socket=$T/nbd.sock"

# --- idle control connections from 20 users who may only ask status --------------------
for u in $(seq 60001 60020); do
	as_uid "$u" $STALL "$SOCK" 64 >"$T/ctl.$u" 2>&1 &
	PIDS="$PIDS $!"
done
total=0
for u in $(seq 60001 60020); do
	wait_line "$T/ctl.$u"
	total=$((total + $(alive "$T/ctl.$u")))
done
check "20 users x 64 idle control connections: 1008 stay, 16 slots are kept ($total alive)" test "$total" = 1008
as_uid 60021 $STALL "$SOCK" 4 >"$T/ctl.60021" 2>&1 &
PIDS="$PIDS $!"
wait_line "$T/ctl.60021"
check "a 21st user gets none ($(cat "$T/ctl.60021"))" test "$(alive "$T/ctl.60021")" = 0
expect 0 "root's status still answers" cv status
expect_in out "clients: " "status counts the clients"
expect 0 "root still snaps" cv snap v1@while-full
expect 0 "root still lists" cv list
expect 0 "a member of $GROUP still lists" as_member "$COWVOL" list
expect_in out "v1@while-full" "the member sees root's snapshot"
n=$(grep -c "Too many connections" "$T/daemon.log")
check "the refusals are logged a few times, not once each ($n lines for $((1100 - 64 + 1280 - 1008 + 4)) refusals)" \
	test "$n" -le 20
check "the log names the peer and the limit" \
	grep -q "Too many connections on NBD over TCP: closing a new one from 127.0.0.1 (one peer's limit (max_connections_per_peer): 64)" \
	"$T/daemon.log"
# shellcheck disable=SC2086
kill $PIDS 2>/dev/null
# shellcheck disable=SC2086
wait $PIDS 2>/dev/null

# --- idle control connections end after idle_timeout (reloaded: SIGHUP) -----------------
printf 'group = %s\nidle_timeout = 2\n' "$GROUP" >"$T/cowvold.conf"
hup "Reload: idle_timeout 600 -> 2" "SIGHUP applies idle_timeout = 2"
"$PYTHON" - "$SOCK" >"$T/idle" 2>&1 <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(60)
t0 = time.monotonic()
print("closed" if s.recv(1) == b"" else "data", "after", round(time.monotonic() - t0), "s")
EOF
check "an idle control connection is closed after idle_timeout ($(cat "$T/idle"))" \
	eval "grep -q '^closed after' '$T/idle' && [ \$(awk '{print \$3}' '$T/idle') -lt 30 ]"
expect 0 "root's status still answers" cv status

stop_daemon
check "cowvold stopped cleanly (exit 0)" test $? = 0
