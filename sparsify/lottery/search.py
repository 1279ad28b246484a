"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020),
constrained to N:M by a schedule that tightens the groups step by step (4:4 -> 3:4 -> 2:4),
or unstructured by global magnitude at a fixed fraction per round; with the controls that
say whether a ticket is a winning ticket (random re-initialisation of the same mask, and
one-shot pruning retrained for the same budget), and NVIDIA ASP's fixed-mask fine-tuning.

Each finished stage is saved in the output folder, so an interrupted search resumes where it
stopped.  ``train(model, epochs)`` is the user's own loop; masks are enforced around it.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sparsify.errors import UsageError
from sparsify.io.npz import write_npz
from sparsify.lottery.enforce import MaskEnforcer
from sparsify.lottery.masks import global_magnitude_masks, nm_mask, prunable_weights
from sparsify.pattern import NMPattern

__all__ = ["TicketConfig", "find_ticket", "schedule", "seed_everything"]


@dataclass
class TicketConfig:
    pattern: NMPattern | None = None  # N:M ticket, or None with ``sparsity`` for unstructured
    sparsity: float | None = None
    epochs: int = 10
    rewind_epoch: int = 0  # 0 = the original LTH reset to initialisation
    fraction_per_round: float = 0.2
    seed: int = 0
    mode: str = "imp"  # "imp" (ticket search) or "finetune" (dense -> prune once -> retrain)
    exclude: list[str] = field(default_factory=list)  # regexes of weights kept dense
    controls: bool = True


def schedule(config: TicketConfig) -> list:
    """The per-round targets: NMPatterns (M-1):M ... N:M, or cumulative sparsities."""
    if config.pattern is not None:
        m = config.pattern.m
        return [NMPattern(k, m) for k in range(m - 1, config.pattern.n - 1, -1)]
    sparsity = config.sparsity
    if sparsity is None:
        raise UsageError("give --pattern N:M or --sparsity S")
    rounds = max(1, math.ceil(math.log(1 - sparsity) / math.log(1 - config.fraction_per_round)))
    return [min(sparsity, 1 - (1 - config.fraction_per_round) ** (r + 1)) for r in range(rounds)]


def seed_everything(seed: int) -> None:
    import torch  # noqa: TID251

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _masks_for(step, weights: dict, masks: dict) -> dict:
    if isinstance(step, NMPattern):
        found = {}
        for name, w in weights.items():
            mask = nm_mask(w, step.n, step.m)
            if mask is not None and name in masks:
                found[name] = mask & masks[name]  # never revive a pruned weight
        return found
    alive = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    already = 1 - alive / total
    fraction = 0.0 if already >= step else (step - already) / (1 - already)
    return global_magnitude_masks(weights, masks, fraction)


def train_call(recipe, epochs: int, progress=None, label: str = "") -> None:
    """``recipe.train(model, epochs)``; a train that accepts ``progress=`` gets a per-epoch
    callback, which the CLI turns into an epoch line under the round's."""
    try:
        accepts = "progress" in inspect.signature(recipe.train).parameters
    except (TypeError, ValueError):
        accepts = False
    if accepts and progress is not None:
        recipe.train(recipe.model, epochs, progress=lambda epoch, *_: progress(f"  {label} epoch {epoch}/{epochs}"))
    else:
        recipe.train(recipe.model, epochs)


def _train_with(recipe, masks: dict, epochs: int, seed: int, progress=None, label: str = "") -> float:
    weights = prunable_weights(recipe.model)
    enforcer = MaskEnforcer(recipe.model, weights, masks)
    try:
        seed_everything(seed)
        train_call(recipe, epochs, progress, label)
    finally:
        enforcer.remove()
    for name, mask in masks.items():  # exactly zero, whatever the optimizer did last
        weights[name].data.mul_(mask.to(weights[name].dtype))
    return float(recipe.evaluate(recipe.model))


def _density(masks: dict) -> float:
    return sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))


class _Stages:
    """Resumable stages: each one saves its state, masks and numbers under ``out``."""

    def __init__(self, out: Path):
        self.out = out

    def done(self, stage: str) -> dict | None:
        path = self.out / stage / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def load(self, stage: str, model) -> dict:
        import torch  # noqa: TID251

        model.load_state_dict(torch.load(self.out / stage / "state.pt", weights_only=True))
        masks = np.load(self.out / stage / "masks.npz")
        return {k: torch.from_numpy(masks[k]) for k in masks.files}

    def save(self, stage: str, model, masks: dict, result: dict) -> None:
        import torch  # noqa: TID251

        folder = self.out / stage
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), folder / "state.pt")
        write_npz(folder / "masks.npz", {k: v.numpy() for k, v in masks.items()})
        (folder / "result.json").write_text(json.dumps(result, indent=2))  # written last: marks the stage done


