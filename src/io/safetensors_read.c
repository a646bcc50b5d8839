/* safetensors reader: parse and validate the whole header first, then read
 * every tensor into one 64-byte aligned buffer so views are always aligned
 * for their dtype, whatever their offsets in the file. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_entry {
    char *name;
    const attn__st_dtype *dt;
    int ndim;
    int64_t *shape;      /* ndim sizes; NULL when ndim == 0 */
    uint64_t begin, end; /* data_offsets, relative to the file's data section */
    size_t dst;          /* where the bytes live in st->data */
} st_entry;

struct attn_safetensors {
    char *label; /* path, or "<memory>", for messages */
    st_entry *e; /* sorted by data offset */
    int n;
    int *by_name; /* indices of e sorted by name */
    unsigned char *data;
    json_t *meta;        /* the "__metadata__" object, or NULL */
    int fd;              /* header-only handles: the open file (else -1) */
    uint64_t data_start; /* where the data section begins in the file (8 + header) */
};

/* Where the bytes come from: a file descriptor or a caller's buffer. */
typedef struct st_src {
    int fd;
    const unsigned char *mem;
    uint64_t size;
    const char *label;
} st_src;

static const attn__st_dtype dtypes[] = {
    {"F32", 4, ATTN_F32}, {"F64", 8, ATTN_F64}, {"F16", 2, ATTN_F16}, {"BF16", 2, ATTN_BF16},
    {"I32", 4, ATTN_I32}, {"I64", 8, ATTN_I64}, {"U8", 1, ATTN_U8},   {"BOOL", 1, ATTN_BOOL},
    {"I8", 1, -1},        {"I16", 2, -1},       {"U16", 2, -1},       {"U32", 4, -1},
    {"U64", 8, -1},       {"F8_E4M3", 1, -1},   {"F8_E5M2", 1, -1},
};

const attn__st_dtype *attn__st_dtype_lookup(const char *name) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dtypes[i].name, name)) return &dtypes[i];
    return NULL;
}

float attn__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    union {
        uint32_t u;
        float f;
    } x;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in float */
        float f = (float)mant * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 31)
        x.u = sign | 0x7f800000u | (mant << 13); /* inf, NaN keeps its payload */
    else
        x.u = sign | ((exp + 112u) << 23) | (mant << 13); /* rebias 15 -> 127 */
    return x.f;
}

void attn_buffer_free(void *p) {
    attn__free(p);
}

/* Read len bytes at off; 0 on success, else -1 with errno set (0 for EOF). */
static int src_read(const st_src *s, uint64_t off, void *buf, size_t len) {
    if (s->mem) {
        memcpy(buf, s->mem + off, len);
        return 0;
    }
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t r = pread(s->fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = 0;
            return -1;
        }
        p += r, off += (uint64_t)r, len -= (size_t)r;
    }
    return 0;
}

void attn_safetensors_close(attn_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) {
        free(st->e[i].name);
        free(st->e[i].shape);
    }
    free(st->e);
    free(st->by_name);
    free(st->label);
    attn__free(st->data);
    if (st->meta) json_decref(st->meta);
    if (st->fd >= 0) close(st->fd);
    free(st);
}

#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        status = attn_ctx_fail(ctx, code, __VA_ARGS__);                                            \
        goto done;                                                                                 \
    } while (0)

