"""The report's HTML: one self-contained file, its CSS, JavaScript and data inline, nothing fetched.

    search_page(run, other=None)   the page of `mcts report`: summary, breakdown, comparison, and the
                                   problem list and trees that `assets/search.js` draws from the
                                   embedded JSON
    render_page(title, body, ...)  the skeleton every report page shares (`selftrain report` too):
                                   a Content-Security-Policy that allows no fetch at all, the CSS
    json_block(id, value)          data for the page's script, `<` escaped so no text ends the tag
    html_table, cards, number, rate, interval   the pieces the pages are built from

The page holds the list's rows in one JSON block and each tree in a block of its own, which the
script parses only when that tree is opened: a 500-problem run opens without reading its trees.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from treesearch.report.runs import Run, breakdown, comparison, problem_rows, summary, tree_view

__all__ = ["cards", "esc", "html_table", "interval", "json_block", "number", "rate", "render_page", "search_page"]

ASSETS = Path(__file__).with_name("assets")
# The page may run its own inline script and style and show data: images, and fetch nothing: a
# reference to the network would be refused by the browser and show as a console error.
POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def interval(ci: Sequence[float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def json_block(element_id: str, value: Any) -> str:
    """A `<script type="application/json">` holding `value`; every `<` is written `\\u003c`, so that no
    step text can close the tag or open a comment (JSON has `<` only inside strings)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """A table of escaped cells; a cell given as ("html", text) goes in as it is."""
    def cell(value: Any) -> str:
        return value[1] if isinstance(value, tuple) and value[0] == "html" else esc(value)

    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cards(items: Sequence[tuple[str, str, str]]) -> str:
    """Figures as cards: (name, value, small print)."""
    return '<div class="cards">' + "".join(
        f'<div class="card" data-figure="{esc(k)}"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div>'
        f'<div class="s">{esc(s)}</div></div>' for k, v, s in items) + "</div>"


