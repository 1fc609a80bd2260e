"""The floor for a build: what any tool must do for the corpus, and nothing else.

    python -m bench.floor CONFIG OUTDIR

Read every story, parse its front matter (libyaml) and Markdown (markdown-it), write one HTML page
per story, and RSS + Atom of the newest feeds.limit stories with lxml; no templates, no caches.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from lxml import etree
from markdown_it import MarkdownIt


def main() -> None:
    config_file, out = Path(sys.argv[1]), Path(sys.argv[2])
    limit = yaml.safe_load(config_file.read_text())["feeds"]["limit"]
    md = MarkdownIt("commonmark")
    stories = []
    for path in sorted((config_file.parent / "content").glob("*.md")):
        _, front, body = path.read_text(encoding="utf-8").split("---\n", 2)
        meta = yaml.load(front, Loader=yaml.CSafeLoader)
        html = md.render(body)
        page = out / path.stem / "index.html"
        page.parent.mkdir(parents=True)
        page.write_text(f"<!doctype html><title>{meta['title']}</title><h1>{meta['title']}</h1>{html}")
        stories.append((str(meta["date"]), meta["title"], path.stem, html))
    newest = sorted(stories, reverse=True)[:limit]
    rss = etree.Element("rss", version="2.0")
    channel = etree.SubElement(rss, "channel")
    atom = etree.Element("{http://www.w3.org/2005/Atom}feed")
    for date, title, slug, html in newest:
        item = etree.SubElement(channel, "item")
        etree.SubElement(item, "title").text = title
        etree.SubElement(item, "link").text = f"https://example.org/{slug}/"
        etree.SubElement(item, "pubDate").text = date
        etree.SubElement(item, "description").text = etree.CDATA(html)
        entry = etree.SubElement(atom, "{http://www.w3.org/2005/Atom}entry")
        etree.SubElement(entry, "{http://www.w3.org/2005/Atom}title").text = title
        etree.SubElement(entry, "{http://www.w3.org/2005/Atom}updated").text = date
        etree.SubElement(entry, "{http://www.w3.org/2005/Atom}content", type="html").text = html
    (out / "rss.xml").write_bytes(etree.tostring(rss, xml_declaration=True, encoding="utf-8", pretty_print=True))
    (out / "atom.xml").write_bytes(etree.tostring(atom, xml_declaration=True, encoding="utf-8", pretty_print=True))


if __name__ == "__main__":
    main()
