/* AVX-512 decode kernel (kernels/decode.h). Query rows go in blocks of 4,
 * keys in blocks of 4: per 16-wide chunk of D, 4 query chunks and 4 key
 * chunks (converted in registers: vcvtph2ps for F16, a 16-bit shift for
 * BF16) feed 16 accumulators, which transpose-and-add trees reduce to the
 * 16 scores. The
 * softmax step runs 16 keys at a time; P V keeps 4 rows x 64 value columns
 * in 16 registers while it walks the keys (64-column passes over Dv), with
 * no prefetch or branch in its loop (either made GCC spill the broadcast
 * probabilities): the score loop has already brought the values to L2. Row
 * and column tails are masked, so any D, Dv and R <= 16 are taken. */
#include "kernels/arch.h"
#include "kernels/avx512/vmath_avx512.h"

#include <math.h>

ATTN_INLINE __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* 16 (or fewer, masked) elements of a K or V row as float32. */
ATTN_INLINE __m512 ldc(const void *p, int64_t i, __mmask16 mk, int dt) {
    if (dt == ATTN__KV_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + i));
    if (dt == ATTN__KV_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + i)), 16));
    return _mm512_maskz_loadu_ps(mk, (const float *)p + i);
}

/* Keys ahead that rows are prefetched: the loops do ~100 cycles of work per
 * key, too few independent loads to hide memory latency by themselves. */
#define PF 32

/* Prefetch the row at element i (W elements of dt) into L1 (or L2). */
ATTN_INLINE void pf_row(const void *p, int64_t i, int W, int dt) {
    const char *c = (const char *)p + i * (dt == ATTN__KV_F32 ? 4 : 2);
    const int bytes = W * (dt == ATTN__KV_F32 ? 4 : 2);
    for (int o = 0; o < bytes; o += 64)
        _mm_prefetch(c + o, _MM_HINT_T0);
}
ATTN_INLINE void pf_row_l2(const void *p, int64_t i, int W, int dt) {
    const char *c = (const char *)p + i * (dt == ATTN__KV_F32 ? 4 : 2);
    const int bytes = W * (dt == ATTN__KV_F32 ? 4 : 2);
    for (int o = 0; o < bytes; o += 64)
        _mm_prefetch(c + o, _MM_HINT_T1);
}

/* Lane sums of a, b, c, d into lanes 0..3 of the result. */
ATTN_INLINE __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 y = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    y = _mm512_add_ps(y, _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(1, 0, 3, 2)));
    y = _mm512_add_ps(y, _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(y);
}

