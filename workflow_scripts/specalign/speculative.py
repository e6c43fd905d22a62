"""The real draft-verify loop (greedy and speculative sampling) with KV-cache rollback.

Each model keeps its own prompt, inputs and cache. A round starting after s emitted
tokens:

1. g = min(gamma, max_new_tokens - s - 1) (0 allowed: the target just emits a token).
   This is the rule of docs/architecture.md "Greedy round replay", shared with
   `replay.replay_rounds`.
2. The draft proposes exactly g tokens from its cache; it never stops at its own EOS,
   so the drafted count depends only on s. Greedy: argmax over the draft's logits, then
   d2t_first (= argmax of q_T's support). Sampling, `draft_sampling="sample"`: a draft id
   x ~ q (the processed draft distribution, draft ids), proposed as d2t_first[x]; this is
   exactly a draw from q_T (the push-forward) plus a "null" proposal with the mass of
   unmapped draft ids. Sampling, `draft_sampling="argmax"` (what vLLM V1, SGLang and
   TensorRT-LLM do by default): the draft's argmax, proposed as d2t_first[argmax]; the
   proposal distribution is then one-hot at that token (at the null proposal when unmapped).
   After proposing target token y' the draft is fed t2d(y') (the SAME inverse-map rule
   the teacher-forced scoring pass uses), never its own id blindly, so its context is
   always `draft_prompt + t2d(target tokens)`. A null proposal (unmapped draft id) ends
   the drafting: the target can never accept it, so the draft does no more work, and
   the round still counts g drafted tokens.
3. The target verifies [pending + proposals] in ONE forward pass. Round 0's pending is
   the whole target prompt (with its model inputs): round 0's verify_ms includes the
   target prefill and its draft_ms the draft prefill. Later rounds' pending is the last
   emitted token.
   Greedy: accept the longest prefix where the proposal equals the target's argmax.
   Sampling: accept y' with probability min(1, p(y')/q_T(y')); on rejection emit a draw
   from norm(max(0, p - q_T)) (a null proposal is always rejected: same residual). With
   argmax drafting q_T is one-hot, and the SAME rule reads: accept y' with probability
   p(y'), on rejection draw from p with y' removed and renormalised (vLLM's rule); both are
   lossless (the output is distributed as the target's sampling: tests/test_speculative.py).
   If all g are accepted, emit the bonus token (argmax / draw from p at the last
   position). An accepted EOS ends the stream with no bonus; so does an emitted EOS or
   reaching max_new_tokens.
4. Rollback: the target cache is cropped by the rejected count (it keeps the accepted
   proposals; the emitted correction/bonus becomes next round's pending token). The
   draft cache is cropped back to the end of the accepted prefix - it never keeps a
   rejected proposal - and the correction/bonus is fed to it next round via t2d.

Exactness: under greedy decoding the output equals the target's greedy output, and the
per-round accepted counts equal `replay.replay_rounds` on the teacher-forced matches
(tests/test_speculative.py; a broken draft rollback keeps the output right but breaks
the counts, which is why the counts are the test).

`verify_flip` (greedy, check_flips): after the loop the target is replayed step by step
(one token per forward, with cache) along the output; a round is flagged when the
step-by-step argmax at any of its emitted positions differs from the token the chunked
verification emitted there. fp32 on a CPU shows none; bf16 on a GPU may.
`draft_flip` is the draft's side of the same check: the draft teacher-forced along the output in
ONE pass (scoring's pass), its argmax at each position compared with the proposals the loop's
draft made step by step from the same prefix (proposals 0..a of each round). So when a GPU run
shows `rounds_identical = false` against the replay, the two flags say which model's numerics
flipped (the replay's matches come from one-pass passes of both). A sampled decoding with
argmax drafting gets `draft_flip` too (its proposals are the draft's argmax, so scoring's
`target_prob_of_draft_argmax` is their acceptance only where they agree); `verify_flip` stays
False there (a sampled output has no target argmax to compare).

The target-only baseline of the workflow's loop jobs is the target's own generation-stage
stream (`stream_time_ms`): decoding every sample again per gamma would double the target time.

Timing context: `run_speculative` first runs the loop on the first pair for two tokens, untimed and
discarded (`warm_up_loop`), so neither model's device start-up or kernel choice lands in the first
sample's draft_ms / verify_ms; every row records the device (`generation.device_name`) and torch's
CPU thread count.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import torch

from .backends.base import Backend, PromptInputs
from .generation import _sync, device_name, generate, processed_distribution, sample_from, sample_generator
from .specs import Decoding

# How the draft proposes under a sampled decoding (speculative.draft_sampling); greedy always drafts argmax.
DRAFT_SAMPLINGS = ("sample", "argmax")


def effective_draft_sampling(decoding: Decoding, draft_sampling: str = "sample") -> str:
    """What the loop really does: "argmax" for a greedy decoding (its draft is argmax already,
    whatever the setting), else the setting, checked."""
    if draft_sampling not in DRAFT_SAMPLINGS:
        raise ValueError(f"draft_sampling must be one of {', '.join(DRAFT_SAMPLINGS)}, got {draft_sampling!r}")
    return "argmax" if decoding.greedy else draft_sampling


def _crop_target_cache(cache, n_remove: int) -> None:
    """Remove the last `n_remove` tokens (DynamicCache.crop takes a negative count)."""
    if n_remove > 0:
        cache.crop(-n_remove)


def _crop_draft_cache(cache, n_remove: int) -> None:
    """Same as the target's; a separate function so a test can break only the draft side."""
    if n_remove > 0:
        cache.crop(-n_remove)


