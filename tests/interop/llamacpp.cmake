# llama.cpp as the oracle of flas-convert's GGUF export (included from tests/interop/CMakeLists.txt).
# llama.cpp comes from the npm package node-llama-cpp 3.21.1 (its prebuilt linux-x64 CPU binary, package
# @node-llama-cpp/linux-x64), pinned by llamacpp/package-lock.json. The fixture test interop_llamacpp_npm
# installs it into the build tree (the source tree stays clean): `npm ci --ignore-scripts --omit=optional`,
# i.e. no post-install download or build and none of the optional CUDA/Vulkan/other-platform packages.
# Needs node and npm (tests/bed/install-deps.sh) and the npm registry; where the system's Node.js is older
# than 20 (Debian 12's), llamacpp/setup.sh takes Node.js 20 from the registry too.
add_executable(flas_logits ${CMAKE_CURRENT_LIST_DIR}/flas_logits.c)
target_link_libraries(flas_logits PRIVATE flas)
target_include_directories(flas_logits PRIVATE ${PROJECT_SOURCE_DIR}/tests/core)

set(LLAMACPP_SRC ${CMAKE_CURRENT_LIST_DIR}/llamacpp)
set(LLAMACPP_DIR ${CMAKE_CURRENT_BINARY_DIR}/llamacpp)
set(LLAMACPP_DATA ${PROJECT_BINARY_DIR}/tests/data/work)
set(LLAMACPP_ENV "PATH=${LLAMACPP_DIR}/bin:$ENV{PATH}" ${FLAS_INTEROP_ENV})

add_test(NAME interop_llamacpp_npm COMMAND sh ${LLAMACPP_SRC}/setup.sh ${LLAMACPP_SRC} ${LLAMACPP_DIR})
set_tests_properties(interop_llamacpp_npm PROPERTIES FIXTURES_SETUP llamacpp_npm LABELS "oracle;interop"
  TIMEOUT 600)

add_test(NAME interop_llamacpp COMMAND ${FLAS_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_llamacpp.py
  --convert $<TARGET_FILE:flas-convert> --train $<TARGET_FILE:flas-train> --prepare $<TARGET_FILE:flas-prepare>
  --tokenize-dump $<TARGET_FILE:tokenize_dump> --logits $<TARGET_FILE:flas_logits> --mpiexec ${MPIEXEC_EXECUTABLE}
  --oracle-dir ${LLAMACPP_DIR} --tokenizer ${LLAMACPP_DATA}/vocab/demo.model --corpus ${LLAMACPP_DATA}/corpus
  --work ${CMAKE_CURRENT_BINARY_DIR}/work/llamacpp)
set_tests_properties(interop_llamacpp PROPERTIES LABELS "oracle;interop" TIMEOUT 900
  FIXTURES_REQUIRED "data_vocab;llamacpp_npm" ENVIRONMENT "${LLAMACPP_ENV}")
