# The CPU half of the GPU step test (label unit): the "FLaS step state" file (flas/step_state.h) that
# write_step_state makes here and the GPU harness reads, written, read back, re-run bit for bit, and
# refused when hostile; and the rank -> GPU choice of the CUDA path, which is pure logic.
add_executable(write_step_state write_step_state.c step_state_make.c)
target_link_libraries(write_step_state PRIVATE flas)
flas_check_test(test_step_state SOURCES test_step_state.c step_state_make.c LIBS flas LABELS unit)
flas_check_test(test_gpu_select SOURCES test_gpu_select.c LIBS flas LABELS unit)
# The tool's own command line, end to end on a tiny shape (the file it writes is checked by the reader).
add_test(NAME write_step_state_smoke COMMAND write_step_state --dim 16 --layers 1 --heads 4 --kv-heads 2
  --hidden 24 --vocab 11 --seq 8 --batch 2 --steps 3 --threads 1 --out ${CMAKE_CURRENT_BINARY_DIR}/smoke.state)
set_tests_properties(write_step_state_smoke PROPERTIES LABELS unit ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