def _t2d(token_map, target_id: int) -> list[int]:
    return [int(x) for x in token_map.t2d(int(target_id))]


def _check_croppable(cache, who: str) -> None:
    if getattr(cache, "is_croppable", True) is False:
        raise ValueError(f"the {who}'s KV cache cannot be cropped (sliding-window or linear-attention layers); "
                         "the speculative loop needs rollback")


@torch.no_grad()
def speculative_decode(draft: Backend, target: Backend, draft_prompt: PromptInputs, target_prompt: PromptInputs,
                       token_map, gamma: int, decoding: Decoding, max_new_tokens: int | None = None,
                       generator: torch.Generator | None = None, check_flips: bool = True,
                       draft_sampling: str = "sample"):
    """Run the loop for one sample. Returns (output target ids, rounds).

    Each round is a dict with the "rounds" schema's per-round fields: round, start, draft_sampling,
    drafted, accepted, emitted, tokens, draft_ms, verify_ms, verify_flip (add sample_id,
    gamma and target_only_ms with `rounds_rows`). Sampling uses `generator`, or one seeded
    from (decoding.seed, sample_id) when None. `draft_sampling`: "sample" (x ~ q) or "argmax"
    (the module doc); a greedy decoding ignores it.
    """
    if isinstance(gamma, bool) or int(gamma) != gamma or gamma < 1:
        raise ValueError(f"gamma must be an integer >= 1, got {gamma!r}")
    gamma = int(gamma)
    max_new = decoding.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    if max_new < 1:
        raise ValueError("max_new_tokens must be >= 1")
    greedy = decoding.greedy
    drafting = effective_draft_sampling(decoding, draft_sampling)
    if not greedy and generator is None:
        generator = sample_generator(decoding, target_prompt.sample_id)
    vt, vd = target.text_vocab_size, draft.text_vocab_size
    d2t = token_map.first_ids(vd, vt)
    d2t_list = d2t.tolist()
    eos = target.eos_token_id

    dcache, tcache = draft.new_cache(), target.new_cache()
    _check_croppable(dcache, "draft")
    _check_croppable(tcache, "target")
    # draft state: cache = draft_prompt + t2d(emitted tokens) minus `dpending` (not yet fed);
    # `dlogits` = the draft's logits at the end of its cache.
    dpending: list[int] = draft_prompt.input_ids.reshape(-1).tolist()
    d_inputs = draft_prompt.model_inputs or None
    dlogits = None
    # target state: cache = target prompt + emitted tokens minus `tpending`.
    tpending: list[int] = target_prompt.input_ids.reshape(-1).tolist()
    t_inputs = target_prompt.model_inputs or None

    out: list[int] = []
    rounds: list[dict] = []
    proposed: list[list[int]] = []  # per round: the proposals the draft made (for the draft flip check)
    s = 0
    ended = False
    while not ended:
        g = max(0, min(gamma, max_new - s - 1))

        # ---- draft: exactly g proposals (target ids; -1 = null proposal)
        props: list[int] = []
        len_at: list[int] = []       # draft cache length when proposal i was made
        logits_at: list = []         # draft logits proposal i was made from
        q_at: list = []              # sampling: q_T of proposal i (target ids, float64)
        _sync(draft.device)
        t0 = time.perf_counter()
        for i in range(g):
            if dpending:
                dlogits = draft.forward(torch.tensor([dpending]), cache=dcache, model_inputs=d_inputs,
                                        logits_to_keep=1)[0, -1]
                d_inputs, dpending = None, []
            len_at.append(dcache.get_seq_length())
            logits_at.append(dlogits)
            if drafting == "argmax":
                x = int(dlogits.argmax())  # on the device, as scoring's argmax (ties must agree)
                if not greedy:
                    q_at.append(_one_hot(d2t_list[x], vt))
            else:
                qd = processed_distribution(dlogits.double().cpu(), decoding)
                q_at.append(token_map.push_forward(qd, d2t, vt))
                x = sample_from(qd, generator)
            y = d2t_list[x]
            props.append(y)
            if y < 0:
                break
            if i < g - 1:
                dpending = _t2d(token_map, y)
        _sync(draft.device)
        draft_ms = (time.perf_counter() - t0) * 1000.0
        made = len(props)
        k = made if (made == 0 or props[-1] >= 0) else made - 1   # mapped proposals the target sees
        props += [-1] * (g - made)

        # ---- target: verify pending + the k mapped proposals in one pass
        inp = tpending + props[:k]
        _sync(target.device)
        t0 = time.perf_counter()
        # only the last k + 1 rows are needed (round 0's pending is the whole prompt)
        P = target.forward(torch.tensor([inp]), cache=tcache, model_inputs=t_inputs, logits_to_keep=k + 1)[0]
        t_inputs = None                                 # P[i] predicts the token at s + i
        a = 0
        emitted: list[int] = []
        if greedy:
            am = P.argmax(-1).tolist()
            while a < k and props[a] == am[a]:
                emitted.append(props[a])
                a += 1
                if props[a - 1] == eos:
                    ended = True
                    break
            if not ended:
                emitted.append(int(am[a]))
        else:
            pp = processed_distribution(P.double().cpu(), decoding)
            rejected = False
            while a < k:
                y = props[a]
                u = torch.rand((), generator=generator, dtype=torch.float64)
                if float(u) * float(q_at[a][y]) < float(pp[a, y]):
                    emitted.append(y)
                    a += 1
                    if y == eos:
                        ended = True
                        break
                else:
                    rejected = True
                    break
            if not ended:
                if rejected or a < g:   # rejected proposal, or the null proposal at a
                    resid = (pp[a] - q_at[a]).clamp(min=0)
                    emitted.append(sample_from(resid if float(resid.sum()) > 0 else pp[a], generator))
                else:                   # all g accepted: bonus token
                    emitted.append(sample_from(pp[a], generator))
        _sync(target.device)
        verify_ms = (time.perf_counter() - t0) * 1000.0

        if not ended and emitted[-1] == eos:
            ended = True
        rounds.append(dict(round=len(rounds), start=s, draft_sampling=drafting, drafted=g, accepted=a,
                           emitted=len(emitted), tokens=list(emitted), draft_ms=draft_ms, verify_ms=verify_ms, verify_flip=False,
                           draft_flip=False))
        proposed.append(props[:made])
        out.extend(emitted)
        s += len(emitted)
        if s >= max_new:
            ended = True
        if ended:
            break

        # ---- rollback
        _crop_target_cache(tcache, k - a)
        tpending = [emitted[-1]]
        if made:
            if a < made:
                # made proposals 0..made-1; the cache holds the feeds of 0..made-2. Keep the
                # accepted prefix 0..a-1: back to where proposal a was made.
                _crop_draft_cache(dcache, dcache.get_seq_length() - len_at[a])
                dlogits = logits_at[a]
                dpending = []
            else:
                # all g accepted: the last proposal was never fed
                dpending = _t2d(token_map, props[made - 1])
        dpending = dpending + _t2d(token_map, emitted[-1])

    if drafting == "argmax" and check_flips and out:
        # the target's side needs an argmax output (greedy); the draft's side any argmax drafting
        flips = step_by_step_flips(target, target_prompt, out) if greedy else None
        one_pass = draft_one_pass_proposals(draft, draft_prompt, out, token_map, d2t)
        for r, props in zip(rounds, proposed):
            if flips is not None:
                r["verify_flip"] = any(flips[r["start"]: r["start"] + r["emitted"]])
            # proposals 0..a were made from the output's own prefix (later ones from a rejected one)
            r["draft_flip"] = any(props[i] != one_pass[r["start"] + i]
                                  for i in range(min(len(props), r["accepted"] + 1)) if r["start"] + i < len(out))
    return out, rounds


