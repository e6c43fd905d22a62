"""Every model family's prompt, in one place: the prompt changes what a model says, and so
the acceptance, so the templates are facts to compare side by side.

The templates live only in the config schema: each family's option `prompt`
(schemas/config.schema.yaml `$defs/{family}_options`; its pattern requires `{question}` and
exactly one visual placeholder; its description says where the default comes from and what
about it is in doubt). Backends read it with `spec.option("prompt")`; `default_template` reads
the schema's default. Here: the placeholders as they stand in prompt text, and `fill`, which
puts the question in. The visual placeholder stays one token here; the backend expands it to
one id per visual token.
"""
from __future__ import annotations

from ..specs import option_defaults

# Placeholders as they stand in prompt text.
EVENT_TOKEN = "<event>"
EV_START_TOKEN = "<ev_start>"
EV_END_TOKEN = "<ev_end>"
VIDEO_TOKEN = "<video>"
IMAGE_TOKEN = "<image>"
QUESTION = "{question}"


def default_template(family: str) -> str:
    """The family's default prompt template: the schema's default of its option `prompt`."""
    return option_defaults(family)["prompt"]


def fill(template: str, question: str, placeholder: str | None = None) -> str:
    """The template with `{question}` replaced by the question (plain replacement: other braces in
    the template stay as they are). `placeholder`: the visual token the template must hold once."""
    if QUESTION not in template:
        raise ValueError(f"prompt template {template!r} holds no {QUESTION}")
    if placeholder is not None and template.count(placeholder) != 1:
        raise ValueError(f"prompt template {template!r} must hold {placeholder} exactly once, "
                         f"holds it {template.count(placeholder)} times")
    return template.replace(QUESTION, question)


def event_prompt(question: str, template: str | None = None) -> str:
    """EventGPT's prompt (default: `prepare_event_prompt(question, "eventgpt_v1")`)."""
    return fill(default_template("eventgpt") if template is None else template, question, EVENT_TOKEN)


def video_prompt(question: str, template: str | None = None) -> str:
    """Video-LLaVA-7B-hf's prompt (default: as transformers' documentation writes it)."""
    return fill(default_template("video_llava") if template is None else template, question, VIDEO_TOKEN)


def image_prompt(question: str, template: str | None = None) -> str:
    """LLaVA-1.5's prompt (default: the llava-hf chat template, one image)."""
    return fill(default_template("llava") if template is None else template, question, IMAGE_TOKEN)


# EventGPT's system sentence, the part of the schema's default before " USER:" (not a second copy).
EVENTGPT_SYSTEM = default_template("eventgpt").split(" USER:", 1)[0]
