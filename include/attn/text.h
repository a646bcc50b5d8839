/* attn/text.h: BERT's WordPiece tokenizer (uncased or cased), giving the
 * same ids as Hugging Face's BertTokenizerFast, and the byte-level BPE
 * tokenizer of GPT-2 and Llama 3 (attn_bpe_*, below). (A model directory's
 * tokenizer also comes with attn_model_open, attn/models.h.)
 * Users include <attn/attn.h>, which includes this file.
 *
 * Pipeline of attn_tokenizer_encode, per text:
 *   - the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] written literally in
 *     the text are kept as they are (matched before any normalization);
 *   - the rest is normalized: U+0000, U+FFFD and control/format/private-use
 *     characters (Unicode Cc, Cf, Co; \t \n \r excepted) are deleted, white
 *     space becomes ' ', each CJK ideograph becomes its own word; when
 *     lowercasing, accents are stripped (NFD, then marks Mn deleted) and the
 *     text is lowercased;
 *   - it is split at white space, and every punctuation character (ASCII
 *     33-47, 58-64, 91-96, 123-126, or Unicode P*) is a word of its own;
 *   - each word becomes the greedy longest-match-first vocabulary pieces,
 *     continuations prefixed by "##"; a word of more than 100 characters, or
 *     one that cannot be covered by pieces, becomes [UNK];
 *   - the pieces are wrapped as [CLS] pieces [SEP].
 *
 * A tokenizer is immutable after loading: one tokenizer may be used by many
 * threads at once, each with its own context. */
#ifndef ATTN_TEXT_H
#define ATTN_TEXT_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct attn_tokenizer attn_tokenizer;

/* Load a WordPiece vocabulary: one token per line, the id of a token is its
 * 0-based line number (a later duplicate line wins for lookup); trailing
 * spaces, tabs and '\r' are not part of a token. lowercase != 0 selects the
 * uncased pipeline (lowercase and strip accents), 0 the cased one. The
 * vocabulary must contain [UNK], [CLS] and [SEP]. On success *out owns the
 * tokenizer (free with attn_tokenizer_free).
 * Returns ATTN_OK, ATTN_E_ARG (NULL argument), ATTN_E_IO (cannot read the
 * file), ATTN_E_FORMAT (empty, not UTF-8, a required token missing, more
 * than 2^31-1 tokens), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_tokenizer_load(attn_ctx *ctx, const char *vocab_path, int lowercase,
                                               attn_tokenizer **out);

/* Load the tokenizer of a Hugging Face model directory: dir/vocab.txt, with
 * the settings of dir/tokenizer_config.json when that file exists:
 * do_lower_case (default true), strip_accents (null or absent: follows
 * do_lower_case), tokenize_chinese_chars (default true) and model_max_length
 * (see attn_tokenizer_max_len). Returns what attn_tokenizer_load returns;
 * ATTN_E_FORMAT also for a tokenizer_config.json that is not a JSON object
 * or has a setting of the wrong type. */
ATTN_NODISCARD attn_status attn_tokenizer_load_dir(attn_ctx *ctx, const char *dir,
                                                   attn_tokenizer **out);

/* Free a tokenizer. attn_tokenizer_free(NULL) is a no-op. */
void attn_tokenizer_free(attn_tokenizer *tok);

/* Token ids of one UTF-8 text of len bytes (NUL bytes inside are characters
 * like any other control character: deleted). The ids are
 * [CLS] pieces... [SEP]; with max_len > 0 at most max_len ids are produced:
 * [CLS], the first max_len - 2 pieces, [SEP] (what Hugging Face gives with
 * truncation=True, max_length=max_len). max_len <= 0: no truncation.
 * Writes the ids to ids[0..*n_out). ids may be NULL with cap 0 to only count:
 * *n_out is then the number of ids a call would write. text may be NULL when
 * len is 0.
 * Returns ATTN_OK, ATTN_E_ARG (NULL argument, max_len 1, len > 2^31-1, text
 * not valid UTF-8: the message names the byte offset; cap < the number of
 * ids: *n_out is set to that number and nothing is written), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_tokenizer_encode(attn_ctx *ctx, const attn_tokenizer *tok,
                                                 const char *text, size_t len, int max_len,
                                                 int32_t *ids, int cap, int *n_out);

/* Id of a token spelled exactly like `token` (e.g. "[CLS]", "##ing"), or -1. */
int32_t attn_tokenizer_id(const attn_tokenizer *tok, const char *token);
/* The token of an id (NUL-terminated, owned by tok), or NULL if id is out of
 * range. */
