#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Durability across restarts of cowvold:
#  (a) a clean restart (SIGTERM, exit 0) keeps volumes, snapshots, their
#      content and the list as they were;
#  (b) kill -9 at random moments while a write of a few MiB runs (to the
#      volume, or now and then to one of its snapshots): the daemon starts
#      again, the catalogue is whole, every snapshot not written equals its
#      model exactly, every write that was acknowledged is there, and each 4
#      KiB block of the target holds the old or the new data of the write that
#      was cut (a process killed inside a write(2) of a file may have done
#      part of it, page by page, so a 64 KiB chunk may be part old, part new);
#  (c) kill -9 during a restore (at once, at a random point of its work,
#      after its end; with and without --keep): the restore resumes by
#      itself, the volume reads as the snapshot even before it ends, and ends
#      equal to it, the snapshot gone (or kept, equal to the volume), the
#      other snapshots unchanged; once more with SIGTERM instead of kill -9;
#  (d) SIGTERM during a long write: the write completes or fails cleanly,
#      cowvold exits 0, and what was acknowledged is there after the restart.
# After every kill, with the daemon down, each store passes
# 'cowvol store check'.  A kill lands at a point of the daemon's work read
# from /proc/PID/io (bytes read or written), not after a guessed delay.
# Random choices come from the seed printed first:
#   COWVOL_RESTART_SEED=N   repeat a run
#   COWVOL_RESTART_ROUNDS=N rounds of (b) (default 12)
. "$(dirname "$0")/../lib.sh"

