/* Byte-level BPE: encode (added tokens, pre-tokenization, merges by rank)
 * and decode (bytes, with invalid UTF-8 replaced as the reference does). */
#include "text/bpe_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ------------------------------------------------------------- accessors */

int32_t attn_bpe_id(const attn_bpe *t, const char *token) {
    if (!t || !token) return -1;
    size_t n = strlen(token);
    uint32_t h = attn__bpe_hash(token, n);
    for (uint32_t i = h & t->by_spell.mask;; i = (i + 1) & t->by_spell.mask) {
        int32_t id = t->by_spell.slots[i];
        if (id < 0) return -1;
        if (t->shash[id] == h && t->slen[id] == n && !memcmp(t->spell + t->soff[id], token, n))
            return id;
    }
}

int32_t attn_bpe_vocab_size(const attn_bpe *t) {
    return t ? t->n : 0;
}
int32_t attn_bpe_bos_id(const attn_bpe *t) {
    return t ? t->bos : -1;
}
int32_t attn_bpe_eos_id(const attn_bpe *t) {
    return t ? t->eos : -1;
}

const unsigned char *attn_bpe_token_bytes(const attn_bpe *t, int32_t id, size_t *len) {
    if (len) *len = 0;
    if (!t || id < 0 || id >= t->n || t->blen[id] == UINT32_MAX) return NULL;
    if (len) *len = t->blen[id];
    return (const unsigned char *)t->bytes + t->boff[id];
}

/* ----------------------------------------------------------------- merges */

/* Rank of merging ids a and b (the merged id in *ab), or INT32_MAX. */
static inline int32_t merge_rank(const attn_bpe *t, int32_t a, int32_t b, int32_t *ab) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & t->merge_mask;;
         i = (i + 1) & t->merge_mask) {
        const attn__bpe_merge *m = &t->merges[i];
        if (m->key == key) {
            *ab = m->id;
            return m->rank;
        }
        if (m->key == UINT64_MAX) return INT32_MAX;
    }
}

/* Output of an encoding: ids are written while they fit, counted always. */
typedef struct out {
    int32_t *ids;
    size_t cap, n;
} out;

