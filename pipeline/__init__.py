"""Newsletter pipeline: news items in, RSS/Atom/JSON feeds and an email digest out."""

__version__ = "0.1.0"
