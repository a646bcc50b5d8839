/* Names of the ways to run the BERT encoder's attention (attn_bert_options),
 * shared by `attn embed --attention` and `attn compare --quality`. */
#ifndef ATTN_CLI_BERT_METHODS_H
#define ATTN_CLI_BERT_METHODS_H

#include "cli.h"

/* One name into *o (zeroed first), seed for the random parts:
 *   exact
 *   window-W        token i sees keys |i - j| <= W (W >= 0)
 *   window-W+cls    and [CLS] (token 0) sees every token and is seen by all
 *   bigbird-B       BigBird over blocks of B tokens: window 1 block each
 *                   side, 1 global block, 2 random blocks
 *   linear          elu + 1 kernelized attention
 *   performer-M     Performer FAVOR+ with M random features
 *   nystrom-L       Nystrom with L landmarks
 *   topk-K          top-k with K keys per query
 *   prune-L-F       exact, tokens pruned after layer L to a fraction F
 * Returns 0, or -1 when the name is not one of these. */
int bert_method_parse(const char *name, uint64_t seed, attn_bert_options *o);

/* The help lines listing the names above (indented by `indent` spaces). */
void bert_method_help(FILE *f, int indent);

#endif
