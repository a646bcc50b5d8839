/* Byte-level BPE: loading tokenizer.json, or vocab.json + merges.txt, into
 * the tables attn_bpe_encode uses (bpe.c). Everything a file says that this
 * implementation would not reproduce exactly (another normalizer, an
 * unknown pre-tokenization regex, byte fallback, subword prefixes, ...) is
 * refused with ATTN_E_FORMAT naming it, rather than approximated. */
#include "io/json.h"
#include "text/bpe_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

/* GPT-2's byte <-> character mapping: the printable bytes 33..126,
 * 161..172, 174..255 stand for themselves, the other 68 bytes in order for
 * U+0100.. U+0143. */
static int32_t cp_to_byte(int32_t c) {
    if ((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255)) return c;
    if (c < 256 || c > 256 + 67) return -1;
    int k = c - 256; /* the k-th byte that is not printable */
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        if (!printable && k-- == 0) return b;
    }
    return -1;
}

/* One token of the input files: its spelling (not NUL-terminated). */
typedef struct tokspec {
    const char *s;
    size_t n;
} tokspec;

typedef struct mergespec {
    tokspec a, b;
} mergespec;

/* ---------------------------------------------------------------- hashing */

static attn_status map_init(attn_ctx *ctx, attn__bpe_map *m, size_t n) {
    size_t slots = 16;
    while (slots < 2 * n)
        slots *= 2;
    m->slots = malloc(slots * sizeof *m->slots);
    if (!m->slots) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %zu tokens", n);
    memset(m->slots, 0xff, slots * sizeof *m->slots);
    m->mask = (uint32_t)(slots - 1);
    return ATTN_OK;
}

int32_t attn__bpe_find_bytes(const attn_bpe *t, uint32_t h, const void *s, size_t n) {
    for (uint32_t i = h & t->by_bytes.mask;; i = (i + 1) & t->by_bytes.mask) {
        int32_t id = t->by_bytes.slots[i];
        if (id < 0) return -1;
        if (t->bhash[id] == h && t->blen[id] == n && !memcmp(t->bytes + t->boff[id], s, n))
            return id;
    }
}

/* Id of the token spelled a || b (hash h), or -1. */
static int32_t find_spell(const attn_bpe *t, uint32_t h, const char *a, size_t na, const char *b,
                          size_t nb) {
    for (uint32_t i = h & t->by_spell.mask;; i = (i + 1) & t->by_spell.mask) {
        int32_t id = t->by_spell.slots[i];
        if (id < 0) return -1;
        const char *s = t->spell + t->soff[id];
        if (t->shash[id] == h && t->slen[id] == na + nb && !memcmp(s, a, na) &&
            !memcmp(s + na, b, nb))
            return id;
    }
}

