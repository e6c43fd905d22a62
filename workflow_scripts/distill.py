"""Rule distill: fine-tune a draft toward its target on a train split -> a distilled checkpoint."""
from pathlib import Path

import polars as pl

from specalign import distill, jobs
from specalign.artifacts import atomic_dir, write_text
from specalign.backends import load_backend
from specalign.config import canonical
from specalign.dataset import check_disjoint
from specalign.translation import TokenMap

job = jobs.start(snakemake)  # noqa: F821
spec, settings = job.spec, distill.settings_of(job.spec["settings"])
train = distill.train_samples(spec)
evaluated = [s for f in job.input.manifests for s in pl.read_parquet(f, columns=["sample_id"])["sample_id"]]
check_disjoint(train, list(job.input.manifests))  # by clip and by the manifests' sequence column
draft, target = load_backend(job.model_spec("draft")), load_backend(job.model_spec("target"))
token_map = TokenMap.from_tokenizers(draft.tokenizer, target.tokenizer)
job.log.info("distilling %s toward %s: %d train clips (%s), loss %s on %s, %d steps, %s", draft.name, target.name,
             len(train), spec["split"], settings.loss, settings.data, settings.steps,
             f"LoRA r={settings.lora_r}" if settings.lora_r else "full fine-tuning")
examples = distill.build_examples(draft, target, train, token_map, settings)
target_width = target.text_vocab_size
distill.release(target)  # the labels hold all training needs of it: its memory goes to training
del target
state_dir = Path("results/.distill_state") / job.wildcards["model"]  # outside the output: survives a kill
stats = distill.train(draft, examples, token_map, settings, state_dir, canonical(spec), target_width)
with atomic_dir(job.output[0]) as out:
    distill.write_checkpoint(draft, out)
    write_text(distill.stats_json(stats, settings, train, evaluated),
               out / "distill_stats.json")
job.log.info("distilled: %s", stats)
(state_dir / "state.pt").unlink(missing_ok=True)  # done: a forced rerun trains afresh
