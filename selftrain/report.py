"""`selftrain report RUN`: one HTML page of a run folder, and one search report per search stage.

    write_run_report(folder, out=None)   RUN/report.html: the per-iteration metrics as plots (held-out
                                         greedy and search accuracy, the PRM's step AUC, harvested
                                         traces and values, tokens, seconds), every iteration's stages
                                         with their seconds and figures, and links into
                                         iter_k/<stage>/report.html, the `mcts report` page of each
                                         search stage's records and trees (written beside them)
    line_chart(title, series)            a small inline SVG plot, drawn here (no plotting library)

It only reads what `selftrain run` wrote (selftrain.run: config.json, iter_k/stages.json,
iter_k/metrics.json, iter_k/<stage>/results.jsonl) and writes pages; a run still going can be
reported, its unfinished iterations shown as they stand. The pages are self-contained, as
`treesearch.report.page` makes them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from mcts.files import write_atomic
from selftrain.run import METRIC_KEYS, RunError, read_json
from treesearch.report.cli import write_search_report
from treesearch.report.page import cards, esc, html_table, number, rate, render_page
from treesearch.report.runs import ReportError

__all__ = ["PLOTS", "harvest_by_ops", "line_chart", "run_metrics", "write_run_report"]

# One plot per group of metrics (metrics.json keys), and the range of its y axis (None: from the data).
PLOTS: tuple[tuple[str, tuple[str, ...], tuple[float, float] | None], ...] = (
    ("held-out accuracy", ("greedy_acc", "search_acc", "greedy_subset_acc"), (0.0, 1.0)),
    ("PRM step AUC (toy oracle labels)", ("prm_auc",), (0.0, 1.0)),
    ("harvested", ("harvested_traces", "harvested_values"), None),
    ("tokens", ("tokens",), None),
    ("seconds", ("seconds",), None),
)
COLOURS = ("#2458b3", "#d0731c", "#1e7d3a", "#8a1c7c")
UNSCORED = {"rest_em": "none (ReST-EM samples whole solutions; nothing scores them)"}


def _nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (the top of a y axis)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def line_chart(title: str, series: Mapping[str, Sequence[tuple[int, float | None]]],
               y_range: tuple[float, float] | None = None, width: int = 330, height: int = 190) -> str:
    """An SVG line plot of (iteration, value) series; a None value leaves its point out. Every point
    carries its value in a tooltip (<title>)."""
    points = [(x, y) for s in series.values() for x, y in s if y is not None]
    left, right, top, bottom = 46, 10, 40, 30
    xs = sorted({x for s in series.values() for x, _ in s}) or [0]
    lo, hi = y_range if y_range is not None else (0.0, _nice_top(max((y for _, y in points), default=1.0)))
    span_x = max(xs[-1] - xs[0], 1)

    def px(x: float) -> float:
        return left + (x - xs[0]) / span_x * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - lo) / ((hi - lo) or 1.0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{esc(title)}"><text x="{left}" y="14" style="font-weight:600;fill:#1d232b">'
             f'{esc(title)}</text>']
    # 1, 5 and 10 times a power of ten split into fifths, 2 into quarters: round ticks either way
    steps = 4 if y_range is not None or f"{hi:e}".startswith("2") else 5
    for i in range(steps + 1):
        y = lo + (hi - lo) * i / steps
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e3e7eb"/>'
                     f'<text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{esc(_tick(y))}</text>')
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x}</text>')
    parts.append(f'<text x="{width - right}" y="{height - 4}" text-anchor="end">iteration</text>')
    for colour, (name, s) in zip(COLOURS, series.items()):
        kept = [(x, y) for x, y in s if y is not None]
        if len(kept) > 1:
            line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in kept)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
        for x, y in kept:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}" data-series="{esc(name)}" '
                         f'data-x="{x}" data-y="{y}"><title>{esc(name)}, iteration {x}: {esc(_tick(y))}</title>'
                         f'</circle>')
    legend_x = left
    for colour, name in zip(COLOURS, series):
        parts.append(f'<rect x="{legend_x}" y="{top - 16}" width="10" height="3" fill="{colour}"/>'
                     f'<text x="{legend_x + 14}" y="{top - 12}">{esc(name)}</text>')
        legend_x += 18 + 7 * len(name)
    return "".join(parts) + "</svg>"


def _tick(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def _metric(key: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return rate(value) if key.endswith(("_acc", "_auc")) else number(value)


def _iterations(folder: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in folder.glob("iter_*") if p.is_dir() and p.name[5:].isdigit())


def _read(path: Path, what: str) -> Any:
    try:
        return read_json(path, what) if path.exists() else None
    except RunError as err:
        raise ReportError(str(err)) from None


def _stage_figures(info: Mapping) -> str:
    shown = []
    for key, value in info.items():
        if key == "seconds":
            continue
        if isinstance(value, float):
            value = rate(value) if abs(value) < 10 else number(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = number(value)
        shown.append(f"{key} {value}")
    return "; ".join(shown)


def _scorer(algorithm: str, k: int, metrics: Mapping[int, Mapping], stages: Mapping[int, Mapping]) -> str:
    """Which scorer iteration k's search stage used: the PRM handed on by iteration k - 1."""
    if algorithm in UNSCORED:
        return UNSCORED[algorithm]
    prm = (metrics.get(k - 1) or {}).get("prm") or (stages.get(k - 1, {}).get("models") or {}).get("prm") \
        or (stages.get(0, {}).get("base") or {}).get("prm")
    return f"the PRM of iteration {k - 1}: {prm}" if prm else f"the PRM of iteration {k - 1}"


