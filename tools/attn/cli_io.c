/* Helpers shared by the attn subcommands that read tensors from a
 * safetensors file and write results to another (sdpa, mha): option values,
 * shape messages, F32 loading and the kv_len tensor. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int attn_cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end || errno) return -1;
    *out = v;
    return 0;
}

int attn_cli_parse_align(const char *cmd, const char *v, attn_align *out) {
    if (!strcmp(v, "top-left"))
        *out = ATTN_ALIGN_TOP_LEFT;
    else if (!strcmp(v, "bottom-right"))
        *out = ATTN_ALIGN_BOTTOM_RIGHT;
    else
        return attn_cli_error(2, "%s: --align must be top-left or bottom-right, got '%s'", cmd, v);
    return 0;
}

int attn_cli_parse_window(const char *cmd, const char *v, long *left, long *right) {
    char buf[64];
    const char *comma = strchr(v, ',');
    long l, r;
    if (!comma || strlen(v) >= sizeof buf)
        return attn_cli_error(2, "%s: --window takes L,R (e.g. 128,0), got '%s'", cmd, v);
    memcpy(buf, v, (size_t)(comma - v));
    buf[comma - v] = '\0';
    if (attn_cli_parse_long(buf, &l) || attn_cli_parse_long(comma + 1, &r))
        return attn_cli_error(2, "%s: --window takes two integers L,R, got '%s'", cmd, v);
    if (l < -1 || r < -1)
        return attn_cli_error(
            2, "%s: --window %ld,%ld: each side must be >= 0, or -1 for unbounded", cmd, l, r);
    *left = l;
    *right = r;
    return 0;
}

void attn_cli_shape_str(const attn_tensor *t, char *buf, size_t n) {
    size_t u = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && u < n; d++)
        u += (size_t)snprintf(buf + u, n - u, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    if (u < n) snprintf(buf + u, n - u, "]");
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

int attn_cli_load_kv_len(attn_ctx *ctx, attn_safetensors *st, const char *in, int64_t B, int64_t S,
                         int32_t **out) {
    *out = NULL;
    if (attn_safetensors_find(st, "kv_len") < 0) return 0;
    attn_tensor kl;
    if (attn_safetensors_get(ctx, st, "kv_len", &kl))
        return attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
    if (kl.dtype != ATTN_I32 && kl.dtype != ATTN_I64)
        return attn_cli_error(1, "%s: tensor 'kv_len' has dtype %s, expected I32 or I64", in,
                              attn_dtype_name(kl.dtype));
    if (kl.ndim != 1 || kl.shape[0] != B) {
        char s[128];
        attn_cli_shape_str(&kl, s, sizeof s);
        return attn_cli_error(1, "%s: tensor 'kv_len' has shape %s, expected [B=%lld]", in, s,
                              (long long)B);
    }
    int32_t *kv = malloc((size_t)(B > 0 ? B : 1) * sizeof *kv);
    if (!kv) return attn_cli_error(1, "out of memory");
    for (int64_t b = 0; b < B; b++) {
        int64_t x =
            kl.dtype == ATTN_I32 ? ((const int32_t *)kl.data)[b] : ((const int64_t *)kl.data)[b];
        if (x < 0 || x > S) {
            free(kv);
            return attn_cli_error(1, "%s: kv_len[%lld] = %lld is outside [0, S=%lld]", in,
                                  (long long)b, (long long)x, (long long)S);
        }
        kv[b] = (int32_t)x;
    }
    *out = kv;
    return 0;
}

int attn_cli_mask_shape_ok(const attn_tensor *m, int64_t B, int64_t H, int64_t T, int64_t S) {
    return (m->ndim == 2 && m->shape[0] == T && m->shape[1] == S) ||
           (m->ndim == 4 && (m->shape[0] == 1 || m->shape[0] == B) &&
            (m->shape[1] == 1 || m->shape[1] == H) && m->shape[2] == T && m->shape[3] == S);
}
