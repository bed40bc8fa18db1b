"""Watching the tf.data service a training run reads from (`--data_service`).

TensorFlow's tf.data service client has no timeout: when the dispatcher, or
every worker, is gone, the trainer's next batch never comes and no error is
raised (measured with TF 2.21: still waiting after minutes).  While the
main thread waits inside the compiled training loop, Python cannot run its
SIGTERM handler either: Python handlers run between bytecodes of the main
thread.  A `ServiceWatch` thread, running while the trainer trains:

- every `PROBE_SECONDS`, asks the dispatcher for its workers (its
  `GetWorkers` RPC) and each worker whether it answers.  The dispatcher
  keeps listing a worker that died, so a worker that stops answering is
  named in one warning: the files (or shards) it was handed and had not
  yet turned into batches are missing from that epoch; the other workers
  go on.
- once the dispatcher, or every worker, has not answered for `timeout`
  seconds, ends the process with one `error:` line and status 1, keeping
  the last checkpoint (the main thread cannot be woken, hence `os._exit`).
- sees SIGTERM through `signal.set_wakeup_fd` (the trainer's Python handler
  stays installed and still answers it whenever the main thread runs).
  When the service is unreachable and the main thread has not come back
  from its loop call within the grace period, it is stuck there.  Seen
  with TF 2.21: stuck after its step's update was applied (the optimizer
  had counted one update more than the step counter), so the watch
  compares the optimizer's update count with the one at the call's start:
  a one-step loop saves its step counted (applied or not); a longer loop
  may have applied any number of its steps, and the last checkpoint is
  kept.  Either way it ends the process with status 143, as the trainer
  does.
"""

import collections
import gc
import os
import select
import signal
import socket
import sys
import threading
import time

import grpc
from google.protobuf import empty_pb2
from google.protobuf import unknown_fields

from pipelines import data_service

PROBE_SECONDS = 2.0
# One RPC's deadline: a live server on a local network answers in
# milliseconds; a dead machine (no refusal) costs this long.
RPC_SECONDS = 2.0
# The least time the main thread gets after SIGTERM to come back from its
# loop call and checkpoint by itself.
MIN_GRACE_SECONDS = 5.0

# The RPCs of tensorflow/core/data/service/{dispatcher,worker}.proto.  Their
# Python messages are not in the TensorFlow wheel; both requests are empty,
# and only field 1 of the response is read (repeated WorkerInfo, whose
# field 1 is the worker's address).
_GET_WORKERS = "/tensorflow.data.DispatcherService/GetWorkers"
_GET_WORKER_TASKS = "/tensorflow.data.WorkerService/GetWorkerTasks"


def _call(address, method, timeout):
    with grpc.insecure_channel(address) as channel:
        return channel.unary_unary(method)(b"", timeout=timeout)


def _fields(raw, number):
    message = empty_pb2.Empty()
    message.ParseFromString(raw)
    return [field.data for field in unknown_fields.UnknownFieldSet(message)
            if field.field_number == number]


def worker_addresses(service, timeout=RPC_SECONDS):
    """The "HOST:PORT" of every worker the dispatcher of `service`
    ("grpc://HOST:PORT" or "HOST:PORT") lists, dead ones included.

    Raises:
        grpc.RpcError: the dispatcher did not answer within `timeout`.
    """
    raw = _call(data_service.address(service), _GET_WORKERS, timeout)
    return [_fields(info, 1)[0].decode() for info in _fields(raw, 1)]


def answers(worker, timeout=RPC_SECONDS):
    """Whether the tf.data service worker at "HOST:PORT" answers an RPC."""
    try:
        _call(worker, _GET_WORKER_TASKS, timeout)
    except grpc.RpcError:
        return False
    return True


