/* Loading and saving the multi-head attention layer's parameters as
 * safetensors, by PyTorch state-dict names. */
#include "io/weights.h"
#include "nn/mha.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

attn_status attn_mha_load(attn_ctx *ctx, attn_mha *m, const attn_safetensors *st,
                          const char *prefix, int strict) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!m || !st) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_mha_load: NULL argument");
    if (!prefix) prefix = "";
    size_t pl = strlen(prefix);
    char name[256], want[128];
    float *staged[8] = {0};
    attn_status s = ATTN_OK;
    /* stage every parameter first: nothing changes unless all of them load */
    for (int i = 0; i < m->nparams && !s; i++) {
        const attn_param *p = &m->params[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        attn__shape_str(want, sizeof want, p->value.ndim, p->value.shape);
        if (attn_safetensors_find(st, name) < 0) {
            s = attn_ctx_fail(ctx, ATTN_E_NOTFOUND,
                              "missing weight '%s' %s (E=%lld H=%lld Hkv=%lld kdim=%lld "
                              "vdim=%lld, %s)",
                              name, want, (long long)m->E, (long long)m->H, (long long)m->Hkv,
                              (long long)m->kdim, (long long)m->vdim,
                              m->cfg.no_bias ? "no biases" : "with biases");
            break;
        }
        staged[i] = malloc((size_t)attn_tensor_numel(&p->value) * sizeof(float));
        if (!staged[i]) {
            s = attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for weight '%s'", name);
            break;
        }
        s = attn__weight_load(ctx, st, NULL, name, p->value.ndim, p->value.shape, "expected",
                              staged[i]);
    }
    for (int i = 0; strict && !s && i < attn_safetensors_count(st); i++) {
        const char *nm = attn_safetensors_name(st, i);
        if (strncmp(nm, prefix, pl)) continue;
        int ok = 0;
        for (int k = 0; k < m->nparams && !ok; k++)
            ok = !strcmp(nm + pl, m->params[k].name);
        if (!ok) {
            char list[384];
            size_t u = 0;
            for (int k = 0; k < m->nparams && u < sizeof list; k++)
                u += (size_t)snprintf(list + u, sizeof list - u, "%s%s", k ? ", " : "",
                                      m->params[k].name);
            s = attn_ctx_fail(ctx, ATTN_E_ARG,
                              "unexpected tensor '%s' (this layer's weights are: %s)", nm, list);
        }
    }
    for (int i = 0; i < m->nparams; i++) {
        if (!s)
            memcpy(m->params[i].value.data, staged[i],
                   (size_t)attn_tensor_numel(&m->params[i].value) * sizeof(float));
        free(staged[i]);
    }
    return s;
}

attn_status attn_mha_save(attn_ctx *ctx, attn_mha *m, const char *path) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!m || !path) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_mha_save: NULL argument");
    const char *names[8];
    attn_tensor views[8];
    for (int i = 0; i < m->nparams; i++)
        names[i] = m->params[i].name, views[i] = m->params[i].value;
    return attn_safetensors_write(ctx, path, m->nparams, names, views);
}
