"""Training on several hosts: `--strategy=multi_worker` (TensorFlow's MultiWorkerMirroredStrategy).

Every worker runs the same program with its own TF_CONFIG. What differs from one host:

- Roles. The chief (the "chief" task, else worker 0) owns --workdir: checkpoints, backups,
  TensorBoard events, metrics.json, outputs and the export. The other workers write into a
  temporary folder of their own that is deleted when they finish (the Keras multi-worker guide's
  pattern), so their control flow is the chief's and nothing of theirs lands in the workdir.
  Only the chief preprocesses (--raw_dir); the others wait for it, then read its shards, so
  --data_dir must be a path every worker can read (a shared filesystem).
- Input. Sharded by file, explicitly: worker r of n reads training shards r, r+n, ... (fewer
  shards than workers is an error that says so). Every worker runs the same number of steps per
  epoch (the least its shards allow), or the collectives of the longer worker would wait forever.
- The training step. Keras 3's `fit` fails under this strategy (keras-team/keras#20585,
  tensorflow/tensorflow#72388), so `fit` below is a loop of our own around the same compiled
  model: `strategy.run` of a GradientTape step whose loss is averaged over the GLOBAL batch
  (`tf.nn.compute_average_loss`), the optimizer summing the replicas' gradients. It drives the
  very callbacks `model.fit` gets on one host (BackupAndRestore, validation metrics, best
  checkpoint, ReduceLROnPlateau, EarlyStopping, TensorBoard), so phases, metrics and checkpoint
  rules are the same code.
- Agreement. Whatever decides the control flow comes from the chief (`from_chief`): whether a
  phase is done, the epoch a phase resumes at (its BackupAndRestore files are the chief's), the
  restored weights and optimizer state, and the validation metrics that EarlyStopping and
  ReduceLROnPlateau read. Workers that disagreed would wait on each other forever. BatchNorm's
  moving statistics, which each replica updates from its own slice of the batch, are averaged
  over the replicas at the end of every epoch (`replica_statistics`); without that the workers'
  models drifted apart (seen: validation loss 1.3985 against the chief's 1.3969 after one epoch).
- After training only the chief works: it evaluates, predicts and exports with a model built
  outside the strategy (plain variables, no collectives); the others wait for it, then exit
  (a worker that leaves first is reported by the cluster as crashed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from pipelines.core.config import Config, ConfigError

EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
           '"task": {"type": "worker", "index": 0}}')


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster: `rank` 0 is the chief, ranks follow TensorFlow's
    order (the chief task, then the workers by index), which is also the replicas' order."""

    workers: int
    rank: int
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def parse_tf_config(text: str | None) -> Cluster:
    """TF_CONFIG -> Cluster, or a ConfigError saying what is wrong and what is expected."""
    hint = f"set TF_CONFIG on every worker, e.g. TF_CONFIG='{EXAMPLE}' (index 0 on the chief, 1 on the next...)"
    if not text or not text.strip():
        raise ConfigError(f"--strategy=multi_worker needs the cluster in the TF_CONFIG environment variable: {hint}")
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error}): {hint}") from None
    cluster, task = (spec.get("cluster"), spec.get("task")) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f"TF_CONFIG needs a \"cluster\" and a \"task\" object: {hint}")
    others = sorted(set(cluster) - {"chief", "worker"})
    if others:
        raise ConfigError(f"TF_CONFIG: --strategy=multi_worker uses \"chief\" and \"worker\" tasks only, "
                          f"not {', '.join(others)}")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(address, str) and ":" in address for address in addresses):
            raise ConfigError(f"TF_CONFIG: cluster.{job} must be a non-empty list of \"host:port\" strings, "
                              f"got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError("TF_CONFIG: a cluster has at most one chief")
    if "worker" not in cluster and "chief" not in cluster:
        raise ConfigError(f"TF_CONFIG: the cluster lists no workers: {hint}")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in cluster or not isinstance(task_index, int) or not 0 <= task_index < len(cluster[task_type]):
        raise ConfigError(f"TF_CONFIG: task {task!r} is not in the cluster (type one of "
                          f"{', '.join(sorted(cluster))}, index from 0)")
    chiefs = len(cluster.get("chief", []))
    rank = 0 if task_type == "chief" else chiefs + task_index
    return Cluster(chiefs + len(cluster.get("worker", [])), rank, task_type, task_index)


def cluster_of(strategy: tf.distribute.Strategy) -> Cluster | None:
    """The cluster of a multi-worker strategy, None for one host."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return parse_tf_config(os.environ.get("TF_CONFIG"))


def check_supported(config: Config, task) -> None:
    """What this module does not do yet, refused before any worker connects."""
    if config.mode not in ("all", "train"):
        raise ConfigError(f"--strategy=multi_worker trains; run --mode={config.mode} on one host "
                          "(--strategy=auto) with the chief's --workdir")
    if config.pseudo_label_rounds:
        raise ConfigError("--pseudo_label_rounds is not supported with --strategy=multi_worker")
    if task.ablations(config):
        raise ConfigError("--ablations is not supported with --strategy=multi_worker")


def run(config: Config, task, connect, train_and_evaluate):
    """Runs `train_and_evaluate(config)` as this worker: the chief in --workdir, the others in a
    temporary folder deleted afterwards. `connect()` makes the strategy: after the checks, before
    anything else (TensorFlow refuses to set up collectives once it has run an op)."""
    cluster = parse_tf_config(os.environ.get("TF_CONFIG"))
    check_supported(config, task)
    strategy = connect()
    if cluster.is_chief:
        results = train_and_evaluate(config)
    else:
        scratch = tempfile.mkdtemp(prefix=f"{task.name}_worker{cluster.rank}_")
        try:
            results = train_and_evaluate(dataclasses.replace(config, workdir=scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    # The others wait here while the chief evaluates and exports: the cluster reports a worker
    # that leaves first as crashed ("The tasks have crashed", seen on the chief's log).
    from_chief(strategy, [0])
    return results


# --- input --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WorkerInput:
    """One worker's share of the training split."""

    files: tuple[str, ...]  # its shards (names relative to the shard folder)
    records: int
    replica_batch: int  # examples per replica and step
    steps_per_epoch: int  # global steps per epoch, the same on every worker
    batches_per_epoch: int  # replica batches this worker's dataset yields per epoch


def worker_input(shards: list[dict], cluster: Cluster, replicas: int, batch_size: int,
                 steps_cap: int | None) -> WorkerInput:
    """Shards r, r+n, ... for worker r of n; `shards` are the manifest's ({"file", "records"}).

    Steps per epoch: the least any worker's shards fill (capped by --steps_per_epoch), so every
    worker runs the same steps."""
    workers = cluster.workers
    if len(shards) < workers:
        raise ConfigError(f"--strategy=multi_worker shards the training split by file: {workers} workers need "
                          f"at least {workers} training shards, the data has {len(shards)}; preprocess with "
                          f"--num_shards={workers} or more (a multiple of {workers} balances them)")
    if batch_size % replicas:
        raise ConfigError(f"--batch_size={batch_size} must be a multiple of the {replicas} replicas "
                          f"({workers} workers)")
    replica_batch = batch_size // replicas
    local_replicas = replicas // workers
    shares = [shards[rank::workers] for rank in range(workers)]
    counts = [sum(int(shard["records"]) for shard in share) for share in shares]
    steps = min(count // (replica_batch * local_replicas) for count in counts)
    if steps == 0:
        poorest = int(np.argmin(counts))
        raise ConfigError(f"worker {poorest}'s training shards hold {counts[poorest]} records, not one step of "
                          f"{replica_batch * local_replicas} (--batch_size={batch_size} over {workers} "
                          "workers): lower --batch_size")
    if steps_cap:
        steps = min(steps, steps_cap)
    mine = shares[cluster.rank]
    return WorkerInput(tuple(shard["file"] for shard in mine), counts[cluster.rank], replica_batch, steps,
                       steps * local_replicas)


# --- agreement ----------------------------------------------------------------------------------

def from_chief(strategy: tf.distribute.Strategy, values) -> np.ndarray:
    """The chief's `values` (numbers) on every worker: an all-reduce to which only replica 0 (the
    chief's first) contributes. Also a barrier: no worker returns before all have called it."""
    values = np.asarray(values, np.float64).reshape([-1])
    return _all_reduce(strategy, [values], chief_only=True)[0]


def broadcast_variables(strategy: tf.distribute.Strategy, variables) -> None:
    """Sets `variables` (model and optimizer state) everywhere to the chief's values."""
    _assign(variables, lambda arrays: _all_reduce(strategy, arrays, chief_only=True))


def average_variables(strategy: tf.distribute.Strategy, variables) -> None:
    """Sets `variables` everywhere to their mean over the replicas."""
    replicas = strategy.num_replicas_in_sync
    _assign(variables, lambda arrays: [array / replicas for array in _all_reduce(strategy, arrays, chief_only=False)])


def replica_statistics(model: keras.Model) -> list:
    """Variables each replica updates on its own: BatchNormalization's moving mean and variance,
    from its own slice of the batch (Keras 3 gives them no cross-replica aggregation). Averaged at
    the end of each epoch, they are what Keras 2 read from them (the mean over replicas: the
    moving average is linear), and every worker validates and saves the same model."""
    return [variable for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization) for variable in layer.non_trainable_variables]


def _assign(variables, reduce) -> None:
    variables = list(variables)
    if not variables:
        return
    values = reduce([np.asarray(keras.ops.convert_to_numpy(variable)) for variable in variables])
    for variable, value in zip(variables, values):
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


_ALL_REDUCES = {}  # id(strategy) -> its traced all-reduce (one strategy per process)


def _all_reduce(strategy, arrays: list[np.ndarray], chief_only: bool) -> list[np.ndarray]:
    """The sum over replicas of `arrays` (of replica 0's alone when `chief_only`), all as one
    float64 vector (float64 carries float32 weights and integer counters below 2**53 exactly)
    through one all-reduce, traced once per strategy."""
    arrays = [np.asarray(array) for array in arrays]
    flat = np.concatenate([array.astype(np.float64).reshape([-1]) for array in arrays])
    run = _ALL_REDUCES.get(id(strategy))
    if run is None:
        def replica_fn(vector, chief_only):
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            keep = tf.cast(tf.logical_or(first, tf.logical_not(chief_only)), tf.float64)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, vector * keep)

        run = tf.function(lambda vector, chief_only: strategy.run(replica_fn, args=(vector, chief_only)),
                          input_signature=[tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.bool)])
        _ALL_REDUCES[id(strategy)] = run
    summed = np.asarray(strategy.experimental_local_results(run(tf.constant(flat), tf.constant(chief_only)))[0])
    ends = np.cumsum([array.size for array in arrays])
    return [part.reshape(array.shape) for part, array in zip(np.split(summed, ends[:-1]), arrays)]


