"""End-to-end tests: the real app served by ``streamlit run``, opened in headless Chromium.

Playwright drives Debian's ``/usr/bin/chromium`` (``playwright install`` cannot download
browsers on the machines that build this project). Without that browser these tests skip,
except under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import ntkcore
from ntkcore import data, metrics, zoo
from ntkcore.experiments.inductive_biases import default_noise_variance
from tests.server import serve_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: URL path of every page registered in app/streamlit_app.py ("" for the default page, which
#: Streamlit serves at the root) -> (a heading the page shows, a legend entry of its figure).
PAGES: dict[str, tuple[str, str]] = {
    "": ("Adapt a trained network to a new task", "posterior mean"),
    "classification": ("Classification with the linearized network", "finite NTK · MAP"),
    "compare": ("Compare architectures on the same task", "posterior mean"),
    "curves": ("Adaptation curves: error vs number of context points", "ntk"),
    "similarity": ("Jacobian similarity across tasks", "same class"),
    "learn": ("Learn: linearized networks, one idea at a time", "relative error"),
    "timing": ("Timing: how fast is linearized inference?", "function"),
}
#: Pages that draw their figure only after Run: URL path -> query string with tiny options
#: (the widgets are bound to the URL), then the test presses Run.
RUN_FIRST: dict[str, str] = {
    # bound widgets carry their option labels ("MAP", "finite NTK") in the URL
    "classification": "?f4_methods=network&f4_methods=MAP&f4_means=finite+NTK&f4_n_train=50"
    "&f4_n_test=100",
    "curves": "?cv_methods=ntk&cv_methods=no-retrain&cv_sizes=5&cv_sizes=10&cv_tasks=2",
    "timing": "?sizes=50&sizes=100&hidden=2&methods=function&methods=parameter-fd"
    "&test_points=50",
}

SERVER_START_TIMEOUT = 90.0
#: Screenshots for a person to look at (git-ignored).
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: Generous: with a cold model cache the first page view trains the source network.
PLOT_TIMEOUT_MS = 300_000


def _require_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = (
        f"headless Chromium not found at {CHROMIUM}; install Debian's 'chromium' package "
        "(apt-get install -y chromium) to run the browser tests"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def app_url(ntkcore_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the app as ``make app`` does (app/launch.py) on a free local port."""
    _require_chromium()
    try:
        with serve_app(tmp_path_factory.mktemp("streamlit"), ntkcore_cache) as server:
            yield server.url
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("url_path", sorted(PAGES), ids=lambda p: p or "default")
def test_page_renders_plot_without_exception(
    app_url: str, browser, url_path: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))
    try:
        query = RUN_FIRST.get(url_path, "")
        page.goto(f"{app_url}/{url_path}{query}", wait_until="domcontentloaded")
        if url_path in RUN_FIRST:
            page.get_by_role("button", name="Run").click(timeout=60_000)
        page.wait_for_selector(
            ".js-plotly-plot .main-svg", state="visible", timeout=PLOT_TIMEOUT_MS
        )
        heading, legend_entry = PAGES[url_path]
        page.get_by_text(heading).first.wait_for(timeout=30_000)
        # Let the run finish (the status widget disappears) before looking for errors.
        page.wait_for_selector(
            '[data-testid="stStatusWidget"]', state="detached", timeout=PLOT_TIMEOUT_MS
        )
        screenshot = tmp_path / f"{url_path or 'default'}.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 0
        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()
        assert page.get_by_text("Page not found").count() == 0, "Streamlit did not know the URL"
        legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert legend_entry in legend, legend
        assert not page_errors, page_errors
    finally:
        context.close()


