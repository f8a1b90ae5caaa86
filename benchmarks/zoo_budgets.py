"""Time the model-zoo budgets of issue 4 on the current machine.

Budgets (2 CPU cores): every MLP preset trains in <= 20 s (the Adapt page's sinusoid source
model in well under 5 s, since it is trained on first page load), LeNet on 5,000 images
trains in <= 60 s, and a cached model loads in well under a second.

Usage (pin to two cores to reproduce the budget setting)::

    taskset -c 0,1 python benchmarks/zoo_budgets.py --threads 2 [--json out.json]

Every preset of ``zoo.PRESETS["workshop"]`` is trained into a temporary cache (nothing is
written to the user's cache), then fetched again to time a cache hit, both with the task
passed in (the zoo's own cost: checksum, safetensors, model construction) and by dataset name
(adds ``ntkcore.data.load``).  LeNet is also trained on 5,000 MNIST images with the preset's
hyperparameters.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ntkcore import data, zoo
from ntkcore.experiments.clock import timed
from ntkcore.experiments.machine import describe_machine, device_label, write_json

BUDGET_MLP_S = 20.0
BUDGET_SINUSOID_S = 5.0
BUDGET_LENET_5K_S = 60.0
BUDGET_LOAD_S = 1.0


def _time_presets(cache: Path, only: list[str] | None) -> list[dict]:
    rows = []
    for p in zoo.PRESETS["workshop"]:
        if only and p.id not in only:
            continue
        task = data.load(p.dataset, **p.data_kw)
        trained = p.fetch(task=task, cache_dir=cache, retrain=True)
        hit, load = timed(lambda p=p, task=task: p.fetch(task=task, cache_dir=cache), "cpu")
        _, load_by_name = timed(lambda p=p: p.fetch(cache_dir=cache), "cpu")
        load_s, load_by_name_s = load.wall, load_by_name.wall
        assert hit.from_cache
        rec = trained.record
        budget = (
            BUDGET_SINUSOID_S
            if p.id == "sinusoids-mlp"
            else BUDGET_MLP_S
            if "mlp" in p.arch
            else None
        )
        rows.append(
            {
                "id": p.id,
                "n_train": rec.n_train,
                "params": zoo.info(p.arch, **trained.metadata["arch_kwargs"]).num_params,
                "epochs": rec.epochs,
                "train_s": rec.seconds,
                "budget_s": budget,
                "final_loss": rec.final_loss,
                "loss": rec.loss,
                "load_s": load_s,
                "load_by_name_s": load_by_name_s,
            }
        )
    return rows


def _time_lenet_5k(cache: Path) -> dict:
    task = data.load("mnist")
    xs, ys = zip(task.source, task.target, task.test, strict=True)
    x, y = torch.cat(xs)[:5000], torch.cat(ys)[:5000]
    hyper = dict(zoo.preset("mnist-lenet3").hyper)
    train_kw = {k: hyper.pop(k) for k in list(hyper) if k in ("epochs", "lr", "batch_size")}
    with zoo.seeded(0):
        model = zoo.create("lenet3", **hyper)
    _, rec = zoo.train(model, x, y, loss="cross_entropy", **train_kw)
    with torch.no_grad():
        test_x, test_y = task.test
        acc = float((model(test_x).argmax(1) == test_y).float().mean())
    return {
        "id": "lenet3-mnist-5k",
        "n_train": rec.n_train,
        "epochs": rec.epochs,
        "train_s": rec.seconds,
        "budget_s": BUDGET_LENET_5K_S,
        "final_loss": rec.final_loss,
        "accuracy_on_task_test_split(seen in training)": acc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--only", nargs="+", help="preset ids to time")
    parser.add_argument("--skip-lenet-5k", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = describe_machine("cpu")
    print(f"{device_label('cpu')}, torch {torch.__version__}, git {meta['git_commit']}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = _time_presets(Path(tmp), args.only)
        if not args.skip_lenet_5k:
            rows.append(_time_lenet_5k(Path(tmp)))
    for r in rows:
        budget = r["budget_s"]
        ok = "" if budget is None else ("  OK" if r["train_s"] <= budget else "  OVER BUDGET")
        loads = (
            f"  load {r['load_s'] * 1e3:.0f} ms (by name {r['load_by_name_s'] * 1e3:.0f} ms)"
            if "load_s" in r
            else ""
        )
        print(
            f"{r['id']:24s} n={r['n_train']:5d} train {r['train_s']:6.2f} s"
            f" (budget {budget if budget is not None else '-'}){ok}"
            f"  final {r['final_loss']:.4g}{loads}"
        )
    slow_loads = [r["id"] for r in rows if r.get("load_s", 0.0) > BUDGET_LOAD_S]
    print("cached loads under 1 s:", "yes" if not slow_loads else f"NO: {slow_loads}")
    if args.json:  # {"meta": machine and git commit, "rows": [...]}
        write_json(args.json, rows, meta=meta)


if __name__ == "__main__":
    main()
