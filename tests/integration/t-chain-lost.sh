#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A chain with a store that cannot be opened (damaged while the daemon was
# down): the older snapshots read through it, so they must not read at all
# rather than read wrong; the snapshot with the lost store cannot be removed
# while older ones need it; with the newest store lost, origin writes are
# refused until a new snapshot is taken (the copies need a place).  Once
# the store is back, every snapshot reads as before, the origin writes made
# meanwhile included.
. "$(dirname "$0")/../lib.sh"

start_daemon || exit 1
cv create v --size 1M --chunk-size 4K >/dev/null
"$COWTOOL" pattern "$T/A" 1M 1
cv write v <"$T/A"
cv snap v@s1 >/dev/null
"$COWTOOL" pattern "$T/B" 16K 2
cv write v <"$T/B" # chunks 0-3: copied into s1
cv snap v@s2 >/dev/null
"$COWTOOL" pattern "$T/C" 32K 3
cv write v <"$T/C" # chunks 0-7: into s2; s1 reads 4-7 through s2
cv snap v@s3 >/dev/null
"$COWTOOL" pattern "$T/D" 8K 4
cv write v --offset 65536 <"$T/D" # chunks 16-17: into s3; s1 and s2 read them through s3
for s in s1 s2 s3; do cv cat "v@$s" >"$T/ref.$s"; done
cv cat v >"$T/ref.v"
store_of() {
	cv list v --json | "$PYTHON" -c 'import json,sys
for s in json.load(sys.stdin)["volumes"][0]["snapshots"]:
    if s["name"] == sys.argv[1]: print(s["store"])' "$1"
}
S2=$(store_of s2)
S3=$(store_of s3)
state_of() { # NAME: state and reason
	cv list v --json | "$PYTHON" -c 'import json,sys
for s in json.load(sys.stdin)["volumes"][0]["snapshots"]:
    if s["name"] == sys.argv[1]: print(s["state"], s["reason"])' "$1"
}

# --- a store in the middle lost ------------------------------------------------------
stop_daemon
cp "$S2" "$T/s2.good"
printf 'XXXX' | dd of="$S2" conv=notrunc status=none
start_daemon || exit 1
check "s2 (bad magic) is invalid: its store cannot be opened" eval '[[ "$(state_of s2)" == "invalid its store cannot be opened" ]]'
check "s1 reads through s2: invalid, and says so" \
	eval '[[ "$(state_of s1)" == "invalid it reads through v@s2, whose store cannot be opened" ]]'
check "s3, newer, stays active" eval '[[ "$(state_of s3)" == "active None" ]]'
expect 1 "cat of s1 is refused (it would read wrong data)" cv cat v@s1
expect_in err "v@s1 is invalid: it reads through v@s2" "with the reason"
check "that cat wrote nothing" test ! -s "$T/out"
expect 0 "s3 reads" cv cat v@s3
check "s3 reads as before" cmp -s "$T/out" "$T/ref.s3"
cp "$STATE/catalogue.json" "$T/cat.before"
expect 1 "rm of s2 is refused while s1 reads through it" cv rm v@s2
expect_in err "cannot remove v@s2: .*the older snapshots read through it \(v@s1 is the oldest\): remove them first" \
	"saying why and what to do"
check "the catalogue is unchanged" cmp -s "$T/cat.before" "$STATE/catalogue.json"
check "s2's store is still there" test -e "$S2"
"$COWTOOL" pattern "$T/E" 64K 5
expect 0 "origin writes go on (s3 takes their copies)" sh -c "$COWVOL write v --offset 0 <'$T/E'"
expect 0 "s3 reads" cv cat v@s3
check "s3 still reads as before the write" cmp -s "$T/out" "$T/ref.s3"
cp "$T/ref.v" "$T/want.v" && dd if="$T/E" of="$T/want.v" conv=notrunc status=none
stop_daemon
cp "$T/s2.good" "$S2"
start_daemon || exit 1
for s in s1 s2 s3; do
	expect 0 "store back: $s reads" cv cat "v@$s"
	check "store back: $s reads as before, the write made meanwhile included" cmp -s "$T/out" "$T/ref.$s"
done
expect 0 "the volume reads" cv cat v
check "the volume holds the write made meanwhile" cmp -s "$T/out" "$T/want.v"

# --- the newest store lost -----------------------------------------------------------
stop_daemon
cp "$S3" "$T/s3.good"
printf 'XXXX' | dd of="$S3" conv=notrunc status=none
start_daemon || exit 1
check "s3 (the newest) is invalid" eval '[[ "$(state_of s3)" == "invalid its store cannot be opened" ]]'
check "s2 reads through it: invalid" \
	eval '[[ "$(state_of s2)" == "invalid it reads through v@s3, whose store cannot be opened" ]]'
check "s1 too" eval '[[ "$(state_of s1)" == "invalid it reads through v@s3, whose store cannot be opened" ]]'
check "the log says writes are refused, and what to do" \
	grep -q "Volume v: writes are refused: the store of its newest snapshot v@s3 cannot be opened" "$T/daemon.log"
"$COWTOOL" pattern "$T/F" 16K 6
expect 1 "an origin write is refused: its copies would have nowhere to go" sh -c "$COWVOL write v --offset 131072 <'$T/F'"
expect_in err "cannot write v: the store of its newest snapshot cannot be opened .*take a snapshot first \(cowvol snap v\)" \
	"saying why and what to do"
expect 0 "the volume still reads" cv cat v
check "the refused write changed nothing" cmp -s "$T/out" "$T/want.v"
expect 0 "a new snapshot is taken" cv snap v@s4
expect 0 "then the origin write goes through (s4 takes its copies)" sh -c "$COWVOL write v --offset 131072 <'$T/F'"
stop_daemon
cp "$T/s3.good" "$S3"
start_daemon || exit 1
for s in s1 s2 s3; do
	expect 0 "store back: $s reads" cv cat "v@$s"
	check "store back: $s reads as before" cmp -s "$T/out" "$T/ref.$s"
done
expect 0 "s4 reads" cv cat v@s4
check "s4 is the volume before the last write" cmp -s "$T/out" "$T/want.v"
expect 0 "with every store back, s2 can go" cv rm v@s2
expect 0 "and s1 still reads" cv cat v@s1
check "s1 reads as before" cmp -s "$T/out" "$T/ref.s1"
stop_daemon
check "the daemon stops cleanly" test $? = 0
