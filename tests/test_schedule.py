import pytest

from pipelines import recipes
from pipelines.schedule import PlateauSchedule


def test_plateau_schedule():
    cfg = recipes.TrainConfig(lr_patience=1, max_lr_decreases=2,
                              learning_rate=0.1)
    schedule = PlateauSchedule.from_train_config(cfg)
    stops, lrs = [], []
    for accuracy in (0.5, 0.6, 0.6, 0.55, 0.7, 0.7):
        before = schedule.current_learning_rate
        stops.append(schedule.update(accuracy))
        if schedule.current_learning_rate != before:
            lrs.append(round(schedule.current_learning_rate, 6))
    assert stops == [False, False, False, False, False, True]
    assert lrs == [0.01, 0.001]


def test_plateau_schedule_patience_and_stop_epochs():
    """Patience 2, at most 2 decreases: the rate falls after the 2nd epoch
    without a new best, an improvement restarts the count, and the plateau
    after the last decrease stops training."""
    schedule = PlateauSchedule(1.0, patience=2, decay_factor=0.5,
                               max_decreases=2)
    accuracies = [0.3, 0.4, 0.4, 0.35,   # epochs 3-4 flat: lr 0.5
                  0.5, 0.45,             # epoch 5 new best, 6 flat
                  0.6, 0.6, 0.6,         # epoch 7 new best, 8-9 flat: lr 0.25
                  0.6, 0.6]              # epochs 10-11 flat: stop
    trace = []
    for epoch, accuracy in enumerate(accuracies, start=1):
        stop = schedule.update(accuracy)
        trace.append((epoch, schedule.current_learning_rate, stop))
        if stop:
            break
    decreases = [(epoch, lr) for (epoch, lr, _), (_, previous, _) in
                 zip(trace[1:], trace) if lr != previous]
    assert decreases == [(4, 0.5), (9, 0.25)]
    assert trace[-1] == (11, 0.25, True)
    assert [stop for _, _, stop in trace].count(True) == 1
    assert float(schedule.best_accuracy.numpy()) == 0.6
    assert int(schedule.lr_decreases.numpy()) == 2


def test_step_schedule_divides_after_its_epochs_and_never_stops():
    cfg = recipes.TrainConfig(learning_rate=0.1, lr_decay_epochs="2, 4",
                              lr_patience=1)
    assert cfg.decay_epochs == (2, 4)
    schedule = PlateauSchedule.from_train_config(cfg)
    trace = []
    # Flat validation: the plateau rule (patience 1) would have divided
    # the rate after epoch 2 and stopped by epoch 5.
    for epoch, accuracy in enumerate((0.5, 0.5, 0.5, 0.4, 0.5, 0.5), 1):
        stop = schedule.update(accuracy, epoch)
        trace.append((epoch, round(schedule.current_learning_rate, 6), stop))
    assert trace == [(1, 0.1, False), (2, 0.01, False), (3, 0.01, False),
                     (4, 0.001, False), (5, 0.001, False),
                     (6, 0.001, False)]
    assert int(schedule.lr_decreases.numpy()) == 2
    assert float(schedule.best_accuracy.numpy()) == 0.5
    with pytest.raises(ValueError, match="needs the epoch"):
        schedule.update(0.5)


def test_step_schedule_epochs_are_checked():
    for bad in ("3,2", "0", "2,2", "a", "1.5"):
        with pytest.raises(ValueError, match=rf"`lr_decay_epochs` must be "
                           rf"increasing .* Received: "
                           rf"lr_decay_epochs={bad!r}"):
            recipes.TrainConfig(lr_decay_epochs=bad)
    assert recipes.TrainConfig().decay_epochs == ()
