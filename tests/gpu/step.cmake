# One whole training step of the CUDA model driver (runtime/cuda/model_cuda.cu) against the CPU core:
# write_step_state (label unit, a fixture) writes a small GQA state with an untied head and 20 AdamW
# steps; test_gpu_step (label gpu) reads it, compares the loss, the logits, every gradient tensor and the
# replayed losses, and exits 77 without a device, which ctest reports as "not run", never as passed.
# tests/gpu/build-harness.sh builds the same program with nvcc alone; tests/gpu/device-prep.sh and
# device-check.sh run it on bigger states.
if(FLAS_HAVE_CUDA)
  add_executable(test_gpu_step test_step.cu)
  # flas after flas_cuda: it provides the step-state reader and the parameter layout
  # (flas_param_table_init) that model_cuda.cu calls.
  target_link_libraries(test_gpu_step PRIVATE flas_cuda flas flas::cuda_warnings)
  set_target_properties(test_gpu_step PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  add_test(NAME gpu_step_state_small COMMAND write_step_state --dim 64 --layers 2 --heads 4 --kv-heads 2
    --hidden 96 --vocab 97 --seq 32 --untied --batch 2 --seq-len 32 --steps 20 --logits --threads 2
    --out ${CMAKE_CURRENT_BINARY_DIR}/gpu_step_small.state)
  set_tests_properties(gpu_step_state_small PROPERTIES LABELS unit FIXTURES_SETUP gpu_step_state)
  add_test(NAME gpu_step COMMAND test_gpu_step ${CMAKE_CURRENT_BINARY_DIR}/gpu_step_small.state)
  set_tests_properties(gpu_step PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 FIXTURES_REQUIRED gpu_step_state
    TIMEOUT 600)
endif()