class AgreeWithChief(keras.callbacks.Callback):
    """Replaces the figures in the epoch logs by the chief's, before EarlyStopping and
    ReduceLROnPlateau read them: float noise between hosts must not split their decisions. A
    worker whose own validation figures differ more than noise says so: its weights diverged."""

    def __init__(self, strategy, tolerance: float = 1e-4):
        super().__init__()
        self.strategy, self.tolerance = strategy, tolerance

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        names = sorted(name for name, value in logs.items() if isinstance(value, (int, float, np.floating)))
        chiefs = dict(zip(names, from_chief(self.strategy, [logs[name] for name in names]).tolist()))
        differ = [f"{name} {logs[name]:.6g} (chief {chiefs[name]:.6g})" for name in names
                  if name.startswith("val_") and abs(logs[name] - chiefs[name]) > self.tolerance * max(1.0, abs(chiefs[name]))]
        if differ:
            print(f"warning: epoch {epoch + 1}: this worker's validation figures differ from the chief's: "
                  f"{', '.join(differ)}; the replicas' weights have diverged")
        logs.update(chiefs)


class LocalPredictor:
    """(model, dataset) -> the outputs of every batch in order, computed by this worker alone (no
    collectives): Keras' predict would split the batches over the cluster under this strategy."""

    def __init__(self):
        self.model, self.forward = None, None

    def __call__(self, model: keras.Model, dataset) -> np.ndarray:
        if model is not self.model:  # one traced function per model
            self.model, self.forward = model, tf.function(lambda features: model(features, training=False))
        return np.concatenate([np.asarray(self.forward(features)) for features in dataset])