def test_adapt_slider_change_redraws(app_url: str, browser) -> None:
    """Moving a slider in the real browser reruns the page and redraws without an exception."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(app_url, wait_until="domcontentloaded")
        page.wait_for_selector(
            ".js-plotly-plot .main-svg", state="visible", timeout=PLOT_TIMEOUT_MS
        )
        page.get_by_text("n = 20 context points").wait_for(timeout=30_000)
        slider = (
            page.locator('[data-testid="stSlider"]')
            .filter(has_text="Context points")
            .locator('input[type="range"]')
        )
        slider.focus()
        slider.press("ArrowRight")
        page.get_by_text("n = 21 context points").wait_for(timeout=60_000)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator(".js-plotly-plot .main-svg").first.is_visible()
    finally:
        context.close()


def test_compare_layers_change_matches_library(app_url: str, browser) -> None:
    """Compare page: a link with two networks, a new width typed into column A; the panel's
    parameter count and test MSE equal the library's own call with the same settings, and
    the URL holds the new width (so the link reproduces the comparison)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/compare?cmp_n_models=2", wait_until="domcontentloaded")
        page.wait_for_selector(
            ".js-plotly-plot .main-svg", state="visible", timeout=PLOT_TIMEOUT_MS
        )
        page.get_by_text("B: ReLU 50, untrained").first.wait_for(timeout=60_000)
        layers = (
            page.locator('[data-testid="stTextInput"]')
            .filter(has_text="Hidden layers")
            .first.locator("input")
        )
        layers.fill("12")
        layers.press("Enter")
        title = page.locator(".js-plotly-plot .annotation-text").filter(has_text="ReLU 12")
        title.first.wait_for(timeout=60_000)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=60_000)
        text = title.first.text_content()
        match = re.search(r"p = ([\d,]+) · test MSE ([\d.e+-]+)", text or "")
        assert match, text
        artifacts = Path(__file__).resolve().parent / "artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "compare-width-12.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert "cmp_layers1=12" in page.url

        # The library, called as the page says it does (Figure 3's GP on the 300 points).
        task = data.load("toy-gap", seed=1, variant="relu")
        x, y = task.source[0][:300], task.source[1][:300]
        with zoo.seeded(0):
            model = zoo.create("mlp", in_features=1, out_features=1, width=12, depth=1,
                               activation="relu").eval()  # fmt: skip
        post = ntkcore.adapt(model, x, y, noise_variance=default_noise_variance(model, x, y),
                             prior_variance=1.0, mean="zero")  # fmt: skip
        with torch.no_grad():
            mse = metrics.mse(post.predict(task.test[0]).mean, task.test[1])
        assert int(match.group(1).replace(",", "")) == zoo.info(
            "mlp", in_features=1, out_features=1, width=12, depth=1
        ).num_params == 37
        assert float(match.group(2)) == pytest.approx(mse, rel=5e-3)  # shown with 3 digits
    finally:
        context.close()


@pytest.mark.slow
def test_similarity_run_from_a_link_matches_the_library(
    app_url: str, browser, ntkcore_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open the page from a link with tiny options (URL state), press Run, wait for the
    progress to end, and compare the mean similarity shown with the library's own call."""
    from playwright.sync_api import expect

    from ntkcore.experiments.similarity import jacobian_similarity

    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    page = context.new_page()
    try:
        query = "sim_seeds=2&sim_probes=10&sim_pairs=mnist1-mnist2&sim_measures=kernel"
        page.goto(f"{app_url}/similarity?{query}", wait_until="domcontentloaded")
        page.get_by_text("Jacobian similarity across tasks").first.wait_for(timeout=60_000)
        seeds = page.locator('[data-testid="stNumberInput"]').filter(has_text="Seeds")
        probes = page.locator('[data-testid="stNumberInput"]').filter(has_text="Probe images")
        # The URL's values reach the widgets (waited for: the first render may still be on
        # its way when the heading appears).
        expect(seeds.locator("input")).to_have_value("2", timeout=30_000)
        expect(probes.locator("input")).to_have_value("10", timeout=30_000)
        page.wait_for_selector(
            '[data-testid="stStatusWidget"]', state="detached", timeout=PLOT_TIMEOUT_MS
        )
        page.get_by_role("button", name="Run").click()
        # The status box names the work while it runs and says when it is done (with a cold
        # cache, four LeNet-3s are trained first).
        title = "Comparing the Jacobians of 4 LeNet-3s on 10 MNIST1 images"
        page.get_by_text(title).first.wait_for(timeout=60_000)
        page.get_by_text("Similarity across seeds (Figure 5)").wait_for(timeout=PLOT_TIMEOUT_MS)
        page.wait_for_selector(
            '[data-testid="stStatusWidget"]', state="detached", timeout=PLOT_TIMEOUT_MS
        )
        assert page.get_by_text("done in").count() >= 1
        assert page.locator('[data-testid="stException"]').count() == 0
        page.locator('[data-testid="stTable"] tbody tr').first.wait_for(timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "similarity-after-run.png"))
        assert "sim_seeds=2" in page.url and "sim_pairs=mnist1-mnist2" in page.url

        row = page.locator('[data-testid="stTable"] tbody tr').filter(has_text="mnist1-mnist2")
        cells = row.first.locator("td, th").all_inner_texts()
        shown = {"measure": cells[-6], "comparisons": int(cells[-4]), "mean": float(cells[-3])}
    finally:
        context.close()
    monkeypatch.setenv("NTKCORE_CACHE", str(ntkcore_cache))
    expected = jacobian_similarity(
        seeds=2, n_probe=10, pairs=("mnist1-mnist2",), measures=("kernel",), device="cpu"
    )["main"]["similarity"]
    assert shown["measure"] == "kernel"
    assert shown["comparisons"] == len(expected) == 2
    # Shown with 4 decimals; the server computes with one thread, this process with more.
    assert abs(shown["mean"] - expected.mean()) <= 5e-5 + 1e-6


