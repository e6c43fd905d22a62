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
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.utils import validate
from test_divergence import synthetic_artifacts

from specalign import stages
from specalign.report_html import PLOTS, SECTIONS, build_html_report
from specalign.report_tables import PREDICTED
from specalign.specs import SCHEMA_PATH

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# the tables the page must hold on the synthetic runs (two runs: greedy, sampled)
MIN_TABLES = 6 + 2 * 5   # answer, payoff, ranking, loop, temperature, summary; per run: divergence, top, classes,
#                          attributes, samples
SCREEN = (1400, 900)     # the screen: the page with its folds closed stays within six of them


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
    assert all(p.png[:8] == PNG_MAGIC for p in built.page.plots.values())
    for key, heading in SECTIONS.items():
        if key != "inputs":   # the synthetic runs have no ablation, grounding or oracle rows
            assert f'<section id="{key}"><h2>{escape(heading)}</h2>' in html, heading
            assert f'<a href="#{key}">{escape(heading)}</a>' in html  # the navigation list names it
    # the answer comes first: the lede, then the answer table, before any section
    assert html.index('class="lede"') < html.index('id="answer"') < html.index("<nav") < html.index("<section")


def test_predicted_columns_are_labelled_and_never_measured(built):
    html = built.page.html
    headers = re.findall(r"<th( class=\"pred\")?>([^<]*)</th>", html)
    assert headers
    for pred, text in headers:
        name = text.removesuffix(" (predicted)")
        # shaded exactly when it says (predicted), and every column a model fills says it
        assert bool(pred) == text.endswith("(predicted)"), text
        if name in PREDICTED:
            assert pred, text
    assert any(t.startswith("expected_speedup_iid") for _, t in headers)
    md = built.page.markdown
    assert "expected_speedup_iid" not in md or "expected_speedup_iid (predicted)" in md
    assert "best_predicted_speedup (predicted)" in md and "break_even_alpha (predicted)" in md


def test_every_figure_has_its_data_and_alt_text(built):
    """Each PNG's numbers travel with it (the CSV the rule writes beside it) and its <img> says what it shows."""
    import polars as pl

    summary = pl.read_csv(built.csvs["summary"])
    for key, plot in built.page.plots.items():
        # a drawn figure names its CSV; an empty one says why it is empty
        assert (f"{PLOTS[key][0].removesuffix('.png')}.csv" in plot.alt
                or plot.alt.startswith("No figure: ") and key in ("trees", "ranks")), (key, plot.alt)
        assert f'alt="{escape(plot.alt)}"' in built.page.html, key
        csv = plot.data.write_csv()                                      # every plot's data writes as CSV
        assert csv, key
    gamma = built.page.plots["gamma"].data
    assert gamma.height == summary.height                                # a point per run x gamma
    joined = gamma.join(summary, on=["dataset", "draft", "target", "decoding", "gamma"], suffix="_s")
    for col in ("tau", "token_acceptance_rate", "iid_tau"):
        assert joined[col].equals(joined[f"{col}_s"]), col
    speed = built.page.plots["speedup"].data.filter(pl.col("measured_speedup").is_not_null())
    assert speed.height == summary.filter(pl.col("measured_speedup").is_not_null()).height > 0
    assert set(built.page.plots["gamma"].data["run"]) == {"draft → target · greedy", "draft → target · sampled"}


