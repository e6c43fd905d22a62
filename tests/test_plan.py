"""The resource plan (specalign.plan): parameter counts exact against the real transformers classes,
a hand-worked weight figure, the plan of a generation job against the peak memory measured on the
CPU, the refusal of a job beyond gpu_memory_gb (the command and the workflow's start), and the
rules' mem_mb taken from the plan."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from workflow_helpers import copy_workflow

from specalign import model_shapes, plan

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "config" / "real_models.yaml"


def _meta_params(model_cls, config) -> int:
    with torch.device("meta"):
        model = model_cls(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", ["llava", "video_llava", "eventgpt"])
def test_parameter_counts_equal_the_real_classes_built_from_the_published_configs(family):
    """The formula from config.json alone against the model class itself, built on the meta device."""
    raw, _ = model_shapes.published_config(family)
    if family == "llava":
        from transformers import LlavaConfig, LlavaForConditionalGeneration
        want = _meta_params(LlavaForConditionalGeneration, LlavaConfig(**raw))
        assert want == 14126854144 // 2   # llava-1.5-7b-hf's model.safetensors.index.json total_size, fp16
    elif family == "video_llava":
        from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration
        want = _meta_params(VideoLlavaForConditionalGeneration, VideoLlavaConfig(**raw))
    else:
        from specalign.backends.eventgpt.configuration import EventChatConfig
        from specalign.backends.eventgpt.modeling import EventChatForCausalLM
        want = _meta_params(EventChatForCausalLM, EventChatConfig(**{k: v for k, v in raw.items() if k[0] != "_"}))
    assert model_shapes.total_params(model_shapes.shape_of(family, raw, "published")) == want


def test_tiny_shapes_and_truncation_equal_the_real_classes():
    """Grouped-query attention, tied embeddings and kept layers, on a tiny Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    for tied in (False, True):
        cfg = LlamaConfig(vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
        shape = model_shapes.shape_of("causal_lm", cfg.to_dict(), "tiny")
        assert model_shapes.total_params(shape) == _meta_params(LlamaForCausalLM, cfg)
        cfg.num_hidden_layers = 1
        assert model_shapes.total_params(shape, layers=1) == _meta_params(LlamaForCausalLM, cfg)


def test_defaults_for_absent_keys_are_transformers_defaults():
    from transformers import CLIPVisionConfig, LlamaConfig

    llama, clip = LlamaConfig(), CLIPVisionConfig()
    for k, v in model_shapes.LLAMA_DEFAULTS.items():
        if k != "num_key_value_heads":   # None in the plan: "as many as the attention heads", as LlamaConfig sets
            assert getattr(llama, k) == v, k
    assert llama.num_key_value_heads == llama.num_attention_heads
    for k, v in model_shapes.CLIP_DEFAULTS.items():
        assert getattr(clip, k) == v, k


def test_weights_by_dtype_quantization_and_layers_worked_by_hand():
    s = model_shapes.Shape("causal_lm", hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, vocab=10, tied=False,
                   vision=None, towers=0, visual_tokens=0, frames=0, source="hand")
    # per layer: q, o 8x8 each; k, v 8x4 each; gate, up, down 8x16 each = 128 + 64 + 384 = 576 linear,
    # 2 norms x 8 = 16; embeddings 80 + final norm 8 = 88; LM head 80: 2 x 592 + 88 + 80 = 1352
    assert model_shapes.total_params(s) == 1352
    m = plan.Model("m", s, "bfloat16", "cuda", layers=2, quantization=None, batch_size=1)
    assert m.weights() == 2 * 1352
    # int8, one layer kept: linear 576 x 1 + norms 16 x 2, embeddings 88 x 2, head 80 x 1
    q = plan.Model("q", s, "bfloat16", "cuda", layers=1, quantization="int8_weight", batch_size=1)
    assert q.weights() == 576 + 32 + 176 + 80
    # kv: 2 (k, v) x 1 layer x 1 kv head x head dim 4 x batch 3 x 10 tokens x 2 bytes
    assert q.kv(3, 10) == 2 * 1 * 1 * 4 * 3 * 10 * 2


MEASURE = r"""
import json, os, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import torch
torch.set_num_threads(1)
from builders import build_tiny_llama, load_lm, prompts_for
from specalign.generation import generate
from specalign.specs import Decoding
small, model, batch, new = sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
qs = [" ".join(f"w{(i * 7 + j) % 8000}" for j in range(120)) for i in range(batch)]
# imports, kernels and allocator first, on a model too small to matter; then the peak is reset
be = load_lm(small, batch_size=2)
generate(be, prompts_for(be, [q.replace("w", "w1") for q in qs[:2]]), Decoding("w", max_new_tokens=4), batch_size=2)
del be
import ctypes, gc
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")   # resets VmHWM, the peak resident set
be = load_lm(model, batch_size=batch)
prompts = prompts_for(be, qs)
generate(be, prompts, Decoding("g", max_new_tokens=new), batch_size=batch)
print(json.dumps({"peak": status("VmHWM") - base, "prompt": int(prompts[0].input_ids.numel())}))
"""


@pytest.fixture(scope="module")
def measured_models(tmp_path_factory):
    from builders import build_tiny_llama

    root = tmp_path_factory.mktemp("plan_models")
    # weights (~67 MB float32) large enough to measure against the interpreter's own noise
    return build_tiny_llama(root / "small", n_words=50, hidden=32, layers=1), \
        build_tiny_llama(root / "model", n_words=8000, hidden=512, layers=4)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc (peak RSS reset)")
@pytest.mark.parametrize("batch,new", [(1, 64), (8, 64), (16, 128)])
def test_generation_plan_within_25_percent_of_the_measured_peak(measured_models, tmp_path, batch, new):
    """The plan of a generate job (weights + KV cache + prefill activations, its runtime aside) against
    the peak resident memory a fresh process measures while running that job's generation on the CPU."""
    small, model = measured_models
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(REPO / "tests"), str(REPO / "workflow_scripts"),
                          str(small), str(model), str(batch), str(new)],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    cfg = {"models": {"m": {"family": "causal_lm", "path": str(model), "dtype": "float32", "device": "cpu",
                            "batch_size": batch}},
           "decodings": {"g": {"max_new_tokens": new}}}
    job = plan.plan_job(cfg, "generate", {"dataset": "d", "model": "m", "decoding": "g"},
                        {"m": plan.model_of(cfg, "m")})
    assert got["prompt"] <= plan.PROMPT_TEXT_TOKENS   # the plan's prompt bound holds for these prompts
    predicted = job.host_bytes() - job.host["runtime"]
    assert abs(predicted - got["peak"]) <= 0.25 * got["peak"], (predicted / 2 ** 20, got["peak"] / 2 ** 20, job.host)


