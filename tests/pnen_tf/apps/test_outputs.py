"""Output locations checked before a run: never an input, writable, unique names."""

import os

import pytest

from pnen_tf.apps._outputs import (OutputError, name_preferences, output_folder,
                                   refuse_overwriting_inputs, unique_names)


def test_unique_names_reserve_suffixes_and_ignore_case():
    files = ["a/x.jpg", "a/X.png", "b/x.png", "b/x_compare.png", "c/README"]
    names = unique_names([name_preferences(f) for f in files], suffixes=("", "_compare"))
    assert names == ["x", "X_png", "x_png_2", "x_compare_png", "README"]
    taken = [(n + s).lower() for n in names for s in ("", "_compare")]
    assert len(set(taken)) == len(taken)


def test_an_input_is_recognised_by_any_name(tmp_path):
    (tmp_path / "x.png").write_bytes(b"input")
    os.link(tmp_path / "x.png", tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(tmp_path / "x.png")
    for output in ("x.png", "hard.png", "soft.png", "sub/../x.png"):
        with pytest.raises(OutputError, match="would overwrite the input"):
            refuse_overwriting_inputs([str(tmp_path / output)], [str(tmp_path / "x.png")])
    refuse_overwriting_inputs([str(tmp_path / "y.png")], [str(tmp_path / "x.png")])


def test_an_output_folder_created_for_nothing_is_removed(tmp_path):
    with output_folder(str(tmp_path / "new" / "out")):
        assert os.listdir(tmp_path / "new" / "out") == []  # the write probe left nothing
    assert not (tmp_path / "new" / "out").exists()
    with output_folder(str(tmp_path / "kept")):
        (tmp_path / "kept" / "result.png").write_bytes(b"")
    assert os.listdir(tmp_path / "kept") == ["result.png"]
