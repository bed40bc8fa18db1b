"""One worker of the two-process MultiWorkerMirroredStrategy test.

    TF_CONFIG=... python tests/mwms_worker.py DATA_DIR MODEL_DIR OUT.npz
"""
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from pipelines import distribute  # noqa: E402
from pipelines import recipes  # noqa: E402
from pipelines import sources  # noqa: E402
from pipelines.trainer import Trainer  # noqa: E402


def main(data_dir, model_dir, out):
    strategy = distribute.make_strategy("multi_worker_mirrored")
    cfg = dataclasses.replace(
        recipes.RECIPES["demo"], width_multiplier=0.125, crop=32,
        scale_min=32, scale_max=40, test_scale=32, batch_size=16,
        steps_per_epoch=4, max_epochs=1, seed=3)
    train_source = sources.load_source("builtin", "train", data_dir=data_dir)
    val_source = sources.load_source("builtin", "validation",
                                     data_dir=data_dir)
    trainer = Trainer(cfg, train_source, val_source, model_dir, strategy,
                      verbose=0)
    metrics = trainer.run()
    np.savez(out, *[np.asarray(w) for w in trainer.model.get_weights()],
             steps=metrics["steps"])


if __name__ == "__main__":
    main(*sys.argv[1:4])