def test_learn_exercise_run_and_shared_link(app_url: str, browser) -> None:
    """Learn page: an exercise fills the widgets and the URL, Run measures, the link reproduces.

    The engine's numbers printed under Eq. 2–3 are checked against the library's own call
    with the exercise's settings.
    """
    import re

    import torch

    from app.learn_content import EXERCISES, NETWORKS
    from ntkcore import data, zoo
    from ntkcore.experiments import tour

    settings = EXERCISES["band"].settings
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/learn", wait_until="domcontentloaded")
        page.wait_for_selector(".js-plotly-plot .main-svg", state="visible",
                               timeout=PLOT_TIMEOUT_MS)
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Load an exercise").click()
        page.get_by_role("option", name=EXERCISES["band"].title).click()
        page.wait_for_function(
            f"window.location.search.includes('post_n={settings['post_n']}')", timeout=60_000
        )
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached",
                               timeout=60_000)
        shared = page.url
        page.get_by_text("the last layer only").click()
        page.get_by_role("button", name="Run the measurement").click()
        page.locator(".js-plotly-plot .legendtext").filter(
            has_text="ntkcore.adapt (auto)"
        ).first.wait_for(timeout=PLOT_TIMEOUT_MS)
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        context.close()

    # The shared link opens the same view in a fresh session.
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(shared, wait_until="domcontentloaded")
        caption = page.get_by_text("The library's").first
        caption.wait_for(timeout=PLOT_TIMEOUT_MS)
        match = re.search(r"gives μ\* = (\S+), σ\*² = (\S+);", caption.inner_text())
        assert match, caption.inner_text()
        net = NETWORKS[settings["net"]]
        task = data.load(net.dataset, seed=1)
        x, y = task.context(settings["post_n"])
        numbers = tour.posterior_numbers(
            zoo.preset(net.preset_id).load(), x, y, torch.tensor([settings["post_x"]]),
            noise_variance=settings["post_noise"], prior_variance=settings["post_prior"],
            mean=settings["post_mean"],
        )
        assert float(match.group(1)) == pytest.approx(numbers.engine_mean[0], rel=1e-3)
        assert float(match.group(2)) == pytest.approx(numbers.engine_variance[0], rel=1e-3)
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        context.close()


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


