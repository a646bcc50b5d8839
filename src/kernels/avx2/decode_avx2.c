/* AVX2 decode kernel (kernels/decode.h): the AVX-512 kernel's two-phase
 * algorithm on 8 lanes. Per call (a run of keys adjacent in the pool):
 *  - scores: tiles of 2 keys x 4 query rows; per 8-wide chunk of D, the
 *    query chunks and the key chunk (converted in registers: vcvtph2ps
 *    (F16C) for F16, a 16-bit shift for BF16) feed the tile's 8
 *    accumulators, the 2 key rows side by side (each query chunk loaded
 *    once for both keys). A transpose-and-add tree reduces the 8 into one
 *    register, lane 2*row + key; every group of 4 rows runs on the tile
 *    while it is in L1; the run's scores go to the scratch s, a running
 *    max per row in registers;
 *  - softmax over the run: one max, one alpha per row, p = exp(s - m')
 *    written back to s as [group][key][row];
 *  - P V: blocks of 16 keys; per group of 4 rows, passes of 16 columns
 *    with 4 rows x 16 columns of the accumulator in 8 registers, one
 *    broadcast probability per row and key.
 * K, then V, each streamed in address order with one software prefetch
 * per line read, PF_BYTES ahead in the same array (issued by the first
 * group's loads), as in the AVX-512 kernel (docs/PERFORMANCE.md). Main
 * loops load whole vectors; a D or Dv that is not a multiple of 8 takes a
 * tail (masked loads for float32, a zero-padded copy for 16-bit storage,
 * which AVX2 cannot load masked). F32 storage runs the earlier one-pass
 * kernel instead (attend_f32_1p, at the end: it streamed faster in F32 on
 * 8 lanes). */
#include "kernels/arch.h"
#include "kernels/avx2/vmath_avx2.h"

#include <math.h>
#include <string.h>

#define ATTN_INLINE static inline __attribute__((always_inline))

#define BLK 16 /* keys per P V block */
#define PF_BYTES 8192
#define PF_HINT _MM_HINT_T0

/* 8 elements of a K or V row as float32 (elements i.. of p). */
ATTN_INLINE __m256 ldc(const void *p, int64_t i, int dt) {
    if (dt == ATTN__KV_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    if (dt == ATTN__KV_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i))),
            16));
    return _mm256_loadu_ps((const float *)p + i);
}

