#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol rename, as lvrename: a snapshot (the catalogue's name alone), a
# volume (the image cowvold made renamed with it); NBD exports follow the
# new names, an open connection goes on; names survive kill -9; the old
# name is free again; a rename cut between the image's two names leaves a
# second name that the next start removes (not a stray); refusals change
# nothing.
. "$(dirname "$0")/../lib.sh"
requires nbdinfo "$PYTHON"

start_daemon || exit 1
cv create v --size 1M --chunk-size 4K >/dev/null
"$COWTOOL" pattern "$T/A" 1M 1
cv write v <"$T/A"
cv snap v@s >/dev/null
"$COWTOOL" pattern "$T/B" 64K 2
cv write v <"$T/B"
cv cat v >"$T/ref.v"
NBD=$T/nbd.sock
RAW=$REPO/tests/integration/nbd-raw.py

expect 0 "rename v@s t" cv rename v@s t
expect_in out "^Renamed snapshot v@s to v@t$" "it says so"
cv cat v@t >"$T/out"
check "v@t reads what v@s held" cmp -s "$T/out" "$T/A"
refuse "v@s is gone" "no snapshot named 's'" cv cat v@s

# an NBD connection open across the volume's rename goes on
"$PYTHON" "$RAW" "$NBD" hold v "$T/release" & hp=$!
for _ in $(seq 1 100); do [ -e "$T/release.ready" ] && break; sleep 0.05; done
expect 0 "rename v w, with an NBD connection open" cv rename v w
expect_in out "^Renamed volume v to w, image $STATE/volumes/w.img$" "it says so, with the image's new name"
check "the image has its new name" test -f "$STATE/volumes/w.img"
check "and not the old one" test ! -e "$STATE/volumes/v.img"
touch "$T/release"
check "the connection opened before ends cleanly" wait $hp
cv cat w >"$T/out"
check "w reads what v held" cmp -s "$T/out" "$T/ref.v"
cv cat w@t >"$T/out"
check "w@t reads as before" cmp -s "$T/out" "$T/A"
check "NBD serves the new name" test "$(nbdinfo --size "nbd+unix:///w?socket=$NBD")" = 1048576
check "and no longer the old one" eval "! nbdinfo --size 'nbd+unix:///v?socket=$NBD' 2>/dev/null"
check "the log names the change and who asked" grep -qE "Renamed volume v to w \(image .*/w.img\) \[uid 0, pid [0-9]+\]$" \
	"$T/daemon.log"

kill9_daemon
start_daemon || exit 1
expect 0 "after kill -9: list" cv list
expect_in out "^w " "w is there"
expect_in out "^  w@t " "w@t is there"
check "no volume v" eval "! grep -q '^v ' '$T/out'"
expect 0 "the old name is free: create v" cv create v --size 1M
check "with an image of its own" test -f "$STATE/volumes/v.img"
cv rm v >/dev/null

# refusals: nothing changed
cp "$STATE/catalogue.json" "$T/cat.before"
refuse "an unknown option" "unknown option .--bogus." cv rename w w2 --bogus
cv create x --size 1M >/dev/null
cp "$STATE/catalogue.json" "$T/cat.before"
refuse "onto another volume" "a volume named 'x' exists already" cv rename w x
cv snap w@u >/dev/null
cp "$STATE/catalogue.json" "$T/cat.before"
refuse "onto another snapshot" "volume 'w' has a snapshot named 'u' already" cv rename w@t u
refuse "to a bad name" "bad volume name" cv rename w 'a b'
refuse "to its own name" "'w' is its name already" cv rename w w
refuse "with '@' in the new name" "without '@'" cv rename w@t w@z
check "the catalogue is unchanged" cmp -s "$T/cat.before" "$STATE/catalogue.json"

# a rename cut short: the image has both names; the start keeps the one the
# catalogue names and removes the other, which is no stray
stop_daemon
ln "$STATE/volumes/w.img" "$STATE/volumes/old.img"
start_daemon || exit 1
check "the second name is gone" test ! -e "$STATE/volumes/old.img"
check "the image is still there" test -f "$STATE/volumes/w.img"
check "the log says why" grep -q "volumes/old.img: a second name of a volume's image (a rename cut short)" "$T/daemon.log"
check "it is no stray" test ! -e "$STATE/stray/old.img"
cv cat w >"$T/out"
check "w reads as before" cmp -s "$T/out" "$T/ref.v"
stop_daemon
check "it stops cleanly" test $? = 0