static inline void emit(out *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* Scratch space reused across the words of one encoding. */
typedef struct work {
    int32_t *sym, *nxt, *prv;
    int32_t *heap_rank, *heap_pos; /* a binary heap of (rank, position) */
    size_t cap;
    uint8_t *buf; /* a piece with its prefix space */
    size_t buf_cap;
} work;

static int work_fit(work *w, size_t m) {
    if (m <= w->cap) return 1;
    size_t c = w->cap ? w->cap : 64;
    while (c < m)
        c *= 2;
    int32_t *p = realloc(w->sym, 5 * c * sizeof *p);
    if (!p) return 0;
    w->sym = p, w->nxt = p + c, w->prv = p + 2 * c, w->heap_rank = p + 3 * c,
    w->heap_pos = p + 4 * c, w->cap = c;
    return 1;
}

static inline int heap_less(const work *w, size_t i, size_t j) {
    return w->heap_rank[i] < w->heap_rank[j] ||
           (w->heap_rank[i] == w->heap_rank[j] && w->heap_pos[i] < w->heap_pos[j]);
}

static inline void heap_swap(work *w, size_t i, size_t j) {
    int32_t r = w->heap_rank[i], p = w->heap_pos[i];
    w->heap_rank[i] = w->heap_rank[j], w->heap_pos[i] = w->heap_pos[j];
    w->heap_rank[j] = r, w->heap_pos[j] = p;
}

static void heap_push(work *w, size_t *n, int32_t rank, int32_t pos) {
    size_t i = (*n)++;
    w->heap_rank[i] = rank, w->heap_pos[i] = pos;
    while (i && heap_less(w, i, (i - 1) / 2)) {
        heap_swap(w, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_pop(work *w, size_t *n) {
    heap_swap(w, 0, --*n);
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        if (l < *n && heap_less(w, l, s)) s = l;
        if (r < *n && heap_less(w, r, s)) s = r;
        if (s == i) break;
        heap_swap(w, i, s);
        i = s;
    }
}

/* Words up to this many symbols merge by rescanning their pairs (cheaper
 * than a heap for the short words that make up most text). */
#define SHORT_WORD 48

/* BPE of one pre-token w[0..m): start from its bytes and merge the pair of
 * lowest rank (leftmost among equals) until no pair has a merge. */
static int bpe_word(const attn_bpe *t, work *wk, const uint8_t *w, size_t m, out *o) {
    if (m == 0) return 1;
    if (t->ignore_merges || (t->whole && m > 1)) {
        /* a word in the vocabulary: with ignore_merges that token; else the
         * token when merging its bytes is known to end there */
        int32_t id = attn__bpe_find_bytes(t, attn__bpe_hash(w, m), w, m);
        if (id >= 0 && (t->ignore_merges || t->whole[id])) {
            emit(o, id);
            return 1;
        }
    }
    if (m <= SHORT_WORD) {
        int32_t sym[SHORT_WORD], rank[SHORT_WORD], res[SHORT_WORD];
        size_t k = 0;
        for (size_t i = 0, unk_run = 0; i < m; i++) {
            int32_t id = t->byte_id[w[i]];
            /* a byte without a token: unk (once per run with fuse_unk), or dropped */
            if (id < 0 && t->fuse_unk && unk_run++) continue;
            if (id >= 0) unk_run = 0;
            if (id < 0) id = t->unk;
            if (id >= 0) sym[k++] = id;
        }
        for (size_t i = 0; i + 1 < k; i++)
            rank[i] = merge_rank(t, sym[i], sym[i + 1], &res[i]);
        while (k > 1) {
            size_t best = 0;
            for (size_t i = 1; i + 1 < k; i++)
                if (rank[i] < rank[best]) best = i;
            if (rank[best] == INT32_MAX) break;
            sym[best] = res[best];
            k--;
            memmove(sym + best + 1, sym + best + 2, (k - best - 1) * sizeof *sym);
            memmove(rank + best + 1, rank + best + 2,
                    (k > best + 2 ? k - best - 2 : 0) * sizeof *rank);
            memmove(res + best + 1, res + best + 2,
                    (k > best + 2 ? k - best - 2 : 0) * sizeof *res);
            if (best > 0) rank[best - 1] = merge_rank(t, sym[best - 1], sym[best], &res[best - 1]);
            if (best + 1 < k) rank[best] = merge_rank(t, sym[best], sym[best + 1], &res[best]);
        }
        for (size_t i = 0; i < k; i++)
            emit(o, sym[i]);
        return 1;
    }
    /* long words: a doubly linked list of symbols and a heap of candidate
     * merges (rank, left position); an entry whose pair has changed since
     * it was pushed is recognised by the rank of the current pair */
    if (!work_fit(wk, m)) return 0;
    int32_t *sym = wk->sym, *nxt = wk->nxt, *prv = wk->prv;
    size_t k = 0, hn = 0;
    for (size_t i = 0, unk_run = 0; i < m; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0 && t->fuse_unk && unk_run++) continue;
        if (id >= 0) unk_run = 0;
        if (id < 0) id = t->unk;
        if (id < 0) continue;
        sym[k] = id;
        prv[k] = (int32_t)k - 1;
        nxt[k] = (int32_t)k + 1;
        k++;
    }
    if (k == 0) return 1;
    nxt[k - 1] = -1;
    for (size_t i = 0; i + 1 < k; i++) {
        int32_t ab, r = merge_rank(t, sym[i], sym[i + 1], &ab);
        if (r != INT32_MAX) heap_push(wk, &hn, r, (int32_t)i);
    }
    while (hn) {
        int32_t r = wk->heap_rank[0], p = wk->heap_pos[0];
        heap_pop(wk, &hn);
        int32_t q = nxt[p], ab = -1;
        if (sym[p] < 0 || q < 0 || merge_rank(t, sym[p], sym[q], &ab) != r) continue;
        sym[p] = ab;
        sym[q] = -1; /* q is absorbed into p */
        nxt[p] = nxt[q];
        if (nxt[q] >= 0) prv[nxt[q]] = p;
        if (prv[p] >= 0) {
            int32_t l = prv[p], r2 = merge_rank(t, sym[l], sym[p], &ab);
            if (r2 != INT32_MAX) heap_push(wk, &hn, r2, l);
        }
        if (nxt[p] >= 0) {
            int32_t r2 = merge_rank(t, sym[p], sym[nxt[p]], &ab);
            if (r2 != INT32_MAX) heap_push(wk, &hn, r2, p);
        }
    }
    for (int32_t i = 0; i >= 0; i = nxt[i])
        emit(o, sym[i]);
    return 1;
}

int attn__bpe_find_wholes(attn_bpe *t) {
    uint8_t *whole = calloc((size_t)t->n + 1, 1);
    if (!whole) return -1;
    work wk = {0};
    int ok = 1;
    t->whole = NULL; /* merge every token from its bytes */
    for (int32_t id = 0; id < t->n && ok; id++) {
        uint32_t L = t->blen[id];
        if (L < 2 || L == UINT32_MAX) continue;
        const uint8_t *b = (const uint8_t *)t->bytes + t->boff[id];
        if (attn__bpe_find_bytes(t, t->bhash[id], b, L) != id) continue; /* not a BPE symbol */
        int32_t got[2];
        out o = {got, 2, 0};
        ok = bpe_word(t, &wk, b, L, &o);
        whole[id] = ok && o.n == 1 && got[0] == id;
    }
    free(wk.sym);
    free(wk.buf);
    if (!ok) {
        free(whole);
        return -1;
    }
    t->whole = whole;
    return 0;
}

/* ByteLevel's part for one piece: the prefix space, GPT-2's regex when
 * use_regex, then BPE of each resulting word. */
static int byte_level(const attn_bpe *t, work *wk, const uint8_t *s, size_t n, out *o) {
    if (n == 0) return 1;
    if (t->add_prefix_space && s[0] != ' ') {
        if (n + 1 > wk->buf_cap) {
            size_t c = wk->buf_cap ? wk->buf_cap : 256;
            while (c < n + 1)
                c *= 2;
            uint8_t *b = realloc(wk->buf, c);
            if (!b) return 0;
            wk->buf = b, wk->buf_cap = c;
        }
        wk->buf[0] = ' ';
        memcpy(wk->buf + 1, s, n);
        s = wk->buf;
        n++;
    }
    if (!t->bl_regex) return bpe_word(t, wk, s, n, o);
    for (size_t i = 0; i < n;) {
        size_t e = attn__bpe_piece_end(ATTN_BPE_SPLIT_GPT2, s, n, i);
        if (!bpe_word(t, wk, s + i, e - i, o)) return 0;
        i = e;
    }
    return 1;
}

static int split(const attn_bpe *t, work *wk, const uint8_t *s, size_t n, out *o) {
    if (t->split == ATTN_BPE_SPLIT_NONE) return byte_level(t, wk, s, n, o);
    for (size_t i = 0; i < n;) {
        size_t e = attn__bpe_piece_end(t->split, s, n, i);
        if (!byte_level(t, wk, s + i, e - i, o)) return 0;
        i = e;
    }
    return 1;
}

/* A stretch of text between added tokens: normalized (NFC) when the
 * tokenizer says so and the text is not all ASCII, then pre-tokenized. */
static int segment(const attn_bpe *t, work *wk, const uint8_t *s, size_t n, out *o) {
    if (t->nfc) {
        size_t i = 0;
        while (i < n && s[i] < 0x80)
            i++;
        if (i < n) {
            utf8proc_uint8_t *d = NULL;
            utf8proc_ssize_t m =
                utf8proc_map(s, (utf8proc_ssize_t)n, &d, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0) {
                free(d);
                return 0;
            }
            int ok = split(t, wk, d, (size_t)m, o);
            free(d);
            return ok;
        }
    }
    return split(t, wk, s, n, o);
}

/* The longest added token spelled at s[i..n): its index, or -1 (a walk
 * down the trie of added tokens). */
static int added_at(const attn_bpe *t, const uint8_t *s, size_t i, size_t n) {
    int best = -1;
    int32_t node = 0;
    for (size_t j = i; j < n; j++) {
        uint32_t key = (uint32_t)node * 256u + s[j] + 1u,
                 k = attn__bpe_edge_slot(key, t->edge_mask);
        while (t->edges[k].key && t->edges[k].key != key)
            k = (k + 1) & t->edge_mask;
        if (!t->edges[k].key) break;
        node = t->edges[k].child;
        if (t->term[node] >= 0) best = t->term[node];
    }
    return best;
}

/* Length of the UTF-8 sequence at s[i] when valid (shortest form, no
 * surrogates, at most U+10FFFF), else 0. */
size_t attn__bpe_utf8_len(const uint8_t *s, size_t i, size_t n) {
    uint8_t c = s[i];
    if (c < 0x80) return 1;
    size_t k;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n - i < k) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t j = 2; j < k; j++)
        if ((s[i + j] & 0xc0) != 0x80) return 0;
    return k;
}

