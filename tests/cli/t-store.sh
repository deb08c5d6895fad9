#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowvol store create/info/check/dump/view, and their errors.
. "$(dirname "$0")/../lib.sh"
cd "$T"

expect 0 "create a 32M store" "$COWVOL" store create s.img --size 32M --chunk-size 64KiB
expect_in out "chunk size 64.0 KiB" "create says the chunk size"
expect 0 "info" "$COWVOL" store info s.img
expect_in out "^Status: +256/65536 256$" "fresh 64K store status is 2 chunks allocated, 2 metadata"
expect 0 "info --json" "$COWVOL" store info s.img --json
expect_in out '"chunk_size":65536' "json has chunk_size"
expect_in out '"exceptions":0' "json has no exceptions"
expect 1 "create refuses to overwrite a store" "$COWVOL" store create s.img --size 32M
expect_in err "already holds a snapshot store" "the refusal says why"
expect 0 "create --force overwrites" "$COWVOL" store create s.img --size 16M --force
expect 0 "check a sound store" "$COWVOL" store check s.img
expect_in out "sound: 0 exceptions" "check says sound"

# sizes and chunk sizes
expect 2 "chunk size not a power of two" "$COWVOL" store create a.img --size 1M --chunk-size 12K
expect_in err "power of two" "the error says power of two"
expect 2 "chunk size too small" "$COWVOL" store create a.img --size 1M --chunk-size 2K
expect 2 "chunk size too large" "$COWVOL" store create a.img --size 8M --chunk-size 1M
expect 2 "size with a bad suffix" "$COWVOL" store create a.img --size 10X
expect_in err "not a size" "the error says not a size"
expect 2 "size 0" "$COWVOL" store create a.img --size 0
expect 2 "size that overflows" "$COWVOL" store create a.img --size 99999999999T
expect 1 "a store too small for 3 chunks" "$COWVOL" store create a.img --size 8K
expect_in err "too small" "the error says too small"
[ ! -e a.img ] && ok "a refused create leaves no file" || notok "a refused create leaves no file"
expect 1 "create without a size of a missing file" "$COWVOL" store create b.img
expect 0 "sizes with iB" "$COWVOL" store create c.img --size 1MiB --chunk-size 4KiB
expect 2 "unknown option" "$COWVOL" store info s.img --bogus
expect 2 "missing argument" "$COWVOL" store info
expect 2 "too many arguments" "$COWVOL" store info s.img s.img
expect 2 "unknown subcommand" "$COWVOL" store frobnicate
expect 2 "unknown command" "$COWVOL" frobnicate
expect 0 "--help" "$COWVOL" --help
expect_in out "store view ORIGIN STORE \[NEWER_STORE\.\.\.\] OUTPUT" "help names store view"
expect 0 "store info --help" "$COWVOL" store info --help
expect_in out "^Usage: cowvol store info PATH \[--json\]$" "store info's help has its usage line"
check "and only it, and only its options" eval "! grep -qE 'store (create|check|dump|view)|--force|--chunk-size' out"
expect_in out "^  -j, --json" "its --json, with -j"
expect 0 "store --help" "$COWVOL" store --help
check "store --help has every subcommand and option" eval "[ \$(grep -cE 'cowvol store (create|info|check|dump|view) ' out) = 5 ] && grep -q -- '-f, --force' out"
expect 0 "store dump -j" "$COWVOL" store dump s.img -j
expect_in out "\"chunk_size\": *4096" "-j is --json"
expect 0 "--version" "$COWVOL" --version

