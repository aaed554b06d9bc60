"""The task table: every task complete, one baseline each, and no task named elsewhere."""

import os
import re

import pytest

from training.config import parser, resolve
from training.evaluate import SETTINGS
from training.tasks import BASELINES, TASKS, Task, configure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_every_task_has_a_baseline_a_setting_and_a_run_name():
    assert list(TASKS) == ["sr", "denoise", "smooth", "jpeg"]
    assert sorted(BASELINES.values()) == sorted(TASKS)  # one baseline per task
    assert len(set(SETTINGS)) == len(TASKS)
    names = set()
    for name, task in TASKS.items():
        assert issubclass(task, Task) and task.name == name and task.default_model in task.models
        assert task.setting in task.neutral  # a config key of its own
        names.add(resolve(parser().parse_args(["--task", name]))["out"])
    assert len(names) == len(TASKS)


@pytest.mark.parametrize("name", list(TASKS))
def test_a_config_holds_every_task_key_others_neutral(name):
    config = resolve(parser().parse_args(["--task", name]))
    for other, task in TASKS.items():
        if other != name:
            assert {k: config[k] for k in task.neutral} == task.neutral
    assert configure(config).shave == (config["scale"] if name == "sr" else 0)


def test_no_module_outside_the_tasks_branches_on_a_task():
    pattern = re.compile(r"task\s*(==|!=)|task\s+in\s*\(")
    found = []
    for folder in ("training", "pnen_tf/apps"):
        top = os.path.join(ROOT, folder)
        for path in (os.path.join(d, f) for d, _, files in os.walk(top)
                     for f in files if f.endswith(".py")):
            if os.sep + "tasks" + os.sep in path:
                continue
            found += [f"{path}:{n}" for n, line in enumerate(open(path), 1) if pattern.search(line)]
    assert not found
