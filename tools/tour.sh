#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The tour `make run` gives: cowvold on a local state folder, and the CLI
# taking a volume through create, write, snap, overwrite, cat, diff,
# restore. Everything lives in build/tour; the daemon stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
dir=$PWD/${TOUR_DIR:-$B/tour}
rm -rf "$dir" && mkdir -p "$dir"
export COWVOL_SOCKET=$dir/cowvold.sock
say() { printf '\n$ %s\n' "$*"; "$@"; }
cowvol() { "$B/cowvol" "$@"; }

"$B/cowvold" --state-dir "$dir/state" --socket "$COWVOL_SOCKET" 2>"$dir/cowvold.log" &
daemon=$!
main_pid=$BASHPID
trap '[ "$BASHPID" = "$main_pid" ] || exit; kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do "$B/cowvol" status >/dev/null 2>&1 && break; sleep 0.05; done
echo "# cowvold runs on $COWVOL_SOCKET (state in $dir/state, log in $dir/cowvold.log)"

say cowvol status
say cowvol create vm1 --size 64M
printf '\n$ echo "version 1 of the data" | cowvol write vm1 --offset 0\n'
echo "version 1 of the data" | cowvol write vm1 --offset 0
say cowvol snap vm1@before-upgrade
printf '\n$ echo "version 2, after the upgrade" | cowvol write vm1 --offset 0\n'
echo "version 2, after the upgrade" | cowvol write vm1 --offset 0
printf '\n$ cowvol cat vm1 --length 29\n'
cowvol cat vm1 --length 29
printf '\n$ cowvol cat vm1@before-upgrade --length 22\n'
cowvol cat vm1@before-upgrade --length 22
say cowvol diff vm1@before-upgrade
say cowvol list
say cowvol restore vm1@before-upgrade
printf '\n$ cowvol cat vm1 --length 22\n'
cowvol cat vm1 --length 22
say cowvol list
echo
echo "# Stopping cowvold (SIGTERM: requests finish, stores are flushed)"
kill -TERM $daemon
wait $daemon
trap - EXIT
echo "# Done. Run it yourself: $B/cowvold --state-dir DIR --socket PATH, then COWVOL_SOCKET=PATH cowvol ..."
