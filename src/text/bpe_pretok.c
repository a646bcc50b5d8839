/* Pre-tokenization of byte-level BPE: the regexes of GPT-2, Llama 3 and
 * Qwen2, implemented by hand over Unicode categories (utf8proc). Each regex
 * is an ordered alternation applied leftmost-first, as the reference's
 * regex engine does; the functions below try the alternatives in order at
 * a piece's first character.
 *
 * Classes: \s is White_Space (\t..\r, U+0085, and the categories Zs, Zl,
 * Zp), \p{L} the categories L*, \p{N} the categories N*. */
#include "text/bpe_internal.h"

#include <string.h>
#include <utf8proc.h>

static const char *const gpt2_re =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char *const llama3_re =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const qwen2_re =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int attn__bpe_split_of_regex(const char *p) {
    if (!strcmp(p, gpt2_re)) return ATTN_BPE_SPLIT_GPT2;
    if (!strcmp(p, llama3_re)) return ATTN_BPE_SPLIT_LLAMA3;
    if (!strcmp(p, qwen2_re)) return ATTN_BPE_SPLIT_QWEN2;
    return -1;
}

enum { K_END = 0, K_OTHER, K_SPACE, K_NL, K_L, K_N }; /* K_NL: \r or \n */

/* Classes of the ASCII characters (most of any text: no utf8proc call). */
// clang-format off
static const uint8_t ascii[128] = {
    /* 0x00-0x1f: controls are "other" except \t \n \v \f \r */
    K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
    K_OTHER, K_SPACE, K_NL,    K_SPACE, K_SPACE, K_NL,    K_OTHER, K_OTHER,
    K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
    K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
    /* ' ' ! " # $ % & ' ( ) * + , - . / */
    K_SPACE, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
    K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
    /* 0-9 : ; < = > ? */
    K_N, K_N, K_N, K_N, K_N, K_N, K_N, K_N, K_N, K_N,
    K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
    /* @ A-Z [ \ ] ^ _ */
    K_OTHER, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L,
    K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L,
    K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
    /* ` a-z { | } ~ DEL */
    K_OTHER, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L,
    K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L, K_L,
    K_OTHER, K_OTHER, K_OTHER, K_OTHER, K_OTHER,
};
// clang-format on

/* Code points the reference's regex engine (Unicode 16) knows as letters or
 * numbers and utf8proc (Unicode 15) does not know at all (category Cn): the
 * complete list, found by classifying every scalar value both ways
 * (tests/data/bpe/classes.txt holds the reference's classes and test_bpe
 * checks each code point, so another utf8proc shows up as a list there). */
static const struct {
    int32_t lo, hi;
    char k;
} newer[] = {
    {0x1C89, 0x1C8A, 'L'},   {0xA7CB, 0xA7CD, 'L'},   {0xA7DA, 0xA7DC, 'L'},
    {0x105C0, 0x105F3, 'L'}, {0x10D40, 0x10D49, 'N'}, {0x10D4A, 0x10D65, 'L'},
    {0x10D6F, 0x10D85, 'L'}, {0x10EC2, 0x10EC4, 'L'}, {0x11380, 0x11389, 'L'},
    {0x1138B, 0x1138B, 'L'}, {0x1138E, 0x1138E, 'L'}, {0x11390, 0x113B5, 'L'},
    {0x113B7, 0x113B7, 'L'}, {0x113D1, 0x113D1, 'L'}, {0x113D3, 0x113D3, 'L'},
    {0x116D0, 0x116E3, 'N'}, {0x11BC0, 0x11BE0, 'L'}, {0x11BF0, 0x11BF9, 'N'},
    {0x13460, 0x143FA, 'L'}, {0x16100, 0x1611D, 'L'}, {0x16130, 0x16139, 'N'},
    {0x16D40, 0x16D6C, 'L'}, {0x16D70, 0x16D79, 'N'}, {0x18CFF, 0x18CFF, 'L'},
    {0x1CCF0, 0x1CCF9, 'N'}, {0x1E5D0, 0x1E5ED, 'L'}, {0x1E5F0, 0x1E5F0, 'L'},
    {0x1E5F1, 0x1E5FA, 'N'}, {0x2EBF0, 0x2EE5D, 'L'},
};

static int newer_class(int32_t c) {
    size_t a = 0, b = sizeof newer / sizeof newer[0];
    while (a < b) {
        size_t m = (a + b) / 2;
        if (c < newer[m].lo)
            b = m;
        else if (c > newer[m].hi)
            a = m + 1;
        else
            return newer[m].k == 'L' ? K_L : K_N;
    }
    return K_OTHER;
}

static int class_of(int32_t c) {
    if (c < 128) return ascii[c];
    if (c == 0x85) return K_SPACE;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return K_L;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return K_N;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
        return K_SPACE;
    case UTF8PROC_CATEGORY_CN:
        return newer_class(c);
    default:
        return K_OTHER;
    }
}

int attn__bpe_class(int32_t c) {
    switch (class_of(c)) {
    case K_L:
        return 'L';
    case K_N:
        return 'N';
    case K_SPACE:
    case K_NL:
        return 'S';
    default:
        return 'O';
    }
}

int attn__bpe_is_space(int32_t c) {
    int k = class_of(c);
    return k == K_SPACE || k == K_NL;
}

