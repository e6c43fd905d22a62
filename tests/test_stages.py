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
    # the paired timing job: its settings, both models, the decoding, and every gamma it times
    "timing": ({"dataset": "demo", "pair": "demo_draft__demo_target", "decoding": "sampled"},
               ["timing.samples", "timing.reps", "timing.gammas", "speculative.gammas",
                "decodings.sampled.temperature", "models.demo_draft.dtype", "models.demo_target.dtype",
                "skip_bad_samples"],
               # `gammas` (the replay's) must not rerun a job that loads both models
               ["gammas", "decodings.greedy.max_new_tokens", "shards", "bootstrap", "questions",
                "speculative.greedy_samples"]),
    "acceptance": ({}, ["gammas", "bootstrap", "speculative.gammas", "speculative.greedy_gammas",
                        "decodings.greedy.max_new_tokens", "shards"],
                   ["questions", "models.demo_draft.dtype", "skip_bad_samples", "demo_training.draft_steps"]),
    "report": ({}, ["shards", "speculative.gammas"],
               ["gammas", "bootstrap", "questions", "models.demo_draft.dtype"]),
}

NEW_VALUES = {"questions": ["Another question?"], "translation_test_texts": ["x"], "gammas": [1, 5],
              "speculative.gammas": [2], "datasets.demo.split": "train", "datasets.demo.instructions": "other.json",
              "models.demo_draft.dtype": "bfloat16", "models.demo_target.dtype": "bfloat16",
              "models.demo_draft.gpu": True, "speculative.greedy_samples": 3, "speculative.greedy_gammas": [2],
              "timing.gammas": [3]}


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
    # the evaluated dataset (the train set has evaluate: false) x pairs x decodings
    assert len(runs) == 1 * 6 * 2 and all(isinstance(r, Run) for r in runs)
    greedy, sampled = runs[0], runs[1]
    assert (greedy.decoding.name, sampled.decoding.name) == ("greedy", "sampled")
    assert len(greedy.draft_tokens) == 8
    assert len(greedy.rounds) == 1 * 8 and len(sampled.rounds) == 4 * 8  # the greedy check at gamma 4 only


def test_all_jobs_are_the_planned_jobs_of_the_real_config():
    """1 evaluated dataset (the train set, evaluate: false, is only distilled on) x 6 models / pairs:
    1 manifest, 6 vocab, 6 translation, 96 generate (6 x 2 decodings x 8 shards), 12 score, 240 speculative
    (6 pairs x 8 shards x (4 sampled gammas + the greedy check at gamma 4)), 12 timing (6 pairs x 2 decodings),
    11 score_ablation (greedy: blank and time-reversed events for the 3 pairs of the 2 EventGPT drafts, the mean
    frame for the 5 pairs of Video-LLaVA), 1 distill, acceptance, report, report_html; no demo stage."""
    from collections import Counter

    counts = Counter(stage for stage, _ in stages.all_jobs(real_config()))
    assert counts == {"manifest": 1, "vocab": 6, "translation": 6, "generate": 96, "score": 12,
                      "speculative": 240, "timing": 12, "score_ablation": 11, "distill": 1, "acceptance": 1,
                      "report": 1, "report_html": 1}


DERIVED = ("video_llava_7b_int8", "video_llava_7b_8l", "eventgpt_7b_distilled")


def _model_specs(cfg: dict, name: str) -> list[dict]:
    """Every job spec that holds model `name`: its generation, its pair's scoring, its distillation."""
    out = [stages.spec(cfg, "generate", dataset="dsec_1s", model=name, decoding="greedy", shard=0)["model"],
           stages.spec(cfg, "score", dataset="dsec_1s", pair=f"{name}__video_llava_7b", decoding="sampled")["draft"]]
    if cfg["models"][name].get("distill"):
        out.append(stages.spec(cfg, "distill", model=name)["model"])
    return out


def test_a_model_made_from_another_runs_as_it_does():
    """A base: self-draft and a distilled draft of a bfloat16 CUDA model are bfloat16 CUDA jobs asking for a
    GPU: dtype, device and gpu come from the base (or distill.draft) unless the model sets them."""
    from specalign.config import check_references

    cfg = real_config()  # validated only: the job specs resolve the inheritance themselves
    for name in DERIVED:
        for spec in _model_specs(cfg, name):
            assert (spec["dtype"], spec["device"]) == ("bfloat16", "cuda"), (name, spec)
    check_references(cfg)  # what rules/common.smk runs: fills the config for the rules (gpu resources)
    for name in DERIVED:
        assert {k: cfg["models"][name][k] for k in ("dtype", "device", "gpu")} == \
            {"dtype": "bfloat16", "device": "cuda", "gpu": True}, name
        assert _model_specs(cfg, name) == _model_specs(real_config(), name)  # filled or not: one answer