ATTN_INLINE void attend_body(const float *q, int R, int D, const void *k, int64_t ks,
                             const void *v, int64_t vs, int Dv, int dt, int n, const int *lim,
                             float *m, float *l, float *acc, float *s) {
    int nmax = 0;
    for (int r = 0; r < R; r++)
        nmax = lim[r] > nmax ? lim[r] : nmax;
    if (nmax == 0) return;
    /* scores, 4 rows x 4 keys at a time: per 16-wide chunk of D, 4 query
     * and 4 key loads feed 16 FMAs (a short block of rows or keys repeats
     * its first one, never stored) */
    for (int r0 = 0; r0 < R; r0 += 4) {
        const int nr = R - r0 < 4 ? R - r0 : 4;
        const float *q0 = q + (int64_t)r0 * D;
        const float *q1 = nr > 1 ? q0 + D : q0, *q2 = nr > 2 ? q0 + 2 * D : q0;
        const float *q3 = nr > 3 ? q0 + 3 * D : q0;
        for (int j = 0; j < nmax; j += 4) {
            const int nj = nmax - j < 4 ? nmax - j : 4;
            const int64_t k0 = (int64_t)j * ks, k1 = nj > 1 ? k0 + ks : k0;
            const int64_t k2 = nj > 2 ? k0 + 2 * ks : k0, k3 = nj > 3 ? k0 + 3 * ks : k0;
            if (r0 == 0) /* keys ahead to L1; these keys' values to L2 for the P V pass,
                          * and the keys after this run (the next run when the pool holds
                          * it next) to L2 */
                for (int i = 0; i < 4; i++) {
                    pf_row(k, (int64_t)(j + PF + i) * ks, D, dt);
                    pf_row_l2(v, (int64_t)(j + i) * vs, Dv, dt);
                    pf_row_l2(k, (int64_t)(n + j + i) * ks, D, dt);
                }
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (int d = 0; d < D; d += 16) {
                const __mmask16 mk = tail_mask(D - d);
                const __m512 x0 = _mm512_maskz_loadu_ps(mk, q0 + d);
                const __m512 x1 = _mm512_maskz_loadu_ps(mk, q1 + d);
                const __m512 x2 = _mm512_maskz_loadu_ps(mk, q2 + d);
                const __m512 x3 = _mm512_maskz_loadu_ps(mk, q3 + d);
                __m512 kc = ldc(k, k0 + d, mk, dt);
                a00 = _mm512_fmadd_ps(x0, kc, a00), a01 = _mm512_fmadd_ps(x1, kc, a01);
                a02 = _mm512_fmadd_ps(x2, kc, a02), a03 = _mm512_fmadd_ps(x3, kc, a03);
                kc = ldc(k, k1 + d, mk, dt);
                a10 = _mm512_fmadd_ps(x0, kc, a10), a11 = _mm512_fmadd_ps(x1, kc, a11);
                a12 = _mm512_fmadd_ps(x2, kc, a12), a13 = _mm512_fmadd_ps(x3, kc, a13);
                kc = ldc(k, k2 + d, mk, dt);
                a20 = _mm512_fmadd_ps(x0, kc, a20), a21 = _mm512_fmadd_ps(x1, kc, a21);
                a22 = _mm512_fmadd_ps(x2, kc, a22), a23 = _mm512_fmadd_ps(x3, kc, a23);
                kc = ldc(k, k3 + d, mk, dt);
                a30 = _mm512_fmadd_ps(x0, kc, a30), a31 = _mm512_fmadd_ps(x1, kc, a31);
                a32 = _mm512_fmadd_ps(x2, kc, a32), a33 = _mm512_fmadd_ps(x3, kc, a33);
            }
            /* [key][row] -> [row][key]: one 4-key store per row */
            __m128 t0 = sum4(a00, a01, a02, a03), t1 = sum4(a10, a11, a12, a13);
            __m128 t2 = sum4(a20, a21, a22, a23), t3 = sum4(a30, a31, a32, a33);
            _MM_TRANSPOSE4_PS(t0, t1, t2, t3);
            const __mmask8 mj = (__mmask8)((1u << nj) - 1);
            float *sr = s + (int64_t)r0 * n + j;
            _mm_mask_storeu_ps(sr, mj, t0);
            if (nr > 1) _mm_mask_storeu_ps(sr + n, mj, t1);
            if (nr > 2) _mm_mask_storeu_ps(sr + 2 * n, mj, t2);
            if (nr > 3) _mm_mask_storeu_ps(sr + 3 * n, mj, t3);
        }
    }
    /* online softmax per row: s <- p (0 beyond lim), acc *= alpha */
    float alpha[ATTN__DEC_MAXR];
    for (int r = 0; r < R; r++) {
        float *sr = s + (int64_t)r * n;
        const int lr = lim[r];
        alpha[r] = 1.0f;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        int nan = 0;
        for (int j = 0; j < lr; j += 16) {
            __m512 x = _mm512_maskz_loadu_ps(tail_mask(lr - j), sr + j);
            nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) != 0;
            mx = _mm512_mask_max_ps(mx, tail_mask(lr - j), mx, x);
        }
        float mxs = nan ? NAN : _mm512_reduce_max_ps(mx);
        if (mxs == -INFINITY || lr == 0) { /* no key for this row: p = 0 */
            for (int j = 0; j < nmax; j++)
                sr[j] = 0.0f;
            continue;
        }
        float mn = m[r] > mxs ? m[r] : mxs;
        if (nan) mn = NAN;
        alpha[r] = m[r] == -INFINITY ? 0.0f : expf(m[r] - mn);
        __m512 vm = _mm512_set1_ps(mn), sum = _mm512_setzero_ps();
        for (int j = 0; j < nmax; j += 16) {
            __mmask16 mk = tail_mask(nmax - j);
            __mmask16 live = j < lr ? tail_mask(lr - j) : 0;
            __m512 x = _mm512_maskz_loadu_ps(mk, sr + j);
            __m512 p = _mm512_maskz_mov_ps(live, exp_avx512(_mm512_sub_ps(x, vm)));
            sum = _mm512_add_ps(sum, p);
            _mm512_mask_storeu_ps(sr + j, mk, p);
        }
        m[r] = mn;
        l[r] = l[r] * alpha[r] + _mm512_reduce_add_ps(sum);
    }
    /* acc = acc*alpha + P V: 4 rows x 64 columns in 16 registers per pass */
    for (int r0 = 0; r0 < R; r0 += 4) {
        const int nr = R - r0 < 4 ? R - r0 : 4;
        const float *s0 = s + (int64_t)r0 * n;
        const float *s1 = nr > 1 ? s0 + n : s0, *s2 = nr > 2 ? s0 + 2 * n : s0;
        const float *s3 = nr > 3 ? s0 + 3 * n : s0;
        float *acc0 = acc + (int64_t)r0 * Dv;
        float *acc1 = nr > 1 ? acc0 + Dv : acc0, *acc2 = nr > 2 ? acc0 + 2 * Dv : acc0;
        float *acc3 = nr > 3 ? acc0 + 3 * Dv : acc0;
        const __m512 al0 = _mm512_set1_ps(alpha[r0]);
        const __m512 al1 = _mm512_set1_ps(nr > 1 ? alpha[r0 + 1] : 0.0f);
        const __m512 al2 = _mm512_set1_ps(nr > 2 ? alpha[r0 + 2] : 0.0f);
        const __m512 al3 = _mm512_set1_ps(nr > 3 ? alpha[r0 + 3] : 0.0f);
        for (int c0 = 0; c0 < Dv; c0 += 64) {
            const __mmask16 m0 = tail_mask(Dv - c0);
            const __mmask16 m1 = c0 + 16 < Dv ? tail_mask(Dv - c0 - 16) : 0;
            const __mmask16 m2 = c0 + 32 < Dv ? tail_mask(Dv - c0 - 32) : 0;
            const __mmask16 m3 = c0 + 48 < Dv ? tail_mask(Dv - c0 - 48) : 0;
#define LD(a, al, c, m) _mm512_mul_ps(_mm512_maskz_loadu_ps(m, (a) + c0 + 16 * (c)), al)
            __m512 o00 = LD(acc0, al0, 0, m0), o01 = LD(acc0, al0, 1, m1);
            __m512 o02 = LD(acc0, al0, 2, m2), o03 = LD(acc0, al0, 3, m3);
            __m512 o10 = LD(acc1, al1, 0, m0), o11 = LD(acc1, al1, 1, m1);
            __m512 o12 = LD(acc1, al1, 2, m2), o13 = LD(acc1, al1, 3, m3);
            __m512 o20 = LD(acc2, al2, 0, m0), o21 = LD(acc2, al2, 1, m1);
            __m512 o22 = LD(acc2, al2, 2, m2), o23 = LD(acc2, al2, 3, m3);
            __m512 o30 = LD(acc3, al3, 0, m0), o31 = LD(acc3, al3, 1, m1);
            __m512 o32 = LD(acc3, al3, 2, m2), o33 = LD(acc3, al3, 3, m3);
#undef LD
            for (int j = 0; j < nmax; j++) {
                const int64_t vb = (int64_t)j * vs + c0;
                { /* the 64 columns this pass reads of the value PF keys ahead, to L1
                   * (a fixed count: a loop here made GCC spill) */
                    const char *pv = (const char *)v + (vb + (int64_t)PF * vs) *
                                                           (dt == ATTN__KV_F32 ? 4 : 2);
                    _mm_prefetch(pv, _MM_HINT_T0);
                    _mm_prefetch(pv + 64, _MM_HINT_T0);
                    if (dt == ATTN__KV_F32) {
                        _mm_prefetch(pv + 128, _MM_HINT_T0);
                        _mm_prefetch(pv + 192, _MM_HINT_T0);
                    }
                }
                /* the key's 4 value chunks first, then one broadcast probability
                 * at a time (4 named broadcasts were spilled to the stack by GCC) */
                const __m512 v0 = ldc(v, vb, m0, dt), v1 = ldc(v, vb + 16, m1, dt);
                const __m512 v2 = ldc(v, vb + 32, m2, dt), v3 = ldc(v, vb + 48, m3, dt);
                __m512 pb = _mm512_set1_ps(s0[j]);
                o00 = _mm512_fmadd_ps(pb, v0, o00), o01 = _mm512_fmadd_ps(pb, v1, o01);
                o02 = _mm512_fmadd_ps(pb, v2, o02), o03 = _mm512_fmadd_ps(pb, v3, o03);
                pb = _mm512_set1_ps(s1[j]);
                o10 = _mm512_fmadd_ps(pb, v0, o10), o11 = _mm512_fmadd_ps(pb, v1, o11);
                o12 = _mm512_fmadd_ps(pb, v2, o12), o13 = _mm512_fmadd_ps(pb, v3, o13);
                pb = _mm512_set1_ps(s2[j]);
                o20 = _mm512_fmadd_ps(pb, v0, o20), o21 = _mm512_fmadd_ps(pb, v1, o21);
                o22 = _mm512_fmadd_ps(pb, v2, o22), o23 = _mm512_fmadd_ps(pb, v3, o23);
                pb = _mm512_set1_ps(s3[j]);
                o30 = _mm512_fmadd_ps(pb, v0, o30), o31 = _mm512_fmadd_ps(pb, v1, o31);
                o32 = _mm512_fmadd_ps(pb, v2, o32), o33 = _mm512_fmadd_ps(pb, v3, o33);
            }
            /* rows beyond nr (aliases of row 0) are not stored */
#define ST(a, c, m, o) _mm512_mask_storeu_ps((a) + c0 + 16 * (c), m, o)
            if (nr > 3) ST(acc3, 0, m0, o30), ST(acc3, 1, m1, o31), ST(acc3, 2, m2, o32), ST(acc3, 3, m3, o33);
            if (nr > 2) ST(acc2, 0, m0, o20), ST(acc2, 1, m1, o21), ST(acc2, 2, m2, o22), ST(acc2, 3, m3, o23);
            if (nr > 1) ST(acc1, 0, m0, o10), ST(acc1, 1, m1, o11), ST(acc1, 2, m2, o12), ST(acc1, 3, m3, o13);
            ST(acc0, 0, m0, o00), ST(acc0, 1, m1, o01), ST(acc0, 2, m2, o02), ST(acc0, 3, m3, o03);
#undef ST
        }
    }
}

static void attend_avx512(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                          int64_t vs, int Dv, int dt, int n, const int *lim, float *m, float *l,
                          float *acc, float *s) {
    if (dt == ATTN__KV_F16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F16, n, lim, m, l, acc, s);
    else if (dt == ATTN__KV_BF16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_BF16, n, lim, m, l, acc, s);
    else
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F32, n, lim, m, l, acc, s);
}

void attn__decode_init_avx512(attn_decode_kernels *k) {
    k->name = "avx512";
    k->attend = attend_avx512;
}
