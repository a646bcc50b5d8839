/* AVX-512 decode kernel (kernels/decode.h). Two phases per call (a run of
 * keys adjacent in the pool), each streaming one array in address order:
 *  - scores: tiles of 4 keys x 4 query rows (16-wide chunks converted in
 *    registers: vcvtph2ps for F16, a 16-bit shift for BF16); F32 reads
 *    each key's row whole into 4 of the tile's 16 accumulators, the next
 *    key after it; F16/BF16 read the 4 rows side by side, each query chunk
 *    loaded once for the 4 keys (the loads, not the FMAs, bound the loop
 *    otherwise); a transpose-and-add tree reduces the 16 into one register,
 *    lane 4*row + key. Every group of 4 rows runs on the tile while it is
 *    in L1 (the K row is fetched once); the scores of the run go to the
 *    scratch s, a running max per row in registers;
 *  - softmax over the run: one max, one alpha per row, p = exp(s - m')
 *    written back to s as [group][key][row];
 *  - P V: blocks of 16 keys; per group of 4 rows, passes of 64 columns
 *    with 4 rows x 64 columns of the accumulator in 16 registers, each
 *    value chunk converted once for the 4 rows, one broadcast probability
 *    per row and key (the later passes find the block in L1).
 * Why this order (docs/PERFORMANCE.md, decode section): memory reads that
 * run one array at a time, the keys in address order, let the software
 * prefetch below and the hardware prefetchers keep DRAM busy while the
 * FMAs run; the earlier kernel (K and V of 16 keys interleaved per block,
 * each 4-key tile reading 4 key rows in parallel, prefetches in bursts of
 * a tile's lines) overlapped little of the memory time with its compute.
 * Software prefetch: one line per line read, PF_BYTES ahead in the same
 * array (a prefetch never faults, so past the run is fine), issued from inside the
 * loops that load (per key chunk in the scores; per value row in the first
 * P V pass), so prefetches are spread among the FMAs.
 * The main loops use unmasked loads (masked tails where D or Dv needs
 * them). */
#include "kernels/arch.h"
#include "kernels/avx512/vmath_avx512.h"

#include <math.h>

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

/* Bytes ahead of the loads, in the same array, that software prefetch
 * runs: 8 KiB (4 and 8 KiB within a few % in fp32, 8 KiB best in
 * fp16/bf16; 16 KiB no better; docs/PERFORMANCE.md). Hint T0: NTA
 * measured the same. Another distance, to measure it:
 * cmake -DCMAKE_C_FLAGS=-DPF_BYTES=16384. */
#ifndef PF_BYTES
#define PF_BYTES 8192
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T0
#endif

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

/* Scores of 4 keys (element offsets ko[0..3] into k) x 4 query rows: lane
 * 4*row + key of the result. Keys one after the other, each row whole.
 * pf: prefetch one line per 64 bytes of key read, at pfb + (the byte
 * offset of the chunk from k + ko[0]) (a compile-time constant). */
