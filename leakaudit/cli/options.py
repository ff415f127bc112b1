"""Options that several commands share (scan, sweep, inspect), declared once so their names, defaults and
help texts cannot drift apart. Typer reads these objects without changing them, so one instance can be
the default of a parameter in several commands."""

from __future__ import annotations

import typer

MODEL = typer.Argument(..., help="Model file: .onnx, or .safetensors with --arch.", show_default=False)
DATA = typer.Option(..., "--data", help="Samples: image folder, .npz/.npy or .safetensors (x, y).",
                    show_default=False)
ARCH = typer.Option(None, "--arch", help="Architecture for safetensors: a built-in name, file.py:factory, "
                    "package.module:factory or timm:MODEL.")
ARCH_ARG = typer.Option([], "--arch-arg", metavar="KEY=VALUE",
                        help="An argument of the --arch factory, e.g. img_size=32 (repeatable; TOML values).")
INPUT_SHAPE = typer.Option(None, "--input-shape", help="One sample's shape, e.g. 3,32,32.")
NUM_CLASSES = typer.Option(None, "--num-classes", help="Number of classes (if not in the file).")
DROPOUT = typer.Option([], "--dropout", metavar="LAYER=P",
                       help="LAYER=P: a dropout rate the export removed (repeatable).")
NORMALIZE = typer.Option("none", "--normalize", help="Input normalization: none, mnist, cifar10, imagenet.")
MEAN = typer.Option(None, "--mean", help="Per-channel mean, e.g. 0.5,0.5,0.5 (with --std).")
STD = typer.Option(None, "--std", help="Per-channel std.")
RULES = typer.Option("default", "--rules", help="Rule profile (default, strict) or a rule TOML file.")
ATTACKS = typer.Option("auto", "--attacks", help="auto (fit to the model) or a list, e.g. ig,dia.")
BUDGET = typer.Option("standard", "--budget", help="quick, standard or thorough (the papers' settings).")
ITERATIONS = typer.Option(None, "--iterations", help="Iterations of every attack (overrides the budget).")
RESTARTS = typer.Option(None, "--restarts", help="Restarts of every attack (overrides the budget).")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Samples in the client's batch (default: 1, or the "
                          "smallest the model's train-mode BatchNorm layers can run with).")
LOCAL_STEPS = typer.Option(1, "--local-steps", help="Local steps (>1: FedAvg weight update).")
LOCAL_LR = typer.Option(0.1, "--local-lr", help="Local learning rate (FedAvg).")
PROTOCOL = typer.Option(None, "--protocol", help="fedsgd or fedavg (default: fedavg when --local-steps > 1).")
LABELS_KNOWN = typer.Option(False, "--labels-known", help="Give the attacker the true labels (stronger attacker).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (GPU N).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr.")
STRICT = typer.Option(False, "--strict", help="A rule that cannot be evaluated counts as a failure; a scan "
                      "whose verdict is inconclusive (no reconstruction even without the defenses) exits 1, not 4.")
DEBUG = typer.Option(False, "--debug", help="Show tracebacks.")