def render_page(title: str, body: str, *, script: str = "", blocks: Sequence[str] = ()) -> str:
    """A whole page: `body` (HTML), the data `blocks`, then `script` (JavaScript), all inline."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title>'
            f'<style>{asset("report.css")}</style></head>\n<body>\n{body}\n' + "\n".join(blocks)
            + (f"\n<script>{script}</script>" if script else "") + "\n</body></html>\n")


def _summary_cards(s: Mapping, trees: int) -> str:
    return cards([
        ("accuracy", rate(s["accuracy"]), f"95% CI {interval(s['ci'])} (Wilson), {s['correct']} of {s['graded']} "
                                          f"graded"),
        ("answered", f"{s['answered']} of {s['problems']}", f"{s['problems'] - s['answered']} unanswered"),
        ("tokens / problem", number(s["tokens_per_problem"]), f"{number(s['tokens'])} in all"),
        ("simulations / problem", number(s["simulations_per_problem"]), "leaves backed up, traces or rounds"),
        ("trees", f"{trees}", "click a problem to open its tree"),
    ])


def _breakdown(groups: Sequence[Mapping]) -> str:
    out = []
    for g in groups:
        rows = [(r["value"], r["problems"], r["graded"], rate(r["accuracy"]), interval(r["ci"]),
                 number(r["tokens_per_problem"])) for r in g["rows"]]
        out.append(f'<div class="group"><h3>by {esc(g["field"])}</h3>'
                   + html_table([g["field"], "problems", "graded", "accuracy", "95% CI", "tokens / problem"], rows,
                                "figures") + "</div>")
    return '<div class="breakdown">' + "".join(out) + "</div>" if out else ""


def _scorer(run: Run) -> str:
    flag = ('<span class="badge oracle" title="this scorer reads the gold answer: its figures test the search '
            'logic, not a reward model">ORACLE: reads the gold answer</span>') if run.oracle else ""
    return f'<p class="scorer" id="scorer">scorer: {esc(run.scorer)} {flag}</p>'


def _flip_list(title: str, flips: Sequence[Mapping], cls: str) -> str:
    if not flips:
        return f'<div class="flips {cls}"><h3>{esc(title)}: none</h3></div>'
    rows = [(("html", f'<a href="#p={esc(_hash_id(f["id"]))}">{esc(f["id"])}</a>'), f["a"] or "–", f["b"] or "–",
             f["gold"] or "–", number(f["a_tokens"]), number(f["b_tokens"])) for f in flips]
    return (f'<div class="flips {cls}"><h3>{esc(title)}: {len(flips)}</h3>'
            + html_table(["problem", "answer A", "answer B", "gold", "tokens A", "tokens B"], rows, "figures")
            + "</div>")


def _hash_id(problem_id: str) -> str:
    return quote(problem_id, safe="")


def _comparison(run: Run, other: Run, c: Mapping) -> str:
    a, b = c["a"], c["b"]
    rows = [(name, rate(s["accuracy"]), interval(s["ci"]), f"{s['answered']} of {s['problems']}",
             number(s["tokens"]), number(s["tokens_per_problem"]), who.scorer + (" (ORACLE)" if who.oracle else ""))
            for name, s, who in (("A: " + str(run.path), a, run), ("B: " + str(other.path), b, other))]
    extra = []
    if c["only_a"] or c["only_b"]:
        extra.append(f"{c['only_a']} problems only in A and {c['only_b']} only in B are left out")
    if c["other_text"]:
        extra.append(f"{c['other_text']} ids name another problem text in B and are left out")
    return ('<section id="compare"><h2>Two runs side by side</h2>'
            f'<p>over the {c["shared"]} problems both searched{"; " + "; ".join(extra) if extra else ""}</p>'
            + html_table(["run", "accuracy", "95% CI", "answered", "tokens", "tokens / problem", "scorer"], rows,
                         "figures")
            + '<div class="flip-lists">' + _flip_list("wrong in A, right in B", c["wrong_to_right"], "up")
            + _flip_list("right in A, wrong in B", c["right_to_wrong"], "down") + "</div></section>")


BROWSER = """<main id="browser">
<section id="list-pane"><h2>Problems</h2>
<div id="filters" role="group" aria-label="filter"></div>
<div class="tools"><label>sort <select id="sort">
<option value="order">file order</option><option value="tokens-desc">tokens, most first</option>
<option value="tokens-asc">tokens, fewest first</option><option value="value-desc">value, highest first</option>
<option value="value-asc">value, lowest first</option></select></label>
<input id="query" type="search" placeholder="id or problem text"></div>
<table id="problems" class="list"><thead></thead><tbody></tbody></table>
<div id="pager"></div></section>
<section id="tree-pane"><h2 id="tree-title">Tree</h2><div id="tree-head"><p class="hint">Click a problem to open its
tree.</p></div><div id="tree-tools" hidden></div><div id="tree" role="tree"></div></section>
<aside id="details-pane"><h2>Node</h2><div id="details"><p class="hint">Click a node to see its values and its
whole prefix.</p></div></aside>
</main><noscript><p>The problem list and the trees need JavaScript.</p></noscript>"""


def search_page(run: Run, other: Run | None = None, *, title: str | None = None, progress: bool = False) -> str:
    """The whole `mcts report` page of `run` (and `other` beside it)."""
    from tqdm import tqdm

    rows = problem_rows(run)
    s = summary(rows)
    sources = [f"results {run.path}"] + ([f"compared with {other.path}"] if other is not None else [])
    info = [f"algorithm {run.algorithm or 'unknown'}"] + ([f"policy {run.model}"] if run.model else [])
    body = [f'<header><h1>{esc(title or f"Search report: {run.path.name}")}</h1>',
            f'<p class="sources">{esc(" · ".join(sources))}</p></header>',
            '<section id="summary"><h2>Summary</h2>', _summary_cards(s, len(run.trees)), _scorer(run),
            f'<p class="info">{esc(" · ".join(info))}</p>',
            *(f'<p class="note">{esc(n)}</p>' for n in run.notes), _breakdown(breakdown(rows)), "</section>"]
    body.append(BROWSER)  # before the comparison, whose lists of flips may be long
    compared = None
    if other is not None:
        compared = comparison(rows, problem_rows(other), str(other.path))
        body.append(_comparison(run, other, compared))
    page_data = {"rows": rows, "oracle": run.oracle,
                 "compare": None if compared is None else {"name": compared["name"], "other": compared["other"]}}
    blocks = [json_block("report-data", page_data)]
    for i, r in enumerate(tqdm(run.records, desc="drawing trees", unit="tree", disable=not progress)):
        if r["id"] in run.trees:
            blocks.append(json_block(f"tree-{i}", tree_view(run.trees[r["id"]], r)))
    return render_page(title or f"Search report: {run.path.name}", "\n".join(body), script=asset("search.js"),
                       blocks=blocks)
