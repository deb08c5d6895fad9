/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The library's face (cryptsetup's tests/all-symbols-test.c): what
 * libcowvol.so exports, what lib/libcowvol.sym names and what lib/cowvol.h
 * declares are one set.  Every exported symbol is named in the map under
 * the version it is exported with and declared in the header; every name in
 * the map is exported (dlvsym finds it under its node) and declared; every
 * function the header declares is in the map.
 *
 * The shared library is the one beside this test binary (build/san/ under
 * make check), or $COWVOL_LIBRARY.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "testlib.h"

#ifndef COWVOL_SRCDIR
#define COWVOL_SRCDIR "."
#endif

#define MAX_SYMS 512

struct sym {
        char name[128];
        char node[64]; /* the version node, "" for none */
};

struct symset {
        struct sym s[MAX_SYMS];
        size_t n;
};

static void add(struct symset *set, const char *name, size_t len, const char *node)
{
        cr_assert_lt(set->n, MAX_SYMS);
        cr_assert_lt(len, sizeof(set->s[0].name), "symbol name too long: %.*s", (int)len, name);
        snprintf(set->s[set->n].name, sizeof(set->s[0].name), "%.*s", (int)len, name);
        snprintf(set->s[set->n].node, sizeof(set->s[0].node), "%s", node);
        set->n++;
}

static const struct sym *find(const struct symset *set, const char *name)
{
        for (size_t i = 0; i < set->n; i++)
                if (strcmp(set->s[i].name, name) == 0)
                        return &set->s[i];
        return NULL;
}

/* @path's text with its comments blanked out (C and version-script comments) */
static char *read_uncommented(const char *rel)
{
        char path[PATH_MAX];
        size_t len;
        char *t, *p;

        snprintf(path, sizeof(path), "%s/%s", COWVOL_SRCDIR, rel);
        t = (char *)file_read_all(path, &len);
        cr_assert_not_null(t, "cannot read %s", path);
        t = realloc(t, len + 1);
        cr_assert_not_null(t);
        t[len] = '\0';
        for (p = t; (p = strstr(p, "/*"));) {
                char *end = strstr(p + 2, "*/");
                cr_assert_not_null(end, "%s: an unterminated comment", rel);
                memset(p, ' ', (size_t)(end + 2 - p));
        }
        for (p = t; (p = strstr(p, "//"));)
                while (*p && *p != '\n')
                        *p++ = ' ';
        return t;
}

static bool ident_char(char c)
{
        return isalnum((unsigned char)c) || c == '_';
}

/* The map: every name under "global:" with its node; *ret_nodes the node
 * names in order, each checked to inherit the one before it. */
