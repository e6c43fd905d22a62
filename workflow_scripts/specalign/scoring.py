"""Teacher-forced scoring of a draft along a target stream (the "scores" artifact).

For one sample and the target's stream y (target ids, length N):

- ONE target pass over `target_prompt + y[:-1]` gives p_j = p(. | target inputs, y_<j)
  for every j (read at prompt length - 1 + j).
- ONE draft pass over `draft_prompt + t2d(y_0) + t2d(y_1) + ...` (each target token
  fed to the draft through the inverse map `token_map.t2d`). The draft's prediction
  for target position j is read at the position just before the first draft id of
  y_j, i.e. at the end of `draft_prompt + t2d(y_<j)`. Where `t2d(y_j)` is empty (the
  draft cannot write y_j) the draft is fed nothing for it: its context simply does not
  advance, so positions j and j+1 read the same draft position. The speculative loop
  feeds the draft by the same rule, which is what makes the greedy replay exact.

Per position j (in TARGET ids):
- `draft_argmax_id` = argmax of the draft logits (draft ids);
  `draft_token` = d2t_first[argmax] (-1: unmapped); `match` = draft_token == y_j.
- q_T,j: the draft's PROCESSED distribution (`generation.processed_distribution`, in
  draft ids) pushed to target ids through d2t_first (the mass of every draft id that
  proposes a target id is summed there; unmapped draft ids' mass goes nowhere, so q_T
  may sum to < 1 - that mass is a proposal the target always rejects).
- `summin` = sum_x min(p_j(x), q_T,j(x)) with p_j the target's processed distribution:
  the probability that speculative sampling accepts the draft's token at this prefix
  (Leviathan beta). Greedy: p_j is one-hot at y_j and q_T one-hot at draft_token, so
  `summin` = 1[match] exactly (defined from the stream token, not re-derived from the
  argmax, so a near-tie flip cannot make the two disagree).
- `target_logprob` / `draft_logprob` = log p_j(y_j) / log q_T,j(y_j) under the
  distribution of `generation.token_logprobs`: processed when sampling (-inf outside
  the nucleus), the raw temperature-1 softmax when greedy (a one-hot would only say
  0 / -inf). draft_logprob is -inf where y_j is unreachable from the draft.
- `mapped_mass` = p_j mass on target ids the draft can propose (the set of
  d2t_first values); greedy: 1[y_j reachable]. Upper bound of summin, row by row.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from .generation import Decoding, processed_distribution, token_logprobs
from .models import Backend, PromptInputs


def d2t_first_table(token_map, draft_width: int, target_width: int) -> torch.LongTensor:
    """d2t_first as a LongTensor[draft_width] on the CPU: -1 pads draft ids the map does not
    cover (e.g. a padded logits width); ids beyond the target's logits are an error."""
    d = torch.as_tensor(token_map.d2t_first(), dtype=torch.long).reshape(-1).cpu()
    if len(d) < draft_width:
        d = torch.cat([d, torch.full((draft_width - len(d),), -1, dtype=torch.long)])
    d = d[:draft_width]
    if (d >= target_width).any():
        bad = int(d.argmax())
        raise ValueError(f"translation map sends draft id {bad} to target id {int(d[bad])}, beyond the "
                         f"target's {target_width} logits")
    return d


def push_forward(q: torch.Tensor, d2t: torch.LongTensor, target_width: int) -> torch.Tensor:
    """q [..., Vd] (draft ids) -> [..., Vt]: each target id gets the mass of the draft ids
    whose first target id it is. Unmapped draft ids (-1) contribute nothing."""
    mapped = d2t >= 0
    out = torch.zeros(*q.shape[:-1], target_width, dtype=q.dtype, device=q.device)
    idx = d2t[mapped].to(q.device)
    return out.index_add_(q.dim() - 1, idx, q[..., mapped.to(q.device)])


def reachable_targets(d2t: torch.LongTensor, target_width: int) -> torch.BoolTensor:
    reach = torch.zeros(target_width, dtype=torch.bool)
    reach[d2t[d2t >= 0]] = True
    return reach


def draft_feed(token_map, target_ids: Iterable[int]) -> list[tuple[int, ...]]:
    """The draft ids fed for each target token (t2d); () when the draft cannot write it."""
    return [tuple(int(x) for x in token_map.t2d(int(t))) for t in target_ids]


