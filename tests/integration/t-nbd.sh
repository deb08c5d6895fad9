#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Volumes and snapshots over NBD, with Debian's real clients (libnbd's nbdinfo
# and nbdcopy, qemu-img, qemu-io) and a raw client (nbd-raw.py) for what real
# clients never send; the daemon keeps serving through all of it.
. "$(dirname "$0")/../lib.sh"
RAW=$REPO/tests/integration/nbd-raw.py

if ! command -v nbdinfo >/dev/null || ! command -v nbdcopy >/dev/null || ! command -v qemu-io >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libnbd-bin qemu-utils \
			>"$T/apt.log" 2>&1
	fi
fi
requires nbdinfo nbdcopy qemu-img qemu-io "$PYTHON"

start_daemon || exit 1
NBD=$T/nbd.sock
check "the NBD socket is beside the control socket" test -S "$NBD"
check "the NBD socket is mode 0660" test "$(stat -c %a "$NBD")" = 660

# the exceptions of VOLUME@SNAP, from list --json
lj_exc() {
	cv list "$1" --json | "$PYTHON" -c "import json, sys; v = json.load(sys.stdin)['volumes'][0]; print([s['exceptions'] for s in v['snapshots'] if s['name'] == '$2'][0])"
}

# vm1 (8 MiB): data, a snapshot s1, new data; vm2 (2 MiB), no snapshot
SIZE=$((8 * 1024 * 1024))
cv create vm1 --size 8M >/dev/null
head -c $SIZE /dev/urandom >"$T/v1"
cv write vm1 <"$T/v1" >/dev/null
cv snap vm1@s1 >/dev/null
head -c 65536 /dev/urandom >"$T/new"
cv write vm1 --offset 1048576 <"$T/new" >/dev/null
cv create vm2 --size 2M >/dev/null
cv cat vm1@s1 >"$T/s1.cat"
cv cat vm1 >"$T/vm1.cat"
check "setup: vm1@s1 holds the old data" cmp -s "$T/s1.cat" "$T/v1"

# cowvol export: the URI
expect 0 "cowvol export vm1@s1" cv export vm1@s1
check "it prints nbd+unix:///vm1@s1?socket=PATH" grep -qx "nbd+unix:///vm1@s1?socket=$NBD" "$T/out"
URI_S1=$(cat "$T/out")
URI_VM1=$(cv export vm1)
expect 0 "cowvol export --json" cv export vm2 --json
expect_in out "\"socket\":\"$NBD\"" "export --json names the socket"
expect_in out '"name":"vm2"' "export --json names the export"
expect 1 "cowvol export of a missing snapshot fails" cv export vm1@nope
expect_in err "no snapshot named 'nope'" "and says why"
expect 1 "cowvol export of a missing volume fails" cv export nosuch
expect 2 "cowvol export without a target is a usage error" cv export

# nbdinfo
expect 0 "nbdinfo --list" nbdinfo --list "nbd+unix:///?socket=$NBD"
for e in vm1 vm1@s1 vm2; do
	expect_in out "^export=\"$e\":" "nbdinfo --list shows $e"
done
check "nbdinfo --list gives the sizes" eval "grep -c 'export-size: $SIZE ' '$T/out' | grep -qx 2 && grep -q 'export-size: 2097152 ' '$T/out'"
expect 0 "nbdinfo of vm1@s1 (the URI from cowvol export)" nbdinfo "$URI_S1"
expect_in out "export-size: $SIZE " "nbdinfo shows the size"
expect_in out "block_size_minimum: 1$" "minimum block size 1"
expect_in out "block_size_preferred: 4096$" "preferred block size: the chunk size"
expect_in out "block_size_maximum: 33554432$" "maximum block size 32 MiB"
expect_in out "can_flush: true" "flush is offered"
expect_in out "can_fua: true" "FUA is offered"
expect_in out "can_zero: true" "write zeroes is offered"
expect_in out "can_trim: true" "trim is offered"
expect_in out "can_multi_conn: true" "multi-conn is offered"
expect_in out "is_read_only: false" "snapshots are writable"
expect_in out "using structured packets" "structured replies are negotiated"
expect_in out "base:allocation" "the base:allocation context is offered"

