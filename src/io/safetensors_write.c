/* safetensors writer: strided views out as contiguous little-endian tensors,
 * written by the output-file rule (outfile.c): a regular file through a
 * temporary file that is fsync'ed and renamed over the target, so a reader
 * sees either the old file, nothing, or the complete new file. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STAGE_BYTES ((size_t)1 << 20)

/* Buffered output: tensors are gathered element row by row into buf. */
typedef struct st_out {
    int fd;
    unsigned char *buf;
    size_t used;
    int err; /* errno of the first failed write, or -1 for a short write */
} st_out;

static void out_flush(st_out *w) {
    unsigned char *p = w->buf;
    size_t len = w->used;
    while (len > 0 && !w->err) {
        ssize_t r = write(w->fd, p, len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            w->err = r < 0 ? errno : EIO;
        else
            p += r, len -= (size_t)r;
    }
    w->used = 0;
}

static void out_put(st_out *w, const void *src, size_t len, int as_bool) {
    const unsigned char *s = src;
    while (len > 0 && !w->err) {
        size_t c = ATTN_MIN(len, STAGE_BYTES - w->used);
        memcpy(w->buf + w->used, s, c);
        if (as_bool) /* BOOL is 0 or 1 on disk whatever nonzero byte the caller used */
            for (size_t i = 0; i < c; i++)
                w->buf[w->used + i] = w->buf[w->used + i] != 0;
        w->used += c, s += c, len -= c;
        if (w->used == STAGE_BYTES) out_flush(w);
    }
}

/* Write view t row-major: rows of the last dim are copied whole when contiguous. */
static void out_tensor(st_out *w, const attn_tensor *t) {
    size_t es = attn_dtype_size(t->dtype);
    int64_t numel = attn_tensor_numel(t);
    int as_bool = t->dtype == ATTN_BOOL;
    if (numel == 0) return;
    if (t->ndim == 0) {
        out_put(w, t->data, es, as_bool);
        return;
    }
    int64_t sh[4] = {1, 1, 1, 1}, sd[4] = {0, 0, 0, 0};
    for (int d = 0; d < t->ndim; d++) {
        sh[4 - t->ndim + d] = t->shape[d];
        sd[4 - t->ndim + d] = t->stride[d];
    }
    const char *base = t->data;
    for (int64_t a = 0; a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++) {
                const char *row = base + (ptrdiff_t)es * (a * sd[0] + b * sd[1] + c * sd[2]);
                if (sd[3] == 1 || sh[3] == 1) {
                    out_put(w, row, es * (size_t)sh[3], as_bool);
                } else {
                    for (int64_t j = 0; j < sh[3]; j++)
                        out_put(w, row + (ptrdiff_t)es * j * sd[3], es, as_bool);
                }
            }
}

static attn_status check_tensor(attn_ctx *ctx, const char *path, const char *name,
                                const attn_tensor *t, uint64_t *nbytes) {
    size_t es = attn_dtype_size(t->dtype);
    if (!es)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "%s: tensor '%s': unknown dtype %d", path, name,
                             (int)t->dtype);
    if (t->ndim < 0 || t->ndim > ATTN_MAX_DIMS)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "%s: tensor '%s': %d dims (0..%d allowed)",
                             path, name, t->ndim, ATTN_MAX_DIMS);
    uint64_t n = es;
    int zero = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: tensor '%s': negative size in dim %d",
                                 path, name, d);
        zero |= t->shape[d] == 0;
    }
    for (int d = 0; d < t->ndim && !zero; d++) {
        if ((uint64_t)t->shape[d] > (uint64_t)INT64_MAX / n)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: tensor '%s': size overflows", path, name);
        n *= (uint64_t)t->shape[d];
    }
    *nbytes = zero ? 0 : n;
    if (*nbytes && !t->data)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: tensor '%s': data is NULL", path, name);
    return ATTN_OK;
}

#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        status = attn_ctx_fail(ctx, code, __VA_ARGS__);                                            \
        goto done;                                                                                 \
    } while (0)
#define NOMEM() FAIL(ATTN_E_NOMEM, "%s: out of memory", path)

