#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Stalled peers hold nothing for long (cowvold(8), LIMITS): a cat into a pipe
# nobody reads, a write from a pipe nobody writes into, NBD clients that
# never read their replies and a control client that never reads its answers
# are cut off after client_timeout, and SIGTERM ends the daemon within
# seconds whatever they do; NBD replies in memory stay within
# nbd_in_flight_mib however many clients leave them unread, while root keeps
# working.
. "$(dirname "$0")/../lib.sh"

RAW="$PYTHON $(dirname "$0")/rawsock.py"
NBD_SOCK=$T/nbd.sock
STALL="$PYTHON $(dirname "$0")/nbd-stall.py"
export COWVOL_DEBUG_HEAP=1 # status answers heap_in_use
heap() { "$COWVOL" status --json | sed -n 's/.*"heap_in_use": *\([0-9]*\).*/\1/p'; }
# wait_gone PID SECONDS: true once PID has ended
wait_gone() {
	local end=$((SECONDS + $2))
	while kill -0 "$1" 2>/dev/null; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}

printf 'client_timeout = 3\n' >"$T/short.conf"
start_daemon --config "$T/short.conf" || exit 1
cv create v1 --size 32M >/dev/null
head -c $((8 << 20)) /dev/urandom | cv write v1 >/dev/null

# --- cat into a pipe nobody reads ----------------------------------------------------
mkfifo "$T/fifo"
sleep 600 <"$T/fifo" &
READER=$!
"$COWVOL" cat v1 >"$T/fifo" 2>"$T/cat.err" &
CAT=$!
sleep 1
expect 1 "while the cat is stalled, rm v1 is refused (in use)" cv rm v1
expect_in err "volume 'v1' is in use by a cat \(uid 0 pid $CAT\)" "rm says the volume is in use, by the cat and its pid"
if wait_gone "$CAT" 30; then
	ok "the stalled cat ends (client_timeout 3 s)"
else
	notok "the stalled cat ends (client_timeout 3 s)"
	kill "$CAT"
fi
wait "$CAT"
check "the cat exits 1" test $? = 1
check "it says nothing was read for 3 s" grep -q "nothing was read for 3 s (client_timeout)" "$T/cat.err"
# what the pipe took before it filled (its size: 64 KiB here) counts
catbytes=$(sed -n 's/.*cat stopped after \([0-9]*\) bytes.*/\1/p' "$T/cat.err")
check "it counts the bytes the pipe took before it filled (${catbytes:-?}, not 0)" test "${catbytes:-0}" -gt 0
kill "$READER" 2>/dev/null
wait "$READER" 2>/dev/null
expect 0 "the volume is free again: a snapshot works" cv snap v1@after-cat
expect 0 "rm of the snapshot works" cv rm v1@after-cat

# --- a write from a pipe nobody writes into (raw: the CLI sends a memfd) ---------------
rm -f "$T/fifo"
mkfifo "$T/fifo"
sleep 600 >"$T/fifo" &
WRITER=$!
printf '{"v":1,"id":7,"op":"write","args":{"target":"v1","length":65536}}\n' |
	$RAW "$SOCK" "$T/fifo" r >"$T/raw" 2>&1 &
RAWPID=$!
if wait_gone "$RAWPID" 30; then
	ok "a write from a silent pipe ends"
else
	notok "a write from a silent pipe ends"
	kill "$RAWPID"
fi
check "it is answered ETIMEDOUT, nothing came for 3 s" \
	grep -q "ok=false code=ETIMEDOUT message=write stopped after 0 of 65536 bytes (all written): nothing came for 3 s" \
	"$T/raw"
kill "$WRITER" 2>/dev/null
wait "$WRITER" 2>/dev/null

# --- a control client that never reads its answers -------------------------------------
"$PYTHON" - "$SOCK" >"$T/flood" 2>&1 <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(sys.argv[1])
line = b'{"v":1,"id":1,"op":"list"}\n'
s.settimeout(30)
sent = 0
try:
    while True:
        s.sendall(line * 64)
        sent += 64
except OSError as e:
    print("sent %d, then %s" % (sent, e.__class__.__name__), flush=True)
time.sleep(600)
EOF
FLOOD=$!
sleep 1
expect 0 "root's status answers while a client ignores its answers" cv status
end=$((SECONDS + 30))
until grep -q "then" "$T/flood" || [ "$SECONDS" -ge "$end" ]; do sleep 0.2; done
check "the daemon cut off the client that read none of its answers" grep -q "then" "$T/flood"
kill "$FLOOD" 2>/dev/null
wait "$FLOOD" 2>/dev/null

