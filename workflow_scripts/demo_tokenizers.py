"""Rule demo_tokenizers: train the demo draft tokenizer and derive the target's (+<image>, <video>, <pad>)."""
from pathlib import Path

from specalign import jobs
from specalign.backends.video_llava import video_prompt
from specalign.dataset import samples_from_instructions
from specalign.demo_tokenizer import demo_corpus, train_demo_tokenizers
from specalign.eventgpt import event_prompt

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
root = Path(sm.params.root)
questions = list(sm.params.questions)
samples = samples_from_instructions(root, root / sm.params.instructions, questions, None)
captions = sorted({s.reference for s in samples if s.reference})
# The prompts both demo models will see, so their fixed text compresses into few tokens.
templates = [event_prompt("{question}"), video_prompt("{question}")]
texts = demo_corpus(captions, questions, templates)
n_draft, n_target = train_demo_tokenizers(texts, Path(sm.output.draft), Path(sm.output.target),
                                          vocab_size=int(sm.params.vocab_size))
log.info("demo tokenizers: draft %d ids, target %d ids, trained on %d texts", n_draft, n_target, len(texts))
