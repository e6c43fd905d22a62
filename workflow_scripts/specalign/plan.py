"""The resource plan: each job's peak GPU and host memory, predicted from config.json alone.

    python -m specalign.plan CONFIG [--gpu-memory-gb N]

Nothing is loaded: the parameter counts are computed from each checkpoint's config.json
(model_shapes.py: the architecture's formula, checked against the real transformers classes built on
the meta device in tests/test_plan.py), so the plan runs at parse time, where it (1) gives every rule its `mem_mb`
(rules/common.smk: what a SLURM job asks for) and (2) refuses, before any job starts, a job whose
GPU figure exceeds `gpu_memory_gb`, naming the job and the figure.

Every figure here is a PREDICTION, and each is printed with its parts:
  weights      parameters x bytes (dtype; int8 / int4 for the quantized decoder layers and LM head)
  kv cache     2 x layers x kv heads x head dim x batch x context x dtype bytes
  activations  one forward's live tensors (hidden states, MLP, the float32 logits it keeps); for
               training, every decoder layer's saved activations of one example (backward runs per
               example in distill.train) and the trainable parameters' grads and AdamW state
  cuda context the CUDA runtime's own use per device (CUDA_CONTEXT)
  loading      every backend builds its model whole on the CPU, in the load dtype, then moves it
               to the device, and only then truncates or quantizes a self-draft (backends.load_backend):
               the host holds the largest model's full weights once, and a device holds the models
               loaded before + the full weights of the one loading (a floor under its figure)
Host: the interpreter with torch and transformers (HOST_RUNTIME), the weights of models placed on
the CPU, and that loading copy. SLURM's mem_mb = host x HOST_HEADROOM (at least MIN_MEM_MB).

Where a model's config.json is not on this machine (a placeholder path, as in the shipped
config/real_models.yaml), the family's published config (published/{family}.json beside this module,
from shared/reference/checkpoints) stands in, and the plan says so on that model's line. A checkpoint the workflow builds
(demo, distilled) is planned from the model it comes from, or left unplanned until it exists.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import checkpoint_model, model_path
from .model_shapes import PUBLISHED, Shape, param_parts, published_config, shape_of, total_params
from .specs import SCHEMA_PATH
from .stages import all_jobs, loop_gammas, timing_gammas

GiB = 2 ** 30
# Assumptions, each a stated constant (README "Resource plan"):
PROMPT_TEXT_TOKENS = 128      # system prompt + question + template around the visual tokens: an upper bound
CUDA_CONTEXT = 0.75 * GiB     # CUDA runtime, cuBLAS workspaces, allocator slack per device
HOST_RUNTIME = 3 * GiB        # Python with torch + transformers imported (+ CUDA host libraries)
MIN_MEM_MB = 4000             # the least mem_mb a job asks for (the profile's old default)
HOST_HEADROOM = 1.25          # SLURM mem_mb = predicted host memory x this
EVENT_RATE = 30e6             # events per second a raw DSEC window is planned for (build_clips)
EVENT_BYTES = 13              # x, y (uint16), p (uint8), t (int64) per event
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# bytes per quantized weight (scales included: per-row for int8, one bf16 scale + zero per 128 for int4)
QUANT_BYTES = {"int8_dynamic": 1.0, "int8_weight": 1.0, "int4_weight": 0.5 + 4 / 128}
LORA_MODULES = 4              # q, k, v, o of every decoder layer (distill.trainable)


# --------------------------------------------------------------------------------- one model
@dataclass(frozen=True)
class Model:
    """A configured model as the plan sees it: its shape and how it is loaded."""

    name: str
    shape: Shape
    dtype: str
    device: str
    layers: int            # decoder layers kept
    quantization: str | None
    batch_size: int

    @property
    def bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def prompt_tokens(self) -> int:
        return PROMPT_TEXT_TOKENS + self.shape.visual_tokens

    def weights(self) -> int:
        p, b = param_parts(self.shape), self.bytes
        q = QUANT_BYTES.get(self.quantization, b)
        decoder = self.layers * (p["decoder_linear_per_layer"] * q + p["decoder_other_per_layer"] * b)
        return int(decoder + p["embeddings"] * b + p["lm_head"] * q + p["vision"] * b)

    def full_weights(self) -> int:
        """The checkpoint as loaded, before a self-draft's truncation or quantization."""
        return Model(self.name, self.shape, self.dtype, self.device, self.shape.layers, None, 1).weights()

    def kv(self, batch: int, tokens: int) -> int:
        s = self.shape
        return 2 * self.layers * s.kv_heads * s.head_dim * batch * tokens * self.bytes

    def forward(self, batch: int, tokens: int, logits: int) -> int:
        """Live tensors of one inference forward over `tokens` (the widest layer's, not summed over
        layers) and the float32 logits of `logits` positions (softmax beside them)."""
        s = self.shape
        act = batch * tokens * (4 * s.hidden + 3 * s.intermediate) * self.bytes
        if s.vision is not None:
            v = s.vision
            per_frame = (v["image_size"] // v["patch_size"]) ** 2 + 1
            act += batch * s.frames * per_frame * (4 * v["hidden_size"] + v["intermediate_size"]) * self.bytes
        return act + 2 * batch * logits * s.vocab * 4


def _lora_params(m: Model, r: int) -> int:
    s = m.shape
    hd = s.head_dim
    per_layer = r * ((s.hidden + s.heads * hd) * 2 + (s.hidden + s.kv_heads * hd) * 2)
    return m.layers * per_layer


def train_state(m: Model, lora_r: int | None) -> tuple[int, int]:
    """(trainable parameters, bytes of their grads and AdamW state). LoRA weights are float32
    (peft's default) with a float32 grad and two moments; full fine-tuning keeps the grad and the
    moments in the parameters' dtype (torch.optim.AdamW), on every decoder and LM-head parameter
    (for EventGPT the event encoder and projector too: distill.trainable). The optimiser step's
    foreach kernels hold one more copy while they run."""
    if lora_r is not None:
        n = _lora_params(m, lora_r)
        return n, n * 4 * 5   # weight (not in `weights`), grad, exp_avg, exp_avg_sq, the step's temporaries
    p = param_parts(m.shape)
    n = total_params(m.shape, m.layers) - (p["vision"] if m.shape.family != "eventgpt" else 0)
    return n, n * m.bytes * 4   # grad, exp_avg, exp_avg_sq, and AdamW's foreach temporaries (one copy)


def saved_activations(m: Model, tokens: int) -> int:
    """Backward's saved tensors for one example through every decoder layer (no checkpointing):
    per token and layer the attention's inputs, q/k/v and output, the MLP's input, gate, up,
    activation and product, and the two norms' inputs (8 x hidden + 4 x intermediate)."""
    s = m.shape
    return m.layers * tokens * (8 * s.hidden + 4 * s.intermediate) * m.bytes


# --------------------------------------------------------------------------------- jobs
@dataclass
class JobPlan:
    """One job's predicted peak: parts per device ("cuda:0", "cpu"...) and host, in bytes."""

    stage: str
    wildcards: dict
    devices: dict[str, dict[str, int]] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    loading: dict[str, tuple[int, str]] = field(default_factory=dict)  # device -> peak while loading, what

    def add(self, device: str, part: str, nbytes: float) -> None:
        where = self.host if device == "cpu" else self.devices.setdefault(canonical_device(device), {})
        where[part] = where.get(part, 0) + int(nbytes)

    def gpu_bytes(self) -> dict[str, int]:
        """Per device, the larger of the running figure and the loading floor (with the context)."""
        return {d: max(sum(p.values()), self.loading.get(d, (0, ""))[0] + p.get("cuda context", 0))
                for d, p in self.devices.items()}

    def host_bytes(self) -> int:
        return sum(self.host.values())

    @property
    def label(self) -> str:
        return " ".join([self.stage] + [f"{k}={v}" for k, v in self.wildcards.items()])

    def mem_mb(self) -> int:
        return max(MIN_MEM_MB, int(math.ceil(self.host_bytes() * HOST_HEADROOM / 2 ** 20)))


def canonical_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else device


def _with_runtime(plan: JobPlan, models: list[Model]) -> JobPlan:
    """The runtime, the CUDA context of each device, and loading: `models` in the order the job loads
    them, each whole on the host, then on its device in full before a self-draft is cut down."""
    plan.add("cpu", "runtime", HOST_RUNTIME)
    loaded: dict[str, int] = {}
    for m in models:
        if not m.on_gpu:
            continue
        dev = canonical_device(m.device)
        if dev not in loaded:
            plan.add(dev, "cuda context", CUDA_CONTEXT)
        peak = loaded.get(dev, 0) + m.full_weights()
        if peak > plan.loading.get(dev, (0, ""))[0]:
            before = " + the models loaded before" if loaded.get(dev) else ""
            plan.loading[dev] = (peak, f"{m.name} loading: its full checkpoint {_gib(m.full_weights())}{before}")
        loaded[dev] = loaded.get(dev, 0) + m.weights()
    staging = max((m.full_weights() for m in models if m.on_gpu), default=0)
    if staging:
        plan.add("cpu", "loading copy (the largest model, whole on the host before it moves)", staging)
    return plan


def model_of(cfg: dict, name: str) -> Model | None:
    """The plan's view of models.NAME, or None when its config.json is not known yet (a demo
    model before it is trained)."""
    m = cfg["models"][name]
    own = cfg["models"][checkpoint_model(cfg, name)]
    if own.get("distill"):           # a distilled model has its draft's architecture
        base = model_of(cfg, own["distill"]["draft"])
        if base is None:
            return None
        shape = base.shape
    else:
        path = Path(model_path(cfg, name)) / "config.json"
        frames = int((own.get("options") or {}).get("event_frames", 5))
        if path.is_file():
            shape = shape_of(m["family"], json.loads(path.read_text()), str(path), frames)
        elif own.get("demo"):
            return None
        elif (PUBLISHED / f"{m['family']}.json").is_file():
            pub, src = published_config(m["family"])
            shape = shape_of(m["family"], pub, f"published {m['family']} config {src.name} "
                                              f"({path} not on this machine)", frames)
        else:
            return None
    return Model(name, shape, m["dtype"], m["device"], m.get("layers") or shape.layers, m.get("quantization"),
                 m["batch_size"])


def plan_job(cfg: dict, stage: str, w: dict, models: dict[str, Model | None]) -> JobPlan | None:
    """The predicted peak of one job (stage + wildcards), or None when a model it runs is not known
    yet (a demo model before it is trained)."""
    plan = JobPlan(stage, dict(w))
    if stage == "generate":
        m = models[w["model"]]
        if m is None:
            return None
        dec = cfg["decodings"][w["decoding"]]
        ctx = m.prompt_tokens + dec["max_new_tokens"]
        plan.add(m.device, f"{m.name} weights", m.weights())
        plan.add(m.device, f"kv cache (batch {m.batch_size} x {ctx} tokens)", m.kv(m.batch_size, ctx))
        plan.add(m.device, "prefill activations", m.forward(m.batch_size, m.prompt_tokens, 1))
        return _with_runtime(plan, [m])
    if stage in ("score", "score_ablation", "speculative", "timing"):   # an ablation: the score job's passes
        draft, target = (models[n] for n in w["pair"].split("__"))
        if draft is None or target is None:
            return None
        dec = cfg["decodings"][w["decoding"]]
        # the loop's caches hold up to gamma tokens past the answer: every gamma of a decoding is
        # planned at its largest (the difference is a few MB), so its jobs share one plan
        extra = max(loop_gammas(cfg, w["decoding"]), default=0) + 1 if stage == "speculative" else 1
        if stage == "timing":   # like the loop, at the largest gamma it times (loop or verify pass)
            t = timing_gammas(cfg)
            extra = max(t["loop_gammas"] + t["verify_gammas"]) + 1
        for role, m in (("draft", draft), ("target", target)):
            ctx = m.prompt_tokens + dec["max_new_tokens"] + extra
            plan.add(m.device, f"{role} {m.name} weights", m.weights())
            plan.add(m.device, f"{role} kv cache ({ctx} tokens)", m.kv(1, ctx))
            # scoring keeps the logits of every answer position; the loop one round's
            logits = dec["max_new_tokens"] if stage in ("score", "score_ablation") else extra
            plan.add(m.device, f"{role} activations", m.forward(1, ctx, logits))
        return _with_runtime(plan, [draft, target])
    if stage == "distill":
        return _plan_distill(cfg, w["model"], models, plan)
    if stage == "demo_model":   # trained by the workflow: unplanned until its config.json exists
        return None
    if stage == "build_clips":  # one window's events and frames at a time (dsec_raw.py)
        seconds = cfg["datasets"][w["dataset"]]["duration_ms"] / 1000
        plan.add("cpu", f"one {seconds:g} s window at {EVENT_RATE / 1e6:g} Mev/s", 2 * seconds * EVENT_RATE * EVENT_BYTES)
    return _with_runtime(plan, [])   # no model: the runtime (tables, tokenizers, manifests)


Phase = dict[str, dict[str, int]]   # device ("cpu" included) -> part -> bytes


def distill_phases(cfg: dict, name: str, models: dict[str, Model | None]) -> tuple[Phase, Phase, list[str]] | None:
    """The distill job's two phases, (labelling, training), each as device -> part -> bytes, and notes."""
    d = cfg["models"][name]["distill"]
    draft, target = models[d["draft"]], models[d["target"]]
    if draft is None or target is None:
        return None
    # the job loads and trains the draft as configured (job.model_spec("draft")), full size
    draft = Model(draft.name, draft.shape, draft.dtype, draft.device, draft.shape.layers, None, draft.batch_size)
    label: Phase = {}
    train: Phase = {}

    def add(phase: Phase, device: str, part: str, n: float) -> None:
        phase.setdefault(canonical_device(device), {})[part] = int(n)

    label_batch, n_new = d["label_batch_size"], d["max_new_tokens"]
    t_ctx = target.prompt_tokens + n_new
    add(label, target.device, f"{target.name} weights", target.weights())
    add(label, target.device, f"{target.name} kv cache (batch {label_batch} x {t_ctx} tokens)",
        target.kv(label_batch, t_ctx))
    add(label, target.device, f"{target.name} activations", target.forward(label_batch, target.prompt_tokens, n_new))
    add(label, draft.device, f"{draft.name} weights", draft.weights())
    d_ctx = draft.prompt_tokens + n_new
    n_train, state = train_state(draft, d["lora_r"])
    what = f"LoRA r={d['lora_r']}" if d["lora_r"] else "full fine-tuning"
    add(train, draft.device, f"{draft.name} weights", draft.weights())
    add(train, draft.device, f"trainable state ({what}: {n_train / 1e6:.1f} M params)", state)
    add(train, draft.device, f"saved activations (1 example x {d_ctx} tokens)", saved_activations(draft, d_ctx))
    # the kept logits in float32, their softmax, the push to target ids, and the grads of each
    add(train, draft.device, "logits and grads (float32)", 8 * n_new * draft.shape.vocab * 4)
    notes = []
    if d["top_k"] is None:
        notes.append(f"labels on the host: 4 x vocab x max_new_tokens = "
                     f"{4 * target.shape.vocab * n_new / 2 ** 20:.1f} MiB per train clip (top_k: null)")
    return label, train, notes


def _plan_distill(cfg: dict, name: str, models: dict[str, Model | None], plan: JobPlan) -> JobPlan | None:
    phases = distill_phases(cfg, name, models)
    if phases is None:
        return None
    label, train, plan.notes = phases
    # the job frees the target once the labels are made (distill.release): its peak is the larger
    # phase on each device; the other phase is shown as a note
    for dev in sorted(set(label) | set(train)):
        a, b = label.get(dev, {}), train.get(dev, {})
        pick, other = (a, b) if sum(a.values()) >= sum(b.values()) else (b, a)
        names = ("labels", "training") if pick is a else ("training", "labels")
        for part, n in pick.items():
            plan.add(dev, f"{part} [{names[0]}]", n)
        if other:
            plan.notes.append(f"{dev} while {names[1]}: {_gib(sum(other.values()))} = "
                              + " + ".join(f"{k} {_gib(v)}" for k, v in other.items()))
    d = cfg["models"][name]["distill"]
    return _with_runtime(plan, [m for m in (models[d["draft"]], models[d["target"]]) if m is not None])


def plan_jobs(cfg: dict) -> dict[tuple, JobPlan]:
    """The plan of every model-running job the config plans, keyed by `job_key` (shards share one)."""
    models = {n: model_of(cfg, n) for n in cfg["models"]}
    out: dict[tuple, JobPlan] = {}
    for stage, w in all_jobs(cfg):
        key = job_key(stage, w)
        if key in out:
            continue
        p = plan_job(cfg, stage, {k: v for k, v in w.items() if k != "shard"}, models)
        if p is not None:
            out[key] = p
    return out


def job_key(stage: str, w: dict) -> tuple:
    return (stage, tuple(sorted((k, str(v)) for k, v in w.items() if k != "shard")))


def mem_mb(plans: dict[tuple, JobPlan], stage: str, w: dict, default: int = MIN_MEM_MB) -> int:
    """What a job asks the scheduler for (SLURM mem_mb): its plan's host figure with headroom; a job
    without a plan (no model, or a model not built yet) gets `default`."""
    p = plans.get(job_key(stage, w))
    return p.mem_mb() if p is not None else default


class PlanError(ValueError):
    """A job planned beyond the configured GPU memory."""


def check(plans: dict[tuple, JobPlan], gpu_memory_gb: float | None) -> None:
    """Refuse, before any job starts, every job whose predicted GPU peak exceeds gpu_memory_gb."""
    if gpu_memory_gb is None:
        return
    over = []
    for p in plans.values():
        for dev, n in p.gpu_bytes().items():
            if n > gpu_memory_gb * GiB:
                parts = ", ".join(f"{k} {v / GiB:.1f}" for k, v in p.devices[dev].items())
                if dev in p.loading and p.loading[dev][0] + p.devices[dev].get("cuda context", 0) == n:
                    parts = f"while loading: {p.loading[dev][1]}; running: {parts}"
                over.append(f"job {p.label}: {n / GiB:.1f} GiB predicted on {dev} > gpu_memory_gb {gpu_memory_gb} "
                            f"({parts})")
    if over:
        raise PlanError("the resource plan refuses these jobs (python -m specalign.plan CONFIG shows every figure; "
                        "lower batch_size / label_batch_size, use LoRA, or raise gpu_memory_gb if your GPUs have "
                        "more):\n  " + "\n  ".join(over))


# --------------------------------------------------------------------------------- the command
def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def _body(p: JobPlan) -> list[str]:
    lines = []
    for dev, parts in p.devices.items():
        run = " + ".join(f"{k} {_gib(v)}" for k, v in parts.items())
        peak, what = p.loading.get(dev, (0, ""))
        if peak + parts.get("cuda context", 0) > sum(parts.values()):
            lines.append(f"GPU {dev}: {_gib(p.gpu_bytes()[dev])} while loading ({what} + cuda context); "
                         f"running {_gib(sum(parts.values()))} = {run}")
        else:
            lines.append(f"GPU {dev}: {_gib(sum(parts.values()))} = {run}")
    lines.append(f"host: {_gib(p.host_bytes())} = " + " + ".join(f"{k} {_gib(v)}" for k, v in p.host.items())
                 + f"  -> SLURM mem_mb {p.mem_mb()}")
    return lines + [f"({note})" for note in p.notes]


def format_plan(cfg: dict, plans: dict[tuple, JobPlan], shards: dict[tuple, int] | None = None) -> str:
    lines = ["Resource plan (PREDICTED from each checkpoint's config.json; nothing loaded). GiB.", "", "models:"]
    for name in sorted(cfg["models"]):
        m = model_of(cfg, name)
        if m is None:
            lines.append(f"  {name}: not planned (its checkpoint is built by the workflow and does not exist yet)")
            continue
        quant = f" {m.quantization}" if m.quantization else ""
        lines.append(f"  {name}: {m.shape.family} {m.dtype}{quant} on {m.device}, {m.layers}/{m.shape.layers} layers, "
                     f"{total_params(m.shape, m.layers) / 1e9:.2f} B params, weights {_gib(m.weights())}, "
                     f"prompt {m.prompt_tokens} tokens ({m.shape.visual_tokens} visual) - config: {m.shape.source}")
    lines += ["", "jobs (shards share their job's plan; jobs whose figures agree are listed once):"]
    groups: dict[tuple, list[tuple[tuple, JobPlan]]] = {}
    for key, p in plans.items():
        groups.setdefault((p.stage, tuple(_body(p))), []).append((key, p))
    for (stage, body), members in groups.items():
        keys = list(dict.fromkeys(k for _, p in members for k in p.wildcards))
        values = {k: list(dict.fromkeys(str(p.wildcards[k]) for _, p in members)) for k in keys}
        n = sum((shards or {}).get(key, 1) for key, _ in members)
        lines.append("  " + " ".join([stage] + [f"{k}={','.join(v)}" for k, v in values.items()])
                     + f"  ({n} job{'s' if n > 1 else ''})")
        lines += [f"    {b}" for b in body]
    limit = cfg.get("gpu_memory_gb")
    peak = max((n for p in plans.values() for n in p.gpu_bytes().values()), default=0)
    lines += ["", f"largest GPU figure: {_gib(peak)} GiB; gpu_memory_gb: {limit}"]
    return "\n".join(lines)


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """A config file as the workflow sees it: validated (schema defaults filled), references checked,
    raw DSEC datasets expanded."""
    import yaml
    from snakemake.utils import validate

    from .config import check_references, expand_datasets

    cfg = yaml.safe_load(Path(path).read_text())
    cfg.update(overrides or {})
    validate(cfg, str(SCHEMA_PATH))
    check_references(cfg)
    return expand_datasets(cfg)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m specalign.plan", description=__doc__.split("\n")[0])
    ap.add_argument("config", help="a workflow config (e.g. config/real_models.yaml)")
    ap.add_argument("--gpu-memory-gb", type=float, default=None, help="check against this instead of the config's")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.gpu_memory_gb is not None:
        cfg["gpu_memory_gb"] = args.gpu_memory_gb
    plans = plan_jobs(cfg)
    shards: dict[tuple, int] = {}
    for stage, w in all_jobs(cfg):
        shards[job_key(stage, w)] = shards.get(job_key(stage, w), 0) + 1
    print(format_plan(cfg, plans, shards))
    try:
        check(plans, cfg.get("gpu_memory_gb"))
    except PlanError as e:
        print(f"\nREFUSED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