/* Lanes < left of 8 set (left <= 0: none), the others 0. */
ATTN_INLINE __m256i lane_mask(int left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
ATTN_INLINE __m256 ldc_t(const void *p, int64_t i, int left, int dt) {
    if (dt == ATTN__KV_F32) return _mm256_maskload_ps((const float *)p + i, lane_mask(left));
    uint16_t t[8] = {0};
    memcpy(t, (const uint16_t *)p + i, (size_t)left * 2);
    return ldc(t, 0, dt);
}

/* One vector of the 8 lane sums: lane i = sum of v[i]'s lanes. */
ATTN_INLINE __m256 hsum8(const __m256 v[8]) {
    __m256 w[4], x[2];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
        w[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* per 128-bit lane: partial sums of v[4i .. 4i+3] */
        x[i] = _mm256_add_ps(_mm256_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_permute2f128_ps(x[0], x[1], 0x20),
                         _mm256_permute2f128_ps(x[0], x[1], 0x31));
}

/* Scores of 2 keys (element offsets k0, k1 into k) x 4 query rows: lane
 * 2*row + key of the result. 16-bit storage only (F32 runs attend_f32_1p
 * below): the 2 key rows side by side, each query chunk loaded once for
 * both keys. */
ATTN_INLINE __m256 qk_tile(const float *q0, const float *q1, const float *q2, const float *q3,
                           int D, const void *k, int64_t k0, int64_t k1, int dt, int pf,
                           uintptr_t pfb, int64_t ks) {
    __m256 a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        a[i] = _mm256_setzero_ps();
    int d = 0;
    for (; d + 8 <= D; d += 8) {
        __m256 kc[2];
#pragma GCC unroll 2
        for (int u = 0; u < 2; u++) {
            if (pf && ((d * 2) & 63) == 0) /* one line per line of each key */
                _mm_prefetch((const char *)(pfb + (uintptr_t)((u * ks + d) * 2)), PF_HINT);
            kc[u] = ldc(k, (u ? k1 : k0) + d, dt);
        }
        const __m256 x0 = _mm256_loadu_ps(q0 + d), x1 = _mm256_loadu_ps(q1 + d);
        const __m256 x2 = _mm256_loadu_ps(q2 + d), x3 = _mm256_loadu_ps(q3 + d);
#pragma GCC unroll 2
        for (int u = 0; u < 2; u++) {
            a[u] = _mm256_fmadd_ps(x0, kc[u], a[u]);
            a[2 + u] = _mm256_fmadd_ps(x1, kc[u], a[2 + u]);
            a[4 + u] = _mm256_fmadd_ps(x2, kc[u], a[4 + u]);
            a[6 + u] = _mm256_fmadd_ps(x3, kc[u], a[6 + u]);
        }
    }
    if (d < D) {
        const int left = D - d;
        const __m256i mq = lane_mask(left);
#pragma GCC unroll 2
        for (int u = 0; u < 2; u++) {
            const __m256 kc = ldc_t(k, (u ? k1 : k0) + d, left, dt);
            a[u] = _mm256_fmadd_ps(_mm256_maskload_ps(q0 + d, mq), kc, a[u]);
            a[2 + u] = _mm256_fmadd_ps(_mm256_maskload_ps(q1 + d, mq), kc, a[2 + u]);
            a[4 + u] = _mm256_fmadd_ps(_mm256_maskload_ps(q2 + d, mq), kc, a[4 + u]);
            a[6 + u] = _mm256_fmadd_ps(_mm256_maskload_ps(q3 + d, mq), kc, a[6 + u]);
        }
    }
    return hsum8(a);
}

/* Each pair of lanes (2r, 2r+1) gets the max (or sum) of the two. */
ATTN_INLINE __m256 max2(__m256 x) {
    return _mm256_max_ps(x, _mm256_shuffle_ps(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
}
ATTN_INLINE __m256 sum2(__m256 x) {
    return _mm256_add_ps(x, _mm256_shuffle_ps(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* o[r][c] = o[r][c] * alpha[r] + sum_j p[j][r] v_j[c] over nb keys, for
 * the 16 columns at c0 of 4 accumulator rows; `left` < 16 columns when
 * tail (then masked). */
ATTN_INLINE void pv_pass(float *acc0, float *acc1, float *acc2, float *acc3, int nr, int c0,
                         const float *alpha, const float *pb, const void *v, int64_t vs, int nb,
                         int dt, int tail, int left, int pf, uintptr_t pfb, int64_t rowb) {
    const int64_t esz = dt == ATTN__KV_F32 ? 4 : 2;
    const __m256 al0 = _mm256_set1_ps(alpha[0]), al1 = _mm256_set1_ps(alpha[1]);
    const __m256 al2 = _mm256_set1_ps(alpha[2]), al3 = _mm256_set1_ps(alpha[3]);
    const int l0 = left < 8 ? left : 8, l1 = left - l0;
    const __m256i m0 = lane_mask(tail ? l0 : 8), m1 = lane_mask(tail ? l1 : 8);
#define LD(a, al, c, m)                                                                            \
    _mm256_mul_ps(tail ? _mm256_maskload_ps((a) + c0 + 8 * (c), m)                                 \
                       : _mm256_loadu_ps((a) + c0 + 8 * (c)),                                      \
                  al)
    __m256 o00 = LD(acc0, al0, 0, m0), o01 = LD(acc0, al0, 1, m1);
    __m256 o10 = LD(acc1, al1, 0, m0), o11 = LD(acc1, al1, 1, m1);
    __m256 o20 = LD(acc2, al2, 0, m0), o21 = LD(acc2, al2, 1, m1);
    __m256 o30 = LD(acc3, al3, 0, m0), o31 = LD(acc3, al3, 1, m1);
#undef LD
    for (int j = 0; j < nb; j++) {
        const int64_t vb = (int64_t)j * vs + c0;
        if (pf)
            for (int64_t o = 0; o < rowb; o += 64)
                _mm_prefetch((const char *)(pfb + (uintptr_t)(j * vs * esz + o)), PF_HINT);
        __m256 v0, v1;
        if (tail) {
            v0 = ldc_t(v, vb, l0, dt);
            v1 = l1 > 0 ? ldc_t(v, vb + 8, l1, dt) : _mm256_setzero_ps();
        } else {
            v0 = ldc(v, vb, dt), v1 = ldc(v, vb + 8, dt);
        }
        const float *pj = pb + 4 * j;
        __m256 p = _mm256_broadcast_ss(pj);
        o00 = _mm256_fmadd_ps(p, v0, o00), o01 = _mm256_fmadd_ps(p, v1, o01);
        p = _mm256_broadcast_ss(pj + 1);
        o10 = _mm256_fmadd_ps(p, v0, o10), o11 = _mm256_fmadd_ps(p, v1, o11);
        p = _mm256_broadcast_ss(pj + 2);
        o20 = _mm256_fmadd_ps(p, v0, o20), o21 = _mm256_fmadd_ps(p, v1, o21);
        p = _mm256_broadcast_ss(pj + 3);
        o30 = _mm256_fmadd_ps(p, v0, o30), o31 = _mm256_fmadd_ps(p, v1, o31);
    }
    /* rows beyond nr (aliases of row 0) are not stored; row 0 last */
#define ST(a, c, m, o)                                                                             \
    (tail ? _mm256_maskstore_ps((a) + c0 + 8 * (c), m, o) : _mm256_storeu_ps((a) + c0 + 8 * (c), o))
    if (nr > 3) ST(acc3, 0, m0, o30), ST(acc3, 1, m1, o31);
    if (nr > 2) ST(acc2, 0, m0, o20), ST(acc2, 1, m1, o21);
    if (nr > 1) ST(acc1, 0, m0, o10), ST(acc1, 1, m1, o11);
    ST(acc0, 0, m0, o00), ST(acc0, 1, m1, o01);
#undef ST
}

/* P V of a block of nb keys (values at vp) for every row; alpha[r] scales
 * row r's accumulator first; s holds each group's [key][4] probabilities
 * (gs floats per group). The first pass prefetches (pfb: the prefetch
 * address of vp's first byte). */
ATTN_INLINE void pv_block(float *acc, int R, int Dv, const float *alpha, const float *s, int64_t gs,
                          int j0, const char *vp, int64_t vs, int nb, int dt, uintptr_t pfb) {
    const int64_t rowb = (int64_t)Dv * (dt == ATTN__KV_F32 ? 4 : 2);
    for (int r0 = 0; r0 < R; r0 += 4) {
        const int nr = R - r0 < 4 ? R - r0 : 4;
        float *a0 = acc + (int64_t)r0 * Dv;
        float *a1 = nr > 1 ? a0 + Dv : a0, *a2 = nr > 2 ? a0 + 2 * Dv : a0;
        float *a3 = nr > 3 ? a0 + 3 * Dv : a0;
        const float *pb = s + (r0 / 4) * gs + 4 * j0, *al = alpha + r0;
        int c0 = 0;
        for (; c0 + 16 <= Dv; c0 += 16) {
            if (r0 == 0 && c0 == 0)
                pv_pass(a0, a1, a2, a3, nr, c0, al, pb, vp, vs, nb, dt, 0, 16, 1, pfb, rowb);
            else
                pv_pass(a0, a1, a2, a3, nr, c0, al, pb, vp, vs, nb, dt, 0, 16, 0, 0, 0);
        }
        if (c0 < Dv)
            pv_pass(a0, a1, a2, a3, nr, c0, al, pb, vp, vs, nb, dt, 1, Dv - c0, r0 == 0 && c0 == 0,
                    pfb, rowb);
    }
}

ATTN_INLINE void attend_body(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                             int64_t vs, int Dv, int dt, const int *lim, float *m, float *l,
                             float *acc, float *s) {
    const int64_t esz = dt == ATTN__KV_F32 ? 4 : 2;
    int n = 0;
    for (int r = 0; r < R; r++)
        n = lim[r] > n ? lim[r] : n;
    if (n == 0) return;
    const int ng = (R + 3) / 4, nt = (n + 1) / 2;
    const int64_t gs = 8 * (int64_t)nt; /* floats of s per group of 4 rows */
    const __m256i jlane = _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1);
    /* [row][key] lanes of a tile -> [key][row] */
    const __m256i tr = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 mv[4], lv[4], mx[4];
    __m256i limv[4];
    const float *qg[4][4];
    for (int g = 0; g < ng; g++) {
        /* running max and sum, row r in lanes 2r, 2r+1 (sum split over
         * them); limits per lane (rows beyond R see nothing) */
        float mi[8], li[8];
        int li32[8];
        for (int r = 0; r < 4; r++) {
            const int rr = 4 * g + r;
            qg[g][r] = q + (int64_t)(rr < R ? rr : 4 * g) * D;
            for (int jj = 0; jj < 2; jj++) {
                mi[2 * r + jj] = rr < R ? m[rr] : -INFINITY;
                li[2 * r + jj] = rr < R && jj == 0 ? l[rr] : 0.0f;
                li32[2 * r + jj] = rr < R ? lim[rr] : 0;
            }
        }
        mv[g] = _mm256_loadu_ps(mi), lv[g] = _mm256_loadu_ps(li), mx[g] = ninf;
        limv[g] = _mm256_loadu_si256((const __m256i *)li32);
    }
    /* scores (a key past n repeats the last one; masked to -inf) */
    for (int i = 0; i < nt; i++) {
        const int j = 2 * i;
        const int64_t k0 = (int64_t)j * ks, k1 = (int64_t)(j + 1 < n ? j + 1 : n - 1) * ks;
        const uintptr_t pfb = (uintptr_t)k + (uintptr_t)((int64_t)j * ks * esz + PF_BYTES);
        const __m256i jv = _mm256_add_epi32(jlane, _mm256_set1_epi32(j));
        for (int g = 0; g < ng; g++) {
            __m256 t =
                g == 0
                    ? qk_tile(qg[0][0], qg[0][1], qg[0][2], qg[0][3], D, k, k0, k1, dt, 1, pfb, ks)
                    : qk_tile(qg[g][0], qg[g][1], qg[g][2], qg[g][3], D, k, k0, k1, dt, 0, 0, ks);
            /* keys a row does not see: -inf */
            t = _mm256_blendv_ps(ninf, t, _mm256_castsi256_ps(_mm256_cmpgt_epi32(limv[g], jv)));
            mx[g] = _mm256_max_ps(mx[g], t);
            _mm256_storeu_ps(s + g * gs + 8 * i, t);
        }
    }
    /* softmax over the run: m' = max(m, max_j s_j), alpha = exp(m - m'),
     * p_j = exp(s_j - m') stored [key][row], l' = l alpha + sum_j p_j */
    __attribute__((aligned(32))) float alpha[16] = {0};
    for (int g = 0; g < ng; g++) {
        const __m256 mn = _mm256_max_ps(mv[g], max2(mx[g]));
        /* a row with no key yet keeps m = -inf: subtract 0 so p = 0, not NaN */
        const __m256 mu =
            _mm256_blendv_ps(mn, _mm256_setzero_ps(), _mm256_cmp_ps(mn, ninf, _CMP_EQ_OQ));
        const __m256 al = exp_avx2(_mm256_sub_ps(mv[g], mu));
        __m256 ps = _mm256_setzero_ps();
        float *sg = s + g * gs;
        for (int i = 0; i < nt; i++) {
            const __m256 p = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(sg + 8 * i), mu));
            ps = _mm256_add_ps(ps, p);
            _mm256_storeu_ps(sg + 8 * i, _mm256_permutevar8x32_ps(p, tr));
        }
        float mi[8], li[8], ai[8];
        _mm256_storeu_ps(mi, mn);
        _mm256_storeu_ps(li, sum2(_mm256_fmadd_ps(lv[g], al, ps)));
        _mm256_storeu_ps(ai, al);
        for (int r = 0; r < 4 && 4 * g + r < R; r++) {
            m[4 * g + r] = mi[2 * r], l[4 * g + r] = li[2 * r];
            alpha[4 * g + r] = ai[2 * r];
        }
    }
    /* P V, blocks of BLK keys; alpha applied with the first */
    const float one[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int j0 = 0; j0 < n; j0 += BLK) {
        const int nb = n - j0 < BLK ? n - j0 : BLK;
        const int64_t vo = (int64_t)j0 * vs * esz;
        pv_block(acc, R, Dv, j0 ? one : alpha, s, gs, j0, (const char *)v + vo, vs, nb, dt,
                 (uintptr_t)v + (uintptr_t)(vo + PF_BYTES));
    }
}

/* ---- F32: the earlier one-pass form ------------------------------------
 * F32 keeps the kernel this file had before the two phases: one pass in
 * blocks of 8 keys, a block's scores in registers between the two
 * products, an online softmax per block, K and V of a block read one
 * after the other, prefetch of each tile's 2 keys and values 4 KiB ahead.
 * On 8 lanes the F32 kernel costs about as much per key in cache (22-24 ns
 * on the Zen 5) as memory takes to deliver its 1 KiB, and two phases
 * leave the score phase short of compute to hide its reads behind: F32
 * streamed 2-8 points slower in two phases, 16-bit storage (half the
 * bytes, the same work) 3-6 points faster (docs/PERFORMANCE.md). */
#define BLK_1P 8
#define PF_BYTES_1P 4096

ATTN_INLINE void pf_bytes_1p(const void *base, int64_t off, int64_t bytes) {
    /* the address may lie past the run (often the next run), or past the
     * pool (a prefetch never faults): integer arithmetic, not a pointer
     * beyond its object */
    const uintptr_t a = (uintptr_t)base + (uintptr_t)off;
    for (int64_t o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)(a + (uintptr_t)o), _MM_HINT_NTA);
}

/* Scores of 2 keys (element offsets k0, k1 into k) x 4 query rows: lane
 * 2*row + key of the result. */
ATTN_INLINE __m256 qk_tile_1p(const float *q0, const float *q1, const float *q2, const float *q3,
                              int D, const void *k, int64_t k0, int64_t k1, int dt) {
    __m256 a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        a[i] = _mm256_setzero_ps();
    int d = 0;
#define QK_STEP(QLD, KLD)                                                                          \
    do {                                                                                           \
        const __m256 x0 = QLD(q0 + d), x1 = QLD(q1 + d), x2 = QLD(q2 + d), x3 = QLD(q3 + d);       \
        __m256 kc = KLD(k0);                                                                       \
        a[0] = _mm256_fmadd_ps(x0, kc, a[0]), a[2] = _mm256_fmadd_ps(x1, kc, a[2]);                \
        a[4] = _mm256_fmadd_ps(x2, kc, a[4]), a[6] = _mm256_fmadd_ps(x3, kc, a[6]);                \
        kc = KLD(k1);                                                                              \
        a[1] = _mm256_fmadd_ps(x0, kc, a[1]), a[3] = _mm256_fmadd_ps(x1, kc, a[3]);                \
        a[5] = _mm256_fmadd_ps(x2, kc, a[5]), a[7] = _mm256_fmadd_ps(x3, kc, a[7]);                \
    } while (0)
#define QLD(p) _mm256_loadu_ps(p)
#define KLD(o) ldc(k, (o) + d, dt)
    for (; d + 8 <= D; d += 8)
        QK_STEP(QLD, KLD);
#undef QLD
#undef KLD
    if (d < D) {
        const int left = D - d;
        const __m256i mq = lane_mask(left);
#define QLD(p) _mm256_maskload_ps(p, mq)
#define KLD(o) ldc_t(k, (o) + d, left, dt)
        QK_STEP(QLD, KLD);
#undef QLD
#undef KLD
    }
#undef QK_STEP
    return hsum8(a);
}

/* o[r][c] = o[r][c] * alpha[r] + sum_j p[j][r] v_j[c] over nb keys, for
 * the 16 columns at c0 of 4 accumulator rows; `left` < 16 columns when
 * tail (then masked). pv_pass without its prefetch: calling pv_pass with
 * pf = 0 here gives the same bits but read 3-4% fewer GB/s in F32 over five
 * alternating runs on the Zen 5 (code placement or noise: the ratios to the
 * probe overlapped), so the one-pass kernel keeps its own copy. */
ATTN_INLINE void pv_pass_1p(float *acc0, float *acc1, float *acc2, float *acc3, int nr, int c0,
                            const float *alpha, const float *pb, const void *v, int64_t vs, int nb,
                            int dt, int tail, int left) {
    const __m256 al0 = _mm256_set1_ps(alpha[0]), al1 = _mm256_set1_ps(alpha[1]);
    const __m256 al2 = _mm256_set1_ps(alpha[2]), al3 = _mm256_set1_ps(alpha[3]);
    const int l0 = left < 8 ? left : 8, l1 = left - l0;
    const __m256i m0 = lane_mask(tail ? l0 : 8), m1 = lane_mask(tail ? l1 : 8);
#define LD(a, al, c, m)                                                                            \
    _mm256_mul_ps(tail ? _mm256_maskload_ps((a) + c0 + 8 * (c), m)                                 \
                       : _mm256_loadu_ps((a) + c0 + 8 * (c)),                                      \
                  al)
    __m256 o00 = LD(acc0, al0, 0, m0), o01 = LD(acc0, al0, 1, m1);
    __m256 o10 = LD(acc1, al1, 0, m0), o11 = LD(acc1, al1, 1, m1);
    __m256 o20 = LD(acc2, al2, 0, m0), o21 = LD(acc2, al2, 1, m1);
    __m256 o30 = LD(acc3, al3, 0, m0), o31 = LD(acc3, al3, 1, m1);
#undef LD
    for (int j = 0; j < nb; j++) {
        const int64_t vb = (int64_t)j * vs + c0;
        __m256 v0, v1;
        if (tail) {
            v0 = ldc_t(v, vb, l0, dt);
            v1 = l1 > 0 ? ldc_t(v, vb + 8, l1, dt) : _mm256_setzero_ps();
        } else {
            v0 = ldc(v, vb, dt), v1 = ldc(v, vb + 8, dt);
        }
        const float *pj = pb + 4 * j;
        __m256 p = _mm256_broadcast_ss(pj);
        o00 = _mm256_fmadd_ps(p, v0, o00), o01 = _mm256_fmadd_ps(p, v1, o01);
        p = _mm256_broadcast_ss(pj + 1);
        o10 = _mm256_fmadd_ps(p, v0, o10), o11 = _mm256_fmadd_ps(p, v1, o11);
        p = _mm256_broadcast_ss(pj + 2);
        o20 = _mm256_fmadd_ps(p, v0, o20), o21 = _mm256_fmadd_ps(p, v1, o21);
        p = _mm256_broadcast_ss(pj + 3);
        o30 = _mm256_fmadd_ps(p, v0, o30), o31 = _mm256_fmadd_ps(p, v1, o31);
    }
    /* rows beyond nr (aliases of row 0) are not stored; row 0 last */
#define ST(a, c, m, o)                                                                             \
    (tail ? _mm256_maskstore_ps((a) + c0 + 8 * (c), m, o) : _mm256_storeu_ps((a) + c0 + 8 * (c), o))
    if (nr > 3) ST(acc3, 0, m0, o30), ST(acc3, 1, m1, o31);
    if (nr > 2) ST(acc2, 0, m0, o20), ST(acc2, 1, m1, o21);
    if (nr > 1) ST(acc1, 0, m0, o10), ST(acc1, 1, m1, o11);
    ST(acc0, 0, m0, o00), ST(acc0, 1, m1, o01);
#undef ST
}

ATTN_INLINE void attend_f32_1p(const float *q, int R, int D, const void *k, int64_t ks,
                               const void *v, int64_t vs, int Dv, int dt, const int *lim, float *m,
                               float *l, float *acc) {
    const int esz = dt == ATTN__KV_F32 ? 4 : 2;
    const __m256i jlane = _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1);
    /* [row][key] lanes of a tile -> [key][row] */
    const __m256i tr = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    /* keys ahead to prefetch: PF_BYTES_1P of keys, a multiple of 2 */
    int64_t pfk = (int64_t)PF_BYTES_1P / (ks * esz) / 2 * 2;
    if (pfk < 2) pfk = 2;
    for (int r0 = 0; r0 < R; r0 += 4) {
        const int nr = R - r0 < 4 ? R - r0 : 4;
        const float *q0 = q + (int64_t)r0 * D;
        const float *q1 = nr > 1 ? q0 + D : q0, *q2 = nr > 2 ? q0 + 2 * D : q0;
        const float *q3 = nr > 3 ? q0 + 3 * D : q0;
        float *acc0 = acc + (int64_t)r0 * Dv;
        float *acc1 = nr > 1 ? acc0 + Dv : acc0, *acc2 = nr > 2 ? acc0 + 2 * Dv : acc0;
        float *acc3 = nr > 3 ? acc0 + 3 * Dv : acc0;
        /* running max and sum, row r in lanes 2r, 2r+1 (sum split over them);
         * limits per lane (rows beyond nr see nothing) */
        float mi[8], li[8];
        int li32[8], gmax = 0;
        for (int r = 0; r < 4; r++)
            for (int jj = 0; jj < 2; jj++) {
                mi[2 * r + jj] = r < nr ? m[r0 + r] : -INFINITY;
                li[2 * r + jj] = r < nr && jj == 0 ? l[r0 + r] : 0.0f;
                li32[2 * r + jj] = r < nr ? lim[r0 + r] : 0;
                if (r < nr && lim[r0 + r] > gmax) gmax = lim[r0 + r];
            }
        __m256 mv = _mm256_loadu_ps(mi), lv = _mm256_loadu_ps(li);
        const __m256i limv = _mm256_loadu_si256((const __m256i *)li32);
        for (int j0 = 0; j0 < gmax; j0 += BLK_1P) {
            const int nb = gmax - j0 < BLK_1P ? gmax - j0 : BLK_1P;
            __m256 t[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                const int j = j0 + 2 * i, e = j0 + nb - 1;
                if (r0 == 0) { /* 2 keys and values pfk keys ahead */
                    const int64_t ahead = (int64_t)j + pfk;
                    pf_bytes_1p(k, ahead * ks * esz, (int64_t)2 * ks * esz);
                    pf_bytes_1p(v, ahead * vs * esz, (int64_t)2 * vs * esz);
                }
                if (2 * i < nb) {
                    /* a key past nb repeats the last one (then masked) */
                    t[i] = qk_tile_1p(q0, q1, q2, q3, D, k, (int64_t)j * ks,
                                      (int64_t)(j + 1 < e ? j + 1 : e) * ks, dt);
                    const __m256i ok =
                        _mm256_cmpgt_epi32(limv, _mm256_add_epi32(jlane, _mm256_set1_epi32(j)));
                    t[i] = _mm256_blendv_ps(ninf, t[i], _mm256_castsi256_ps(ok));
                } else {
                    t[i] = ninf;
                }
            }
            /* online softmax over the block */
            const __m256 mn = _mm256_max_ps(
                mv, max2(_mm256_max_ps(_mm256_max_ps(t[0], t[1]), _mm256_max_ps(t[2], t[3]))));
            /* a row with no key yet keeps m = -inf: subtract 0 so p = 0, not NaN */
            const __m256 mu =
                _mm256_blendv_ps(mn, _mm256_setzero_ps(), _mm256_cmp_ps(mn, ninf, _CMP_EQ_OQ));
            const __m256 alpha = exp_avx2(_mm256_sub_ps(mv, mu));
            mv = mn;
            __attribute__((aligned(32))) float pb[4 * BLK_1P], ab[8];
            __m256 ps = _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                const __m256 p = exp_avx2(_mm256_sub_ps(t[i], mu));
                ps = _mm256_add_ps(ps, p);
                _mm256_store_ps(pb + 8 * i, _mm256_permutevar8x32_ps(p, tr));
            }
            lv = _mm256_fmadd_ps(lv, alpha, ps);
            _mm256_store_ps(ab, alpha);
            const float al[4] = {ab[0], ab[2], ab[4], ab[6]};
            const char *vp = (const char *)v + (int64_t)j0 * vs * esz;
            int c0 = 0;
            for (; c0 + 16 <= Dv; c0 += 16)
                pv_pass_1p(acc0, acc1, acc2, acc3, nr, c0, al, pb, vp, vs, nb, dt, 0, 16);
            if (c0 < Dv)
                pv_pass_1p(acc0, acc1, acc2, acc3, nr, c0, al, pb, vp, vs, nb, dt, 1, Dv - c0);
        }
        _mm256_storeu_ps(mi, mv);
        _mm256_storeu_ps(li, sum2(lv));
        for (int r = 0; r < nr; r++)
            m[r0 + r] = mi[2 * r], l[r0 + r] = li[2 * r];
    }
}

static void attend_avx2(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                        int64_t vs, int Dv, int dt, int n, const int *lim, float *m, float *l,
                        float *acc, float *s) {
    (void)n;
    if (dt == ATTN__KV_F16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F16, lim, m, l, acc, s);
    else if (dt == ATTN__KV_BF16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_BF16, lim, m, l, acc, s);
    else
        attend_f32_1p(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F32, lim, m, l, acc);
}

void attn__decode_init_avx2(attn_decode_kernels *k) {
    k->name = "avx2";
    k->attend = attend_avx2;
}