def _one_hot(target_id: int, vt: int) -> torch.Tensor:
    """The proposal distribution of an argmax draft in target ids (float64): one-hot at the proposed
    token, all zeros for a null proposal (its mass sits on "no target token")."""
    q = torch.zeros(vt, dtype=torch.float64)
    if target_id >= 0:
        q[target_id] = 1.0
    return q


def draft_one_pass_proposals(draft: Backend, draft_prompt: PromptInputs, output: Sequence[int], token_map,
                             first_ids: torch.LongTensor) -> list[int]:
    """What the draft proposes at each position of `output` (target ids, -1 unmapped) given the
    output's prefix, from ONE teacher-forced pass (scoring's): the loop's step-by-step proposals
    along the accepted prefix must equal these, unless low-precision numerics flip an argmax."""
    from .scoring import teacher_forced_draft

    return first_ids[teacher_forced_draft(draft, draft_prompt, output, token_map).argmax(-1).cpu()].tolist()


@torch.no_grad()
def step_by_step_flips(target: Backend, target_prompt: PromptInputs, output: Sequence[int]) -> list[bool]:
    """flips[j]: the target's argmax at position j, decoding one token per forward along
    `output`, differs from output[j] (what the chunked greedy verification emitted)."""
    cache = target.new_cache()
    logits = target.forward(target_prompt.input_ids.reshape(1, -1), cache=cache,
                            model_inputs=target_prompt.model_inputs or None, logits_to_keep=1)[0, -1]
    flips = []
    for j, t in enumerate(output):
        flips.append(int(logits.argmax()) != int(t))
        if j + 1 < len(output):
            logits = target.forward(torch.tensor([[int(t)]]), cache=cache)[0, -1]
    return flips


