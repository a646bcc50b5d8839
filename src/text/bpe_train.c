/* Training a byte-level BPE tokenizer on a text (attn_bpe_train), and
 * writing a GPT-2-style one as Hugging Face files (attn_bpe_save).
 *
 * Training, as the usual byte-level BPE trainers do it:
 *   - the text is cut into pre-tokens by GPT-2's regex (bpe_pretok.c: the
 *     same cut attn_bpe_encode and Hugging Face's ByteLevel make, so every
 *     merge learnt here applies within the pieces the encoder sees), and the
 *     distinct pre-tokens are counted;
 *   - each pre-token starts as its bytes (ids 0..255 are the byte values);
 *   - repeatedly, the most frequent adjacent pair (a, b) over all pre-tokens
 *     (each weighted by its count) becomes the next token a||b (ids 256,
 *     257, ...) and every occurrence in a pre-token is replaced, left to
 *     right;
 *   - ties go to the smallest pair (smaller a, then smaller b), so the result
 *     depends on the text and the size only; training stops at the asked
 *     size, or earlier when no pair occurs twice (a merge seen once saves
 *     one symbol in the whole text).
 * Pair counts live in a hash table and change only for the pre-tokens that
 * hold the merged pair (their old pairs taken out, their new ones put in);
 * picking the best pair scans the table. A merge costs O(distinct pairs +
 * symbols of the distinct pre-tokens), a few tenths of a millisecond for a
 * few MB of English. */
#include "io/json.h"
#include "text/bpe_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EMPTY UINT64_MAX

/* ---- distinct pre-tokens -------------------------------------------------- */

typedef struct wordtab {
    uint32_t *slot; /* index + 1 into the arrays; 0 = empty */
    size_t mask, n, cap;
    uint32_t *off, *len, *hash; /* the pre-token is text[off, off + len) */
    int64_t *cnt;
} wordtab;

static void words_free(wordtab *w) {
    free(w->slot), free(w->off), free(w->len), free(w->hash), free(w->cnt);
}

static int words_grow_slots(wordtab *w) {
    const size_t slots = w->mask ? 2 * (w->mask + 1) : 1024;
    uint32_t *s = calloc(slots, sizeof *s);
    if (!s) return -1;
    for (size_t k = 0; k < w->n; k++)
        for (size_t i = w->hash[k] & (slots - 1);; i = (i + 1) & (slots - 1))
            if (!s[i]) {
                s[i] = (uint32_t)k + 1;
                break;
            }
    free(w->slot);
    w->slot = s, w->mask = slots - 1;
    return 0;
}

/* Count one more of the pre-token text[off, off + len). */
static int words_add(wordtab *w, const uint8_t *text, uint32_t off, uint32_t len) {
    if (2 * (w->n + 1) > w->mask + 1 && words_grow_slots(w)) return -1;
    const uint32_t h = attn__bpe_hash(text + off, len);
    size_t i = h & w->mask;
    for (;; i = (i + 1) & w->mask) {
        const uint32_t k = w->slot[i];
        if (!k) break;
        if (w->hash[k - 1] == h && w->len[k - 1] == len &&
            !memcmp(text + w->off[k - 1], text + off, len)) {
            w->cnt[k - 1]++;
            return 0;
        }
    }
    if (w->n == w->cap) {
        const size_t cap = w->cap ? 2 * w->cap : 1024;
        uint32_t *o = realloc(w->off, cap * sizeof *o);
        if (o) w->off = o;
        uint32_t *l = realloc(w->len, cap * sizeof *l);
        if (l) w->len = l;
        uint32_t *hh = realloc(w->hash, cap * sizeof *hh);
        if (hh) w->hash = hh;
        int64_t *c = realloc(w->cnt, cap * sizeof *c);
        if (c) w->cnt = c;
        if (!o || !l || !hh || !c) return -1;
        w->cap = cap;
    }
    w->off[w->n] = off, w->len[w->n] = len, w->hash[w->n] = h, w->cnt[w->n] = 1;
    w->slot[i] = (uint32_t)++w->n;
    return 0;
}

/* ---- pair counts ---------------------------------------------------------- */

typedef struct pairtab {
    uint64_t *key; /* (a << 32) | b; EMPTY = free slot */
    int64_t *cnt;
    size_t mask, used;
} pairtab;

