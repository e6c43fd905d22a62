"""Tests for the HTML report (specalign/report_html.py, rule report_html).

- the page built from small synthetic artifacts (tests/test_divergence.py `synthetic_artifacts`):
  every plot embedded as a data: URI, every section's table, predicted columns labelled, nothing
  that points at the network;
- the same page in a real browser: headless Chromium renders it (screenshot saved in the test's
  tmp dir), its DOM holds every plot and table, and its NetLog shows the page requested nothing
  over the network (a page with one remote image is the check's positive control). Skips, saying
  why, where no chromium binary exists (.ci/run installs Debian's chromium when it can);
- the job spec and the rule's wiring (outputs = PLOTS, captions exist, `snakemake --report`);
- `snakemake --report report.zip` in a copy of the session's shared demo run (slow).
"""
from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.utils import validate
from test_divergence import synthetic_artifacts

from specalign import stages
from specalign.report_html import PLOTS, PREDICTED, build_html_report
from specalign.specs import SCHEMA_PATH

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# the sections of the page that must hold a table on the synthetic runs (two runs: greedy, sampled)
MIN_TABLES = 5 + 2 * 5   # ranking, gamma, temperature, speedup, loop; per run: divergence, top, classes, attributes, samples


class _Page(HTMLParser):
    """Every tag's attributes, and what they point at."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    def images(self) -> list[str]:
        return [a.get("src", "") for t, a in self.tags if t == "img"]

    def references(self) -> list[str]:
        """Every URL-valued attribute (src, href, srcset, poster, data, action, background...)."""
        keys = ("src", "href", "srcset", "poster", "data", "action", "background", "formaction", "xlink:href")
        return [a[k] for _, a in self.tags for k in keys if a.get(k)]


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def assert_self_contained(html: str) -> _Page:
    page = parse(html)
    imgs = page.images()
    assert len(imgs) == len(PLOTS), f"{len(imgs)} images, {len(PLOTS)} plots"
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    for ref in page.references():
        assert not re.match(r"\s*(https?:|//|ftp:|file:)", ref, re.I), f"the page points at {ref!r}"
    assert page.count("script") == 0 and page.count("link") == 0 and page.count("iframe") == 0
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", html, re.I)  # no remote CSS resource
    assert "@import" not in html and "@font-face" not in html
    for key in PLOTS:
        assert f'id="plot-{key}"' in html
    return page


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_html")
    runs, csvs, manifests = synthetic_artifacts(root)
    page = build_html_report(runs, SimpleNamespace(**csvs), manifests, n_boot=50)
    path = root / "index.html"
    path.write_text(page.html, encoding="utf-8")
    return SimpleNamespace(page=page, path=path, runs=runs, csvs=csvs, root=root)


# ------------------------------------------------------------------------------------------ the page
def test_page_is_self_contained_with_every_plot_and_table(built):
    html = built.page.html
    page = assert_self_contained(html)
    assert page.count("table") >= MIN_TABLES
    assert set(built.page.plots) == set(PLOTS)
    assert all(png[:8] == PNG_MAGIC for png in built.page.plots.values())
    for heading in ("Which draft pays off", "Acceptance against gamma", "Acceptance against temperature",
                    "Speedup: predicted over (gamma, c)", "Conditional acceptance per position",
                    "first divergence vs teacher-forced acceptance", "disagreements and token classes",
                    "Acceptance against sample attributes", "Samples: draft and target side by side"):
        assert heading in html, heading


def test_predicted_columns_are_labelled_and_never_measured(built):
    html = built.page.html
    headers = re.findall(r"<th( class=\"pred\")?>([^<]*)</th>", html)
    assert headers
    for pred, text in headers:
        name = text.removesuffix(" (predicted)")
        if name in PREDICTED:
            assert pred and text.endswith("(predicted)"), text
        else:
            assert not pred and "(predicted)" not in text, text
    assert any(t.startswith("expected_speedup_iid") for _, t in headers)
    md = built.page.markdown
    assert "expected_speedup_iid" not in md or "expected_speedup_iid (predicted)" in md
    assert "best_predicted_speedup (predicted)" in md


def test_the_answer_says_measured_and_predicted_with_intervals(built):
    import polars as pl

    html, md = built.page.html, built.page.markdown
    answer = re.search(r'<p class="answer" id="answer">(.*?)</p>', html, re.S).group(1)
    summary = pl.read_csv(built.csvs["summary"])
    greedy = summary.filter(pl.col("decoding") == "greedy").row(0, named=True)
    assert f"measured Leviathan alpha {greedy['leviathan_alpha']:.3f}" in answer
    assert "95% CI" in answer and "Predicted by the i.i.d. model" in answer
    # the best timed gamma's speedup, its interval and device, all from summary.csv (the timing job's)
    timed = summary.filter((pl.col("decoding") == "greedy") & pl.col("measured_speedup").is_not_null())
    best = timed.sort("measured_speedup", descending=True).row(0, named=True)
    assert (f"at its best timed gamma {best['gamma']}: measured speedup {best['measured_speedup']:.2f} "
            f"(95% CI {best['measured_speedup_lo']:.2f}–{best['measured_speedup_hi']:.2f})x on {best['device']}") in answer
    lo, hi = best["measured_speedup_lo"], best["measured_speedup_hi"]
    word = "pays off" if lo > 1 else "does not pay off" if hi < 1 else "cannot tell (interval straddles 1)"
    assert f"({word})" in answer
    assert md.splitlines()[2].startswith("**Does the draft pay off?**")   # the same paragraph in Markdown
    for name, _ in PLOTS.values():
        assert f"]({name})" in md


def test_samples_table_marks_the_disagreeing_tokens(built):
    html = built.page.html
    # s1: teacher-forced, the draft proposed " red" for the target's " blue"; free-running it says " red"
    row = re.search(r"<tr><td>s1</td>(.*?)</tr>", html, re.S).group(1)
    assert '<mark class="tf" title="teacher-forced: draft proposed &quot; red&quot;"> blue</mark>' in row
    assert '<mark class="pos" title="position 1: target has &quot; blue&quot;"> red</mark>' in row
    row = re.search(r"<tr><td>s4</td>(.*?)</tr>", html, re.S).group(1)
    assert '<mark class="unmapped"' in row                      # the draft's unmapped first token
    row = re.search(r"<tr><td>s0</td>(.*?)</tr>", html, re.S).group(1)
    assert "<td>identical</td>" in row and "<mark" not in row


def test_empty_acceptance_tables_still_give_a_page(built, tmp_path):
    """A table with no rows is written as an empty file: the page says so instead of failing."""
    empty = {}
    for name in ("summary", "per_position", "cost", "loop"):
        (tmp_path / f"{name}.csv").write_text("")
        empty[name] = str(tmp_path / f"{name}.csv")
    page = build_html_report(built.runs, SimpleNamespace(**empty), {}, n_boot=20)
    assert_self_contained(page.html)
    assert "cannot say" in page.markdown and "<em>no rows</em>" in page.html


# ------------------------------------------------------------------------------------------ a browser
def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-features=Translate,OptimizationHints,MediaRouter,SpellCheck",
                 # nothing a test renders may reach the network, whatever the page says
                 '--host-resolver-rules=MAP * ~NOTFOUND']


def run_browser(page: Path, *args: str, netlog: Path | None = None, timeout: float = 90) -> str:
    cmd = [chromium(), *BROWSER_FLAGS, *args]
    if netlog is not None:
        cmd.append(f"--log-net-log={netlog}")
    proc = subprocess.run([*cmd, page.resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def page_requests(netlog: Path) -> list[str]:
    """The URLs the PAGE asked for (URL requests whose network isolation key is the file:// page;
    the browser's own background requests carry another key)."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a NetLog cut short is closed by hand
        text = text.rstrip().rstrip(",")
        log = json.loads(text if text.endswith("]}") else text + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and str(e.get("params", {}).get("network_isolation_key", "")).startswith("file://")]


needs_chromium = pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install "
                                    "chromium; .ci/run installs it when root with apt-get)")


