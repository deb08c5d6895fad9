/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: the store parser.  The input is a whole store image
 * (header, areas, data), read through an in-memory I/O layer that refuses
 * writes: open, check, walk, look up and start a merge must never crash,
 * leak, or write.  Small chunk sizes (1 sector: 32 entries an area) let the
 * fuzzer reach several areas in a few KiB.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct mem {
        const uint8_t *data;
        size_t len;
};

static int m_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
        struct mem *m = ctx;

        if (off > m->len || len > m->len - off)
                return -EIO;
        memcpy(buf, m->data + off, len);
        return 0;
}

static int m_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
        (void)ctx, (void)buf, (void)len, (void)off;
        abort(); /* reading a store must never write it */
}

static int m_sync(void *ctx)
{
        (void)ctx;
        return 0;
}

static int m_size(void *ctx, uint64_t *ret)
{
        *ret = ((struct mem *)ctx)->len;
        return 0;
}

static const struct store_io mem_io = { .pread = m_pread, .pwrite = m_pwrite, .sync = m_sync, .size = m_size };

static int walk(const struct cowvol_exception *e, void *ud)
{
        uint64_t nw;

        /* every listed exception is found by lookup, at its store chunk */
        if (cowvol_store_lookup(ud, e->old_chunk, &nw) != 1 || nw != e->new_chunk)
                abort();
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
        struct mem m = { data, len };
        cowvol_store *s = NULL;
        int faults;

        faults = exstore_check_io(&mem_io, &m, NULL, NULL);
        if (exstore_open_io(&mem_io, &m, COWVOL_STORE_RDONLY, &s) == 0) {
                struct cowvol_store_usage u;
                char line[96];
                uint64_t nw;

                /* a store that opens has no faults, unless it is marked invalid */
                if (faults != 0 && cowvol_store_is_valid(s))
                        abort();
                cowvol_store_usage(s, &u);
                cowvol_store_status_line(s, line, sizeof(line));
                cowvol_store_foreach(s, walk, s);
                cowvol_store_lookup(s, 0, &nw);
                cowvol_store_capacity(s);
                cowvol_store_close(s);
        }
        return 0;
}
