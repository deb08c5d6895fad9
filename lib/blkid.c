/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one libblkid wrapper: naming devices by UUID= and LABEL=, reading a
 * volume's filesystem type and label, and finding any signature on a
 * device before it is used as a store (a filesystem, RAID, LVM, swap or a
 * partition table there would be destroyed).
 */
#include <blkid/blkid.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

int cvblkid_resolve(const char *spec, char **ret_dev)
{
        char *dev;

        *ret_dev = NULL;
        if (strchr(spec, '=')) {
                /* UUID=, LABEL=, PARTUUID=, PARTLABEL= */
                dev = blkid_evaluate_tag(spec, NULL, NULL);
                if (!dev)
                        return log_err(-ENOENT, "No device has %s", spec);
        } else if (!(dev = strdup(spec)))
                return -ENOMEM;
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
