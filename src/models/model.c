/* attn_model: a Hugging Face model directory as one object. The model type
 * comes from config.json here; each type's configuration and weights from
 * its own file (bert_config.c, bert_load.c), the tokenizer from text/. */
#include "io/json.h"
#include "models/bert.h"
#include "models/gpt2.h"
#include "models/vit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct attn_model {
    attn_model_info info;
    char dir[ATTN__PATH_LEN];
    attn_tokenizer *tok;
    attn_bert *bert;
    attn_gpt *gpt;
    attn_bpe *bpe;
    attn_vit *vit;
};

/* config.json's model_type ("bert" when absent, as older BERT checkpoints). */
static attn_status read_type(attn_ctx *ctx, const char *dir, attn_model_type *type) {
    char path[ATTN__PATH_LEN];
    if (!attn__path_join(path, dir, "config.json", NULL))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    json_t *j;
    attn_status st = attn__json_load(ctx, path, 0, &j);
    if (st) return st;
    const char *name = "bert";
    if (!json_is_object(j))
        st = attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object", path);
    else
        st = attn__json_get_str(ctx, path, j, "model_type", "bert", &name);
    *type = ATTN_MODEL_BERT;
    if (!st && !strcmp(name, "gpt2"))
        *type = ATTN_MODEL_GPT2;
    else if (!st && !strcmp(name, "llama"))
        *type = ATTN_MODEL_LLAMA;
    else if (!st && !strcmp(name, "vit"))
        *type = ATTN_MODEL_VIT;
    else if (!st && strcmp(name, "bert"))
        st = attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                           "%s: model_type \"%s\" is not supported (supported: bert, gpt2, llama, vit)", path,
                           name);
    json_decref(j);
    return st;
}

/* A decoder's byte-level BPE tokenizer (tokenizer.json, or vocab.json +
 * merges.txt), when the directory has one: its ids must all be ids of the
 * model (a model may have more, padded, rows than the tokenizer has ids). */
static attn_status open_bpe(attn_ctx *ctx, attn_model *m) {
    attn_status st = attn_bpe_load_dir(ctx, m->dir, &m->bpe);
    if (st == ATTN_E_NOTFOUND) {
        char p1[ATTN__PATH_LEN], p2[ATTN__PATH_LEN];
        FILE *f1 = attn__path_join(p1, m->dir, "tokenizer.json", NULL) ? fopen(p1, "rb") : NULL;
        FILE *f2 = attn__path_join(p2, m->dir, "vocab.json", NULL) ? fopen(p2, "rb") : NULL;
        const int some = f1 || f2;
        if (f1) fclose(f1);
        if (f2) fclose(f2);
        if (!some) { /* no tokenizer at all: ids only */
            attn__ctx_clear(ctx);
            return ATTN_OK;
        }
    }
    if (st) return st;
    const int64_t V = attn_gpt_get_config(m->gpt)->vocab_size, tv = attn_bpe_vocab_size(m->bpe);
    if (tv > V)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "%s: the tokenizer has %lld ids but config.json says vocab_size %lld",
                             m->dir, (long long)tv, (long long)V);
    return ATTN_OK;
}

void attn_model_free(attn_model *m) {
    if (!m) return;
    attn_tokenizer_free(m->tok);
    attn_bert_free(m->bert);
    attn_gpt_free(m->gpt);
    attn_bpe_free(m->bpe);
    attn_vit_free(m->vit);
    free(m);
}