def headline_expectations(summary_csv: str) -> list[dict[str, str]]:
    """The answer table's cells worked out from summary.csv alone: per run, alpha at its smallest gamma, and
    the fastest timed gamma's tau and measured speedup, each with its interval, and the verdict it reads."""
    import polars as pl

    summary = pl.read_csv(summary_csv)
    rows = []
    for (dec,), part in summary.sort("gamma").group_by(["decoding"], maintain_order=True):
        a = part.row(0, named=True)
        best = (part.filter(pl.col("measured_speedup").is_not_null()).sort("measured_speedup", descending=True)
                .row(0, named=True))
        lo, hi = best["measured_speedup_lo"], best["measured_speedup_hi"]
        rows.append({
            "run": f"draft → target · {dec}",
            "alpha (measured)": f"{a['leviathan_alpha']:.3f} (95% CI {a['leviathan_alpha_lo']:.3f}–"
                                f"{a['leviathan_alpha_hi']:.3f})",
            "deployment": f"chain, gamma {best['gamma']} (fastest timed)",
            "tau (measured)": f"{best['tau']:.2f} (95% CI {best['tau_lo']:.2f}–{best['tau_hi']:.2f})",
            "speedup (measured)": f"{best['measured_speedup']:.2f} (95% CI {lo:.2f}–{hi:.2f})×",
            "device": best["device"],
            "verdict": "pays off" if lo > 1 else "does not pay off" if hi < 1 else "cannot tell (interval straddles 1)",
        })
    return sorted(rows, key=lambda r: r["run"])


class _Table(HTMLParser):
    """The cells of the first <table> whose id is `id`: a list of rows of cell texts."""

    def __init__(self, id_: str):
        super().__init__()
        self.id, self.depth, self.rows, self.cell = id_, 0, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and (self.depth or dict(attrs).get("id") == self.id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def answer_rows(html: str) -> list[dict[str, str]]:
    parser = _Table("answer")
    parser.feed(html)
    head, *body = parser.rows
    return sorted((dict(zip(head, r)) for r in body), key=lambda r: r["run"])


def test_the_answer_table_is_summary_csv(built):
    html, md = built.page.html, built.page.markdown
    want = headline_expectations(built.csvs["summary"])
    got = answer_rows(html)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert {k: g[k] for k in w} == w
    # predicted columns are shaded and say so; the measured ones do not
    assert '<th class="pred">break-even alpha (predicted)</th>' in html and "<th>speedup (measured)</th>" in html
    lede = re.search(r'<p class="lede">(.*?)</p>', html, re.S).group(1)
    pays = sum(w["verdict"] == "pays off" for w in want)
    assert f"In {pays} of 2 timed runs the real draft-verify loop was faster" in lede
    # summary.md: the same sentence and table first, then the sections in the page's order
    lines = md.splitlines()
    assert lines[2].startswith("**Does the draft pay off?**") and lines[4].startswith("| run | alpha (measured) |")
    for w in want:
        assert any(line.startswith(f"| {w['run']} | {w['alpha (measured)']} | {w['deployment']} |") for line in lines)
    at = [md.index(f"## {k}. {SECTIONS[key]}") for k, key in enumerate(("payoff", "acceptance", "trees", "why"), 1)]
    assert at == sorted(at)
    for name, _ in PLOTS.values():
        assert f"]({name})" in md and f"`{name.removesuffix('.png')}.csv`" in md


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


def content_height(shot: Path) -> int:
    """The rendered page's height in a screenshot taller than the page: the last row that is not white."""
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("L"))
    rows = np.flatnonzero((px < 250).any(axis=1))
    assert rows.size and rows[-1] < px.shape[0] - 1, "the page is taller than the screenshot"
    return int(rows[-1]) + 1


def screenshot(page: Path, width: int, shot: Path, tall: int = 12000, netlog: Path | None = None) -> int:
    """A screenshot `width` px wide of the page as it opens (every <details> closed), kept beside the page for
    a look; its content height in px."""
    run_browser(page, f"--screenshot={shot}", f"--window-size={width},{tall}", "--hide-scrollbars", netlog=netlog)
    if shot.parent != page.parent:
        shutil.copy(shot, page.parent / shot.name)
    return content_height(shot)