def test_explicit_settings_win_and_chains_inherit():
    from specalign.config import check_references

    raw = yaml.safe_load((REPO / "config" / "real_models.yaml").read_text())
    raw["models"]["video_llava_7b_8l"].update(dtype="float16", device="cuda:1", gpu=False)
    # a self-draft of the distilled draft: inherits through it from eventgpt_7b
    raw["models"]["eventgpt_7b_distilled_int8"] = {"family": "eventgpt", "base": "eventgpt_7b_distilled",
                                                   "quantization": "int8_weight"}
    raw["pairs"].append({"draft": "eventgpt_7b_distilled_int8", "target": "video_llava_7b"})
    validate(raw, str(SCHEMA_PATH))
    check_references(raw)  # the int8_weight (cuda) draft is accepted: its device is the inherited cuda
    m = raw["models"]
    assert (m["video_llava_7b_8l"]["dtype"], m["video_llava_7b_8l"]["device"], m["video_llava_7b_8l"]["gpu"]) == \
        ("float16", "cuda:1", False)
    assert [(s["dtype"], s["device"]) for s in _model_specs(raw, "video_llava_7b_8l")] == [("float16", "cuda:1")] * 2
    assert (m["eventgpt_7b_distilled_int8"]["dtype"], m["eventgpt_7b_distilled_int8"]["device"],
            m["eventgpt_7b_distilled_int8"]["gpu"]) == ("bfloat16", "cuda", True)
    # nothing to inherit: the schema's defaults (the demo's distilled draft of a draft that sets nothing)
    demo = demo_config()
    check_references(demo)
    for name in ("demo_draft", "demo_draft_distilled"):
        assert {k: demo["models"][name][k] for k in ("dtype", "device", "gpu")} == \
            {"dtype": "float32", "device": "cpu", "gpu": False}, name
    spec = stages.spec(demo, "distill", model="demo_draft_distilled")["model"]
    assert (spec["dtype"], spec["device"]) == (ModelSpec.dtype, ModelSpec.device) == ("float32", "cpu")


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


def test_a_dataset_only_trained_on_is_built_but_never_measured():
    """evaluate: false - its clips are built for the distillation, no manifest, generation or score."""
    from specalign.config import ConfigError, check_references

    cfg = demo_config()
    cfg["datasets"]["extra"] = {**copy.deepcopy(cfg["datasets"]["demo"]), "evaluate": False}
    with pytest.raises(ConfigError, match="datasets.extra.evaluate: false, but no model's distill.dataset"):
        check_references(copy.deepcopy(cfg))
    distilled = next(m for m in cfg["models"].values() if m.get("distill"))
    distilled["distill"]["dataset"] = "extra"
    check_references(cfg)
    jobs = [(stage, w) for stage, w in stages.all_jobs(cfg) if "extra" in w.values()]
    assert jobs == [("demo_data", {"dataset": "extra"})]
    assert {r.dataset for r in stages.runs(cfg)} == {"demo"}


def test_draft_sampling_reaches_only_sampled_loops():
    """speculative.draft_sampling (schema default "sample") is in the spec of a sampled decoding's
    loop jobs (and of its paired timing job, whose loop drafts as theirs) and nowhere else: a greedy
    draft proposes its argmax whatever the setting, so editing it must not rerun the greedy loops,
    nor the generation or scoring jobs."""
    cfg = demo_config()
    assert cfg["speculative"]["draft_sampling"] == "sample"
    argmax = copy.deepcopy(cfg)
    argmax["speculative"]["draft_sampling"] = "argmax"
    validate(argmax, str(SCHEMA_PATH))
    changed = {(stage, json.dumps(w, sort_keys=True)) for stage, w in stages.all_jobs(cfg)
               if stages.spec(cfg, stage, **w) != stages.spec(argmax, stage, **w)}
    sampled_loops = {("speculative", json.dumps(w, sort_keys=True)) for stage, w in stages.all_jobs(cfg)
                     if stage == "speculative" and w["decoding"] == "sampled"}
    assert sampled_loops and sampled_loops <= changed
    assert all(stage in ("speculative", "timing") and json.loads(w)["decoding"] == "sampled" for stage, w in changed)
    w = json.loads(next(iter(sampled_loops))[1])
    assert stages.spec(argmax, "speculative", **w)["draft_sampling"] == "argmax"
    bad = copy.deepcopy(cfg)
    bad["speculative"]["draft_sampling"] = "top1"
    with pytest.raises(Exception, match="top1"):
        validate(bad, str(SCHEMA_PATH))
