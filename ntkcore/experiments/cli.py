"""Command line: ``python -m ntkcore.experiments [--list] NAME [options]``.

Common options: ``--preset small|full``, ``--seed N``, ``--device cpu|cuda``,
``--out results.csv``, ``--threads N`` (default 1 for the small preset). Every other keyword
of the experiment's function becomes an option of its own, typed from its default
(``--context-sizes 5 10 20`` for a tuple,
``--dataset spatial`` for a string); ``python -m ntkcore.experiments NAME --help`` lists them.
A progress bar runs on stderr and the main table is printed at the end.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ntkcore.experiments.machine import describe_machine, write_json
from ntkcore.experiments.registry import PRESETS, ExperimentTables, available, get

__all__ = ["main"]

_COMMON = ("preset", "seed", "device", "progress", "on_row")  # on_row: callbacks only


def _literal(text: str) -> Any:
    """``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"None"`` -> None, anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _add_option(parser: argparse.ArgumentParser, name: str, default: Any) -> None:
    flag = "--" + name.replace("_", "-")
    shown = f"default: {default!r}"
    if isinstance(default, bool):
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                            default=default, help=shown)
    elif isinstance(default, (tuple, list)):
        parser.add_argument(flag, dest=name, nargs="+", type=_literal, default=default,
                            help=shown)
    elif isinstance(default, (int, float)):
        parser.add_argument(flag, dest=name, type=type(default), default=default, help=shown)
    else:
        parser.add_argument(flag, dest=name, type=_literal, default=default, help=shown)


def _parser(name: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ntkcore.experiments",
        description="Run one of the paper's experiments and print its tidy table.",
    )
    parser.add_argument("name", nargs="?", help=f"one of {available()}")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--preset", choices=PRESETS, default="small", help="size preset")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: by preset)")
    parser.add_argument("--out", type=Path, default=None, help="write the table(s) as CSV")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads (default: 1 for the small preset, whose small networks "
        "run 10-30x slower with two threads on a busy 2-core machine; torch's default for full)",
    )  # fmt: skip
    if name is not None:
        signature = inspect.signature(get(name).function)
        group = parser.add_argument_group(f"options of {name}")
        for pname, param in signature.parameters.items():
            if pname in _COMMON or param.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            if param.default is inspect.Parameter.empty:
                group.add_argument("--" + pname.replace("_", "-"), dest=pname, type=_literal,
                                   required=True)
            else:
                _add_option(group, pname, param.default)
    return parser


def _write(
    result: pd.DataFrame | ExperimentTables, out: Path, meta: dict[str, Any]
) -> list[Path]:
    """Write the table(s) as CSV and, beside them, ``<stem>.meta.json``: the machine, the
    command, the options and the git commit the tables were computed with."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tables = {"main": result} if isinstance(result, pd.DataFrame) else dict(result.items())
    written = []
    for table_name, table in tables.items():
        path = out if table_name == "main" else out.with_name(f"{out.stem}-{table_name}.csv")
        table.to_csv(path, index=False)
        written.append(path)
    sidecar = out.with_name(f"{out.stem}.meta.json")
    write_json(sidecar, {"tables": [p.name for p in written]}, meta=meta)
    return [*written, sidecar]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    name = first if first in available() else None
    args = _parser(name).parse_args(argv)
    if args.list or args.name is None:
        for exp in available():
            print(f"{exp:24s} {get(exp).description}")
        return 0
    if name is None:
        _parser(None).error(f"unknown experiment {args.name!r}; choose from {available()}")
    threads = args.threads if args.threads is not None else (1 if args.preset == "small" else None)
    if threads is not None:
        if threads < 1:
            _parser(None).error(f"--threads must be a positive integer, got {threads}")
        import torch

        torch.set_num_threads(threads)
    options = {k: v for k, v in vars(args).items()
               if k not in ("name", "list", "out", "quiet", "threads")}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}

    from tqdm import tqdm  # the library itself does not need tqdm

    bar = tqdm(total=1000, file=sys.stderr, disable=args.quiet, desc=name,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def progress(fraction: float, message: str) -> None:
        bar.n = round(1000 * fraction)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    t0 = time.perf_counter()
    try:
        result = get(name)(progress=progress, **options)
    except ValueError as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar.close()
    main_table = result if isinstance(result, pd.DataFrame) else result.main
    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(main_table.to_string(index=False))
    print(f"# {name} ({args.preset}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.out is not None:
        meta = describe_machine()
        meta.update(
            experiment=name,
            options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            seconds=round(time.perf_counter() - t0, 2),
        )
        for path in _write(result, args.out, meta):
            print(f"# wrote {path}", file=sys.stderr)
    return 0
