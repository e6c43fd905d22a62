"""stages.spec: each job's slice of the config, defined once.

The job scripts read nothing of the config but their spec (jobs.start), and the spec is
the job's fingerprint, so what a job reads and what reruns it are one thing. These tests
pin that down: (1) statically, no script reads the config or params except through
jobs.start; (2) per stage, editing a key the stage reads changes its spec and editing any
other key does not - the rerun job sets of tests/test_workflow.py at unit level.
"""
from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from specalign import jobs, stages
from specalign.specs import SCHEMA_PATH, Decoding, ModelSpec, Run, option_defaults

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "workflow_scripts").glob("*.py"))


def demo_config() -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(cfg, str(SCHEMA_PATH))
    return cfg


def real_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "real_models.yaml").read_text())
    validate(cfg, str(SCHEMA_PATH))
    return cfg


def test_every_script_reads_only_its_job_spec():
    """The first statement after the imports is `job = jobs.start(snakemake)`, and the script
    never touches snakemake.* again (params, config, input... all come through `job`)."""
    assert SCRIPTS
    for path in SCRIPTS:
        tree = ast.parse(path.read_text())
        body = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr))]
        first = body[0]
        assert isinstance(first, ast.Assign) and ast.unparse(first) == "job = jobs.start(snakemake)", path.name
        uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("snakemake", "sm")]
        assert len(uses) == 1, f"{path.name} reads snakemake.* outside jobs.start"


# stage -> (example wildcards, config edits that must change its spec, edits that must not)
EDITS = {
    "manifest": ({"dataset": "demo"},
                 ["questions", "skip_bad_samples", "datasets.demo.split", "datasets.demo.instructions",
                  "datasets.demo.demo.size", "datasets.demo.short_video", "datasets.demo.min_frames"],
                 ["gammas", "bootstrap", "shards", "decodings.greedy.max_new_tokens", "models.demo_draft.dtype",
                  "demo_training.draft_steps", "datasets.demo.demo.n_train", "datasets.demo.demo.frames",
                  # a demo's sensor is its frame (demo.size): the DSEC sensor keys do not reach it
                  "datasets.demo.sensor_width", "datasets.demo.sensor_height"]),
    "demo_data": ({"dataset": "demo"}, ["datasets.demo.demo.n_train", "datasets.demo.demo.seed"],
                  ["questions", "skip_bad_samples", "datasets.demo.split", "gammas"]),
    "demo_tokenizers": ({}, ["questions", "demo_training.vocab_size", "datasets.demo.instructions"],
                        ["demo_training.draft_steps", "gammas", "skip_bad_samples", "shards"]),
    "vocab": ({"model": "demo_draft"}, [], ["questions", "gammas", "models.demo_draft.dtype", "shards"]),
    "translation": ({"pair": "demo_draft__demo_target"}, ["translation_test_texts"],
                    ["questions", "gammas", "models.demo_draft.dtype", "decodings.greedy.max_new_tokens"]),
    "demo_model": ({"model": "demo_draft"},
                   ["demo_training.draft_steps", "demo_training.learning_rate", "questions",
                    "models.demo_draft.dtype"],
                   ["demo_training.target_steps", "demo_training.vocab_size", "gammas", "shards",
                    "skip_bad_samples", "models.demo_target.dtype"]),
    "generate": ({"dataset": "demo", "model": "demo_draft", "decoding": "greedy", "shard": 0},
                 ["decodings.greedy.max_new_tokens", "models.demo_draft.dtype", "models.demo_draft.batch_size",
                  "skip_bad_samples", "shards"],
                 ["decodings.sampled.temperature", "models.demo_target.dtype", "gammas", "bootstrap",
                  "speculative.gammas", "questions", "models.demo_draft.gpu", "translation_test_texts"]),
    "score": ({"dataset": "demo", "pair": "demo_draft__demo_target", "decoding": "sampled"},
              ["decodings.sampled.temperature", "models.demo_draft.dtype", "models.demo_target.dtype",
               "skip_bad_samples"],
              ["decodings.greedy.max_new_tokens", "gammas", "shards", "speculative.gammas", "bootstrap"]),
    "speculative": ({"dataset": "demo", "pair": "demo_draft__demo_target", "decoding": "greedy", "gamma": 4,
                     "shard": 1},
                    ["decodings.greedy.max_new_tokens", "models.demo_target.dtype", "shards", "skip_bad_samples",
                     "speculative.greedy_samples"],
                    ["decodings.sampled.temperature", "gammas", "bootstrap", "speculative.gammas"]),
    "acceptance": ({}, ["gammas", "bootstrap", "speculative.gammas", "speculative.greedy_gammas",
                        "decodings.greedy.max_new_tokens", "shards"],
                   ["questions", "models.demo_draft.dtype", "skip_bad_samples", "demo_training.draft_steps"]),
    "report": ({}, ["shards", "speculative.gammas"],
               ["gammas", "bootstrap", "questions", "models.demo_draft.dtype"]),
}

NEW_VALUES = {"questions": ["Another question?"], "translation_test_texts": ["x"], "gammas": [1, 5],
              "speculative.gammas": [2], "datasets.demo.split": "train", "datasets.demo.instructions": "other.json",
              "models.demo_draft.dtype": "bfloat16", "models.demo_target.dtype": "bfloat16",
              "models.demo_draft.gpu": True, "speculative.greedy_samples": 3, "speculative.greedy_gammas": [2]}


def edited(cfg: dict, key: str) -> dict:
    cfg = copy.deepcopy(cfg)
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node[k]
    old = node[last]
    new = NEW_VALUES.get(key)
    if new is None:
        new = (not old) if isinstance(old, bool) else old * 2 + 1 if isinstance(old, (int, float)) else old + "x"
    assert new != old
    node[last] = new
    return cfg


