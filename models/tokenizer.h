/* cherryq: tokenizers.
 *
 * One opaque type, two kinds:
 *
 *  CQ_TOK_SPM   LLaMA-1/2 SentencePiece-style BPE over UTF-8 characters with
 *               byte fallback (<0xNN> tokens). Loaded either from a Hugging Face
 *               tokenizer.json (model.type "BPE", merges ranked: lowest rank
 *               merges first, ties leftmost: what `tokenizers` does) or from the
 *               GGUF arrays tokens/scores/token_type (no merges: llama.cpp's
 *               llm_tokenizer_spm: merge the adjacent pair whose concatenation is
 *               in the vocab with the highest score, ties leftmost).
 *               Text is normalized as the LLaMA tokenizer does: "▁" (U+2581) is
 *               prepended to non-empty text and every ' ' becomes "▁".
 *  CQ_TOK_BYTE  byte-level BPE (GPT-2 style), the kind cherryq trains for its
 *               own small model (cq_bpe_train). Saved/loaded as a Hugging Face
 *               tokenizer.json whose pre_tokenizer is
 *               Sequence[Split(regex, Isolated), ByteLevel(use_regex false)],
 *               decoder ByteLevel. The Split regex is exactly cherryq's
 *               regex-free splitter (GPT-2's pattern with ASCII classes; every
 *               non-ASCII character counts as a letter), so `tokenizers`
 *               encodes valid UTF-8 text to the same ids as cherryq.
 *
 * Special tokens (<s>, </s>, added tokens) are never matched inside the text:
 * encode treats "<s>" in the input as plain characters. BOS is added only when
 * the caller asks (add_bos).
 *
 * Decoding: control tokens (BOS/EOS/other special tokens) give no text; byte
 * tokens are gathered as raw bytes, so a UTF-8 character split over several
 * byte tokens comes out whole. For CQ_TOK_SPM "▁" becomes ' ' and, as
 * sentencepiece does, the leading space of the first text-producing normal
 * piece of the sequence is removed (the one the normalizer prepended); a
 * leading space that came from a byte token is kept. The unknown token decodes
 * to its piece text ("<unk>"). decode(encode(x)) == x for CQ_TOK_BYTE for any
 * byte string, and for CQ_TOK_SPM for any valid UTF-8 text whose characters
 * are covered by the vocab or by byte fallback.
 *
 * All functions return 0 or a negative CQ_E* code and log what was wrong. A
 * tokenizer is immutable after creation: concurrent encode/decode calls on the
 * same tokenizer are safe.
 */
#ifndef CQ_TOKENIZER_H
#define CQ_TOKENIZER_H

#include "cq_base.h"

typedef struct cq_tokenizer cq_tokenizer;

typedef enum {
    CQ_TOK_SPM = 1,    /* LLaMA SentencePiece-style BPE with byte fallback */
    CQ_TOK_BYTE = 2,   /* byte-level BPE (GPT-2 style)                      */
} cq_tokenizer_kind;

/* GGUF tokenizer.ggml.token_type values. */
enum {
    CQ_TOKTYPE_NORMAL = 1,
    CQ_TOKTYPE_UNKNOWN = 2,
    CQ_TOKTYPE_CONTROL = 3,
    CQ_TOKTYPE_USER_DEFINED = 4,
    CQ_TOKTYPE_UNUSED = 5,
    CQ_TOKTYPE_BYTE = 6,
};

/* Ids of the special tokens cq_bpe_train creates: bytes 0..255 are ids 0..255
 * (id == byte value), then <s> and </s>; merges start at CQ_BPE_FIRST_MERGE. */
#define CQ_BPE_BOS_ID 256
#define CQ_BPE_EOS_ID 257
#define CQ_BPE_FIRST_MERGE 258

/* Loads a Hugging Face tokenizer.json. The kind is detected from the file: a
 * ByteLevel pre_tokenizer (alone or inside a Sequence) gives CQ_TOK_BYTE,
 * otherwise CQ_TOK_SPM (which needs model.type "BPE"; normalizer null,
 * Prepend, Replace or a Sequence of them; pre_tokenizer null or Metaspace).
 * Errors: CQ_ENOENT (no file), CQ_EBADMSG (malformed JSON or contents),
 * CQ_ENOTSUP (a component cherryq does not implement), CQ_ENOMEM. */
CQ_API int cq_tokenizer_load_json(const char *path, cq_tokenizer **out);

/* Same, from a JSON text in memory (len bytes; need not be NUL-terminated).
 * `what` names the source in error messages (may be NULL). */
CQ_API int cq_tokenizer_load_json_mem(const char *json, size_t len, const char *what,
                                      cq_tokenizer **out);

/* CQ_TOK_SPM from GGUF-style arrays: tokens[i] (UTF-8, NUL-terminated),
 * scores[i], types[i] (CQ_TOKTYPE_*; byte tokens must be spelled "<0xNN>").
 * scores may be NULL (all 0) and types NULL (all normal except "<0xNN>" byte
 * tokens and the given bos/eos (control) and unk (unknown)). bos/eos/unk may
 * be -1. Encoding follows llama.cpp's SPM tokenizer with add_space_prefix. */
