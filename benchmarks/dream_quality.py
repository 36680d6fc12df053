"""Dream-quality benchmark: do the federation's soft labels say what the dreams look like?

The learning benchmark measures dream quality indirectly (the server model's accuracy). This
one judges each round's final dreams x̂ and their aggregated soft labels z̄ with a reference
model trained on the whole training split (the Centralized bound): how often z̄'s class is
the class the reference sees, how sure the reference is on the dreams, and the reference's
probability of z̄'s class. One architecture against four (the learning benchmark's
heterogeneous set), same seed, same defaults, so the ratio says what heterogeneity costs the
labels. The dreams are recorded by a subclass of the CoDream strategy, registered for the run
only; nothing in the method changes.

    .venv/bin/python benchmarks/dream_quality.py            # seed 0, MNIST-5k, K = 4: about 12 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import learning  # noqa: E402  (the learning benchmark's profile and method configs)

REFERENCE = {"model": "cnn", "epochs": 15, "lr": 0.05, "seed": 123}


def _judge(reference, dreams, logits) -> dict[str, Any]:
    from codream.training import predict_logits

    ref = predict_logits(reference, dreams)  # (N, classes)
    seen = ref.argmax(1)
    labelled = logits.argmax(1)
    classes = ref.shape[1]
    return {
        "label_agreement": (labelled == seen).float().mean().item(),
        "reference_confidence": ref.softmax(1).max(1).values.mean().item(),
        "reference_prob_of_label": ref.softmax(1).gather(1, labelled[:, None]).mean().item(),
        "reference_class_histogram": [int(c) for c in seen.bincount(minlength=classes)],
        "label_class_histogram": [int(c) for c in labelled.bincount(minlength=classes)],
    }


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from codream.config import RunConfig, build, dotted
    from codream.data import load_dataset
    from codream.models import build_seeded_model
    from codream.simulation import simulate
    from codream.strategies import register, unregister
    from codream.strategies.codream import CoDream
    from codream.training import OptimizerConfig, evaluate, train_supervised

    torch.set_num_threads(1)
    config = build(RunConfig, dotted(job["config"]))
    dataset = load_dataset(config.dataset)
    reference = build_seeded_model(REFERENCE["model"], dataset.input_shape, dataset.num_classes,
                                   REFERENCE["seed"])
    train_supervised(reference, dataset.x_train, dataset.y_train, REFERENCE["epochs"],
                     OptimizerConfig(lr=REFERENCE["lr"]), torch.Generator().manual_seed(1))
    reference_accuracy, _ = evaluate(reference, dataset.x_test, dataset.y_test)
    recorded: dict[int, Any] = {}

    class Recorded(CoDream):
        """CoDream as it is, keeping each round's labelled dreams for judging."""

        name = "codream_recorded"

        def _acquire_knowledge(self, r, labelled):
            recorded[r] = (torch.cat([d for d, _ in labelled]), torch.cat([z for _, z in labelled]))
            return (yield from super()._acquire_knowledge(r, labelled))

    register(Recorded)
    try:
        started = time.perf_counter()
        result = simulate(build(RunConfig, {**dotted(job["config"]), "strategy": Recorded.name}))
    finally:
        unregister(Recorded.name)
    rounds = [{"round": r, **_judge(reference, *recorded[r])} for r in sorted(recorded)]
    out = {"row": job["row"], "models": config.models, "seed": config.seed,
           "reference_accuracy": reference_accuracy, "rounds": rounds,
           "final_mean_client_accuracy": result.summary["final_mean_client_accuracy"],
           "final_server_accuracy": result.summary.get("final_server_accuracy"),
           "wall_seconds": time.perf_counter() - started}
    for row in rounds:
        print(f"  {job['row']:22s} round {row['round']}: label agreement "
              f"{row['label_agreement']:.3f}, reference confidence "
              f"{row['reference_confidence']:.3f}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "dream_quality.json")
    args = parser.parse_args()
    profile = learning.PROFILES["cpu"]
    jobs = [{"row": row, "config": learning.method_config(method, args.partition, args.seed, profile)}
            for row, method in (("one architecture", "codream"),
                                ("four architectures", "codream_hetero"))]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        runs = pool.map(run_one, jobs, chunksize=1)
    one, four = runs
    ratio = [b["label_agreement"] / a["label_agreement"]
             for a, b in zip(one["rounds"], four["rounds"], strict=True)]
    print("label agreement, four architectures over one: "
          + ", ".join(f"round {r['round']} {x:.2f}" for r, x in zip(one["rounds"], ratio, strict=True)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "reference": REFERENCE, "partition": args.partition, "seed": args.seed,
        "codream": profile["codream"], "hetero_models": profile["hetero_models"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "label_agreement_ratio_four_over_one": ratio,
        "total_wall_seconds": time.perf_counter() - started, "runs": runs,
    }, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
