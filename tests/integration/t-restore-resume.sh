#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A restore the catalogue records, at the daemon's start (as a crash, an
# upgrade or a stop leaves it), from a chain v@m (older) and v@n (newer):
#   - "mode": "chain" resumes through the chain (v becomes m's content,
#     which reads through n), and "flattened": false without "mode" (an
#     older cowvold that may have begun to consume the store) resumes only
#     for the newest snapshot, where either way is right; for an older one
#     the volume is held: no writes, reads or exports, nothing changed;
#   - a restore whose store cannot be used holds the volume the same way
#     (its NBD export too, which otherwise would take writes the resume
#     then writes over);
#   - a restore whose end cannot be saved in the catalogue (a folder where
#     the catalogue's temporary file goes) keeps the volume's writes
#     refused and tries again: once it can save, it ends; killed before,
#     the next start ends it; and a write after the end survives a kill -9
#     (a restore still recorded would resume over it).
# The recorded restores are written into the catalogue by hand, as the
# daemon writes them when a restore begins.
. "$(dirname "$0")/../lib.sh"
requires qemu-io "$PYTHON"

start_daemon || exit 1
NBD=$T/nbd.sock
cv create v --size 1M --chunk-size 4K >/dev/null
"$COWTOOL" pattern "$T/A" 1M 1
cv write v <"$T/A"
cv snap v@m >/dev/null
"$COWTOOL" pattern "$T/B" 16K 2
cv write v <"$T/B" # chunks 0-3 into m
cv snap v@n >/dev/null
"$COWTOOL" pattern "$T/C" 32K 3
cv write v <"$T/C" # chunks 0-7 into n: m reads 4-7 through n
"$COWTOOL" pattern "$T/D" 8K 4
cv write v --offset 65536 <"$T/D" # chunks 16-17 into n: m reads them through n
for s in m n; do cv cat "v@$s" >"$T/ref.$s"; done
cv cat v >"$T/ref.v"
IMG=$(cv list v --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["path"])')
check "setup: m and n differ, and v from both" eval '! cmp -s "$T/ref.m" "$T/ref.n" && ! cmp -s "$T/ref.n" "$T/ref.v"'
stop_daemon
tar -C "$STATE" -cf "$T/pristine.tar" .

store_of() { # NAME
	"$PYTHON" -c 'import json,sys
for s in json.load(open(sys.argv[1]))["volumes"][0]["snapshots"]:
    if s["name"] == sys.argv[2]: print(s["store"])' "$STATE/catalogue.json" "$1"
}
# record a restore of v@SNAP: restore_as SNAP KEEP JSON-FIELDS (after the
# state folder is put back as it was)
restore_as() {
	rm -rf "$STATE"
	mkdir -p "$STATE"
	tar -C "$STATE" -xf "$T/pristine.tar"
	"$PYTHON" -c 'import json,sys
p = sys.argv[1]
c = json.load(open(p))
v = c["volumes"][0]
u = [s["uuid"] for s in v["snapshots"] if s["name"] == sys.argv[2]][0]
r = {"snapshot": u, "keep": sys.argv[3] == "keep"}
r.update(json.loads(sys.argv[4]))
v["restore"] = r
json.dump(c, open(p, "w"), indent=2)' "$STATE/catalogue.json" "$1" "$2" "$3"
}
restore_field() { # FIELD: the catalogue's restore's FIELD, or "-"
	"$PYTHON" -c 'import json,sys
r = json.load(open(sys.argv[1]))["volumes"][0].get("restore")
print("-" if r is None or sys.argv[2] not in r else json.dumps(r[sys.argv[2]]))' "$STATE/catalogue.json" "$1"
}
# wait (up to 60 s) until v's restore is over
restore_done() {
	local end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ]; do
		cv list v --json | "$PYTHON" -c 'import json,sys
