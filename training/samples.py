"""Training samples built by the server's own prompt code, so the model learns the exact prompts it gets.

FIM (prefix-suffix-middle):   <fim_prefix>PRE<fim_suffix>SUF<fim_middle>MID<|endoftext|>
with repository context:      <repo_name>NAME<file_sep>path\\ncode...<file_sep><fim_prefix>cur/path\\nPRE<fim_suffix>SUF<fim_middle>MID<|endoftext|>
(StarCoder2's layout, arXiv 2402.19173 §5; infill_ls/templates.py).  Prompts come from
infill_ls.prompt.build_fim_prompt with infill_ls.context's snippet choice, budget split
and cut rules; only the holes and the sampling mix are training's own.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from infill_ls.context import NEIGHBOUR_FILES, Candidate, ContextProvider, cut_windows, query_tokens
from infill_ls.postprocess import CursorContext
from infill_ls.prompt import ContextFile, PromptTokenizer, RepoContext, build_fim_prompt
from infill_ls.templates import TEMPLATES

from .data import SourceFile
from .tokenizer import EOS, FILE_SEP, REPO_NAME

MAX_MIDDLE_TOKENS = 200


class Encoder:
    """Fast text -> ids without special-token handling (uses the Rust tokenizer directly)."""

    def __init__(self, tokenizer):
        self.backend = tokenizer.backend_tokenizer

    def __call__(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids if text else []


@dataclass
class Hole:
    start: int  # character offsets of the middle in the file text
    end: int
    kind: str  # "line" | "lines" | "span" | "cross-file" | "import"


def repo_display_name(repo: str) -> str:
    return "cpython" if repo.startswith("stdlib:") else repo.split(":", 1)[1]


# ---------------------------------------------------------------- holes

def _line_starts(text: str) -> list[int]:
    starts = [0]
    for m in re.finditer("\n", text):
        starts.append(m.end())
    return starts


def _cursor_in_line(rng: random.Random, text: str, line_start: int, line_end: int) -> int:
    """A cursor position inside a line, after its indentation (where people type)."""
    content_start = line_start + len(text[line_start:line_end]) - len(text[line_start:line_end].lstrip())
    if rng.random() < 0.25:
        return content_start
    return rng.randint(content_start, max(content_start, line_end - 1))


def choose_hole(rng: random.Random, text: str, kind: str | None = None) -> Hole | None:
    starts = _line_starts(text)
    content_lines = [i for i, s in enumerate(starts) if text[s:(starts[i + 1] - 1 if i + 1 < len(starts) else len(text))].strip()]
    if not content_lines:
        return None
    kind = kind or rng.choices(["line", "lines", "span"], weights=[0.4, 0.35, 0.25])[0]

    def line_end(i: int) -> int:
        return starts[i + 1] - 1 if i + 1 < len(starts) else len(text)

    if kind == "span":
        start = rng.randrange(len(text))
        return Hole(start, min(len(text), start + rng.randint(1, 300)), kind)
    i = rng.choice(content_lines)
    cursor = _cursor_in_line(rng, text, starts[i], line_end(i))
    if kind == "line":
        return Hole(cursor, line_end(i), kind)
    last = min(len(starts) - 1, i + rng.randint(1, 8))
    return Hole(cursor, line_end(last), kind)


# ---------------------------------------------------------------- cross-file holes

DEFINITION = re.compile(r"^\s*(?:def|class)\s+([A-Za-z_]\w{3,})", re.M)
NAME = re.compile(r"[A-Za-z_]\w*")


def defined_names(f: SourceFile) -> frozenset[str]:
    """Functions and classes a file defines (names of 4 characters or more)."""
    return frozenset(DEFINITION.findall(f.text))


def cross_file_hole(rng: random.Random, f: SourceFile, siblings: list[SourceFile],
                    names_of=defined_names, unseen_in_file: bool = False) -> tuple[int, int] | None:
    """A single-line hole that starts at a use of a name defined in another file of the
    package (not in this one): the context can supply the name, the file may not.
    ``names_of``: defined_names, or a cached version of it.  ``unseen_in_file``: only names
    that the rest of the file never mentions (most uses of another file's name follow an
    import or an earlier use of it in the file, from which a model copies it without the
    context: 385 of the 470 eval holes of seed 2026)."""
    candidates = frozenset().union(*map(names_of, siblings)) - names_of(f)  # this file's own left out
    in_file = Counter(NAME.findall(f.text)) if unseen_in_file else None
    uses = []
    offset = 0
    for line in f.text.splitlines(keepends=True):
        code = line.rstrip("\n")
        if not code.lstrip().startswith(("#", "def ", "class ", "import ", "from ")):
            uses += [(offset + m.start(), offset + len(code)) for m in NAME.finditer(code) if m.group() in candidates
                     and (in_file is None or in_file[m.group()] == NAME.findall(code[m.start():]).count(m.group()))]
        offset += len(line)
    return rng.choice(uses) if uses else None


# An import's module path: `from a.b import ...`, `from .b import ...`, `import a.b`.
IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import\b|import[ \t]+([\w.]+))", re.M)


def import_hole(rng: random.Random, f: SourceFile, siblings: list[SourceFile]) -> tuple[int, int] | None:
    """A hole at the module name that ends an import of another file of the package
    (``from .geometry import``, ``from shapes.geometry import``, ``import shapes.geometry``):
    the prompt names the package's modules only in its snippets' headers (``<file_sep>path``),
    so the model learns to read them there — the property the bundled model's tests ask
    for (an import line names a module that exists in the context)."""
    modules = {g.path.rsplit("/", 1)[-1].removesuffix(".py") for g in siblings
               if g.path != f.path and g.path.endswith(".py")} - {"__init__"}
    spans = []
    for line in IMPORT_LINE.finditer(f.text):
        group = 1 if line.group(1) else 2
        module = line.group(group).rsplit(".", 1)[-1]
        if module in modules:
            spans.append((line.end(group) - len(module), line.end(group)))
    return rng.choice(spans) if spans else None


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` holds the identifier ``name`` (whole, not part of a longer one)."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None


# ---------------------------------------------------------------- repository context

def neighbour_files(current: SourceFile, siblings: list[SourceFile], max_files: int = NEIGHBOUR_FILES) -> list[SourceFile]:
    """The package's other files, those of the current file's folder first: they stand in
    for the workspace files the server would consider."""
    current_dir = current.path.rsplit("/", 1)[0]
    others = [f for f in siblings if f.path != current.path]
    others.sort(key=lambda f: (f.path.rsplit("/", 1)[0] != current_dir, f.path))
    return others[:max_files]


def context_snippets(current: SourceFile, siblings: list[SourceFile], prefix: str, suffix: str,
                     windows_of=lambda f: cut_windows(f.text), max_files: int = NEIGHBOUR_FILES) -> list[ContextFile]:
    """Ranked windows of other files of the package (neighbour_files), chosen by the
    server's own ranking: ``ContextProvider.rank`` scores and picks their windows exactly as
    it does for the server, so the model trains on the snippets it will be shown."""
    context = CursorContext(prefix=prefix, suffix=suffix)
    candidates = [Candidate(f.path, "workspace", windows_of(f), 1.0)
                  for f in neighbour_files(current, siblings, max_files)]
    return ContextProvider.rank(candidates, query_tokens(context), context, indexed=False)


# ---------------------------------------------------------------- prompts

def fim_prompt(tokenizer: PromptTokenizer, prefix: str, suffix: str, budget: int,
               repo: RepoContext | None = None) -> list[int]:
    """The server's prompt (prompt.build_fim_prompt, StarCoder2 layout), at most ``budget`` tokens."""
    return build_fim_prompt(tokenizer, TEMPLATES["starcoder2"], prefix, suffix, budget, repo).ids


