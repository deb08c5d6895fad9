/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvol export: the NBD URI of a volume or snapshot.  cowvold serves every
 * volume and snapshot over NBD on a socket of its own; this asks it for the
 * socket and checks that the target can be served.
 */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static void export_help(void)
{
        printf("Usage: %s export VOLUME[@SNAP] [--tcp] [--json]\n"
               "\n"
               "Print the NBD URI that serves the volume or snapshot, as libnbd and qemu\n"
               "take it: nbd+unix:///NAME?socket=PATH.  Reads and writes through it go\n"
               "through cowvold's copy-on-write engine, as every write does.  Examples:\n"
               "\n"
               "  nbdinfo \"$(%s export vm1)\"\n"
               "  nbdcopy \"$(%s export vm1@snap)\" backup.img\n"
               "  qemu-img info \"$(%s export vm1)\"\n"
               "\n"
               "  --tcp   the nbd://HOST:PORT/NAME URI (cowvold --nbd-tcp, nbd_tcp =)\n"
               "  --json  the daemon's answer (uri, tcp_uri, name, socket, read_only)\n",
               program_name, program_name, program_name, program_name);
}

int cmd_export(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "json", no_argument, NULL, 'j' },
                { "tcp", no_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *cmd = "export ", *uri;
        json_object *args, *res;
        bool json = false, tcp = false;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        export_help();
                        return EXIT_SUCCESS;
                case 'j':
                        json = true;
                        break;
                case 't':
                        tcp = true;
                        break;
                default:
                        return getopt_error(cmd, c, argv);
                }
        }
        r = check_arg_count(cmd, argc - optind, 1, "VOLUME[@SNAP]");
        if (r)
                return r;
        r = check_target(cmd, argv[optind]);
        if (r)
                return r;
        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(argv[optind]));
        r = daemon_call("export", args, -1, &res);
        if (r)
                return r;
        if (json)
                r = print_json_result(res);
        else if ((uri = result_string(res, tcp ? "tcp_uri" : "uri")))
                printf("%s\n", uri);
        else if (tcp)
                r = log_error("cowvold does not serve NBD over TCP (see nbd_tcp in cowvold(8))");
        else
                r = log_error("cowvold does not serve NBD on its Unix socket (see its log); try --tcp");
        json_object_put(res);
        return r;
}
