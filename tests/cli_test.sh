#!/bin/bash
# CLI behaviour: exit codes and messages of cherryq on bad command lines and
# bad inputs, and a tiny train -> eval -> generate -> resume round trip.
#   tests/cli_test.sh /path/to/cherryq
set -u
CQ=$1
T=$(mktemp -d "${TMPDIR:-/tmp}/cqcli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

# expect CODE PATTERN -- cmd...: runs cmd, checks the exit status and that
# stdout+stderr match the extended regex PATTERN (empty: no check)
expect() {
    local code=$1 pat=$2
    shift 3
    "$@" > "$T/out" 2>&1
    local rc=$?
    if [ "$rc" != "$code" ]; then
        echo "FAIL: '$*' exited $rc, expected $code"; sed 's/^/    /' "$T/out" | head -20; fails=$((fails + 1)); return
    fi
    if [ -n "$pat" ] && ! grep -Eq -- "$pat" "$T/out"; then
        echo "FAIL: '$*': output does not match /$pat/"; sed 's/^/    /' "$T/out" | head -20; fails=$((fails + 1)); return
    fi
    echo "ok: $*"
}

expect 2 "usage: cherryq <command>" -- "$CQ"
expect 2 "unknown command 'frobnicate'" -- "$CQ" frobnicate
expect 0 "train +train a LLaMA" -- "$CQ" --help
expect 2 "unknown option '--bogus'.*" -- "$CQ" train --bogus
expect 2 "usage: cherryq train" -- "$CQ" train --bogus
expect 2 "--lr: expected a positive number, got 'abc'" -- "$CQ" train --data x --lr abc
expect 2 "--steps: expected a positive integer, got '1.5'" -- "$CQ" train --data x --steps 1.5
expect 2 "--seqlen needs a value" -- "$CQ" eval --seqlen
expect 2 "--data is required" -- "$CQ" train
expect 2 "unexpected argument 'stray'" -- "$CQ" eval stray
expect 0 "--seqlen N .*default: 2048" -- "$CQ" eval --help
expect 0 "--temperature X .*default: 0" -- "$CQ" generate --help
expect 0 "--lr X .*default:" -- "$CQ" train --help
expect 0 "cpu: 1 device" -- "$CQ" devices
expect 2 "--backend: expected cpu, vulkan, cuda or auto" -- "$CQ" train --data "$T/none.txt" --backend tpu --vocab 300

# missing and empty inputs
expect 1 "$T/missing.txt" -- "$CQ" train --data "$T/missing.txt"
: > "$T/empty.txt"
expect 1 "$T/empty.txt: the corpus is empty" -- "$CQ" train --data "$T/empty.txt"
printf '  \n\n ' > "$T/blank.txt"
expect 1 "the corpus is empty" -- "$CQ" train --data "$T/blank.txt"
printf '{"text": "a"}\n{"text": oops}\n' > "$T/bad.jsonl"
expect 1 "bad.jsonl:2: not a JSON object" -- "$CQ" train --data "$T/bad.jsonl"
printf '{"text": "a"}\n{"txt": "b"}\n' > "$T/nofield.jsonl"
expect 1 "nofield.jsonl:2: the record has no string field \"text\"" -- "$CQ" train --data "$T/nofield.jsonl"
expect 1 "$T/nomodel: no such file" -- "$CQ" eval --model "$T/nomodel" --data "$T/empty.txt"
echo '{"dim": 64, "bogus": 1}' > "$T/badcfg.json"
expect 1 "unknown member \"bogus\"" -- "$CQ" train --data "$T/empty.txt" --config "$T/badcfg.json"

# a tiny corpus and model
for i in $(seq 1 300); do
    echo "In the beginning God created the heaven and the earth. And the earth was without form, and void $((i % 7))."
done > "$T/corpus.txt"
TINY=(--vocab 300 --dim 32 --layers 1 --heads 2 --kv-heads 1 --ffn 64 --seq 32 --batch 4 --warmup 2 --lr 0.01 --threads 1)
expect 0 "validation loss" -- "$CQ" train --data "$T/corpus.txt" "${TINY[@]}" --steps 4 --save-every 2 --eval-every 2 --out "$T/m"
for f in config.json model.safetensors tokenizer.json checkpoint/trainer.ckpt; do
    [ -s "$T/m/$f" ] || { echo "FAIL: train did not write $T/m/$f"; fails=$((fails + 1)); }
done
expect 0 "resumed from .* at step 4" -- "$CQ" train --data "$T/corpus.txt" "${TINY[@]}" --steps 6 --out "$T/m" --resume
expect 1 "no checkpoint to resume from" -- "$CQ" train --data "$T/corpus.txt" "${TINY[@]}" --steps 6 --out "$T/fresh" --resume --tokenizer "$T/m/tokenizer.json"
expect 0 "perplexity [0-9.]+" -- "$CQ" eval --model "$T/m" --data "$T/corpus.txt" --seqlen 16
expect 0 "capped at the model's context of 32" -- "$CQ" eval --model "$T/m" --data "$T/corpus.txt"
expect 0 '^\{"ppl": [0-9.]+, .*"protocol": "gptq"' -- "$CQ" eval --model "$T/m" --data "$T/corpus.txt" --seqlen 16 --json
# GPTQ's C4 protocol: random windows from the records of a JSONL file. One
# record is long, the others one token: with seqlen = its length - 1 every
# window is its first seqlen tokens (randint(0, 0) = 0), so the perplexity
# is that of the same text through the stream protocol, one window.
long="And the earth was without form, and void"
printf '%s' "$long" > "$T/long.txt"
{ for i in 1 2 3 4 5 6; do printf '{"text": "a"}\n\n'; done; printf '{"text": "%s"}\n{"text": "b"}\n' "$long"; } > "$T/c4.jsonl"
ntok=$("$CQ" eval --model "$T/m" --data "$T/long.txt" --seqlen 2 --json 2>/dev/null | sed -n 's/.*"tokens": \([0-9]*\),.*/\1/p')
if [ -z "$ntok" ] || [ "$ntok" -lt 8 ] || [ "$ntok" -gt 33 ]; then
    echo "FAIL: the long record has '$ntok' tokens, expected 8..33"; fails=$((fails + 1))
else
    sl=$((ntok - 1))
    expect 0 '"protocol": "gptq-c4"' -- "$CQ" eval --model "$T/m" --data "$T/c4.jsonl" --protocol c4 --seqlen $sl --max-windows 3 --json
    p_c4=$(sed -n 's/^{"ppl": \([0-9.]*\),.*"windows": 3,.*/\1/p' "$T/out")
    expect 0 '"windows": 1,' -- "$CQ" eval --model "$T/m" --data "$T/long.txt" --seqlen $sl --json
    p_st=$(sed -n 's/^{"ppl": \([0-9.]*\),.*/\1/p' "$T/out")
    if [ -z "$p_c4" ] || [ -z "$p_st" ] || ! awk -v a="$p_c4" -v b="$p_st" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * b) }'; then
        echo "FAIL: C4 windows of the one long record: ppl '$p_c4', the same text as a stream: '$p_st'"; fails=$((fails + 1))
    else
        echo "ok: C4 protocol ppl $p_c4 = stream ppl $p_st"
    fi
    expect 0 "8 records; 2 windows of $sl tokens drawn as GPTQ's C4 protocol \(seed 5; " -- \
        "$CQ" eval --model "$T/m" --data "$T/c4.jsonl" --protocol c4 --seqlen $sl --max-windows 2 --seed 5
    expect 1 "c4.jsonl: cannot draw the C4 windows: no record has more than --seqlen tokens" -- \
        "$CQ" eval --model "$T/m" --data "$T/c4.jsonl" --protocol c4 --seqlen $ntok
