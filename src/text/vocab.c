/* WordPiece vocabulary: load vocab.txt (and a model directory's
 * tokenizer_config.json), and look tokens up through a hash table. */
#include "text/text_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int32_t attn__vocab_find(const attn_tokenizer *tok, uint32_t h, const char *pre, size_t npre,
                         const char *s, size_t ns) {
    for (uint32_t i = h & tok->mask;; i = (i + 1) & tok->mask) {
        int32_t id = tok->slots[i];
        if (id < 0) return -1;
        const attn__vocab_entry *e = &tok->entries[id];
        const char *t = tok->text + e->off;
        if (e->hash == h && e->len == npre + ns && !memcmp(t, pre, npre) &&
            !memcmp(t + npre, s, ns))
            return id;
    }
}

int32_t attn_tokenizer_id(const attn_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    size_t n = strlen(token);
    return attn__vocab_find(tok, attn__fnv(ATTN_FNV_BASIS, token, n), "", 0, token, n);
}

const char *attn_tokenizer_token(const attn_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->n) return NULL;
    return tok->text + tok->entries[id].off;
}

int32_t attn_tokenizer_vocab_size(const attn_tokenizer *tok) {
    return tok ? tok->n : 0;
}

int attn_tokenizer_max_len(const attn_tokenizer *tok) {
    return tok ? tok->max_len : 0;
}

void attn_tokenizer_free(attn_tokenizer *tok) {
    if (!tok) return;
    free(tok->text);
    free(tok->entries);
    free(tok->slots);
    free(tok);
}

static attn_status read_file(attn_ctx *ctx, const char *path, char **buf, size_t *len) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return attn_ctx_fail(ctx, ATTN_E_IO, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *nb = cap < ((size_t)1 << 33) ? realloc(b, cap * 2) : NULL;
        if (!nb) free(b);
        b = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!b) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory reading '%s'", path);
    if (err) {
        free(b);
        return attn_ctx_fail(ctx, ATTN_E_IO, "cannot read '%s'", path);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return ATTN_OK;
}

static attn_status build(attn_ctx *ctx, const char *path, attn_tokenizer *t, size_t len) {
    char *s = t->text;
    if (len == 0) return attn_ctx_fail(ctx, ATTN_E_FORMAT, "vocabulary '%s' is empty", path);
    if (len >= UINT32_MAX)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "vocabulary '%s' is larger than 4 GiB", path);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += s[i] == '\n';
    lines += s[len - 1] != '\n';
    if (lines > INT32_MAX)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "vocabulary '%s' has more than 2^31-1 lines",
                             path);
    t->entries = malloc(lines * sizeof *t->entries);
    size_t nslots = 16;
    while (nslots < 2 * lines)
        nslots *= 2;
    t->slots = malloc(nslots * sizeof *t->slots);
    if (!t->entries || !t->slots)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %zu tokens", lines);
    memset(t->slots, 0xff, nslots * sizeof *t->slots); /* all -1 */
    t->mask = (uint32_t)(nslots - 1);
    size_t pos = 0;
    for (int32_t id = 0; (size_t)id < lines; id++) {
        size_t end = pos;
        while (end < len && s[end] != '\n')
            end++;
        size_t e = end;
        while (e > pos && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r'))
            e--;
        s[e] = '\0';
        for (size_t i = pos; i < e;) {
            utf8proc_int32_t c;
            utf8proc_ssize_t k =
                utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(e - i), &c);
            if (k <= 0)
                return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                     "vocabulary '%s' line %d is not valid UTF-8 (byte %zu)", path,
                                     id + 1, i);
            i += (size_t)k;
        }
        t->entries[id].off = (uint32_t)pos;
        t->entries[id].len = (uint32_t)(e - pos);
        if (e - pos > t->max_token_bytes) t->max_token_bytes = (uint32_t)(e - pos);
        /* a later duplicate replaces the earlier one, as a dict would */
        t->entries[id].hash = attn__fnv(ATTN_FNV_BASIS, s + pos, e - pos);
        uint32_t h = t->entries[id].hash & t->mask;
        for (;; h = (h + 1) & t->mask) {
            int32_t o = t->slots[h];
            if (o < 0 || (t->entries[o].len == e - pos &&
                          !memcmp(s + t->entries[o].off, s + pos, e - pos))) {
                t->slots[h] = id;
                break;
            }
        }
        pos = end + 1;
    }
    t->n = (int32_t)lines;
    t->unk = attn_tokenizer_id(t, "[UNK]");
    t->cls = attn_tokenizer_id(t, "[CLS]");
    t->sep = attn_tokenizer_id(t, "[SEP]");
    const char *missing = t->unk < 0 ? "[UNK]" : t->cls < 0 ? "[CLS]" : t->sep < 0 ? "[SEP]" : NULL;
    if (missing)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "vocabulary '%s' has no %s token", path, missing);
    static const char *const specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        int32_t id = attn_tokenizer_id(t, specials[i]);
        if (id >= 0) t->special_ids[t->n_special++] = id;
    }
    return ATTN_OK;
}

