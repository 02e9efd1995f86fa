"""The search page: thumbnails with ranks, scores and captions, rendered in headless Chromium."""

from curate.search import page
from curate.search.query import search


def test_page_shows_every_hit_with_a_decoded_thumbnail(searchable, tmp_path, browser):
    from selenium.webdriver.common.by import By

    hits = search(searchable["root"], searchable["query"], top=4)
    out = page.write(searchable["root"], searchable["query"], hits, str(tmp_path / "hits.html"))
    browser.get(f"file://{out}")
    figures = browser.find_elements(By.CSS_SELECTOR, "figure.hit")
    assert [f.get_attribute("data-key") for f in figures] == hits.column("key").to_pylist()
    assert figures[0].get_attribute("data-key") == "planted"
    widths = browser.execute_script("return [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 4 and all(w > 0 for w in widths)  # the thumbnails decode in a real browser
    assert "caption <5>" in figures[0].text and "1.0000" in figures[0].text
    assert browser.find_element(By.TAG_NAME, "h1").text == searchable["query"]
