// llama.cpp oracle for FLaS's GGUF export, through node-llama-cpp's prebuilt linux-x64 CPU binary
// (never a build, never a download, no GPU).
//
// usage: node oracle.mjs REQUEST.json RESPONSE.json
//
// REQUEST (every list optional):
//   model        GGUF path
//   threads      evaluation threads (default 1: the test models are tiny and the machine has 2 cores)
//   context      context size in tokens (default: twice the model's context_length); every sequence must be
//                shorter (see check())
//   kv_cache     KV cache element type, "F32" (default: the comparison is of float32 models, and llama.cpp's
//                own default F16 cache would round K and V) or "F16"
//   tokenize     [text, ...]: llama.cpp's tokenization with no BOS/EOS added and no special-token parsing
//                (what SentencePiece's encode gives without BOS)
//   probs        [{ids: [...], positions: "all"|"last", top_k: K?}, ...]: ids are fed exactly as given (a BOS
//                is the caller's: nothing is added), and for each position (or the last) the next-token
//                distribution is returned: the full probability vector (ids 0..V-1), or with top_k the K most
//                probable [id, log p] pairs
//   greedy       [{ids: [...], n: N}, ...]: greedy (argmax) continuation of N tokens after ids
//   nll          [[ids...], ...]: sum over positions 1..len-1 of -log p(ids[i] | ids[<i]) per sequence
// RESPONSE: {info: {...}, tokenize: [[ids]], probs: [{probs: [[V floats]] | top: [[[id, logp]]]}],
//            greedy: [{ids: [N], p1: [N], gap: [N]}], nll: {sum, count, per_seq: [[sum, count]]}}
//   gap[i] = log p(top1) - log p(top2) at step i, i.e. the logit gap that decided the greedy choice.
// Probabilities come from controlledEvaluate's generateNext.probabilities with the default sampler
// options (temperature 0 = greedy chain, which leaves the logits untouched: the vector is the softmax of
// llama.cpp's raw logits over the whole vocabulary).
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [reqPath, outPath] = process.argv.slice(2);
if (!reqPath || !outPath) {
    console.error("usage: node oracle.mjs REQUEST.json RESPONSE.json");
    process.exit(2);
}
const req = JSON.parse(fs.readFileSync(reqPath, "utf8"));
const threads = req.threads ?? 1;
const logs = [];
const seconds = {}; // wall time of each part, in out.info.seconds
const t0 = performance.now();

const llama = await getLlama({
    gpu: false,                 // CPU backend only
    build: "never",             // the prebuilt binary of @node-llama-cpp/linux-x64 or an error
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    maxThreads: threads,
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => logs.push(`${level}: ${message.trimEnd()}`),
});
const model = await llama.loadModel({ modelPath: req.model, gpuLayers: 0, useMmap: false, checkTensors: true });
let V = null; // llama.cpp's n_vocab: the size of the first probability map
const kvType = req.kv_cache ?? "F32";
const contextSize = req.context ?? 2 * model.trainContextSize;
const context = await model.createContext({
    contextSize,
    batchSize: contextSize,
    sequences: 1,
    threads: { ideal: threads, min: threads },
    flashAttention: false,
    experimentalKvCacheKeyType: kvType,
    experimentalKvCacheValueType: kvType,
});
const seq = context.getSequence();
seconds.load = (performance.now() - t0) / 1000;

const out = {
    info: {
        gpu: llama.gpu,
        build: llama.buildType,
        llama_cpp_release: llama.llamaCppRelease?.release ?? null,
        cpu: llama.systemInfo,
        architecture: model.architecture,
        vocabulary_type: model.vocabularyType,
        train_context: model.trainContextSize,
        context: context.contextSize,
        kv_cache: kvType,
        bos: model.tokens.bos,
        eos: model.tokens.eos,
        add_bos: model.tokens.shouldPrependBosToken,
        add_eos: model.tokens.shouldAppendEosToken,
        file_type: model.fileInfo.metadata?.general?.file_type ?? null,
        type_description: model.typeDescription,
        threads,
    },
};

