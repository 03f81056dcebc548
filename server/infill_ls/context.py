"""Where a prompt's repository context comes from, and which of it is worth the tokens.

Candidates, in the order a user would look: open documents (the editor's tabs,
mirrored by didOpen/didChange), places edited recently, then files on disk near
the current file (its folder and the modules it imports).  Each candidate file is
cut into overlapping windows of lines; a window's score is the Jaccard similarity
of its identifier set with the identifiers around the cursor (the neighbouring-
tabs approach of GitHub Copilot), halved for another language.  The best windows
go to prompt.py, which spends the token budget on them best first.

Reading the disk is guarded: only files inside the workspace folders the client
declared (symlinks resolved, so no link or ``..`` leads out), never what
``.gitignore`` ignores, never binary files, files above ``MAX_FILE_BYTES`` or
secret-looking files (``SECRET_PATTERNS``, plus the ``contextExclude`` setting).
Scanning and reading run on a background thread; a completion only uses what is
already loaded, so it never waits for the disk.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import pathspec

from .lru import LruDict
from .postprocess import CursorContext
from .prompt import ContextFile, RepoContext

log = logging.getLogger(__name__)

# Files that may hold credentials; never read, whatever the other settings say.
# Gitignore syntax, matched against workspace-relative paths.
SECRET_PATTERNS = (
    ".env", ".env.*", "*.env", ".envrc",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.gpg", "*.asc",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".ssh/", ".gnupg/", ".aws/", ".docker/config.json",
    "credentials", "credentials.*", "*credentials*.json", "*.credentials", ".git-credentials",
    ".netrc", ".npmrc", ".pypirc", ".pgpass", ".htpasswd", "secrets.*", "*.secret", "*.secrets",
    "*.tfstate", "*.tfvars", "service-account*.json",
)
# Folders that are never source worth showing (besides what .gitignore says).
DEFAULT_EXCLUDE = (".git/", ".hg/", ".svn/", "node_modules/", "__pycache__/", ".venv/", "venv/", ".tox/",
                   ".mypy_cache/", ".pytest_cache/", "*.min.js", "*.map")
MAX_FILE_BYTES = 1_000_000
# Directory entries a scan looks at, per eligible file allowed: bounds a scan of a
# folder that is mostly ignored content.
VISITS_PER_FILE = 20

WINDOW_LINES = 50  # a snippet is a window of this many lines…
WINDOW_STEP = 25  # …starting every WINDOW_STEP lines (windows overlap by half)
assert WINDOW_LINES == 2 * WINDOW_STEP, "cut_windows builds a window's names from its two halves"
QUERY_LINES_BEFORE = 25  # the code around the cursor the windows are compared with
QUERY_LINES_AFTER = 5
OTHER_LANGUAGE_WEIGHT = 0.5
RECENT_EDIT_BONUS = 0.05  # a window around a place edited lately beats an equal one
MIN_SCORE = 0.02  # below this a window shares next to nothing with the cursor's code
MAX_WINDOWS_PER_FILE = 2
MAX_SNIPPETS = 12  # ranked snippets handed to the prompt builder, which stops at its budget
NEIGHBOUR_FILES = 40  # files on disk considered per request: imports, then the folder's newest
RECENT_EDITS = 16
REFRESH_SECONDS = 2.0  # how often a folder's files are checked for changes on disk

# Names of two characters or more: one-letter names say nothing about a window.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")
# Words every file has; they say nothing about what a window is about.
STOP_WORDS = frozenset(
    "self this def return if else elif for while in is not and or import from as class pass none true false "
    "None True False const let var function new public private protected static void int str bool string "
    "try except finally catch throw raise with yield await async break continue the a an of to end do then "
    "fn pub mut use impl struct enum match type interface package func go nil null undefined export default "
    "include define ifdef endif".split()
)

LANGUAGE_BY_SUFFIX = {
    ".py": "python", ".pyi": "python", ".js": "js", ".jsx": "js", ".mjs": "js", ".cjs": "js", ".ts": "js",
    ".tsx": "js", ".c": "c", ".h": "c", ".cc": "c", ".cpp": "c", ".hpp": "c", ".cxx": "c",
    ".java": "jvm", ".kt": "jvm", ".scala": "jvm", ".rs": "rust", ".go": "go", ".rb": "ruby", ".lua": "lua",
}


@lru_cache(maxsize=4096)
def language_of(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return LANGUAGE_BY_SUFFIX.get(suffix, suffix)


def identifiers(text: str) -> frozenset[str]:
    return frozenset(IDENTIFIER.findall(text)).difference(STOP_WORDS)


@dataclass(frozen=True)
class Window:
    start: int  # 0-based first line
    text: str
    tokens: frozenset[str]


def cut_windows(text: str) -> list[Window]:
    lines = text.splitlines(keepends=True)
    starts = range(0, max(len(lines) - WINDOW_LINES, 0) + 1, WINDOW_STEP) if lines else []
    # Windows overlap by half: each half's names are found once and a window's are the
    # union of its two halves (a name never spans lines).  Half of the regex work, which
    # was most of building a workspace's windows (and of making training samples).
    halves = {}

    def names_of_half(start: int) -> frozenset[str]:
        if start not in halves:
            halves[start] = identifiers("".join(lines[start : start + WINDOW_STEP]))
        return halves[start]

    windows = []
    for start in starts:
        chunk = "".join(lines[start : start + WINDOW_LINES])
        if chunk.strip():
            windows.append(Window(start, chunk, names_of_half(start) | names_of_half(start + WINDOW_STEP)))
    last = len(lines) - WINDOW_LINES
    if last > 0 and last % WINDOW_STEP:  # the file's tail, so its last lines are reachable
        chunk = "".join(lines[last:])
        windows.append(Window(last, chunk, identifiers(chunk)))
    return windows


def window_around(text: str, line: int) -> Window:
    lines = text.splitlines(keepends=True)
    start = max(0, min(line - WINDOW_LINES // 2, len(lines) - WINDOW_LINES))
    chunk = "".join(lines[start : start + WINDOW_LINES])
    return Window(start, chunk, identifiers(chunk))


# The word the cursor is in: left out of the query (see query_tokens).
WORD_BEFORE_CURSOR = re.compile(r"[A-Za-z0-9_]+$")
WORD_AFTER_CURSOR = re.compile(r"^[A-Za-z0-9_]+")


def query_tokens(context: CursorContext) -> frozenset[str]:
    """Identifiers of the lines around the cursor, but not of the word the cursor is in:
    a half-typed word matches nothing, and without it the query stays the same while a
    word is typed, so the ranking of the last keystroke is reused (ranked_windows)."""
    # maxsplit: split only the lines used, not the whole file, on every keystroke.
    before = context.prefix.rsplit("\n", QUERY_LINES_BEFORE)[-QUERY_LINES_BEFORE:]
    after = context.suffix.split("\n", QUERY_LINES_AFTER)[:QUERY_LINES_AFTER]
    before[-1] = WORD_BEFORE_CURSOR.sub("", before[-1])
    after[0] = WORD_AFTER_CURSOR.sub("", after[0])
    return identifiers("\n".join(before + after))


# A file's windows are a cached list that changes only with its text, so an inverted index
# (identifier -> positions of the windows holding it) can serve many requests: scoring then
# visits only the windows that share an identifier with the query, ~10x fewer operations
# than a set intersection per window (1,150 windows: 1.4 -> 0.13 ms).  Building one costs a
# few direct passes, so a list gets its index the second time it is scored; lists shorter
# than INDEX_MIN_WINDOWS (recent-edit windows, made per request) are always scored directly.
INDEX_MIN_WINDOWS = 16
INDEXED_LISTS = 128  # ~150 kB each for a 2,000-line file: at most ~20 MB
_indexes: LruDict = LruDict(INDEXED_LISTS)  # id(list) -> (the list, its index or None)
_indexes_lock = threading.Lock()


def window_index(windows: list[Window]) -> dict[str, list[int]] | None:
    """The inverted index of a window list scored before, else None (and the list is noted)."""
    with _indexes_lock:  # an entry holds its list, so the list's id cannot be reused meanwhile
        entry = _indexes.get(id(windows))
        if entry is None or entry[0] is not windows:
            _indexes[id(windows)] = (windows, None)
            return None
        if entry[1] is not None:
            return entry[1]
    index: dict[str, list[int]] = {}
    for position, window in enumerate(windows):
        for token in window.tokens:
            index.setdefault(token, []).append(position)
    with _indexes_lock:
        _indexes[id(windows)] = (windows, index)
    return index


# Candidates' window lists that stand for "nothing loaded yet": one shared, never-changed
# list, so that such a candidate is the same from one keystroke to the next.
NO_WINDOWS: list[Window] = []
# A ranking is kept while the query stays at least this similar (Jaccard) to the query it
# was made for (``sticky``, the server's requests): finishing a word changes ~1 of ~100
# identifiers, and a new ranking cost ~3 ms on a large workspace and, when it changed the
# snippets, a prefill of the whole prompt (bench/typing.py --workspace: 11 of 74 prompts
# mostly new before, 5-6 of 55-70 since; 2 without a workspace).  Moving elsewhere re-ranks.
STICKY_QUERY_SIMILARITY = 0.8
# (the candidates' identities, the query it was made for) of the last ranking, its windows
# best first, and the candidates (which keep their lists, and so the ids in the key, alive).
_last_ranking: tuple[tuple, frozenset[str], list, list] | None = None


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two identifier sets."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def ranked_windows(candidates: list["Candidate"], query: frozenset[str], sticky: bool = False,
                   indexed: bool = True) -> list[tuple[float, str, int, str, Window]]:
    """``score_windows``, best first.  The last ranking is reused for the same candidates'
    window lists (cached lists) and the same query (it stays the same while a word is
    typed: query_tokens), or with ``sticky`` a query at least STICKY_QUERY_SIMILARITY like
    the one it was made for."""
    global _last_ranking
    key = tuple((c.path, c.source, c.weight, id(c.windows)) for c in candidates)
    last = _last_ranking
    if last is not None and last[0] == key:
        if last[1] == query or (sticky and similarity(last[1], query) >= STICKY_QUERY_SIMILARITY):
            return last[2]
    scored = score_windows(candidates, query, indexed)
    scored.sort(key=lambda item: (-item[0], item[1], item[2]))
    _last_ranking = (key, query, scored, candidates)
    return scored


def score_windows(candidates, query: frozenset[str], indexed: bool = True) -> list[tuple[float, str, int, str, Window]]:
    """(score, path, start line, source, window) for each window scoring at least MIN_SCORE:
    Jaccard similarity of identifiers with the query, times the file's weight, plus a bonus
    for windows around recent edits.  In candidate order, then window order.  ``indexed``:
    long lists go through their inverted indexes (window_index); off where lists are rarely
    scored twice soon (training samples: building the indexes was ~40 % of their time)."""
    scored = []
    size = len(query)
    for c in candidates:
        bonus = RECENT_EDIT_BONUS if c.source == "recent" else 0.0
        index = window_index(c.windows) if indexed and len(c.windows) >= INDEX_MIN_WINDOWS else None
        if index is not None:
            shared = sorted(Counter(chain.from_iterable(index.get(token, ()) for token in query)).items())
        else:
            shared = [(position, len(query & window.tokens)) for position, window in enumerate(c.windows)]
        for position, common in shared:
            if common:
                window = c.windows[position]
                score = common / (size + len(window.tokens) - common) * c.weight + bonus
                if score >= MIN_SCORE:
                    scored.append((score, c.path, window.start, c.source, window))
    return scored


@dataclass(frozen=True)
class OpenDocument:
    uri: str
    path: Path | None  # file system path, None for untitled buffers
    text: str
    version: int | None
    language: str


def uri_to_path(uri: str) -> Path | None:
    from pygls.uris import to_fs_path

    if not uri.startswith("file:"):
        return None
    path = to_fs_path(uri)
    return Path(path) if path else None


def workspace_folders(workspace) -> list[Path]:
    """The folders a client declared (workspaceFolders, else rootUri) as paths."""
    uris = [folder.uri for folder in workspace.folders.values()]
    if not uris and workspace.root_uri:
        uris = [workspace.root_uri]
    return [p for p in (uri_to_path(u) for u in uris) if p is not None]


def snapshot_documents(workspace) -> list[OpenDocument]:
    """The open documents of a pygls workspace, taken on the event loop (cheap: no copies).

    pygls keys documents by unquoted URI; ``gather`` compares URIs the same way.
    """
    return [
        OpenDocument(key, Path(doc.path) if doc.uri.startswith("file:") and doc.path else None,
                     doc.source, doc.version, doc.language_id or "")
        for key, doc in list(workspace.text_documents.items())
    ]


class PathRules:
    """Which workspace-relative paths may be read: not secret, not excluded, not gitignored."""

    def __init__(self, extra_exclude: tuple[str, ...] = ()):
        self.secret = pathspec.GitIgnoreSpec.from_lines(SECRET_PATTERNS)
        self.exclude = pathspec.GitIgnoreSpec.from_lines([*DEFAULT_EXCLUDE, *extra_exclude])

    def refusal(self, rel: str, is_dir: bool = False) -> str | None:
        """Why ``rel`` must not be read, or None."""
        probe = rel + "/" if is_dir else rel
        if self.secret.match_file(probe):
            return "secret"
        if self.exclude.match_file(probe):
            return "excluded"
        return None


def inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


class Workspace:
    """The workspace folders on disk: a bounded background scan and safe, cached reading."""

    def __init__(self, folders: list[Path], max_files: int, rules: PathRules):
        self.roots = [f.resolve() for f in folders if f.is_dir()]
        self.max_files = max_files
        self.rules = rules
        self.files: dict[Path, dict[str, float]] = {root: {} for root in self.roots}  # rel -> mtime
        self.by_name: dict[str, list[tuple[Path, str]]] = {}
        self.by_folder: dict[tuple[Path, str], list[str]] = {}
        self.ignores: dict[Path, dict[str, pathspec.GitIgnoreSpec]] = {root: {} for root in self.roots}
        self.skipped: Counter[str] = Counter()
        self.state = "idle"
        self.truncated = False
        self.scan_ms: float | None = None
        self.error: str | None = None
        self.loaded: OrderedDict[tuple[Path, str], tuple[int, int, list[Window]]] = OrderedDict()
        self._checked: dict[tuple[Path, str], float] = {}
        self._neighbours: LruDict = LruDict(64)  # (root, rel, import targets) -> neighbour files
        self._import_scans: LruDict = LruDict(16)  # rel -> KeywordLinesAround (request path only)
        self._pending: set = set()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infill-context")
        self._scanned = threading.Event()

    # ----- scanning -----

    def start(self) -> None:
        self.state = "scanning"
        self._worker.submit(self._scan_logged)

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the scan has finished (False at once when none was started)."""
        return self.state != "idle" and self._scanned.wait(timeout)

    def _scan_logged(self) -> None:
        try:
            self.scan()
        except Exception as error:  # a broken folder must not take the server down
            log.exception("workspace scan failed")
            self.state, self.error = "error", f"{type(error).__name__}: {error}"
        finally:
            self._scanned.set()
        log.info("workspace scan: %s", self.summary())

    def scan(self) -> None:
        started = time.perf_counter()
        count = 0
        visits_left = self.max_files * VISITS_PER_FILE
        for root in self.roots:
            ignores = self.ignores[root]
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                here = Path(dirpath)
                rel_dir = "" if here == root else here.relative_to(root).as_posix()
                if ".gitignore" in filenames:
                    ignores[rel_dir] = self._read_gitignore(here / ".gitignore")
                kept = []
                for name in sorted(dirnames):
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    reason = self._refusal(rel, ignores, is_dir=True)
                    if reason is None and (here / name).is_symlink():
                        reason = "symlink"  # not followed: it may lead outside the workspace
                    if reason:
                        self.skipped[reason] += 1
                    else:
                        kept.append(name)
                dirnames[:] = kept
                for name in sorted(filenames):
                    visits_left -= 1
                    if count >= self.max_files or visits_left <= 0:
                        self.truncated = True
                        break
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    reason = self._refusal(rel, ignores) or self._stat_refusal(root, here / name)
                    if reason:
                        self.skipped[reason] += 1
                        continue
                    self.files[root][rel] = (here / name).stat().st_mtime
                    self.by_name.setdefault(name, []).append((root, rel))
                    self.by_folder.setdefault((root, rel_dir), []).append(rel)
                    count += 1
                if self.truncated:
                    break
        self.scan_ms = (time.perf_counter() - started) * 1000
        self.state = "ready"

    @staticmethod
    def _read_gitignore(path: Path) -> pathspec.GitIgnoreSpec:
        try:
            return pathspec.GitIgnoreSpec.from_lines(path.read_text(encoding="utf-8", errors="replace").splitlines())
        except OSError:
            return pathspec.GitIgnoreSpec.from_lines([])

    def refusal(self, root: Path, rel: str) -> str | None:
        """Why a file (an open document, maybe not on disk yet) must stay out, by its path."""
        return self._refusal(rel, self.ignores.get(root, {}))

    def _refusal(self, rel: str, ignores: dict[str, pathspec.GitIgnoreSpec], is_dir: bool = False) -> str | None:
        reason = self.rules.refusal(rel, is_dir)
        if reason:
            return reason
        # A .gitignore applies to paths below its folder, relative to that folder.
        for base, spec in ignores.items():
            if base and not rel.startswith(base + "/"):
                continue
            below = rel[len(base) + 1 :] if base else rel
            if spec.match_file(below + "/" if is_dir else below):
                return "gitignored"
        return None

    def _stat_refusal(self, root: Path, path: Path) -> str | None:
        """Checks on the file itself: a link leading out of the workspace, size."""
        try:
            real = path.resolve(strict=True)
            if not inside(real, root):
                return "outside"
            size = real.stat().st_size
        except (OSError, RuntimeError):
            return "unreadable"
        if not real.is_file():
            return "unreadable"
        return "large" if size > MAX_FILE_BYTES else None

    # ----- locating and reading -----

    def locate(self, path: Path) -> tuple[Path, str] | None:
        """(workspace root, relative path) for a path inside a workspace folder."""
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            return None
        for root in self.roots:
            if inside(real, root):
                return root, real.relative_to(root).as_posix()
        return None

    def allowed(self, root: Path, rel: str) -> bool:
        """Whether the scan accepted this file (secret, ignored, large, outside files are not listed)."""
        return rel in self.files.get(root, {})

    def read(self, root: Path, rel: str) -> str | None:
        """The text of a listed file, checked again at read time; None for binary or refused files."""
        path = root / rel
        if not self.allowed(root, rel) or self._stat_refusal(root, path):
            return None
        try:
            data = path.resolve(strict=True).read_bytes()[: MAX_FILE_BYTES + 1]
        except OSError:
            return None
        if len(data) > MAX_FILE_BYTES or b"\0" in data[:8192]:
            self.skipped["binary" if b"\0" in data[:8192] else "large"] += 1
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped["binary"] += 1
            return None

    def windows(self, root: Path, rel: str) -> list[Window] | None:
        """Windows of a file already loaded (never touches the disk)."""
        entry = self.loaded.get((root, rel))
        return entry[2] if entry else None

    def load(self, root: Path, rel: str) -> None:
        """Read and window a file unless the cached copy is current (runs on the background thread)."""
        key = (root, rel)
        self._checked[key] = time.monotonic()
        try:
            stat = (root / rel).stat()
        except OSError:
            self.loaded.pop(key, None)
            return
        entry = self.loaded.get(key)
        if entry and entry[:2] == (stat.st_mtime_ns, stat.st_size):
            return
        text = self.read(root, rel)
        self.loaded[key] = (stat.st_mtime_ns, stat.st_size, cut_windows(text) if text else [])
        while len(self.loaded) > self.max_files:
            self.loaded.popitem(last=False)

    def load_later(self, keys: list[tuple[Path, str]]) -> None:
        """Schedule loading of files not loaded or not checked lately; returns at once."""
        now = time.monotonic()
        stale = [k for k in keys if now - self._checked.get(k, 0.0) > REFRESH_SECONDS]
        with self._lock:
            stale = [k for k in stale if k not in self._pending]
            self._pending.update(stale)
        if stale:
            self._worker.submit(self._load_all, stale)

    def _load_all(self, keys: list[tuple[Path, str]]) -> None:
        for key in keys:
            try:
                self.load(*key)
            except Exception:
                log.exception("cannot load %s", key[1])
            finally:
                with self._lock:
                    self._pending.discard(key)

    def prefetch(self, root: Path, rel: str, text: str) -> None:
        """After the scan (the worker runs jobs in order), load what ``rel`` will want."""
        self._worker.submit(lambda: self._load_all(self.neighbours(root, rel, text)))

    def load_now(self, keys: list[tuple[Path, str]]) -> None:
        """Load synchronously (the command line, which has no editor to keep responsive)."""
        for key in keys:
            self.load(*key)

    # ----- near the current file -----

    def neighbours(self, root: Path, rel: str, text: str, cursor: int | None = None) -> list[tuple[Path, str]]:
        """Files worth reading for ``rel``: the modules it imports, then its folder's newest files.
        ``cursor``: the offset being typed at, on the request path (see imported_paths)."""
        if not self._scanned.is_set():
            return []
        # The file lists do not change after the scan: the answer depends on the imports only
        # (and a keystroke seldom changes them; matching them to files cost ~1 ms per request).
        targets = imported_paths(rel, text, cursor, self._import_scans)
        key = (root, rel, targets)
        with self._lock:
            cached = self._neighbours.get(key)
        if cached is not None:
            return cached
        found: list[tuple[Path, str]] = []
        for target in targets:
            for candidate_root, candidate in self.by_name.get(PurePosixPath(target).name, []):
                if (candidate == target or candidate.endswith("/" + target)) and candidate_root == root:
                    found.append((root, candidate))
        folder = PurePosixPath(rel).parent.as_posix()
        files = self.files.get(root, {})
        same_folder = sorted(self.by_folder.get((root, "" if folder == "." else folder), []), key=lambda f: -files[f])
        unique = list(dict.fromkeys(found + [(root, f) for f in same_folder]))
        neighbours = [k for k in unique if k[1] != rel][:NEIGHBOUR_FILES]
        with self._lock:
            self._neighbours[key] = neighbours
        return neighbours

    def summary(self) -> dict:
        return {
            "state": self.state,
            "folders": [str(r) for r in self.roots],
            "files": sum(len(f) for f in self.files.values()),
            "loaded": len(self.loaded),
            "skipped": dict(sorted(self.skipped.items())),
            "truncated": self.truncated,
            "scanMs": round(self.scan_ms, 1) if self.scan_ms is not None else None,
            "error": self.error,
        }

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