# nbdcopy (several connections at once, multi-conn) and qemu-img compare
expect 0 "nbdcopy vm1@s1 to a file" nbdcopy "$URI_S1" "$T/s1.copy"
check "the copy equals cowvol cat vm1@s1" cmp -s "$T/s1.copy" "$T/s1.cat"
nbdcopy "$URI_VM1" "$T/vm1.copy" & p1=$!
nbdcopy "$URI_S1" "$T/s1.copy2" & p2=$!
nbdcopy "$(cv export vm2)" "$T/vm2.copy" & p3=$!
check "three nbdcopy at once" eval "wait $p1 && wait $p2 && wait $p3"
check "each copy is right" eval "cmp -s '$T/vm1.copy' '$T/vm1.cat' && cmp -s '$T/s1.copy2' '$T/s1.cat' && cmp -s -n 2097152 '$T/vm2.copy' /dev/zero"
expect 0 "qemu-img compare: vm1 export = cowvol cat vm1" qemu-img compare -f raw -F raw "$URI_VM1" "$T/vm1.cat"
expect 1 "qemu-img compare: vm1@s1 export differs from vm1" qemu-img compare -f raw -F raw "$URI_S1" "$T/vm1.cat"

# qemu-io writes into the volume: copy-on-write keeps the snapshot
expect 0 "qemu-io writes, write-zeroes, FUA and flush into vm1" qemu-io -f raw \
	-c "write -P 0xab 4096 65536" -c "write -z 131072 8192" -c "write -f -P 0xcd 300000 1000" -c flush "$URI_VM1"
cp "$T/vm1.cat" "$T/model"
"$PYTHON" - "$T/model" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(4096); f.write(b"\xab" * 65536)
    f.seek(131072); f.write(b"\0" * 8192)
    f.seek(300000); f.write(b"\xcd" * 1000)
EOF
cv cat vm1 >"$T/vm1.after"
check "cowvol cat vm1 shows the writes" cmp -s "$T/vm1.after" "$T/model"
cv cat vm1@s1 >"$T/s1.after"
check "vm1@s1 did not change" cmp -s "$T/s1.after" "$T/s1.cat"
expect 0 "cowvol diff vm1@s1 sees the new chunks" cv diff vm1@s1
expect_in out "^4096 " "the diff starts at the first chunk written through NBD"

# block status, trim and write zeroes on vm2 (no snapshot): holes
blocks() { stat -c %b "$STATE/volumes/vm2.img"; }
expect 0 "nbdinfo --map of a new volume" nbdinfo --map "$(cv export vm2)"
check "it is one hole that reads as zeroes" grep -qx ' *0 *2097152 *3 *hole,zero' "$T/out"
expect 0 "qemu-io writes 1 MiB into vm2" qemu-io -f raw -c "write -P 0x11 0 1M" -c flush "$(cv export vm2)"
b_full=$(blocks)
expect 0 "nbdinfo --map after it" nbdinfo --map "$(cv export vm2)"
check "data, then a hole" eval "grep -qx ' *0 *1048576 *0 *data' '$T/out' && grep -qx ' *1048576 *1048576 *3 *hole,zero' '$T/out'"
expect 0 "qemu-io discards 256 KiB and zeroes 256 KiB (unmap allowed)" qemu-io -f raw \
	-c "discard 0 256k" -c "write -z -u 512k 256k" -c flush "$(cv export vm2)"
check "both became holes in the image ($b_full -> $(blocks) blocks)" test "$(blocks)" -le $((b_full - 1024))
expect 0 "nbdinfo --map shows them" nbdinfo --map "$(cv export vm2)"
check "hole, data, hole, data, hole" eval "[ \"\$(awk '{print \$4}' '$T/out' | tr '\n' ' ')\" = 'hole,zero data hole,zero data hole,zero ' ]"
head -c 2097152 /dev/zero >"$T/vm2.model"
"$PYTHON" - "$T/vm2.model" <<'EOF2'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(262144); f.write(b"\x11" * 262144)
    f.seek(786432); f.write(b"\x11" * 262144)
