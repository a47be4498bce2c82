#!/bin/busybox sh
# PID 1 of the testbed guest (busybox sh).  Mounts the host's root read-only over 9p at
# /host, the shared directory writable at its host path inside it, the guest kernel's own
# filesystems and /boot over the host's, then runs /ctl/cmd.sh chrooted into /host and
# powers off.
# /ctl is the host's control directory: params in; started, stdout, stderr and rc out.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "testbed: $*" > /dev/console; }
halt() { sync; poweroff -f; }

for m in $(cat /modules/order); do
    insmod "/modules/$m" || say "insmod $m failed"
done

# 9p over virtio: 512 KiB is the largest msize 6.1's virtio transport takes
NINEP=trans=virtio,version=9p2000.L,msize=512000
# the host root never changes under a run: cache it all (Python's imports stat a lot)
mount -t 9p -o "$NINEP,cache=loose,ro" hostroot /host || { say "cannot mount hostroot"; halt; }
mount -t 9p -o "$NINEP" ctl /ctl || { say "cannot mount ctl"; halt; }
. /ctl/params

mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t devpts devpts /host/dev/pts
# the guest writes its own /tmp; what the host keeps under /tmp that the command needs (a
# checkout being tested, say) stays visible at its path, read-only like the rest
mkdir -p /hosttmp
mount -o bind /host/tmp /hosttmp
mount -t tmpfs tmpfs /host/tmp
for p in $TB_EXPOSE; do
    mkdir -p "/host$p" && mount -o bind "/hosttmp${p#/tmp}" "/host$p" || say "cannot expose $p"
done
mount -t tmpfs tmpfs /host/run
mount -t tracefs tracefs /host/sys/kernel/tracing
mount -t debugfs debugfs /host/sys/kernel/debug
mount -t bpf bpf /host/sys/fs/bpf
# the guest kernel's /boot (config, System.map) where tools look for it: bpftool feature probe
[ -d /host/boot ] && mount -t 9p -o "$NINEP,ro" boot /host/boot
# the shared directory at the same path as on the host (created if it lies in a tmpfs)
mkdir -p "/host$TB_SHARED" 2>/dev/null
mount -t 9p -o "$NINEP" shared "/host$TB_SHARED" || { say "cannot mount $TB_SHARED"; halt; }

say "running"
: > /ctl/started    # the boot is over: what follows is the command's
chroot /host /bin/sh -c "$(cat /ctl/cmd.sh)" < /dev/null > /ctl/stdout 2> /ctl/stderr
echo $? > /ctl/rc
halt
