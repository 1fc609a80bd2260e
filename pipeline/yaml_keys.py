"""YAML mappings with a key given twice: PyYAML keeps the last one silently, so an editor who
pasted a second ``timezone:`` or ``date:`` would never learn which one counts."""

from __future__ import annotations

from typing import Any

import yaml


def repeated_key(node: Any, path: tuple[str, ...] = ()) -> tuple[str, int] | None:
    """The dotted path and 0-based line of the first key that appears twice in one mapping, if any."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":  # merge keys may repeat
                if key.value in seen:
                    return ".".join((*path, key.value)), key.start_mark.line
                seen.add(key.value)
            found = repeated_key(value, (*path, str(getattr(key, "value", "?"))))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = repeated_key(item, (*path, str(index)))
            if found:
                return found
    return None