@needs_chromium
def test_chromium_renders_every_plot_and_table_and_fetches_nothing(built, tmp_path):
    from PIL import Image

    shot, netlog = tmp_path / "index.png", tmp_path / "netlog.json"
    run_browser(built.path, f"--screenshot={shot}", "--window-size=1400,6000", netlog=netlog)
    assert page_requests(netlog) == []                      # the page asked for nothing
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 6000)
    # the plots were decoded and drawn: many strongly coloured pixels (the page's own CSS has few)
    import numpy as np

    px = np.asarray(image.resize((350, 1500)), dtype=np.int16)
    colourful = int(((px.max(axis=2) - px.min(axis=2)) > 100).sum())
    assert colourful > 5000, colourful
    dom = run_browser(built.path, "--dump-dom")
    page = assert_self_contained(dom)
    assert page.count("table") == parse(built.page.html).count("table")
    assert page.count("figure") == len(PLOTS)
    shutil.copy(shot, built.root / "index.png")  # kept beside the page, for a look
    print(f"screenshot: {shot}")


@needs_chromium
def test_the_network_check_sees_a_remote_resource(tmp_path):
    """Positive control of page_requests: a page with one remote image is caught."""
    page = tmp_path / "remote.html"
    page.write_text('<html><body><img src="https://example.invalid/x.png"><p>x</p></body></html>')
    netlog = tmp_path / "netlog.json"
    run_browser(page, "--dump-dom", netlog=netlog)
    assert page_requests(netlog) == ["https://example.invalid/x.png"]


def test_the_static_check_sees_a_remote_reference():
    """Positive control of assert_self_contained: every plot embedded, but one link to the network."""
    png = base64.b64encode(PNG_MAGIC).decode()
    figures = "".join(f'<figure id="plot-{k}"><img src="data:image/png;base64,{png}"></figure>' for k in PLOTS)
    assert_self_contained(f"<html><body>{figures}</body></html>")
    with pytest.raises(AssertionError, match="points at"):
        assert_self_contained(f'<html><body>{figures}<a href="https://example.invalid/">x</a></body></html>')
    with pytest.raises(AssertionError):
        assert_self_contained(f"<html><head><script>1</script></head><body>{figures}</body></html>")


