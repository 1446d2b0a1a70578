#!/usr/bin/env python3
"""Helpers of scripts/bench-embed.sh (run them through it; it makes the virtualenv they need).

  bench-embed.py prepare REFERENCE.jsonl TOKENIZER.json TINYRT MODEL.gguf REPEATS WORK
      WORK/texts.txt: the oracle texts, one a line (newlines made spaces, texts over 256 tokens
      cut by words until both Hugging Face's tokenizer and `tinyrt tokenize` count <= 256), the
      whole list REPEATS times; WORK/one.txt: the first text alone; WORK/meta.json: counts.
  bench-embed.py check REFERENCE.jsonl ONNX_DIR THREADS
      Embeds the 25 oracle texts with each model in ONNX_DIR, at batch 1 and all 25 padded in one
      batch, and compares with the reference's f32 embeddings (exit 1 if f32 is off).
  bench-embed.py ort ONNX_DIR TEXTS THREADS OUT.json
      Times tokenization + session.run over TEXTS at batch 1 and 32 for each model.
  bench-embed.py report WORK
      The Markdown table from WORK/times.tsv, WORK/meta.json, WORK/ort.*.json, WORK/llama.*.err.
"""
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

MAX_TOKENS = 256
BATCHES = (1, 32)
# f32: the graph as built, fused by onnxruntime's transformer optimizer; int8: that graph with
# onnxruntime.quantization.quantize_dynamic (int8 weights, activations quantized per call).
ORT_MODELS = (("fused.onnx", "onnxruntime f32"), ("int8.onnx", "onnxruntime int8 (dynamic)"))
# Tolerance for the f32 graph against sentence-transformers; the reference is printed to 7 digits.
F32_TOL = 5e-5
# The int8 graph is only required to be the same model: per-channel dynamic int8 reaches 0.97.
INT8_MIN_COSINE = 0.95