def stream_time_ms(prefill_ms: float, decode_ms: Sequence[float], n_tokens: int) -> float:
    """Plain decoding time of `n_tokens` tokens from a generated stream's own timings: its prefill
    plus the decode steps of tokens 1..n-1 (decode_ms[0] is 0: token 0 comes from the prefill).
    Past the stream's end each further token costs its mean decode step.

    The workflow's target-only baseline: the target's generation stage already decoded every
    sample plainly on the same device, so the loop jobs (one per gamma) need not decode it again."""
    if n_tokens < 1:
        return 0.0
    steps = list(decode_ms[1:n_tokens])
    extra = n_tokens - 1 - len(steps)
    if extra > 0:
        mean = sum(decode_ms[1:]) / max(1, len(decode_ms) - 1)
        steps.append(extra * mean)
    return float(prefill_ms + sum(steps))


def target_only_ms(target: Backend, target_prompt: PromptInputs, n_tokens: int) -> float:
    """Wall time of plain greedy target decoding of `n_tokens` tokens from the same prompt
    (prefill + decode steps, EOS ignored so exactly n_tokens are made), with
    `generation.generate`: the baseline for the loop's sum(draft_ms + verify_ms)."""
    if n_tokens < 1:
        return 0.0
    dec = Decoding(name="target_only", do_sample=False, max_new_tokens=int(n_tokens))
    # no warm-up: the target has just run this sample's loop on the same device
    g = generate(target, [target_prompt], dec, ignore_eos=True, warmup=False)[0]
    return float(g.prefill_ms + sum(g.decode_ms))


def loop_device(draft: Backend, target: Backend) -> str:
    """The "rounds" artifact's `device`: one name, or both when the models sit on different devices."""
    d, t = device_name(draft.device), device_name(target.device)
    return t if d == t else f"draft {d}, target {t}"