sys.exit(json.load(sys.stdin)["volumes"][0]["restore"] is not None)' && return 0
		sleep 0.1
	done
	return 1
}
# wait (up to 60 s) until the daemon's log says PATTERN
log_says() {
	local end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ]; do
		grep -qE -- "$1" "$T/daemon.log" && return 0
		sleep 0.1
	done
	return 1
}
URI="nbd+unix:///v?socket=$NBD"
sums() { md5sum "$STATE"/stores/* "$IMG"; }

# --- "mode": "chain", an older snapshot: resumed through the chain --------------------------
restore_as m drop '{"mode": "chain", "flattened": false}'
start_daemon || exit 1
check "mode chain: the restore of m ends" restore_done
expect 0 "v reads" cv cat v
check "v is m's content (what m reads through n included)" cmp -s "$T/out" "$T/ref.m"
expect 0 "n reads" cv cat v@n
check "n is as it was" cmp -s "$T/out" "$T/ref.n"
check "m is consumed" eval '! cv list v | grep -q "v@m "'
stop_daemon

# --- "flattened": false without "mode", the newest: resumed -------------------------------
restore_as n drop '{"flattened": false}'
start_daemon || exit 1
check "unsure, the newest: the restore of n ends" restore_done
expect 0 "v reads" cv cat v
check "v is n's content" cmp -s "$T/out" "$T/ref.n"
expect 0 "m reads" cv cat v@m
check "m is as it was" cmp -s "$T/out" "$T/ref.m"
stop_daemon

# --- "flattened": false without "mode", an older one: held -----------------------------------
restore_as m drop '{"flattened": false}'
cp "$STATE/catalogue.json" "$T/cat.unsure"
start_daemon || exit 1
sums >"$T/sums.before"
expect 0 "list works" cv list v
expect_in out "restore from m held: it cannot resume" "list says the restore is held"
check "list --json says why" eval 'cv list v --json | grep -q "\"stalled\": *\"it was begun by an older cowvold"'
refuse "a write to the held volume is refused" "held: its restore from m cannot resume" cv write v <"$T/B"
refuse "a read of the held volume is refused" "held: its restore from m cannot resume" cv cat v
refuse "an export of the held volume is refused" "held: its restore from m cannot resume" cv export v
expect 1 "an NBD client cannot open it either (qemu-io)" qemu-io -f raw -c "write -P 0xee 0 4096" "$URI"
expect_in err "held: its restore from m cannot resume" "the NBD client is told why"
expect 0 "m reads" cv cat v@m
check "m is as it was" cmp -s "$T/out" "$T/ref.m"
expect 0 "n reads" cv cat v@n
check "n is as it was" cmp -s "$T/out" "$T/ref.n"
check "the image and the stores are unchanged" eval 'sums | cmp -s - "$T/sums.before"'
stop_daemon
check "the catalogue still records the restore as it was (no mode)" \
	test "$(restore_field mode) $(restore_field flattened)" = "- false"

# --- a store that cannot be used: held ----------------------------------------------------
restore_as m drop '{"mode": "chain"}'
printf 'XXXX' | dd of="$(store_of m)" conv=notrunc status=none
start_daemon || exit 1
check "list --json says the store cannot be used" \
	eval 'cv list v --json | grep -q "\"stalled\": *\"the snapshot.s store cannot be used"'
refuse "a write is refused" "held: its restore from m cannot resume" cv write v <"$T/B"
expect 1 "an NBD write is refused (qemu-io)" qemu-io -f raw -c "write -P 0xee 0 4096" "$URI"
stop_daemon
check "the image is unchanged: it holds what v held" cmp -s "$IMG" "$T/ref.v"

# --- the end cannot be saved: writes stay refused, it tries again ---------------------------
restore_as m keep '{"mode": "chain"}'
mkdir "$STATE/.catalogue.json.tmp"
start_daemon || exit 1
check "the log says the end waits for the catalogue" log_says "Restore of v: its (end|last part) waits until the catalogue can be saved"
expect 0 "list works" cv list v
expect_in out "restoring from m" "list still shows the restore"
refuse "a write is refused" "being restored" cv write v <"$T/B"
expect 1 "an NBD write is refused (qemu-io)" qemu-io -f raw -c "write -P 0xee 0 4096" "$URI"
kill9_daemon
rmdir "$STATE/.catalogue.json.tmp"
start_daemon || exit 1
check "after kill -9, the next start ends the restore" restore_done
expect 0 "v reads" cv cat v
check "v is m's content" cmp -s "$T/out" "$T/ref.m"
expect 0 "m is kept and reads" cv cat v@m
check "m is m's content" cmp -s "$T/out" "$T/ref.m"
"$COWTOOL" pattern "$T/E" 64K 5
check "a write after the end" eval 'cv write v <"$T/E" >/dev/null'
kill9_daemon
start_daemon || exit 1
expect 0 "v reads after kill -9" cv cat v
check "v holds that write (no restore resumed over it)" cmp -s -n 65536 "$T/out" "$T/E"
check "and m's content after it" cmp -s -i 65536 "$T/out" "$T/ref.m"
expect 0 "m reads" cv cat v@m
check "m still is m's content" cmp -s "$T/out" "$T/ref.m"
stop_daemon

# the newest (no step before the end): while the end waits for the
# catalogue, the restore still shows, and what a restore refuses is refused
restore_as n keep '{"mode": "chain"}'
mkdir "$STATE/.catalogue.json.tmp"
start_daemon || exit 1
check "the end of n's restore waits for the catalogue" log_says "Restore of v: its end waits until the catalogue can be saved"
refuse "rm of the restored snapshot meanwhile" "being restored" cv rm v@n
refuse "a snapshot meanwhile" "being restored" cv snap v@x
refuse "another restore meanwhile" "being restored" cv restore v@m
refuse "a write meanwhile" "being restored" cv write v <"$T/B"
rmdir "$STATE/.catalogue.json.tmp"
check "then it ends" restore_done
expect 0 "v reads" cv cat v
check "v is n's content" cmp -s "$T/out" "$T/ref.n"
expect 0 "n is kept and reads" cv cat v@n
check "n is n's content" cmp -s "$T/out" "$T/ref.n"
stop_daemon

restore_as m drop '{"mode": "chain"}'
mkdir "$STATE/.catalogue.json.tmp"
start_daemon || exit 1
check "without --keep: the end waits for the catalogue" log_says "Restore of v: its (end|last part) waits until the catalogue can be saved"
STORE_M=$(store_of m)
check "m's store is still there meanwhile" test -e "$STORE_M"
rmdir "$STATE/.catalogue.json.tmp"
check "once the catalogue can be saved, the restore ends by itself" restore_done
check "m's store is then removed" test ! -e "$STORE_M"
expect 0 "v reads" cv cat v
check "v is m's content" cmp -s "$T/out" "$T/ref.m"
check "writes work again" eval 'cv write v <"$T/E" >/dev/null'
expect 0 "v reads" cv cat v
check "v holds the write" cmp -s -n 65536 "$T/out" "$T/E"
stop_daemon
check "it stops cleanly" test $? = 0
