"""The Dagster UI, driven in a real browser as a person would use it.

`dagster dev` (webserver and daemon) runs against a temporary DAGSTER_HOME, Playwright drives the
OS's Chromium (never a downloaded browser): the asset graph shows every pipeline stage, the
`dataset` partitions list the test's partition, a materialization of `raw_triplets` launched from
the asset page runs through the daemon to success, and the asset's markdown preview renders as a
table. Screenshots go to $ARHN_UI_SCREENSHOTS, else to the test's tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from arhn_assets.definitions import defs
from arhn_assets_tests.ui_server import REPO_ROOT, DagsterDev

pytestmark = [pytest.mark.slow, pytest.mark.all_cores]  # a Dagster UI driven by Chromium

CHROMIUM = Path(os.environ.get("ARHN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DATASET = "tiny"
QUERIES = {"q-cat-1": "what are cats", "q-tea-2": "how is tea made"}
CORPUS = {
    "d1": ("Cats", "Cats are small domesticated carnivorous mammals."),
    "d2": ("Dogs", "Dogs were domesticated from wolves."),
    "d3": ("Tea", "Tea is an aromatic beverage prepared from cured leaves."),
    "d4": ("Coffee", "Coffee is brewed from roasted coffee beans."),
}
QRELS = [("q-cat-1", "d1"), ("q-tea-2", "d3")]
# The ingest multi-asset cannot be subset: materializing raw_triplets materializes all three.
INGEST_ASSETS = ("raw_triplets", "raw_passages", "raw_triplets_quarantine")

RUN_TIMEOUT_MS = 180_000
UI_TIMEOUT_MS = 60_000  # first page loads wait for the code location on 2 busy cores
# Big enough that the whole expanded graph fits at a zoom (>= 0.6) where nodes show full names;
# below that zoom Dagster draws "minimal" nodes with middle-truncated names.
GRAPH_VIEWPORT = {"width": 3200, "height": 2200}
PAGE_VIEWPORT = {"width": 1600, "height": 1000}


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def playwright_api():
    if not CHROMIUM.exists():
        _missing(
            f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set ARHN_CHROMIUM); the UI "
            f"browser test needs it"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dependency of the project
        _missing("the playwright Python package is not installed")
    return sync_playwright


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ARHN_UI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    """ARHN_DATA_DIR with one BEIR folder, `tiny`: four documents, two training queries."""
    data_dir = tmp_path / "datasets"
    root = data_dir / DATASET
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n" for doc_id, (title, text) in CORPUS.items()
        )
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in QUERIES.items())
    )
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS)
    )
    return data_dir


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """The UI's instance, opened from this process: the partition is added before the UI starts."""
    test_instance = dg.DagsterInstance.from_config(str(dagster_home))
    test_instance.add_dynamic_partitions("dataset", [DATASET])
    try:
        yield test_instance
    finally:
        test_instance.dispose()


@pytest.fixture
def dagster_ui(
    tmp_path: Path, dagster_home: Path, tiny_beir: Path, instance: dg.DagsterInstance
) -> Iterator[DagsterDev]:
    arhn_home = tmp_path / "arhn_home"
    arhn_home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "ARHN_HOME": str(arhn_home),
        "ARHN_DATA_DIR": str(tiny_beir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    server = DagsterDev(env, log_path=tmp_path / "dagster_dev.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def explained_failure(page, server: DagsterDev, screenshots: Path) -> Iterator[None]:
    """Any failure inside: a screenshot of the page and the tail of the dagster dev log."""
    try:
        yield
    except Exception as error:
        shot = screenshots / "failure.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(
            f"{type(error).__name__}: {error}\n"
            f"page: {page.url}\nscreenshot: {shot}\n--- dagster dev log (tail) ---\n{server.log_tail()}"
        ) from error


def test_ui_shows_the_pipeline_and_materializes_a_partition(playwright_api, dagster_ui, instance, screenshots):
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)  # Playwright's 5 s is short for 2 busy cores

    # The pipeline's own stages; the warehouse's dbt models and the judge audit have their own tests.
    graph = defs().resolve_asset_graph()
    stages = sorted(
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).group_name not in ("warehouse", "audit")
    )
    assert {"raw_triplets", "mined_negatives", "refined_triplets", "retrieval_report"} <= set(stages)
    url = dagster_ui.url

    with playwright_api() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=GRAPH_VIEWPORT)
            page.set_default_timeout(UI_TIMEOUT_MS)
            with explained_failure(page, dagster_ui, screenshots):
                _asset_graph_shows_every_stage(page, expect, url, stages, screenshots)
                page.set_viewport_size(PAGE_VIEWPORT)
                _partitions_tab_lists_the_dataset(page, expect, url)
                run_id = _materialize_partition_from_asset_page(page, expect, screenshots)
                _materialization_recorded(instance, run_id)
                _preview_renders_as_a_table(page, expect, url, screenshots)
                _report_chart_renders_as_an_image(page, expect, url, instance, screenshots)
        finally:
            browser.close()


