"""report.html: a comparison's report as one page that opens offline in any browser -- report.md's text (summary
table, pair verdicts, TIDE, the other sections), its plots embedded as base64 PNG, report.csv (and pairs.csv) as
tables of every figure, and a few lines of inline JavaScript that sort the summary and CSV tables by the clicked
column. No file or address outside the page is loaded (its Content-Security-Policy forbids it).

It is made from the exp folder's files alone (report.md, report.csv, pairs.csv, the PNGs): ``write_html(exp)`` gives
an older folder its page.
"""
from __future__ import annotations

import base64
import csv
import re
from html import escape
from pathlib import Path

VERDICTS = ("better", "worse", "within noise", "equivalent", "undecided", "open", "baseline")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#fff}
main{max-width:1800px;margin:0 auto;padding:1.2rem 1.6rem 3rem}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #dde1e8}
code{background:#f2f4f7;border-radius:3px;padding:0 .25em;font-size:.9em}
.scroll{overflow-x:auto;margin:.6rem 0}
table{border-collapse:collapse;font-size:.85rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d5dae3;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{background:#eef1f6;white-space:nowrap}td.num{white-space:nowrap}td.long{min-width:15rem}tbody tr:nth-child(even){background:#f8f9fb}
table.sortable th{cursor:pointer;user-select:none}
#summary th:first-child,#summary td:first-child{position:sticky;left:0;background:#fff;box-shadow:1px 0 0 #d5dae3}
#summary th:first-child{background:#eef1f6}table.sortable th:hover{background:#dfe5ef}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td[class^=v-]{white-space:nowrap}.v-better{color:#0a7b34;font-weight:600}.v-worse{color:#b42318;font-weight:600}
.v-within-noise,.v-undecided,.v-open{color:#6b7280}.v-equivalent{color:#1d4ed8}
img{max-width:min(100%,960px);height:auto;border:1px solid #e4e7ec;margin:.4rem 0}
details{margin:.6rem 0}summary{cursor:pointer;color:#1d4ed8}
"""

# numeric cells sort as numbers (the first number of "0.930 ± 0.022", "+0.02 (95% CI ...)", "1,769,329"), other
# columns as text; "-" and empty cells last; a second click reverses
SCRIPT = """
(function () {
  var NUM = /^[+\\-\\u2212]?(\\d[\\d,]*\\.?\\d*|\\.\\d+)(e[+\\-]?\\d+)?/i;
  function value(cell) {
    var t = cell.textContent.trim();
    if (t === "" || t === "-") return null;
    var m = t.match(NUM);
    return m ? parseFloat(m[0].replace(/,/g, "").replace("\\u2212", "-")) : t;
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var keys = rows.map(function (r) { return value(r.cells[col]); });
    var numeric = keys.every(function (k) { return k === null || typeof k === "number"; });
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var order = rows.map(function (r, i) { return i; }).sort(function (a, b) {
      var x = keys[a], y = keys[b];
      if (x === null || y === null) return x === y ? a - b : (x === null ? 1 : -1);
      var c = numeric ? x - y : String(x).localeCompare(String(y));
      return c !== 0 ? dir * c : a - b;
    });
    order.forEach(function (i) { body.appendChild(rows[i]); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, col, th); });
    });
  });
})();
"""


def data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline(text: str, folder: Path) -> str:
    """One line of report.md's Markdown as HTML: `code`, **bold** (a verdict coloured), *italics*, ![alt](img.png)
    embedded from ``folder``."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append(f"<code>{escape(part[1:-1])}</code>")
            continue
        part = escape(part, quote=False)

        def image(m: re.Match) -> str:
            uri = data_uri(folder / m.group(2))
            alt = m.group(1).replace('"', "&quot;")
            return f'<img alt="{alt}" src="{uri}">' if uri else m.group(1)

        part = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, part)
        part = re.sub(r"\*\*(.+?)\*\*", lambda m: f"<strong{verdict_class(m.group(1))}>{m.group(1)}</strong>", part)
        part = re.sub(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])", r"<em>\1</em>", part)
        out.append(part)
    return "".join(out)


def verdict_class(text: str) -> str:
    """The colour class of a verdict: a plain one ('better') or --decide's ('better at 5 seeds')."""
    verdict = next((v for v in VERDICTS if text == v or text.startswith(f"{v} at ")), None)
    return f' class="v-{verdict.replace(" ", "-")}"' if verdict else ""


def table_html(rows: list[list[str]], folder: Path, attrs: str = "", raw: bool = False) -> str:
    """A header row and body rows as a table (cells as Markdown, or ``raw`` text as it is)."""
    def cell(tag: str, text: str) -> str:
        html = escape(text) if raw else inline(text, folder)
        cls = verdict_class(text.strip("* ")) or (' class="long"' if len(text) > 28 else
                                                  ' class="num"' if re.match(r"[+\-−]?\d", text) else "")
        return f"<{tag}{cls}>{html}</{tag}>"

    head = "".join(cell("th", c) for c in rows[0])
    body = "\n".join("<tr>" + "".join(cell("td", c) for c in r) + "</tr>" for r in rows[1:])
    return f'<div class="scroll"><table{attrs}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'


def csv_table(path: Path, table_id: str, title: str) -> str:
    """A CSV file as a sortable table of its cells exactly as written, folded under ``title``."""
    if not path.is_file():
        return ""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return ""
    summary = f"{escape(title)} ({len(rows) - 1} rows, {len(rows[0])} columns)"
    table = table_html(rows, path.parent, f' id="{table_id}" class="sortable"', raw=True)
    return f"<details><summary>{summary}</summary>\n{table}\n</details>"


def markdown_blocks(lines: list[str], folder: Path) -> list[str]:
    """report.md's block structure as HTML: headings, tables (the first one: the sortable summary), lists (with
    their indented continuation lines), paragraphs."""
    html, i, tables = [], 0, 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            html.append(f"<h{level}>{inline(line[level:].strip(), folder)}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in block]
            rows = [r for r in rows if not all(re.fullmatch(r":?-+:?", c) for c in r)]  # the |---| line
            attrs = ' id="summary" class="sortable"' if tables == 0 else ""
            html.append(table_html(rows, folder, attrs))
            tables += 1
        elif line.startswith("- "):
            items = []
            while i < len(lines) and (lines[i].startswith("- ") or (lines[i].startswith("  ") and items)):
                if lines[i].startswith("- "):
                    items.append(lines[i][2:])
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            html.append("<ul>\n" + "\n".join(f"<li>{inline(t, folder)}</li>" for t in items) + "\n</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ")):
                para.append(lines[i].strip())
                i += 1
            html.append(f"<p>{inline(' '.join(para), folder)}</p>")
    return html


def write_html(exp: Path) -> Path:
    """``exp``/report.html from the folder's report.md, report.csv, pairs.csv and plots."""
    lines = (exp / "report.md").read_text(encoding="utf-8").splitlines()
    blocks = markdown_blocks(lines, exp)
    title = escape(lines[0].lstrip("# ").strip()) if lines else "compare"
    first_table = next((k for k, b in enumerate(blocks) if 'id="summary"' in b), len(blocks) - 1)
    tables = [csv_table(exp / "report.csv", "report-csv", "Every figure per arm: report.csv"),
              csv_table(exp / "pairs.csv", "pairs-csv", "Every figure per chosen pair: pairs.csv")]
    blocks[first_table + 1:first_table + 1] = [t for t in tables if t]
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n" + "\n".join(blocks)
            + f"\n</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n")
    path = exp / "report.html"
    path.write_text(page, encoding="utf-8")
    return path