EOF2
check "vm2 reads zeroes where it was discarded and zeroed" eval "cv cat vm2 | cmp -s - '$T/vm2.model'"

# trim on a volume with a snapshot: chunks the snapshot still needs stay
cv snap vm2@t >/dev/null
b_before=$(blocks)
expect 0 "qemu-io discards all of vm2 (with a snapshot)" qemu-io -f raw -c "discard 0 2M" "$(cv export vm2)"
check "nothing was punched: vm2@t needs every data chunk" test "$(blocks)" = "$b_before"
check "vm2 is unchanged" eval "cv cat vm2 | cmp -s - '$T/vm2.model'"
check "vm2@t copied nothing" test "$(lj_exc vm2 t)" = 0
expect 0 "qemu-io zeroes 64 KiB of data and 64 KiB of hole in vm2 with a snapshot" qemu-io -f raw \
	-c "write -z -u 196608 128k" "$(cv export vm2)"
check "only the data half was copied to vm2@t (16 chunks)" test "$(lj_exc vm2 t)" = 16
check "vm2@t still reads as before" eval "cv cat vm2@t | cmp -s - '$T/vm2.model'"
"$PYTHON" - "$T/vm2.model" <<'EOF2'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(196608); f.write(b"\0" * 131072)
EOF2
check "vm2 reads the zeroes" eval "cv cat vm2 | cmp -s - '$T/vm2.model'"
expect 0 "nbdinfo --map of vm2@t" nbdinfo --map "$(cv export vm2@t)"
check "the snapshot's copies are data, the rest as vm2 was" eval "[ \"\$(awk '{print \$4}' '$T/out' | tr '\n' ' ')\" = 'hole,zero data hole,zero data hole,zero ' ]"
expect 0 "nbdcopy of vm2@t (sparse)" nbdcopy "$(cv export vm2@t)" "$T/t.copy"
check "equals cowvol cat vm2@t" eval "cv cat vm2@t | cmp -s - '$T/t.copy'"
cv rm vm2@t >/dev/null
expect 0 "qemu-io zeroes 256 KiB of a hole without unmap (NO_HOLE)" qemu-io -f raw -c "write -z 1536k 256k" "$(cv export vm2)"
expect 0 "nbdinfo --map after it" nbdinfo --map "$(cv export vm2)"
check "the zeroes are allocated: data" grep -qx ' *1572864 *262144 *0 *data' "$T/out"
check "vm2 still reads as before" eval "cv cat vm2 | cmp -s - '$T/vm2.model'"

# structured replies, metadata contexts, block status: byte by byte
"$PYTHON" "$RAW" "$NBD" structured $SIZE vm1
"$PYTHON" "$RAW" "$NBD" structured 2097152 vm2

# a write into the snapshot export (snapshots are writable)
expect 0 "qemu-io writes into vm1@s1" qemu-io -f raw -c "write -P 0x5a 0 4096" "$URI_S1"
cv cat vm1@s1 --length 4096 >"$T/s1.head"
check "the snapshot reads its own write" cmp -s "$T/s1.head" <(head -c 4096 /dev/zero | tr '\0' '\132')
cv cat vm1 --length 4096 >"$T/vm1.head"
check "the volume does not see it" cmp -s "$T/vm1.head" <(head -c 4096 "$T/model")
cv cat vm1@s1 >"$T/s1.cat"