/* A cursor over valid UTF-8: the code point at s[i] and its length. */
typedef struct cur {
    const uint8_t *s;
    size_t n;
} cur;

static int32_t cp_at(const cur *c, size_t i, size_t *len) {
    const uint8_t *p = c->s + i;
    if (p[0] < 0x80) {
        *len = 1;
        return p[0];
    }
    if (p[0] < 0xe0) {
        *len = 2;
        return ((p[0] & 0x1f) << 6) | (p[1] & 0x3f);
    }
    if (p[0] < 0xf0) {
        *len = 3;
        return ((p[0] & 0x0f) << 12) | ((p[1] & 0x3f) << 6) | (p[2] & 0x3f);
    }
    *len = 4;
    return ((p[0] & 0x07) << 18) | ((p[1] & 0x3f) << 12) | ((p[2] & 0x3f) << 6) | (p[3] & 0x3f);
}

/* Class of the character at i (K_END at the end); its length in *len. */
static int kind_at(const cur *c, size_t i, size_t *len) {
    if (i >= c->n) {
        *len = 0;
        return K_END;
    }
    if (c->s[i] < 0x80) {
        *len = 1;
        return ascii[c->s[i]];
    }
    return class_of(cp_at(c, i, len));
}

/* End of the run of characters starting at i whose class satisfies `want`
 * (a bit mask of classes); at most max characters (0 = no limit). */
static size_t run(const cur *c, size_t i, unsigned want, size_t max) {
    size_t k = 0, len;
    while ((max == 0 || k < max) && (want >> kind_at(c, i, &len)) & 1u && len) {
        i += len;
        k++;
    }
    return i;
}

#define B(k) (1u << (k))
#define SPACES (B(K_SPACE) | B(K_NL))
#define OTHERS B(K_OTHER)

/* The contractions 's 't 're 've 'm 'll 'd at i (s[i] == '\''): length, or
 * 0. With fold, letters match in either case (and 's also matches the long
 * s U+017F, which case-folds to s). */
static size_t contraction(const cur *c, size_t i, int fold) {
    size_t n = c->n;
    if (i + 1 >= n) return 0;
    uint8_t a = c->s[i + 1], b = i + 2 < n ? c->s[i + 2] : 0;
    if (fold) {
        if (a >= 'A' && a <= 'Z') a = (uint8_t)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (uint8_t)(b + 32);
        if (a == 0xc5 && b == 0xbf) return 3; /* 'ſ */
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* \s+(?!\S) at i (a white-space character), else \s+: the run of white
 * space, minus its last character when a non-space follows it. */
static size_t spaces(const cur *c, size_t i) {
    size_t j = run(c, i, SPACES, 0);
    if (j == c->n) return j;
    /* back off one character (the run's last) when that leaves one */
    size_t last = j - 1;
    while ((c->s[last] & 0xc0) == 0x80)
        last--;
    return last > i ? last : j;
}

static size_t gpt2_piece(const cur *c, size_t i) {
    size_t len, len2;
    if (c->s[i] == '\'') {
        size_t k = contraction(c, i, 0);
        if (k) return i + k;
    }
    int k = kind_at(c, i, &len);
    size_t j = i;
    if (c->s[i] == ' ') {
        int k2 = kind_at(c, i + 1, &len2);
        if (k2 == K_L || k2 == K_N || k2 == K_OTHER) {
            j = i + 1;
            k = k2;
        }
    }
    if (k == K_L) return run(c, j, B(K_L), 0);
    if (k == K_N) return run(c, j, B(K_N), 0);
    if (k == K_OTHER) return run(c, j, OTHERS, 0);
    return spaces(c, i);
}

static size_t llama3_piece(const cur *c, size_t i, size_t digits) {
    size_t len, len2;
    if (c->s[i] == '\'') {
        size_t k = contraction(c, i, 1);
        if (k) return i + k;
    }
    int k = kind_at(c, i, &len);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (k == K_L) return run(c, i, B(K_L), 0);
    if (k == K_OTHER || k == K_SPACE) {
        if (kind_at(c, i + len, &len2) == K_L) return run(c, i + len, B(K_L), 0);
    }
    /* \p{N}{1,3} */
    if (k == K_N) return run(c, i, B(K_N), digits);
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    size_t j = i;
    if (c->s[i] == ' ' && kind_at(c, i + 1, &len2) == K_OTHER) j = i + 1;
    if (kind_at(c, j, &len2) == K_OTHER) return run(c, run(c, j, OTHERS, 0), B(K_NL), 0);
    /* \s*[\r\n]+: up to the last \r or \n of the white-space run */
    size_t end = run(c, i, SPACES, 0), last_nl = 0;
    for (size_t p = i; p < end;) {
        int kk = kind_at(c, p, &len2);
        p += len2;
        if (kk == K_NL) last_nl = p;
    }
    if (last_nl) return last_nl;
    return spaces(c, i);
}

size_t attn__bpe_piece_end(attn__bpe_split kind, const uint8_t *s, size_t n, size_t i) {
    cur c = {s, n};
    switch (kind) {
    case ATTN_BPE_SPLIT_GPT2:
        return gpt2_piece(&c, i);
    case ATTN_BPE_SPLIT_LLAMA3:
        return llama3_piece(&c, i, 3);
    case ATTN_BPE_SPLIT_QWEN2:
        return llama3_piece(&c, i, 1);
    default:
        return n;
    }
}
