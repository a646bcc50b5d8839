/* Tensor views and dtypes. */
#include "core/internal.h"

#include <stdio.h>
#include <string.h>

size_t attn_dtype_size(attn_dtype t) {
    switch (t) {
    case ATTN_F32:
    case ATTN_I32:
        return 4;
    case ATTN_F64:
    case ATTN_I64:
        return 8;
    case ATTN_F16:
    case ATTN_BF16:
        return 2;
    case ATTN_U8:
    case ATTN_BOOL:
        return 1;
    }
    return 0;
}

const char *attn_dtype_name(attn_dtype t) {
    switch (t) {
    case ATTN_F32:
        return "F32";
    case ATTN_F64:
        return "F64";
    case ATTN_F16:
        return "F16";
    case ATTN_BF16:
        return "BF16";
    case ATTN_I32:
        return "I32";
    case ATTN_I64:
        return "I64";
    case ATTN_U8:
        return "U8";
    case ATTN_BOOL:
        return "BOOL";
    }
    return NULL;
}

attn_tensor attn_tensor_make(void *data, attn_dtype dtype, int ndim, const int64_t *shape) {
    attn_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    if (ndim < 0) ndim = 0;
    if (ndim > ATTN_MAX_DIMS) ndim = ATTN_MAX_DIMS;
    t.ndim = ndim;
    int64_t st = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t.shape[i] = shape[i];
        t.stride[i] = st;
        /* a stride past INT64_MAX saturates (no such view can address
         * memory; the shape checks of every op refuse it) */
        if (shape[i] > 0 && __builtin_mul_overflow(st, shape[i], &st)) st = INT64_MAX;
    }
    return t;
}

attn_tensor attn_tensor_f32_4d(float *data, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t sh[4] = {d0, d1, d2, d3};
    return attn_tensor_make(data, ATTN_F32, 4, sh);
}

int64_t attn_tensor_numel(const attn_tensor *t) {
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0 || __builtin_mul_overflow(n, t->shape[i], &n)) return -1;
    return n;
}

size_t attn_tensor_shape_str(const attn_tensor *t, char *buf, size_t n) {
    char tmp[ATTN_MAX_DIMS * 22 + 3]; /* '[' + up to 4 x (20 digits + ", ") + ']' + NUL */
    size_t u = 0;
    tmp[u++] = '[';
    for (int d = 0; d < t->ndim && d < ATTN_MAX_DIMS; d++)
        u += (size_t)snprintf(tmp + u, sizeof tmp - u, "%s%lld", d ? ", " : "",
                              (long long)t->shape[d]);
    tmp[u++] = ']';
    tmp[u] = '\0';
    if (n > 0) {
        size_t c = u < n ? u : n - 1;
        memcpy(buf, tmp, c);
        buf[c] = '\0';
    }
    return u;
}
