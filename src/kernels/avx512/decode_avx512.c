/* AVX-512 decode kernel (kernels/decode.h). One pass over the keys in
 * blocks of 16, query rows in groups of 4; a block's scores never leave
 * the registers between the two products:
 *  - scores: 4 tiles of 4 keys x 4 rows; per 16-wide chunk of D, 4 query
 *    chunks and 1 key chunk (converted in registers: vcvtph2ps for F16, a
 *    16-bit shift for BF16) feed 4 of the tile's 16 accumulators; a
 *    transpose-and-add tree reduces the 16 into one register, lane
 *    4*row + key;
 *  - online softmax per block on those 4 registers (the row's 4 lanes of
 *    each hold its running max and sum);
 *  - P V: the probabilities go to a 256-byte buffer [key][row] that the
 *    FMAs broadcast from; 4 rows x 64 value columns of the accumulator stay
 *    in 16 registers while the block's 16 keys are added (64-column passes
 *    over Dv).
 * The main loops use unmasked loads only (GCC turned masked ones into
 * spills); a D or Dv that is not a multiple of 16 (64 for the P V pass)
 * takes a masked tail. Software prefetch, spread over the block (each
 * 4-key tile asks for the 4 keys and values PF_BYTES ahead in each
 * stream), keeps memory busy: the loops have too few independent loads to
 * hide its latency by themselves, the hardware prefetcher alone fell far
 * behind, and one burst of a whole block's lines at once did worse than
 * the same lines spread out (docs/PERFORMANCE.md). */
#include "kernels/arch.h"
#include "kernels/avx512/vmath_avx512.h"

#include <math.h>

#define BLK 16 /* keys per block */
/* Bytes ahead of each stream (keys, values) that software prefetch runs:
 * a 4 KiB page of each, whatever the storage type (by measurement: 2 KiB
 * and 6 KiB were no better, 8 KiB worse, docs/PERFORMANCE.md). */
#define PF_BYTES 4096
#ifndef PF_HINT
#define PF_HINT _MM_HINT_NTA
#endif

ATTN_INLINE __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* 16 elements of a K or V row as float32 (element i of row p). */
ATTN_INLINE __m512 ldc(const void *p, int64_t i, int dt) {
    if (dt == ATTN__KV_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    if (dt == ATTN__KV_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i))),
            16));
    return _mm512_loadu_ps((const float *)p + i);
}
/* The same, the lanes of mk only (others 0). */
ATTN_INLINE __m512 ldc_m(const void *p, int64_t i, __mmask16 mk, int dt) {
    if (dt == ATTN__KV_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + i));
    if (dt == ATTN__KV_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + i)), 16));
    return _mm512_maskz_loadu_ps(mk, (const float *)p + i);
}

/* Prefetch `bytes` at base + off into L1 (non-temporal: nothing is read
 * twice). */
ATTN_INLINE void pf_bytes(const void *base, int64_t off, int64_t bytes) {
    /* the address may lie past the run (often the next run), or past the
     * pool (a prefetch never faults): integer arithmetic, not a pointer
     * beyond its object */
    const uintptr_t a = (uintptr_t)base + (uintptr_t)off;
    for (int64_t o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)(a + (uintptr_t)o), PF_HINT);
}