static uint32_t fnv_more(uint32_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Insert id into m keyed by (hash, bytes); an equal key already there is
 * replaced (a later duplicate wins, as in a dictionary). */
static void map_put(attn__bpe_map *m, int32_t id, const uint32_t *hash, const uint32_t *off,
                    const uint32_t *len, const char *blob) {
    for (uint32_t i = hash[id] & m->mask;; i = (i + 1) & m->mask) {
        int32_t o = m->slots[i];
        if (o < 0 || (hash[o] == hash[id] && len[o] == len[id] &&
                      !memcmp(blob + off[o], blob + off[id], len[id]))) {
            m->slots[i] = id;
            return;
        }
    }
}

static uint32_t merge_slot(uint64_t key, uint32_t mask) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* ---------------------------------------------------------------- building */

void attn_bpe_free(attn_bpe *t) {
    if (!t) return;
    free(t->bytes);
    free(t->boff);
    free(t->blen);
    free(t->spell);
    free(t->soff);
    free(t->slen);
    free(t->shash);
    free(t->bhash);
    free(t->by_bytes.slots);
    free(t->by_spell.slots);
    free(t->merges);
    free(t->added);
    free(t->whole);
    free(t->edges);
    free(t->term);
    free(t);
}

/* Fill t from n ids (spec[id].s NULL: no token with that id), the merges in
 * rank order and the added tokens (ids into spec, flags). what names the
 * source in messages. */
typedef struct addspec {
    int32_t id;
    int lstrip, rstrip;
} addspec;

static attn_status build(attn_ctx *ctx, const char *what, attn_bpe *t, const tokspec *spec,
                         const uint8_t *is_added, int32_t n, const mergespec *mg, size_t nm,
                         const addspec *add, int nadd) {
    size_t total = 0;
    for (int32_t id = 0; id < n; id++)
        if (spec[id].s) total += spec[id].n + 1;
    if (total >= UINT32_MAX)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: tokens larger than 4 GiB in all", what);
    t->n = n;
    t->spell = malloc(total + 1);
    t->bytes = malloc(total + 1);
    t->soff = calloc((size_t)n + 1, sizeof *t->soff);
    t->slen = calloc((size_t)n + 1, sizeof *t->slen);
    t->boff = calloc((size_t)n + 1, sizeof *t->boff);
    t->blen = calloc((size_t)n + 1, sizeof *t->blen);
    t->shash = calloc((size_t)n + 1, sizeof *t->shash);
    t->bhash = calloc((size_t)n + 1, sizeof *t->bhash);
    if (!t->spell || !t->bytes || !t->soff || !t->slen || !t->boff || !t->blen || !t->shash ||
        !t->bhash)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %d tokens", (int)n);
    attn_status st = map_init(ctx, &t->by_spell, (size_t)n);
    if (!st) st = map_init(ctx, &t->by_bytes, (size_t)n);
    if (st) return st;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    uint32_t so = 0, bo = 0;
    for (int32_t id = 0; id < n; id++) {
        if (!spec[id].s) {
            t->blen[id] = UINT32_MAX;
            t->slen[id] = UINT32_MAX;
            continue;
        }
        const char *s = spec[id].s;
        size_t L = spec[id].n;
        memcpy(t->spell + so, s, L);
        t->spell[so + L] = '\0';
        t->soff[id] = so;
        t->slen[id] = (uint32_t)L;
        t->shash[id] = attn__bpe_hash(s, L);
        so += (uint32_t)L + 1;
        map_put(&t->by_spell, id, t->shash, t->soff, t->slen, t->spell);
        /* raw bytes: each character through the byte mapping; a token with
         * a character outside it stands for its UTF-8 bytes (as the
         * reference's ByteLevel decoder does) and is no BPE symbol */
        int byte_level = 1;
        uint32_t start = bo;
        for (size_t i = 0; i < L;) {
            utf8proc_int32_t c;
            utf8proc_ssize_t k =
                utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(L - i), &c);
            if (k <= 0)
                return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: token %d is not valid UTF-8", what,
                                     (int)id);
            int32_t b = cp_to_byte(c);
            if (b < 0) byte_level = 0;
            if (byte_level) t->bytes[bo++] = (char)b;
            i += (size_t)k;
        }
        if (!byte_level) {
            bo = start;
            memcpy(t->bytes + bo, s, L);
            bo += (uint32_t)L;
        }
        t->boff[id] = start;
        t->blen[id] = bo - start;
        t->bhash[id] = attn__bpe_hash(t->bytes + start, bo - start);
        if (byte_level && !is_added[id]) {
            map_put(&t->by_bytes, id, t->bhash, t->boff, t->blen, t->bytes);
            if (bo - start == 1) t->byte_id[(uint8_t)t->bytes[start]] = id;
        }
    }
    /* a later duplicate replaced an earlier one in the maps; byte_id must
     * agree with what the map finds */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = attn__bpe_find_bytes(t, attn__bpe_hash(&c, 1), &c, 1);
    }
    size_t slots = 16;
    while (slots < 2 * nm)
        slots *= 2;
    t->merges = malloc(slots * sizeof *t->merges);
    if (!t->merges) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %zu merges", nm);
    for (size_t i = 0; i < slots; i++)
        t->merges[i].key = UINT64_MAX;
    t->merge_mask = (uint32_t)(slots - 1);
    for (size_t r = 0; r < nm; r++) {
        const mergespec *m = &mg[r];
        uint32_t ha = attn__bpe_hash(m->a.s, m->a.n), hb = attn__bpe_hash(m->b.s, m->b.n);
        int32_t a = find_spell(t, ha, m->a.s, m->a.n, "", 0);
        int32_t b = find_spell(t, hb, m->b.s, m->b.n, "", 0);
        int32_t ab = find_spell(t, fnv_more(ha, m->b.s, m->b.n), m->a.s, m->a.n, m->b.s, m->b.n);
        if (a < 0 || b < 0 || ab < 0)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: merge %zu ('%.*s' '%.*s'): %s is not in the vocabulary", what,
                                 r + 1, (int)(m->a.n > 64 ? 64 : m->a.n), m->a.s,
                                 (int)(m->b.n > 64 ? 64 : m->b.n), m->b.s,
                                 a < 0   ? "its first token"
                                 : b < 0 ? "its second token"
                                         : "the merged token");
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        for (uint32_t i = merge_slot(key, t->merge_mask);; i = (i + 1) & t->merge_mask) {
            if (t->merges[i].key == UINT64_MAX || t->merges[i].key == key) {
                t->merges[i] = (attn__bpe_merge){key, (int32_t)r, ab};
                break;
            }
        }
    }
    if (nadd) {
        t->added = malloc((size_t)nadd * sizeof *t->added);
        if (!t->added) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    }
    size_t nodes = 1;
    for (int k = 0; k < nadd; k++) {
        int32_t id = add[k].id;
        t->added[k] = (attn__bpe_added){id, t->soff[id], t->slen[id], add[k].lstrip, add[k].rstrip};
        t->added_first[(uint8_t)t->spell[t->soff[id]]] = 1;
        nodes += t->slen[id];
    }
    t->n_added = nadd;
    if (nodes >= (1u << 23)) /* trie keys are node * 256 + byte + 1 in 32 bits */
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: added tokens of more than 8 MiB in all",
                             what);
    slots = 16;
    while (slots < 2 * nodes)
        slots *= 2;
    t->edges = calloc(slots, sizeof *t->edges);
    t->term = malloc(nodes * sizeof *t->term);
    if (!t->edges || !t->term)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %d added tokens", nadd);
    t->edge_mask = (uint32_t)(slots - 1);
    t->term[0] = -1;
    int32_t used = 1;
    for (int k = 0; k < nadd; k++) {
        const uint8_t *c = (const uint8_t *)t->spell + t->added[k].off;
        int32_t node = 0;
        for (uint32_t j = 0; j < t->added[k].len; j++) {
            uint32_t key = (uint32_t)node * 256u + c[j] + 1u,
                     i = attn__bpe_edge_slot(key, t->edge_mask);
            while (t->edges[i].key && t->edges[i].key != key)
                i = (i + 1) & t->edge_mask;
            if (!t->edges[i].key) {
                t->edges[i].key = key;
                t->edges[i].child = used;
                t->term[used++] = -1;
            }
            node = t->edges[i].child;
        }
        t->term[node] = k; /* the same content twice: the later one */
    }
    if (!t->ignore_merges && attn__bpe_find_wholes(t))
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %d tokens", (int)n);
    return ATTN_OK;
}

