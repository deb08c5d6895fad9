#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A snapshot that the userspace engine (cowvold) made opens in the kernel's
# snapshot target and shows the same content as `cowvol cat VOLUME@SNAP`:
# origin writes after the snapshot, and writes into the snapshot itself.
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
start_daemon

run() {
	local name=$1 cs=$2 csec
	csec=$(chunk_sectors "$cs")
	"$COWVOL" create "$name" --size 32M --chunk-size "$cs" >/dev/null
	"$COWTOOL" pattern /tmp/data 32M 7
	"$COWVOL" write "$name" --offset 0 </tmp/data
	"$COWVOL" snap "$name@s" --store-size 24M >/dev/null
	# origin writes here and there, unaligned, after the snapshot
	for off in 0 4095 100000 1048576 7340033 20000000 33550000; do
		head -c $((33554432 - off < 70000 ? 33554432 - off : 70000)) /dev/urandom >/tmp/w
		"$COWVOL" write "$name" --offset $off </tmp/w
	done
	# and a write into the snapshot
	head -c 9000 /dev/urandom >/tmp/w
	"$COWVOL" write "$name@s" --offset 5000000 </tmp/w
	"$COWVOL" cat "$name@s" >/tmp/snap-$name.out
	"$COWVOL" cat "$name" >/tmp/vol.out
	cmp -s /tmp/snap-$name.out /tmp/vol.out && fail "$cs: the snapshot did not keep the old data"
	"$COWVOL" list "$name" --json | sed -n 's/.*"store":"\([^"]*\)".*/\1/p' >/tmp/store-$name
	[ -s /tmp/store-$name ] || fail "$cs: no store path in cowvol list --json"
	ok "$cs: cowvol cat shows the snapshot apart from the volume"
}
run a 4K
run b 64K
# stop the daemon: stores and images flushed, then let the kernel read them
stop_daemon || fail "cowvold did not stop cleanly"

for name in a b; do
	cs=$([ $name = a ] && echo 4K || echo 64K)
	img=$STATE/volumes/$name.img
	store=$(cat /tmp/store-$name)
	"$COWVOL" store check "$store" >/dev/null || fail "$cs: store check of the engine's store"
	lo=$(losetup -f --show -r "$img")
	echo "$lo $img" >>"$_gl_state/loop"
	lc=$(losetup -f --show "$store")
	echo "$lc $store" >>"$_gl_state/loop"
	dm_create eng-$name "0 $(sectors "$lo") snapshot $lo $lc P $(chunk_sectors $cs)" >/dev/null
	cmp /dev/mapper/eng-$name /tmp/snap-$name.out || fail "$cs: the kernel's snapshot differs from cowvol cat $name@s"
	ok "$cs: the kernel's snapshot of the engine's store = cowvol cat $name@s"
done
