"""`jaxinterp report RUN`: a static HTML page of a data-set run (jinja2; images as PNG files),
opening offline from disk: a sortable, filterable grid of images x methods (colored / heat map /
overlay views), per-method metric tables and per-class summaries."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from jaxinterp.outputs import current_umask, foreign_files, remove_ours, replace_dir
from jaxinterp.runs.store import REPORT_MARKER, Run, open_run, report_entry_is_ours

VIEWS = ("overlay", "heat", "colored")

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>jaxinterp report: {{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
td.name, th.name { text-align: left; }
img[hidden] { display: none !important; }
#grid img { width: {{ thumb }}px; height: {{ thumb }}px; image-rendering: pixelated; display: block; }
#grid td { padding: 2px; }
.controls { margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
tr.missing td { color: #999; background: #f4f4f4; }
td.not-computed { font-style: italic; text-align: center; }
</style></head>
<body>
<h1>jaxinterp report</h1>
<p id="summary">Run <code>{{ title }}</code>: {{ n }} images ({{ shown }} shown{% if not_computed %}, <span id="not-computed">{{ not_computed }}</span> not computed{% endif %}), model {{ arch }},
methods {{ methods|join(", ") }}, target {{ target }}.{% if failed %} {{ failed }} files could not
be read.{% endif %}{% if not complete %} <b id="incomplete">The run is incomplete</b>: {{ not_computed }}
of {{ n }} images not computed ({{ missing }} batches missing); means, counts and accuracies
below are over the {{ n - not_computed }} computed images only.{% endif %}</p>

<h2>Methods</h2>
<p class="note">Deletion AUC: lower is more faithful; insertion AUC: higher is more faithful
(Petsiuk et al. 2018). Pointing game and mass in mask: against the objects' pixel masks.</p>
<table id="metrics"><thead><tr><th class="name">method</th>{% for c in metric_cols %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in metric_rows %}<tr><td class="name">{{ row.method }}</td>{% for v in row.cells %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>

{% if leaderboard %}<h2>Leaderboard</h2>
{{ leaderboard|safe }}
{% endif %}
<h2>Classes</h2>
<table id="classes"><thead><tr><th class="name">class</th><th>images</th>{% if has_labels %}<th>accuracy</th>{% endif %}{% for c in class_cols %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in class_rows %}<tr><td class="name">{{ row.name }}</td><td>{{ row.count }}</td>{% if has_labels %}<td>{{ row.accuracy }}</td>{% endif %}{% for v in row.cells %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>

<h2>Images</h2>
<div class="controls">
<label>Filter <input id="filter" type="search" placeholder="file or class"></label>
<label>View <select id="view">{% for v in views %}<option value="{{ v }}">{{ v }}</option>{% endfor %}</select></label>
<span class="note">Click a column header to sort.</span>
</div>
<table id="grid"><thead><tr>
<th class="name" data-type="text">file</th><th data-type="text">label</th><th data-type="text">prediction</th><th data-type="num">score</th><th>image</th>
{% for mt in methods %}<th data-type="none">{{ mt }}</th>{% endfor %}
{% for c in sort_cols %}<th data-type="num">{{ c }}</th>{% endfor %}
</tr></thead><tbody>
{% for r in rows %}<tr data-search="{{ r.search }}"{% if r.missing %} class="missing"{% endif %}>
<td class="name">{{ r.file }}</td><td>{{ r.label }}</td><td>{{ r.prediction }}</td><td>{{ r.score }}</td>
<td><img src="{{ r.image }}" alt="{{ r.file }}"></td>
{% for cell in r.methods %}{% if cell is none %}<td class="not-computed">not computed</td>{% else %}<td>{% for v in views %}<img class="view view-{{ v }}" src="{{ cell[v] }}" alt="{{ v }}"{% if v != views[0] %} hidden{% endif %}>{% endfor %}</td>{% endif %}{% endfor %}
{% for v in r.sort_values %}<td>{{ v }}</td>{% endfor %}
</tr>{% endfor %}
</tbody></table>
<script>
(function () {
  const grid = document.getElementById("grid");
  const body = grid.tBodies[0];
  document.getElementById("filter").addEventListener("input", function (e) {
    const q = e.target.value.toLowerCase();
    for (const tr of body.rows) tr.hidden = q && !tr.dataset.search.includes(q);
  });
  document.getElementById("view").addEventListener("change", function (e) {
    for (const img of grid.querySelectorAll("img.view"))
      img.hidden = !img.classList.contains("view-" + e.target.value);
  });
  const heads = grid.tHead.rows[0].cells;
  for (let i = 0; i < heads.length; i++) {
    const type = heads[i].dataset.type;
    if (!type || type === "none") continue;
    heads[i].addEventListener("click", function () {
      const desc = heads[i].dataset.order !== "desc";
      for (const h of heads) delete h.dataset.order;
      heads[i].dataset.order = desc ? "desc" : "asc";
      const rows = Array.from(body.rows);
      const key = (tr) => tr.cells[i].textContent;
      rows.sort(function (a, b) {
        let x = key(a), y = key(b), c;
        if (type === "num") { x = parseFloat(x); y = parseFloat(y);
          x = isNaN(x) ? -Infinity : x; y = isNaN(y) ? -Infinity : y; c = x - y; }
        else c = x.localeCompare(y);
        return desc ? -c : c;
      });
      for (const tr of rows) body.appendChild(tr);
    });
  }
})();
</script>
</body></html>
"""


