#!/bin/sh
# Reproduces the paper's comparison (CHERRYQ.md section 8) on the embedded
# default model and records it in docs/results.md:
#
#   FP32, RTN, RTN + cherries, GPTQ, QAT, and CherryQ with impact, magnitude
#   and loss-aware cherry selection, at 3-bit g64, 3-bit g128 and 4-bit g128;
#   perplexity on the test split (GPTQ protocol, windows of the model's
#   context), bits per weight, and the run time of every quantization; plus
#   the heterogeneity scores and figures of the default model.
#
#   tools/reproduce.sh [--cherryq PATH] [--model DIR] [--steps N] [--out DIR]
#                      [--threads N] [--no-docs]
#
# The default model is trained by tools/default_model.sh when out/default is
# missing. Calibration data: data/kjv_train.txt (impact: 128 windows; GPTQ:
# the same 128 windows; QAT: --steps steps of 8 windows, keep-best on the last
# 10% of the calibration tokens, interleaved chunks). All windows are the model's context (256).
# Everything is deterministic (seed 0). Generated tables replace the part of
# docs/results.md between the GENERATED markers (--no-docs: only
# out/repro/results_table.md is written).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cq=${CHERRYQ:-}
model=out/default
work=out/repro
steps=40
threads=0
docs=1
while [ $# -gt 0 ]; do
    case "$1" in
        --cherryq) cq=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --out) work=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --no-docs) docs=0; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "reproduce.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
if [ -z "$cq" ]; then
    if [ -x build/tools/cherryq ]; then cq=build/tools/cherryq
    elif command -v cherryq >/dev/null 2>&1; then cq=cherryq
    else echo "reproduce.sh: cherryq not found; build it first (meson setup build && ninja -C build)" >&2; exit 1
    fi
fi
if [ ! -f "$model/model.safetensors" ]; then
    tools/default_model.sh --cherryq "$cq" --out "$model" --threads "$threads"
fi
calib=data/kjv_train.txt
test=data/kjv_test.txt
mkdir -p "$work"
t_all=$(date +%s)
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
field() { sed -n "s/.*\"$1\": \"\{0,1\}\([^,\"}]*\).*/\1/p"; }
cfgval() { tr -d '\n' < "$model/config.json" | sed -n "s/.*\"$1\":[[:space:]]*\([0-9]*\).*/\1/p"; }
seqlen=$(cfgval max_position_embeddings)
[ -n "$seqlen" ] || seqlen=256
common="--threads $threads --seqlen $seqlen"

rows=$work/rows.tsv
: > "$rows"
evalppl() { "$cq" eval --model "$1" --data "$test" $common --json 2>/dev/null | field ppl; }

echo "== FP32" >&2
ppl=$(evalppl "$model")
printf 'FP32\t-\t-\t32\t%s\t-\n' "$ppl" >> "$rows"

echo "== impact (128 windows of $seqlen tokens)" >&2
t0=$(now)
"$cq" impact --model "$model" --data "$calib" --out "$work/impact.safetensors" --samples 128 $common >&2
t_imp=$(secs "$t0" "$(now)")

echo "== analyze" >&2
figs=docs/figures
[ "$docs" = 1 ] || figs=$work/figures
mkdir -p "$figs"
"$cq" analyze --model "$model" --impact "$work/impact.safetensors" --out-dir "$figs" > "$work/analyze.txt"
cat "$work/analyze.txt" >&2

run() { # label method bits group [extra flags...]
    label=$1; meth=$2; b=$3; g=$4; shift 4
    dir=$work/q_${meth}_$(echo "$label" | tr -c 'a-zA-Z0-9\n' '_')_${b}b_g$g
    echo "== $label $b-bit g$g" >&2
    # an output of a cherryq from before the .cherryq marker is not replaced
    # by a newer one: this script's own scratch output, so it goes first
    [ -d "$dir" ] && [ ! -f "$dir/.cherryq" ] && rm -rf "$dir"
    t0=$(now)
    js=$("$cq" quantize --model "$model" --data "$calib" --out "$dir" --method "$meth" --bits "$b" --group "$g" \
        --samples 128 --steps "$steps" --batch 8 --eval-every 10 --eval-tokens 8192 $common --json "$@")
    t=$(secs "$t0" "$(now)")
    bpw=$(echo "$js" | field bpw)
    kept=$(echo "$js" | field qat_kept_start)
    ppl=$(evalppl "$dir")
    note=-
    [ "$kept" = true ] && note="QAT never beat its RTN start (start kept)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$b" "$g" "$bpw" "$ppl" "$t|$note" >> "$rows"
    rm -rf "$dir.ckpt"
}

for grid in "3 64" "3 128" "4 128"; do
    set -- $grid
    b=$1; g=$2
    run "RTN" rtn "$b" "$g"
    run "RTN + cherries (impact)" rtn "$b" "$g" --select impact --impact "$work/impact.safetensors"
    run "GPTQ" gptq "$b" "$g"
    run "QAT" qat "$b" "$g"
    run "CherryQ (impact)" cherryq "$b" "$g" --select impact --impact "$work/impact.safetensors"
    run "CherryQ (magnitude)" cherryq "$b" "$g" --select magnitude
    run "CherryQ (loss-aware)" cherryq "$b" "$g" --select loss-aware --impact "$work/impact.safetensors"
done
# control: the same training at 8 bits (quantization nearly lossless) shows
# how much of QAT's gain is plain continued training of the FP model
run "control: QAT at 8 bits" qat 8 128
t_total=$(( $(date +%s) - t_all ))

# ---------------------------------------------------------------- tables
tab=$work/results_table.md
{
    echo "Model: \`$model\` (dim $(cfgval hidden_size), $(cfgval num_hidden_layers) layers, ffn $(cfgval intermediate_size), vocab $(cfgval vocab_size)); test split \`$test\`, GPTQ protocol, windows of $seqlen tokens; FP32 test PPL in the first row."
    echo "QAT: $steps steps x 8 windows x $seqlen tokens, default lr (2e-5 * sqrt(4096/dim)), held-out evaluation every 10 steps on 8192 tokens; impact: 128 windows ($t_imp s, shared by every row that uses it)."
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); whole run ${t_total} s."
    echo
    echo "| method | bits | group | bits/weight | test PPL | time (s) | note |"
    echo "|---|---|---|---|---|---|---|"
    awk -F'\t' '{ split($6, tn, "|"); t = tn[1]; n = tn[2]; if ($1 == "FP32") { t = "-"; n = "-" }
                  printf "| %s | %s | %s | %s | %.3f | %s | %s |\n", $1, $2, $3, $4 == "32" ? "32" : sprintf("%.3f", $4), $5, t, n }' "$rows"
    echo
    echo "Heterogeneity scores of every quantized matrix (\`cherryq analyze\`):"
    echo
    echo '```'
    cat "$work/analyze.txt"
    echo '```'
} > "$tab"
cat "$tab"
if [ "$docs" = 1 ]; then
    res=docs/results.md
    if [ ! -f "$res" ] || ! grep -q '<!-- BEGIN GENERATED' "$res"; then
        printf '# Results\n\n<!-- BEGIN GENERATED by tools/reproduce.sh -->\n<!-- END GENERATED -->\n' > "$res"
    fi
    awk -v tab="$tab" '
        /<!-- BEGIN GENERATED/ { print; while ((getline l < tab) > 0) print l; skip = 1; next }
        /<!-- END GENERATED/ { skip = 0 }
        !skip { print }' "$res" > "$res.tmp" && mv "$res.tmp" "$res"
    echo "reproduce.sh: wrote $res and $figs/ in ${t_total} s" >&2
fi
