"""How well the toy PRM checks the steps the search will show it, by difficulty, on problems it
never trained on.

The build's own held-out figure (`train_info.json`: `policy_step_auc`) pools every trace of fresh
problem draws. The toy world's small corners repeat in such draws: every 1-operation problem and
most 2-operation ones were training problems too (`prm.toy.training_problems`), and they are the
easy ones. This benchmark splits the held-out traces (the shipped policy sampled at T=1, the
traces of `prm.toy.eval_policy_records`) by number of operations and by whether the problem
(or a state of its solution) was in the build's training data, and gives each cell's step AUC and
first-error accuracy with a 95% bootstrap interval over traces.

    python benchmarks/prm_heldout.py                  the shipped PRM on its build's held-out traces
    python benchmarks/prm_heldout.py --traces 2000    more traces (fresh problems, same seeds scheme)
    python benchmarks/prm_heldout.py --prm DIR        another PRM folder on the same traces
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings

import numpy as np
from tqdm import tqdm

from mcts.envs.arith import count_ops
from mcts.policy.base import Prefix
from prm.metrics import first_error_accuracy, step_auc
from prm.toy import FULL_BUILD, eval_policy_records, training_problems
from treesearch.loaders import load_scorer


def cell(values: list[list[float]], labels: list[list[int]], resamples: int, rng: np.random.Generator) -> dict:
    """Step AUC and first-error accuracy of one group of traces, each with a bootstrap interval."""
    def figures(idx) -> tuple[float, float]:
        v = [values[i] for i in idx]
        y = [labels[i] for i in idx]
        flat_y = [x for t in y for x in t]
        auc = step_auc([x for t in v for x in t], flat_y) if 0 < sum(flat_y) < len(flat_y) else float("nan")
        return auc, first_error_accuracy(v, y, 0.5)

    n = len(values)
    auc, fe = figures(range(n))
    draws = np.array([figures(rng.integers(0, n, n)) for _ in range(resamples)])
    with warnings.catch_warnings():  # a resample with one class only has no AUC: NaN, left out of the interval
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    return {"traces": n, "steps": sum(map(len, labels)), "wrong": sum(t.count(0) for t in labels),
            "auc": auc, "auc_ci": (low[0], high[0]), "first_error": fe, "first_error_ci": (low[1], high[1])}


def run(args) -> list[dict]:
    build = dataclasses.replace(FULL_BUILD, eval_policy_traces=args.traces)
    seen = training_problems(FULL_BUILD)
    records = eval_policy_records(build)
    prm = load_scorer(args.prm, progress=not args.no_progress)
    values = []
    for start in tqdm(range(0, len(records), 256), desc="scoring held-out traces", disable=args.no_progress):
        chunk = records[start:start + 256]
        values += prm.score_traces([Prefix(r["problem"], tuple(r["steps"])) for r in chunk])
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        k = count_ops(r["problem"])
        for key in ((k, r["problem"] in seen), (k, None), ("all", r["problem"] in seen), ("all", None)):
            groups.setdefault(key, []).append(i)
    rng = np.random.default_rng(args.seed)
    rows = []
    order = {None: 0, True: 1, False: 2}
    for (ops, was_seen), idx in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), order[kv[0][1]])):
        rows.append({"ops": ops, "problems": {True: "in training", False: "unseen", None: "all"}[was_seen],
                     **cell([values[i] for i in idx], [list(records[i]["labels"]) for i in idx], args.bootstrap, rng)})
    return rows


def table(rows: list[dict]) -> str:
    def ci(x, lo_hi):
        return "-" if not np.isfinite(x) else f"{x:.3f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"

    lines = ["| operations | problems | traces | steps (wrong) | step AUC [95% CI] | first-error acc [95% CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ops']} | {r['problems']} | {r['traces']} | {r['steps']} ({r['wrong']}) | "
                     f"{ci(r['auc'], r['auc_ci'])} | {ci(r['first_error'], r['first_error_ci'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prm", default="tiny", help="the PRM: 'tiny' (the shipped toy PRM) or a PRM folder")
    p.add_argument("--traces", type=int, default=FULL_BUILD.eval_policy_traces,
                   help="held-out policy traces (the build's own count by default: the same traces)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of each interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    print(table(run(args)))
    print("\nscorer: " + ("the toy world's shipped PRM (tiny)" if args.prm == "tiny" else f"PRM {args.prm}")
          + "; traces: the shipped policy at T=1 on fresh 1-4 operation problems, labelled by the oracle; "
            "'in training': the problem or a state of its solution was a training problem of the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
