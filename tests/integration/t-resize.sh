#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol resize of an image-file volume, as lvextend and lvreduce do it:
#   - grown, the new space reads zero; the snapshots keep their size and
#     content (cat, NBD export size, reads and writes past their end
#     refused), no copy of the grown space goes to a snapshot that does not
#     cover it, and a snapshot's diff counts the grown space as changed;
#   - sizes survive kill -9;
#   - a restore of a snapshot taken before the growth puts back what it
#     covers and leaves the rest of the volume as it is; the kept snapshot
#     then covers the whole volume;
#   - shrinking is refused while the volume has snapshots, even with
#     --force (as LVM refuses to reduce a snapshot origin), and without
#     --force; with --force and no snapshot it cuts the end off.
. "$(dirname "$0")/../lib.sh"
requires nbdinfo "$PYTHON"

MiB=1048576
start_daemon || exit 1
cv create v --size 1M --chunk-size 4K >/dev/null
"$COWTOOL" pattern "$T/A" 1M 1
cv write v <"$T/A"
cv snap v@s1 >/dev/null

jq_() { # EXPR over `cowvol list v --json`
	cv list v --json | "$PYTHON" -c 'import json,sys
v = json.load(sys.stdin)["volumes"][0]
s = {x["name"]: x for x in v["snapshots"]}
print(eval(sys.argv[1]))' "$1"
}
# MODEL: write FILE at OFFSET into the model file MODEL
put() { dd if="$2" of="$1" bs=4096 seek=$(($3 / 4096)) conv=notrunc status=none; }

expect 0 "resize v --size +1M" cv resize v --size +1M
expect_in out "^Resized volume v to 2.0 MiB$" "it says the new size"
check "list: v is 2 MiB" test "$(jq_ 'v["size"]')" = $((2 * MiB))
check "list: s1 keeps its 1 MiB" test "$(jq_ 's["s1"]["size"]')" = $MiB
cp "$T/A" "$T/v.model"
truncate -s 2M "$T/v.model"
cv cat v >"$T/out"
check "v reads its data, then zeros" cmp -s "$T/out" "$T/v.model"
cv cat v@s1 >"$T/out"
check "s1 reads as taken (1 MiB)" cmp -s "$T/out" "$T/A"

"$COWTOOL" pattern "$T/B" 64K 2
cv write v --offset $MiB <"$T/B"
put "$T/v.model" "$T/B" $MiB
check "a write into the grown space copies nothing into s1" test "$(jq_ 's["s1"]["exceptions"]')" = 0
"$COWTOOL" pattern "$T/C" 64K 3
cv write v <"$T/C"
put "$T/v.model" "$T/C" 0
check "a write below s1's end copies into it (16 chunks)" test "$(jq_ 's["s1"]["exceptions"]')" = 16
cv cat v@s1 >"$T/out"
check "s1 still reads as taken" cmp -s "$T/out" "$T/A"
cv cat v >"$T/out"
check "v reads as written" cmp -s "$T/out" "$T/v.model"

cv snap v@s2 >/dev/null
cp "$T/v.model" "$T/s2.model"
check "s2, taken after, is 2 MiB" test "$(jq_ 's["s2"]["size"]')" = $((2 * MiB))
"$COWTOOL" pattern "$T/D" 64K 4
cv write v --offset $((MiB + 32768)) <"$T/D"
put "$T/v.model" "$T/D" $((MiB + 32768))
cv cat v@s2 >"$T/out"
check "s2 reads as taken, its end included" cmp -s "$T/out" "$T/s2.model"

refuse "a cat of s1 past its end is refused" "offset 1572864 is outside the snapshot \(1048576 bytes\)" \
	cv cat v@s1 --offset 1536K
refuse "a write into s1 past its end is refused" "past the end of the snapshot \(1048576 bytes\)" \
	eval 'cv write v@s1 --offset 1M <"$T/B"'
check "NBD: s1's export is 1 MiB" test "$(nbdinfo --size "$(cv export v@s1)")" = $MiB
check "NBD: v's export is 2 MiB" test "$(nbdinfo --size "$(cv export v)")" = $((2 * MiB))
cv diff v@s1 --json >"$T/diff"
check "s1's diff ends with the grown space, 1 MiB at 1 MiB" "$PYTHON" -c 'import json,sys
r = json.load(open(sys.argv[1]))["ranges"][-1]
sys.exit(not (r["offset"] == 1048576 and r["length"] == 1048576))' "$T/diff"

refuse "shrinking under snapshots is refused, even with --force" "has snapshots: they read the end" \
	cv resize v --size 1M --force
check "v is still 2 MiB" test "$(jq_ 'v["size"]')" = $((2 * MiB))

kill9_daemon
start_daemon || exit 1
check "after kill -9: v is 2 MiB, s1 1 MiB, s2 2 MiB" \
	test "$(jq_ '(v["size"], s["s1"]["size"], s["s2"]["size"])')" = "($((2 * MiB)), $MiB, $((2 * MiB)))"
cv cat v >"$T/out"
check "after kill -9: v reads as written" cmp -s "$T/out" "$T/v.model"
cv cat v@s1 >"$T/out"
check "after kill -9: s1 reads as taken" cmp -s "$T/out" "$T/A"
cv cat v@s2 >"$T/out"
check "after kill -9: s2 reads as taken" cmp -s "$T/out" "$T/s2.model"

# --- a restore of the smaller snapshot -------------------------------------------------
expect 0 "restore --keep of s1" cv restore v@s1 --keep
cp "$T/v.model" "$T/restored.model"
put "$T/restored.model" "$T/A" 0
cv cat v >"$T/out"
check "v: s1's 1 MiB, then the end it had" cmp -s "$T/out" "$T/restored.model"
cv cat v@s2 >"$T/out"
check "s2 still reads as taken" cmp -s "$T/out" "$T/s2.model"
check "s1, kept (the newest), now covers the volume: 2 MiB" test "$(jq_ 's["s1"]["size"]')" = $((2 * MiB))
cv cat v@s1 >"$T/out"
check "s1 reads as the restored volume" cmp -s "$T/out" "$T/restored.model"
kill9_daemon
start_daemon || exit 1
check "after kill -9: s1 is 2 MiB" test "$(jq_ 's["s1"]["size"]')" = $((2 * MiB))
cv cat v@s1 >"$T/out"
check "after kill -9: s1 reads as the restored volume" cmp -s "$T/out" "$T/restored.model"

# --- shrinking ---------------------------------------------------------------------
cv rm v@s1 >/dev/null
cv rm v@s2 >/dev/null
refuse "shrinking without --force is refused, saying what it destroys" \
	"shrinking volume 'v' from 2.0 MiB to 1.0 MiB destroys the data past 1.0 MiB.*give --force" cv resize v --size 1M
check "v is still 2 MiB" test "$(jq_ 'v["size"]')" = $((2 * MiB))
expect 0 "with --force it shrinks" cv resize v --size 1M --force
cv cat v >"$T/out"
check "v is the first 1 MiB it had" cmp -s "$T/out" <(head -c $MiB "$T/restored.model")
kill9_daemon
start_daemon || exit 1
check "after kill -9: v is 1 MiB" test "$(jq_ 'v["size"]')" = $MiB
stop_daemon
check "it stops cleanly" test $? = 0
