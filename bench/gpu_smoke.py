#!/usr/bin/env python3
"""Every stage of specalign on tiny models, on one device, in a few minutes: the GPU path proven.

`bash bench/gpu_smoke.sh` runs this (device cuda, bfloat16: the real configs' dtype);
`bash bench/gpu_smoke.sh --device cpu` (float32) is what CI runs (tests/test_gpu_smoke.py), so the
script cannot rot. Nothing is downloaded: a small demo dataset (demo_data), the demo tokenizers and
tiny checkpoints of the real architectures (demo_models: a Video-LLaVA target, an EventGPT draft,
trained for a few steps on the CPU by the demo's own code) are written to a temporary folder, and
every check then goes through the code the rule scripts run: `backends.load_backend` with a ModelSpec on the device, `backend.prepare` of dataset
samples, `generation.generate` batched with left padding, `scoring.score_table` (with its
`target_rank` at two caps, and the tree replay of chain{g} from those ranks == the greedy replay),
the score_ablation job's path (`ablations.Ablator` wrapping the draft's prepare: blank events), the
greedy and sampled `speculative` loop, the paired timing job (`timing.time_pairs`: warm-up,
interleaved prefills, decode steps, verify passes, loop vs plain decoding, synchronised on CUDA;
then `timing.summarise`, which must refuse a table of two devices), `distill` (ce with LoRA, kl, tv
with LoRA), self-drafts through `backends.variants` (int8 / int4 quantization, the first k layers),
`summary.acceptance_tables` and `report.build_report`. Where polars is missing (the GPU image) the
CPU-only code that needs it (tree_replay, timing_summary, acceptance_tables, report) is SKIPped.

Each check prints one line, `PASS name (seconds; detail)`, `FAIL name: why` or `SKIP name: why`, and
the run ends with `gpu_smoke: P passed, F failed, S skipped`; the exit status is 1 on any FAIL.
gpu_smoke.json under --out records the device, dtype, versions and every check's seconds and details.

Exactness. In float32 the checks are the test suite's: batched == unbatched streams, the greedy loop's
output == the target's greedy stream, its rounds == the replay of the teacher-forced matches. In
bfloat16, passes of different shapes (batched vs one row, chunked verification vs one token a step,
one teacher-forced pass vs the loop) may round an argmax near-tie differently; those checks (and
the timed loop's output lengths) then allow at most LOW_PRECISION_SHARE of the samples to differ, and the greedy loop only where its own
flip flags (`verify_flip` / `draft_flip`) say numerics did it; left padding is then checked on the
logits (LOGIT_TOL) rather than on argmax streams alone.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

import torch  # noqa: E402

QUESTIONS = ["What is in this scene?", "Describe how the shape moves in this clip, please."]
GAMMAS = (1, 3)
# the timing check: reps per clip (2: the loop / plain A/B order is swapped once) and bootstrap resamples
TIMING_REPS, TIMING_BOOT = 2, 200
# the ranks check scores again with this cap: its ranks must be min(rank, SMALL_RANK_K) of the default cap's
SMALL_RANK_K = 2
# bfloat16: at most this share of the samples may differ between passes of different shapes (a real
# bug moves most of them; near-ties move one now and then)
LOW_PRECISION_SHARE = 0.34
# relative max |logit difference| of a batched row vs the same prompt alone
LOGIT_TOL = {"float32": 1e-4, "bfloat16": 0.08, "float16": 0.02}


class Skip(Exception):
    """A check that cannot run here (the reason is printed)."""


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, why: str) -> None:
    if not cond:
        raise CheckFailed(why)


class Smoke:
    """The checks' bookkeeping: one printed line and one JSON record per check."""

    def __init__(self, args):
        self.args = args
        self.records: list[dict] = []
        self.state: dict = {}

    def passed(self, name: str) -> bool:
        return any(r["name"] == name and r["status"] == "PASS" for r in self.records)

    def run(self, name: str, fn, needs: tuple[str, ...] = ()) -> None:
        t0 = time.perf_counter()
        missing = [n for n in needs if not self.passed(n)]
        detail, status, why = {}, "PASS", ""
        try:
            if missing:
                raise Skip(f"needs {', '.join(missing)}, which did not pass")
            detail = fn() or {}
        except Skip as exc:
            status, why = "SKIP", str(exc)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the other checks go on
            status, why = "FAIL", f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400]
            traceback.print_exc(file=sys.stderr)
        secs = time.perf_counter() - t0
        note = detail.pop("note", "") if isinstance(detail, dict) else ""
        line = f"{status} {name}" + (f": {why}" if why else f" ({secs:.1f}s{'; ' + note if note else ''})")
        print(line, flush=True)
        self.records.append({"name": name, "status": status, "seconds": round(secs, 3), "why": why,
                             "detail": detail})


# ------------------------------------------------------------------------------------------- setup
def build_assets(s: Smoke) -> dict:
    """The demo dataset (DSEC layout), the demo tokenizers, tiny checkpoints of the demo target
    (Video-LLaVA) and draft (EventGPT), and the translation stage's table and stats. On the CPU in
    float32 whatever --device says: the checks load the checkpoints onto the device."""
    from transformers import AutoTokenizer

    from specalign.artifacts import write_json, write_parquet
    from specalign.backends.prompts import event_prompt, video_prompt
    from specalign.dataset import samples_from_instructions
    from specalign.demo_data import DemoSpec, build_demo_dataset, caption_corpus
    from specalign.demo_models import TrainSettings, train_demo_model
    from specalign.demo_tokenizer import demo_corpus, train_demo_tokenizers
    from specalign.translation import build_translation
    from specalign.vocabulary import vocabulary_table

    root = Path(s.state["tmp"])
    data = root / "data"
    build_demo_dataset(data, DemoSpec(n_train=s.args.train, n_test=s.args.samples, size=32, frames=8))
    train = samples_from_instructions(data, data / "instructions.json", QUESTIONS, "train")
    test = samples_from_instructions(data, data / "instructions.json", QUESTIONS, "test")
    captions = caption_corpus(sorted({x.reference for x in train + test}))
    texts = demo_corpus(captions, QUESTIONS, [event_prompt("{question}"), video_prompt("{question}")])
    tok_d, tok_t = root / "tok_draft", root / "tok_target"
    train_demo_tokenizers(texts, tok_d, tok_t)
    draft_tok, target_tok = AutoTokenizer.from_pretrained(tok_d), AutoTokenizer.from_pretrained(tok_t)
    target_dir, draft_dir = root / "target", root / "draft"
    # trained a little, through the demo's own training code: untrained tiny models repeat one
    # token whatever the context, which no rollback or batching bug would change
    settings = TrainSettings(steps=s.args.train_steps, batch_size=8, learning_rate=3e-3)
    trained = {role: train_demo_model(role, tok_dir, out, train, [], settings)
               for role, tok_dir, out in (("target", tok_t, target_dir), ("draft", tok_d, draft_dir))}
    tbl, stats, _ = build_translation(draft_tok, target_tok, texts)
    art = root / "artifacts"
    art.mkdir()
    write_parquet(tbl, art / "translation.parquet", "translation")
    write_json(stats, art / "draft__target.stats.json")
    write_parquet(vocabulary_table(target_tok), art / "vocab_target.parquet", "vocab")
    s.state.update(train=train, test=test, target_dir=target_dir, draft_dir=draft_dir, art=art)
    loss = {role: round(st["final_loss"], 3) for role, st in trained.items()}
    return {"train": len(train), "test": len(test), "final_loss": loss,
            "note": f"{len(train)} train + {len(test)} test clips; {s.args.train_steps} training steps, loss {loss}"}


