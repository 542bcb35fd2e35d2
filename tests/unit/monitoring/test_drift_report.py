"""The drift report, drawn from real verdicts on seeded synthetic traffic and read back with an
HTML parser: what it says, what it draws, and that no class name can inject markup."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cnnops.contracts.drift import DriftVerdict
from cnnops.core.errors import CnnopsError
from cnnops.monitoring.drift import Observations, judge_drift, prepare_baseline
from cnnops.monitoring.report import write_drift_report
from cnnops.settings.config import DriftConfig

CLASSES = 4
NAMES = ["cat", "dog", "fox", "owl"]
SOURCE = "http://localhost:3000"
CONFIG = DriftConfig()


def sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> Observations:
    """Embeddings with a few strong directions (as in test_drift); `shift` moves them along those."""
    basis = np.random.default_rng(0).normal(size=(6, 32))
    latent = (rng.normal(size=(n, 6)) + shift) * np.array([4, 3, 2, 1.5, 1, 0.5])
    embeddings = (latent @ basis + rng.normal(scale=0.3, size=(n, 32))).astype(np.float32)
    return Observations(embeddings, rng.choice(CLASSES, size=n), rng.beta(8, 1, size=n), CLASSES)


def judge(seed: int, shift: float = 0.0, window: int = 300, reference: bool = True) -> DriftVerdict:
    rng = np.random.default_rng(seed)
    baseline = prepare_baseline(sample(rng, 600), CONFIG) if reference else None
    return judge_drift(baseline, sample(rng, window, shift), CONFIG)


class Page(HTMLParser):
    """The tags of a page, the rows of each table, and its text, as a browser would show them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.rows: list[int] = []
        self.headline = ""
        self.text: list[str] = []
        self.in_h1 = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.in_h1 = self.in_h1 or tag == "h1"
        if tag == "table":
            self.rows.append(0)
        elif tag == "tr":
            self.rows[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        self.in_h1 = self.in_h1 and tag != "h1"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.in_h1:
            self.headline += data


def report(tmp_path: Path, verdict: DriftVerdict, names: list[str] = NAMES) -> Page:
    return Page(write_drift_report(tmp_path / "drift.html", verdict, names, SOURCE).read_text(encoding="utf-8"))


def test_a_drifted_window_shows_every_test_and_histogram(tmp_path: Path) -> None:
    verdict = judge(1, shift=0.5)
    assert verdict.status == "drift"
    page = report(tmp_path, verdict)
    assert page.headline == "Drift report drift"
    assert page.tags["svg"] == len(verdict.histograms) + 1  # and the class-share chart
    assert page.tags["h2"] == 4  # embeddings, classes, confidence, distributions
    # header row and a row per component; header row and a row per class
    assert page.rows == [len(verdict.components) + 1, CLASSES + 1]
    text = "".join(page.text)
    for shown in [*NAMES, SOURCE, verdict.reason, "component 1", "confidence", "reference", "window"]:
        assert shown in text, shown


def test_a_quiet_window_says_no_drift(tmp_path: Path) -> None:
    verdict = judge(2)
    assert verdict.status == "no-drift"
    page = report(tmp_path, verdict)
    assert page.headline == "Drift report no drift"
    assert page.tags["svg"] == len(verdict.histograms) + 1


@pytest.mark.parametrize("verdict", [judge(3, window=CONFIG.min_window - 1), judge(3, reference=False)])
def test_no_verdict_gives_the_reason_and_the_counts_only(tmp_path: Path, verdict: DriftVerdict) -> None:
    page = report(tmp_path, verdict, names=[])
    assert page.headline == "Drift report no verdict"
    text = "".join(page.text)
    assert verdict.reason in text and f"{verdict.window_size} requests" in text
    assert (page.tags["svg"], page.tags["table"], page.tags["h2"]) == (0, 0, 0)


def test_html_in_a_class_name_is_text_not_markup(tmp_path: Path) -> None:
    names = ["<script>alert(1)</script>", "a&b", "<b>bold</b>", "'quoted'"]
    page = report(tmp_path, judge(1, shift=0.5), names)
    assert page.tags["script"] == 0 and page.tags["b"] == 0
    assert all(name in page.text for name in names)  # table cells, unescaped by the parser
    assert "&lt;script&gt;" in (tmp_path / "drift.html").read_text(encoding="utf-8")


def test_a_non_finite_number_shows_as_na(tmp_path: Path) -> None:
    verdict = judge(1, shift=0.5)
    assert verdict.classes is not None
    broken = verdict.model_copy(
        update={"p_value": float("nan"), "classes": verdict.classes.model_copy(update={"cramers_v": float("inf")})}
    )
    text = "".join(report(tmp_path, broken).text)
    assert "Joint p-value n/a" in text and "Cramér's V n/a" in text and "nan" not in text


def test_the_page_is_written_whole_into_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "drift" / "window.html"
    assert write_drift_report(target, judge(1, shift=0.5), NAMES, SOURCE) == target
    assert [p.name for p in target.parent.iterdir()] == ["window.html"]  # no scratch file left
    first = target.read_text(encoding="utf-8")
    write_drift_report(target, judge(2), NAMES, SOURCE)
    assert Page(target.read_text(encoding="utf-8")).headline == "Drift report no drift" != Page(first).headline


def test_too_few_class_names_is_a_one_line_error_that_keeps_the_old_page(tmp_path: Path) -> None:
    target = write_drift_report(tmp_path / "drift.html", judge(2), NAMES, SOURCE)
    before = target.read_text(encoding="utf-8")
    with pytest.raises(CnnopsError, match="counts 4 classes but only 2 class names"):
        write_drift_report(target, judge(1, shift=0.5), NAMES[:2], SOURCE)
    assert target.read_text(encoding="utf-8") == before
