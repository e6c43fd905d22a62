"""A real greedy tree draft-verify loop, one branch at a time: the check that proves the tree replay.

It does what a tree engine does, without its tricks (no tree attention, no KV cache): every pass
is a full forward over the model's own context, so nothing here can drift from the models.
A round starting after s emitted tokens:

1. g = min(depth, max_new_tokens - s - 1): the tree pruned to depth g (trees.py's rule).
2. Drafting: every node of the pruned tree that has children is expanded with one draft pass
   over `draft_prompt + t2d(emitted) + t2d(the node's tokens)` (the draft is fed target tokens
   through the inverse map, as the chain loop and scoring feed it). Its child at rank r proposes
   d2t_first of the draft's r-th draft id (`scoring.draft_order`: descending logit, ties to the
   lower id). A child whose draft id is unmapped, or whose target id a lower-ranked draft id
   already proposes (a duplicate), is a null proposal: it can never be accepted (an engine
   verifies each distinct token once), and a null node's subtree is not expanded. `drafted` =
   the pruned tree's nodes, null ones included (the replay's count).
3. Verification against the target's greedy decoding: from the root, the target's argmax at the
   current prefix (one target pass over `target_prompt + emitted + accepted`) is looked up among
   the current node's children; the round walks down while one proposes it. An accepted EOS ends
   the stream (no bonus token); otherwise the target's argmax after the accepted path is the
   bonus token, and an emitted EOS or the length budget ends the stream.

Its output is the target's greedy output, and its (start, drafted, accepted, emitted) per round
equal `trees.replay_tree` on the teacher-forced target ranks (tests/test_trees.py).
"""
from __future__ import annotations

import torch

from .backends.base import Backend, PromptInputs
from .scoring import draft_order
from .trees import Tree


@torch.no_grad()
def _last_logits(backend: Backend, prompt: PromptInputs, tail: list[int]) -> torch.Tensor:
    ids = torch.cat([prompt.input_ids.reshape(-1).to(torch.long), torch.tensor(tail, dtype=torch.long)])
    return backend.forward(ids[None], model_inputs=prompt.model_inputs or None, logits_to_keep=1)[0, -1]


def _children(draft: Backend, draft_prompt: PromptInputs, fed: list[int], width: int, d2t: list[int]) -> list[int]:
    """The target ids the first `width` ranks propose at this draft context (-1: null proposal)."""
    order = draft_order(_last_logits(draft, draft_prompt, fed), width).tolist()
    out, seen = [], set()
    for x in order:
        t = d2t[x]
        out.append(t if t >= 0 and t not in seen else -1)
        seen.add(t)
    return out


@torch.no_grad()
def tree_decode(draft: Backend, target: Backend, draft_prompt: PromptInputs, target_prompt: PromptInputs,
                token_map, tree: Tree, max_new_tokens: int) -> tuple[list[int], list[dict]]:
    """(output target ids, rounds as dicts with start, drafted, accepted, emitted, tokens)."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    d2t = token_map.first_ids(draft.text_vocab_size, target.text_vocab_size).tolist()
    eos = target.eos_token_id
    table = tree.child_table()
    upto = tree.nodes_upto()
    width = tree.max_rank + 1

    def t2d(tokens: list[int]) -> list[int]:
        return [int(d) for t in tokens for d in token_map.t2d(int(t))]

    out: list[int] = []
    rounds: list[dict] = []
    while True:
        s = len(out)
        g = max(0, min(tree.depth, max_new_tokens - s - 1))
        # drafting: the proposal of every node of the pruned tree, expanding non-null nodes only
        proposal = {0: None}      # tree node -> its target token (-1 null); 0 is the root
        tokens_of = {0: []}       # tree node -> the target tokens on its path
        frontier = [0]
        for depth in range(g):
            nxt = []
            for node in frontier:
                kids = [(r, int(table[node, r])) for r in range(width) if table[node, r] >= 0]
                if not kids:
                    continue
                props = _children(draft, draft_prompt, t2d(out + tokens_of[node]), width, d2t)
                for r, child in kids:
                    proposal[child] = props[r]
                    if props[r] >= 0:
                        tokens_of[child] = tokens_of[node] + [props[r]]
                        nxt.append(child)
            frontier = nxt
        # verification: walk down while a child proposes the target's greedy token
        node, accepted = 0, []
        while True:
            y = int(_last_logits(target, target_prompt, out + accepted).argmax())
            if len(accepted) >= g:
                break      # y is the bonus token
            # at most one child proposes y: duplicates are null proposals
            match = [int(c) for c in table[node, :width] if c >= 0 and proposal[int(c)] == y]
            if not match:
                break      # y is the correction
            node = match[0]
            accepted.append(y)
            if y == eos:   # an accepted EOS ends the stream: no bonus token
                break
        emitted = accepted if accepted and accepted[-1] == eos else accepted + [y]
        rounds.append(dict(start=s, drafted=int(upto[g]), accepted=len(accepted), emitted=len(emitted),
                           tokens=emitted))
        out += emitted
        if out[-1] == eos or len(out) >= max_new_tokens:
            return out, rounds