def leaderboard_table(board: dict, table_id: str = "leaderboard") -> str:
    """The HTML table of a `jaxinterp evaluate` leaderboard (its `leaderboard.json`): methods x
    metrics as mean ± 95 % half-width, a last row of compute seconds per column, columns
    sortable by clicking their header (escaped; one inline script).

    Args:
      board: the parsed `leaderboard.json` (`metrics`, `higher_is_better`, `rows`).
      table_id: the table's HTML id (unique on the page).
    Returns:
      An HTML fragment.
    """
    from html import escape

    try:
        metrics, higher, rows = board["metrics"], board["higher_is_better"], board["rows"]
        names = [r["method"] for r in rows]
    except (KeyError, TypeError):
        raise ValueError("not a jaxinterp evaluate leaderboard (metrics, higher_is_better, "
                         "rows)") from None

    def cell(r, k):
        s = r["scores"].get(k, {})
        if s.get("mean") is None:
            return "<td>—</td>"
        return f'<td data-v="{float(s["mean"])!r}">{s["mean"]:.4g} ± {s["ci95"]:.2g}</td>'

    tid = escape(table_id)
    head = "".join(f'<th data-col="{i + 1}">{escape(k)} {"↑" if higher[k] else "↓"}</th>'
                   for i, k in enumerate(metrics))
    body = "".join(f'<tr><td class="name" data-v="{escape(n)}">{escape(n)}</td>'
                   + "".join(cell(r, k) for k in metrics) + "</tr>" for n, r in zip(names, rows))
    secs = [sum(r["scores"].get(k, {}).get("seconds", 0.0) for r in rows) for k in metrics]
    foot = ('<tfoot><tr><td class="name">compute (s)</td>'
            + "".join(f"<td>{v:.1f}</td>" for v in secs) + "</tr></tfoot>")
    return f"""<p class="note">mean ± half-width of a normal 95 % interval over images; ↑ higher
is better, ↓ lower is better; click a header to sort.</p>
<table id="{tid}"><thead><tr><th class="name" data-col="0">method</th>{head}</tr></thead>
<tbody>{body}</tbody>{foot}</table>
<script>
(function () {{
  const table = document.getElementById("{tid}");
  const tb = table.tBodies[0];
  const order = {{}};
  for (const th of table.tHead.rows[0].cells) th.addEventListener("click", function () {{
    const c = +th.dataset.col;
    order[c] = -(order[c] || -1);
    const v = r => {{ const d = r.cells[c].dataset.v; const f = parseFloat(d);
                      return d === undefined ? NaN : (isNaN(f) ? d : f); }};
    const rows = Array.from(tb.rows);
    rows.sort((a, b) => {{ const x = v(a), y = v(b);
      if (typeof x === "number" && isNaN(x)) return 1;
      if (typeof y === "number" && isNaN(y)) return -1;
      return (x > y ? 1 : x < y ? -1 : 0) * order[c]; }});
    rows.forEach(r => tb.appendChild(r));
  }});
}})();
</script>"""