def run_metrics(folder: str | os.PathLike) -> tuple[dict, dict[int, dict]]:
    """A run folder's configuration (as its config.json holds it) and the metrics of each evaluated
    iteration, by iteration; `ReportError` for a folder that is not a run's or an unreadable record."""
    folder = Path(folder)
    saved = _read(folder / "config.json", "run configuration")
    if not folder.is_dir() or not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ReportError(f"{folder}: not a selftrain run folder (no run config.json)")
    metrics = {k: m for k in _iterations(folder)
               if isinstance(m := _read(folder / f"iter_{k}" / "metrics.json", "metrics"), dict)}
    return saved["config"], metrics


def harvest_by_ops(folder: str | os.PathLike) -> list[dict]:
    """What each iteration's search harvested, per number of operations of the toy training
    problems: the problems, the tokens generated on them, the verified solutions the policy learns
    from, how many of those the toy world's step checker accepts (`sound`), each per million tokens,
    and how often the harvested PRM step labels agree with the oracle's (`label_agreement`).

    The checker and the oracle labels read the gold answer: this is a diagnostic of a finished run
    (why one loop learns more than another), never something a loop trains on. [] for a run on
    problems that are not toy expressions.
    """
    from mcts.envs.arith import count_ops, is_toy, label_steps
    from selftrain.harvest import read_harvest
    from selftrain.rest_mcts import toy_steps_sound
    from selftrain.run import read_jsonl

    folder = Path(folder)
    rows: list[dict] = []
    for k in _iterations(folder):
        results, harvested = folder / f"iter_{k}" / "search" / "results.jsonl", folder / f"iter_{k}" / "harvest"
        if not (results.exists() and (harvested / "manifest.json").exists()):
            continue
        records = read_jsonl(results)
        if not is_toy([r["problem"] for r in records]):
            return []
        harvest = read_harvest(harvested)
        groups: dict[int, dict] = {}

        def group(problem: str) -> dict:
            return groups.setdefault(count_ops(problem), {"problems": 0, "tokens": 0, "solutions": 0, "sound": 0,
                                                          "solved": set(), "labels": 0, "agree": 0})

        golds = {r["problem"]: r.get("gold") for r in records}
        for r in records:
            g = group(r["problem"])
            g["problems"] += 1
            g["tokens"] += int(r.get("tokens", 0))
        for trace in harvest.sft:
            g = group(trace["problem"])
            g["solutions"] += 1
            g["sound"] += toy_steps_sound(trace["problem"], trace["steps"])
            g["solved"].add(trace["problem"])
        for trace in harvest.prm:
            g = group(trace["problem"])
            oracle = label_steps(trace["problem"], trace["steps"], golds.get(trace["problem"]))
            g["labels"] += len(oracle)
            g["agree"] += sum(int(round(a)) == b for a, b in zip(trace["labels"], oracle))
        for ops, g in sorted(groups.items()):
            per_million = 1e6 / g["tokens"] if g["tokens"] else float("nan")
            rows.append({"iteration": k, "ops": ops, "problems": g["problems"], "tokens": g["tokens"],
                         "solved": len(g["solved"]), "solutions": g["solutions"], "sound": g["sound"],
                         "solutions_per_mtok": g["solutions"] * per_million, "sound_per_mtok": g["sound"] * per_million,
                         "label_agreement": g["agree"] / g["labels"] if g["labels"] else None})
    return rows


