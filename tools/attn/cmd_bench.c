/* attn bench (not implemented yet). */
#include "cli.h"

int attn_cmd_bench(int argc, char **argv) {
    (void)argc, (void)argv;
    return attn_cli_error(1, "'attn bench' is not implemented yet");
}
