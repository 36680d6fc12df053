"""Dreams synthesised collaboratively from trained teachers carry their knowledge.

A fresh student trained only on the dreams and their aggregated soft labels must beat, by a
wide margin, a fresh student trained on Gaussian-noise inputs labelled by the same teachers'
averaged logits (the input the dreams start from, without the synthesis). Both students get the
same number of samples, the same steps, the same temperature and the same initial weights.
"""

import numpy as np
import pytest
import torch

from codream.config import RunConfig, build
from codream.data import load_dataset
from codream.in_memory_transport import drive
from codream.models import build_seeded_model
from codream.node_build import build_node, client_partitions, node_id
from codream.round_logic import build_coordinator
from codream.training import OptimizerConfig, evaluate, predict_logits, train_on_dreams

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they cost 10×."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _students_accuracy(dataset_name: str, clients: int, warmup_epochs: int, batch_size: int,
                       global_steps: int, student_steps: int, seed: int = 0):
    """(dream-student accuracy, noise-student accuracy, teacher accuracies)."""
    config = build(RunConfig, {
        "strategy": "codream", "dataset": dataset_name, "clients": clients, "partition": "iid",
        "rounds": 1, "warmup_epochs": warmup_epochs, "local_epochs": 0, "device": "cpu", "seed": seed,
        "dream": {"batch_size": batch_size, "global_steps": global_steps},
        # The teachers stay as warm-up left them; our own students replace the server model.
        "distill": {"epochs": 0}, "server_model": {"steps": 0},
    })
    dataset = load_dataset(dataset_name)
    parts = client_partitions(config, dataset)  # disjoint parts of the training set
    assert sum(len(p) for p in parts) <= len(dataset.y_train)
    assert len(np.unique(np.concatenate(parts))) == sum(len(p) for p in parts)
    cpu = torch.device("cpu")
    nodes = {node_id(i): build_node(config, i, dataset, parts, cpu) for i in range(clients)}
    coordinator = build_coordinator(config, dataset, cpu)
    drive(coordinator.run(), nodes)  # round 0: warm-up; round 1: synthesis + soft labels

    dreams, dream_logits = coordinator.strategy.server_buffer.tensors()  # (B, C, H, W), (B, classes)
    assert dreams.shape == (batch_size, *dataset.input_shape)
    teachers = [node.model for node in nodes.values()]
    teacher_accuracy = [evaluate(t, dataset.x_test, dataset.y_test)[0] for t in teachers]

    noise = torch.randn(dreams.shape, generator=torch.Generator().manual_seed(seed + 1))
    weights = torch.tensor([float(len(p)) for p in parts])  # the same n_k weighting as the dreams
    noise_logits = sum(w * predict_logits(t, noise) for w, t in zip(weights, teachers, strict=True))
    noise_logits = noise_logits / weights.sum()

    accuracies = []
    for x, z in ((dreams, dream_logits), (noise, noise_logits)):
        student = build_seeded_model("cnn", dataset.input_shape, dataset.num_classes, seed + 5)
        train_on_dreams(student, x, z, student_steps, OptimizerConfig(0.05, 0.9, 5e-4, 64),
                        config.distill.temperature, torch.Generator().manual_seed(seed + 2))
        accuracies.append(evaluate(student, dataset.x_test, dataset.y_test)[0])
    return accuracies[0], accuracies[1], teacher_accuracy


def test_dreams_teach_a_fresh_student_far_better_than_noise_on_mnist():
    # Measured (seeds 0-4, this configuration): dream student 0.56-0.68, noise student 0.12-0.21,
    # margin 0.38-0.53 (seed 0: about 0.47). On 28x28 inputs Gaussian noise lies far from the
    # data, so the teachers' logits on it carry almost nothing.
    dream_acc, noise_acc, teachers = _students_accuracy(
        "mnist", clients=3, warmup_epochs=2, batch_size=48, global_steps=25, student_steps=150
    )
    assert min(teachers) > 0.6, teachers  # measured 0.76-0.84 after two epochs on 1/3 of the data
    assert noise_acc < 0.35, noise_acc
    assert dream_acc > 0.45, dream_acc
    assert dream_acc - noise_acc >= 0.20, (dream_acc, noise_acc)


def test_dreams_beat_noise_on_digits():
    # On 8x8 digits Gaussian noise is near the data and soft labels on it already teach a lot:
    # with 128 samples a noise student reached 0.86 (dreams 0.94). With 32 samples, measured over
    # seeds 0-6: dream 0.66-0.84, noise 0.44-0.63, margin 0.13-0.39 (seed 0: 0.84 vs 0.56).
    dream_acc, noise_acc, teachers = _students_accuracy(
        "digits", clients=3, warmup_epochs=5, batch_size=32, global_steps=30, student_steps=200
    )
    assert min(teachers) > 0.85, teachers
    assert dream_acc > 0.7, dream_acc
    assert dream_acc - noise_acc >= 0.10, (dream_acc, noise_acc)