static size_t pair_slot(uint64_t k, size_t mask) {
    return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static int pairs_resize(pairtab *p, size_t slots) {
    uint64_t *key = malloc(slots * sizeof *key);
    int64_t *cnt = malloc(slots * sizeof *cnt);
    if (!key || !cnt) {
        free(key), free(cnt);
        return -1;
    }
    memset(key, 0xff, slots * sizeof *key);
    for (size_t j = 0; p->key && j <= p->mask; j++) {
        if (p->key[j] == EMPTY) continue;
        size_t i = pair_slot(p->key[j], slots - 1);
        while (key[i] != EMPTY)
            i = (i + 1) & (slots - 1);
        key[i] = p->key[j], cnt[i] = p->cnt[j];
    }
    free(p->key), free(p->cnt);
    p->key = key, p->cnt = cnt, p->mask = slots - 1;
    return 0;
}

/* count[(a, b)] += d (a pair stays in the table when its count falls to 0). */
static int pairs_add(pairtab *p, int32_t a, int32_t b, int64_t d) {
    if (2 * (p->used + 1) > p->mask + 1 && pairs_resize(p, 2 * (p->mask + 1))) return -1;
    const uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = pair_slot(k, p->mask);; i = (i + 1) & p->mask) {
        if (p->key[i] == k) {
            p->cnt[i] += d;
            return 0;
        }
        if (p->key[i] == EMPTY) {
            p->key[i] = k, p->cnt[i] = d, p->used++;
            return 0;
        }
    }
}

/* Add d times every adjacent pair of s[0..n). */
static int pairs_of(pairtab *p, const int32_t *s, uint32_t n, int64_t d) {
    for (uint32_t i = 0; i + 1 < n; i++)
        if (pairs_add(p, s[i], s[i + 1], d)) return -1;
    return 0;
}

/* ---- spellings ------------------------------------------------------------ */

/* GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes for U+0100.. in byte order; UTF-8 of the
 * character in out, its length returned. */
static int byte_spelling(int b, char out[2]) {
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int k = 0;
        for (int x = 0; x < b; x++)
            k += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255));
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* ---- the tokenizer.json object ------------------------------------------- */

json_t *attn__bpe_gpt2_json(int32_t n, const char *spell, const uint32_t *soff,
                            const uint32_t *slen, const int32_t *ma, const int32_t *mb,
                            int32_t nm) {
    json_t *vocab = json_object(), *merges = json_array();
    int ok = vocab && merges;
    for (int32_t id = 0; ok && id < n; id++)
        ok = !json_object_set_new(vocab, spell + soff[id], json_integer(id));
    char *buf = malloc(2 * (size_t)ATTN_BPE_MAX_TOKEN + 2);
    ok = ok && buf;
    for (int32_t r = 0; ok && r < nm; r++) {
        const int32_t a = ma[r], b = mb[r];
        memcpy(buf, spell + soff[a], slen[a]);
        buf[slen[a]] = ' ';
        memcpy(buf + slen[a] + 1, spell + soff[b], slen[b]);
        buf[slen[a] + 1 + slen[b]] = '\0';
        ok = !json_array_append_new(merges, json_string(buf));
    }
    free(buf);
    if (!ok) {
        json_decref(vocab), json_decref(merges);
        return NULL;
    }
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                           "trim_offsets", 1, "use_regex", 1);
    return json_pack("{s:s, s:n, s:n, s:[], s:n, s:o, s:O, s:O, s:{s:s, s:n, s:n, s:s, s:s, s:b, "
                     "s:b, s:b, s:o, s:o}}",
                     "version", "1.0", "truncation", "padding", "added_tokens", "normalizer",
                     "pre_tokenizer", bl, "post_processor", bl, "decoder", bl, "model", "type",
                     "BPE", "dropout", "unk_token", "continuing_subword_prefix", "",
                     "end_of_word_suffix", "", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges",
                     0, "vocab", vocab, "merges", merges);
}

/* ---- training ------------------------------------------------------------- */

typedef struct trainer {
    wordtab w;
    int32_t *sym;  /* the symbols of every distinct pre-token, back to back */
    size_t *start; /* pre-token k's symbols start at sym + start[k] */
    uint32_t *len; /* and are len[k] long (shrinking as merges apply) */
    pairtab p;
    char *spell; /* spellings, NUL-terminated, ids in order */
    size_t spell_len, spell_cap;
    uint32_t *soff, *slen, *shash;
    int32_t *by_spell; /* open addressing over ids by spelling, -1 = empty */
    uint32_t by_mask;
    int32_t *ma, *mb; /* the merges in rank order */
    size_t nm, merge_cap;
} trainer;

