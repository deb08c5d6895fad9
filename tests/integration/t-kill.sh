#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kill -9 of cowvold at random moments while clients write through NBD and
# the CLI.  Two volumes, ka (4 KiB chunks) and kb (64 KiB chunks), and kb@pin,
# a snapshot written through its own NBD export.  Each round, with the
# daemon running:
#   - three raw NBD clients (killmodel.py nbd), one on ka, one on kb, one on
#     kb@pin, each in its own region: seeded writes at random places (aligned
#     or not; some with FUA, some write zeroes), one request in flight, a
#     flush now and then; each logs every request before sending it and every
#     acknowledgement (a flush's fsynced) with the time;
#   - one CLI client (killmodel.py cli): `cowvol write` into each volume's CLI
#     region, and now and then `cowvol snap` / `cowvol rm` of its snapshots
#     (at most 3 a volume), logging each command and its exit code;
# then, after a random delay, kill -9 of cowvold, then of the clients.  With
# the daemon down the catalogue parses and each store passes `cowvol store
# check`.  After the restart (killmodel.py check; its header has the details):
#   - the catalogue lists both volumes, everything active, no restore; every
#     snapshot whose snap returned 0 is there, every one whose rm returned 0
#     is gone, interrupted ones either way; one store file a snapshot;
#   - per 4 KiB block of ka, kb and kb@pin: the state after the last durable
#     write (acknowledged before an acknowledged flush, an acknowledged FUA
#     write, a `cowvol write` that returned 0) or after a later write of the
#     same client (a kill may cut a write, page by page);
#   - a snapshot taken in this round holds the volume as it was at one
#     moment of its `snap`: per block of an NBD region the state after a
#     write acknowledged before the snap started or one sent before it
#     returned (acknowledged writes are in, flushed or not: a snapshot
#     commits the engine's pending writes); the CLI regions exactly as after
#     the CLI's earlier writes; the rest as before the round.  Older
#     snapshots are unchanged;
#   - no request or command failed before the kill.
# What was read becomes the baseline of the next round.  Before the rounds:
# a store no snapshot owns, planted with the daemon down, is removed at start
# when it holds no exception, else moved to the state's stray/ folder (the
# log warns, status counts it); an image no volume owns, too, by its data.
#   COWVOL_KILL_SEED=N    repeat a run (the choices; the timing differs)
#   COWVOL_KILL_ROUNDS=N  rounds (default 8)
. "$(dirname "$0")/../lib.sh"

