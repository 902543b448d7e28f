#!/bin/bash
# One run of everything cherryq checks on an NVIDIA GPU: the CUDA op tests,
# the whole test suite, the GEMV, training and impact benchmarks (with
# PyTorch on the same GPU as the baseline), and the CLI quantizing the
# default model on the GPU. Made for a machine that has the CUDA toolkit but
# not Debian's libraries: tools/gpu/pack.sh builds here and packs .gpu/; this
# script unpacks it, puts the repository at the build's absolute path, and
# runs each section under its own time limit, most important first.
#
#   tools/gpu/pack.sh                          (on the build machine)
#   OUT=/tmp/out tools/gpu/device_check.sh [SECTION...]   (GPU machine, repo root)
#
# Sections (default: all, in this order): cuda bench train profile train1b
# cli suite vulkan; and on request: ncu (Nsight Compute on the 3-bit GEMV), sanitize
# (compute-sanitizer memcheck, racecheck and synccheck on the GEMV variants:
# hazards that depend on GPU scheduling, which the emulated device does not model). Output: stdout and $OUT/log.txt; per-test logs in
# $OUT/tests.tar.gz. With .gl/*.deb carried (the GL/Vulkan loaders, see
# docs/cuda.md) the vulkan section runs the Vulkan backend on the NVIDIA GPU.
set -u
OUT=${OUT:-/tmp/cq_gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
T0=$(date +%s)
sect() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
here=$(pwd -P)
b=$(sed -n 's/^build dir //p' .gpu/origin)
src=$(dirname "$b")
if [ "$(cd "$src" 2>/dev/null && pwd -P)" != "$here" ]; then
    if [ -e "$src" ]; then echo "device_check: $src exists and is not this checkout" >&2; exit 1; fi
    mkdir -p "$(dirname "$src")" && ln -s "$here" "$src"
fi
cd "$src" || exit 1
tar xJf .gpu/build.tar.xz && tar xJf .gpu/data.tar.xz && mkdir -p .gpu/x && tar xJf .gpu/lib.tar.xz -C .gpu/x || exit 1
cudalibs=
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
    if ! ldconfig -p | grep -q "$l"; then
        f=$(find /usr/local /usr/lib /opt -name "$l*" 2>/dev/null | head -1)
        [ -n "$f" ] && cudalibs=$cudalibs:$(dirname "$f")
    fi
done
export LD_LIBRARY_PATH=$src/.gpu/x/lib$cudalibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$f" ] && { export VK_DRIVER_FILES=$f; break; }
done
bin=$b
secs=" ${*:-cuda bench train profile train1b cli suite vulkan} "
want() { [[ $secs == *" $1 "* ]]; }
sect "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
nvcc --version 2>/dev/null | tail -2; nproc; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
ldd "$bin/tools/cherryq" | grep -E 'not found|cuda|cublas|openblas' 
"$bin/tools/cherryq" devices 2>&1 | head -20

if want cuda; then
sect "test_cuda (CQ_CUDA_SYNC=1: every op against the CPU reference)"
CQ_CUDA_SYNC=1 CQ_QMM_EXACT=1 timeout 180 "$bin/tests/test_cuda" >"$OUT/test_cuda.txt" 2>&1; echo "rc $?"
grep -cE '^\[       OK \]' "$OUT/test_cuda.txt" | sed 's/^/tests OK: /'
grep -vE '^\[       OK \]|^\[ RUN      \]' "$OUT/test_cuda.txt" | tail -60

fi
if want bench; then
sect "bench_cuda (mixed GEMV vs DRAM bandwidth and cuBLAS f16 GEMV)"
# every variant in one process, one cuBLAS baseline per shape (a: the
# automatic choice, the default; 1: exact, the fast kernel; 4: int8 + dp4a;
# 6: streaming, int8; 8, 9: the cp.async pipeline, int8 and exact;
# cuda/qmatmul_kernels.cuh)
timeout 150 "$bin/tools/bench_cuda" --variants "${CQ_QGEMV_VARIANTS:-a 1 4 6 8 9}"; echo "rc $?"

fi
if want sanitize; then
sect "compute-sanitizer on the mixed GEMV variants (bench_cuda --iters 1: every shape, checked against its oracle)"
cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -z "$cs" ]; then echo "compute-sanitizer not found"; else
for tool in memcheck racecheck synccheck; do
    timeout 150 "$cs" --tool $tool --error-exitcode 9 "$bin/tools/bench_cuda" --iters 1 \
        --variants "${CQ_QGEMV_VARIANTS:-a 1 4 6 8 9}" >"$OUT/sanitize_$tool.txt" 2>&1
    echo "$tool rc $? (9: the tool found errors)"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Hazard|Invalid|Barrier" "$OUT/sanitize_$tool.txt" | sort | uniq -c | head -12
done
fi

fi
if want train; then
sect "bench_train default config on cuda: f32"
timeout 45 "$bin/tools/bench_train" --backend cuda --steps 10 --impact 64; echo "rc $?"
sect "bench_train default config on cuda: bf16 + checkpointed activations + offloaded AdamW"
timeout 45 "$bin/tools/bench_train" --backend cuda --steps 10 --compute-dtype bf16 --checkpoint-activations --offload-optimizer; echo "rc $?"
sect "torch, default config, cuda f32 / bf16 autocast"
timeout 40 python3 tools/bench_train_torch.py --device cuda --steps 10 | tail -2
timeout 40 python3 tools/bench_train_torch.py --device cuda --steps 10 --dtype bf16 | tail -2

