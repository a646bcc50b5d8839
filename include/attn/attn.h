/* attn: the self-attention mechanism as a C11 library.
 *
 * This is the only header users include. It is the manual: each function's
 * comment gives its shapes, ownership, thread-safety and every status it
 * returns. Symbols: B batch, H query heads, Hkv key/value heads, T query
 * length, S key length, D query/key head dim, Dv value head dim. */
#ifndef ATTN_ATTN_H
#define ATTN_ATTN_H

#include "core.h"
#include "efficient.h"
#include "explain.h"
#include "gpt.h"
#include "io.h"
#include "models.h"
#include "nn.h"
#include "kvcache.h"
#include "sdpa.h"
#include "text.h"
#include "vit.h"
#include "caption.h"

#endif /* ATTN_ATTN_H */