/* Fill e from the JSON value of tensor `name`. data_len bounds the offsets. */
static attn_status parse_entry(attn_ctx *ctx, const char *label, const char *name, json_t *v,
                               uint64_t data_len, st_entry *e) {
    attn_status status = ATTN_OK;
    if (!*name) FAIL(ATTN_E_FORMAT, "%s: a tensor has an empty name", label);
    if (!json_is_object(v))
        FAIL(ATTN_E_FORMAT, "%s: tensor '%s': entry is not a JSON object", label, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!jd || !js || !jo)
        FAIL(ATTN_E_FORMAT, "%s: tensor '%s': missing \"%s\"", label, name,
             !jd   ? "dtype"
             : !js ? "shape"
                   : "data_offsets");
    if (!json_is_string(jd))
        FAIL(ATTN_E_FORMAT, "%s: tensor '%s': dtype is not a string", label, name);
    e->dt = attn__st_dtype_lookup(json_string_value(jd));
    if (!e->dt)
        FAIL(ATTN_E_FORMAT, "%s: tensor '%s': unknown dtype \"%.32s\"", label, name,
             json_string_value(jd));
    if (!json_is_array(js))
        FAIL(ATTN_E_FORMAT, "%s: tensor '%s': shape is not an array", label, name);
    size_t nd = json_array_size(js);
    if (nd > 1024) FAIL(ATTN_E_FORMAT, "%s: tensor '%s': %zu dims", label, name, nd);
    e->ndim = (int)nd;
    if (nd && !(e->shape = malloc(nd * sizeof *e->shape)))
        FAIL(ATTN_E_NOMEM, "%s: out of memory", label);
    int zero = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            FAIL(ATTN_E_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", label,
                 name, i);
        e->shape[i] = (int64_t)json_integer_value(d);
        zero |= e->shape[i] == 0;
    }
    /* The product of the nonzero dims times the element size must fit in
     * int64 even when another dim is 0: a view of [0, 2^40, 2^40, 4] is
     * empty, but the strides of its other dims would overflow. */
    uint64_t nbytes = (uint64_t)e->dt->size;
    for (size_t i = 0; i < nd; i++) {
        if (e->shape[i] == 0) continue;
        if ((uint64_t)e->shape[i] > (uint64_t)INT64_MAX / nbytes)
            FAIL(ATTN_E_FORMAT, "%s: tensor '%s': shape product overflows", label, name);
        nbytes *= (uint64_t)e->shape[i];
    }
    if (zero) nbytes = 0;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        FAIL(ATTN_E_FORMAT, "%s: tensor '%s': data_offsets is not [begin, end]", label, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0));
    json_int_t en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < b)
        FAIL(ATTN_E_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] need 0 <= begin <= end",
             label, name, (long long)b, (long long)en);
    if ((uint64_t)en > data_len)
        FAIL(ATTN_E_FORMAT,
             "%s: tensor '%s': data_offsets end %lld is beyond the data section (%llu bytes)",
             label, name, (long long)en, (unsigned long long)data_len);
    if ((uint64_t)(en - b) != nbytes)
        FAIL(ATTN_E_FORMAT,
             "%s: tensor '%s': data_offsets span %lld bytes but shape and dtype %s need %llu",
             label, name, (long long)(en - b), e->dt->name, (unsigned long long)nbytes);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
done:
    return status;
}

static int cmp_offset(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* qsort_r is not C11: the name comparison reaches the entries through this
 * file-local pointer, set only for the duration of one sort. */
static _Thread_local const st_entry *sort_entries;
static int cmp_name(const void *a, const void *b) {
    return strcmp(sort_entries[*(const int *)a].name, sort_entries[*(const int *)b].name);
}

/* What a file that is not safetensors looks like, from its first bytes:
 * the formats a PyTorch or NumPy user is likely to pass by mistake. NULL
 * when nothing is recognised. Text counts only when the length does not fit
 * (`len_ok` 0): a real header length is 8 binary bytes. */
static const char *sniff(const unsigned char *b, size_t n, int len_ok) {
    if (n >= 4 && !memcmp(b, "PK\x03\x04", 4))
        return "looks like a PyTorch zip checkpoint (torch.save) or another zip archive "
               "(.npz); save with safetensors.torch.save_file";
    if (n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
        return "looks like a Python pickle (an old-style torch.save file); save with "
               "safetensors.torch.save_file";
    if (n >= 6 && !memcmp(b, "\x93NUMPY", 6))
        return "looks like a NumPy .npy file; save with safetensors.numpy.save_file";
    if (n >= 4 && !memcmp(b, "\x89HDF", 4)) return "looks like an HDF5 file (.h5)";
    if (n >= 4 && !memcmp(b, "GGUF", 4)) return "looks like a GGUF file";
    if (len_ok) return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(b[i] >= 0x20 && b[i] < 0x7f) && b[i] != '\n' && b[i] != '\r' && b[i] != '\t')
            return NULL;
    return "looks like text";
}

/* The limits of io.h, checked on the header's bytes before jansson builds
 * a tree of them: top-level entries (a ':' at depth 1 outside strings) and
 * the length of each top-level key. A malformed header passes here and is
 * refused by the parser. */
static attn_status prescan(attn_ctx *ctx, const char *label, const char *h, size_t n) {
    size_t entries = 0, key_start = 0;
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"') {
                in_str = 0;
                if (depth == 1 && i - key_start > ATTN_SAFETENSORS_MAX_NAME)
                    return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                         "%s: a name of %zu bytes is over the %d-byte limit", label,
                                         i - key_start, ATTN_SAFETENSORS_MAX_NAME);
            }
        } else if (c == '"') {
            in_str = 1, key_start = i + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ':' && depth == 1 && ++entries > ATTN_SAFETENSORS_MAX_TENSORS + 1) {
            return attn_ctx_fail(ctx, ATTN_E_FORMAT,
                                 "%s: more than %d tensors in the header (the limit)", label,
                                 ATTN_SAFETENSORS_MAX_TENSORS);
        }
    }
    return ATTN_OK;
}

