#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol list as lvs: -o FIELD,... (and +FIELD,... added to the default),
# -O [-]FIELD,... sorting volumes and each one's snapshots, --units,
# --nosuffix, --noheadings, --separator, CREATED to the second and
# --time-format iso, '-o help'; --json keeps its field names.
. "$(dirname "$0")/../lib.sh"

start_daemon || exit 1
cv create b --size 2M >/dev/null
cv create a --size 1M >/dev/null
cv snap a@x --store-size 2M >/dev/null
cv snap a@y --store-size 1M --description "second" >/dev/null
cv snap b@z >/dev/null

expect 0 "list" cv list
expect_in out "^NAME +ORIGIN +SIZE +USED +CHUNK +DATA% +FS +LABEL +STATE +CREATED +# +TYPE +CLEANUP +DESCRIPTION +USERDATA$" \
	"the default columns"
expect_in out "^b +2.0 MiB .* active +[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$" "CREATED to the second"

expect 0 "-o name,size --units k" cv list -o name,size --units k
check "exactly those columns, sizes in KiB with two decimals" diff -u - "$T/out" <<'EOF'
NAME       SIZE
b      2048.00k
  b@z  1024.00k
a      1024.00k
  a@x  2048.00k
  a@y  1024.00k
EOF
expect 0 "-o name,size --units b --nosuffix --noheadings --separator ';'" \
	cv list -o name,size --units b --nosuffix --noheadings --separator ';'
check "bytes, no unit, no heading, unpadded" diff -u - "$T/out" <<'EOF'
b;2097152
  b@z;1048576
a;1048576
  a@x;2097152
  a@y;1048576
EOF
expect 0 "-O size" cv list -o name,size -O size --units m
check "volumes by size, then each one's snapshots by size" diff -u - "$T/out" <<'EOF'
NAME    SIZE
a      1.00m
  a@y  1.00m
  a@x  2.00m
b      2.00m
  b@z  1.00m
EOF
expect 0 "-O -name" cv list -o name -O -name --noheadings
check "names, descending at each level" diff -u - "$T/out" <<'EOF'
b
  b@z
a
  a@y
  a@x
EOF
expect 0 "-o +uuid,engine" cv list a -o +uuid,engine
expect_in out "^NAME .* USERDATA +UUID +ENGINE$" "added after the default columns"
expect_in out "^a .* [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} +userspace$" "with their values"
expect 0 "--time-format iso" cv list -o name,created --time-format iso --noheadings
check "CREATED as ISO 8601, in UTC" eval "[ \$(grep -cE '^ *[a-z@]+ +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' '$T/out') = 5 ]"
expect 0 "-o number,description -O -number for a's snapshots" cv list a -o name,number,description -O -number --noheadings
check "numbers, descending" diff -u - "$T/out" <<'EOF'
a
  a@y  2  second
  a@x  1
EOF
expect 0 "-o help" cv list -o help
expect_in out "^Fields for -o and -O \(default: name,origin,size,used," "names the default"
check "lists every field with its title" eval "[ \$(grep -cE '^  [a-z_]+ +[A-Z#%]' '$T/out') -ge 20 ]"
refuse "an unknown field" "-o: unknown field 'bogus' \('-o help' lists them\)" cv list -o name,bogus
refuse "an unknown sort field" "-O: unknown field 'nope'" cv list -O nope
refuse "a bad unit" "--units 'q' is not one of h, b, k, m, g, t" cv list --units q
expect 0 "--json" cv list --json
check "--json keeps its field names (size, store_size, allocated, created)" \
	eval "grep -q '\"store_size\"' '$T/out' && grep -q '\"allocated\"' '$T/out' && grep -q '\"created\"' '$T/out'"
stop_daemon
check "it stops cleanly" test $? = 0