/* ------------------------------------------------------------ file access */

static attn_status check_size(attn_ctx *ctx, const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return attn_ctx_fail(ctx, errno == ENOENT ? ATTN_E_NOTFOUND : ATTN_E_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    if ((uint64_t)sb.st_size > ATTN_BPE_MAX_FILE)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: %lld bytes, more than the %zu MiB allowed",
                             path, (long long)sb.st_size, ATTN_BPE_MAX_FILE >> 20);
    return ATTN_OK;
}

static attn_status read_text(attn_ctx *ctx, const char *path, char **out, size_t *len) {
    *out = NULL;
    attn_status st = check_size(ctx, path);
    if (st) return st;
    FILE *f = fopen(path, "rb");
    if (!f) return attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1 || cap > ATTN_BPE_MAX_FILE) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) free(b);
        b = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!b) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory reading %s", path);
    if (err) {
        free(b);
        return attn_ctx_fail(ctx, ATTN_E_IO, "%s: read error", path);
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return ATTN_OK;
}

/* ids of a JSON vocabulary object {token: id} into spec[0..*n) (allocated
 * for max(ids) + 1 + extra). */
static attn_status read_vocab(attn_ctx *ctx, const char *what, json_t *vocab, int32_t extra_max,
                              tokspec **spec, int32_t *n) {
    if (!json_is_object(vocab))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: the vocabulary is not a JSON object", what);
    if (json_object_size(vocab) == 0)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: the vocabulary is empty", what);
    int64_t maxid = extra_max;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        double d = json_is_integer(v) ? (double)json_integer_value(v)
                   : json_is_real(v)  ? json_real_value(v)
                                      : -1.0;
        if (!(d >= 0 && d < ATTN_BPE_MAX_VOCAB && d == (double)(int64_t)d))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: the id of token '%.64s' is not an integer in [0, %d)", what,
                                 key, ATTN_BPE_MAX_VOCAB);
        if ((int64_t)d > maxid) maxid = (int64_t)d;
    }
    *n = (int32_t)maxid + 1;
    *spec = calloc((size_t)*n, sizeof **spec);
    if (!*spec) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %d tokens", (int)*n);
    json_object_foreach(vocab, key, v) {
        int32_t id = (int32_t)(json_is_integer(v) ? json_integer_value(v) : json_real_value(v));
        size_t L = strlen(key);
        if (L == 0 || L > ATTN_BPE_MAX_TOKEN)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: token %d has %zu bytes (1..%d allowed)",
                                 what, (int)id, L, ATTN_BPE_MAX_TOKEN);
        if ((*spec)[id].s)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: id %d is given to two tokens", what,
                                 (int)id);
        (*spec)[id] = (tokspec){key, L};
    }
    return ATTN_OK;
}

