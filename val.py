"""Validate a detector on a dataset: P, R, mAP50, mAP50-95 overall and per class, speed per image.

    python val.py --weights runs/train/exp/weights/best.pt --data shapes.yaml --imgsz 320
    python val.py --weights best.pt --save-json          # + COCO-format detections and COCOeval's figures
"""
from __future__ import annotations

import argparse
import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.backends import Backend, inference_size
from models.runtime import backend_choices, runtime_backend
from utils.boxes import postprocess, scale_boxes, xywh2xyxy, xyxy2xywh
from utils.data.annotations import coco_ids, spec_kind
from utils.data.check_image import check_image
from utils.data.dataloaders import check_dataset, create_dataloader
from utils.evaluation.coco import CocoResults, coco_eval
from utils.evaluation.metrics import ConfusionMatrix, ap_per_class, match_predictions
from utils.evaluation.plots import plot_images
from utils.io.files import default_weights, increment_path
from utils.torch_utils import LOGGER, select_device, time_sync

ROOT = Path(__file__).resolve().parent
IOUV = torch.linspace(0.5, 0.95, 10)  # IoU thresholds of mAP50-95


@dataclass
class ValResult:
    """What a validation returns to train.py and to callers."""
    mp: float
    mr: float
    map50: float
    map: float
    losses: list[float]             # mean val loss per criterion term (empty without a criterion)
    maps: np.ndarray                # (nc,) mAP50-95 per class (the overall mAP for unseen classes)
    speed: tuple[float, float, float]  # ms per image: pre-process, inference, NMS
    per_class: dict = field(default_factory=dict)
    per_image: list = field(default_factory=list)  # with collect: (detections (n, 6), labels (m, 5)) per image,
                                                   # xyxy in original-image pixels (compare.py's TIDE, bootstrap)

    def metrics(self) -> list[float]:
        return [self.mp, self.mr, self.map50, self.map]


@dataclass
class _Stats:
    correct: list = field(default_factory=list)
    conf: list = field(default_factory=list)
    pred_cls: list = field(default_factory=list)
    target_cls: list = field(default_factory=list)


