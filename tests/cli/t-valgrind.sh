#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The store commands run clean under valgrind (no errors, no leaks), on the
# plain build (the sanitizer build cannot run under valgrind).
. "$(dirname "$0")/../lib.sh"
command -v valgrind >/dev/null || { notok "valgrind is not installed (make deps-test installs it)"; exit 1; }
P=$REPO/build
VG=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect)
cd "$T"
"$P/tests/cowtool" pattern o.img 4M 1
expect 0 "create" "${VG[@]}" "$P/cowvol" store create s.img --size 4M
expect 0 "copy-on-write through the library (cowtool fill)" "${VG[@]}" "$P/tests/cowtool" fill o.img s.img 300 2 7
expect 0 "info --json" "${VG[@]}" "$P/cowvol" store info --json s.img
expect 0 "check" "${VG[@]}" "$P/cowvol" store check s.img
expect 0 "dump --json" "${VG[@]}" "$P/cowvol" store dump --json s.img
expect 0 "view" "${VG[@]}" "$P/cowvol" store view o.img s.img v.img
printf 'XXXX' | dd of=s.img conv=notrunc status=none
expect 1 "info of a corrupt store (error path)" "${VG[@]}" "$P/cowvol" store info s.img
expect 1 "check of a corrupt store (error path)" "${VG[@]}" "$P/cowvol" store check s.img
expect 2 "usage error" "${VG[@]}" "$P/cowvol" store create
