/* float16 (IEEE binary16) and bfloat16 conversions in portable C: the
 * scalar reference of the converters the SIMD families do in registers
 * (F16C's vcvtph2ps, a 16-bit shift for bfloat16), bit for bit the same.
 * Float to half rounds to nearest even; NaN stays NaN. */
#ifndef ATTN_KERNELS_HALF_H
#define ATTN_KERNELS_HALF_H

#include <stdint.h>
#include <string.h>

static inline float attn__h2f(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f) {
        u = s | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0); /* inf; NaN quieted */
    } else if (e) {
        u = s | ((e + 112) << 23) | (m << 13);
    } else if (!m) {
        u = s;
    } else { /* subnormal: normalise */
        e = 113;
        while (!(m & 0x400)) m <<= 1, e--;
        u = s | (e << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t attn__f2h(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(s | 0x7e00 | ((a >> 13) & 0x3ff)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00); /* overflow (and inf) */
    if (a < 0x38800000u) { /* subnormal half or zero: fixed point at 2^-24 */
        if (a < 0x33000000u) return (uint16_t)s; /* below half the smallest: 0 */
        /* value = m * 2^(e - 150); in units of 2^-24: m >> (126 - e) */
        uint32_t m = (a & 0x7fffff) | 0x800000, sh = 126 - (a >> 23);
        uint32_t r = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(s | r);
    }
    uint32_t r = a + 0xfff + ((a >> 13) & 1); /* round to nearest even at bit 13 */
    r -= 0x38000000u;                           /* rebias 127 -> 15 */
    return (uint16_t)(s | (r >> 13));
}

static inline float attn__bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t attn__f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

#endif /* ATTN_KERNELS_HALF_H */