static void trainer_free(trainer *t) {
    words_free(&t->w);
    free(t->sym), free(t->len), free(t->start);
    free(t->p.key), free(t->p.cnt);
    free(t->spell), free(t->soff), free(t->slen), free(t->shash), free(t->by_spell);
    free(t->ma), free(t->mb);
}

static int spell_room(trainer *t, size_t n) {
    if (t->spell_len + n + 1 <= t->spell_cap) return 0;
    size_t cap = t->spell_cap ? t->spell_cap : 4096;
    while (cap < t->spell_len + n + 1)
        cap *= 2;
    char *p = realloc(t->spell, cap);
    if (!p) return -1;
    t->spell = p, t->spell_cap = cap;
    return 0;
}

/* The id spelled like the pending spelling at t->spell + t->spell_len (n
 * bytes, hash h), or -1; *slot is where a new id would go. */
static int32_t find_spelling(const trainer *t, uint32_t h, size_t n, uint32_t *slot) {
    const char *s = t->spell + t->spell_len;
    for (uint32_t i = h & t->by_mask;; i = (i + 1) & t->by_mask) {
        const int32_t id = t->by_spell[i];
        if (id < 0) {
            *slot = i;
            return -1;
        }
        if (t->shash[id] == h && t->slen[id] == n && !memcmp(t->spell + t->soff[id], s, n))
            return id;
    }
}

/* Make the pending spelling (n bytes at spell + spell_len) token id n_ids,
 * or return the token that already has it. */
static int32_t add_spelling(trainer *t, size_t n, int32_t n_ids) {
    const uint32_t h = attn__bpe_hash(t->spell + t->spell_len, n);
    uint32_t slot;
    const int32_t old = find_spelling(t, h, n, &slot);
    if (old >= 0) return old;
    t->soff[n_ids] = (uint32_t)t->spell_len, t->slen[n_ids] = (uint32_t)n, t->shash[n_ids] = h;
    t->spell[t->spell_len + n] = '\0';
    t->spell_len += n + 1;
    t->by_spell[slot] = n_ids;
    return n_ids;
}

/* A pair taken out of the race for good (merged already, or its token
 * would be too long): its count goes so far below zero that the updates
 * of any later occurrences never bring it back. */
static void retire_pair(pairtab *p, uint64_t k) {
    for (size_t i = pair_slot(k, p->mask);; i = (i + 1) & p->mask)
        if (p->key[i] == k) {
            p->cnt[i] -= INT64_MAX / 2;
            return;
        }
}

/* Replace (a, b) by id in every pre-token holding it, updating the pair
 * counts of those pre-tokens. */
static int apply_merge(trainer *t, int32_t a, int32_t b, int32_t id) {
    for (size_t k = 0; k < t->w.n; k++) {
        int32_t *s = t->sym + t->start[k];
        const uint32_t n = t->len[k];
        uint32_t i = 0;
        while (i + 1 < n && !(s[i] == a && s[i + 1] == b))
            i++;
        if (i + 1 >= n) continue;
        const int64_t c = t->w.cnt[k];
        if (pairs_of(&t->p, s, n, -c)) return -1;
        uint32_t o = 0;
        for (i = 0; i < n; i++) {
            if (i + 1 < n && s[i] == a && s[i + 1] == b)
                s[o++] = id, i++;
            else
                s[o++] = s[i];
        }
        t->len[k] = o;
        if (pairs_of(&t->p, s, o, c)) return -1;
    }
    return 0;
}

static attn_status nomem(attn_ctx *ctx) {
    return attn_ctx_fail(ctx, ATTN_E_NOMEM, "attn_bpe_train: out of memory");
}

