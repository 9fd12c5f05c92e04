"""Training-step throughput: lines per second and the share of step time spent waiting on data, in one run.

Trains the same lines twice for a fixed number of steps, batches prepared in the training loop
(``dataloader_num_workers=0``) and by worker processes (``--workers``, default 2), and prints both with their
ratio. The figures come from training.loop itself (TrainResult.samples_per_second / data_wait_share), which
fine-tune runs also record.

Model: a tiny random surya 0.17.1 recognition model of the real architecture (the tests' builder), or a real
checkpoint with --checkpoint (a directory or surya's default id). Device: CUDA when present, else CPU.

Usage: .venv/bin/python bench/train_step.py [--steps 40] [--batch 16] [--workers 2] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mls_render import load_font  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from marker_ls_plugin.ocr.surya import SuryaEngine  # noqa: E402
from marker_ls_plugin.training.config import TrainingArguments  # noqa: E402
from marker_ls_plugin.training.data import Line  # noqa: E402
from marker_ls_plugin.training.loop import train  # noqa: E402
from marker_ls_plugin.training.surgery import resolve_device  # noqa: E402

WORDS = "invoice total harbour minutes recipe flour water salt widget shipping date paid quote north".split()


def lines(count: int, directory: Path) -> list[Line]:
    """Rendered line crops saved as PNG files, as an export writes them (so loading includes decoding)."""
    out = []
    for index in range(count):
        text = " ".join(WORDS[(index * 3 + k) % len(WORDS)] for k in range(1 + index % 5)) + f" {index}"
        font = load_font(20 + index % 12)
        image = Image.new("RGB", (int(font.getlength(text)) + 16, int(font.size * 1.6)), "white")
        ImageDraw.Draw(image).text((8, 3), text, fill="black", font=font)
        path = directory / f"{index}.png"
        image.save(path)
        out.append(Line(path, text, "Text", str(index)))
    return out


def measure(checkpoint: str, train_lines: list[Line], val_lines: list[Line], steps: int, batch: int, workers: int,
            device: str):
    arguments = TrainingArguments(max_steps=steps, per_device_train_batch_size=batch, eval_steps=steps,
                                  dataloader_num_workers=workers, early_stopping_patience=None, freeze=[])
    started = time.monotonic()
    result = train(checkpoint, train_lines, val_lines, arguments, None, None, device=device, reader=SuryaEngine.around)
    return result, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lines", type=int, default=256)
    parser.add_argument("--checkpoint", help="a surya recognition checkpoint; default: a tiny random one")
    parser.add_argument("--device", help="default: cuda when present, else cpu")
    options = parser.parse_args()
    device = resolve_device(options.device)
    with tempfile.TemporaryDirectory(prefix="mls-bench-train-") as tmp:
        tmp_path = Path(tmp)
        checkpoint = options.checkpoint
        if checkpoint is None:
            import surya_tiny

            checkpoint = str(surya_tiny.build_tiny_recognition(tmp_path / "tiny"))
        (tmp_path / "lines").mkdir()
        data = lines(options.lines + 4, tmp_path / "lines")
        train_lines, val_lines = data[:-4], data[-4:]
        print(f"model {checkpoint if options.checkpoint else 'tiny random surya (tests/surya_tiny.py)'}, "
              f"device {device}, {options.steps} steps of {options.batch} lines")
        measure(checkpoint, train_lines, val_lines, 3, options.batch, 0, device)  # warm-up: caches, allocator
        results = {}
        for workers in (0, options.workers):
            result, seconds = measure(checkpoint, train_lines, val_lines, options.steps, options.batch, workers,
                                      device)
            results[workers] = result
            print(f"  dataloader workers {workers}: {result.samples_per_second:8.1f} lines/s, "
                  f"data wait {100 * result.data_wait_share:5.1f}% of step time "
                  f"(whole call incl. loading and 2 evaluations: {seconds:.1f} s)")
        base, parallel = results[0], results[options.workers]
        print(f"lines/s with {options.workers} workers / in-loop = "
              f"{parallel.samples_per_second / base.samples_per_second:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
