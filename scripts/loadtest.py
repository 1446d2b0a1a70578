#!/usr/bin/env python3
"""Bounded load test of an OpenAI-compatible server on loopback (tinyrt serve, llama-server).

N client threads send streaming requests back to back for S seconds (and at most
--max-requests in all), then stop by themselves. Reports aggregate generated tokens per second,
time to first token (TTFT) and inter-token latency (ITL) percentiles, errors, and, with --pid,
the server's resident memory over the run (peak, and first vs last sample, to see it flat).

Standard library only. Loopback only: any other host is refused.

    scripts/loadtest.py --url http://127.0.0.1:8080 --clients 8 --seconds 60 --max-tokens 64 \
        [--endpoint chat|completions] [--ignore-eos] [--pid PID] [--json OUT.json]
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List five tips for learning a new programming language.",
    "What are the main differences between a virus and a bacterium?",
    "Describe the water cycle in a few sentences.",
    "Give me a recipe for a simple tomato soup.",
    "Why is the sky blue? Answer briefly.",
    "Summarize the plot of a heist movie you invent on the spot.",
    "Write a haiku about autumn leaves, then explain it.",
    "How do I reverse a linked list? Describe the idea step by step.",
    "What should I pack for a three-day hiking trip?",
    "Compare trains and planes for a 500 km journey.",
    "Tell me about the history of the printing press.",
    "Write a polite email asking a colleague to review a document.",
    "What is the difference between weather and climate?",
    "Invent a new board game and explain its rules.",
]


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def rss_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return (
            int(fields["VmRSS"].split()[0]),
            int(fields.get("VmHWM", fields["VmRSS"]).split()[0]),
        )
    except (OSError, KeyError, ValueError):
        return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ttft = []
        self.itl = []
        self.tokens = 0
        self.requests = 0
        self.errors = 0
        self.error_samples = []

    def error(self, what):
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(what[:300])


def one_request(host, port, path, body, headers, timeout, stats):
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            stats.error(f"HTTP {resp.status}: {resp.read(300)!r}")
            return
        first = None
        last = None
        gaps = []
        n_chunks = 0
        usage_tokens = None
        done = False
        while not done:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            try:
                obj = json.loads(data)
            except ValueError:
                stats.error(f"bad SSE data {data[:100]!r}")
                return
            if obj.get("usage"):
                usage_tokens = obj["usage"].get("completion_tokens")
            for ch in obj.get("choices") or []:
                text = (ch.get("delta") or {}).get("content") or ch.get("text") or ""
                if text:
                    now = time.monotonic()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
                    n_chunks += 1
        if not done:
            stats.error("stream ended without [DONE]")
            return
        with stats.lock:
            stats.requests += 1
            stats.tokens += usage_tokens if usage_tokens is not None else n_chunks
            if first is not None:
                stats.ttft.append(first - t0)
            stats.itl.extend(gaps)
    except (OSError, http.client.HTTPException) as e:
        stats.error(f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-requests", type=int, default=100000)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    ap.add_argument("--model", default=None, help="default: the first of GET /v1/models")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--pid", type=int, default=None, help="server pid (for its RSS)")
    ap.add_argument("--json", default=None, help="write the report here too")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument(
        "--json-schema",
        default=None,
        help="a JSON schema file: every request asks for response_format json_schema with it",
    )
    ap.add_argument(
        "--ignore-eos",
        action="store_true",
        help="ask for max_tokens every time (llama-server's and tinyrt's ignore_eos)",
    )
    a = ap.parse_args()
    if not (1 <= a.clients <= 256) or not (0 < a.seconds <= 3600):
        sys.exit("loadtest: --clients must be 1..256 and --seconds 0..3600")
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"loadtest: {host} is not loopback; this script only targets loopback")
    headers = {"Content-Type": "application/json"}
    if a.api_key:
        headers["Authorization"] = f"Bearer {a.api_key}"
    if a.model is None:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=a.timeout)
            conn.request("GET", "/v1/models", headers=headers)
            a.model = json.loads(conn.getresponse().read())["data"][0]["id"]
            conn.close()
        except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError) as e:
            sys.exit(f"loadtest: cannot read the model's id from GET /v1/models ({e}); give --model")
    schema = None
    if a.json_schema:
        with open(a.json_schema) as f:
            schema = json.load(f)
    stats = Stats()
    deadline = time.monotonic() + a.seconds
    issued = [0]
    issue_lock = threading.Lock()

    def client(i):
        k = i
        while time.monotonic() < deadline:
            with issue_lock:
                if issued[0] >= a.max_requests:
                    return
                issued[0] += 1
            prompt = PROMPTS[k % len(PROMPTS)]
            k += a.clients
            if a.endpoint == "chat":
                path = "/v1/chat/completions"
                req = {"messages": [{"role": "user", "content": prompt}]}
            else:
                path = "/v1/completions"
                req = {"prompt": prompt}
            req.update(
                {
                    "model": a.model,
                    "max_tokens": a.max_tokens,
                    "temperature": 0,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            )
            if a.ignore_eos:
                req["ignore_eos"] = True
            if schema is not None:
                req["response_format"] = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
            one_request(host, port, path, json.dumps(req), headers, a.timeout, stats)

    rss = []
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if a.pid:
            r = rss_kib(a.pid)
            if r:
                rss.append((time.monotonic() - t0, r[0], r[1]))
        for t in threads:
            t.join(timeout=1.0 / len(threads))
        if time.monotonic() > deadline + a.timeout + 5:
            stats.error("clients did not finish in time")
            break
    wall = time.monotonic() - t0
    ms = lambda v: None if v is None else round(v * 1000, 1)
    report = {
        "url": a.url,
        "endpoint": a.endpoint,
        "clients": a.clients,
        "seconds": round(wall, 1),
        "requests": stats.requests,
        "errors": stats.errors,
        "generated_tokens": stats.tokens,
        "tok_per_s": round(stats.tokens / wall, 1) if wall > 0 else None,
        "ttft_ms_p50": ms(percentile(stats.ttft, 50)),
        "ttft_ms_p99": ms(percentile(stats.ttft, 99)),
        "itl_ms_p50": ms(percentile(stats.itl, 50)),
        "itl_ms_p99": ms(percentile(stats.itl, 99)),
    }
    if rss:
        n = max(1, len(rss) // 10)
        report["rss_mib_peak"] = round(max(r[2] for r in rss) / 1024, 1)
        report["rss_mib_first"] = round(sum(r[1] for r in rss[:n]) / n / 1024, 1)
        report["rss_mib_last"] = round(sum(r[1] for r in rss[-n:]) / n / 1024, 1)
    if stats.error_samples:
        report["error_samples"] = stats.error_samples
    text = json.dumps(report, indent=1)
    print(text)
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, a.json)
    return 1 if stats.errors else 0


if __name__ == "__main__":
    sys.exit(main())