attn_status attn_bpe_train(attn_ctx *ctx, const char *text, size_t len, int32_t vocab_size,
                           attn_bpe **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (out) *out = NULL;
    if (!out || (!text && len))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_train: NULL %s", !out ? "out" : "text");
    if (vocab_size < 256 || vocab_size > ATTN_BPE_TRAIN_MAX_VOCAB)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_bpe_train: vocab_size %d outside [256, %d] (256 = the bytes "
                             "alone, no merges)",
                             (int)vocab_size, ATTN_BPE_TRAIN_MAX_VOCAB);
    if (len > (size_t)INT_MAX - 2 * ATTN_BPE_MAX_TEMPLATE)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_bpe_train: text of %zu bytes is longer than 2^31-17 bytes", len);
    const uint8_t *s = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        const size_t k = s[i] < 0x80 ? 1 : attn__bpe_utf8_len(s, i, len);
        if (!k)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "attn_bpe_train: text is not valid UTF-8: bad byte 0x%02x at "
                                 "byte offset %zu",
                                 (unsigned)s[i], i);
        i += k;
    }
    trainer t;
    memset(&t, 0, sizeof t);
    /* the distinct pre-tokens and their counts */
    for (size_t i = 0; i < len;) {
        const size_t e = attn__bpe_piece_end(ATTN_BPE_SPLIT_GPT2, s, len, i);
        if (words_add(&t.w, s, (uint32_t)i, (uint32_t)(e - i))) goto oom;
        i = e;
    }
    size_t total = 0;
    for (size_t k = 0; k < t.w.n; k++)
        total += t.w.len[k];
    uint32_t slots = 16;
    while (slots < 2 * (uint32_t)vocab_size)
        slots *= 2;
    t.by_mask = slots - 1;
    t.sym = malloc((total ? total : 1) * sizeof *t.sym);
    t.len = malloc((t.w.n ? t.w.n : 1) * sizeof *t.len);
    t.start = malloc((t.w.n ? t.w.n : 1) * sizeof *t.start);
    t.soff = malloc((size_t)vocab_size * sizeof *t.soff);
    t.slen = malloc((size_t)vocab_size * sizeof *t.slen);
    t.shash = malloc((size_t)vocab_size * sizeof *t.shash);
    t.by_spell = malloc(slots * sizeof *t.by_spell);
    if (!t.sym || !t.len || !t.start || !t.soff || !t.slen || !t.shash || !t.by_spell ||
        pairs_resize(&t.p, 1024))
        goto oom;
    memset(t.by_spell, 0xff, slots * sizeof *t.by_spell);
    total = 0;
    for (size_t k = 0; k < t.w.n; k++) {
        t.start[k] = total, t.len[k] = t.w.len[k];
        for (uint32_t j = 0; j < t.w.len[k]; j++)
            t.sym[total + j] = s[t.w.off[k] + j];
        if (pairs_of(&t.p, t.sym + total, t.len[k], t.w.cnt[k])) goto oom;
        total += t.w.len[k];
    }
    for (int b = 0; b < 256; b++) {
        char c[2];
        const int n = byte_spelling(b, c);
        if (spell_room(&t, 2)) goto oom;
        memcpy(t.spell + t.spell_len, c, (size_t)n);
        add_spelling(&t, (size_t)n, b);
    }
    int32_t n = 256;
    while (n < vocab_size) {
        uint64_t best = EMPTY;
        int64_t bc = 0;
        for (size_t i = 0; i <= t.p.mask; i++) {
            const uint64_t k = t.p.key[i];
            const int64_t c = t.p.cnt[i];
            /* a pair must occur at least twice (EMPTY slots have no count) */
            if (k == EMPTY || c < 2) continue;
            if (c > bc || (c == bc && k < best)) best = k, bc = c;
        }
        if (best == EMPTY) break;
        retire_pair(&t.p, best);
        const int32_t a = (int32_t)(best >> 32), b = (int32_t)(best & 0xffffffffu);
        const size_t nl = (size_t)t.slen[a] + t.slen[b];
        if (nl > ATTN_BPE_MAX_TOKEN) continue;
        if (spell_room(&t, nl)) goto oom;
        memcpy(t.spell + t.spell_len, t.spell + t.soff[a], t.slen[a]);
        memcpy(t.spell + t.spell_len + t.slen[a], t.spell + t.soff[b], t.slen[b]);
        /* two merges may spell the same token ("ab" "c" and "a" "bc"): the
         * second maps to the first's id, as in Hugging Face's trainer */
        const int32_t id = add_spelling(&t, nl, n);
        if (t.nm == t.merge_cap) {
            const size_t cap = t.merge_cap ? 2 * t.merge_cap : 1024;
            int32_t *pa = realloc(t.ma, cap * sizeof *pa);
            if (pa) t.ma = pa;
            int32_t *pb = realloc(t.mb, cap * sizeof *pb);
            if (pb) t.mb = pb;
            if (!pa || !pb) goto oom;
            t.merge_cap = cap;
        }
        t.ma[t.nm] = a, t.mb[t.nm] = b, t.nm++;
        if (apply_merge(&t, a, b, id)) goto oom;
        if (id == n) n++;
    }
    json_t *j = attn__bpe_gpt2_json(n, t.spell, t.soff, t.slen, t.ma, t.mb, (int32_t)t.nm);
    if (!j) goto oom;
    attn_status st = attn__bpe_load_obj(ctx, "trained tokenizer", j, out);
    json_decref(j);
    trainer_free(&t);
    return st;
