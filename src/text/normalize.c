/* BERT text normalization and character classes, as Hugging Face's fast
 * BertTokenizer (BertNormalizer + BertPreTokenizer) applies them.
 *
 * Order of the steps (the Rust implementation's, which differs from the
 * original Python BasicTokenizer only in running NFD before lowercasing):
 *   1. clean: drop U+0000, U+FFFD and "other" characters (Cc, Cf, Co, Cs,
 *      except \t \n \r); map White_Space characters to ' '
 *   2. put ' ' around each CJK ideograph (so each becomes its own word)
 *   3. strip accents: NFD over the whole segment, drop category Mn
 *   4. lowercase with the full (not the simple) Unicode mapping
 * Unicode data comes from utf8proc. */
#include "text/text_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* The White_Space property (what Rust's char::is_whitespace tests). It is
 * small and has not changed since Unicode 6.3. */
int attn__is_bert_space(int32_t c) {
    if (c == ' ' || (c >= 0x09 && c <= 0x0d)) return 1;
    if (c < 0x85) return 0;
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* ASCII punctuation (33-47, 58-64, 91-96, 123-126: '$', '+', '^', '`' ... are
 * symbols in Unicode but BERT splits them too) or Unicode category P*. */
int attn__is_bert_punct(int32_t c) {
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    int k = attn__hf_compat_class(c);
    if (k != ATTN_HF_SAME) return k == ATTN_HF_PUNCT;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return 1;
    default:
        return 0;
    }
}

/* Characters the cleaning step deletes. */
static int is_dropped(int32_t c) {
    if (c == 0 || c == 0xfffd) return 1;
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    if (c < 0x80) return c < 0x20 || c == 0x7f;
    if (c >= 0x80 && attn__hf_compat_class(c) != ATTN_HF_SAME) return 0;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
        return 1;
    default:
        return 0;
    }
}

/* Canonical combining class, as the reference knows it. */
static int ccc(int32_t c) {
    if (c < 0x300) return 0;
    if (attn__hf_compat_class(c) == ATTN_HF_PLAIN) return 0;
    return utf8proc_get_property(c)->combining_class;
}

/* A nonspacing mark (category Mn), which accent stripping deletes. */
static int is_mark(int32_t c) {
    if (c < 0x300) return 0;
    int k = attn__hf_compat_class(c);
    if (k != ATTN_HF_SAME) return k == ATTN_HF_MARK;
    return utf8proc_category(c) == UTF8PROC_CATEGORY_MN;
}

/* Canonical ordering: each run of characters with a nonzero combining class
 * is sorted, stably, by class. Short runs (the usual case) by insertion, long
 * ones by counting sort so that crafted input cannot make this quadratic.
 * Returns -1 if out of memory. */
static int canonical_order(int32_t *a, size_t n) {
    int32_t *tmp = NULL;
    for (size_t i = 0; i < n;) {
        if (ccc(a[i]) == 0) {
            i++;
            continue;
        }
        size_t r = i + 1;
        while (r < n && ccc(a[r]) != 0)
            r++;
        if (r - i <= 32) {
            for (size_t k = i + 1; k < r; k++) {
                int32_t c = a[k];
                int cc = ccc(c);
                size_t j = k;
                for (; j > i && ccc(a[j - 1]) > cc; j--)
                    a[j] = a[j - 1];
                a[j] = c;
            }
        } else {
            if (!tmp && !(tmp = attn__malloc(n * sizeof *tmp))) return -1;
            size_t start[257] = {0};
            for (size_t k = i; k < r; k++)
                start[ccc(a[k]) + 1]++;
            for (int c = 1; c <= 256; c++)
                start[c] += start[c - 1];
            for (size_t k = i; k < r; k++)
                tmp[start[ccc(a[k])]++] = a[k];
            memcpy(a + i, tmp, (r - i) * sizeof *a);
        }
        i = r;
    }
    attn__free(tmp);
    return 0;
}

