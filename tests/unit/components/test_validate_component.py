"""components.validate through `.python_func`: the verdict, the grouped dataset and the report."""

from kfp.dsl import HTML, Dataset
from support.training import component_config

from cnnops.components.ingest import ingest
from cnnops.components.validate import validate
from cnnops.contracts.dataset import read_manifest


def test_validate_returns_the_verdict_and_publishes_the_report(make_images, state_home, tmp_path):
    config = component_config(make_images(per_class=20))
    dataset = Dataset(uri=str(tmp_path / "dataset"))
    ingest.python_func(config=config, dataset=dataset)
    validated, report = Dataset(uri=str(tmp_path / "validated")), HTML(uri=str(tmp_path / "report.html"))
    verdict = validate.python_func(config=config, dataset=dataset, validated=validated, report=report)
    # Some drawn stripes are within a few bits of each other's perceptual hash: a warning, not a stop.
    assert verdict == validated.metadata["verdict"] == "warn"
    assert validated.metadata["near_duplicate_groups"] == 4
    page = (tmp_path / "report.html").read_text()
    assert page == (tmp_path / "validated" / "report.html").read_text() and "near duplicates" in page
    assert len(read_manifest(tmp_path / "validated")) == 60