def spec(s: Smoke, name: str, path, family: str, **kw):
    from specalign.specs import ModelSpec

    return ModelSpec(name=name, family=family, path=str(path), device=s.args.device, dtype=s.args.dtype, **kw)


def check_on_device(backend, s: Smoke) -> None:
    want_dtype = getattr(torch, s.args.dtype)
    for name, p in backend.model.named_parameters():
        expect(p.device.type == torch.device(s.args.device).type, f"{backend.name}: {name} is on {p.device}")
        if p.is_floating_point():
            expect(p.dtype == want_dtype, f"{backend.name}: {name} is {p.dtype}, not {want_dtype}")


def load_models(s: Smoke) -> dict:
    from specalign.backends import load_backend
    from specalign.translation import TokenMap

    target = load_backend(spec(s, "target", s.state["target_dir"], "video_llava", batch_size=4))
    draft = load_backend(spec(s, "draft", s.state["draft_dir"], "eventgpt", batch_size=4))
    for b in (target, draft):
        check_on_device(b, s)
    tmap = TokenMap.from_table(s.state["art"] / "translation.parquet", draft.tokenizer, target.tokenizer)
    tp = [target.prepare(x) for x in s.state["test"]]
    dp = [draft.prepare(x) for x in s.state["test"]]
    lens = sorted({int(p.input_ids.numel()) for p in tp})
    expect(len(lens) > 1, f"the target prompts all have {lens} tokens: batching would pad nothing")
    s.state.update(target=target, draft=draft, tmap=tmap, tprompts=tp, dprompts=dp)
    return {"target_prompt_tokens": lens, "draft_prompt_tokens": sorted({int(p.input_ids.numel()) for p in dp}),
            "note": f"video_llava + eventgpt on {s.args.device} in {s.args.dtype}"}


# ---------------------------------------------------------------------------------- generation
def decoding(s: Smoke, sampled: bool):
    from specalign.specs import Decoding

    if sampled:
        return Decoding("sampled", do_sample=True, temperature=0.7, top_p=0.95, seed=3, max_new_tokens=s.args.new_tokens)
    return Decoding("greedy", do_sample=False, max_new_tokens=s.args.new_tokens)


def low_precision(s: Smoke) -> bool:
    return s.args.dtype != "float32"


def allowed_differences(s: Smoke, n: int) -> int:
    return int(LOW_PRECISION_SHARE * n) if low_precision(s) else 0


def batched_logits_close(s: Smoke, backend, prompts) -> float:
    """Max relative |difference| of the last prompt position's logits, left-padded batch vs each
    prompt alone (the prefill pass generate makes)."""
    from specalign.generation import concat_model_inputs, left_pad

    ids, mask, pos = left_pad(prompts, backend.pad_token_id)
    batch = backend.forward(ids, attention_mask=mask, position_ids=pos, cache=backend.new_cache(),
                            model_inputs=concat_model_inputs(prompts), logits_to_keep=1)[:, -1]
    worst = 0.0
    for i, p in enumerate(prompts):
        one = backend.forward(p.input_ids[None], cache=backend.new_cache(), model_inputs=p.model_inputs,
                              logits_to_keep=1)[0, -1]
        worst = max(worst, float((batch[i] - one).abs().max() / one.abs().max().clamp(min=1e-6)))
    return worst


def generate_check(s: Smoke) -> dict:
    from specalign.artifacts import write_parquet
    from specalign.generation import generate, tokens_table

    out = {}
    for role, backend, prompts in (("target", s.state["target"], s.state["tprompts"]),
                                   ("draft", s.state["draft"], s.state["dprompts"])):
        for sampled in (False, True):
            dec = decoding(s, sampled)
            batched = generate(backend, prompts, dec, batch_size=backend.spec.batch_size)
            alone = generate(backend, prompts, dec, batch_size=1)
            for g in batched:
                eos_at = [j for j, t in enumerate(g.token_ids) if t == backend.eos_token_id]
                want = ("eos", [len(g.token_ids) - 1]) if g.finish_reason == "eos" else ("length", [])
                expect((g.finish_reason, eos_at) == want and 1 <= len(g.token_ids) <= dec.max_new_tokens and
                       (g.finish_reason == "eos" or len(g.token_ids) == dec.max_new_tokens),
                       f"{role} {g.sample_id}: {len(g.token_ids)} tokens, EOS at {eos_at}, finish {g.finish_reason}")
                expect(len(g.decode_ms) == len(g.token_ids) and g.prefill_ms > 0, f"{g.sample_id}: timings")
            differ = [a.sample_id for a, b in zip(batched, alone) if a.token_ids != b.token_ids]
            expect(len(differ) <= allowed_differences(s, len(prompts)),
                   f"{role} {dec.name}: batched streams differ from batch-1 streams for {differ}")
            key = f"{role}_{dec.name}"
            s.state[f"gen_{key}"] = alone  # batch 1: what the loop is compared with (same pass shapes)
            write_parquet(tokens_table(alone), s.state["art"] / f"tokens_{key}.parquet", "tokens")
            out[f"{key}_batched_differ"] = len(differ)
        rel = batched_logits_close(s, backend, prompts)
        expect(rel <= LOGIT_TOL[s.args.dtype], f"{role}: left-padded batch logits differ by {rel:.3g} (relative) "
                                               f"from each prompt alone; tolerance {LOGIT_TOL[s.args.dtype]}")
        out[f"{role}_logit_rel_diff"] = rel
    greedy = s.state["gen_target_greedy"]
    peak = max(g.peak_mem_mb for g in greedy)
    out["target_greedy_eos"] = sum(g.finish_reason == "eos" for g in greedy)
    out["note"] = (f"batch 4 vs 1, greedy + sampled; target greedy lengths {sorted(len(g.token_ids) for g in greedy)}"
                   f"; peak {peak:.0f} MiB")
    return out


