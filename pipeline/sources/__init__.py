"""Sources turn the outside world (files, remote feeds) into ``Item`` objects."""

from .local import read_content, read_item, scan_content

__all__ = ["read_content", "read_item", "scan_content"]