@pytest.mark.slow
def test_timing_run_from_a_link_shows_progress_and_the_library_numbers(
    app_url: str, browser
) -> None:
    """A shared link fills the Timing form; Run shows progress, then the points the library's
    own call with the same settings measures (row count, parameter count)."""
    import torch

    from ntkcore.experiments.timing import timing_vs_n

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 2000})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))
    options = {"sizes": (100, 250), "hidden": 4, "methods": ("function", "parameter-fd"),
               "test_points": 50}  # fmt: skip
    query = "&".join(
        [*(f"sizes={n}" for n in options["sizes"]), f"hidden={options['hidden']}",
         *(f"methods={m}" for m in options["methods"]), f"test_points={options['test_points']}"]
    )  # fmt: skip
    try:
        page.goto(f"{app_url}/timing?{query}", wait_until="domcontentloaded")
        page.get_by_text("Nothing measured yet").wait_for(timeout=60_000)
        chips = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Data points n")
        assert chips.inner_text().split()[-2:] == ["100", "250"], chips.inner_text()
        assert page.locator(".js-plotly-plot").count() == 0  # nothing runs on load
        page.screenshot(path=str(ARTIFACTS / "timing-browser-0-from-link.png"))

        page.get_by_role("button", name="Run").click()
        page.locator('[data-testid="stProgress"]').first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "timing-browser-1-running.png"))
        page.get_by_text("done in").wait_for(timeout=PLOT_TIMEOUT_MS)
        page.wait_for_selector(
            '[data-testid="stStatusWidget"]', state="detached", timeout=PLOT_TIMEOUT_MS
        )
        page.wait_for_selector(".js-plotly-plot .main-svg", state="visible", timeout=30_000)
        page.get_by_text("Points measured").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "timing-browser-2-done.png"))
        assert page.locator('[data-testid="stException"]').count() == 0
        legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert {"function", "parameter-fd", "∝ n (linear)"} <= set(legend), legend

        # one thread, as the app: two OpenMP threads on a busy 2-core machine took 48 s here
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            table = timing_vs_n(**options, warm_up=False)
        finally:
            torch.set_num_threads(threads)
        assert _metric(page, "Points measured") == f"{len(table)} of {len(table)}"
        assert _metric(page, "Parameters p") == f"{int(table['p'].iloc[0]):,}"
        assert not page_errors, page_errors
    finally:
        context.close()


@pytest.mark.slow
def test_classification_run_from_a_link_shows_progress_and_the_library_numbers(
    app_url: str, browser
) -> None:
    """A shared link fills the Classification form; nothing runs on load; Run shows progress,
    then the accuracies the library's own call with the same settings computes."""
    import torch

    from ntkcore.experiments.classification import classification

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))
    options = {"methods": ("network", "map", "vi"), "means": ("zero",), "n_train": 100,
               "n_test": 250, "vi_steps": 50}  # fmt: skip
    labels = {"network": "network", "map": "MAP", "vi": "VI"}  # the URL holds the labels
    query = "&".join(
        [*(f"f4_methods={labels[m]}" for m in options["methods"]), "f4_means=finite+NTK",
         f"f4_n_train={options['n_train']}", f"f4_n_test={options['n_test']}",
         f"f4_vi_steps={options['vi_steps']}"]
    )  # fmt: skip
    try:
        page.goto(f"{app_url}/classification?{query}", wait_until="domcontentloaded")
        page.get_by_text("Nothing computed yet").wait_for(timeout=60_000)
        chips = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Methods")
        assert chips.inner_text().split()[1:4] == ["network", "MAP", "VI"], chips.inner_text()
        assert page.locator(".js-plotly-plot").count() == 0  # nothing runs on load
        page.screenshot(path=str(ARTIFACTS / "classification-browser-0-from-link.png"))

        page.get_by_role("button", name="Run").click()
        page.locator('[data-testid="stProgress"]').first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "classification-browser-1-running.png"))
        page.get_by_text("done in").wait_for(timeout=PLOT_TIMEOUT_MS)
        page.wait_for_selector(
            '[data-testid="stStatusWidget"]', state="detached", timeout=PLOT_TIMEOUT_MS
        )
        page.wait_for_selector(".js-plotly-plot .main-svg", state="visible", timeout=30_000)
        page.get_by_text("Network accuracy").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "classification-browser-2-done.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
        legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert {"network", "finite NTK · MAP", "finite NTK · VI", "perfect calibration"} <= set(
            legend
        ), legend

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the app
        try:
            main = classification(**options).main.set_index("method")
        finally:
            torch.set_num_threads(threads)
        assert _metric(page, "Network accuracy") == f"{main.loc['network', 'accuracy']:.1%}"
        best = main.loc[["map", "vi"], "accuracy"].max()
        assert _metric(page, "Best GLM accuracy") == f"{best:.1%}"
        assert _metric(page, "Best GLM ECE") == f"{main.loc[['map', 'vi'], 'ece'].min():.3f}"
        assert not page_errors, page_errors
    finally:
        context.close()


