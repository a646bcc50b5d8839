/* Names of the ways to run the BERT encoder's attention (attn_bert_options),
 * shared by `attn embed --attention` and `attn compare --quality`. */
#ifndef ATTN_CLI_BERT_METHODS_H
#define ATTN_CLI_BERT_METHODS_H

#include "cli.h"

/* One name into *o (zeroed first), seed for the random parts (the
 * Performer's seed and the layout's):
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
 * and any of them followed by suffixes (each at most once):
 *   +prune-L-F      the method with token pruning (tokens ranked by the
 *                   attention they receive under the method)
 *   +draws-layer    bigbird-B, performer-M: a random draw per layer
 *   +draws-head     ... per layer and head (attn_bert_draws)
 * Returns 0, -1 when the name is not one of these, -2 for +draws- on a
 * method without random parts. */
int bert_method_parse(const char *name, uint64_t seed, attn_bert_options *o);

/* 1 when o has random parts (BigBird's random blocks, the Performer). */
int bert_method_random(const attn_bert_options *o);

/* "shared", "layer" or "head" (the --draws option) into *d; -1 otherwise. */
int bert_draws_parse(const char *s, attn_bert_draws *d);

/* The help lines listing the names above (indented by `indent` spaces). */
void bert_method_help(FILE *f, int indent);

#endif