attn_status attn_tokenizer_load(attn_ctx *ctx, const char *vocab_path, int lowercase,
                                attn_tokenizer **out) {
    attn__ctx_clear(ctx);
    if (out) *out = NULL;
    if (!vocab_path || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_tokenizer_load: NULL %s",
                             !vocab_path ? "vocab_path" : "out");
    attn_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for a tokenizer");
    size_t len = 0;
    attn_status st = read_file(ctx, vocab_path, &t->text, &len);
    if (st == ATTN_OK) st = build(ctx, vocab_path, t, len);
    if (st != ATTN_OK) {
        attn_tokenizer_free(t);
        return st;
    }
    t->lowercase = lowercase != 0;
    t->strip_accents = lowercase != 0;
    t->chinese = 1;
    *out = t;
    return ATTN_OK;
}

/* A boolean setting: absent keeps *v; null sets *v = null_value. */
static int json_flag(json_t *cfg, const char *key, int null_value, int *v) {
    json_t *j = json_object_get(cfg, key);
    if (!j) return 0;
    if (json_is_null(j))
        *v = null_value;
    else if (json_is_boolean(j))
        *v = json_is_true(j);
    else
        return -1;
    return 0;
}

attn_status attn_tokenizer_load_dir(attn_ctx *ctx, const char *dir, attn_tokenizer **out) {
    attn__ctx_clear(ctx);
    if (out) *out = NULL;
    if (!dir || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_tokenizer_load_dir: NULL %s",
                             !dir ? "dir" : "out");
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    if (!path) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    int lower = 1, strip = -1, chinese = 1;
    double max_len = 0;
    snprintf(path, n, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        json_error_t jerr;
        /* as doubles: transformers writes model_max_length = 1e30-ish
         * integers for "no limit", beyond what jansson's int64 takes */
        json_t *cfg = json_loadf(f, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
        fclose(f);
        const char *bad = NULL;
        if (!cfg || !json_is_object(cfg))
            bad = "not a JSON object";
        else if (json_flag(cfg, "do_lower_case", 1, &lower))
            bad = "do_lower_case is not a boolean";
        else if (json_flag(cfg, "strip_accents", -1, &strip))
            bad = "strip_accents is not a boolean";
        else if (json_flag(cfg, "tokenize_chinese_chars", 1, &chinese))
            bad = "tokenize_chinese_chars is not a boolean";
        json_t *m = cfg ? json_object_get(cfg, "model_max_length") : NULL;
        if (m && json_is_number(m)) max_len = json_number_value(m);
        int parsed = cfg != NULL;
        json_decref(cfg);
        if (bad) {
            attn_status st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "'%s': %s%s%s", path, bad,
                                           parsed ? "" : ": ", parsed ? "" : jerr.text);
            free(path);
            return st;
        }
    }
    snprintf(path, n, "%s/vocab.txt", dir);
    attn_tokenizer *t = NULL;
    attn_status st = attn_tokenizer_load(ctx, path, lower, &t);
    free(path);
    if (st != ATTN_OK) return st;
    t->strip_accents = strip < 0 ? lower : strip;
    t->chinese = chinese;
    /* transformers writes a huge sentinel (1e30) when the length is unknown */
    t->max_len = max_len >= 2 && max_len <= (double)(1 << 30) ? (int)max_len : 0;
    *out = t;
    return ATTN_OK;
}
