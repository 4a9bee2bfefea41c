"""``python -m jobs submit train``: send a training run to a Ray cluster as a Ray job.

Takes the same arguments as ``jobs train`` plus the cluster options of ``jobs submit``.
The job runs ``python -m jobs train ...`` on the cluster (its driver joins the cluster, so
``--workers N`` trains on the cluster's nodes through Ray Train). Local paths are made
absolute; ``--output`` should be a URL every node can reach (``s3://...``) or a path on
shared storage, since the model is written where the job's driver runs.
"""

from __future__ import annotations

import argparse
import json
import shlex

from jobs import submit, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train.add_arguments(parser)
    submit.add_cluster_arguments(parser)


def entrypoint(args: argparse.Namespace) -> str:
    """The shell command the job runs: ``<python> -m jobs train ...``, local paths absolute."""
    args = train.absolute_paths(args)
    return shlex.join([args.python, "-m", "jobs", "train", *command_line(args)])


def command_line(args: argparse.Namespace) -> list[str]:
    """The ``jobs train`` arguments that reproduce ``args``: every option whose value differs
    from its default, read from the train parser itself so no option is forgotten."""
    parser = argparse.ArgumentParser(add_help=False)
    train.add_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if not action.option_strings:
            continue
        flag, value = action.option_strings[0], getattr(args, action.dest)
        if value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, _text(item)]
        else:
            argv += [flag, _text(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    return submit.submit(args, entrypoint(args))


def _text(value) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, tuple) and all(isinstance(pair, tuple) for pair in value):
        return ",".join(f"{step}:{length}" for step, length in value)  # --clip-len-schedule
    return str(value)
