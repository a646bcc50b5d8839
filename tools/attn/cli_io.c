/* Helpers shared by the attn subcommands that read tensors from a
 * safetensors file and write results to another (sdpa, mha): the checks
 * only a file can need (names, dtype conversion, array lengths); every other
 * check is the library's. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int attn_cli_check_names(const attn_safetensors *st, const char *in, const char *const *names,
                         int n, const attn_param *ps, int np, const char *expected) {
    for (int i = 0; i < attn_safetensors_count(st); i++) {
        const char *nm = attn_safetensors_name(st, i);
        int ok = 0;
        for (int k = 0; k < n && !ok; k++)
            ok = !strcmp(nm, names[k]);
        for (int k = 0; ps && k < np && !ok; k++)
            ok = !strcmp(nm, ps[k].name);
        if (!ok) return attn_cli_error(1, "%s: unexpected tensor '%s' (%s)", in, nm, expected);
    }
    return 0;
}

attn_tensor attn_cli_add_dim0(attn_tensor t) {
    if (t.ndim >= 1 && t.ndim < ATTN_MAX_DIMS) {
        for (int d = t.ndim; d > 0; d--)
            t.shape[d] = t.shape[d - 1], t.stride[d] = t.stride[d - 1];
        t.shape[0] = 1;
        t.stride[0] = t.shape[1] * t.stride[1];
        t.ndim++;
    }
    return t;
}

attn_tensor attn_cli_drop_dim0(attn_tensor t) {
    if (t.ndim >= 1) {
        for (int d = 0; d + 1 < t.ndim; d++)
            t.shape[d] = t.shape[d + 1], t.stride[d] = t.stride[d + 1];
        t.ndim--;
    }
    return t;
}

int attn_cli_load_f32(attn_ctx *ctx, attn_safetensors *st, const char *in, const char *name,
                      int required, attn_tensor *t, float **converted) {
    memset(t, 0, sizeof *t);
    *converted = NULL;
    if (attn_safetensors_find(st, name) < 0) {
        if (!required) return 0;
        return attn_cli_error(1, "%s: missing tensor '%s'", in, name);
    }
    if (attn_safetensors_get(ctx, st, name, t))
        return attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
    if (t->dtype == ATTN_F32) return 0;
    if (t->dtype != ATTN_F64 && t->dtype != ATTN_F16 && t->dtype != ATTN_BF16)
        return attn_cli_error(1, "%s: tensor '%s' has dtype %s, expected F32 (or F16, BF16, F64)",
                              in, name, attn_dtype_name(t->dtype));
    if (attn_safetensors_get_f32(ctx, st, name, converted, t))
        return attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
    return 0;
}

int attn_cli_load_kv_len(attn_ctx *ctx, attn_safetensors *st, const char *in, int64_t B,
                         int32_t **out) {
    *out = NULL;
    if (attn_safetensors_find(st, "kv_len") < 0) return 0;
    attn_tensor kl;
    if (attn_safetensors_get(ctx, st, "kv_len", &kl))
        return attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
    return attn_cli_kv_len_of(&kl, in, B, out);
}

int attn_cli_kv_len_of(const attn_tensor *t, const char *in, int64_t B, int32_t **out) {
    const attn_tensor kl = *t;
    *out = NULL;
    if (kl.dtype != ATTN_I32 && kl.dtype != ATTN_I64)
        return attn_cli_error(1, "%s: tensor 'kv_len' has dtype %s, expected I32 or I64", in,
                              attn_dtype_name(kl.dtype));
    /* the API takes kv_len as B bare int32 values: its length is ours to check */
    if (kl.ndim != 1 || kl.shape[0] != B) {
        char s[96];
        attn_tensor_shape_str(&kl, s, sizeof s);
        return attn_cli_error(1, "%s: tensor 'kv_len' has shape %s, expected [B=%lld]", in, s,
                              (long long)B);
    }
    int32_t *kv = malloc((size_t)(B > 0 ? B : 1) * sizeof *kv);
    if (!kv) return attn_cli_error(1, "out of memory");
    for (int64_t b = 0; b < B; b++) {
        int64_t x =
            kl.dtype == ATTN_I32 ? ((const int32_t *)kl.data)[b] : ((const int64_t *)kl.data)[b];
        if (x != (int32_t)x) { /* I64 -> I32 conversion */
            free(kv);
            return attn_cli_error(1, "%s: kv_len[%lld] = %lld does not fit in 32 bits", in,
                                  (long long)b, (long long)x);
        }
        kv[b] = (int32_t)x;
    }
    *out = kv;
    return 0;
}
