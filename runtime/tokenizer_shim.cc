// The only C++ in libflas: an extern "C" shim over sentencepiece::SentencePieceProcessor, so that
// FLaS tokenizes with the library LLaMA-2 itself uses instead of a re-implementation. No exception
// may cross into C: every entry point catches and reports through err.
#include "flas/error.h"
#include "flas/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <sys/stat.h>
#include <string>
#include <vector>

struct flas_tokenizer {
    sentencepiece::SentencePieceProcessor sp;
    unsigned char sha256[FLAS_SHA256_BYTES];
    bool byte_fallback;
};

extern "C" {

flas_tokenizer *flas_tokenizer_open(const char *model_path, char *err, size_t errlen)
{
    try {
        // A FIFO or device would block the reader (or never end): only regular files are models.
        struct stat st;
        if (stat(model_path, &st) != 0) {
            flas_fail(err, errlen, "%s: %s", model_path, strerror(errno));
            return nullptr;
        }
        if (!S_ISREG(st.st_mode)) {
            flas_fail(err, errlen, "%s: not a regular file", model_path);
            return nullptr;
        }
        // Read the bytes once: they are both hashed and parsed, so the hash names what was loaded.
        std::ifstream in(model_path, std::ios::binary);
        if (!in) {
            flas_fail(err, errlen, "%s: %s", model_path, strerror(errno));
            return nullptr;
        }
        std::stringstream bytes;
        bytes << in.rdbuf();
        if (in.bad()) {
            flas_fail(err, errlen, "%s: read error", model_path);
            return nullptr;
        }
        const std::string blob = bytes.str();
        if (blob.empty()) {
            flas_fail(err, errlen, "%s: empty file, not a SentencePiece model", model_path);
            return nullptr;
        }
        auto *t = new flas_tokenizer();
        const auto status = t->sp.LoadFromSerializedProto(blob);
        if (!status.ok() || t->sp.GetPieceSize() <= 0) {
            flas_fail(err, errlen, "%s: not a SentencePiece model (%s)", model_path,
                    status.ok() ? "no pieces" : status.ToString().c_str());
            delete t;
            return nullptr;
        }
        if (flas_sha256_raw(blob.data(), blob.size(), t->sha256) != 0) {
            flas_fail(err, errlen, "%s: SHA-256 failed", model_path);
            delete t;
            return nullptr;
        }
        // Byte pieces exist only in models trained with byte fallback (the trainer spec that says so
        // needs protobuf headers Debian does not ship).
        t->byte_fallback = false;
        for (int id = 0; id < t->sp.GetPieceSize() && !t->byte_fallback; id++)
            t->byte_fallback = t->sp.IsByte(id);
        return t;
    } catch (const std::exception &e) {
        flas_fail(err, errlen, "%s: %s", model_path, e.what());
        return nullptr;
    }
}

void flas_tokenizer_close(flas_tokenizer *t) { delete t; }

int flas_tokenizer_vocab_size(const flas_tokenizer *t) { return t->sp.GetPieceSize(); }
int flas_tokenizer_bos_id(const flas_tokenizer *t) { return t->sp.bos_id(); }
int flas_tokenizer_eos_id(const flas_tokenizer *t) { return t->sp.eos_id(); }
int flas_tokenizer_unk_id(const flas_tokenizer *t) { return t->sp.unk_id(); }
int flas_tokenizer_byte_fallback(const flas_tokenizer *t) { return t->byte_fallback; }
const unsigned char *flas_tokenizer_sha256(const flas_tokenizer *t) { return t->sha256; }

float flas_tokenizer_score(const flas_tokenizer *t, int id)
{
    return id >= 0 && id < t->sp.GetPieceSize() ? t->sp.GetScore(id) : 0.0f;
}

int flas_tokenizer_piece_type(const flas_tokenizer *t, int id)
{
    if (id < 0 || id >= t->sp.GetPieceSize())
        return 0;
    if (t->sp.IsUnknown(id))
        return 2;
    if (t->sp.IsControl(id))
        return 3;
    if (t->sp.IsUnused(id))
        return 5;
    if (t->sp.IsByte(id))
        return 6;
    return 1;
}

int flas_tokenizer_adds_space_prefix(const flas_tokenizer *t)
{
    // The normalizer spec that records add_dummy_prefix needs protobuf headers Debian does not ship;
    // its effect is visible: with it, the first piece of "x" starts with U+2581.
    try {
        std::vector<std::string> pieces;
        if (!t->sp.Encode("x", &pieces).ok() || pieces.empty())
            return 1;
        return pieces[0].rfind("\xe2\x96\x81", 0) == 0;
    } catch (...) {
        return 1;
    }
}

const char *flas_tokenizer_piece(const flas_tokenizer *t, int id)
{
    if (id < 0 || id >= t->sp.GetPieceSize())
        return nullptr;
    return t->sp.IdToPiece(id).c_str();
}

int flas_ids_reserve(flas_ids *b, size_t extra)
{
    if (b->n + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra)
        cap *= 2;
    void *p = realloc(b->ids, cap * sizeof *b->ids);
    if (!p)
        return -1;
    b->ids = static_cast<int32_t *>(p);
    b->cap = cap;
    return 0;
}

void flas_ids_free(flas_ids *b)
{
    free(b->ids);
    b->ids = nullptr;
    b->n = b->cap = 0;
}

int flas_tokenizer_encode(const flas_tokenizer *t, const char *text, size_t len, unsigned flags,
                          flas_ids *out, char *err, size_t errlen)
{
    try {
        std::vector<int> ids;
        const auto status = t->sp.Encode(absl::string_view(text, len), &ids);
        if (!status.ok()) {
            flas_fail(err, errlen, "sentencepiece: %s", status.ToString().c_str());
            return -1;
        }
        const int bos = (flags & FLAS_TOK_BOS) ? t->sp.bos_id() : -1;
        const int eos = (flags & FLAS_TOK_EOS) ? t->sp.eos_id() : -1;
        if (((flags & FLAS_TOK_BOS) && bos < 0) || ((flags & FLAS_TOK_EOS) && eos < 0)) {
            flas_fail(err, errlen, "the tokenizer has no %s id", bos < 0 && (flags & FLAS_TOK_BOS) ? "BOS" : "EOS");
            return -1;
        }
        if (flas_ids_reserve(out, ids.size() + 2) != 0) {
            flas_fail(err, errlen, "out of memory for %zu token ids", out->n + ids.size() + 2);
            return -1;
        }
        if (bos >= 0)
            out->ids[out->n++] = bos;
        for (int id : ids)
            out->ids[out->n++] = id;
        if (eos >= 0)
            out->ids[out->n++] = eos;
        return 0;
    } catch (const std::exception &e) {
        flas_fail(err, errlen, "sentencepiece: %s", e.what());
        return -1;
    }
}

char *flas_tokenizer_decode(const flas_tokenizer *t, const int32_t *ids, size_t n, size_t *len,
                            char *err, size_t errlen)
{
    try {
        const int size = t->sp.GetPieceSize();
        std::vector<int> v(ids, ids + n);
        for (size_t i = 0; i < n; i++)
            if (v[i] < 0 || v[i] >= size) {
                flas_fail(err, errlen, "token id %d at position %zu is outside the vocabulary (0..%d)",
                        v[i], i, size - 1);
                return nullptr;
            }
        std::string text;
        const auto status = t->sp.Decode(v, &text);
        if (!status.ok()) {
            flas_fail(err, errlen, "sentencepiece: %s", status.ToString().c_str());
            return nullptr;
        }
        char *out = static_cast<char *>(malloc(text.size() + 1));
        if (!out) {
            flas_fail(err, errlen, "out of memory for %zu bytes of text", text.size());
            return nullptr;
        }
        memcpy(out, text.data(), text.size());
        out[text.size()] = '\0';
        if (len)
            *len = text.size();
        return out;
    } catch (const std::exception &e) {
        flas_fail(err, errlen, "sentencepiece: %s", e.what());
        return nullptr;
    }
}

} // extern "C"
