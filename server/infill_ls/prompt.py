"""Build the token ids sent to the model, within an exact token budget.

The budget is ``contextTokens - maxNewTokens``: room for the generated tokens is
always reserved.  When the file does not fit, the far ends are cut (the start of
the prefix, the end of the suffix), never the text next to the cursor.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .lru import LruDict
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
# When the prefix must be cut, it starts at a line beginning after a point on a grid
# of characters, so the next keystrokes keep the same start (and the engine its KV
# cache) instead of shifting it by a token each time.  The grid step is about this
# share of the kept tokens (in characters, rounded down to a power of two so it
# does not move with each keystroke); a cut costs at most twice that.
STABLE_CUT_SHARE = 1 / 16
# First guess of characters per token when cutting a long text before encoding it.
CHARS_PER_TOKEN_GUESS = 4
# A window of the prefix starts on a grid of this many characters (not at a fixed
# distance from the cursor), so that consecutive keystrokes encode texts that share
# their beginning, and ``encode`` can reuse the tokens of that beginning.
WINDOW_GRID_CHARS = 1024
# Texts at least this long are encoded incrementally: the tokens of the part shared
# with a recently encoded text are kept, up to a token boundary this many characters
# before the first changed character (BPE merges stay inside pre-tokenizer pieces,
# which are much shorter; the margin keeps the boundary clear of any piece that the
# change could extend), and only the rest is encoded.
REUSE_MIN_CHARS = 512
REUSE_MARGIN_CHARS = 64
REUSE_ENTRIES = 4


# A short text with multi-byte characters that the checks at load time encode.
CHECK_SAMPLE = 'import os\n\n\ndef load(path, *, limit=10):\n    """Read it."""\n    return [l.strip() for l in open(path)][:limit]  # é 中 🐍\n'


def byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's stand-in characters (GPT-2 and its descendants) -> the bytes they stand for.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted up to
    U+0100 and beyond, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(shifted)}}


class PromptTokenizer:
    """The model's tokenizer, for text that may contain special-token look-alikes.

    Text is encoded with special tokens split, so a file containing the literal
    string ``<fim_middle>`` cannot inject a control token.  Encodings of recently
    seen strings are cached (an unchanged suffix costs nothing on the next keystroke).
    """

    def __init__(self, tokenizer, cache_size: int = 1024):
        self.tokenizer = tokenizer
        self.vocabulary: dict[str, int] = tokenizer.get_vocab()
        self._cache: LruDict = LruDict(cache_size)  # text -> token ids
        # Recent long encodings as (text, ids, token end offsets), newest last; only
        # fast (Rust) tokenizers report the offsets this needs.
        self._recent: list[tuple[str, list[int], list[int]]] = []
        self.encoded_chars = 0  # characters actually run through the tokenizer (for benchmarks)
        self._backend = self._private_backend()
        self._incremental = self._backend is not None and self._splits_at_token_boundaries()
        self._token_chars = self._characters_per_token()

    def _private_backend(self):
        """A copy of the Rust tokenizer that always splits special-token look-alikes, or
        None for a tokenizer without one.

        transformers sets that flag on its shared Rust tokenizer at every call (a race
        between threads that encode with different flags) and its wrapper costs ~30 µs
        per call and a per-id type check per decode; the copy is called directly.  It is
        used only if it encodes a sample exactly as the wrapper does."""
        shared = getattr(self.tokenizer, "backend_tokenizer", None) if getattr(self.tokenizer, "is_fast", False) else None
        if shared is None:
            return None
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_str(shared.to_str())
        except Exception:  # a component written in Python cannot be copied
            return None
        backend.encode_special_tokens = True
        backend.no_truncation()
        backend.no_padding()
        sample = CHECK_SAMPLE + "<|endoftext|><fim_middle>"
        expected = self.tokenizer(sample, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return backend if backend.encode(sample, add_special_tokens=False).ids == expected else None

    def special_id(self, token: str) -> int:
        return self.vocabulary[token]

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        ids = self._cache.get(text)
        if ids is None:
            if self._incremental and len(text) >= REUSE_MIN_CHARS:
                ids = self._encode_reusing(text)
            elif self._backend is not None:
                ids = self._backend.encode(text, add_special_tokens=False).ids
                self.encoded_chars += len(text)
            else:
                ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                self.encoded_chars += len(text)
            self._cache[text] = ids
        return ids

    def _encode_with_ends(self, text: str) -> tuple[list[int], list[int]]:
        encoding = self._backend.encode(text, add_special_tokens=False)
        self.encoded_chars += len(text)
        return encoding.ids, [end for _, end in encoding.offsets]

    def _splits_at_token_boundaries(self) -> bool:
        """Whether encoding the text after any token boundary gives the rest of the ids.

        True for byte-level BPE (StarCoder, Qwen, DeepSeek); false for tokenizers that
        put a prefix space before every text they encode (SentencePiece "▁", e.g.
        CodeLlama), where a reused beginning would get a stray token at the seam."""
        try:
            ids, ends = self._encode_with_ends(CHECK_SAMPLE)
            return all(
                ids[:i] + self._encode_with_ends(CHECK_SAMPLE[ends[i - 1]:])[0] == ids
                for i in range(1, len(ids))
                if ends[i - 1] < len(CHECK_SAMPLE) and ends[i] != ends[i - 1]
            )
        finally:
            self.encoded_chars = 0

    def _characters_per_token(self) -> list[int] | None:
        """For byte-level BPE: how many characters each token's bytes begin (its UTF-8
        bytes that are not continuation bytes), so the length of a run of tokens is a sum
        instead of a decode.  None for other tokenizers (and if the sums do not add up)."""
        if self._backend is None:
            return None
        alphabet = byte_level_alphabet()
        # Added tokens (FIM and chat markers) are written as they read, and never occur in
        # encoded file text anyway (special tokens are split).
        added = set(self._backend.get_added_tokens_decoder().values())
        added_text = {token.content for token in added}
        counts = [0] * (max(self.vocabulary.values(), default=-1) + 1)
        for token, token_id in self.vocabulary.items():
            if token in added_text:
                counts[token_id] = len(token)
            elif not all(ch in alphabet for ch in token):
                return None  # not byte-level (SentencePiece's "▁", WordPiece's "##")
            else:
                counts[token_id] = sum(alphabet[ch] & 0xC0 != 0x80 for ch in token)
        ids = self._backend.encode(CHECK_SAMPLE, add_special_tokens=False).ids
        return counts if sum(counts[i] for i in ids) == len(CHECK_SAMPLE) else None

    def characters_in(self, ids: list[int]) -> int:
        """Length of the text of ``ids`` (a run that starts at a character boundary)."""
        if self._token_chars is not None:
            return sum(map(self._token_chars.__getitem__, ids))
        return len(self.decode(ids))

    def _encode_reusing(self, text: str) -> list[int]:
        """``text``'s ids, keeping the tokens of the longest beginning shared with a recent text."""
        best, shared = None, 0
        for entry in self._recent:
            common = common_prefix_length(entry[0], text)
            if common > shared:
                best, shared = entry, common
        ids, ends = [], []
        if best is not None:
            old_ids, old_ends = best[1], best[2]
            # The last token that ends by the margin, and after which a new token starts
            # (two tokens of one multi-byte character share their offsets).
            keep = bisect.bisect_right(old_ends, shared - REUSE_MARGIN_CHARS)
            while keep > 0 and keep < len(old_ends) and old_ends[keep] == old_ends[keep - 1]:
                keep -= 1
            ids, ends = old_ids[:keep], old_ends[:keep]
        boundary = ends[-1] if ends else 0
        rest_ids, rest_ends = self._encode_with_ends(text[boundary:])
        ids = ids + rest_ids
        ends = ends + [boundary + end for end in rest_ends]
        self._recent = [entry for entry in self._recent if entry is not best][-(REUSE_ENTRIES - 1):] + [(text, ids, ends)]
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
        if self._backend is not None:  # the same text: no clean-up is asked for
            return self._backend.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def tail(self, text: str, limit: int) -> tuple[list[int], bool]:
        """The last ``limit`` tokens of ``text`` and whether anything was cut."""
        return self._window(text, limit, from_end=True)

    def head(self, text: str, limit: int) -> tuple[list[int], bool]:
        """The first ``limit`` tokens of ``text`` and whether anything was cut."""
        return self._window(text, limit, from_end=False)

    def stable_tail(self, text: str, limit: int, longer_tail: list[int] | None = None) -> tuple[list[int], bool]:
        """Like ``tail``, but a cut starts at a stable place: the first line beginning
        after a grid point (see STABLE_CUT_SHARE), as long as that keeps at least 7/8
        of ``limit`` tokens (else the exact tail).  ``longer_tail``: ``tail(text, n)[0]``
        for an n > ``limit`` when the caller has it (its end is the exact tail)."""
        if longer_tail is not None and len(longer_tail) > limit:
            exact, cut = longer_tail[len(longer_tail) - limit:], True
        else:
            exact, cut = self.tail(text, limit)
        if not cut or not exact:
            return exact, cut
        kept_chars = self.characters_in(exact)
        step = 1 << max(int(kept_chars * STABLE_CUT_SHARE), 1).bit_length() - 1
        grid = -(-(len(text) - kept_chars) // step) * step
        while grid < len(text):
            line_start = text.find("\n", grid) + 1
            start = line_start if 0 < line_start <= grid + step else grid
            ids = self.encode(text[start:])
            if len(ids) < limit - limit // 8:
                break
            if len(ids) <= limit:
                return ids, True
            grid += step
        return exact, True

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
            if whole:
                piece = text
            elif from_end:
                # Start on the grid (at least ``chars`` back): the next keystroke's window
                # starts at the same place, so encode() reuses this one's tokens.
                start = (len(text) - chars) // WINDOW_GRID_CHARS * WINDOW_GRID_CHARS
                piece = text[start:]
            else:
                piece = text[:chars]
            ids = self.encode(piece)
            if whole and len(ids) <= limit:
                return ids, False
            # One extra token guards the cut edge, whose token may be partial.
            if len(ids) > limit + 1 or whole:
                return (ids[-limit:] if from_end else ids[:limit]), True
            chars *= 2


def common_prefix_length(a: str | bytes, b: str | bytes) -> int:
    """Length of the longest common beginning of ``a`` and ``b`` (binary search on C-speed slices)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


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
    # After a long prefix the suffix keeps at most its share (split_budget): encode no more
    # (a training sample encoded 4x the suffix it kept).  A short prefix leaves the suffix
    # the rest of the room; asking for all of it keeps the window, and so the tokenizer's
    # cache, the same from one keystroke to the next.
    suffix_room = int(room * SUFFIX_SHARE) if len(prefix_ids) >= room - int(room * SUFFIX_SHARE) else room
    suffix_ids, suffix_cut = tokenizer.head(suffix, suffix_room)
    file_need = min(len(prefix_ids) + len(suffix_ids), room)
    chosen, snippet_ids = choose_snippets(
        tokenizer, template, repo.snippets if repo and path else [], room - file_floor(file_need, room), comment
    )
    keep_prefix, keep_suffix = split_budget(len(prefix_ids), len(suffix_ids), room - len(snippet_ids))
    prefix_cut = prefix_cut or keep_prefix < len(prefix_ids)
    suffix_cut = suffix_cut or keep_suffix < len(suffix_ids)
    if prefix_cut:
        prefix_ids, _ = tokenizer.stable_tail(prefix, keep_prefix, prefix_ids)
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
