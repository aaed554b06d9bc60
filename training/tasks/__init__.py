"""The restoration tasks, one module each, registered in `TASKS` (see `base.Task`).

`training.config` (flags, run names), `training.fit` (model facts, protocol), `training.data`
(training stream, validation) and `training.evaluate` (flags, protocol, baselines) read this
table and never name a task. A new task is a new module here and one line below.
"""

from training.tasks import denoise, jpeg, smooth, sr
from training.tasks.base import Task

# In this order their flags appear in --help.
TASKS = {module.TASK.name: module.TASK for module in (sr, denoise, smooth, jpeg)}
BASELINES = {task.baseline: name for name, task in TASKS.items()}


def configure(settings):
    """The task of `settings` (a run's config dict, or a mapping with 'task'), configured."""
    return TASKS[settings["task"]](settings)


__all__ = ["TASKS", "BASELINES", "Task", "configure"]
