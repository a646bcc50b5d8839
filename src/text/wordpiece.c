/* attn_tokenizer_encode: special tokens, normalization, pre-tokenization and
 * greedy longest-match-first WordPiece, as BertTokenizerFast does them. */
#include "text/text_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* A growable list of ids that stops accepting pieces at `limit`. */
typedef struct idvec {
    int32_t *v;
    size_t n, cap, limit;
    int nomem;
} idvec;

static void push(idvec *o, int32_t id) {
    if (o->n >= o->limit || o->nomem) return;
    if (o->n == o->cap) {
        size_t nc = o->cap ? 2 * o->cap : 64;
        int32_t *nv = realloc(o->v, nc * sizeof *nv);
        if (!nv) {
            o->nomem = 1;
            return;
        }
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = id;
}

/* One word (1..100 code points) -> its pieces, or [UNK] if some position
 * has no vocabulary match. The longest piece starting at each position wins;
 * positions after the first look up "##" + piece. */
static void wordpiece(const attn_tokenizer *tok, const int32_t *w, size_t m, idvec *o) {
    if (m > ATTN_TOK_MAX_WORD_CHARS) {
        push(o, tok->unk);
        return;
    }
    uint8_t buf[4 * ATTN_TOK_MAX_WORD_CHARS];
    size_t off[ATTN_TOK_MAX_WORD_CHARS + 1];
    int32_t pieces[ATTN_TOK_MAX_WORD_CHARS];
    size_t np = 0;
    off[0] = 0;
    for (size_t k = 0; k < m; k++)
        off[k + 1] = off[k] + (size_t)utf8proc_encode_char(w[k], buf + off[k]);
    uint32_t hash[ATTN_TOK_MAX_WORD_CHARS + 1];
    for (size_t start = 0; start < m;) {
        int32_t id = -1;
        size_t pre = start ? 2 : 0, end = m;
        /* pieces longer than the longest token cannot match: skip them */
        while (end > start && pre + off[end] - off[start] > tok->max_token_bytes)
            end--;
        /* hash[k]: hash of the candidate ("##" +) buf[off[start]..off[k]) */
        hash[start] = attn__fnv(ATTN_FNV_BASIS, "##", pre);
        for (size_t k = start; k < end; k++)
            hash[k + 1] = attn__fnv(hash[k], (const char *)buf + off[k], off[k + 1] - off[k]);
        for (; end > start; end--) {
            id = attn__vocab_find(tok, hash[end], "##", pre, (const char *)buf + off[start],
                                  off[end] - off[start]);
            if (id >= 0) break;
        }
        if (id < 0) {
            push(o, tok->unk);
            return;
        }
        pieces[np++] = id;
        start = end;
    }
    for (size_t k = 0; k < np; k++)
        push(o, pieces[k]);
}

/* Normalize one segment of raw code points, split it into words at white
 * space and around punctuation, and append the words' pieces. */
static attn_status segment(attn_ctx *ctx, const attn_tokenizer *tok, const int32_t *cp, size_t n,
                           idvec *o) {
    int32_t *w;
    size_t m;
    attn_status st =
        attn__bert_normalize(ctx, cp, n, tok->lowercase, tok->strip_accents, tok->chinese, &w, &m);
    if (st != ATTN_OK) return st;
    size_t a = 0; /* start of the current word */
    for (size_t i = 0; i <= m && o->n < o->limit; i++) {
        int end = i == m || attn__is_bert_space(w[i]);
        int punct = !end && attn__is_bert_punct(w[i]);
        if (end || punct) {
            if (i > a) wordpiece(tok, w + a, i - a, o);
            if (punct) wordpiece(tok, w + i, 1, o);
            a = i + 1;
        }
    }
    attn__free(w);
    return ATTN_OK;
}

/* Length in code points of the longest special token spelled at cp[i..n),
 * with its id in *id; 0 if none. Special tokens are matched verbatim. */
static size_t special_at(const attn_tokenizer *tok, const int32_t *cp, size_t i, size_t n,
                         int32_t *id) {
    size_t best = 0;
    for (int k = 0; k < tok->n_special; k++) {
        const attn__vocab_entry *e = &tok->entries[tok->special_ids[k]];
        const char *s = tok->text + e->off;
        size_t L = e->len; /* the special tokens are ASCII: one byte per code point */
        if (L <= best || L > n - i) continue;
        size_t j = 0;
        while (j < L && cp[i + j] == (uint8_t)s[j])
            j++;
        if (j == L) {
            best = L;
            *id = tok->special_ids[k];
        }
    }
    return best;
}

attn_status attn_tokenizer_encode(attn_ctx *ctx, const attn_tokenizer *tok, const char *text,
                                  size_t len, int max_len, int32_t *ids, int cap, int *n_out) {
    attn__ctx_clear(ctx);
    if (n_out) *n_out = 0;
    if (!tok || !n_out || (!text && len) || (!ids && cap) || cap < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_tokenizer_encode: %s",
                             !tok             ? "NULL tokenizer"
                             : !n_out         ? "NULL n_out"
                             : (!text && len) ? "NULL text with a nonzero length"
                             : cap < 0        ? "negative cap"
                                              : "NULL ids with a nonzero cap");
    if (max_len == 1)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "max_len 1 leaves no room for both [CLS] and [SEP] (use >= 2, "
                             "or <= 0 for no truncation)");
    if (len > INT_MAX)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "text of %zu bytes is longer than 2^31-1 bytes", len);
    /* decode (and validate) the whole text first: nothing is produced for
     * a text that is not UTF-8 */
    int32_t *cp = attn__malloc((len + 1) * sizeof *cp);
    if (!cp) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for a %zu-byte text", len);
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        utf8proc_ssize_t rest = (utf8proc_ssize_t)(len - i);
        utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)text + i, rest, &cp[n]);
        if (k <= 0) {
            attn__free(cp);
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "text is not valid UTF-8: bad byte 0x%02x at byte offset %zu",
                                 (unsigned)(uint8_t)text[i], i);
        }
        i += (size_t)k;
        n++;
    }
    idvec o = {NULL, 0, 0, max_len > 0 ? (size_t)max_len - 2 : SIZE_MAX, 0};
    attn_status st = ATTN_OK;
    size_t seg = 0;
    for (size_t i = 0; i <= n && st == ATTN_OK && o.n < o.limit; i++) {
        int32_t id = -1;
        size_t L = i < n && cp[i] == '[' ? special_at(tok, cp, i, n, &id) : 0;
        if (i < n && !L) continue;
        if (i > seg) st = segment(ctx, tok, cp + seg, i - seg, &o);
        if (L && st == ATTN_OK) push(&o, id);
        seg = i + L;
        if (L) i += L - 1;
    }
    attn__free(cp);
    if (st == ATTN_OK && o.nomem) st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for ids");
    if (st == ATTN_OK && o.n + 2 > INT_MAX)
        st = attn_ctx_fail(ctx, ATTN_E_ARG, "text gives more than INT_MAX ids");
    if (st != ATTN_OK) {
        free(o.v);
        return st;
    }
    int total = (int)o.n + 2;
    *n_out = total;
    if (ids) {
        if (cap < total) {
            free(o.v);
            return attn_ctx_fail(ctx, ATTN_E_ARG, "id buffer holds %d ids, the text needs %d", cap,
                                 total);
        }
        ids[0] = tok->cls;
        if (o.n) memcpy(ids + 1, o.v, o.n * sizeof *ids);
        ids[total - 1] = tok->sep;
    }
    free(o.v);
    return ATTN_OK;
}
