"""`pnen-tf`: one console script, one subcommand per task (`pnen-tf restore ...`).

Convention: a subcommand is one line in `COMMANDS`, mapping its name to the module that
implements it and a one-line help. That module exposes

    add_arguments(parser)   # fill an argparse.ArgumentParser
    run(args) -> int        # do the work; the exit status

(or, for a module with its own parser, `main(argv) -> int`) and is imported only when its
subcommand runs, so `pnen-tf restore` does not pay for the
training code. A module can offer `python -m module` with
`def main(argv=None): return cli.main(["name", *(sys.argv[1:] if argv is None else argv)])`.
"""

import argparse
import importlib
import sys

COMMANDS = {
    "fit": ("training.fit", "train PNEN / MemNet / RDN for smoothing, denoising or SR"),
    "restore": ("pnen_tf.apps.restore", "restore images (file, folder or glob) with a trained model"),
    "evaluate": ("training.evaluate", "PSNR/SSIM of a model or baseline on benchmark folders"),
    "export-savedmodel": ("export.saved_model", "export a .keras model as a TF Serving SavedModel (DIR/NAME/VERSION)"),
    "export-onnx": ("export.onnx", "convert a .keras model to ONNX and check it with onnxruntime"),
    "serve-client": ("export.client", "restore an image with a model served by TF Serving (REST or gRPC)"),
    "presets": ("training.presets", "list the trained models shipped by name (--model NAME)"),
}


def _usage():
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: pnen-tf COMMAND [ARGS ...]\n\ncommands:\n" + "\n".join(lines) + \
        "\n\n'pnen-tf COMMAND --help' describes a command."


def main(argv=None):
    """Dispatch `argv` (default: `sys.argv[1:]`) to a subcommand; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"pnen-tf: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    if not hasattr(module, "add_arguments"):
        try:
            return module.main(rest)
        except SystemExit as exit_:  # its argparse exits on --help and on usage errors
            return exit_.code
    parser = argparse.ArgumentParser(prog=f"pnen-tf {name}", description=help_)
    module.add_arguments(parser)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return exit_.code
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
