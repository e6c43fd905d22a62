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
- `target_prob_of_draft_argmax` = p_j(draft_token) with p_j the target's processed
  distribution, 0 when draft_token is unmapped: the probability that an engine drafting the
  draft's argmax (vLLM V1, SGLang, TensorRT-LLM; `speculative.draft_sampling: argmax`)
  has its proposal accepted at this prefix. Its mean over the stream is `alpha_argmax`,
  beside Leviathan's alpha (the mean of summin). Neither bounds the other in general: a
  confident draft whose argmax is the target's mode beats sum-min, a draft close to p
  in distribution with a different mode loses to it. Greedy: `match`, exactly (as summin).
- `target_rank` = the rank of y_j among the draft's proposals: the index, in the draft's
  DRAFT-id order (descending logit, ties to the lower id: `draft_order`, the order the tree loop
  expands, and the one whose first element is torch's argmax), of the first draft id whose
  d2t_first is y_j; `rank_k` when none of the first `rank_k` is (or y_j is unreachable).
  So target_rank == 0 iff match. Duplicates: several draft ids may propose one target id (their
  first target ids coincide); only the first of them in draft order counts, and a later one is a
  duplicate proposal that the tree loop (`tree_loop.py`) never accepts (as an unmapped draft id
  it occupies its rank and proposes nothing new), so the rank of y_j counts every draft id
  before it, duplicates and unmapped ones included. This is what makes the tree replay exact
  (trees.py). Across vocabularies the rank is over the draft's first-token projection.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from .backends.base import Backend, PromptInputs
from .generation import processed_distribution, token_logprobs
from .specs import Decoding


def draft_feed(token_map, target_ids: Iterable[int]) -> list[tuple[int, ...]]:
    """The draft ids fed for each target token (t2d); () when the draft cannot write it."""
    return [tuple(int(x) for x in token_map.t2d(int(t))) for t in target_ids]


@torch.no_grad()
def teacher_forced_draft(draft: Backend, draft_prompt: PromptInputs, target_stream: Sequence[int],
                         token_map) -> torch.Tensor:
    """The draft's logits [n, Vd] (on its device) predicting each of the n target tokens, from ONE
    pass over `draft_prompt + t2d(y_0) + ... + t2d(y_{n-2})` (see the module doc); only the rows
    from the end of the prompt on are materialised (logits_to_keep)."""
    y = [int(t) for t in target_stream]
    d_prompt = draft_prompt.input_ids.reshape(-1).to(torch.long)
    feeds = draft_feed(token_map, y)
    read, fed = [], []
    at = 0  # row of the kept logits, which start at the prompt's last position
    for j in range(len(y)):
        read.append(at)
        if j < len(y) - 1:
            fed.extend(feeds[j])
            at += len(feeds[j])
    d_ids = torch.cat([d_prompt, torch.tensor(fed, dtype=torch.long)])[None]
    d_logits = draft.forward(d_ids, model_inputs=draft_prompt.model_inputs or None, logits_to_keep=len(fed) + 1)[0]
    return d_logits[torch.tensor(read, device=d_logits.device)]


def argmax_acceptance(p: torch.Tensor, draft_token: torch.Tensor) -> torch.Tensor:
    """p[j, draft_token[j]] per row of the target's distributions p [n, Vt]; 0 where draft_token[j]
    is -1 (unmapped: a null proposal, always rejected). The acceptance probability of a proposal
    drafted as the draft's argmax (a one-hot q: min(1, p(x) / 1))."""
    mapped = draft_token >= 0
    return p.gather(-1, draft_token.clamp(min=0)[:, None])[:, 0] * mapped.to(p.dtype)


RANK_K = 16  # default cap of target_rank (config `scoring.rank_k`)


def draft_order(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The draft ids of the k largest logits per row, in descending order, ties to the lower id
    (a stable sort): element 0 is torch's argmax (documented to return the first maximal index),
    so rank 0 is the chain's proposal. Sorted on the logits' device, like the loop's argmax."""
    k = min(int(k), logits.shape[-1])
    return torch.sort(logits, dim=-1, descending=True, stable=True).indices[..., :k]


def target_ranks(q_logits: torch.Tensor, d2t: torch.Tensor, y: torch.Tensor, rank_k: int) -> torch.Tensor:
    """target_rank per row (module doc): the index of the first of the draft's top `rank_k` draft ids
    (`draft_order`) whose first target id d2t is y[j]; `rank_k` when none is. LongTensor [n] (CPU)."""
    if isinstance(rank_k, bool) or int(rank_k) != rank_k or rank_k < 1:
        raise ValueError(f"scoring.rank_k must be an integer >= 1, got {rank_k!r}")
    order = draft_order(q_logits, int(rank_k)).cpu()
    hit = d2t[order] == y[:, None]
    first = hit.to(torch.int8).argmax(-1)   # the first True (argmax returns the first maximal index)
    return torch.where(hit.any(-1), first, torch.full_like(first, int(rank_k)))


@torch.no_grad()
def score_sample(draft: Backend, target: Backend, draft_prompt: PromptInputs, target_prompt: PromptInputs,
                 target_stream: Sequence[int], token_map, decoding: Decoding,
                 max_new_tokens: int | None = None, rank_k: int = RANK_K) -> list[dict]:
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
    d2t = token_map.first_ids(vd, vt)

    # target: one pass over prompt + y[:-1]; its last n rows predict y_0 .. y_{n-1}
    t_prompt = target_prompt.input_ids.reshape(-1).to(torch.long)
    t_ids = torch.cat([t_prompt, torch.tensor(y[:-1], dtype=torch.long)])[None]
    p_logits = target.forward(t_ids, model_inputs=target_prompt.model_inputs or None,
                              logits_to_keep=n)[0].double().cpu()

    q_dev = teacher_forced_draft(draft, draft_prompt, y, token_map)
    argmax = q_dev.argmax(-1).cpu()  # on the device, like the loop (tie-breaking must agree)
    q_logits = q_dev.double().cpu()

    y_t = torch.tensor(y, dtype=torch.long)
    draft_token = d2t[argmax]
    match = draft_token == y_t
    rank = target_ranks(q_dev, d2t, y_t, rank_k)
    if bool(((rank == 0) != match).any()):  # a device whose sort and argmax break ties differently
        raise RuntimeError(f"sample {target_prompt.sample_id}: the draft's stable sort and its argmax disagree "
                           "on a tie; target_rank would not be 0 exactly where match is")
    target_lp = token_logprobs(p_logits, decoding).gather(-1, y_t[:, None])[:, 0]
    if decoding.greedy:
        q_t = token_map.push_forward(torch.softmax(q_logits, -1), d2t, vt)
        summin = match.double()
        mapped = token_map.reachable_mask(vt)[y_t].double()
    else:
        q_t = token_map.push_forward(processed_distribution(q_logits, decoding), d2t, vt)
        p = processed_distribution(p_logits, decoding)
        summin = torch.minimum(p, q_t).sum(-1)
        mapped = (p * token_map.reachable_mask(vt)).sum(-1)
    draft_lp = torch.log(q_t.gather(-1, y_t[:, None])[:, 0])
    # greedy: from the stream token, like summin (a near-tie flip cannot make it disagree with match)
    argmax_prob = match.double() if decoding.greedy else argmax_acceptance(p, draft_token)

    sid = target_prompt.sample_id
    eos = target.eos_token_id
    return [dict(sample_id=sid, position=j, target_token=y[j], draft_token=int(draft_token[j]),
                 draft_argmax_id=int(argmax[j]), match=bool(match[j]), draft_logprob=float(draft_lp[j]),
                 target_logprob=float(target_lp[j]), summin=float(summin[j]), mapped_mass=float(mapped[j]),
                 target_prob_of_draft_argmax=float(argmax_prob[j]), target_rank=int(rank[j]), is_eos=y[j] == eos,
                 max_new_tokens=max_new_tokens) for j in range(n)]


def score_table(draft: Backend, target: Backend, items: Iterable[tuple[PromptInputs, PromptInputs, Sequence[int]]],
                token_map, decoding: Decoding, max_new_tokens: int | None = None,
                progress: Callable[[int, int], None] | None = None, rank_k: int = RANK_K):
    """The "scores" artifact for (draft_prompt, target_prompt, target_stream) items, one sample
    per pass pair (no batching: each pass already covers the whole stream)."""
    from .artifacts import table

    items = list(items)
    rows: list[dict] = []
    for k, (dp, tp, stream) in enumerate(items, 1):
        rows.extend(score_sample(draft, target, dp, tp, stream, token_map, decoding, max_new_tokens,
                                rank_k))
        if progress is not None:
            progress(k, len(items))
    return table("scores", rows)
