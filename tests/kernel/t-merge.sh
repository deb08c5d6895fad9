#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The kernel merges a store that cowvol wrote (snapshot-merge): at the end
# the origin equals the snapshot, and the store is empty as cowvol reads it.
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run() {
	local cs=$1 osize=$2 n=$3 group=$4 csec o c lo lc sz st i
	csec=$(chunk_sectors "$cs")
	o=/tmp/m-origin.img c=/tmp/m-cow.img
	"$COWTOOL" pattern $o "$osize" 3
	cp $o /tmp/m-before.img
	"$COWVOL" store create $c --size "$osize" --chunk-size "$cs" >/dev/null
	"$COWTOOL" fill $o $c "$n" 4 "$group"
	cmp -s $o /tmp/m-before.img && fail "$cs: the fill did not change the origin"

	lo=$(make_loop $o "$osize")
	lc=$(make_loop $c "$osize")
	sz=$(sectors "$lo")
	dm_create m-merge "0 $sz snapshot-merge $lo $lc P $csec" >/dev/null
	# merging ends when allocated == metadata sectors
	for i in $(seq 1 600); do
		st=$(dm_status m-merge)
		[[ $st =~ ^([0-9]+)/[0-9]+\ ([0-9]+)$ ]] || fail "$cs: merge status '$st'"
		[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] && break
		sleep 0.2
	done
	[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] || fail "$cs: merge did not finish: '$st'"
	dmsetup remove m-merge
	: >"$_gl_state/dm"
	losetup -d "$lo" "$lc"
	: >"$_gl_state/loop"

	cmp $o /tmp/m-before.img || fail "$cs: after the kernel's merge the origin is not the snapshot"
	"$COWVOL" store check $c >/dev/null || fail "$cs: store check after merge"
	[ "$(info_field $c exceptions)" = 0 ] || fail "$cs: $(info_field $c exceptions) exceptions left after merge"
	ok "$cs: kernel merged $n cowvol exceptions: origin = snapshot, store empty"
	rm -f $o $c /tmp/m-before.img
}

run 4K  16M  700 16
run 64K 64M  300 32
