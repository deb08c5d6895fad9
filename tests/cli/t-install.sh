#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# make install honours DESTDIR (and PREFIX): every file lands under it, the
# installed CLI and daemon run, and pkg-config finds the library.
. "$(dirname "$0")/../lib.sh"
D=$T/dest
expect 0 "make install DESTDIR=..." make -C "$REPO" --no-print-directory install DESTDIR="$D"
P=$D/usr/local
for f in bin/cowvol sbin/cowvold lib/libcowvol.so.0 lib/libcowvol.so include/cowvol.h lib/pkgconfig/cowvol.pc \
	share/man/man8/cowvol.8 share/man/man8/cowvold.8 lib/systemd/system/cowvold.service \
	lib/systemd/system/cowvold.socket lib/systemd/system/cowvold-nbd.socket lib/sysusers.d/cowvol.conf \
	share/bash-completion/completions/cowvol; do
	check "installed $f" test -e "$P/$f"
done
check "nothing was written outside DESTDIR's prefix" test -z "$(find "$D" -mindepth 1 -maxdepth 2 ! -path "$D/usr" ! -path "$D/usr/local")"
expect 0 "the installed cowvol runs" env LD_LIBRARY_PATH="$P/lib" "$P/bin/cowvol" --version
expect_in out "^cowvol [0-9]" "and says its version"
expect 0 "the installed cowvold runs" env LD_LIBRARY_PATH="$P/lib" "$P/sbin/cowvold" --version
check "the unit starts the installed daemon" grep -q "^ExecStart=/usr/local/sbin/cowvold" "$P/lib/systemd/system/cowvold.service"
expect 0 "pkg-config finds cowvol" env PKG_CONFIG_PATH="$P/lib/pkgconfig" pkg-config --modversion cowvol
check "the library exports only cowvol_* symbols" sh -c "! nm -D --defined-only '$P/lib/libcowvol.so.0' | awk '{print \$3}' | grep -v -e '^cowvol_' -e '^LIBCOWVOL' | grep -q ."

# bash completion, as installed: commands, a command's options (from its
# --help), store subcommands and their own options
complete_words() { # WORD... (the last one is completed)
	env LD_LIBRARY_PATH="$P/lib" bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _cowvol
		[ ${#COMPREPLY[@]} = 0 ] || printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' _ "$P/share/bash-completion/completions/cowvol" "$P/bin/cowvol" "$@"
}
check "completion: 'cowvol st' gives status and store" test "$(complete_words st)" = "status store "
check "completion: 'cowvol res' gives resize and restore" test "$(complete_words res)" = "resize restore "
check "completion: 'cowvol resize v --' gives resize's options" test "$(complete_words resize v --)" = "--force --help --size "
check "completion: 'cowvol store i' gives info" test "$(complete_words store i)" = "info "
check "completion: 'cowvol store info --' gives info's options only" test "$(complete_words store info --)" = "--help --json "
