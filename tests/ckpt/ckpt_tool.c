/* Test helper: writes or verifies a fixture checkpoint (tests/ckpt/ckpt_fixture.h).
 *   ckpt_tool write PATH GEN [small|kill] [all|params]
 *   ckpt_tool verify PATH GEN
 *   mpirun -np N ckpt_tool mpi-write PATH GEN [small|kill]   (tensor-parallel split over N ranks)
 * Used by the kill test (as the process that gets SIGKILLed) and by the h5py oracle tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"

int main(int argc, char **argv)
{
    char err[1024];
    flas_ckpt_hdf5_quiet();
    if (argc >= 4 && strcmp(argv[1], "write") == 0) {
        const char *which = argc >= 5 ? argv[4] : "small";
        unsigned contents = (argc >= 6 && strcmp(argv[5], "params") == 0) ? 0 : FIX_ALL;
        if (fix_write(argv[2], which, atoi(argv[3]), contents, err, sizeof err)) {
            fprintf(stderr, "ckpt_tool: %s\n", err);
            return 1;
        }
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "mpi-write") == 0) {
        MPI_Init(&argc, &argv);
        int rank, size;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        int rc = fix_write_split(argv[2], argc >= 5 ? argv[4] : "small", atoi(argv[3]), rank, size, 0, 1, 0,
                                 MPI_COMM_WORLD, err, sizeof err);
        if (rc)
            fprintf(stderr, "ckpt_tool: rank %d: %s\n", rank, err);
        MPI_Finalize();
        return rc ? 1 : 0;
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
