/* attn embed --show-attention: where one head looks (display), or every
 * layer's and head's attention exported as json or safetensors. */
#include "cli_out.h"
#include "embed.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int embed_show_attention(session *s, const texts *t, long layer, long head) {
    int rc = embed_tokenize_all(s, t);
    if (rc) return rc;
    const int64_t T = s->len[0];
    float *p = malloc((size_t)(T * T) * sizeof *p);
    if (!p) return attn_cli_error(1, "out of memory");
    if (attn_bert_explain(s->ctx, s->bert, s->ids[0], T, layer, head, p)) {
        free(p);
        return attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
    }
    const attn_model_info *c = attn_model_get_info(s->model);
    printf("layer %ld, head %ld (from 0; the model has %lld layers x %lld heads): each token,\n"
           "the token it attends to most, and that attention probability\n\n",
           layer, head, (long long)c->num_layers, (long long)c->num_heads);
    for (int64_t i = 0; i < T; i++) {
        int64_t best = 0;
        for (int64_t j = 1; j < T; j++)
            if (p[i * T + j] > p[i * T + best]) best = j;
        const char *a = attn_tokenizer_token(s->tok, s->ids[0][i]);
        const char *b = attn_tokenizer_token(s->tok, s->ids[0][best]);
        printf("%4lld  ", (long long)i);
        embed_put_label(stdout, a, strlen(a), 16, 1);
        printf(" -> %4lld  ", (long long)best);
        embed_put_label(stdout, b, strlen(b), 16, 1);
        float w = p[i * T + best];
        printf(" %.4f  ", (double)w);
        for (int k = 0; k < (int)lrintf(w * 20.0f); k++)
            fputs("█", stdout);
        putchar('\n');
    }
    free(p);
    return 0;
}

/* Every layer's and head's attention of the first text: [L, H, T, T]. */
typedef struct attn_export {
    const session *s;
    const int32_t *ids;
    int64_t L, H, T;
    const float *p;
} attn_export;

static int write_json(FILE *f, void *arg) {
    const attn_export *x = arg;
    fputs("{\"tokens\": [", f);
    for (int64_t i = 0; i < x->T; i++) {
        const char *tk = attn_tokenizer_token(x->s->tok, x->ids[i]);
        if (i) fputs(", ", f);
        attn_cli_json_str(f, tk, strlen(tk));
    }
    fputs("], \"input_ids\": [", f);
    for (int64_t i = 0; i < x->T; i++)
        fprintf(f, i ? ", %d" : "%d", x->ids[i]);
    fprintf(f, "], \"num_layers\": %lld, \"num_heads\": %lld,\n \"attentions\": [", (long long)x->L,
            (long long)x->H);
    for (int64_t l = 0; l < x->L; l++) {
        fputs(l ? ",\n  [" : "\n  [", f);
        for (int64_t h = 0; h < x->H; h++) {
            fputs(h ? ",\n   [" : "\n   [", f);
            for (int64_t i = 0; i < x->T; i++) {
                fputs(i ? ", [" : "[", f);
                const float *row = x->p + ((l * x->H + h) * x->T + i) * x->T;
                for (int64_t j = 0; j < x->T; j++)
                    fprintf(f, j ? ", %.9g" : "%.9g", (double)row[j]);
                putc(']', f);
            }
            putc(']', f);
        }
        putc(']', f);
    }
    fputs("]}\n", f);
    return 0;
}

int embed_export_attention(session *s, const texts *t, const char *format, const char *output) {
    int rc = embed_tokenize_all(s, t);
    if (rc) return rc;
    const attn_model_info *c = attn_model_get_info(s->model);
    attn_export x = {s, s->ids[0], c->num_layers, c->num_heads, s->len[0], NULL};
    const int64_t TT = x.T * x.T;
    float *p = malloc((size_t)(x.L * x.H * TT + 1) * sizeof *p);
    if (!p)
        return attn_cli_error(1, "out of memory for the attention of %lld layers", (long long)x.L);
    for (int64_t l = 0; l < x.L && !rc; l++)
        for (int64_t h = 0; h < x.H && !rc; h++)
            if (attn_bert_explain(s->ctx, s->bert, x.ids, x.T, l, h, p + (l * x.H + h) * TT))
                rc = attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
    x.p = p;
    if (!rc && !strcmp(format, "json")) {
        rc = attn_cli_write_to(output, write_json, &x);
    } else if (!rc) { /* safetensors: attentions [L,H,T,T] F32, input_ids [T] I32, tokens */
        size_t cap = 64;
        for (int64_t i = 0; i < x.T; i++)
            cap += 8 + 2 * strlen(attn_tokenizer_token(s->tok, x.ids[i])) * 6;
        char *tokens = malloc(cap);
        FILE *mf = tokens ? fmemopen(tokens, cap, "w") : NULL;
        if (!mf) {
            free(tokens);
            free(p);
            return attn_cli_error(1, "out of memory");
        }
        putc('[', mf);
        for (int64_t i = 0; i < x.T; i++) {
            const char *tk = attn_tokenizer_token(s->tok, x.ids[i]);
            if (i) fputs(", ", mf);
            attn_cli_json_str(mf, tk, strlen(tk));
        }
        putc(']', mf);
        fclose(mf);
        const char *names[2] = {"attentions", "input_ids"};
        attn_tensor ts[2] = {
            attn_tensor_make(p, ATTN_F32, 4, (int64_t[]){x.L, x.H, x.T, x.T}),
            attn_tensor_make((void *)x.ids, ATTN_I32, 1, (int64_t[]){x.T}),
        };
        const char *meta[2] = {"tokens", tokens};
        if (attn_safetensors_write_meta(s->ctx, output, 2, names, ts, 1, meta))
            rc = attn_cli_error(1, "%s", attn_ctx_last_error(s->ctx));
        free(tokens);
    }
    free(p);
    return rc;
}
