"""tf.distribute strategies by name, who writes files in a cluster, and
how a cluster stops together."""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def make_strategy(name="auto", tpu=None):
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: "auto" (all local GPUs with MirroredStrategy, one GPU or the CPU
            with OneDeviceStrategy), "one_device", "mirrored",
            "multi_worker_mirrored" (cluster from TF_CONFIG) or "tpu".
        tpu: TPU name or address for "tpu" (None: from the environment).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown `strategy`={name!r}. Expected one of "
                         f"{STRATEGIES}.")
    if name == "multi_worker_mirrored":
        # Must come before anything that starts the TF runtime (listing
        # devices included): collectives are configured at startup.
        if "TF_CONFIG" not in os.environ:
            raise ValueError("`strategy`='multi_worker_mirrored' needs the "
                             "TF_CONFIG environment variable.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(
            "/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def cluster_task():
    """(task_type, task_id) of this process in TF_CONFIG's cluster, or
    (None, 0).  (A cluster task is a process, not a training task.)"""
    cluster_spec = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    entry = cluster_spec.get("task", {})
    return entry.get("type"), int(entry.get("index", 0))


def is_chief():
    """The chief (or worker 0 when there is no chief) writes the outputs."""
    task_type, task_id = cluster_task()
    if task_type is None:
        return True
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def worker_dir(model_dir):
    """Where this process writes checkpoints: the model dir for the chief,
    a per-worker scratch dir for the others (every worker must take part in
    a MultiWorkerMirroredStrategy save, only the chief's copy is kept)."""
    if is_chief():
        return model_dir
    task_type, task_id = cluster_task()
    return os.path.join(model_dir, ".workers", f"{task_type}_{task_id}")


def preemption_handler(strategy, manager, save_fn, exit_fn,
                       termination_watcher_fn):
    """For a multi-worker strategy, a `tf.distribute.experimental.
    PreemptionCheckpointHandler` that makes every worker save at the same
    step and stop when any one of them is told to stop; None for any other
    strategy (one process: nothing to agree on).

    One worker alone cannot stop: the others would wait for it in their
    next collective for ever.  The handler agrees on the step through the
    cluster's coordination service: the worker told to stop names the end
    of the next call of `save_checkpoint_if_preempted()`, which every
    worker makes once per loop of steps, and there each calls `save_fn`
    then `exit_fn`.

    Args:
        strategy: the `tf.distribute.Strategy` training.
        manager: the `tf.train.CheckpointManager` of the run; the handler
            restores its latest checkpoint when it is created (so create it
            after any choice of that checkpoint, and before changing the
            restored state) and adds its own call counter to the checkpoint.
        save_fn: saves the checkpoint, without arguments.
        exit_fn: called after the save, on every worker (raise to stop).
        termination_watcher_fn: returns True once this worker is told to
            stop (polled every second, from another thread).
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().jobs:
        return None
    return tf.distribute.experimental.PreemptionCheckpointHandler(
        resolver, manager,
        termination_config=tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=termination_watcher_fn, exit_fn=exit_fn,
            # Save at the agreed step and stop: without it, on a Google
            # Cloud GPU machine it would train on for an hour first.
            grace_period=0, save_fn=save_fn))


def stop_preemption_handler(handler):
    """Stops the watcher threads of a `preemption_handler` (None: nothing
    to do) once training is over; they stop by themselves after a save."""
    if handler is not None:
        # Its finaliser is its only way to stop them (and may run again).
        handler.__del__()