def die(msg, code=2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def load_tokenizer(path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    # tokenizer.json pads and truncates to 128; sentence-transformers uses max_seq_length 256
    # and pads each batch to its longest text.
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def references(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tinyrt_count(tinyrt, model, text):
    out = subprocess.run([tinyrt, "tokenize", model, "-p", text, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        die(f"tinyrt tokenize failed: {out.stderr.strip()}")
    return len(json.loads(out.stdout)["ids"])


def llama_budget(tokens, per_decode):
    def decodes(budget):
        n, used = 1, 0
        for t in tokens:
            if used + t > budget:
                n, used = n + 1, 0
            used += t
        return n

    # Multiples of 256: llama.cpp pads the context to one, and a batch that is not aborts in ggml.
    budget = 256 * math.ceil(max(tokens) / 256)
    while len(tokens) / decodes(budget) < per_decode and budget < sum(tokens):
        budget += 256
    return budget


def prepare(ref_path, tok_path, tinyrt, model, repeats, work):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_path)
    tok.no_truncation()
    tok.no_padding()
    count = lambda t: len(tok.encode(t).ids)  # noqa: E731
    texts, cut = [], []
    for r in references(ref_path):
        text = " ".join(re.split(r"\r\n|\n|\r", r["text"]))
        if count(text) > MAX_TOKENS or tinyrt_count(tinyrt, model, text) > MAX_TOKENS:
            words = text.split(" ")
            while count(" ".join(words)) > MAX_TOKENS or tinyrt_count(tinyrt, model, " ".join(words)) > MAX_TOKENS:
                # Drop words in steps sized by the excess, one at a time near the limit.
                words = words[: -max(1, (count(" ".join(words)) - MAX_TOKENS) // 2)]
            text = " ".join(words)
            cut.append(r["index"])
        texts.append(text)
    tokens = [count(t) for t in texts]
    all_texts = texts * repeats
    with open(os.path.join(work, "texts.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in all_texts))
    with open(os.path.join(work, "one.txt"), "w", encoding="utf-8") as f:
        f.write(texts[0] + "\n")
    meta = {
        "texts": len(all_texts),
        "tokens": sum(tokens) * repeats,
        "one_tokens": tokens[0],
        "longest": max(tokens),
        "mean_tokens": sum(tokens) / len(tokens),
        "cut": cut,
        "repeats": repeats,
        # llama-embedding packs texts into one decode up to a token budget (-b = -ub = -c): the
        # smallest that holds the longest text stands in for batch 1, and for batch 32 the smallest
        # multiple of 256 whose decodes hold 32 texts on average.
        "llama_budget": {"1": llama_budget(tokens, 1), "32": llama_budget([count(t) for t in all_texts], 32)},
    }
    with open(os.path.join(work, "meta.json"), "w") as f:
        json.dump(meta, f)
    print(json.dumps(meta))


def session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feed(encodings):
    import numpy as np

    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def check(ref_path, onnx_dir, threads):
    import numpy as np

    refs = references(ref_path)
    tok = load_tokenizer(os.path.join(onnx_dir, "tokenizer.json"))
    encs = tok.encode_batch([r["text"] for r in refs])
    bad = [r["index"] for r, e in zip(refs, encs) if [i for i, m in zip(e.ids, e.attention_mask) if m] != r["ids"]]
    if bad:
        die(f"the tokenizer's ids differ from the reference's for texts {bad}", 1)
    want = np.array([r["embedding"]["f32"] for r in refs], dtype=np.float64)
    result, failed = {}, False
    for name in ("model.onnx", "fused.onnx", "int8.onnx"):
        path = os.path.join(onnx_dir, name)
        if not os.path.exists(path):
            continue
        s = session(path, threads)
        one = np.concatenate([s.run(None, feed(tok.encode_batch([r["text"]])))[0] for r in refs])
        padded = s.run(None, feed(encs))[0]
        d1, d25 = float(np.abs(one - want).max()), float(np.abs(padded - want).max())
        cos = float(min((one * want).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(one, axis=1)))
        result[name] = {"max_abs_b1": d1, "max_abs_b25_padded": d25, "min_cosine": cos}
        print(f"{name}: max |d| vs reference {d1:.2e} (batch 1), {d25:.2e} (25 padded), min cosine {cos:.6f}", file=sys.stderr)
        if max(d1, d25) > F32_TOL if name != "int8.onnx" else cos < INT8_MIN_COSINE:
            failed = True
    with open(os.path.join(onnx_dir, "check.json"), "w") as f:
        json.dump(result, f)
    if failed:
        die(f"ONNX embeddings off the reference (f32: max |d| over {F32_TOL}, int8: cosine under {INT8_MIN_COSINE})", 1)


def ort_times(onnx_dir, texts_path, threads, out_path):
    tok = load_tokenizer(os.path.join(onnx_dir, "tokenizer.json"))
    with open(texts_path, encoding="utf-8") as f:
        given = f.read().split("\n")[:-1]
    times = {}
    for name, _ in ORT_MODELS:
        path = os.path.join(onnx_dir, name)
        if not os.path.exists(path):
            continue
        s = session(path, threads)
        for b in BATCHES:
            s.run(None, feed(tok.encode_batch(given[:b])))  # first call allocates
            t0 = time.perf_counter()
            # As sentence-transformers' encode does: longest texts first, so that each batch pads
            # to little more than its own texts (the order of the results is left as it is).
            texts = sorted(given, key=len, reverse=True)
            for i in range(0, len(texts), b):
                s.run(None, feed(tok.encode_batch(texts[i : i + b])))
            times[f"{name}:{b}"] = time.perf_counter() - t0
    with open(out_path, "w") as f:
        json.dump(times, f)


def decode_stats(err_path):
    seqs = [int(m) for m in re.findall(r"batch_decode: n_tokens = \d+, n_seq = (\d+)", open(err_path, errors="replace").read())]
    return sum(seqs) / len(seqs) if seqs else None


def report(work):
    meta = json.load(open(os.path.join(work, "meta.json")))
    n, tokens = meta["texts"], meta["tokens"]
    # CLI rows: (round, tool, model, batch) -> wall seconds of the full and of the one-text file.
    wall = {}
    for line in open(os.path.join(work, "times.tsv")):
        rnd, tool, model, batch, which, secs = line.split("\t")
        wall.setdefault((tool, model, batch), {}).setdefault(int(rnd), {})[which] = float(secs)
    rows = {}  # (label, model, batch) -> {round: (sentences/s, tokens/s)}
    per_pass = {}
    for (tool, model, batch), rounds in wall.items():
        for rnd, w in rounds.items():
            dt = w["full"] - w["one"]
            if dt <= 0:
                die(f"{tool} {model} batch {batch}: the full run was not slower than the one-text run")
            rows.setdefault((tool, model, batch), {})[rnd] = ((n - 1) / dt, (tokens - meta["one_tokens"]) / dt)
        per_pass[(tool, model, batch)] = batch
        if tool == "llama-embedding":
            stats = [decode_stats(os.path.join(work, f"llama.{model}.{batch}.{r}.err")) for r in rounds]
            stats = [x for x in stats if x is not None]
            mean = f"{statistics.mean(stats):.1f} on average" if stats else "?"
            per_pass[(tool, model, batch)] = f"{mean} (budget {meta['llama_budget'][batch]} tokens)"
    for path in sorted(os.listdir(work)):
        m = re.fullmatch(r"ort\.(\d+)\.json", path)
        if not m:
            continue
        for key, secs in json.load(open(os.path.join(work, path))).items():
            name, batch = key.split(":")
            key = (dict(ORT_MODELS)[name], "f32 safetensors", batch)
            rows.setdefault(key, {})[int(m.group(1))] = (n / secs, tokens / secs)
            per_pass[key] = f"{batch} (sorted by length, padded)"

    order = {"tinyrt": 0, "llama-embedding": 1}
    # The ratio is against tinyrt on the same GGUF; onnxruntime's rows against tinyrt f32.
    print("| batch | runtime | weights | texts per forward pass | sentences/s | tokens/s | tinyrt ÷ it (range over rounds) |")
    print("| ---: | --- | --- | --- | ---: | ---: | ---: |")
    for group in (str(b) for b in BATCHES):
        keys = sorted((k for k in rows if k[2] == group), key=lambda k: (order.get(k[0], 2), k[0], k[1]))
        for key in keys:
            base = rows.get(("tinyrt", key[1] if key[0] == "llama-embedding" else "f32", group))
            r = rows[key]
            sps = statistics.median(v[0] for v in r.values())
            tps = statistics.median(v[1] for v in r.values())
            ratio = "-"
            if base and key[0] != "tinyrt":
                ratios = [base[rnd][0] / r[rnd][0] for rnd in r if rnd in base]
                ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            print(f"| {group} | {key[0]} | {key[1]} | {per_pass[key]} | {sps:.1f} | {tps:.0f} | {ratio} |")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prepare" and len(args) == 6:
        prepare(args[0], args[1], args[2], args[3], int(args[4]), args[5])
    elif cmd == "check" and len(args) == 3:
        check(args[0], args[1], int(args[2]))
    elif cmd == "ort" and len(args) == 4:
        ort_times(args[0], args[1], int(args[2]), args[3])
    elif cmd == "report" and len(args) == 1:
        report(args[0])
    else:
        die(f"bad arguments for {cmd!r} (see {sys.argv[0]} -h)")


if __name__ == "__main__":
    main()
