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
expect 0 "tokens generated" -- "$CQ" generate --model "$T/m" --prompt "In the" --max-tokens 8 --threads 1
expect 0 "tokens generated" -- "$CQ" generate --model "$T/m" --prompt "In the" --max-tokens 8 --temperature 0.8 --seed 2
expect 1 "no tokenizer found for $T/m2: expected $T/m2/tokenizer.json \(or pass --tokenizer\)" -- \
    bash -c "cp -r '$T/m' '$T/m2' && rm '$T/m2/tokenizer.json' && exec '$CQ' eval --model '$T/m2' --data '$T/corpus.txt'"
expect 0 "perplexity" -- "$CQ" eval --model "$T/m2" --data "$T/corpus.txt" --tokenizer "$T/m/tokenizer.json" --seqlen 16

if [ "$fails" != 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all CLI checks passed"
