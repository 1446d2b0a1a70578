#!/usr/bin/env python3
"""Drives a running `tinyrt serve` with the official `openai` package: models, chat (plain,
streamed, logprobs), completions, embeddings, errors and the API key. Run by
cli/tests/serve.rs (openai_python_client); prints "all checks passed" on success."""

import argparse
import sys

import openai


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--embedding-model")
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=120)

    ids = [m.id for m in client.models.list().data]
    check(a.model in ids, f"models lists {a.model}: {ids}")

    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=16, temperature=0)
    text = r.choices[0].message.content
    check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", "chat answer shape")
    check(r.choices[0].finish_reason in ("stop", "length"), "chat finish reason")
    check(r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 16, f"chat usage {r.usage}")

    again = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=16, temperature=0)
    check(again.choices[0].message.content == text, "greedy chat is reproducible")
    # All but the last token, or the last 64 when the prompt reaches the tiled attention class.
    cached = again.usage.prompt_tokens_details.cached_tokens
    n = again.usage.prompt_tokens
    check(cached == (n - 1 if n < 64 else n - 64), f"the repeated prompt is reused from the cache: {again.usage}")

    stream = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    check("".join(pieces) == text, "streamed chat equals the plain answer")
    check(finish in ("stop", "length") and usage is not None and usage.completion_tokens > 0,
          f"stream ends with a finish reason and usage ({finish}, {usage})")

    r = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    check(len(lp) >= 1 and all(len(t.top_logprobs) == 3 for t in lp), "chat logprobs with top 3")
    check(all(t.logprob <= 0 and abs(t.logprob - t.top_logprobs[0].logprob) < 1e-6 for t in lp),
          "greedy tokens are the most likely")

    r = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=8, temperature=0.9,
                                       top_p=0.9, seed=7)
    r2 = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=8, temperature=0.9,
                                        top_p=0.9, seed=7)
    check(r.choices[0].message.content == r2.choices[0].message.content, "a seeded sample is reproducible")

    r = client.completions.create(model=a.model, prompt="The capital of France is", max_tokens=8, temperature=0)
    check(r.object == "text_completion" and isinstance(r.choices[0].text, str), "completion answer shape")
    s = client.completions.create(model=a.model, prompt="The capital of France is", max_tokens=8, temperature=0,
                                  stream=True)
    check("".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text, "streamed completion")
    r = client.completions.create(model=a.model, prompt="Once upon a time", max_tokens=30, temperature=0,
                                  stop=["\n", "."])
    check("\n" not in r.choices[0].text and "." not in r.choices[0].text, "stop strings are not emitted")

    if a.embedding_model:
        e = client.embeddings.create(model=a.embedding_model, input=["a cat", "a dog"])
        check(len(e.data) == 2 and len(e.data[0].embedding) > 0, "embeddings (base64 by default)")
        norm = sum(x * x for x in e.data[0].embedding) ** 0.5
        check(abs(norm - 1) < 1e-4, f"embeddings are unit vectors ({norm})")
        f = client.embeddings.create(model=a.embedding_model, input="a cat", encoding_format="float")
        check(max(abs(x - y) for x, y in zip(f.data[0].embedding, e.data[0].embedding)) == 0,
              "float and base64 embeddings agree")
    else:
        print("skipped: embeddings (no embedding model)")

    try:
        client.chat.completions.create(model="no-such-model", messages=msgs, max_tokens=2)
        check(False, "an unknown model is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "unknown model" in e.message, "an unknown model is a 400")
    try:
        client.chat.completions.create(model=a.model, messages=msgs, max_tokens=0)
        check(False, "max_tokens 0 is refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "max_tokens", "max_tokens 0 is a 400 naming the field")
    bad = openai.OpenAI(base_url=a.base_url, api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong key is refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "a wrong key is a 401")
    print("all checks passed")


if __name__ == "__main__":
    main()
