"""Local images: the files behind image URLs under site.base_url are published with the site."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.publish.digest import PACKAGE_TEMPLATES
from pipeline.publish.images import image_files, locate
from pipeline.sources import read_content

from .conftest import run_cli, set_config

SITE = "https://www.nationalmssociety.org/news-feed/"


def test_content_images_and_the_local_logo_are_copied_into_the_output(project):
    run_cli(project, "run", "--no-send", check=True)
    public = project / "public"
    assert (public / "images" / "mesems-trial-design.png").read_bytes() == (project / "content" / "images" / "mesems-trial-design.png").read_bytes()
    assert (public / "logo.png").read_bytes() == (project / "assets" / "logo.png").read_bytes()
    assert (public / "icons" / "x.png").read_bytes() == (PACKAGE_TEMPLATES / "icons" / "x.png").read_bytes()


def test_a_missing_image_file_is_logged_and_the_rest_is_still_built(project):
    (project / "content" / "images" / "mesems-trial-design.png").unlink()
    result = run_cli(project, "run", "--no-send", check=True)
    assert "images/mesems-trial-design.png: no file for it" in result.stderr
    assert (project / "public" / "digest.html").exists() and not (project / "public" / "images").exists()


def test_image_urls_cannot_reach_outside_the_output_folder(config):
    assert locate(SITE + "../../etc/passwd", config).source is None
    assert locate("https://cdn.example.org/images/mesems-trial-design.png", config) is None


def test_a_logo_file_must_be_published_under_the_site(project):
    set_config(project, **{"site.logo.url": "https://cdn.example.org/logo.png"})
    with pytest.raises(ConfigError, match="logo.url: must lie under site.base_url"):
        load_config(project / "config.yaml")


def test_only_images_the_outputs_use_are_copied(project, config):
    (project / "content" / "images" / "draft-photo.jpg").write_bytes(b"not referenced")
    assert sorted(path.name for path in image_files(read_content(config), config)) == [
        "facebook.png", "instagram.png", "logo.png", "mesems-trial-design.png", "x.png", "youtube.png"]