@torch.no_grad()
def score_sample(draft: Backend, target: Backend, draft_prompt: PromptInputs, target_prompt: PromptInputs,
                 target_stream: Sequence[int], token_map, decoding: Decoding,
                 max_new_tokens: int | None = None) -> list[dict]:
    """Rows of the "scores" artifact for one sample (see the module doc)."""
    max_new_tokens = decoding.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    y = [int(t) for t in target_stream]
    n = len(y)
    if n == 0:
        return []
    if n > max_new_tokens:
        raise ValueError(f"sample {target_prompt.sample_id}: stream of {n} tokens exceeds max_new_tokens "
                         f"{max_new_tokens}")
    vt, vd = target.text_vocab_size, draft.text_vocab_size
    d2t = d2t_first_table(token_map, vd, vt)

    # target: one pass over prompt + y[:-1]
    t_prompt = target_prompt.input_ids.reshape(-1).to(torch.long)
    lt = len(t_prompt)
    t_ids = torch.cat([t_prompt, torch.tensor(y[:-1], dtype=torch.long)])[None]
    t_logits = target.forward(t_ids, model_inputs=target_prompt.model_inputs or None)[0]
    p_logits = t_logits[lt - 1: lt - 1 + n].double().cpu()

    # draft: one pass over draft prompt + t2d(y_0) + ... + t2d(y_{n-2})
    d_prompt = draft_prompt.input_ids.reshape(-1).to(torch.long)
    feeds = draft_feed(token_map, y)
    read, fed = [], []
    at = len(d_prompt) - 1
    for j in range(n):
        read.append(at)
        if j < n - 1:
            fed.extend(feeds[j])
            at += len(feeds[j])
    d_ids = torch.cat([d_prompt, torch.tensor(fed, dtype=torch.long)])[None]
    d_logits = draft.forward(d_ids, model_inputs=draft_prompt.model_inputs or None)[0]
    q_dev = d_logits[torch.tensor(read, device=d_logits.device)]
    argmax = q_dev.argmax(-1).cpu()  # on the device, like the loop (tie-breaking must agree)
    q_logits = q_dev.double().cpu()

    y_t = torch.tensor(y, dtype=torch.long)
    draft_token = d2t[argmax]
    match = draft_token == y_t
    target_lp = token_logprobs(p_logits, decoding).gather(-1, y_t[:, None])[:, 0]
    if decoding.greedy:
        q_t = push_forward(torch.softmax(q_logits, -1), d2t, vt)
        summin = match.double()
        mapped = reachable_targets(d2t, vt)[y_t].double()
    else:
        q_t = push_forward(processed_distribution(q_logits, decoding), d2t, vt)
        p = processed_distribution(p_logits, decoding)
        summin = torch.minimum(p, q_t).sum(-1)
        mapped = (p * reachable_targets(d2t, vt)).sum(-1)
    draft_lp = torch.log(q_t.gather(-1, y_t[:, None])[:, 0])

    sid = target_prompt.sample_id
    eos = target.eos_token_id
    return [dict(sample_id=sid, position=j, target_token=y[j], draft_token=int(draft_token[j]),
                 draft_argmax_id=int(argmax[j]), match=bool(match[j]), draft_logprob=float(draft_lp[j]),
                 target_logprob=float(target_lp[j]), summin=float(summin[j]), mapped_mass=float(mapped[j]),
                 is_eos=y[j] == eos, max_new_tokens=max_new_tokens) for j in range(n)]


def score_table(draft: Backend, target: Backend, items: Iterable[tuple[PromptInputs, PromptInputs, Sequence[int]]],
                token_map, decoding: Decoding, max_new_tokens: int | None = None,
                progress: Callable[[int, int], None] | None = None):
    """The "scores" artifact for (draft_prompt, target_prompt, target_stream) items, one sample
    per pass pair (no batching: each pass already covers the whole stream)."""
    from .artifacts import table

    items = list(items)
    rows: list[dict] = []
    for k, (dp, tp, stream) in enumerate(items, 1):
        rows.extend(score_sample(draft, target, dp, tp, stream, token_map, decoding, max_new_tokens))
        if progress is not None:
            progress(k, len(items))
    return table("scores", rows)