/* The default EOS: the first of the usual end-of-text tokens present. */
static int32_t guess_eos(const attn_bpe *t) {
    static const char *const names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t id = attn_bpe_id(t, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

/* ------------------------------------------------------- tokenizer.json */

static int json_bool(json_t *o, const char *key, int def, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) return -1;
    *out = json_is_true(v);
    return 0;
}

static const char *type_of(json_t *o) {
    json_t *ty = json_is_object(o) ? json_object_get(o, "type") : NULL;
    return json_is_string(ty) ? json_string_value(ty) : NULL;
}

/* One pre-tokenizer (Split or ByteLevel) of the supported pipeline. */
static attn_status pretok_one(attn_ctx *ctx, const char *what, json_t *p, attn_bpe *t,
                              int *seen_split, int *seen_bl) {
    const char *ty = type_of(p);
    if (!ty)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: a pre_tokenizer without a \"type\"", what);
    if (!strcmp(ty, "ByteLevel")) {
        if (*seen_bl)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: two ByteLevel pre-tokenizers", what);
        *seen_bl = 1;
        if (json_bool(p, "add_prefix_space", 1, &t->add_prefix_space) ||
            json_bool(p, "use_regex", 1, &t->bl_regex))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: ByteLevel add_prefix_space/use_regex must be booleans", what);
        return ATTN_OK;
    }
    if (!strcmp(ty, "Split")) {
        if (*seen_split || *seen_bl)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: unsupported pre_tokenizer sequence (a Split after another "
                                 "Split or after ByteLevel)",
                                 what);
        *seen_split = 1;
        json_t *pat = json_object_get(p, "pattern");
        json_t *re = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        int invert = 0;
        if (!json_is_string(re))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: Split pre-tokenizer without a \"Regex\" pattern is not "
                                 "supported",
                                 what);
        int k = attn__bpe_split_of_regex(json_string_value(re));
        if (k < 0)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: unsupported Split regex \"%.300s\" (known: the GPT-2, "
                                 "Llama 3 and Qwen2 patterns)",
                                 what, json_string_value(re));
        if (!beh || strcmp(beh, "Isolated") || json_bool(p, "invert", 0, &invert) || invert)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: Split with behavior \"%s\"%s is not supported (only "
                                 "Isolated, not inverted)",
                                 what, beh ? beh : "(none)", invert ? ", inverted" : "");
        t->split = (attn__bpe_split)k;
        return ATTN_OK;
    }
    return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                         "%s: pre_tokenizer \"%s\" is not supported (byte-level BPE needs "
                         "ByteLevel, optionally after a Split)",
                         what, ty);
}

static attn_status parse_pretok(attn_ctx *ctx, const char *what, json_t *p, attn_bpe *t) {
    int seen_split = 0, seen_bl = 0;
    const char *ty = type_of(p);
    attn_status st = ATTN_OK;
    if (ty && !strcmp(ty, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        size_t i;
        json_t *q;
        if (!json_is_array(list))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: Sequence without \"pretokenizers\"",
                                 what);
        json_array_foreach(list, i, q) {
            st = pretok_one(ctx, what, q, t, &seen_split, &seen_bl);
            if (st) return st;
        }
    } else if (p && !json_is_null(p)) {
        st = pretok_one(ctx, what, p, t, &seen_split, &seen_bl);
        if (st) return st;
    }
    if (!seen_bl)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                             "%s: no ByteLevel pre-tokenizer: not a byte-level BPE tokenizer",
                             what);
    return ATTN_OK;
}