const char *attn_tokenizer_token(const attn_tokenizer *tok, int32_t id);
/* Number of ids (lines of the vocabulary). */
int32_t attn_tokenizer_vocab_size(const attn_tokenizer *tok);
/* model_max_length of the directory's tokenizer_config.json, or 0 when not
 * known (attn_tokenizer_load, or a value absent or above 2^30). */
int attn_tokenizer_max_len(const attn_tokenizer *tok);

/* ------------------------------------------------------------------------
 * Byte-level BPE (GPT-2, Llama 3, Qwen2 style), giving the same ids as
 * Hugging Face's `tokenizers` for the files it accepts.
 *
 * Pipeline of attn_bpe_encode, per text:
 *   - the added tokens of tokenizer.json (e.g. <|endoftext|>) written
 *     literally in the text are matched first, leftmost and longest, with
 *     their lstrip/rstrip (white space around them swallowed);
 *   - the text between them is normalized to NFC when tokenizer.json has an
 *     NFC normalizer (Qwen2), then pre-tokenized: with tokenizer.json's Split
 *     regex when it has one (the Llama 3 pattern, or Qwen2's single-digit
 *     variant), then ByteLevel: a space is prepended to each piece that does
 *     not start with one when add_prefix_space, and GPT-2's regex splits it
 *     when use_regex ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
 *     ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+); categories come from utf8proc;
 *   - each piece's bytes are merged pair by pair, lowest merge rank first
 *     (leftmost among equals); with ignore_merges a piece that is itself in
 *     the vocabulary is that token;
 *   - with add_special, the special tokens of the post_processor's
 *     TemplateProcessing "single" template are put around the ids (Llama 3:
 *     <|begin_of_text|> first; GPT-2 files add nothing).
 * A tokenizer.json that asks for anything else (another normalizer, another
 * pre-tokenizer or regex, byte_fallback, subword prefixes/suffixes, dropout,
 * single_word added tokens) is refused with ATTN_E_FORMAT naming it.
 * Immutable after loading: one tokenizer may serve many threads at once. */

typedef struct attn_bpe attn_bpe;

/* Load dir/tokenizer.json (model.type "BPE", byte-level pre-tokenizer),
 * else dir/vocab.json + dir/merges.txt (GPT-2's two-file form: GPT-2's
 * regex, <|endoftext|> an added token if the vocabulary has it,
 * add_prefix_space from tokenizer_config.json). dir/tokenizer_config.json's
 * bos_token / eos_token, when present and in the vocabulary, set
 * attn_bpe_bos_id / attn_bpe_eos_id. Returns ATTN_OK, ATTN_E_ARG (NULL
 * argument), ATTN_E_NOTFOUND (neither form in dir), ATTN_E_IO, ATTN_E_FORMAT
 * (not JSON, unsupported settings, a merge of tokens outside the vocabulary,
 * a file over 256 MiB, more than 2^24 ids, a token over 4096 bytes),
 * ATTN_E_NOMEM. On success *out owns the tokenizer (attn_bpe_free). */
ATTN_NODISCARD attn_status attn_bpe_load_dir(attn_ctx *ctx, const char *dir, attn_bpe **out);
/* Load one tokenizer.json file (as attn_bpe_load_dir, without the config). */
ATTN_NODISCARD attn_status attn_bpe_load_json(attn_ctx *ctx, const char *tokenizer_json,
                                              attn_bpe **out);
/* Load GPT-2's vocab.json ({token: id}) + merges.txt (an optional
 * "#version" first line, then "a b" per line, in rank order). */
ATTN_NODISCARD attn_status attn_bpe_load_files(attn_ctx *ctx, const char *vocab_json,
                                               const char *merges_txt, attn_bpe **out);
/* Free a tokenizer. attn_bpe_free(NULL) is a no-op. */
void attn_bpe_free(attn_bpe *t);

