"""The page of ``lrpgraph serve`` in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium): a real photo in, the prediction and the heatmap out,
both checked against Python ORT on the same explainer; the page's preprocessing against
lrpgraph.preprocess; its picture against lrpgraph.heatmaps."""

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lrpgraph.explain import Explainer
from lrpgraph.heatmaps import Style, colourise, overlay
from lrpgraph.preprocess import prepare
from lrpgraph.serve import make_server

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
PHOTO = SAMPLE / "n01440764_tench.JPEG"  # a real ImageNet photo (../shared, never copied here)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextlib.contextmanager
def opened(explainer):
    """The page served for ``explainer``, open in headless Chromium, ready."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server = make_server(explainer, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        wait(driver, "window.lrpgraph && (lrpgraph.ready || lrpgraph.error)")
        yield driver
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def page(effnet):
    """The page for the real EfficientNet-Lite0 explainer."""
    with opened(effnet[1]) as driver:
        yield driver, Explainer(effnet[1], provider="cpu")


def wait(driver, condition, seconds=120):
    t = time.time()
    while not driver.execute_script(f"return Boolean({condition})"):
        assert time.time() - t < seconds, f"the page did not get to {condition!r}: {status(driver)}"
        time.sleep(0.1)
    assert not driver.execute_script("return lrpgraph.error"), status(driver)


def status(driver):
    return driver.execute_script("return document.getElementById('status').textContent")


def last(driver):
    got = driver.execute_script("return {map: lrpgraph.last.map, input: lrpgraph.last.input, target: lrpgraph.last.target,"
                                " top5: lrpgraph.last.top5, picture: Array.from(lrpgraph.last.picture),"
                                " blended: Array.from(window.lrpgraphBlended())}")
    return {k: np.asarray(v) for k, v in got.items()}


def test_page_explains_a_real_photo_as_python_does(page, tmp_path):
    from selenium.webdriver.common.by import By

    driver, ex = page
    assert driver.execute_script("return [lrpgraph.backend, self.crossOriginIsolated]") == ["wasm", True]
    driver.find_element(By.ID, "file").send_keys(str(PHOTO))
    wait(driver, "lrpgraph.last && !lrpgraph.busy")
    got = last(driver)
    x, picture = prepare(PHOTO, ex.preprocess)
    # the browser decodes the JPEG and resizes it as Pillow does, bit for bit
    np.testing.assert_array_equal(got["picture"].reshape(picture.shape), picture)
    np.testing.assert_array_equal(got["input"].reshape(x.shape).astype(np.float32), x)
    want = ex.run(x[None])
    assert got["target"] == want["target_used"][0] == want["logits"][0].argmax() == 0  # tench
    ref = want["relevance_map"][0]
    assert np.abs(got["map"].reshape(ref.shape) - ref).max() <= 1e-4 * np.abs(ref).max()
    # the PNG the page offers is lrpgraph.heatmaps' overlay at the slider's opacity (0.7)
    style = Style.for_method("lrp")
    drawn = overlay(picture, ref, colourise(ref, style), 0.7)
    assert np.abs(got["blended"].reshape(drawn.shape).astype(int) - drawn).max() <= 1
    driver.save_screenshot(str(tmp_path / "page.png"))
    if os.environ.get("LRPGRAPH_SCREENSHOT"):
        shutil.copy(tmp_path / "page.png", os.environ["LRPGRAPH_SCREENSHOT"])
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_clicking_a_class_explains_that_class(page):
    from selenium.webdriver.common.by import By

    driver, ex = page
    if not driver.execute_script("return Boolean(lrpgraph.last)"):
        driver.find_element(By.ID, "file").send_keys(str(PHOTO))
        wait(driver, "lrpgraph.last && !lrpgraph.busy")
    second = int(last(driver)["top5"][1])
    driver.find_element(By.CSS_SELECTOR, f"#top5 button[data-cls='{second}']").click()
    wait(driver, f"lrpgraph.last.target === {second} && !lrpgraph.busy")
    got = last(driver)
    x, _ = prepare(PHOTO, ex.preprocess)
    ref = ex.run(x[None], target=[second])["relevance_map"][0]
    assert np.abs(got["map"].reshape(ref.shape) - ref).max() <= 1e-4 * np.abs(ref).max()
    assert "chosen" in driver.find_element(By.CSS_SELECTOR, f"#top5 button[data-cls='{second}']").get_attribute("class")


def test_page_follows_the_explainers_own_size(tmp_path):
    """A 32 px model with its own resize: the page crops, feeds and draws at 32 px; and a
    512 x 769 picture, whose long side resizes to 384.5: Python's round() gives 384."""
    from selenium.webdriver.common.by import By

    from lrpgraph import preset
    from lrpgraph.config import Preprocess
    from lrpgraph.driver import build_explainer, save_model
    from test_runtimes import square_strided_net

    from PIL import Image

    pre = Preprocess(size=32, resize=256)
    awkward = tmp_path / "awkward.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (769, 512, 3), dtype=np.uint8)).save(awkward)
    explainer, _ = build_explainer(square_strided_net(), preset("paper"), preprocess=pre)
    save_model(explainer, tmp_path / "tiny.lrp.onnx")
    ex = Explainer(str(tmp_path / "tiny.lrp.onnx"), provider="cpu")
    with opened(str(tmp_path / "tiny.lrp.onnx")) as driver:
        for photo in (PHOTO, awkward):
            driver.find_element(By.ID, "file").send_keys(str(photo))
            wait(driver, f"lrpgraph.last && lrpgraph.last.name === {photo.name!r} && !lrpgraph.busy")
            got = last(driver)
            assert driver.execute_script("return document.getElementById('heat').width") == 32
            x, picture = prepare(photo, pre)
            np.testing.assert_array_equal(got["picture"].reshape(picture.shape), picture)
            ref = ex.run(x[None])["relevance_map"][0]
            assert np.abs(got["map"].reshape(ref.shape) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_serve_refuses_what_it_cannot_serve(tmp_path, resnets, effnet):
    cli = [sys.executable, "-m", "lrpgraph", "serve"]
    done = subprocess.run(cli + [str(tmp_path / "missing.onnx")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no such file" in done.stderr and "lrpgraph build" in done.stderr
    _, model = resnets["resnet18"]  # a model, not an explainer
    done = subprocess.run(cli + [model], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not an lrpgraph explainer" in done.stderr
    done = subprocess.run(cli + [effnet[1], "--ort-web", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--ort-web" in done.stderr and done.stderr.count("error") == 1