# ---------------------------------------------------------------------------------- resource plan
def plan_check(s: Smoke) -> dict:
    """specalign.plan on the loaded models: the planned weights equal the bytes of the parameters on
    the device, exactly (both families, the device's dtype); on CUDA the KV cache and activations a
    batched generation adds (torch.cuda.max_memory_allocated) are set beside the plan's figure (a
    reading, not a bound: at this size the CUDA libraries' workspaces weigh as much as the tensors)."""
    from specalign import plan
    from specalign.generation import generate

    out = {}
    for role, family in (("target", "video_llava"), ("draft", "eventgpt")):
        backend = s.state[role]
        cfg = {"models": {role: {"family": family, "path": str(s.state[f"{role}_dir"]), "dtype": s.args.dtype,
                                 "device": s.args.device, "batch_size": backend.spec.batch_size}},
               "decodings": {"g": {"max_new_tokens": s.args.new_tokens}}}
        model = plan.model_of(cfg, role)
        loaded = sum(p.numel() * p.element_size() for p in backend.model.parameters())
        expect(model.weights() == loaded, f"{role}: planned weights {model.weights()} B, loaded {loaded} B")
        out[f"{role}_weights_bytes"] = loaded
    if torch.device(s.args.device).type == "cuda":
        target, prompts = s.state["target"], s.state["tprompts"]
        cfg = {"models": {"target": {"family": "video_llava", "path": str(s.state["target_dir"]),
                                     "dtype": s.args.dtype, "device": s.args.device, "batch_size": len(prompts)}},
               "decodings": {"g": {"max_new_tokens": s.args.new_tokens}}}
        job = plan.plan_job(cfg, "generate", {"model": "target", "decoding": "g"},
                            {"target": plan.model_of(cfg, "target")})
        planned = sum(v for k, v in job.devices[plan.canonical_device(s.args.device)].items() if "weights" not in k and k != "cuda context")
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        generate(target, prompts, decoding(s, False), batch_size=len(prompts))
        measured = torch.cuda.max_memory_allocated() - base
        out.update(planned_kv_activation_bytes=planned, measured_kv_activation_bytes=measured)
        out["note"] = f"weights exact; KV + activations planned {planned / 2 ** 20:.2f} MiB, measured " \
                      f"{measured / 2 ** 20:.2f} MiB"
    else:
        out["note"] = "weights exact (the CPU's peak memory is checked by tests/test_plan.py)"
    return out


# ---------------------------------------------------------------------------------- scoring
def score_check(s: Smoke, sampled: bool) -> dict:
    import pyarrow.compute as pc

    from specalign.artifacts import write_parquet
    from specalign.scoring import score_table

    dec = decoding(s, sampled)
    gen = s.state[f"gen_target_{dec.name}"]
    target, draft = s.state["target"], s.state["draft"]
    items = [(dp, tp, g.token_ids) for dp, tp, g in zip(s.state["dprompts"], s.state["tprompts"], gen)]
    tbl = score_table(draft, target, items, s.state["tmap"], dec)
    expect(tbl.num_rows == sum(len(g.token_ids) for g in gen), f"{tbl.num_rows} score rows")
    summin, mapped = tbl.column("summin").to_numpy(), tbl.column("mapped_mass").to_numpy()
    expect(((summin >= 0) & (summin <= mapped + 1e-9) & (mapped <= 1 + 1e-9)).all(), "summin outside [0, mapped_mass]")
    if not sampled:
        expect(bool(pc.all(pc.equal(tbl.column("summin"), pc.cast(tbl.column("match"), "double"))).as_py()),
               "greedy summin != match")
    path = s.state["art"] / f"scores_{dec.name}.parquet"
    write_parquet(tbl, path, "scores")
    s.state[f"scores_{dec.name}"] = tbl
    # the target scored along its own greedy streams: every position matches (one pass vs step by step)
    if not sampled:
        from specalign.translation import TokenMap

        own = score_table(target, target, [(tp, tp, g.token_ids) for tp, g in zip(s.state["tprompts"], gen)],
                          TokenMap.identity(target.text_vocab_size), dec)
        misses = own.num_rows - sum(own.column("match").to_pylist())
        expect(misses <= allowed_differences(s, len(gen)), f"the target disagrees with its own greedy stream at "
                                                           f"{misses} teacher-forced positions")
        return {"alpha": float(summin.mean()), "self_misses": misses,
                "note": f"alpha {summin.mean():.3f}; target vs itself: {misses} misses"}
    return {"alpha": float(summin.mean()), "note": f"alpha {summin.mean():.3f}"}


