#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Snapshot chains (issue 12, DESIGN.md "Snapshot chains") in the kernel: the
# stores cowvold wrote for a volume's snapshots S1 (oldest) .. Sn (newest),
# stacked as the chain reads them -- Sn a `snapshot` table over the origin,
# each older Si a `snapshot` table whose origin is Si+1's device -- show
# exactly `cowvol cat VOL@Si`, for every i.  Origin writes come between the
# snapshots and writes go into middle snapshots, at chunks the next older
# store holds only while every snapshot keeps its own copies, so that an
# engine that chains (one copy, into the newest) leaves older stores lacking
# chunks newer ones hold and must follow the write rule.
#
# A write into a middle snapshot at a chunk no store holds must first copy
# view(Si, c) into Si-1 (Si-1's exceptions grow): independent stores (the
# engine before chains) are no chain there, and Si-1's stack would show
# Si's write.
#
#   tests/kernel/vm.sh tests/kernel/t-chain.sh [--wrong=flat|reverse|poke]
# --wrong=... stacks wrongly on purpose, to see the checks fail: flat puts
# every store straight on the origin (right only for independent stores),
# reverse stacks newer snapshots over older ones, poke writes a chunk into
# the image behind the stopped daemon's back.
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

wrong=
case "${1:-}" in
"") ;;
--wrong=flat | --wrong=reverse | --wrong=poke) wrong=${1#--wrong=} ;;
*) fail "usage: t-chain.sh [--wrong=flat|reverse|poke]" ;;
esac

# shellcheck disable=SC2119 # no arguments for the daemon
start_daemon || exit 1

# w TARGET OFFSET LENGTH: write LENGTH random bytes into TARGET at OFFSET
w() {
	head -c "$3" /dev/urandom >"$T/w"
	"$COWVOL" write "$1" --offset "$2" <"$T/w" >/dev/null || fail "cowvol write $1 at $2"
}

