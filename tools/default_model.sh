#!/bin/sh
# The embedded default model: prepares the KJV corpus (tools/prepare_corpus.sh),
# trains a byte-level BPE tokenizer and the model of models/default.json into
# out/default if it is not there yet (reuses it when present; resumes an
# interrupted run from out/default/checkpoint), then prints the validation
# and test perplexity (GPTQ protocol, windows of 256 tokens).
#
#   tools/default_model.sh [--cherryq PATH] [--out DIR] [--threads N]
#
# cherryq is looked for in $CHERRYQ, build/tools/cherryq, then on PATH.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=out/default
threads=0
cq=${CHERRYQ:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --cherryq) cq=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "default_model.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
if [ -z "$cq" ]; then
    if [ -x build/tools/cherryq ]; then cq=build/tools/cherryq
    elif command -v cherryq >/dev/null 2>&1; then cq=cherryq
    else echo "default_model.sh: cherryq not found; build it first (meson setup build && ninja -C build)" >&2; exit 1
    fi
fi

tools/prepare_corpus.sh data

if [ -f "$out/model.safetensors" ] && [ -f "$out/config.json" ] && [ -f "$out/tokenizer.json" ]; then
    echo "default model: reusing $out" >&2
else
    resume=
    [ -f "$out/checkpoint/trainer.ckpt" ] && resume=--resume
    start=$(date +%s)
    "$cq" train --config models/default.json --data data/kjv_train.txt --val data/kjv_valid.txt \
        --out "$out" --threads "$threads" $resume
    echo "default model: trained in $(( $(date +%s) - start )) s (load average now: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
fi
for split in valid test; do
    res=$(CQ_NO_TTY=1 "$cq" eval --model "$out" --data "data/kjv_$split.txt" --seqlen 256 --threads "$threads" --json)
    echo "$res" | sed -n "s/^{\"ppl\": \([0-9.]*\), .*\"tokens\": \([0-9]*\), .*\"windows\": \([0-9]*\), .*/$split perplexity \1 ($split split: \2 tokens, \3 windows of 256, GPTQ protocol)/p"
done