# ---------------------------------------------------------------- training samples

def all_windows(repos: dict[str, list[SourceFile]]) -> dict[tuple[str, str], list]:
    """Every file's context windows (the server's cut_windows), keyed as SampleMaker keys them.

    Cutting a file the first time it is drawn was ~40 % of making samples, and each
    DataLoader worker cut the whole corpus again (105 MB: ~5 s and ~0.9 GB once here)."""
    return {(f.repo, f.path): cut_windows(f.text) for files in repos.values() for f in files}


# The share of FIM samples whose hole starts at a use of a name that only another file of
# the package defines, always in the repository layout with snippets (the others: random
# holes, choose_hole).  Such holes teach copying from the snippets, which the shipped model
# (trained without them) hardly does (training/MODEL_CARD.md); the eval's cross-file holes
# measure the same skill on held-out packages.  At 0 the samples are drawn exactly as the
# shipped model's were (the held-out loss uses that, so legs stay comparable).
CROSS_FILE_SHARE = 0.15


class SampleMaker:
    """Draws training samples (token id lists of a requested maximum length) from a corpus.

    FIM samples are the server's prompts: 85% in the repository layout (the server always
    has a workspace path), of which 85% with snippets of other files of the package; the
    rest plain single-file prompts.  The budget varies so short and long prompts both occur."""

    def __init__(self, repos: dict[str, list[SourceFile]], tokenizer, seed: int, fim_rate: float = 0.9,
                 repo_rate: float = 0.85, windows: dict[tuple[str, str], list] | None = None,
                 cross_file_share: float = CROSS_FILE_SHARE, cross_file_unseen: float = 0.0,
                 import_share: float = 0.0):
        self.repos = repos
        self.names = sorted(repos)
        # Repos drawn in proportion to sqrt(size): big packages count, small ones still appear.
        self.repo_weights = [sum(len(f.text) for f in repos[r]) ** 0.5 for r in self.names]
        self.encode = Encoder(tokenizer)
        self.prompt_tokenizer = PromptTokenizer(tokenizer, cache_size=64)
        self.rng = random.Random(seed)
        self.fim_rate = fim_rate
        self.repo_rate = repo_rate
        # Shared with other makers when given (all_windows): DataLoader workers fork from the
        # process that cut them, instead of each cutting every file again.
        self._windows: dict[tuple[str, str], list] = {} if windows is None else windows
        self.cross_file_share = cross_file_share
        # This share of the cross-file holes only at names the rest of the file never
        # mentions, and only when the prompt's snippets hold the name: the model must copy
        # from the snippets.  All of them (1.0) cost the other cross-file holes, where the
        # name is in the file too (leg 5, training/MODEL_CARD.md).
        self.cross_file_unseen = cross_file_unseen
        # This share of the FIM samples first tries an import_hole (with snippets; only when
        # a snippet comes from the imported module's file).  0 draws nothing extra: the
        # samples of the runs before it.
        self.import_share = import_share
        self._names: dict[tuple[str, str], frozenset[str]] = {}

    def windows_of(self, f: SourceFile) -> list:
        key = (f.repo, f.path)
        if key not in self._windows:
            self._windows[key] = cut_windows(f.text)
        return self._windows[key]

    def names_of(self, f: SourceFile) -> frozenset[str]:
        key = (f.repo, f.path)
        if key not in self._names:
            self._names[key] = defined_names(f)
        return self._names[key]

    def _pick(self) -> tuple[str, SourceFile]:
        repo = self.rng.choices(self.names, weights=self.repo_weights)[0]
        files = self.repos[repo]
        f = self.rng.choices(files, weights=[min(len(x.text), 30_000) for x in files])[0]
        return repo, f

    def sample(self, max_len: int) -> tuple[list[int], int]:
        """Token ids and where the middle starts (len(ids) when there is no middle)."""
        repo, f = self._pick()
        if self.rng.random() >= self.fim_rate:
            ids = self._plain(repo, f, max_len)
            return ids, len(ids)
        return self._fim(repo, f, max_len)

    def _plain(self, repo: str, f: SourceFile, max_len: int) -> list[int]:
        if self.rng.random() < 0.5:
            ids = self.encode(f.text[: max_len * 6])
            start = self.rng.randrange(max(1, len(ids) - max_len + 2))
            return (ids[start:] + [EOS])[:max_len]
        # Repository-level left-to-right: several files of one package.
        ids = [REPO_NAME] + self.encode(repo_display_name(repo))
        files = self.repos[repo][:]
        self.rng.shuffle(files)
        for g in files[:6]:
            ids += [FILE_SEP] + self.encode(g.path + "\n" + g.text[: max_len * 4])
            if len(ids) >= max_len:
                break
        return (ids + [EOS])[:max_len]

    def _fim(self, repo: str, f: SourceFile, max_len: int) -> tuple[list[int], int]:
        cut, unseen, kind = None, False, "cross-file"
        if self.import_share and self.rng.random() < self.import_share:
            cut, kind = import_hole(self.rng, f, self.repos[repo]), "import"
        if cut is None and self.cross_file_share and self.rng.random() < self.cross_file_share:
            kind = "cross-file"
            # A draw only for a share strictly between 0 and 1: 0 and 1 give the samples of
            # the runs that had only "none" or "all".
            unseen = self.cross_file_unseen >= 1 or (self.cross_file_unseen > 0 and self.rng.random() < self.cross_file_unseen)
            cut = cross_file_hole(self.rng, f, self.repos[repo], self.names_of, unseen)
        hole = Hole(*cut, kind) if cut else choose_hole(self.rng, f.text)
        if hole is None:
            return [], 0
        middle = self.encode(f.text[hole.start:hole.end])[:MAX_MIDDLE_TOKENS]
        most = max_len - len(middle) - 1
        if most < 64:
            return [], 0
        budget = self.rng.randint(min(most, 256), most)
        prefix, suffix = f.text[:hole.start], f.text[hole.end:]
        repo_context = None
        with_context = hole.kind in ("cross-file", "import")
        if with_context or self.rng.random() < self.repo_rate:
            snippets = []
            if with_context or self.rng.random() < 0.85:
                snippets = context_snippets(f, self.repos[repo], prefix, suffix, self.windows_of)
            repo_context = RepoContext(repo_display_name(repo), f.path, snippets)
        prompt = build_fim_prompt(self.prompt_tokenizer, TEMPLATES["starcoder2"], prefix, suffix, budget, repo_context)
        if hole.kind == "cross-file" and unseen:
            name = NAME.match(f.text, hole.start).group()
            if not any(mentions(s.text, name) for s in prompt.snippets):
                return [], 0  # nowhere to copy the name from: no sample (the caller draws again)
        if hole.kind == "import":
            module_file = f.text[hole.start:hole.end] + ".py"
            if not any(s.path.rsplit("/", 1)[-1] == module_file for s in prompt.snippets):
                return [], 0  # the module's file is not in the context: nothing to read it from
        return prompt.ids + middle + [EOS], len(prompt.ids)

    def rows(self, batch: int, seq_len: int, pad_id: int) -> tuple[list[list[int]], list[list[int]], list[list[bool]]]:
        """A batch of packed rows: input ids, labels (-100 on padding), and which tokens are FIM middles."""
        inputs, labels, middles = [], [], []
        for _ in range(batch):
            row: list[int] = []
            middle: list[bool] = []
            while seq_len - len(row) >= 128:
                ids, middle_start = self.sample(seq_len - len(row))
                row += ids
                middle += [i >= middle_start for i in range(len(ids))]
            pad = seq_len - len(row)
            inputs.append(row + [pad_id] * pad)
            labels.append(row + [-100] * pad)
            middles.append(middle + [False] * pad)
        return inputs, labels, middles
