"""``python -m harness.target schema`` prints the target file's JSON schema (docs/target.schema.json);
``python -m harness.target check FILE`` validates a target file and prints what the run will see."""

from __future__ import annotations

import json
import sys

from harness.target import TargetError, load, schema


def main(argv: list[str]) -> int:
    if argv[:1] == ["schema"]:
        sys.stdout.write(json.dumps(schema(), indent=2) + "\n")
        return 0
    if len(argv) == 2 and argv[0] == "check":
        try:
            target = load(argv[1])
        except TargetError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        sys.stdout.write(json.dumps(target.summary(), indent=2) + "\n")
        return 0
    sys.stderr.write("usage: python -m harness.target schema | check FILE\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