def ranks_check(s: Smoke) -> dict:
    """target_rank (scoring.target_ranks: the draft's stable sort on the device) of the greedy scores,
    scored with the config's default cap scoring.RANK_K: rank 0 exactly where match is, every rank in
    [0, RANK_K] (RANK_K: the sentinel "not within the top RANK_K"), and the same streams scored again
    with the cap SMALL_RANK_K give min(rank, SMALL_RANK_K) exactly (the same passes: exact in any
    dtype). Some rank must lie strictly between 0 and the cap, so the tree replay is not vacuous."""
    from specalign.scoring import RANK_K, score_table

    tbl, dec = s.state["scores_greedy"], decoding(s, False)
    ranks, match = tbl.column("target_rank").to_pylist(), tbl.column("match").to_pylist()
    bad = [i for i, (r, m) in enumerate(zip(ranks, match)) if (r == 0) != m or not 0 <= r <= RANK_K]
    expect(not bad, f"rows {bad[:5]}: target_rank {[ranks[i] for i in bad[:5]]} vs match "
                    f"{[match[i] for i in bad[:5]]} (rank 0 iff match, ranks in [0, {RANK_K}])")
    inner = sum(0 < r < RANK_K for r in ranks)
    expect(inner > 0, f"no target_rank strictly between 0 and {RANK_K}: the tree replay would only see chains")
    items = [(dp, tp, g.token_ids) for dp, tp, g in zip(s.state["dprompts"], s.state["tprompts"],
                                                        s.state["gen_target_greedy"])]
    small = score_table(s.state["draft"], s.state["target"], items, s.state["tmap"], dec, rank_k=SMALL_RANK_K)
    capped = small.column("target_rank").to_pylist()
    expect(capped == [min(r, SMALL_RANK_K) for r in ranks],
           f"target_rank with rank_k {SMALL_RANK_K} is not min(rank, {SMALL_RANK_K}) of rank_k {RANK_K}'s")
    # the sentinel: at the small cap some rank must be cut (else min() above checked nothing)
    expect(SMALL_RANK_K in capped, f"no rank reached the cap {SMALL_RANK_K}: the sentinel went unchecked")
    beyond = sum(r == RANK_K for r in ranks)
    return {"rank_k": RANK_K, "ranks_inner": inner, "ranks_beyond": beyond,
            "ranks_beyond_small": sum(r == SMALL_RANK_K for r in capped),
            "note": f"{len(ranks)} ranks: {sum(match)} at 0, {inner} in 1..{RANK_K - 1}, {beyond} at the cap"}


def tree_replay_check(s: Smoke) -> dict:
    """trees.replay_tree_rounds of chain{g} from the scores' target_rank == replay.replay_rounds at
    gamma g from their match, round for round, per clip. Both replays read one table, so this is
    exact in any dtype (no LOW_PRECISION_SHARE: no two passes are compared here)."""
    if importlib.util.find_spec("polars") is None:
        raise Skip("polars is not installed (trees.py imports it; the --device cpu run covers this CPU-only "
                   "code; the ranks it replays are checked on the device by `ranks`)")
    from specalign.replay import replay_rounds
    from specalign.trees import chain, replay_tree_rounds

    tbl, dec = s.state["scores_greedy"], decoding(s, False)
    per: dict[str, list[tuple[int, int, bool]]] = {}
    for sid, pos, r, m in zip(*(tbl.column(c).to_pylist() for c in ("sample_id", "position", "target_rank", "match"))):
        per.setdefault(sid, []).append((pos, r, m))
    rounds = 0
    for gamma in GAMMAS:
        for sid, rows in per.items():
            rows.sort()
            tree = replay_tree_rounds([r for _, r, _ in rows], chain(gamma), dec.max_new_tokens)
            flat = replay_rounds([m for _, _, m in rows], gamma, dec.max_new_tokens)
            expect(tree == flat, f"{sid} gamma {gamma}: chain{gamma} replayed from ranks {tree} != the greedy "
                                 f"replay {flat}")
            rounds += len(flat)
    return {"rounds": rounds, "note": f"chain{{g}} == greedy replay at gammas {list(GAMMAS)}: {rounds} rounds"}


def ablation_check(s: Smoke) -> dict:
    """The score_ablation job's path (workflow_scripts/score_ablation.py) with a draft-side `blank`:
    the draft's samples prepared through ablations.Ablator's wrap of the REAL backend (the blank
    events written to a file and read back by its prepare), scored along the target's plain greedy
    streams. Truths: the same rows (sample, position, target token) as the plain scores; the prompt
    ids untouched and the event inputs changed for every clip (and one blank input for all); the
    target's columns equal the plain table's exactly (its side is not ablated: same inputs, same
    passes) while the draft's log-probs move. A mean match differing from the plain run's is not
    required: on tiny models the draft's argmax often survives a blank input, so that could fail
    without a bug; a float log-prob cannot stay bit-identical once the draft's visual input really
    changed, so it fails exactly when the ablated input never reached the draft's pass."""
    from specalign.ablations import Ablator, job_entry
    from specalign.artifacts import write_parquet
    from specalign.scoring import score_table
    from specalign.specs import schema_defaults

    draft, target, dec = s.state["draft"], s.state["target"], decoding(s, False)
    plain_prompts, plain = s.state["dprompts"], s.state["scores_greedy"]
    ablation = job_entry("blank", {**schema_defaults("ablations", "*"), "side": "draft", "kind": "blank"})
    with Ablator(ablation, s.state["test"]) as ablator:
        wrapped = ablator.wrap(draft)
        ablated = [wrapped.prepare(x) for x in s.state["test"]]
    for a, p in zip(ablated, plain_prompts):
        expect(a.sample_id == p.sample_id and torch.equal(a.input_ids, p.input_ids),
               f"{p.sample_id}: the ablated draft prompt's ids differ from the plain ones")
        expect(sorted(a.model_inputs) == sorted(p.model_inputs) and
               any(not torch.equal(a.model_inputs[k], p.model_inputs[k]) for k in p.model_inputs),
               f"{p.sample_id}: the blank ablation left the draft's inputs {sorted(p.model_inputs)} as they were")
        expect(all(torch.equal(a.model_inputs[k], ablated[0].model_inputs[k]) for k in a.model_inputs),
               f"{a.sample_id}: blank inputs differ between clips")
    items = [(a, tp, g.token_ids) for a, tp, g in zip(ablated, s.state["tprompts"], s.state["gen_target_greedy"])]
    tbl = score_table(draft, target, items, s.state["tmap"], dec)
    keys = ("sample_id", "position", "target_token")
    expect(all(tbl.column(k).to_pylist() == plain.column(k).to_pylist() for k in keys),
           f"the ablated scores' rows ({tbl.num_rows}) are not the plain scores' ({plain.num_rows})")
    expect(tbl.column("target_logprob").to_pylist() == plain.column("target_logprob").to_pylist(),
           "the target's log-probs moved although only the draft's input was ablated")
    moved = sum(a != b for a, b in zip(tbl.column("draft_logprob").to_pylist(),
                                       plain.column("draft_logprob").to_pylist()))
    expect(moved > 0, "the draft's log-probs are bit-identical with blank events: the ablated input never "
                      "reached the draft's pass")
    write_parquet(tbl, s.state["art"] / "scores_ablation_blank_greedy.parquet", "scores")
    m_plain, m_abl = (sum(t.column("match").to_pylist()) / t.num_rows for t in (plain, tbl))
    return {"rows": tbl.num_rows, "draft_logprob_moved": moved, "match_plain": m_plain, "match_ablated": m_abl,
            "note": f"draft blank events: {moved}/{tbl.num_rows} draft log-probs moved; match {m_plain:.3f} -> "
                    f"{m_abl:.3f}"}


