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
grep -q "activation checkpointing off, optimizer states resident" "$T/out" || fail "the memory options are not shown"

# 1a. a config whose RoPE scaling cherryq does not apply: refused, with that
# reason (not "GGUF is not read")
sed 's/"rope_theta"/"rope_scaling": {"rope_type": "yarn", "factor": 4.0}, "rope_theta"/' "$CFG7B" > "$T/yarn.json"
if "$CQ" plan --config "$T/yarn.json" > "$T/out" 2>&1; then fail "a yarn rope_scaling config was planned"
elif ! grep -q 'rope_scaling type "yarn" is not supported' "$T/out" || grep -q "GGUF" "$T/out"; then
    fail "the yarn refusal does not say why"
else echo "ok: yarn rope_scaling refused"; fi

# 1b. QAT of 7B on one 80 GB GPU (docs/cuda.md design (b)): with checkpointing,
# offloaded AdamW states, bf16 GEMMs and micro-batch 4 x 2048 the device part
# is under 80 GB (and 74.5 GiB); without them it is far above
"$CQ" plan --config "$CFG7B" --backend cuda --command quantize > "$T/out" 2>&1 || fail "plan 7B cuda exited $?"
naive=$(awk '$1 == "quantize" && $2 == "qat" { print $7 }' "$T/out")
"$CQ" plan --config "$CFG7B" --backend cuda --command quantize --batch 4 --checkpoint-activations \
    --offload-optimizer --compute-dtype bf16 > "$T/out" 2>&1 || fail "plan 7B cuda with the options exited $?"
dev=$(awk '$1 == "quantize" && $2 == "qat" { print $7 }' "$T/out")
host=$(awk '$1 == "quantize" && $2 == "qat" { print $6 }' "$T/out")
gb=$(sed -n 's/^quantize qat: .*(\([0-9.]*\) GB).*/\1/p' "$T/out")
if [ -z "$dev" ] || [ -z "$naive" ] || [ -z "$gb" ]; then fail "7B QAT plan rows missing"
elif ! awk -v d="$dev" -v g="$gb" -v n="$naive" 'BEGIN { exit !(d < 74.5 && g < 80 && n > 100) }'; then
    fail "7B QAT on cuda: $dev GiB ($gb GB) device with the options, $naive GiB without"
else echo "ok: 7B QAT on cuda: $naive GiB device naive, $dev GiB ($gb GB) + $host GiB host with the options"; fi
grep -q "activation checkpointing on, optimizer states in host memory, GEMM inputs bf16" "$T/out" \
    || fail "the options are not echoed"
# --best-on-disk: QAT's best-weights copy (4P = 25.1 GiB for 7B) leaves host memory
"$CQ" plan --config "$CFG7B" --backend cuda --command quantize --batch 4 --checkpoint-activations \
    --offload-optimizer --compute-dtype bf16 --best-on-disk > "$T/out" 2>&1 || fail "plan --best-on-disk exited $?"
host2=$(awk '$1 == "quantize" && $2 == "qat" { print $6 }' "$T/out")
if awk -v a="$host" -v b="$host2" 'BEGIN { d = a - b; exit !(d > 24.5 && d < 25.7) }'; then
    echo "ok: --best-on-disk: host $host -> $host2 GiB"
else fail "--best-on-disk: host $host -> $host2 GiB (expected 25.1 GiB less)"; fi
"$CQ" plan --config "$CFG7B" --compute-dtype f8 > "$T/out" 2>&1
[ $? = 2 ] && grep -q "expected f32, bf16 or f16" "$T/out" && echo "ok: bad --compute-dtype is a usage error" \
    || fail "--compute-dtype f8"

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
# the refusal follows the memory options: at 200 MiB the plain run (~0.30 GiB) is
# refused, the checkpointed one (~0.14 GiB) runs, with offload and bf16 too
big="--data $T/c.txt --dim 32 --layers 4 --heads 2 --kv-heads 2 --ffn 64 --seq 256 --batch 32 --vocab 300 --steps 1"
CQ_MEM_LIMIT=200M "$CQ" train $big --out "$T/m2" > "$T/out" 2>&1
rc=$?
[ "$rc" = 1 ] && grep -q "(see cherryq plan)" "$T/out" && echo "ok: plain train refused at 200 MiB" \
    || fail "plain train at 200 MiB: exit $rc"
CQ_MEM_LIMIT=200M "$CQ" train $big --out "$T/m2" --checkpoint-activations --offload-optimizer --compute-dtype bf16 \
    > "$T/out" 2>&1 && [ -e "$T/m2/model.safetensors" ] && echo "ok: checkpointed bf16 offloaded train fits 200 MiB" \
    || fail "checkpointed train at 200 MiB"
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