fi
# a tokenizer whose template starts with <s>: eval tokenizes as a Hugging
# Face tokenizer call does, so the text gets it first (GPTQ's WikiText-2
# windows start with LLaMA's BOS)
python3 -c 'import json, sys; t = json.load(open(sys.argv[1])); t["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {}}; json.dump(t, open(sys.argv[2], "w"))' "$T/m/tokenizer.json" "$T/tpl.json"
[ -n "${ntok:-}" ] && expect 0 "\"tokens\": $((ntok + 1))," -- "$CQ" eval --model "$T/m" --tokenizer "$T/tpl.json" --data "$T/long.txt" --seqlen 2 --json
expect 1 "corpus.txt: expected JSONL records" -- "$CQ" eval --model "$T/m" --data "$T/corpus.txt" --protocol c4 --seqlen 16
expect 2 "--protocol must be stream or c4 \(got 'wiki'\)" -- "$CQ" eval --model "$T/m" --data "$T/corpus.txt" --protocol wiki
expect 2 "--seed is for --protocol c4" -- "$CQ" eval --model "$T/m" --data "$T/corpus.txt" --seed 1
expect 0 "tokens generated" -- "$CQ" generate --model "$T/m" --prompt "In the" --max-tokens 8 --threads 1
expect 0 "tokens generated" -- "$CQ" generate --model "$T/m" --prompt "In the" --max-tokens 8 --temperature 0.8 --seed 2
expect 1 "no tokenizer found for $T/m2: expected $T/m2/tokenizer.json \(or pass --tokenizer\)" -- \
    bash -c "cp -r '$T/m' '$T/m2' && rm '$T/m2/tokenizer.json' && exec '$CQ' eval --model '$T/m2' --data '$T/corpus.txt'"
