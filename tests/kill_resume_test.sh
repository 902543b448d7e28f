#!/bin/bash
# Crash safety of long jobs (issue 8):
#  1. a training run killed with SIGKILL mid-run and resumed with --resume
#     ends with a model bitwise equal to an uninterrupted run's (the CPU path
#     is deterministic with a fixed thread count);
#  2. a full disk (a small tmpfs in a private mount namespace) makes the next
#     checkpoint save fail with a clear ENOSPC message and a non-zero exit,
#     and leaves the previous checkpoint byte for byte intact and resumable.
#   tests/kill_resume_test.sh /path/to/cherryq
set -u
CQ=$1
T=$(mktemp -d "${TMPDIR:-/tmp}/cqkill.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

for i in $(seq 1 400); do
    echo "In the beginning God created the heaven and the earth $((i % 13)). And the earth was without form, and void $((i % 7))."
done > "$T/corpus.txt"
ARGS=(--data "$T/corpus.txt" --vocab 300 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --seq 32 --batch 8
      --warmup 5 --lr 0.005 --threads 1 --seed 3 --steps 300 --save-every 10 --eval-every 100)

# ---- 1. uninterrupted reference
"$CQ" train "${ARGS[@]}" --out "$T/ref" > "$T/ref.log" 2>&1 || { fail "reference run failed"; cat "$T/ref.log"; }

# ---- killed run: SIGKILL once a checkpoint exists, while the run is still going
"$CQ" train "${ARGS[@]}" --out "$T/run" > "$T/run1.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    [ -s "$T/run/checkpoint/trainer.ckpt" ] && break
    sleep 0.05
done
sleep 0.3
if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    echo "ok: killed the training run with SIGKILL after its first checkpoint"
    [ -f "$T/run/model.safetensors" ] && fail "the killed run left a final model behind"
    "$CQ" train "${ARGS[@]}" --out "$T/run" --resume > "$T/run2.log" 2>&1 || { fail "resume failed"; cat "$T/run2.log"; }
    grep -E "resumed from" "$T/run2.log" || fail "the resumed run did not say where it resumed"
    if cmp -s "$T/ref/model.safetensors" "$T/run/model.safetensors"; then
        echo "ok: killed + resumed model is bitwise equal to the uninterrupted run"
    else
        fail "killed + resumed model differs from the uninterrupted run"
    fi
else
    fail "the run finished before it could be killed (machine too fast for this test's sizes?)"
fi

# ---- 2. full disk: needs a private mount namespace (root); skipped otherwise
if unshare -m true 2>/dev/null; then
    out=$(unshare -m bash -c '
        set -u
        CQ=$1; T=$2; shift 2
        mkdir -p "$T/small"
        mount -t tmpfs -o size=16m tmpfs "$T/small" || exit 77
        "$CQ" train "$@" --steps 20 --out "$T/small/m" > "$T/full1.log" 2>&1 || { echo "FIRST RUN FAILED"; cat "$T/full1.log"; exit 1; }
        cp "$T/small/m/checkpoint/trainer.ckpt" "$T/ckpt.before"
        ls -la "$T/small/m" "$T/small/m/checkpoint" > "$T/ls.before"
        # fill the disk so the next checkpoint cannot be written
        ck=$(stat -c %s "$T/small/m/checkpoint/trainer.ckpt")
        avail=$(df --output=avail -B1 "$T/small" | tail -1)
        head -c $((avail - ck / 2)) /dev/zero > "$T/small/filler" 2>/dev/null
        "$CQ" train "$@" --steps 40 --out "$T/small/m" --resume > "$T/full2.log" 2>&1
        rc=$?
        echo "rc=$rc"
        grep -E "No space left|no space|ENOSPC" "$T/full2.log" | head -2
        cmp -s "$T/ckpt.before" "$T/small/m/checkpoint/trainer.ckpt" && echo "CKPT_INTACT"
        ls "$T/small/m" "$T/small/m/checkpoint" | grep -q "\.tmp" && echo "TEMP_LEFT"
        rm -f "$T/small/filler"
        "$CQ" train "$@" --steps 40 --out "$T/small/m" --resume > "$T/full3.log" 2>&1 && echo "RESUMED_OK"
    ' _ "$CQ" "$T" "${ARGS[@]}")
    st=$?
    if [ "$st" = 77 ]; then
        echo "skip: cannot mount a tmpfs here"
    else
        echo "$out" | sed 's/^/    /'
        echo "$out" | grep -q "^rc=0" && fail "training on a full disk exited 0"
        echo "$out" | grep -q "^rc=" || fail "full-disk run did not report"
        echo "$out" | grep -qiE "space" || fail "no clear 'no space' message on a full disk"
        echo "$out" | grep -q CKPT_INTACT || fail "the previous checkpoint was changed by the failed save"
        echo "$out" | grep -q TEMP_LEFT && fail "a temp file was left behind"
        echo "$out" | grep -q RESUMED_OK || fail "could not resume from the surviving checkpoint once space was back"
        [ "$fails" = 0 ] && echo "ok: full disk -> clear ENOSPC error, exit != 0, previous checkpoint intact and resumable"
    fi
else
    echo "skip: no private mount namespace (not root?) for the full-disk check"
fi

if [ "$fails" != 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all crash-safety checks passed"
