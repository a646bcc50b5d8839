/* One descriptor per ISA family: every kernel table (attention forward,
 * backward, nn element-wise) and the geometry the drivers tile with, so a
 * driver never sizes anything by a global constant.
 *
 * A family's init starts from the scalar descriptor and overrides what it
 * does better (BLIS's context init): the scalar kernels take any strip
 * height, so a family may keep any of them. Adding a family is a folder
 * src/kernels/<isa>/ (its kernels, its init, a `cflags` file with its
 * compiler flags) and one line in core/dispatch.c's table. */
#ifndef ATTN_KERNELS_ARCH_H
#define ATTN_KERNELS_ARCH_H

#include <attn/core.h>

#include "kernels/kernels.h"
#include "kernels/decode.h"
#include "kernels/kernels_bwd.h"
#include "kernels/nn_kernels.h"
#include "kernels/feat_kernels.h"

#include <stdint.h>

typedef struct attn__arch {
    const char *name;

    /* Forward: strips of `mr` query rows walk the keys in blocks of `bk`
     * (tiles never cross a multiple of bk). A strip's state is packed
     * queries [D][mr] and an accumulator [Dv][mr]; `mr` must be what the
     * forward kernels accept. They also accept every multiple of `mrq` up
     * to mr (a strip of fewer rows runs at the height rounded up to mrq,
     * [D][R] and [Dv][R], so it costs its own rows, not a full strip's). */
    int mr, bk, mrq;
    /* Backward: strips of `bmr` query rows, key tiles of `bbk` keys. Its
     * kernels also take every multiple of `bmrq` up to bmr as a strip's
     * height (dot_t and softmax_bwd compute its rows rounded up to bmrq;
     * the strip's scratch keeps the stride bmr). */
    int bmr, bbk, bmrq;

    attn_kernels fwd;
    attn_bwd_kernels bwd;
    attn_nn_kernels nn;
    attn_feat_kernels feat;  /* feature maps of linear attention and Performer */
    attn_decode_kernels dec; /* decoding through a KV cache (kernels/decode.h) */

    /* FMA peak probe (for `attn bench`, not for attention): `iters` rounds
     * of independent multiply-add chains held in registers, with the
     * family's widest instructions (fused where it has FMA). Returns the
     * floating-point operations done (2 per lane per multiply-add); *sink
     * gets a value that depends on every chain so no work is elided. */
    double (*peak_fma)(int64_t iters, float *sink);
} attn__arch;

/* Families. Each fills a descriptor; all but scalar call scalar's first. */
void attn__arch_init_scalar(attn__arch *a);
/* Each family's decode kernel (a family without one keeps scalar's). */
void attn__decode_init_scalar(attn_decode_kernels *k);
#if defined(__x86_64__) || defined(_M_X64)
void attn__decode_init_avx2(attn_decode_kernels *k);
void attn__decode_init_avx512(attn_decode_kernels *k);
#endif
#if defined(__x86_64__) || defined(_M_X64)
void attn__arch_init_avx2(attn__arch *a);
void attn__arch_init_avx512(attn__arch *a);
#endif

/* The process default (ATTN_ARCH, else the best the CPU has), decided once;
 * NULL when ATTN_ARCH names an unknown or unsupported family
 * (attn_ctx_create then reports it). */
const attn__arch *attn__arch_default(void);

/* The family called `name` if this build has it and the CPU runs it. On
 * failure returns NULL and sets *why to ATTN_E_ARG (unknown name) or
 * ATTN_E_UNSUPPORTED (the CPU lacks it). */
const attn__arch *attn__arch_find(const char *name, attn_status *why);

/* nn element-wise kernels of the default family (scalar when ATTN_ARCH is
 * invalid: no context could have been created then). */
const attn_nn_kernels *attn__nn_kernels(void);

#endif /* ATTN_KERNELS_ARCH_H */