# ---------------------------------------------------------------------------------- the loop
def loop_check(s: Smoke, draft, dprompts, tmap, name: str, sampled: bool, scores=None, write: bool = False) -> dict:
    """The speculative loop over the test prompts at every gamma. Greedy: output == the target's
    greedy stream, rounds == the replay of `scores`' matches (float32: exactly; else see the module
    doc). Sampled: round invariants, and the same seed gives the same output."""
    from specalign.artifacts import write_parquet
    from specalign.replay import replay_rounds
    from specalign.speculative import rounds_table, speculative_decode, speculative_sample

    target, dec = s.state["target"], decoding(s, sampled)
    gen = {g.sample_id: g for g in s.state[f"gen_target_{dec.name}"]}
    matches = {}
    if scores is not None:
        for sid, m in zip(scores.column("sample_id").to_pylist(), scores.column("match").to_pylist()):
            matches.setdefault(sid, []).append(bool(m))
    out, drafted, accepted, offered, rows = {}, 0, 0, 0, []
    for gamma in GAMMAS:
        differ, unexplained, flips = [], [], 0
        for dp, tp in zip(dprompts, s.state["tprompts"]):
            g = gen[tp.sample_id]
            r = speculative_sample(draft, target, dp, tp, tmap, gamma, dec, check_flips=True,
                                   target_stream=(g.prefill_ms, g.decode_ms))
            rows.extend(r)
            toks = [t for x in r for t in x["tokens"]]
            expect(len(toks) <= dec.max_new_tokens, f"{tp.sample_id}: {len(toks)} tokens")
            for x in r:
                expect(0 <= x["accepted"] <= x["drafted"] <= gamma, f"{tp.sample_id}: round {x}")
                expect(x["emitted"] == len(x["tokens"]) >= x["accepted"], f"{tp.sample_id}: round {x}")
            drafted += sum(x["drafted"] for x in r)
            accepted += sum(x["accepted"] for x in r)
            # proposals the target judged: a round ended by an accepted EOS never judged the rest
            offered += sum(x["accepted"] if x["emitted"] == x["accepted"] else x["drafted"] for x in r)
            flagged = any(x["verify_flip"] or x["draft_flip"] for x in r)
            flips += flagged
            if sampled:
                again, _ = speculative_decode(draft, target, dp, tp, tmap, gamma, dec, check_flips=False)
                expect(again == toks, f"{tp.sample_id}: sampled output changed between two runs with one seed")
                continue
            same_out = toks == g.token_ids
            same_rounds = (matches.get(tp.sample_id) is None or
                           [x["accepted"] for x in r] == [y.accepted for y in replay_rounds(
                               matches[tp.sample_id], gamma, dec.max_new_tokens)])
            if not (same_out and same_rounds):
                differ.append(tp.sample_id)
                if not flagged:
                    unexplained.append(tp.sample_id)
        n = len(dprompts)
        if not sampled:
            bad = differ if not low_precision(s) else unexplained
            expect(not bad, f"gamma {gamma}: output or rounds differ from the target's greedy stream / the replay "
                            f"for {bad}" + (", with no flip flagged" if low_precision(s) else ""))
            expect(len(differ) <= allowed_differences(s, n), f"gamma {gamma}: {len(differ)} of {n} samples differ "
                                                             f"(flips flagged): more than numerics explain")
        out[f"g{gamma}_differ"], out[f"g{gamma}_flagged"] = len(differ), flips
    if write:
        write_parquet(rounds_table(rows), s.state["art"] / f"rounds_{name}_{dec.name}.parquet", "rounds")
    rate = accepted / drafted if drafted else float("nan")
    out.update(acceptance=rate, acceptance_in_answer=accepted / offered if offered else float("nan"),
               note=f"{name} {dec.name}: acceptance {rate:.3f} at gammas {list(GAMMAS)}")
    return out


def sampled_self_check(s: Smoke) -> dict:
    """The target drafting for itself under sampling: q = p up to numerics, so (almost) every
    proposal is accepted (accept iff u * q(y) < p(y))."""
    from specalign.translation import TokenMap

    target = s.state["target"]
    out = loop_check(s, target, s.state["tprompts"], TokenMap.identity(target.text_vocab_size), "self", sampled=True)
    floor, got = (0.9 if low_precision(s) else 0.98), out["acceptance_in_answer"]
    expect(got >= floor, f"the target drafting for itself accepted {got:.3f} of the proposals it judged (< {floor})")
    out["note"] = f"the target drafting for itself: {got:.3f} of the judged proposals accepted"
    return out


