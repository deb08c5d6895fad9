#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvold takes QEMU's image locks (OFD byte-range locks, lib/imagelock.c)
# on every image it serves and every store it writes: qemu-io's writes are
# refused and the image stays as it was; readers that share writes (QEMU
# 7.2's qemu-img info and qemu-io -r lock only "consistent read" and share
# everything) and force-share readers (-U) still read.  cowvol add refuses
# an image that qemu-io or qemu-nbd holds, naming the lock, and changes
# nothing; once QEMU is gone the add works.  The locks survive another
# descriptor of the image closing in the daemon (list probes the image),
# go with rm, and come back after a restart.
. "$(dirname "$0")/../lib.sh"

requires qemu-io qemu-img qemu-nbd
start_daemon || exit 1
must "create v (1 MiB)" cv create v --size 1M
head -c 4096 /dev/urandom >"$T/data"
must "write 4 KiB of data into v" cv write v --offset 0 <"$T/data"
must "snap v@s" cv snap v@s
IMG=$STATE/volumes/v.img
STORE=$(ls "$STATE"/stores/*.cow)
md5() { md5sum <"$1"; }
img_sum=$(md5 "$IMG")
store_sum=$(md5 "$STORE")

qemu_write() { qemu-io -f raw -c 'write -P 0x55 0 4k' "$1"; }
refuse "qemu-io write on the image of v is refused" 'Failed to get "write" lock' qemu_write "$IMG"
check "the image is unchanged" test "$(md5 "$IMG")" = "$img_sum"
check "v reads its own data" eval "cv cat v --length 4096 | cmp -s - '$T/data'"
refuse "qemu-io write on the store of v@s is refused" 'Failed to get "write" lock' qemu_write "$STORE"
check "the store is unchanged" test "$(md5 "$STORE")" = "$store_sum"
# qemu-img info without -U: QEMU 7.2 opens read-only sharing every
# permission (it locks only byte 100, "consistent read", which cowvold
# shares), so it is allowed, as it is beside a running VM
try "qemu-img info (no -U) reads the image: QEMU's read-only open shares writes" qemu-img info -f raw "$IMG"
try "qemu-img info -U (force share) reads the image" qemu-img info -U -f raw "$IMG"
try "qemu-io -r -U (force share) reads the image" qemu-io -r -U -f raw -c 'read -P 0 8k 4k' "$IMG"
try "qemu-io -r reads the image" qemu-io -r -f raw -c 'read 0 4k' "$IMG"

# another descriptor of the image opened and closed in the daemon (list
# probes the image for a filesystem) does not drop the locks: OFD locks
# belong to the file description, not to the process
must "list (opens and closes the image again in the daemon)" cv list
refuse "after list, qemu-io write is still refused" 'Failed to get "write" lock' qemu_write "$IMG"
check "the image is still unchanged" test "$(md5 "$IMG")" = "$img_sum"

# --- cowvol add of an image QEMU holds -------------------------------------------
truncate -s 1M "$T/q.img"
mkfifo "$T/qio.fifo"
qemu-io -f raw "$T/q.img" <"$T/qio.fifo" >"$T/qio.out" 2>&1 &
qio=$!
exec 7>"$T/qio.fifo" # qemu-io reads its commands from here until it closes
on_exit "kill $qio 2>/dev/null"
for _ in $(seq 100); do grep -q "OFDLCK.* 100 101$" /proc/locks && break; sleep 0.05; done
cv list --json >"$T/list.before"
refuse "cowvol add of an image qemu-io holds open for writing is refused" \
	'cannot add .*q.img: it is in use: another process .*qemu-io.* "write" permission' cv add "$T/q.img" --name q
check "nothing changed: the list is as it was" eval "cv list --json | cmp -s - '$T/list.before'"
exec 7>&- # qemu-io sees the end of its input and exits
wait $qio
must "after qemu-io exits, cowvol add of that image works" cv add "$T/q.img" --name q
refuse "and now qemu-io write on it is refused" 'Failed to get "write" lock' qemu_write "$T/q.img"
must "rm q" cv rm q
try "after rm, the locks are gone: qemu-io writes it" qemu_write "$T/q.img"

truncate -s 1M "$T/n.img"
qemu-nbd -f raw -k "$T/qnbd.sock" "$T/n.img" >"$T/qnbd.out" 2>&1 &
qnbd=$!
on_exit "kill $qnbd 2>/dev/null"
for _ in $(seq 100); do [ -S "$T/qnbd.sock" ] && break; sleep 0.05; done
refuse "cowvol add of an image qemu-nbd serves is refused" \
	'cannot add .*n.img: it is in use: another process .*"(write|resize)" permission' cv add "$T/n.img" --name n
check "nothing changed: the list is as it was" eval "cv list --json | cmp -s - '$T/list.before'"
kill $qnbd
wait $qnbd
must "after qemu-nbd exits, cowvol add of that image works" cv add "$T/n.img" --name n

# --- a restart takes them again ---------------------------------------------------
stop_daemon
check "cowvold stops cleanly" test $? = 0
start_daemon || exit 1
refuse "after a restart, qemu-io write on v's image is refused" 'Failed to get "write" lock' qemu_write "$IMG"
refuse "after a restart, qemu-io write on n's image is refused" 'Failed to get "write" lock' qemu_write "$T/n.img"
refuse "after a restart, qemu-io write on the store of v@s is refused" 'Failed to get "write" lock' \
	qemu_write "$STORE"
check "v's image is unchanged through it all" test "$(md5 "$IMG")" = "$img_sum"
check "v@s reads as it was taken" eval "cv cat v@s --length 4096 | cmp -s - '$T/data'"
stop_daemon
check "cowvold stops cleanly" test $? = 0
