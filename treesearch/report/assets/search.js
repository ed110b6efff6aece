/* The search report's problem list, trees and node details (treesearch.report.page inlines it).
 *
 * The rows come from the #report-data block; tree i from block #tree-i, parsed when it is first
 * opened. A tree's DOM is built a level at a time as nodes are expanded, so a tree of a few hundred
 * nodes (or a list of 500 problems, shown a page at a time) stays quick. Every text from the data
 * goes in through textContent, never as HTML.
 * The address keeps what is open: #p=<problem id>&n=<node>, so a link opens a problem at a node.
 */
"use strict";
(function () {
  const byId = (id) => document.getElementById(id);
  const data = JSON.parse(byId("report-data").textContent);
  const rows = data.rows;
  const compare = data.compare;
  const PAGE = 50;
  const state = { filter: "all", sort: "order", query: "", page: 0, open: -1, tree: null, selected: -1 };
  const parsed = new Map();
  // What every id begins with, up to a separator ("arith-2026-"): the list shows the rest.
  const ID_PREFIX = (() => {
    if (rows.length < 2) return "";
    let common = rows[0].id;
    for (const r of rows) while (!r.id.startsWith(common)) common = common.slice(0, -1);
    const cut = Math.max(...["-", "_", "/", ":", "."].map((c) => common.lastIndexOf(c)));
    return common.slice(0, cut + 1);
  })();

  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "cls") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) node.append(kid);
    return node;
  }
  const fixed = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const verdict = (correct, answer) =>
    correct === true ? "right" : correct === false ? (answer === null ? "unanswered" : "wrong")
      : answer === null ? "unanswered" : "ungraded";
  const MARK = { right: "✓ right", wrong: "✗ wrong", unanswered: "– none", ungraded: "? ungraded" };
  const SHORT = { right: "✓", wrong: "✗", unanswered: "–", ungraded: "?" };

  // ---------------------------------------------------------------------------------------------
  // The problem list

  const FILTERS = [["all", () => true], ["right", (r) => verdict(r.correct, r.answer) === "right"],
    ["wrong", (r) => verdict(r.correct, r.answer) === "wrong"],
    ["unanswered", (r) => verdict(r.correct, r.answer) === "unanswered"]];
  if (rows.some((r) => verdict(r.correct, r.answer) === "ungraded"))
    FILTERS.push(["ungraded", (r) => verdict(r.correct, r.answer) === "ungraded"]);
  if (compare) FILTERS.push(["flipped", (r) => compare.other[r.id] && compare.other[r.id].correct !== r.correct]);

  function visible() {
    const keep = FILTERS.find(([name]) => name === state.filter)[1];
    const query = state.query.toLowerCase();
    let out = rows.filter((r) => keep(r) && (!query || r.id.toLowerCase().includes(query)
      || r.problem.toLowerCase().includes(query)));
    const [field, way] = state.sort.split("-");
    if (field !== "order") {
      const sign = way === "asc" ? 1 : -1;
      out = out.slice().sort((a, b) => {
        if (a[field] === null) return b[field] === null ? a.index - b.index : 1;
        if (b[field] === null) return -1;
        return sign * (a[field] - b[field]) || a.index - b.index;
      });
    }
    return out;
  }

  function drawFilters() {
    const box = byId("filters");
    box.replaceChildren(...FILTERS.map(([name, keep]) => el("button", {
      type: "button", "data-filter": name, "aria-pressed": String(state.filter === name),
      text: `${name} (${rows.filter(keep).length})`,
      onclick: () => { state.filter = name; state.page = 0; drawFilters(); drawList(); },
    })));
  }

  function drawList() {
    const list = visible();
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const head = [["id", ID_PREFIX && `every id begins with ${ID_PREFIX}`], ["problem"], ["answer"], ["gold"], ["", "result: ✓ right, ✗ wrong, – no answer"],
      ["tokens"], ["value", "the chosen solution's value"], ["nodes", "nodes in the tree"]];
    if (compare) head.push(["B", `the result of ${compare.name}`], ["B tok", `the tokens of ${compare.name}`]);
    byId("problems").tHead.replaceChildren(el("tr", {}, ...head.map(([h, title]) => el("th", { text: h, title }))));
    if (ID_PREFIX && !byId("problems").caption)
      byId("problems").createCaption().textContent = `ids without their common beginning "${ID_PREFIX}"`;
    const body = list.slice(state.page * PAGE, (state.page + 1) * PAGE).map((r) => {
      const v = verdict(r.correct, r.answer);
      const cells = [el("td", { cls: "text id", text: r.id.slice(ID_PREFIX.length) || r.id, title: `#${r.index + 1}: ${r.id}` }),
        el("td", { cls: "text", text: r.problem, title: r.problem }),
        el("td", { cls: "text short", text: r.answer === null ? "–" : r.answer, title: r.answer }),
        el("td", { cls: "text short", text: r.gold === null ? "–" : r.gold, title: r.gold }),
        el("td", { cls: `verdict ${v}`, text: SHORT[v], title: v }), el("td", { cls: "num", text: String(r.tokens) }),
        el("td", { cls: "num", text: fixed(r.value, 2) }), el("td", { cls: "num", text: r.nodes ? String(r.nodes) : "–" })];
      if (compare) {
        const o = compare.other[r.id];
        const w = o ? verdict(o.correct, o.answer) : null;
        cells.push(el("td", { cls: w ? `verdict ${w}` : "", text: w ? SHORT[w] : "", title: w || "not in B" }),
          el("td", { cls: "num", text: o ? String(o.tokens) : "" }));
      }
      return el("tr", { "data-index": String(r.index), cls: r.index === state.open ? "open" : null, tabindex: "0",
        onclick: () => openProblem(r.index, null),
        onkeydown: (e) => { if (e.key === "Enter") openProblem(r.index, null); } }, ...cells);
    });
    byId("problems").tBodies[0].replaceChildren(...body);
    const first = list.length ? state.page * PAGE + 1 : 0;
    byId("pager").replaceChildren(
      el("button", { type: "button", "data-page": "prev", disabled: state.page === 0,
        onclick: () => { state.page -= 1; drawList(); }, text: "‹ previous" }),
      el("button", { type: "button", "data-page": "next", disabled: state.page >= pages - 1,
        onclick: () => { state.page += 1; drawList(); }, text: "next ›" }),
      `${first}–${Math.min(list.length, (state.page + 1) * PAGE)} of ${list.length}`);
  }

  // ---------------------------------------------------------------------------------------------
  // One tree

  function treeOf(index) {
    if (!parsed.has(index)) {
      const block = byId(`tree-${index}`);
      let t = null;
      if (block) {
        t = JSON.parse(block.textContent);
        t.kids = t.parent.map(() => []);
        t.parent.forEach((p, i) => { if (p >= 0) t.kids[p].push(i); });
        t.onPath = new Set([0, ...t.chosen]);
        t.index = index;
      }
      parsed.set(index, t);
    }
    return parsed.get(index);
  }

  function stepLine(t, i) {
    if (i === 0) return `(root) ${t.problem}`;
    const text = (t.step[i] || "").trim();
    return text.split("\n")[0] + (text.includes("\n") ? " …" : "");
  }

  function tags(t, i) {
    const out = [];
    if (t.answer[i] !== null) {
      const r = t.right[i];
      out.push(el("span", { cls: `tag ${r === true ? "right" : r === false ? "wrong" : ""}`,
        text: `answer ${t.answer[i]}${r === true ? " ✓" : r === false ? " ✗" : ""}` }));
    } else if (t.terminal[i]) out.push(el("span", { cls: "tag", text: "terminal" }));
    if (t.label[i] !== null) out.push(el("span", { cls: `tag ${t.label[i] ? "label-ok" : "label-bad"}`,
      title: "the toy oracle's label of this step", text: t.label[i] ? "oracle ✓" : "oracle ✗" }));
    return out;
  }

  function stats(t, i) {
    const parts = [];
    if (t.prior[i] !== null && i > 0) parts.push(`P ${fixed(t.prior[i], 2)}`);
    if (t.reward[i] !== null && i > 0) parts.push(`R ${fixed(t.reward[i], 2)}`);
    if (t.q[i] !== null) parts.push(`Q ${fixed(t.q[i], 2)}`);
    if (t.visits[i] !== null) parts.push(`N ${t.visits[i]}`);
    return el("span", { cls: "stats", text: parts.join(" ") });
  }

  function nodeItem(t, i) {
    const leaf = t.kids[i].length === 0;
    const toggle = el("button", { type: "button", cls: leaf ? "toggle leaf" : "toggle", "aria-label": "expand",
      text: leaf ? "·" : "▸", tabindex: leaf ? "-1" : null });
    const row = el("div", { cls: "row", title: `node ${i}` }, toggle,
      el("span", { cls: "step", text: stepLine(t, i) }), ...tags(t, i), stats(t, i));
    const item = el("li", { cls: t.onPath.has(i) ? "node chosen" : "node", "data-node": String(i), role: "treeitem",
      "aria-expanded": leaf ? null : "false" }, row);
    toggle.addEventListener("click", (e) => { e.stopPropagation(); if (!leaf) setOpen(t, item, i, item.getAttribute("aria-expanded") !== "true"); });
    row.addEventListener("click", () => select(t, i));
    return item;
  }

  function setOpen(t, item, i, open) {
    let list = item.querySelector(":scope > ul");
    if (open && !list) {
      // Children by visits (the search's own order of preference), then by id.
      const kids = t.kids[i].slice().sort((a, b) => (t.visits[b] || 0) - (t.visits[a] || 0) || a - b);
      list = el("ul", { role: "group" }, ...kids.map((k) => nodeItem(t, k)));
      item.append(list);
    }
    if (list) list.hidden = !open;
    item.setAttribute("aria-expanded", String(open));
    const toggle = item.querySelector(":scope > .row > .toggle");
    toggle.textContent = open ? "▾" : "▸";
    toggle.setAttribute("aria-label", open ? "collapse" : "expand");
  }

  function itemOf(i) { return byId("tree").querySelector(`li[data-node="${i}"]`); }

  function reveal(t, node) {
    // Opens every ancestor of `node`, root first, so that its row exists and shows.
    const chain = [];
    for (let i = t.parent[node]; i >= 0; i = t.parent[i]) chain.unshift(i);
    for (const i of chain) setOpen(t, itemOf(i), i, true);
    return itemOf(node);
  }

  function openAll(t, open) {
    if (open) t.parent.forEach((_, i) => { if (t.kids[i].length) setOpen(t, itemOf(i), i, true); });
    else byId("tree").querySelectorAll('li[aria-expanded="true"]').forEach((li) => setOpen(t, li, Number(li.dataset.node), false));
  }

  function openProblem(index, node) {
    const r = rows[index];
    if (!r) return;
    state.open = index;
    drawList();
    const t = treeOf(index);
    state.tree = t;
    state.selected = -1;
    byId("tree-title").textContent = `Tree of ${r.id}`;
    const v = verdict(r.correct, r.answer);
    const head = [el("div", { cls: "problem", text: r.problem }),
      el("p", {}, "chosen answer ", el("b", { text: r.answer === null ? "none" : r.answer }), " · gold ",
        el("b", { text: r.gold === null ? "unknown" : r.gold }), " · ", el("span", { cls: `verdict ${v}`, text: MARK[v] }),
        ` · ${r.tokens} tokens · value ${fixed(r.value)}`)];
    byId("tree").replaceChildren();
    byId("details").replaceChildren(el("p", { cls: "hint", text: "Click a node to see its values and its whole prefix." }));
    if (!t) {
      head.push(el("p", { cls: "hint", text: "No tree was written for this problem (pass --trees, the search's --trees-out)." }));
      byId("tree-head").replaceChildren(...head);
      byId("tree-tools").hidden = true;
      setHash(r.id, null);
      return;
    }
    head.push(el("div", { cls: "legend" }, el("span", { cls: "tag", text: "P prior · R PRM reward · Q value · N visits" }),
      el("span", { cls: "tag chosen-key", text: "the chosen path" }),
      t.chosen_whole !== false ? null : el("span", { text: "the chosen solution goes on past the tree (a completion after the search)" })));
    byId("tree-head").replaceChildren(...head);
    const tools = byId("tree-tools");
    tools.hidden = false;
    tools.replaceChildren(
      el("button", { type: "button", "data-tool": "path", text: "chosen path", onclick: () => { openAll(t, false); showPath(t); } }),
      el("button", { type: "button", "data-tool": "expand", text: `expand all (${t.parent.length} nodes)`, onclick: () => openAll(t, true) }),
      el("button", { type: "button", "data-tool": "collapse", text: "collapse all", onclick: () => openAll(t, false) }));
    const root = nodeItem(t, 0);
    byId("tree").append(el("ul", {}, root));
    if (t.kids[0].length) setOpen(t, root, 0, true);
    showPath(t);
    if (node !== null && node >= 0 && node < t.parent.length) {
      const item = reveal(t, node);
      select(t, node);
      // Scrolls the tree's pane only: the page stays where it is.
      const pane = byId("tree-pane");
      pane.scrollTop = Math.max(0, item.offsetTop - pane.clientHeight / 2);
    } else setHash(r.id, null);
  }

  function showPath(t) {
    // The chosen path open down to its last node (deeper nodes and other branches stay collapsed).
    for (const i of t.chosen.slice(0, -1)) setOpen(t, itemOf(i), i, true);
  }

  // ---------------------------------------------------------------------------------------------
  // A node's details

  function select(t, i) {
    byId("tree").querySelectorAll(".row.selected").forEach((x) => x.classList.remove("selected"));
    const item = itemOf(i);
    if (item) item.querySelector(":scope > .row").classList.add("selected");
    state.selected = i;
    const fields = [["node", String(i)], ["depth", String(t.depth[i])],
      ["PRM reward", fixed(t.reward[i]), "reward"], ["prior", fixed(t.prior[i]), "prior"], ["Q", fixed(t.q[i]), "q"],
      ["visits", t.visits[i] === null ? "–" : String(t.visits[i]), "visits"],
      ["logprob", fixed(t.logprob[i]), "logprob"], ["expanded", t.expanded[i] === null ? "–" : String(t.expanded[i])],
      ["terminal", String(t.terminal[i])],
      ["answer", t.answer[i] === null ? "–" : t.answer[i] + (t.right[i] === true ? " (right)" : t.right[i] === false ? " (wrong)" : ""), "answer"],
      ["oracle label", t.label[i] === null ? "–" : t.label[i] ? "1 (right step)" : "0 (wrong step)", "label"],
      ["chosen path", t.onPath.has(i) ? "yes" : "no"]];
    const dl = el("dl", {});
    for (const [name, value, key] of fields) dl.append(el("dt", { text: name }), el("dd", { text: value, "data-field": key || null }));
    const chain = [];
    for (let k = i; k > 0; k = t.parent[k]) chain.unshift(k);
    const firstWrong = chain.find((k) => t.label[k] === 0);
    const steps = el("ol", {}, ...chain.map((k) => el("li", { cls: (k === i ? "this " : "") + (k === firstWrong ? "first-wrong" : ""),
      "data-node": String(k) }, el("pre", { text: t.step[k] || "" }),
      el("div", { cls: "step-meta", text: [`node ${k}`, `R ${fixed(t.reward[k])}`, `Q ${fixed(t.q[k])}`,
        t.label[k] === null ? null : `oracle ${t.label[k] ? "✓" : "✗"}`, k === firstWrong ? "first wrong step" : null]
        .filter(Boolean).join(" · ") }))));
    byId("details").replaceChildren(el("h3", { text: i === 0 ? "The root" : `Step ${t.depth[i]}: node ${i}` }),
      i === 0 ? null : el("pre", { cls: "step-text", id: "node-step", text: t.step[i] || "" }), dl,
      el("h3", { text: "Its whole prefix" }), el("pre", { cls: "prefix-problem", text: t.problem }),
      chain.length ? steps : el("p", { cls: "hint", text: "(no steps: the root)" }));
    setHash(rows[t.index].id, i);
  }

  function setHash(id, node) {
    const hash = `#p=${encodeURIComponent(id)}` + (node === null ? "" : `&n=${node}`);
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function fromHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const id = params.get("p");
    const index = rows.findIndex((r) => r.id === id);
    if (index < 0) return false;
    const node = params.has("n") ? Number(params.get("n")) : null;
    if (index !== state.open || node !== state.selected) openProblem(index, Number.isInteger(node) ? node : null);
    return true;
  }

  byId("sort").addEventListener("change", (e) => { state.sort = e.target.value; state.page = 0; drawList(); });
  byId("query").addEventListener("input", (e) => { state.query = e.target.value; state.page = 0; drawList(); });
  window.addEventListener("hashchange", fromHash);
  drawFilters();
  drawList();
  if (!fromHash()) {
    const first = rows.find((r) => byId(`tree-${r.index}`));
    if (first) openProblem(first.index, null);
  }
})();
