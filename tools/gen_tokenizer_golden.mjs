// Expected encodings for the tokenizer tests, from a reference implementation
// of Hugging Face tokenizers (the npm package @huggingface/tokenizers, a pure
// JS port of `tokenizers`).
//
//   mkdir /tmp/tokref && cd /tmp/tokref && npm install @huggingface/tokenizers@0.2.0
//   NODE_PATH=/tmp/tokref/node_modules node tools/gen_tokenizer_golden.mjs \
//       tests/fixtures/tok/llama_small.json tests/fixtures/tok/llama_small_golden.json
//
// Writes [{"text": ..., "ids": [...], "decoded": ...}, ...] for the texts
// below (no special tokens added: cherryq adds BOS itself; texts contain no
// "<s>" since `tokenizers` matches special tokens inside text and cherryq
// does not).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), "x"));
const { Tokenizer } = require("@huggingface/tokenizers");

const [, , tokPath, outPath] = process.argv;
const tj = JSON.parse(fs.readFileSync(tokPath, "utf8"));
const tok = new Tokenizer(tj, {});

const texts = [
  "Hello world",
  "Hello",
  " Hello",
  "  Hello  world  ",
  "Hello\nworld\n",
  "\tindented\ttabs",
  "In the beginning God created the heaven and the earth.",
  "And the earth was without form, and void; and darkness was upon the face of the deep.",
  "café 中文 中",
  "I \u2764 llamas \uD83E\uDD99!",
  "lower lowest low lo l",
  "12 123 1234 0.5",
  "\"quoted\" (parens) [brackets] {braces} <angle>",
  "    four spaces then    four more",
  "the the the thethe",
  "ÀÉÎÕÜ àéîõü ß Ω",
  "don't won't it's we're they've I'm",
  "a",
  " ",
  "\n",
  "Ge1:1 In the beginning God created the heaven and the earth.\nGe1:2 And the earth was without form, and void;",
];

const out = texts.map((text) => {
  const enc = tok.encode(text, { add_special_tokens: false });
  return { text, ids: enc.ids, decoded: tok.decode(enc.ids, { skip_special_tokens: true }) };
});
fs.writeFileSync(outPath, JSON.stringify(out, null, 1) + "\n");
console.log(`${out.length} cases -> ${outPath}`);
