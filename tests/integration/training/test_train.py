import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from support.training import train_candidate


@pytest.mark.slow
def test_mixed_precision_trains_and_leaves_the_global_policy_alone(make_images, state_home, tmp_path):
    result = train_candidate(
        tmp_path / "mixed", make_images(per_class=10), **{"train.epochs": 1, "train.precision": "mixed_float16"}
    )
    assert keras.mixed_precision.global_policy().name == "float32"
    assert MlflowClient().get_run(result["run_id"]).data.params["train.precision"] == "mixed_float16"
    model = keras.saving.load_model(result["model"] / "model.keras", compile=False)
    policies = {layer.__class__.__name__: layer.dtype_policy.name for layer in model.layers}
    assert policies["Conv2D"] == "mixed_float16" and policies["Dense"] == "float32"
    probabilities = np.asarray(model(np.zeros((1, 16, 16, 3), dtype=np.uint8), training=False))
    assert probabilities.dtype == np.float32


@pytest.mark.slow
def test_input_changed_after_ingest_is_a_one_line_error(make_images, state_home, tmp_path):
    from cnnops.core.errors import CnnopsError
    from cnnops.data.ingest import ingest_source
    from cnnops.data.split import SPLITS, split_dataset
    from cnnops.settings.config import build_config
    from cnnops.training.train import train_model

    source = make_images(per_class=10)
    config = build_config(overrides={"data.source": str(source), "train.epochs": 1, "train.batch_size": 8})
    ingest_source(config, tmp_path / "ds")
    split_dataset(tmp_path / "ds", {name: tmp_path / name for name in SPLITS}, config)
    changed = sorted((source / "disc").iterdir())[0]
    changed.write_bytes((source / "cross" / "cross_000.png").read_bytes())
    with pytest.raises(CnnopsError, match=rf"^{changed} changed since ingest; re-run ingest"):
        train_model(tmp_path / "train", tmp_path / "val", tmp_path / "model", config)


@pytest.mark.slow
def test_evaluating_on_unknown_classes_is_a_one_line_error(make_images, state_home, tmp_path):
    from cnnops.contracts.dataset import read_dataset_info, read_manifest, write_dataset
    from cnnops.core.errors import CnnopsError
    from cnnops.evaluation.evaluate import evaluate_model

    result = train_candidate(tmp_path / "m", make_images(per_class=10), **{"train.epochs": 1})
    test = read_manifest(result["test"]).assign(label="zebra")
    write_dataset(tmp_path / "odd", test, read_dataset_info(result["test"]).model_copy(update={"classes": ["zebra"]}))
    with pytest.raises(CnnopsError, match=r"classes the model was not trained on \(zebra\)"):
        evaluate_model(result["model"], tmp_path / "odd", tmp_path / "eval")


@pytest.mark.slow
def test_a_frozen_backbone_trains_its_head_through_the_same_step(make_images, state_home, tmp_path):
    import keras
    from support.training import train_candidate

    source = make_images(per_class=12, name="backbone")
    trained = train_candidate(
        tmp_path / "mobilenet",
        source,
        **{"train.architecture": "mobilenet_v2", "train.working_size": "32", "train.epochs": "1"},
    )
    model = keras.saving.load_model(trained["model"] / "model.keras", compile=False)
    assert model.name == "mobilenet_v2"
    backbone = next(layer for layer in model.layers if layer.name.startswith("mobilenetv2"))
    assert not backbone.trainable
    # One epoch of a head promises no score above chance on 3 test images: the score is checked
    # against the confusion matrix of every test image instead.
    matrix = np.asarray(trained["metrics"]["confusion_matrix"])
    assert matrix.sum() == trained["metrics"]["n_test"] == 3
    assert trained["metrics"]["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())


@pytest.mark.slow
def test_cosine_schedule_and_augmentation_train_through_the_same_step(make_images, state_home, tmp_path):
    from support.training import train_candidate

    source = make_images(per_class=12, name="augmented")
    trained = train_candidate(
        tmp_path / "cosine",
        source,
        **{
            "train.lr_schedule": "cosine",
            "train.augmentation": "light",
            "train.augment.rotation": "0.02",
            "train.epochs": "2",
        },
    )
    run = mlflow.get_run(trained["run_id"])
    assert run.data.params["train.lr_schedule"] == "cosine"
    assert run.data.params["train.augment.rotation"] == "0.02"
    assert run.data.metrics["epochs_run"] == 2


@pytest.mark.slow
def test_baselines_score_the_same_test_split_and_log_to_the_same_experiment(make_images, state_home, tmp_path):
    from support.training import train_candidate

    from cnnops.contracts.evaluation import read_baseline_scores
    from cnnops.evaluation.baselines import train_baselines

    source = make_images(per_class=20, name="floors")
    trained = train_candidate(tmp_path / "cnn", source, **{"train.epochs": "1"})
    result = train_baselines(
        tmp_path / "cnn" / "train", tmp_path / "cnn" / "test", trained["config"], tmp_path / "floors"
    )
    scores = result.scores
    assert set(scores) == {"logistic-regression", "random-forest"}
    assert scores["random-forest"]["accuracy"] > 0.5  # the shapes are easy: a floor, not chance
    assert read_baseline_scores(tmp_path / "floors") == result
    assert result.test_fingerprint == trained["metrics"]["test_fingerprint"]
    runs = mlflow.search_runs(
        experiment_ids=[trained["experiment_id"]], output_format="list", filter_string="tags.`cnnops.step` = 'baseline'"
    )
    assert {run.data.tags["cnnops.baseline"] for run in runs} == set(scores)
    assert all(
        run.data.tags["cnnops.dataset_fingerprint"]
        == mlflow.get_run(trained["run_id"]).data.tags["cnnops.dataset_fingerprint"]
        for run in runs
    )
