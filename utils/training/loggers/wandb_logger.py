"""Weights & Biases (``--wandb [MODE]``, optional package ``pip install wandb``), as YOLOv5 v7.0 users know it:
project = the --project folder's name ('HeadZoo' for the default runs/train), run name = the run folder's name
(exp, exp2, ...), config = the flags and the hyperparameters, each epoch's results.csv row logged at step = epoch,
the final plots as images under 'Results', and the stripped weights with results.csv / opt.yaml / hyp.yaml as a
'model' artifact (``run_<id>_model``).

MODE: ``offline`` (no account, nothing sent: the run is written to ``<run folder>/wandb/offline-run-*``, and
``wandb sync`` uploads it later), ``online``, or none: W&B's own choice (``WANDB_MODE``, else online, which needs
``wandb login``). The run's files stay in the run folder either way; ``WANDB_ENTITY`` picks the team.
"""
from __future__ import annotations

from pathlib import Path

from utils import LOGGER
from utils.training.loggers.base import ExperimentLogger, project_name

MODES = ("online", "offline", "disabled")


def wandb_module():
    try:
        import wandb
    except ImportError as e:
        raise ValueError("--wandb needs the optional package 'wandb': pip install wandb") from e
    return wandb


class WandbLogger(ExperimentLogger):
    name = "wandb"

    def __init__(self, mode: str | bool | None = None):
        super().__init__()
        if isinstance(mode, str) and mode not in MODES:
            raise ValueError(f"--wandb {mode}: expected one of {', '.join(MODES)}, or no value (W&B's own choice)")
        self.wandb = wandb_module()
        self.mode = mode if isinstance(mode, str) else None
        self.run = None

    def start(self, trainer, params: dict, group: dict | None, resume_id: str | None) -> dict:
        group = group or {}
        options = {k: v for k, v in params.items() if not k.startswith("hyp/")}
        hyp = {k[4:]: v for k, v in params.items() if k.startswith("hyp/")}
        tags = group.get("tags", {})
        try:
            self.run = self.wandb.init(
                project=group.get("experiment") or project_name(trainer.opt.project),
                name=group.get("run_name") or trainer.save_dir.name, dir=str(trainer.save_dir), mode=self.mode,
                group=group.get("wandb", {}).get("group"), job_type="train", tags=[f"{k}:{v}" for k, v in tags.items()],
                config={**options, "hyp": hyp, **tags}, id=resume_id, resume="allow" if resume_id else None,
                allow_val_change=bool(resume_id), reinit="create_new")
        except Exception as e:  # not logged in, no network: the one-line error the user needs
            raise ValueError(f"--wandb: W&B could not start the run ({type(e).__name__}: {e}); log in with "
                             f"'wandb login', or keep the run offline: --wandb offline") from e
        folder = Path(self.run.dir).parent
        how = f"upload later with: wandb sync {folder}" if self.run.settings.mode == "offline" else self.run.url
        LOGGER.info(f"W&B: run {self.run.id} ({self.run.settings.mode}) in {folder}; {how}")
        return {"id": self.run.id, "project": self.run.project, "mode": self.run.settings.mode, "dir": str(folder)}

    def log_metrics(self, values: dict[str, float], epoch: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=epoch)

    def log_files(self, plots: list[Path], files: list[Path], weights: list[Path], epoch: int) -> None:
        wandb = self.wandb
        if plots:
            self.run.log({"Results": [wandb.Image(str(f), caption=f.name) for f in plots]}, step=epoch)
        if weights or files:  # the weights with the files that say how they were made
            art = wandb.Artifact(f"run_{self.run.id}_model", type="model")
            for f in [*weights, *files]:
                art.add_file(str(f), name=f.name)
            self.run.log_artifact(art, aliases=["latest", "stripped"])

    def finish(self) -> None:
        self.run.finish()
