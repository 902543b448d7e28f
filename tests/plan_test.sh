#!/bin/bash
# cherryq plan and the up-front memory refusal:
#   tests/plan_test.sh /path/to/cherryq /path/to/llama2-7b.json
set -u
CQ=$1
CFG7B=$2
T=$(mktemp -d "${TMPDIR:-/tmp}/cqplan.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; sed 's/^/    /' "$T/out" | head -30; fails=$((fails + 1)); }

# 1. the 7B plan, from the config alone: train needs more than 100 GiB
"$CQ" plan --config "$CFG7B" > "$T/out" 2>&1 || fail "plan --config 7B exited $?"
train=$(awk '$1 == "train" { print $5 }' "$T/out")
if [ -z "$train" ] || ! awk -v x="$train" 'BEGIN { exit !(x > 100) }'; then fail "7B train needs '$train' GiB, expected > 100"
else echo "ok: 7B train needs $train GiB"; fi
grep -q "6.738B parameters" "$T/out" || fail "7B parameter count"
grep -q "NOT implemented" "$T/out" || fail "the offloading plan is not said to be missing"

# 2. a command refuses up front under a tiny CQ_MEM_LIMIT (exit 1, the message)
printf 'in the beginning god created the heaven and the earth. ' > "$T/c.txt"
for i in $(seq 1 200); do printf 'and the earth was without form, and void. ' >> "$T/c.txt"; done
CQ_MEM_LIMIT=1M "$CQ" train --data "$T/c.txt" --dim 32 --layers 1 --heads 2 --kv-heads 2 --ffn 64 --seq 32 --vocab 300 --steps 1 \
    --out "$T/m" > "$T/out" 2>&1
rc=$?
if [ "$rc" != 1 ]; then fail "train under CQ_MEM_LIMIT=1M exited $rc, expected 1"
elif ! grep -Eq "needs ~[0-9.]+ GiB on .*only [0-9.]+ GiB available \(see cherryq plan\)" "$T/out"; then fail "refusal message"
else echo "ok: train refused under CQ_MEM_LIMIT=1M"; fi
[ -e "$T/m/model.safetensors" ] && fail "a model was written despite the refusal"
# without the cap it runs; --force overrides the refusal
"$CQ" train --data "$T/c.txt" --dim 32 --layers 1 --heads 2 --kv-heads 2 --ffn 64 --seq 32 --vocab 300 --steps 1 --out "$T/m" \
    > "$T/out" 2>&1 || fail "train without a cap exited $?"
CQ_MEM_LIMIT=1M "$CQ" eval --model "$T/m" --data "$T/c.txt" --seqlen 32 > "$T/out" 2>&1
rc=$?
if [ "$rc" != 1 ] || ! grep -q "(see cherryq plan)" "$T/out"; then fail "eval under CQ_MEM_LIMIT=1M: exit $rc"
else echo "ok: eval refused under CQ_MEM_LIMIT=1M"; fi
# --force goes past the plan (the loader's own check may still refuse)
CQ_MEM_LIMIT=1M "$CQ" eval --model "$T/m" --data "$T/c.txt" --seqlen 32 --force > "$T/out" 2>&1
grep -q "going on anyway" "$T/out" && echo "ok: eval --force" || fail "eval --force"
"$CQ" plan --model "$T/m" --command eval > "$T/out" 2>&1 && grep -q "^eval " "$T/out" && echo "ok: plan --model" \
    || fail "plan --model"
exit $((fails > 0))
