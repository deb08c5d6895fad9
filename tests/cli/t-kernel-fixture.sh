#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A store the kernel wrote (tests/fixtures, made by tests/fixtures/regen.sh
# in the VM) reads back offline: check passes, info gives the kernel's own
# status line, view over the origin after the writes gives the origin before.
. "$(dirname "$0")/../lib.sh"
F=$REPO/tests/fixtures
cp "$F/kernel-4k.cow" "$T/k.cow"
sum=$(md5sum <"$T/k.cow")
expect 0 "check the kernel's store" "$COWVOL" store check "$T/k.cow"
expect_in out "sound: 300 exceptions" "300 exceptions, as the kernel copied"
expect 0 "info --json" "$COWVOL" store info --json "$T/k.cow"
st="$(sed -n 's/.*"allocated_sectors":\([0-9]*\).*/\1/p' "$T/out")/$(sed -n 's/.*"total_sectors":\([0-9]*\).*/\1/p' "$T/out") $(sed -n 's/.*"metadata_sectors":\([0-9]*\).*/\1/p' "$T/out")"
[ "$st" = "$(cat "$F/kernel-4k.status")" ] && ok "info's figures = the kernel's status '$st'" ||
	notok "info's figures '$st' = the kernel's status '$(cat "$F/kernel-4k.status")'"
expect 0 "view" "$COWVOL" store view "$F/kernel-4k.origin-after" "$T/k.cow" "$T/view.img"
cmp -s "$T/view.img" "$F/kernel-4k.origin-before" && ok "view = the origin before the kernel's writes" ||
	notok "view = the origin before the kernel's writes"
[ "$sum" = "$(md5sum <"$T/k.cow")" ] && ok "reading the store changed nothing" || notok "reading the store changed nothing"
