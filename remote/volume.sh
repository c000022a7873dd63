#!/usr/bin/env bash
# Mounts the stack's Block Storage volume and moves /srv/<app>/shared onto it. The volume is found
# by the name DigitalOcean gives its disk (/dev/disk/by-id/scsi-0DO_Volume_<name>), mounted by
# UUID with nofail at /mnt/<name>, grown to the volume's size, and /srv/<app>/shared becomes a bind
# mount of <mount>/shared (filled from the droplet's own shared/ the first time). supervisor (and
# so the app) waits for that mount at boot. On a replaced droplet the app user may have a new uid:
# files on the volume are handed over to it.
set -euo pipefail

require V_APP V_VOLUME_NAME V_MOUNT
app=$V_APP
name=$V_VOLUME_NAME
mount=$V_MOUNT
[[ $app =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad app name"
[[ $name =~ ^[a-z][a-z0-9-]{0,63}$ ]] || die "bad volume name"
[ "$mount" = "/mnt/$name" ] || die "the mount point must be /mnt/$name"
shared=/srv/$app/shared
device=/dev/disk/by-id/scsi-0DO_Volume_$name
marker="# dropstack volume $name"

# ---- the disk: attached just before this step, its device link may still be on its way
for _ in $(seq 1 120); do
  [ -b "$device" ] && break
  udevadm settle --timeout=5 || true
  [ -b "$device" ] || sleep 1
done
if [ ! -b "$device" ]; then
  attached=(/dev/disk/by-id/scsi-0DO_Volume_*)
  die "volume $name is not attached: $device does not exist (volumes attached: ${attached[*]##*/})"
fi
fstype=$(blkid -s TYPE -o value "$device" || true)
if [ -z "$fstype" ]; then
  log "volume $name has no filesystem: making ext4"
  mkfs.ext4 -q -L "${name:0:16}" "$device"
  fstype=ext4
  CHANGED=1
fi
[ "$fstype" = ext4 ] || die "volume $name holds a $fstype filesystem; dropstack expects ext4"
uuid=$(blkid -s UUID -o value "$device")

# ---- /etc/fstab: by UUID, nofail (a missing volume never stops the boot); the bind mount after it
fstab_lines="UUID=$uuid $mount ext4 defaults,nofail,noatime,discard 0 2 $marker
$mount/shared $shared none bind,nofail,x-systemd.requires-mounts-for=$mount 0 0 $marker"
current=$(grep -F -- "$marker" /etc/fstab || true)
if [ "$current" != "$fstab_lines" ]; then
  { grep -vF -- "$marker" /etc/fstab || true; printf '%s\n' "$fstab_lines"; } >/etc/fstab.dropstack-tmp
  chmod 644 /etc/fstab.dropstack-tmp
  mv -f /etc/fstab.dropstack-tmp /etc/fstab
  systemctl daemon-reload
  CHANGED=1
  log "updated /etc/fstab for volume $name (UUID $uuid)"
fi
ensure_dir "$mount" 755 root:root
if ! mountpoint -q "$mount"; then
  mount "$mount"
  CHANGED=1
  log "mounted volume $name at $mount"
fi
# A larger volume: grow the filesystem online to the disk's size (does nothing when it fits).
if resize2fs "$device" 2>&1 | grep -q 'is now'; then
  CHANGED=1
  log "grew the filesystem on $name to $(df -h --output=size "$mount" | tail -n 1 | tr -d ' ')"
fi

# ---- ownership: a new droplet's app user may have another uid and gid than the one that wrote
owners=$mount/.dropstack-owners
app_ids="$(id -u "$app") $(id -g "$app")"
if [ -f "$owners" ]; then
  read -r old_uid old_gid <"$owners"
  if [ "$old_uid $old_gid" != "$app_ids" ] && [ -d "$mount/shared" ]; then
    log "handing the files on the volume from uid $old_uid to $app ($app_ids)"
    find "$mount/shared" -xdev -uid "$old_uid" -exec chown -h "$(id -u "$app")" {} +
    find "$mount/shared" -xdev -gid "$old_gid" -exec chgrp -h "$(id -g "$app")" {} +
    CHANGED=1
  fi
fi
printf '%s\n' "$app_ids" | cmp -s - "$owners" 2>/dev/null || { printf '%s\n' "$app_ids" >"$owners"; CHANGED=1; }

# ---- shared/ on the volume: copied the first time, then bind-mounted over the droplet's own
if [ ! -d "$mount/shared" ]; then
  log "moving $shared onto the volume"
  rm -rf "$mount/shared.dropstack-tmp"
  cp -a "$shared" "$mount/shared.dropstack-tmp"
  mv -T "$mount/shared.dropstack-tmp" "$mount/shared"
  CHANGED=1
fi
if ! mountpoint -q "$shared"; then
  mount "$shared"
  CHANGED=1
  log "$shared is now $mount/shared"
fi

# ---- the app starts only once its data is there (at boot, supervisor, and Docker for runtime
# docker, wait for the mounts: a container's bind mounts of shared/ must not land on the bare disk)
units_changed=0
for unit in supervisor docker; do
  ensure_dir "/etc/systemd/system/$unit.service.d" 755 root:root
  write_file "/etc/systemd/system/$unit.service.d/dropstack-volume.conf" 644 root:root "[Unit]
RequiresMountsFor=$shared
"
  units_changed=$((units_changed | WROTE))
done
[ "$units_changed" = 0 ] || systemctl daemon-reload
log "volume $name: $(df -h --output=used,size "$mount" | tail -n 1 | awk '{print $1 " used of " $2}') at $mount"
finish
