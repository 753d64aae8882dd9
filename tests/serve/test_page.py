"""The search page (retrieval/serve/page.html) in headless Chromium: a real upload through the
page's file input shows the top matches as loaded thumbnails with ids and scores.

Skipped where /usr/bin/chromium is missing, except under CI (env CI set), where it fails."""
from __future__ import annotations

import json
import os

import pytest
from chromium_cdp import CHROMIUM, chromium
from serve_helpers import N_REFS, jpeg, photo, ref_id

from bench.serve import serving

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} missing under CI: .ci/run installs it", pytrace=False)
    pytestmark = pytest.mark.skip(reason=f"{CHROMIUM} missing (apt-get install chromium)")

HITS = """JSON.stringify([...document.querySelectorAll('#results figure.hit')].map(f => {
  const img = f.querySelector('img');
  return {id: img.alt, loaded: img.complete && img.naturalWidth > 0, caption: f.textContent};
}))"""


def test_an_upload_on_the_page_shows_the_matches_as_thumbnails(built_bundle, tmp_path):
    picked = tmp_path / "my photo.jpg"
    picked.write_bytes(jpeg(photo(2)))
    with serving(built_bundle) as (url, _), chromium(tmp_path / "profile") as page:
        page.open(url + "/")
        page.set_file("#file", picked)
        page.wait_for(f"JSON.parse({HITS}).filter(h => h.loaded).length === {N_REFS}")
        hits = json.loads(page.evaluate(HITS))
        status = page.evaluate("document.getElementById('status').textContent")
        shot = page.call("Page.captureScreenshot", format="png")["data"]
    (tmp_path / "page.png").write_bytes(__import__("base64").b64decode(shot))
    assert hits[0]["id"] == ref_id(2)  # the photo's own reference first
    assert sorted(h["id"] for h in hits) == sorted(ref_id(n) for n in range(N_REFS))
    assert all(h["loaded"] for h in hits)
    assert "1. " + ref_id(2) in hits[0]["caption"] and "." in hits[0]["caption"].split(ref_id(2))[1]
    assert status == f"{N_REFS} matches for my photo.jpg"


def test_a_bad_file_on_the_page_says_why(built_bundle, tmp_path):
    picked = tmp_path / "notes.jpg"
    picked.write_bytes(b"not an image at all")
    with serving(built_bundle) as (url, _), chromium(tmp_path / "profile") as page:
        page.open(url + "/")
        page.set_file("#file", picked)
        message = page.wait_for("document.getElementById('status').className === 'error' && "
                                "document.getElementById('status').textContent")
        assert page.evaluate("document.querySelectorAll('#results figure').length") == 0
    assert "notes.jpg" in message