/* The header JSON for tensors in `order`, or NULL with a message on ctx. */
static attn_status build_header(attn_ctx *ctx, const char *path, int n, const char *const *names,
                                const attn_tensor *tensors, const int *order,
                                const uint64_t *nbytes, int nmeta, const char *const *meta,
                                char **json) {
    attn_status status = ATTN_OK;
    json_t *root = json_object(), *jm = NULL;
    if (!root) NOMEM();
    if (nmeta > 0) {
        if (!(jm = json_object()) || json_object_set(root, "__metadata__", jm)) NOMEM();
        for (int i = 0; i < nmeta; i++) {
            const char *k = meta[2 * i], *v = meta[2 * i + 1];
            if (!k || !v) FAIL(ATTN_E_ARG, "%s: metadata pair %d has a NULL key or value", path, i);
            if (json_object_get(jm, k))
                FAIL(ATTN_E_ARG, "%s: duplicate metadata key '%s'", path, k);
            json_t *js = json_string(v);
            if (!js || json_object_set_new(jm, k, js))
                FAIL(ATTN_E_ARG, "%s: metadata '%s': key or value is not valid UTF-8", path, k);
        }
    }
    uint64_t off = 0;
    for (int r = 0; r < n; r++) {
        int i = order[r];
        const attn_tensor *t = &tensors[i];
        json_t *e = json_object(), *sh = json_array(), *of = json_array();
        if (!e || !sh || !of) {
            json_decref(e), json_decref(sh), json_decref(of);
            NOMEM();
        }
        int bad = 0;
        for (int d = 0; d < t->ndim; d++)
            bad |= json_array_append_new(sh, json_integer(t->shape[d]));
        bad |= json_array_append_new(of, json_integer((json_int_t)off));
        bad |= json_array_append_new(of, json_integer((json_int_t)(off + nbytes[i])));
        /* *_set_new takes the value's reference even when it fails */
        bad |= json_object_set_new(e, "dtype", json_string(attn_dtype_name(t->dtype)));
        bad |= json_object_set_new(e, "shape", sh);
        bad |= json_object_set_new(e, "data_offsets", of);
        if (bad) {
            json_decref(e);
            NOMEM();
        }
        if (json_object_set_new(root, names[i], e))
            FAIL(ATTN_E_ARG, "%s: tensor %d: name is not valid UTF-8", path, i);
        off += nbytes[i];
    }
    if (!(*json = json_dumps(root, JSON_COMPACT))) NOMEM();
done:
    json_decref(jm);
    json_decref(root);
    return status;
}

attn_status attn_safetensors_write_meta(attn_ctx *ctx, const char *path, int n,
                                        const char *const *names, const attn_tensor *tensors,
                                        int nmeta, const char *const *meta) {
    if (!path || n < 0 || (n > 0 && (!names || !tensors)) || nmeta < 0 || (nmeta > 0 && !meta))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_safetensors_write: NULL or negative argument");
    attn__ctx_clear(ctx);
    attn_status status = ATTN_OK;
    int *order = NULL, fd = -1;
    uint64_t *nbytes = NULL;
    char *json = NULL;
    attn_outfile *of = NULL;
    st_out w = {-1, NULL, 0, 0};

    if (!(order = malloc(((size_t)n + 1) * sizeof *order)) ||
        !(nbytes = malloc(((size_t)n + 1) * sizeof *nbytes)))
        NOMEM();
    for (int i = 0; i < n; i++) {
        if (!names[i] || !*names[i] || !strcmp(names[i], "__metadata__"))
            FAIL(ATTN_E_ARG, "%s: tensor %d: name is %s", path, i,
                 !names[i]    ? "NULL"
                 : !*names[i] ? "empty"
                              : "reserved (__metadata__)");
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j]))
                FAIL(ATTN_E_ARG, "%s: duplicate tensor name '%s'", path, names[i]);
        if ((status = check_tensor(ctx, path, names[i], &tensors[i], &nbytes[i]))) goto done;
    }
    /* largest elements first keeps every tensor aligned to its element size
     * (the data section starts 8-byte aligned); stable insertion sort */
    for (int i = 0; i < n; i++) {
        int j = i;
        size_t es = attn_dtype_size(tensors[i].dtype);
        while (j > 0 && attn_dtype_size(tensors[order[j - 1]].dtype) < es) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    if ((status = build_header(ctx, path, n, names, tensors, order, nbytes, nmeta, meta, &json)))
        goto done;

    size_t jlen = strlen(json), hlen = (jlen + 7) & ~(size_t)7; /* 8 + hlen is 8-aligned */
    if (!(w.buf = malloc(STAGE_BYTES))) NOMEM();
    if ((status = attn_outfile_open(ctx, path, &of))) goto done;
    fd = attn_outfile_fd(of);
    w.fd = fd;
    unsigned char lb[8];
    for (int i = 0; i < 8; i++)
        lb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    out_put(&w, lb, 8, 0);
    out_put(&w, json, jlen, 0);
    for (size_t i = jlen; i < hlen; i++)
        out_put(&w, " ", 1, 0);
    for (int r = 0; r < n; r++)
        out_tensor(&w, &tensors[order[r]]);
    out_flush(&w);
    if (w.err) FAIL(ATTN_E_IO, "%s: write failed: %s", path, strerror(w.err));
    status = attn_outfile_commit(ctx, of);
    of = NULL;
done:
    attn_outfile_abort(of);
    free(w.buf);
    free(json);
    free(nbytes);
    free(order);
    return status;
}

attn_status attn_safetensors_write(attn_ctx *ctx, const char *path, int n, const char *const *names,
                                   const attn_tensor *tensors) {
    return attn_safetensors_write_meta(ctx, path, n, names, tensors, 0, NULL);
}