/* A TemplateProcessing's "single": special tokens before and after $A. */
static attn_status parse_template(attn_ctx *ctx, const char *what, json_t *p, attn_bpe *t) {
    json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
    size_t i;
    json_t *it;
    int seen_a = 0;
    if (!json_is_array(single))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: TemplateProcessing without \"single\"", what);
    t->n_prefix = t->n_suffix = 0;
    json_array_foreach(single, i, it) {
        json_t *sp = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
        if (json_is_object(sq)) {
            const char *sid = json_string_value(json_object_get(sq, "id"));
            if (seen_a || !sid || strcmp(sid, "A"))
                return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                     "%s: TemplateProcessing \"single\" must hold $A once", what);
            seen_a = 1;
            continue;
        }
        const char *name = json_is_object(sp) ? json_string_value(json_object_get(sp, "id")) : NULL;
        json_t *ent = name ? json_object_get(specials, name) : NULL;
        json_t *ids = json_object_get(ent, "ids");
        if (!json_is_array(ids))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: TemplateProcessing item %zu is not a known special token",
                                 what, i);
        size_t k;
        json_t *idv;
        json_array_foreach(ids, k, idv) {
            double d = json_number_value(idv);
            if (!json_is_number(idv) || d < 0 || d >= t->n || d != (double)(int32_t)d ||
                t->slen[(int32_t)d] == UINT32_MAX)
                return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                     "%s: TemplateProcessing token '%.64s' has an id outside the "
                                     "vocabulary",
                                     what, name);
            int *cnt = seen_a ? &t->n_suffix : &t->n_prefix;
            int32_t *dst = seen_a ? t->suffix : t->prefix;
            if (*cnt >= ATTN_BPE_MAX_TEMPLATE)
                return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                     "%s: TemplateProcessing adds more than %d tokens", what,
                                     ATTN_BPE_MAX_TEMPLATE);
            dst[(*cnt)++] = (int32_t)d;
        }
    }
    if (!seen_a)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: TemplateProcessing \"single\" lacks $A",
                             what);
    return ATTN_OK;
}

static attn_status parse_post(attn_ctx *ctx, const char *what, json_t *p, attn_bpe *t) {
    if (!p || json_is_null(p)) return ATTN_OK;
    const char *ty = type_of(p);
    if (ty && !strcmp(ty, "ByteLevel")) return ATTN_OK; /* offsets only */
    if (ty && !strcmp(ty, "TemplateProcessing")) return parse_template(ctx, what, p, t);
    if (ty && !strcmp(ty, "Sequence")) {
        json_t *list = json_object_get(p, "processors"), *q;
        size_t i;
        if (!json_is_array(list))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: post_processor Sequence without "
                                 "\"processors\"",
                                 what);
        json_array_foreach(list, i, q) {
            const char *qt = type_of(q);
            if (qt && !strcmp(qt, "Sequence"))
                return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: nested post_processor Sequence",
                                     what);
            attn_status st = parse_post(ctx, what, q, t);
            if (st) return st;
        }
        return ATTN_OK;
    }
    return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: post_processor \"%s\" is not supported", what,
                         ty ? ty : "(no type)");
}

/* The model section's settings that must have their neutral values. */
static attn_status check_model(attn_ctx *ctx, const char *what, json_t *model, attn_bpe *t) {
    const char *ty = type_of(model);
    if (!ty || strcmp(ty, "BPE"))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: model type \"%s\" is not BPE", what,
                             ty ? ty : "(none)");
    json_t *v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: BPE dropout is not supported", what);
    static const char *const strs[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(model, strs[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && !*json_string_value(v)))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: BPE %s is not supported", what, strs[i]);
    }
    int bf = 0;
    if (json_bool(model, "byte_fallback", 0, &bf) || bf)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                             "%s: BPE byte_fallback (SentencePiece-style) is not supported", what);
    if (json_bool(model, "fuse_unk", 0, &t->fuse_unk))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: fuse_unk must be a boolean", what);
    if (json_bool(model, "ignore_merges", 0, &t->ignore_merges))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: ignore_merges must be a boolean", what);
    return ATTN_OK;
}