def test_real_config_plan_and_refusal_by_the_command():
    """The command prints every job with its parts; a GPU smaller than the largest job refuses it by name."""
    ok = subprocess.run([sys.executable, "-m", "specalign.plan", str(REAL), "--gpu-memory-gb", "80"],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "published video_llava config" in ok.stdout and "-> SLURM mem_mb" in ok.stdout
    for stage in ("generate", "score", "speculative"):
        assert f"\n  {stage} " in ok.stdout, stage
    bad = subprocess.run([sys.executable, "-m", "specalign.plan", str(REAL), "--gpu-memory-gb", "20"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 1
    assert "REFUSED" in bad.stderr and "job score dataset=dsec_1s pair=eventgpt_7b__video_llava_7b" in bad.stderr
    assert "> gpu_memory_gb 20" in bad.stderr


def test_the_workflow_refuses_to_start_a_job_beyond_gpu_memory(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    (wd / "config").mkdir(exist_ok=True)
    (wd / "config" / "real_models.yaml").write_text(REAL.read_text())
    snakemake = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run([snakemake, "-n", "--cores", "1", "--configfile", "config/real_models.yaml",
                           "--config", "gpu_memory_gb=20"], cwd=wd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "the resource plan refuses these jobs" in out and "pair=eventgpt_7b__video_llava_7b" in out
    assert "Building DAG of jobs" not in out   # refused before any job was planned


def test_mem_mb_is_the_plans_host_figure_with_headroom():
    cfg = plan.load_config(REAL)
    plans = plan.plan_jobs(cfg)
    job = plans[plan.job_key("score", {"dataset": "dsec_1s", "pair": "eventgpt_7b__video_llava_7b",
                                       "decoding": "greedy"})]
    want = -(-job.host_bytes() * plan.HOST_HEADROOM // 2 ** 20)
    assert plan.mem_mb(plans, "score", {"dataset": "dsec_1s", "pair": "eventgpt_7b__video_llava_7b",
                                        "decoding": "greedy"}) == want > 4000
    # shards share their job's plan; a job without a plan gets the default
    assert plan.mem_mb(plans, "generate", {"dataset": "dsec_1s", "model": "eventgpt_7b", "decoding": "greedy",
                                           "shard": 3}) == plans[plan.job_key(
                                               "generate", {"dataset": "dsec_1s", "model": "eventgpt_7b",
                                                            "decoding": "greedy"})].mem_mb()
    assert plan.mem_mb({}, "generate", {"model": "x"}, default=1234) == 1234


MEASURE_TRAIN = r"""
import ctypes, gc, json, sys, tempfile
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from pathlib import Path
import torch
torch.set_num_threads(1)
from builders import load_lm
from specalign import distill
from specalign.dataset import Sample
from specalign.translation import TokenMap
settings = distill.DistillSettings(**json.loads(sys.argv[4]))
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
samples = [Sample(f"s/{i}", question=" ".join(f"w{(i * 7 + j) % 8000}" for j in range(120))) for i in range(4)]
# imports, kernels and allocator first: one step of the same training on a model too small to matter
small = load_lm(sys.argv[5], name="w")
warm = distill.DistillSettings(**{**json.loads(sys.argv[4]), "steps": 1, "max_new_tokens": 4})
small_map = TokenMap.from_tokenizers(small.tokenizer, small.tokenizer)
distill.train(small, distill.build_examples(small, small, samples[:2], small_map, warm), small_map, warm,
              Path(tempfile.mkdtemp()), "warm", small.text_vocab_size)
del small
target, draft = load_lm(sys.argv[3], name="t"), load_lm(sys.argv[3], name="d")
token_map = TokenMap.from_tokenizers(draft.tokenizer, target.tokenizer)
examples = distill.build_examples(draft, target, samples, token_map, settings)
width = target.text_vocab_size
distill.release(target)
del target
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")   # the training phase alone, as the job runs it
distill.train(draft, examples, token_map, settings, Path(tempfile.mkdtemp()), "fp", width)
print(json.dumps({"peak": status("VmHWM") - base, "tokens": [len(e.tokens) for e in examples]}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc (peak RSS reset)")
@pytest.mark.parametrize("lora_r", [None, 8])
def test_distill_training_plan_within_25_percent_of_the_measured_peak(measured_models, lora_r):
    """The training phase of a distill job (full fine-tuning and LoRA) against the peak resident memory
    of distill.train in a fresh process, after the labels are made and the target released."""
    from specalign.specs import schema_defaults

    small, model = measured_models
    settings = {**schema_defaults("models", "*", "distill"), "steps": 2, "batch_size": 2, "max_new_tokens": 64,
                "lora_r": lora_r, "label_batch_size": 4, "learning_rate": 1e-3}
    settings = {k: v for k, v in settings.items() if k not in ("dataset", "split")}
    out = subprocess.run([sys.executable, "-c", MEASURE_TRAIN, str(REPO / "tests"), str(REPO / "workflow_scripts"),
                          str(model), json.dumps(settings), str(small)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tokens"] == [64] * 4    # every answer runs to max_new_tokens: the plan's length
    cfg = {"models": {"t": {"family": "causal_lm", "path": str(model), "dtype": "float32", "device": "cpu",
                            "batch_size": 1},
                      "d": {"family": "causal_lm", "distill": {"draft": "t", "target": "t", **settings},
                            "dtype": "float32", "device": "cpu", "batch_size": 1}}}
    models = {n: plan.model_of(cfg, n) for n in cfg["models"]}
    _, train, _ = plan.distill_phases(cfg, "d", models)
    predicted = sum(train["cpu"].values())
    assert abs(predicted - got["peak"]) <= 0.25 * got["peak"], (predicted / 2 ** 20, got["peak"] / 2 ** 20, train)


def test_loading_is_planned_as_the_backends_load():
    """Backends build a model whole on the host in the load dtype, move it to its device, then cut a
    self-draft down: the host holds the largest full model, and a self-draft's device holds its full
    checkpoint while loading (the figure the GPU check uses when it is the larger)."""
    cfg = plan.load_config(REAL)
    plans = plan.plan_jobs(cfg)
    full = plan.model_of(cfg, "video_llava_7b")
    for draft in ("video_llava_7b_8l", "video_llava_7b_int8"):
        job = plans[plan.job_key("generate", {"dataset": "dsec_1s", "model": draft, "decoding": "greedy"})]
        m = plan.model_of(cfg, draft)
        assert m.weights() < 0.6 * m.full_weights() and m.full_weights() == full.weights()
        running = sum(job.devices["cuda:0"].values())
        assert running < job.gpu_bytes()["cuda:0"] == full.weights() + plan.CUDA_CONTEXT
        assert job.host_bytes() == plan.HOST_RUNTIME + full.weights()
    # a pair: the draft loads first, then the target beside it; the host copies one model at a time
    pair = plans[plan.job_key("score", {"dataset": "dsec_1s", "pair": "video_llava_7b_8l__video_llava_7b",
                                        "decoding": "greedy"})]
    m8 = plan.model_of(cfg, "video_llava_7b_8l")
    assert pair.loading["cuda:0"][0] == m8.weights() + full.weights()
    assert pair.host_bytes() == plan.HOST_RUNTIME + full.weights()
    assert pair.gpu_bytes()["cuda:0"] == sum(pair.devices["cuda:0"].values())   # running is the larger here
