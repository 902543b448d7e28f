#!/bin/bash
# Crash safety of the pipeline jobs (issue 8), modelled on kill_resume_test.sh:
#  1. `cherryq impact` killed with SIGKILL after its first checkpoint and run
#     again with --resume writes an impact file bitwise equal to an
#     uninterrupted run's (CPU, same --threads); the checkpoint is gone
#     afterwards; without --resume the interrupted run's checkpoint is not
#     overwritten; a checkpoint of other windows or another model, a corrupt
#     and a truncated one are refused (exit 1, a message saying why) and left
#     as they were;
#  2. `cherryq quantize --method cherryq` killed during the impact stage, and
#     once more during QAT, and resumed, writes a quantized directory whose
#     files are bitwise equal to an uninterrupted run's;
#  3. a full disk under the impact checkpoint (a small tmpfs in a private
#     mount namespace; skipped without the privilege) fails the next
#     checkpoint with a clear ENOSPC message and exit 1, leaves the previous
#     checkpoint intact and no temp file, and resumes once space is back.
#   tests/kill_resume_pipeline_test.sh /path/to/cherryq
set -u
CQ=$1
T=$(mktemp -d "${TMPDIR:-/tmp}/cqkillp.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# kill_after FILE LOG -- cmd...: starts cmd, SIGKILLs it once FILE exists
# (plus a short delay); returns 0 if it was killed while still running
kill_after() {
    local file=$1 log=$2
    shift 3
    "$@" > "$log" 2>&1 &
    local pid=$! i
    for i in $(seq 1 1000); do
        [ -s "$file" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    sleep 0.2
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
        wait "$pid" 2>/dev/null
        return 0
    fi
    wait "$pid"
    echo "    (the job ended before it could be killed; log:)"; tail -3 "$log" | sed 's/^/    /'
    return 1
}

for i in $(seq 1 3000); do printf 'the number %d is followed by %d and then %d. ' $i $((i + 1)) $((i + 2)); done > "$T/c.txt"
"$CQ" train --data "$T/c.txt" --vocab 300 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --seq 64 --steps 10 \
    --batch 8 --lr 0.005 --warmup 4 --eval-every 0 --out "$T/fp" --threads 2 > "$T/train.log" 2>&1 \
    || { fail "training the tiny model failed"; cat "$T/train.log"; exit 1; }
"$CQ" train --data "$T/c.txt" --vocab 300 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --seq 64 --steps 11 \
    --batch 8 --lr 0.005 --warmup 4 --eval-every 0 --out "$T/fp2" --threads 2 > "$T/train2.log" 2>&1 \
    || { fail "training the second tiny model failed"; cat "$T/train2.log"; exit 1; }

# ---- 1. impact
IA=(--data "$T/c.txt" --samples 1500 --seqlen 64 --threads 2)
"$CQ" impact --model "$T/fp" "${IA[@]}" --out "$T/imp_ref.st" --ckpt-every 0 > "$T/iref.log" 2>&1 \
    || { fail "uninterrupted impact failed"; cat "$T/iref.log"; }
[ -e "$T/imp_ref.st.ckpt" ] && fail "--ckpt-every 0 wrote a checkpoint"
if kill_after "$T/imp.st.ckpt" "$T/i1.log" -- "$CQ" impact --model "$T/fp" "${IA[@]}" --out "$T/imp.st" --ckpt-every 50
then
    ok "killed impact with SIGKILL after its first checkpoint"
    [ -e "$T/imp.st" ] && fail "the killed impact run left an output behind"
    ls "$T" | grep -q '\.tmp\.' && ls "$T" && echo "    (temp file of the killed write: allowed, never read)"
    cp "$T/imp.st.ckpt" "$T/ck.saved"
    # no --resume: refuse, keep the checkpoint
    "$CQ" impact --model "$T/fp" "${IA[@]}" --out "$T/imp.st" --ckpt-every 50 > "$T/i2.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] && grep -q "pass --resume" "$T/i2.log" && cmp -s "$T/ck.saved" "$T/imp.st.ckpt" \
        && ok "without --resume the interrupted run's checkpoint is refused and kept" \
        || { fail "rerun without --resume: rc=$rc"; cat "$T/i2.log"; }
    # other windows (--seed), another model: refused, checkpoint unchanged
    "$CQ" impact --model "$T/fp" "${IA[@]}" --seed 9 --out "$T/imp.st" --resume > "$T/i3.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] && grep -q "other calibration windows" "$T/i3.log" && cmp -s "$T/ck.saved" "$T/imp.st.ckpt" \
        && ok "a resume with another --seed is refused (other calibration windows)" \
        || { fail "mismatched-seed resume: rc=$rc"; cat "$T/i3.log"; }
    "$CQ" impact --model "$T/fp2" "${IA[@]}" --out "$T/imp.st" --resume > "$T/i4.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] && grep -q "another model" "$T/i4.log" && cmp -s "$T/ck.saved" "$T/imp.st.ckpt" \
        && ok "a resume with another model (same shapes) is refused" \
        || { fail "mismatched-model resume: rc=$rc"; cat "$T/i4.log"; }
    "$CQ" impact --model "$T/fp" "${IA[@]}" --samples 1400 --out "$T/imp.st" --resume > "$T/i5.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] && grep -q "1500 windows of 64 tokens, this run 1400 of 64" "$T/i5.log" \
        && ok "a resume with another --samples is refused naming both counts" \
        || { fail "mismatched-samples resume: rc=$rc"; cat "$T/i5.log"; }
    # corrupt (one flipped byte in F) and truncated checkpoints
    cp "$T/ck.saved" "$T/bad.ckpt"
    sz=$(stat -c %s "$T/bad.ckpt")
    printf '\x55' | dd of="$T/bad.ckpt" bs=1 seek=$((sz - 100)) conv=notrunc status=none
    cp "$T/bad.ckpt" "$T/bad.copy"
    "$CQ" impact --model "$T/fp" "${IA[@]}" --out "$T/imp_b.st" --ckpt "$T/bad.ckpt" --resume > "$T/i6.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] && grep -q "checksum mismatch" "$T/i6.log" && cmp -s "$T/bad.ckpt" "$T/bad.copy" && [ ! -e "$T/imp_b.st" ] \
        && ok "a corrupt checkpoint is refused (checksum), left as it was, no output" \
        || { fail "corrupt checkpoint: rc=$rc"; cat "$T/i6.log"; }
    head -c $((sz / 2)) "$T/ck.saved" > "$T/trunc.ckpt"
    "$CQ" impact --model "$T/fp" "${IA[@]}" --out "$T/imp_b.st" --ckpt "$T/trunc.ckpt" --resume > "$T/i7.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] && grep -qi "truncated" "$T/i7.log" \
        && ok "a truncated checkpoint is refused" || { fail "truncated checkpoint: rc=$rc"; cat "$T/i7.log"; }
    # the real resume
    "$CQ" impact --model "$T/fp" "${IA[@]}" --out "$T/imp.st" --ckpt-every 50 --resume > "$T/i8.log" 2>&1 \
        || { fail "impact --resume failed"; cat "$T/i8.log"; }
    grep -E "resumed from .* after [0-9]+ of 1500 windows" "$T/i8.log" || fail "impact did not say where it resumed"
    cmp "$T/imp_ref.st" "$T/imp.st" && ok "killed + resumed impact is bitwise equal to the uninterrupted run" \
        || fail "killed + resumed impact differs from the uninterrupted run"
    [ -e "$T/imp.st.ckpt" ] && fail "the checkpoint was left behind after a finished run"
    ls "$T" | grep -q 'imp\.st.*\.tmp\.' && fail "temp files left after the resumed run"
else
    fail "impact finished before it could be killed"
fi

# ---- 2. quantize --method cherryq: killed during impact, then during QAT
QA=(--model "$T/fp" --data "$T/c.txt" --method cherryq --bits 3 --group 64 --samples 600 --seqlen 64 --threads 2
    --steps 60 --batch 8 --max-epochs 100 --ckpt-every 50)
"$CQ" quantize "${QA[@]}" --out "$T/qref" > "$T/qref.log" 2>&1 || { fail "uninterrupted quantize failed"; cat "$T/qref.log"; }
[ -e "$T/qref.ckpt/impact.ckpt" ] && fail "the impact checkpoint was left after a finished quantize"
same_dir() { # same_dir A B: every file of A is in B, byte for byte, and nothing else
    local f
    [ "$(ls "$1")" = "$(ls "$2")" ] || return 1
    for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}
if kill_after "$T/q1.ckpt/impact.ckpt" "$T/q1a.log" -- "$CQ" quantize "${QA[@]}" --out "$T/q1"; then
    grep -q "QAT" "$T/q1a.log" && echo "    (note: the kill landed after the impact stage)"
    [ -e "$T/q1" ] && fail "the killed quantize left an output directory"
    "$CQ" quantize "${QA[@]}" --out "$T/q1" --resume > "$T/q1b.log" 2>&1 || { fail "quantize --resume failed"; cat "$T/q1b.log"; }
    grep -E "impact resumed from .* after [0-9]+ of 600 windows" "$T/q1b.log" || fail "quantize did not resume its impact"
    same_dir "$T/qref" "$T/q1" && ok "quantize killed during impact + resumed: every file bitwise equal" \
        || fail "quantize killed during impact + resumed differs from the uninterrupted run"
    [ -e "$T/q1.ckpt/impact.ckpt" ] && fail "impact checkpoint left after the resumed quantize finished"
else
    fail "quantize finished before it could be killed in the impact stage"
fi
if kill_after "$T/q2.ckpt/trainer.ckpt" "$T/q2a.log" -- "$CQ" quantize "${QA[@]}" --out "$T/q2"; then
    [ -e "$T/q2" ] && fail "the killed quantize left an output directory"
    # the QAT checkpoint belongs to its settings: another --bits is refused, the checkpoint kept
    cp "$T/q2.ckpt/trainer.ckpt" "$T/tck.saved"
    "$CQ" quantize "${QA[@]}" --bits 4 --out "$T/q2" --resume > "$T/q2x.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] && grep -q "QAT run with other settings" "$T/q2x.log" && cmp -s "$T/tck.saved" "$T/q2.ckpt/trainer.ckpt" \
        && ok "a QAT resume with another --bits is refused, the checkpoint kept" \
        || { fail "QAT resume with another --bits: rc=$rc"; tail -5 "$T/q2x.log"; }
    "$CQ" quantize "${QA[@]}" --out "$T/q2" --resume > "$T/q2b.log" 2>&1 || { fail "quantize --resume failed"; cat "$T/q2b.log"; }
    [ -e "$T/q2.ckpt/trainer.ckpt" ] && fail "the QAT checkpoint was left after the resumed quantize finished"
    grep -E "impact resumed from .* after 600 of 600 windows" "$T/q2b.log" || fail "the completed impact was not reused"
    grep -E "QAT resumed from .* at step [0-9]+" "$T/q2b.log" || fail "QAT did not resume"
    same_dir "$T/qref" "$T/q2" && ok "quantize killed during QAT + resumed: every file bitwise equal" \
        || fail "quantize killed during QAT + resumed differs from the uninterrupted run"
else
    fail "quantize finished before it could be killed during QAT"
fi

# ---- 3. full disk under the impact checkpoint (private mount namespace)
if unshare -m true 2>/dev/null; then
    out=$(unshare -m bash -c '
        set -u
        CQ=$1; T=$2; shift 2
        mkdir -p "$T/small"
        mount -t tmpfs -o size=4m tmpfs "$T/small" || exit 77
        "$CQ" impact --model "$T/fp" "$@" --out "$T/full.st" --ckpt "$T/small/imp.ckpt" --ckpt-every 50 > "$T/f1.log" 2>&1 &
        pid=$!
        for i in $(seq 1 1000); do [ -s "$T/small/imp.ckpt" ] && break; sleep 0.02; done
        kill -9 $pid; wait $pid 2>/dev/null
        [ -s "$T/small/imp.ckpt" ] || { echo "NO FIRST CHECKPOINT"; exit 1; }
        cp "$T/small/imp.ckpt" "$T/ck.before"
        ck=$(stat -c %s "$T/small/imp.ckpt")
        avail=$(df --output=avail -B1 "$T/small" | tail -1)
        head -c $((avail - ck / 2)) /dev/zero > "$T/small/filler" 2>/dev/null
        "$CQ" impact --model "$T/fp" "$@" --out "$T/full.st" --ckpt "$T/small/imp.ckpt" --ckpt-every 50 --resume > "$T/f2.log" 2>&1
        echo "rc=$?"
        grep -E "No space left" "$T/f2.log" | head -2
        [ -e "$T/full.st" ] && echo "OUTPUT_WRITTEN"
        cmp -s "$T/ck.before" "$T/small/imp.ckpt" && echo "CKPT_INTACT"
        ls "$T/small" | grep -q "\.tmp" && echo "TEMP_LEFT"
        rm -f "$T/small/filler"
        "$CQ" impact --model "$T/fp" "$@" --out "$T/full.st" --ckpt "$T/small/imp.ckpt" --ckpt-every 50 --resume > "$T/f3.log" 2>&1 && echo "RESUMED_OK"
        cmp -s "$T/full.st" "$T/imp_ref.st" && echo "EQUAL"
    ' _ "$CQ" "$T" "${IA[@]}")
    st=$?
    if [ "$st" = 77 ]; then
        echo "skip: cannot mount a tmpfs here"
    else
        echo "$out" | sed 's/^/    /'
        f0=$fails
        echo "$out" | grep -q "^rc=1" || fail "impact with its checkpoint on a full disk did not exit 1"
        echo "$out" | grep -q "No space left" || fail "no clear 'No space left' message on a full disk"
        echo "$out" | grep -q OUTPUT_WRITTEN && fail "a failed run wrote its output"
        echo "$out" | grep -q CKPT_INTACT || fail "the previous checkpoint was changed by the failed save"
        echo "$out" | grep -q TEMP_LEFT && fail "a temp file was left behind"
        echo "$out" | grep -q RESUMED_OK || fail "could not resume from the surviving checkpoint once space was back"
        echo "$out" | grep -q EQUAL || fail "the impact resumed after the full disk differs from the uninterrupted run"
        [ "$fails" = "$f0" ] && ok "full disk -> ENOSPC message, exit 1, checkpoint intact, resumed bitwise equal"
    fi
else
    echo "skip: no private mount namespace (not root?) for the full-disk check"
fi

if [ "$fails" != 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all pipeline crash-safety checks passed"
