/* A collective parallel-HDF5 write for the test bed: each of N ranks writes its own rows of one
 * dataset with MPI-IO; the test reads the file back with h5py and checks every value.
 * usage: phdf5_write FILE ROWS_PER_RANK COLS */
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 4) {
        if (rank == 0)
            fprintf(stderr, "usage: %s FILE ROWS_PER_RANK COLS\n", argv[0]);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    hsize_t rows = (hsize_t)atol(argv[2]), cols = (hsize_t)atol(argv[3]);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    hid_t file = H5Fcreate(argv[1], H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0)
        MPI_Abort(MPI_COMM_WORLD, 1);
    hsize_t dims[2] = {rows * (hsize_t)size, cols};
    hid_t space = H5Screate_simple(2, dims, NULL);
    hid_t dset = H5Dcreate2(file, "x", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t start[2] = {rows * (hsize_t)rank, 0}, count[2] = {rows, cols};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t mem = H5Screate_simple(2, count, NULL);
    double *buf = malloc(sizeof(double) * rows * cols);
    for (hsize_t i = 0; i < rows * cols; i++)
        buf[i] = rank * 1000000.0 + (double)i; /* value encodes writer and position */
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    herr_t st = H5Dwrite(dset, H5T_NATIVE_DOUBLE, mem, space, dxpl, buf);
    hid_t aspace = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(file, "writers", H5T_NATIVE_INT, aspace, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, H5T_NATIVE_INT, &size);
    H5Aclose(attr);
    H5Sclose(aspace);
    H5Pclose(dxpl);
    H5Sclose(mem);
    H5Sclose(space);
    H5Dclose(dset);
    herr_t cl = H5Fclose(file);
    H5Pclose(fapl);
    free(buf);
    int ok = st >= 0 && cl >= 0, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s: %d ranks wrote %llu x %llu doubles collectively to %s\n", all ? "PHDF5 OK" : "PHDF5 FAILED", size,
               (unsigned long long)dims[0], (unsigned long long)dims[1], argv[1]);
    MPI_Finalize();
    return all ? 0 : 1;
}
