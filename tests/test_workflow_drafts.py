"""Other drafts (the seed's Option A, and distillation), judged by the same stages.

A copy of the session's demo run gets two self-drafts of the demo target - its weights
quantized (int8, the CPU method) and its first decoder layer alone -, a text-only draft (a tiny
Llama the workflow trains on the target's captions, drafting from the question alone) and the
distilled event draft, each as a pair with the target. The dry run plans exactly their jobs; the
run measures them like any pair: identity translation maps for the self-drafts, the real loop
lossless (greedy output == the target's, rounds == the replay), alpha with its interval, and the
report ranks every draft of the target. The loop runs at one gamma here (the tiny run's other
pairs keep theirs): losslessness is per round, so one gamma checks it.
"""
from __future__ import annotations

import json

import polars as pl
import pytest
from workflow_helpers import (
    CLONE_TRIGGERS,
    clone_run,
    planned_jobs,
    shared_demo_run,
    snakemake,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.slow
pytest.importorskip("torchao")

DRAFTS = {"demo_target_int8": {"family": "video_llava", "base": "demo_target", "quantization": "int8_dynamic"},
          "demo_target_l1": {"family": "video_llava", "base": "demo_target", "layers": 1},
          "demo_text": {"family": "causal_lm", "demo": "text"},
          # the demo draft distilled toward the target on the train split (LoRA: the 7B path, on CPU)
          "demo_draft_distilled": {"family": "eventgpt", "distill": {
              "draft": "demo_draft", "target": "demo_target", "loss": "tv", "steps": 6, "batch_size": 4,
              "max_new_tokens": 8, "lora_r": 4, "checkpoint_every": 3}}}


def test_self_drafts_run_through_every_stage(tmp_path_factory):
    wd = clone_run(shared_demo_run(tmp_path_factory), tmp_path_factory.mktemp("drafts"))
    cfg = tiny_config()
    cfg["models"].update(DRAFTS)
    cfg["pairs"] += [{"draft": d, "target": "demo_target"} for d in DRAFTS]
    cfg["demo_training"]["text_steps"] = 12
    cfg["speculative"].update(gammas=[1], greedy_gammas=[1])
    write_config(wd, cfg)
    # per new model: 1 vocab, 2 decodings x 2 shards of generation; per new pair: 1 translation,
    # 2 scores, 2 decodings x 1 loop gamma x 2 shards; one distillation, one text draft trained; no demo
    # model of the run is retrained, and none of its loop jobs reruns. Timing: 2 decodings per new pair, and
    # the run's own pair's 2 (its loop is timed at speculative.gammas, edited here). Input ablations
    # (.test/config.yaml): the target's mean frame for each new pair (blank events name demo_draft only)
    assert planned_jobs(wd, *CLONE_TRIGGERS) == {"demo_model": 1, "distill": 1, "vocab": 4, "translation": 4,
                                                 "generate": 16, "score": 8, "speculative": 16, "timing": 10,
                                                 "score_ablation": 4,
                                                 "acceptance": 1, "report": 1, "report_html": 1, "all": 1}
    snakemake(wd, *CLONE_TRIGGERS)
    res = wd / "results"
    for d in ("demo_target_int8", "demo_target_l1"):
        stats = json.loads((res / f"translation/{d}__demo_target.stats.json").read_text())
        n = stats["draft_size"]
        assert stats["kind_counts"]["exact"] + stats["kind_counts"]["special"] == n == stats["target_size"]
    loop = pl.read_csv(res / "acceptance/loop_vs_replay.csv")
    new = loop.filter(pl.col("draft").is_in(list(DRAFTS)) & (pl.col("decoding") == "greedy"))
    assert new.height == len(DRAFTS)  # one loop gamma each
    assert new["rounds_identical"].all() and new["output_equals_target"].all(), new
    summary = pl.read_csv(res / "acceptance/summary.csv")
    for d in DRAFTS:
        row = summary.filter((pl.col("draft") == d) & (pl.col("decoding") == "greedy") & (pl.col("gamma") == 1))
        alpha, lo, hi = row.select("leviathan_alpha", "leviathan_alpha_lo", "leviathan_alpha_hi").row(0)
        assert 0 <= lo <= alpha <= hi <= 1
    # before / after distillation, paired over the same held-out clips; trained on train clips only
    dist = pl.read_csv(res / "acceptance/distillation.csv")
    assert dist.height == 2 and set(dist["decoding"]) == {"greedy", "sampled"}
    for row in dist.iter_rows(named=True):
        assert (row["before"], row["after"], row["loss"]) == ("demo_draft", "demo_draft_distilled", "tv")
        assert row["alpha_difference"] == pytest.approx(row["alpha_after"] - row["alpha_before"], abs=2e-6)  # CSV: 6 decimals
        assert row["alpha_difference_lo"] <= row["alpha_difference"] <= row["alpha_difference_hi"]
    stats = json.loads((res / "distilled/demo_draft_distilled/distill_stats.json").read_text())
    assert stats["train_sequences"] == ["demo_train"] and stats["steps"] == 6
    assert stats["evaluated_samples_checked_disjoint"] == 6
    # the text-only draft: its own (draft) tokenizer, so a real translation map, and a text-only prompt
    text_stats = json.loads((res / "translation/demo_text__demo_target.stats.json").read_text())
    assert text_stats["draft_size"] == text_stats["target_size"] - 3     # the target adds <image>, <video>, <pad>
    assert json.loads((res / "demo_models/demo_text/training_stats.json").read_text())["steps"] == 12
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(res / "demo_tokenizers/draft")
    prompt = f"USER: {cfg['questions'][0]} ASSISTANT:"      # the causal_lm template: no clip, no placeholder
    shards = sorted((res / "generate/demo/demo_text/greedy").glob("shard?.parquet"))   # not .errors.parquet
    assert pl.read_parquet(shards)["prompt_tokens"].unique().to_list() == [len(tok(prompt)["input_ids"])]
    report = (res / "report.md").read_text()
    assert "## Distillation: before and after" in report
    section = report.split("## Which draft pays off")[1].split("\n## ")[0]
    for dec in ("greedy", "sampled"):   # every draft ranked for each decoding, with or without a measured c
        ranked = [line.split(" | ")[4] for line in section.splitlines()
                  if line.startswith(f"| demo | demo_target | {dec} |")]
        assert sorted(ranked) == sorted(("demo_draft", *DRAFTS)), section
