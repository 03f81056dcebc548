"""Collect the training and held-out corpora from permissively licensed Python on this machine.

Sources: the Python standard library (PSF licence) and installed distributions whose
metadata licence is MIT, BSD, Apache-2.0 or PSF.  Each file belongs to a "repo" (a
top-level package), which is the unit of the held-out split: held-out repos are never
trained on, not even by the tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import random
import re
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

# Whole packages kept for evaluation only.
HELD_OUT_REPOS = {"stdlib:email", "stdlib:json", "site:requests", "site:click", "site:attrs"}
# Distributions left out although permissive: this project itself, and packages that
# are mostly generated tables or vendor other packages wholesale.
EXCLUDED_DISTRIBUTIONS = {"infill-ls", "cfn-lint", "sympy", "pip", "setuptools", "awscli", "botocore"}
MAX_FILE_BYTES = 200_000
MAX_REPO_BYTES = 3_000_000  # per site package: keeps transformers/scipy from drowning the rest
SKIP_DIR_NAMES = {"test", "tests", "idle_test", "__pycache__", "_vendor", "vendored", "vendor", "encodings", "site-packages"}

ALLOWED_SPDX = {"MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "PSF-2.0", "Python-2.0"}
ALLOWED_CLASSIFIERS = {"MIT License", "BSD License", "Apache Software License", "Python Software Foundation License"}
# Free-text "License:" fields seen in the wild, mapped to SPDX.
LICENSE_ALIASES = {
    "mit": "MIT", "mit license": "MIT", "bsd": "BSD-3-Clause", "bsd license": "BSD-3-Clause",
    "bsd 3-clause license": "BSD-3-Clause", "modified bsd license": "BSD-3-Clause",
    "new bsd license": "BSD-3-Clause", "apache 2.0": "Apache-2.0", "apache-2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0", "apache 2.0 license": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache": "Apache-2.0", "asl 2": "Apache-2.0",
    "psf": "PSF-2.0", "psf-2.0": "PSF-2.0",
}


@dataclass
class SourceFile:
    repo: str  # "stdlib:asyncio", "site:requests"
    path: str  # path shown to the model, e.g. "asyncio/events.py"
    text: str


@dataclass
class RepoInfo:
    repo: str
    distribution: str
    version: str
    licence: str
    files: int
    bytes: int


def spdx_allowed(expression: str) -> bool:
    """True when an SPDX expression grants one of the allowed licences (OR: any, AND: all)."""
    expression = expression.replace("(", " ").replace(")", " ")
    return any(
        all(term.strip() in ALLOWED_SPDX for term in re.split(r"\s+AND\s+", alternative))
        for alternative in re.split(r"\s+OR\s+", expression)
    )


def distribution_licence(dist: md.Distribution) -> str | None:
    """The allowed licence of a distribution, or None when it is not clearly permissive."""
    meta = dist.metadata
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return expression if spdx_allowed(expression) else None
    free_text = (meta.get("License") or "").strip()
    if free_text and "\n" not in free_text and len(free_text) < 40:
        alias = LICENSE_ALIASES.get(free_text.lower())
        return alias if alias else None
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers and all(c in ALLOWED_CLASSIFIERS for c in classifiers):
        return " OR ".join(classifiers)
    return None


def looks_generated(text: str) -> bool:
    lines = text.splitlines() or [""]
    long_lines = sum(len(line) > 200 for line in lines)
    return long_lines > 0.05 * len(lines) or "automatically generated" in text[:2000].lower()


def read_source(path: Path) -> str | None:
    if path.stat().st_size > MAX_FILE_BYTES:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if not text.strip() or looks_generated(text):
        return None
    return text


def stdlib_files() -> dict[str, list[SourceFile]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    repos: dict[str, list[SourceFile]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIR_NAMES or part.startswith("test") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_"):
            continue
        text = read_source(path)
        if text is None:
            continue
        repo = "stdlib:" + (rel.parts[0] if len(rel.parts) > 1 else "modules")
        repos.setdefault(repo, []).append(SourceFile(repo, rel.as_posix(), text))
    return repos


def distributions(extra_paths: list[str]) -> list[md.Distribution]:
    """Installed distributions, plus those unpacked under ``extra_paths`` (one of each name)."""
    found: dict[str, md.Distribution] = {}
    for dist in [*md.distributions(), *(md.distributions(path=list(extra_paths)) if extra_paths else [])]:
        found.setdefault(dist.metadata["Name"].lower(), dist)
    return [found[name] for name in sorted(found)]


def site_package_files(extra_paths: list[str] = ()) -> tuple[dict[str, list[SourceFile]], dict[str, RepoInfo]]:
    repos: dict[str, list[SourceFile]] = {}
    infos: dict[str, RepoInfo] = {}
    seen_paths: set[str] = set()
    for dist in distributions(extra_paths):
        name = dist.metadata["Name"]
        if name.lower() in EXCLUDED_DISTRIBUTIONS:
            continue
        licence = distribution_licence(dist)
        if licence is None:
            continue
        for entry in sorted(dist.files or [], key=str):
            rel = Path(str(entry))
            if rel.suffix != ".py" or rel.parts[0].endswith((".dist-info", ".egg-info")) or ".." in rel.parts:
                continue
            if any(part in SKIP_DIR_NAMES for part in rel.parts[:-1]) or rel.name.startswith("test_"):
                continue
            if rel.as_posix() in seen_paths:
                continue
            seen_paths.add(rel.as_posix())
            path = Path(dist.locate_file(entry))
            if not path.exists():
                continue
            text = read_source(path)
            if text is None:
                continue
            repo = "site:" + name.lower()
            repos.setdefault(repo, []).append(SourceFile(repo, rel.as_posix(), text))
            info = infos.setdefault(repo, RepoInfo(repo, name, dist.version, licence, 0, 0))
            info.files += 1
            info.bytes += len(text.encode())
    return repos, infos


def cap_repo(files: list[SourceFile], rng: random.Random) -> list[SourceFile]:
    """A seeded subset of a repo's files of at most MAX_REPO_BYTES."""
    if sum(len(f.text) for f in files) <= MAX_REPO_BYTES:
        return files
    shuffled = files[:]
    rng.shuffle(shuffled)
    kept, total = [], 0
    for f in shuffled:
        if total + len(f.text) > MAX_REPO_BYTES:
            continue
        kept.append(f)
        total += len(f.text)
    return sorted(kept, key=lambda f: f.path)


