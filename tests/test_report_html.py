"""report.html in a real headless Chromium (driven by Playwright): it opens from the file alone (nothing else is
requested), its summary table, TIDE table and pair verdicts show report.csv's figures, the full report.csv table
equals the file cell for cell, clicking a header sorts the summary, the plots decode; a screenshot is taken.

The browser: $HEADZOO_CHROMIUM, else a Chromium on PATH (Debian's ``apt-get install chromium``, what .ci/run
installs), else Playwright's own (``python -m playwright install chromium``). Without one the test fails, naming
these: it is never skipped."""
import csv
import os
import shutil
from pathlib import Path

import pytest
import torch

import compare
from compare.statistics.base import fmt_mean_std
from tests.test_compare import hand_made_labels, hand_made_runs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
A, B, C = "yolov5n.yaml", "yolov5n-decoupled.yaml", "yolov5n.yaml --precise-bn 0"


def launch(playwright):
    exe = os.environ.get("HEADZOO_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    try:
        return playwright.chromium.launch(executable_path=exe) if exe else playwright.chromium.launch()
    except Exception as e:  # noqa: BLE001 (no browser: a failure that says how to get one)
        pytest.fail(f"no headless Chromium ({type(e).__name__}: {str(e)[:300]}): apt-get install chromium, or "
                    f"python -m playwright install chromium, or set HEADZOO_CHROMIUM to a Chromium executable")


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    """A finished 3-arm x 2-seed comparison (hand-made runs with final detections, so TIDE has figures) and its
    report, with a chosen pair: arm A finds every label, B misses half the images, C between them."""
    exp = tmp_path_factory.mktemp("page") / "exp"
    labels = hand_made_labels()
    perfect = [torch.cat((lb[:, 1:], torch.full((3, 1), 0.9), lb[:, :1]), 1) for lb in labels]
    dets = {A: perfect, B: [d if i % 2 else d[:0] for i, d in enumerate(perfect)],
            C: [d if i % 4 else d[:0] for i, d in enumerate(perfect)]}
    hand_made_runs(exp, {A: [0.50, 0.52], B: [0.30, 0.31], C: [0.40, 0.45]}, dets, labels)
    plan = {"cfg": [A, B, C], "seeds": 2, "train_args": ["--epochs", "2"],
            "recipe": compare.train_recipe(["--epochs", "2"])}
    compare.report(exp, plan, latency_runs=0, n_boot=50, pairs=compare.resolve_pairs([f"{B}:yolov5n_precise-bn_0"],
                                                                                      plan["cfg"]))
    return exp


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def table(page, selector: str) -> list[list[str]]:
    """A rendered table's header and rows, as the page shows them (innerText of each cell)."""
    return page.eval_on_selector(selector, "t => Array.from(t.rows, r => Array.from(r.cells, c => c.innerText.trim()))")


def test_report_html_in_headless_chromium(exp, tmp_path):
    from playwright.sync_api import sync_playwright

    html = (exp / "report.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "<script src" not in html and "<link" not in html
    rows = read_csv(exp / "report.csv")
    by_cfg = {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((exp / "report.html").as_uri())
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

        summary = table(page, "#summary")
        head, body = summary[0], [dict(zip(summary[0], r)) for r in summary[1:]]
        assert [r["cfg"] for r in body] == [A, B, C]
        for shown in body:
            want = by_cfg[shown["cfg"]]
            assert shown["head"] == want["head"] and shown["verdict"] == want["verdict"]
            assert shown["params"] == f"{int(want['params']):,}" and shown["GFLOPs"] == f"{float(want['gflops']):.2f}"
            for col, key in (("final mAP50", "final_map50"), ("best mAP50", "best_map50"),
                             ("final mAP50-95", "final_map"), ("best mAP50-95", "best_map")):
                assert shown[col] == fmt_mean_std(float(want[f"{key}_mean"]), float(want[f"{key}_std"])), col
            assert shown["train s/epoch"].startswith(f"{float(want['train_s_per_epoch']):.2f} ± ")
            delta = shown["Δ mAP50-95 vs first"]
            if want["d_map_mean"]:
                lo, mean, hi = (float(want[k]) for k in ("d_map_lo", "d_map_mean", "d_map_hi"))
                assert delta == f"{mean:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}, n=2)"
            else:
                assert delta == "-"

        page.click("text=Every figure per arm")  # the folded report.csv table, every cell as written
        assert table(page, "#report-csv") == rows

        finals = {r["cfg"]: float(by_cfg[r["cfg"]]["final_map_mean"]) for r in body}
        sort_header = f"#summary th:nth-child({head.index('final mAP50-95') + 1})"
        page.click(sort_header)
        assert [r[0] for r in table(page, "#summary")[1:]] == sorted(finals, key=finals.get)
        page.click(sort_header)
        assert [r[0] for r in table(page, "#summary")[1:]] == sorted(finals, key=finals.get, reverse=True)
        assert page.get_attribute(sort_header, "aria-sort") == "descending"
        page.click("#summary th:nth-child(1)")
        assert [r[0] for r in table(page, "#summary")[1:]] == sorted(finals)

        tide = page.eval_on_selector("xpath=//h2[starts-with(., 'Why: error breakdown')]/following::table[1]",
                                     "t => Array.from(t.rows, r => Array.from(r.cells, c => c.innerText.trim()))")
        ap50 = {r[0]: r[tide[0].index("AP50")] for r in tide[1:] if not r[0].startswith("Δ")}
        assert ap50 == {compare.arm_name(c): f"{float(by_cfg[c]['tide_ap50']):.2f}" for c in (A, B, C)}
        verdicts = page.eval_on_selector_all("li strong[class^=v-]", "els => els.map(e => e.innerText)")
        assert by_cfg[B]["verdict"] in verdicts and set(verdicts) <= set(compare.report_html.VERDICTS)
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.naturalWidth, e.src.slice(0, 22)])")
        assert len(images) >= 4 and all(w > 100 and src == "data:image/png;base64," for _, w, src in images), images
        browser.close()
    assert errors == [] and [u for u in requests if not u.startswith("data:")] == [(exp / "report.html").as_uri()]
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_verdict_colours_include_decide_verdicts():
    """--decide's verdicts ('better at 5 seeds', 'open') get the colour of their verdict; other bold text none."""
    from compare.report_html import verdict_class

    assert verdict_class("better") == verdict_class("better at 5 seeds") == ' class="v-better"'
    assert verdict_class("undecided at 10 seeds") == ' class="v-undecided"' and verdict_class("open") == ' class="v-open"'
    assert verdict_class("within noise") == ' class="v-within-noise"'
    assert verdict_class("betterment") == verdict_class("yolov5n-decoupled") == ""