def _exit(line, status):
    print(line, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


class ServiceWatch:
    """The watch thread (see the module doc), as a context manager entered
    on the main thread, inside the trainer's SIGTERM handler.

    Args:
        service: the run's `data_service`.
        timeout: seconds without the dispatcher (or without any worker)
            before the process ends.
        save_stalled: `save_stalled(applied)` is called from the watch
            thread when SIGTERM came while the main thread is stuck in a
            loop call of one step (or releasing an epoch's input) that has
            applied `applied` (0 or 1) updates the step counter does not
            count yet; it saves a checkpoint and returns what was saved
            ("saved ... at step S").  None: such a save cannot be made.
        last_checkpoint: returns the last checkpoint's description
            ("step S" or "none yet").
        updates: returns the count of updates applied (the optimizer's
            iterations).
        probe_seconds: time between probes.
        min_grace: see `MIN_GRACE_SECONDS`.
    """

    def __init__(self, service, timeout, save_stalled, last_checkpoint,
                 updates, probe_seconds=PROBE_SECONDS,
                 min_grace=MIN_GRACE_SECONDS):
        self.address = data_service.address(service)
        self.timeout = timeout
        self._save_stalled = save_stalled
        self._last_checkpoint = last_checkpoint
        self._updates = updates
        self._probe_seconds = probe_seconds
        self._min_grace = min_grace
        # (start, steps, updates before) of the running loop call.
        self._call = None
        self._iterator = None
        self._durations = collections.deque(maxlen=100)
        self._lost = set()
        self._starving = None  # (since, what does not answer)
        self._sigterm_at = None
        self._stop = threading.Event()

    # -- the main thread's side -------------------------------------------

    def __enter__(self):
        self._wakeup = None
        if threading.current_thread() is threading.main_thread():
            read, write = socket.socketpair()
            write.setblocking(False)
            previous = signal.set_wakeup_fd(write.fileno(),
                                            warn_on_full_buffer=False)
            if previous == -1:
                self._wakeup = (read, write)
            else:
                # Someone else's (an event loop's): give it back and watch
                # the service only.
                signal.set_wakeup_fd(previous)
                read.close()
                write.close()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="service_watch")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.release_input()
        self._stop.set()
        self._thread.join()
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            for sock in self._wakeup:
                sock.close()

    def timed(self, loop):
        """`loop(iterator, num_steps)` (the trainer's compiled loop), telling
        the watch when a call runs, for how many steps, and how long calls
        take."""
        def call(iterator, num_steps):
            # Held until `release_input`: dropping the last reference can
            # free the iterator anywhere, and freeing it waits for the
            # dispatcher.
            self._iterator = iterator
            start = time.monotonic()
            self._call = (start, int(num_steps), self._updates())
            try:
                return loop(iterator, num_steps)
            finally:
                self._call = None
                self._durations.append(time.monotonic() - start)
        return call

    def release_input(self):
        """Frees the last epoch's input: its iterator sits in reference
        cycles inside tf.distribute, and until Python's cycle collector frees
        it, its tf.data service job stays open and the workers keep running
        a task for it beside the next epoch's.  Freeing it waits for the
        dispatcher (forever, when it is gone); meanwhile every step is
        counted, and the watch may save (as a loop call of zero steps)."""
        self._call = (time.monotonic(), 0, self._updates())
        try:
            self._iterator = None
            gc.collect()
        finally:
            self._call = None

    # -- the watch thread -------------------------------------------------

    def _grace(self):
        """`min_grace`, or twice the longest loop call seen (the first left
        out: it traces the loop), whichever is longer: a call still running
        after that is not computing but waiting for input."""
        durations = list(self._durations)
        durations = durations[1:] or durations
        return max(self._min_grace, 2 * max(durations, default=0.0))

    def _run(self):
        while not self._stop.is_set():
            if self._wakeup is None:
                self._stop.wait(self._probe_seconds)
            elif select.select([self._wakeup[0]], [], [],
                               self._probe_seconds)[0]:
                if signal.SIGTERM in self._wakeup[0].recv(64):
                    self._sigterm_at = self._sigterm_at or time.monotonic()
            if self._stop.is_set():
                return
            self._probe()
            self._act(time.monotonic())

    def _probe(self):
        """Updates `_starving` (what does not answer, and since when) and
        warns once about each worker that stopped answering."""
        try:
            workers = worker_addresses(self.address)
        except grpc.RpcError:
            silent = f"tf.data service dispatcher {self.address} unreachable"
        else:
            alive = [w for w in workers if answers(w)]
            for worker in sorted(set(workers) - set(alive) - self._lost):
                self._lost.add(worker)
                print(f"WARNING: tf.data service worker {worker} does not "
                      "answer: the files it was handed and had not yet "
                      "turned into batches are missing from this epoch; the "
                      "other workers go on.", file=sys.stderr, flush=True)
            self._lost -= set(alive)
            silent = None if alive else (
                f"no worker of the tf.data service {self.address} answers")
        if silent is None:
            self._starving = None
        elif self._starving is None or self._starving[1] != silent:
            self._starving = (time.monotonic(), silent)

    def _act(self, now):
        if self._starving is None:
            return  # the main thread gets its input and answers by itself
        since, silent = self._starving
        seconds = now - since
        if self._sigterm_at is not None:
            call = self._call
            waited = now - max(self._sigterm_at, call[0] if call else 0.0)
            if waited >= self._grace():
                self._end_on_sigterm(call, silent)
        if seconds > self.timeout:
            _exit(f"error: {silent} for {seconds:.0f} s; the last "
                  f"checkpoint ({self._last_checkpoint()}) is kept; rerun "
                  "the same command to resume.",
                  128 + signal.SIGTERM if self._sigterm_at else 1)

    def _end_on_sigterm(self, call, silent):
        start = f"SIGTERM while waiting for input ({silent}): "
        end = "; the same command resumes from it."
        applied = None if call is None else self._updates() - call[2]
        if (call is not None and call[1] <= 1 and 0 <= applied <= call[1]
                and self._save_stalled):
            _exit(start + self._save_stalled(applied) + end,
                  128 + signal.SIGTERM)
        why = ""
        if call is not None and call[1] > 1:
            why = (f" (a loop of {call[1]} steps may have applied some of "
                   "them; --steps_per_loop=1 saves the step reached)")
        elif call is not None:
            why = " (a multi-worker run saves only with every worker)"
        _exit(f"{start}the last checkpoint ({self._last_checkpoint()}) is "
              f"kept{why}{end}", 128 + signal.SIGTERM)
