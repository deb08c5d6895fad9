#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The kernel engine with udev running (the other kernel tests run without:
# DM_DISABLE_UDEV=1): every create, resume and remove waits on a udev
# cookie that udev's dm rules complete, udev makes the /dev/mapper nodes
# and the /dev/disk/by-id links of the public devices, and the hidden
# layers (-real, -cow) get none, as LVM's.
#   tests/kernel/vm.sh tests/kernel/t-kvol-udev.sh
# shellcheck source=tests/kernel/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
COWVOLD=$BUILD/cowvold
UDEVD=/lib/systemd/systemd-udevd
[ -x "$UDEVD" ] || fail "systemd-udevd is missing (apt-get install udev; tools/deps.sh test installs it)"

T=$(mktemp -d /tmp/kudev.XXXXXX)
export COWVOL_SOCKET=$T/cowvold.sock
NOTOK=0
notok() { echo "not ok - $*"; NOTOK=$((NOTOK + 1)); }
check() { local d=$1; shift; if "$@"; then ok "$d"; else notok "$d"; fi; }
step() {
	local d=$1 rc=0; shift
	timeout 60 "$@" >"$T/out" 2>&1 || rc=$?
	if [ "$rc" = 0 ]; then ok "$d"; else notok "$d (exit $rc$([ "$rc" = 124 ] && echo ': a timeout: a udev cookie never completed?'))"; sed 's/^/#   /' "$T/out" | tail -8; fi
	return $rc
}

mkdir -p /run/udev
"$UDEVD" --daemon >/dev/null 2>&1 || fail "systemd-udevd does not start"
on_exit "udevadm control --exit 2>/dev/null"
udevadm control --ping || fail "udevd does not answer"
ok "udevd runs"
unset DM_DISABLE_UDEV
"$COWVOLD" --state-dir "$T/state" --socket "$COWVOL_SOCKET" >>"$T/cowvold.log" 2>&1 &
daemon=$!
cleanup_udev() {
	kill -9 "$daemon" 2>/dev/null
	for d in cowvol-u-s cowvol-u-s-cow cowvol-u cowvol-u-real; do dmsetup remove "$d" 2>/dev/null || true; done
	[ "$NOTOK" -gt 0 ] && sed 's/^/#   cowvold: /' "$T/cowvold.log" | tail -15
	true
}
on_exit cleanup_udev
for _ in $(seq 1 100); do "$COWVOL" status >/dev/null 2>&1 && break; sleep 0.1; done

ORIGIN=$(make_loop kudev.img 32M)
step "cowvol add with udev running" "$COWVOL" add "$ORIGIN" --name u
udevadm settle
check "udev made /dev/mapper/cowvol-u" test -b /dev/mapper/cowvol-u
check "and its /dev/disk/by-id/dm-name link" test -L /dev/disk/by-id/dm-name-cowvol-u
check "the hidden -real layer has no by-id link" test ! -e /dev/disk/by-id/dm-name-cowvol-u-real
step "snap u@s" "$COWVOL" snap u@s --store-size 8M
udevadm settle
check "udev made /dev/mapper/cowvol-u-s, with its link" eval "[ -b /dev/mapper/cowvol-u-s ] && [ -L /dev/disk/by-id/dm-name-cowvol-u-s ]"
check "the hidden -cow layer has no by-id link" test ! -e /dev/disk/by-id/dm-name-cowvol-u-s-cow
# dmsetup must answer (a header line at least): an empty output proves nothing
check "no udev cookie is left waiting (dmsetup udevcookies)" eval "dmsetup udevcookies >\"\$T/cookies\" && [ -s \"\$T/cookies\" ] && [ -z \"\$(tail -n +2 \"\$T/cookies\")\" ]"
step "rm u --recursive" "$COWVOL" rm u --recursive
udevadm settle
check "the nodes are gone" eval "[ ! -e /dev/mapper/cowvol-u ] && [ ! -e /dev/mapper/cowvol-u-s ]"
kill -TERM "$daemon"; wait "$daemon" || notok "cowvold exits 0"
[ "$NOTOK" = 0 ] || fail "$NOTOK check(s) failed"