# bad clients: the protocol's error replies or a closed connection
"$PYTHON" "$RAW" "$NBD" bad-option-magic
"$PYTHON" "$RAW" "$NBD" bad-client-flags
"$PYTHON" "$RAW" "$NBD" options vm1 vm1@s1 vm2
"$PYTHON" "$RAW" "$NBD" export-name-unknown
"$PYTHON" "$RAW" "$NBD" export-name vm2 2097152
"$PYTHON" "$RAW" "$NBD" requests vm1 $SIZE
"$PYTHON" "$RAW" "$NBD" requests vm1@s1 $SIZE
"$PYTHON" "$RAW" "$NBD" oversized-write vm1
"$PYTHON" "$RAW" "$NBD" half-write vm1
sleep 0.2
cv cat vm1 >"$T/vm1.after2"
check "a write cut off halfway changed nothing" cmp -s "$T/vm1.after2" "$T/model"
check "vm1@s1 still as it was" eval "cv cat vm1@s1 | cmp -s - '$T/s1.cat'"
expect 0 "the daemon keeps serving: status" cv status
expect 0 "and NBD: nbdinfo" nbdinfo "$URI_VM1"

# an open NBD connection holds its export: rm refuses; a restore is
# recorded and starts when the connection ends, as lvconvert --merge of an
# open volume waits
"$PYTHON" "$RAW" "$NBD" hold vm1@s1 "$T/release" & hp=$!
for _ in $(seq 1 100); do [ -e "$T/release.ready" ] && break; sleep 0.05; done
expect 1 "rm vm1@s1 while it is served over NBD" cv rm vm1@s1
expect_in err "snapshot vm1@s1 is in use by an NBD connection \(uid 0 pid [0-9]+\)$" \
	"rm says it is in use, and by whom"
expect 0 "restore vm1@s1 --keep while it is served over NBD: recorded" cv restore vm1@s1 --keep
expect_in out "^Restore of vm1 from vm1@s1 recorded: volume 'vm1' is in use by an NBD connection \(uid 0 pid [0-9]+\)\.$" \
	"it says by whom"
expect_in out "^It starts when they leave \(or at cowvold's next start\)" "and when it starts"
expect 0 "list" cv list vm1
expect_in out "restore from s1 waits for its users" "list shows it waiting"
check "vm1 still reads as before meanwhile" eval "cv cat vm1 | cmp -s - '$T/model'"
check "the log names who asked" grep -qE "Restore of vm1 from vm1@s1 recorded: .* \[uid 0, pid [0-9]+\]$" "$T/daemon.log"
touch "$T/release"
wait $hp
restore_done() { # the daemon lets go once it read NBD_CMD_DISC
	for _ in $(seq 1 200); do
		cv list vm1 --json | "$PYTHON" -c 'import json,sys
sys.exit(json.load(sys.stdin)["volumes"][0]["restore"] is not None)' && return 0
		sleep 0.05
	done
	return 1
}
check "once the connection closed, the restore ran to its end" restore_done
check "the volume is the snapshot's content" eval "cv cat vm1 | cmp -s - '$T/s1.cat'"
expect 0 "nbdinfo --list after the restore" nbdinfo --list "nbd+unix:///?socket=$NBD"
expect_in out '^export="vm1@s1":' "the kept snapshot is still listed"

# only root and the group: others are refused at negotiation
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	chmod 0666 "$NBD"
	# the system's python: a per-user one (pyenv) may be out of nobody's reach
	setpriv --reuid=nobody --regid=nogroup --clear-groups "$PYTHON" "$RAW" "$NBD" policy vm1
	chmod 0660 "$NBD"
else
	notok "the permission check runs as root (setpriv)"
fi

# SIGTERM with an NBD connection open: it is closed, the daemon stops cleanly
"$PYTHON" "$RAW" "$NBD" hold vm2 "$T/release2" >"$T/hold2.out" 2>&1 & hp=$!
for _ in $(seq 1 100); do [ -e "$T/release2.ready" ] && break; sleep 0.05; done
check "an NBD connection is open" test -e "$T/release2.ready"
stop_daemon
check "SIGTERM with an NBD connection open: cowvold exits 0" test $? = 0
touch "$T/release2"
wait $hp 2>/dev/null
check "SIGTERM removes the NBD socket" test ! -e "$NBD"

