#!/bin/sh
# Prepares the embedded default corpus: the King James Bible from Debian's
# bible-kjv package (public domain), as train/validation/test text files.
#
#   tools/prepare_corpus.sh [OUTDIR]        (default: data/)
#
# Writes OUTDIR/kjv_train.txt, kjv_valid.txt, kjv_test.txt atomically
# (temp file + rename). Format: the verse references ("Ge1:1 ") are stripped,
# every chapter becomes one paragraph (its verses joined by single spaces)
# and paragraphs are separated by a blank line.
#
# Split (deterministic, by chapter): chapters are numbered 0..1188 in canonical
# order; chapter n goes to validation when n % 20 == 7, to test when
# n % 20 == 17, otherwise to train (~90% / 5% / 5% of the chapters).
# Existing files are kept unless --force is given.
set -eu

force=0
out=data
for a in "$@"; do
    case "$a" in
        --force) force=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "prepare_corpus.sh: unknown flag '$a'" >&2; exit 2 ;;
        *) out="$a" ;;
    esac
done

if [ "$force" = 0 ] && [ -s "$out/kjv_train.txt" ] && [ -s "$out/kjv_valid.txt" ] && [ -s "$out/kjv_test.txt" ]; then
    echo "corpus: $out/kjv_{train,valid,test}.txt already present" >&2
    exit 0
fi
if ! command -v bible >/dev/null 2>&1; then
    echo "prepare_corpus.sh: the 'bible' program was not found; install Debian's bible-kjv package (apt-get install bible-kjv)" >&2
    exit 1
fi
mkdir -p "$out"
tmp="$out/.kjv.$$"
trap 'rm -f "$tmp".*' EXIT INT TERM

bible -f "Genesis 1:1-Revelation 22:21" > "$tmp.raw"
nverses=$(wc -l < "$tmp.raw")
if [ "$nverses" -ne 31102 ]; then
    echo "prepare_corpus.sh: expected 31102 verses from bible-kjv, got $nverses" >&2
    exit 1
fi

LC_ALL=C awk -v tr="$tmp.train" -v va="$tmp.valid" -v te="$tmp.test" '
function flush() {
    if (para == "") return;
    f = (n % 20 == 7) ? va : (n % 20 == 17) ? te : tr;
    if (seen[f]++) printf "\n" > f;
    printf "%s\n", para > f;
    para = ""; n++;
}
{
    ref = $1
    if (!match(ref, /^[0-9]?[A-Za-z]+[0-9]+:[0-9]+$/)) { print "bad verse line " NR ": " $0 > "/dev/stderr"; exit 1 }
    chap = ref; sub(/:[0-9]+$/, "", chap)
    if (chap != cur) { flush(); cur = chap }
    text = substr($0, length(ref) + 2)
    para = (para == "") ? text : para " " text
}
END { flush(); print n " chapters" > "/dev/stderr" }
' "$tmp.raw"

for s in train valid test; do
    mv -f "$tmp.$s" "$out/kjv_$s.txt"
done
wc -c "$out"/kjv_train.txt "$out"/kjv_valid.txt "$out"/kjv_test.txt >&2
