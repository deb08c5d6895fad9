#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Guest script (run: tests/kernel/vm.sh tests/kernel/smoke.sh): proves that
# the kernel's dm-snapshot works and writes the persistent store format that
# cowvol's exception store follows.
# shellcheck source=tests/kernel/guest-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

head -c 16M /dev/urandom >/tmp/origin.img
cp /tmp/origin.img /tmp/origin.copy
head -c 1M /dev/urandom >/tmp/new.bin

origin=$(make_loop /tmp/origin.img 16M)
cow=$(make_loop /tmp/cow.img 8M)
n=$(sectors "$origin")
[ "$n" = 32768 ] || fail "origin loop has $n sectors, want 32768"
ok "loops: origin $origin, cow $cow"

# Both targets must name the same device: the origin only copies chunks into
# snapshots registered on its own underlying device.
snap=$(dm_create smoke-snap "0 $n snapshot $origin $cow P 8")
orig=$(dm_create smoke-origin "0 $n snapshot-origin $origin")
ok "created snapshot and snapshot-origin"

dd if=/tmp/new.bin of="$orig" bs=1M seek=4 count=1 oflag=direct conv=notrunc status=none
dd if="$orig" bs=1M skip=4 count=1 iflag=direct status=none | cmp -s - /tmp/new.bin ||
	fail "origin does not read back the 1 MiB just written"
ok "wrote 1 MiB to the origin at 4 MiB"

cmp "$snap" /tmp/origin.copy || fail "snapshot changed after an origin write"
ok "snapshot still holds the original data"

st=$(dm_status smoke-snap)
[[ $st =~ ^([0-9]+)/([0-9]+)\ ([0-9]+)$ ]] || fail "snapshot status '$st' is not 'A/T M'"
alloc=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
[ "$alloc" -gt 16 ] || fail "snapshot status '$st': $alloc sectors allocated, want > 16"
[ "$total" = "$(sectors "$cow")" ] || fail "snapshot status '$st': total is not the cow size"
ok "snapshot status $st"

hdr=$(hex_bytes "$cow" 16)
want="53 6e 41 70 01 00 00 00 01 00 00 00 08 00 00 00"
[ "$hdr" = "$want" ] || fail "cow header is '$hdr', want '$want'"
ok "cow header: SnAp, valid, version 1, chunk 8 sectors"