/* header_only: check the header and stop (the data stays in the file). */
static attn_status open_src(attn_ctx *ctx, const st_src *src, int header_only,
                            attn_safetensors **out) {
    attn_status status = ATTN_OK;
    const char *label = src->label;
    char *hdr = NULL;
    json_t *root = NULL;
    attn_safetensors *st = calloc(1, sizeof *st);
    if (st) st->fd = -1;
    if (!st || !(st->label = strdup(label))) FAIL(ATTN_E_NOMEM, "%s: out of memory", label);

    if (src->size < 8 && src->size > 0) { /* too short for a length: maybe text */
        unsigned char sb[8];
        if (!src_read(src, 0, sb, (size_t)src->size) && sniff(sb, (size_t)src->size, 0))
            FAIL(ATTN_E_FORMAT, "%s: not a safetensors file (%s)", label,
                 sniff(sb, (size_t)src->size, 0));
    }
    if (src->size < 8)
        FAIL(ATTN_E_FORMAT, "%s: file is %llu bytes, shorter than the 8-byte header length", label,
             (unsigned long long)src->size);
    unsigned char lb[8];
    if (src_read(src, 0, lb, 8)) FAIL(ATTN_E_IO, "%s: read failed: %s", label, strerror(errno));
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | lb[i];
    const char *like = sniff(lb, 8, hlen <= ATTN__ST_MAX_HEADER && hlen <= src->size - 8);
    if (like) FAIL(ATTN_E_FORMAT, "%s: not a safetensors file (%s)", label, like);
    if (hlen > ATTN__ST_MAX_HEADER)
        FAIL(ATTN_E_FORMAT, "%s: header length %llu is over the %llu-byte limit", label,
             (unsigned long long)hlen, (unsigned long long)ATTN__ST_MAX_HEADER);
    if (hlen > src->size - 8)
        FAIL(ATTN_E_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)",
             label, (unsigned long long)hlen, (unsigned long long)src->size);
    uint64_t data_len = src->size - 8 - hlen;
    if (!(hdr = malloc(hlen ? hlen : 1))) FAIL(ATTN_E_NOMEM, "%s: out of memory", label);
    if (src_read(src, 8, hdr, hlen))
        FAIL(ATTN_E_IO, "%s: read failed: %s", label, errno ? strerror(errno) : "file shrank");
    if ((status = prescan(ctx, label, hdr, (size_t)hlen))) goto done;
    json_error_t jerr;
    root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        FAIL(ATTN_E_FORMAT, "%s: header is not valid JSON: %s (at byte %d)", label, jerr.text,
             jerr.position);
    if (!json_is_object(root)) FAIL(ATTN_E_FORMAT, "%s: header is not a JSON object", label);

    json_t *meta = json_object_get(root, "__metadata__");
    if (meta) {
        const char *k;
        json_t *v;
        if (!json_is_object(meta))
            FAIL(ATTN_E_FORMAT, "%s: __metadata__ is not a JSON object", label);
        json_object_foreach(meta, k, v) {
            if (!json_is_string(v))
                FAIL(ATTN_E_FORMAT, "%s: __metadata__ value of '%s' is not a string", label, k);
        }
        st->meta = json_incref(meta);
    }
    size_t count = json_object_size(root) - (meta != NULL);
    if (count > ATTN_SAFETENSORS_MAX_TENSORS)
        FAIL(ATTN_E_FORMAT, "%s: more than %d tensors in the header (the limit)", label,
             ATTN_SAFETENSORS_MAX_TENSORS);
    if (count && !(st->e = calloc(count, sizeof *st->e)))
        FAIL(ATTN_E_NOMEM, "%s: out of memory", label);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        st_entry *e = &st->e[st->n++];
        if (!(e->name = strdup(key))) FAIL(ATTN_E_NOMEM, "%s: out of memory", label);
        if ((status = parse_entry(ctx, label, key, val, data_len, e))) goto done;
    }
    json_decref(root);
    root = NULL;
    free(hdr);
    hdr = NULL;

    /* Tensors must tile the data section: sorted by offset, each begins where
     * the previous one ended, and the last ends at the end of the file. */
    if (st->n) qsort(st->e, (size_t)st->n, sizeof *st->e, cmp_offset);
    uint64_t cursor = 0;
    const char *prev = NULL;
    size_t total = 0;
    for (int i = 0; i < st->n; i++) {
        st_entry *e = &st->e[i];
        if (e->begin < cursor)
            FAIL(ATTN_E_FORMAT, "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s'", label,
                 e->name, (unsigned long long)e->begin, (unsigned long long)e->end, prev);
        if (e->begin > cursor)
            FAIL(ATTN_E_FORMAT, "%s: %llu unused bytes before tensor '%s' (at %llu)", label,
                 (unsigned long long)(e->begin - cursor), e->name, (unsigned long long)e->begin);
        if (e->end > e->begin) prev = e->name;
        cursor = e->end;
        size_t nb = (size_t)(e->end - e->begin), align = nb >= 64 ? 64 : 8;
        e->dst = (total + align - 1) & ~(align - 1);
        total = e->dst + nb;
    }
    if (cursor != data_len)
        FAIL(ATTN_E_FORMAT, "%s: %llu bytes at the end of the data section belong to no tensor",
             label, (unsigned long long)(data_len - cursor));

    st->data_start = 8 + hlen;
    if (!header_only && !(st->data = attn__malloc(total)))
        FAIL(ATTN_E_NOMEM, "%s: out of memory for %zu bytes of tensor data", label, total);
    for (int i = 0; !header_only && i < st->n; i++) {
        st_entry *e = &st->e[i];
        if (e->end > e->begin &&
            src_read(src, 8 + hlen + e->begin, st->data + e->dst, (size_t)(e->end - e->begin)))
            FAIL(ATTN_E_IO, "%s: reading tensor '%s' failed: %s", label, e->name,
                 errno ? strerror(errno) : "file shrank");
        if (e->dt->dtype == ATTN_BOOL) /* attn's BOOL is 0 or 1: any nonzero byte is true */
            for (size_t b = 0; b < (size_t)(e->end - e->begin); b++)
                st->data[e->dst + b] = st->data[e->dst + b] != 0;
    }
    if (st->n) {
        if (!(st->by_name = malloc((size_t)st->n * sizeof *st->by_name)))
            FAIL(ATTN_E_NOMEM, "%s: out of memory", label);
        for (int i = 0; i < st->n; i++)
            st->by_name[i] = i;
        sort_entries = st->e;
        qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_name);
        sort_entries = NULL;
    }