# snap_field VOL SNAP KEY: one field of SNAP in `cowvol list VOL --json`
snap_field() {
	"$COWVOL" list "$1" --json | awk -v n="\"full_name\":\"$1@$2\"" -v k="\"$3\":" '
		index($0, n) { f = 1 }
		f && index($0, k) { sub(/^[^:]*:/, ""); gsub(/[", ]/, ""); print; exit }'
}

# take VOL I: snapshot VOL@sI, its store path kept in $T/VOL.stores
take() {
	"$COWVOL" snap "$1@s$2" --store-size 4M >/dev/null || fail "cowvol snap $1@s$2"
	echo "$2 $(snap_field "$1" "s$2" store)" >>"$T/$1.stores"
}

# --- volume a: 4 KiB chunks, 4 MiB, five snapshots ----------------------------
# after s_i the origin changes chunks 4(i-1) .. 4(i-1)+7 and, unaligned, a
# bit of chunks 100i .. 100i+4: so chunks 8-11 changed after s2 (not after
# s1) and 12-15 after s3 (not after s2)
K=4096
"$COWVOL" create a --size 4M --chunk-size 4K >/dev/null || fail "cowvol create a"
"$COWTOOL" pattern "$T/a0" 4M 11
"$COWVOL" write a <"$T/a0" >/dev/null || fail "cowvol write a"
for i in 1 2 3 4 5; do
	take a $i
	w a $((4 * (i - 1) * K)) $((8 * K))
	w a $((100 * i * K + 1000)) 17000
done
# middle snapshots written where their next older store holds the chunk
# only when it keeps its own copy: s2 at 10-11 (changed after s2 alone),
# s3 at 12-14 (after s3 alone); a chaining engine copies view(Si, c) into
# Si-1 first.  And the oldest, s1, at a chunk nobody changed (it is the
# chain's last link: nobody reads through it).
w a@s2 $((10 * K + 300)) 5000
w a@s3 $((12 * K + 4000)) 4200
w a@s1 $((900 * K + 12)) 3000
ok "a (4K chunks): 5 snapshots, origin writes between, writes into s1, s2, s3"

# --- volume b: 64 KiB chunks, 4 MiB, three snapshots ---------------------------
# s2 is written at chunk 2 (changed after s2 alone) and at chunk 40, which
# nothing changed: the one place where independent stores and a chain differ
C=65536
"$COWVOL" create b --size 4M --chunk-size 64K >/dev/null || fail "cowvol create b"
"$COWTOOL" pattern "$T/b0" 4M 12
"$COWVOL" write b <"$T/b0" >/dev/null || fail "cowvol write b"
take b 1
w b 0 $((2 * C))
w b $((10 * C + 5)) 1000
take b 2
w b $((1 * C)) $((2 * C))
take b 3
w b $((3 * C + 100)) 300
w b $((63 * C + 60000)) 5536
w b@s2 $((2 * C + 7)) 20000
e0=$(snap_field b s1 exceptions)
w b@s2 $((40 * C + 4096)) 8192
e1=$(snap_field b s1 exceptions)
if [ "$e1" -gt "$e0" ]; then
	ok "64K: the write into b@s2 at chunk 40 copied view(s2, 40) into s1 first ($e0 -> $e1 exceptions): a chain"
else
	notok "64K: the write into b@s2 at chunk 40 left s1 alone ($e0 exceptions): s1's stack would show s2's write"
fi

# what each snapshot shows, and the volumes, before anything else
for v in a b; do
	while read -r i _; do
		"$COWVOL" cat "$v@s$i" >"$T/cat-$v-s$i" || fail "cowvol cat $v@s$i"
	done <"$T/$v.stores"
	"$COWVOL" cat "$v" >"$T/cat-$v" || fail "cowvol cat $v"
done
cmp -s "$T/cat-a-s1" "$T/cat-a-s2" && fail "a@s1 and a@s2 read the same: the writes did not land"
stop_daemon || fail "cowvold did not stop cleanly"
ok "cowvol cat of every snapshot saved; cowvold stopped (nothing writes the files now)"

# chain VOL CSEC N: the loops and dm devices of VOL's chain, each snapshot's
# device compared with its saved cat, then everything torn down
chain() {
	local v=$1 csec=$2 n=$3 img lo sz order i store lc below dev made=() d bad poke
	img=$STATE/volumes/$v.img
	cmp -s "$img" "$T/cat-$v" || fail "$v: the image is not what cowvol cat $v showed"
	if [ "$wrong" = poke ]; then
		# a chunk every snapshot reads from the origin (a: 600, b: 50)
		poke=50
		[ "$v" != a ] || poke=600
		head -c "$((csec * 512))" /dev/urandom |
			dd of="$img" bs=$((csec * 512)) seek=$poke conv=notrunc,fsync status=none
	fi
	lo=$(losetup -f --show -r "$img") || fail "losetup $img"
	echo "$lo $img" >>"$_gl_state/loop"
	sz=$(sectors "$lo")
	# newest first: each older snapshot's origin is the next newer one's device
	order=$(seq "$n" -1 1)
	[ "$wrong" != reverse ] || order=$(seq 1 "$n")
	below=$lo
	for i in $order; do
		store=$(awk -v i="$i" '$1 == i { print $2 }' "$T/$v.stores")
		lc=$(losetup -f --show "$store") || fail "losetup $store"
		echo "$lc $store" >>"$_gl_state/loop"
		dev=$(dm_create "ch-$v-s$i" "0 $sz snapshot $below $lc P $csec")
		made+=("ch-$v-s$i")
		[ "$wrong" = flat ] || below=$dev
	done
	if [ "$wrong" = flat ]; then
		ok "$v: ${#made[@]} snapshot tables, each straight on the origin (wrong on purpose)"
	else
		ok "$v: ${#made[@]} snapshot tables stacked: origin <- s${order//$'\n'/ <- s} (each over the device before it)"
	fi

	for i in $(seq 1 "$n"); do
		store=$(awk -v i="$i" '$1 == i { print $2 }' "$T/$v.stores")
		dev=/dev/mapper/ch-$v-s$i
		if cmp -s "$dev" "$T/cat-$v-s$i"; then
			ok "$v@s$i: the kernel's stacked device = cowvol cat $v@s$i"
		else
			notok "$v@s$i: the kernel's stacked device differs from cowvol cat $v@s$i: $(cmp "$dev" "$T/cat-$v-s$i" 2>&1 | head -1)"
		fi
		same_status "ch-$v-s$i" "$store"
	done

	# tear down: each device holds the one below it open, so the last made goes first
	for ((d = ${#made[@]} - 1; d >= 0; d--)); do
		dmsetup remove "${made[d]}" || fail "dmsetup remove ${made[d]}"
	done
	while read -r lc _; do losetup -d "$lc" || fail "losetup -d $lc"; done <"$_gl_state/loop"
	: >"$_gl_state/dm"
	: >"$_gl_state/loop"
	dmsetup ls | grep -q "^ch-$v-" && fail "$v: dm devices left: $(dmsetup ls | grep "^ch-$v-")"
	while read -r i store; do
		"$COWVOL" store check "$store" >/dev/null || fail "$v@s$i: store check after the kernel read it"
	done <"$T/$v.stores"
	ok "$v: torn down (no device, no loop left); every store still passes store check"
}

chain a 8 5
chain b 128 3
