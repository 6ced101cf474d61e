"""The documentation cannot rot: README.md is a front page that reaches every page of
docs/, every ```python block of README.md and docs/*.md runs, and every ``tritonep ...``
command shown in a ```bash / ```console block parses (with presets, rows and options
that exist).

Python blocks run one by one, each in a fresh interpreter (``python -c``), in a
temporary directory (files they write land there), with ``$TRITONEP_DATA`` pointing at
the tests' MNIST (``data_dir`` fixture: real MNIST, never a download), one torch
thread, and a time limit of ``BLOCK_TIMEOUT`` seconds. A block that cannot run here is
marked in the Markdown by an HTML comment on the line directly before its fence,
naming why:

    <!-- skip: needs a GPU -->
    ```python
    ...

and is skipped with that reason; a marker without a reason, or one that precedes no
fence, fails. Commands are parsed, never run: ``tritonep.cli._parser()`` (and
``tritonep.cli.analyze._parser()`` for ``analyze``), then the names they give are
checked (presets of ``train`` / ``analyze``, tables and rows of ``reproduce``).
Placeholders in commands (``PRESET``, ``RUN.json``, ``$OUT``, ...) are replaced from
``PLACEHOLDERS`` before parsing.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250
BLOCK_TIMEOUT = 180  # seconds per Python block (a loaded 2-core CI machine)

# A command's placeholder word (or $VARIABLE) -> what it stands for when parsed.
PLACEHOLDERS = {
    "PRESET": "mnist-2hl",
    "ROW": "mnist-5hl",
    "RUN.json": "runs/2hl.json",
    "RUN.ckpt": "runs/2hl.ckpt",
    "RUN.best.ckpt": "runs/2hl.best.ckpt",
    "CHECKPOINT": "runs/2hl.ckpt",
    "DIR": "runs/plots",
    "NAME": "curves",
    "N": "2",
    "$OUT": "/tmp/out",
    "$TRITONEP_DATA": "../shared/data",
}

FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
SKIP = re.compile(r"^<!--\s*skip\b:?(.*?)-->\s*$")
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
SEPARATORS = {"&&", "||", ";", "|"}


def doc_files() -> list[Path]:
    return [README] + sorted(DOCS.glob("*.md"))


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@dataclass
class Block:
    path: Path
    line: int          # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None   # the marker's reason ("" for a marker without one), None when unmarked

    @property
    def id(self) -> str:
        return f"{rel(self.path)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the skip marker before each."""
    out, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = SKIP.match(prev)
        skip = None if marker is None else marker.group(1).strip()
        out.append(Block(path, i + 1, m.group(1).lower(), "\n".join(lines[i + 1:j]) + "\n", skip))
        i = j + 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in doc_files() for b in blocks(p)]


def python_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in ("python", "py")]


# ------------------------------------------------------------------------------------------ commands
@dataclass
class Command:
    block: Block
    line: int        # 1-based line in the file
    text: str        # the shell line as shown (continuations joined)
    argv: list       # the words after ``tritonep``, placeholders replaced

    @property
    def id(self) -> str:
        return f"{rel(self.block.path)}:{self.line}"


def _shell_lines(block: Block):
    """(line number, text) of each logical line, continuations joined, prompts dropped."""
    buf, start = "", None
    for k, raw in enumerate(block.text.splitlines()):
        line = raw
        if block.lang == "console":
            if not (line.startswith("$ ") or buf):
                continue  # output
            line = line[2:] if line.startswith("$ ") else line
        if start is None:
            start = block.line + 1 + k
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield start, buf + line
        buf, start = "", None
    if buf:
        yield start, buf


def _substitute(word: str) -> str:
    if word in PLACEHOLDERS:
        return PLACEHOLDERS[word]
    for var in re.findall(r"\$\{?(\w+)\}?", word):
        key = f"${var}"
        if key not in PLACEHOLDERS:
            raise KeyError(f"{word!r}: add {key} to PLACEHOLDERS in tests/test_docs.py")
        word = word.replace("${" + var + "}", PLACEHOLDERS[key]).replace(key, PLACEHOLDERS[key])
    return word