fi
if want profile; then
sect "CQ_PROFILE=1 (time per op, synchronized): default config f32, ~1B config bf16 + checkpointing"
CQ_PROFILE=1 timeout 45 "$bin/tools/bench_train" --backend cuda --steps 5 2>&1 | grep -A12 CQ_PROFILE
for av in ${CQ_CUDA_ATTN_VERSIONS:-1}; do
echo "--- CQ_CUDA_ATTN=$av"
CQ_CUDA_ATTN=$av CQ_PROFILE=1 timeout 90 "$bin/tools/bench_train" --config models/llama-1b.json --backend cuda --steps 2 \
    --compute-dtype bf16 --checkpoint-activations 2>&1 | grep -A8 CQ_PROFILE
done
fi
if want train1b; then
for av in ${CQ_CUDA_ATTN_VERSIONS:-1}; do
sect "bench_train ~1B config on cuda (CQ_CUDA_ATTN=$av): bf16 + checkpointed activations, batch 4 x 2048"
CQ_CUDA_ATTN=$av timeout 120 "$bin/tools/bench_train" --config models/llama-1b.json --backend cuda --steps 3 \
    --compute-dtype bf16 --checkpoint-activations --impact 4 | grep -vE '^(bench_train|options|\{)'; echo "rc ${PIPESTATUS[0]}"
sect "bench_train ~1B config on cuda (CQ_CUDA_ATTN=$av): bf16, no checkpointing (as torch below), batch 4 x 2048"
CQ_CUDA_ATTN=$av timeout 120 "$bin/tools/bench_train" --config models/llama-1b.json --backend cuda --steps 3 \
    --compute-dtype bf16 | grep -E 'training|share'; echo "rc ${PIPESTATUS[0]}"
done
sect "torch ~1B config, cuda bf16 autocast, batch 4 x 2048"
timeout 60 python3 tools/bench_train_torch.py --config models/llama-1b.json --device cuda --steps 3 --dtype bf16 | tail -2
fi
if want cli; then
sect "CLI: quantize the default model with CherryQ on cuda, evaluate on cuda"
if [ -f out/default/model.safetensors ]; then
    rm -rf /tmp/cq_q && timeout 90 "$bin/tools/cherryq" quantize --backend cuda --model out/default --data data/kjv_train.txt \
        --out /tmp/cq_q --method cherryq --bits 3 --group 128 --seqlen 256 --samples 128 --steps 40 --batch 8 \
        --eval-every 10 --eval-tokens 8192 2>&1 | tail -8
    echo "rc ${PIPESTATUS[0]}"
    for m in out/default /tmp/cq_q; do
        timeout 60 "$bin/tools/cherryq" eval --backend cuda --model $m --data data/kjv_test.txt --seqlen 256 --json 2>&1 | tail -2
    done
fi
"$bin/tools/cherryq" plan --backend cuda --config models/llama2-7b.json --command quantize --batch 4 \
    --checkpoint-activations --offload-optimizer --compute-dtype bf16 2>&1 | tail -8

fi
if want suite; then
sect "whole test suite (-Dcuda=true build), 12 at a time"
timeout 200 python3 tools/gpu/run_tests.py "$bin" --jobs 12 --cap 150 --log "$OUT/tests"
tar czf "$OUT/tests.tar.gz" -C "$OUT" tests && rm -rf "$OUT/tests"
fi
if want vulkan && ls .gl/*.deb >/dev/null 2>&1; then
sect "Vulkan backend on the NVIDIA GPU (loaders from .gl/)"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
"$bin/tools/cherryq" devices 2>&1 | sed -n '/^vulkan/,/^cuda/p'
CQ_QMM_EXACT=1 timeout 60 "$bin/tests/test_vulkan" 2>&1 | grep -vE '^\s*\[ +OK \]|^\[ RUN' | tail -30
CQ_QMM_EXACT=1 timeout 60 "$bin/tests/test_parity" 2>&1 | tail -12
timeout 60 "$bin/tools/bench_train" --backend vulkan --steps 5 2>&1 | grep -E 'training|peak'
if [ -f out/default/model.safetensors ]; then
    timeout 60 "$bin/tools/cherryq" eval --backend vulkan --model out/default --data data/kjv_test.txt --seqlen 256 --json 2>&1 | tail -1
fi
fi
if want ncu; then
sect "ncu on the 3-bit mixed GEMV (first shape, one launch) and the SASS of the 3-bit int8 pipelined kernel"
for v in ${CQ_NCU_VARIANTS:-1 8}; do   # a fast (0-4) and a pipelined (8-9) variant
echo "--- variant $v"
ncu --clock-control none --kernel-name regex:'qgemv_(fast|stream|pipe)_kernel' --launch-skip 2 --launch-count 1 --set full \
    "$bin/tools/bench_cuda" --iters 30 --variants "$v" >"$OUT/ncu_v$v.txt" 2>&1; echo "rc $?"
grep -E 'Duration|DRAM Throughput|Memory Throughput|L1/TEX Hit|L2 Hit|Achieved Occupancy|Theoretical Occupancy|Registers Per|Issue Slots Busy|Issued Ipc|No Eligible|Warp Cycles Per Issued|Executed Instructions  |Block Limit' "$OUT/ncu_v$v.txt" | head -40
done
cuobjdump -sass "$bin/tools/bench_cuda" | awk '/Function : .*qgemv_pipe_kernelILi3ELi2ELi16ELb1E/{f=1} /Function :/&&!/qgemv_pipe_kernelILi3ELi2ELi16ELb1E/{f=0} f' >"$OUT/k3.sass"
wc -l "$OUT/k3.sass"
fi
sect "done"