@needs_chromium
def test_chromium_renders_the_answer_first_within_six_screens_and_fetches_nothing(built, tmp_path):
    from PIL import Image

    shot, netlog = tmp_path / "index_1400.png", tmp_path / "netlog.json"
    height = screenshot(built.path, SCREEN[0], shot, netlog=netlog)
    assert page_requests(netlog) == []                      # the page asked for nothing
    assert height <= 6 * SCREEN[1], f"{height} px with every fold closed"
    # the plots were decoded and drawn: many strongly coloured pixels (the page's own CSS has few)
    import numpy as np

    px = np.asarray(Image.open(shot).convert("RGB").crop((0, 0, SCREEN[0], height)), dtype=np.int16)
    colourful = int(((px.max(axis=2) - px.min(axis=2)) > 100).sum())
    assert colourful > 5000, colourful
    dom = run_browser(built.path, "--dump-dom")
    page = assert_self_contained(dom)
    assert page.count("table") == parse(built.page.html).count("table")
    assert page.count("figure") == len(PLOTS)
    assert all(a.get("alt") for t, a in page.tags if t == "img")
    assert page.count("details") >= 5 and not any("open" in a for t, a in page.tags if t == "details")
    # the answer table as the browser parsed it: summary.csv's numbers
    want = headline_expectations(built.csvs["summary"])
    assert [{k: r[k] for k in w} for r, w in zip(answer_rows(dom), want)] == want
    # at 800 px the same page: the figures shrink to the width, the tables scroll inside their boxes
    narrow = screenshot(built.path, 800, tmp_path / "index_800.png")
    assert narrow <= 6 * SCREEN[1], narrow
    print(f"screenshots: {shot} ({height} px), {tmp_path / 'index_800.png'} ({narrow} px)")