def _tritonep_argv(words: list[str]):
    """The words after ``tritonep`` (``tritonep ...``, ``python -m tritonep ...``,
    ``torchrun ... -m tritonep ...``, after ``VAR=value`` prefixes), or None."""
    while words and re.match(r"^\w+=", words[0]):
        words = words[1:]
    if words[:1] == ["tritonep"]:
        return words[1:]
    for k in range(len(words) - 1):
        if words[k] == "-m" and words[k + 1] == "tritonep":
            return words[k + 2:]
    return None


def commands() -> list[Command]:
    out = []
    for block in all_blocks():
        if block.lang not in SHELL_LANGS:
            continue
        for line, text in _shell_lines(block):
            words = shlex.split(text, comments=True)
            segment: list[str] = []
            for w in words + [";"]:
                if w not in SEPARATORS:
                    segment.append(w)
                    continue
                argv = _tritonep_argv(segment)
                if argv is not None:
                    out.append(Command(block, line, text, argv))
                segment = []
    return out


def check_command(argv: list[str]) -> None:
    """Parse ``tritonep ARGV`` as the CLI would, without running it, and check the
    names it gives; AssertionError saying what is wrong."""
    from tritonep import paper, presets
    from tritonep.cli import _parser
    from tritonep.cli import analyze as analyze_cli

    argv = [_substitute(w) for w in argv]
    parser = analyze_cli._parser() if argv[:1] == ["analyze"] else _parser()
    words = argv[1:] if argv[:1] == ["analyze"] else argv
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            args = parser.parse_args(words)
    except SystemExit as e:
        if e.code == 0:  # --help
            return
        raise AssertionError(f"tritonep {' '.join(argv)}: does not parse:\n{err.getvalue()}") from None
    command = "analyze" if argv[:1] == ["analyze"] else args.command
    if command in ("train", "analyze") and not getattr(args, "list", False):
        assert args.preset is not None or command == "analyze", f"tritonep {' '.join(argv)}: no preset"
        if args.preset is not None:
            assert args.preset in presets.PRESETS, f"tritonep {' '.join(argv)}: no preset {args.preset!r}"
    if command == "reproduce" and not args.list:
        assert args.targets, f"tritonep {' '.join(argv)}: no table or row"
        paper.resolve(args.targets, args.dataset, args.variant)  # ValueError naming an unknown one