requires "$PYTHON" # model.py makes the data and compares blocks
PY=$REPO/tests/integration/model.py
SEED=${COWVOL_RESTART_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
echo "# seed $SEED (COWVOL_RESTART_SEED=$SEED to repeat)"
RANDOM=$SEED
M=$T/model
mkdir -p "$M"

R=0
rnd() { R=$(( ((RANDOM << 15) | RANDOM) % $1 )); } # R in [0, N)
gen() { gens "$@"; }                                # TAG BYTES FILE
gens() { # TAG BYTES FILE...: several files, one Python start
	local a=()
	while [ $# -ge 3 ]; do a+=("$SEED-$1" "$2" "$3"); shift 3; done
	"$PYTHON" "$PY" gen "${a[@]}"
}
apply() {                                          # MODEL OFFSET DATA
	dd if="$3" of="$1" bs=1M seek="$2" oflag=seek_bytes conv=notrunc status=none
}

# The daemon's progress, from /proc/PID/io: kills land at a chosen point of
# the work (bytes read or written since mark_io), not at a guessed time.
io() { # FIELD (rchar, wchar): its value in R
	local k val
	R=0
	while read -r k val; do
		if [ "$k" = "$1:" ]; then
			R=$val
			return 0
		fi
	done <"/proc/$DAEMON_PID/io"
}
MARK=0
mark_io() { io "$1"; MARK=$R; }
# until the daemon's FIELD grew by BYTES since mark_io; 1 when PID ended
# first (or 10 s passed)
wait_io() { # FIELD BYTES PID
	local target=$((MARK + $2)) end=$((${EPOCHREALTIME/./} + 10000000))
	while io "$1" && [ "$R" -lt "$target" ]; do
		kill -0 "$3" 2>/dev/null || return 1
		[ "${EPOCHREALTIME/./}" -lt "$end" ] || return 1
	done
	return 0
}

# cat TARGET and compare with FILE exactly; the check's result
same() { # DESC TARGET FILE
	if ! cv cat "$2" >"$T/got" 2>"$T/err"; then
		notok "$1 (cat $2 failed: $(head -1 "$T/err"))"
		return 1
	fi
	if cmp -s "$T/got" "$3"; then
		ok "$1"
	else
		notok "$1 ($(cmp "$T/got" "$3" 2>&1 | head -1))"
		return 1
	fi
}

# cowvold stopped: each store file passes 'cowvol store check'
stores_sound() { # WHEN
	local f bad=0
	for f in "$STATE"/stores/*.cow; do
		[ -e "$f" ] || continue
		if ! cv store check "$f" >"$T/out" 2>&1; then
			bad=1
			notok "$1: store ${f##*/} passes 'cowvol store check' ($(head -2 "$T/out" | tr '\n' ' '))"
		fi
	done
	[ "$bad" = 1 ] || ok "$1: every store passes 'cowvol store check'"
}

# SIGTERM, and the exit code; a daemon that has not stopped in 60 s is
# killed (exit 137)
stop_timed() {
	local dog rc
	(
		trap 'kill $s 2>/dev/null; exit 0' TERM
		sleep 60 &
		s=$!
		wait $s && kill -9 "$DAEMON_PID" 2>/dev/null
	) >/dev/null 2>&1 &
	dog=$!
	stop_daemon
	rc=$?
	kill "$dog" 2>/dev/null
	wait "$dog" 2>/dev/null
	return $rc
}

# list --json of VOLUME through a Python expression on it (v: the volume)
lj() { # VOLUME EXPR
	cv list "$1" --json | "$PYTHON" -c "import json, sys; v = json.load(sys.stdin)['volumes'][0]; print($2)"
}
# the short names of VOLUME's snapshots, sorted, each followed by a space
snap_names() { lj "$1" "''.join(n + ' ' for n in sorted(s['name'] for s in v['snapshots']))"; }
# VOLUME's "restore": null, or SNAPSHOT:KEEP
restore_of() { lj "$1" "'null' if v['restore'] is None else '%s:%s' % (v['restore']['snapshot'], v['restore']['keep'])"; }

# wait until VOLUME has no restore; 0 when it ended within 30 s (a grep,
# not restore_of: a Python start each poll slows the polling)
wait_restored() {
	local end=$((${EPOCHREALTIME/./} + 30000000))
	while [ "${EPOCHREALTIME/./}" -lt "$end" ]; do
		cv list "$1" --json | grep -q '"restore": *null' && return 0
		sleep 0.02
	done
	return 1
}

start_daemon || exit 1

# --- (a) a clean restart ----------------------------------------------------
echo "# (a) clean restart"
# a3: 3 MiB + 512, the last 64 KiB chunk is partial
gens a0 4194304 "$M/ra" a1 1000000 "$T/d1" a2 70000 "$T/d2" a3 3146240 "$M/rb" \
	a4 200000 "$T/d4" a5 300000 "$T/d5"
cv create ra --size 4M >/dev/null
cv write ra <"$M/ra"
cv snap ra@one >/dev/null
cp "$M/ra" "$M/ra@one"
cv write ra --offset 12345 <"$T/d1" && apply "$M/ra" 12345 "$T/d1"
cv snap ra@two --store-size 3M >/dev/null
cp "$M/ra" "$M/ra@two"
cv write ra@two --offset 777 <"$T/d2" && apply "$M/ra@two" 777 "$T/d2"
cp "$M/rb" "$T/rb.img"
cv add "$T/rb.img" --chunk-size 64K >/dev/null
cv snap rb@x >/dev/null
cp "$M/rb" "$M/rb@x"
cv write rb --offset 2900000 <"$T/d4" && apply "$M/rb" 2900000 "$T/d4"
for t in ra ra@one ra@two rb rb@x; do same "before the restart: $t reads as written" "$t" "$M/$t"; done
cv list >"$T/list.before"
cv list --json >"$T/json.before"
cv diff ra@one >"$T/diff.before"

for round in 1 2; do
	expect 0 "clean restart $round: SIGTERM, cowvold exits 0" stop_timed
	check "clean restart $round: the socket is gone" test ! -e "$SOCK"
	start_daemon || exit 1
	cv list --json >"$T/json.after"
	check "clean restart $round: list --json is as before" cmp -s "$T/json.before" "$T/json.after"
	cv list >"$T/list.after"
	check "clean restart $round: list is as before" cmp -s "$T/list.before" "$T/list.after"
	cv diff ra@one >"$T/diff.after"
	check "clean restart $round: diff ra@one is as before" cmp -s "$T/diff.before" "$T/diff.after"
	for t in ra ra@one ra@two rb rb@x; do same "clean restart $round: $t reads the same" "$t" "$M/$t"; done
done
expect 0 "status after the restarts" cv status
expect_in out "volumes: 2, snapshots: 3" "status counts 2 volumes and 3 snapshots"
# the reattached stores still copy on write
cv write ra --offset 4000 <"$T/d5" && apply "$M/ra" 4000 "$T/d5"
cv write rb --offset 0 <"$T/d5" && apply "$M/rb" 0 "$T/d5"
for t in ra ra@one ra@two rb rb@x; do same "after the restarts, a new write: $t as the model" "$t" "$M/$t"; done
cv rm ra --recursive --yes >/dev/null
cv rm rb --recursive --yes >/dev/null
check "the adopted image keeps the content written through the daemon" cmp -s "$T/rb.img" "$M/rb"

# --- (b) kill -9 during writes --------------------------------------------------
echo "# (b) kill -9 while a write runs"
VSIZE=$((16 << 20))
cv create k4 --size 16M >/dev/null
cv create k64 --size 16M --chunk-size 64K >/dev/null
# shellcheck disable=SC2034 # read as ${!snaps_var} and ${!sv}
SNAPS_k4="" SNAPS_k64="" # each volume's snapshots
gens b-k4 $VSIZE "$M/k4" b-k64 $VSIZE "$M/k64"
for v in k4 k64; do
	cv write "$v" <"$M/$v"
done
ROUNDS=${COWVOL_RESTART_ROUNDS:-12}
n_acked=0 n_mixed=0 n_old=0 n_new=0
for round in $(seq 1 "$ROUNDS"); do
	if [ $((round % 2)) = 1 ]; then v=k4; else v=k64; fi
	snaps_var=SNAPS_$v
	snaps=${!snaps_var}
	# a snapshot now and then (at most 3 a volume; the oldest goes)
	rnd 3
	if [ "$round" -le 2 ] || [ "$R" = 0 ]; then
		if [ "$(echo "$snaps" | wc -w)" -ge 3 ]; then
			old=${snaps%% *}
			cv rm "$v@$old" >/dev/null || notok "round $round: rm $v@$old"
			rm -f "$M/$v@$old"
			snaps=${snaps#* }
		fi
		cv snap "$v@r$round" >/dev/null || notok "round $round: snap $v@r$round"
		cp "$M/$v" "$M/$v@r$round"
		snaps="$snaps r$round "
		snaps=$(echo $snaps)" "
		printf -v "$snaps_var" '%s' "$snaps"
	fi
	# an acknowledged small write, unaligned: it must survive the kill
	# the big write, 4 KiB aligned, 2..8 MiB, cut by kill -9; to the volume,
	# or in one round of four to one of its snapshots (they are writable)
	rnd 100000; slen=$((R + 1))
	rnd $((VSIZE - slen)); soff=$R
	rnd 1537; len=$(( (R + 512) * 4096 ))
	rnd $(( (VSIZE - len) / 4096 + 1 )); off=$((R * 4096))
	gens "b$round-small" $slen "$T/small" "b$round-big" $len "$T/big"
	if cv write "$v" --offset $soff <"$T/small"; then
		apply "$M/$v" $soff "$T/small"
	else
		notok "round $round: the small write to $v"
	fi
	tgt=$v
	rnd 4
	if [ "$R" = 0 ]; then
		set -- $snaps
		rnd $#
		shift $R
		tgt=$v@$1
	fi
	cp "$M/$tgt" "$T/new"
	apply "$T/new" $off "$T/big"
	# when: at once; once the daemon has read a random part of the data
	# (it reads 1 MiB at a time, copies, and flushes at the end); or once
	# the write is acknowledged
	rnd 10
	case $R in
	0) at=0 when="at once" ;;
	9) at=-1 when="after the acknowledgement" ;;
	*) rnd $len; at=$((R + 1)) when="after $at of $len bytes were read" ;;
	esac
	mark_io rchar
	cv write "$tgt" --offset $off <"$T/big" 2>"$T/werr" &
	wpid=$!
	if [ $at = -1 ]; then
		wait $wpid
	elif [ $at -gt 0 ]; then
		wait_io rchar $at $wpid
	fi
	kill9_daemon
	wait $wpid
	wrc=$?
	stores_sound "round $round (kill -9 $when, a $len-byte write to $tgt at $off; write exit $wrc)"
	start_daemon || exit 1
	expect 0 "round $round: list works after the restart" cv list
	# the listings as before (all, k4, k64), read by one Python start: the
	# names of the volumes, then for each of k4 and k64 its snapshots' names
	# (as snap_names) and the states (v['state'], v['restore'], the snapshots')
	cv list --json >"$T/l.all"
	cv list k4 --json >"$T/l.k4"
	cv list k64 --json >"$T/l.k64"
	mapfile -t L < <("$PYTHON" -c "import json, sys
def load(f):
    try:
        with open(f) as fh:
            return json.load(fh)['volumes']
    except Exception:
        return None
a = load(sys.argv[1])
print(*sorted(v['name'] for v in a) if a is not None else '')
for f in sys.argv[2:]:
    vs = load(f)
    v = vs[0] if vs else None
    print(''.join(n + ' ' for n in sorted(s['name'] for s in v['snapshots'])) if v else '')
    print(*(v['state'], v['restore'], *(s['state'] for s in v['snapshots'])) if v else '')" \
		"$T/l.all" "$T/l.k4" "$T/l.k64")
	got=${L[0]:-}
	check "round $round: both volumes are listed" test "$got" = "k4 k64"
	i=1
	for x in k4 k64; do
		sv=SNAPS_$x
		want=$(echo ${!sv} | tr ' ' '\n' | grep . | sort | tr '\n' ' ')
		check "round $round: $x has its snapshots (${want:-none})" test "${L[i]:-}" = "$want"
		st=${L[i + 1]:-}
		i=$((i + 2))
		wst="active None"
		for s in $want; do wst="$wst active"; done
		check "round $round: $x and its snapshots are active, no restore ($st)" test "$st" = "$wst"
		for s in ${!sv}; do
			[ "$x@$s" = "$tgt" ] && continue
			same "round $round: $x@$s equals its model (no write of its own)" "$x@$s" "$M/$x@$s"
		done
		[ "$x" = "$tgt" ] || same "round $round: $x (no write of its own) equals its model" $x "$M/$x"
	done
	if [ "$wrc" = 0 ]; then
		n_acked=$((n_acked + 1))
		same "round $round: the acknowledged write is all there" "$tgt" "$T/new" && cp "$T/new" "$M/$tgt"
	else
		cv cat "$tgt" >"$T/got"
		if "$PYTHON" "$PY" oldnew "$M/$tgt" "$T/new" "$T/got" >"$T/on"; then
			ok "round $round: every 4 KiB block of $tgt is old or new ($(cat "$T/on")); the acknowledged writes are there"
			case $(cat "$T/on") in
			"old 0 new"*) n_new=$((n_new + 1)) ;;
			*" new 0 (of"*) n_old=$((n_old + 1)) ;;
			*) n_mixed=$((n_mixed + 1)) ;;
			esac
			cp "$T/got" "$M/$tgt"
		else
			notok "round $round: $tgt after a write cut by kill -9: $(cat "$T/on")"
			cp "$T/got" "$M/$tgt"
		fi
	fi
