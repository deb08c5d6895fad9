#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A store that fills invalidates its snapshot only: the volume and the other
# snapshots stay intact (the older ones read through its chunks) and list
# says why. With autoextend on (the default, 70 % / 20 %) the same load
# grows the store instead, and the log says so.
. "$(dirname "$0")/../lib.sh"

printf 'autoextend_threshold = 100\n' >"$T/noextend.conf"
start_daemon --config "$T/noextend.conf" || exit 1
cv create v --size 8M >/dev/null
"$COWTOOL" pattern "$T/data" 8M 3
cv write v --offset 0 <"$T/data"
# big, then small: the newest takes the copies, so small fills while big
# reads the chunks it copied before through it and takes the copies after
cv snap v@big --store-size 16M >/dev/null
cv snap v@small --store-size 64K >/dev/null   # 16 chunks: 13 data chunks
"$COWTOOL" pattern "$T/new" 1M 4
expect 0 "a 1 MiB origin write goes through although a store fills" sh -c "$COWVOL write v --offset 0 <'$T/new'"
expect 0 "list" cv list
expect_in out "v@small .*invalid: overflow" "list shows the small snapshot invalid, and why"
expect_in out "v@big .*active" "the other snapshot stays active"
cv cat v >"$T/vol.out"
cp "$T/data" "$T/model" && dd if="$T/new" of="$T/model" conv=notrunc status=none
check "the volume has the new data" cmp -s "$T/vol.out" "$T/model"
cv cat v@big >"$T/big.out"
check "the other snapshot still has the old data" cmp -s "$T/big.out" "$T/data"
expect 1 "reading the invalid snapshot fails" cv cat v@small
expect_in err "invalid" "with a message that says invalid"
expect 1 "restoring it is refused" cv restore v@small
expect_in err "invalid" "with a message that says invalid"
check "the log names the invalidation" grep -q "v@small is now invalid: overflow" "$T/daemon.log"
stop_daemon
start_daemon --config "$T/noextend.conf" || exit 1
expect 0 "list after a restart" cv list
expect_in out "v@small .*invalid" "the snapshot is still invalid after a restart"
stop_daemon

# the same with autoextend on: the store grows before it fills
rm -rf "$STATE"
start_daemon || exit 1
cv create v --size 8M >/dev/null
cv write v --offset 0 <"$T/data"
cv snap v@small --store-size 64K >/dev/null
expect 0 "the same 1 MiB write with autoextend on" sh -c "$COWVOL write v --offset 0 <'$T/new'"
expect 0 "list" cv list
expect_in out "v@small .*active" "the snapshot stays valid"
cv cat v@small >"$T/small.out"
check "and reads the old data" cmp -s "$T/small.out" "$T/data"
check "the log says the store grew" grep -q "v@small: store grew from" "$T/daemon.log"
cv list --json >"$T/list.json"
check "the store is bigger than 64 KiB now" grep -qE '"store_size":[0-9]{7,}' "$T/list.json"