/* The merges list: strings "a b" or pairs ["a", "b"]. */
static attn_status read_merges_json(attn_ctx *ctx, const char *what, json_t *merges,
                                    mergespec **out, size_t *nm) {
    *out = NULL;
    *nm = 0;
    if (!merges) return ATTN_OK;
    if (!json_is_array(merges))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"merges\" is not an array", what);
    size_t n = json_array_size(merges);
    if (n > ATTN_BPE_MAX_VOCAB)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: more than %d merges", what,
                             ATTN_BPE_MAX_VOCAB);
    mergespec *m = calloc(n ? n : 1, sizeof *m);
    if (!m) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %zu merges", n);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(merges, i);
        if (json_is_string(e)) {
            const char *s = json_string_value(e), *sp = strchr(s, ' ');
            size_t L = json_string_length(e);
            if (sp && sp > s && sp[1] && !strchr(sp + 1, ' ') && strlen(s) == L) {
                m[i].a = (tokspec){s, (size_t)(sp - s)};
                m[i].b = (tokspec){sp + 1, L - (size_t)(sp - s) - 1};
                continue;
            }
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
            m[i].a = (tokspec){json_string_value(a), json_string_length(a)};
            m[i].b = (tokspec){json_string_value(b), json_string_length(b)};
            if (m[i].a.n && m[i].b.n) continue;
        }
        free(m);
        return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                             "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", what, i + 1);
    }
    *out = m;
    *nm = n;
    return ATTN_OK;
}

static int seen_id(const addspec *as, size_t n, int32_t id) {
    for (size_t i = 0; i < n; i++)
        if (as[i].id == id) return 1;
    return 0;
}

static attn_status load_json_obj(attn_ctx *ctx, const char *what, json_t *j, attn_bpe *t) {
    if (!json_is_object(j)) return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: not a JSON object", what);
    json_t *model = json_object_get(j, "model");
    if (!json_is_object(model))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: no \"model\" object", what);
    attn_status st = check_model(ctx, what, model, t);
    if (st) return st;
    json_t *norm = json_object_get(j, "normalizer");
    if (norm && !json_is_null(norm)) {
        const char *ty = type_of(norm);
        if (!ty || strcmp(ty, "NFC"))
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: normalizer \"%s\" is not supported (only NFC)", what,
                                 ty ? ty : "(no type)");
        t->nfc = 1;
    }
    st = parse_pretok(ctx, what, json_object_get(j, "pre_tokenizer"), t);
    if (st) return st;
    json_t *dec = json_object_get(j, "decoder");
    if (dec && !json_is_null(dec) && (!type_of(dec) || strcmp(type_of(dec), "ByteLevel")))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: decoder \"%s\" is not supported (ByteLevel)",
                             what, type_of(dec) ? type_of(dec) : "(no type)");
    /* added tokens: their ids may lie beyond the model's vocabulary */
    json_t *added = json_object_get(j, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"added_tokens\" is not an array", what);
    size_t nadd = json_array_size(added);
    if (nadd > ATTN_BPE_MAX_VOCAB)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: too many added tokens", what);
    int64_t add_max = -1;
    for (size_t i = 0; i < nadd; i++) {
        json_t *a = json_array_get(added, i), *idv = json_object_get(a, "id");
        const char *c = json_string_value(json_object_get(a, "content"));
        double d = json_is_number(idv) ? json_number_value(idv) : -1;
        if (!c || !*c || strlen(c) > ATTN_BPE_MAX_TOKEN || !(d >= 0 && d < ATTN_BPE_MAX_VOCAB) ||
            d != (double)(int64_t)d)
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: added token %zu needs a non-empty \"content\" (at most %d "
                                 "bytes) and an integer \"id\" in [0, %d)",
                                 what, i + 1, ATTN_BPE_MAX_TOKEN, ATTN_BPE_MAX_VOCAB);
        if ((int64_t)d > add_max) add_max = (int64_t)d;
    }
    tokspec *spec = NULL;
    int32_t n = 0;
    mergespec *mg = NULL;
    size_t nm = 0;
    addspec *as = NULL;
    uint8_t *is_added = NULL;
    st = read_vocab(ctx, what, json_object_get(model, "vocab"), (int32_t)add_max, &spec, &n);
    if (!st) st = read_merges_json(ctx, what, json_object_get(model, "merges"), &mg, &nm);
    if (!st) {
        as = calloc(nadd ? nadd : 1, sizeof *as);
        is_added = calloc((size_t)n, 1);
        if (!as || !is_added) st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; !st && i < nadd; i++) {
        json_t *a = json_array_get(added, i);
        const char *c = json_string_value(json_object_get(a, "content"));
        int32_t id = (int32_t)json_number_value(json_object_get(a, "id"));
        int single = 0;
        as[i].id = id;
        if (json_bool(a, "lstrip", 0, &as[i].lstrip) || json_bool(a, "rstrip", 0, &as[i].rstrip) ||
            json_bool(a, "single_word", 0, &single))
            st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: added token %zu has a non-boolean flag",
                               what, i + 1);
        else if (single)
            st = attn_ctx_fail(ctx, ATTN_E_FORMAT,
                               "%s: added token '%.64s': single_word is not supported", what, c);
        else if (seen_id(as, i, id))
            st =
                attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: two added tokens have id %d", what, (int)id);
        else if (spec[id].s && (spec[id].n != strlen(c) || memcmp(spec[id].s, c, spec[id].n)))
            st = attn_ctx_fail(ctx, ATTN_E_FORMAT,
                               "%s: added token '%.64s' has id %d, which the vocabulary gives "
                               "to another token",
                               what, c, (int)id);
        else {
            /* an added token absent from the model's vocabulary is no BPE
             * symbol; one present in both stays one (as in the reference) */
            if (!spec[id].s) is_added[id] = 1;
            spec[id] = (tokspec){c, strlen(c)};
        }
    }
    if (!st) st = build(ctx, what, t, spec, is_added, n, mg, nm, as, (int)nadd);
    free(spec);
    free(mg);
    free(as);
    free(is_added);
    if (st) return st;
    json_t *unk = json_object_get(model, "unk_token");
    t->unk = json_is_string(unk) ? attn_bpe_id(t, json_string_value(unk)) : -1;
    st = parse_post(ctx, what, json_object_get(j, "post_processor"), t);
    if (st) return st;
    t->bos = t->n_prefix ? t->prefix[0] : -1;
    t->eos = guess_eos(t);
    return ATTN_OK;
}