# ---------------------------------------------------------------------------------- paired timing
def timing_check(s: Smoke) -> dict:
    """The timing job's function (`timing.time_pairs`, as workflow_scripts/timing.py calls it, warm-up
    included) on the smoke's draft + target, greedy, over the test clips: verify passes and loop at
    GAMMAS, TIMING_REPS reps. Truths: every row names the requested device and dtype, every time is
    finite and > 0 (a loop's forward passes inside its wall time), each (clip, kind, gamma) has the
    rows the job's plan gives (timing.context_positions), the plain baseline decodes exactly the
    loop's token count, and each timed pass is bracketed by synchronisations of the backends' devices
    (timing._sync; on CUDA torch.cuda.synchronize is counted too: unsynchronised CUDA timings
    measure kernel launches, not passes)."""
    from collections import Counter

    from specalign import timing
    from specalign.artifacts import write_parquet
    from specalign.generation import device_name

    draft, target, dec = s.state["draft"], s.state["target"], decoding(s, False)
    gen = s.state["gen_target_greedy"]
    items = [(dp, tp, g.token_ids) for dp, tp, g in zip(s.state["dprompts"], s.state["tprompts"], gen)]
    # the synchronisations, counted by wrapping (calling through) timing._sync and torch.cuda.synchronize
    with (mock.patch.object(timing, "_sync", wraps=timing._sync) as sync,
          mock.patch.object(torch.cuda, "synchronize", wraps=torch.cuda.synchronize) as cuda_sync):
        tbl = timing.time_pairs(draft, target, items, s.state["tmap"], dec, GAMMAS, GAMMAS, TIMING_REPS)
    syncs, cuda_syncs = [c.args for c in sync.call_args_list], cuda_sync.call_args_list
    write_parquet(tbl, s.state["art"] / "timing_greedy.parquet", "timing")
    rows = tbl.to_pylist()
    n_rows = len(rows)
    want_dev = device_name(s.args.device)
    cols = {(r["device"], r["dtype"], r["torch_threads"]) for r in rows}
    expect(cols == {(want_dev, s.args.dtype, torch.get_num_threads())},
           f"the rows say (device, dtype, threads) {sorted(cols)}, not {(want_dev, s.args.dtype)}")
    bad = [r for r in rows if not (math.isfinite(r["ms"]) and r["ms"] > 0 and 0 < r["forward_ms"] <= r["ms"])]
    expect(not bad, f"{len(bad)} rows with a time not finite and > 0, e.g. {bad[:1]}")
    want = Counter()
    for dp, tp, y in items:
        n_pos = len(timing.context_positions(len(y)))
        for kind in ("draft_prefill", "target_prefill"):
            want[tp.sample_id, kind, 0] = TIMING_REPS
        for kind in ("draft_step", "target_step"):
            want[tp.sample_id, kind, 0] = n_pos * TIMING_REPS
        for g in GAMMAS:
            want[tp.sample_id, "verify", g] = n_pos * TIMING_REPS
            want[tp.sample_id, "loop", g] = want[tp.sample_id, "target_only", g] = TIMING_REPS
    got = Counter((r["sample_id"], r["kind"], r["gamma"]) for r in rows)
    expect(got == want, f"rows per (clip, kind, gamma) differ from the plan: {sorted((got - want).items())[:3]} "
                        f"extra, {sorted((want - got).items())[:3]} missing")
    tokens = {}
    for r in rows:
        if r["kind"] in ("loop", "target_only"):
            tokens.setdefault((r["sample_id"], r["gamma"], r["rep"]), {})[r["kind"]] = r["tokens"]
    expect(all(t["loop"] == t["target_only"] >= 1 for t in tokens.values()),
           "the plain baseline did not decode the loop's token count")
    # greedy: the loop makes the target's stream, so its length (bfloat16: numerics may flip a few clips)
    length = {g.sample_id: len(g.token_ids) for g in gen}
    off = sorted({sid for (sid, _, _), t in tokens.items() if t["loop"] != length[sid]})
    expect(len(off) <= allowed_differences(s, len(gen)), f"the timed loop's output length is not the target "
                                                         f"stream's for {off}")
    devices = {torch.device(d).type for args in syncs for d in args}
    expect(len(syncs) >= 2 * n_rows and devices == {torch.device(s.args.device).type},
           f"{len(syncs)} synchronisations (of {sorted(devices)}) around {n_rows} timed passes")
    if torch.device(s.args.device).type == "cuda":
        expect(len(cuda_syncs) >= 2 * n_rows, f"torch.cuda.synchronize ran {len(cuda_syncs)} times around "
                                              f"{n_rows} timed passes")
    s.state["timing_greedy"] = tbl
    return {"rows": n_rows, "syncs": len(syncs), "cuda_syncs": len(cuda_syncs), "device_column": want_dev,
            "note": f"{n_rows} rows, {len(items)} clips x {TIMING_REPS} reps, gammas {list(GAMMAS)}; "
                    f"{len(syncs)} syncs ({len(cuda_syncs)} CUDA)"}


def timing_summary_check(s: Smoke) -> dict:
    """timing.summarise of the timing check's table: c, every verify_cost and the loop's measured
    speedup finite and > 0 with lo <= value <= hi, on the requested device and clips; and the same
    table with one clip's device renamed must be refused (ValueError naming both devices)."""
    if importlib.util.find_spec("polars") is None:
        raise Skip("polars is not installed (timing.summarise needs it; the --device cpu run covers this "
                   "CPU-only code; the timings themselves are checked on the device by `timing`)")
    import polars as pl

    from specalign import timing

    df = pl.from_arrow(s.state["timing_greedy"])
    summ = timing.summarise(df, n_boot=TIMING_BOOT)
    expect(summ["device"] == df["device"][0] and summ["n_clips"] == len(s.state["test"])
           and summ["reps"] == TIMING_REPS, f"summary of {summ['device']}, {summ['n_clips']} clips, {summ['reps']} reps")
    figures = {"c": (summ["c"], summ["c_lo"], summ["c_hi"])}
    for k, v in summ["verify"].items():
        figures[f"verify_cost[{k}]"] = (v["verify_cost"], v["verify_cost_lo"], v["verify_cost_hi"])
    for g, v in summ["loop"].items():
        figures[f"measured_speedup[{g}]"] = (v["measured_speedup"], v["measured_speedup_lo"], v["measured_speedup_hi"])
    expect(sorted(summ["verify"]) == sorted(summ["loop"]) == list(GAMMAS), f"gammas {sorted(summ['verify'])}, "
                                                                          f"{sorted(summ['loop'])}")
    bad = {k: v for k, v in figures.items() if not (all(map(math.isfinite, v)) and 0 < v[1] <= v[0] <= v[2])}
    expect(not bad, f"figures not finite, > 0 and inside their interval (value, lo, hi): {bad}")
    other = "another device (gpu_smoke)"
    first = df["sample_id"].min()
    mixed = df.with_columns(pl.when(pl.col("sample_id") == first).then(pl.lit(other))
                            .otherwise(pl.col("device")).alias("device"))
    try:
        timing.summarise(mixed, n_boot=TIMING_BOOT)
    except ValueError as exc:
        expect(other in str(exc) and summ["device"] in str(exc), f"the refusal does not name both devices: {exc}")
    else:
        raise CheckFailed("timing.summarise combined rows from two devices")
    return {"c": figures["c"], **{k: v for k, v in figures.items() if k != "c"},
            "note": f"c {summ['c']:.3f} [{summ['c_lo']:.3f}, {summ['c_hi']:.3f}]; speedup "
                    + ", ".join(f"g{g} {v['measured_speedup']:.2f}" for g, v in summ["loop"].items())
                    + "; two devices refused"}