def _asset_graph_shows_every_stage(page, expect, url, stages, screenshots) -> None:
    page.goto(f"{url}/asset-groups")
    expect(page.get_by_text("Global asset lineage", exact=True)).to_be_visible()
    _dismiss_community_dialog(page, expect)
    # Show the pipeline without the warehouse's dbt models and the judge audit, as a user narrows a big graph.
    # (the selection box is a code editor, not an input: click its placeholder and type)
    page.locator(".CodeMirror").filter(has_text="Search and filter assets").click()
    page.keyboard.type("not group:warehouse and not group:audit")
    page.keyboard.press("Enter")
    # Groups start collapsed; the graph's settings menu expands them all.
    graph = page.locator("[data-svg-viewport]")
    expect(graph.get_by_text("ingest", exact=True).first).to_be_visible()
    page.get_by_role("button", name="settings", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"\bExpand all groups\b")).click()
    page.keyboard.press("Escape")
    for stage in stages:
        node_name = graph.get_by_text(stage, exact=True)
        try:
            expect(node_name).to_be_visible(timeout=15_000)
        except AssertionError as error:
            shown = [text.strip()[:40] for text in graph.locator("foreignObject").all_text_contents()]
            raise AssertionError(f"asset {stage!r} not shown by name in the graph; the graph shows: {shown}") from error
    page.screenshot(path=str(screenshots / "asset_graph.png"))


def _dismiss_community_dialog(page, expect) -> None:
    """A fresh instance greets its first visitor, a second after the first page loads, with a
    "Join the Dagster community" dialog. Skip it before opening any menu (showing up later, it
    would close the menu), and should it show up again, skip it whenever it is in the way."""
    skip = page.get_by_role("button", name="Skip", exact=True)
    with contextlib.suppress(AssertionError):
        expect(skip).to_be_visible(timeout=10_000)
    if skip.is_visible():
        skip.click()
    expect(skip).to_be_hidden()
    page.add_locator_handler(skip, lambda button: button.click())


def _partitions_tab_lists_the_dataset(page, expect, url) -> None:
    page.goto(f"{url}/assets/raw_triplets?view=partitions")
    expect(page.get_by_role("tab", name="Partitions", exact=True)).to_have_attribute("aria-selected", "true")
    # The partition list renders each key twice (one hidden copy measures the text for truncation).
    expect(page.get_by_text(DATASET, exact=True).filter(visible=True)).to_be_visible()
    # The status filters are styled checkboxes (the input itself is hidden): read their labels.
    expect(page.get_by_text("Missing (1)", exact=True)).to_be_visible()


def _materialize_partition_from_asset_page(page, expect, screenshots) -> str:
    page.get_by_role("button", name=re.compile(r"Materialize…$")).click()
    # ingest_dataset cannot be subset: the UI says the two other outputs come along.
    extra = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
    for asset in INGEST_ASSETS[1:]:
        expect(extra.get_by_role("link", name=asset, exact=True)).to_be_visible()
    extra.get_by_role("button", name="Confirm", exact=True).click()

    launch = page.get_by_role("dialog").filter(has_text="Launch runs to materialize 3 assets")
    expect(launch).to_be_visible()
    # The partition picker is a text field without a label: open it by its prompt.
    launch.get_by_text("Select a partition or create one", exact=True).click()
    launch.get_by_role("menuitem", name=re.compile(rf"^{DATASET}\b")).click()
    expect(launch.get_by_text("1 partition", exact=True)).to_be_visible()
    launch.get_by_role("button", name="Launch 1 run", exact=True).click()

    toast = (
        page.get_by_role("region", name=re.compile("^Notifications"))
        .get_by_role("listitem")
        .filter(has_text=re.compile(r"Launched run [0-9a-f]{8}"))
    )
    expect(toast).to_be_visible()
    toast.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)

    expect(page.get_by_text(f"partition: {DATASET}", exact=True).first).to_be_visible()
    # The queued run is started by the daemon; the run's status tag ends as one of these.
    final = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(final).to_be_visible(timeout=RUN_TIMEOUT_MS)
    status = final.inner_text()
    page.screenshot(path=str(screenshots / "run.png"))
    assert status == "Success", f"run {run_id} ended with {status!r}"
    expect(page.get_by_text("RUN_SUCCESS", exact=True).first).to_be_visible()
    return run_id


