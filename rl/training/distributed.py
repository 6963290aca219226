"""One training run spread over several processes (`accelerate launch ... manage.py train_dpo`).

Every process trains; only the main one reads the feedback database, writes the run folder and the TrainingRun row,
and exports. These helpers run a piece of work on the main process and hand its result -- or its error -- to all
of them, so no process waits forever on one that failed. With one process they just call the function.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


def training_state() -> Any:
    """accelerate's process state, set up as the Trainer sets it up (`use_cpu` when there is no GPU), so that several
    CPU processes talk over gloo."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def on_main_process(work: Callable[[], T], *, share: bool = False) -> T | None:
    """`work()` on the main process. With `share`, every process gets its result; otherwise the others get None.
    An exception on the main process is raised on every process."""
    state = training_state()
    if state.num_processes == 1:
        return work()
    from accelerate.utils import broadcast_object_list

    outcome: list[Any] = [None]
    result = None
    if state.is_main_process:
        try:
            result = work()
            outcome = [("ok", result if share else None)]
        except Exception as exc:
            outcome = [("error", exc)]
    broadcast_object_list(outcome, from_process=0)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return result if state.is_main_process else value


def share_adapter_from_main(model: Any) -> None:
    """Give every process the main process's adapter weights (after the main one put back an earlier, better one)."""
    import torch
    from accelerate.utils import broadcast
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if training_state().num_processes == 1:
        return
    weights = {name: tensor.detach().clone().contiguous() for name, tensor in get_peft_model_state_dict(model).items()}
    with torch.no_grad():
        set_peft_model_state_dict(model, broadcast(weights, from_process=0))


def finish_processes() -> bool:
    """End a run of several processes cleanly: wait for all, then take down the process group. Without it gloo's
    threads can still be running when the interpreter exits, and a process dies with SIGABRT ("terminate called
    without an active exception") after its work is done, failing the launch. With one process: nothing. True when
    it ended a group of several processes (each should then leave through `exit_without_teardown`)."""
    state = training_state()
    if state.num_processes == 1:
        return False
    state.wait_for_everyone()
    state.destroy_process_group()
    return True


def exit_without_teardown(code: int = 0) -> NoReturn:
    """Leave a process of a several-process run once its work and output are done, skipping the interpreter's
    teardown: even with the process group down, a finished process has aborted there ("terminate called without an
    active exception", SIGABRT: twice in the test suite, 2026-12-05 and 2026-12-06), failing a launch whose run had
    succeeded. Output is flushed, database connections closed and logging shut down first."""
    import logging
    import os
    import sys

    from django.db import connections

    sys.stdout.flush()
    sys.stderr.flush()
    connections.close_all()
    logging.shutdown()
    os._exit(code)