# bad settings are refused before anything starts
expect 2 "--nbd-tcp with a bad port" "$COWVOLD" --state-dir "$STATE" --socket "$SOCK" --nbd-tcp=localhost:99999
expect_in err "nbd-tcp wants" "and says what it wants"
expect 2 "--nbd-tcp with a bare IPv6 address" "$COWVOLD" --state-dir "$STATE" --socket "$SOCK" --nbd-tcp=::1:80
expect 2 "--nbd-read-only=some" "$COWVOLD" --state-dir "$STATE" --socket "$SOCK" --nbd-read-only=some
expect_in err "no, snapshots or all" "and says what it takes"
printf 'nbd_tcp = here:there\n' >"$T/bad.conf"
expect 1 "nbd_tcp = here:there in the config" "$COWVOLD" --state-dir "$STATE" --socket "$SOCK" --config "$T/bad.conf"
expect_in err "bad.conf:1: nbd_tcp must be" "and names the line"

# --nbd-socket, --nbd-tcp, read-only snapshots, a short handshake timeout
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'nbd_read_only = snapshots\nnbd_handshake_timeout = 1\n' >"$T/ro.conf"
start_daemon --nbd-socket "$T/elsewhere.sock" --nbd-tcp=$PORT --config "$T/ro.conf" || exit 1
expect 0 "cowvol export --tcp" cv export vm2 --tcp
check "it prints nbd://127.0.0.1:$PORT/vm2 (loopback by default)" grep -qx "nbd://127.0.0.1:$PORT/vm2" "$T/out"
expect 0 "nbdinfo over TCP" nbdinfo "nbd://127.0.0.1:$PORT/vm2"
expect_in out "export-size: 2097152 " "the size over TCP"
expect 0 "qemu-img compare over TCP = cowvol cat" qemu-img compare -f raw -F raw "nbd://127.0.0.1:$PORT/vm2" "$T/vm2.model"
check "only on loopback" eval "! \"\$PYTHON\" -c 'import socket,sys; s=socket.socket(); s.settimeout(2); s.connect((sys.argv[1], $PORT))' \$(hostname -I 2>/dev/null | awk '{print \$1}') 2>/dev/null || [ -z \"\$(hostname -I 2>/dev/null)\" ]"
expect 0 "nbdinfo of a snapshot, read-only by the setting" nbdinfo "$(cv export vm1@s1)"
expect_in out "is_read_only: true" "nbdinfo says read-only"
expect 0 "export --json says so" cv export vm1@s1 --json
expect_in out '"read_only":true' "read_only: true"
"$PYTHON" "$RAW" "$T/elsewhere.sock" read-only vm1@s1
expect 1 "qemu-io cannot write into it" qemu-io -f raw -c "write -P 1 0 4k" "$(cv export vm1@s1)"
expect 0 "the volume stays writable" qemu-io -f raw -c "write -P 0x22 0 4k" "$(cv export vm1)"
"$PYTHON" "$RAW" "$T/elsewhere.sock" silent 5
"$PYTHON" "$RAW" "$T/elsewhere.sock" trickle 1
expect_in_log() { grep -q "$1" "$T/daemon.log"; }
check "the log says why it closed the silent client" expect_in_log "chose no export within 1 s"
expect 2 "cowvol export --tcp with a bad option" cv export vm2 --tcpx
stop_daemon
start_daemon --nbd-socket "$T/elsewhere.sock" || exit 1
expect 1 "cowvol export --tcp when TCP is off" cv export vm2 --tcp
expect_in err "does not serve NBD over TCP" "and says so"
check "--nbd-socket PATH is used" test -S "$T/elsewhere.sock"
expect 0 "export names it" cv export vm2
check "the URI carries it" grep -qx "nbd+unix:///vm2?socket=$T/elsewhere.sock" "$T/out"
expect 0 "nbdinfo through it" nbdinfo "$(cat "$T/out")"
stop_daemon
check "cowvold stopped cleanly" test $? = 0
check "no sanitizer report in the daemon's log" eval "! grep -qE 'AddressSanitizer|runtime error|LeakSanitizer' '$T/daemon.log'"