// A sequence must leave the context one free cell: node-llama-cpp shifts a full context (erases its beginning)
// before it evaluates the last token, which would change that token's distribution.
function check(ids, what) {
    if (!Array.isArray(ids) || ids.length === 0)
        throw new Error(`${what}: empty id sequence`);
    if (ids.length >= context.contextSize)
        throw new Error(`${what}: ${ids.length} tokens need a context of more than ${context.contextSize}`);
}

// Evaluates ids from an empty context; want(i) tells whether position i needs its next-token distribution.
// Returns an array with, at each wanted position, the Map token -> probability.
async function evaluate(ids, want) {
    await seq.clearHistory();
    const input = ids.map((id, i) => (want(i) ? [id, { generateNext: { probabilities: true } }] : id));
    const res = await seq.controlledEvaluate(input);
    return ids.map((_, i) => {
        if (!want(i))
            return undefined;
        const p = res[i]?.next?.probabilities;
        if (!p)
            throw new Error(`llama.cpp returned no probabilities at position ${i}`);
        V ??= p.size;
        return p;
    });
}

function dense(map, n) {
    const v = new Array(n).fill(0);
    for (const [id, p] of map)
        v[id] = p;
    return v;
}

async function timed(what, part) {
    const t = performance.now();
    await part();
    seconds[what] = (performance.now() - t) / 1000;
}

if (req.tokenize)
    await timed("tokenize", async () => {
        out.tokenize = req.tokenize.map((text) => Array.from(model.tokenize(text, false)));
    });

if (req.probs) await timed("probs", async () => {
    out.probs = [];
    for (const [k, r] of req.probs.entries()) {
        check(r.ids, `probs[${k}]`);
        const last = r.ids.length - 1;
        const maps = await evaluate(r.ids, (i) => r.positions !== "last" || i === last);
        const got = maps.filter((m) => m !== undefined);
        if (r.top_k)
            out.probs.push({
                top: got.map((m) => [...m.entries()].slice(0, r.top_k).map(([id, p]) => [id, Math.log(p)])),
            });
        else
            out.probs.push({ probs: got.map((m) => dense(m, V)) });
    }
});

if (req.greedy) await timed("greedy", async () => {
    out.greedy = [];
    for (const [k, r] of req.greedy.entries()) {
        check(r.ids.concat(new Array(r.n).fill(0)), `greedy[${k}]`);
        await seq.clearHistory();
        const gen = { generateNext: { token: true, probabilities: true } };
        let input = r.ids.map((id, i) => (i === r.ids.length - 1 ? [id, gen] : id));
        const g = { ids: [], p1: [], gap: [] };
        for (let step = 0; step < r.n; step++) {
            const res = await seq.controlledEvaluate(input);
            const next = res[input.length - 1]?.next;
            if (!next || next.token == null)
                throw new Error(`greedy[${k}]: no token at step ${step}`);
            const [[, p1], [, p2]] = [...next.probabilities.entries()].slice(0, 2);
            V ??= next.probabilities.size;
            g.ids.push(next.token);
            g.p1.push(p1);
            g.gap.push(Math.log(p1) - Math.log(p2));
            input = [[next.token, gen]];
        }
        out.greedy.push(g);
    }
});

if (req.nll) await timed("nll", async () => {
    let sum = 0, count = 0;
    const perSeq = [];
    for (const [k, ids] of req.nll.entries()) {
        check(ids, `nll[${k}]`);
        const maps = await evaluate(ids, (i) => i < ids.length - 1);
        let s = 0;
        for (let i = 0; i + 1 < ids.length; i++)
            s -= Math.log(maps[i].get(ids[i + 1]));
        perSeq.push([s, ids.length - 1]);
        sum += s;
        count += ids.length - 1;
    }
    out.nll = { sum, count, per_seq: perSeq };
});

out.info.seconds = seconds;
out.info.vocab_size = V;
out.info.log = logs;
fs.writeFileSync(outPath + ".tmp", JSON.stringify(out));
fs.renameSync(outPath + ".tmp", outPath);
await context.dispose();
await model.dispose();
await llama.dispose();