expect 0 "perplexity" -- "$CQ" eval --model "$T/m2" --data "$T/corpus.txt" --tokenizer "$T/m/tokenizer.json" --seqlen 16

# hostile model directories: a FIFO for a file fails at once, config values
# that overflow a 32-bit float or an id past the vocabulary are refused
mkdir "$T/fifo" && cp "$T/m/model.safetensors" "$T/m/tokenizer.json" "$T/fifo/" && mkfifo "$T/fifo/config.json"
expect 1 "fifo/config.json: not a regular file" -- timeout 20 "$CQ" eval --model "$T/fifo" --data "$T/corpus.txt"
cp -r "$T/m" "$T/eps" && sed -i -E 's/"rms_norm_eps":[[:space:]]*[0-9.eE+-]+/"rms_norm_eps": 1e300/' "$T/eps/config.json"
expect 1 "rms_norm_eps.*finite as a 32-bit float" -- "$CQ" eval --model "$T/eps" --data "$T/corpus.txt" --seqlen 16
cp -r "$T/m" "$T/eos" && sed -i -E 's/"eos_token_id":[[:space:]]*[0-9]+/"eos_token_id": 4294967340/' "$T/eos/config.json"
expect 1 "must be below vocab_size" -- "$CQ" generate --model "$T/eos" --prompt "In the" --max-tokens 4
expect 2 "--max-tokens 9223372036854775807: at most" -- "$CQ" generate --model "$T/m" --prompt "In the" --max-tokens 9223372036854775807

