/* Test helper: writes or verifies a fixture checkpoint (tests/ckpt/ckpt_fixture.h).
 *   ckpt_tool write PATH GEN [small|kill] [all|params]
 *   ckpt_tool verify PATH GEN
 * Used by the kill test (as the process that gets SIGKILLed) and by the h5py oracle tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"

int main(int argc, char **argv)
{
    char err[1024];
    if (argc >= 4 && strcmp(argv[1], "write") == 0) {
        const char *which = argc >= 5 ? argv[4] : "small";
        unsigned contents = (argc >= 6 && strcmp(argv[5], "params") == 0) ? 0 : FIX_ALL;
        if (fix_write(argv[2], which, atoi(argv[3]), contents, err, sizeof err)) {
            fprintf(stderr, "ckpt_tool: %s\n", err);
            return 1;
        }
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "verify") == 0) {
        if (fix_verify(argv[2], atoi(argv[3]), err, sizeof err)) {
            fprintf(stderr, "ckpt_tool: %s\n", err);
            return 1;
        }
        return 0;
    }
    fprintf(stderr, "usage: ckpt_tool write PATH GEN [small|kill] [all|params] | verify PATH GEN\n");
    return 2;
}
