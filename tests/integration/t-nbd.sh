#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Volumes and snapshots over NBD, with Debian's real clients (libnbd's nbdinfo
# and nbdcopy, qemu-img, qemu-io) and a raw client (nbd-raw.py) for what real
# clients never send; the daemon keeps serving through all of it.
. "$(dirname "$0")/lib.sh"
RAW=$REPO/tests/integration/nbd-raw.py

if ! command -v nbdinfo >/dev/null || ! command -v nbdcopy >/dev/null || ! command -v qemu-io >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libnbd-bin qemu-utils \
			>"$T/apt.log" 2>&1
	fi
fi
for c in nbdinfo nbdcopy qemu-img qemu-io python3; do
	check "$c is installed" eval "command -v $c >/dev/null"
done

start_daemon || exit 1
NBD=$T/nbd.sock
check "the NBD socket is beside the control socket" test -S "$NBD"
check "the NBD socket is mode 0660" test "$(stat -c %a "$NBD")" = 660

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
expect_in out "can_trim: false" "trim is not"
expect_in out "can_multi_conn: true" "multi-conn is offered"
expect_in out "is_read_only: false" "snapshots are writable"

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
python3 - "$T/model" <<'EOF'
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

# a write into the snapshot export (snapshots are writable)
expect 0 "qemu-io writes into vm1@s1" qemu-io -f raw -c "write -P 0x5a 0 4096" "$URI_S1"
cv cat vm1@s1 --length 4096 >"$T/s1.head"
check "the snapshot reads its own write" cmp -s "$T/s1.head" <(head -c 4096 /dev/zero | tr '\0' '\132')
cv cat vm1 --length 4096 >"$T/vm1.head"
check "the volume does not see it" cmp -s "$T/vm1.head" <(head -c 4096 "$T/model")
cv cat vm1@s1 >"$T/s1.cat"

# bad clients: the protocol's error replies or a closed connection
python3 "$RAW" "$NBD" bad-option-magic
python3 "$RAW" "$NBD" bad-client-flags
python3 "$RAW" "$NBD" options vm1 vm1@s1 vm2
python3 "$RAW" "$NBD" export-name-unknown
python3 "$RAW" "$NBD" export-name vm2 2097152
python3 "$RAW" "$NBD" requests vm1 $SIZE
python3 "$RAW" "$NBD" requests vm1@s1 $SIZE
python3 "$RAW" "$NBD" oversized-write vm1
python3 "$RAW" "$NBD" half-write vm1
sleep 0.2
cv cat vm1 >"$T/vm1.after2"
check "a write cut off halfway changed nothing" cmp -s "$T/vm1.after2" "$T/model"
check "vm1@s1 still as it was" eval "cv cat vm1@s1 | cmp -s - '$T/s1.cat'"
expect 0 "the daemon keeps serving: status" cv status
expect 0 "and NBD: nbdinfo" nbdinfo "$URI_VM1"

# an open NBD connection holds its export: rm and restore refuse
python3 "$RAW" "$NBD" hold vm1@s1 "$T/release" & hp=$!
for _ in $(seq 1 100); do [ -e "$T/release.ready" ] && break; sleep 0.05; done
expect 1 "rm vm1@s1 while it is served over NBD" cv rm vm1@s1
expect_in err "in use" "rm says it is in use"
expect 1 "restore vm1@s1 while it is served over NBD" cv restore vm1@s1
expect_in err "in use" "restore says it is in use"
touch "$T/release"
wait $hp
restore_when_free() { # the daemon lets go once it read NBD_CMD_DISC
	for _ in $(seq 1 100); do
		cv restore vm1@s1 --keep >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	return 1
}
check "once the connection closed, restore works" restore_when_free
check "the volume is the snapshot's content" eval "cv cat vm1 | cmp -s - '$T/s1.cat'"
expect 0 "nbdinfo --list after the restore" nbdinfo --list "nbd+unix:///?socket=$NBD"
expect_in out '^export="vm1@s1":' "the kept snapshot is still listed"

# only root and the group: others are refused at negotiation
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	chmod 0666 "$NBD"
	# the system's python: a per-user one (pyenv) may be out of nobody's reach
	PY=/usr/bin/python3
	[ -x "$PY" ] || PY=$(command -v python3)
	setpriv --reuid=nobody --regid=nogroup --clear-groups "$PY" "$RAW" "$NBD" policy vm1
	chmod 0660 "$NBD"
else
	notok "the permission check runs as root (setpriv)"
fi

# SIGTERM with an NBD connection open: it is closed, the daemon stops cleanly
python3 "$RAW" "$NBD" hold vm2 "$T/release2" >"$T/hold2.out" 2>&1 & hp=$!
for _ in $(seq 1 100); do [ -e "$T/release2.ready" ] && break; sleep 0.05; done
check "an NBD connection is open" test -e "$T/release2.ready"
stop_daemon
check "SIGTERM with an NBD connection open: cowvold exits 0" test $? = 0
touch "$T/release2"
wait $hp 2>/dev/null
check "SIGTERM removes the NBD socket" test ! -e "$NBD"

# --nbd-socket
start_daemon --nbd-socket "$T/elsewhere.sock" || exit 1
check "--nbd-socket PATH is used" test -S "$T/elsewhere.sock"
expect 0 "export names it" cv export vm2
check "the URI carries it" grep -qx "nbd+unix:///vm2?socket=$T/elsewhere.sock" "$T/out"
expect 0 "nbdinfo through it" nbdinfo "$(cat "$T/out")"
stop_daemon
check "cowvold stopped cleanly" test $? = 0
check "no sanitizer report in the daemon's log" eval "! grep -qE 'AddressSanitizer|runtime error|LeakSanitizer' '$T/daemon.log'"