@pytest.mark.slow
def test_curves_run_from_a_link_shows_progress_and_the_library_numbers(
    app_url: str, browser
) -> None:
    """A shared link fills the Adaptation-curves form; nothing runs on load; Run shows a
    progress bar naming method, task and context size, then the curves, and the mean MSE the
    page prints is the library's own ``fast_adaptation`` with the same settings."""
    import re
    import time

    import torch

    from ntkcore.experiments.fast_adaptation import fast_adaptation

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))
    options = {"dataset": "sinusoids", "methods": ("ntk", "no-retrain", "rbf-gp"),
               "context_sizes": (5, 20), "tasks": (0, 1, 2)}  # fmt: skip
    query = "&".join(
        ["cv_dataset=sinusoids", *(f"cv_methods={m}" for m in options["methods"]),
         *(f"cv_sizes={n}" for n in options["context_sizes"]), "cv_tasks=3"]
    )  # fmt: skip
    try:
        page.goto(f"{app_url}/curves?{query}", wait_until="domcontentloaded")
        page.get_by_text("Nothing computed yet").wait_for(timeout=60_000)
        chips = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Methods")
        for method in options["methods"]:
            assert method in chips.inner_text(), chips.inner_text()
        assert page.locator(".js-plotly-plot").count() == 0  # nothing runs on load
        page.screenshot(path=str(ARTIFACTS / "curves-browser-0-from-link.png"))

        page.get_by_role("button", name="Run", exact=True).click()
        bar = page.locator('[data-testid="stProgress"]').first
        bar.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "curves-browser-1-running.png"))
        messages = set()  # what the bar says while the run goes on
        done = page.get_by_text("done in")
        deadline = time.monotonic() + PLOT_TIMEOUT_MS / 1000
        while not done.count() and time.monotonic() < deadline:
            messages.add(bar.text_content() or "")
            time.sleep(0.1)
        done.wait_for(timeout=30_000)
        named = [m for m in messages if re.search(r"(ntk|no-retrain|rbf-gp): (task \d, \d+ "
                                                  r"context points|source-side fit)", m)]
        assert named, messages
        page.wait_for_selector(
            '[data-testid="stStatusWidget"]', state="detached", timeout=PLOT_TIMEOUT_MS
        )
        page.wait_for_selector(".js-plotly-plot .main-svg", state="visible", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "curves-browser-2-done.png"))
        assert page.locator('[data-testid="stException"]').count() == 0
        legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert set(options["methods"]) <= set(legend), legend
        assert "cv_tasks=3" in page.url and "cv_methods=rbf-gp" in page.url

        table = page.locator('[data-testid="stTable"]').first
        header = table.locator("thead th").all_inner_texts()
        row = table.locator("tbody tr").filter(has_text="ntk").first
        cells = row.locator("th, td").all_inner_texts()
        shown = dict(zip(header, cells, strict=True))
        page_mse = {n: float(shown[f"n = {n}"]) for n in options["context_sizes"]}
        assert not page_errors, page_errors
    finally:
        context.close()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the app
    try:
        table = fast_adaptation(**options)
    finally:
        torch.set_num_threads(threads)
    means = table[table["method"] == "ntk"].groupby("n_context")["mse"].mean()
    for n, value in page_mse.items():
        assert value == pytest.approx(means[n], rel=1e-3)  # printed with 4 digits


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)]
)
def test_missing_browser_skips_except_under_ci(
    ci: str | None, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="headless Chromium not found"):
        _require_chromium()
