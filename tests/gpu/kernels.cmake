# The CUDA kernels (runtime/cuda) against the CPU reference layers (runtime/layers_ref.c, compiled here as
# C): label gpu, exit 77 without a device, which ctest reports as "not run" and never as passed.
# tests/gpu/build-harness.sh builds the same program with nvcc alone on a machine without cmake.
if(FLAS_HAVE_CUDA)
  add_executable(test_gpu_kernels test_kernels.cu ${PROJECT_SOURCE_DIR}/runtime/layers_ref.c)
  target_include_directories(test_gpu_kernels PRIVATE ${PROJECT_SOURCE_DIR}/runtime)
  target_link_libraries(test_gpu_kernels PRIVATE flas_cuda m)
  set_target_properties(test_gpu_kernels PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_link_libraries(test_gpu_kernels PRIVATE flas::cuda_warnings)
  add_test(NAME gpu_kernels COMMAND test_gpu_kernels)
  set_tests_properties(gpu_kernels PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 600)
endif()
