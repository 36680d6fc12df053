"""report.html in a real headless browser: Debian's Chromium, driven by Selenium through Debian's
chromedriver, renders the report of a real (tiny) simulate run on digits and of a real
comparison; every figure is in the DOM with a size, every image decoded (naturalWidth > 0),
nothing was fetched, and a screenshot of each page is kept (under tmp_path, and copied to
$CODREAM_TEST_ARTIFACTS when that is set).

Chromium is installed with apt-get when /usr/bin/chromium or /usr/bin/chromedriver is missing
(CI's machine is root and reaches Debian's mirrors); without apt-get, or when it fails, the
tests skip and say why. A page with a broken image is shown to fail the same checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codream.comparison import compare
from codream.config import RunConfig, build, dotted, merge
from codream.html_report import write_report
from codream.simulation import simulate

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# As the machine's docs say: without the background-networking flags Chromium's own
# connections are refused by the closed network, many at a time.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,900")
TINY = {
    "dataset": "digits", "clients": 2, "rounds": 1, "warmup_epochs": 1, "local_epochs": 1,
    "partition": "dirichlet:0.5", "models": ["mlp"], "device": "cpu", "seed": 3,
    "dream": {"batch_size": 8, "global_steps": 2},
    "server_model": {"steps": 5, "batch_size": 8},
    "distill": {"dream_batch_size": 8, "buffer_batches": 1, "epochs": 1},
    "train": {"batch_size": 64},
}
# What the page reports about itself: figures with their size, images with their decoding,
# and every resource the browser fetched (none: data URIs and inline SVG are not fetched).
PAGE_STATE = """
const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
return {
  title: document.title,
  figures: Array.from(document.querySelectorAll('figure')).map(f => ({
    id: f.id, svg: f.querySelectorAll('svg').length, img: f.querySelectorAll('img').length,
    size: box(f.querySelector('svg, img') || f)})),
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, size: box(i)})),
  fetched: performance.getEntriesByType('resource').map(r => r.name),
  scripts: document.scripts.length,
  height: document.documentElement.scrollHeight,
  text: document.body.innerText,
};
"""


def _config(out: Path, **overrides: Any) -> RunConfig:
    return build(RunConfig, merge(TINY, dotted({"out": str(out), **overrides})))


def _install_chromium() -> None:
    """Debian's chromium and chromium-driver, or a skip that says why they are not to be had."""
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return
    if shutil.which("apt-get") is None:
        pytest.skip("no /usr/bin/chromium and no apt-get to install Debian's chromium")
    if os.geteuid() != 0:
        pytest.skip("no /usr/bin/chromium, and installing it with apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium",
                     "chromium-driver"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{' '.join(command)} did not finish in 900 s")
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).split()[-40:])
            pytest.skip(f"{' '.join(command)} failed ({done.returncode}): {tail}")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("apt-get installed chromium but /usr/bin/chromium or /usr/bin/chromedriver is missing")


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    _install_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER), log_output=str(log)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A real simulate run and a real two-strategy comparison, each with its report.html."""
    root = tmp_path_factory.mktemp("runs")
    simulate(_config(root / "run"), root / "run")
    compare({s: _config(root / "cmp" / s, strategy=s) for s in ("codream", "fedavg")}, root / "cmp")
    return {"run": root / "run", "comparison": root / "cmp", "fedavg": root / "cmp" / "fedavg"}


def render(driver: Any, page: Path, screenshot: Path) -> dict[str, Any]:
    """Opens `page`, reads its state and keeps a screenshot of the whole page."""
    driver.get(page.resolve().as_uri())
    state = driver.execute_script(PAGE_STATE)
    driver.set_window_size(1200, min(max(900, int(state["height"]) + 40), 8000))
    driver.get_screenshot_as_file(str(screenshot))
    artifacts = os.environ.get("CODREAM_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / screenshot.name)
    return state


def problems(state: dict[str, Any], figures: set[str]) -> list[str]:
    """What is wrong with a rendered page: a missing or empty figure, an image that did not
    load, a resource fetched from anywhere, a script."""
    found = []
    present = {f["id"]: f for f in state["figures"]}
    for name in sorted(figures - set(present)):
        found.append(f"figure {name} is missing")
    for figure in state["figures"]:
        if figure["svg"] + figure["img"] == 0:
            found.append(f"figure {figure['id']} holds no svg or img")
        elif min(figure["size"]) <= 0:
            found.append(f"figure {figure['id']} is drawn at size {figure['size']}")
    for image in state["images"]:
        if not image["complete"] or image["naturalWidth"] <= 0:
            found.append(f"image {image['alt']!r} did not load (naturalWidth {image['naturalWidth']})")
    found += [f"fetched {name}" for name in state["fetched"]]
    if state["scripts"]:
        found.append(f"{state['scripts']} script elements")
    return found


def test_a_run_report_renders_every_figure_and_image(browser, runs, tmp_path):
    state = render(browser, runs["run"] / "report.html", tmp_path / "report-run.png")
    assert problems(state, {"fig-accuracy", "fig-dreams", "fig-histogram", "fig-bytes"}) == []
    assert state["title"] == "CoDream run: codream on digits"
    assert len(state["images"]) >= 1  # the dream grid is a PNG data URI
    for words in ("node-0", "node-1", "server model (dreams only)", "Configuration", 'dataset = "digits"'):
        assert words in state["text"], words
    assert (tmp_path / "report-run.png").stat().st_size > 10_000


def test_a_report_without_dreams_and_a_comparison_render_too(browser, runs, tmp_path):
    fedavg = render(browser, runs["fedavg"] / "report.html", tmp_path / "report-fedavg.png")
    assert problems(fedavg, {"fig-accuracy", "fig-histogram", "fig-bytes"}) == []
    assert "no dream grid in this run" in fedavg["text"]
    comparison = render(browser, runs["comparison"] / "report.html", tmp_path / "report-comparison.png")
    assert problems(comparison, {"fig-comparison", "fig-comparison-png", "fig-codream-dreams",
                                 "fig-histogram"}) == []
    assert comparison["title"] == "CoDream comparison: codream, fedavg"
    links = browser.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'))")
    assert {"codream/report.html", "fedavg/report.html"} <= set(links)


def test_the_checks_fail_on_a_broken_image_and_a_missing_figure(browser, runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs["run"], broken)
    (broken / "dreams.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    write_report(broken)
    state = render(browser, broken / "report.html", tmp_path / "report-broken.png")
    found = problems(state, {"fig-accuracy", "fig-dreams", "fig-nothing"})
    assert "figure fig-nothing is missing" in found
    assert any(p.startswith("image 'dreams: dreams.png' did not load") for p in found), found