PY_IMPORT = re.compile(r"^\s*(?:from\s+(\.*[\w.]*)\s+import|import\s+([\w.]+(?:\s*,\s*[\w.]+)*))", re.M)
JS_IMPORT = re.compile(r"""(?:from\s+|require\(\s*|import\s*\(?\s*)['"](\.{1,2}/[^'"]+)['"]""")
C_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# Per language: the pattern of a local import and the words its lines must contain.
IMPORTS = {
    "python": (PY_IMPORT, ("import",)),
    "js": (JS_IMPORT, ("from", "require", "import")),
    "c": (C_INCLUDE, ("include",)),
}
JS_EXTENSIONS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", "/index.ts", "/index.js")


def lines_containing(text: str, words: tuple[str, ...]) -> str:
    """The lines of ``text`` that contain one of ``words``, in order, joined by newlines.

    The import patterns run on these lines only: a MULTILINE '^' pattern over a whole
    200 kB file cost ~1 ms per keystroke, ``str.find`` for a word ~0.1 ms."""
    spans = set()
    for word in words:
        found = text.find(word)
        while found >= 0:
            end = text.find("\n", found)
            end = len(text) if end < 0 else end
            spans.add((text.rfind("\n", 0, found) + 1, end))
            found = text.find(word, end)
    return "\n".join(text[start:end] for start, end in sorted(spans))


