"""One worker of the two-process MultiWorkerMirroredStrategy tests.

    TF_CONFIG=... python tests/mwms_worker.py DATA_DIR MODEL_DIR OUT.npz \
        [TRAIN_CONFIG_CHANGES_JSON]

Stopped by SIGTERM (at any worker), it exits with status 143 as
`python -m pipelines.train` does.
"""
import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from pipelines import distribute  # noqa: E402
from pipelines import recipes  # noqa: E402
from pipelines import sources  # noqa: E402
from pipelines.trainer import Trainer  # noqa: E402
from pipelines.trainer import TrainingPreempted  # noqa: E402


def main(data_dir, model_dir, out, changes="{}"):
    strategy = distribute.make_strategy("multi_worker_mirrored")
    cfg = dataclasses.replace(
        recipes.RECIPES["demo"], width_multiplier=0.125, crop=32,
        scale_min=32, scale_max=40, test_scale=32, batch_size=16,
        steps_per_epoch=4, max_epochs=1, seed=3)
    cfg = dataclasses.replace(cfg, **json.loads(changes))
    train_source = sources.load_source("builtin", "train", data_dir=data_dir)
    val_source = sources.load_source("builtin", "validation",
                                     data_dir=data_dir)
    trainer = Trainer(cfg, train_source, val_source, model_dir, strategy)
    try:
        metrics = trainer.run()
    except TrainingPreempted as e:
        print(e, file=sys.stderr, flush=True)
        sys.exit(143)
    np.savez(out, *[np.asarray(w) for w in trainer.model.get_weights()],
             steps=metrics["steps"])


if __name__ == "__main__":
    main(*sys.argv[1:])