def write_run_report(folder: str | os.PathLike, out: str | os.PathLike | None = None, *,
                     progress: bool = False) -> Path:
    """Writes the run page (default RUN/report.html) and each search stage's report; returns the
    run page's path. Raises `ReportError` for a folder that is not a run's."""
    folder = Path(folder)
    config, metrics = run_metrics(folder)
    algorithm = str(config.get("algorithm", "?"))
    out = Path(out) if out is not None else folder / "report.html"
    if out.is_dir():
        raise ReportError(f"--out {out}: is a folder, not an HTML file")
    ks = _iterations(folder)
    stages = {k: s for k in ks if isinstance(s := _read(folder / f"iter_{k}" / "stages.json", "stage record"), dict)}
    reports: dict[int, list[tuple[str, Path]]] = {}
    for k in ks:
        for results in sorted((folder / f"iter_{k}").glob("*/results.jsonl")):
            stage = results.parent.name
            page = write_search_report(results.parent / "report.html", results,
                                       scorer=_scorer(algorithm, k, metrics, stages), oracle=False,
                                       title=f"{folder.name} · iteration {k} · {stage}", progress=progress)
            reports.setdefault(k, []).append((stage, page))

    last = metrics[max(metrics)] if metrics else {}
    evaluated = f"iterations {', '.join(map(str, sorted(metrics)))} evaluated" if metrics else "nothing evaluated yet"
    body = [f"<header><h1>Self-training run {esc(folder.name)}</h1>",
            f'<p class="sources">{esc(algorithm)} · iterations configured: {esc(config.get("iterations", "?"))} '
            f'(and iteration 0, the starting models) · {evaluated} · {esc(folder.resolve())}</p></header>',
            '<section id="latest"><h2>Last evaluated iteration</h2>',
            cards([(key, _metric(key, last.get(key)), f"iteration {last.get('iteration', '?')}")
                   for key in METRIC_KEYS])
            if last else '<p class="hint">No iteration has been evaluated yet.</p>', "</section>",
            '<section id="plots"><h2>Per iteration</h2><div class="plots">']
    for title, keys, y_range in PLOTS:
        series = {key: [(k, metrics[k].get(key)) for k in sorted(metrics)] for key in keys}
        body.append(f'<div class="plot" data-plot="{esc(title)}">{line_chart(title, series, y_range)}</div>')
    body.append("</div>")
    table = [[k, *(_metric(key, metrics[k].get(key)) for key in METRIC_KEYS)] for k in sorted(metrics)]
    body.append(html_table(["iteration", *METRIC_KEYS], table, "figures"))
    body.append('</section><section id="stages"><h2>Stages</h2>')
    for k in ks:
        links = " · ".join(f'<a class="search-report" href="{esc(os.path.relpath(page, out.parent))}">'
                           f'{esc(stage)}: the search report</a>' for stage, page in reports.get(k, []))
        done = {name: info for name, info in (stages.get(k) or {}).items() if isinstance(info, dict)}
        rows = [(name, number(float(info.get("seconds", 0.0)), 2), _stage_figures(info)) for name, info in done.items()]
        total = sum(float(info.get("seconds", 0.0)) for info in done.values())
        body.append(f'<div class="iteration" id="iter-{k}"><h3>iteration {k} · {number(total, 1)} s'
                    f'{" · " + links if links else ""}</h3>'
                    + (html_table(["stage", "seconds", "figures"], rows, "figures stages") if rows
                       else '<p class="hint">no stage finished</p>') + "</div>")
    body.append("</section>")
    page = render_page(f"selftrain {folder.name}", "\n".join(body))
    try:
        write_atomic(out, lambda handle: handle.write(page))
    except OSError as err:
        raise ReportError(f"--out {out}: cannot be written ({err.strerror or err})") from None
    return out
