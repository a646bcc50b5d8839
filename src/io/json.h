/* JSON configuration files (internal): reading them and their typed keys,
 * with messages that name the file. What the keys mean is the business of
 * the model that reads them (models/). */
#ifndef ATTN_IO_JSON_H
#define ATTN_IO_JSON_H

#include "core/internal.h"

#include <jansson.h>

#define ATTN__PATH_LEN 4096

/* buf[ATTN__PATH_LEN] = dir/a (b NULL) or dir/a/b. Returns 0 when the path
 * does not fit, else 1. */
int attn__path_join(char *buf, const char *dir, const char *a, const char *b);

/* Load path as a JSON object or array (duplicate keys rejected). A missing
 * file is ATTN_E_NOTFOUND, unless optional: then *out is NULL and the result
 * ATTN_OK. Also ATTN_E_IO (cannot open), ATTN_E_FORMAT (not JSON, or a
 * scalar). */
attn_status attn__json_load(attn_ctx *ctx, const char *path, int optional, json_t **out);

/* Integer key of object o in [lo, 2^31]: required unless has_def (then def
 * when absent). ATTN_E_NOTFOUND (missing), ATTN_E_FORMAT (not an integer),
 * ATTN_E_SHAPE (out of range: these keys are sizes). */
attn_status attn__json_get_int(attn_ctx *ctx, const char *path, json_t *o, const char *key,
                               int has_def, int64_t def, int64_t lo, int64_t *out);

/* String key of object o, or def when absent. ATTN_E_FORMAT when present
 * and not a string. */
attn_status attn__json_get_str(attn_ctx *ctx, const char *path, json_t *o, const char *key,
                               const char *def, const char **out);

attn_status attn__write_json(attn_ctx *ctx, const char *path, json_t *j);

#endif /* ATTN_IO_JSON_H */
