"""`--runner=beam`: the preprocessing job's expensive part as an Apache Beam pipeline.

The launcher (this process) does what is cheap and must be decided in one place: it reads the raw
layout into an Inventory (readers.py) and plans the job with the local writer's own code
(writer.plan: split, shard assignment, fingerprint), so both runners write the same shards. Beam
then distributes what costs: decoding/validating every image with the function the local worker
processes call (images.load_images), and writing each shard. The launcher finishes with the
writer's own accounting (writer.finish: rejects.csv, manifest.json, every input row written or
rejected). Output is byte-identical to `--runner=local`, so switching runners never rebuilds.

Pipeline: plan file (JSON lines, one per item) -> Reshuffle -> decode -> group by shard -> sort by
planned position -> serialize (schema.serialize) -> write under a unique temporary name -> rename.
The plan goes to the workers as a file, not through beam.Create, so a million rows do not end up
in the job graph (Dataflow limits its size). Rejected items stay with their shard (not a separate
output) so that rejects.csv keeps the local job's order and one result file per shard is the unit
of completion: an interrupted or failed Beam run is resumed from the shards it finished.

Shards and result files are written with tf.io.gfile, which also speaks gs:// and hdfs://; the
readers and the launcher's manifest writing use local file APIs, so on a cluster --raw_dir and
--data_dir must be one file system mounted at the same path for the launcher and the workers
(README "Scaling out"). This module is the only one that imports apache_beam.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import uuid
from typing import Callable, Iterable

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from preprocess import images, schema, writer
from preprocess.shard_options import ShardOptions

WORK_DIR = "_beam"  # under tfrecords/: the plan for the workers and one result file per shard
_PLAN = "plan.jsonl"
_COUNTERS = "preprocess"
LOCAL_RUNNER = "FnApiRunner"  # without a --runner in --beam_pipeline_args; see pipeline_options


def pipeline_options(args: Iterable[str]) -> PipelineOptions:
    """Beam's options from `--beam_pipeline_args` as given (the runner, its project, workers...;
    Beam warns about arguments it does not know), with one default of ours: without a --runner,
    FnApiRunner, the in-process runner that Beam's DirectRunner ends up using for this pipeline.
    Beam 2.77's DirectRunner first tries to download its Prism runner binary from GitHub, and
    nothing here may reach the network unless asked to; --runner=DirectRunner still gets it."""
    options = PipelineOptions(list(args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = LOCAL_RUNNER
    return options


def write_shards(inventory: writer.Inventory, data_dir: str, options: ShardOptions = ShardOptions(),
                 pipeline_args: Iterable[str] = (), force: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """writer.write_shards, with the decoding and shard writing done by a Beam pipeline."""
    job = writer.plan(inventory, options)
    if not force:
        current = writer.up_to_date(inventory, data_dir, job, log)
        if current:
            return current
    shard_dir = os.path.join(data_dir, writer.SHARD_DIR)
    work_dir = os.path.join(shard_dir, WORK_DIR)
    if force and tf.io.gfile.exists(work_dir):
        tf.io.gfile.rmtree(work_dir)
    tf.io.gfile.makedirs(work_dir)
    done = {} if force else {**writer.completed_shards(data_dir, job), **finished_shards(data_dir, job)}
    if done:
        log(f"{inventory.task}: resuming, {len(done)} of {len(job.shards)} shards already complete")
    todo = [shard for shard in job.shards if shard.name not in done]
    if todo:
        beam_options = pipeline_options(pipeline_args)
        runner = beam_options.view_as(StandardOptions).runner
        set_options = beam_options.get_all_options(drop_default=True)
        log(f"{inventory.task}: Beam pipeline on {runner}: {sum(len(shard.items) for shard in todo)} "
            f"images into {len(todo)} shards"
            + (f"; options {json.dumps(set_options, sort_keys=True, default=str)}" if set_options else ""))
        if logging.getLogger("apache_beam").level == logging.NOTSET:
            # Beam logs every stage and worker at INFO; the lines above and below say what ran.
            logging.getLogger("apache_beam").setLevel(logging.WARNING)
        plan_path = _write_plan(work_dir, todo)
        _run(beam_options, plan_path, shard_dir, work_dir, job.fingerprint, options.image_options())
        done.update(finished_shards(data_dir, job))
        missing = [shard.name for shard in todo if shard.name not in done]
        if missing:
            raise RuntimeError(f"the Beam pipeline finished but {len(missing)} shards have no result "
                               f"(first: {missing[0]}); rerun the same command to write them")
    manifest = writer.finish(inventory, data_dir, options, job, done, log)
    tf.io.gfile.rmtree(work_dir)
    return manifest


def finished_shards(data_dir: str, job: writer.Plan) -> dict:
    """Shards a Beam run of this same job wrote (result file with this fingerprint, shard intact)."""
    shard_dir = os.path.join(data_dir, writer.SHARD_DIR)
    work_dir = os.path.join(shard_dir, WORK_DIR)
    done = {}
    for shard in job.shards:
        result_path = os.path.join(work_dir, shard.name + ".json")
        if not tf.io.gfile.exists(result_path):
            continue
        with tf.io.gfile.GFile(result_path) as handle:
            result = json.load(handle)
        shard_path = os.path.join(shard_dir, shard.name)
        if (result.get("fingerprint") == job.fingerprint and tf.io.gfile.exists(shard_path)
                and tf.io.gfile.stat(shard_path).length == result["shard"]["bytes"]):
            done[shard.name] = result["shard"]
    return done


def _write_plan(work_dir: str, shards: list) -> str:
    """One JSON line per item: (shard, position in the shard, the item). Plain JSON, so any worker
    can read it without unpickling launcher objects."""
    path = os.path.join(work_dir, _PLAN)
    temp_path = f"{path}.{uuid.uuid4().hex}.incomplete"
    with tf.io.gfile.GFile(temp_path, "w") as handle:
        for shard in shards:
            for position, item in enumerate(shard.items):
                handle.write(json.dumps([shard.name, position, dataclasses.asdict(item)]) + "\n")
    tf.io.gfile.rename(temp_path, path, overwrite=True)
    return path


def _run(options: PipelineOptions, plan_path: str, shard_dir: str, work_dir: str, fingerprint: str,
         image_options: images.ImageOptions) -> None:
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "ReadPlan" >> beam.io.ReadFromText(plan_path)
            | "ParsePlan" >> beam.Map(_parse_plan_line)
            | "Spread" >> beam.Reshuffle()  # one plan file: spread the decoding over every worker
            | "Decode" >> beam.ParDo(_Decode(image_options))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(shard_dir, work_dir, fingerprint))
        )


def _parse_plan_line(line: str) -> tuple[str, int, writer.Item]:
    shard, position, fields = json.loads(line)
    return shard, position, writer.Item(**{**fields, "labels": tuple(fields["labels"])})


class _Decode(beam.DoFn):
    """One item -> (shard, (position, item, (image bytes, format) or the reason it was rejected))."""

    def __init__(self, image_options: images.ImageOptions):
        self.image_options = image_options
        self.decoded = beam.metrics.Metrics.counter(_COUNTERS, "images_decoded")
        self.rejected = beam.metrics.Metrics.counter(_COUNTERS, "images_rejected")

    def process(self, element):
        shard, position, item = element
        outcome = images.load_images([item.path], self.image_options)[0]
        if isinstance(outcome, str):
            self.rejected.inc()
        else:
            self.decoded.inc()
            image_bytes, image_format = outcome
            if image_bytes is None:  # stored as it is on disk (see images.load_images)
                with open(item.path, "rb") as handle:
                    image_bytes = handle.read()
            outcome = (image_bytes, image_format)
        yield shard, (position, item, outcome)


class _WriteShard(beam.DoFn):
    """All outcomes of one shard -> the shard file + its result file (what writer.finish needs).

    Writes the records exactly as writer._write_shard does (the byte-identity test holds the two
    together). The temporary name is unique per attempt, so a retried or speculative duplicate
    bundle never collides with another or leaves a partial shard under the final name; attempts
    write identical bytes, so whichever rename lands last is the same shard.
    """

    def __init__(self, shard_dir: str, work_dir: str, fingerprint: str):
        self.shard_dir = shard_dir
        self.work_dir = work_dir
        self.fingerprint = fingerprint
        self.written = beam.metrics.Metrics.counter(_COUNTERS, "shards_written")

    def process(self, element):
        name, outcomes = element
        final_path = os.path.join(self.shard_dir, name)
        temp_path = f"{final_path}.{uuid.uuid4().hex}.incomplete"
        histogram: collections.Counter = collections.Counter()
        rejected = []
        records = 0
        try:
            with tf.io.TFRecordWriter(temp_path) as shard_writer:
                for _, item, outcome in sorted(outcomes, key=lambda entry: entry[0]):
                    if isinstance(outcome, str):
                        rejected.append(dataclasses.asdict(writer.Rejected(item.source, item.key, outcome)))
                        continue
                    image_bytes, image_format = outcome
                    shard_writer.write(schema.serialize(schema.Record(
                        image=image_bytes, image_format=image_format, key=item.key,
                        index=item.index, labels=item.labels, text=item.text)))
                    histogram[item.labels[0] if item.labels else -1] += 1
                    records += 1
        except BaseException:
            if tf.io.gfile.exists(temp_path):
                tf.io.gfile.remove(temp_path)
            raise
        tf.io.gfile.rename(temp_path, final_path, overwrite=True)
        size, sha256 = _size_and_sha256(final_path)
        result = {"fingerprint": self.fingerprint, "shard": {
            "records": records,
            "bytes": size,
            "sha256": sha256,
            "histogram": {str(label): count for label, count in sorted(histogram.items())},
            "rejected": rejected,
        }}
        result_path = os.path.join(self.work_dir, name + ".json")
        temp_result = f"{result_path}.{uuid.uuid4().hex}.incomplete"
        with tf.io.gfile.GFile(temp_result, "w") as handle:
            handle.write(json.dumps(result, sort_keys=True))
        tf.io.gfile.rename(temp_result, result_path, overwrite=True)
        self.written.inc()
        yield name


def _size_and_sha256(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with tf.io.gfile.GFile(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
