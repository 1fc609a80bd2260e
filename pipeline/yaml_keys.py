"""YAML mappings with a key given twice: PyYAML keeps the last one silently, so an editor who
pasted a second ``timezone:`` or ``date:`` would never learn which one counts."""

from __future__ import annotations

from typing import Any

import yaml


def repeated_key(node: Any, path: tuple[str, ...] = (), seen_nodes: set[int] | None = None) -> tuple[str, int] | None:
    """The dotted path and 0-based line of the first key that appears twice in one mapping, if any.
    Keys are compared as the loader reads them (tag and text: ``1`` and ``'1'`` differ); a node
    reached again through an alias is looked at once."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return None
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[tuple[str, str]] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":  # merge keys may repeat
                if (key.tag, key.value) in seen:
                    return ".".join((*path, key.value)), key.start_mark.line
                seen.add((key.tag, key.value))
            found = repeated_key(value, (*path, str(getattr(key, "value", "?"))), seen_nodes)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = repeated_key(item, (*path, str(index)), seen_nodes)
            if found:
                return found
    return None
