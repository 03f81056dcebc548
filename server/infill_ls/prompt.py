"""Build the token ids sent to the model, within an exact token budget.

The budget is ``contextTokens - maxNewTokens``: room for the generated tokens is
always reserved.  When the file does not fit, the far ends are cut (the start of
the prefix, the end of the suffix), never the text next to the cursor.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .templates import FimTemplate, Special, comment_for

# Share of the budget the suffix may claim when both sides are too long: code
# before the cursor predicts the middle better than code after it.
SUFFIX_SHARE = 0.25
# Share of the prompt room (budget less the template's own tokens) that snippets of
# other files may take from a current file that would fill it: the file keeps
# 60 %, and never less than NEIGHBOURHOOD_TOKENS around the cursor; a short file
# leaves all the rest to snippets.
SNIPPET_SHARE = 0.4
NEIGHBOURHOOD_TOKENS = 256
# A snippet cut to fewer tokens than this is not worth its place.
MIN_SNIPPET_TOKENS = 48
# First guess of characters per token when cutting a long text before encoding it.
CHARS_PER_TOKEN_GUESS = 4


class PromptTokenizer:
    """The model's tokenizer, for text that may contain special-token look-alikes.

    Text is encoded with special tokens split, so a file containing the literal
    string ``<fim_middle>`` cannot inject a control token.  Encodings of recently
    seen strings are cached (an unchanged suffix costs nothing on the next keystroke).
    """

    def __init__(self, tokenizer, cache_size: int = 1024):
        self.tokenizer = tokenizer
        self.vocabulary: dict[str, int] = tokenizer.get_vocab()
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._cache_size = cache_size

    def special_id(self, token: str) -> int:
        return self.vocabulary[token]

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            self._cache[text] = ids
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        return ids

    def pieces(self, pieces: list) -> list[int]:
        """Ids of a template layout: control tokens as single ids, text encoded (cached)."""
        ids: list[int] = []
        for piece in pieces:
            if isinstance(piece, Special):
                ids.append(self.special_id(piece.token))
            else:
                ids.extend(self.encode(piece))
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def tail(self, text: str, limit: int) -> tuple[list[int], bool]:
        """The last ``limit`` tokens of ``text`` and whether anything was cut."""
        return self._window(text, limit, from_end=True)

    def head(self, text: str, limit: int) -> tuple[list[int], bool]:
        """The first ``limit`` tokens of ``text`` and whether anything was cut."""
        return self._window(text, limit, from_end=False)

    def _window(self, text: str, limit: int, from_end: bool) -> tuple[list[int], bool]:
        if limit <= 0:
            return [], bool(text)
        # Encode only a window of characters near the cursor, growing it until it
        # holds enough tokens: a keystroke in a 10 MB file must not encode 10 MB.
        # Tokens far from the window's cut edge are the same as in the whole text
        # because byte-level BPE never merges across its pre-tokenizer splits.
        chars = limit * CHARS_PER_TOKEN_GUESS
        while True:
            whole = chars >= len(text)
            piece = text if whole else (text[-chars:] if from_end else text[:chars])
            ids = self.encode(piece)
            if whole and len(ids) <= limit:
                return ids, False
            # One extra token guards the cut edge, whose token may be partial.
            if len(ids) > limit + 1 or whole:
                return (ids[-limit:] if from_end else ids[:limit]), True
            chars *= 2


@dataclass(frozen=True)
class ContextFile:
    """A snippet of another file, shown to the model before the current file."""

    path: str  # workspace-relative, forward slashes
    text: str
    score: float = 0.0  # similarity to the code around the cursor (higher is closer)
    # Where it comes from: "workspace" (a file on disk), "open" (an editor tab),
    # "recent" (around a place edited recently).  Also the render order: text that
    # changes least goes first so consecutive prompts share a long token prefix.
    source: str = "workspace"
    start_line: int = 0  # 0-based line of the window in its file


SOURCE_ORDER = {"workspace": 0, "open": 1, "recent": 2}


@dataclass
class RepoContext:
    """What the current file's repository adds to a prompt."""

    repo_name: str | None  # the workspace folder's name
    path: str | None  # the current file, workspace-relative; None outside any workspace
    snippets: list[ContextFile] = field(default_factory=list)  # best first


@dataclass
class Prompt:
    ids: list[int]
    prefix_tokens: int
    suffix_tokens: int
    prefix_cut: bool
    suffix_cut: bool
    context_tokens: int = 0  # tokens spent on other files' snippets
    snippets: list[ContextFile] = field(default_factory=list)  # those in the prompt, in prompt order

    def __len__(self) -> int:
        return len(self.ids)


