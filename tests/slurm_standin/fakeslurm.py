"""Stand-ins for the SLURM commands that snakemake-executor-plugin-slurm calls, for tests on a
machine without SLURM: `sbatch` records its arguments and runs the job here, in the background;
`sacct`/`squeue` report each job's state from its exit code; `srun` runs its command; `scancel`
kills the job's process group; `sinfo`/`scontrol` answer the plugin's probes.

State lives in $FACEDET3D_FAKE_SLURM_DIR: `sbatch.jsonl` (one line per sbatch call: jobid, argv,
parsed options), `srun.jsonl` (one line per job step) and `jobs/<id>.{json,sh,pid,rc}`.
Called as `fakeslurm.py COMMAND ARGS...` by the one-line wrappers beside it (sbatch, sacct, ...).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("FACEDET3D_FAKE_SLURM_DIR", "/tmp/fakeslurm"))
JOBS = STATE / "jobs"
# sbatch options that take their value as the next argument (the plugin's short forms included)
VALUED = {"-J", "--job-name", "-o", "--output", "-e", "--error", "--comment", "-A", "--account", "-p",
          "--partition", "-t", "--time", "--mem", "--mem-per-cpu", "-D", "--chdir", "-C", "--constraint",
          "--clusters", "-M", "--wrap", "-n", "--ntasks", "-c", "--cpus-per-task", "-G", "--gpus"}


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """sbatch's options as {option: value} (flags: True) and the script with its arguments."""
    opts, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            opts[key] = value
        elif arg in VALUED:
            opts[arg], i = argv[i + 1], i + 1
        elif arg.startswith("-") and arg != "-":
            opts[arg] = True
        else:
            return opts, argv[i:]
        i += 1
    return opts, []


def opt(opts: dict, *names: str, default=None):
    return next((opts[n] for n in names if n in opts), default)


def sbatch(argv: list[str]) -> int:
    opts, script = parse(argv)
    if "--array" in opts:
        sys.exit("fake sbatch: --array is not supported")
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(STATE / "lock", "w") as lock:  # the plugin submits from two threads
        fcntl.flock(lock, fcntl.LOCK_EX)
        jobid = str(len(list(JOBS.glob("*.json"))) + 1001)
        body = opt(opts, "--wrap")
        if body is None:  # a script file, or the script on stdin (/dev/stdin or none)
            body = sys.stdin.read() if not script or script[0] in ("-", "/dev/stdin") else Path(script[0]).read_text()
        (JOBS / f"{jobid}.sh").write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body + "\n")
        (JOBS / f"{jobid}.json").write_text(json.dumps({"name": opt(opts, "--job-name", "-J", default="sbatch")}))
        with open(STATE / "sbatch.jsonl", "a") as log:
            log.write(json.dumps({"jobid": jobid, "argv": argv, "opts": opts}) + "\n")
    workdir = opt(opts, "--chdir", "-D", default=os.getcwd())
    output = Path(workdir, opt(opts, "--output", "-o", default="slurm-%j.out").replace("%j", jobid))
    env = dict(os.environ, SLURM_JOB_ID=jobid, SLURM_JOBID=jobid, SLURM_JOB_NAME=str(opt(opts, "--job-name", "-J")),
               SLURM_JOB_PARTITION=str(opt(opts, "--partition", "-p", default="")),
               SLURM_CPUS_PER_TASK=str(opt(opts, "--cpus-per-task", "-c", default=1)), SLURM_SUBMIT_DIR=os.getcwd())
    if opt(opts, "--gpus", "-G"):
        env["SLURM_GPUS"] = str(opt(opts, "--gpus", "-G"))
    rc = JOBS / f"{jobid}.rc"
    # The job runs detached (own session, so scancel can kill its group); its exit code lands in <id>.rc.
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as out:
        proc = subprocess.Popen(["sh", "-c", 'sh "$1"; echo $? > "$2.tmp"; mv "$2.tmp" "$2"', "job",
                                 str(JOBS / f"{jobid}.sh"), str(rc)], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (JOBS / f"{jobid}.pid").write_text(str(proc.pid))
    print(jobid if "--parsable" in opts else f"Submitted batch job {jobid}")
    return 0


def state(jobid: str) -> str:
    rc = JOBS / f"{jobid}.rc"
    if (JOBS / f"{jobid}.cancelled").exists():
        return "CANCELLED"
    if not rc.exists():
        return "RUNNING"
    return "COMPLETED" if rc.read_text().strip() == "0" else "FAILED"


def jobs_named(argv: list[str]) -> list[str]:
    """Job ids, filtered by `--name X` when given, in submission order."""
    name = argv[argv.index("--name") + 1] if "--name" in argv else None
    ids = sorted((p.stem for p in JOBS.glob("*.json")), key=int) if JOBS.is_dir() else []
    return [i for i in ids if name is None or json.loads((JOBS / f"{i}.json").read_text())["name"] == name]


def sacct(argv: list[str]) -> int:
    # The status query: sacct -X --parsable2 --noheader --format=JobIdRaw,State ... --name RUN_UUID.
    if any(a.startswith("--format=JobIdRaw,State") for a in argv):
        for jobid in jobs_named(argv):
            print(f"{jobid}|{state(jobid)}")
    # Anything else (the failure reason per job step, a guessed account) has no answer here: empty.
    return 0


def squeue(argv: list[str]) -> int:
    # squeue --format='%i|%T' --states=all --noheader --name RUN_UUID
    for jobid in jobs_named(argv):
        print(f"{jobid}|{state(jobid)}")
    return 0


def scancel(argv: list[str]) -> int:
    for jobid in (a for a in argv if not a.startswith("-")):
        (JOBS / f"{jobid}.cancelled").touch()
        try:
            os.killpg(int((JOBS / f"{jobid}.pid").read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    return 0


def srun(argv: list[str]) -> int:
    # srun -n1 --cpu-bind=q --cpus-per-task=N [--gpus=N] --nodes=1 COMMAND...: record, run COMMAND here.
    with open(STATE / "srun.jsonl", "a") as log:
        log.write(json.dumps({"jobid": os.environ.get("SLURM_JOB_ID"), "argv": argv}) + "\n")
    while argv and argv[0].startswith("-"):
        argv = argv[1:]
    os.execvp(argv[0], argv)


def sinfo(argv: list[str]) -> int:
    print("PARTITION\ncpu*\ngpu")  # `sinfo -o %P`: the default partition carries a star
    return 0


def scontrol(argv: list[str]) -> int:
    print("MaxArraySize = 1001\nMinJobAge = 300 sec")  # `scontrol show config`, the lines the plugin reads
    return 0


if __name__ == "__main__":
    sys.exit(globals()[sys.argv[1]](sys.argv[2:]))