/* White space before byte i (lstrip) / from byte i (rstrip), within [lo, hi). */
static size_t space_back(const uint8_t *s, size_t lo, size_t i) {
    while (i > lo) {
        size_t j = i - 1;
        while (j > lo && (s[j] & 0xc0) == 0x80)
            j--;
        size_t L = attn__bpe_utf8_len(s, j, i);
        int32_t c = s[j];
        if (L == 2) c = ((s[j] & 0x1f) << 6) | (s[j + 1] & 0x3f);
        if (L == 3) c = ((s[j] & 0x0f) << 12) | ((s[j + 1] & 0x3f) << 6) | (s[j + 2] & 0x3f);
        if (L == 4) c = 0x10000; /* no white space beyond the BMP */
        if (!attn__bpe_is_space(c)) break;
        i = j;
    }
    return i;
}

static size_t space_fwd(const uint8_t *s, size_t i, size_t n) {
    while (i < n) {
        size_t L = attn__bpe_utf8_len(s, i, n);
        int32_t c = s[i];
        if (L == 2) c = ((s[i] & 0x1f) << 6) | (s[i + 1] & 0x3f);
        if (L == 3) c = ((s[i] & 0x0f) << 12) | ((s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f);
        if (L == 4) c = 0x10000;
        if (!attn__bpe_is_space(c)) break;
        i += L;
    }
    return i;
}

attn_status attn_bpe_encode(attn_ctx *ctx, const attn_bpe *t, const char *text, size_t len,
                            int add_special, int32_t *ids, int cap, int *n_out) {
    attn__ctx_clear(ctx);
    if (n_out) *n_out = 0;
    if (!t || !n_out || (!text && len) || (!ids && cap) || cap < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_encode: %s",
                             !t               ? "NULL tokenizer"
                             : !n_out         ? "NULL n_out"
                             : (!text && len) ? "NULL text with a nonzero length"
                             : cap < 0        ? "negative cap"
                                              : "NULL ids with a nonzero cap");
    if (len > (size_t)INT_MAX - 2 * ATTN_BPE_MAX_TEMPLATE)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "text of %zu bytes is longer than 2^31-17 bytes",
                             len);
    const uint8_t *s = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = attn__bpe_utf8_len(s, i, len);
        if (!k)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "text is not valid UTF-8: bad byte 0x%02x at byte offset %zu",
                                 (unsigned)s[i], i);
        i += k;
    }
    out o = {ids, (size_t)cap, 0};
    work wk = {0};
    int ok = 1;
    if (add_special)
        for (int k = 0; k < t->n_prefix; k++)
            emit(&o, t->prefix[k]);
    size_t seg = 0;
    for (size_t i = 0; i < len && ok; i++) {
        if (!t->added_first[s[i]]) continue;
        int a = added_at(t, s, i, len);
        if (a < 0) continue;
        const attn__bpe_added *ad = &t->added[a];
        size_t b = ad->lstrip ? space_back(s, seg, i) : i;
        size_t e = i + ad->len;
        if (ad->rstrip) e = space_fwd(s, e, len);
        if (b > seg) ok = segment(t, &wk, s + seg, b - seg, &o);
        emit(&o, ad->id);
        seg = e;
        i = e - 1;
    }
    if (ok && len > seg) ok = segment(t, &wk, s + seg, len - seg, &o);
    if (add_special)
        for (int k = 0; k < t->n_suffix; k++)
            emit(&o, t->suffix[k]);
    free(wk.sym);
    free(wk.buf);
    if (!ok) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory encoding %zu bytes", len);
    if (o.n > INT_MAX) /* only reachable when NFC lengthens a huge text */
        return attn_ctx_fail(ctx, ATTN_E_ARG, "text gives more than INT_MAX ids");
    *n_out = (int)o.n;
    if (ids && o.n > (size_t)cap)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "id buffer holds %d ids, the text needs %zu", cap,
                             o.n);
    return ATTN_OK;
}

