#!/usr/bin/env python3
"""Validate constrained outputs against their JSON schemas (tests/tests/structured.rs).

Reads JSON lines {"schema": FILE, "output": TEXT, "case": NAME} from argv[1]; each output must
parse as JSON and validate under its schema (Draft 2020-12, with the format checks the
installed jsonschema supports; numbers as decimals, so that multipleOf is exact rather than
binary floating point's). Prints one line per failure and exits 1 if any; prints
"ok N" otherwise.
"""
import json
import sys
from decimal import Decimal

import jsonschema


def main():
    failures = 0
    n = 0
    schemas = {}
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            case = json.loads(line)
            path = case["schema"]
            if path not in schemas:
                with open(path, encoding="utf-8") as s:
                    # Decimal numbers: multipleOf 0.01 is exact, as JSON Schema means it.
                    schema = json.load(s, parse_float=Decimal)
                jsonschema.Draft202012Validator.check_schema(schema)
                schemas[path] = jsonschema.Draft202012Validator(
                    schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
                )
            n += 1
            try:
                value = json.loads(case["output"], parse_float=Decimal)
            except ValueError as e:
                failures += 1
                print(f"{case['case']}: not JSON ({e}): {case['output']!r}")
                continue
            errors = list(schemas[path].iter_errors(value))
            if errors:
                failures += 1
                print(f"{case['case']}: {errors[0].message}: {case['output']!r}")
    if failures:
        sys.exit(1)
    print(f"ok {n}")


if __name__ == "__main__":
    main()
