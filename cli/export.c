/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cowvol export: the NBD URI of a volume or snapshot.  cowvold serves every
 * volume and snapshot over NBD on a socket of its own; this asks it for the
 * socket and checks that the target can be served.
 */
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

struct export_opts {
        bool tcp, json;
};

static const struct cli_option export_options[] = {
        { "tcp", .kind = CLI_FLAG, .offset = offsetof(struct export_opts, tcp),
          .help = "the nbd://HOST:PORT/NAME URI (cowvold --nbd-tcp, nbd_tcp =)" },
        { "json", .short_name = 'j', .kind = CLI_FLAG, .offset = offsetof(struct export_opts, json),
          .help = "the daemon's answer (uri, tcp_uri, name, socket, read_only)" },
        {},
};

static int export_run(const void *opts, char **target)
{
        const struct export_opts *o = opts;
        const char *uri;
        json_object *args, *res;
        int r;

        args = json_object_new_object();
        json_object_object_add(args, "target", json_object_new_string(target[0]));
        r = daemon_call("export", args, -1, &res);
        if (r)
                return r;
        if (o->json)
                r = print_json_result(res);
        else if ((uri = result_string(res, o->tcp ? "tcp_uri" : "uri")))
                printf("%s\n", uri);
        else if (o->tcp)
                r = log_error("cowvold does not serve NBD over TCP (see nbd_tcp in cowvold(8))");
        else
                r = log_error("cowvold does not serve NBD on its Unix socket (see its log); try --tcp");
        json_object_put(res);
        return r;
}

const struct cli_command cmd_export = {
        .name = "export", .args = "VOLUME[@SNAP]", .check_arg = check_target, .run = export_run,
        .options = export_options, .opts_size = sizeof(struct export_opts),
        .usage = "export VOLUME[@SNAP] [--tcp] [--json]",
        .about = "Print the NBD URI that serves the volume or snapshot, as libnbd and qemu\n"
                 "take it: nbd+unix:///NAME?socket=PATH.  Reads and writes through it go\n"
                 "through cowvold's copy-on-write engine, as every write does.  Examples:\n"
                 "\n"
                 "  nbdinfo \"$(cowvol export vm1)\"\n"
                 "  nbdcopy \"$(cowvol export vm1@snap)\" backup.img\n"
                 "  qemu-img info \"$(cowvol export vm1)\"\n",
};
