"""Print infra/requirements.lock: the runtime dependencies pinned at the versions installed here.

Usage (from the repository root, in the project's environment; Python 3.11+ for tomllib):

    .venv/bin/python infra/lock.py > infra/requirements.lock

Starts from the dependencies in pyproject.toml (with their extras, e.g.
``ray[default]``), follows every requirement that applies to this platform,
and pins each distribution at its installed version. torch is left out (the
Dockerfile installs it first from the PyTorch CUDA index) and so is
setuptools (build tooling). Raises if a needed distribution is not installed.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXCLUDED = {"torch", "setuptools"}
HEADER = """\
# Pinned runtime dependencies of sam2-labeler for the container image (infra/Dockerfile).
#
# The versions installed in the project's development environment (.venv,
# `pip freeze`), restricted to what the project needs at run time: the
# dependencies in pyproject.toml (ray with its [default] extra) and everything
# they pull in. Left out on purpose:
#   torch        installed first, from the PyTorch CUDA index (torch==2.13.0), by the Dockerfile
#   setuptools   build tooling, not a runtime dependency
#   dev tools    pytest, moto[server], ruff and their dependencies
# Regenerate after changing the environment: see docs/CLUSTER.md ("Pinned versions").
"""


def runtime_requirements() -> list[str]:
    """The ``dependencies`` of pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def pinned_closure(roots: list[str]) -> dict[str, str]:
    """Canonical name -> installed version for ``roots`` and everything they require."""
    pins: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise SystemExit(
                f"error: {req.name} (needed for {req}) is not installed in {sys.prefix}"
            ) from None
        pins[key[0]] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return pins


def main() -> None:
    pins = pinned_closure(runtime_requirements())
    sys.stdout.write(HEADER)
    for name in sorted(pins):
        if name not in EXCLUDED:
            sys.stdout.write(f"{name}=={pins[name]}\n")


if __name__ == "__main__":
    main()
