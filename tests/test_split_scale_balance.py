"""The purged chronological split, the leakage-free scaler and the balancers (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer_core.errors import DataError
from trainer_core.scaling import Scaler, fit_scaler
from trainer_core.split import minimum_rows, purged_split
from trainer_plugins.balancers.class_weights import ClassWeights
from trainer_plugins.balancers.none import NoBalancing
from trainer_plugins.balancers.undersample import Undersample


@pytest.mark.parametrize(
    "n, window, fw, embargo, validation, test",
    [
        (1000, 10, 5, 5, 0.2, 0.0),
        (5000, 120, 120, 120, 0.2, 0.0),
        (3000, 30, 20, 60, 0.25, 0.1),
        (777, 7, 13, 0, 0.3, 0.0),
    ],
)
def test_split_is_purged_and_chronological(n, window, fw, embargo, validation, test):
    labels = np.random.default_rng(0).integers(0, 3, n).astype(np.int8)
    labels[-fw:] = -1  # the last rows have no label
    s = purged_split(labels, window, fw, embargo, validation, test)
    E = max(fw, embargo)
    assert s.embargo == E
    assert s.val_start == int(np.floor(n * (1 - validation - test)))
    assert s.train_idx.min() >= window - 1
    # the last training label's horizon (t+1 .. t+fw) ends before the first validation target
    assert s.train_idx.max() + fw < s.val_idx.min()
    assert s.train_idx.max() < s.train_end == s.val_start - E
    assert s.val_idx.min() >= s.val_start
    assert not set(s.train_idx) & set(s.val_idx)
    assert (labels[s.train_idx] >= 0).all() and (labels[s.val_idx] >= 0).all()
    if test:
        assert s.val_idx.max() + fw < s.test_idx.min()
        assert s.test_idx.min() >= s.test_start
    else:
        assert len(s.test_idx) == 0
        # every labelled row from the validation start on is a validation target
        assert len(s.val_idx) == int(np.sum(labels[s.val_start :] >= 0))


def test_too_few_rows_names_the_numbers():
    need = minimum_rows(120, 120, 0.2, 0.0)
    labels = np.zeros(need - 1, dtype=np.int8)
    with pytest.raises(DataError) as err:
        purged_split(labels, 120, 120, 120, 0.2, where="ETHUSDT")
    msg = err.value.message
    assert (
        f"{need - 1:,} rows are too few" in msg
        and "sequence_length 120" in msg
        and f"at least {need:,}" in msg
    )
    purged_split(np.zeros(need, dtype=np.int8), 120, 120, 120, 0.2)  # one more row is enough


def test_scaler_fits_training_rows_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 8)).astype(np.float32)
    a = fit_scaler("robust", x, 700, [f"f{i}" for i in range(8)])
    y = x.copy()
    y[700:] *= 1000  # changing rows after the fit range changes nothing
    b = fit_scaler("robust", y, 700, a.feature_names)
    assert np.array_equal(a.center, b.center) and np.array_equal(a.scale, b.scale)
    np.testing.assert_allclose(a.center, np.median(x[:700], axis=0))
    q75, q25 = np.percentile(x[:700].astype(np.float64), [75, 25], axis=0)
    np.testing.assert_allclose(a.scale, q75 - q25)


@pytest.mark.parametrize("kind", ["robust", "standard", "minmax", "none"])
def test_scaler_json_round_trip(kind):
    x = np.random.default_rng(1).normal(5, 3, size=(300, 8)).astype(np.float32)
    x[:, 3] = 2.0  # a constant column is not divided by zero
    sc = fit_scaler(kind, x, 200, [f"f{i}" for i in range(8)])
    doc = json.loads(json.dumps(sc.to_json()))
    again = Scaler.from_json(doc)
    np.testing.assert_array_equal(sc.transform(x), again.transform(x))
    assert np.isfinite(sc.transform(x)).all()
    assert doc["fit_rows"] == {"start": 0, "stop": 200}
    if kind == "standard":
        np.testing.assert_allclose(sc.transform(x)[:200, 0].mean(), 0, atol=1e-5)
    if kind == "minmax":
        assert sc.transform(x)[:200, 0].min() == pytest.approx(0, abs=1e-6)
        assert sc.transform(x)[:200, 0].max() == pytest.approx(1, abs=1e-6)


def _labels(counts, seed=0):
    y = np.concatenate([np.full(c, k, dtype=np.int8) for k, c in enumerate(counts)])
    np.random.default_rng(seed).shuffle(y)
    return y


def test_undersample_keeps_minority_count_evenly_spaced():
    labels = _labels([300, 3000, 600])
    targets = np.arange(len(labels))
    bal = Undersample().balance(labels, targets, np.random.default_rng(42), {"min_per_class": 0})
    kept = labels[bal.indices]
    assert [int((kept == k).sum()) for k in range(3)] == [300, 300, 300]
    assert bal.class_weight is None
    assert np.all(np.diff(bal.indices) > 0)
    # kept HOLD rows are spread over the whole span: each tenth of the HOLD rows gives about a tenth
    hold_rows = targets[labels == 1]
    kept_hold = bal.indices[labels[bal.indices] == 1]
    positions = np.searchsorted(hold_rows, kept_hold)
    per_decile = np.bincount(positions * 10 // len(hold_rows), minlength=10)
    assert per_decile.min() >= 29 and per_decile.max() <= 31


def test_undersample_floor_and_determinism():
    labels = _labels([100, 2000, 400])
    targets = np.arange(len(labels))
    bal = Undersample().balance(labels, targets, np.random.default_rng(7), {"min_per_class": 250})
    kept = labels[bal.indices]
    assert [int((kept == k).sum()) for k in range(3)] == [100, 250, 250]  # a class below the floor keeps all
    again = Undersample().balance(labels, targets, np.random.default_rng(7), {"min_per_class": 250})
    other = Undersample().balance(labels, targets, np.random.default_rng(8), {"min_per_class": 250})
    assert np.array_equal(bal.indices, again.indices)
    assert not np.array_equal(bal.indices, other.indices)


def test_undersample_selects_only_given_targets():
    labels = _labels([500, 500, 500])
    targets = np.arange(100, 1200)
    bal = Undersample().balance(labels, targets, np.random.default_rng(0), {"min_per_class": 0})
    assert np.isin(bal.indices, targets).all()


def test_class_weights_balanced_and_explicit():
    labels = _labels([100, 700, 200])
    targets = np.arange(len(labels))
    bal = ClassWeights().balance(labels, targets, np.random.default_rng(0), {"class_weights": "balanced"})
    assert len(bal.indices) == len(labels)
    assert bal.class_weight == pytest.approx({0: 1000 / 300, 1: 1000 / 2100, 2: 1000 / 600})
    bal = ClassWeights().balance(labels, targets, None, {"class_weights": {0: 4.0, 1: 1.0, 2: 4.0}})
    assert bal.class_weight == {0: 4.0, 1: 1.0, 2: 4.0}
    bal = NoBalancing().balance(labels, targets, None, {})
    assert np.array_equal(bal.indices, targets) and bal.class_weight is None


def test_windows_never_cross_a_gap():
    n, window = 400, 10
    labels = np.ones(n, dtype=np.int8)
    s = purged_split(labels, window, 5, 5, 0.25, breaks=np.array([100, 350]))
    for t in np.concatenate([s.train_idx, s.val_idx]):
        assert not (t - window + 1 < 100 <= t) and not (t - window + 1 < 350 <= t)
    # the targets right after a gap wait for a full window: 100..108 are out, 109 is in
    assert 108 not in s.train_idx and 109 in s.train_idx and 99 in s.train_idx
    assert 359 in s.val_idx and 358 not in s.val_idx
