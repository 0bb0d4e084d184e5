"""How a candidate's answers are compared with the stable version's, row by row."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.lifecycle.agreement import compare


def test_classifiers_agree_on_the_top_class_not_on_the_exact_probabilities() -> None:
    stable = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1]], np.float32)
    candidate = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]], np.float32)
    result = compare({"probabilities": stable}, {"probabilities": candidate})
    assert (result.rows, result.agreed) == (3, 2)  # the second row's top class moved
    assert result.max_abs_diff == pytest.approx(0.3)


def test_embeddings_agree_by_cosine_and_rows_of_zeros_in_both_count_as_equal() -> None:
    rng = np.random.default_rng(0)
    stable = rng.normal(size=(4, 384)).astype(np.float32)
    candidate = stable + rng.normal(scale=1e-3, size=stable.shape).astype(np.float32)
    candidate[1] = -stable[1]  # opposite direction: cosine -1
    stable[3] = candidate[3] = 0.0
    result = compare({"embedding": stable}, {"embedding": candidate})
    assert (result.rows, result.agreed) == (4, 3)
    assert result.cosine_sum == pytest.approx(2.0, abs=1e-3)  # 1 + (-1) + 1 + 1


def test_outputs_that_cannot_be_compared_give_no_rows() -> None:
    labels = {"label": np.array([[1], [2]], np.int64)}
    assert compare(labels, labels).rows == 0  # not float
    assert compare({"x": np.zeros((2, 3), np.float32)}, {"x": np.zeros((2, 4), np.float32)}).rows == 0
