#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The bad-input catalogue: every row of tests/bad-input.tsv (its header says
# the format) is run against one cowvold, and for each row:
#   ID: exit N / answered CODE      the exit code (the error code for a request)
#   ID: says /REGEX/                the error text
#   ID: nothing on stdout           (cli rows: a refused command prints no result)
#   ID: catalogue unchanged         catalogue.json byte for byte
#   ID: list unchanged              cowvol list --json
#   ID: images and stores unchanged every file under the state folder, by content
#   ID: damaged store unchanged     (store rows: the offline commands never write)
#   ID: cowvold still serves        it answers the list that follows
# Rows are data: what to run comes from the table only, through badtable.py.
. "$(dirname "$0")/../lib.sh"

HERE=$(dirname "$0")
TABLE=${BADTABLE:-$REPO/tests/bad-input.tsv}
HELPER=$HERE/badtable.py
RAW=$HERE/rawsock.py

requires "$PYTHON" # the table's reader
start_daemon || exit 1

# --- what the rows run against -----------------------------------------------
setup_v1_v64
# store bases: one the userspace code filled (300 exceptions: areas 0 and 1
# of 256 slots), and the one the kernel wrote (tests/fixtures)
mkdir -p "$T/base" "$T/dmg" "$T/scratch"
"$COWTOOL" pattern "$T/base/origin.img" 8M 1 &&
	"$COWVOL" store create "$T/base/filled.cow" --size 8M >/dev/null &&
	"$COWTOOL" fill "$T/base/origin.img" "$T/base/filled.cow" 300 3 10
check "setup: a store with 300 exceptions" eval "\"\$COWVOL\" store check '$T/base/filled.cow' | grep -q 'sound: 300 exceptions'"
cp "$REPO/tests/fixtures/kernel-4k.cow" "$T/base/kernel.cow"
# a store of another chunk size, for a chain that is not one
"$COWVOL" store create "$T/base/c64.cow" --size 1M --chunk-size 64K >/dev/null
check "setup: the kernel's store is sound" eval "\"\$COWVOL\" store check '$T/base/kernel.cow' >/dev/null"
mkdir -p "$T/scratch/dir"
sha256sum "$T"/base/* >"$T/base.sum"
# every row's arguments, payload and damaged store, made before the first runs
BT_STATE=$STATE BT_T=$T/scratch BT_DMG=$T/dmg BT_ORIGIN=$T/base/origin.img \
	BT_BASE_FILLED=$T/base/filled.cow BT_BASE_KERNEL=$T/base/kernel.cow BT_BASE_C64=$T/base/c64.cow \
	"$PYTHON" "$HELPER" prepare "$TABLE" "$T/dmg" >"$T/rows" 2>"$T/rows.err"
if [ $? != 0 ]; then
	notok "the table is well-formed"
	sed 's/^/#   /' "$T/rows.err"
	exit 1
fi
ok "the table is well-formed"
NROWS=$(wc -l <"$T/rows")
check "the table has at least 60 rows ($NROWS)" test "$NROWS" -ge 60

# --- nothing changed -------------------------------------------------------------
# every file and folder under the state folder, files with their content's sum
files() { (cd "$STATE" && find . -type f -print0 | sort -z | xargs -0 md5sum && find . | sort); }
# taken once, then again only after a row that changed something
before() {
	cp "$STATE/catalogue.json" "$T/cat.before"
	cv list --json >"$T/list.before" 2>&1
	files >"$T/files.before"
}
CHANGED=1
same() { # DESC FILE-BEFORE FILE-NOW
	if cmp -s "$2" "$3"; then ok "$1"; else
		notok "$1"
		CHANGED=1
		diff "$2" "$3" | head -6 | sed 's/^/#   /'
	fi
}
after() { # ID
	same "$1: catalogue unchanged" "$T/cat.before" "$STATE/catalogue.json"
	# the list is a request too: answered, it shows cowvold still serves
	# (the same call after each of some 280 rows: LeakSanitizer's exit scan,
	# half its time, is left to the rows' own commands)
	ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0 cv list --json >"$T/list.now" 2>&1
	check "$1: cowvold still serves (list answered)" test $? = 0
	same "$1: list unchanged" "$T/list.before" "$T/list.now"
	files >"$T/files.now"
	same "$1: images and stores unchanged" "$T/files.before" "$T/files.now"
}
says() { # ID REGEX FILE...
	local id=$1 pat=$2
	shift 2
	if cat "$@" | grep -qE -- "$pat"; then ok "$id: says /$pat/"; else
		notok "$id: says /$pat/"
		cat "$@" | head -4 | sed 's/^/#   /'
	fi
}
exits() { # ID WANT RC
	if [ "$3" = "$2" ]; then ok "$1: exit $2"; else
		notok "$1: exit $2 (got $3)"
	fi
}

# --- the rows ------------------------------------------------------------------------
while IFS=$'\t' read -r -u 3 id kind want pat; do
	[ "$CHANGED" = 0 ] || before
	CHANGED=0
	args=()
	case $kind in
	cli | daemon | store)
		if [ "$kind" = store ]; then
			sha256sum "$T/dmg/$id.cow" >"$T/dmg.sum"
			ls -A "$T/dmg" >"$T/dmg.before"
		fi
		mapfile -d '' args <"$T/dmg/$id.argv"
		if [ "$kind" = daemon ]; then
			# a bad option must stop it at once: one that starts is killed
			# after 10 s and its exit (124) fails the row
			(cd "$T/scratch" && timeout 10 "$COWVOLD" "${args[@]}") >"$T/out" 2>"$T/err" </dev/null
		else
			(cd "$T/scratch" && "$COWVOL" "${args[@]}") >"$T/out" 2>"$T/err" </dev/null
		fi
		rc=$?
		exits "$id" "$want" "$rc"
		case $kind in
		cli)
			says "$id" "$pat" "$T/err"
			check "$id: nothing on stdout" test ! -s "$T/out"
			;;
		daemon) says "$id" "$pat" "$T/err" ;;
		store)
			# check lists its faults on stdout, the others refuse on stderr
			says "$id" "$pat" "$T/out" "$T/err"
			check "$id: damaged store unchanged" sha256sum --quiet -c "$T/dmg.sum"
			ls -A "$T/dmg" >"$T/dmg.now"
			same "$id: no file made beside it" "$T/dmg.before" "$T/dmg.now"
			;;
		esac
		;;
	request)
		"$PYTHON" "$RAW" "$SOCK" <"$T/dmg/$id.payload" >"$T/raw" 2>&1
		if head -1 "$T/raw" | grep -q "^id=[0-9]* ok=false code=$want "; then ok "$id: answered $want"; else
			notok "$id: answered $want"
			head -2 "$T/raw" | sed 's/^/#   /'
		fi
		head -1 "$T/raw" | sed -n 's/^.* message=//p' >"$T/msg"
		says "$id" "$pat" "$T/msg"
		;;
	esac
	after "$id"
done 3<"$T/rows"

check "the store bases are unchanged (rows work on copies)" sha256sum --quiet -c "$T/base.sum"
check "v1@s1 still reads as first written" eval "cv cat v1@s1 | cmp -s - '$T/A'"
stop_daemon
check "cowvold stops cleanly at the end (exit 0)" test $? = 0
