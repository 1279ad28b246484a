"""`sparsify lottery RECIPE`: lottery-ticket search for a PyTorch model (see lottery/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsify.errors import EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("lottery", help="find an N:M (or unstructured) lottery ticket for a PyTorch model",
                       description="Iterative magnitude pruning with rewinding inside your own training loop. "
                                   "RECIPE: file.py (its recipe()), file.py:function or module:function returning an "
                                   "object with model, train(model, epochs), evaluate(model) and example_inputs. "
                                   "Loading a recipe runs its code.")
    p.add_argument("recipe")
    p.add_argument("--pattern", help="N:M ticket, reached through (M-1):M ... N:M")
    p.add_argument("--sparsity", type=float, help="unstructured ticket at this sparsity (global magnitude, 20%%/round)")
    p.add_argument("--out", required=True, help="output folder (re-running resumes finished rounds)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per training run (default 10)")
    p.add_argument("--rewind-iter", type=int, default=0, metavar="K",
                   help="rewind survivors to the weights after K epochs of dense training (0 = initialisation)")
    p.add_argument("--mode", choices=["imp", "finetune"], default="imp",
                   help="imp: ticket search; finetune: dense -> prune once -> retrain (NVIDIA ASP's recipe)")
    p.add_argument("--exclude", action="append", default=[], metavar="REGEX", help="weights kept dense (e.g. first/last)")
    p.add_argument("--no-controls", action="store_true", help="skip the random re-init and one-shot controls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="discard the stages of an earlier run with another configuration in --out")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sparsify.lottery.run import run_lottery
    from sparsify.lottery.search import TicketConfig
    from sparsify.pattern import parse_pattern
    from sparsify.torch_import.export import require_torch

    require_torch()
    config = TicketConfig(pattern=parse_pattern(args.pattern) if args.pattern else None, sparsity=args.sparsity,
                          epochs=args.epochs, rewind_epoch=args.rewind_iter, seed=args.seed, mode=args.mode,
                          exclude=args.exclude, controls=not args.no_controls)
    report = run_lottery(args.recipe, config, args.out, progress=lambda line: print(line, flush=True), force=args.force)
    controls = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in report["controls"].items())
    print(f"dense {report['dense_accuracy']:.4f}; ticket {report['ticket_accuracy']:.4f} at density "
          f"{report['ticket_density']:.3f}" + (f"; controls: {controls}" if controls else ""))
    out = Path(args.out)
    print(f"wrote {out / 'report.json'}, {out / 'masks.npz'}, {out / 'ticket.pt'}, {out / 'ticket.onnx'}")
    won = report.get("winning_ticket")
    if won is None:
        print("winning ticket: not evaluated (--no-controls)")
    else:
        print(f"winning ticket: {'yes' if won else 'no'} — the ticket {'beat' if won else 'did not beat'} both controls "
              f"({report['ticket_accuracy']:.4f} vs {controls})")
    return EXIT_OK
