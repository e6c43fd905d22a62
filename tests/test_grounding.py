"""Tests for specalign.grounding: drops, classes and per-class acceptance on hand-built score tables.

Log-probs are dyadic (exact in float32) so every drop below is exact.
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from specalign import artifacts, grounding

INF = float("inf")

# (sample, position): (target lp plain, target lp target-ablated, draft lp plain, draft lp draft-ablated, match)
#   drops (rgb, event) and classes at thresholds 1.0 / 1.0 (grounded when drop >= threshold):
#   x0 (0.25, 0.25)  language        match
#   x1 (3.0, 0.25)   rgb_only        miss
#   x2 (0.25, 2.0)   event_grounded  match
#   x3 (2.0, 1.5)    both            match
#   y0 (1.0, 0)      rgb_only        miss   (exactly at the threshold; draft -inf in both: drop 0)
#   y1 (-0.5, inf)   event_grounded  miss   (the target got MORE sure; the draft cannot reach it ablated)
TOKENS = {
    ("x", 0): (-0.25, -0.5, -0.5, -0.75, True),
    ("x", 1): (-0.25, -3.25, -0.25, -0.5, False),
    ("x", 2): (-0.5, -0.75, -0.25, -2.25, True),
    ("x", 3): (-0.25, -2.25, -0.5, -2.0, True),
    ("y", 0): (-0.5, -1.5, -INF, -INF, False),
    ("y", 1): (-1.0, -0.5, -0.5, -INF, False),
}


def table(which: str, tokens=TOKENS, token_of=lambda s, j: 10 + j) -> pl.DataFrame:
    """A scores table: `which` = plain | target (target-side ablation) | draft (draft-side ablation)."""
    rows = []
    for (sid, j), (tp, ta, dp, da, m) in tokens.items():
        rows.append({"sample_id": sid, "position": j, "target_token": token_of(sid, j), "draft_token": 1,
                     "draft_argmax_id": 1, "match": m if which == "plain" else False,
                     "draft_logprob": da if which == "draft" else dp,
                     "target_logprob": ta if which == "target" else tp,
                     "summin": float(m), "mapped_mass": 1.0, "target_prob_of_draft_argmax": float(m),
                     "is_eos": False, "max_new_tokens": 16})
    return pl.from_arrow(artifacts.table("scores", rows))


def classes(target_nats=1.0, draft_nats=1.0) -> dict:
    drops = grounding.token_drops(table("plain"), table("target"), table("draft"))
    c = grounding.classify(drops, target_nats, draft_nats)
    return {(r["sample_id"], r["position"]): r["grounding"] for r in c.iter_rows(named=True)}


def test_drops_hand():
    d = grounding.token_drops(table("plain"), table("target"), table("draft"))
    got = {(r["sample_id"], r["position"]): (r["rgb_drop"], r["event_drop"]) for r in d.iter_rows(named=True)}
    assert got == {("x", 0): (0.25, 0.25), ("x", 1): (3.0, 0.25), ("x", 2): (0.25, 2.0),
                   ("x", 3): (2.0, 1.5), ("y", 0): (1.0, 0.0), ("y", 1): (-0.5, INF)}


def test_classes_hand():
    assert classes() == {("x", 0): "language", ("x", 1): "rgb_only", ("x", 2): "event_grounded",
                         ("x", 3): "both", ("y", 0): "rgb_only", ("y", 1): "event_grounded"}
    # a higher RGB threshold (2.5): x3 (rgb 2.0) keeps only its event grounding, y0 (1.0) is language
    assert classes(target_nats=2.5) == {("x", 0): "language", ("x", 1): "rgb_only", ("x", 2): "event_grounded",
                                        ("x", 3): "event_grounded", ("y", 0): "language",
                                        ("y", 1): "event_grounded"}


def test_class_table_hand():
    drops = grounding.token_drops(table("plain"), table("target"), table("draft"))
    t = {r["grounding"]: r for r in grounding.class_table(grounding.classify(drops, 1.0, 1.0)).iter_rows(named=True)}
    assert list(t) == list(grounding.CLASSES)
    # tokens 1 / 2 / 2 / 1 of 6; mismatches: x1, y0 (rgb_only), y1 (event_grounded): 3 in all
    assert [t[c]["tokens"] for c in grounding.CLASSES] == [1, 2, 2, 1]
    assert t["rgb_only"]["token_share"] == pytest.approx(2 / 6)
    assert t["rgb_only"]["match_rate"] == 0.0 and t["rgb_only"]["mismatch_share"] == pytest.approx(2 / 3)
    assert t["event_grounded"]["match_rate"] == 0.5 and t["event_grounded"]["mismatch_share"] == pytest.approx(1 / 3)
    assert t["language"]["mismatch_share"] == 0.0 and t["both"]["match_rate"] == 1.0
    # greedy: summin = match, so the rejection mass is the mismatches
    assert t["rgb_only"]["rejection_mass_share"] == pytest.approx(2 / 3)
    assert t["rgb_only"]["mean_rgb_drop"] == pytest.approx(2.0)            # (3.0 + 1.0) / 2
    assert math.isinf(t["event_grounded"]["mean_event_drop"])              # (2.0 + inf) / 2
    # intervals over the two clips (x: 1 mismatch, y: 2). rgb_only's share: resamples {x,x} 1/1,
    # {x,y} 2/3, {y,y} 1/2 (each end with probability 1/4) -> [0.5, 1]; event_grounded's match rate
    # (x 1/1, y 0/1): {x,x} 1, {y,y} 0 -> [0, 1]
    assert (t["rgb_only"]["mismatch_share_lo"], t["rgb_only"]["mismatch_share_hi"]) == (0.5, 1.0)
    assert (t["event_grounded"]["match_rate_lo"], t["event_grounded"]["match_rate_hi"]) == (0.0, 1.0)
    # language: only x0 (matched); a resample of y alone has no language token and is dropped -> [1, 1]
    assert (t["language"]["match_rate_lo"], t["language"]["match_rate_hi"]) == (1.0, 1.0)


def test_empty_class_is_a_row_of_nan_rates():
    drops = grounding.token_drops(table("plain"), table("target"), table("draft"))
    # at 100 nats only y1 (event drop +inf: unreachable once ablated) stays grounded
    t = grounding.class_table(grounding.classify(drops, 100.0, 100.0))
    rows = {r["grounding"]: r for r in t.iter_rows(named=True)}
    assert rows["language"]["tokens"] == 5 and rows["language"]["mismatch_share"] == pytest.approx(2 / 3)
    assert rows["event_grounded"]["tokens"] == 1 and rows["rgb_only"]["tokens"] == 0
    assert rows["both"]["tokens"] == 0 and math.isnan(rows["both"]["match_rate"])


@pytest.mark.parametrize("seed", range(4))
def test_shares_sum_to_one(seed):
    rng = np.random.default_rng(seed)
    toks = {(f"s{k % 5}", k // 5): (float(-rng.exponential()), float(-rng.exponential() * 3),
                                     float(-rng.exponential()), float(-rng.exponential() * 3), bool(rng.random() < 0.5))
            for k in range(60)}
    drops = grounding.token_drops(table("plain", toks), table("target", toks), table("draft", toks))
    t = grounding.class_table(grounding.classify(drops, 1.0, 0.5))
    assert t["tokens"].sum() == 60
    for col in ("token_share", "mismatch_share", "rejection_mass_share"):
        assert t[col].sum() == pytest.approx(1.0)


def test_ablation_along_another_stream_is_refused():
    other = table("target", token_of=lambda s, j: 99 if (s, j) == ("y", 1) else 10 + j)
    with pytest.raises(ValueError, match="target ablation .* sample 'y' position 1"):
        grounding.token_drops(table("plain"), other, table("draft"))
    # a clip that lost a position in the ablation is refused too (not silently shortened)
    short = table("draft").filter(~((pl.col("sample_id") == "x") & (pl.col("position") == 3)))
    with pytest.raises(ValueError, match="draft ablation .* sample 'x' position 3"):
        grounding.token_drops(table("plain"), table("target"), short)


def test_clip_missing_from_an_ablation_is_left_out():
    draft = table("draft").filter(pl.col("sample_id") == "x")
    d = grounding.token_drops(table("plain"), table("target"), draft)
    assert d["sample_id"].unique().to_list() == ["x"] and d.height == 4


def test_run_rows_carry_keys_and_settings():
    s = grounding.Settings("mean_frame", "blank", 1.0, 1.0)
    keys = {"dataset": "toy", "draft": "dr", "target": "tg", "decoding": "greedy"}
    t = grounding.run_rows(keys, table("plain"), table("target"), table("draft"), s)
    assert t.columns == list(grounding.COLUMNS) and t.height == 4
    assert set(t["n_samples"]) == {2} and set(t["draft_ablation"]) == {"blank"}
    assert grounding.frame([t, t]).height == 8 and grounding.frame([]).columns == list(grounding.COLUMNS)


ABLATIONS = {"blank": {"side": "draft", "kind": "blank"}, "mean_frame": {"side": "target", "kind": "mean_frame"}}


def test_settings_checks_name_the_key():
    assert grounding.settings({}, ABLATIONS) is None
    s = grounding.settings({"target_ablation": "mean_frame", "draft_ablation": "blank",
                            "target_threshold_nats": 0.5}, ABLATIONS)
    assert (s.target_ablation, s.draft_ablation, s.target_threshold_nats, s.draft_threshold_nats) == \
        ("mean_frame", "blank", 0.5, 1.0)
    with pytest.raises(ValueError, match=r"grounding\.draft_ablation: 'nope' is not an entry of ablations"):
        grounding.settings({"target_ablation": "mean_frame", "draft_ablation": "nope"}, ABLATIONS)
    with pytest.raises(ValueError, match=r"grounding\.target_ablation: ablation 'blank' has side 'draft'"):
        grounding.settings({"target_ablation": "blank", "draft_ablation": "blank"}, ABLATIONS)
    with pytest.raises(ValueError, match=r"grounding\.draft_ablation is not set"):
        grounding.settings({"target_ablation": "mean_frame"}, ABLATIONS)
    with pytest.raises(ValueError, match=r"grounding\.target_threshold_nats must be > 0"):
        grounding.settings({"target_ablation": "mean_frame", "draft_ablation": "blank",
                            "target_threshold_nats": 0}, ABLATIONS)


def demo_config_with(ablations: dict, grounding_cfg: dict) -> dict:
    import yaml
    from snakemake.utils import validate

    from specalign.specs import SCHEMA_PATH

    cfg = yaml.safe_load((SCHEMA_PATH.parents[1] / "config.yaml").read_text())
    cfg["ablations"], cfg["grounding"] = ablations, grounding_cfg
    validate(cfg, str(SCHEMA_PATH))
    return cfg


def test_spec_entry_from_the_config():
    abl = {"blank": {"side": "draft", "kind": "blank"}, "mean_frame": {"side": "target", "kind": "mean_frame"}}
    # the schema's defaults: no classes, thresholds 1 nat
    assert grounding.spec_entry(demo_config_with(abl, {})) is None
    entry = grounding.spec_entry(demo_config_with(abl, {"target_ablation": "mean_frame", "draft_ablation": "blank"}))
    assert entry == {"target_ablation": "mean_frame", "draft_ablation": "blank",
                     "target_threshold_nats": 1.0, "draft_threshold_nats": 1.0}
    with pytest.raises(ValueError, match=r"grounding\.target_ablation: 'shuffled_rgb' is not an entry"):
        grounding.spec_entry(demo_config_with(abl, {"target_ablation": "shuffled_rgb", "draft_ablation": "blank"}))


def run_of(tmp_path, which: str, ablation: str | None, pair: str = "dr__tg"):
    from specalign.specs import Decoding, Run

    path = tmp_path / f"{pair}.{ablation or 'plain'}.parquet"
    artifacts.write_parquet(artifacts.table("scores", table(which).to_dicts()), path, "scores")
    draft, target = pair.split("__")
    return Run(dataset="toy", pair=pair, draft=draft, target=target, decoding=Decoding("greedy"),
               scores=str(path), translation="", target_vocab="", ablation=ablation)


def test_grounding_table_from_artifacts(tmp_path):
    entry = {"target_ablation": "mean_frame", "draft_ablation": "blank",
             "target_threshold_nats": 1.0, "draft_threshold_nats": 1.0}
    plain = run_of(tmp_path, "plain", None)
    # a second pair (a text-only draft, say) has no draft-side ablation: no rows for it
    other = run_of(tmp_path, "plain", None, pair="txt__tg")
    ablated = [run_of(tmp_path, "target", "mean_frame"), run_of(tmp_path, "draft", "blank"),
               run_of(tmp_path, "target", "mean_frame", pair="txt__tg")]
    t = grounding.grounding_table([plain, other], ablated, entry)
    assert t.height == 4 and set(t["draft"]) == {"dr"}
    assert dict(zip(t["grounding"], t["mismatches"])) == {"language": 0, "event_grounded": 1, "rgb_only": 2,
                                                          "both": 0}
    assert grounding.grounding_table([plain], ablated, None).height == 0


def test_acceptance_spec_carries_the_grounding_settings():
    from specalign import stages

    abl = {"blank": {"side": "draft", "kind": "blank"}, "mean_frame": {"side": "target", "kind": "mean_frame"}}
    cfg = demo_config_with(abl, {"target_ablation": "mean_frame", "draft_ablation": "blank",
                                 "draft_threshold_nats": 2.0})
    assert stages.spec(cfg, "acceptance").get("grounding") == grounding.spec_entry(cfg)
    # a threshold edit changes the acceptance job's fingerprint (it reruns the tables)
    cfg2 = demo_config_with(abl, {"target_ablation": "mean_frame", "draft_ablation": "blank"})
    assert stages.spec(cfg2, "acceptance") != stages.spec(cfg, "acceptance")


def test_by_token_hand():
    # token 10 + position: 10 = x0 (language), y0 (rgb_only); 11 = x1 (rgb_only), y1 (event_grounded);
    # 12 = x2 (event_grounded); 13 = x3 (both)
    drops = grounding.token_drops(table("plain"), table("target"), table("draft"))
    t = {r["target_token"]: r for r in grounding.by_token(grounding.classify(drops, 1.0, 1.0)).iter_rows(named=True)}
    assert grounding.by_token(grounding.classify(drops, 1.0, 1.0))["target_token"].to_list() == [10, 11, 12, 13]
    assert (t[10]["tokens"], t[10]["language_share"], t[10]["rgb_only_share"]) == (2, 0.5, 0.5)
    assert (t[11]["rgb_only_share"], t[11]["event_grounded_share"], t[11]["match_rate"]) == (0.5, 0.5, 0.0)
    assert t[13]["both_share"] == 1.0 and t[10]["mean_rgb_drop"] == pytest.approx(0.625)   # (0.25 + 1.0) / 2
