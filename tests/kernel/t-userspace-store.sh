#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol writes, the kernel reads: a store filled by libcowvol (the
# userspace engine's copy-on-write of an origin image) activates in the
# kernel's snapshot target; the kernel's snapshot device equals
# `cowvol store view`, and the kernel's status line equals `store info`.
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run() {
	local cs=$1 osize=$2 n=$3 group=$4 mode=${5:-} csec o c lo lc sz
	csec=$(chunk_sectors "$cs")
	o=/tmp/us-origin.img c=/tmp/us-cow.img
	if [ "$mode" = sparse ]; then
		# a sparse origin with tagged chunks: 512K chunks in two metadata
		# areas need 32768+ exceptions, 16 GiB of mostly-hole origin
		truncate -s "$osize" $o
		"$COWTOOL" tag $o "$cs" 300 5
	else
		"$COWTOOL" pattern $o "$osize" 2
	fi
	cp --sparse=always $o /tmp/us-before.img
	"$COWVOL" store create $c --size "$osize" --chunk-size "$cs" >/dev/null
	"$COWTOOL" fill $o $c "$n" 9 "$group" $mode
	"$COWVOL" store check $c >/dev/null || fail "$cs: store check failed"
	"$COWVOL" store view $o $c /tmp/us-view.img

	lo=$(make_loop $o "$osize")
	lc=$(make_loop $c "$osize")
	sz=$(sectors "$lo")
	dm_create us-snap "0 $sz snapshot $lo $lc P $csec" >/dev/null
	same_status us-snap $c
	if [ "$mode" = sparse ]; then
		# whole-device compares of 16 GiB are too slow under emulation:
		# compare the tagged chunks (and the first and last)
		"$COWTOOL" cmpchunks /dev/mapper/us-snap /tmp/us-view.img "$cs" 300 5 ||
			fail "$cs: kernel snapshot differs from store view"
		"$COWTOOL" cmpchunks /dev/mapper/us-snap /tmp/us-before.img "$cs" 300 5 ||
			fail "$cs: kernel snapshot differs from the origin before the writes"
	else
		cmp /dev/mapper/us-snap /tmp/us-view.img || fail "$cs: kernel snapshot differs from store view"
		cmp /dev/mapper/us-snap /tmp/us-before.img || fail "$cs: kernel snapshot differs from the origin before the writes"
	fi
	[ "$(( $(info_field $c metadata_sectors) / csec - 1 ))" -ge 2 ] || [ "$cs" = 64K ] ||
		fail "$cs: want more than one metadata area in use"
	ok "$cs: $n userspace exceptions (groups of $group) open in the kernel: snapshot = view = origin before"
	dmsetup remove us-snap
	: >"$_gl_state/dm"
	losetup -d "$lo" "$lc"
	rm -f $o $c /tmp/us-view.img /tmp/us-before.img
	: >"$_gl_state/loop"
}

# chunk  origin  exceptions  group  mode
run 4K   16M    900          7
run 64K  128M   1500         64
run 64K  320M   4500         100
run 512K 17G    32868        512    sparse
