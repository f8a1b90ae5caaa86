"""Command line: ``python -m ntkcore.zoo {build,archs}``.

``build [--preset workshop] [--only ID ...] [--list] [--retrain] [--cache-dir DIR]``
    pre-trains (or, with ``--list``, lists with their cache status) the preset models;
``archs``
    lists the registered architectures with their default parameter counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ntkcore.zoo.cache import CheckpointStore
from ntkcore.zoo.presets import PRESETS, Preset
from ntkcore.zoo.pretraining import load_task, resolve
from ntkcore.zoo.registry import available, info

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ntkcore.zoo", description="ntkcore model zoo")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="pre-train the models of a preset group")
    build.add_argument(
        "--preset",
        default="workshop",
        choices=sorted(PRESETS),
        help="preset group (default: workshop)",
    )
    build.add_argument("--only", nargs="+", metavar="ID", help="only these preset ids")
    build.add_argument(
        "--list",
        action="store_true",
        help="list the entries and whether they are cached; train nothing",
    )
    build.add_argument(
        "--retrain", action="store_true", help="train even if cached, overwriting the entries"
    )
    build.add_argument(
        "--cache-dir", default=None, help="cache root (default: $NTKCORE_CACHE or ~/.cache/ntkcore)"
    )
    sub.add_parser("archs", help="list the registered architectures")
    return parser


def _entries(group: str, only: Sequence[str] | None) -> list[Preset]:
    entries = list(PRESETS[group])
    if only:
        ids = [p.id for p in entries]
        unknown = sorted(set(only) - set(ids))
        if unknown:
            raise SystemExit(f"unknown preset id(s) {unknown}; {group!r} has {ids}")
        entries = [p for p in entries if p.id in only]
    return entries


def _list(entries: Sequence[Preset], cache_dir: str | None) -> int:
    store = CheckpointStore(cache_dir)
    print(f"cache: {store.directory}")
    for p in entries:
        try:
            task = load_task(p.dataset, dict(p.data_kw))
            r = resolve(p.arch, p.dataset, task, p.seed, p.data_kw, **p.hyper)
            status = "cached" if store.contains(r.stem) else "not built"
            params = f"{info(p.arch, **r.arch_kwargs).num_params:,} params"
        except Exception as err:  # report and go on with the other entries
            status, params = f"unavailable ({err})", "-"
        print(f"  {p.id:24s} {status:12s} {params:>16s}  {p.description}")
    return 0


def _build(entries: Sequence[Preset], cache_dir: str | None, retrain: bool) -> int:
    failures = 0
    for p in entries:
        print(f"{p.id}: ", end="", flush=True)
        t0 = time.perf_counter()
        try:
            entry = p.fetch(cache_dir=cache_dir, retrain=retrain)
        except Exception as err:  # report and go on with the other entries
            failures += 1
            print(f"FAILED ({type(err).__name__}: {err})", flush=True)
            continue
        rec = entry.record
        how = "cached" if entry.from_cache else f"trained in {rec.seconds:.1f} s"
        print(
            f"{how}; final {rec.loss} {rec.final_loss:.4g} ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    print(f"cache: {CheckpointStore(cache_dir).directory}")
    return 1 if failures else 0


def _archs() -> int:
    for name in available():
        i = info(name)
        shape = "x".join(map(str, i.input_shape))
        print(
            f"  {name:14s} in {shape:10s} out {i.output_dim:<4d} {i.num_params:>11,} params  "
            f"{i.description}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "archs":
        return _archs()
    entries = _entries(args.preset, args.only)
    if args.list:
        return _list(entries, args.cache_dir)
    return _build(entries, args.cache_dir, args.retrain)


if __name__ == "__main__":
    sys.exit(main())