/* The CJK Unified Ideographs blocks BERT isolates: the ranges of the Rust
 * implementation (note 0x2B820..0x2B91F is not among them there). Hangul,
 * Hiragana and Katakana are not ideographs and stay in words. */
static int is_cjk(int32_t c) {
    return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) ||
           (c >= 0x20000 && c <= 0x2a6df) || (c >= 0x2a700 && c <= 0x2b81f) ||
           (c >= 0x2b920 && c <= 0x2ceaf) || (c >= 0xf900 && c <= 0xfaff) ||
           (c >= 0x2f800 && c <= 0x2fa1f);
}

attn_status attn__bert_normalize(attn_ctx *ctx, const int32_t *cp, size_t n, int lowercase,
                                 int strip_accents, int chinese, int32_t **out, size_t *nout) {
    *out = NULL;
    *nout = 0;
    /* steps 1-2: at most 3 code points per input code point */
    int32_t *a = attn__malloc((3 * n + 1) * sizeof *a);
    if (!a) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory normalizing %zu characters", n);
    size_t na = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = cp[i];
        if (is_dropped(c)) continue;
        if (attn__is_bert_space(c)) c = ' ';
        if (chinese && is_cjk(c)) {
            a[na++] = ' ';
            a[na++] = c;
            a[na++] = ' ';
        } else {
            a[na++] = c;
        }
    }
    /* step 3: NFD, then drop the nonspacing marks. Canonical reordering
     * moves combining marks across the characters they follow, so it runs
     * over the whole segment. At most 4 code points per decomposition. */
    if (strip_accents && na > 0) {
        int32_t *d = attn__malloc((4 * na + 1) * sizeof *d);
        if (!d) {
            attn__free(a);
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory decomposing %zu characters", n);
        }
        size_t nd = 0;
        for (size_t i = 0; i < na; i++) {
            int32_t c = a[i];
            utf8proc_ssize_t k = 0;
            if (c >= 0xc0 && attn__hf_compat_class(c) != ATTN_HF_PLAIN) {
                int bound = 0;
                k = utf8proc_decompose_char(c, d + nd, 4, UTF8PROC_DECOMPOSE, &bound);
                if (k < 1 || k > 4) k = 0; /* cannot happen: keep c as it is */
            }
            if (k == 0)
                d[nd++] = c;
            else
                nd += (size_t)k;
        }
        attn__free(a);
        a = d;
        if (canonical_order(a, nd) != 0) {
            attn__free(a);
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory decomposing %zu characters", n);
        }
        na = 0;
        for (size_t i = 0; i < nd; i++)
            if (!is_mark(a[i])) a[na++] = a[i];
    }
    if (!lowercase) {
        *out = a;
        *nout = na;
        return ATTN_OK;
    }
    /* step 4: the full lowercase mapping differs from the simple one only for
     * U+0130 (I with dot above -> "i" + U+0307), which cannot survive step 3 */
    size_t extra = 0;
    for (size_t i = 0; i < na; i++)
        extra += a[i] == 0x130;
    int32_t *l = a;
    if (extra) {
        l = attn__malloc((na + extra + 1) * sizeof *l);
        if (!l) {
            attn__free(a);
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory lowercasing %zu characters", n);
        }
    }
    size_t nl = na + extra;
    for (size_t i = na, j = nl; i-- > 0;) { /* backwards: in place when extra == 0 */
        int32_t c = a[i];
        if (c == 0x130) {
            l[--j] = 0x307;
            l[--j] = 'i';
        } else {
            int32_t lc = c < 0x80 ? (c >= 'A' && c <= 'Z' ? c + 32 : c) : utf8proc_tolower(c);
            if (lc == c && c >= 0x1c89) {
                int32_t x = attn__hf_compat_lower(c);
                if (x >= 0) lc = x;
            }
            l[--j] = lc;
        }
    }
    if (l != a) attn__free(a);
    *out = l;
    *nout = nl;
    return ATTN_OK;
}

const char *attn__text_unicode_version(void) {
    return utf8proc_unicode_version();
}