/* ----------------------------------------------------------------- decode */

attn_status attn_bpe_decode(attn_ctx *ctx, const attn_bpe *t, const int32_t *ids, int n, char *buf,
                            size_t cap, size_t *n_out) {
    attn__ctx_clear(ctx);
    if (n_out) *n_out = 0;
    if (!t || !n_out || (!ids && n) || n < 0 || (!buf && cap))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_decode: %s",
                             !t            ? "NULL tokenizer"
                             : !n_out      ? "NULL n_out"
                             : (!ids && n) ? "NULL ids with a nonzero count"
                             : n < 0       ? "negative count"
                                           : "NULL buf with a nonzero cap");
    size_t raw = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n || t->blen[ids[i]] == UINT32_MAX)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "id %d (position %d) is not in the vocabulary",
                                 (int)ids[i], i);
        raw += t->blen[ids[i]];
    }
    uint8_t *r = malloc(raw + 1);
    if (!r) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory decoding %d ids", n);
    size_t p = 0;
    for (int i = 0; i < n; i++) {
        memcpy(r + p, t->bytes + t->boff[ids[i]], t->blen[ids[i]]);
        p += t->blen[ids[i]];
    }
    /* invalid UTF-8: each maximal prefix of a valid sequence (or a lone bad
     * byte) becomes one U+FFFD, as Rust's from_utf8_lossy does */
    size_t need = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t q = 0;
        for (size_t i = 0; i < raw;) {
            size_t k = attn__bpe_utf8_len(r, i, raw);
            if (k) {
                if (pass) memcpy(buf + q, r + i, k);
                q += k;
                i += k;
                continue;
            }
            /* length of the valid prefix of a sequence that breaks off */
            size_t bad = 1;
            uint8_t c = r[i];
            size_t want = c >= 0xc2 && c <= 0xdf   ? 2
                          : c >= 0xe0 && c <= 0xef ? 3
                          : c >= 0xf0 && c <= 0xf4 ? 4
                                                   : 1;
            if (want > 1 && i + 1 < raw) {
                uint8_t lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
                uint8_t hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
                if (r[i + 1] >= lo && r[i + 1] <= hi) {
                    bad = 2;
                    while (bad < want && i + bad < raw && (r[i + bad] & 0xc0) == 0x80)
                        bad++;
                }
            }
            if (pass) memcpy(buf + q, "\xef\xbf\xbd", 3);
            q += 3;
            i += bad;
        }
        need = q;
        if (!pass && (!buf || cap < need)) break;
    }
    free(r);
    *n_out = need;
    if (buf && cap < need)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "buffer holds %zu bytes, the text needs %zu", cap,
                             need);
    if (buf && cap > need) buf[need] = '\0';
    return ATTN_OK;
}
