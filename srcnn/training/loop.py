"""The training loop: MSE (or L1) on the valid (centre) region, Adam, cosine learning rate.

It trains either family (`srcnn.models.build.build_net`): the input patches are what the net reads
(the bicubic upscale for SRCNN, the LR patch for an LR-space net), the targets are HR patches,
cut to the net's `output_border`.

It knows nothing about MLflow or Prefect: progress goes out through `on_epoch`, a callback
that the caller implements (the train task logs to MLflow with an explicit run id).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from srcnn.config import TrainConfig
from srcnn.data.loader import TrainingInput
from srcnn.inference.tiling import native_bf16, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    step: int
    train_loss: float
    val_psnr: float
    lr: float
    elapsed_s: float
    patches_per_s: float
    rolled_back: bool = False  # diverged: training went on from the best epoch, lr halved
    held_out_psnr: float | None = None  # whole held-out images by the protocol, where scored

    @property
    def selection(self) -> float:
        """What picks the best epoch: the held-out images' PSNR where they were scored, else
        the validation patches'."""
        return self.val_psnr if self.held_out_psnr is None else self.held_out_psnr


@dataclass
class TrainResult:
    model: nn.Module  # the best model by the selection figure (`EpochReport.selection`)
    best_epoch: int
    best_score: float  # that epoch's selection figure (dB)
    history: list[EpochReport] = field(default_factory=list)
    elapsed_s: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"  # of the convolutions: "bf16" under autocast (`TrainConfig.bf16`)


@dataclass
class Checkpoints:
    """Where the loop's state goes and comes from. `save(state)` is called after the first
    epoch that ends `every_s` seconds of training after the last checkpoint (0: every epoch);
    `resume`, a state `save` was given, continues that training: the same epochs, schedule,
    time budget (training already done counts), best epoch and random streams."""

    save: Callable[[dict], None]
    every_s: float = 300.0
    resume: dict | None = None