def build_corpus(out_dir: Path, seed: int, extra_paths: list[str] = ()) -> dict:
    """Write train.jsonl, heldout.jsonl and manifest.json under out_dir; return the manifest.

    ``extra_paths``: folders of unpacked distributions (training/fetch-corpus.sh) added
    to the installed ones."""
    rng = random.Random(seed)
    repos = stdlib_files()
    site_repos, infos = site_package_files(extra_paths)
    repos.update(site_repos)
    stdlib_version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    for repo, files in repos.items():
        if repo.startswith("stdlib:"):
            infos[repo] = RepoInfo(repo, "python-stdlib", stdlib_version, "PSF-2.0", len(files), sum(len(f.text.encode()) for f in files))

    held_out = {r: repos[r] for r in sorted(repos) if r in HELD_OUT_REPOS}
    held_out_hashes = {hashlib.sha256(f.text.encode()).hexdigest() for fs in held_out.values() for f in fs}
    train: dict[str, list[SourceFile]] = {}
    for repo in sorted(repos):
        if repo in HELD_OUT_REPOS:
            continue
        # Copies of held-out files elsewhere (vendored, duplicated) would leak them.
        files = [f for f in repos[repo] if hashlib.sha256(f.text.encode()).hexdigest() not in held_out_hashes]
        if repo.startswith("site:"):
            files = cap_repo(files, rng)
        if files:
            train[repo] = files

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("heldout", held_out)):
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for files in split.values():
                for f in files:
                    fh.write(json.dumps(asdict(f)) + "\n")

    def describe(split: dict[str, list[SourceFile]]) -> list[dict]:
        rows = []
        for repo, files in split.items():
            info = asdict(infos[repo])
            info["files_used"] = len(files)
            info["bytes_used"] = sum(len(f.text.encode()) for f in files)
            rows.append(info)
        return rows

    manifest = {"seed": seed, "train": describe(train), "heldout": describe(held_out)}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def load_split(path: Path) -> dict[str, list[SourceFile]]:
    repos: dict[str, list[SourceFile]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            f = SourceFile(**json.loads(line))
            repos.setdefault(f.repo, []).append(f)
    return repos


def markdown_table(rows: list[dict]) -> str:
    """The manifest rows as the model card's table: one line per package."""
    lines = ["| package | version | licence | files | bytes |", "|---|---|---|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["repo"]):
        lines.append(f"| {r['repo']} | {r['version']} | {r['licence']} | {r['files_used']} | {r['bytes_used']:,} |")
    total = sum(r["bytes_used"] for r in rows)
    lines.append(f"| **total** ({len(rows)} packages) | | | {sum(r['files_used'] for r in rows)} | {total:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m training.data [OUT_DIR [EXTRA_SITE_DIR]]  build the corpus
    # python -m training.data --table OUT_DIR              print the model card's data tables
    if sys.argv[1:2] == ["--table"]:
        m = json.loads((Path(sys.argv[2]) / "manifest.json").read_text())
        print("Held out (evaluation only):\n\n" + markdown_table(m["heldout"]))
        print("\nTraining:\n\n" + markdown_table(m["train"]))
    else:
        m = build_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "training/work/data"), seed=0,
                         extra_paths=sys.argv[2:3])
        for split in ("train", "heldout"):
            print(split, len(m[split]), "repos", sum(r["bytes_used"] for r in m[split]), "bytes")