def find_ticket(recipe, config: TicketConfig, out: Path, progress=print) -> dict:
    """Run the search; returns the report dict (also written to ``out/report.json``)."""
    import torch  # noqa: TID251

    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(out)
    model = recipe.model
    seed_everything(config.seed)
    weights = prunable_weights(model, config.exclude)
    if not weights:
        raise UsageError("the model has no Linear/Conv weight to prune (or --exclude matched them all)")
    dense_layers = {}
    if config.pattern is not None:
        m = config.pattern.m
        dense_layers = {n: f"input dimension {w.shape[1]} is not divisible by {m}" for n, w in weights.items() if w.shape[1] % m}
        if len(dense_layers) == len(weights):
            raise UsageError(f"no layer can take {config.pattern}: " + "; ".join(f"{n}: {r}" for n, r in dense_layers.items()))
    ones = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    dense, rewind_state = _dense_stage(recipe, config, stages, ones, out, progress)
    trained_dense = copy.deepcopy(model.state_dict())
    rounds, masks = _rounds(recipe, config, stages, ones, rewind_state, progress)
    ticket_state = copy.deepcopy(model.state_dict())

    controls = {}
    if config.controls:
        controls = _controls(recipe, config, stages, masks, trained_dense, rewind_state, progress)
    model.load_state_dict(ticket_state)
    report = {"mode": config.mode, "config": {**asdict(config), "pattern": str(config.pattern) if config.pattern else None},
              "dense_accuracy": dense["accuracy"], "rounds": rounds, "ticket_accuracy": rounds[-1]["accuracy"],
              "ticket_density": rounds[-1]["density"], "controls": controls,
              "dense_layers": {**{p: "excluded by --exclude" for p in _excluded(model, config)}, **dense_layers},
              "winning_ticket": all(rounds[-1]["accuracy"] > c["accuracy"] for c in controls.values()) if controls else None,
              "versions": {"torch": torch.__version__}}
    torch.save(ticket_state, out / "ticket.pt")
    write_npz(out / "masks.npz", {k: v.numpy() for k, v in masks.items()})
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return {"report": report, "masks": masks}


def _dense_stage(recipe, config: TicketConfig, stages: _Stages, ones: dict, out: Path, progress) -> tuple[dict, dict]:
    """Train the dense model (or resume it): its result and the rewind point's state."""
    import torch  # noqa: TID251

    model = recipe.model
    if (dense := stages.done("dense")) is None:
        progress(f"dense: training {config.epochs} epochs (rewind point: epoch {config.rewind_epoch})")
        seed_everything(config.seed)
        if config.rewind_epoch:
            train_call(recipe, config.rewind_epoch, progress, "dense")
        rewind_state = copy.deepcopy(model.state_dict())
        seed_everything(config.seed + 1)
        train_call(recipe, config.epochs - config.rewind_epoch, progress, "dense")
        dense = {"accuracy": float(recipe.evaluate(model))}
        torch.save(rewind_state, out / "rewind_state.pt")
        stages.save("dense", model, ones, dense)
    stages.load("dense", model)
    progress(f"dense accuracy {dense['accuracy']:.4f}")
    return dense, torch.load(out / "rewind_state.pt", weights_only=True)


def _rounds(recipe, config: TicketConfig, stages: _Stages, ones: dict, rewind_state: dict,
            progress) -> tuple[list[dict], dict]:
    """The pruning rounds (each resumable): their results and the final masks."""
    model = recipe.model
    rounds, masks = [], ones
    steps = schedule(config) if config.mode == "imp" else [config.pattern or config.sparsity]
    for r, step in enumerate(steps):
        stage = f"round_{r + 1}"
        if (result := stages.done(stage)) is not None:
            masks = stages.load(stage, model)
        else:
            masks = _masks_for(step, prunable_weights(model, config.exclude), masks)
            if config.mode == "imp":
                model.load_state_dict(rewind_state)  # rewind the survivors
            target = f"{step:.4g} sparsity" if isinstance(step, float) else str(step)
            progress(f"{stage}: pruning to {target}, training {config.epochs} epochs")
            accuracy = _train_with(recipe, masks, config.epochs, config.seed + 10 + r, progress, stage)
            result = {"target": f"{step:.4g}" if isinstance(step, float) else str(step), "density": _density(masks),
                      "accuracy": accuracy}
            stages.save(stage, model, masks, result)
        rounds.append(result)
        progress(f"{stage}: {result['target']} density {result['density']:.3f} accuracy {result['accuracy']:.4f}")
    return rounds, masks


def _excluded(model, config) -> list[str]:
    return sorted(set(prunable_weights(model)) - set(prunable_weights(model, config.exclude)))


def _controls(recipe, config, stages, masks, trained_dense, rewind_state, progress) -> dict:
    model, controls = recipe.model, {}
    if (result := stages.done("control_random_reinit")) is None:
        seed_everything(config.seed + 1000)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # same architecture and mask, fresh random weights
        accuracy = _train_with(recipe, masks, config.epochs, config.seed + 1001)
        result = {"accuracy": accuracy, "density": _density(masks)}
        stages.save("control_random_reinit", model, masks, result)
    controls["random_reinit"] = result
    progress(f"control random re-init: accuracy {result['accuracy']:.4f}")
    if config.mode == "imp":
        if (result := stages.done("control_one_shot")) is None:
            model.load_state_dict(trained_dense)
            weights = prunable_weights(model, config.exclude)
            ones = {n: m.new_ones(m.shape) for n, m in masks.items()}
            final = config.pattern if config.pattern else config.sparsity
            one_shot = _masks_for(final, weights, ones)
            model.load_state_dict(rewind_state)
            accuracy = _train_with(recipe, one_shot, config.epochs, config.seed + 2001)
            result = {"accuracy": accuracy, "density": _density(one_shot)}
            stages.save("control_one_shot", model, one_shot, result)
        controls["one_shot_magnitude"] = result
        progress(f"control one-shot magnitude: accuracy {result['accuracy']:.4f}")
    return controls
