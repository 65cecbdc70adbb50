# Hugging Face layout and round trips through flas-convert (included from tests/interop/CMakeLists.txt).
# interop_hf_oracle: an independent float64 LlamaForCausalLM forward (HF names, rotate_half RoPE) on the
#   safetensors flas-convert exports == the Meta-layout PyTorch oracle on the FLaS checkpoint, and on HF
#   directories the test writes (f32, bf16 in 3 shards, f16, Llama-2-7b-hf and pre-4.31 config keys) ==
#   the oracle on flas-convert's import; imported tensors bit-exact.
# interop_roundtrip: HDF5 -> hf / gguf / llama2c v0, v1 -> HDF5 bit-exact, hf bf16/f16 == the original
#   rounded, sharded hf, flas-train --init --init-from == flas-convert; the intermediate files parsed
#   independently. Both use the data_vocab fixture's 2000-piece SentencePiece model.
set(FLAS_HF_TOKENIZER ${PROJECT_BINARY_DIR}/tests/data/work/vocab/demo.model)

add_test(NAME interop_hf_oracle
  COMMAND ${FLAS_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_hf_oracle.py
    $<TARGET_FILE:flas-convert> $<TARGET_FILE:flas-train> ${CMAKE_CURRENT_BINARY_DIR}/hf-oracle-work
    ${FLAS_HF_TOKENIZER})
set_tests_properties(interop_hf_oracle PROPERTIES LABELS "oracle;interop" FIXTURES_REQUIRED data_vocab
  TIMEOUT 600 ENVIRONMENT "${FLAS_INTEROP_ENV}")

add_test(NAME interop_roundtrip
  COMMAND ${FLAS_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_roundtrip.py
    $<TARGET_FILE:flas-convert> $<TARGET_FILE:flas-train> ${CMAKE_CURRENT_BINARY_DIR}/roundtrip-work
    ${FLAS_HF_TOKENIZER})
set_tests_properties(interop_roundtrip PROPERTIES LABELS "interop" FIXTURES_REQUIRED data_vocab TIMEOUT 600
  ENVIRONMENT "${FLAS_INTEROP_ENV}")
