/* Prints the kernel families this build has and this CPU runs, one per
 * line, except the process default (the Makefile's `test` runs the suite
 * once by default, then once under ATTN_ARCH=<each of these>). */
#include <attn/attn.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    const char *def = attn_arch_name();
    for (int i = 0; attn_arch_available(i); i++)
        if (!def || strcmp(attn_arch_available(i), def)) printf("%s\n", attn_arch_available(i));
    return 0;
}
