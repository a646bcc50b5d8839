/* Weights of any float dtype, shape-checked and converted to F32. */
#include "io/weights.h"

#include <stdio.h>
#include <string.h>

void attn__shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    attn_tensor t = {0};
    t.ndim = ndim < ATTN_MAX_DIMS ? ndim : ATTN_MAX_DIMS;
    memcpy(t.shape, shape, (size_t)t.ndim * sizeof *shape);
    attn_tensor_shape_str(&t, buf, n);
}

attn_status attn__weight_load(attn_ctx *ctx, const attn_safetensors *st, const char *file,
                              const char *name, int ndim, const int64_t *want, const char *expect,
                              float *dst) {
    const char *sep = file ? ": " : "";
    if (!file) file = "";
    int i = attn_safetensors_find(st, name);
    if (i < 0)
        return attn_ctx_fail(ctx, ATTN_E_NOTFOUND, "%s%stensor '%s' is missing", file, sep, name);
    attn_tensor v;
    attn_status s = attn_safetensors_get(ctx, st, name, &v);
    if (s == ATTN_OK && v.dtype != ATTN_F32 && v.dtype != ATTN_F16 && v.dtype != ATTN_BF16 &&
        v.dtype != ATTN_F64)
        s = ATTN_E_DTYPE;
    if (s == ATTN_E_DTYPE)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE,
                             "%s%stensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                             file, sep, name, attn_safetensors_dtype_name(st, i));
    if (s) return s;
    int same = v.ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = v.shape[d] == want[d];
    if (!same) {
        char got[128], exp[128];
        attn__shape_str(got, sizeof got, v.ndim, v.shape);
        attn__shape_str(exp, sizeof exp, ndim, want);
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s%stensor '%s' has shape %s, %s %s", file, sep,
                             name, got, expect, exp);
    }
    const size_t n = (size_t)attn_tensor_numel(&v);
    if (v.dtype == ATTN_F32) {
        memcpy(dst, v.data, n * sizeof(float));
        return ATTN_OK;
    }
    float *f;
    if ((s = attn_safetensors_get_f32(ctx, st, name, &f, &v))) return s;
    memcpy(dst, f, n * sizeof(float));
    attn_buffer_free(f);
    return ATTN_OK;
}