done:
    free(hdr);
    if (root) json_decref(root);
    if (status) {
        attn_safetensors_close(st);
        st = NULL;
    }
    *out = st;
    return status;
}

/* Open path as a safetensors file (fn names the caller in messages): a
 * regular file only. header_only keeps the descriptor open in the handle
 * for attn_safetensors_read instead of reading the data. */
static attn_status open_path(attn_ctx *ctx, const char *fn, const char *path, int header_only,
                             attn_safetensors **out) {
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: path is NULL", fn);
    attn__ctx_clear(ctx);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused
     * below as not a regular file (the flag changes nothing for files) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    attn_status status;
    if (fstat(fd, &sb)) {
        status = attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        status = attn_ctx_fail(ctx, ATTN_E_IO, "%s: not a regular file", path);
    } else {
        st_src src = {fd, NULL, (uint64_t)sb.st_size, path};
        status = open_src(ctx, &src, header_only, out);
    }
    if (status == ATTN_OK && header_only)
        (*out)->fd = fd; /* kept for attn_safetensors_read */
    else
        close(fd);
    return status;
}

attn_status attn_safetensors_open(attn_ctx *ctx, const char *path, attn_safetensors **out) {
    return open_path(ctx, "attn_safetensors_open", path, 0, out);
}

attn_status attn_safetensors_open_header(attn_ctx *ctx, const char *path, attn_safetensors **out) {
    return open_path(ctx, "attn_safetensors_open_header", path, 1, out);
}

