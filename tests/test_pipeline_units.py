"""Pure parts of the pipeline: metrics, flags and flagfiles, class weights, augmentation, inputs."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from sklearn.metrics import f1_score

from pipelines.core import callbacks, evaluation, inputs, training
from pipelines.core import flags as pipeline_flags
from pipelines.core.config import Config, ConfigError
from pipelines.core.splits import Split
from pipelines.spam import TASK as SPAM
from pipelines.spam import score_submission

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
RUN_FLAGS = pipeline_flags.define(SPAM.Options)


def _image_features(size: int):
    config = Config(image_size=size)
    return lambda raw: SPAM.features(raw, config)


@pytest.mark.parametrize("y_true, y_pred", [
    ([0, 1, 2, 3, 1, 2, 3, 0], [0, 1, 2, 3, 2, 2, 3, 1]),
    ([0, 0, 2, 3, 2, 3], [0, 1, 2, 3, 2, 0]),   # monotone absent from the truth but predicted
    ([0, 1, 1, 2, 3, 3], [0, 0, 0, 2, 3, 3]),   # monotone present but never predicted
    ([0, 0, 1, 2, 3], [0, 0, 1, 2, 3]),         # perfect
])
def test_geometric_mean_f1_matches_scikit_learn(y_true, y_pred):
    f1 = f1_score(y_true, y_pred, labels=[1, 2, 3], average=None, zero_division=0)
    expected = float(np.prod(f1) ** (1 / 3))
    assert evaluation.geometric_mean_f1(y_true, y_pred) == pytest.approx(expected)


def test_plateau_rules_watch_mean_f1_which_moves_while_the_geometric_mean_is_zero(tmp_path):
    y_true, y_pred = [0, 1, 1, 2, 3, 3], [0, 1, 0, 0, 0, 0]  # only monotone ever right
    assert evaluation.geometric_mean_f1(y_true, y_pred) == 0.0
    expected = f1_score(y_true, y_pred, labels=[1, 2, 3], average="macro", zero_division=0)
    assert evaluation.mean_f1(y_true, y_pred) == pytest.approx(expected) and expected > 0
    config = Config(task="spam", workdir=str(tmp_path))
    truth = Split([str(index) for index in range(len(y_true))], np.arange(len(y_true)), [(label,) for label in y_true])
    data = training.TrainingData(train=None, steps_per_epoch=1, val=None, val_truth=truth,
                                 class_names=("a", "b", "c", "d"))
    probabilities = np.eye(4)[y_pred]
    values = SPAM.metrics(truth, probabilities, data.class_names)
    assert values["gm_f1"] == 0.0 and values["mean_f1"] == pytest.approx(expected)
    best = callbacks.BestCheckpoint(str(tmp_path), f"val_{SPAM.objective}")
    watched = {type(callback).__name__: callback.monitor
               for callback in training.phase_callbacks(config, "full", data, SPAM, best)
               if hasattr(callback, "monitor")}
    assert watched == {"BestCheckpoint": "val_gm_f1", "ReduceLROnPlateau": "val_mean_f1",
                       "EarlyStopping": "val_mean_f1"}


def test_classification_report_and_table():
    report = evaluation.classification_report([0, 1, 1, 2], [0, 1, 2, 2], ("a", "b", "c"), (1, 2))
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                        "support": 2}
    table = evaluation.format_report(report, ("a", "b", "c"))
    assert "geometric-mean F1" in table and "accuracy 0.7500 over 4 examples" in table


def test_scorer_gives_zero_when_file_sets_differ(tmp_path):
    truth = tmp_path / "truth"
    truth.write_text("filename,annotation\na.jpg,1\nb.gif,2\nc.png,3\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("filename,y_pred\na.jpg,1\nc.png,3\n")
    assert score_submission(str(submission), str(truth))["geometric_mean_f1"] == 0.0
    submission.write_text("filename,y_pred\na.jpg,1\nb.gif,2\nc.png,3\n")
    assert score_submission(str(submission), str(truth))["geometric_mean_f1"] == pytest.approx(1.0)


def test_class_weights_are_inverse_frequency_with_mean_one():
    weights = inputs.class_weights({"a": 60, "b": 10, "c": 30}, ("a", "b", "c"))
    assert weights[1] == pytest.approx(6 * weights[0])
    assert (60 * weights[0] + 10 * weights[1] + 30 * weights[2]) / 100 == pytest.approx(1.0)


def _parse(args):
    FLAGS.unparse_flags()
    FLAGS(["prog"] + args)
    return pipeline_flags.config_from_flags("spam", SPAM.Options)


@pytest.mark.parametrize("flagfile", sorted(glob.glob(os.path.join(ROOT, "experiments", "*", "*.flags"))))
def test_every_flagfile_parses_into_a_valid_config(flagfile):
    from pipelines import load_task

    task = load_task(os.path.basename(os.path.dirname(flagfile)))
    argv = pipeline_flags.resolve_flagfiles([f"--flagfile={flagfile}", "--workdir=/tmp/w",
                                             "--raw_dir=/tmp/r"], task.name)
    own = flags.FlagValues()  # the task's own flags only, as its entry point defines them
    pipeline_flags.define(task.Options, own)
    own(["prog"] + argv)
    config = pipeline_flags.config_from_flags(task.name, task.Options, own)
    task.validate(config)
    assert config.workdir == "/tmp/w" and config.total_epochs > 0


def test_bare_flagfile_name_nesting_and_override_order(tmp_path):
    argv = pipeline_flags.resolve_flagfiles(["--flagfile=demo.flags", "--workdir=/tmp/w",
                                             "--raw_dir=/tmp/r", "--image_size=48"], "spam")
    config = _parse(argv)
    v1 = _parse(pipeline_flags.resolve_flagfiles(["--flagfile=v1.flags", "--workdir=/tmp/w",
                                                  "--raw_dir=/tmp/r"], "spam"))
    assert config.image_size == 48  # command line beats the flagfile
    assert v1.backbone == "resnet50v2" and v1.weights == "imagenet"
    assert config.backbone == "efficientnet_lite0" != v1.backbone  # demo overrides v1
    assert config.batch_size != v1.batch_size or config.head.epochs != v1.head.epochs
    with pytest.raises(ConfigError, match="not_there.flags"):
        pipeline_flags.resolve_flagfiles(["--flagfile=not_there.flags"], "spam")


@pytest.mark.parametrize("entry_point", [["pipelines.spam"], ["tuning.search", "--pipeline=spam"]])
def test_missing_flagfile_is_a_message_not_a_traceback(entry_point):
    result = subprocess.run([sys.executable, "-m", *entry_point, "--flagfile=not_there.flags"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "error: flagfile 'not_there.flags' not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_effective_flags_repeat_the_run_exactly(tmp_path):
    config = _parse(pipeline_flags.resolve_flagfiles(["--flagfile=demo.flags", "--workdir=/tmp/w",
                                                      "--raw_dir=/tmp/r"], "spam"))
    saved = tmp_path / "flags.txt"
    saved.write_text(pipeline_flags.effective_flags(RUN_FLAGS))
    _parse(["--image_size=99", "--backbone=other", "--workdir=/x", "--raw_dir=/y"])  # pollute first
    assert _parse(pipeline_flags.resolve_flagfiles([f"--flagfile={saved}"], "spam")) == config


def test_invalid_values_name_the_flag():
    with pytest.raises(ConfigError, match="--image_size"):
        _parse(["--workdir=/tmp/w", "--raw_dir=/tmp/r", "--image_size=4"])
    with pytest.raises(ConfigError, match="--workdir"):
        _parse(["--raw_dir=/tmp/r"])


def test_augmenter_changes_images_eagerly_and_in_tf_data_with_same_shapes():
    augmenter = inputs.make_augmenter(flip=True, zoom=0.2, shift=0.1, seed=0)
    images = tf.cast(tf.random.stateless_uniform([4, 24, 24, 3], [1, 2], maxval=255, dtype=tf.int32), tf.uint8)
    seed = tf.constant([3, 4], tf.int64)
    eager = augmenter(images, seed)
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(lambda batch: augmenter(batch, seed))))
    np.testing.assert_array_equal(eager.numpy(), mapped.numpy())  # stateless: same seed, same batch
    assert eager.shape == images.shape and eager.dtype == tf.uint8
    assert not np.array_equal(eager.numpy(), images.numpy())
    assert not np.array_equal(augmenter(images, seed + 1).numpy(), eager.numpy())
    assert inputs.make_augmenter(flip=False, zoom=0, shift=0, seed=0) is None


def test_augmenter_flip_mirrors_and_window_stays_inside_the_image():
    """A flip alone mirrors exactly; a window (zoom, shift) magnifies part of the image without
    bringing in anything from outside it (a constant image stays constant: no fill)."""
    ramp = tf.cast(tf.tile(tf.range(0, 240, 10)[None, None, :, None], [2, 24, 1, 3]), tf.uint8)
    flipped = inputs.make_augmenter(flip=True, zoom=0, shift=0, seed=0)
    results = [flipped(ramp, tf.constant([0, value], tf.int64)).numpy() for value in range(8)]
    assert any(np.array_equal(result[0], ramp.numpy()[0, :, ::-1]) for result in results)
    assert all(np.array_equal(result[0], ramp.numpy()[0]) or np.array_equal(result[0], ramp.numpy()[0, :, ::-1])
               for result in results)
    windowed = inputs.make_augmenter(flip=False, zoom=0.3, shift=0.2, seed=0)
    grey = tf.fill([3, 24, 24, 3], tf.constant(77, tf.uint8))
    assert np.all(windowed(grey, tf.constant([5, 6], tf.int64)).numpy() == 77)
    zoomed = windowed(ramp, tf.constant([5, 6], tf.int64)).numpy()[0, 0, :, 0].astype(int)
    steps = np.diff(zoomed)
    assert np.all(steps >= 0) and steps.mean() < 10  # the same ramp, magnified (gentler slope)


def test_input_functions_on_demo_shards(demo_shards):
    from preprocess import writer

    manifest = writer.read_manifest(str(demo_shards))
    train_paths = writer.shard_paths(str(demo_shards), "train", manifest)
    val_paths = writer.shard_paths(str(demo_shards), "val", manifest)
    records = manifest["splits"]["train"]["records"]
    target = lambda record: SPAM.target(record, Config(), 4)  # noqa: E731
    train = inputs.train_dataset(train_paths, _image_features(32), target, 8, records,
                                 inputs.make_augmenter(True, 0.1, 0.1, 0), steps=3)
    assert inputs.epoch_steps(records, 8, 3) == 3 and inputs.epoch_steps(records, 8) == records // 8
    assert int(train.cardinality()) == 3
    train = inputs.train_dataset(train_paths, _image_features(32), target, 8, records,
                                 inputs.make_augmenter(True, 0.1, 0.1, 0), steps=3, end_epoch=2)
    assert int(train.cardinality()) == 6  # both epochs in one dataset: one iterator for the run
    batches = list(train)
    features, labels = batches[0]
    assert features["image"].shape == (8, 32, 32, 3) and features["image"].dtype == tf.uint8
    assert labels.shape == (8, 4) and np.allclose(labels.numpy().sum(axis=1), 1)
    # epoch e's batches depend on (seed, e) only: a run resumed at epoch 1 sees what epoch 1 was
    resumed = list(inputs.train_dataset(train_paths, _image_features(32), target, 8, records,
                                        inputs.make_augmenter(True, 0.1, 0.1, 0), steps=3, first_epoch=1))
    for later, again in zip(batches[3:], resumed):
        np.testing.assert_array_equal(later[0]["image"].numpy(), again[0]["image"].numpy())
    assert not np.array_equal(batches[0][0]["image"].numpy(), batches[3][0]["image"].numpy())
    weighted = inputs.train_dataset(train_paths, _image_features(32), target, 8, records, steps=1,
                                    label_weights=np.array([1.0, 2.0, 3.0, 4.0]))
    _, labels, weights = next(iter(weighted))  # each record weighs its main label's weight
    np.testing.assert_allclose(weights.numpy(), 1.0 + np.argmax(labels.numpy(), axis=-1))
    truth = inputs.read_split(val_paths)
    assert len(truth) == manifest["splits"]["val"]["records"] == len(truth.main_labels)
    assert len(set(truth.indices.tolist())) == len(truth) and truth.indices.min() >= 0  # its input row
    first = next(iter(inputs.predict_dataset(val_paths, _image_features(32), 16, len(truth))))["image"].numpy()
    again = next(iter(inputs.predict_dataset(val_paths, _image_features(32), 16, len(truth))))["image"].numpy()
    np.testing.assert_array_equal(first, again)  # never augmented


def test_training_input_caches_what_fits_and_resumes_exactly_either_way(demo_shards, capsys):
    from preprocess import writer

    manifest = writer.read_manifest(str(demo_shards))
    paths = writer.shard_paths(str(demo_shards), "train", manifest)
    records = manifest["splits"]["train"]["records"]
    target = lambda record: SPAM.target(record, Config(), 4)  # noqa: E731
    per_epoch = inputs.epoch_steps(records, 8)

    def epochs(first_epoch, cache_max_bytes):
        dataset = inputs.train_dataset(paths, _image_features(32), target, 8, records,
                                       inputs.make_augmenter(True, 0.1, 0.1, 0), seed=3,
                                       cache_max_bytes=cache_max_bytes, first_epoch=first_epoch, end_epoch=3)
        return [batch[0]["image"].numpy() for batch in dataset]

    cached = epochs(0, 2**30)
    assert "streamed" not in capsys.readouterr().out
    np.testing.assert_array_equal(np.stack(epochs(2, 2**30)), np.stack(cached[2 * per_epoch:]))
    streamed = epochs(1, 1000)  # 1000 bytes hold no split: streamed, and said so
    assert "streamed from the shards" in capsys.readouterr().out
    np.testing.assert_array_equal(np.stack(epochs(2, 0)), np.stack(streamed[per_epoch:]))


def _short_last_batch(records: int) -> int:
    """A global batch size whose last batch, split over 2 replicas, would leave one empty."""
    return next(size for size in range(4, 65, 2) if 0 < records % size <= size // 2)


def test_padded_prediction_never_gives_a_replica_an_empty_batch_and_keeps_record_order(demo_shards):
    from preprocess import writer

    manifest = writer.read_manifest(str(demo_shards))
    paths = writer.shard_paths(str(demo_shards), "val", manifest)
    keys = inputs.read_split(paths).keys
    batch_size = _short_last_batch(len(keys))
    strategy = tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])
    assert strategy.num_replicas_in_sync == 2
    dataset = inputs.predict_dataset(paths, _image_features(32), batch_size, len(keys))
    for per_replica in strategy.experimental_distribute_dataset(dataset):
        sizes = [int(features.shape[0]) for features in strategy.experimental_local_results(per_replica["image"])]
        assert len(sizes) == 2 and min(sizes) > 0, sizes
    assert int(dataset.cardinality()) == -(-len(keys) // batch_size)
    with strategy.scope():  # a model whose output is each image's mean colour: checkable per record
        pixels = keras.Input((32, 32, 3), name="image")
        model = keras.Model({"image": pixels}, keras.layers.GlobalAveragePooling2D()(pixels))
    predicted = inputs.without_padding(model.predict(dataset, verbose=0), len(keys))
    expected = [tf.reduce_mean(tf.cast(inputs.decode_and_resize(features["image_bytes"], 32), tf.float32),
                               axis=(0, 1)).numpy() for features in inputs.records(paths)]
    assert predicted.shape == (len(keys), 3)
    np.testing.assert_allclose(predicted, np.stack(expected), rtol=1e-5, atol=1e-3)


def test_flags_are_generated_from_the_config_fields_with_their_defaults():
    import dataclasses as dc

    from preprocess import config_flags
    from preprocess.shard_options import ShardOptions

    names = config_flags.flag_names(Config)
    assert {"head_epochs", "full_learning_rate", "full_momentum", "num_shards", "max_pixels",
            "pseudo_class_thresholds", "weights"} <= set(names)
    assert "seed" in names and names.count("seed") == 1  # the sharding seed is --seed, not a 2nd flag
    assert not {"task", "options", "sharding", "head"} & set(names)
    assert set(RUN_FLAGS) == set(names) | {"fallback_class"}  # + the task's own Options
    config = _parse(["--workdir=/w", "--raw_dir=/r"])
    defaults = Config(task="spam", options=SPAM.Options(), raw_dir="/r", data_dir="/w/data", workdir="/w")
    assert config == defaults
    assert config.shard_options == dc.replace(ShardOptions(), seed=config.seed)
    changed = _parse(["--workdir=/w", "--raw_dir=/r", "--head_epochs=7", "--full_optimizer=sgd", "--seed=3",
                      "--num_shards=5", "--weights=none", "--pseudo_class_thresholds=0.5,0.9",
                      "--fallback_class=2"])
    assert changed.head.epochs == 7 and changed.full.optimizer == "sgd" and changed.weights is None
    assert changed.shard_options.num_shards == 5 and changed.shard_options.seed == 3
    assert changed.pseudo_class_thresholds == (0.5, 0.9) and changed.options.fallback_class == 2
    assert changed.full.learning_rate == Config().full.learning_rate  # nested defaults kept
    with pytest.raises(ConfigError, match="--pseudo_class_thresholds"):
        _parse(["--workdir=/w", "--raw_dir=/r", "--pseudo_class_thresholds=a,b"])
    with pytest.raises(ConfigError, match="--num_shards"):
        _parse(["--workdir=/w", "--raw_dir=/r", "--num_shards=0"])


def test_confusion_matrix_picture_has_names_and_counts():
    from pipelines.core import summaries

    matrix = np.array([[5, 1], [0, 7]])
    image = summaries.confusion_image(matrix, ["normal", "screenshot"])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    blank = summaries.confusion_image(np.zeros((2, 2), np.int64), ["normal", "screenshot"])
    renamed = summaries.confusion_image(matrix, ["a", "b"])
    assert image.shape[1] > renamed.shape[1]  # room made for the class names
    assert not np.array_equal(image, blank)  # counts and shades drawn
    dark = image.reshape(-1, 3).min(axis=1) < 60
    assert dark.sum() > 50  # text and the darkest cells
