"""``python -m finetune.warmstart``: make the small warm-start checkpoint the project ships.

Trains the embedded architecture from scratch on the generated ``pretrain`` world (eight shape
classes and palettes that the default ``shapes`` dataset does not use: its COCO, so to speak)
with the same pipeline as ``python -m finetune``, then stores the best checkpoint in float16
(about 10 MB) in ``finetune/assets/warmstart``. Fine-tuning re-initialises its class head.
About 40 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Generate the pretrain dataset, train on it, write the float16 warm start atomically."""
    from finetune.model import WARMSTART_DIR

    parser = argparse.ArgumentParser(prog="python -m finetune.warmstart", description=__doc__)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--output", type=Path, default=WARMSTART_DIR)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    given = sys.argv[1:] if argv is None else list(argv)
    args, trainer_flags = parser.parse_known_args(given)

    import torch
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from finetune.cli import main as finetune_main
    from finetune.runs import atomic_write_dir, atomic_write_json, best_checkpoint
    from finetune.synthetic import SPECS, generate_dataset

    root = generate_dataset(None, "pretrain")
    run_dir = args.runs_dir / "warmstart"
    code = finetune_main(
        [
            "--dataset",
            str(root),
            "--checkpoint",
            "scratch",
            "--num_train_epochs",
            str(args.epochs),
            "--output_dir",
            str(run_dir),
            *trainer_flags,
        ]
    )
    if code:
        return code
    best = best_checkpoint(run_dir)
    model = AutoModelForObjectDetection.from_pretrained(best, dtype=torch.float32)
    processor = AutoImageProcessor.from_pretrained(best)
    metrics = (run_dir / "metrics.json").read_text()

    def write(tmp: Path) -> None:
        model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        atomic_write_json(
            tmp / "provenance.json",
            {
                "made_by": " ".join(["python -m finetune.warmstart", *given]),
                "dataset": {"spec": SPECS["pretrain"].__dict__},
                "run_metrics": json.loads(metrics),
            },
        )

    atomic_write_dir(args.output, write)
    size = sum(f.stat().st_size for f in args.output.iterdir()) / 1e6
    print(f"warm start written to {args.output} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    from runtime.extras import exit_unless_installed

    exit_unless_installed("train", "python -m finetune.warmstart")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
