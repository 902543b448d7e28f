#!/bin/bash
# Builds the libFuzzer targets of tests/fuzz with clang + ASan + UBSan and
# runs each for a set time, then prints its executions and coverage.
#
#   tools/fuzz.sh [-t SECONDS] [-j PARALLEL] [-b BUILDDIR] [TARGET...]
#
#   -t  seconds per target (default 60; the figures in docs/fuzzing.md are
#       from runs of 600 s and more)
#   -j  targets run at once (default 1); each target is one process
#   -b  build directory (default build-fuzz)
#   TARGET  safetensors st_index gguf hfconfig tokenizer_json tokenizer_spm
#           llama_load checkpoint cli_readers cli_args (default: all)
#
# The working corpus of a target is BUILDDIR/corpus/<target>, started from
# the checked-in seeds (tests/fuzz/corpus/<target>) and kept between runs;
# crashes, leaks and timeouts are written to BUILDDIR/artifacts/<target>/
# and the run's log to BUILDDIR/logs/<target>.log. Exits 1 if any target
# found something. Needs clang with libFuzzer (Debian: clang-14,
# libclang-rt-14-dev). Runs niced: the fuzzers take whole cores.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=60
par=1
bdir=build-fuzz
while getopts "t:j:b:h" o; do
    case $o in
    t) secs=$OPTARG ;;
    j) par=$OPTARG ;;
    b) bdir=$OPTARG ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(safetensors st_index gguf hfconfig tokenizer_json tokenizer_spm llama_load checkpoint
        cli_readers cli_args)
fi

if [ ! -f "$bdir/build.ninja" ]; then
    CC="${CC:-clang}" meson setup "$bdir" -Dfuzz=true -Dtests=false -Dvulkan=disabled \
        -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
        -Dc_args=-fsanitize=fuzzer-no-link
fi
nice -n 10 ninja -C "$bdir" $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}")

# halt on UB too; leaks are findings; one thread per kernel
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

run_one() {
    local t=$1
    local corpus="$bdir/corpus/$t" art="$bdir/artifacts/$t/" log="$bdir/logs/$t.log"
    mkdir -p "$corpus" "$art" "$(dirname "$log")"
    cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    local rc=0
    nice -n 10 "$bdir/tests/fuzz/fuzz_$t" "$corpus" -max_total_time="$secs" -timeout=25 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$art" \
        >"$log" 2>&1 || rc=$?
    local last execs cov ft
    last=$(grep -aE '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    local found
    found=$(ls "$art" 2>/dev/null | wc -l)
    printf '%-15s rc=%-3s execs=%-10s cov=%-6s ft=%-6s corpus=%-6s findings=%s\n' "$t" "$rc" "${execs:-?}" \
        "${cov:-?}" "${ft:-?}" "$(ls "$corpus" | wc -l)" "$found"
    [ "$rc" -eq 0 ] && [ "$found" -eq 0 ]
}

status=0
pids=()
names=()
for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=($!)
    names+=("$t")
    if [ ${#pids[@]} -ge "$par" ]; then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
