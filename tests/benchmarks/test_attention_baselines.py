"""The attention baselines compute the same block: the map_fn baseline takes the attention's
place through `intercept_attention`, and only inside its own measurement."""

import numpy as np
import pytest

from benchmarks import attention_baselines


@pytest.mark.parametrize("train", [False, True])
def test_every_method_gives_the_same_block(train, monkeypatch):
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "true")  # what the child sets, undone here
    calls = []

    def counted_map_fn(*args, **options):
        calls.append(args[1].shape)
        return map_fn(*args, **options)

    map_fn = attention_baselines._map_fn_attention
    monkeypatch.setattr(attention_baselines, "_map_fn_attention", counted_map_fn)
    payload = {"size": [12, 10], "batch": 2, "train": train, "scales": [2, 4]}
    sums = {"map_fn": attention_baselines.child(dict(payload, method="map_fn"))["checksum"]}
    # The call that builds the block and the measured call's trace (in training, also the
    # branches' recomputation for the gradient).
    assert {tuple(shape[1:3]) for shape in calls} == {(8, 8), (12, 10)}
    seen = len(calls)
    for method in ("direct", "tiled"):
        sums[method] = attention_baselines.child(dict(payload, method=method))["checksum"]
    assert len(calls) == seen  # the baseline left with its measurement
    assert sums["map_fn"] == pytest.approx(sums["direct"], rel=1e-5)
    assert sums["tiled"] == pytest.approx(sums["direct"], rel=1e-5)
    assert np.isfinite(sums["direct"]) and sums["direct"] > 0
