"""Every Python snippet of the README and the guide runs as written against a real cluster.

A document's snippets run in order in one namespace, as a reader would paste them one after the
other. The example address of the docs is replaced by the test cluster's URL, which is also in
``CLUSTERINVAL_URL``; a TOML snippet whose first line names a file (``# cache_rules.toml``) is
written to that file in the working directory first. Blocks fenced as ``python signature`` list
an API's shape and are not code to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/guide.md", "docs/tags.md")
EXAMPLE_URLS = ("redis://10.0.0.5:7000", "redis://127.0.0.1:7000")
_FENCE = re.compile(r"^```(\S*)\s*(.*)$")
_FILE_COMMENT = re.compile(r"^#\s*([\w.-]+\.toml)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    path: str
    line: int
    lang: str
    info: str
    text: str


def fenced_blocks(relpath: str) -> list[Block]:
    """The fenced code blocks of ``relpath``, in order."""
    blocks: list[Block] = []
    lines = (ROOT / relpath).read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            body.append(lines[j])
            j += 1
        assert j < len(lines), f"{relpath}:{i + 1}: unclosed code block"
        blocks.append(Block(relpath, i + 1, opening.group(1), opening.group(2).strip(),
                            "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def runnable(relpath: str) -> list[Block]:
    """The Python blocks of ``relpath`` that are code to run."""
    return [b for b in fenced_blocks(relpath) if b.lang == "python" and b.info != "signature"]


def run_document(relpath: str, url: str) -> None:
    """Run every runnable snippet of ``relpath`` in order, in one namespace."""
    for block in fenced_blocks(relpath):
        first = block.text.splitlines()[0] if block.text.strip() else ""
        named = _FILE_COMMENT.match(first)
        if block.lang == "toml" and named:
            Path(named.group(1)).write_text(block.text)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in runnable(relpath):
        source = block.text
        for example in EXAMPLE_URLS:
            source = source.replace(example, url)
        code = compile(source, f"{block.path}:{block.line}", "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            raise AssertionError(f"snippet at {block.path}:{block.line} failed: {exc!r}") from exc


SEED = {
    "project:p1": True, "project:p1:a": True, "projects:list:1": True, "project:p2": False,
    "catalog:models:1": True, "catalog:model:other": False,
    "pricing:e1": True, "pricing:list:1": True, "unrelated": False,
}


@pytest.fixture
def docs_env(
    cluster_url: str, client: redis.RedisCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> redis.RedisCluster:
    """The emptied cluster, seeded; CLUSTERINVAL_URL set; an empty working directory."""
    monkeypatch.setenv("CLUSTERINVAL_URL", cluster_url)
    monkeypatch.chdir(tmp_path)
    for key in SEED:
        client.set(key, b"v")
    return client


def test_readme_snippets_run(
    docs_env: redis.RedisCluster, cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runnable("README.md"), "the README has no Python snippet to run"
    run_document("README.md", cluster_url)
    # The first snippet drops project p1's entries and prints deleted, matched, ...
    assert capsys.readouterr().out.startswith("3 3 ")
    assert docs_env.exists("project:p1", "project:p1:a", "projects:list:1") == 0
    assert docs_env.exists("project:p2", "unrelated") == 2


def test_guide_snippets_run(
    docs_env: redis.RedisCluster, cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(runnable("docs/guide.md")) >= 15
    run_document("docs/guide.md", cluster_url)
    out = capsys.readouterr().out
    assert "deleted 3 keys, complete=True" in out
    assert "1 (b'catalog:models:1',)" in out  # the dry run, before the facade drops the pages
    for key, goes in SEED.items():
        assert docs_env.exists(key) == (0 if goes else 1), key


@pytest.mark.parametrize("relpath", DOCS)
def test_every_python_block_parses(relpath: str) -> None:
    """Runnable blocks compile; the others are marked as API listings."""
    for block in fenced_blocks(relpath):
        if block.lang != "python":
            continue
        assert block.info in ("", "signature"), f"{relpath}:{block.line}: {block.info!r}"
        if block.info == "":
            compile(block.text, f"{relpath}:{block.line}", "exec")
