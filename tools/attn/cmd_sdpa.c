/* attn sdpa (not implemented yet). */
#include "cli.h"

int attn_cmd_sdpa(int argc, char **argv) {
    (void)argc, (void)argv;
    return attn_cli_error(1, "'attn sdpa' is not implemented yet");
}