def _process_image(si: int, pred: torch.Tensor, targets: torch.Tensor, shape, im_hw, stats: _Stats,
                   cm: ConfusionMatrix | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Match one image's detections to its labels in original-image pixels; returns both, scaled:
    detections (n, 6) xyxy, conf, cls and labels (m, 5) cls, xyxy."""
    labels = targets[targets[:, 0] == si, 1:]  # (m, 5) cls, cxcywh pixels of the batch image
    predn = pred.clone()
    scale_boxes(im_hw, predn[:, :4], shape[0], shape[1])
    labelsn = torch.zeros((0, 5), device=pred.device)
    if len(labels):
        tbox = xywh2xyxy(labels[:, 1:5])
        scale_boxes(im_hw, tbox, shape[0], shape[1])
        labelsn = torch.cat((labels[:, 0:1], tbox), 1)
    stats.correct.append(match_predictions(predn, labelsn, IOUV.to(pred.device)).cpu())
    stats.conf.append(predn[:, 4].cpu())
    stats.pred_cls.append(predn[:, 5].cpu())
    stats.target_cls.append(labels[:, 0].cpu())
    if cm is not None:
        cm.process_batch(predn if len(predn) else None, labelsn)
    return predn, labelsn


def _save_txt(predn: torch.Tensor, shape, path: Path, save_conf: bool) -> None:
    h0, w0 = shape[0]
    gn = torch.tensor((w0, h0, w0, h0))
    with open(path, "a") as f:
        for *xyxy, conf, cls in predn.cpu().tolist():
            xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
            line = (cls, *xywh, conf) if save_conf else (cls, *xywh)
            f.write(("%g " * len(line)).rstrip() % line + "\n")


def _print_table(res: ValResult, names: dict, nt: np.ndarray, seen: int, classes: np.ndarray, ap, per_class: bool):
    pf = "%22s" + "%11i" * 2 + "%11.3g" * 4
    LOGGER.info(("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"))
    LOGGER.info(pf % ("all", seen, nt.sum(), res.mp, res.mr, res.map50, res.map))
    if nt.sum() == 0:
        LOGGER.warning("WARNING: no labels found in the val set, cannot compute metrics without labels")
    if per_class:
        for i, c in enumerate(classes):
            LOGGER.info(pf % (names.get(int(c), str(int(c))), seen, nt[c], ap.p[i], ap.r[i], ap.ap50[i],
                              ap.ap_mean[i]))


@torch.no_grad()
def run(data: dict | str = "shapes.yaml", weights: str | None = None, batch_size: int = 32, imgsz: int | None = None,
        conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "",
        workers: int = 8, single_cls: bool = False, verbose: bool = False, save_txt: bool = False,
        save_conf: bool = False, save_json: bool = False, project: str | Path = ROOT / "runs" / "val",
        name: str = "exp", exist_ok: bool = False, half: bool = False, model=None, dataloader=None,
        save_dir: Path | None = None, plots: bool = True, criterion=None, backend: str = "auto",
        collect: bool = False) -> ValResult:
    """Validate ``model`` (from train.py) or the model in ``weights`` on ``data``'s val/test split; ``backend``:
    how a .pt runs on the CPU (models/runtime.py: a cached ONNX Runtime export by default, or 'torch')."""
    training = model is not None
    data = data if isinstance(data, dict) else check_dataset(data)
    if training:
        dev = next(model.parameters()).device
        half = half and dev.type == "cuda"
        model.half() if half else model.float()
        model.eval()
    else:
        dev = select_device(device, batch_size)
        model = runtime_backend(weights, dev, half, backend, (imgsz, imgsz) if imgsz else None, images=check_image)
        half = model.fp16
        save_dir, imgsz, dataloader = _standalone_setup(model, data, weights, batch_size, imgsz, task, workers,
                                                        single_cls, save_txt, Path(project) / name, exist_ok)
        if task == "speed":
            conf_thres, iou_thres, save_json = 0.25, 0.45, False
    save_dir = Path(save_dir) if save_dir else Path(".")
    nc = 1 if single_cls else int(data["nc"])
    names = {0: "item"} if single_cls else dict(data["names"])
    cm = ConfusionMatrix(nc=nc)
    stats, dt, seen, per_image = _Stats(), [0.0, 0.0, 0.0], 0, []
    loss = torch.zeros(len(criterion.loss_names), device=dev) if criterion else None
    val_loss = criterion is not None and model.has_val_loss  # a head may declare its loss eval-incapable
    if criterion is not None and not val_loss:
        LOGGER.info("val: this head's loss is not available in eval; validation loss reported as NaN")
    coco = _coco_results(data, task, names) if save_json else None
    pbar = tqdm(dataloader, desc=("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50",
                                                          "mAP50-95"), bar_format="{l_bar}{bar:10}{r_bar}")
    with nullcontext() if training else model.host_threads():  # a CPU runtime owns the cores
        for batch_i, (im, targets, paths, shapes) in enumerate(pbar):
            t0 = time_sync(dev)
            im = im.to(dev, non_blocking=True)
            im = (im.half() if half else im.float()) / 255
            targets = targets.to(dev)
            nb, _, height, width = im.shape
            t1 = time_sync(dev)
            out = model(im)
            preds, raw = out if isinstance(out, tuple) else (out, None)  # a Backend returns the decoded tensor only
            t2 = time_sync(dev)
            if val_loss and raw is not None:
                loss += criterion(_float(raw), targets)[1]
            targets[:, 2:] *= torch.tensor((width, height, width, height), device=dev)
            preds = postprocess(preds.float(), model.suppressed, conf_thres, iou_thres, multi_label=True,
                                agnostic=single_cls, max_det=max_det)
            t3 = time_sync(dev)
            dt = [dt[0] + t1 - t0, dt[1] + t2 - t1, dt[2] + t3 - t2]
            for si, pred in enumerate(preds):
                if single_cls:
                    pred[:, 5] = 0
                predn, labelsn = _process_image(si, pred, targets, shapes[si], im.shape[2:], stats, cm)
                if collect:
                    per_image.append((predn.cpu(), labelsn.cpu()))
                if save_txt:
                    _save_txt(predn, shapes[si], save_dir / "labels" / f"{Path(paths[si]).stem}.txt", save_conf)
                if coco is not None:
                    coco.add(paths[si], predn, labelsn)
            seen += nb
            if plots and batch_i < 3:
                plot_images(im, targets, paths, save_dir / f"val_batch{batch_i}_labels.jpg", names)
                plot_images(im, _preds_to_targets(preds), paths, save_dir / f"val_batch{batch_i}_pred.jpg", names)
    res = _summarise(stats, nc, names, seen, plots, save_dir, verbose or (nc < 50 and not training))  # YOLOv5's rule
    res.losses = [] if not criterion else (loss / max(len(dataloader), 1)).tolist() if val_loss else \
        [float("nan")] * len(criterion.loss_names)
    res.speed = tuple(x / max(seen, 1) * 1e3 for x in dt)
    res.per_image = per_image
    if not training:
        shape = (batch_size, 3, imgsz, imgsz)
        LOGGER.info("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape " % res.speed
                    + str(shape))
    if plots:
        cm.plot(save_dir, names)
    if coco is not None:
        _save_json(coco, data, task, save_dir / f"{Path(weights).stem if weights else 'model'}_predictions.json", res)
    if not training:
        LOGGER.info(f"Results saved to {save_dir}")
    return res


def _coco_split(data: dict, task: str) -> dict | None:
    """The split's COCO JSON entry when the split is exactly one (utils/data/annotations.py), else None."""
    split = data.get(task if task in ("train", "val", "test") else "val")
    return split if spec_kind(split) == "coco" else None


def _coco_results(data: dict, task: str, names: dict[int, str]) -> CocoResults:
    """COCO-format results keyed as the split's own COCO JSON keys them (its image and category ids), or by
    YOLOv5's rule (file stems, COCO's 91 ids for COCO's 80 classes) for other datasets."""
    spec = _coco_split(data, task)
    if spec is None:
        return CocoResults.for_dataset(names)
    image_ids, category_ids = coco_ids(spec, names)
    LOGGER.info(f"save-json: image and category ids of {spec['coco']}")
    return CocoResults(category_ids, dict(names), image_ids=image_ids)


def _save_json(coco: CocoResults, data: dict, task: str, pred_json: Path, res: ValResult) -> None:
    """Write the COCO-format detections and score them with pycocotools: against the split's own COCO JSON when
    it is one, or the dataset's official ``annotations/instances_val2017.json`` when it has one (--task val; its
    mAP50-95 and mAP50 then replace ours, as in YOLOv5: pycocotools ignores crowd regions, ours count a detection
    there as a false positive), else against our own labels converted to COCO ground truth (printed only)."""
    coco.finish()
    coco.write(pred_json)
    spec = _coco_split(data, task)
    official = Path(spec["coco"]) if spec else Path(data.get("path") or ".") / "annotations" / "instances_val2017.json"
    if (spec or task == "val") and official.is_file():
        LOGGER.info(f"COCOeval against {official}")
        stats = coco_eval(official, pred_json, coco.images)
        if stats is not None:
            res.map, res.map50 = stats[0], stats[1]
            LOGGER.info(f"mAP50-95 {res.map:.4f} and mAP50 {res.map50:.4f} reported from pycocotools")
    else:
        coco_eval(coco.ground_truth(), pred_json, coco.images)


def _float(x):
    """A head's (opaque) raw output with every tensor in it as float32, for the criterion."""
    if isinstance(x, torch.Tensor):
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_float(v) for v in x)
    if isinstance(x, dict):
        return {k: _float(v) for k, v in x.items()}
    return x


