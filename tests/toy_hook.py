"""A test-only training hook: it records every event it sees and can stop a run after a given epoch. It plugs in
through ``train.run(opt, hooks=[EventLog()])`` with no edit to train.py or utils/training/hooks.py."""
from utils.training.hooks import EpochEnd, Hook


class EventLog(Hook):
    def __init__(self, stop_after: int | None = None, priority: int = 60):
        self.events: list[tuple] = []
        self.stop_after = stop_after
        self.priority = priority

    def before_train(self, trainer) -> None:
        self.events.append(("before_train",))

    def before_epoch(self, trainer, epoch: int) -> None:
        self.events.append(("before_epoch", epoch))

    def before_step(self, trainer, ni: int) -> None:
        self.events.append(("before_step", ni))

    def after_step(self, trainer, ni: int, stepped: bool) -> None:
        self.events.append(("after_step", ni, stepped))

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        self.events.append(("after_epoch", end.epoch, end.results is not None, end.fitness, end.train_s > 0))
        if self.stop_after is not None and end.epoch >= self.stop_after:
            end.stop = True

    def after_train(self, trainer) -> None:
        self.events.append(("after_train", (trainer.wdir / "last.pt").is_file()))