def _rng_states(gen: torch.Generator, index_gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "gen": gen.get_state(),
            "index_gen": index_gen.get_state().cpu(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(states: dict, gen: torch.Generator, index_gen: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    gen.set_state(states["gen"])
    index_gen.set_state(states["index_gen"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of the last two axes (k in 0..7)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def centre(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border : x.shape[-2] - border, border : x.shape[-1] - border] if border else x


@torch.no_grad()
def evaluate_psnr(model: nn.Module, data: TrainingInput, device: torch.device,
                  batch_size: int = 512) -> float:
    """PSNR (dB, peak 1) over all valid-region pixels of a set of patches."""
    model.eval()
    b = model.output_border
    se, count = 0.0, 0
    for x, y in data.batches(batch_size):
        x, y = x.to(device).float(), centre(y.to(device).float(), b)
        pred = model(x.contiguous(memory_format=torch.channels_last)).clamp(0, 1)
        se += float(((pred - y) ** 2).sum())
        count += y.numel()
    model.train()
    return 10 * math.log10(count / se) if se > 0 else float("inf")


def _progress(step: int, total_steps: int, elapsed_s: float, budget_s: float | None) -> float:
    """Fraction of the schedule done: by steps, or by time when a time budget binds first."""
    by_steps = step / total_steps
    return max(by_steps, elapsed_s / budget_s) if budget_s else by_steps


def _learning_rate(config: TrainConfig, progress: float, factor: float = 1.0) -> float:
    if config.lr_schedule == "constant":
        return config.lr * factor
    return config.lr * factor * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train(model: nn.Module, train_data: TrainingInput, val_data: TrainingInput, config: TrainConfig,
          on_epoch: Callable[[EpochReport, nn.Module], None] | None = None,
          score: Callable[[nn.Module], float] | None = None,
          checkpoints: Checkpoints | None = None) -> TrainResult:
    """Train `model`; `on_epoch(report, model)` is called after every epoch (model in eval mode
    on the training device: a callback may run it, e.g. on a benchmark set). `score(model)`,
    where given, is the epoch's selection figure (whole held-out images by the evaluation
    protocol: what the net is for); else the validation patches' PSNR selects.
    `checkpoints`: saves the loop's state now and then and resumes from one (`Checkpoints`)."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    b = model.output_border
    steps_per_epoch = config.steps_per_epoch or max(1, len(train_data) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    budget_s = config.max_minutes * 60 if config.max_minutes else None
    use_bf16 = config.bf16 and native_bf16(device)
    if device.type == "cuda":  # keep the patches on the GPU: batches are then gathered there
        train_data, val_data = train_data.to(device), val_data.to(device)
        # batch indices drawn on the GPU: a host->device copy per step would sync every step
        index_gen = torch.Generator(device=device).manual_seed(config.seed)
    else:
        index_gen = gen
    loss_fn = {"l1": nn.L1Loss(), "smooth_l1": nn.SmoothL1Loss(beta=1 / 255),
               "mse": nn.MSELoss()}[config.loss]
    best = TrainResult(copy.deepcopy(model), 0, -math.inf, device=str(device),
                       precision="bf16" if use_bf16 else "fp32")
    best_opt_state = copy.deepcopy(opt.state_dict())
    step, lr, lr_factor, first_epoch, done_s = 0, config.lr, 1.0, 1, 0.0
    if checkpoints is not None and (state := checkpoints.resume) is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best.model.load_state_dict(state["best_model"])
        best_opt_state = state["best_optimizer"]
        best.best_epoch, best.best_score = state["best_epoch"], state["best_score"]
        best.history = [EpochReport(**r) for r in state["history"]]
        step, lr, lr_factor, done_s = state["step"], state["lr"], state["lr_factor"], state["elapsed_s"]
        first_epoch = state["epoch"] + 1
        _set_rng_states(state["rng"], gen, index_gen)
        log.info("resumed at epoch %d (step %d, %.0f s of training done)", state["epoch"], step,
                 done_s)
    start = time.perf_counter() - done_s  # the clock counts the training already done
    saved_at = time.perf_counter()
    for epoch in range(first_epoch, config.epochs + 1):
        epoch_start, epoch_steps = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        for _ in range(steps_per_epoch):
            progress = _progress(step, total_steps, time.perf_counter() - start, budget_s)
            if progress >= 1.0:
                break
            lr = _learning_rate(config, progress, lr_factor)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = train_data.get_batch(config.batch_size, index_gen)  # (B, 1, P, P) each
            x = x.to(device, non_blocking=True).float()
            y = y.to(device, non_blocking=True).float()
            if config.augment:
                k = int(torch.randint(8, (1,), generator=gen))
                x, y = dihedral(x, k), dihedral(y, k)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                pred = model(x.contiguous(memory_format=torch.channels_last))  # (B,1,P-2b,P-2b)
            loss = loss_fn(pred.float(), centre(y, b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            step += 1
            epoch_steps += 1
        if epoch_steps == 0:
            break
        train_loss = float(loss_sum) / epoch_steps  # waits for the epoch's queued GPU work
        now = time.perf_counter()
        val_psnr = evaluate_psnr(model, val_data, device)
        held_out = score(model.eval()) if score else None
        model.train()
        report = EpochReport(
            epoch=epoch, step=step, train_loss=train_loss, val_psnr=val_psnr, lr=lr,
            elapsed_s=now - start,
            patches_per_s=epoch_steps * config.batch_size / (now - epoch_start),
            held_out_psnr=held_out,
        )
        log.info("epoch %d: loss %.5f, val PSNR %.3f dB%s, %.0f patches/s", epoch,
                 report.train_loss, report.val_psnr, "" if held_out is None else
                 f", held-out images {held_out:.3f} dB", report.patches_per_s)
        if report.selection > best.best_score:
            best.model, best.best_epoch, best.best_score = copy.deepcopy(model), epoch, report.selection
            best_opt_state = copy.deepcopy(opt.state_dict())
        elif (
            config.rollback_db is not None
            and not report.selection >= best.best_score - config.rollback_db
        ):  # NaN too
            log.warning(
                "epoch %d: %.3f dB is %.2f dB below epoch %d's: diverged; going "
                "on from epoch %d with the learning rate halved",
                epoch,
                report.selection,
                best.best_score - report.selection,
                best.best_epoch,
                best.best_epoch,
            )
            model.load_state_dict(best.model.state_dict())
            opt.load_state_dict(best_opt_state)
            lr_factor /= 2
            report = dataclasses.replace(report, rolled_back=True)
        best.history.append(report)
        if on_epoch:
            on_epoch(report, model.eval())
            model.train()
        if checkpoints is not None and time.perf_counter() - saved_at >= checkpoints.every_s:
            checkpoints.save({
                "epoch": epoch, "step": step, "lr": lr, "lr_factor": lr_factor,
                "elapsed_s": time.perf_counter() - start, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "best_model": best.model.state_dict(),
                "best_optimizer": best_opt_state, "best_epoch": best.best_epoch,
                "best_score": best.best_score,
                "history": [dataclasses.asdict(r) for r in best.history],
                "rng": _rng_states(gen, index_gen)})
            saved_at = time.perf_counter()
    best.elapsed_s = time.perf_counter() - start
    best.model = best.model.cpu().eval()
    return best