# ------------------------------------------------------------------------------------------ wiring
def _config() -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(cfg, str(SCHEMA_PATH))
    return cfg


def _edited(cfg: dict, key: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node[k]
    node[last] = value
    return cfg


def test_the_job_spec_holds_the_runs_manifests_and_bootstrap():
    cfg = _config()
    spec = stages.spec(cfg, "report_html")
    assert [r["scores"] for r in spec["runs"]] == [r.scores for r in stages.runs(cfg)]
    assert spec["manifests"] == {"demo": "results/data/demo/manifest.parquet"}
    assert spec["bootstrap"] == cfg["bootstrap"]
    assert [s for s, _ in stages.all_jobs(cfg)].count("report_html") == 1
    for key, value in (("shards", 3), ("speculative.gammas", [2]), ("bootstrap", 7),
                       ("decodings.sampled.temperature", 0.9)):
        assert stages.spec(_edited(cfg, key, value), "report_html") != spec, key
    for key, value in (("gammas", [1, 5]), ("questions", ["Another?"]), ("models.demo_draft.dtype", "bfloat16"),
                       ("skip_bad_samples", True)):
        assert stages.spec(_edited(cfg, key, value), "report_html") == spec, key


def test_the_rule_writes_every_plot_as_a_report_output_with_a_caption():
    rule = (REPO / "rules" / "report_html.smk").read_text()
    for key, (name, _) in PLOTS.items():
        m = re.search(rf'{key}=report\(\s*"results/report/{re.escape(name)}",\s*caption="\.\./report/([\w.]+)"', rule)
        assert m, f"{key}: no report() output results/report/{name}"
        assert (REPO / "report" / m.group(1)).is_file()
    assert re.search(r'html=report\(\s*"results/report/index.html",\s*caption="\.\./report/index.rst"', rule)
    assert 'report: "report/workflow.rst"' in (REPO / "Snakefile").read_text()
    assert (REPO / "report" / "workflow.rst").is_file() and (REPO / "report" / "index.rst").is_file()
    assert 'include: "rules/report_html.smk"' in (REPO / "Snakefile").read_text()


@pytest.mark.slow
def test_snakemake_report_builds_from_a_finished_run(tmp_path_factory, tmp_path):
    """The session's shared demo run built index.html and its plots (rule all); `snakemake --report`
    in a copy of it packs them with their captions."""
    from workflow_helpers import clone_run, shared_demo_run, snakemake

    run = shared_demo_run(tmp_path_factory)
    html = (run / "results/report/index.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    for name, _ in PLOTS.values():
        assert (run / "results/report" / name).read_bytes()[:8] == PNG_MAGIC
    clone = clone_run(run, tmp_path / "clone")
    if not (clone / "report").is_dir():  # captions and the workflow description live in report/
        shutil.copytree(REPO / "report", clone / "report")
    snakemake(clone, "--report", "report.zip", timeout=300)
    names = zipfile.ZipFile(clone / "report.zip").namelist()
    for name, _ in PLOTS.values():
        assert any(n.endswith("/" + name) for n in names), f"{name} not in report.zip: {names}"
    assert any(n.endswith("/index.html") for n in names) and any(n.endswith("report.html") for n in names)


@pytest.mark.parametrize("speedup,lo,hi,word", [
    (1.3, 1.1, 1.5, "pays off"), (0.8, 0.7, 0.9, "does not pay off"),
    (1.05, 0.95, 1.2, "cannot tell (interval straddles 1)"), (1.2, 1.0, 1.4, "cannot tell (interval straddles 1)"),
    (None, None, None, "not timed"), (1.2, None, None, "cannot tell (no interval)"),
])
def test_verdict_reads_the_interval_not_the_point(speedup, lo, hi, word):
    from specalign.report import verdict

    assert verdict(speedup, lo, hi) == word


def test_payoff_table_is_every_timed_row_of_the_summary(built):
    import polars as pl

    from specalign.report import PAYOFF_COLUMNS, payoff_table

    summary = pl.read_csv(built.csvs["summary"])
    table = payoff_table(summary)
    timed = summary.filter(pl.col("measured_speedup").is_not_null())
    assert timed.height and table.height == timed.height
    keys = ["dataset", "draft", "target", "decoding", "gamma"]
    joined = table.join(timed, on=keys, suffix="_s")
    assert joined.height == timed.height
    for col in ("measured_speedup", "measured_speedup_lo", "measured_speedup_hi", "device", "c", "break_even_alpha"):
        assert joined[col].equals(joined[f"{col}_s"]), col
    assert table["deployment"].to_list() == [f"chain, gamma {g}" for g in table["gamma"]]
    # the page and the Markdown both carry it, predicted columns marked
    html = built.page.html
    assert "Measured payoff per deployment" in html and "Measured payoff per deployment" in built.page.markdown
    assert '<th class="pred">break_even_alpha (predicted)</th>' in html
    assert [c for c in PAYOFF_COLUMNS if c in table.columns][:4] == ["dataset", "draft", "target", "decoding"]