# a filled store: dump, view
"$COWTOOL" pattern o.img 8M 1 && cp o.img before.img
"$COWVOL" store create f.img --size 8M >/dev/null
"$COWTOOL" fill o.img f.img 300 3 10
expect 0 "dump" "$COWVOL" store dump f.img
[ "$(wc -l <out)" = 300 ] && ok "dump lists 300 exceptions" || notok "dump lists 300 exceptions ($(wc -l <out))"
awk 'NF != 2 || $2 < 2 || $2 == 258 { bad = 1 } END { exit bad }' out && ok "dump lines are 'origin store' with data chunks" || notok "dump lines are 'origin store'"
expect 0 "dump --json" "$COWVOL" store dump f.img --json
expect_in out '"origin_chunk":' "json dump has origin_chunk"
expect 0 "info of a filled store" "$COWVOL" store info f.img
expect_in out "Exceptions: +300 " "info counts 300"
expect_in out "2 area\(s\) in use" "info counts 2 areas"
expect 0 "view" "$COWVOL" store view o.img f.img v.img
cmp -s v.img before.img && ok "view equals the origin before the writes" || notok "view equals the origin before the writes"
cmp -s o.img before.img && notok "the fill changed the origin" || ok "the fill changed the origin"
expect 1 "view of a missing origin" "$COWVOL" store view nope.img f.img v2.img
expect 2 "view with two arguments" "$COWVOL" store view o.img f.img
expect_in err "missing ORIGIN STORE \[NEWER_STORE\.\.\.\] OUTPUT" "the error names the arguments"

# a chain of three snapshots, built as the chain engine builds it: after
# each snapshot the origin writes copy into its store only, the newest, so
# an older store lacks the chunks that changed after the next snapshot.
# view(Si, c) = Si's chunk if it has c, else view(Si+1, c), else the origin.
"$COWTOOL" pattern c.img 8M 21
for i in 1 2 3; do
	cp c.img "c.before$i"
	"$COWVOL" store create "c$i.cow" --size 4M >/dev/null
	"$COWTOOL" fill c.img "c$i.cow" 200 $((30 + i)) 25
done
expect 0 "view S1 through S2 and S3" "$COWVOL" store view c.img c1.cow c2.cow c3.cow v1.img
cmp -s v1.img c.before1 && ok "S1 reads as the origin did when S1 was taken" || notok "S1 reads as the origin did when S1 was taken"
expect 0 "view S2 through S3" "$COWVOL" store view c.img c2.cow c3.cow v2.img
cmp -s v2.img c.before2 && ok "S2 reads as the origin did when S2 was taken" || notok "S2 reads as the origin did when S2 was taken"
expect 0 "view S3, the newest" "$COWVOL" store view c.img c3.cow v3.img
cmp -s v3.img c.before3 && ok "S3 reads as the origin did when S3 was taken" || notok "S3 reads as the origin did when S3 was taken"
# the chain is needed: S1's store alone, or the newer stores in the wrong order, read wrong
"$COWVOL" store view c.img c1.cow v1alone.img
cmp -s v1alone.img c.before1 && notok "setup: S1's store alone lacks chunks of its view" || ok "setup: S1's store alone lacks chunks of its view"
"$COWVOL" store view c.img c1.cow c3.cow c2.cow v1swap.img
cmp -s v1swap.img c.before1 && notok "setup: the newer stores' order matters (newest last)" || ok "setup: the newer stores' order matters (newest last)"
# an invalid newer store is a link: older snapshots read through it
cp c2.cow c2bad.cow
printf '\000\000\000\000' | dd of=c2bad.cow bs=1 seek=4 conv=notrunc status=none
expect 0 "view S1 through an invalid S2" "$COWVOL" store view c.img c1.cow c2bad.cow c3.cow v1link.img
cmp -s v1link.img c.before1 && ok "S1 reads through S2's invalid store as a link" || notok "S1 reads through S2's invalid store as a link"
expect 1 "view of the invalid snapshot itself" "$COWVOL" store view c.img c2bad.cow c3.cow vbad.img
expect_in err "c2bad.cow: the store is marked invalid" "the refusal names the invalid store"
[ ! -e vbad.img ] && ok "a refused view writes no output" || notok "a refused view writes no output"
# mistakes in the chain
"$COWVOL" store create c64.cow --size 4M --chunk-size 64K >/dev/null
expect 1 "stores of different chunk sizes" "$COWVOL" store view c.img c1.cow c64.cow vbad.img
expect_in err "c64.cow: chunk size 64.0 KiB, but c1.cow has 4.0 KiB" "the refusal names both chunk sizes"
expect 1 "a store given twice" "$COWVOL" store view c.img c1.cow c2.cow c2.cow vbad.img
expect_in err "c2.cow is given twice" "the refusal names the store"
sum=$(md5sum <c3.cow)
expect 1 "a forgotten OUTPUT: the newest store would be overwritten" "$COWVOL" store view c.img c1.cow c2.cow c3.cow
expect_in err "output c3.cow holds a snapshot store" "the refusal says the output comes last"
[ "$sum" = "$(md5sum <c3.cow)" ] && ok "the store is untouched" || notok "the store is untouched"
expect 1 "a newer store that is not a store" "$COWVOL" store view c.img c1.cow c.before1 vbad.img
expect_in err "c.before1: .*(bad magic|not a usable store)" "the refusal names the file"
expect 1 "a newer store that does not exist" "$COWVOL" store view c.img c1.cow nope.cow vbad.img
expect_in err "nope.cow" "the refusal names the missing store"
[ ! -e vbad.img ] && ok "refused views write no output" || notok "refused views write no output"

