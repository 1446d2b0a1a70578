#!/usr/bin/env python3
"""Structured output and tool calling against a running `tinyrt serve`, with the official
`openai` package and `jsonschema`: a two-tool conversation (the model calls a tool, gets the
tool's answer back and answers), streamed tool-call deltas equal to the plain answer,
`response_format` json_schema / json_object validated, a `max_tokens` cut-off reported as
`length`, and bad schemas refused with 400. Run by cli/tests/serve.rs
(structured_output_and_tools_with_the_openai_client); prints "all checks passed" on success."""

import argparse
import json
import sys

import jsonschema
import openai


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    print(f"ok: {what}")


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "pattern": "^[A-Z][a-z]+/[A-Z][a-z]+$"}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather of a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The local time of a time zone",
                                      "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


def check_calls(calls, what):
    check(calls, f"{what}: the answer has tool calls")
    for c in calls:
        check(c.type == "function" and c.function.name in SCHEMAS and c.id, f"{what}: call shape {c}")
        args = json.loads(c.function.arguments)
        jsonschema.validate(args, SCHEMAS[c.function.name])
        check(True, f"{what}: {c.function.name}({c.function.arguments}) validates")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key="none", max_retries=0, timeout=300)
    m = a.model

    # A two-tool conversation: the call, the tool's answer, the model's answer.
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the weather in Paris right now?"}]
    r = client.chat.completions.create(model=m, messages=msgs, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                       max_tokens=96, temperature=0)
    ch = r.choices[0]
    check(ch.finish_reason == "tool_calls", f"a required call finishes with tool_calls ({ch.finish_reason})")
    check_calls(ch.message.tool_calls, "required")
    call = ch.message.tool_calls[0]

    stream = client.chat.completions.create(model=m, messages=msgs, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                            max_tokens=96, temperature=0, stream=True)
    got, finish = {}, None
    for chunk in stream:
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                e = got.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                if d.id:
                    e["id"] = d.id
                if d.function and d.function.name:
                    e["name"] += d.function.name
                if d.function and d.function.arguments:
                    e["arguments"] += d.function.arguments
            if c.finish_reason:
                finish = c.finish_reason
    streamed = [got[i] for i in sorted(got)]
    plain = [{"name": c.function.name, "arguments": c.function.arguments} for c in ch.message.tool_calls]
    check(finish == "tool_calls" and [{"name": s["name"], "arguments": s["arguments"]} for s in streamed] == plain,
          f"streamed tool-call deltas equal the plain answer ({streamed})")

    named = client.chat.completions.create(
        model=m, messages=[{"role": "user", "content": "What time is it in Tokyo?"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=64, temperature=0)
    check_calls(named.choices[0].message.tool_calls, "named")
    check([c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"],
          "a named tool_choice calls that function once")

    msgs.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    msgs.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(
        {"city": "Paris", "temperature": 18, "unit": "celsius", "sky": "sunny"})})
    r = client.chat.completions.create(model=m, messages=msgs, tools=TOOLS, tool_choice="none",
                                       max_tokens=48, temperature=0)
    ch = r.choices[0]
    check(ch.message.tool_calls is None and ch.message.content, f"the answer after the tool's result: {ch.message.content!r}")
    r = client.chat.completions.create(model=m, messages=msgs, tools=TOOLS, max_tokens=96, temperature=0)
    ch = r.choices[0]
    if ch.message.tool_calls:
        check_calls(ch.message.tool_calls, "auto")
    else:
        check(isinstance(ch.message.content, str), f"auto answers text or calls: {ch.message.content!r}")

    # response_format: json_schema (several seeds) and json_object.
    person = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}},
        "required": ["name", "age", "tags"], "additionalProperties": False}
    for seed in (1, 2, 3):
        r = client.chat.completions.create(
            model=m, messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=128,
            temperature=0.8, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": person}})
        ch = r.choices[0]
        check(ch.finish_reason == "stop", f"seed {seed}: the value completes ({ch.finish_reason})")
        jsonschema.validate(json.loads(ch.message.content), person)
        check(True, f"seed {seed}: {ch.message.content} validates")
    r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": "Give me a JSON object."}],
                                       max_tokens=64, temperature=0, response_format={"type": "json_object"})
    ch = r.choices[0]
    if ch.finish_reason == "stop":
        check(isinstance(json.loads(ch.message.content), dict), f"json_object parses: {ch.message.content}")
    r = client.chat.completions.create(
        model=m, messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=3, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": person}})
    check(r.choices[0].finish_reason == "length", "a value cut by max_tokens is reported as length")

    for bad in ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": "a"}}},
                {"type": "json_schema", "json_schema": {"name": "x"}},
                {"type": "yaml"}):
        try:
            client.chat.completions.create(model=m, messages=[{"role": "user", "content": "x"}], max_tokens=4,
                                           response_format=bad)
            check(False, f"bad response_format {bad} is refused")
        except openai.BadRequestError as e:
            check(e.status_code == 400, f"bad response_format {bad} is a 400")
    try:
        client.chat.completions.create(model=m, messages=[{"role": "user", "content": "x"}], max_tokens=4,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}],
                                       tool_choice="required")
        check(False, "a bad tool schema is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400, "a bad tool schema is a 400")
    print("all checks passed")


if __name__ == "__main__":
    main()
