# Every external library FLaS builds on, found once, as imported targets.
# A missing REQUIRED dependency stops the configure step with the Debian package that provides it.
find_package(PkgConfig REQUIRED)

function(flas_require_pkg prefix module debian_package)
  pkg_check_modules(${prefix} IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${prefix}_FOUND)
    message(FATAL_ERROR "FLaS needs ${module} (Debian: apt-get install --no-install-recommends ${debian_package})")
  endif()
endfunction()

# Slurm: only the SPANK header; the plugin must not link libslurm.
find_path(SLURM_INCLUDE_DIR slurm/spank.h)
if(NOT SLURM_INCLUDE_DIR)
  message(FATAL_ERROR "FLaS needs slurm/spank.h (Debian: libslurm-dev)")
endif()
file(STRINGS ${SLURM_INCLUDE_DIR}/slurm/slurm_version.h _slurm_ver REGEX "#define SLURM_VERSION_STRING")
string(REGEX MATCH "\"[^\"]+\"" SLURM_VERSION_STRING "${_slurm_ver}")
message(STATUS "Slurm headers: ${SLURM_INCLUDE_DIR} (${SLURM_VERSION_STRING})")
# Where slurmd looks for plugins (relative plugstack.conf paths resolve there).
find_path(SLURM_PLUGIN_DIR NAMES auth_munge.so
  PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/slurm-wlm /usr/lib64/slurm /usr/lib/slurm
  NO_DEFAULT_PATH)
if(NOT SLURM_PLUGIN_DIR)
  set(SLURM_PLUGIN_DIR ${CMAKE_INSTALL_FULL_LIBDIR}/slurm)
endif()
set(FLAS_SLURM_PLUGIN_DIR ${SLURM_PLUGIN_DIR} CACHE PATH "Where flas.so is installed (Slurm's PluginDir)")
set(FLAS_SLURM_CONF_DIR /etc/slurm CACHE PATH "Where plugstack.conf.d/ and flas.conf live")
# libslurm: flas-train only (it asks slurmctld when its job ends); never the plugin.
find_library(SLURM_LIBRARY NAMES slurm PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
if(NOT SLURM_LIBRARY)
  message(FATAL_ERROR "flas-train needs libslurm.so (Debian: libslurm-dev)")
endif()
add_library(flas::slurm INTERFACE IMPORTED)
target_include_directories(flas::slurm INTERFACE ${SLURM_INCLUDE_DIR})
target_link_libraries(flas::slurm INTERFACE ${SLURM_LIBRARY})

# MPI (Open MPI with PMIx).
find_package(MPI REQUIRED COMPONENTS C)
message(STATUS "MPI: ${MPI_C_LIBRARY_VERSION_STRING}")

# Parallel HDF5: the serial flavour cannot write one checkpoint from many ranks.
set(HDF5_PREFER_PARALLEL ON)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "FLaS needs PARALLEL HDF5 but found a serial build (${HDF5_C_INCLUDE_DIRS}). "
    "Debian: apt-get install --no-install-recommends libhdf5-openmpi-dev")
endif()
add_library(flas::hdf5 INTERFACE IMPORTED)
target_include_directories(flas::hdf5 INTERFACE ${HDF5_C_INCLUDE_DIRS})
target_link_libraries(flas::hdf5 INTERFACE ${HDF5_C_LIBRARIES} MPI::MPI_C)
target_compile_definitions(flas::hdf5 INTERFACE ${HDF5_C_DEFINITIONS} H5_USE_110_API)
message(STATUS "HDF5 ${HDF5_VERSION} (parallel): ${HDF5_C_INCLUDE_DIRS}")

flas_require_pkg(LIBSSH libssh libssh-dev)
flas_require_pkg(CHECK check check)
flas_require_pkg(OPENBLAS openblas libopenblas-dev)
flas_require_pkg(SENTENCEPIECE sentencepiece libsentencepiece-dev)
flas_require_pkg(LIBCRYPTO libcrypto libssl-dev)
flas_require_pkg(JANSSON jansson libjansson-dev)
flas_require_pkg(ZLIB zlib zlib1g-dev)

# oneDNN: the CPU's bf16 mixed-precision products (flas-train --precision bf16). Optional: without it
# FLaS builds and trains in fp32, and --precision bf16 says what is missing.
find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
find_library(DNNL_LIBRARY dnnl)
set(FLAS_HAVE_DNNL OFF)
if(DNNL_INCLUDE_DIR AND DNNL_LIBRARY)
  add_library(flas::dnnl INTERFACE IMPORTED)
  target_include_directories(flas::dnnl INTERFACE ${DNNL_INCLUDE_DIR})
  target_link_libraries(flas::dnnl INTERFACE ${DNNL_LIBRARY})
  target_compile_definitions(flas::dnnl INTERFACE FLAS_HAVE_DNNL)
  set(FLAS_HAVE_DNNL ON)
  message(STATUS "oneDNN (${DNNL_LIBRARY}): bf16 mixed precision on the CPU")
else()
  message(STATUS "oneDNN not found (Debian: libdnnl-dev): the CPU trains in fp32 only")
endif()

find_package(OpenMP REQUIRED COMPONENTS C)
find_package(Threads REQUIRED)

# CUDA + NCCL: optional; nvcc usually lives outside PATH in /usr/local/cuda/bin.
set(FLAS_HAVE_CUDA OFF)
if(NOT FLAS_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  find_package(CUDAToolkit QUIET)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND NCCL_LIBRARY AND NCCL_INCLUDE_DIR)
    # A100 (sm_80) and H100/H200 (sm_90): bf16 tensor cores. Set before enable_language, so that the
    # toolkit's own default (75 for CUDA 13) never applies; -DCMAKE_CUDA_ARCHITECTURES=... still wins.
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90 CACHE STRING "GPU architectures of the CUDA path")
    endif()
    enable_language(CUDA)
    # Every CUDA target: nvcc's and the host compiler's warnings, errors unless FLAS_CUDA_WERROR=OFF (a
    # newer toolkit's deprecation notices should not stop a build on a GPU machine that only wants to run).
    option(FLAS_CUDA_WERROR "Treat warnings in the CUDA sources as errors" ON)
    add_library(flas::cuda_warnings INTERFACE IMPORTED)
    target_compile_options(flas::cuda_warnings INTERFACE
      $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra $<$<BOOL:${FLAS_CUDA_WERROR}>:--Werror=all-warnings>>)
    add_library(flas::nccl INTERFACE IMPORTED)
    target_include_directories(flas::nccl INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(flas::nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
    set(FLAS_HAVE_CUDA ON)
    message(STATUS "CUDA ${CUDAToolkit_VERSION} + NCCL (${NCCL_LIBRARY}): the GPU path is built")
  elseif(FLAS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FLAS_CUDA=ON but CUDA (nvcc, cudart) or NCCL was not found")
  else()
    message(STATUS "CUDA or NCCL not found: building the CPU path only")
  endif()
endif()

find_program(FLAS_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
