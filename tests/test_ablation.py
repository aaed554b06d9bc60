"""The ablation runner's logic with training, evaluation and cost measurement faked: which runs
it starts, skips and continues, and how it tabulates seeds."""

import csv
import json
import os

import pytest

from benchmarks import ablation
from training.config import parser as fit_parser

# Test-set PSNR of seed 0 per variant; seed k adds 0.1 k (a spread of 0.07 dB over two seeds).
PSNR = {"none": 30.0, "pnb-2-4-8": 31.0, "nlb": 30.05, "apnb": 30.3, "pnb-2": 30.5}
BASELINE_PSNR = 28.5  # the unfiltered image's


class FakeTools:
    """`execute` and `measure_cost` as the real commands would leave their files; `crash`
    names run folders whose next training stops, failed, after one more epoch."""

    def __init__(self, monkeypatch, crash=()):
        self.calls, self.costs, self.crash = [], [], set(crash)
        monkeypatch.setattr(ablation, "execute", self.execute)
        monkeypatch.setattr(ablation, "measure_cost", self.measure_cost)

    def measure_cost(self, payload):
        self.costs.append(payload)
        return {"params": 1000 + len(json.dumps(payload)), "gmacs": 1.5, "train_gb": 0.25,
                "step_s": 0.5, "forward_ms": 10.0}

    def execute(self, command, log_path):
        self.calls.append(command)
        return self.fit(command) if command[2] == "training.fit" else self.evaluate(command)

    def fit(self, command):
        args = fit_parser().parse_args(command[3:])  # the real flags, or SystemExit
        os.makedirs(args.out, exist_ok=True)
        config, log = os.path.join(args.out, "config.json"), os.path.join(args.out, "log.csv")
        if os.path.isfile(config) and not args.resume:
            return 2
        rows = ablation.log_rows(args.out)
        stop = len(rows) + 1 if args.out in self.crash else args.epochs
        for epoch in range(len(rows) + 1, stop + 1):
            rows.append({"epoch": epoch, "step": epoch * args.steps_per_epoch, "loss": 0.01,
                         "lr": args.lr, "val_psnr": 25 + epoch / 10, "val_ssim": 0.8 + epoch / 100,
                         "baseline_psnr": 20, "baseline_ssim": 0.7,
                         "seconds": 0.5 * args.steps_per_epoch})
        with open(log, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        with open(config, "w") as f:
            json.dump(vars(args), f)
        with open(os.path.join(args.out, "best.keras"), "w") as f:
            f.write("model")
        self.crash.discard(args.out)
        return 1 if stop < args.epochs else 0

    def evaluate(self, command):
        out = command[command.index("--out") + 1]
        if "--baseline" in command:
            psnr = BASELINE_PSNR
        else:
            model = command[command.index("--model") + 1]
            variant, seed = os.path.basename(os.path.dirname(model)).rsplit("-seed", 1)
            psnr = PSNR[variant] + 0.1 * int(seed)
        os.makedirs(out, exist_ok=True)
        folder = os.path.basename(command[command.index("--data") + 1])
        summary = {folder: {"psnr": psnr, "ssim": 0.9, "images": []}}
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump({"config": {}, "folders": summary}, f)
        return 0

    def trained(self):
        return [c[c.index("--out") + 1] + (" resume" if "--resume" in c else "")
                for c in self.calls if c[2] == "training.fit"]

    def evaluated(self):
        return [os.path.dirname(c[c.index("--model") + 1]) for c in self.calls
                if c[2] == "training.evaluate"]


@pytest.fixture
def folders(tmp_path):
    datasets = tmp_path / "datasets"
    for folder, count in (("train/T91", 3), ("train/BSD200", 40), ("Set5", 2)):
        os.makedirs(datasets / folder)
        for i in range(count):
            (datasets / folder / f"{i:02d}.png").write_bytes(b"")
    return str(datasets), str(tmp_path / "root"), str(tmp_path / "results")


def _run(folders, *flags):
    datasets, root, results = folders
    return ablation.main(["--study", "smoothing", "--datasets", datasets, "--root", root,
                          "--results", results, *flags])


def test_every_run_shares_the_budget_and_the_table_gives_the_spread(folders, monkeypatch, capsys):
    tools = FakeTools(monkeypatch)
    assert _run(folders, "--variants", "none", "nlb", "pnb-2-4-8", "--steps", "250") == 0
    root = folders[1]
    assert tools.trained() == [f"{root}/smoothing/{v}-seed{s}"
                               for v in ("none", "pnb-2-4-8", "nlb") for s in (0, 1)]
    fits = [c for c in tools.calls if c[2] == "training.fit"]
    shared = {tuple(c[: c.index("--nonlocal")]) for c in fits}
    assert len(shared) == 1 and all(c[c.index("--epochs") + 1] == "3" for c in fits)
    assert {c[c.index("--steps-per-epoch") + 1] for c in fits} == {"100"}
    # The joined training set: 43 images, every 20th held out for validation.
    data = os.path.join(root, "data", "smoothing")
    assert len(os.listdir(f"{data}/train")) == 40 and len(os.listdir(f"{data}/val")) == 3
    assert sorted(os.listdir(f"{data}/val")) == ["BSD200-17.png", "BSD200-37.png", "T91-00.png"]
    # The cost of each variant is measured once, at the training patch and batch.
    assert [(p["options"]["nonlocal_block"], p["patch"], p["batch"]) for p in tools.costs] == \
        [(None, 48, 8), ("pnb", 48, 8), ("nlb", 48, 8)]

    result = json.load(open(os.path.join(folders[2], "ablation-smoothing.json")))
    nlb = next(r for r in result["rows"] if r["variant"] == "nlb")
    psnr = nlb["summary"]["test_psnr"]
    assert psnr["n"] == 2 and psnr["mean"] == pytest.approx(30.1)
    assert psnr["sd"] == pytest.approx(0.1 / 2 ** 0.5)
    assert nlb["runs"][0]["val_psnr"] == pytest.approx(25.3)  # the best (last) epoch's
    assert nlb["runs"][0]["s_per_step"] == pytest.approx(0.5) and nlb["runs"][0]["steps"] == 300
    claims = {(c["better"], c["than"]): c for c in result["claims"]}
    assert claims[("pnb-2-4-8", "none")]["delta"] == pytest.approx(1.0)
    assert claims[("pnb-2-4-8", "none")]["note"] == "beyond seed noise"
    # NLB's 30.05-30.15 overlaps none's 30.0-30.1: no claim of a difference.
    assert "nlb | 2/2 |" in capsys.readouterr().out
    table = open(os.path.join(folders[2], "ablation-smoothing.md")).read()
    assert "| nlb | 2/2 |" in table and "30.10 ± 0.07" in table
    assert "+0.05 within seed noise" in table
    assert "| 32.4 / — |" in table and "− none: +1.00 dB Set5 PSNR (beyond seed noise)" in table
    # The unfiltered image, evaluated once by the study's own protocol; its validation PSNR
    # is what the runs' logs record for it.
    baselines = [c for c in tools.calls if "--baseline" in c]
    assert len(baselines) == 1 and baselines[0][3:9] == ["--task", "smooth", "--filter", "l0",
                                                          "--baseline", "identity"]
    assert result["baseline"]["test_psnr"] == BASELINE_PSNR
    assert result["baseline"]["val_psnr"] == 20
    baseline = "| identity (untrained baseline) |" + " — |" * 6
    assert f"{baseline} 20.00 | 0.7000 | 28.50 | 0.9000 | -1.55 | — |" in table


def test_a_second_invocation_skips_finished_runs_and_resumes_the_others(folders, monkeypatch):
    root = folders[1]
    crashed = f"{root}/smoothing/apnb-seed1"
    tools = FakeTools(monkeypatch, crash=[crashed])
    assert _run(folders, "--variants", "none", "apnb", "pnb-2", "--steps", "200") == 0
    result = json.load(open(os.path.join(folders[2], "ablation-smoothing.json")))
    apnb = next(r for r in result["rows"] if r["variant"] == "apnb")
    assert apnb["runs"][1]["status"].startswith("failed") and apnb["summary"]["test_psnr"]["n"] == 1

    tools.calls.clear()
    assert _run(folders, "--variants", "none", "apnb", "pnb-2", "--steps", "200") == 0
    assert tools.trained() == [f"{crashed} resume"]
    assert tools.evaluated() == [crashed]  # the others' reports are newer than their models
    # Measured once per variant, then read back (pnb-2's options hold a tuple of scales).
    assert len(tools.costs) == 3

    tools.calls.clear()
    assert _run(folders, "--variants", "none", "--steps", "300", "--seeds", "0") == 0
    assert tools.trained() == [f"{root}/smoothing/none-seed0 resume"]
    assert ablation.log_rows(f"{root}/smoothing/none-seed0")[-1]["epoch"] == "3"


def test_dry_run_prints_the_commands_and_runs_nothing(folders, monkeypatch, capsys):
    tools = FakeTools(monkeypatch)
    assert _run(folders, "--dry-run", "--steps", "2", "--seeds", "3") == 0
    printed = capsys.readouterr().out
    assert tools.calls == [] and not os.path.exists(folders[1])
    assert printed.count("-m training.fit") == len(ablation.STUDIES["smoothing"].variants)
    assert "--epochs 1 --steps-per-epoch 2 --seed 3" in printed


def test_variants_that_training_fit_cannot_express_are_reported_not_run(folders, monkeypatch):
    tools = FakeTools(monkeypatch)
    monkeypatch.setattr(ablation, "unknown_flags", lambda command: (
        ["--nonlocal-scales"] if "--nonlocal-scales" in command else []))
    assert _run(folders, "--variants", "pnb-2", "--steps", "100") == 0
    assert tools.calls == [] and tools.costs == []
    table = open(os.path.join(folders[2], "ablation-smoothing.md")).read()
    assert "| pnb-2 | 0/1 (blocked) |" in table


def test_every_study_flag_is_one_training_fit_knows():
    # Only the PNB's scale subsets need a flag that training.fit may not have yet.
    for study in ablation.STUDIES.values():
        for variant in study.variants:
            command = ablation.fit_command(study, variant, 0, ("t", "v"), 10, "o")
            unknown = ablation.unknown_flags(command)
            assert unknown in ([], ["--nonlocal-scales", *variant.flags[3:]]), variant


def test_spread_and_noise_notes():
    one, two, three = (ablation.summarise(v) for v in ([1.0], [1.0, 1.2], [1.25, 1.5, None]))
    assert one["sd"] is None and two["sd"] == pytest.approx(0.1414, abs=1e-4)
    assert three["n"] == 2 and ablation.summarise([None]) is None
    assert ablation.difference(three, two) == {"delta": pytest.approx(0.275), "note": "beyond seed noise"}
    assert ablation.difference(two, ablation.summarise([1.1, 1.3]))["note"] == "within seed noise"
    assert ablation.difference(one, two)["note"] == "one seed: noise unknown"


def test_missing_datasets_are_one_line(tmp_path, capsys):
    assert ablation.main(["--study", "denoising", "--datasets", str(tmp_path),
                          "--root", str(tmp_path / "root")]) == 2
    assert "Train400" in capsys.readouterr().err
