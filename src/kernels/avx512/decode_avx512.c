/* AVX-512 decode kernel (kernels/decode.h). Two phases per call (a run of
 * keys adjacent in the pool), each streaming one array in address order:
 *  - scores: tiles of 4 keys x 4 query rows; each key's row is read whole
 *    (16-wide chunks converted in registers: vcvtph2ps for F16, a 16-bit
 *    shift for BF16) into 4 of the tile's 16 accumulators, the next key
 *    after it; a transpose-and-add tree reduces the 16 into one register,
 *    lane 4*row + key. Every group of 4 rows runs on the tile while it is
 *    in L1 (the K row is fetched once); the scores of the run go to the
 *    scratch s, a running max per row in registers;
 *  - softmax over the run: one max, one alpha per row, p = exp(s - m')
 *    written back to s as [group][key][row];
 *  - P V: blocks of 16 keys; per pair of rows, 2 x 128 accumulator columns
 *    in 16 registers while each value row is read whole, one broadcast
 *    probability per row and key (the later pairs find the block in L1).
 * Why this order (docs/PERFORMANCE.md, decode section): memory reads that
 * run in address order, one array at a time, let the hardware prefetchers
 * and the software prefetch below keep DRAM busy while the FMAs run; the
 * earlier kernel (K and V of 16 keys interleaved per block, each 4-key
 * tile reading 4 rows in parallel, P V in half rows, prefetches in bursts
 * of a tile's lines) overlapped little of the memory time with its
 * compute. Software prefetch: one line per line loaded, PF_BYTES ahead in
 * the stream (the K run, then the V run; nothing past the run), issued
 * from inside the loops that load, so prefetches are spread evenly among
 * the FMAs.
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

/* Bytes ahead of the loads that software prefetch runs (in the stream
 * K run -> V run). 8 KiB: 2, 4 and 8 KiB measured within
 * a few % in fp32, 8 KiB best in fp16/bf16 (docs/PERFORMANCE.md). */
#define PF_BYTES 8192
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
                           int D, const void *k, const int64_t ko[4], int dt, int pf,
                           uintptr_t pfb, int64_t ks) {
    const int64_t esz = dt == ATTN__KV_F32 ? 4 : 2;
    __m512 a[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int u = 0; u < 4; u++) { /* a[4*row + u] */
        int d = 0;
        for (; d + 16 <= D; d += 16) {
            if (pf && (esz == 4 || (d & 31) == 0))
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

/* Lanes 4r..4r+3 each get the max (or sum) of the four. */
ATTN_INLINE __m512 max4(__m512 x) {
    x = _mm512_max_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_max_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(1, 0, 3, 2)));
}
ATTN_INLINE __m512 sum4(__m512 x) {
    x = _mm512_add_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_add_ps(x, _mm512_shuffle_ps(x, x, _MM_SHUFFLE(1, 0, 3, 2)));
}

/* o[c] = o[c]*alpha + sum_j p[4j] v_j[c] for one or (two) two rows a, b
 * and the nc 16-column chunks at c0 (the last masked by mt): each key's
 * 128 (or fewer) columns read at once. pf: prefetch one line per 64 bytes
 * of values read, at pfb + (byte offset from v). */
ATTN_INLINE void pv_rows(float *acca, float *accb, int two, int c0, float ala, float alb,
                         const float *pa, const float *pq, const void *v, int64_t vs, int nb,
                         int dt, int nc, __mmask16 mt, int pf, uintptr_t pfb) {
    const int64_t esz = dt == ATTN__KV_F32 ? 4 : 2;
    __m512 oa[8], ob[8];
    const __m512 aa = _mm512_set1_ps(ala), ab = _mm512_set1_ps(alb);
#pragma GCC unroll 8
    for (int c = 0; c < 8; c++) {
        oa[c] = ob[c] = _mm512_setzero_ps(); /* the chunks past nc: never used */
        if (c < nc) {
            const __mmask16 mk = c == nc - 1 ? mt : (__mmask16)0xffff;
            oa[c] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, acca + c0 + 16 * c), aa);
            if (two) ob[c] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, accb + c0 + 16 * c), ab);
        }
    }
    for (int j = 0; j < nb; j++) {
        const int64_t vb = (int64_t)j * vs + c0;
        const __m512 p = _mm512_set1_ps(pa[4 * j]), pb = _mm512_set1_ps(pq[4 * j]);
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++)
            if (c < nc) {
                if (pf && (esz == 4 || (c & 1) == 0))
                    _mm_prefetch((const char *)(pfb + (uintptr_t)((vb + 16 * c) * esz)), PF_HINT);
                const __m512 x = c < nc - 1 || mt == (__mmask16)0xffff
                                     ? ldc(v, vb + 16 * c, dt)
                                     : ldc_m(v, vb + 16 * c, mt, dt);
                oa[c] = _mm512_fmadd_ps(p, x, oa[c]);
                if (two) ob[c] = _mm512_fmadd_ps(pb, x, ob[c]);
            }
    }
