/* JSON configuration files: reading them and their typed keys. */
#include "io/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int attn__path_join(char *buf, const char *dir, const char *a, const char *b) {
    int n = b ? snprintf(buf, ATTN__PATH_LEN, "%s/%s/%s", dir, a, b)
              : snprintf(buf, ATTN__PATH_LEN, "%s/%s", dir, a);
    return n > 0 && n < ATTN__PATH_LEN;
}

attn_status attn__json_load(attn_ctx *ctx, const char *path, int optional, json_t **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT && optional) return ATTN_OK;
        return attn_ctx_fail(ctx, errno == ENOENT ? ATTN_E_NOTFOUND : ATTN_E_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    }
    json_error_t err;
    /* Numbers are read as doubles: Hugging Face writes integers beyond
     * int64 (tokenizer_config.json's model_max_length of 1e30 for "no
     * limit"), which jansson's integers would refuse for the whole file.
     * attn__json_get_int takes integral values back out exactly up to 2^53. */
    json_t *j = json_loadf(f, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &err);
    fclose(f);
    if (!j)
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: invalid JSON at line %d: %s", path, err.line,
                             err.text);
    if (!json_is_object(j) && !json_is_array(j)) {
        json_decref(j);
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: expected a JSON object or array", path);
    }
    *out = j;
    return ATTN_OK;
}

attn_status attn__json_get_int(attn_ctx *ctx, const char *path, json_t *o, const char *key,
                               int has_def, int64_t def, int64_t lo, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (!has_def)
            return attn_ctx_fail(ctx, ATTN_E_NOTFOUND, "%s: missing key \"%s\"", path, key);
        *out = def;
        return ATTN_OK;
    }
    double d = json_is_integer(v) ? (double)json_integer_value(v)
               : json_is_real(v)  ? json_real_value(v)
                                  : NAN;
    if (!(d == floor(d)) || fabs(d) > 9007199254740992.0) /* NaN, fractional, beyond 2^53 */
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be an integer", path, key);
    int64_t x = (int64_t)d;
    if (x < lo || x > ((int64_t)1 << 31))
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: \"%s\" = %lld is out of range (>= %lld)", path,
                             key, (long long)x, (long long)lo);
    *out = x;
    return ATTN_OK;
}

attn_status attn__json_get_str(attn_ctx *ctx, const char *path, json_t *o, const char *key,
                               const char *def, const char **out) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return ATTN_OK;
    }
    if (!json_is_string(v))
        return attn_ctx_fail(ctx, ATTN_E_FORMAT, "%s: \"%s\" must be a string", path, key);
    *out = json_string_value(v);
    return ATTN_OK;
}

/* j (a reference the call takes over, NULL = out of memory) as indented
 * JSON with sorted keys and a final newline, written whole or not at all
 * (attn_outfile). */
attn_status attn__write_json(attn_ctx *ctx, const char *path, json_t *j) {
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!text) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", path);
    attn_outfile *o = NULL;
    attn_status st = attn_outfile_open(ctx, path, &o);
    if (!st) {
        const size_t n = strlen(text);
        size_t done = 0;
        while (done < n) {
            ssize_t w = write(attn_outfile_fd(o), text + done, n - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            done += (size_t)w;
        }
        if (done == n && write(attn_outfile_fd(o), "\n", 1) == 1) {
            st = attn_outfile_commit(ctx, o);
        } else {
            attn_outfile_abort(o);
            st = attn_ctx_fail(ctx, ATTN_E_IO, "%s: write failed", path);
        }
    }
    free(text);
    return st;
}