static attn_status new_bpe(attn_ctx *ctx, attn_bpe **t) {
    *t = calloc(1, sizeof **t);
    if (!*t) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for a tokenizer");
    (*t)->unk = (*t)->bos = (*t)->eos = -1;
    (*t)->bl_regex = 1;
    return ATTN_OK;
}

attn_status attn__bpe_load_obj(attn_ctx *ctx, const char *what, json_t *j, attn_bpe **out) {
    attn_bpe *t = NULL;
    attn_status st = new_bpe(ctx, &t);
    if (!st) st = load_json_obj(ctx, what, j, t);
    if (st) {
        attn_bpe_free(t);
        t = NULL;
    }
    *out = t;
    return st;
}

attn_status attn_bpe_load_json(attn_ctx *ctx, const char *path, attn_bpe **out) {
    attn__ctx_clear(ctx);
    if (out) *out = NULL;
    if (!path || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_load_json: NULL %s",
                             !path ? "path" : "out");
    attn_status st = check_size(ctx, path);
    json_t *j = NULL;
    if (!st) st = attn__json_load(ctx, path, 0, &j);
    if (st) return st;
    attn_bpe *t = NULL;
    st = new_bpe(ctx, &t);
    if (!st) st = load_json_obj(ctx, path, j, t);
    json_decref(j);
    if (st) {
        attn_bpe_free(t);
        return st;
    }
    *out = t;
    return ATTN_OK;
}

/* ------------------------------------------------- vocab.json + merges.txt */

