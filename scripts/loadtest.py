#!/usr/bin/env python3
"""Bounded load test of an OpenAI-compatible server on this machine (loopback only).

  loadtest.py --port 8080 [--clients 8] [--seconds 30] [--max-requests N] [--max-tokens 64]
              [--chat] [--api-key KEY] [--server-pid PID] [--json]

N clients each send streamed requests one after another (greedy, `max_tokens` tokens, distinct
prompts) until S seconds passed or N requests were sent in all; requests in flight at the end
finish. Reports aggregate generated tokens/s, time to first token and inter-token latency
(p50/p99; latencies between text chunks), errors, and with --server-pid the server's peak and current RSS (from /proc), so a
long run shows whether memory stays flat. Works against `tinyrt serve` and `llama-server`
alike (OpenAI's SSE shape; tokens are the final usage's `completion_tokens`, else the text
chunks). Standard library only.
"""
import argparse
import http.client
import json
import sys
import threading
import time

WORDS = ("river stone light morning garden window quiet paper letter journey city music "
         "forest winter harbor lantern bridge meadow").split()


def prompt(i):
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(8 + i % 24)]
    return f"Request {i}: write about " + " ".join(words)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            vals = dict(l.split(":", 1) for l in f if ":" in l)
        return int(vals["VmHWM"].split()[0]), int(vals["VmRSS"].split()[0])
    except (OSError, KeyError, ValueError):
        return None, None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ttft, self.itl, self.tokens, self.errors, self.done = [], [], 0, 0, 0
        self.messages = {}

    def error(self, what):
        with self.lock:
            self.errors += 1
            self.messages[what] = self.messages.get(what, 0) + 1


def one_request(a, i, stats):
    path = "/v1/chat/completions" if a.chat else "/v1/completions"
    body = {"max_tokens": a.max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if a.chat:
        body["messages"] = [{"role": "user", "content": prompt(i)}]
    else:
        body["prompt"] = prompt(i)
    headers = {"Content-Type": "application/json"}
    if a.api_key:
        headers["Authorization"] = f"Bearer {a.api_key}"
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=a.timeout)
    try:
        conn.request("POST", path, json.dumps(body), headers)
        r = conn.getresponse()
        if r.status != 200:
            stats.error(f"HTTP {r.status}")
            r.read()
            return
        last, n, ttft, gaps, usage = None, 0, None, [], None
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                stats.error("error in stream")
                return
            if chunk.get("usage"):
                usage = chunk["usage"].get("completion_tokens")
            choices = chunk.get("choices") or []
            if not choices:
                continue
            c = choices[0]
            piece = (c.get("delta") or {}).get("content") if a.chat else c.get("text")
            if piece:
                now = time.monotonic()
                if ttft is None:
                    ttft = now - t0
                else:
                    gaps.append(now - last)
                last = now
                n += 1
        with stats.lock:
            stats.done += 1
            stats.tokens += usage if isinstance(usage, int) else n
            if ttft is not None:
                stats.ttft.append(ttft)
            stats.itl.extend(gaps)
    except (OSError, http.client.HTTPException, ValueError) as e:
        stats.error(type(e).__name__)
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-requests", type=int, default=100000)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--api-key")
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not (1 <= a.clients <= 256 and 0 < a.seconds <= 7200 and a.max_requests >= 1):
        sys.exit("loadtest.py: 1..256 clients, 0..7200 seconds, at least one request")

    stats = Stats()
    next_id = [0]
    id_lock = threading.Lock()
    deadline = time.monotonic() + a.seconds
    peak = [None]

    def client():
        while time.monotonic() < deadline:
            with id_lock:
                i = next_id[0]
                if i >= a.max_requests:
                    return
                next_id[0] += 1
            one_request(a, i, stats)

    rss_samples = []

    def watch():
        while any(t.is_alive() for t in threads):
            hwm, rss = rss_kib(a.server_pid)
            if rss is not None:
                rss_samples.append(rss)
                peak[0] = hwm
            time.sleep(1)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(a.clients)]
    for t in threads:
        t.start()
    if a.server_pid:
        w = threading.Thread(target=watch, daemon=True)
        w.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    out = {
        "clients": a.clients,
        "seconds": round(wall, 2),
        "requests": stats.done,
        "errors": stats.errors,
        "error_kinds": stats.messages,
        "generated_tokens": stats.tokens,
        "tok_per_s": round(stats.tokens / wall, 2),
        "ttft_p50_ms": round(pct(stats.ttft, 50) * 1e3, 1),
        "ttft_p99_ms": round(pct(stats.ttft, 99) * 1e3, 1),
        "itl_p50_ms": round(pct(stats.itl, 50) * 1e3, 2),
        "itl_p99_ms": round(pct(stats.itl, 99) * 1e3, 2),
    }
    if a.server_pid:
        hwm, rss = rss_kib(a.server_pid)
        out["server_peak_rss_mib"] = round((peak[0] or hwm or 0) / 1024, 1)
        out["server_rss_mib_first_last"] = [round(x / 1024, 1) for x in (rss_samples[:1] + rss_samples[-1:])]
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")
    if stats.done == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
