#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The model test: a seeded random sequence of origin writes, snapshots,
# snapshot writes, restores, removals, parallel writes and restarts over
# three volumes, through the real cowvol against the real cowvold, checked
# after every step against an in-memory model (tests/integration/model.py,
# which starts and stops the daemon itself, on lib.sh's socket and state
# folder, logging to the same daemon.log).
#   COWVOL_MODEL_SEED=N   repeat a run (the seed is printed first)
#   COWVOL_MODEL_STEPS=N  how many steps (default 250: about a minute with
#                         the sanitizer build)
. "$(dirname "$0")/../lib.sh"

requires "$PYTHON"

# the daemon belongs to model.py; if this script is cut short, kill it too
on_exit '[ ! -s "$T/model-daemon.pid" ] || kill -9 "$(cat "$T/model-daemon.pid")" 2>/dev/null'

COWVOL=$COWVOL COWVOLD=$COWVOLD STATE=$STATE SOCK=$SOCK T=$T \
	"$PYTHON" "$REPO/tests/integration/model.py" run
rc=$?
# model.py printed its own "ok"/"not ok" lines; its exit code says whether
# any failed (or it crashed)
if [ "$rc" != 0 ]; then
	grep -q . "$T/daemon.log" 2>/dev/null || echo "# (the daemon log is empty)"
	NOTOK=$((NOTOK + 1))
fi