CQ_API int cq_tokenizer_from_spm_arrays(const char *const *tokens, const float *scores,
                                        const int32_t *types, int n, int bos, int eos,
                                        int unk, cq_tokenizer **out);

/* The LLaMA tokenizer from a GGUF file's metadata (tokenizer.ggml.model
 * "llama" or absent; tokens, optional scores and token_type, bos/eos/unk
 * ids). Other tokenizer models give CQ_ENOTSUP. */
CQ_API int cq_tokenizer_load_gguf(const char *path, cq_tokenizer **out);
CQ_API void cq_tokenizer_destroy(cq_tokenizer **t);

/* Encodes len bytes of text (any bytes; no NUL needed). *ids is malloc'ed
 * (free() it; non-NULL even when *n == 0). add_bos prepends the BOS id
 * (CQ_EINVAL if the tokenizer has none). */
CQ_API int cq_tokenizer_encode(const cq_tokenizer *t, const char *text, size_t len,
                               int add_bos, int32_t **ids, size_t *n);

/* Decodes ids into a malloc'ed NUL-terminated string (*len, if non-NULL, gets
 * its length; the text may contain NUL bytes for CQ_TOK_BYTE). Ids out of
 * range: CQ_EINVAL. */
CQ_API int cq_tokenizer_decode(const cq_tokenizer *t, const int32_t *ids, size_t n,
                               char **text, size_t *len);

/* Bytes one token stands for, for streaming output: "▁" already turned into
 * ' ', a byte token gives its byte, a control token gives "" (len 0). The
 * pointer stays valid until the tokenizer is destroyed. NULL if id is out of
 * range. (The sentencepiece leading-space strip of cq_tokenizer_decode is the
 * caller's business when streaming.) */
CQ_API const char *cq_tokenizer_token_piece(const cq_tokenizer *t, int32_t id, size_t *len);

/* The vocab entry as stored: "▁the" / "<0x0A>" for CQ_TOK_SPM, the raw bytes
 * for CQ_TOK_BYTE (not the GPT-2 unicode spelling). NULL if out of range. */
CQ_API const char *cq_tokenizer_token_text(const cq_tokenizer *t, int32_t id, size_t *len);

/* Id of a vocab entry spelled as cq_tokenizer_token_text gives it, or -1. */
CQ_API int32_t cq_tokenizer_find(const cq_tokenizer *t, const char *text, size_t len);

CQ_API int cq_tokenizer_kind_of(const cq_tokenizer *t);
CQ_API int cq_tokenizer_n_vocab(const cq_tokenizer *t);
CQ_API int cq_tokenizer_n_merges(const cq_tokenizer *t);
CQ_API int32_t cq_tokenizer_bos(const cq_tokenizer *t);   /* -1 if none */
/* The token a prompt starts with by the tokenizer's own rules, -1 if none:
 * the special token a tokenizer.json post_processor template puts first
 * (TemplateProcessing, also inside a Sequence: LLaMA-2's <s>, LLaMA-3's
 * <|begin_of_text|>); with no template, BOS for sentencepiece-style
 * tokenizers (LLaMA's add_bos_token) and none for byte-level BPE. */
CQ_API int32_t cq_tokenizer_lead(const cq_tokenizer *t);
CQ_API int32_t cq_tokenizer_eos(const cq_tokenizer *t);   /* -1 if none */
CQ_API int32_t cq_tokenizer_unk(const cq_tokenizer *t);   /* -1 if none */
CQ_API int32_t cq_tokenizer_token_type(const cq_tokenizer *t, int32_t id); /* CQ_TOKTYPE_*, or 0 */

/* Writes a CQ_TOK_BYTE tokenizer as a Hugging Face tokenizer.json, atomically.
 * CQ_ENOTSUP for CQ_TOK_SPM tokenizers. */
CQ_API int cq_tokenizer_save_json(const cq_tokenizer *t, const char *path);

/* Same, into a malloc'ed NUL-terminated string. */
CQ_API int cq_tokenizer_to_json(const cq_tokenizer *t, char **json);

/* Trains a byte-level BPE on len bytes of text: base vocab = the 256 bytes,
 * <s> = CQ_BPE_BOS_ID, </s> = CQ_BPE_EOS_ID, then up to vocab_size - 258
 * merges of the most frequent adjacent pair within pre-tokenized words (ties:
 * the pair with the smallest (left id, right id)). Deterministic. Stops early
 * when no pair is left, so the vocab can end smaller than vocab_size on a small
 * text. vocab_size must be in [258, 1<<24]. */
CQ_API int cq_bpe_train(const char *text, size_t len, int vocab_size, cq_tokenizer **out);

/* The pre-tokenizer of CQ_TOK_BYTE, exposed for tests: length of the word that
 * starts at text[0] (>= 1 when len >= 1). */
CQ_API size_t cq_bpe_next_word(const char *text, size_t len);

#endif