/* Token ids of one UTF-8 text of len bytes (text may be NULL when len is 0).
 * add_special != 0 puts the post_processor template's special tokens around
 * them (a BOS for Llama 3; nothing for GPT-2). Writes ids[0..*n_out); ids
 * NULL with cap 0 only counts. Returns ATTN_OK, ATTN_E_ARG (NULL argument,
 * len over 2^31-17, text not valid UTF-8: the message names the byte offset;
 * cap < the number of ids: *n_out is set to that number, ids[0..cap) may
 * have been overwritten), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bpe_encode(attn_ctx *ctx, const attn_bpe *t, const char *text,
                                           size_t len, int add_special, int32_t *ids, int cap,
                                           int *n_out);
/* The raw bytes of one token (byte-level decoded, NOT NUL-terminated, maybe
 * a part of a UTF-8 sequence), *len set; NULL (and *len 0) if id is out of
 * range. Added tokens give their text. */
const unsigned char *attn_bpe_token_bytes(const attn_bpe *t, int32_t id, size_t *len);
/* Decode n ids to text: their bytes concatenated, every invalid UTF-8
 * stretch replaced by U+FFFD as Hugging Face's decode does (one per maximal
 * prefix of a valid sequence, or per stray byte); special tokens are kept.
 * Writes buf[0..*n_out), plus a NUL when cap > *n_out; buf NULL with cap 0
 * only counts. Returns ATTN_OK, ATTN_E_ARG (NULL argument, an id outside
 * the vocabulary: the message names it; cap < the bytes needed: *n_out set,
 * buf untouched), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bpe_decode(attn_ctx *ctx, const attn_bpe *t, const int32_t *ids,
                                           int n, char *buf, size_t cap, size_t *n_out);
/* Id of the vocabulary or added token spelled exactly `token` (as written in
 * the file, e.g. "\u0120the" for " the"), or -1. */
int32_t attn_bpe_id(const attn_bpe *t, const char *token);
/* Number of ids, added tokens included (the largest id + 1). */
int32_t attn_bpe_vocab_size(const attn_bpe *t);
/* The BOS token: the first special token of the post_processor template,
 * else tokenizer_config.json's bos_token (attn_bpe_load_dir); -1 if none. */
int32_t attn_bpe_bos_id(const attn_bpe *t);
/* The EOS token: tokenizer_config.json's eos_token (attn_bpe_load_dir),
 * else <|endoftext|>, <|end_of_text|> or </s> when present; -1 if none. */
int32_t attn_bpe_eos_id(const attn_bpe *t);

/* The largest vocabulary attn_bpe_train makes. */
#define ATTN_BPE_TRAIN_MAX_VOCAB 65536

/* Train a byte-level BPE tokenizer on len bytes of UTF-8 text, in the form
 * of GPT-2's (its pre-tokenization regex, no prefix space, no added
 * tokens): ids 0..255 are the bytes (byte b is id b, spelled by GPT-2's
 * byte-to-unicode map), then one id per merge. A merge joins the most
 * frequent adjacent pair of tokens within the pre-tokens, counted over the
 * whole text; ties go to the smaller (first id, second id). Training stops
 * at vocab_size ids, or earlier when no pair occurs twice (then
 * attn_bpe_vocab_size is smaller); a merge whose token would exceed 4096
 * bytes (its spelling) is skipped. Deterministic: the same text and size give the same
 * tokenizer on any machine. Time about (vocab_size - 256) x (distinct pairs
 * + bytes of the distinct pre-tokens). Returns ATTN_OK, ATTN_E_ARG (NULL
 * argument, vocab_size outside [256, ATTN_BPE_TRAIN_MAX_VOCAB], text over
 * 2^31-17 bytes or not valid UTF-8: the message names the byte offset),
 * ATTN_E_NOMEM. On success *out owns the tokenizer (attn_bpe_free). */
ATTN_NODISCARD attn_status attn_bpe_train(attn_ctx *ctx, const char *text, size_t len,
                                          int32_t vocab_size, attn_bpe **out);
/* Write a GPT-2-style byte-level tokenizer (one attn_bpe_train made, or one
 * loaded with the same settings) into dir (created if missing):
 * tokenizer.json, vocab.json and merges.txt, which Hugging Face's
 * `tokenizers` (Tokenizer.from_file), transformers' GPT2TokenizerFast and
 * attn_bpe_load_dir read with the same ids. Each file is written by the
 * output-file rule (attn_outfile_open). Returns ATTN_OK, ATTN_E_ARG (NULL
 * argument, a tokenizer with another pre-tokenizer, a normalizer, added
 * tokens, a template or gaps in its ids), ATTN_E_IO, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bpe_save(attn_ctx *ctx, const attn_bpe *t, const char *dir);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_TEXT_H */