@pytest.mark.parametrize("stage", sorted(EDITS))
def test_a_stage_spec_changes_exactly_with_what_the_stage_reads(stage):
    wildcards, changes, keeps = EDITS[stage]
    cfg = demo_config()
    base = stages.spec(cfg, stage, **wildcards)
    assert json.loads(json.dumps(base, sort_keys=True)) == base  # canonical JSON: what the fingerprint holds
    for key in changes:
        assert stages.spec(edited(cfg, key), stage, **wildcards) != base, f"{stage} ignores {key}"
    for key in keeps:
        assert stages.spec(edited(cfg, key), stage, **wildcards) == base, f"{stage} reruns when {key} changes"


def test_key_order_never_changes_a_spec():
    cfg = demo_config()
    reordered = json.loads(json.dumps(cfg, sort_keys=True))
    reordered = {k: reordered[k] for k in reversed(list(reordered))}
    for stage, w in stages.all_jobs(cfg):
        assert stages.spec(reordered, stage, **w) == stages.spec(cfg, stage, **w)


def test_the_typed_records_are_exactly_the_spec():
    """A Job's ModelSpec / Decoding / runs hold the spec's values, the schema's defaults filled by
    validation: no dataclass default can differ from what the fingerprint says."""
    cfg = real_config()
    spec = stages.spec(cfg, "speculative", dataset="dsec_1s", pair="eventgpt_7b__video_llava_7b",
                       decoding="sampled", gamma=2, shard=3)
    assert option_defaults("eventgpt")["event_frames"] == 5  # the real config sets it; the rest are defaults
    job = jobs.Job(rule="speculative", spec=spec, input=None, output=None, wildcards={}, log=None)
    draft = job.model_spec("draft")
    assert draft == ModelSpec(name="eventgpt_7b", family="eventgpt", path="/models/EventGPT-7b", tokenizer=None,
                              dtype="bfloat16", device="cuda", attn_implementation="sdpa", load_in_4bit=False,
                              batch_size=1, options=option_defaults("eventgpt"))
    assert job.decoding == Decoding("sampled", do_sample=True, temperature=0.6, top_p=1.0, seed=0,
                                    max_new_tokens=128)
    assert (spec["shard"], spec["shards"], spec["gamma"], spec["skip_bad"]) == (3, 8, 2, True)
    assert spec["root"] == "/data/my_egpt_dsec_seq_1s"
    runs = jobs.Job(rule="acceptance", spec=stages.spec(cfg, "acceptance"), input=None, output=None, wildcards={},
                    log=None).runs
    assert len(runs) == 3 * 2 and all(isinstance(r, Run) for r in runs)
    greedy, sampled = runs[0], runs[1]
    assert (greedy.decoding.name, sampled.decoding.name) == ("greedy", "sampled")
    assert len(greedy.draft_tokens) == 8
    assert len(greedy.rounds) == 1 * 8 and len(sampled.rounds) == 4 * 8  # the greedy check at gamma 4 only


def test_all_jobs_are_the_planned_jobs_of_the_real_config():
    """185 jobs in README's count less `all`: 1 manifest, 3 vocab, 3 translation, 48 generate, 6 score,
    120 speculative (3 pairs x 8 shards x (4 sampled gammas + the greedy check at gamma 4)), acceptance,
    report, report_html; no demo stage."""
    from collections import Counter

    counts = Counter(stage for stage, _ in stages.all_jobs(real_config()))
    assert counts == {"manifest": 1, "vocab": 3, "translation": 3, "generate": 48, "score": 6,
                      "speculative": 120, "acceptance": 1, "report": 1, "report_html": 1}


def test_a_misspelt_model_option_is_refused_naming_it():
    cfg = yaml.safe_load((REPO / "config" / "real_models.yaml").read_text())
    cfg["models"]["llava15_7b"]["options"]["imge_mode"] = "grid"
    with pytest.raises(Exception, match="imge_mode"):
        validate(cfg, str(SCHEMA_PATH))
    cfg = yaml.safe_load((REPO / "config" / "real_models.yaml").read_text())
    cfg["models"]["llava15_7b"]["options"]["image_mode"] = "mosaic"  # a value outside the enum
    with pytest.raises(Exception, match="mosaic"):
        validate(cfg, str(SCHEMA_PATH))
    # an option of another family is no option of this one
    cfg = yaml.safe_load((REPO / "config" / "real_models.yaml").read_text())
    cfg["models"]["video_llava_7b"]["options"]["image_mode"] = "grid"
    with pytest.raises(Exception, match="image_mode"):
        validate(cfg, str(SCHEMA_PATH))


def test_option_defaults_come_from_the_schema():
    spec = ModelSpec(name="l", family="llava", path="p")
    assert (spec.option("image_mode"), spec.option("grid_resize")) == ("middle", "crop")
    assert ModelSpec(name="l", family="llava", path="p", options={"image_mode": "grid"}).option("image_mode") == "grid"
    with pytest.raises(KeyError, match="not an option of family 'llava'"):
        spec.option("event_frames")  # an eventgpt option, not a llava one


def test_models_of_two_families_without_options_validate():
    """Regression: a shared default `options: {}` object once took the eventgpt defaults for
    every model, so the video_llava model failed validation."""
    cfg = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    validate(cfg, str(SCHEMA_PATH))
    validate(cfg, str(SCHEMA_PATH))
    assert cfg["models"]["demo_target"].get("options", {}) == {}  # no eventgpt option leaked into it