/* One vector of the 16 lane sums: lane i = sum of v[i]'s lanes. */
ATTN_INLINE __m512 hsum16(__m512 v[16]) {
    __m512 w[8], x[4], y[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
        w[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* per 128-bit lane: partial sums of v[4i .. 4i+3] */
        x[i] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(w[2 * i], w[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* 128-bit lane pairs summed */
        y[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Scores of 4 keys (k0..k3, element offsets into k) x 4 query rows: lane
 * 4*row + key of the result. */
ATTN_INLINE __m512 qk_tile(const float *q0, const float *q1, const float *q2, const float *q3,
                           int D, const void *k, int64_t k0, int64_t k1, int64_t k2, int64_t k3,
                           int dt) {
    __m512 a[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_setzero_ps();
    int d = 0;
    /* a[4*row + key] */
#define QK_STEP(LD)                                                                                \
    do {                                                                                           \
        const __m512 x0 = LD(q0 + d), x1 = LD(q1 + d), x2 = LD(q2 + d), x3 = LD(q3 + d);           \
        __m512 kc = KLD(k0);                                                                       \
        a[0] = _mm512_fmadd_ps(x0, kc, a[0]), a[4] = _mm512_fmadd_ps(x1, kc, a[4]);                \
        a[8] = _mm512_fmadd_ps(x2, kc, a[8]), a[12] = _mm512_fmadd_ps(x3, kc, a[12]);              \
        kc = KLD(k1);                                                                              \
        a[1] = _mm512_fmadd_ps(x0, kc, a[1]), a[5] = _mm512_fmadd_ps(x1, kc, a[5]);                \
        a[9] = _mm512_fmadd_ps(x2, kc, a[9]), a[13] = _mm512_fmadd_ps(x3, kc, a[13]);              \
        kc = KLD(k2);                                                                              \
        a[2] = _mm512_fmadd_ps(x0, kc, a[2]), a[6] = _mm512_fmadd_ps(x1, kc, a[6]);                \
        a[10] = _mm512_fmadd_ps(x2, kc, a[10]), a[14] = _mm512_fmadd_ps(x3, kc, a[14]);            \
        kc = KLD(k3);                                                                              \
        a[3] = _mm512_fmadd_ps(x0, kc, a[3]), a[7] = _mm512_fmadd_ps(x1, kc, a[7]);                \
        a[11] = _mm512_fmadd_ps(x2, kc, a[11]), a[15] = _mm512_fmadd_ps(x3, kc, a[15]);            \
    } while (0)
#define QLD(p) _mm512_loadu_ps(p)
#define KLD(o) ldc(k, (o) + d, dt)
    for (; d + 16 <= D; d += 16)
        QK_STEP(QLD);
#undef QLD
#undef KLD
    if (d < D) {
        const __mmask16 mk = tail_mask(D - d);
#define QLD(p) _mm512_maskz_loadu_ps(mk, p)
#define KLD(o) ldc_m(k, (o) + d, mk, dt)
        QK_STEP(QLD);
#undef QLD
#undef KLD
    }
#undef QK_STEP
    return hsum16(a);
}

/* Lanes 4r..4r+3 each get the max (or sum) of the four. */
ATTN_INLINE __m512 max4(__m512 x) {
    x = _mm512_max_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_max_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(1, 0, 3, 2)));
}
ATTN_INLINE __m512 sum4(__m512 x) {
    x = _mm512_add_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_add_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(1, 0, 3, 2)));
}

/* o[r][c] = o[r][c] * alpha[r] + sum_j p[j][r] v_j[c] over nb keys, for
 * the 64 (or, masked, fewer) columns at c0 of 4 accumulator rows. */
ATTN_INLINE void pv_pass(float *acc0, float *acc1, float *acc2, float *acc3, int nr, int c0,
                         const float *alpha, const float *pb, const void *v, int64_t vs, int nb,
                         int dt, int masked, __mmask16 m0, __mmask16 m1, __mmask16 m2,
                         __mmask16 m3) {
    const __m512 al0 = _mm512_set1_ps(alpha[0]), al1 = _mm512_set1_ps(alpha[1]);
    const __m512 al2 = _mm512_set1_ps(alpha[2]), al3 = _mm512_set1_ps(alpha[3]);
#define LD(a, al, c, m)                                                                            \
    _mm512_mul_ps(masked ? _mm512_maskz_loadu_ps(m, (a) + c0 + 16 * (c))                           \
                         : _mm512_loadu_ps((a) + c0 + 16 * (c)),                                   \
                  al)
    __m512 o00 = LD(acc0, al0, 0, m0), o01 = LD(acc0, al0, 1, m1);
    __m512 o02 = LD(acc0, al0, 2, m2), o03 = LD(acc0, al0, 3, m3);
    __m512 o10 = LD(acc1, al1, 0, m0), o11 = LD(acc1, al1, 1, m1);
    __m512 o12 = LD(acc1, al1, 2, m2), o13 = LD(acc1, al1, 3, m3);
    __m512 o20 = LD(acc2, al2, 0, m0), o21 = LD(acc2, al2, 1, m1);
    __m512 o22 = LD(acc2, al2, 2, m2), o23 = LD(acc2, al2, 3, m3);
    __m512 o30 = LD(acc3, al3, 0, m0), o31 = LD(acc3, al3, 1, m1);
    __m512 o32 = LD(acc3, al3, 2, m2), o33 = LD(acc3, al3, 3, m3);
#undef LD
    for (int j = 0; j < nb; j++) {
        const int64_t vb = (int64_t)j * vs + c0;
        /* the key's 4 value chunks first, then one broadcast probability at
         * a time (named broadcasts were spilled to the stack by GCC) */
        __m512 v0, v1, v2, v3;
        if (masked) {
            v0 = ldc_m(v, vb, m0, dt), v1 = ldc_m(v, vb + 16, m1, dt);
            v2 = ldc_m(v, vb + 32, m2, dt), v3 = ldc_m(v, vb + 48, m3, dt);
        } else {
            v0 = ldc(v, vb, dt), v1 = ldc(v, vb + 16, dt);
            v2 = ldc(v, vb + 32, dt), v3 = ldc(v, vb + 48, dt);
        }
        const float *pj = pb + 4 * j;
        __m512 p = _mm512_set1_ps(pj[0]);
        o00 = _mm512_fmadd_ps(p, v0, o00), o01 = _mm512_fmadd_ps(p, v1, o01);
        o02 = _mm512_fmadd_ps(p, v2, o02), o03 = _mm512_fmadd_ps(p, v3, o03);
        p = _mm512_set1_ps(pj[1]);
        o10 = _mm512_fmadd_ps(p, v0, o10), o11 = _mm512_fmadd_ps(p, v1, o11);
        o12 = _mm512_fmadd_ps(p, v2, o12), o13 = _mm512_fmadd_ps(p, v3, o13);
        p = _mm512_set1_ps(pj[2]);
        o20 = _mm512_fmadd_ps(p, v0, o20), o21 = _mm512_fmadd_ps(p, v1, o21);
        o22 = _mm512_fmadd_ps(p, v2, o22), o23 = _mm512_fmadd_ps(p, v3, o23);
        p = _mm512_set1_ps(pj[3]);
        o30 = _mm512_fmadd_ps(p, v0, o30), o31 = _mm512_fmadd_ps(p, v1, o31);
        o32 = _mm512_fmadd_ps(p, v2, o32), o33 = _mm512_fmadd_ps(p, v3, o33);
    }
    /* rows beyond nr (aliases of row 0) are not stored; row 0 last */
#define ST(a, c, m, o)                                                                             \
    (masked ? _mm512_mask_storeu_ps((a) + c0 + 16 * (c), m, o)                                     \
            : _mm512_storeu_ps((a) + c0 + 16 * (c), o))
    if (nr > 3)
        ST(acc3, 0, m0, o30), ST(acc3, 1, m1, o31), ST(acc3, 2, m2, o32), ST(acc3, 3, m3, o33);
    if (nr > 2)
        ST(acc2, 0, m0, o20), ST(acc2, 1, m1, o21), ST(acc2, 2, m2, o22), ST(acc2, 3, m3, o23);
    if (nr > 1)
        ST(acc1, 0, m0, o10), ST(acc1, 1, m1, o11), ST(acc1, 2, m2, o12), ST(acc1, 3, m3, o13);
    ST(acc0, 0, m0, o00), ST(acc0, 1, m1, o01), ST(acc0, 2, m2, o02), ST(acc0, 3, m3, o03);
#undef ST
}

ATTN_INLINE void attend_body(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                             int64_t vs, int Dv, int dt, const int *lim, float *m, float *l,
                             float *acc) {
    const int esz = dt == ATTN__KV_F32 ? 4 : 2;
    int nmax = 0;
    for (int r = 0; r < R; r++)
        nmax = lim[r] > nmax ? lim[r] : nmax;
    if (nmax == 0) return;
    const __m512i jlane = _mm512_set_epi32(3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0);
    /* [row][key] lanes of a tile -> [key][row] */
    const __m512i tr = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    for (int r0 = 0; r0 < R; r0 += 4) {
        const int nr = R - r0 < 4 ? R - r0 : 4;
        const float *q0 = q + (int64_t)r0 * D;
        const float *q1 = nr > 1 ? q0 + D : q0, *q2 = nr > 2 ? q0 + 2 * D : q0;
        const float *q3 = nr > 3 ? q0 + 3 * D : q0;
        float *acc0 = acc + (int64_t)r0 * Dv;
        float *acc1 = nr > 1 ? acc0 + Dv : acc0, *acc2 = nr > 2 ? acc0 + 2 * Dv : acc0;
        float *acc3 = nr > 3 ? acc0 + 3 * Dv : acc0;
        int gmax = 0;
        /* running max and sum, row r in lanes 4r..4r+3 (sum split over them);
         * limits per lane (rows beyond nr see nothing) */
        float mi[16], li[16];
        int li32[16];
        for (int r = 0; r < 4; r++)
            for (int jj = 0; jj < 4; jj++) {
                mi[4 * r + jj] = r < nr ? m[r0 + r] : -INFINITY;
                li[4 * r + jj] = r < nr && jj == 0 ? l[r0 + r] : 0.0f;
                li32[4 * r + jj] = r < nr ? lim[r0 + r] : 0;
                if (r < nr && lim[r0 + r] > gmax) gmax = lim[r0 + r];
            }
        __m512 mv = _mm512_loadu_ps(mi), lv = _mm512_loadu_ps(li);
        const __m512i limv = _mm512_loadu_si512(li32);
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        /* keys ahead to prefetch: PF_BYTES of keys, a multiple of 4 */
        int64_t pfk = (int64_t)PF_BYTES / (ks * esz) / 4 * 4;
        if (pfk < 4) pfk = 4;
        for (int j0 = 0; j0 < gmax; j0 += BLK) {
            const int nb = gmax - j0 < BLK ? gmax - j0 : BLK;
            /* scores: 4 tiles of 4 keys (keys past nb repeat the last one) */
            __m512 t[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                const int j = j0 + 4 * i;
                const int e = j0 + nb - 1;
                const int64_t a0 = (int64_t)(j < e ? j : e) * ks;
                const int64_t a1 = (int64_t)(j + 1 < e ? j + 1 : e) * ks;
                const int64_t a2 = (int64_t)(j + 2 < e ? j + 2 : e) * ks;
                const int64_t a3 = (int64_t)(j + 3 < e ? j + 3 : e) * ks;
                if (r0 == 0) { /* 4 keys and values pfk keys ahead (past the run: the
                                * next blocks of the pool, often the next run) */
                    const int64_t ahead = (int64_t)j + pfk;
                    pf_bytes(k, ahead * ks * esz, (int64_t)4 * ks * esz);
                    pf_bytes(v, ahead * vs * esz, (int64_t)4 * vs * esz);
                }
                if (4 * i < nb) {
                    t[i] = qk_tile(q0, q1, q2, q3, D, k, a0, a1, a2, a3, dt);
                    /* keys a row does not see: -inf */
                    const __mmask16 ok = _mm512_cmplt_epi32_mask(
                        _mm512_add_epi32(jlane, _mm512_set1_epi32(j)), limv);
                    t[i] = _mm512_mask_mov_ps(ninf, ok, t[i]);
                } else {
                    t[i] = ninf;
                }
            }
            /* online softmax over the block */
            const __m512 mn = _mm512_max_ps(
                mv, max4(_mm512_max_ps(_mm512_max_ps(t[0], t[1]), _mm512_max_ps(t[2], t[3]))));
            /* a row with no key yet keeps m = -inf: subtract 0 so p = 0, not NaN */
            const __m512 mu = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, ninf, _CMP_EQ_OQ),
                                                 _mm512_setzero_ps());
            const __m512 alpha = exp_avx512(_mm512_sub_ps(mv, mu));
            mv = mn;
            __attribute__((aligned(64))) float pb[4 * BLK], ab[16];
            __m512 ps = _mm512_setzero_ps();
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                const __m512 p = exp_avx512(_mm512_sub_ps(t[i], mu));
                ps = _mm512_add_ps(ps, p);
                _mm512_store_ps(pb + 16 * i, _mm512_permutexvar_ps(tr, p));
            }
            lv = _mm512_fmadd_ps(lv, alpha, ps);
            _mm512_store_ps(ab, alpha);
            const float al[4] = {ab[0], ab[4], ab[8], ab[12]};
            const char *vp = (const char *)v + (int64_t)j0 * vs * esz;
            int c0 = 0;
            for (; c0 + 64 <= Dv; c0 += 64)
                pv_pass(acc0, acc1, acc2, acc3, nr, c0, al, pb, vp, vs, nb, dt, 0, 0, 0, 0, 0);
            if (c0 < Dv)
                pv_pass(acc0, acc1, acc2, acc3, nr, c0, al, pb, vp, vs, nb, dt, 1,
                        tail_mask(Dv - c0), c0 + 16 < Dv ? tail_mask(Dv - c0 - 16) : 0,
                        c0 + 32 < Dv ? tail_mask(Dv - c0 - 32) : 0,
                        c0 + 48 < Dv ? tail_mask(Dv - c0 - 48) : 0);
        }
        _mm512_storeu_ps(mi, mv);
        _mm512_storeu_ps(li, sum4(lv));
        for (int r = 0; r < nr; r++)
            m[r0 + r] = mi[4 * r], l[r0 + r] = li[4 * r];
    }
}

static void attend_avx512(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                          int64_t vs, int Dv, int dt, int n, const int *lim, float *m, float *l,
                          float *acc, float *s) {
    (void)n, (void)s;
    if (dt == ATTN__KV_F16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F16, lim, m, l, acc);
    else if (dt == ATTN__KV_BF16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_BF16, lim, m, l, acc);
    else
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F32, lim, m, l, acc);
}

void attn__decode_init_avx512(attn_decode_kernels *k) {
    k->name = "avx512";
    k->attend = attend_avx512;
}
