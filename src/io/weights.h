/* Loading learned weights from a tensor file: the one helper nn/ layers and
 * models/ share (never installed). */
#ifndef ATTN_IO_WEIGHTS_H
#define ATTN_IO_WEIGHTS_H

#include "core/internal.h"

/* Write shape[0..ndim) as "[8, 4]" (the spelling of every weight message)
 * into buf[n]. */
void attn__shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

/* Copy tensor `name` of st into dst as F32: dtypes F32, F16, BF16 (exact) and
 * F64 (rounded to nearest) are accepted; its shape must be want[0..ndim).
 * dst holds the product of want floats. Messages name the tensor, prefixed by
 * "<file>: " when file is not NULL:
 *   ATTN_E_NOTFOUND  tensor 'x' is missing
 *   ATTN_E_DTYPE     tensor 'x' has dtype I32; weights must be F32, F16, BF16 or F64
 *   ATTN_E_SHAPE     tensor 'x' has shape [8, 5], <expect> [8, 4]
 * with expect e.g. "expected" or "but config.json implies". Also
 * ATTN_E_NOMEM, ATTN_E_UNSUPPORTED (more than ATTN_MAX_DIMS dims). On
 * failure dst is unchanged. */
attn_status attn__weight_load(attn_ctx *ctx, const attn_safetensors *st, const char *file,
                              const char *name, int ndim, const int64_t *want, const char *expect,
                              float *dst);

#endif /* ATTN_IO_WEIGHTS_H */
