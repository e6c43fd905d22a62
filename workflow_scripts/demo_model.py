"""Rule demo_model: train the demo target (Video-LLaVA arch) or draft (EventGPT arch)."""
from pathlib import Path

from specalign import jobs
from specalign.dataset import samples_from_instructions
from specalign.demo_models import TrainSettings, train_demo_model

job = jobs.start(snakemake)  # noqa: F821
root = Path(job.spec["root"])
instructions = root / job.spec["instructions"]
train = samples_from_instructions(root, instructions, job.spec["questions"], "train")
heldout = samples_from_instructions(root, instructions, job.spec["questions"], "test")
role = job.spec["role"]
settings = TrainSettings(**job.spec["training"])
job.log.info("training the demo %s on %d clips (%d held out)", role, len(train), len(heldout))
if role == "draft":  # its own caption style (demo_data.DRAFT_STYLES); the target keeps the references
    job.log.info("draft captions: %.0f%% in the target's style, the rest in the draft's own",
                 100 * settings.target_style_share)
stats = train_demo_model(role, job.spec["tokenizer"], job.output[0], train, heldout, settings)
job.log.info("stats: %s", stats)
