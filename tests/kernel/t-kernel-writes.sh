#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The kernel writes, cowvol reads: a store made by `cowvol store create` is
# used by the kernel's snapshot target under origin writes; then
# `cowvol store check` passes on it, `cowvol store view` equals the kernel's
# snapshot device byte for byte, and the status line equals `store info`.
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run() {
	local cs=$1 osize=$2 n=$3 ssize=$4 areas=$5 csec o c lo lc sz
	csec=$(chunk_sectors "$cs")
	o=/tmp/kw-origin.img c=/tmp/kw-cow.img
	"$COWTOOL" pattern $o "$osize" 1
	"$COWVOL" store create $c --size "$ssize" --chunk-size "$cs" >/dev/null
	lo=$(make_loop $o "$osize")
	lc=$(make_loop $c "$ssize")
	sz=$(sectors "$lo")
	dm_create kw-snap "0 $sz snapshot $lo $lc P $csec" >/dev/null
	dm_create kw-origin "0 $sz snapshot-origin $lo" >/dev/null
	# n distinct chunks written through the origin: the kernel copies each
	"$COWTOOL" tag /dev/mapper/kw-origin "$cs" "$n" 11
	sync

	"$COWVOL" store check $c || fail "$cs: store check failed on the kernel's store"
	[ "$(info_field $c exceptions)" = "$n" ] || fail "$cs: store info counts $(info_field $c exceptions) exceptions, want $n"
	[ "$(( $(info_field $c metadata_sectors) / csec - 1 ))" = "$areas" ] || fail "$cs: want $areas metadata areas in use"
	[ "$("$COWVOL" store dump $c | wc -l)" = "$n" ] || fail "$cs: store dump does not list $n exceptions"
	same_status kw-snap $c
	"$COWVOL" store view $o $c /tmp/kw-view.img
	cmp /dev/mapper/kw-snap /tmp/kw-view.img || fail "$cs: store view differs from the kernel's snapshot device"
	if [ "$cs" = 4K ]; then
		# a view onto a block device full of old data: every byte is written
		"$COWTOOL" pattern /tmp/kw-dev.img "$osize" 99
		local ld
		ld=$(make_loop /tmp/kw-dev.img "$osize")
		"$COWVOL" store view $o $c "$ld"
		cmp /dev/mapper/kw-snap "$ld" || fail "$cs: store view onto a block device differs from the kernel's snapshot"
		ok "$cs: store view onto a block device = kernel snapshot"
		# and from a sparse origin: its holes must reach the device as zeros
		truncate -s "$osize" /tmp/kw-sparse.img
		"$COWTOOL" tag /tmp/kw-sparse.img 4K 20 3
		"$COWVOL" store create /tmp/kw-empty.cow --size 1M >/dev/null
		"$COWVOL" store view /tmp/kw-sparse.img /tmp/kw-empty.cow "$ld"
		cmp /tmp/kw-sparse.img "$ld" || fail "store view of a sparse origin onto a block device left old data"
		ok "store view of a sparse origin onto a block device writes its holes as zeros"
		losetup -d "$ld"
		rm -f /tmp/kw-dev.img /tmp/kw-sparse.img /tmp/kw-empty.cow
	fi
	ok "$cs: $n kernel exceptions in $areas area(s): check passes, view = kernel snapshot"
	dmsetup remove kw-origin kw-snap
	: >"$_gl_state/dm"
	rm -f /tmp/kw-view.img
	losetup -d "$lo" "$lc"
	rm -f $o $c
	: >"$_gl_state/loop"
}

# chunk  origin  writes  store  areas in use
run 4K   16M    700   8M   3
run 64K  300M   4200  300M 2
run 512K 64M    100   64M  1
