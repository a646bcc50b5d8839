/* attn: command-line tool. One subcommand per job. */
#include <attn/attn.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: attn <command> [options]\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "attn: error: unknown command '%s'\n", argv[1]);
    return 2;
}
