/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the fuzz targets over the daemon's code share: a request made by the
 * target itself while it sets up its state folder. */
#ifndef COWVOL_FUZZ_DAEMON_H
#define COWVOL_FUZZ_DAEMON_H

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon.h"

/* Run @op with the arguments @json as root; a failure aborts (the target's
 * setup is broken, not the input). */
static inline void fuzz_setup_call(const char *target, const char *op, const char *json)
{
        json_object *args = json_tokener_parse(json), *res = NULL;
        struct peer p = { .uid = 0, .admin = true, .fd = -1 };
        struct failure f = {};

        handle_request(op, args, &p, &res, &f);
        if (f.err) {
                fprintf(stderr, "%s: setup %s failed: %s\n", target, op, f.msg);
                abort();
        }
        json_object_put(res);
        json_object_put(args);
}

#endif
