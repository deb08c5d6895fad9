#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Run a shell script as root inside Debian's kernel under qemu, so tests can
# use the real device-mapper (the host kernel here has none; see
# shared/kernel-vm.md).
#
#   tests/kernel/vm.sh [--mem MB] [--timeout SECS] SCRIPT [ARGS...]
#
# In the guest: the host's / is the root (read-only), cwd is the repository
# root, /tmp and /run are tmpfs, $VM_WORK is a per-run read-write folder whose
# guest path equals its host path, COWVOL_IN_VM=1, DM_DISABLE_UDEV=1.
# SCRIPT runs with bash and stdin from /dev/null; vm.sh exits with its exit
# code.
#
# Environment: COWVOL_VM_CACHE (default <repo>/build/vm) holds the kernel and
# initramfs; COWVOL_VM_KEEP=1 keeps the run's work folder; COWVOL_VM_OUT=DIR
# receives what the script left in $VM_WORK/out.
set -euo pipefail

# Load order matters: busybox insmod does not resolve dependencies (the
# .deb has no modules.dep; each .ko's modinfo "depends=" names them). nbd has
# none. ext4 depends on jbd2, mbcache and crc16, and ext4 and jbd2 ask the
# crypto API for "crc32c" (a softdep), which nobody could modprobe here:
# crc32c_generic goes first (it works on any CPU; crc32c-intel needs SSE4.2).
MODULES="9pnet virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
virtio_pci 9pnet_virtio netfs fscache 9p dm-mod dm-bufio dm-snapshot loop
nbd crc16 mbcache crc32c_generic jbd2 ext4"

die() { echo "vm.sh: $*" >&2; exit 1; }
log() { echo "vm.sh: $*" >&2; }

usage() {
	echo "usage: $0 [--mem MB] [--timeout SECS] SCRIPT [ARGS...]" >&2
	exit 2
}

mem=2048
timeout_s=900
while [ $# -gt 0 ]; do
	case "$1" in
	--mem) [ $# -ge 2 ] || usage; mem=$2; shift 2 ;;
	--mem=*) mem=${1#*=}; shift ;;
	--timeout) [ $# -ge 2 ] || usage; timeout_s=$2; shift 2 ;;
	--timeout=*) timeout_s=${1#*=}; shift ;;
	-h|--help) usage ;;
	--) shift; break ;;
	-*) usage ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || usage
[[ $mem =~ ^[0-9]+$ ]] || die "--mem wants a number of MB, got '$mem'"
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout wants seconds, got '$timeout_s'"
script=$1; shift
[ -f "$script" ] || die "no such script: $script"
script=$(realpath -- "$script")

self=$(realpath -- "${BASH_SOURCE[0]}")
repo=$(cd -- "$(dirname -- "$self")/../.." && pwd -P)
cache=${COWVOL_VM_CACHE:-$repo/build/vm}
mkdir -p -- "$cache"
cache=$(cd -- "$cache" && pwd -P)
# Keep the cache out of `git status` without touching the repo's .gitignore.
[ -e "$cache/.gitignore" ] || echo '*' >"$cache/.gitignore"

# --- tools ---------------------------------------------------------------

export PATH="$PATH:/usr/sbin:/sbin"

is_root() { [ "$(id -u)" = 0 ]; }
can_apt() { is_root && command -v apt-get >/dev/null && [ -f /etc/debian_version ]; }

apt_install() {
	log "installing: $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "$@" ||
		{ apt-get update && apt-get install -y --no-install-recommends "$@"; }
}

static_busybox() {
	[ -x /bin/busybox ] || return 1
	# ldd prints "not a dynamic executable" (or "statically linked") for it.
	! ldd /bin/busybox >/dev/null 2>&1 ||
		ldd /bin/busybox 2>&1 | grep -q 'statically linked'
}

