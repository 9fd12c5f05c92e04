"""Run functions used by the lifecycle tests (MARKER_LS_RUN_FUNCTION=mls_test_jobs.scripted_run).

The project's title picks the script, so one worker serves every scenario.
"""

import time

from rq.timeouts import JobTimeoutException


def scripted_run(context):
    title = context.run.project.title
    if "timeout" in title:  # what RQ raises in a job that runs past its timeout: a failure a retry may pass
        context.report(step=1, total_steps=3, epoch=0.3)
        raise JobTimeoutException("scripted timeout: Task exceeded maximum timeout value")
    if "fail" in title:
        context.report(step=1, total_steps=3, epoch=0.3, metrics={"loss": 2.5})
        raise RuntimeError("scripted failure: the GPU caught fire")
    if "slow" in title:
        total = 3000
        for step in range(1, total + 1):
            time.sleep(0.05)
            context.report(step=step, total_steps=total, epoch=step / total)
        return
    total = 3
    context.log("starting scripted run")
    for step in range(1, total + 1):
        time.sleep(0.2)
        context.report(step=step, total_steps=total, epoch=step / total, metrics={"loss": 1.0 / step})
        context.log(f"step {step} done")
    context.report(dataset={"train_lines": 10, "val_lines": 2})