# --- the training loop --------------------------------------------------------------------------

def fit(model: keras.Model, strategy: tf.distribute.Strategy, make_dataset, start_epoch: int,
        epochs: int, steps_per_epoch: int, callbacks, global_batch: int, make_metrics=list,
        verbose: int = 1) -> None:
    """`model.fit(make_dataset(start, epochs), initial_epoch=start_epoch, epochs=epochs,
    steps_per_epoch=..., callbacks=...)` for MultiWorkerMirroredStrategy: the same callbacks, in
    the same order of calls. `make_dataset(first, end)` gives this worker's replica batches of
    epochs first..end-1; `model` is compiled (its optimizer and loss are used); `make_metrics()`
    gives the per-batch training metrics (the task's train_metrics)."""
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)  # mirrored slots, before a restore fills them
        metrics = list(make_metrics())  # their variables sum over replicas and workers when read
    callback_list = keras.callbacks.CallbackList(callbacks, add_progbar=verbose != 0, model=model,
                                                 verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    model._initial_epoch = None
    callback_list.on_train_begin()
    # BackupAndRestore restored the chief's weights and noted its epoch: everyone takes them.
    start = int(from_chief(strategy, [max(start_epoch, model._initial_epoch or 0)])[0])
    model._initial_epoch = None
    broadcast_variables(strategy, list(model.variables) + list(model.optimizer.variables))
    dataset = strategy.distribute_datasets_from_function(lambda _: make_dataset(start, epochs))
    iterator = iter(dataset)
    step = _train_step(model, strategy, global_batch, metrics)
    statistics = replica_statistics(model)
    logs = {}
    for epoch in range(start, epochs):
        callback_list.on_epoch_begin(epoch)
        for metric in metrics:
            metric.reset_state()
        total, batches = 0.0, 0
        for batch in range(steps_per_epoch):
            callback_list.on_train_batch_begin(batch)
            total += float(step(iterator))  # the global batch's loss, the same on every worker
            batches += 1
            callback_list.on_train_batch_end(batch, {"loss": total / batches})
            if model.stop_training:  # TerminateOnNaN: the same loss everywhere, the same decision
                break
        logs = {"loss": total / max(batches, 1),
                **{metric.name: float(keras.ops.convert_to_numpy(metric.result())) for metric in metrics}}
        average_variables(strategy, statistics)  # before validation and the epoch's checkpoints
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)


def _train_step(model, strategy, global_batch: int, metrics):
    optimizer, loss_fn = model.optimizer, model.loss

    def replica_step(batch):
        features, target = batch[0], batch[1]
        weight = batch[2] if len(batch) > 2 else None
        with tf.GradientTape() as tape:
            predictions = model(features, training=True)
            # Loss.call: unreduced, one loss per example (in the loss's dtype, as Loss.__call__).
            per_example = loss_fn.call(tf.cast(target, loss_fn.dtype), tf.cast(predictions, loss_fn.dtype))
            # Keras' sum_over_batch_size, over the GLOBAL batch: the replicas' gradients then sum
            # (the optimizer all-reduces them) to the gradient of the global batch's mean loss.
            loss = tf.nn.compute_average_loss(per_example, sample_weight=weight, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)  # loss scaling under mixed_float16, else the loss
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        for metric in metrics:
            metric.update_state(target, predictions, sample_weight=weight)
        return loss

    @tf.function
    def step(iterator):
        losses = strategy.run(replica_step, args=(next(iterator),))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return step