done
echo "# (b) outcomes: $n_acked acknowledged before the kill, $n_mixed cut in the middle, $n_old with nothing of it on disk, $n_new done but not acknowledged"
cv rm k4 --recursive --yes >/dev/null
cv rm k64 --recursive --yes >/dev/null

# --- (c) kill -9 during a restore ------------------------------------------------
echo "# (c) kill -9 during a restore"
CSIZE=$((8 << 20))
n_mid=0
for round in 1 2 3 4 5 6 7; do
	v=rs$round
	keep=""; [ $((round % 2)) = 0 ] && keep=--keep
	kw=${keep:-without --keep}
	# scattered writes first (short runs of exceptions: many restore steps),
	# then most of the volume; their data made by one Python start
	g=("c$round-0" "$CSIZE" "$M/S") offs=()
	for i in $(seq 1 60); do
		rnd 2048; off=$((R * 4096)); rnd 6; len=$(( (R + 1) * 4096 ))
		[ $((off + len)) -le $CSIZE ] || len=$((CSIZE - off))
		offs+=("$off")
		g+=("c$round-s$i" "$len" "$T/d$i")
	done
	rnd 64; off=$((R * 4096)); len=$((CSIZE - off - 65536))
	offs+=("$off")
	gens "${g[@]}" "c$round-1" $len "$T/d61" "c$round-2" 100000 "$T/d62"
	cv create $v --size 8M >/dev/null
	head -c $CSIZE /dev/zero >"$M/E"
	cv snap $v@E >/dev/null # all zeros; gets every chunk below
	cv write $v <"$M/S"
	cv snap $v@S >/dev/null
	cp "$M/S" "$M/V"
	for i in $(seq 1 61); do
		off=${offs[i - 1]}
		cv write $v --offset $off <"$T/d$i" && apply "$M/V" $off "$T/d$i"
	done
	cv snap $v@O >/dev/null # the content before the restore
	cp "$M/V" "$M/O"
	cv write $v --offset 5000 <"$T/d62" && apply "$M/V" 5000 "$T/d62"
	cv diff $v@S >"$T/out"
	dbytes=$(sed -n 's/^total: \([0-9]*\) bytes.*/\1/p' "$T/out")
	check "round $round: $v@S differs from $v in most chunks (diff: ${dbytes:-?} bytes)" \
		test "${dbytes:-0}" -ge $((CSIZE * 3 / 4))
	# when: after the end; at once; or once the daemon has written a random
	# part of the restore's data (the copies into O, then S's chunks)
	n_exc=$(lj $v "[s['exceptions'] for s in v['snapshots'] if s['name'] == 'S'][0]")
	total=$((2 * n_exc * 4096))
	case $round in
	1) at=-1 how="after the end" ;;
	2) at=0 how="at once" ;;
	*) rnd $total; at=$((R + 1)) how="after $at of about $total bytes were written" ;;
	esac
	mark_io wchar
	if ! cv restore $v@S --no-wait $keep >"$T/out" 2>"$T/err"; then
		notok "round $round: restore $v@S --no-wait $keep ($(cat "$T/err"))"
		continue
	fi
	if [ $at = -1 ]; then
		wait_restored $v
	elif [ $at -gt 0 ]; then
		(until cv list $v --json | grep -q '"restore": *null'; do sleep 0.02; done) >/dev/null 2>&1 &
		poller=$!
		wait_io wchar $at $poller || how="$how (it had ended)"
		kill $poller 2>/dev/null
		wait $poller 2>/dev/null
	fi
	if [ $round = 7 ]; then
		how="$how, by SIGTERM"
		expect 0 "round $round: SIGTERM during the restore: cowvold exits 0" stop_timed
	else
		kill9_daemon
	fi
	stores_sound "round $round (restore $kw stopped $how)"
	start_daemon || exit 1
	r=$(restore_of $v)
	case $r in
	null) ok "round $round: after the restart $v shows no restore (it had ended)" ;;
	S:*)
		n_mid=$((n_mid + 1))
		ok "round $round: after the restart $v shows the restore from S ($r)" ;;
	*) notok "round $round: after the restart $v shows restore '$r'" ;;
	esac
	# while it resumes, the volume already reads as the snapshot
	same "round $round: $v reads as the snapshot right after the restart" $v "$M/S"
	if wait_restored $v; then
		ok "round $round: the restore ended by itself (no second 'cowvol restore')"
	else
		notok "round $round: the restore has not ended within 30 s: $(restore_of $v)"
	fi
	same "round $round: $v equals the snapshot's content" $v "$M/S"
	same "round $round: $v@E (older) is unchanged" $v@E "$M/E"
	same "round $round: $v@O (taken before the restore) is unchanged" $v@O "$M/O"
	if [ -n "$keep" ]; then
		check "round $round: with --keep the snapshot stays" test "$(snap_names $v)" = "E O S "
		same "round $round: the kept $v@S equals the volume" $v@S "$M/S"
		cv diff $v@S >"$T/out"
		expect_in out "total: 0 bytes in 0 ranges" "round $round: the kept snapshot has no differences"
		n_want=3
	else
		check "round $round: without --keep the snapshot is gone" test "$(snap_names $v)" = "E O "
		n_want=2
	fi
	check "round $round: one store file a snapshot ($n_want)" \
		test "$(ls "$STATE/stores" | wc -l)" = $n_want
	cv rm $v --recursive --yes >/dev/null || notok "round $round: rm $v --recursive"