# --- NBD writes whose payload never comes hold the budget only client_timeout ----------
$STALL "$NBD_SOCK" 6 --go v1 1 $((32 << 20)) write >"$T/wstall" 2>&1 &
WSTALL=$!
end=$((SECONDS + 60))
until grep -q connected "$T/wstall" || [ "$SECONDS" -ge "$end" ]; do sleep 0.2; done
expect 0 "nbdcopy reads v1 while 6 clients hold 32 MiB writes without their payload" \
	timeout 60 nbdcopy "nbd+unix:///v1?socket=$NBD_SOCK" "$T/nbdcopy.out"
check "the copy is v1" eval "cv cat v1 | cmp -s - '$T/nbdcopy.out'"
kill "$WSTALL" 2>/dev/null
wait "$WSTALL" 2>/dev/null

# --- NBD clients that never read their replies: memory, then cut off -------------------
h0=$(heap)
$STALL "$NBD_SOCK" 16 --go v1 2 $((8 << 20)) >"$T/stall" 2>&1 &
STALLPID=$!
end=$((SECONDS + 60))
until grep -q connected "$T/stall" || [ "$SECONDS" -ge "$end" ]; do sleep 0.2; done
check "16 NBD clients sent 2 reads of 8 MiB each ($(cat "$T/stall"))" grep -q "connected 16 alive 16" "$T/stall"
expect 0 "root's status answers meanwhile" cv status
sleep 1
h1=$(heap)
check "their replies are held meanwhile (heap ${h0} -> ${h1}, at least 64 MiB more)" \
	test $((h1 - h0)) -ge $((64 << 20))
# cut off after client_timeout: their replies' memory comes back
end=$((SECONDS + 30))
until [ $(($(heap) - h0)) -lt $((16 << 20)) ] || [ "$SECONDS" -ge "$end" ]; do sleep 0.5; done
h1=$(heap)
check "the unread replies' memory came back after client_timeout (heap ${h0} -> ${h1})" \
	test $((h1 - h0)) -lt $((16 << 20))
kill "$STALLPID"
wait "$STALLPID" 2>/dev/null
stop_daemon
check "cowvold stopped cleanly (exit 0)" test $? = 0

# --- SIGTERM within seconds, whatever the peers do --------------------------------------
printf 'client_timeout = 600\nnbd_in_flight_mib = 64\n' >"$T/long.conf"
start_daemon --config "$T/long.conf" || exit 1
h0=$(heap)
$STALL "$NBD_SOCK" 16 --go v1 1 $((32 << 20)) >"$T/stall" 2>&1 &
STALLPID=$!
end=$((SECONDS + 60))
until grep -q connected "$T/stall" || [ "$SECONDS" -ge "$end" ]; do sleep 0.2; done
sleep 2
h1=$(heap)
grown=$(((h1 - h0) >> 20))
echo "# heap: ${h0:-?} -> ${h1:-?} bytes with 16 clients leaving 32 MiB replies unread (+${grown} MiB)"
# 16 x 32 MiB = 512 MiB without a budget; 64 MiB with it (one reply of 32 MiB
# may pass it alone): 200 MiB leaves room for anything else
check "memory of unread NBD replies stays within the budget: +${grown} MiB < 200 MiB" test "$grown" -lt 200
check "and at least one reply is held (+${grown} MiB >= 32 MiB)" test "$grown" -ge 32
expect 0 "root's list answers meanwhile" cv list
rm -f "$T/fifo"
mkfifo "$T/fifo"
sleep 600 <"$T/fifo" &
READER=$!
"$COWVOL" cat v1 >"$T/fifo" 2>/dev/null &
CAT=$!
"$PYTHON" - "$SOCK" >/dev/null 2>&1 <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(sys.argv[1])
try:
    while True:
        s.sendall(b'{"v":1,"id":1,"op":"list"}\n' * 64)
except OSError:
    pass
time.sleep(600)
EOF
FLOOD=$!
sleep 2
t0=$SECONDS
kill -TERM "$DAEMON_PID"
if wait_gone "$DAEMON_PID" 30; then
	ok "SIGTERM ended the daemon in $((SECONDS - t0)) s with a stalled cat, NBD clients and a control client"
else
	notok "SIGTERM ended the daemon within 30 s with a stalled cat, NBD clients and a control client"
	kill -9 "$DAEMON_PID"
fi
wait "$DAEMON_PID"
check "it stopped cleanly (exit 0)" test $? = 0
DAEMON_PID=
kill "$READER" "$CAT" "$FLOOD" "$STALLPID" 2>/dev/null
wait 2>/dev/null
start_daemon || exit 1
expect 0 "after the restart v1 reads whole" cv cat v1
check "v1 is 32 MiB" test "$(stat -c %s "$T/out")" = $((32 << 20))
stop_daemon
