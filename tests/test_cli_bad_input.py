"""Every mistake a researcher can type gets one line that names the fix, before any model loads; every fault
(a corrupt checkpoint, Ctrl-C, a busy run folder, W&B out of reach) says what happened and loses nothing.

The bad inputs run as the console script, as a researcher runs them, two at a time (CI has two cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from filelock import FileLock

from prompt_bench.artifacts import save_tensors
from test_cli import EXE, cli

ERROR = "prompt-bench: error: "


def _files(tmp_path_factory):
    """Bad files a user might point at: a prompt that is not safetensors, a 3-token prompt, broken data files."""
    root = tmp_path_factory.mktemp("bad_files")
    (root / "corrupt.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    save_tensors(root / "three", {"prompt": torch.zeros(3, 384)}, {})
    for name, content in {"latin1": "sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"),
                          "columns": b"sentence\tlabel\na fine film\t1\textra\n"}.items():
        folder = root / name / "glue" / "SST-2"
        folder.mkdir(parents=True)
        for split in ("train.tsv", "dev.tsv"):
            (folder / split).write_bytes(content)
    (root / "a_file").write_text("not a folder")
    return root


#: (command-line arguments, what the one error line must contain). {files} is the folder made by _files.
BAD_INPUTS = [
    # choosing an option that does not exist
    (["method=bogus"], "unknown method 'bogus'"),
    (["task=sst3"], "did you mean task=sst2?"),
    (["model=robertta_large"], "did you mean model=roberta_large?"),
    (["optimizer=adam"], "unknown optimizer 'adam'"),
    (["setting=zero_shot"], "unknown setting 'zero_shot'"),
    (["experiment=bbt_papr"], "did you mean experiment=bbt_paper?"),
    (["-m", "method=bbt,bogus"], "unknown method 'bogus'"),
    (["hydra/launcher=bogus"], "unknown hydra/launcher 'bogus'"),
    # keys that do not exist, and Hydra's hint that would have added them silently
    (["method=bbt", "method.budgett=5"], "did you mean method.budget?"),
    (["method=bbt", "+method.budgett=5"], "did you mean method.budget?"),
    (["method=bbt", "++method.budgett=5"], "did you mean method.budget?"),
    (["budget=5"], "did you mean method.budget?"),
    (["method=manual", "+method.budget=5"], "not a setting of method=manual"),
    (["method=bbt", "+method.budget=5"], "set it with method.budget=... (no '+')"),
    (["+experiment=bbt_paper"], "experiment=bbt_paper (no '+')"),
    (["task=cb", "setting.k=4"], "add setting=few_shot to use it"),
    (["-m", "task=cb,sst2", "setting.k=4"], "the one task=cb chooses"),
    # the command line's own grammar
    (["seed=1,2"], "add -m to sweep over them"),
    (["method=bbt", "method.budget=[1"], "cannot read 'method.budget=[1'"),
    # wrong types and out-of-range values, by name
    (["seed=1.5"], "seed=1.5 is not a whole number"),
    (["seed=-3"], "seed=-3 must be at least 0"),
    (["seed=abc"], "seed=abc is not a whole number"),
    (["method=bbt", "method.budget=abc"], "method.budget=abc is not a whole number"),
    (["method=bbt", "method.budget=0"], "method.budget=0 must be at least 1"),
    (["method=bbt", "method.n_prompt_tokens=0"], "method.n_prompt_tokens=0 must be at least 1"),
    (["method=bbt", "optimizer.popsize=abc"], "optimizer.popsize=abc is not a whole number"),
    (["method=bbt", "method.sigma=0"], "method.sigma=0 must be above 0"),
    (["method=clip_tuning", "method.n_networks=0"], "method.n_networks=0 must be at least 1"),
    (["method=prompt_tuning", "method.lr=-1"], "method.lr=-1 must be at least 0"),
    (["method=p_tuning_v2", "method.dropout=1.5"], "method.dropout=1.5 must be at least 0 and below 1"),
    (["compute.bf16=maybe"], "use compute.bf16=true or compute.bf16=false"),
    (["run.progress=sometimes"], "use run.progress=true or run.progress=false"),
    (["compute.device=tpu"], "compute.device=tpu is not a device"),
    (["compute.max_tokens_per_forward=0"], "compute.max_tokens_per_forward=0 must be at least 1"),
    (["compute.eval_batch_size=0"], "compute.eval_batch_size=0 must be at least 1"),
    (["setting.k=0"], "setting.k=0 must be at least 1"),
    (["setting=full_data", "setting.dev_fraction=2"], "setting.dev_fraction=2 must be at least 0 and below 1"),
    # combinations that cannot work
    (["method=bbt", "optimizer=adamw"], "use optimizer=cma"),
    (["method=prompt_tuning", "optimizer=cma"], "use optimizer=adamw"),
    (["method=dynamic_prompting", "method.dp.position=bogus"], "method.dp.position=bogus is not one of"),
    (["setting=multitask", "setting.tasks=[sst2,nope]"], "unknown task 'nope'"),
    # models, files and data that are missing or broken
    (["model=local"], "model.path"),
    (["model=local", "model.path=/no/such/model"], "does not exist"),
    (["data.mirror=/no/such/mirror"], "data mirror"),
    (["task=cb", "setting=few_shot", "setting.k=16"], "lower setting.k to 8"),
    (["method=prompt_tuning", "method.init=/no/such/prompt.safetensors"], "is neither vocab, random, uniform"),
    (["method=prompt_tuning", "method.init={files}/corrupt.safetensors"], "corrupt.safetensors is not a readable safetensors file"),
    (["method=prompt_tuning", "method.init={files}/three.safetensors", "method.n_prompt_tokens=5"],
     "set method.n_prompt_tokens=3"),
    (["method=recycling", "method.source=/no/such/prompt.safetensors"], "method.source"),
    (["data.mirror={files}/latin1", "setting.k=1"], "not UTF-8 text"),
    (["data.mirror={files}/columns", "setting.k=1"], "expected 2 tab-separated columns, found 3"),
    (["run.root={files}/a_file/runs"], "run.root"),
]


@pytest.fixture(scope="module")
def answers(tmp_path_factory, mirror):
    """Every bad input, run once: {index: CompletedProcess}."""
    files = _files(tmp_path_factory)
    runs = tmp_path_factory.mktemp("runs")

    def run(item):
        number, (args, _) = item
        args = [a.replace("{files}", str(files)) for a in args]
        if not any(a.startswith("data.mirror=") for a in args):
            args.append(f"data.mirror={mirror}")
        if not any(a.startswith("run.root=") for a in args):
            args.append(f"run.root={runs}/{number}")
        done = subprocess.run([EXE, "logger=none", "run.progress=false", *args], capture_output=True, text=True,
                              timeout=300)
        return number, done

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, enumerate(BAD_INPUTS)))


def test_the_table_holds_at_least_forty_bad_inputs():
    assert len(BAD_INPUTS) >= 40


@pytest.mark.parametrize("number", range(len(BAD_INPUTS)), ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_a_bad_input_gets_exit_status_2_and_one_line_naming_the_fix_before_any_model_loads(answers, number):
    args, fix = BAD_INPUTS[number]
    done = answers[number]
    output = done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(ERROR)]
    assert done.returncode == 2, output
    assert len(lines) == 1, output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output, output
    assert fix in lines[0], lines[0]
    assert "load model" not in output, "the input was checked only after the model had loaded"
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- faults: what the user sees, and that nothing is lost ------------------------------------------------------

def _tiny_bbt(tiny_models, mirror, root, budget=40):
    return ["method=bbt", f"method.budget={budget}", "method.intrinsic_dim=8", "method.n_prompt_tokens=4",
            "optimizer.popsize=4", "method.eval_every=8", "method.checkpoint_every=4", "model=local",
            f"model.path={tiny_models['masked_lm']}", "model.family=masked_lm", "setting.k=4", "logger=none",
            "run.progress=false", f"data.mirror={mirror}", f"run.root={root}"]


def _run_folder(root):
    return next(p.parent for p in root.rglob("config.yaml"))


def test_a_corrupt_checkpoint_names_the_file_and_run_restart_which_then_works(tiny_models, mirror, tmp_path):
    args = _tiny_bbt(tiny_models, mirror, tmp_path)
    assert cli(*args).returncode == 0
    folder = _run_folder(tmp_path)
    (folder / "results.json").unlink()  # as if killed before the end, with its checkpoint on disk
    (folder / "checkpoint" / "state.safetensors").write_bytes(b"truncated")
    done = cli(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(ERROR) and "state.safetensors" in done.stderr and "run.restart=true" in done.stderr
    again = cli(*args, "run.restart=true")
    assert again.returncode == 0, again.stderr
    assert (folder / "results.json").is_file()
    assert list(folder.parent.glob(f"{folder.name}.interrupted-*")), "the broken folder is kept aside, not deleted"


def test_ctrl_c_says_how_to_resume_in_one_line_and_the_same_command_resumes(tiny_models, mirror, tmp_path):
    args = _tiny_bbt(tiny_models, mirror, tmp_path, budget=4000)
    # Ctrl-C at a terminal: a test session started in the background (`cmd &`) hands its children SIGINT ignored,
    # and an interrupt that is never delivered would make the run finish instead
    process = subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline:  # interrupt once training has written a checkpoint
        if list(tmp_path.rglob("checkpoint/state.safetensors")):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [
        ERROR + "interrupted: run the same command again to resume from the last checkpoint"]
    folder = _run_folder(tmp_path)
    resumed = cli(*args[:1], "method.budget=4000", *args[2:])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the interrupted run" in (folder / "run.log").read_text()


def test_a_run_folder_in_use_is_refused_with_one_line(tiny_models, mirror, tmp_path):
    args = _tiny_bbt(tiny_models, mirror, tmp_path)
    assert cli(*args).returncode == 0
    folder = _run_folder(tmp_path)
    (folder / "results.json").unlink()  # interrupted, so a second process would pick it up
    with FileLock(f"{folder}.lock"):  # as a first process holds it while it runs
        done = cli(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        ERROR + f"run folder {folder} is being run by another process right now: let it finish"]
    assert not (folder / "results.json").exists()


def test_w_and_b_out_of_reach_never_fails_a_run(mirror, tmp_path):
    env = {**os.environ, "WANDB_MODE": "online", "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
           }
    done = cli("method=manual", "setting.k=4", "logger=wandb", "logger.init_timeout=5", "run.progress=false", f"data.mirror={mirror}",
               f"run.root={tmp_path}", env=env)
    assert done.returncode == 0, done.stderr
    assert "W&B unavailable" in done.stdout + done.stderr and "WANDB_MODE=offline skips the wait" in done.stdout + done.stderr
    results = json.loads(next(tmp_path.rglob("results.json")).read_text())
    assert results["test"]["accuracy"] > 0