@needs_chromium
def test_the_height_check_sees_an_open_fold(built, tmp_path):
    """Positive control of the height bound: the same page with every fold open is far taller than six screens."""
    opened = tmp_path / "open.html"
    opened.write_text(built.page.html.replace("<details>", "<details open>"), encoding="utf-8")
    assert screenshot(opened, SCREEN[0], tmp_path / "open.png", tall=30000) > 6 * SCREEN[1]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The page for the real run's shape: bench/cpu_bench.py's synthetic artifacts (section 4: the real config's
    3 pairs x 3 decodings, loops at 4 gammas for 2 decodings), at a small clip count (the page's height does
    not depend on it: the answer table has a row per run, the samples are folded)."""
    import importlib.util

    import numpy as np

    from specalign.summary import acceptance_tables

    spec = importlib.util.spec_from_file_location("cpu_bench", REPO / "bench" / "cpu_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = tmp_path_factory.mktemp("report_html_big")
    S = dict(bench.QUICK, tab_clips=24, tab_tokens=16, tab_shards=2)
    runs, _ = bench.build_synthetic_run(root, S, np.random.default_rng(0))
    tables = acceptance_tables(runs, list(range(1, 9)), 20)
    csvs = {}
    for name in ("summary", "per_position", "loop"):
        csvs[name] = str(root / f"{name}.csv")
        tables[name].write_csv(csvs[name])
    page = build_html_report(runs, SimpleNamespace(**csvs), {}, n_boot=20)
    path = root / "index.html"
    path.write_text(page.html, encoding="utf-8")
    return SimpleNamespace(page=page, path=path, runs=runs)


@needs_chromium
def test_the_real_size_page_stays_within_six_screens(big, tmp_path):
    assert len(big.runs) == 9 and len({(r.draft, r.target) for r in big.runs}) == 3
    assert len(answer_rows(big.page.html)) == 9                 # a row per run in the answer table
    height = screenshot(big.path, SCREEN[0], tmp_path / "big_1400.png")
    assert height <= 6 * SCREEN[1], f"{height} px with every fold closed"
    narrow = screenshot(big.path, 800, tmp_path / "big_800.png")
    assert narrow <= 6 * SCREEN[1], narrow
    print(f"real-size page: {height} px at 1400, {narrow} px at 800")


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
    # every figure's data beside it, and the script writes each one under its PNG's name
    data = re.search(r"data=\[(.*?)\]", rule, re.S).group(1)
    assert sorted(re.findall(r'"results/report/([\w.]+)"', data)) == sorted(
        name.removesuffix(".png") + ".csv" for name, _ in PLOTS.values())
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
        assert (run / "results/report" / name).with_suffix(".csv").stat().st_size > 0
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
    from specalign.report_tables import verdict

    assert verdict(speedup, lo, hi) == word


def test_payoff_table_is_every_timed_row_of_the_summary(built):
    import polars as pl

    from specalign.report_tables import PAYOFF_COLUMNS, payoff_table

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


def test_the_ablation_sentence_names_the_largest_move():
    import polars as pl

    from specalign.report_html import ablation_sentence

    rows = pl.DataFrame({"dataset": ["d"] * 3, "draft": ["a"] * 3, "target": ["t"] * 3, "decoding": ["greedy"] * 3,
                         "ablation": ["blank", "mean_frame", "shuffle"], "plain_alpha": [0.5, 0.5, 0.5],
                         "leviathan_alpha": [0.35, 0.5, 0.55], "leviathan_alpha_lo": [0.3, 0.45, 0.5],
                         "leviathan_alpha_hi": [0.4, 0.55, 0.6], "alpha_change": [-0.15, 0.0, 0.05]})
    assert ablation_sentence(rows, False) == (
        "Of 3 input ablations, blank moved alpha most: a → t · greedy, 0.500 → 0.350 (-0.150; 95% CI of the "
        "ablated alpha 0.300–0.400). Measured; diagnoses, not deployable drafts.")
    assert ablation_sentence(rows.head(0), False) == ""


def test_headline_picks_the_fastest_timed_gamma_and_the_best_branching_tree():
    """Hand-worked: timed at gammas 1 and 3, the loop is fastest at 3; not timed at 2. The best tree by predicted
    speedup is the chain (1.30) but a chain is a chain deployment: the headline names the full tree (1.20)."""
    import polars as pl

    from specalign.report_tables import headline_table

    keys = {"dataset": "d", "draft": "a", "target": "t", "decoding": "greedy"}
    summary = pl.DataFrame([{**keys, "gamma": g, "leviathan_alpha": 0.6, "leviathan_alpha_lo": 0.5,
                             "leviathan_alpha_hi": 0.7, "tau": 1.0 + g / 2, "tau_lo": 1.0, "tau_hi": 3.0,
                             "measured_speedup": m, "measured_speedup_lo": lo, "measured_speedup_hi": hi,
                             "device": "gpu x", "break_even_alpha": 0.3, "predicted_speedup": 1.1,
                             "expected_speedup_iid": 1.0} for g, m, lo, hi in
                            ((1, 1.05, 0.98, 1.1), (2, None, None, None), (3, 1.25, 1.1, 1.4))])
    trees = pl.DataFrame([{**keys, "tree": name, "kind": kind, "nodes": n, "levels": lv, "tau": tau,
                           "predicted_speedup": sp} for name, kind, n, lv, tau, sp in
                          (("chain3", "chain", 3, 3, 2.5, 1.3), ("w2d2", "full", 6, 2, 2.7, 1.2),
                           ("best4", "constructed", 4, 3, 2.6, 1.1))])
    row = headline_table(summary, trees).row(0, named=True)
    assert (row["gamma"], row["chosen_by"], row["tau"], row["measured_speedup"]) == (3, "measured", 2.5, 1.25)
    assert row["verdict"] == "pays off" and row["device"] == "gpu x"
    assert (row["best_tree"], row["best_tree_tau"], row["best_tree_predicted_speedup"]) == ("w2d2 (6 nodes)", 2.7, 1.2)
    # not timed at all: the gamma of the best prediction, named as such, and no verdict from a prediction
    untimed = summary.with_columns(pl.lit(None, dtype=pl.Float64).alias("measured_speedup"),
                                   pl.Series("expected_speedup_iid", [1.0, 1.4, 1.2]))
    row = headline_table(untimed).row(0, named=True)
    assert (row["gamma"], row["chosen_by"], row["verdict"], row["best_tree"]) == (2, "predicted", "not timed", None)