# corrupt stores: clear errors, nothing changed
cp f.img bad.img
printf 'XXXX' | dd of=bad.img conv=notrunc status=none
sum1=$(md5sum <bad.img)
expect 1 "info of a store with bad magic" "$COWVOL" store info bad.img
expect_in err "bad magic" "the error names the bad magic"
expect 1 "check of a store with bad magic" "$COWVOL" store check bad.img
expect_in out "bad magic" "check names the bad magic"
[ "$sum1" = "$(md5sum <bad.img)" ] && ok "a failed open changes nothing" || notok "a failed open changes nothing"
cp f.img dup.img
# slot 1 of area 0 gets slot 0's origin chunk: a duplicate
dd if=f.img of=dup.img bs=1 skip=4096 seek=4112 count=8 conv=notrunc status=none
# slot 5 points at metadata chunk 258
printf '\002\001\000\000\000\000\000\000' | dd of=dup.img bs=1 seek=$((4096 + 5 * 16 + 8)) conv=notrunc status=none
expect 1 "check of a store with two faults" "$COWVOL" store check dup.img
expect_in out "area 0 slot 5: store chunk 258 is a metadata chunk" "check names the metadata entry and its place"
expect_in out "area 0 slot 1: origin chunk [0-9]+ has a second exception .*first is at area 0 slot 0" "check names the duplicate origin chunk and both places"
expect_in out "2 faults found" "check counts every fault"
head -c 100 f.img >trunc.img
expect 1 "check of a truncated store" "$COWVOL" store check trunc.img
expect_in out "too small" "check says truncated"
truncate -s 4096 zero.img
expect 1 "info of an all-zero store" "$COWVOL" store info zero.img
expect_in err "no store header" "the error says there is no header"

# someone's data is not overwritten by accident
head -c 64K /dev/urandom >data.img
sum=$(md5sum <data.img)
expect 1 "create refuses a file holding other data" "$COWVOL" store create data.img
expect_in err "holds data that is not a snapshot store" "the refusal says so"
[ "$sum" = "$(md5sum <data.img)" ] && ok "the data is untouched" || notok "the data is untouched"
expect 0 "create --force over other data" "$COWVOL" store create data.img --force

# one writer at a time
"$COWVOL" store create lk.img --size 1M >/dev/null
flock -x lk.img sleep 30 &
holder=$!
sleep 0.3
expect 1 "a second writer is refused" "$COWVOL" store create lk.img --force
expect_in err "another process has it open" "the refusal names the other writer"
expect 0 "readers are not blocked by a writer" "$COWVOL" store info lk.img
kill $holder 2>/dev/null; wait $holder 2>/dev/null || true # 143: killed
