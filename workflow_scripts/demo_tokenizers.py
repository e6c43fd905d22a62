"""Rule demo_tokenizers: train the demo draft tokenizer and derive the target's (+<image>, <video>, <pad>)."""
from pathlib import Path

from specalign import jobs
from specalign.backends.prompts import event_prompt, video_prompt
from specalign.dataset import samples_from_instructions
from specalign.demo_data import caption_corpus
from specalign.demo_tokenizer import demo_corpus, train_demo_tokenizers

job = jobs.start(snakemake)  # noqa: F821
root = Path(job.spec["root"])
samples = samples_from_instructions(root, root / job.spec["instructions"], job.spec["questions"], None)
# The target's captions (the references) and the same content in the draft's own style, which the
# demo draft is trained on (demo_data.DRAFT_STYLES): both must tokenize into whole-word pieces.
captions = caption_corpus(sorted({s.reference for s in samples if s.reference}))
# The prompts both demo models will see, so their fixed text compresses into few tokens.
texts = demo_corpus(captions, job.spec["questions"], [event_prompt("{question}"), video_prompt("{question}")])
n_draft, n_target = train_demo_tokenizers(texts, Path(job.output.draft), Path(job.output.target),
                                          vocab_size=job.spec["vocab_size"])
job.log.info("demo tokenizers: draft %d ids, target %d ids, trained on %d texts", n_draft, n_target, len(texts))