class KeywordLinesAround:
    """``lines_containing`` of a document keystroke after keystroke, rescanning only the
    cursor's line: the text before that line and the text after it are compared with the
    last call's (a comparison of equal strings is a memcmp, ~30x cheaper than the word
    search over a 200 kB file that it saves) and their lines reused when unchanged."""

    def __init__(self):
        self._parts: dict[str, tuple[str, str]] = {}  # "before"/"after" -> (text, its lines)

    def __call__(self, text: str, cursor: int, words: tuple[str, ...]) -> str:
        line_start = text.rfind("\n", 0, cursor) + 1
        line_end = text.find("\n", cursor)
        line_end = len(text) if line_end < 0 else line_end
        found = [
            self._reused("before", text[:line_start], words),
            lines_containing(text[line_start:line_end], words),
            self._reused("after", text[line_end:], words),
        ]
        # No line crosses the parts (they split at line breaks), and no found line is empty.
        return "\n".join(lines for lines in found if lines)

    def _reused(self, name: str, part: str, words: tuple[str, ...]) -> str:
        cached = self._parts.get(name)
        if cached is None or cached[0] != part:
            cached = self._parts[name] = (part, lines_containing(part, words))
        return cached[1]


def imported_paths(rel: str, text: str, cursor: int | None = None, scans: LruDict | None = None) -> tuple[str, ...]:
    """Workspace-relative path endings of the local modules a file imports (Python, JS/TS, C).

    With the ``cursor`` offset and ``scans`` (rel -> KeywordLinesAround), the text around
    the cursor's line is scanned only when it changed since the last call for ``rel``."""
    language = language_of(rel)
    if language not in IMPORTS:
        return ()
    words = IMPORTS[language][1]
    if cursor is None or scans is None:
        lines = lines_containing(text, words)
    else:
        scan = scans.get(rel)
        if scan is None:
            scan = scans[rel] = KeywordLinesAround()
        lines = scan(text, cursor, words)
    return paths_imported_by(rel, language, lines)