def rounds_rows(sample_id: str, gamma: int, rounds: Sequence[dict], target_only: float = float("nan"),
                device: str = "", torch_threads: int = 0) -> list[dict]:
    """Complete per-round dicts into rows of the "rounds" artifact."""
    return [dict(r, sample_id=sample_id, gamma=int(gamma), target_only_ms=float(target_only), device=device,
                 torch_threads=int(torch_threads)) for r in rounds]


def warm_up_loop(draft: Backend, target: Backend, draft_prompt: PromptInputs, target_prompt: PromptInputs,
                 token_map, gamma: int, decoding: Decoding, draft_sampling: str = "sample") -> None:
    """The loop on one pair for two tokens, discarded: both models' prefill, a draft proposal, a
    verification and a rollback run once through the timed code before any timing is kept.
    Sampling is unaffected: each `speculative_decode` call seeds its own generator."""
    short = dataclasses.replace(decoding, max_new_tokens=min(2, decoding.max_new_tokens))
    speculative_decode(draft, target, draft_prompt, target_prompt, token_map, gamma, short, check_flips=False,
                       draft_sampling=draft_sampling)


def speculative_sample(draft: Backend, target: Backend, draft_prompt: PromptInputs, target_prompt: PromptInputs,
                       token_map, gamma: int, decoding: Decoding, max_new_tokens: int | None = None,
                       check_flips: bool = True, measure_target_only: bool = True,
                       target_stream: tuple[float, Sequence[float]] | None = None,
                       draft_sampling: str = "sample") -> list[dict]:
    """One sample end to end: the loop, then the target-only time of its output; "rounds" rows.

    The target-only time comes from `target_stream` (prefill_ms, decode_ms of the target's own
    generated stream, `stream_time_ms`) when given, else it is measured here by decoding again
    (`measure_target_only`), else NaN."""
    out, rounds = speculative_decode(draft, target, draft_prompt, target_prompt, token_map, gamma, decoding,
                                     max_new_tokens, check_flips=check_flips, draft_sampling=draft_sampling)
    if target_stream is not None:
        base = stream_time_ms(target_stream[0], target_stream[1], len(out))
    else:
        base = target_only_ms(target, target_prompt, len(out)) if measure_target_only else float("nan")
    return rounds_rows(target_prompt.sample_id, gamma, rounds, base, loop_device(draft, target),
                       torch.get_num_threads())


def rounds_table(rows: Sequence[dict]):
    from .artifacts import table

    return table("rounds", rows)


def run_speculative(draft: Backend, target: Backend, pairs: Sequence[tuple[PromptInputs, PromptInputs]], token_map,
                    gamma: int, decoding: Decoding, max_new_tokens: int | None = None, check_flips: bool = True,
                    measure_target_only: bool = True, progress: Callable[[int, int], None] | None = None,
                    target_streams: dict[str, tuple[float, Sequence[float]]] | None = None, warmup: bool = True,
                    draft_sampling: str = "sample"):
    """The "rounds" artifact for (draft_prompt, target_prompt) pairs (no error handling: a rule
    that skips bad samples calls `speculative_sample` per sample itself). `target_streams`:
    sample_id -> (prefill_ms, decode_ms) of the target's generated stream, the target-only
    baseline (see `speculative_sample`). `warmup`: first run `warm_up_loop` on the first pair.
    `draft_sampling`: how a sampled decoding's draft proposes ("sample" | "argmax")."""
    effective_draft_sampling(decoding, draft_sampling)  # a bad setting fails before any model runs
    if warmup and pairs:
        warm_up_loop(draft, target, *pairs[0], token_map, gamma, decoding, draft_sampling)
    rows: list[dict] = []
    for i, (dp, tp) in enumerate(pairs, 1):
        stream = target_streams.get(tp.sample_id) if target_streams is not None else None
        rows.extend(speculative_sample(draft, target, dp, tp, token_map, gamma, decoding, max_new_tokens,
                                       check_flips, measure_target_only, target_stream=stream,
                                       draft_sampling=draft_sampling))
        if progress is not None:
            progress(i, len(pairs))
    return rounds_table(rows)
