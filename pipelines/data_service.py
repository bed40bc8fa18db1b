"""A tf.data service on this machine: a dispatcher and N workers that decode
and augment training images for trainers on other machines.

    python -m pipelines.data_service --port=5050 --workers=4 --host=$(hostname)
    python -m pipelines.train ... --data_service=grpc://THIS_HOST:5050

The trainer registers its training pipeline (source, shuffle, decode,
augmentation, batching: `augment.make_dataset`) with the dispatcher, and
the workers run it: reading the files they are sent (each worker needs the
same paths as the trainer), decoding and augmenting, and streaming batches
back.  Start more of these on other machines with `--dispatcher=HOST:PORT`
to add their workers to one dispatcher.  What changes for a run is in
`augment.make_dataset` (`data_service`).

`start()` is the library function; the command waits until it is stopped.
"""

import tensorflow as tf
from absl import flags

from pipelines import entry

PROTOCOL = "grpc"


def is_address(spec):
    """Whether `spec` is "grpc://HOST:PORT" or "HOST:PORT"."""
    rest = str(spec).removeprefix(f"{PROTOCOL}://")
    host, _, port = rest.rpartition(":")
    return bool(host) and port.isdigit() and "/" not in rest


def address(spec):
    """"grpc://HOST:PORT" or "HOST:PORT" -> "HOST:PORT"; ValueError naming
    `spec` otherwise."""
    if not is_address(spec):
        raise ValueError(f"A tf.data service address is grpc://HOST:PORT. "
                         f"Received: {spec!r}")
    return str(spec).removeprefix(f"{PROTOCOL}://")


def start(port=5050, num_workers=1, host="localhost", dispatcher=None,
          worker_port=0):
    """Starts a dispatcher on `port` (unless `dispatcher` names one running
    elsewhere) and `num_workers` workers registered with it.

    Args:
        port: the dispatcher's port (0: any free one).
        num_workers: workers started here, each on its own port.
        host: the name the workers give the trainers to reach them.
        dispatcher: "HOST:PORT" of a running dispatcher to join instead of
            starting one.
        worker_port: the first worker's port (0: any free ones).

    Returns:
        (the `DispatchServer` or None, [the `WorkerServer`s], the
        dispatcher's "HOST:PORT").
    """
    if num_workers < 0:
        raise ValueError("`num_workers` must be >= 0. Received: "
                         f"num_workers={num_workers}")
    server = None
    if dispatcher is None:
        server = tf.data.experimental.service.DispatchServer(
            tf.data.experimental.service.DispatcherConfig(
                port=port, protocol=PROTOCOL))
        dispatcher = f"{host}:{server.target.rsplit(':', 1)[1]}"
    else:
        dispatcher = address(dispatcher)
    workers = [
        tf.data.experimental.service.WorkerServer(
            tf.data.experimental.service.WorkerConfig(
                dispatcher_address=dispatcher,
                worker_address=f"{host}:%port%",
                port=worker_port + i if worker_port else 0,
                protocol=PROTOCOL))
        for i in range(num_workers)]
    return server, workers, dispatcher


_FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_integer("port", 5050, "The dispatcher's port.",
                         lower_bound=1, upper_bound=65535)
    flags.DEFINE_integer("workers", 1, "Workers started on this machine "
                         "(each decodes and augments on its own threads).")
    flags.DEFINE_string("host", "localhost",
                        "This machine's name as trainers and other "
                        "machines reach it.")
    flags.DEFINE_string("dispatcher", None,
                        "HOST:PORT of a dispatcher running elsewhere: start "
                        "only workers, registered with it.")
    flags.DEFINE_integer("worker_port", 0,
                         "The first worker's port, the next ones following "
                         "(0: any free ports).", lower_bound=0,
                         upper_bound=65535)


def main(argv):
    del argv
    if _FLAGS.workers < 0 or (_FLAGS.dispatcher and _FLAGS.workers < 1):
        raise ValueError("`--workers` must be >= 1 with --dispatcher, >= 0 "
                         f"without. Received: {_FLAGS.workers}")
    server, workers, dispatcher = start(
        _FLAGS.port, _FLAGS.workers, _FLAGS.host, _FLAGS.dispatcher,
        _FLAGS.worker_port)
    print(f"tf.data service: dispatcher grpc://{dispatcher}, "
          f"{len(workers)} worker(s) here; train with "
          f"--data_service=grpc://{dispatcher}", flush=True)
    if server is not None:
        server.join()
    for worker in workers:  # workers only: serve until stopped
        worker.join()


def run():
    """The command line, as `python -m pipelines.data_service` runs it;
    also the `vgg-data-service` console script."""
    _define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