attn_status attn_model_open(attn_ctx *ctx, const char *dir, int flags, attn_model **out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_model_open: out is NULL");
    *out = NULL;
    if (flags & ~(ATTN_MODEL_OPEN_TOKENIZER | ATTN_MODEL_OPEN_BF16))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_model_open: unknown flags 0x%x", flags);
    if ((flags & ATTN_MODEL_OPEN_TOKENIZER) && (flags & ATTN_MODEL_OPEN_BF16))
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_model_open: ATTN_MODEL_OPEN_BF16 needs a model, not the "
                             "tokenizer only");
    attn_model *m = calloc(1, sizeof *m);
    if (!m) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "attn_model_open: out of memory");
    attn_status st = ATTN_OK;
    if (!dir)
        st = attn_model_find_default(ctx, m->dir, sizeof m->dir);
    else if (strlen(dir) >= sizeof m->dir)
        st = attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path too long", dir);
    else
        strcpy(m->dir, dir);
    attn_model_info *in = &m->info;
    in->dir = m->dir;
    in->type = ATTN_MODEL_TOKENIZER, in->type_name = "tokenizer";
    if (!st && !(flags & ATTN_MODEL_OPEN_TOKENIZER)) {
        /* the model first: its config.json says what the directory is */
        st = read_type(ctx, m->dir, &in->type);
        if (!st && (flags & ATTN_MODEL_OPEN_BF16) && in->type != ATTN_MODEL_GPT2 &&
            in->type != ATTN_MODEL_LLAMA)
            st = attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                               "%s: bf16 weights are an option of gpt2 and llama decoders, not "
                               "of a %s model",
                               m->dir, in->type == ATTN_MODEL_VIT ? "vit" : "bert");
        if (!st && in->type == ATTN_MODEL_VIT) {
            /* an image model: no tokenizer */
            if (!(st = attn_vit_load(ctx, m->dir, &m->vit))) {
                const attn_vit_config *c = attn_vit_get_config(m->vit);
                in->type_name = "vit";
                in->hidden_size = c->hidden_size, in->num_layers = c->num_layers;
                in->num_heads = c->num_heads;
                *out = m;
                return ATTN_OK;
            }
        } else if (!st && (in->type == ATTN_MODEL_GPT2 || in->type == ATTN_MODEL_LLAMA)) {
            attn_gpt_load_opts o = {ATTN_GPT_WEIGHTS_F32};
            if (flags & ATTN_MODEL_OPEN_BF16) o.weights = ATTN_GPT_WEIGHTS_BF16;
            if (!(st = attn_gpt_load_with(ctx, m->dir, &o, &m->gpt))) st = open_bpe(ctx, m);
            if (!st) {
                const attn_gpt_config *c = attn_gpt_get_config(m->gpt);
                in->type_name = in->type == ATTN_MODEL_GPT2 ? "gpt2" : "llama";
                in->hidden_size = c->n_embd, in->num_layers = c->n_layer;
                in->num_heads = c->n_head, in->max_seq_length = c->n_positions;
                in->vocab_size = c->vocab_size;
                *out = m;
                return ATTN_OK;
            }
        } else if (!st) {
            st = attn_bert_load(ctx, m->dir, &m->bert);
        }
        if (!st) {
            const attn_bert_config *c = attn_bert_get_config(m->bert);
            in->type_name = "bert";
            in->hidden_size = c->hidden_size, in->num_layers = c->num_layers;
            in->num_heads = c->num_heads, in->max_seq_length = c->max_seq_length;
        }
    }
    if (!st) st = attn_tokenizer_load_dir(ctx, m->dir, &m->tok);
    if (!st) {
        in->vocab_size = attn_tokenizer_vocab_size(m->tok);
        if (!m->bert) in->max_seq_length = attn_tokenizer_max_len(m->tok);
    }
    if (!st && m->bert && in->vocab_size != attn_bert_get_config(m->bert)->vocab_size)
        st = attn_ctx_fail(ctx, ATTN_E_SHAPE,
                           "%s/vocab.txt has %lld tokens but config.json says vocab_size %lld",
                           m->dir, (long long)in->vocab_size,
                           (long long)attn_bert_get_config(m->bert)->vocab_size);
    if (st) {
        attn_model_free(m);
        return st;
    }
    *out = m;
    return ATTN_OK;
}

const attn_model_info *attn_model_get_info(const attn_model *m) {
    return m ? &m->info : NULL;
}

const attn_tokenizer *attn_model_get_tokenizer(const attn_model *m) {
    return m ? m->tok : NULL;
}

const attn_bert *attn_model_get_bert(const attn_model *m) {
    return m ? m->bert : NULL;
}

const attn_gpt *attn_model_get_gpt(const attn_model *m) {
    return m ? m->gpt : NULL;
}

const attn_bpe *attn_model_get_bpe(const attn_model *m) {
    return m ? m->bpe : NULL;
}

const attn_vit *attn_model_get_vit(const attn_model *m) {
    return m ? m->vit : NULL;
}