@lru_cache(maxsize=64)
def paths_imported_by(rel: str, language: str, import_lines: str) -> tuple[str, ...]:
    """``imported_paths`` from the lines that may import (cached: they seldom change while typing)."""
    folder = PurePosixPath(rel).parent
    found = IMPORTS[language][0].findall(import_lines)
    paths: list[str] = []
    if language == "python":
        for relative, absolute in found:
            for module in ([relative] if relative else [m.strip() for m in absolute.split(",")]):
                dots = len(module) - len(module.lstrip("."))
                parts = [p for p in module.lstrip(".").split(".") if p]
                base = folder
                for _ in range(max(dots - 1, 0)):
                    base = base.parent
                stem = "/".join(parts)
                if dots:
                    stem = (base / stem).as_posix() if stem else base.as_posix()
                if stem and stem != ".":
                    paths += [f"{stem}.py", f"{stem}/__init__.py"]
    elif language == "js":
        for target in found:
            joined = os.path.normpath((folder / target).as_posix())
            paths += [joined + ext for ext in ("", *JS_EXTENSIONS)]
    elif language == "c":
        for target in found:
            paths += [os.path.normpath((folder / target).as_posix()), target]
    return tuple(p[2:] if p.startswith("./") else p for p in paths if not p.startswith(".."))


