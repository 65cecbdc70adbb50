# Hostile model files for flas-convert (included from tests/interop/CMakeLists.txt): lying safetensors
# headers, config.json and index mismatches, malformed GGUF and llama2.c files, each refused with exit 1,
# one "flas-convert: " line, nothing at OUTPUT and no temporary. One test per input format, plus the
# valid side (every export imports back, the script's own writers are faithful, OUTPUT exists without
# --force). In the sanitizer build (tests/run.sh --sanitize, build-asan/) the same tests run the ASan +
# UBSan flas-convert: a sanitizer report breaks the one-line rule and is named as such.
foreach(group valid hf gguf llama2c flas)
  add_test(NAME interop_hostile_${group}
    COMMAND ${FLAS_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_convert_hostile.py $<TARGET_FILE:flas-convert>
            $<TARGET_FILE:flas-train> ${CMAKE_CURRENT_BINARY_DIR}/hostile-${group} ${group})
  set_tests_properties(interop_hostile_${group} PROPERTIES LABELS "interop;unit" TIMEOUT 900
    ENVIRONMENT "${FLAS_INTEROP_ENV}")
endforeach()

# Benchmark (not a test): `cmake --build build --target bench_convert` converts a 1.1 GB checkpoint to
# hf (f32) and gguf (f16), 3 runs each with the page cache dropped, against dd on the same disk, and
# prints GB/s and peak RSS next to the largest tensor. Needs 6 GB free (4.5 GB at the peak); deletes its
# files.
add_custom_target(bench_convert
  COMMAND ${FLAS_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/bench_convert.py $<TARGET_FILE:flas-convert>
          $<TARGET_FILE:flas-train> ${CMAKE_CURRENT_BINARY_DIR}/bench-convert
  DEPENDS flas-convert flas-train USES_TERMINAL)