attn_status attn_safetensors_read(attn_ctx *ctx, const attn_safetensors *st, const char *name,
                                  int64_t first, int64_t n, int as_f32, void *dst) {
    if (!st || !name || (n > 0 && !dst))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_safetensors_read: NULL argument");
    attn__ctx_clear(ctx);
    attn_tensor t;
    attn_status s = attn_safetensors_get(ctx, st, name, &t);
    if (s) return s;
    const st_entry *e = &st->e[attn_safetensors_find(st, name)];
    int64_t numel = attn_tensor_numel(&t);
    if (first < 0 || n < 0 || first > numel || n > numel - first)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "%s: tensor '%s': %lld elements from %lld are outside its %lld",
                             st->label, name, (long long)n, (long long)first, (long long)numel);
    int fl =
        t.dtype == ATTN_F32 || t.dtype == ATTN_F64 || t.dtype == ATTN_F16 || t.dtype == ATTN_BF16;
    if (as_f32 && !fl)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE,
                             "%s: tensor '%s' has dtype %s, expected a float dtype (F32, F64, "
                             "F16, BF16)",
                             st->label, name, attn_dtype_name(t.dtype));
    if (n == 0) return ATTN_OK;
    size_t es = attn_dtype_size(t.dtype), bytes = (size_t)n * es;
    /* the raw bytes, from memory or from the file: straight into dst, or
     * through a buffer when they are converted to float32 */
    unsigned char *raw = (as_f32 && es != 4) ? malloc(bytes) : dst;
    if (!raw) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", st->label);
    if (st->fd < 0) {
        memcpy(raw, (const unsigned char *)t.data + (size_t)first * es, bytes);
    } else {
        st_src src = {st->fd, NULL, 0, st->label};
        if (src_read(&src, st->data_start + e->begin + (uint64_t)first * es, raw, bytes)) {
            if (raw != dst) free(raw);
            return attn_ctx_fail(ctx, ATTN_E_IO, "%s: reading tensor '%s' failed: %s", st->label,
                                 name, errno ? strerror(errno) : "file shrank");
        }
        if (t.dtype == ATTN_BOOL)
            for (size_t b = 0; b < bytes; b++)
                raw[b] = raw[b] != 0;
    }
    if (as_f32 && t.dtype != ATTN_F32) {
        float *f = dst;
        for (int64_t i = 0; i < n; i++) {
            if (t.dtype == ATTN_F64) {
                double d;
                memcpy(&d, raw + (size_t)i * 8, 8);
                f[i] = (float)d;
            } else {
                uint16_t h;
                memcpy(&h, raw + (size_t)i * 2, 2);
                f[i] = t.dtype == ATTN_F16 ? attn__f16_to_f32(h) : attn__bf16_to_f32(h);
            }
        }
    }
    if (raw != dst) free(raw);
    return ATTN_OK;
}

