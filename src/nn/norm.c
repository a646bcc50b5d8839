/* LayerNorm and GELU. */
#include "nn/nn.h"

#include <math.h>

void attn__layernorm_forward(const float *x, int64_t ldx, int64_t M, int64_t N,
                             const float *gamma, const float *beta, float eps, float *y,
                             int64_t ldy, float *mean, float *rstd) {
    for (int64_t i = 0; i < M; i++) {
        const float *xr = x + i * ldx;
        float *yr = y + i * ldy;
        /* two passes in double: the mean first, then the centred variance */
        double mu = 0.0, var = 0.0;
        for (int64_t c = 0; c < N; c++) mu += xr[c];
        mu /= (double)N;
        for (int64_t c = 0; c < N; c++) var += ((double)xr[c] - mu) * ((double)xr[c] - mu);
        var /= (double)N;
        float rs = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mu;
        for (int64_t c = 0; c < N; c++) {
            float v = (xr[c] - m) * rs;
            yr[c] = v * (gamma ? gamma[c] : 1.0f) + (beta ? beta[c] : 0.0f);
        }
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = rs;
    }
}

void attn__gelu_forward(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}
