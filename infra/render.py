"""Fill the ``${NAME}`` placeholders of an infra template (RayJob, cluster-launcher config).

Usage (from the repository root)::

    python infra/render.py infra/kuberay/rayjob.yaml \\
        --set MANIFEST_URI=s3://my-bucket/manifests/batch1.jsonl \\
        --set OUTPUT_URI=s3://my-bucket/labels/batch1/ ... > rayjob.rendered.yaml

Values come from ``--set NAME=VALUE`` first, then from environment variables
of the same name. Unlike a bare ``envsubst``, only ``${UPPER_CASE}`` names are
touched (``$PATH``, ``$(cmd)`` and lower-case names stay as written), every
placeholder must get a value (all missing ones are listed), and values that
would break the YAML or the shell command line they land in (whitespace,
quotes, ``$``, backslash, backquote) are refused. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_UNSAFE = re.compile(r"[\s'\"$\\`]")


def placeholders(text: str) -> list[str]:
    """The placeholder names in ``text``, in order of first appearance."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def render(text: str, values: Mapping[str, str], source: str = "<template>") -> str:
    """``text`` with every ``${NAME}`` replaced by ``values[NAME]``.

    Raises ValueError naming ``source`` and every placeholder without a value,
    or the first value that is empty or unsafe.
    """
    names = placeholders(text)
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(
            f"{source}: no value for placeholder(s) {', '.join(missing)} (use --set NAME=VALUE or the environment)"
        )
    for name in names:
        value = str(values[name])
        if not value or _UNSAFE.search(value):
            raise ValueError(
                f"{source}: value for {name} must be non-empty without whitespace, quotes, '$', '\\' or '`': {value!r}"
            )
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not PLACEHOLDER.fullmatch("${" + name + "}"):
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with an UPPER_CASE name, got {text!r}"
        )
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python infra/render.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("template", help="template file, e.g. infra/kuberay/rayjob.yaml")
    parser.add_argument(
        "--set", dest="values", type=_assignment, action="append", default=[], metavar="NAME=VALUE"
    )
    parser.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    parser.add_argument(
        "--list", action="store_true", help="print the template's placeholder names and exit"
    )
    args = parser.parse_args(argv)
    try:
        with open(args.template, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        print(f"error: cannot read template {args.template}: {err}", file=sys.stderr)
        return 1
    if args.list:
        print("\n".join(placeholders(text)))
        return 0
    names = placeholders(text)
    values = {n: os.environ[n] for n in names if n in os.environ}
    values.update(dict(args.values))
    try:
        rendered = render(text, values, source=args.template)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(rendered)
    else:
        sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
