"""Time per explanation in the page of ``lrpgraph serve``, in headless Chromium (wasm,
one thread and all threads): the explainer's ``session.run`` as the page measures it,
against Python ORT CPU on the same explainer, photo and thread count, in the same run.

    python tools/bench_web.py EXPLAINER.onnx [more.onnx ...] [--runs 5] [--photo PATH]

The first explanation of a photo also warms up the kernels; the figure is the median of
the ``--runs`` that follow (the page explains the photo's top-5 classes in turn).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "imagenet-sample" / "n01440764_tench.JPEG"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait(driver, condition, seconds=300):
    t = time.time()
    while not driver.execute_script(f"return Boolean({condition})"):
        if driver.execute_script("return window.lrpgraph && lrpgraph.error"):
            raise RuntimeError(driver.execute_script("return lrpgraph.error"))
        if time.time() - t > seconds:
            raise TimeoutError(condition)
        time.sleep(0.05)


def page_times(driver, url, photo, runs):
    """(seconds to load the page and model, [ms per explanation])."""
    from selenium.webdriver.common.by import By

    t = time.time()
    driver.get(url)
    wait(driver, "window.lrpgraph && lrpgraph.ready")
    loaded = time.time() - t
    driver.find_element(By.ID, "file").send_keys(str(photo))
    wait(driver, "lrpgraph.last && !lrpgraph.busy")
    top5 = driver.execute_script("return lrpgraph.last.top5")
    ms = []
    for i in range(runs):
        cls = top5[(i + 1) % 5]
        driver.find_element(By.CSS_SELECTOR, f"#top5 button[data-cls='{cls}']").click()
        wait(driver, f"lrpgraph.last.target === {cls} && !lrpgraph.busy")
        ms.append(driver.execute_script("return lrpgraph.last.ms"))
    return loaded, ms


def ort_ms(path, photo, threads, runs):
    """Python ORT CPU on the same explainer and photo, batch 1, ``threads`` threads."""
    import numpy as np
    import onnxruntime as ort

    from lrpgraph.explain import Explainer
    from lrpgraph.preprocess import prepare

    x = prepare(photo, Explainer(path, provider="cpu").preprocess)[0][None]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = {"input": x, "target": np.full(1, -1, np.int64)}
    sess.run(None, feeds)
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        ms.append(1000 * (time.perf_counter() - t))
    return statistics.median(ms)


def main(argv=None) -> int:
    from lrpgraph.serve import make_server

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("explainers", nargs="+")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--photo", default=str(PHOTO))
    args = p.parse_args(argv)
    cores = os.cpu_count()
    print(f"| explainer | threads | page: load + model s | page (wasm): ms per explanation | "
          f"Python ORT CPU: ms | page / ORT |")
    print("|---|---|---|---|---|---|")
    for path in args.explainers:
        server = make_server(path, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver = browser()
        try:
            for threads in sorted({1, cores}):
                url = f"http://127.0.0.1:{server.server_address[1]}/?threads={threads}"
                loaded, ms = page_times(driver, url, args.photo, args.runs)
                page, base = statistics.median(ms), ort_ms(path, args.photo, threads, args.runs)
                print(f"| {Path(path).name} | {threads} | {loaded:.1f} | {page:.0f} | {base:.0f} | {page / base:.2f} |",
                      flush=True)
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
