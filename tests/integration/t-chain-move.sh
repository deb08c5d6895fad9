#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A chained userspace volume moving to the kernel engine (issue 12): the
# kernel's snapshot-origin copies into every snapshot, so the stores must
# first be made standalone.  Here, the refusals, which must change nothing:
#   - no room on the stores' filesystem (a small tmpfs): refused, saying how
#     much would be copied and how much room there is;
#   - room, and no device-mapper (this host): refused before any copy;
#   - (there) a store of the chain that cannot be read: refused, naming it.
# Where device-mapper answers, the move goes through instead and each
# snapshot reads as before through /dev/mapper (the whole path, and the way
# back: tests/kernel/t-chain-move.sh, run in a VM).
. "$(dirname "$0")/../lib.sh"

if [ "$(id -u)" != 0 ]; then
	notok "t-chain-move runs as root (a small tmpfs for the state folder, a loop device)"
	exit 1
fi
requires losetup mount df fallocate
mkdir -p "$STATE"
mount -t tmpfs -o size=40M,mode=0700 cowvol-test "$STATE" || fail "cannot mount a tmpfs on $STATE"
on_exit "umount -l '$STATE'"
on_exit '[ -z "${LOOP:-}" ] || losetup -d "$LOOP" 2>/dev/null'
on_exit kill9_daemon
start_daemon || exit 1
setup_chain_u

# the chain as the chain engine leaves it: each snapshot reads right
# through the newer stores, and the older stores alone do not
for i in 1 2; do
	"$COWVOL" store view "$IMG" "${STORES[@]:$((i - 1))}" "$T/view" &&
		check "setup: u@s$i reads as before through the newer stores" cmp -s "$T/view" "$T/s$i"
	"$COWVOL" store view "$IMG" "${STORES[$((i - 1))]}" "$T/view"
	check "setup: u@s$i's store alone is not standalone" eval "! cmp -s '$T/view' '$T/s$i'"
done

sums() { md5sum "${STORES[@]}" "$IMG" "$STATE/catalogue.json"; cv list --json | grep -v '"allocated"\|"data_percent"'; }
sums >"$T/sums.before"
LOOP=$(losetup -f --show "$IMG")

# no room: the rest of the filesystem taken by a filler
avail=$(df -B1 --output=avail "$STATE" | tail -1)
fallocate -l $((avail - 65536)) "$STATE/filler"
refuse "no room: the move is refused, saying what it would copy and where room lacks" \
	"cannot move volume 'u' to the kernel engine: the kernel copies into every snapshot, so the stores of its snapshots must first be made standalone, copying $DROPPED chunks \([0-9.]+ [KM]iB\) into 2 stores; that needs [0-9.]+ [KM]iB on the filesystem holding .*, which has [0-9.]+ KiB free; nothing was changed" \
	cv add "$LOOP"
grep -q "needs .* free" "$T/out" || sed 's/^/#   /' "$T/out"
rm -f "$STATE/filler"
sums >"$T/sums.now"
check "the refused move changed no store, image or catalogue" cmp -s "$T/sums.before" "$T/sums.now"
check "u is still a userspace volume" eval "cv list u --json | grep -q '\"engine\":\"userspace\"'"

if ! "$COWTOOL" kavailable >/dev/null 2>&1; then
	refuse "room, but no device-mapper: refused before any copy" \
		"cannot move volume 'u' to the kernel engine: no device-mapper here .*; nothing was changed" cv add "$LOOP"
	sums >"$T/sums.now"
	check "the refused move changed no store, image or catalogue" cmp -s "$T/sums.before" "$T/sums.now"
	# a store of the chain that cannot be read (older snapshots read through it)
	md5sum "${STORES[0]}" "${STORES[2]}" "$IMG" >"$T/sums.before"
	printf 'XXXX' | dd of="${STORES[1]}" conv=notrunc status=none
	refuse "a store that cannot be read: refused, naming it" \
		"cannot move volume 'u' to the kernel engine: snapshot u@s2: its store .*${STORES[1]##*/} cannot be opened: bad magic" \
		cv add "$LOOP"
	check "the refused move changed no other store, nor the image" md5sum --quiet -c "$T/sums.before"
else
	step "with room: u moves to the kernel engine" cv add "$LOOP"
	check "the answer says the stores were made standalone, $DROPPED chunks" \
		grep -q "made standalone first:" "$T/out"
	check "... $DROPPED chunks copied into 2 stores" grep -q "^$DROPPED chunks (.*) copied into 2 stores" "$T/out"
	for i in 1 2 3; do
		check "/dev/mapper/cowvol-u-s$i reads as u@s$i did" cmp -s "/dev/mapper/cowvol-u-s$i" "$T/s$i"
	done
	on_exit 'for d in cowvol-u-s1 cowvol-u-s1-cow cowvol-u-s2 cowvol-u-s2-cow cowvol-u-s3 cowvol-u-s3-cow cowvol-u cowvol-u-real; do dmsetup remove "$d" 2>/dev/null; done'
fi
stop_daemon || notok "cowvold exits 0"