class RecentEdits:
    """The last places edited in each document (didChange ranges), newest last."""

    def __init__(self, size: int = RECENT_EDITS):
        self.places: deque[tuple[str, int]] = deque(maxlen=size)

    def record(self, uri: str, line: int) -> None:
        place = (uri, line)
        # Typing on one line is one place, not a dozen.
        if self.places and self.places[-1][0] == uri and abs(self.places[-1][1] - line) <= 2:
            self.places.pop()
        self.places.append(place)


@dataclass
class Candidate:
    """The windows of one file, from one source, with the weight of its language."""

    path: str
    source: str
    windows: list[Window]
    weight: float


class ContextProvider:
    """Gathers the repository context of a cursor: the server's and the command line's entry point."""

    def __init__(self, folders: list[Path], max_files: int = 5000, exclude: tuple[str, ...] = (), enabled: bool = True):
        self.rules = PathRules(tuple(exclude))
        self.enabled = enabled
        self.workspace = Workspace(folders, max_files, self.rules)
        self.recent = RecentEdits()
        self._doc_windows: LruDict = LruDict(64)  # (uri, version) -> windows of an open document
        self._recent_cache: LruDict = LruDict(64)  # (uri, version, edited lines) -> windows around them
        self._open_files: dict[str, tuple[Path, str, bool] | None] = {}  # uri -> (root, rel, refused)
        if enabled and self.workspace.roots:
            self.workspace.start()

    @classmethod
    def from_settings(cls, folders: list[Path], settings) -> "ContextProvider":
        return cls(folders, settings.maxContextFiles, tuple(settings.contextExclude), settings.contextFiles)

    def describe(self) -> dict:
        return {"enabled": self.enabled, **self.workspace.summary()}

    def note_change(self, uri: str, changes) -> None:
        """Remember where a didChange edited (incremental changes carry a range)."""
        for change in changes:
            change_range = getattr(change, "range", None)
            if change_range is not None:
                self.recent.record(unquote(uri), change_range.start.line)

    def gather_now(self, path: Path, context: CursorContext) -> RepoContext | None:
        """``gather`` for the command line: waits for the scan and reads what it needs."""
        self.workspace.wait()
        document = OpenDocument(path.resolve().as_uri(), path, context.prefix + context.suffix, None, "")
        located = self.workspace.locate(path)
        if located and self.enabled:
            self.workspace.load_now(self.workspace.neighbours(*located, document.text))
        return self.gather(document.uri, context, [document])

    def note_open(self, uri: str, documents: list[OpenDocument]) -> None:
        """Start loading what a newly opened file will want (no waiting)."""
        document = next((d for d in documents if d.uri == unquote(uri)), None)
        located = document and document.path and self.workspace.locate(document.path)
        if self.enabled and located:
            self.workspace.prefetch(*located, document.text)

    def gather(self, uri: str, context: CursorContext, documents: list[OpenDocument]) -> RepoContext | None:
        """Ranked snippets for a cursor in ``uri``; None when the file is in no workspace folder."""
        uri = unquote(uri)
        current = next((d for d in documents if d.uri == uri), None)
        located = current and self._open_file(current)  # cached: resolving a path costs ~0.3 ms a keystroke
        if not located:
            return None
        root, rel, _ = located
        repo = RepoContext(repo_name=root.name, path=rel)
        if not self.enabled:
            return repo
        query = query_tokens(context)
        if query:
            repo.snippets = self.rank(self.candidates(root, rel, current, documents, context), query, context, sticky=True)
        return repo

    def candidates(self, root: Path, rel: str, current: OpenDocument, documents: list[OpenDocument], context: CursorContext):
        language = language_of(rel)
        weight = lambda path: 1.0 if language_of(path) == language else OTHER_LANGUAGE_WEIGHT  # noqa: E731
        open_paths = {rel}
        recent_by_uri: dict[str, list[int]] = {}
        for uri, line in list(self.recent.places):  # a copy: the event loop appends meanwhile
            recent_by_uri.setdefault(uri, []).append(line)
        # Open documents only once the scan has read every .gitignore: an ignored
        # file open in the editor must not slip in before.
        scanned = self.workspace.wait(0)
        for document in documents if scanned else []:
            if document is current:
                continue
            located = self._open_file(document)
            if not located or located[0] != root:
                continue
            other, refused = located[1], located[2]
            open_paths.add(other)
            # The same rules as for files on disk (an editor may show a binary file as text).
            if refused or len(document.text) > MAX_FILE_BYTES or "\0" in document.text[:8192]:
                continue
            recent = self._recent_windows(document, tuple(recent_by_uri.get(document.uri, ())))
            if recent:
                yield Candidate(other, "recent", recent, weight(other))
            yield Candidate(other, "open", self._windows_of(document), weight(other))
        cursor = len(context.prefix)
        neighbours = [k for k in self.workspace.neighbours(root, rel, current.text, cursor) if k[1] not in open_paths]
        self.workspace.load_later(neighbours)
        for key in neighbours:
            yield Candidate(key[1], "workspace", self.workspace.windows(*key) or NO_WINDOWS, weight(key[1]))

    def _recent_windows(self, document: OpenDocument, lines: tuple[int, ...]) -> list[Window]:
        """Windows around recent edits of another open document (cached: the same list while
        neither that document nor the places change)."""
        if not lines:
            return NO_WINDOWS
        key = (document.uri, document.version, lines)
        windows = self._recent_cache.get(key)
        if windows is None:
            windows = self._recent_cache[key] = [window_around(document.text, line) for line in lines]
        return windows

    def _open_file(self, document: OpenDocument) -> tuple[Path, str, bool] | None:
        """(root, relative path, refused by the path rules) of an open document, cached by URI."""
        if document.uri not in self._open_files:
            located = document.path and self.workspace.locate(document.path)
            self._open_files[document.uri] = (*located, self.workspace.refusal(*located) is not None) if located else None
        return self._open_files[document.uri]

    def _windows_of(self, document: OpenDocument) -> list[Window]:
        key = (document.uri, document.version)
        windows = self._doc_windows.get(key)
        if windows is None:
            windows = self._doc_windows[key] = cut_windows(document.text)
        return windows

    @staticmethod
    def rank(candidates, query: frozenset[str], context: CursorContext, sticky: bool = False,
             indexed: bool = True) -> list[ContextFile]:
        """The snippets for ``context``: the best windows, at most MAX_WINDOWS_PER_FILE per
        file, none overlapping another of its file or already near the cursor.  ``indexed``:
        see score_windows."""
        scored = ranked_windows(list(candidates), query, sticky, indexed)
        chosen: list[ContextFile] = []
        taken: dict[str, list[int]] = {}
        seen_text: set[str] = set()
        near_cursor = context.prefix[-20000:] + context.suffix[:20000]
        for score, path, start, source, window in scored:
            starts = taken.setdefault(path, [])
            # The cheap checks first: most windows are another of a file already chosen.
            if len(starts) >= MAX_WINDOWS_PER_FILE or any(abs(start - s) < WINDOW_LINES for s in starts):
                continue
            body = window.text.strip()
            if body in seen_text or body in near_cursor:
                continue
            starts.append(start)
            seen_text.add(body)
            chosen.append(ContextFile(path, window.text, round(score, 4), source, start))
            if len(chosen) >= MAX_SNIPPETS:
                break
        return chosen

    def close(self) -> None:
        self.workspace.close()