def split_budget(prefix_len: int, suffix_len: int, budget: int) -> tuple[int, int]:
    """How many prefix and suffix tokens to keep; unused share flows to the other side."""
    if prefix_len + suffix_len <= budget:
        return prefix_len, suffix_len
    suffix_keep = min(suffix_len, max(int(budget * SUFFIX_SHARE), budget - prefix_len))
    return min(prefix_len, budget - suffix_keep), suffix_keep


def file_floor(file_need: int, room: int) -> int:
    """Tokens the current file keeps whatever the snippets want (see SNIPPET_SHARE)."""
    return min(file_need, max(int(room * (1 - SNIPPET_SHARE)), min(room, NEIGHBOURHOOD_TOKENS)))


def build_fim_prompt(
    tokenizer: PromptTokenizer,
    template: FimTemplate,
    prefix: str,
    suffix: str,
    budget: int,
    repo: RepoContext | None = None,
) -> Prompt:
    """The repository-level FIM prompt in at most ``budget`` tokens.

    Budget order: the template's fixed tokens, then the current file up to its
    floor (the cursor neighbourhood is never cut for snippets), then snippets best
    first, then whatever the snippets left back to the file, split prefix:suffix
    3:1 with unused share flowing to the other side.
    """
    path = repo.path if repo else None
    comment = comment_for(path)
    head = tokenizer.pieces(template.head(repo.repo_name if path else None))
    opening = tokenizer.pieces(template.opening(path, comment))
    suffix_mark, middle_mark = (tokenizer.special_id(s.token) for s in template.closing())
    room = max(budget - len(head) - len(opening) - 2, 0)
    if repo is not None and room < NEIGHBOURHOOD_TOKENS and path is not None:
        # Too small for the repository framing: the plain single-file prompt.
        return build_fim_prompt(tokenizer, template, prefix, suffix, budget, None)

    prefix_ids, prefix_cut = tokenizer.tail(prefix, room)
    suffix_ids, suffix_cut = tokenizer.head(suffix, room)
    file_need = min(len(prefix_ids) + len(suffix_ids), room)
    chosen, snippet_ids = choose_snippets(
        tokenizer, template, repo.snippets if repo and path else [], room - file_floor(file_need, room), comment
    )
    keep_prefix, keep_suffix = split_budget(len(prefix_ids), len(suffix_ids), room - len(snippet_ids))
    prefix_cut = prefix_cut or keep_prefix < len(prefix_ids)
    suffix_cut = suffix_cut or keep_suffix < len(suffix_ids)
    prefix_ids = prefix_ids[len(prefix_ids) - keep_prefix :]
    suffix_ids = suffix_ids[:keep_suffix]
    ids = [*head, *snippet_ids, *opening, *prefix_ids, suffix_mark, *suffix_ids, middle_mark]
    return Prompt(ids, len(prefix_ids), len(suffix_ids), prefix_cut, suffix_cut, len(snippet_ids), chosen)


def choose_snippets(
    tokenizer: PromptTokenizer, template: FimTemplate, ranked: list[ContextFile], room: int, comment: str
) -> tuple[list[ContextFile], list[int]]:
    """Take snippets best first while they fit in ``room``; return them in stable order with their ids.

    A snippet that does not fit whole is cut at its end when a useful part fits.
    """
    taken: list[tuple[ContextFile, list[int]]] = []
    left = room
    for snippet in ranked:
        if left < MIN_SNIPPET_TOKENS:
            break
        ids = tokenizer.pieces(template.snippet(snippet.path, snippet.text, comment))
        if len(ids) > left:
            ids = ids[:left]
        taken.append((snippet, ids))
        left -= len(ids)
    taken.sort(key=lambda pair: (SOURCE_ORDER.get(pair[0].source, 9), pair[0].path, pair[0].start_line))
    return [s for s, _ in taken], [i for _, ids in taken for i in ids]


def prompt_summary(prompt: Prompt, repo: RepoContext | None, budget: int, template: str) -> dict:
    """What ``infill-ls prompt --json`` and the ``infill/prompt`` request report besides the text."""
    in_prompt = set(prompt.snippets)
    return {
        "tokens": len(prompt),
        "budget": budget,
        "template": template,
        "prefixTokens": prompt.prefix_tokens,
        "suffixTokens": prompt.suffix_tokens,
        "prefixCut": prompt.prefix_cut,
        "suffixCut": prompt.suffix_cut,
        "contextTokens": prompt.context_tokens,
        "repoName": repo.repo_name if repo else None,
        "path": repo.path if repo else None,
        # Every ranked snippet, best first; those that did not fit the budget say so.
        "snippets": [
            {
                "path": s.path,
                "startLine": s.start_line + 1,
                "lines": s.text.count("\n") + (not s.text.endswith("\n")),
                "score": s.score,
                "source": s.source,
                "inPrompt": s in in_prompt,
            }
            for s in (repo.snippets if repo else [])
        ],
    }
