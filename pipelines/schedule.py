"""The paper's learning-rate schedule (section 3.1), with its state in
checkpointed variables.

"The learning rate was initially set to 1e-2, and then decreased by a factor
of 10 when the validation set accuracy stopped improving.  In total, the
learning rate was decreased 3 times, and the learning was stopped after 370K
iterations (74 epochs)."  `PlateauSchedule` divides the rate when validation
accuracy has not improved for `patience` epochs, and after `max_decreases`
decreases stops training at the next plateau.  With `decay_epochs` it
divides the rate after those epochs instead (a step schedule) and never
stops training.
"""

import tensorflow as tf


class PlateauSchedule:
    """Divides the learning rate on validation plateaus, then stops.

    The state lives in `tf.Variable`s so that a resumed run continues the
    schedule where it was; `checkpoint_children()` names them for
    `tf.train.Checkpoint`.  Create it inside the strategy's scope.

    Example:

        schedule = PlateauSchedule(0.1, patience=1, max_decreases=2)
        for accuracy in accuracies_of_each_epoch:
            if schedule.update(accuracy):
                break
            optimizer.learning_rate.assign(schedule.learning_rate)
    """

    def __init__(self, learning_rate, patience, decay_factor=0.1,
                 max_decreases=3, decay_epochs=()):
        self.patience = patience
        self.decay_epochs = tuple(decay_epochs)
        self.decay_factor = decay_factor
        self.max_decreases = max_decreases
        self.learning_rate = tf.Variable(learning_rate, dtype=tf.float64)
        # The accuracy watched: top-1 for a classifier, IoU > 0.5 for a
        # localiser (-1 before the first validation).
        self.best_accuracy = tf.Variable(-1.0, dtype=tf.float64)
        self.epochs_since_best = tf.Variable(0, dtype=tf.int64)
        self.lr_decreases = tf.Variable(0, dtype=tf.int64)

    @classmethod
    def from_train_config(cls, cfg):
        """The schedule of a `recipes.TrainConfig`."""
        return cls(cfg.learning_rate, patience=cfg.lr_patience,
                   decay_factor=cfg.lr_decay_factor,
                   max_decreases=cfg.max_lr_decreases,
                   decay_epochs=cfg.decay_epochs)

    def checkpoint_children(self):
        """Keyword children for `tf.train.Checkpoint`.  The names are the
        checkpoints' keys since the first runs: changing one would make old
        runs resume with a fresh schedule."""
        return {"best_val_top1": self.best_accuracy,
                "epochs_since_best": self.epochs_since_best,
                "lr_decreases": self.lr_decreases,
                "learning_rate": self.learning_rate}

    @property
    def current_learning_rate(self):
        return float(self.learning_rate.numpy())

    def update(self, val_accuracy, epoch=None):
        """Takes the validation accuracy after `epoch` (1-based, needed with
        `decay_epochs`); returns True to stop.

        An improvement resets the patience count; `patience` epochs without
        one divide the rate by 1 / `decay_factor`, or stop training once the
        rate was decreased `max_decreases` times.  With `decay_epochs` the
        rate is divided after each of those epochs instead.
        """
        if self.decay_epochs:
            if epoch is None:
                raise ValueError("A step schedule (decay_epochs) needs the "
                                 "epoch.")
            self.best_accuracy.assign(max(val_accuracy,
                                          float(self.best_accuracy.numpy())))
            if epoch in self.decay_epochs:
                self._decrease()
            return False
        if val_accuracy > float(self.best_accuracy.numpy()):
            self.best_accuracy.assign(val_accuracy)
            self.epochs_since_best.assign(0)
            return False
        self.epochs_since_best.assign_add(1)
        if int(self.epochs_since_best.numpy()) < self.patience:
            return False
        if int(self.lr_decreases.numpy()) >= self.max_decreases:
            return True
        self._decrease()
        return False

    def _decrease(self):
        self.lr_decreases.assign_add(1)
        self.epochs_since_best.assign(0)
        self.learning_rate.assign(self.current_learning_rate
                                  * self.decay_factor)
