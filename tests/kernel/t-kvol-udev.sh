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
UDEVD=/lib/systemd/systemd-udevd
[ -x "$UDEVD" ] || fail "systemd-udevd is missing (apt-get install udev; tools/deps.sh test installs it)"

# every step waits on udev: a cookie it never completes would hang it
STEP_TIMEOUT=60
STEP_TIMEOUT_HINT="a udev cookie never completed?"

mkdir -p /run/udev
"$UDEVD" --daemon >/dev/null 2>&1 || fail "systemd-udevd does not start"
on_exit "udevadm control --exit 2>/dev/null"
udevadm control --ping || fail "udevd does not answer"
ok "udevd runs"
unset DM_DISABLE_UDEV
on_exit remove_u
start_daemon

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
step "rm u --recursive" "$COWVOL" rm u --recursive --yes
udevadm settle
check "the nodes are gone" eval "[ ! -e /dev/mapper/cowvol-u ] && [ ! -e /dev/mapper/cowvol-u-s ]"
stop_daemon || notok "cowvold exits 0"
