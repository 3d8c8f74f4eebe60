"""The ladder table from the ``summary.json`` files of ``benchmarks/reconstruct.py`` runs.

    python benchmarks/recon_table.py results/recon-ladder > results/recon-ladder/ladder.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tabulate import tabulate


def theta_text(theta: dict) -> str:
    if "steps" in theta:
        return (f"GD {theta['steps']} steps, loss {theta['loss']:.1e}, train {100 * theta['train_accuracy']:.0f} %, "
                f"held-out {100 * theta['heldout_accuracy']:.1f} %")
    return f"DSV θ* (Adam), train {theta['train_accuracy']:.1f} %, test {theta['test_accuracy']:.1f} %"


def rows(root: Path) -> list[list]:
    table = []
    for summary_path in sorted(root.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        config = summary["config"]
        for row in summary["rows"]:
            info = row.get("info", {})
            retrain = row.get("retrain_dc", {})
            changed = ", ".join(f"{k}={v}" for k, v in row.get("changed", {}).items()) or "–"
            table.append([
                summary_path.parent.name, row["run"], changed,
                f"{row['count_above_0.4']}/{row['n_train']} ({row['count_chance_heldout']} / {row['count_chance_noise']})",
                f"{row['closer_than_heldout']:.3f} ({row['closer_noise']:.3f})",
                f"{row['training_share']:.3f} ({row['chance_heldout']:.3f} / {row['chance_noise']:.3f})",
                f"{row['ssim_top10_mean']:.2f}",
                f"{info['residual_l2']:.3f} / {info['cosine']:.3f}" if "cosine" in info else "–",
                " / ".join(f"{v:.1f}" for v in retrain.values()) or "–",
                f"{config['model']}, {theta_text(summary['theta'])}",
                f"{row['seconds']:.0f}",
            ])
    return table


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: recon_table.py RESULTS_DIR (holding <rung>/summary.json)", file=sys.stderr)
        return 2
    headers = ["rung", "run", "changed (from Haim et al.'s fields)", "SSIM>0.4 (held-out / noise)",
               "closer than held-out (noise)", "training share (held-out / noise)", "top-10 SSIM", "residual ℓ2 / cos", "retrain IPC 1 / 10 (dc)",
               "θ*", "s"]
    print(tabulate(rows(Path(argv[0])), headers, tablefmt="github"))
    print("\n- SSIM>0.4: training images whose NCC-nearest candidate has SSIM > 0.4 (Haim et al.'s count); in "
          "brackets the same count with held-out real images, then Gaussian noise, in the candidates' place")
    print("- closer than held-out: candidates nearer (NCC) to their nearest training image than 95 % of the "
          "held-out images are to theirs (held-out images: 0.05 by construction); in brackets Gaussian noise")
    print("- training share: candidates whose nearest real image (training ∪ held-out) is a training image; in "
          "brackets held-out images and noise as candidates (chance)")
    print("- residual ℓ2 / cos: ‖θ* + G‖/‖θ*‖ and cos(θ*, −G) of the final candidates and λ, all parameters")
    print("- budgets reduced from the published ones (250 per class, width 1000, 50 000 steps); CPU, one thread")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
