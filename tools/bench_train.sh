#!/bin/sh
# Training throughput of the default model config: cherryq (tools/bench_train.c)
# and the same model in PyTorch (tools/bench_train_torch.py), in the same run,
# with the same thread count; prints both and the ratio.
#
#   tools/bench_train.sh [BUILD_DIR] [--steps N] [--threads N] [--config FILE]
#
# PyTorch is Debian's python3-torch, run with /usr/bin/python3. The CPU
# kernels' OpenMP runs with OMP_WAIT_POLICY=passive as the cherryq CLI does.
set -eu
# (pipelines below end in tee: failures are caught by the figure check)
cd "$(dirname "$0")/.."
build=build
[ $# -gt 0 ] && [ "${1#--}" = "$1" ] && { build=$1; shift; }
steps=10; threads=$(nproc); config=models/default.json
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) steps=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        *) echo "bench_train.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
OMP_WAIT_POLICY=passive "$build/tools/bench_train" --config "$config" --steps "$steps" --threads "$threads" | tee /tmp/cq_bench_train.$$
/usr/bin/python3 tools/bench_train_torch.py --config "$config" --steps "$steps" --threads "$threads" | tee /tmp/cq_bench_torch.$$
a=$(tail -1 /tmp/cq_bench_train.$$ | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/')
b=$(tail -1 /tmp/cq_bench_torch.$$ | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/')
rm -f /tmp/cq_bench_train.$$ /tmp/cq_bench_torch.$$
case "$a$b" in *[!0-9.]*|"") echo "bench_train.sh: a benchmark failed (no tokens/s figure)" >&2; exit 1 ;; esac
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio cherryq / PyTorch: %.2fx (%.0f vs %.0f tokens/s; target >= 2x)\n", a / b, a, b }'
