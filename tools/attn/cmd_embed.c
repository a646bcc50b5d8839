/* attn embed / attn similarity (not implemented yet). */
#include "cli.h"

int attn_cmd_embed(int argc, char **argv) {
    (void)argc, (void)argv;
    return attn_cli_error(1, "'attn embed' is not implemented yet");
}

int attn_cmd_similarity(int argc, char **argv) {
    (void)argc, (void)argv;
    return attn_cli_error(1, "'attn similarity' is not implemented yet");
}
