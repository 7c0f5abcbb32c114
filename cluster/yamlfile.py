"""Read the YAML a person hands benchmatch (sweeps, catalogs, requirements, mappings, plans) safely.

`yaml.safe_load` builds only plain types, but it still expands aliases: a 1 kB "billion laughs"
document (`b: [*a, *a, ...]` nested ten deep) becomes gigabytes once anything walks it (pydantic,
json.dumps). Our files never need more than a handful of aliases, so the loader refuses documents
above a size and alias budget, naming the file and the limit, before anything is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cluster.errors import BenchmatchError

MAX_BYTES = 1 << 20  # 1 MiB: a hand-written config is a few kB; an import's data files are not YAML
MAX_ALIASES = 64
MAX_DEPTH = 64
# Values a document may hold once its aliases are expanded: the largest of our files (a plan of 64
# workloads, a catalog) holds a few thousand. 64 aliases, each doubling the one before, expand to
# 2^32: the alias budget alone does not stop that (a 700-byte requirements file grew past 6 GB).
MAX_EXPANDED_NODES = 100_000


class YamlError(BenchmatchError, ValueError):
    """A YAML document cannot be read; the message names the file, line and what is wrong."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts alias uses, nesting and the expanded size while composing, before
    construction."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_document(self) -> Any:
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(n: Any) -> int:  # values under n with aliases expanded, each shared node sized once
            if id(n) not in sizes:
                sizes[id(n)] = 0  # a recursive alias counts once
                children = n.value if isinstance(n, yaml.SequenceNode) else \
                    [x for pair in n.value for x in pair] if isinstance(n, yaml.MappingNode) else []
                sizes[id(n)] = 1 + sum(expanded(c) for c in children)
            return sizes[id(n)]

        if node is not None and expanded(node) > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"more than {MAX_EXPANDED_NODES} values once its aliases are expanded: refused "
                                 "(a configuration file holds a few thousand at most)")
        return node

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (line {mark.line + 1}): refused, "
                                     "since alias expansion can blow a small file up to gigabytes")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels: refused")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def loads(text: str, where: str = "<text>") -> Any:
    """Parse YAML text under the size and alias budget; YamlError names `where`, the line and column."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlError(f"{where}: larger than {MAX_BYTES // 1024} KiB; a configuration file is a few kB")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"{where}:{at} not valid YAML: {problem}") from None


def load(path: str | os.PathLike[str]) -> Any:
    """Read and parse a YAML file; a missing or oversized file is a YamlError naming it."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise YamlError(f"{p}: {size} bytes, larger than {MAX_BYTES // 1024} KiB; a configuration file is a few kB")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlError(f"{p}: file not found") from None
    except UnicodeDecodeError as exc:
        raise YamlError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except IsADirectoryError:
        raise YamlError(f"{p}: is a folder, not a YAML file") from None
    return loads(text, str(p))
