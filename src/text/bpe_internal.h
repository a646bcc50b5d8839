/* Internal pieces of the byte-level BPE tokenizer (never installed). */
#ifndef ATTN_BPE_INTERNAL_H
#define ATTN_BPE_INTERNAL_H

#include "core/internal.h"

#include <attn/text.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on what a tokenizer file may hold (hostile files are refused, not
 * allocated for). */
#define ATTN_BPE_MAX_FILE ((size_t)256 << 20) /* bytes of tokenizer.json / vocab / merges */
#define ATTN_BPE_MAX_VOCAB (1 << 24)          /* ids, added tokens included */
#define ATTN_BPE_MAX_TOKEN 4096               /* bytes of one token */
#define ATTN_BPE_MAX_TEMPLATE 8               /* special ids before / after $A */

/* The pre-tokenization regexes this implementation knows (bpe_pretok.c). */
typedef enum attn__bpe_split {
    ATTN_BPE_SPLIT_NONE = 0, /* the whole text is one piece */
    ATTN_BPE_SPLIT_GPT2,     /* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|... */
    ATTN_BPE_SPLIT_LLAMA3,   /* Llama 3: (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|... */
    ATTN_BPE_SPLIT_QWEN2     /* Llama 3's with \p{N} (single digits) for \p{N}{1,3} */
} attn__bpe_split;

/* Which known regex the pattern string is, or -1. */
int attn__bpe_split_of_regex(const char *pattern);
/* End (byte offset) of the piece that starts at byte i < n of the valid
 * UTF-8 text s[0..n), under pre-tokenization regex `kind`. */
size_t attn__bpe_piece_end(attn__bpe_split kind, const uint8_t *s, size_t n, size_t i);

/* An open-addressing hash table of ids keyed by byte strings. */
typedef struct attn__bpe_map {
    int32_t *slots; /* -1 = empty */
    uint32_t mask;
} attn__bpe_map;

typedef struct attn__bpe_merge {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX = empty slot */
    int32_t rank, id;
} attn__bpe_merge;

typedef struct attn__bpe_added {
    int32_t id;
    uint32_t off, len; /* the content in attn_bpe.spell */
    int lstrip, rstrip;
} attn__bpe_added;

struct attn_bpe {
    int32_t n;   /* ids 0..n-1 (gaps possible: then len == UINT32_MAX) */
    char *bytes; /* every token's raw bytes (byte-level decoded) */
    uint32_t *boff, *blen;
    char *spell; /* every token as written in the file, NUL-terminated */
    uint32_t *soff, *slen;
    uint32_t *shash;        /* hash of the spelling */
    uint32_t *bhash;        /* hash of the raw bytes */
    attn__bpe_map by_bytes; /* model vocabulary, by raw bytes (what BPE looks up) */
    attn__bpe_map by_spell; /* all tokens, by spelling (attn_bpe_id) */
    attn__bpe_merge *merges;
    uint32_t merge_mask;
    int32_t byte_id[256]; /* id of each single-byte token, -1 if absent */
    attn__bpe_added *added;
    int n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */
    /* a trie of the added tokens' bytes, for leftmost-longest matching:
     * edge (node, byte) -> child in an open-addressing table, and per node
     * the index in added[] of the token ending there (-1: none) */
    struct attn__bpe_edge {
        uint32_t key; /* node * 256 + byte + 1; 0 = empty slot */
        int32_t child;
    } * edges;
    uint32_t edge_mask;
    int32_t *term;
    attn__bpe_split split; /* a Split pre-tokenizer's regex (or NONE) */
    int bl_regex;          /* ByteLevel's own GPT-2 regex (use_regex) */
    int add_prefix_space;
    int ignore_merges;
    int nfc;      /* an NFC normalizer (Qwen2) */
    int32_t unk;  /* the token of a byte without one (-1: such bytes are dropped) */
    int fuse_unk; /* consecutive such bytes give one unk */
    int32_t prefix[ATTN_BPE_MAX_TEMPLATE], suffix[ATTN_BPE_MAX_TEMPLATE];
    int n_prefix, n_suffix;
    int32_t bos, eos;
    /* whole[id] = 1 when BPE of the token's own bytes gives just that
     * token: a pre-token found in the vocabulary with this flag needs no
     * merging (filled by attn__bpe_find_wholes; NULL until then) */
    uint8_t *whole;
};

/* Fill t->whole once the merges are loaded. Returns 0, or -1 when out of
 * memory. */
int attn__bpe_find_wholes(attn_bpe *t);

/* FNV-1a of a byte string. */
static inline uint32_t attn__bpe_hash(const void *p, size_t n) {
    const uint8_t *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

/* Class of code point c for the pre-tokenization regexes: 'L' (\p{L}),
 * 'N' (\p{N}), 'S' (\s) or 'O' (other). */
int attn__bpe_class(int32_t c);

/* White space as the reference's lstrip/rstrip see it (Unicode White_Space). */
int attn__bpe_is_space(int32_t c);

static inline uint32_t attn__bpe_edge_slot(uint32_t key, uint32_t mask) {
    return (key * 2654435761u) >> 7 & mask;
}

/* Id of the model token whose raw bytes are s[0..n) (hash h), or -1. */
int32_t attn__bpe_find_bytes(const attn_bpe *t, uint32_t h, const void *s, size_t n);

/* Length of the UTF-8 sequence at s[i] (i < n) when valid (shortest form, no
 * surrogates, at most U+10FFFF), else 0 (bpe.c). */
size_t attn__bpe_utf8_len(const uint8_t *s, size_t i, size_t n);

/* A tokenizer from a parsed tokenizer.json object (bpe_load.c; what names
 * it in messages). j stays the caller's. */
struct json_t;
attn_status attn__bpe_load_obj(attn_ctx *ctx, const char *what, struct json_t *j, attn_bpe **out);

/* The tokenizer.json object of a GPT-2-style byte-level BPE (ByteLevel
 * pre-tokenizer with GPT-2's regex, no prefix space, ByteLevel decoder, no
 * added tokens): ids 0..n-1 spelled spell + soff[id] (slen[id] bytes),
 * merges "a b" of ids ma[r], mb[r] in rank order (bpe_train.c). NULL when
 * out of memory. */
struct json_t *attn__bpe_gpt2_json(int32_t n, const char *spell, const uint32_t *soff,
                                   const uint32_t *slen, const int32_t *ma, const int32_t *mb,
                                   int32_t nm);

#endif /* ATTN_BPE_INTERNAL_H */
