"""The docstring examples of the layers and models run and show what they print."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import pnen_tf.layers
import pnen_tf.models

MODULES = sorted(
    name
    for package in (pnen_tf.layers, pnen_tf.models)
    for name in [package.__name__] + [module.name for module in
                                      pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_give_what_they_show(name, capsys):
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(importlib.import_module(name)):
        runner.run(test)
    failed = runner.summarize(verbose=False).failed
    assert failed == 0, f"{failed} example(s) of {name} failed:\n{capsys.readouterr().out}"


def test_every_layer_has_an_example():
    layers = [getattr(pnen_tf.layers, name) for name in pnen_tf.layers.__all__]
    missing = [layer.__name__ for layer in layers
               if inspect.isclass(layer) and ">>>" not in (layer.__doc__ or "")]
    assert not missing
