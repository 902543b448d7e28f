#!/bin/bash
# The Vulkan backend under the Khronos validation layer with synchronization
# validation (CQ_VULKAN_VALIDATE=1, backends/vulkan/device.c): the Vulkan
# tests and a tiny train -> impact -> quantize -> eval -> generate run on
# --backend vulkan must pass with no validation message at all. Lavapipe
# executes dispatches in order, so a missing barrier passes every other
# test here and fails only on a GPU; the layer reports it anywhere.
# Exits 77 (skipped) without the layer (Debian: vulkan-validationlayers) or
# without a Vulkan device.
#   tests/vulkan_validation.sh /path/to/cherryq TEST_EXE...
set -u
CQ=$1
shift
export CQ_VULKAN_VALIDATE=1 CQ_QMM_EXACT=1
# Under AddressSanitizer (CI's second pass): the validation layer keeps
# allocations LeakSanitizer reports once the layer is unloaded; the same
# Vulkan code runs leak-checked without the layer in the vulkan, parity and
# backend_model tests, so leak checking is off here only.
if [ -n "${ASAN_OPTIONS:-}" ]; then
    export ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/cqvkval.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

# run NAME cmd...: fails on a non-zero exit or any validation message; 77
# (no layer, no device) skips the whole test
run() {
    local name=$1
    shift
    "$@" > "$T/out" 2>&1
    local rc=$?
    if grep -q "validation layer VK_LAYER_KHRONOS_validation is not installed" "$T/out"; then
        echo "SKIP: the Khronos validation layer is not installed (Debian: vulkan-validationlayers)"
        exit 77
    fi
    if [ "$rc" = 77 ] || grep -q "no Vulkan device found" "$T/out"; then
        echo "SKIP: no Vulkan device"
        exit 77
    fi
    local n
    n=$(grep -c "vulkan validation:" "$T/out")
    if [ "$rc" != 0 ] || [ "$n" != 0 ]; then
        echo "FAIL: $name: exit $rc, $n validation message(s)"
        grep -m 5 "vulkan validation:" "$T/out" | cut -c1-600 | sed 's/^/    /'
        [ "$rc" != 0 ] && tail -20 "$T/out" | sed 's/^/    /'
        fails=$((fails + 1))
        return
    fi
    echo "ok: $name"
}

for i in $(seq 1 400); do printf 'the number %d is followed by %d. ' $i $((i + 1)); done > "$T/c.txt"
VK=(--backend vulkan --threads 1)

# both memory paths: mapped tensors (lavapipe, integrated GPUs) and the
# staging buffer + transfer commands of a discrete GPU (forced)
for staging in 0 1; do
    export CQ_VULKAN_STAGING=$staging
    tag=$([ $staging = 1 ] && echo " (staging)" || true)
    for exe in "$@"; do
        [[ $exe == */* ]] || exe=./$exe   # meson passes paths relative to the workdir
        run "$(basename "$exe")$tag" "$exe"
    done
    rm -rf "$T/m" "$T/q" "$T/imp.st"
    run "train$tag" "$CQ" train --data "$T/c.txt" --vocab 300 --dim 32 --layers 1 --heads 2 --kv-heads 1 --ffn 64 \
        --seq 32 --batch 4 --steps 3 --warmup 1 --eval-every 0 --out "$T/m" "${VK[@]}"
    run "impact$tag" "$CQ" impact --model "$T/m" --data "$T/c.txt" --out "$T/imp.st" --samples 2 --seqlen 32 "${VK[@]}"
    run "quantize$tag" "$CQ" quantize --model "$T/m" --data "$T/c.txt" --out "$T/q" --method cherryq \
        --impact "$T/imp.st" --k 1 --bits 3 --group 32 --steps 2 --batch 2 --seqlen 32 "${VK[@]}"
    run "eval$tag" "$CQ" eval --model "$T/q" --data "$T/c.txt" --seqlen 32 --max-windows 4 "${VK[@]}"
    run "generate$tag" "$CQ" generate --model "$T/q" --prompt "the number" --max-tokens 6 "${VK[@]}"
done

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "no validation message"
