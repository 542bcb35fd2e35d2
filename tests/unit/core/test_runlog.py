"""The run log: every line to the file, a line per task and cnnops's own lines to the terminal,
and the process's file descriptors as they were afterwards."""

import subprocess
import sys
import textwrap

from cnnops.core.runlog import FAILURE, SUCCESS, RunLog, format_seconds

STARTED = "05:02:03.745 - INFO - Executing task \x1b[96m'ingest'\x1b[0m"
ENDED = "05:02:05.601 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m"
FAILED = "05:02:17.551 - ERROR - Task \x1b[96m'split'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m"


def test_the_terminal_gets_task_lines_and_cnnops_lines_only(tmp_path):
    log = RunLog(tmp_path / "run.log")
    assert log.sort_line(STARTED)[1] == ["cnnops: ingest: started"]
    assert log.sort_line("    [KFP Executor 2026-12-02 05:02:03,944 INFO]: Got executor_input:") == (
        ["    [KFP Executor 2026-12-02 05:02:03,944 INFO]: Got executor_input:"],
        [],
    )
    assert log.sort_line('        "inputs": {')[1] == []
    assert log.sort_line("    I0000 cudart_stub.cc:31] Could not find cuda drivers")[1] == []
    # The log keeps a task's own line as the terminal shows it, without kfp's indent.
    assert log.sort_line("    cnnops: ingest: 30/30 (120.0/s)") == (
        ["cnnops: ingest: 30/30 (120.0/s)"],
        ["cnnops: ingest: 30/30 (120.0/s)"],
    )
    logged, shown = log.sort_line(ENDED)
    assert shown == [logged[1]] and shown[0].startswith("cnnops: ingest: finished in ")
    assert logged[0] == "05:02:05.601 - INFO - Task 'ingest' finished with status SUCCESS"  # no colours in the log
    assert [(task.name, task.status) for task in log.tasks] == [("ingest", SUCCESS)]
    assert log.failed_task() is None


def test_a_failed_task_keeps_its_last_line_and_its_error_is_left_to_the_runner(tmp_path):
    log = RunLog(tmp_path / "run.log")
    log.sort_line(STARTED.replace("ingest", "split"))
    assert log.sort_line("    cnnops: error: split needs two classes")[1] == []  # the runner says it once
    log.sort_line("    Traceback (most recent call last):")
    log.sort_line("    ZeroDivisionError: division by zero")
    log.sort_line("")
    assert log.sort_line(FAILED)[1][0].startswith("cnnops: split: failed after ")
    failed = log.failed_task()
    assert failed is not None and (failed.name, failed.status) == ("split", FAILURE)
    assert failed.last_line == "ZeroDivisionError: division by zero"


def test_a_task_kfp_stopped_at_is_the_failed_one(tmp_path):
    log = RunLog(tmp_path / "run.log")
    log.sort_line(STARTED)
    log.sort_line(ENDED)
    log.sort_line(STARTED.replace("ingest", "train"))
    log.sort_line("    RuntimeError: out of memory")
    log.sort_line("05:02:05.601 - INFO - Cleaned up workspace: /tmp/w")  # kfp's own line, not the task's
    assert log.failed_task() is None  # unless kfp stopped the run, a task still running has not failed
    failed = log.failed_task(stopped=True)
    assert failed is not None and (failed.name, failed.last_line) == ("train", "RuntimeError: out of memory")


def test_iterations_that_share_a_name_end_in_the_order_they_started(tmp_path):
    log = RunLog(tmp_path / "run.log")
    for line in (STARTED, STARTED, ENDED, ENDED):
        log.sort_line(line.replace("ingest", "train"))
    assert [task.status for task in log.tasks] == [SUCCESS, SUCCESS]
    assert log.failed_task(stopped=True) is None


def test_verbose_shows_every_line(tmp_path):
    log = RunLog(tmp_path / "run.log", verbose=True)
    assert log.sort_line(STARTED)[1] == ["05:02:03.745 - INFO - Executing task 'ingest'", "cnnops: ingest: started"]
    assert log.sort_line('        "inputs": {')[1] == ['        "inputs": {']


def test_format_seconds():
    assert [format_seconds(s) for s in (0.4, 42, 59.6, 185)] == ["0s", "42s", "1m 00s", "3m 05s"]


CAPTURE = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    from cnnops.core.runlog import RunLog, captured

    log = RunLog(Path(sys.argv[1]), verbose=sys.argv[2] == "verbose")
    print("before", flush=True)
    with captured(log):
        print("05:02:03.745 - INFO - Executing task 'ingest'")  # kfp's logging, through sys.stdout
        print("    cnnops: ingest: 3/3")
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit\\n")  # a C library's write
        task = "import sys; print('    a task line'); sys.stderr.write('    cnnops: from a task\\\\n')"
        subprocess.run([sys.executable, "-c", task])
        print("05:02:05.601 - INFO - Task 'ingest' finished with status SUCCESS")
    print("after", flush=True)
    try:
        with captured(log):
            print("interrupted here")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    print("after the interrupt", flush=True)
    sys.stderr.write("stderr is back\\n")
    """
)


def run_captured(tmp_path, mode="quiet"):
    script = tmp_path / "capture.py"
    script.write_text(CAPTURE)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "logs" / "run.log"), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_capture_takes_every_writer_to_the_log_and_restores_the_descriptors(tmp_path):
    result = run_captured(tmp_path)
    assert result.stdout == "before\nafter\nafter the interrupt\n"
    shown = result.stderr.splitlines()
    assert shown[0] == "cnnops: ingest: started"
    assert shown[1:3] == ["cnnops: ingest: 3/3", "cnnops: from a task"]
    assert shown[3].startswith("cnnops: ingest: finished in ")
    assert shown[4:] == ["stderr is back"]
    logged = (tmp_path / "logs" / "run.log").read_text().splitlines()
    for line in (
        "05:02:03.745 - INFO - Executing task 'ingest'",
        "cnnops: ingest: started",
        "cnnops: ingest: 3/3",
        "E0000 cuda_platform.cc:52] failed call to cuInit",
        "    a task line",
        "cnnops: from a task",
        shown[3],
        "interrupted here",
    ):
        assert line in logged
    assert all(line in logged for line in shown[:4])  # every line the terminal showed
    assert "before" not in logged and "after" not in logged


def test_verbose_capture_streams_the_whole_log(tmp_path):
    shown = run_captured(tmp_path, "verbose").stderr.splitlines()
    assert "E0000 cuda_platform.cc:52] failed call to cuInit" in shown
    assert "    a task line" in shown and "cnnops: ingest: started" in shown


def test_the_bookkeeping_tasks_show_on_the_terminal_only_when_they_fail(tmp_path):
    log = RunLog(tmp_path / "run.log")
    for line in (STARTED.replace("ingest", "configure"), ENDED.replace("ingest", "configure")):
        written, shown = log.sort_line(line)
        assert shown == [] and len(written) == 2  # kfp's line and cnnops's, both kept in the log
    assert log.sort_line(STARTED.replace("ingest", "finalize"))[1] == []
    assert log.sort_line(FAILED.replace("split", "finalize"))[1][0].startswith("cnnops: finalize: failed after ")
    assert log.failed_task().name == "finalize"
