"""Rule demo_model: train the demo target (Video-LLaVA arch) or draft (EventGPT arch)."""
import json
from pathlib import Path

from specalign import jobs
from specalign.dataset import samples_from_instructions
from specalign.demo_models import TrainSettings, train_demo_model

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
cfg = json.loads(sm.params.training)
role = sm.params.role
root = Path(sm.params.root)
questions = list(sm.params.questions)
train = samples_from_instructions(root, root / sm.params.instructions, questions, "train")
heldout = samples_from_instructions(root, root / sm.params.instructions, questions, "test")
settings = TrainSettings(steps=cfg[f"{role}_steps"], batch_size=cfg["batch_size"],
                         learning_rate=cfg["learning_rate"], seed=cfg["seed"])
log.info("training the demo %s on %d clips (%d held out)", role, len(train), len(heldout))
stats = train_demo_model(role, sm.params.tokenizer, sm.output[0], train, heldout, settings)
log.info("stats: %s", stats)
