"""Run every training of the paper reproduction (reports/paper/) on one GPU.

    python scripts/paper_gpu.py --deadline 470 --pack OUT_DIR

The trainings of `scenarios/paper.yaml` (3 seeds and the implementation
alternatives of reports/paper/README.md) run as parallel `fedsim scenario`
processes on one CUDA device, each restricted to one method, so that the GPU is
kept busy while each process's Python launches its kernels. Processes only
fill the stage cache (``$FEDSIM_CACHE``); the reports are rendered afterwards,
anywhere, from that cache (`fedsim scenario scenarios/paper.yaml --device cuda`
reads a GPU's cached stages on a machine without one).

Order: first every pre-training ticket (one process per ticket, each also
training round 1 of HP-FL) beside the dense ``original`` runs, which need no
ticket; then, as soon as its ticket exists, every other training. Runs marked
``early`` stop once they reach 95 % (``rounds.stop_when_reached``), which is
all that NRA@95 / CCA@95 / CTA@95 need; the seed-0 runs go on to 3000 rounds.
Lowest priority, once all of those are done: the other seeds to 3000 rounds.

At ``--deadline`` seconds every process still running gets SIGINT: the cache
keeps its last checkpoint (every 50 rounds), and a later run resumes there.
With ``--pack DIR`` the cache is packed into ``DIR/cache-N.tar.gz`` files of at
most 15 MB (untar them into ``$FEDSIM_CACHE``) and ``DIR/runs.json`` lists
every process with its exit status and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAPER = ROOT / "scenarios" / "paper.yaml"
EARLY = ("rounds.stop_when_reached=true",)
HP_FL_PRE = "methods.hp-fl-pretrained={kind: hp-fl-pretrained, remaining_rate: 0.107}"

#: Pre-training variants: name -> (seed, overrides). "s0" is the paper's setting.
TICKETS = {
    "s0": (0, ()),
    "s1": (1, ()),
    "s2": (2, ()),
    "noise-std": (0, ("pretrain.noise_scale=std",)),
    "global": (0, ("pretrain.scope=global",)),
}


@dataclass
class Job:
    name: str
    ticket: str | None  # the ticket job it waits for (None: needs none)
    args: list[str]
    phase: int
    proc: subprocess.Popen | None = None
    started: float | None = None
    ended: float | None = None
    status: str = "waiting"
    log: Path | None = field(default=None, repr=False)


def scenario_args(seed: int, overrides: tuple[str, ...], methods: str, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "fedsim", "scenario", str(PAPER),
            "--set", f"seed={seed}", "--methods", methods]
    for o in overrides:
        args += ["--set", o]
    return args + list(extra)


def plan(out: Path, extra: list[str], device: str = "cuda") -> list[Job]:
    jobs: list[Job] = []
    for name, (seed, over) in TICKETS.items():
        jobs.append(Job(f"ticket-{name}", None,
                        scenario_args(seed, over, "hp-fl", "--rounds", "1"), 0))
    for seed in (0, 1, 2):
        early = () if seed == 0 else EARLY
        jobs.append(Job(f"s{seed}-original", None, scenario_args(seed, early, "original"), 0))
    seed0 = ["pretrained", "hp-fl", "random-pruning", "hp-fl-0.41", "hp-fl-0.21"]
    for m in seed0:
        jobs.append(Job(f"s0-{m}", "ticket-s0", scenario_args(0, (), m), 1))
    jobs.append(Job("s0-hp-fl-pretrained", "ticket-s0",
                    scenario_args(0, (HP_FL_PRE, *EARLY), "hp-fl-pretrained"), 1))
    for seed in (1, 2):
        for m in ("pretrained", "hp-fl", "random-pruning"):
            jobs.append(Job(f"s{seed}-{m}", f"ticket-s{seed}", scenario_args(seed, EARLY, m), 1))
    seed, over = TICKETS["noise-std"]  # random pruning would repeat s0's masks (same per-layer counts)
    jobs.append(Job("noise-std-hp-fl", "ticket-noise-std", scenario_args(seed, (*over, *EARLY), "hp-fl"), 1))
    seed, over = TICKETS["global"]  # global pruning changes the per-layer counts: both methods
    for m in ("hp-fl", "random-pruning"):
        jobs.append(Job(f"global-{m}", "ticket-global", scenario_args(seed, (*over, *EARLY), m), 1))
    for seed in (1, 2):  # lowest priority: the other seeds' full 3000 rounds
        for m in ("original", "pretrained", "hp-fl", "random-pruning"):
            jobs.append(Job(f"s{seed}-{m}-3000", f"ticket-s{seed}", scenario_args(seed, (), m), 2))
    for job in jobs:
        job.args += ["--device", device, *extra, "--out", str(out / "reports" / job.name)]
        job.log = out / "logs" / f"{job.name}.log"
    return jobs


def ready(job: Job, jobs: dict[str, Job]) -> bool:
    if job.phase == 2 and any(j.phase < 2 and j.status in ("waiting", "running") for j in jobs.values()):
        return False
    return job.ticket is None or jobs[job.ticket].status == "ok"


def run(jobs: list[Job], deadline: float, max_running: int) -> None:
    by_name = {j.name: j for j in jobs}
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        for job in jobs:
            if job.status == "running" and job.proc.poll() is not None:
                job.ended = now
                job.status = "ok" if job.proc.returncode == 0 else f"exit {job.proc.returncode}"
                print(f"[{now - t0:6.0f} s] {job.name}: {job.status} after {job.ended - job.started:.0f} s",
                      flush=True)
            if job.status == "waiting" and job.ticket and by_name[job.ticket].status not in ("waiting", "running", "ok"):
                job.status = "skipped (ticket failed)"
        running = sum(j.status == "running" for j in jobs)
        for job in jobs:
            if running >= max_running or now - t0 > deadline:
                break
            if job.status == "waiting" and ready(job, by_name):
                job.log.parent.mkdir(parents=True, exist_ok=True)
                handle = job.log.open("w")
                job.proc = subprocess.Popen(job.args, stdout=handle, stderr=subprocess.STDOUT,
                                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                                 "PYTHONPATH": os.pathsep.join(
                                                     [str(ROOT), os.environ.get("PYTHONPATH", "")])})
                job.started, job.status = now, "running"
                running += 1
                print(f"[{now - t0:6.0f} s] start {job.name}", flush=True)
        if not any(j.status in ("running",) for j in jobs) and not any(
                j.status == "waiting" and ready(j, by_name) for j in jobs):
            break
        if now - t0 > deadline:
            for job in jobs:
                if job.status == "running":
                    job.proc.send_signal(signal.SIGINT)
            for job in jobs:
                if job.status == "running":
                    try:
                        job.proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        job.proc.kill()
                        job.proc.wait()
                    job.ended = time.monotonic()
                    job.status = f"interrupted at the deadline ({deadline:.0f} s)"
                    print(f"{job.name}: {job.status}", flush=True)
            break
        time.sleep(1.0)


def pack(cache: Path, out: Path, limit: int = 15 * 2**20) -> list[str]:
    """The pre-training and training entries of ``cache`` in tar files of at
    most ``limit`` bytes (entries are npz, already compressed)."""
    entries = sorted(p for stage in ("pretrain", "train") for p in (cache / stage).glob("*") if p.is_dir())
    bins: list[list[Path]] = [[]]
    sizes = [0]
    for entry in entries:
        size = sum(f.stat().st_size for f in entry.iterdir()) + 4096
        if sizes[-1] + size > limit:
            bins.append([])
            sizes.append(0)
        bins[-1].append(entry)
        sizes[-1] += size
    names = []
    for i, group in enumerate(b for b in bins if b):
        name = f"cache-{i}.tar.gz"
        with tarfile.open(out / name, "w:gz", compresslevel=6) as tar:
            for entry in group:
                tar.add(entry, arcname=str(entry.relative_to(cache)))
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds before interrupting")
    parser.add_argument("--max-running", type=int, default=16, help="processes at once")
    parser.add_argument("--work", type=Path, default=Path("/tmp/paper_gpu"), help="logs and per-run reports")
    parser.add_argument("--pack", type=Path, default=None, help="pack the cache into tar files here")
    parser.add_argument("--device", default="cuda", help="device of every run (cpu: to try the script)")
    parser.add_argument("--extra", default="", help="arguments appended to every fedsim command, "
                        "e.g. '--set pretrain.epochs=1 --rounds 3' to try the script")
    args = parser.parse_args()
    jobs = plan(args.work, args.extra.split(), args.device)
    t0 = time.monotonic()
    try:
        run(jobs, args.deadline, args.max_running)
    finally:
        summary = [{"name": j.name, "status": j.status, "phase": j.phase, "command": " ".join(j.args[1:]),
                    "start_s": None if j.started is None else round(j.started - t0, 1),
                    "wall_s": None if j.ended is None or j.started is None else round(j.ended - j.started, 1)}
                   for j in jobs]
        for job in jobs:
            if job.log and job.log.exists():
                tail = job.log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-2:]
                print(f"--- {job.name} [{job.status}]: " + " | ".join(line[-160:] for line in tail))
        if args.pack:
            from fedsim import store

            args.pack.mkdir(parents=True, exist_ok=True)
            (args.pack / "runs.json").write_text(json.dumps(summary, indent=1))
            print("packed:", pack(store.cache_dir(), args.pack))


if __name__ == "__main__":
    main()