attn_status attn_bpe_load_files(attn_ctx *ctx, const char *vocab_json, const char *merges_txt,
                                attn_bpe **out) {
    attn__ctx_clear(ctx);
    if (out) *out = NULL;
    if (!vocab_json || !merges_txt || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_load_files: NULL %s",
                             !vocab_json   ? "vocab_json"
                             : !merges_txt ? "merges_txt"
                                           : "out");
    json_t *j = NULL;
    char *text = NULL;
    size_t len = 0;
    attn_status st = check_size(ctx, vocab_json);
    if (!st) st = attn__json_load(ctx, vocab_json, 0, &j);
    if (!st) st = read_text(ctx, merges_txt, &text, &len);
    tokspec *spec = NULL;
    int32_t n = 0;
    if (!st) st = read_vocab(ctx, vocab_json, j, -1, &spec, &n);
    /* merges.txt: an optional "#version" line, then "a b" per line */
    mergespec *mg = NULL;
    size_t nm = 0;
    if (!st && strlen(text) != len)
        st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: contains a NUL byte", merges_txt);
    if (!st) {
        size_t lines = 1;
        for (size_t i = 0; i < len; i++)
            lines += text[i] == '\n';
        mg = calloc(lines, sizeof *mg);
        if (!mg) st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %zu merges", lines);
    }
    for (size_t pos = 0, line = 1; !st && pos < len; line++) {
        char *s = text + pos, *nl = strchr(s, '\n');
        size_t L = nl ? (size_t)(nl - s) : strlen(s);
        pos += L + 1;
        if (L && s[L - 1] == '\r') L--;
        s[L] = '\0';
        if (L == 0 || (line == 1 && !strncmp(s, "#version", 8))) continue;
        char *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' ')) {
            st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: line %zu is not \"a b\"", merges_txt, line);
            break;
        }
        mg[nm].a = (tokspec){s, (size_t)(sp - s)};
        mg[nm].b = (tokspec){sp + 1, L - (size_t)(sp - s) - 1};
        nm++;
    }
    attn_bpe *t = NULL;
    uint8_t *is_added = NULL;
    if (!st) st = new_bpe(ctx, &t);
    if (!st) {
        is_added = calloc((size_t)n, 1);
        if (!is_added) st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    }
    /* GPT-2's files: <|endoftext|> is a special token (matched in text) */
    addspec eot = {-1, 0, 0};
    for (int32_t id = 0; !st && id < n; id++)
        if (spec[id].s && spec[id].n == 13 && !memcmp(spec[id].s, "<|endoftext|>", 13)) eot.id = id;
    if (!st) {
        t->split = ATTN_BPE_SPLIT_NONE;
        t->bl_regex = 1;
        st = build(ctx, vocab_json, t, spec, is_added, n, mg, nm, &eot, eot.id >= 0);
    }
    free(spec);
    free(mg);
    free(is_added);
    free(text);
    json_decref(j);
    if (st) {
        attn_bpe_free(t);
        return st;
    }
    t->eos = guess_eos(t);
    *out = t;
    return ATTN_OK;
}

/* ------------------------------------------------------ model directory */

/* tokenizer_config.json's bos_token / eos_token: a string or {"content"}. */
static int32_t config_token(const attn_bpe *t, json_t *cfg, const char *key, int32_t def) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return def;
    int32_t id = attn_bpe_id(t, json_string_value(v));
    return id >= 0 ? id : def;
}

attn_status attn_bpe_load_dir(attn_ctx *ctx, const char *dir, attn_bpe **out) {
    attn__ctx_clear(ctx);
    if (out) *out = NULL;
    if (!dir || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_bpe_load_dir: NULL %s", !dir ? "dir" : "out");
    char p1[ATTN__PATH_LEN], p2[ATTN__PATH_LEN], pc[ATTN__PATH_LEN];
    if (!attn__path_join(p1, dir, "tokenizer.json", NULL) ||
        !attn__path_join(p2, dir, "merges.txt", NULL) ||
        !attn__path_join(pc, dir, "tokenizer_config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "directory name too long");
    json_t *cfg = NULL;
    attn_status st = check_size(ctx, pc);
    if (st == ATTN_E_NOTFOUND)
        st = ATTN_OK;
    else if (!st)
        st = attn__json_load(ctx, pc, 1, &cfg);
    if (st) return st;
    attn_bpe *t = NULL;
    struct stat sb;
    if (stat(p1, &sb) == 0) {
        st = attn_bpe_load_json(ctx, p1, &t);
    } else {
        char pv[ATTN__PATH_LEN];
        attn__path_join(pv, dir, "vocab.json", NULL);
        if (stat(pv, &sb) != 0)
            st = attn_ctx_fail(ctx, ATTN_E_NOTFOUND,
                               "%s: no tokenizer.json, nor vocab.json + merges.txt", dir);
        else
            st = attn_bpe_load_files(ctx, pv, p2, &t);
        int aps = 0;
        if (!st && cfg && !json_bool(cfg, "add_prefix_space", 0, &aps)) t->add_prefix_space = aps;
    }
    if (!st && cfg) {
        t->bos = config_token(t, cfg, "bos_token", t->bos);
        t->eos = config_token(t, cfg, "eos_token", t->eos);
    }
    json_decref(cfg);
    if (st) {
        attn_bpe_free(t);
        return st;
    }
    *out = t;
    return ATTN_OK;
}