def read_leaderboard(path: str | os.PathLike) -> dict:
    """The parsed `leaderboard.json` of an evaluate output directory (or the file itself)."""
    import json

    path = Path(path)
    f = path / "leaderboard.json" if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"{path} holds no leaderboard.json (write one with "
                                "`jaxinterp evaluate --out DIR`)")
    try:
        board = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from None
    leaderboard_table(board)  # validates
    return board


def _fmt(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _pictures(image, attr) -> dict:
    from jaxinterp import viz

    heat = viz.gray_heatmap(attr)
    return {"overlay": viz.overlay(image, heat), "heat": viz.colormap(heat),
            "colored": viz.colored(attr) if attr.ndim == 3 else viz.colormap(heat)}


def write_report(run: str | os.PathLike | Run, out: str | os.PathLike | None = None, *,
                 limit: int = 200, thumb: int = 96, force: bool = False,
                 leaderboard: str | os.PathLike | None = None) -> Path:
    """Writes the HTML report of a run; returns the path of its `index.html`.

    Args:
      run: the run directory (or an open `Run`).
      out: the report directory (default `RUN/report`); written under a temporary name beside
        it and swapped into place; an existing one is replaced only with `force` and only if
        it is a jaxinterp report holding nothing else (a user's file in it, e.g. `notes.md`,
        makes `force` refuse before anything is written).

    Rows of an incomplete run that were never computed are shown greyed, "not computed", and
    left out of every mean, count and accuracy; the header says how many there are.
      limit: images shown in the grid (the first `limit` in run order); tables use all.
      thumb: displayed size of each picture in pixels.
      force: replace an existing report.
      leaderboard: an evaluate output directory (or its `leaderboard.json`): its methods x
        metrics table becomes the report's "Leaderboard" section, sortable.
    """
    try:
        import jinja2
    except ImportError:
        raise ImportError("the report needs jinja2: pip install jinja2 (or jaxinterp[report])") \
            from None
    from jaxinterp.images import save_image, load_image

    board = None if leaderboard is None else leaderboard_table(read_leaderboard(leaderboard))
    run = run if isinstance(run, Run) else open_run(run)
    man = run.manifest
    out = Path(os.path.abspath(out or run.path / "report"))
    if out.exists():
        if not force:
            raise FileExistsError(f"{out} exists; pass --force to replace it")
        if not (out / REPORT_MARKER).exists():
            raise FileExistsError(f"{out} is not a jaxinterp report; refusing to replace it")
        foreign = foreign_files(out, report_entry_is_ours)
        if foreign:
            raise FileExistsError(f"{out} holds files jaxinterp did not write "
                                  f"({', '.join(foreign[:5])}); --force replaces only a report "
                                  "as jaxinterp wrote it: move them out (nothing was changed)")
    n, classes = len(run), run.classes
    shown = min(limit, n)
    pred = run.predictions  # -1: unreadable file or never computed
    computed = run.computed
    labels = run.labels
    names = run.arrays
    metric_names = [c for c in ("deletion_auc", "insertion_auc", "pointing", "mass")
                    if any(f"{mt}.{c}" in names for mt in run.methods)]
    metrics = {(mt, c): np.asarray(run[f"{mt}.{c}"], np.float64)
               for mt in run.methods for c in metric_names if f"{mt}.{c}" in names}
    ok = pred >= 0
    metric_rows = [{"method": mt, "cells": [_fmt(np.nanmean(metrics[mt, c][ok]))
                                             if (mt, c) in metrics and ok.any() else "—"
                                             for c in metric_names]} for mt in run.methods]
    group = labels if labels is not None else pred
    group_names = classes
    class_cols = [f"{mt} {c}" for mt in run.methods for c in metric_names[:2]]
    class_rows = []
    for g in sorted(set(group[ok].tolist())):
        sel = ok & (group == g)
        row = {"name": group_names[g] if 0 <= g < len(group_names) else str(g),
               "count": int(sel.sum()),
               "accuracy": _fmt(float((pred[sel] == labels[sel]).mean())) if labels is not None
               else None,
               "cells": [_fmt(np.nanmean(metrics[mt, c][sel])) for mt in run.methods
                          for c in metric_names[:2] if (mt, c) in metrics]}
        class_rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        (tmp / "img").mkdir()
        size = tuple(man["size"])
        if man["kind"] == "shapes":
            import jax

            from jaxinterp.data import shapes_dataset

            images = np.asarray(shapes_dataset.shapes(jax.random.key(man.get("seed", 0)), shown,
                                                      size=size[0]).images) if shown else []
        attrs = {mt: run[mt][:shown].astype(np.float32) for mt in run.methods}
        score = np.asarray(run["score"][:shown])
        rows = []
        sort_cols = [f"{mt} {c}" for mt in run.methods for c in metric_names]
        for i in range(shown):
            f = run.files[i]
            if man["kind"] == "shapes":
                image = images[i]
            else:
                try:
                    image = load_image(os.path.join(man["root"], f), size)
                except (OSError, ValueError):
                    image = np.zeros((*size, 3), np.float32)
            save_image(image, tmp / "img" / f"{i}.png")
            cells = []
            for mt in run.methods if computed[i] else ():
                a = np.nan_to_num(attrs[mt][i])
                cell = {}
                for view, pic in _pictures(image, a).items():
                    save_image(pic, tmp / "img" / f"{i}_{mt}_{view}.png")
                    cell[view] = f"img/{i}_{mt}_{view}.png"
                cells.append(cell)
            if not computed[i]:
                cells = [None] * len(run.methods)
            label = "" if labels is None or labels[i] < 0 else group_names[labels[i]]
            p = ("not computed" if not computed[i] else "unreadable" if pred[i] < 0
                 else classes[pred[i]])
            rows.append({"file": f, "label": label, "prediction": p, "missing": not computed[i],
                         "score": _fmt(float(score[i])), "image": f"img/{i}.png",
                         "methods": cells,
                         "sort_values": [_fmt(metrics[mt, c][i]) if (mt, c) in metrics else "—"
                                         for mt in run.methods for c in metric_names],
                         "search": f"{f} {label} {p}".lower()})
        html = jinja2.Environment(autoescape=True).from_string(TEMPLATE).render(
            title=str(run.path), n=n, shown=shown, arch=man["model"]["arch"],
            methods=run.methods, target=man["target"], failed=len(run.failed),
            complete=run.complete, missing=len(run.missing_batches),
            not_computed=run.num_missing, metric_cols=metric_names,
            metric_rows=metric_rows, has_labels=labels is not None, class_cols=class_cols,
            class_rows=class_rows, views=VIEWS, rows=rows, sort_cols=sort_cols, thumb=thumb,
            leaderboard=board)
        (tmp / "index.html").write_text(html)
        (tmp / REPORT_MARKER).write_text("written by jaxinterp report\n")
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
        replace_dir(tmp, out, ours=report_entry_is_ours)
        tmp = None
    except BaseException:
        if tmp is not None and tmp.exists():  # our partial report (or, if the swap happened,
            remove_ours(tmp, report_entry_is_ours)  # the old one): never a foreign file
        raise
    return out / "index.html"
