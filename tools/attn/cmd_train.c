/* attn train (not implemented yet). */
#include "cli.h"

int attn_cmd_train(int argc, char **argv) {
    (void)argc, (void)argv;
    return attn_cli_error(1, "'attn train' is not implemented yet");
}