#pragma GCC unroll 8
    for (int c = 0; c < 8; c++)
        if (c < nc) {
            const __mmask16 mk = c == nc - 1 ? mt : (__mmask16)0xffff;
            if (two) _mm512_mask_storeu_ps(accb + c0 + 16 * c, mk, ob[c]);
            _mm512_mask_storeu_ps(acca + c0 + 16 * c, mk, oa[c]);
        }
}

/* P V of a block of nb keys (values at vp) for every row; alpha[r] scales
 * row r's accumulator first. Pair 0 prefetches (pfb: the prefetch address
 * of vp's first byte). */
ATTN_INLINE void pv_block(float *acc, int R, int Dv, const float *alpha, const float *s,
                          int64_t gs, int j0, const char *vp, int64_t vs, int nb, int dt,
                          uintptr_t pfb) {
    for (int c0 = 0; c0 < Dv; c0 += 128) {
        const int w = Dv - c0 < 128 ? Dv - c0 : 128, nc = (w + 15) / 16;
        const __mmask16 mt = tail_mask(w - 16 * (nc - 1));
        for (int r = 0; r < R; r += 2) {
            /* rows r, r+1: group r/4, lanes r%4 of the [key][4] probabilities */
            const float *pa = s + (r / 4) * gs + 4 * j0 + r % 4;
            float *acca = acc + (int64_t)r * Dv, *accb = acca + Dv;
            const int two = r + 1 < R;
            if (nc == 8 && mt == (__mmask16)0xffff) { /* the common case, unmasked */
                if (r == 0 && two)
                    pv_rows(acca, accb, 1, c0, alpha[r], alpha[r + 1], pa, pa + 1, vp, vs, nb, dt,
                            8, 0xffff, 1, pfb);
                else if (two)
                    pv_rows(acca, accb, 1, c0, alpha[r], alpha[r + 1], pa, pa + 1, vp, vs, nb, dt,
                            8, 0xffff, 0, 0);
                else
                    pv_rows(acca, acca, 0, c0, alpha[r], 0.0f, pa, pa, vp, vs, nb, dt, 8, 0xffff,
                            r == 0, pfb);
            } else {
                pv_rows(acca, two ? accb : acca, two, c0, alpha[r], two ? alpha[r + 1] : 0.0f, pa,
                        two ? pa + 1 : pa, vp, vs, nb, dt, nc, mt, r == 0, pfb);
            }
        }
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
    /* the prefetch stream: the K run's bytes [0, kb), then the V run's; a
     * tile or block whose lines ahead ([off, off + span)) are not all in
     * one of the two prefetches its own lines (here): nothing outside the
     * run is touched (a prefetch does not fault, but one to an unmapped
     * page costs a page walk; the bench of the kernel alone showed it) */
    const int64_t kb = (int64_t)n * ks * esz, vbytes = (int64_t)n * vs * esz;
    const uintptr_t ka = (uintptr_t)k, va = (uintptr_t)v;
#define PF_AT(off, span, here) /* stream byte offset -> address */                               \
    ((off) + (span) <= kb ? ka + (uintptr_t)(off)                                                 \
     : (off) >= kb && (off) + (span) <= kb + vbytes ? va + (uintptr_t)((off) - kb)                 \
                                                    : (here))
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
        const int64_t off = (int64_t)j * ks * esz + PF_BYTES;
        /* prefetch base so that base + (offset from key j) = its address */
        const uintptr_t pfb = /* + the offset from key j's row */
            PF_AT(off, 4 * ks * esz, ka + (uintptr_t)((int64_t)j * ks * esz));
        const __m512i jv = _mm512_add_epi32(jlane, _mm512_set1_epi32(j));
        for (int g = 0; g < ng; g++) {
            __m512 t = g == 0 ? qk_tile(qg[0][0], qg[0][1], qg[0][2], qg[0][3], D, k, ko, dt, 1,
                                        pfb, ks)
                              : qk_tile(qg[g][0], qg[g][1], qg[g][2], qg[g][3], D, k, ko, dt, 0,
                                        0, ks);
            /* keys a row does not see: -inf */
            t = _mm512_mask_mov_ps(ninf, _mm512_cmplt_epi32_mask(jv, limv[g]), t);
            mx[g] = _mm512_max_ps(mx[g], t);
            _mm512_storeu_ps(s + g * gs + 16 * i, t);
        }
    }
    /* softmax over the run: m' = max(m, max_j s_j), alpha = exp(m - m'),
     * p_j = exp(s_j - m') stored [key][row], l' = l alpha + sum_j p_j */
    __attribute__((aligned(64))) float alpha[16];
    for (int g = 0; g < ng; g++) {
        const __m512 mn = _mm512_max_ps(mv[g], max4(mx[g]));
        /* a row with no key yet keeps m = -inf: subtract 0 so p = 0, not NaN */
        const __m512 mu = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, ninf, _CMP_EQ_OQ),
                                             _mm512_setzero_ps());
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
                 PF_AT(kb + vo + PF_BYTES, (int64_t)nb * vs * esz, va + (uintptr_t)vo));
    }
#undef PF_AT
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
