#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Check the build, test or benchmark dependencies; install the missing ones with
# apt-get when run as root on Debian, otherwise name them and fail.
# Usage: tools/deps.sh build|test|bench
set -eu

what=${1:-build}
# pkg-config module -> Debian package
build_pkgs="libdevmapper-dev:devmapper libblkid-dev:blkid uuid-dev:uuid libjson-c-dev:json-c libsystemd-dev:libsystemd libcriterion-dev:criterion libgnutls28-dev:gnutls"
# command -> Debian package (test tools); the tests run Debian's python3
# ($PYTHON in tests/lib.sh), not whichever one the PATH finds first
test_cmds="faketime:faketime qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio dmsetup:dmsetup losetup:mount valgrind:valgrind clang:clang flock:util-linux /usr/bin/python3:python3 systemd-analyze:systemd setpriv:util-linux nbdinfo:libnbd-bin nbdcopy:libnbd-bin qemu-img:qemu-utils qemu-io:qemu-utils nbd-client:nbd-client mkfs.ext4:e2fsprogs e2fsck:e2fsprogs fsfreeze:util-linux udevadm:udev psktool:gnutls-bin certtool:gnutls-bin man:man-db col:bsdextrautils script:bsdutils"
# command -> Debian package (bench/nbd-bench.sh: fio with its nbd engine,
# which Debian's fio has through libnbd, and qemu-nbd as the baseline)
bench_cmds="fio:fio qemu-nbd:qemu-utils qemu-img:qemu-utils nbdinfo:libnbd-bin"

missing=""
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
command -v make >/dev/null 2>&1 || missing="$missing make"
if ! command -v pkg-config >/dev/null 2>&1; then
        missing="$missing pkg-config"
        for p in $build_pkgs; do missing="$missing ${p%%:*}"; done
else
        for p in $build_pkgs; do
                pkg-config --exists "${p#*:}" || missing="$missing ${p%%:*}"
        done
fi
case $what in
test) cmds=$test_cmds ;;
bench) cmds=$bench_cmds ;;
*) cmds="" ;;
esac
if [ -n "$cmds" ]; then
        for c in $cmds; do
                # /sbin: a user's PATH often lacks it (dmsetup, nbd-client, e2fsck)
                command -v "${c%%:*}" >/dev/null 2>&1 || [ -x "/bin/${c%%:*}" ] || [ -x "/sbin/${c%%:*}" ] ||
                        [ -x "/usr/sbin/${c%%:*}" ] || missing="$missing ${c#*:}"
        done
fi
# libFuzzer's runtime comes apart from clang on Debian
if [ "$what" = test ] && command -v clang >/dev/null 2>&1; then
        probe=$(mktemp -d)
        printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$probe/f.c"
        clang -fsanitize=fuzzer "$probe/f.c" -o "$probe/f" >/dev/null 2>&1 || missing="$missing libclang-rt-14-dev"
        rm -rf "$probe"
fi
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "deps: installing$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        # shellcheck disable=SC2086
        if ! apt-get install -y --no-install-recommends $missing >&2; then
                apt-get update >&2
                # shellcheck disable=SC2086
                apt-get install -y --no-install-recommends $missing >&2
        fi
        exit 0
fi
echo "deps: missing:$missing" >&2
echo "deps: install them (Debian: apt-get install$missing) or run 'make' as root" >&2
exit 1
