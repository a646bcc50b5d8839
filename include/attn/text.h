/* attn/text.h: BERT's WordPiece tokenizer (uncased or cased), giving the
 * same ids as Hugging Face's BertTokenizerFast. (A model directory's
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

#ifdef __cplusplus
}
#endif
#endif /* ATTN_TEXT_H */
