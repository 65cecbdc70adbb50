/* The tokenizer every site shares: any SentencePiece .model (Meta's LLaMA-2 tokenizer.model or a
 * vocabulary trained with flas-vocab), read by the sentencepiece library itself through a small
 * extern "C" shim, so ids are exactly those of sentencepiece (and of python3-sentencepiece).
 *
 * A loaded tokenizer is immutable: encode and decode may be called from many threads at once. */
#ifndef FLAS_TOKENIZER_H
#define FLAS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "flas/sha256.h"

#ifdef __cplusplus
extern "C" {
#endif


typedef struct flas_tokenizer flas_tokenizer;

/* A growable array of token ids that encode appends to. Start from {0}; free with flas_ids_free. */
typedef struct flas_ids {
    int32_t *ids;
    size_t n, cap;
} flas_ids;

enum {
    FLAS_TOK_BOS = 1, /* prepend the model's BOS id (LLaMA: 1) */
    FLAS_TOK_EOS = 2  /* append the model's EOS id (LLaMA: 2) */
};

/* Loads a SentencePiece model file. NULL with a one-line reason in err on failure. */
flas_tokenizer *flas_tokenizer_open(const char *model_path, char *err, size_t errlen);
void flas_tokenizer_close(flas_tokenizer *t);

int flas_tokenizer_vocab_size(const flas_tokenizer *t);
int flas_tokenizer_bos_id(const flas_tokenizer *t); /* -1 when the model has none */
int flas_tokenizer_eos_id(const flas_tokenizer *t); /* -1 when the model has none */
int flas_tokenizer_unk_id(const flas_tokenizer *t);
/* 1 when unknown characters become UTF-8 byte pieces (<0x..>) instead of unk, so every text
 * round-trips; LLaMA-2 and flas-vocab models have it. */
int flas_tokenizer_byte_fallback(const flas_tokenizer *t);
/* SHA-256 of the model file's bytes: shards record it, so data tokenized with another vocabulary
 * is refused rather than silently trained on. */
const unsigned char *flas_tokenizer_sha256(const flas_tokenizer *t);
/* The piece of id ("▁the", "<0x0A>", "<s>"), or NULL when id is out of range. */
const char *flas_tokenizer_piece(const flas_tokenizer *t, int id);

/* What a GGUF file embeds of the vocabulary (llama.cpp then tokenizes as sentencepiece does):
 * the piece's score (merge priority of BPE models, log-probability of unigram ones), its kind as
 * SentencePiece and GGUF's token_type number them (1 normal, 2 unknown, 3 control, 5 unused, 6 byte;
 * 0 for an id out of range), and whether encoding prefixes a space (add_dummy_prefix). */
float flas_tokenizer_score(const flas_tokenizer *t, int id);
int flas_tokenizer_piece_type(const flas_tokenizer *t, int id);
int flas_tokenizer_adds_space_prefix(const flas_tokenizer *t);

/* Appends the ids of text[0..len) (UTF-8; the model's normalisation applies) to out, with BOS/EOS
 * as flags ask. 0, or -1 with err set (allocation failure, or an error from sentencepiece). */
int flas_tokenizer_encode(const flas_tokenizer *t, const char *text, size_t len, unsigned flags,
                          flas_ids *out, char *err, size_t errlen);
/* The text of ids (BOS/EOS and other control ids decode to nothing), malloc'ed and NUL-terminated;
 * *len (if not NULL) gets its length. NULL with err set when an id is out of range. */
char *flas_tokenizer_decode(const flas_tokenizer *t, const int32_t *ids, size_t n, size_t *len,
                            char *err, size_t errlen);

/* Makes room for extra more ids. 0, or -1 when memory is exhausted. */
int flas_ids_reserve(flas_ids *b, size_t extra);
void flas_ids_free(flas_ids *b);

#ifdef __cplusplus
}
#endif
#endif
