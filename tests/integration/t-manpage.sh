#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol(8) says what the commands print: each example output the page
# gives is found in the page as rendered, and the command, run with the
# page's names and sizes, prints exactly it (the state folder's path as the
# page's /var/lib/cowvol; for status, every number and path, which depend
# on the machine, as N and P).
. "$(dirname "$0")/../lib.sh"
requires man col

PAGE=$T/cowvol.txt
MANWIDTH=4000 man -l "$REPO/doc/cowvol.8" 2>/dev/null | col -bx >"$PAGE"
check "cowvol(8) renders" test -s "$PAGE"
# both TEXT DESC: the page says TEXT, and the last command printed it
both() {
	check "cowvol(8) says: $1" grep -qF -- "$1" "$PAGE"
	check "$2 prints it" eval "sed 's|$STATE|/var/lib/cowvol|g' '$T/out' | grep -qxF -- '$1'"
}
start_daemon || exit 1

cv create vm1 --size 1G >"$T/out"
both "Created volume vm1: 1.0 GiB (chunk size 4.0 KiB), image /var/lib/cowvol/volumes/vm1.img" "create vm1 --size 1G"
cv snap vm1@before-upgrade >"$T/out"
both "Created snapshot vm1@before-upgrade (store 204.8 MiB), number 1" "snap vm1@before-upgrade"
cv snap vm1@a >/dev/null
cv rename vm1@a b >"$T/out"
both "Renamed snapshot vm1@a to vm1@b" "rename vm1@a b"
cv snap vm1@snap >/dev/null
cv restore vm1@snap >"$T/out"
both "Restored vm1 from vm1@snap" "restore vm1@snap"
cv resize vm1 --size 2G >"$T/out"
both "Resized volume vm1 to 2.0 GiB" "resize vm1 --size 2G"
cv rename vm1 vm2 >"$T/out"
both "Renamed volume vm1 to vm2, image /var/lib/cowvol/volumes/vm2.img" "rename vm1 vm2"
cv list -o help >"$T/out"
check "cowvol(8) names list's default fields as -o help does" \
	eval "grep -qF \"\$(sed -n 's/^Fields for -o and -O (default: \\(.*\\)):\$/\\1/p' '$T/out' | cut -d, -f1-4)\" '$PAGE' ||
	      grep -q 'NAME.*ORIGIN.*SIZE.*USED' '$PAGE'"
# status: the page's block, numbers and paths aside
shape() { sed -E 's|/[^ ,;]+|P|g; s/up [^,]*,/up T,/; s/[0-9]+(\.[0-9]+)?/N/g; s/ (B|KiB|MiB|GiB|TiB)\b/ U/g'; }
cv status >"$T/out"
sed -n '/^ *cowvold [0-9.]* (protocol/,/^ *NBD: /p' "$PAGE" | sed 's/^ *//' | shape >"$T/page.status"
shape <"$T/out" >"$T/out.status"
check "the page's status block has the lines status prints, shaped alike (but TCP and TLS, off here)" \
	eval "[ \$(wc -l <'$T/page.status') = 5 ] && diff <(head -4 '$T/page.status') <(head -4 '$T/out.status') >/dev/null &&
	      grep -q '^NBD: socket P, TCP' '$T/out.status' && grep -q '^NBD: socket P, TCP' '$T/page.status'"
cv rm vm2 --recursive --yes >"$T/out"
check "cowvol(8) says rm prints Removed TARGET" grep -qF "Prints Removed TARGET for each" "$PAGE"
check "rm vm2 --recursive --yes prints Removed vm2" grep -qxF "Removed vm2" "$T/out"
stop_daemon