def _materialization_recorded(instance: dg.DagsterInstance, run_id: str) -> None:
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, run
    assert run.tags.get("dagster/partition") == DATASET
    for asset in INGEST_ASSETS:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        assert event is not None, f"{asset} has no materialization"
        assert event.run_id == run_id
        assert event.asset_materialization.partition == DATASET
    triplets = instance.get_latest_materialization_event(dg.AssetKey("raw_triplets")).asset_materialization
    assert triplets.metadata["queries"].value == len(QUERIES)


def _preview_renders_as_a_table(page, expect, url, screenshots) -> None:
    page.goto(f"{url}/assets/raw_triplets")
    expect(page.get_by_role("tab", name="Overview", exact=True)).to_have_attribute("aria-selected", "true")
    preview = page.get_by_role("row").filter(has=page.get_by_role("cell", name="preview", exact=True))
    # A short markdown value renders inline, in the metadata table's row, as an HTML table.
    table = preview.get_by_role("table")
    expect(table).to_be_visible()
    for query_id in QUERIES:
        expect(table.get_by_role("cell", name=query_id, exact=True)).to_be_visible()
    preview.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "raw_triplets_preview.png"))
    # One header cell per column: a table wrapped at polars' default width would not parse as one.
    headers = [text.strip() for text in table.get_by_role("columnheader").all_inner_texts()]
    assert headers[:3] == ["dataset", "query_id", "query_text"], headers


def _report_chart_renders_as_an_image(page, expect, url, instance, screenshots) -> None:
    """The report's metadata, made by the report's own functions from a small score table and
    recorded for the partition, shows its chart as a decoded image (a data: URI in markdown)."""
    import polars as pl

    from arhn_assets.core.report import bar_chart, comparison, image_markdown, markdown_table

    rows = [
        (DATASET, config, f"/models/{config}", DATASET, "test", query_id, metric, value)
        for config, base in (("base", 0.5), ("baseline", 0.6), ("R", 0.65))
        for query_id, bump in (("q1", 0.0), ("q2", 0.1), ("q3", -0.1))
        for metric in ("ndcg@10", "recall@100")
        for value in [base + bump]
    ]
    query_scores = pl.DataFrame(
        rows,
        schema=["dataset", "config", "model_path", "eval_dataset", "split", "query_id", "metric", "value"],
        orient="row",
    )
    scores = query_scores.group_by(
        "dataset", "config", "model_path", "eval_dataset", "split", "metric", maintain_order=True
    ).agg(pl.col("value").mean())
    table = comparison(scores, query_scores)
    png = bar_chart(table, screenshots / "report_chart.source.png")
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="retrieval_report",
            partition=DATASET,
            metadata={"report": dg.MetadataValue.md(markdown_table(table) + "\n\n" + image_markdown(png))},
        )
    )
    page.goto(f"{url}/assets/retrieval_report")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="report", exact=True))
    expect(row).to_be_visible()
    container = row
    show = row.get_by_text("[Show Markdown]", exact=True)
    if show.count():  # long markdown opens in a dialog
        show.click()
        container = page.get_by_role("dialog")
    image = container.get_by_role("img", name="retrieval report")
    expect(image).to_be_visible()
    width = image.evaluate("img => img.naturalWidth")
    assert width > 100, f"the chart did not decode (naturalWidth {width})"
    page.screenshot(path=str(screenshots / "report_chart.png"))