def _standalone_setup(model: Backend, data: dict, weights: str, batch_size: int, imgsz: int | None, task: str,
                      workers: int, single_cls: bool, save_txt: bool, run_dir: Path, exist_ok: bool):
    """For val.py run on its own: check the classes, make the run folder, build the split's loader.
    Returns (save_dir, imgsz, dataloader)."""
    if not single_cls and model.nc != int(data["nc"]):
        raise ValueError(f"--weights {weights} predicts {model.nc} classes but {data.get('yaml_file', 'data')} "
                         f"has nc={data['nc']}")
    save_dir = increment_path(run_dir, exist_ok)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    imgsz, rect = _backend_imgsz(model, inference_size(imgsz, model, fallback=data.get("imgsz", 640)))
    split = task if task in ("train", "val", "test") else "val"
    dataloader = create_dataloader(data[split], imgsz, batch_size, model.stride, pad=0.5, rect=rect,
                                   workers=workers, single_cls=single_cls, prefix=f"{split}: ",
                                   names=data["names"])[0]
    return save_dir, imgsz, dataloader


def _backend_imgsz(backend: Backend, imgsz: int) -> tuple[int, bool]:
    """(image size, rect batches) a backend can run: a static export takes square letterboxed batches at its
    own size (YOLOv5 runs exported formats without rect); other batch sizes are split/padded by the backend."""
    if backend.imgsz is None:
        return imgsz, backend.dynamic
    h, w = backend.imgsz
    if h != w:
        raise ValueError(f"{backend.weights}: a static export for {h}x{w} inputs; val.py needs a square one "
                         f"(export with --imgsz {max(h, w)} or --dynamic)")
    if imgsz != h:
        LOGGER.warning(f"WARNING: {backend.weights} is a static export for {h}x{w}: validating at {h}, not {imgsz}")
    return h, False


