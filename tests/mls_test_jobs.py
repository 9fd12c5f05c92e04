"""Run functions used by the lifecycle tests (MARKER_LS_RUN_FUNCTION=mls_test_jobs.scripted_run).

A test picks the script with ``scenario(name)``, the project's description (one worker or server serves every
scenario; a project made without one runs the plain script): an explicit parameter, read whole.
"""

import time

from rq.timeouts import JobTimeoutException

SCENARIO = "mls-test-scenario: "
SCENARIOS = ("plain", "fail", "timeout", "slow")


def scenario(name: str) -> str:
    """The project description that makes ``scripted_run`` play ``name``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {SCENARIOS}")
    return SCENARIO + name


def scenario_of(project) -> str:
    description = project.description or ""
    return description[len(SCENARIO):] if description.startswith(SCENARIO) else "plain"


def scripted_run(context):
    played = scenario_of(context.run.project)
    if played == "timeout":  # what RQ raises in a job that runs past its timeout: a failure a retry may pass
        context.report(step=1, total_steps=3, epoch=0.3)
        raise JobTimeoutException("scripted timeout: Task exceeded maximum timeout value")
    if played == "fail":
        context.report(step=1, total_steps=3, epoch=0.3, metrics={"loss": 2.5})
        raise RuntimeError("scripted failure: the GPU caught fire")
    if played == "slow":
        total = 3000
        for step in range(1, total + 1):
            time.sleep(0.05)
            context.report(step=step, total_steps=total, epoch=step / total)
            if context.should_stop():
                return
        return
    total = 3
    context.log("starting scripted run")
    for step in range(1, total + 1):
        time.sleep(0.2)
        context.report(step=step, total_steps=total, epoch=step / total, metrics={"loss": 1.0 / step})
        context.log(f"step {step} done")
    context.report(dataset={"train_lines": 10, "val_lines": 2})


# Run functions of test_runs.py, set as RUN_FUNCTION by name (a helper module: the tests' directory is importable).


def timed_out_run(context):
    raise JobTimeoutException("Task exceeded maximum timeout value (5 seconds)")


def broken_run(context):
    context.log("training started")
    raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
