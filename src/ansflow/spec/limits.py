"""Limits on a pipeline document (PRODUCT.md section 8, "Parsing limits").

A document is at most ``MAX_DEFINITION_BYTES``; its tree, with every YAML alias
expanded, has at most ``MAX_NODES`` nodes and ``MAX_DEPTH`` levels, and uses at most
``MAX_ALIASES`` aliases. YAML is counted while it is composed, before any Python object
is built, so a 386-byte alias bomb stops after a few hundred nodes instead of expanding
to billions. Past a limit: ``DefinitionTooLarge`` (413) for the size, a
``DefinitionError`` (422) naming the limit otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
import yaml.composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, Event
from yaml.nodes import Node
from yaml.resolver import Resolver

from ansflow.errors import DefinitionError, DefinitionTooLarge

MAX_DEFINITION_BYTES = 1024 * 1024
MAX_ALIASES = 100
MAX_NODES = 10_000
MAX_DEPTH = 64


def check_size(text: str | bytes) -> None:
    """``DefinitionTooLarge`` when ``text`` is over ``MAX_DEFINITION_BYTES`` as UTF-8."""
    size = len(text)
    if isinstance(text, str) and size * 4 > MAX_DEFINITION_BYTES >= size:
        size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_DEFINITION_BYTES:
        raise too_large(size)


def too_large(size: int | None) -> DefinitionTooLarge:
    """``size`` is None for a body streamed past the limit (its length is unknown)."""
    what = f"is {size} bytes" if size is not None else "is larger than the limit"
    return DefinitionTooLarge(f"the pipeline definition {what}; the limit is "
                              f"{MAX_DEFINITION_BYTES} bytes (1 MiB)")


def _too_deep(where: str = "") -> DefinitionError:
    return DefinitionError(f"the document is nested deeper than the limit of {MAX_DEPTH} "
                           f"levels{where}")


def _too_many_nodes(where: str = "") -> DefinitionError:
    return DefinitionError(f"the document has more than the limit of {MAX_NODES} nodes "
                           f"(values, keys and list items, YAML aliases expanded){where}")


def _line(event: Event) -> str:
    mark = event.start_mark
    return f" (at line {mark.line + 1})" if mark is not None else ""


class _CountingComposer:
    """Composer overrides that count nodes, depth and aliases as the tree is composed.

    An alias counts as the whole subtree it stands for (its anchor's node count and
    height, recorded when the anchor's node was finished), so the count is the size of
    the expanded document, reached in time linear in the document's length.
    """

    anchors: dict[str, Node]
    check_event: Any
    peek_event: Any

    def _init_counts(self) -> None:
        self._aliases = 0
        self._nodes = 0
        self._depth = 0
        self._deepest = 0
        self._sizes: dict[str, tuple[int, int]] = {}
        """Per finished anchor: nodes of its subtree and the subtree's height."""

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            return self._compose_alias(parent, index)
        event = self.peek_event()
        self._depth += 1
        self._count(1, self._depth, event)
        outer, self._deepest = self._deepest, self._depth
        first = self._nodes
        node: Node = super().compose_node(parent, index)  # type: ignore[misc]
        if event.anchor is not None:
            self._sizes[event.anchor] = (self._nodes - first + 1,
                                         self._deepest - self._depth + 1)
        self._deepest = max(outer, self._deepest)
        self._depth -= 1
        return node

    def _compose_alias(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise DefinitionError(f"the document uses more than the limit of {MAX_ALIASES} "
                                  f"YAML aliases{_line(event)}")
        if event.anchor in self.anchors and event.anchor not in self._sizes:
            raise DefinitionError(f"YAML alias *{event.anchor} refers to a node that "
                                  f"contains it{_line(event)}")
        node: Node = super().compose_node(parent, index)  # type: ignore[misc]
        nodes, height = self._sizes[event.anchor]
        self._count(nodes, self._depth + height, event)
        self._deepest = max(self._deepest, self._depth + height)
        return node

    def _count(self, nodes: int, depth: int, event: Event) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _too_many_nodes(_line(event))
        if depth > MAX_DEPTH:
            raise _too_deep(_line(event))


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class LimitedLoader(_CountingComposer, yaml.composer.Composer, CParser, SafeConstructor,
                        Resolver):
        """libyaml scans and parses; composing (counted) and constructing run in Python."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)
            self._init_counts()
else:  # pragma: no cover - PyYAML built without libyaml
    class LimitedLoader(_CountingComposer, yaml.SafeLoader):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._init_counts()


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` within the limits (``yaml.YAMLError`` for bad syntax)."""
    loader = LimitedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        # libyaml's scanner looks ahead and stops at 1,000 levels, before the composer
        if exc.problem == "exceeded maximum nesting depth":
            raise _too_deep() from exc
        raise
    finally:
        loader.dispose()


def load_json(text: str) -> Any:
    """``json.loads`` within the limits (``json.JSONDecodeError`` for bad syntax)."""
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise _too_deep() from exc
    check_tree(data)
    return data


def check_tree(data: Any) -> None:
    """Count the nodes and levels of parsed data (dict keys count as nodes, as in YAML)."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise _too_many_nodes()
        if depth > MAX_DEPTH:
            raise _too_deep()
        if isinstance(value, dict):
            nodes += len(value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
