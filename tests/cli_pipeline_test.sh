#!/bin/bash
# CLI behaviour of the pipeline commands: a tiny train -> impact -> analyze ->
# quantize (rtn, gptq, cherryq, qat) -> eval -> export run, and bad inputs
# (exit codes, messages, nothing half-written).
#   tests/cli_pipeline_test.sh /path/to/cherryq
set -u
CQ=$1
T=$(mktemp -d "${TMPDIR:-/tmp}/cqpipe.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

expect() { # expect CODE PATTERN -- cmd...
    local code=$1 pat=$2
    shift 3
    "$@" > "$T/out" 2>&1
    local rc=$?
    if [ "$rc" != "$code" ]; then
        echo "FAIL: '$*' exited $rc, expected $code"; sed 's/^/    /' "$T/out" | tail -20; fails=$((fails + 1)); return
    fi
    if [ -n "$pat" ] && ! grep -Eq -- "$pat" "$T/out"; then
        echo "FAIL: '$*': output does not match /$pat/"; sed 's/^/    /' "$T/out" | tail -20; fails=$((fails + 1)); return
    fi
    echo "ok: $*"
}
check() { if eval "$1"; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi; }

# a corpus with structure: counting in words
for i in $(seq 1 3000); do printf 'the number %d is followed by %d and then %d. ' $i $((i + 1)) $((i + 2)); done > "$T/c.txt"
M=$T/fp
expect 0 "" -- "$CQ" train --data "$T/c.txt" --vocab 300 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 \
    --seq 64 --steps 40 --batch 8 --lr 0.005 --warmup 4 --eval-every 0 --out "$M" --threads 2
# a config that describes fewer layers than the weights hold is refused, not run on the first layers
mkdir "$T/fewer" && cp "$M/model.safetensors" "$M/tokenizer.json" "$T/fewer/" \
    && sed -E 's/"num_hidden_layers":[[:space:]]*2/"num_hidden_layers": 1/' "$M/config.json" > "$T/fewer/config.json"
expect 1 "is of layer 1, but config.json has num_hidden_layers 1" -- "$CQ" eval --model "$T/fewer" --data "$T/c.txt" --seqlen 32
expect 0 "impact of 16 weights" -- "$CQ" impact --model "$M" --data "$T/c.txt" --out "$T/imp.st" --samples 8 --threads 2
# --protocol c4: GPTQ's calibration draw from JSONL records. With one record
# long enough (seqlen + 1 tokens) and one window, the window is that
# record's first seqlen tokens: the impact equals the stream protocol's
# single window of the same text (seqlen - 1 inputs and their targets)
long="the number 5 is followed by 6 and then 7. the number 6 is followed by 7 and then 8."
printf '%s' "$long" > "$T/long.txt"
{ for i in $(seq 1 30); do printf '{"text": "the"}\n{"text": "number %d"}\n' $i; done; printf '{"text": "%s"}\n' "$long"; } > "$T/rec.jsonl"
ntok=$("$CQ" eval --model "$M" --data "$T/long.txt" --seqlen 2 --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\),.*/\1/p')
if [ -z "$ntok" ] || [ "$ntok" -lt 8 ] || [ "$ntok" -gt 65 ]; then
    echo "FAIL: the long record has '$ntok' tokens, expected 8..65"; fails=$((fails + 1))
else
    expect 0 "calibration: 1 windows of $((ntok - 1)) tokens drawn from .*rec.jsonl as GPTQ's C4 protocol" -- \
        "$CQ" impact --model "$M" --data "$T/rec.jsonl" --protocol c4 --samples 1 --seqlen $((ntok - 1)) --out "$T/imp_c4.st"
    expect 0 "impact of 16 weights" -- "$CQ" impact --model "$M" --data "$T/long.txt" --samples 1 --seqlen $((ntok - 2)) \
        --out "$T/imp_one.st"
    check "cmp -s '$T/imp_c4.st' '$T/imp_one.st'"
    expect 0 "2 windows of $((ntok - 1)) tokens drawn from .*rec.jsonl as GPTQ's C4 protocol" -- "$CQ" quantize --model "$M" --data "$T/rec.jsonl" --protocol c4 \
        --out "$T/q_gptq_c4" --method gptq --bits 4 --group 32 --samples 2 --seqlen $((ntok - 1))
    check "grep -Eq '\"method\":[[:space:]]*\"gptq\"' '$T/q_gptq_c4/config.json'"
    expect 1 "rec.jsonl: cannot draw the C4 windows: no record has more than --seqlen tokens" -- \
        "$CQ" impact --model "$M" --data "$T/rec.jsonl" --protocol c4 --samples 1 --seqlen $ntok --out "$T/imp_none.st"
    check "[ ! -e '$T/imp_none.st' ]"
fi
expect 1 "c.txt: expected JSONL records" -- "$CQ" impact --model "$M" --data "$T/c.txt" --protocol c4 --out "$T/imp_x.st"
expect 2 "--protocol c4 draws from --data" -- "$CQ" quantize --model "$M" --self-generate 2 --protocol c4 --out "$T/q_x" --method gptq
expect 0 "impact score above magnitude score in [0-9]+ of 14" -- "$CQ" analyze --model "$M" --impact "$T/imp.st" \
    --out-dir "$T/an" --matrix layers.1.mlp.down_proj
check "[ -s '$T/an/hetero.csv' ] && [ \$(wc -l < '$T/an/hetero.csv') = 15 ]"
check "grep -q '</svg>' '$T/an/impact_scatter.svg' && grep -q '</svg>' '$T/an/hetero_scores.svg'"
expect 0 "rtn 3-bit g64: 3.2500 bits per weight" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/q_rtn" \
    --method rtn --bits 3 --group 64
expect 0 "gptq 4-bit g32" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/q_gptq" --method gptq --bits 4 \
    --group 32 --samples 8
expect 0 "\"method\": \"cherryq\".*\"qat_steps\": 6" -- "$CQ" quantize --model "$M" --data "$T/c.txt" \
    --out "$T/q_cq" --method cherryq --bits 3 --group 64 --impact "$T/imp.st" --steps 6 --batch 2 --json
check "[ ! -e '$T/q_cq.ckpt' ] && [ ! -e '$T/q_cq.tmp' ]"   # the finished run's checkpoints are gone
# the best-weights copy in a file instead of host memory: the same model, the file removed
expect 0 "\"method\": \"cherryq\".*\"qat_steps\": 6" -- "$CQ" quantize --model "$M" --data "$T/c.txt" \
    --out "$T/q_cqd" --method cherryq --bits 3 --group 64 --impact "$T/imp.st" --steps 6 --batch 2 --json --best-on-disk
check "cmp -s '$T/q_cq/model.safetensors' '$T/q_cqd/model.safetensors' && [ ! -e '$T/q_cqd.ckpt/qat_best.f32' ]"
expect 2 "--best-on-disk: only quantize" -- "$CQ" train --data "$T/c.txt" --out "$T/x" --best-on-disk
expect 0 "handed back" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/q_qat" --method qat --bits 4 \
    --group 128 --steps 4 --batch 2
expect 0 "capped at" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/q_cap" --method cherryq \
    --select magnitude --k 2 --bits 3 --group 64 --steps 100000 --batch 64 --max-epochs 0.5 --eval-every 1000
# one step is already more than --max-epochs: one step, said as such
expect 0 "one QAT step \(4096 tokens\) already passes over the [0-9]+ calibration tokens" -- "$CQ" quantize --model "$M" \
    --data "$T/c.txt" --out "$T/q_cap1" --method cherryq --select magnitude --k 2 --bits 3 --group 64 --steps 5 \
    --batch 64 --seqlen 64 --max-epochs 0.01 --json
check "grep -q '\"qat_steps\": 1' '$T/out'"
expect 0 "sequences of 32 tokens sampled from the model" -- "$CQ" quantize --model "$M" --self-generate 8 \
    --seqlen 32 --out "$T/q_sg" --method cherryq --select magnitude --bits 4 --group 32 --steps 2 --batch 2
expect 0 "perplexity" -- "$CQ" eval --model "$T/q_cq" --data "$T/c.txt" --seqlen 64 --max-windows 4
expect 0 "" -- "$CQ" generate --model "$T/q_rtn" --prompt "the number" --max-tokens 8
expect 0 "wrote" -- "$CQ" export --dequantize --model "$T/q_cq" --out "$T/q_cq_fp16"
check "! grep -q quantization_config '$T/q_cq_fp16/config.json' && [ -s '$T/q_cq_fp16/tokenizer.json' ]"
expect 0 "perplexity" -- "$CQ" eval --model "$T/q_cq_fp16" --data "$T/c.txt" --seqlen 64 --max-windows 4

# bad inputs
expect 2 "--method must be" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/x" --method awq
expect 2 "unsupported grid --bits 5" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/x" --method rtn --bits 5
expect 2 "unsupported grid --bits 3 --group 48" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/x" \
    --method rtn --group 48
expect 2 "at most one of --k, --k-rule and --frac" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/x" \
    --method cherryq --k 2 --frac 0.01
expect 2 "calibration data is required" -- "$CQ" quantize --model "$M" --out "$T/x" --method rtn
expect 2 "--dequantize is required" -- "$CQ" export --model "$T/q_cq" --out "$T/x"
# an impact file of another model
expect 0 "" -- "$CQ" train --data "$T/c.txt" --vocab 300 --dim 64 --layers 1 --heads 4 --kv-heads 2 --ffn 128 \
    --seq 64 --steps 2 --batch 2 --eval-every 0 --out "$T/other" --threads 2
expect 0 "" -- "$CQ" impact --model "$T/other" --data "$T/c.txt" --out "$T/imp_other.st" --samples 2
expect 1 "does not match the model" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/x" --method rtn \
    --select impact --impact "$T/imp_other.st"
expect 1 "does not match the model" -- "$CQ" analyze --model "$M" --impact "$T/imp_other.st" --out-dir "$T/an2"
check "[ ! -e '$T/x' ] && [ ! -e '$T/x.tmp' ]"
# corrupt quantized directories
cp -r "$T/q_rtn" "$T/bad1"
head -c 1000 "$T/q_rtn/model.safetensors" > "$T/bad1/model.safetensors"
expect 1 "cannot load the model" -- "$CQ" eval --model "$T/bad1" --data "$T/c.txt" --seqlen 64
cp -r "$T/q_rtn" "$T/bad2"
sed -i 's/"quant_method":[^,]*/"quant_method": "gptq"/' "$T/bad2/config.json"
expect 1 "not \"cherryq\"" -- "$CQ" eval --model "$T/bad2" --data "$T/c.txt" --seqlen 64
cp -r "$T/q_rtn" "$T/bad3"
sed -i 's/"bits":[^,]*/"bits": 4/' "$T/bad3/config.json"
expect 1 "expected \[" -- "$CQ" eval --model "$T/bad3" --data "$T/c.txt" --seqlen 64
expect 1 "" -- "$CQ" export --dequantize --model "$T/bad3" --out "$T/bad3_out"
check "[ ! -e '$T/bad3_out' ] && [ ! -e '$T/bad3_out.tmp' ]"
# a directory that is not a model is never replaced
mkdir -p "$T/notmodel" && echo keep > "$T/notmodel/keep.txt"
expect 1 "refusing to replace" -- "$CQ" quantize --model "$M" --data "$T/c.txt" --out "$T/notmodel" --method rtn
check "[ -f '$T/notmodel/keep.txt' ]"

echo "$fails failure(s)"
[ "$fails" = 0 ]
