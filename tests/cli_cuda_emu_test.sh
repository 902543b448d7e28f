#!/bin/bash
# The pipeline end to end with --backend cuda on the emulated CUDA device
# (tests/cuda_emu, docs/cuda.md): train on the CPU, then evaluate, quantize
# with CherryQ (impact + QAT) and evaluate the packed model on "cuda", and
# hold every figure to the same command on the CPU. Sized for the emulator,
# which runs each CUDA thread as a fiber (seconds, not milliseconds).
#   tests/cli_cuda_emu_test.sh /path/to/cherryq_cuda_emu
set -u
CQ=$1
T=$(mktemp -d "${TMPDIR:-/tmp}/cqcemu.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
run() { # run NAME cmd... : output in $T/NAME.out, exit status checked
    local name=$1
    shift
    if "$@" > "$T/$name.out" 2>&1; then ok "$*"; else bad "'$*' exited $?"; sed 's/^/    /' "$T/$name.out" | tail -20; fi
}
ppl() { sed -n 's/^perplexity \([0-9.]*\) .*/\1/p' "$T/$1.out" | tail -1; }
# |a - b| <= tol * b
close() { python3 -c "import sys; a, b, t = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= t * b else 1)" "$1" "$2" "$3"; }
check_close() { # check_close WHAT A B TOL
    if [ -n "$2" ] && [ -n "$3" ] && close "$2" "$3" "$4"; then ok "$1: $2 vs $3 (tol $4)"; else bad "$1: '$2' vs '$3' (tol $4)"; fi
}

for i in $(seq 1 2000); do printf 'the number %d is followed by %d and then %d. ' $i $((i + 1)) $((i + 2)); done > "$T/c.txt"
M=$T/fp
run train "$CQ" train --data "$T/c.txt" --vocab 300 --dim 64 --layers 1 --heads 4 --kv-heads 2 --ffn 128 --seq 32 \
    --steps 30 --batch 8 --lr 0.005 --warmup 4 --eval-every 0 --out "$M" --threads 2

E="--data $T/c.txt --seqlen 32 --max-windows 6"
run e_fp_cpu "$CQ" eval --backend cpu --model "$M" $E
run e_fp_cuda "$CQ" eval --backend cuda --model "$M" $E
if grep -q 'cherryq SIMT emulator' "$T/e_fp_cuda.out"; then ok "eval ran on the emulated CUDA device"; else bad "eval --backend cuda did not use the emulated device"; fi
check_close "FP32 perplexity, cuda vs cpu" "$(ppl e_fp_cuda)" "$(ppl e_fp_cpu)" 1e-5

Q="--data $T/c.txt --method cherryq --bits 3 --group 64 --samples 2 --seqlen 32 --steps 2 --batch 2 --eval-tokens 128"
run q_cpu "$CQ" quantize --backend cpu --model "$M" --out "$T/q_cpu" $Q
run q_cuda "$CQ" quantize --backend cuda --model "$M" --out "$T/q_cuda" $Q
line_cpu=$(grep -o 'cherryq 3-bit g64: [0-9.]* bits per weight ([0-9]* cherries)' "$T/q_cpu.out")
line_cuda=$(grep -o 'cherryq 3-bit g64: [0-9.]* bits per weight ([0-9]* cherries)' "$T/q_cuda.out")
if [ -n "$line_cpu" ] && [ "$line_cpu" = "$line_cuda" ]; then ok "same packing: $line_cuda"; else bad "packing: '$line_cpu' vs '$line_cuda'"; fi

# the packed model: QMATMUL on the emulated device against the CPU kernels
run e_q_cpu "$CQ" eval --backend cpu --model "$T/q_cpu" $E
run e_q_cuda "$CQ" eval --backend cuda --model "$T/q_cpu" $E
check_close "CherryQ perplexity (CPU-quantized model), cuda vs cpu" "$(ppl e_q_cuda)" "$(ppl e_q_cpu)" 1e-4
# the whole CUDA quantization (impact, QAT with STE, packing) against the CPU's
run e_qc_cpu "$CQ" eval --backend cpu --model "$T/q_cuda" $E
check_close "CherryQ perplexity, quantized on cuda vs on cpu" "$(ppl e_qc_cpu)" "$(ppl e_q_cpu)" 1e-3

echo "$fails failure(s)"
[ "$fails" = 0 ]