def _preds_to_targets(preds: list[torch.Tensor]) -> torch.Tensor:
    """NMS output -> plot_images rows ``[image, cls, cx, cy, w, h, conf]`` (pixels)."""
    rows = [torch.cat((torch.full((len(p), 1), i, device=p.device), p[:, 5:6], xyxy2xywh(p[:, :4]), p[:, 4:5]), 1)
            for i, p in enumerate(preds)]
    return torch.cat(rows, 0) if rows else torch.zeros((0, 7))


def _summarise(stats: _Stats, nc: int, names: dict, seen: int, plots: bool, save_dir: Path, per_class: bool):
    cat = lambda xs, dim=0: torch.cat(xs, dim).numpy() if xs else np.zeros(0)
    tp = torch.cat(stats.correct, 0).numpy() if stats.correct else np.zeros((0, 10), bool)
    target_cls = cat(stats.target_cls).astype(int)
    nt = np.bincount(target_cls, minlength=nc)
    ap = ap_per_class(tp, cat(stats.conf), cat(stats.pred_cls), target_cls, plot=plots, save_dir=save_dir,
                      names=names)
    mp, mr, map50, map_ = ap.mean_results()
    maps = np.zeros(nc) + map_
    for i, c in enumerate(ap.classes):
        maps[c] = ap.ap_mean[i]
    res = ValResult(mp, mr, map50, map_, [], maps, (0.0, 0.0, 0.0))
    res.per_class = {int(c): {"p": float(ap.p[i]), "r": float(ap.r[i]), "map50": float(ap.ap50[i]),
                              "map": float(ap.ap_mean[i])} for i, c in enumerate(ap.classes)}
    _print_table(res, names, nt, seen, ap.classes, ap, per_class)
    return res


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=str, default="shapes.yaml", help="dataset YAML (path or name in data/)")
    p.add_argument("--weights", type=str, default=None,
                   help="model weights: .pt (ours or YOLOv5's), .torchscript or .onnx (export.py) (default: the "
                        "newest runs/train/*/weights/best.pt)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help="inference size (default: the size the model was trained at, else the dataset's imgsz, "
                        "else 640)")
    p.add_argument("--conf-thres", type=float, default=0.001)
    p.add_argument("--iou-thres", type=float, default=0.6)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--task", default="val", choices=["train", "val", "test", "speed"])
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--single-cls", action="store_true")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true")
    p.add_argument("--save-conf", action="store_true")
    p.add_argument("--save-json", action="store_true", help="save COCO-format detections (+ COCOeval)")
    p.add_argument("--project", default=ROOT / "runs" / "val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--half", action="store_true",
                   help="half precision: FP16 on CUDA; BF16 through OpenVINO on a CPU with AVX512-BF16/AMX")
    p.add_argument("--backend", default="auto", choices=backend_choices(),
                   help="how a .pt runs on the CPU: auto (the fastest installed runtime, via a cached export), "
                        f"{', '.join(backend_choices()[1:])}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt(argv)
    if opt.conf_thres > 0.001:
        LOGGER.warning(f"WARNING: --conf-thres {opt.conf_thres} > 0.001 gives lower mAP than the benchmark rule")
    try:
        opt.weights = opt.weights or default_weights(ROOT / "runs" / "train")
        run(**vars(opt))
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
