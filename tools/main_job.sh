#!/bin/sh
# The README's main job, run from the repository root after a build in
# ./build: prepares the KJV corpus, trains the embedded default model into
# out/default when it is absent (reuses it when present), then quantizes it
# to 3 bits (group 128) with round-to-nearest, QAT and CherryQ and prints the
# headline comparison: test-split perplexity of FP32 vs RTN vs QAT vs CherryQ
# (GPTQ protocol, windows of the model's context). The full table with GPTQ,
# the selection ablations and other grids is tools/reproduce.sh.
set -eu
cd "$(dirname "$0")/.."
cq=build/tools/cherryq
[ -x "$cq" ] || { echo "main_job.sh: $cq not found; run: meson setup build && ninja -C build" >&2; exit 1; }
model=out/default
work=out/main
tools/default_model.sh --cherryq "$cq" --out "$model"
mkdir -p "$work"
ppl() { "$cq" eval --model "$1" --data data/kjv_test.txt --seqlen 256 --json 2>/dev/null |
        sed -n 's/.*"ppl": *\([0-9.]*\).*/\1/p'; }
q() { # method out [flags]
    m=$1; o=$2; shift 2
    echo "== quantize --method $m (3 bits, group 128)" >&2
    # an output of a cherryq from before the .cherryq marker is not replaced
    # by a newer one: this script's own output, so it goes first
    if [ -d "$o" ] && [ ! -f "$o/.cherryq" ]; then rm -rf "$o"; fi
    "$cq" quantize --model "$model" --data data/kjv_train.txt --out "$o" --method "$m" --bits 3 --group 128 \
        --seqlen 256 --samples 128 --steps 40 --batch 8 --eval-every 10 --eval-tokens 8192 "$@" >&2
    rm -rf "$o.ckpt"
}
[ -f "$work/impact.safetensors" ] ||
    "$cq" impact --model "$model" --data data/kjv_train.txt --out "$work/impact.safetensors" --samples 128 --seqlen 256 >&2
q rtn "$work/rtn"
q qat "$work/qat"
q cherryq "$work/cherryq" --impact "$work/impact.safetensors"
echo
echo "3-bit g128 on the KJV test split (perplexity, GPTQ protocol, windows of 256 tokens):"
printf '  %-8s %8s\n' FP32 "$(ppl "$model")" RTN "$(ppl "$work/rtn")" QAT "$(ppl "$work/qat")" CherryQ "$(ppl "$work/cherryq")"
echo "(full comparison: tools/reproduce.sh and docs/results.md)"