# output directories: only what cherryq wrote is ever replaced or removed
expect 0 "4.5000 bits per weight" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/q" --method rtn --bits 4 --group 32 --seqlen 16 --threads 1
[ -f "$T/q/.cherryq" ] || { echo "FAIL: quantize left no .cherryq marker in $T/q"; fails=$((fails + 1)); }
expect 1 "cannot be written there" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out /proc/cq_no_such_dir --method rtn --bits 4 --group 32 --seqlen 16
expect 1 "would replace or clean up the input model" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/m" --method rtn --bits 4 --group 32 --seqlen 16
expect 1 "would replace or clean up the input model" -- "$CQ" export --dequantize --model "$T/q" --out "$T/q/"
expect 1 "was not written by cherryq" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/m2" --method rtn --bits 4 --group 32 --seqlen 16
mkdir "$T/victim" && echo keep > "$T/victim/a.txt" && ln -s "$T/victim" "$T/x.tmp"
expect 1 "x.tmp: exists and is not a leftover of cherryq" -- "$CQ" export --dequantize --model "$T/q" --out "$T/x"
[ -f "$T/victim/a.txt" ] || { echo "FAIL: a linked <out>.tmp lost its target's files"; fails=$((fails + 1)); }
rm "$T/x.tmp" && mkdir "$T/x.tmp" && echo keep > "$T/x.tmp/notes.txt"
expect 1 "x.tmp: exists and is not a leftover of cherryq" -- "$CQ" export --dequantize --model "$T/q" --out "$T/x"
[ -f "$T/x.tmp/notes.txt" ] || { echo "FAIL: a user's <out>.tmp lost its files"; fails=$((fails + 1)); }
rm -r "$T/x.tmp"
expect 0 "wrote $T/x" -- "$CQ" export --dequantize --model "$T/q" --out "$T/x"
echo mine > "$T/x/README.md" && mkdir "$T/x/notes" && echo n > "$T/x/notes/n.txt"
expect 0 "wrote $T/x" -- "$CQ" export --dequantize --model "$T/q" --out "$T/x" --dtype f32
[ -f "$T/x/README.md" ] && [ -f "$T/x/notes/n.txt" ] || { echo "FAIL: replacing $T/x lost the files the user added"; fails=$((fails + 1)); }
[ -e "$T/x.tmp" ] || [ -e "$T/x.tmp.old" ] && { echo "FAIL: $T/x.tmp or $T/x.tmp.old left behind"; fails=$((fails + 1)); }
expect 0 "perplexity" -- "$CQ" eval --model "$T/x" --data "$T/corpus.txt" --seqlen 16
# checkpoints: never in the output, never another job's, gone once the model is written
expect 2 "--ckpt .*must not be --out" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/q6" --ckpt "$T/q6" --method qat --bits 4 --group 32 --seqlen 16
cp "$T/m/checkpoint/trainer.ckpt" "$T/train.ckpt.saved"
expect 1 "not this command's QAT checkpoint" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/q6" --ckpt "$T/m/checkpoint" --method qat --bits 4 --group 32 --seqlen 16 --steps 2 --batch 2
cmp -s "$T/train.ckpt.saved" "$T/m/checkpoint/trainer.ckpt" || { echo "FAIL: quantize touched train's checkpoint"; fails=$((fails + 1)); }
expect 0 "bits per weight" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/q7" --method rtn --select impact --bits 4 --group 32 --seqlen 16 --samples 4 --threads 1
[ -e "$T/q7.ckpt" ] && { echo "FAIL: rtn --select impact left $T/q7.ckpt"; fails=$((fails + 1)); }
expect 0 "bits per weight" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/q8/" --method qat --bits 4 --group 32 --seqlen 16 --steps 2 --batch 2 --threads 1
[ -f "$T/q8/.cherryq" ] && [ ! -e "$T/q8/.ckpt" ] && [ ! -e "$T/q8.ckpt" ] || { echo "FAIL: --out DIR/ put checkpoints in the output or left them"; fails=$((fails + 1)); }
expect 2 "--ckpt .*must not be --out" -- "$CQ" quantize --model "$T/m" --data "$T/corpus.txt" --out "$T/./q8" --ckpt "$T/q8/../q8.tmp" --method qat --bits 4 --group 32 --seqlen 16
# an interrupted replacement left the user's files in <out>.tmp.old: refused, kept
mkdir "$T/y.tmp.old" && touch "$T/y.tmp.old/.cherryq" && echo mine > "$T/y.tmp.old/notes.txt"
expect 1 "interrupted replacement" -- "$CQ" export --dequantize --model "$T/q" --out "$T/y"
[ -f "$T/y.tmp.old/notes.txt" ] || { echo "FAIL: the leftover <out>.tmp.old lost the user's file"; fails=$((fails + 1)); }
# a finished output that happens to be named <out>.tmp is not a leftover; a killed write's is
expect 0 "wrote $T/w.tmp" -- "$CQ" export --dequantize --model "$T/q" --out "$T/w.tmp"
expect 1 "w.tmp: exists and is not a leftover" -- "$CQ" export --dequantize --model "$T/q" --out "$T/w"
[ -f "$T/w.tmp/model.safetensors" ] || { echo "FAIL: a finished $T/w.tmp was removed"; fails=$((fails + 1)); }
mkdir "$T/v.tmp" && touch "$T/v.tmp/.cherryq-partial" "$T/v.tmp/model.safetensors.tmp.99999"
expect 0 "wrote $T/v" -- "$CQ" export --dequantize --model "$T/q" --out "$T/v"
[ -e "$T/v.tmp" ] && { echo "FAIL: a killed write's $T/v.tmp was left"; fails=$((fails + 1)); }
# the input as <out>.tmp of the output; a link, '.', an unmarked model directory as --out: refused
cp -r "$T/q" "$T/z.tmp"
expect 1 "would replace or clean up the input model" -- "$CQ" export --dequantize --model "$T/z.tmp" --out "$T/z"
ln -s "$T/x" "$T/xlink"
expect 1 "is a symbolic link" -- "$CQ" export --dequantize --model "$T/q" --out "$T/xlink"
expect 1 "not a usable output directory" -- "$CQ" export --dequantize --model "$T/q" --out "$T/x/."
mkdir "$T/hf" && cp "$T/q/config.json" "$T/q/model.safetensors" "$T/hf/"
expect 1 "was not written by cherryq" -- "$CQ" export --dequantize --model "$T/q" --out "$T/hf"
# two writers of one directory take turns: the result is one of them, whole
"$CQ" export --dequantize --model "$T/q" --out "$T/cc" --dtype f16 > /dev/null 2>&1 &
"$CQ" export --dequantize --model "$T/q" --out "$T/cc" --dtype f32 > /dev/null 2>&1
wait
if grep -q '"torch_dtype":[[:space:]]*"float16"' "$T/cc/config.json"; then want=F16; else want=F32; fi
head -c 2048 "$T/cc/model.safetensors" | grep -q "\"$want\"" && [ ! -e "$T/cc.tmp" ] && [ ! -e "$T/cc.tmp.old" ] \
    || { echo "FAIL: two concurrent exports left a mixed or partial $T/cc"; fails=$((fails + 1)); }

if [ "$fails" != 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all CLI checks passed"
