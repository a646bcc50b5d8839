/* Internal pieces of the BERT WordPiece tokenizer (never installed). */
#ifndef ATTN_TEXT_INTERNAL_H
#define ATTN_TEXT_INTERNAL_H

#include "core/internal.h"

#include <attn/text.h>
#include <stddef.h>
#include <stdint.h>

/* Longest word (in code points) WordPiece splits; longer words become [UNK]
 * (max_input_chars_per_word of BERT's WordPiece). */
#define ATTN_TOK_MAX_WORD_CHARS 100

/* One vocabulary entry: the token's bytes live in attn_tokenizer.text. */
typedef struct attn__vocab_entry {
    uint32_t off;  /* byte offset of the NUL-terminated token in text */
    uint32_t len;  /* length in bytes */
    uint32_t hash; /* attn__fnv of the token, checked before its bytes */
} attn__vocab_entry;

struct attn_tokenizer {
    char *text;                 /* all tokens, NUL-separated */
    attn__vocab_entry *entries; /* [n] by id */
    int32_t n;
    int32_t *slots; /* open-addressing hash table of ids, -1 = empty */
    uint32_t mask;  /* slot count - 1 (a power of two) */
    int lowercase;
    int strip_accents;
    int chinese; /* put spaces around CJK ideographs */
    int max_len; /* model_max_length from a model directory, 0 if unknown */
    int32_t unk, cls, sep;
    uint32_t max_token_bytes; /* longest token: no longer piece can match */
    /* special tokens matched verbatim in the raw text, before normalization */
    int32_t special_ids[8];
    int n_special;
};

/* FNV-1a, extendable: attn__fnv(attn__fnv(ATTN_FNV_BASIS, a), b) is the hash
 * of a || b, so WordPiece hashes every candidate piece in one pass. */
#define ATTN_FNV_BASIS 2166136261u
static inline uint32_t attn__fnv(uint32_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Id of the token formed by the bytes pre[0..npre) followed by s[0..ns), or
 * -1; h is that token's attn__fnv hash. */
int32_t attn__vocab_find(const attn_tokenizer *tok, uint32_t h, const char *pre, size_t npre,
                         const char *s, size_t ns);

/* BertNormalizer on n code points (valid scalar values): clean text, space
 * out CJK ideographs, NFD + drop nonspacing marks when strip_accents, then
 * lowercase. On success *out is a new attn__malloc'd array of *nout code
 * points (the caller frees it). Returns ATTN_OK or ATTN_E_NOMEM. */
attn_status attn__bert_normalize(attn_ctx *ctx, const int32_t *cp, size_t n, int lowercase,
                                 int strip_accents, int chinese, int32_t **out, size_t *nout);

/* Character classes of the pre-tokenizer (applied after normalization). */
int attn__is_bert_space(int32_t c);
int attn__is_bert_punct(int32_t c);

/* How the reference tokenizer's older Unicode tables classify c where they
 * differ from utf8proc's (unicode_compat.c). */
enum { ATTN_HF_SAME = 0, ATTN_HF_PLAIN, ATTN_HF_PUNCT, ATTN_HF_MARK };
int attn__hf_compat_class(int32_t c);
/* The reference's lowercase of c where utf8proc has none, or -1. */
int32_t attn__hf_compat_lower(int32_t c);

/* Unicode version of the utf8proc in use ("15.0.0"), for test diagnostics. */
const char *attn__text_unicode_version(void);

#endif /* ATTN_TEXT_INTERNAL_H */
