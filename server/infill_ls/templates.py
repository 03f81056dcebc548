"""Fill-in-the-middle prompt templates, one per model family.

A template names the special tokens a family was trained with.  Prompts are built
as token ids (see prompt.py) so a special token is always its single id, never
text that a user's file could forge or that tokenizes into pieces.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FimTemplate:
    name: str
    prefix: str
    suffix: str
    middle: str
    # Tokens that end a suggestion besides the tokenizer's end-of-sequence token.
    stop: tuple[str, ...] = ()
    repo_name: str | None = None
    file_sep: str | None = None


# StarCoder2 (and StarCoder): prefix-suffix-middle order, special tokens from its
# tokenizer (ids 1-6 of bigcode/starcoder2-*'s vocabulary); arXiv 2402.19173 §5.
STARCODER2 = FimTemplate(
    name="starcoder2",
    prefix="<fim_prefix>",
    suffix="<fim_suffix>",
    middle="<fim_middle>",
    stop=("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>", "<repo_name>"),
    repo_name="<repo_name>",
    file_sep="<file_sep>",
)

TEMPLATES: dict[str, FimTemplate] = {t.name: t for t in (STARCODER2,)}


class TemplateError(ValueError):
    pass


def choose_template(name: str, vocabulary: dict[str, int]) -> FimTemplate:
    """The template named by the setting, or for ``auto`` the first whose tokens the vocabulary has."""
    if name != "auto":
        if name not in TEMPLATES:
            raise TemplateError(f"unknown template {name!r}; known: auto, {', '.join(TEMPLATES)}")
        template = TEMPLATES[name]
        missing = [t for t in (template.prefix, template.suffix, template.middle) if t not in vocabulary]
        if missing:
            raise TemplateError(f"template {name} needs tokens the model's tokenizer lacks: {', '.join(missing)}")
        return template
    for template in TEMPLATES.values():
        if all(t in vocabulary for t in (template.prefix, template.suffix, template.middle)):
            return template
    raise TemplateError(
        "the model's tokenizer has no fill-in-the-middle tokens of a known family "
        f"({', '.join(TEMPLATES)}); it cannot fill in code between prefix and suffix"
    )