requires "$PYTHON" # the clients and the checker are in Python
K=$REPO/tests/integration/killmodel.py
SEED=${COWVOL_KILL_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
ROUNDS=${COWVOL_KILL_ROUNDS:-8}
echo "# seed $SEED (COWVOL_KILL_SEED=$SEED to repeat), $ROUNDS rounds"
RANDOM=$SEED
M=$T/model
mkdir -p "$M"
export KILL_SEED=$SEED COWVOL=$COWVOL T STATE
NBD=$T/nbd.sock

# cowvold stopped: each store the catalogue names passes 'cowvol store
# check' (a file it does not name is the leftover of a snap or rm cut by the
# kill: the restart must remove it, which the checker sees)
stores_sound() { # WHEN
	local f bad=0 n=0
	for f in $("$PYTHON" -c "import json, sys
for v in json.load(open(sys.argv[1]))['volumes']:
    for s in v['snapshots']:
        print(s['store'])" "$STATE/catalogue.json"); do
		n=$((n + 1))
		if ! cv store check "$f" >"$T/out" 2>&1; then
			bad=1
			notok "$1: store ${f##*/} passes 'cowvol store check' ($(head -2 "$T/out" | tr '\n' ' '))"
		fi
	done
	[ "$bad" = 1 ] || ok "$1: the $n stores of the catalogue pass 'cowvol store check'"
}

start_daemon || exit 1
cv create ka --size 8M >/dev/null
cv create kb --size 8M --chunk-size 64K >/dev/null
"$PYTHON" "$REPO/tests/integration/model.py" gen "$SEED-ka" $((8 << 20)) "$T/d.ka" "$SEED-kb" $((8 << 20)) "$T/d.kb"
for v in ka kb; do
	cv write $v <"$T/d.$v"
done
cv snap kb@pin >/dev/null
cv snap ka@r0c1 >/dev/null
cv snap kb@r0c2 >/dev/null
# a store no snapshot owns (as a snap or rm cut by a kill leaves it) is
# removed at start when it is empty (a snap cut short), moved aside to
# stray/ when it holds exceptions (an rm cut short); the stores of the
# catalogue and other files stay
expect 0 "setup: SIGTERM, cowvold exits 0" stop_daemon
stray=$STATE/stores/$(cat /proc/sys/kernel/random/uuid).cow
kept=$STATE/stores/$(cat /proc/sys/kernel/random/uuid).cow
"$COWVOL" store create "$stray" --size 1M >/dev/null
"$COWTOOL" pattern "$T/kept-origin.img" 1M 7
"$COWVOL" store create "$kept" --size 1M >/dev/null && "$COWTOOL" fill "$T/kept-origin.img" "$kept" 5 3
cp "$kept" "$T/kept.copy"
echo keep >"$STATE/stores/notes.txt"
# an image a create cut short (sized, never written) goes; one an rm of a
# volume cut short left (it holds data) moves aside
truncate -s 1M "$STATE/volumes/ghost.img"
truncate -s 1M "$STATE/volumes/gone.img"
printf 'data' | dd of="$STATE/volumes/gone.img" bs=4096 seek=3 conv=notrunc status=none
cp "$STATE/volumes/gone.img" "$T/gone.copy"
start_daemon || exit 1
check "setup: the start removed an empty image no volume owns" test ! -e "$STATE/volumes/ghost.img"
expect_in daemon.log "Removed .*ghost.img: empty, and no volume owns it" "setup: the daemon logs it"
check "setup: and moved one with data to stray/, unchanged" eval \
	"test ! -e '$STATE/volumes/gone.img' && cmp -s '$STATE/stray/gone.img' '$T/gone.copy'"
expect_in daemon.log "Moved .*gone.img to .*stray/gone.img: no volume owns it and it holds data" "setup: the daemon warns of it"
expect 0 "setup: the name of the removed image can be created again" cv create ghost --size 1M
expect 0 "setup: and removed" cv rm ghost
check "setup: the start removed an empty store no snapshot owns" test ! -e "$stray"
expect_in daemon.log "Removed .*${stray##*/}: no snapshot owns it and it is empty" "setup: the daemon logs it"
check "setup: and moved one with exceptions to stray/, unchanged" eval \
	"test ! -e '$kept' && cmp -s '$STATE/stray/${kept##*/}' '$T/kept.copy'"
expect_in daemon.log "Moved .*${kept##*/} to .*stray/.*: no snapshot owns it and it holds exceptions" "setup: the daemon warns of it"
check "setup: status names the stray folder and its 2 files" eval \
	"cv status | grep -q 'strays: 2 file(s) with data that no volume or snapshot owns, in .*/stray'"
check "setup: and left a file that is no store of the daemon's" test -f "$STATE/stores/notes.txt"
check "setup: and each snapshot's store" test "$(ls "$STATE"/stores/*.cow | wc -l)" = 3
rm -r "$STATE/stray"
rm "$STATE/stores/notes.txt"
check "setup: the volumes and kb@pin" "$PYTHON" "$K" init "$M/state.json"
t0=$SECONDS
for round in $(seq 1 "$ROUNDS"); do
	export KILL_ROUND=$round
	rm -f "$T"/ready.*
	pids=
	for c in n1 n2 n3; do
		"$PYTHON" "$K" nbd "$NBD" $c "$M/r$round-$c.log" "$T/ready.$c" &
		pids="$pids $!"
	done
	"$PYTHON" "$K" cli "$M/state.json" cli "$M/r$round-cli.log" &
	pids="$pids $!"
	# the NBD clients connected, then 0.1 .. 2 s of work
	for _ in $(seq 1 400); do
		[ "$(ls "$T"/ready.* 2>/dev/null | wc -l)" = 3 ] && break
		sleep 0.025
	done
	delay=$((RANDOM % 1900 + 100))
	sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
	when="at ${delay} ms"
	# every other round, right after the next acknowledged flush
	if [ $((RANDOM % 2)) = 0 ]; then
		when="$when, then after a flush"
		"$PYTHON" "$K" wait-flush "$M/r$round"-n?.log || when="$when (none came)"
	fi
	tkill=$EPOCHREALTIME
	kill9_daemon
	# shellcheck disable=SC2086
	kill -9 $pids 2>/dev/null
	wait $pids 2>/dev/null
	check "round $round: the catalogue parses after kill -9 $when" \
		"$PYTHON" -c "import json, sys; json.load(open(sys.argv[1]))" "$STATE/catalogue.json"
	stores_sound "round $round"
	start_daemon || exit 1
	if ! "$PYTHON" "$K" check "$M/state.json" "$round" "$tkill"; then
		NOTOK=$((NOTOK + 1))
		echo "# round $round failed (COWVOL_KILL_SEED=$SEED); the logs:"
		for f in "$M/r$round"-*.log; do
			echo "#   ${f##*/}: $(wc -l <"$f") lines; last: $(tail -1 "$f")"
		done
		break
	fi
	rm -f "$M/r$round"-*.log
done
echo "# $round rounds in $((SECONDS - t0)) s: $("$PYTHON" "$K" stats "$M/state.json")"
expect 0 "the end: SIGTERM, cowvold exits 0" stop_daemon
stores_sound "the end"