done
echo "# (c) $n_mid of 7 restarts found the restore still running"

# --- (d) SIGTERM during a long write -------------------------------------------
echo "# (d) SIGTERM while a write runs"
cv create td --size 32M >/dev/null
gen d0 $((32 << 20)) "$M/td"
cv write td <"$M/td"
cv snap td@before >/dev/null
cp "$M/td" "$M/td@before"
for round in 1 2 3 4; do
	gen "d$round" $((24 << 20)) "$T/big"
	rnd 8; off=$(((R + 1) * 1048576 - 4096 * round))
	cp "$M/td" "$T/new"
	apply "$T/new" $off "$T/big"
	rnd $((24 << 20)); at=$R
	mark_io rchar
	cv write td --offset $off <"$T/big" >"$T/wout" 2>"$T/werr" &
	wpid=$!
	wait_io rchar $at $wpid
	expect 0 "round $round: SIGTERM once $at of 24 MiB were read: cowvold exits 0" stop_timed
	wait $wpid
	wrc=$?
	if [ $wrc = 0 ]; then
		ok "round $round: the write completed (exit 0)"
	elif [ $wrc = 1 ] && grep -q '^cowvol: ' "$T/werr"; then
		ok "round $round: the write failed cleanly: $(head -1 "$T/werr")"
	else
		notok "round $round: the write ended with exit $wrc: $(head -2 "$T/werr")"
	fi
	stores_sound "round $round (SIGTERM)"
	start_daemon || exit 1
	same "round $round: td@before is unchanged" td@before "$M/td@before"
	if [ $wrc = 0 ]; then
		same "round $round: the acknowledged write is there" td "$T/new" && cp "$T/new" "$M/td"
	else
		cv cat td >"$T/got"
		if "$PYTHON" "$PY" oldnew "$M/td" "$T/new" "$T/got" >"$T/on"; then
			ok "round $round: each block of td is old or new ($(cat "$T/on"))"
		else
			notok "round $round: td after a write cut by SIGTERM: $(cat "$T/on")"
		fi
		cp "$T/got" "$M/td"
	fi
done
expect 0 "the end: SIGTERM, cowvold exits 0" stop_timed