static void read_map(struct symset *set, char nodes[][64], size_t *ret_nodes)
{
        char *t = read_uncommented("lib/libcowvol.sym"), *p = t, *tok, *save = NULL;
        char node[64] = "";
        bool global = false, in_node = false, saw_local = false;
        size_t n_nodes = 0;

        /* tokens: words, "{", "}", ":" and ";" (spaced out first) */
        size_t len = strlen(t);
        char *spaced = malloc(len * 3 + 1), *q = spaced;
        cr_assert_not_null(spaced);
        for (; *p; p++) {
                if (strchr("{}:;", *p)) {
                        *q++ = ' ';
                        *q++ = *p;
                        *q++ = ' ';
                } else
                        *q++ = *p;
        }
        *q = '\0';
        free(t);

        for (tok = strtok_r(spaced, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
                if (!in_node) {
                        if (strcmp(tok, ";") == 0)
                                continue;
                        cr_assert_lt(n_nodes, 16);
                        snprintf(node, sizeof(node), "%s", tok);
                        tok = strtok_r(NULL, " \t\n", &save);
                        cr_assert(tok && strcmp(tok, "{") == 0, "libcowvol.sym: '{' expected after %s", node);
                        snprintf(nodes[n_nodes++], 64, "%s", node);
                        in_node = true;
                        global = false;
                } else if (strcmp(tok, "}") == 0) {
                        in_node = false;
                        tok = strtok_r(NULL, " \t\n", &save);
                        cr_assert_not_null(tok, "libcowvol.sym ends inside node %s", node);
                        if (n_nodes == 1)
                                cr_assert_str_eq(tok, ";", "the first node %s inherits nothing", node);
                        else
                                cr_assert_str_eq(tok, nodes[n_nodes - 2], "node %s must inherit %s, not %s", node,
                                                 nodes[n_nodes - 2], tok);
                } else if (strcmp(tok, "global") == 0 || strcmp(tok, "local") == 0) {
                        global = tok[0] == 'g';
                        tok = strtok_r(NULL, " \t\n", &save);
                        cr_assert(tok && strcmp(tok, ":") == 0, "libcowvol.sym: ':' expected in node %s", node);
                } else if (strcmp(tok, ";") == 0) {
                        continue;
                } else if (!global) {
                        cr_assert_str_eq(tok, "*", "node %s: a local name other than '*': %s", node, tok);
                        saw_local = true;
                } else {
                        for (const char *c = tok; *c; c++)
                                cr_assert(ident_char(*c), "node %s: '%s' is not one symbol (no globs)", node, tok);
                        cr_assert_null(find(set, tok), "'%s' is named twice in libcowvol.sym", tok);
                        add(set, tok, strlen(tok), node);
                }
        }
        cr_assert(!in_node, "libcowvol.sym ends inside node %s", node);
        cr_assert(saw_local, "libcowvol.sym has no 'local: *;'");
        free(spaced);
        *ret_nodes = n_nodes;
}

/* The functions cowvol.h declares: cowvol_NAME followed by '(' outside
 * comments (a function pointer type, "(*cowvol_x_fn)(", is not one). */
static void read_header(struct symset *set)
{
        char *t = read_uncommented("lib/cowvol.h");

        for (char *p = t; (p = strstr(p, "cowvol_"));) {
                char *e = p;

                if (p > t && ident_char(p[-1])) {
                        p++;
                        continue;
                }
                while (ident_char(*e))
                        e++;
                const char *after = e;
                while (*after == ' ' || *after == '\t')
                        after++;
                if (*after == '(') {
                        char name[128];

                        snprintf(name, sizeof(name), "%.*s", (int)(e - p), p);
                        if (!find(set, name))
                                add(set, p, (size_t)(e - p), "");
                }
                p = e;
        }
        free(t);
}

static void library_path(char *buf, size_t len)
{
        const char *env = getenv("COWVOL_LIBRARY");
        char exe[PATH_MAX];
        ssize_t n;

        if (env && *env) {
                snprintf(buf, len, "%s", env);
                return;
        }
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        cr_assert_gt(n, 0);
        exe[n] = '\0';
        snprintf(buf, len, "%s/libcowvol.so", dirname(exe));
}

/* What the library exports, as nm -D --defined-only prints it: "NAME@@NODE"
 * for each function (the version nodes themselves are absolute symbols). */
static void read_exports(struct symset *set)
{
        char lib[PATH_MAX], cmd[PATH_MAX + 64], line[512];
        FILE *f;

        library_path(lib, sizeof(lib));
        cr_assert_eq(access(lib, R_OK), 0, "no library at %s", lib);
        snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s'", lib);
        f = popen(cmd, "r");
        cr_assert_not_null(f);
        while (fgets(line, sizeof(line), f)) {
                char addr[64], type[8], name[256], *at;

                if (sscanf(line, "%63s %7s %255s", addr, type, name) != 3)
                        continue;
                if (strcmp(type, "A") == 0)
                        continue; /* a version node */
                at = strchr(name, '@');
                cr_assert_not_null(at, "%s is exported without a version (not through the map)", name);
                add(set, name, (size_t)(at - name), at + strspn(at, "@"));
        }
        cr_assert_eq(pclose(f), 0, "nm -D failed on %s", lib);
        cr_assert_gt(set->n, 0, "%s exports nothing", lib);
}

static struct symset map, header, exports;
static char nodes[16][64];
static size_t n_nodes;

static void load(void)
{
        read_map(&map, nodes, &n_nodes);
        read_header(&header);
        read_exports(&exports);
}

TestSuite(symbols, .init = load);

Test(symbols, map_has_nodes_in_order)
{
        cr_assert_geq(n_nodes, 2);
        cr_assert_str_eq(nodes[0], "LIBCOWVOL_0.1");
        for (size_t i = 0; i < n_nodes; i++)
                cr_assert_eq(strncmp(nodes[i], "LIBCOWVOL_", 10), 0, "node %s", nodes[i]);
        cr_assert_not_null(find(&map, "cowvol_chunk_size_valid"));
        cr_assert_str_eq(find(&map, "cowvol_chunk_size_valid")->node, "LIBCOWVOL_0.2");
}

Test(symbols, every_export_is_in_the_map_and_the_header)
{
        for (size_t i = 0; i < exports.n; i++) {
                const struct sym *e = &exports.s[i], *m = find(&map, e->name);

                cr_expect_not_null(m, "%s is exported but not named in lib/libcowvol.sym", e->name);
                if (m)
                        cr_expect_str_eq(e->node, m->node, "%s is exported as %s, the map says %s", e->name,
                                         e->node, m->node);
                cr_expect_not_null(find(&header, e->name), "%s is exported but not declared in lib/cowvol.h",
                                   e->name);
        }
}

Test(symbols, every_name_in_the_map_is_exported_and_declared)
{
        char lib[PATH_MAX];
        void *h;

        library_path(lib, sizeof(lib));
        h = dlopen(lib, RTLD_LAZY | RTLD_LOCAL);
        cr_assert_not_null(h, "dlopen %s: %s", lib, dlerror());
        for (size_t i = 0; i < map.n; i++) {
                const struct sym *m = &map.s[i];

                cr_expect_not_null(find(&exports, m->name), "%s is in the map but not exported", m->name);
                cr_expect_not_null(dlvsym(h, m->name, m->node), "dlvsym(%s, %s) finds nothing", m->name,
                                   m->node);
                cr_expect_not_null(find(&header, m->name), "%s is in the map but not declared in lib/cowvol.h",
                                   m->name);
        }
        dlclose(h);
}

Test(symbols, every_function_in_the_header_is_in_the_map)
{
        cr_assert_gt(header.n, 0);
        for (size_t i = 0; i < header.n; i++)
                cr_expect_not_null(find(&map, header.s[i].name),
                                   "lib/cowvol.h declares %s but lib/libcowvol.sym does not name it",
                                   header.s[i].name);
}

/* a function marked _public_ in lib/ that the map forgets is hidden by
 * "local: *;" and never reaches a caller */
Test(symbols, every_public_definition_is_in_the_map)
{
        char dir[PATH_MAX];
        struct dirent *d;
        size_t seen = 0;
        DIR *dh;

        snprintf(dir, sizeof(dir), "%s/lib", COWVOL_SRCDIR);
        dh = opendir(dir);
        cr_assert_not_null(dh, "cannot open %s", dir);
        while ((d = readdir(dh))) {
                size_t len = strlen(d->d_name);
                char rel[300], *t;

                if (len < 3 || strcmp(d->d_name + len - 2, ".c") != 0)
                        continue;
                snprintf(rel, sizeof(rel), "lib/%s", d->d_name);
                t = read_uncommented(rel);
                for (char *p = t; (p = strstr(p, "_public_"));) {
                        char *open = strchr(p, '('), *e, *b;

                        cr_assert_not_null(open, "%s: _public_ without a function", rel);
                        for (e = open; e > p && !ident_char(e[-1]); e--)
                                ;
                        for (b = e; b > p && ident_char(b[-1]); b--)
                                ;
                        char name[128];
                        snprintf(name, sizeof(name), "%.*s", (int)(e - b), b);
                        cr_expect_not_null(find(&map, name), "%s: %s is _public_ but not named in lib/libcowvol.sym",
                                           rel, name);
                        seen++;
                        p = open;
                }
                free(t);
        }
        closedir(dh);
        cr_assert_eq(seen, map.n, "%zu _public_ definitions in lib/, %zu names in the map", seen, map.n);
}

Test(symbols, internal_names_stay_hidden)
{
        /* the library's own helpers are not part of its face */
        static const char *const internal[] = { "cvlog", "cvlog_errno", "cvdm_create", "exstore_open_io",
                                                 "cindex_insert", "pwrite_full" };

        for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++)
                cr_expect_null(find(&exports, internal[i]), "%s is exported", internal[i]);
        for (size_t i = 0; i < exports.n; i++)
                cr_expect_eq(strncmp(exports.s[i].name, "cowvol_", 7), 0, "%s is exported without the prefix",
                             exports.s[i].name);
}
