/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvold: the daemon that owns volumes and snapshots.
 * This first cut answers --help and --version; serving the control socket
 * comes with the userspace engine.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cowvol.h"

static void help(void)
{
        printf("Usage: cowvold [--state-dir DIR] [--socket PATH] [--config FILE] [--foreground]\n"
               "\n"
               "The cowvol daemon: owns volumes and their copy-on-write snapshots.\n"
               "\n"
               "  -h, --help      Show this help\n"
               "  -V, --version   Show the version\n");
}

int main(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case 'V':
                        printf("cowvold %s\n", cowvol_version());
                        return EXIT_SUCCESS;
                default:
                        fprintf(stderr, "Try 'cowvold --help'.\n");
                        return 2;
                }
        }
        fprintf(stderr, "cowvold: serving volumes is not available in this version (%s); "
                        "use 'cowvol store' for offline store work\n",
                cowvol_version());
        return EXIT_FAILURE;
}