# --------------------------------------------------------------------------------------------- tests
def test_readme_is_a_front_page():
    """README.md stays short and reaches every page of docs/."""
    text = README.read_text()
    n = len(text.splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it under {README_MAX_LINES}, move the rest to docs/"
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    linked = {(README.parent / t.split("#")[0]).resolve() for t in re.findall(r"\]\(([^)\s]+)\)", text)}
    missing = [rel(p) for p in pages if p.resolve() not in linked]
    assert not missing, f"README.md links to no {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    s = re.sub(r"[`*_]|\[|\]\([^)]*\)", "", heading.strip().lower())
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: Path) -> set:
    in_code, out = False, set()
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(_slug(line.lstrip("#")))
    return out


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_relative_links_resolve(path):
    """Every relative link of README.md and docs/ names a file of the checkout (and a
    heading of it, for ``page.md#anchor``)."""
    bad = []
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading #{anchor})")
    assert not bad, f"{rel(path)}: broken links: {bad}"


def test_readme_keeps_the_ci_test_command():
    """.ci/run runs the README's test command; the README shows it exactly."""
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    line = next(ci[k + 1] for k, t in enumerate(ci) if t.startswith("#") and t.endswith("README's test command:"))
    assert line in README.read_text().splitlines(), f"README.md no longer shows .ci/run's test command: {line}"


def test_every_skip_marker_has_a_reason_and_a_block():
    bad = []
    for path in doc_files():
        lines = path.read_text().splitlines()
        for k, line in enumerate(lines):
            m = SKIP.match(line.strip())
            if not m:
                continue
            nxt = next((t for t in lines[k + 1:] if t.strip()), "")
            if not m.group(1).strip():
                bad.append(f"{rel(path)}:{k + 1}: a skip marker without a reason (<!-- skip: why -->)")
            if not FENCE.match(nxt) or not FENCE.match(nxt).group(1):
                bad.append(f"{rel(path)}:{k + 1}: a skip marker not directly before a code block")
    assert not bad, "\n".join(bad)


def test_the_docs_have_examples_and_commands():
    """The collectors find what is there (a parsing slip would pass every test vacuously)."""
    assert len(python_blocks()) >= 2 and len(commands()) >= 10


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.id)
def test_python_block_runs(block, data_dir, tmp_path):
    if block.skip is not None:
        assert block.skip, f"{block.id}: skip marker without a reason"
        pytest.skip(f"{block.id}: {block.skip}")
    # one intra-op thread: the examples are small, and on a shared 2-core machine two OpenMP
    # threads that other jobs keep descheduling make them up to 100x slower
    env = dict(os.environ, TRITONEP_DATA=str(data_dir), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    try:
        res = subprocess.run([sys.executable, "-c", block.text], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: ran past {BLOCK_TIMEOUT} s; make the example smaller or mark it "
                    "<!-- skip: why -->")
    assert res.returncode == 0, f"{block.id} failed:\n{block.text}\n--- stderr:\n{res.stderr[-4000:]}"


@pytest.mark.parametrize("command", commands(), ids=lambda c: c.id)
def test_command_parses(command):
    check_command(command.argv)


def test_scripts_named_in_commands_exist():
    """``python bench/x.py``, ``bash bench/gpu_check.sh``, ``pytest bench/``: the scripts and folders exist."""
    missing = []
    for block in all_blocks():
        if block.lang not in SHELL_LANGS:
            continue
        for line, text in _shell_lines(block):
            for word in shlex.split(text, comments=True):
                script = re.match(r"^(bench|tests|kernels|tritonep)/([\w./-]+\.(py|sh))?$", word)
                if script and not (REPO / word).exists():
                    missing.append(f"{rel(block.path)}:{line}: {word}")
    assert not missing, f"commands name files that do not exist: {missing}"


def test_train_options_listed_exist():
    """docs/cli.md's list of ``tritonep train`` options names only options it has, and
    the page names every option it has."""
    from tritonep.cli import _parser

    sub = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    have = {o for a in sub.choices["train"]._actions for o in a.option_strings}
    m = re.search(r"^Options: `(.*?)`", (DOCS / "cli.md").read_text(), re.S | re.M)
    assert m, "docs/cli.md lists the train options as 'Options: `--a --b ...`'"
    listed = set(re.findall(r"--[\w-]+", m.group(1)))
    assert listed and not listed - have, f"docs/cli.md lists train options that do not exist: {listed - have}"
    text = (DOCS / "cli.md").read_text()
    undocumented = sorted(o for o in have - {"-h", "--help"} if not re.search(re.escape(o) + r"(?![\w-])", text))
    assert not undocumented, f"docs/cli.md never names these train options: {undocumented}"


def test_the_command_check_catches_stale_commands():
    """The checker refuses what a stale example would show."""
    for argv in (["train", "mnist-2hl", "--no-such-option"], ["train", "no-such-preset"],
                 ["reproduce", "table3"], ["analyze", "dynamics", "no-such-preset", "--out", "x"],
                 ["analyze", "dynamics", "--out"], ["evaluate"]):
        with pytest.raises((AssertionError, ValueError)):
            check_command(argv)
    check_command(["train", "--list"])
    check_command(["analyze", "dynamics", "mnist-2hl", "--out", "x"])
