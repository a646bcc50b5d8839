/* attn mha (not implemented yet). */
#include "cli.h"

int attn_cmd_mha(int argc, char **argv) {
    (void)argc, (void)argv;
    return attn_cli_error(1, "'attn mha' is not implemented yet");
}
