#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvold under valgrind (plain build: the sanitizer build cannot run under
# it) through the main job (t-basic), overflow (t-overflow), NBD (t-nbd), and
# cleanup and the clock of timeline snapshots (t-cleanup, t-timeline, under
# libfaketime, which valgrind passes on to cowvold): every check
# passes, and valgrind reports no error and no leak.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
command -v valgrind >/dev/null || { echo "not ok - valgrind is not installed (make deps-test installs it)"; exit 1; }
W=$(mktemp -d /tmp/cowvol-vg.XXXXXX)
MAIN_PID=$BASHPID # a subshell killed right after its fork runs this trap too
trap '[ "$BASHPID" = "$MAIN_PID" ] && rm -rf "$W"' EXIT
mkdir -p "$W/tests"
ln -s "$REPO/build/cowvol" "$W/cowvol"
ln -s "$REPO/build/tests/cowtool" "$W/tests/cowtool"
cat >"$W/cowvold" <<WRAP
#!/bin/sh
exec valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \\
  --errors-for-leak-kinds=definite,indirect --log-file=$W/vg.%p.log $REPO/build/cowvold "\$@"
WRAP
chmod +x "$W/cowvold"
rc=0
for t in t-basic.sh t-overflow.sh t-nbd.sh t-cleanup.sh t-timeline.sh; do
	COWVOL_BUILD=$W bash "$REPO/tests/integration/$t" | sed "s/^\(not \)\{0,1\}ok - /&valgrind $t: /" || rc=1
done
n=0
for log in "$W"/vg.*.log; do
	# valgrind's note that it does not know an ioctl (LOOP_GET_STATUS64:
	# its buffer is zeroed first) is no error of ours
	sed -i '/noted but unhandled ioctl/,+2d' "$log"
	[ -s "$log" ] || continue
	n=$((n + 1))
	sed 's/^/#   /' "$log" | head -20
done
if [ "$n" = 0 ]; then echo "ok - valgrind: no error, no leak in cowvold"; else echo "not ok - valgrind reported on $n daemon runs"; rc=1; fi
exit $rc
