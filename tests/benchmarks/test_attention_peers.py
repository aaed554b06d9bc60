"""The attention comparison measures what it says: the PNB's branch shapes, an exact float64
reference, alternating runs, and each implementation's results at a tiny size against that
reference (PyTorch's only where it is installed)."""

import argparse
import json
import os

import numpy as np
import pytest

from benchmarks import attention_peers as peers


def _payload(impl, kind, size=(12, 10), stride=2, dtype="float32", limit=8.0):
    return {"impl": impl, "round": 0, "size": list(size), "stride": stride, "pass": kind,
            "dtype": dtype, "repeats": 1, "matrix_limit_gb": limit}


def _check_against_exact(result, size, stride, atol=1e-5):
    arrays = peers.make_inputs(*size, stride)
    reference = peers.exact(*arrays, peers.sample_rows(size[0] * size[1]))
    for name, expected in reference.items():
        if name in result["samples"]:
            np.testing.assert_allclose(result["samples"][name], expected, atol=atol)
    assert len(result["seconds"]) == 1 and result["peak_gb"] > 0
    assert result["peak_anon_gb"] >= result["base_anon_gb"] > 0


def test_branch_shapes_are_those_of_the_issue():
    assert peers.branch_shape(500, 400, 2) == (200_000, 50_000)
    assert peers.branch_shape(500, 400, 4) == (200_000, 12_500)
    assert peers.branch_shape(500, 400, 8) == (200_000, 63 * 50)  # "same" rounds up
    assert peers.attention_macs(200_000, 50_000, train=False) == 200_000 * 50_000 * 96


def test_the_exact_query_gradient_is_the_derivative_of_the_loss():
    q, k, v, g = (x.astype(np.float64) for x in peers.make_inputs(3, 2, 2, seed=1))
    rows = np.arange(6)

    def loss(query):
        return float(np.sum(peers.exact(query, k, v, g, rows)["out"] * g.reshape(6, -1)))

    step = 1e-6
    for index in [(0, 0, 0, 0), (0, 2, 1, 31)]:
        up, down = q.copy(), q.copy()
        up[index] += step
        down[index] -= step
        row = index[1] * 2 + index[2]
        numeric = (loss(up) - loss(down)) / (2 * step)
        analytic = peers.exact(q, k, v, g, rows)["d_query"][row, index[3]]
        assert analytic == pytest.approx(numeric, rel=1e-6)


def test_rounds_alternate_the_implementations_and_start_with_the_peaks():
    args = argparse.Namespace(rounds=2, impls=["tf", "jax", "torch"], strides=[2, 8],
                              passes=["forward"], dtypes=["float32"], repeats=1,
                              matrix_limit_gb=8.0, peak_size=512)
    runs = peers.plan(args, 40, 32)
    assert [r["impl"] for r in runs] == ["peaks", "tf", "jax", "torch", "tf", "jax", "torch",
                                         "peaks", "jax", "torch", "tf", "jax", "torch", "tf"]
    assert {r["stride"] for r in runs[1:4]} == {2}


@pytest.mark.parametrize("kind", ["forward", "train"])
def test_ours_under_tensorflow_matches_the_exact_formula(kind, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    result = peers.child(_payload("tf", kind))
    gradients = {"d_query", "d_key", "d_value"} if kind == "train" else set()
    assert set(result["samples"]) == {"out"} | gradients
    _check_against_exact(result, (12, 10), 2)


@pytest.mark.parametrize("kind", ["forward", "train"])
def test_pytorch_fused_attention_matches_the_exact_formula(kind):
    pytest.importorskip("torch", reason="PyTorch is in the bench extra only: pip install .[bench]")
    result = peers.child(_payload("torch", kind, size=(9, 7), stride=4))
    assert "zero-padded" in result["note"]
    _check_against_exact(result, (9, 7), 4)


def test_jax_attention_is_checked_and_skipped_where_it_would_hold_the_matrix(monkeypatch):
    pytest.importorskip("jax", reason="jax is in the test extra: pip install .[test]")
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    _check_against_exact(peers.child(_payload("jax_sdpa", "train")), (12, 10), 2)
    skipped = peers.child(_payload("jax_sdpa", "forward", limit=0.0))
    assert skipped["note"].startswith("skipped") and "seconds" not in skipped


def test_the_report_compares_every_run_with_ours_in_fp32(tmp_path, monkeypatch, capsys):
    size = (6, 4)
    exact = peers.exact(*peers.make_inputs(*size, 2), peers.sample_rows(24))
    out = np.asarray(exact["out"], np.float32)

    def fake_run(run, timeout):
        if run["impl"] == "peaks":
            return {"machine": "test machine", "peaks": {"float32": 100.0}}
        shift = {"tf": 0.0, "torch": 1e-3}[run["impl"]]
        return {"version": run["impl"], "first_seconds": 2.0, "seconds": [1.0 + run["round"]],
                "peak_gb": 1.5, "base_gb": 1.0, "peak_anon_gb": 0.75 + run["round"] / 4,
                "base_anon_gb": 0.5, "samples": {"out": (out + shift).tolist()}}

    monkeypatch.setattr(peers, "_run", fake_run)
    monkeypatch.setattr(peers, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(peers, "torch_installed", lambda: True)  # `_run` is faked: no torch runs
    assert peers.main(["--size", "6x4", "--strides", "2", "--impls", "torch", "tf",
                       "--passes", "forward", "--rounds", "2", "--results", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "bfloat16 dropped" in printed
    (path,) = tmp_path.iterdir()
    result = json.loads(path.read_text())
    rows = {row["impl"]: row for row in result["summary"]}
    assert rows["torch"]["vs_ours_fp32"] == pytest.approx(1e-3, rel=1e-3)
    assert rows["tf"]["vs_ours_fp32"] == 0 and rows["tf"]["vs_exact"] < 1e-6
    assert rows["torch"]["seconds"] == [1.0, 2.0] and rows["torch"]["added_gb"] == 0.5
    assert rows["tf"]["peak_anon_gb"] == 1.0 and rows["tf"]["added_anon_gb"] == 0.5  # the worst round
    assert rows["tf"]["gflops"] == pytest.approx(2 * 24 * 6 * 96 / 1.5 / 1e9)
    assert len(result["runs"]) == 4 and result["peaks"] == [{"float32": 100.0}] * 2
