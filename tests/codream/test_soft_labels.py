"""Soft-label contributions and their aggregation, against hand-computed values."""

import math

import pytest
import torch

from codream.soft_labels import (
    aggregated_logits,
    kept_per_batch,
    most_confident,
    soft_label_size,
    soft_label_values,
)


def test_samples_mode_is_the_weighted_mean_of_logits():
    a = torch.tensor([[1.0, 2.0]])
    b = torch.tensor([[3.0, 6.0]])
    counts = torch.tensor([5, 5])
    total = soft_label_values(a, 1.0, counts, "samples") + soft_label_values(b, 3.0, counts, "samples")
    out = aggregated_logits(total, 4.0, 1, 2, "samples")
    assert torch.allclose(out, torch.tensor([[2.5, 5.0]]))  # (1·1 + 3·3)/4, (1·2 + 3·6)/4


def test_class_counts_mode_lets_only_holders_of_a_class_vote_on_it():
    # Client A holds only class 0, client B only class 1; B is sure the dream is a 1, A knows
    # nothing about class 1 and (wrongly) says 0. Class-count weighting lets B decide class 1.
    logits_a = torch.tensor([[4.0, 0.0]])
    logits_b = torch.tensor([[0.0, 4.0]])
    total = soft_label_values(logits_a, 1.0, torch.tensor([10, 0]), "class_counts") + soft_label_values(
        logits_b, 1.0, torch.tensor([0, 30]), "class_counts"
    )
    assert total.shape == (soft_label_size(1, 2, "class_counts"),)
    out = aggregated_logits(total, 2.0, 1, 2, "class_counts")
    log_p_high = -math.log1p(math.exp(-4.0))  # log softmax of the confident class
    assert out[0, 0].item() == pytest.approx(log_p_high, rel=1e-5)  # only A votes on class 0
    assert out[0, 1].item() == pytest.approx(log_p_high, rel=1e-5)  # only B votes on class 1
    # Under plain sample weighting A's confident 0 would have been averaged in for class 1.
    samples = soft_label_values(logits_a, 1.0, torch.tensor([10, 0]), "samples") + soft_label_values(
        logits_b, 1.0, torch.tensor([0, 30]), "samples"
    )
    assert aggregated_logits(samples, 2.0, 1, 2, "samples")[0].tolist() == [2.0, 2.0]


def test_class_counts_gives_a_class_nobody_holds_the_lowest_score():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    total = soft_label_values(logits, 1.0, torch.tensor([2, 2, 0]), "class_counts")
    out = aggregated_logits(total, 1.0, 1, 3, "class_counts")
    assert out[0, 2] == out[0, :2].min()


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="distill.soft_labels"):
        soft_label_values(torch.zeros(1, 2), 1.0, torch.tensor([1, 1]), "median")


def test_class_probs_mode_is_the_count_weighted_mean_probability_so_no_client_vetoes():
    # A and B hold both classes equally. A is sure of class 0; B is sure of class 1 and gives
    # class 0 a probability of e^-20. Averaged log-probabilities (class_counts) let B's near-zero
    # veto class 0; averaged probabilities (class_probs) keep both classes near one half.
    logits_a = torch.tensor([[10.0, 0.0]])
    logits_b = torch.tensor([[0.0, 20.0]])
    counts = torch.tensor([10, 10])
    total = sum(soft_label_values(z, 1.0, counts, "class_probs") for z in (logits_a, logits_b))
    assert total.shape == (soft_label_size(1, 2, "class_probs"),)
    out = aggregated_logits(total, 2.0, 1, 2, "class_probs")
    p_a, p_b = torch.softmax(logits_a, 1)[0], torch.softmax(logits_b, 1)[0]
    expected = ((p_a + p_b) / 2).log()
    assert torch.allclose(out[0], expected, atol=1e-6)
    geometric = aggregated_logits(
        sum(soft_label_values(z, 1.0, counts, "class_counts") for z in (logits_a, logits_b)),
        2.0, 1, 2, "class_counts")
    assert geometric[0].argmax().item() == 1 and out[0, 0] > -0.7  # log ½ ≈ −0.69


def test_kept_per_batch_rounds_up_and_keeps_at_least_one():
    assert kept_per_batch(256, 1.0) == 256
    assert kept_per_batch(256, 0.5) == 128
    assert kept_per_batch(10, 0.25) == 3  # 2.5 rounded up
    assert kept_per_batch(10, 0.3) == 3  # 3.0000000000000004 is still 3
    assert kept_per_batch(4, 0.01) == 1


def test_most_confident_keeps_the_dreams_whose_label_is_surest_in_index_order():
    # max softmax by hand: row 0: 1/2 (a tie), row 1: e^4/(e^4+1) = 0.982, row 2: e/(e+1) = 0.731,
    # row 3: 1/2 again. Keeping two: rows 1 and 2; keeping three: the tie goes to row 0.
    logits = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    assert most_confident(logits, 2).tolist() == [1, 2]
    assert most_confident(logits, 3).tolist() == [0, 1, 2]
    assert most_confident(logits, 4).tolist() == [0, 1, 2, 3]
