#!/usr/bin/env python3
"""Tool-use chat templates rendered by Python's jinja2 in the environment `transformers` sets up
(the one of scripts/gen-chat-fixtures.py): the Qwen 2.5 template of the tiny Qwen2 checkpoint
(../shared/oracles/hf/models/tiny-qwen2) with `tools`, an assistant `tool_calls` turn (arguments
as an object, as transformers passes them) and `tool` results. Writes
tests/golden/chat-templates/tools.json, read by tests/tests/chat.rs."""

import importlib.util
import json
import pathlib
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts

ROOT = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts/gen-chat-fixtures.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather of a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
    {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": {}}}]}
CONVERSATIONS = {
    "tools-ask": ([{"role": "user", "content": "Weather in Paris?"}], True),
    "tools-system-ask": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Time?"}], True),
    "tools-results": ([
        {"role": "user", "content": "Weather and time in Paris?"}, CALL,
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "{\"sky\": \"sunny\"}"},
        {"role": "tool", "tool_call_id": "c2", "name": "get_time", "content": "12:00"},
        {"role": "user", "content": "Thanks, and tomorrow?"}], True),
}


def main():
    cfg = json.loads((ROOT.parent / "shared/oracles/hf/models/tiny-qwen2/tokenizer_config.json").read_text())
    src = cfg["chat_template"]
    env = gen.environment()
    t = env.from_string(src)
    cases = []
    for conv, (messages, agp) in CONVERSATIONS.items():
        cases.append({"conversation": conv, "messages": messages, "tools": TOOLS, "add_generation_prompt": agp,
                      "expected": t.render(messages=messages, tools=TOOLS, add_generation_prompt=agp,
                                           bos_token="", eos_token="<|im_end|>")})
    doc = {"generator": "scripts/gen-tool-chat-fixtures.py", "template": src, "cases": cases}
    out = ROOT / "tests/golden/chat-templates/tools.json"
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
