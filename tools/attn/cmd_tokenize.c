/* attn tokenize (not implemented yet). */
#include "cli.h"

int attn_cmd_tokenize(int argc, char **argv) {
    (void)argc, (void)argv;
    return attn_cli_error(1, "'attn tokenize' is not implemented yet");
}
