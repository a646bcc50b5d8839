/* LayerNorm and GELU. */
#include "kernels/arch.h"
#include "nn/nn.h"

#include <math.h>

void attn__layernorm_forward(const float *x, int64_t ldx, int64_t M, int64_t N, const float *gamma,
                             const float *beta, float eps, float *y, int64_t ldy, float *mean,
                             float *rstd) {
    for (int64_t i = 0; i < M; i++) {
        const float *xr = x + i * ldx;
        float *yr = y + i * ldy;
        /* two passes in double: the mean first, then the centred variance
         * (omp simd: the sums in vector lanes, still in double) */
        double mu = 0.0, var = 0.0;
#pragma omp simd reduction(+ : mu)
        for (int64_t c = 0; c < N; c++)
            mu += xr[c];
        mu /= (double)N;
#pragma omp simd reduction(+ : var)
        for (int64_t c = 0; c < N; c++)
            var += ((double)xr[c] - mu) * ((double)xr[c] - mu);
        var /= (double)N;
        float rs = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mu;
        if (gamma && beta) {
#pragma omp simd
            for (int64_t c = 0; c < N; c++)
                yr[c] = (xr[c] - m) * rs * gamma[c] + beta[c];
        } else {
            for (int64_t c = 0; c < N; c++) {
                float v = (xr[c] - m) * rs;
                yr[c] = v * (gamma ? gamma[c] : 1.0f) + (beta ? beta[c] : 0.0f);
            }
        }
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = rs;
    }
}

/* Exact GELU with the vectorised erf of kernels/nn_kernels.h (libm's
 * erff, one call per element, was a sixth of a BERT forward). */
void attn__gelu_forward(float *x, int64_t n) {
    attn__nn_kernels()->gelu(x, n);
}

/* Backward of LayerNorm with the forward's saved mean and rstd. With
 * xhat = (x - mean) * rstd and g = dy * gamma:
 *   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
 *   dgamma += sum_rows dy * xhat,  dbeta += sum_rows dy
 * dgamma / dbeta are accumulated (zero them first); either may be NULL. */
void attn__layernorm_backward(const float *x, int64_t ldx, int64_t M, int64_t N, const float *gamma,
                              const float *mean, const float *rstd, const float *dy, int64_t lddy,
                              float *dx, int64_t lddx, float *dgamma, float *dbeta) {
    for (int64_t i = 0; i < M; i++) {
        const float *xr = x + i * ldx, *gr = dy + i * lddy;
        float *dr = dx + i * lddx;
        float m = mean[i], rs = rstd[i];
        double sg = 0.0, sgx = 0.0;
        if (gamma && !dgamma && !dbeta) { /* the training path: sums in lanes */
#pragma omp simd reduction(+ : sg, sgx)
            for (int64_t c = 0; c < N; c++) {
                float xh = (xr[c] - m) * rs, g = gr[c] * gamma[c];
                sg += g;
                sgx += (double)g * xh;
            }
            float mg = (float)(sg / (double)N), mgx = (float)(sgx / (double)N);
#pragma omp simd
            for (int64_t c = 0; c < N; c++) {
                float xh = (xr[c] - m) * rs, g = gr[c] * gamma[c];
                dr[c] = rs * (g - mg - xh * mgx);
            }
            continue;
        }
        for (int64_t c = 0; c < N; c++) {
            float xh = (xr[c] - m) * rs;
            float g = gr[c] * (gamma ? gamma[c] : 1.0f);
            sg += g;
            sgx += (double)g * xh;
            if (dgamma) dgamma[c] += gr[c] * xh;
            if (dbeta) dbeta[c] += gr[c];
        }
        float mg = (float)(sg / (double)N), mgx = (float)(sgx / (double)N);
        for (int64_t c = 0; c < N; c++) {
            float xh = (xr[c] - m) * rs;
            float g = gr[c] * (gamma ? gamma[c] : 1.0f);
            dr[c] = rs * (g - mg - xh * mgx);
        }
    }
}

/* Backward of exact GELU: d/dx [x Phi(x)] = Phi(x) + x phi(x). x is the
 * forward's input; dx = dy * gelu'(x), in place over dy allowed. The same
 * erf as the forward (kernels/nn_kernels.h). */
void attn__gelu_backward(const float *x, const float *dy, float *dx, int64_t n) {
    attn__nn_kernels()->gelu_bwd(x, dy, dx, n);
}

/* GELU, tanh form (kernels/nn_kernels.h: evaluated as x sigmoid(2u), the
 * same function without the cancellation of 1 + tanh(u) at negative x;
 * vectorised, since libm's tanhf was most of a GPT layer's time). */
void attn__gelu_tanh_forward(float *x, int64_t n) {
    attn__nn_kernels()->gelu_tanh(x, n);
}

void attn__gelu_tanh_backward(const float *x, const float *dy, float *dx, int64_t n) {
    attn__nn_kernels()->gelu_tanh_bwd(x, dy, dx, n);
}
