/* Pieces shared by the safetensors reader and writer (never installed). */
#ifndef ATTN_IO_SAFETENSORS_H
#define ATTN_IO_SAFETENSORS_H

#include "core/internal.h"

#include <stddef.h>
#include <stdint.h>

/* Headers larger than this are refused as corrupt: real files carry a few KB
 * to a few MB of JSON, and parsing is done in memory. */
#define ATTN__ST_MAX_HEADER ((uint64_t)ATTN_SAFETENSORS_MAX_HEADER)

/* One dtype a safetensors file may hold. `dtype` is the attn_dtype it maps
 * to, or -1 for dtypes that are legal in a file but that attn does not serve. */
typedef struct attn__st_dtype {
    const char *name;
    size_t size;
    int dtype;
} attn__st_dtype;

/* The entry for a dtype name, or NULL when the name is not a safetensors dtype. */
const attn__st_dtype *attn__st_dtype_lookup(const char *name);

/* IEEE binary16 / bfloat16 bits to float (exact). */
float attn__f16_to_f32(uint16_t h);
static inline float attn__bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } x = {(uint32_t)h << 16};
    return x.f;
}

#endif /* ATTN_IO_SAFETENSORS_H */
