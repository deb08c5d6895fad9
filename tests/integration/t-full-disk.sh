#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A full disk under the state folder (a 24 MiB tmpfs): a volume whose image
# lives there, with a snapshot, then the filesystem filled to the last block.
#   - writes that need new blocks fail with ENOSPC, told to the client: NBD
#     (qemu-io says "No space left on device") and cowvol write (exit 1);
#     a rewrite of blocks the image has still works;
#   - the catalogue stays byte for byte the same, cowvold keeps serving,
#     the volume reads as acknowledged, the snapshot as when it was taken
#     (a copy-on-write that cannot be done fails the write first);
#   - with the filler gone the same writes succeed, a new snapshot works,
#     and every store passes `cowvol store check` once cowvold stopped.
# Then a store that must grow past its preallocation on the full disk: its
# snapshot is invalidated with the reason in `cowvol list`, the volume's
# write goes on and nothing else is touched (doc: README, "Snapshots").
# FULLDISK_ROUNDS=N (default 1, at most 50) repeats fill / refuse / free /
# succeed, each round on holes of its own.
# Needs root (tmpfs mount), qemu-io and nbdcopy.
. "$(dirname "$0")/../lib.sh"

MiB=$((1024 * 1024))
ROUNDS=${FULLDISK_ROUNDS:-1}
if [[ $ROUNDS =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 50 ]; then
	ok "FULLDISK_ROUNDS ($ROUNDS) is from 1 to 50"
else
	notok "FULLDISK_ROUNDS ($ROUNDS) is from 1 to 50"
	exit 1
fi
requires qemu-io nbdcopy "$PYTHON"
FD=$T/fd
mkdir -p "$FD"
mount -t tmpfs -o size=24M,mode=0755 tmpfs "$FD"
# without it the filler below would fill the host's /tmp: stop here
mountpoint -q "$FD" || { notok "a 24 MiB tmpfs for the state folder"; exit 1; }
ok "a 24 MiB tmpfs for the state folder"
on_exit 'kill9_daemon; ! mountpoint -q "$FD" || umount "$FD"'
STATE=$FD/state
start_daemon || exit 1

avail_kb() { df --output=avail -k "$FD" | tail -1 | tr -d ' '; }
fill() { # the filler takes every block left
	dd if=/dev/zero of="$FD/filler" bs=64k status=none 2>/dev/null
	sync
	[ "$(avail_kb)" = 0 ]
}
URI=
qio() { # CMD...: qemu-io on volume v over NBD; output in $T/qio
	qemu-io -f raw "$URI" "$@" >"$T/qio" 2>&1
}
# qemu-io ran, wrote, and said nothing of an error (its exit code does not
# tell a failed command)
qio_wrote() { grep -q '^wrote ' "$T/qio" && ! grep -qiE 'error|failed|No space' "$T/qio"; }
sum() { sha256sum | cut -d' ' -f1; }
parseable() { "$PYTHON" -c 'import json,sys; json.load(open(sys.argv[1]))' "$STATE/catalogue.json"; }
state_of() { # FULLNAME: "STATE REASON"
	cv list --json | "$PYTHON" -c 'import json,sys
for v in json.load(sys.stdin)["volumes"]:
    for s in v["snapshots"]:
        if s["full_name"] == sys.argv[1]: print(s["state"], s["reason"] or "-")' "$1"
}

# --- v: 8 MiB, 1 MiB of data, a snapshot -----------------------------------------------
head -c $MiB /dev/urandom >"$T/A"
head -c 65536 /dev/urandom >"$T/B"
head -c 65536 /dev/urandom >"$T/C"
expect 0 "create v (8 MiB, sparse, on the tmpfs)" cv create v --size 8M
check "v's image is in the state folder" test -f "$STATE/volumes/v.img"
expect 0 "write 1 MiB at 0" eval 'cv write v --offset 0 <"$T/A"'
expect 0 "snap v@s" cv snap v@s
expect 0 "write 64 KiB at 512K (copies into v@s)" eval 'cv write v --offset 512K <"$T/B"'
cv cat v >"$T/v.ref"
cv cat v@s >"$T/s.ref"
check "v@s reads as the volume when it was taken" eval "head -c $MiB '$T/s.ref' | cmp -s - '$T/A'"
URI=$(cv export v)
check "cowvol export v gives an NBD URI" test -n "$URI"

for round in $(seq 1 "$ROUNDS"); do
	r="round $round:"
	# each round writes into holes of its own: 64 KiB by NBD, 64 KiB by the CLI
	NOFF=$((MiB + (round - 1) * 131072)) COFF=$((MiB + (round - 1) * 131072 + 65536))
	check "$r the tmpfs is full (filler written to ENOSPC)" fill
	# a write over blocks the image holds needs none (its copies go to
	# the stores' preallocated blocks)
	qio -c "write -P 0x66 512k 4k" -c flush
	check "$r NBD rewrite of allocated blocks works on the full disk" qio_wrote
	printf '\x66%.0s' $(seq 4096) | dd of="$T/v.ref" bs=4k seek=128 conv=notrunc status=none
	cp "$STATE/catalogue.json" "$T/cat.before"
	cv list --json >"$T/list.before"

	# writes that need blocks: refused, and the client is told why
	qio -c "write -P 0x55 $NOFF 64k"
	check "$r NBD write into a hole: qemu-io says 'No space left on device'" grep -q "No space left on device" "$T/qio"
	expect 1 "$r cowvol write into a hole: exit 1" eval 'cv write v --offset $COFF <"$T/C"'
	expect_in err "No space left on device" "$r cowvol write says 'No space left on device'"

	check "$r the catalogue is byte for byte the same" cmp -s "$T/cat.before" "$STATE/catalogue.json"
	check "$r the catalogue is parseable JSON" parseable
	expect 0 "$r cowvold still answers status" cv status
	cv list --json >"$T/list.now"
	check "$r list is the same" cmp -s "$T/list.before" "$T/list.now"
	check "$r v@s is still active" test "$(state_of v@s)" = "active -"
	check "$r v reads as acknowledged" eval "cv cat v | cmp -s - '$T/v.ref'"
	check "$r v@s reads as when it was taken" eval "cv cat v@s | cmp -s - '$T/s.ref'"
	rm -f "$T/nbd.img"
	nbdcopy "$(cv export v@s)" "$T/nbd.img" 2>/dev/null
	check "$r v@s over NBD reads as when it was taken" cmp -s "$T/nbd.img" "$T/s.ref"
	rm -f "$T/nbd.img"

	# room again: the same writes succeed
	rm -f "$FD/filler"
	qio -c "write -P 0x55 $NOFF 64k" -c flush
	check "$r with room again, the NBD write succeeds" qio_wrote
	printf '\x55%.0s' $(seq 65536) | dd of="$T/v.ref" bs=64k seek=$((NOFF / 65536)) conv=notrunc status=none
	expect 0 "$r with room again, cowvol write succeeds" eval 'cv write v --offset $COFF <"$T/C"'
	dd if="$T/C" of="$T/v.ref" bs=64k seek=$((COFF / 65536)) conv=notrunc status=none
	check "$r v reads with the new writes" eval "cv cat v | cmp -s - '$T/v.ref'"
	check "$r v@s still reads as when it was taken" eval "cv cat v@s | cmp -s - '$T/s.ref'"
	expect 0 "$r a new snapshot v@r$round" cv snap "v@r$round"
	check "$r v@r$round reads as v" eval "cv cat v@r$round | cmp -s - '$T/v.ref'"
done

# --- a store that must grow on the full disk --------------------------------------------
# w: 1 MiB, every block written before the snapshot (so rewriting it needs
# no block for the image); w@g: a 128 KiB store, preallocated whole, that
# must grow to take 256 copies
head -c $MiB /dev/urandom >"$T/W"
head -c $MiB /dev/urandom >"$T/W2"
expect 0 "create w (1 MiB), written whole" eval 'cv create w --size 1M && cv write w <"$T/W"'
expect 0 "snap w@g with a 128 KiB store" cv snap w@g --store-size 128K
check "the tmpfs is full again" fill
expect 0 "rewriting all of w on the full disk: the write goes on (exit 0)" eval 'cv write w <"$T/W2"'
check "w reads as written" eval "cv cat w | cmp -s - '$T/W2'"
st=$(state_of w@g)
check "w@g is invalid, and list says why: no space for its store ($st)" \
	eval "[[ \"\$st\" == 'invalid no space left on the store'* ]]"
expect 1 "cat of the invalid w@g is refused" cv cat w@g
expect_in err "invalid" "and says the snapshot is invalid"
check "v@s is untouched (active)" test "$(state_of v@s)" = "active -"
check "v@s still reads as when it was taken" eval "cv cat v@s | cmp -s - '$T/s.ref'"
check "v still reads as written" eval "cv cat v | cmp -s - '$T/v.ref'"
check "the catalogue is parseable JSON" parseable
rm -f "$FD/filler"
expect 0 "with room again, the invalid w@g can be removed" cv rm w@g
expect 0 "and w snapped again" cv snap w@g2

stop_daemon
check "cowvold stops cleanly (exit 0)" test $? = 0
n=0
for s in "$STATE"/stores/*.cow; do
	n=$((n + 1))
	expect 0 "store check ${s##*/}" "$COWVOL" store check "$s"
done
check "every store was checked (v@s, v@r1.., w@g2: $n)" test "$n" = $((ROUNDS + 2))
start_daemon || exit 1
check "cowvold starts again on that state folder" eval "cv list --json >/dev/null"
check "v@s still reads as when it was taken, after the restart" eval "cv cat v@s | cmp -s - '$T/s.ref'"
stop_daemon
umount "$FD"
