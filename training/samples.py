"""Training samples and prompts in the exact layout infill-ls sends to StarCoder2 models.

FIM (prefix-suffix-middle):   <fim_prefix>PRE<fim_suffix>SUF<fim_middle>MID<|endoftext|>
with repository context:      <repo_name>NAME<file_sep>path\\ncode<file_sep>...<file_sep>cur/path\\n<fim_prefix>...
Each text piece is tokenized on its own, as the server does.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .data import SourceFile
from .tokenizer import EOS, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SNIPPET_LINES = 30
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
    kind: str  # "line" | "lines" | "span"


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


# ---------------------------------------------------------------- repository context

def identifiers(text: str) -> set[str]:
    return set(IDENTIFIER.findall(text))


def context_snippets(
    rng: random.Random, current: SourceFile, siblings: list[SourceFile], query: str, max_files: int = 8
) -> list[tuple[str, str, float]]:
    """(path, snippet, score) windows of other files, best (Jaccard overlap with query) first.

    A stand-in for what the server retrieves: windows of other workspace files that share
    identifiers with the code around the cursor, plus each file's head (its imports and
    definitions)."""
    others = [f for f in siblings if f.path != current.path]
    current_dir = current.path.rsplit("/", 1)[0]
    near = [f for f in others if f.path.rsplit("/", 1)[0] == current_dir]
    far = [f for f in others if f not in near]
    rng.shuffle(near)
    rng.shuffle(far)
    chosen = (near + far)[:max_files]
    want = identifiers(query)
    scored = []
    for f in chosen:
        lines = f.text.splitlines(keepends=True)
        for begin in range(0, max(1, len(lines)), SNIPPET_LINES // 2):
            window = "".join(lines[begin:begin + SNIPPET_LINES])
            have = identifiers(window)
            score = len(want & have) / (len(want | have) or 1)
            if begin == 0:
                score += 0.05  # file heads (imports, class names) are worth showing
            scored.append((f.path, window, score))
    scored.sort(key=lambda s: -s[2])
    return scored


def context_ids(encode: Encoder, snippets: list[tuple[str, str, float]], budget: int) -> list[int]:
    """<file_sep>path\\ncode pieces, best snippets kept, placed so the best is nearest the cursor."""
    kept: list[list[int]] = []
    used = 0
    for path, snippet, _ in snippets:
        piece = [FILE_SEP] + encode(path + "\n" + snippet)
        if used + len(piece) > budget:
            continue
        kept.append(piece)
        used += len(piece)
        if budget - used < 32:
            break
    ids: list[int] = []
    for piece in reversed(kept):
        ids.extend(piece)
    return ids


# ---------------------------------------------------------------- prompts

def fim_prompt(
    encode: Encoder,
    prefix: str,
    suffix: str,
    budget: int,
    context: list[int] | None = None,
    repo_name: str | None = None,
    path: str | None = None,
    prefix_share: float = 0.75,
) -> list[int]:
    """Prompt ids ending in <fim_middle>, at most `budget` tokens; prefix cut on the left, suffix on the right."""
    head: list[int] = []
    if repo_name is not None:
        head = [REPO_NAME] + encode(repo_name) + (context or []) + [FILE_SEP] + encode(path + "\n")
    room = budget - len(head) - 3
    # Cut by characters first (cheap), then exactly by tokens.
    pre = encode(prefix[-room * 6:])
    suf = encode(suffix[:room * 6])
    pre_room = max(room - min(len(suf), int(room * (1 - prefix_share))), 0)
    pre = pre[-pre_room:] if pre_room else []
    suf = suf[: max(room - len(pre), 0)]
    return head + [FIM_PREFIX] + pre + [FIM_SUFFIX] + suf + [FIM_MIDDLE]


# ---------------------------------------------------------------- training samples

class SampleMaker:
    """Draws training samples (token id lists of a requested maximum length) from a corpus."""

    def __init__(self, repos: dict[str, list[SourceFile]], tokenizer, seed: int, fim_rate: float = 0.9, repo_rate: float = 0.5):
        self.repos = repos
        self.names = sorted(repos)
        # Repos drawn in proportion to sqrt(size): big packages count, small ones still appear.
        self.repo_weights = [sum(len(f.text) for f in repos[r]) ** 0.5 for r in self.names]
        self.encode = Encoder(tokenizer)
        self.rng = random.Random(seed)
        self.fim_rate = fim_rate
        self.repo_rate = repo_rate

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
        hole = choose_hole(self.rng, f.text)
        if hole is None:
            return [], 0
        middle = self.encode(f.text[hole.start:hole.end])[:MAX_MIDDLE_TOKENS]
        budget = max_len - len(middle) - 1
        if budget < 48:
            return [], 0
        prefix, suffix = f.text[:hole.start], f.text[hole.end:]
        share = self.rng.uniform(0.5, 0.9)
        if self.rng.random() < self.repo_rate:
            context: list[int] = []
            if self.rng.random() < 0.85:
                query = prefix[-1500:] + suffix[:500]
                snippets = context_snippets(self.rng, f, self.repos[repo], query)
                context = context_ids(self.encode, snippets, int(budget * self.rng.uniform(0.25, 0.6)))
            prompt = fim_prompt(self.encode, prefix, suffix, budget, context, repo_display_name(repo), f.path, share)
        else:
            prompt = fim_prompt(self.encode, prefix, suffix, budget, prefix_share=share)
        return prompt + middle + [EOS], len(prompt)

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