attn_status attn_safetensors_open_memory(attn_ctx *ctx, const void *buf, size_t len,
                                         attn_safetensors **out) {
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_safetensors_open_memory: out is NULL");
    *out = NULL;
    if (!buf && len)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_safetensors_open_memory: buf is NULL");
    attn__ctx_clear(ctx);
    static const unsigned char empty[1];
    st_src src = {-1, buf ? buf : empty, (uint64_t)len, "<memory>"};
    return open_src(ctx, &src, 0, out);
}

int attn_safetensors_count(const attn_safetensors *st) {
    return st ? st->n : 0;
}

const char *attn_safetensors_name(const attn_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? st->e[i].name : NULL;
}

const char *attn_safetensors_dtype_name(const attn_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? st->e[i].dt->name : NULL;
}

int attn_safetensors_ndim(const attn_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? st->e[i].ndim : -1;
}

int attn_safetensors_find(const attn_safetensors *st, const char *name) {
    if (!st || !name) return -1;
    int lo = 0, hi = st->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(st->e[st->by_name[mid]].name, name);
        if (c == 0) return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

const char *attn_safetensors_metadata(const attn_safetensors *st, const char *key) {
    if (!st || !st->meta || !key) return NULL;
    return json_string_value(json_object_get(st->meta, key));
}

attn_status attn_safetensors_get(attn_ctx *ctx, const attn_safetensors *st, const char *name,
                                 attn_tensor *view) {
    if (!st || !name || !view)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_safetensors_get: NULL argument");
    attn__ctx_clear(ctx);
    memset(view, 0, sizeof *view);
    int i = attn_safetensors_find(st, name);
    if (i < 0)
        return attn_ctx_fail(ctx, ATTN_E_NOTFOUND, "%s: no tensor named '%s'", st->label, name);
    const st_entry *e = &st->e[i];
    if (e->dt->dtype < 0)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE,
                             "%s: tensor '%s' has dtype %s, which attn does "
                             "not handle",
                             st->label, name, e->dt->name);
    if (e->ndim > ATTN_MAX_DIMS)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "%s: tensor '%s' has %d dims (at most %d)",
                             st->label, name, e->ndim, ATTN_MAX_DIMS);
    *view = attn_tensor_make(st->data ? st->data + e->dst : NULL, (attn_dtype)e->dt->dtype, e->ndim,
                             e->shape);
    return ATTN_OK;
}

attn_status attn_safetensors_get_f32(attn_ctx *ctx, const attn_safetensors *st, const char *name,
                                     float **data, attn_tensor *view) {
    if (!data || !view)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_safetensors_get_f32: NULL argument");
    *data = NULL;
    attn_tensor t;
    attn_status s = attn_safetensors_get(ctx, st, name, &t);
    if (s) return s;
    if (t.dtype != ATTN_F32 && t.dtype != ATTN_F64 && t.dtype != ATTN_F16 && t.dtype != ATTN_BF16)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE,
                             "%s: tensor '%s' has dtype %s, expected a float "
                             "dtype (F32, F64, F16, BF16)",
                             st->label, name, attn_dtype_name(t.dtype));
    size_t n = (size_t)attn_tensor_numel(&t);
    if (st->fd >= 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "%s: opened header-only: read tensor '%s' with "
                             "attn_safetensors_read",
                             st->label, name);
    float *f = attn__malloc(n * sizeof *f);
    if (!f) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory for '%s'", st->label, name);
    for (size_t i = 0; i < n; i++) {
        switch (t.dtype) {
        case ATTN_F32:
            f[i] = ((const float *)t.data)[i];
            break;
        case ATTN_F64:
            f[i] = (float)((const double *)t.data)[i];
            break;
        case ATTN_F16:
            f[i] = attn__f16_to_f32(((const uint16_t *)t.data)[i]);
            break;
        default:
            f[i] = attn__bf16_to_f32(((const uint16_t *)t.data)[i]);
            break;
        }
    }
    t.data = f;
    t.dtype = ATTN_F32;
    *data = f;
    *view = t;
    return ATTN_OK;
}
