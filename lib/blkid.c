/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one libblkid wrapper: naming devices by UUID= and LABEL=, reading a
 * volume's filesystem type and label, and finding any signature on a
 * device before it is used as a store (a filesystem, RAID, LVM, swap or a
 * partition table there would be destroyed).
 *
 * A tag names the device under cowvol, never one of cowvol's own: the
 * volume's origin, its -real layer and every snapshot carry the tags of the
 * filesystem on the device under them (and blkid skips LVM's private layers
 * by their uuids, not ours).  So an answer of blkid_evaluate_tag() (udev's
 * /dev/disk links, then blkid's cache) that is a COWVOL- device, or that a
 * probe does not confirm (a stale cache), is set aside for a scan of every
 * block device, cowvol's skipped.
 */
#include <blkid/blkid.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "internal.h"

/* Read the first line of sysfs file @path into @buf; -errno. */
static int sysfs_read(const char *path, char *buf, size_t len)
{
        FILE *f = fopen(path, "re");
        int r = 0;

        if (!f)
                return -errno;
        if (!fgets(buf, (int)len, f))
                r = -EIO;
        else
                buf[strcspn(buf, "\n")] = '\0';
        fclose(f);
        return r;
}

/* True when @dev is a device-mapper device of cowvol's (dm uuid COWVOL-...). */
static bool is_cowvol_dm(const char *dev)
{
        char path[96], uuid[160];
        struct stat st;

        if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode))
                return false;
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/dm/uuid", major(st.st_rdev), minor(st.st_rdev));
        return sysfs_read(path, uuid, sizeof(uuid)) == 0 && strncmp(uuid, "COWVOL-", 7) == 0;
}

/* True when a probe of @dev finds tag @name with @value (blkid's tag names;
 * PARTUUID and PARTLABEL are the partition entry's). */
static bool has_tag(const char *dev, const char *name, const char *value)
{
        const char *key = !strcmp(name, "PARTUUID") ? "PART_ENTRY_UUID"
                        : !strcmp(name, "PARTLABEL") ? "PART_ENTRY_NAME"
                                                     : name;
        const char *v = NULL;
        bool found = false;
        blkid_probe pr = blkid_new_probe_from_filename(dev);

        if (!pr)
                return false;
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID);
        blkid_probe_enable_partitions(pr, 1);
        blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
        if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, key, &v, NULL) == 0)
                found = !strcmp(v, value);
        blkid_free_probe(pr);
        return found;
}

/* Every block device with a size, cowvol's skipped, probed for the tag;
 * the first that has it (malloc'ed path), or NULL. */
static char *scan_for_tag(const char *name, const char *value)
{
        DIR *d = opendir("/sys/class/block");
        struct dirent *e;
        char *found = NULL;

        if (!d)
                return NULL;
        while (!found && (e = readdir(d))) {
                char path[600], buf[160], dev[400];
                if (e->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "/sys/class/block/%s/size", e->d_name);
                if (sysfs_read(path, buf, sizeof(buf)) < 0 || !strcmp(buf, "0"))
                        continue;
                /* a dm device by its /dev/mapper name, as blkid gives it */
                snprintf(path, sizeof(path), "/sys/class/block/%s/dm/name", e->d_name);
                if (sysfs_read(path, buf, sizeof(buf)) == 0)
                        snprintf(dev, sizeof(dev), "/dev/mapper/%s", buf);
                else {
                        snprintf(dev, sizeof(dev), "/dev/%s", e->d_name);
                        for (char *c = dev + 5; *c; c++)
                                if (*c == '!') /* sysfs's name for a '/' (cciss!c0d0) */
                                        *c = '/';
                }
                if (access(dev, F_OK) == 0 && !is_cowvol_dm(dev) && has_tag(dev, name, value))
                        found = strdup(dev);
        }
        closedir(d);
        return found;
}

int cvblkid_resolve(const char *spec, char **ret_dev)
{
        char *name = NULL, *value = NULL, *dev;

        *ret_dev = NULL;
        if (!strchr(spec, '=')) {
                if (!(dev = strdup(spec)))
                        return -ENOMEM;
                *ret_dev = dev;
                return 0;
        }
        /* UUID=, LABEL=, PARTUUID=, PARTLABEL= */
        if (blkid_parse_tag_string(spec, &name, &value) < 0 || !name || !value) {
                free(name);
                free(value);
                return log_err(-EINVAL, "'%s' is not a NAME=value tag", spec);
        }
        dev = blkid_evaluate_tag(name, value, NULL);
        if (dev && (is_cowvol_dm(dev) || !has_tag(dev, name, value))) {
                free(dev);
                dev = NULL;
        }
        if (!dev)
                dev = scan_for_tag(name, value);
        free(name);
        free(value);
        if (!dev)
                return log_err(-ENOENT, "No device has %s", spec);
        *ret_dev = dev;
        return 0;
}

/* A probe of @dev for superblocks (and partition tables with @parts). */
static blkid_probe probe_new(const char *dev, bool parts, int *ret_err)
{
        blkid_probe pr = blkid_new_probe_from_filename(dev);

        if (!pr) {
                *ret_err = log_err(-errno ? -errno : -EIO, "Cannot read %s: %m", dev);
                return NULL;
        }
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_USAGE);
        blkid_probe_enable_partitions(pr, parts);
        if (parts)
                blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);
        *ret_err = 0;
        return pr;
}

int cvblkid_probe(const char *dev, char *type, size_t tlen, char *label, size_t llen)
{
        const char *v = NULL;
        blkid_probe pr;
        int r;

        type[0] = label[0] = '\0';
        if (!(pr = probe_new(dev, false, &r)))
                return r;
        r = blkid_do_safeprobe(pr);
        if (r == 0) {
                if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0)
                        snprintf(type, tlen, "%s", v);
                if (blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0)
                        snprintf(label, llen, "%s", v);
        }
        blkid_free_probe(pr);
        /* 1: nothing found; -2: ambiguous (several signatures): say nothing */
        return r < 0 && r != -2 ? log_err(-EIO, "Cannot probe %s", dev) : 0;
}

int cvblkid_signature(const char *dev, char *what, size_t len)
{
        const char *v = NULL;
        blkid_probe pr;
        int r, found = 0;

        what[0] = '\0';
        if (!(pr = probe_new(dev, true, &r)))
                return r;
        /* every signature, not the first only: wipefs's way */
        while ((r = blkid_do_probe(pr)) == 0) {
                if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0 ||
                    blkid_probe_lookup_value(pr, "PTTYPE", &v, NULL) == 0) {
                        if (!found)
                                snprintf(what, len, "%s", v);
                        found = 1;
                }
        }
        blkid_free_probe(pr);
        if (r < 0 && !found)
                return log_err(-EIO, "Cannot probe %s", dev);
        return found;
}
