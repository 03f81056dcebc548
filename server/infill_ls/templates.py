"""Fill-in-the-middle prompt templates, one per model family.

A template names the special tokens a family was trained with and lays out a
repository-level prompt: other files' snippets first, then the current file with
the FIM tokens around the cursor.  Prompts are built as token ids (see prompt.py),
so a special token is always its single id, never text that a user's file could
forge or that tokenizes into pieces.

A layout is a list of pieces: ``Special("<tok>")`` for a control token, plain
``str`` for text.  Every family uses prefix-suffix-middle (PSM) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Special:
    """A control token, sent as its single id."""

    token: str


Piece = "str | Special"


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
    # Token the family's tokenizer puts first (its BOS); the prompt is built without
    # add_special_tokens, so the template adds it.
    bos: str | None = None
    # Repository layout: "starcoder2" or "qwen" (see below); families without
    # file-separator tokens get other files as path-headed text inside the prefix.
    layout: str = "comment"
    # Tokens that must also be in the vocabulary for ``auto`` to pick this family
    # (several families share the same FIM token names).
    detect: tuple[str, ...] = ()

    @property
    def fim_tokens(self) -> tuple[str, str, str]:
        return (self.prefix, self.suffix, self.middle)

    @property
    def has_repo_tokens(self) -> bool:
        return self.file_sep is not None

    # ----- layout -----
    # The prompt is: head, snippet blocks (in the order given), the current file's
    # opening, {prefix}, suffix marker, {suffix}, middle marker.  prompt.py budgets
    # each part; the text of the current file never moves to another part.

    def head(self, repo: str | None) -> list:
        pieces: list = [Special(self.bos)] if self.bos else []
        if self.layout == "starcoder2" and repo:
            pieces += [Special(self.repo_name), repo]
        elif self.layout == "qwen" and repo:
            pieces += [Special(self.repo_name), repo + "\n"]
        elif self.layout == "comment":
            pieces.append(Special(self.prefix))
        return pieces

    def snippet(self, path: str, text: str, comment: str) -> list:
        text = text if text.endswith("\n") else text + "\n"
        if self.file_sep:
            return [Special(self.file_sep), f"{path}\n{text}"]
        return [comment_block(path, text, comment)]

    def opening(self, path: str | None, comment: str) -> list:
        """What comes between the snippets and the current file's prefix text.

        Without a path (a file outside any workspace folder) the prompt is the plain
        single-file FIM prompt.
        """
        if path is None:
            return [] if self.layout == "comment" else [Special(self.prefix)]
        if self.layout == "starcoder2":
            # StarCoder2 training layout (arXiv 2402.19173, §5.1 "Data formatting",
            # repository context with FIM applied to one file):
            #   <repo_name>reponame<file_sep>filepath0\ncode0<file_sep><fim_prefix>filepath1\n
            #   code1_pre<fim_suffix>code1_suf<fim_middle>code1_mid
            # The FIM file's path comes *after* <fim_prefix>.  (llama.cpp's /infill
            # writes "<file_sep>path\n<fim_prefix>…", Qwen2.5-Coder's layout, below.)
            return [Special(self.file_sep), Special(self.prefix), f"{path}\n"]
        if self.layout == "qwen":
            # Qwen2.5-Coder "Repository Level Code Infilling" (QwenLM/Qwen2.5-Coder,
            # examples/Qwen2.5-Coder.md; arXiv 2409.12186):
            #   <|repo_name|>{repo}\n<|file_sep|>{path1}\n{content1}\n<|file_sep|>{path}\n
            #   <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>
            return [Special(self.file_sep), f"{path}\n", Special(self.prefix)]
        return [f"{comment} {path}\n"]

    def closing(self) -> tuple[Special, Special]:
        return Special(self.suffix), Special(self.middle)


def comment_block(path: str, text: str, comment: str) -> str:
    """Another file for families without file tokens: a path comment, then the code.

    DeepSeek-Coder's README shows repository-level completion this way (each file
    introduced by ``#path``); Sourcegraph Cody and Continue do the same for FIM.
    """
    return f"{comment} {path}\n{text}"


# Line-comment syntax by file extension, for path headers in ``comment`` layouts.
COMMENT_BY_SUFFIX = {
    ".py": "#", ".pyi": "#", ".sh": "#", ".bash": "#", ".rb": "#", ".pl": "#", ".r": "#",
    ".yaml": "#", ".yml": "#", ".toml": "#", ".cfg": "#", ".ini": ";", ".jl": "#",
    ".lua": "--", ".sql": "--", ".hs": "--", ".elm": "--", ".adb": "--",
    ".lisp": ";", ".clj": ";", ".el": ";", ".scm": ";", ".erl": "%", ".tex": "%", ".m": "%",
    ".vim": '"', ".bat": "REM",
}


def comment_for(path: str | None) -> str:
    if not path:
        return "//"
    return COMMENT_BY_SUFFIX.get(PurePosixPath(path).suffix.lower(), "//")


# StarCoder2: special tokens of bigcode/starcoder2-*'s tokenizer (ids 0-6:
# <|endoftext|>, <fim_prefix>, <fim_middle>, <fim_suffix>, <fim_pad>, <repo_name>,
# <file_sep>); repository layout from the paper, arXiv 2402.19173 §5.1.
STARCODER2 = FimTemplate(
    name="starcoder2",
    prefix="<fim_prefix>",
    suffix="<fim_suffix>",
    middle="<fim_middle>",
    stop=("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>", "<repo_name>"),
    repo_name="<repo_name>",
    file_sep="<file_sep>",
    layout="starcoder2",
    detect=("<file_sep>",),
)

# StarCoder / StarCoderBase / SantaCoder (bigcode/starcoder tokenizer): the same FIM
# tokens, but <reponame>/<filename> metadata only for a single file and no file
# separator, so other files go in as path comments.
STARCODER = FimTemplate(
    name="starcoder",
    prefix="<fim_prefix>",
    suffix="<fim_suffix>",
    middle="<fim_middle>",
    stop=("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<filename>"),
)

# Qwen2.5-Coder (Qwen/Qwen2.5-Coder-* tokenizer_config.json: <|fim_prefix|> 151659,
# <|fim_middle|> 151660, <|fim_suffix|> 151661, <|fim_pad|> 151662,
# <|repo_name|> 151663, <|file_sep|> 151664, <|endoftext|> 151643); layout from
# the Qwen2.5-Coder README/examples (repository-level code infilling).
QWEN25_CODER = FimTemplate(
    name="qwen2.5-coder",
    prefix="<|fim_prefix|>",
    suffix="<|fim_suffix|>",
    middle="<|fim_middle|>",
    stop=("<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
          "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>"),
    repo_name="<|repo_name|>",
    file_sep="<|file_sep|>",
    layout="qwen",
    detect=("<|file_sep|>",),
)

# CodeGemma (ai.google.dev/gemma/docs/codegemma/prompt-structure): <|fim_prefix|>,
# <|fim_suffix|>, <|fim_middle|>, and <|file_separator|> "for multi-file contexts"
# (no documented layout for it, so other files go in as path comments; the token
# ends a suggestion).  Shares the FIM token names with Qwen2.5-Coder: told apart by
# <|file_separator|>.
CODEGEMMA = FimTemplate(
    name="codegemma",
    prefix="<|fim_prefix|>",
    suffix="<|fim_suffix|>",
    middle="<|fim_middle|>",
    stop=("<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<eos>"),
    bos="<bos>",
    detect=("<|file_separator|>",),
)

# DeepSeek-Coder (deepseek-ai/deepseek-coder-*-base tokenizer and README "Code
# Insertion"): <｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>, after the
# BOS <｜begin▁of▁sentence｜> its tokenizer adds.  The bars are U+FF5C, the
# underscore-like character U+2581.
DEEPSEEK_CODER = FimTemplate(
    name="deepseek-coder",
    prefix="<｜fim▁begin｜>",
    suffix="<｜fim▁hole｜>",
    middle="<｜fim▁end｜>",
    stop=("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    bos="<｜begin▁of▁sentence｜>",
)

# Code Llama (codellama/CodeLlama-*-hf: "▁<PRE>" 32007, "▁<SUF>" 32008, "▁<MID>" 32009,
# "▁<EOT>" 32010; Meta's codellama generation.py formats "<PRE> {pre} <SUF>{suf} <MID>"
# after BOS).  The leading "▁" (a space) is part of each token; the space after
# <PRE> is the SentencePiece dummy prefix the tokenizer adds to the prefix text.
CODELLAMA = FimTemplate(
    name="codellama",
    prefix="▁<PRE>",
    suffix="▁<SUF>",
    middle="▁<MID>",
    stop=("▁<EOT>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>"),
    bos="<s>",
)

# Order matters for ``auto``: families with more specific tokens first.
TEMPLATES: dict[str, FimTemplate] = {
    t.name: t for t in (STARCODER2, QWEN25_CODER, CODEGEMMA, STARCODER, DEEPSEEK_CODER, CODELLAMA)
}


class TemplateError(ValueError):
    pass


def _required(template: FimTemplate) -> tuple[str, ...]:
    tokens = (*template.fim_tokens, *template.detect)
    if template.bos:
        tokens += (template.bos,)
    if template.repo_name:
        tokens += (template.repo_name,)
    return tokens


def choose_template(name: str, vocabulary: dict[str, int]) -> FimTemplate:
    """The template named by the setting, or for ``auto`` the first whose tokens the vocabulary has."""
    if name != "auto":
        if name not in TEMPLATES:
            raise TemplateError(f"unknown template {name!r}; known: auto, {', '.join(TEMPLATES)}")
        template = TEMPLATES[name]
        missing = [t for t in _required(template) if t not in vocabulary]
        if missing:
            raise TemplateError(f"template {name} needs tokens the model's tokenizer lacks: {', '.join(missing)}")
        return template
    for template in TEMPLATES.values():
        if all(t in vocabulary for t in _required(template)):
            return template
    raise TemplateError(
        "the model's tokenizer has no fill-in-the-middle tokens of a known family "
        f"({', '.join(TEMPLATES)}); it cannot fill in code between prefix and suffix"
    )