# ---------------------------------------------------------------------------------- self-drafts
def self_draft_check(s: Smoke, kind: str) -> dict:
    """A draft made from the target's checkpoint (backends.variants via load_backend), lossless."""
    from specalign.backends import load_backend
    from specalign.backends.variants import decoder_layers
    from specalign.scoring import score_table
    from specalign.translation import TokenMap

    if kind == "truncated":
        kw = {"layers": 1}
    else:
        from specalign.config import QUANTIZATION, quantization_missing

        dev = torch.device(s.args.device).type
        method = {"int8": "int8_weight" if dev == "cuda" else "int8_dynamic", "int4": "int4_weight"}[kind]
        if QUANTIZATION[method][0] != dev:
            raise Skip(f"{method} runs on {QUANTIZATION[method][0]} only (config.QUANTIZATION)")
        missing = quantization_missing(method)  # the config check's own words: the package and how to install it
        if missing:
            raise Skip(missing)
        kw = {"quantization": method}
    backend = load_backend(spec(s, f"target_{kind}", s.state["target_dir"], "video_llava", **kw))
    _, layers = decoder_layers(backend.model)
    if kind == "truncated":
        expect(len(layers) == 1, f"{len(layers)} decoder layers kept, not 1")
    else:
        kinds = {type(m.weight).__name__ for m in layers.modules() if isinstance(m, torch.nn.Linear)}
        expect(kinds - {"Parameter", "Tensor"}, f"no decoder weight was quantized (weights: {kinds})")
    target, dec = s.state["target"], decoding(s, False)
    tmap = TokenMap.identity(target.text_vocab_size)
    # its teacher-forced matches: the loop's accepted counts must be their replay (a broken draft
    # rollback keeps the output right and shows only there)
    scores = score_table(backend, target, [(tp, tp, g.token_ids) for tp, g in
                                           zip(s.state["tprompts"], s.state["gen_target_greedy"])], tmap, dec)
    out = loop_check(s, backend, s.state["tprompts"], tmap, kind, sampled=False, scores=scores)
    out.update(variant=kw, note=f"{kw}: " + out["note"])
    return out


# ---------------------------------------------------------------------------------- distillation
def distill_check(s: Smoke, loss: str, lora_r: int | None) -> dict:
    """distill.build_examples + train on the train split, the checkpoint written and loaded back on
    the device: the draft's mean log-prob of the target's tokens on the TRAIN examples must rise.
    The distilled draft is then scored along the test streams (the report's before/after rows)."""
    from specalign import distill
    from specalign.artifacts import write_parquet
    from specalign.backends import load_backend
    from specalign.scoring import score_table
    from specalign.specs import schema_defaults
    from specalign.translation import TokenMap

    target = s.state["target"]
    draft = load_backend(spec(s, "draft", s.state["draft_dir"], "eventgpt"))
    tmap = TokenMap.from_tokenizers(draft.tokenizer, target.tokenizer)  # as the distill rule builds it
    # the schema's defaults (as a config gets them), a few changed so that 8 clips train in seconds
    settings = distill.settings_of({**schema_defaults("models", "*", "distill"), "loss": loss, "lora_r": lora_r,
                                    "steps": s.args.distill_steps, "batch_size": 4, "top_k": 8,
                                    "learning_rate": 1e-2 if lora_r else 3e-3, "max_new_tokens": s.args.new_tokens,
                                    "checkpoint_every": 1000})
    train = s.state["train"]
    examples = distill.build_examples(draft, target, train, tmap, settings)
    expect(len(examples) == len(train), f"{len(examples)} examples from {len(train)} clips")
    # the draft's log-prob of each example's target tokens, along them (scoring's teacher-forced pass)
    items = [(draft.prepare(ex.sample), target.prepare(ex.sample), ex.tokens) for ex in examples]
    dec = decoding(s, False)

    def mean_lp(backend):
        lp = score_table(backend, target, items, tmap, dec).column("draft_logprob").to_numpy()
        return float(lp[lp > -math.inf].mean())

    before = mean_lp(draft)
    root = Path(s.state["tmp"]) / f"distill_{loss}"
    stats = distill.train(draft, examples, tmap, settings, root / "state", f"smoke-{loss}", target.text_vocab_size)
    expect(math.isfinite(stats["final_loss"]), f"final loss {stats['final_loss']}")
    distill.write_checkpoint(draft, root / "ckpt")
    after_backend = load_backend(spec(s, f"draft_{loss}", root / "ckpt", "eventgpt"))
    check_on_device(after_backend, s)
    after = mean_lp(after_backend)
    expect(after > before, f"the draft's mean log-prob of the target's training tokens fell: {before:.3f} -> {after:.3f}")
    test_items = [(dp, tp, g.token_ids) for dp, tp, g in zip(s.state["dprompts"], s.state["tprompts"],
                                                              s.state["gen_target_greedy"])]
    path = s.state["art"] / f"scores_distilled_{loss}.parquet"
    write_parquet(score_table(after_backend, target, test_items, s.state["tmap"], dec), path, "scores")
    s.state.setdefault("comparisons", []).append({
        "dataset": "smoke", "target": "target", "decoding": "greedy", "before": "draft", "after": f"draft_{loss}",
        "loss": loss, "data": settings.data, "before_scores": str(s.state["art"] / "scores_greedy.parquet"),
        "after_scores": str(path)})
    return {"logprob_before": before, "logprob_after": after, "final_loss": stats["final_loss"],
            "note": f"{'LoRA r=%d' % lora_r if lora_r else 'full'}; train log-prob {before:.3f} -> {after:.3f}"}


# ---------------------------------------------------------------------------------- tables, report
def runs(s: Smoke):
    from specalign.specs import Run

    art = s.state["art"]
    return [Run(dataset="smoke", pair="draft__target", draft="draft", target="target", decoding=decoding(s, sampled),
                scores=str(art / f"scores_{name}.parquet"), translation=str(art / "translation.parquet"),
                target_vocab=str(art / "vocab_target.parquet"), draft_tokens=(str(art / f"tokens_draft_{name}.parquet"),),
                target_tokens=(str(art / f"tokens_target_{name}.parquet"),),
                rounds=(str(art / f"rounds_draft_{name}.parquet"),))
            for sampled, name in ((False, "greedy"), (True, "sampled"))]


