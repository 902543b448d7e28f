#!/usr/bin/python3
"""Writes the hand-made LLaMA-style tokenizer fixtures under tests/fixtures/tok/.

llama_small.json   a Hugging Face tokenizer.json laid out like LLaMA-2's:
                   <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF> = 3..258, then pieces;
                   normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no
                   pre_tokenizer, BPE with byte_fallback.
llama_small.tsv    the same vocab as GGUF would give it: id, score, type, piece
                   (type 1 normal, 2 unknown, 3 control, 6 byte).

Scores follow sentencepiece: the earlier a piece, the higher its score. Merges
are made as `transformers`' LlamaConverter does (every pair a, b with a, b and
a+b in the vocab, ordered by the score of a+b, best first), so the merges route
(tokenizer.json) and the scores route (GGUF) give the same ids on this vocab.

The expected encodings (llama_small_golden.json) come from a reference
implementation: tools/gen_tokenizer_golden.mjs, run with Node and the npm
package @huggingface/tokenizers.

Run: /usr/bin/python3 tools/gen_tokenizer_fixtures.py
"""
import json
import os

SP = "\u2581"

# Pieces in priority order (first = highest score). Every multi-character
# piece can be split into two pieces of the list, so BPE can reach it.
PIECES = [
    SP + SP, SP + "t", "he", SP + "a", "in", SP + "the", SP + "w", "er", "or",
    SP + "o", "nd", SP + "an", SP + "and", "ll", SP + "h", SP + "s", "re", "ou",
    "es", SP + "c", "ld", SP + "H", SP + "He", "el", "llo", SP + "Hello",
    SP + "wor", SP + "world", SP + "in", "ing", SP + "th", "at", SP + "f",
    SP + "of", "is", SP + "is", "it", SP + "it", "on", SP + "on", "en", "an",
    SP + "b", SP + "be", SP + "beg", SP + "begin", SP + "beginn",
    SP + "beginning", "inn", "ning", "ed", SP + "G", SP + "Go", SP + "God",
    "th", "ea", "ear", "earth", SP + "earth", "av", "ave", "aven", "eaven", SP + "he",
    SP + "heaven", SP + "cre", "cre", "ate", "ated", SP + "created", "reated",
    SP + "caf", "af", "é", SP + "café", SP + SP + SP + SP, "中", "文", "中文",
    SP + "中", "lo", SP + "l", SP + "lo", SP + "low", "ow", "ower", "we", "wer",
    SP + "lower", SP + "low" + "est", "est", "st", "es" + "t",
    ".", ",", "!", "?", ":", ";", "'", "-", "(", ")",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "12", "123",
    SP + "1", SP + "12",
]
# every single character used above, plus the alphabet, so chars are in vocab
CHARS = [SP] + list("etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ") + ["é", "中", "文"]


def build():
    vocab = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    seen = set(vocab)
    for p in PIECES + CHARS:
        if p in seen:
            continue
        seen.add(p)
        vocab.append(p)
        types.append(1)
    # scores: specials and bytes 0, pieces -(rank)
    scores = [0.0] * len(vocab)
    for i in range(259, len(vocab)):
        scores[i] = -float(i - 259)
    ids = {p: i for i, p in enumerate(vocab)}
    normal = [p for i, p in enumerate(vocab) if types[i] == 1]
    merges = []
    for piece in normal:
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            if a in ids and b in ids and types[ids[a]] == 1 and types[ids[b]] == 1:
                merges.append((scores[ids[piece]], ids[a], ids[b], a, b))
    for piece in normal:
        if len(piece) > 1 and not any(m[3] + m[4] == piece for m in merges):
            raise SystemExit("piece %r cannot be reached by a merge" % piece)
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    return vocab, scores, types, [m[3] + " " + m[4] for m in merges]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(root, "tests", "fixtures", "tok")
    os.makedirs(out, exist_ok=True)
    vocab, scores, types, merges = build()
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": vocab[i], "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
            for i in range(3)
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP},
        ]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SP}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": "<unk>",
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": {p: i for i, p in enumerate(vocab)},
            "merges": merges,
        },
    }
    with open(os.path.join(out, "llama_small.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(out, "llama_small.tsv"), "w", encoding="utf-8") as f:
        for i, p in enumerate(vocab):
            f.write("%d\t%g\t%d\t%s\n" % (i, scores[i], types[i], p))
    print("vocab %d, merges %d -> %s" % (len(vocab), len(merges), out))


if __name__ == "__main__":
    main()