oom:
    trainer_free(&t);
    return nomem(ctx);
}

/* ---- saving ----------------------------------------------------------------- */

typedef struct rank_pair {
    int32_t rank, a, b;
} rank_pair;

static int by_rank(const void *x, const void *y) {
    const rank_pair *p = x, *q = y;
    return (p->rank > q->rank) - (p->rank < q->rank);
}

static attn_status write_merges(attn_ctx *ctx, const char *path, const attn_bpe *t,
                                const rank_pair *m, size_t nm) {
    attn_outfile *o = NULL;
    attn_status st = attn_outfile_open(ctx, path, &o);
    if (st) return st;
    const int fd = dup(attn_outfile_fd(o));
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f && fd >= 0) close(fd);
    int ok = f != NULL && fputs("#version: 0.2\n", f) >= 0;
    for (size_t r = 0; ok && r < nm; r++)
        ok = fprintf(f, "%s %s\n", t->spell + t->soff[m[r].a], t->spell + t->soff[m[r].b]) > 0;
    if (f && fclose(f)) ok = 0;
    if (!ok) {
        attn_outfile_abort(o);
        return attn_ctx_fail(ctx, ATTN_E_IO, "%s: write failed", path);
    }
    return attn_outfile_commit(ctx, o);
}

attn_status attn_bpe_save(attn_ctx *ctx, const attn_bpe *t, const char *dir) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!t || !dir) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_save: NULL argument");
    if (t->split != ATTN_BPE_SPLIT_NONE || !t->bl_regex || t->add_prefix_space || t->nfc ||
        t->n_added || t->n_prefix || t->n_suffix || t->unk >= 0 || t->ignore_merges)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_bpe_save: only GPT-2-style byte-level tokenizers without added "
                             "tokens or templates are written (as attn_bpe_train makes them)");
    for (int32_t id = 0; id < t->n; id++)
        if (t->slen[id] == UINT32_MAX)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_save: no token has id %d", (int)id);
    size_t nm = 0;
    for (uint32_t i = 0; i <= t->merge_mask; i++)
        nm += t->merges[i].key != UINT64_MAX;
    rank_pair *m = malloc((nm ? nm : 1) * sizeof *m);
    int32_t *ma = malloc((nm ? nm : 1) * sizeof *ma), *mb = malloc((nm ? nm : 1) * sizeof *mb);
    if (!m || !ma || !mb) {
        free(m), free(ma), free(mb);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "attn_bpe_save: out of memory");
    }
    nm = 0;
    for (uint32_t i = 0; i <= t->merge_mask; i++) {
        const attn__bpe_merge *e = &t->merges[i];
        if (e->key != UINT64_MAX)
            m[nm++] =
                (rank_pair){e->rank, (int32_t)(e->key >> 32), (int32_t)(e->key & 0xffffffffu)};
    }
    qsort(m, nm, sizeof *m, by_rank);
    for (size_t r = 0; r < nm; r++)
        ma[r] = m[r].a, mb[r] = m[r].b;
    json_t *j = attn__bpe_gpt2_json(t->n, t->spell, t->soff, t->slen, ma, mb, (int32_t)nm);
    free(ma), free(mb);
    attn_status st = ATTN_OK;
    char path[ATTN__PATH_LEN];
    if (!j)
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "attn_bpe_save: out of memory");
    else if (mkdir(dir, 0777) && errno != EEXIST)
        st = attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot create the directory", dir);
    json_t *vocab = j ? json_incref(json_object_get(json_object_get(j, "model"), "vocab")) : NULL;
    if (!st && !attn__path_join(path, dir, "tokenizer.json", NULL))
        st = attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if (!st) {
        st = attn__write_json(ctx, path, j);
        j = NULL;
    }
    if (!st && !attn__path_join(path, dir, "vocab.json", NULL))
        st = attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if (!st) {
        st = attn__write_json(ctx, path, vocab);
        vocab = NULL;
    }
    if (!st && !attn__path_join(path, dir, "merges.txt", NULL))
        st = attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    if (!st) st = write_merges(ctx, path, t, m, nm);
    json_decref(j), json_decref(vocab);
    free(m);
    return st;
}