def tables_check(s: Smoke) -> dict:
    if importlib.util.find_spec("polars") is None:
        raise Skip("polars is not installed (its wheel does not fit the device's 64 MiB carry beside the others; "
                   "the --device cpu run covers this CPU-only code)")
    from specalign.artifacts import write_text
    from specalign.summary import acceptance_tables

    tables = acceptance_tables(runs(s), list(GAMMAS), 50, comparisons=s.state.get("comparisons", []))
    loop = tables["loop"]
    expect(loop.height == 2 * len(GAMMAS), f"{loop.height} loop-vs-replay rows")
    greedy = loop.filter(loop["decoding"] == "greedy")
    if not low_precision(s):
        expect(all(greedy["rounds_identical"]) and all(greedy["output_equals_target"]),
               f"greedy loop vs replay: {greedy.select('gamma', 'rounds_identical', 'output_equals_target').rows()}")
    expect(tables["summary"].height >= 2 * len(GAMMAS), f"{tables['summary'].height} summary rows")
    names = {"summary": "summary.csv", "per_position": "per_position.csv", "cost": "cost_model.csv",
             "loop": "loop_vs_replay.csv", "distillation": "distillation.csv"}
    for key, fname in names.items():
        write_text(tables[key].write_csv(float_precision=6), s.state["art"] / fname)
    return {"summary_rows": tables["summary"].height, "distillation_rows": tables["distillation"].height,
            "note": f"{tables['summary'].height} summary rows, {tables['distillation'].height} distillation rows"}


def report_check(s: Smoke) -> dict:
    from types import SimpleNamespace

    from specalign.artifacts import write_text
    from specalign.report import build_report

    art = s.state["art"]
    inputs = SimpleNamespace(summary=art / "summary.csv", loop=art / "loop_vs_replay.csv", cost=art / "cost_model.csv",
                             distillation=art / "distillation.csv", stats=[art / "draft__target.stats.json"], clips=[])
    md, disagreements = build_report(runs(s), inputs)
    for want in ("# specalign report", "## The real draft-verify loop against the replay", "draft__target",
                 "smoke · draft → target · greedy"):
        expect(want in md, f"the report lacks {want!r}")
    if s.state.get("comparisons"):
        expect("## Distillation: before and after" in md, "the report lacks the distillation section")
    write_text(md, Path(s.args.out) / "gpu_smoke_report.md")
    return {"report_chars": len(md), "note": f"{len(md)} characters, {len(disagreements.splitlines())} disagreement lines"}


# ---------------------------------------------------------------------------------- main
def environment(args) -> dict:
    import transformers

    env = {"device": args.device, "dtype": args.dtype, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "platform": platform.platform()}
    for name in ("torchao", "peft", "polars", "av", "mslk"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or without a version: recorded as such
            env[name] = None
    if args.device.startswith("cuda"):
        env["device_name"] = torch.cuda.get_device_name(torch.device(args.device))
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="torch device (default cuda; CI: cpu)")
    ap.add_argument("--dtype", help="default bfloat16 on cuda (the real configs'), float32 elsewhere")
    ap.add_argument("--out", default=os.environ.get("OUT") or "bench_out", help="where gpu_smoke.json goes")
    ap.add_argument("--samples", type=int, default=6, help="evaluated (test) clips")
    ap.add_argument("--train", type=int, default=8, help="train clips (distillation)")
    ap.add_argument("--new-tokens", type=int, default=10, help="max_new_tokens of every decoding")
    ap.add_argument("--train-steps", type=int, default=40, help="demo training steps of the target and the draft")
    ap.add_argument("--distill-steps", type=int, default=8)
    args = ap.parse_args(argv)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.dtype not in LOGIT_TOL:
        ap.error(f"--dtype {args.dtype}: one of {', '.join(LOGIT_TOL)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"FAIL device: --device {args.device}, but torch {torch.__version__} sees no CUDA device", flush=True)
        print("gpu_smoke: 0 passed, 1 failed, 0 skipped", flush=True)
        return 1
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    s = Smoke(args)
    env = environment(args)
    print(f"gpu_smoke on {env['device_name']} ({args.device}, {args.dtype}); torch {env['torch']}, "
          f"transformers {env['transformers']}, torchao {env['torchao']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as tmp:
        s.state["tmp"] = tmp
        s.run("assets", lambda: build_assets(s))
        s.run("load_backends", lambda: load_models(s), needs=("assets",))
        s.run("generate_batched", lambda: generate_check(s), needs=("load_backends",))
        s.run("resource_plan", lambda: plan_check(s), needs=("generate_batched",))
        s.run("score_greedy", lambda: score_check(s, False), needs=("generate_batched",))
        s.run("score_sampled", lambda: score_check(s, True), needs=("generate_batched",))
        s.run("ranks", lambda: ranks_check(s), needs=("score_greedy",))
        s.run("tree_replay", lambda: tree_replay_check(s), needs=("ranks",))
        s.run("score_ablation", lambda: ablation_check(s), needs=("score_greedy",))
        draft = ("draft", "dprompts", "tmap")
        s.run("speculative_greedy", lambda: loop_check(s, *(s.state[k] for k in draft), "draft", False,
                                                       s.state["scores_greedy"], write=True), needs=("score_greedy",))
        s.run("speculative_sampled", lambda: loop_check(s, *(s.state[k] for k in draft), "draft", True, write=True),
              needs=("generate_batched",))
        s.run("speculative_sampled_self", lambda: sampled_self_check(s), needs=("generate_batched",))
        s.run("timing", lambda: timing_check(s), needs=("generate_batched",))
        s.run("timing_summary", lambda: timing_summary_check(s), needs=("timing",))
        for kind in ("int8", "int4", "truncated"):
            s.run(f"self_draft_{kind}", lambda kind=kind: self_draft_check(s, kind), needs=("generate_batched",))
        for loss, lora_r in (("ce", 4), ("kl", None), ("tv", 4)):
            name = f"distill_{loss}" + ("_lora" if lora_r else "")
            s.run(name, lambda loss=loss, lora_r=lora_r: distill_check(s, loss, lora_r), needs=("score_greedy",))
        s.run("acceptance_tables", lambda: tables_check(s),
              needs=("score_greedy", "score_sampled", "speculative_greedy", "speculative_sampled"))
        s.run("report", lambda: report_check(s), needs=("acceptance_tables",))
    counts = {k: sum(r["status"] == k for r in s.records) for k in ("PASS", "FAIL", "SKIP")}
    total = time.perf_counter() - T_START
    result = {**env, "checks": s.records, "passed": counts["PASS"], "failed": counts["FAIL"],
              "skipped": counts["SKIP"], "seconds": round(total, 1)}
    (Path(args.out) / "gpu_smoke.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"gpu_smoke: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
          f"in {total:.0f}s (details: {Path(args.out) / 'gpu_smoke.json'})", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