missing_pkgs() {
	local m=()
	command -v qemu-system-x86_64 >/dev/null || m+=(qemu-system-x86)
	static_busybox || m+=(busybox-static)
	command -v cpio >/dev/null || m+=(cpio)
	command -v dmsetup >/dev/null || m+=(dmsetup)
	command -v losetup >/dev/null || m+=(mount)
	command -v blockdev >/dev/null || m+=(util-linux)
	command -v flock >/dev/null || m+=(util-linux)
	command -v gzip >/dev/null || m+=(gzip)
	command -v timeout >/dev/null || m+=(coreutils)
	command -v dpkg-deb >/dev/null || m+=(dpkg)
	[ ${#m[@]} = 0 ] || printf '%s\n' "${m[@]}" | sort -u | paste -sd' '
}

missing=$(missing_pkgs)
if [ -n "$missing" ]; then
	can_apt || die "missing Debian packages: $missing" \
		"(install them as root: apt-get install $missing)"
	# shellcheck disable=SC2086 # one word per package
	apt_install $missing
	missing=$(missing_pkgs)
	[ -z "$missing" ] || die "still missing after install: $missing"
fi

# --- kernel and initramfs (cached) ----------------------------------------

kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}

exec 9>"$cache/.lock"
flock 9

# Sets kpkg, img: the kernel package apt names now and the image built from
# it, this vm.sh (which holds the init) and busybox.
resolve() {
	kpkg=$(kernel_pkg)
	if [ -z "$kpkg" ]; then
		# No apt lists (e.g. not root): fall back to a kernel already cached.
		kpkg=$(ls -t "$cache"/linux-image-*-amd64_*.deb 2>/dev/null | head -n1 || true)
		kpkg=${kpkg##*/}; kpkg=${kpkg%%_*}
	fi
	local key
	key=$( { echo "$kpkg"; cat "$self"; sha256sum /bin/busybox; } | sha256sum | cut -c1-16)
	img=$cache/img-$key
}

download() {
	[ -n "$kpkg" ] || return 1
	deb=$(ls "$cache/${kpkg}"_*.deb 2>/dev/null | head -n1 || true)
	[ -z "$deb" ] || return 0
	# As root, apt's _apt sandbox user may not write here: skip it.
	local dl=(apt-get download)
	is_root && dl+=(-o APT::Sandbox::User=root)
	(cd "$cache" && "${dl[@]}" "$kpkg") || return 1
	deb=$(ls "$cache/${kpkg}"_*.deb | head -n1)
}

resolve
if [ ! -f "$img/initrd.gz" ]; then
	if ! download; then
		# Missing or stale apt lists: refresh them, the name may change.
		can_apt || die "cannot get the kernel package ('${kpkg:-none}');" \
			"run apt-get update as root, or check 'apt-cache depends linux-image-amd64'"
		apt-get update >&2 || true
		resolve
		[ -f "$img/initrd.gz" ] || download || die "apt-get download ${kpkg:-linux-image} failed"
	fi
fi

if [ ! -f "$img/initrd.gz" ]; then
	log "building kernel image $img ($kpkg)"
	rm -rf "$cache"/tmp.* "$cache"/img-*
	tmp=$(mktemp -d "$cache/tmp.XXXXXX")
	dpkg-deb -x "$deb" "$tmp/deb"
	vmlinuz=$(ls "$tmp"/deb/boot/vmlinuz-* | head -n1)
	kver=${vmlinuz##*/vmlinuz-}
	moddir=$tmp/deb/lib/modules/$kver
	[ -d "$moddir" ] || moddir=$tmp/deb/usr/lib/modules/$kver
	[ -d "$moddir" ] || die "no modules for $kver in $deb"

	root=$tmp/root
	mkdir -p "$root"/{bin,dev,proc,sys,mnt/work,newroot,modules}
	cp /bin/busybox "$root/bin/busybox"
	for m in $MODULES; do
		f=$(find "$moddir/kernel" -name "$m.ko" -o -name "$m.ko.xz" | head -n1)
		if [ -n "$f" ]; then
			# busybox insmod wants plain .ko (newer Debian kernels use .ko.xz).
			case "$f" in
			*.xz) xz -dc "$f" >"$root/modules/$m.ko" ;;
			*) cp "$f" "$root/modules/" ;;
			esac
			echo "$m" >>"$root/modules/order"
		elif ! grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
			die "module $m.ko not found in $kpkg"
		fi
	done
	cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# Guest init. Control files live in the work share's .vm/ folder.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
# devtmpfs lacks these; bash's <(...) needs /dev/fd.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm
# The initramfs has no /dev/console node, so take the console now.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
halt() { echo "vm-init: $*"; sync; poweroff -f; sleep 10; }
for m in $(cat /modules/order); do
	args=
	[ "$m" = loop ] && args=max_loop=16
	insmod /modules/$m.ko $args || halt "insmod $m failed"
done
o=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $o work /mnt/work || halt "cannot mount the work share"
cp -r /mnt/work/.vm /ctl
umount /mnt/work
work=$(cat /ctl/path)
repo=$(cat /ctl/repo)
R=/newroot
# the host root is read-only here and does not change during a run: the
# guest may cache it (cache=loose), and each program started in the guest
# no longer reads its binary and libraries again over 9p (the kernel suite:
# 551 s -> 366 s, t-kengine 355 s -> 200 s)
mount -t 9p -o $o,ro,cache=loose hostroot $R || halt "cannot mount the host root"
# Paths under /tmp or /run would vanish under the guest's tmpfs: keep the
# repo (and the script's folder) visible by binding them back on top.
keep=
n=0
while read -r p; do
	case "$p" in /tmp|/tmp/*|/run|/run/*) ;; *) continue ;; esac
	n=$((n+1))
	if [ -d "$R$p" ]; then mkdir /mnt/keep$n; else touch /mnt/keep$n; fi
	mount -o bind "$R$p" /mnt/keep$n && keep="$keep $n"
	echo "$p" >/mnt/keep$n.path
done <<KEEP
$repo
$(cat /ctl/keep)
KEEP
mount -o bind /dev $R/dev
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=755 tmpfs $R/run
for n in $keep; do
	p=$(cat /mnt/keep$n.path)
	if [ -d /mnt/keep$n ]; then mkdir -p "$R$p"
	else mkdir -p "$(dirname "$R$p")" && touch "$R$p"; fi
	mount -o bind /mnt/keep$n "$R$p" || halt "cannot keep $p"
done
mkdir -p "$R$work" 2>/dev/null
mount -t 9p -o $o work "$R$work" || halt "cannot mount the work share at $work"
echo
echo "vm-init: kernel $(uname -r) up, running the script"
chroot $R /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	DM_DISABLE_UDEV=1 COWVOL_IN_VM=1 VM_WORK="$work" HOME=/tmp TERM=dumb \
	LANG=C.UTF-8 /bin/bash "$work/.vm/run.sh" </dev/null
echo $? >"$R$work/.vm/rc"
sync
poweroff -f
sleep 10
EOF
	chmod 755 "$root/init"
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) |
		gzip -1 >"$tmp/initrd.gz"
	cp "$vmlinuz" "$tmp/vmlinuz"
	rm -rf "$tmp/deb" "$tmp/root"
	chmod 755 "$tmp"
	mv "$tmp" "$img"
	# Older kernel packages are dead weight once a newer one is built.
	for d in "$cache"/linux-image-*.deb; do
		[ "$d" = "$deb" ] || rm -f "$d"
	done
fi
flock -u 9
exec 9>&-

# --- run ------------------------------------------------------------------

work=$(mktemp -d "$cache/run.XXXXXX")
chmod 755 "$work"
main_pid=$BASHPID
cleanup() {
	[ "$BASHPID" = "$main_pid" ] || return 0
	if [ "${COWVOL_VM_KEEP:-0}" = 1 ]; then
		log "kept work folder $work"
	else
		rm -rf -- "$work"
	fi
}
trap cleanup EXIT

mkdir "$work/.vm"
echo "$work" >"$work/.vm/path"
echo "$repo" >"$work/.vm/repo"
# The guest keeps this visible even under /tmp or /run (its own tmpfs there).
case "$(dirname -- "$script")" in
/tmp|/run) echo "$script" ;;
*) dirname -- "$script" ;;
esac >"$work/.vm/keep"
{
	echo "cd $(printf '%q' "$repo") || exit 125"
	printf 'exec bash'
	printf ' %q' "$script" "$@"
	echo
} >"$work/.vm/run.sh"

log "booting $kpkg (mem ${mem}M, timeout ${timeout_s}s): ${script#"$repo"/} $*"
start=$SECONDS
qrc=0
# The serial console writes CRLF, and SeaBIOS sends terminal resets and
# screen clears: strip them so logs read well and a terminal is not wiped.
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
	-accel tcg -m "$mem" -smp 2 -nographic -no-reboot -nic none \
	-kernel "$img/vmlinuz" -initrd "$img/initrd.gz" \
	-append "console=ttyS0 quiet panic=-1 loop.max_loop=16" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=${work//,/,,},mount_tag=work,security_model=none,multidevs=remap" \
	</dev/null |
	sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' || qrc=$?

if [ ! -s "$work/.vm/rc" ]; then
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		die "timed out after ${timeout_s}s; the guest did not finish (no exit code)"
	fi
	die "the guest wrote no exit code (qemu exit $qrc): it crashed or" \
		"failed to boot; see the console output above"
fi
rc=$(cat "$work/.vm/rc")
log "guest script exited $rc after $((SECONDS - start))s"
# COWVOL_VM_OUT=DIR: what the script left in $VM_WORK/out is copied to DIR
if [ -n "${COWVOL_VM_OUT:-}" ] && [ "$rc" = 0 ]; then
	mkdir -p -- "$COWVOL_VM_OUT"
	cp -r --sparse=always -- "$work/out/." "$COWVOL_VM_OUT/" || die "cannot copy the results to $COWVOL_VM_OUT"
fi
exit "$rc"