ATTN_INLINE __m512 qk_tile(const float *q0, const float *q1, const float *q2, const float *q3,
                           int D, const void *k, const int64_t ko[4], int dt, int pf, uintptr_t pfb,
                           int64_t ks) {
    const int64_t esz = dt == ATTN__KV_F32 ? 4 : 2;
    __m512 a[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_setzero_ps();
    if (dt == ATTN__KV_F32) {
        /* F32: one key row after the other (the 4 rows read side by side
         * streamed 3-5 points slower; F32 has time to spare against
         * memory) */
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) { /* a[4*row + u] */
            int d = 0;
            for (; d + 16 <= D; d += 16) {
                if (pf)
                    _mm_prefetch((const char *)(pfb + (uintptr_t)((u * ks + d) * esz)), PF_HINT);
                const __m512 kc = ldc(k, ko[u] + d, dt);
                a[u] = _mm512_fmadd_ps(_mm512_loadu_ps(q0 + d), kc, a[u]);
                a[4 + u] = _mm512_fmadd_ps(_mm512_loadu_ps(q1 + d), kc, a[4 + u]);
                a[8 + u] = _mm512_fmadd_ps(_mm512_loadu_ps(q2 + d), kc, a[8 + u]);
                a[12 + u] = _mm512_fmadd_ps(_mm512_loadu_ps(q3 + d), kc, a[12 + u]);
            }
            if (d < D) {
                const __mmask16 mk = tail_mask(D - d);
                const __m512 kc = ldc_m(k, ko[u] + d, mk, dt);
                a[u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q0 + d), kc, a[u]);
                a[4 + u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q1 + d), kc, a[4 + u]);
                a[8 + u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q2 + d), kc, a[8 + u]);
                a[12 + u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q3 + d), kc, a[12 + u]);
            }
        }
        return hsum16(a);
    }
    /* 16-bit storage: the tile's 4 key rows side by side, each query chunk
     * loaded once per 4 keys (one key at a time, 5 loads fed 4 FMAs and
     * the loop was bound by the load ports: 11.5 -> 10.3 ns per key in
     * cache) */
    const int kp = 4;
    {
        const int u0 = 0;
        int d = 0;
        for (; d + 16 <= D; d += 16) {
            __m512 kc[4];
#pragma GCC unroll 4
            for (int u = 0; u < kp; u++) {
                if (pf && (esz == 4 || (d & 31) == 0))
                    _mm_prefetch((const char *)(pfb + (uintptr_t)(((u0 + u) * ks + d) * esz)),
                                 PF_HINT);
                kc[u] = ldc(k, ko[u0 + u] + d, dt);
            }
            const __m512 x0 = _mm512_loadu_ps(q0 + d);
#pragma GCC unroll 4
            for (int u = 0; u < kp; u++)
                a[u0 + u] = _mm512_fmadd_ps(x0, kc[u], a[u0 + u]);
            const __m512 x1 = _mm512_loadu_ps(q1 + d);
#pragma GCC unroll 4
            for (int u = 0; u < kp; u++)
                a[4 + u0 + u] = _mm512_fmadd_ps(x1, kc[u], a[4 + u0 + u]);
            const __m512 x2 = _mm512_loadu_ps(q2 + d);
#pragma GCC unroll 4
            for (int u = 0; u < kp; u++)
                a[8 + u0 + u] = _mm512_fmadd_ps(x2, kc[u], a[8 + u0 + u]);
            const __m512 x3 = _mm512_loadu_ps(q3 + d);
#pragma GCC unroll 4
            for (int u = 0; u < kp; u++)
                a[12 + u0 + u] = _mm512_fmadd_ps(x3, kc[u], a[12 + u0 + u]);
        }
        if (d < D) {
            const __mmask16 mk = tail_mask(D - d);
#pragma GCC unroll 4
            for (int u = u0; u < u0 + kp; u++) {
                const __m512 kc = ldc_m(k, ko[u] + d, mk, dt);
                a[u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q0 + d), kc, a[u]);
                a[4 + u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q1 + d), kc, a[4 + u]);
                a[8 + u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q2 + d), kc, a[8 + u]);
                a[12 + u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q3 + d), kc, a[12 + u]);
            }
        }
    }
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
 * the 64 (or, masked, fewer) columns at c0 of 4 accumulator rows (rows
 * beyond nr alias row 0 and are not stored); p: [key][4]. Each value
 * chunk is converted once for the 4 rows. pf: prefetch the whole value
 * row of each key (its lines at pfb + the row's byte offset from v), once
 * per row: in the pass at c0 = 0 of the first group. */
ATTN_INLINE void pv_pass(float *acc0, float *acc1, float *acc2, float *acc3, int nr, int c0,
                         const float *alpha, const float *pb, const void *v, int64_t vs, int nb,
                         int dt, int masked, __mmask16 m0, __mmask16 m1, __mmask16 m2, __mmask16 m3,
                         int pf, uintptr_t pfb, int64_t rowb) {
    const int64_t esz = dt == ATTN__KV_F32 ? 4 : 2;
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
        if (pf)
            for (int64_t o = 0; o < rowb; o += 64)
                _mm_prefetch((const char *)(pfb + (uintptr_t)(j * vs * esz + o)), PF_HINT);
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
        for (; c0 + 64 <= Dv; c0 += 64) {
            if (r0 == 0 && c0 == 0)
                pv_pass(a0, a1, a2, a3, nr, c0, al, pb, vp, vs, nb, dt, 0, 0, 0, 0, 0, 1, pfb,
                        rowb);
            else
                pv_pass(a0, a1, a2, a3, nr, c0, al, pb, vp, vs, nb, dt, 0, 0, 0, 0, 0, 0, 0, 0);
        }
        if (c0 < Dv)
            pv_pass(a0, a1, a2, a3, nr, c0, al, pb, vp, vs, nb, dt, 1, tail_mask(Dv - c0),
                    c0 + 16 < Dv ? tail_mask(Dv - c0 - 16) : 0,
                    c0 + 32 < Dv ? tail_mask(Dv - c0 - 32) : 0,
                    c0 + 48 < Dv ? tail_mask(Dv - c0 - 48) : 0, r0 == 0 && c0 == 0, pfb, rowb);
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
    const int ng = (R + 3) / 4, nt = (n + 3) / 4;
    const int64_t gs = 16 * (int64_t)nt; /* floats of s per group of 4 rows */
    const __m512i jlane = _mm512_set_epi32(3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0);
    /* [row][key] lanes of a tile -> [key][row] */
    const __m512i tr = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    /* prefetches run PF_BYTES ahead in each array: past the end of the K
     * run they take the next keys of the pool (the next run's when its
     * blocks are adjacent: a task's next chunk, or the next head), past the
     * V run the next values. (Sending the K run's tail to the V run's head
     * instead measured slower: the address choice per tile cost more than
     * the few lines it saved.) */
    __m512 mv[4], lv[4], mx[4];
    __m512i limv[4];
    const float *qg[4][4];
    for (int g = 0; g < ng; g++) {
        /* running max and sum, row r in lanes 4r..4r+3 (sum split over
         * them); limits per lane (rows beyond R see nothing) */
        float mi[16], li[16];
        int li32[16];
        for (int r = 0; r < 4; r++) {
            const int rr = 4 * g + r;
            qg[g][r] = q + (int64_t)(rr < R ? rr : 4 * g) * D;
            for (int jj = 0; jj < 4; jj++) {
                mi[4 * r + jj] = rr < R ? m[rr] : -INFINITY;
                li[4 * r + jj] = rr < R && jj == 0 ? l[rr] : 0.0f;
                li32[4 * r + jj] = rr < R ? lim[rr] : 0;
            }
        }
        mv[g] = _mm512_loadu_ps(mi), lv[g] = _mm512_loadu_ps(li), mx[g] = ninf;
        limv[g] = _mm512_loadu_si512(li32);
    }
    /* scores (keys past n repeat the last one; masked to -inf) */
    for (int i = 0; i < nt; i++) {
        const int j = 4 * i, e = n - 1;
        const int64_t ko[4] = {(int64_t)j * ks, (int64_t)(j + 1 < e ? j + 1 : e) * ks,
                               (int64_t)(j + 2 < e ? j + 2 : e) * ks,
                               (int64_t)(j + 3 < e ? j + 3 : e) * ks};
        /* + the offset from key j's row: the prefetch address */
        const uintptr_t pfb = (uintptr_t)k + (uintptr_t)((int64_t)j * ks * esz + PF_BYTES);
        const __m512i jv = _mm512_add_epi32(jlane, _mm512_set1_epi32(j));
        for (int g = 0; g < ng; g++) {
            __m512 t =
                g == 0 ? qk_tile(qg[0][0], qg[0][1], qg[0][2], qg[0][3], D, k, ko, dt, 1, pfb, ks)
                       : qk_tile(qg[g][0], qg[g][1], qg[g][2], qg[g][3], D, k, ko, dt, 0, 0, ks);
            /* keys a row does not see: -inf */
            t = _mm512_mask_mov_ps(ninf, _mm512_cmplt_epi32_mask(jv, limv[g]), t);
            mx[g] = _mm512_max_ps(mx[g], t);
            _mm512_storeu_ps(s + g * gs + 16 * i, t);
        }
    }
    /* softmax over the run: m' = max(m, max_j s_j), alpha = exp(m - m'),
     * p_j = exp(s_j - m') stored [key][row], l' = l alpha + sum_j p_j */
    __attribute__((aligned(64))) float alpha[16] = {0};
    for (int g = 0; g < ng; g++) {
        const __m512 mn = _mm512_max_ps(mv[g], max4(mx[g]));
        /* a row with no key yet keeps m = -inf: subtract 0 so p = 0, not NaN */
        const __m512 mu =
            _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
        const __m512 al = exp_avx512(_mm512_sub_ps(mv[g], mu));
        __m512 ps = _mm512_setzero_ps();
        float *sg = s + g * gs;
        for (int i = 0; i < nt; i++) {
            const __m512 p = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(sg + 16 * i), mu));
            ps = _mm512_add_ps(ps, p);
            _mm512_storeu_ps(sg + 16 * i, _mm512_permutexvar_ps(tr, p));
        }
        float mi[16], li[16], ai[16];
        _mm512_storeu_ps(mi, mn);
        _mm512_storeu_ps(li, sum4(_mm512_fmadd_ps(lv[g], al, ps)));
        _mm512_storeu_ps(ai, al);
        for (int r = 0; r < 4 && 4 * g + r < R; r++) {
            m[4 * g + r] = mi[4 * r], l[4 * g + r] = li[4 * r];
            alpha[4 * g + r] = ai[4 * r];
        }
    }
    /* P V, blocks of 16 keys; alpha applied with the first */
    const float one[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int j0 = 0; j0 < n; j0 += 16) {
        const int nb = n - j0 < 16 ? n - j0 : 16;
        const int64_t vo = (int64_t)j0 * vs * esz;
        pv_block(acc, R, Dv, j0 ? one : alpha, s, gs, j0, (const char *)v + vo, vs, nb, dt,
                 (uintptr_t)v + (uintptr_t)(vo + PF_BYTES));
    }
}

static void attend_avx512(const float *q, int R, int D, const void *k, int64_t ks, const void *v,
                          int64_t vs, int Dv, int dt, int n, const int *lim, float *m, float *l,
                          float *acc, float *s) {
    (void)n;
    if (dt == ATTN__KV_F16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F16, lim, m, l, acc, s);
    else if (dt == ATTN__KV_BF16)
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_BF16, lim, m, l, acc, s);
    else
        attend_body(q, R, D, k, ks, v, vs, Dv, ATTN__KV_F32, lim, m, l, acc, s);
}

void attn__decode_init_avx512(attn_decode_kernels *k) {
    k->name = "avx512";
    k->attend = attend_avx512;
}
