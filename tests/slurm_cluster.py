"""A real one-node Slurm cluster for tests (scripts/slurm/local_cluster.sh) and helpers to drive it.

`slurm_cluster` (session fixture) installs Slurm if needed, starts slurmctld and two slurmd
(nodes node0, node1, both on 127.0.0.1) under a temporary folder and stops them (by PID) at the end. A cluster that cannot be brought up fails the
tests that need it; they are never skipped.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL_CLUSTER = ROOT / "scripts" / "slurm" / "local_cluster.sh"
FINISHED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


class ClusterError(RuntimeError):
    pass


@dataclass
class JobInfo:
    job_id: str
    state: str
    reason: str
    restarts: int
    exit_code: str


class LocalSlurm:
    def __init__(self, base: Path):
        self.base = Path(base)
        self.conf = self.base / "etc" / "slurm.conf"
        # a test run inside a Slurm job must not leak that job's settings into the test cluster
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env["SLURM_CONF"] = str(self.conf)
        self.env = env

    def _logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "apt.log"):
            path = self.base / "log" / name
            if path.exists():
                out.append(f"--- {path} (last lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def start(self, nodes: int = 1) -> None:
        proc = subprocess.run(["bash", str(LOCAL_CLUSTER), "start", str(self.base)],
                              env={**self.env, "LOCAL_SLURM_NODES": str(nodes)},
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise ClusterError(f"local_cluster.sh start failed ({proc.returncode}):\n{proc.stderr}\n{self._logs()}")

    def stop(self) -> None:
        subprocess.run(["bash", str(LOCAL_CLUSTER), "stop", str(self.base)], env=self.env,
                       capture_output=True, text=True, timeout=300, check=True)

    def run(self, *cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def sbatch(self, *args: str, env: dict | None = None) -> str:
        """Submit; returns the job id (for an array: the array's job id)."""
        out = self.run("sbatch", "--parsable", *args, env=env).stdout.strip()
        return out.split(";")[0]

    def job(self, job_id: str) -> JobInfo:
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout
        line = text.splitlines()[0]

        def field(name: str) -> str:
            m = re.search(rf"(?:^| ){name}=(\S*)", line)
            if not m:
                raise ClusterError(f"no {name} in scontrol output: {line}")
            return m.group(1)

        return JobInfo(job_id, field("JobState"), field("Reason"), int(field("Restarts")), field("ExitCode"))

    def array_states(self, array_job_id: str) -> dict[str, str]:
        text = self.run("scontrol", "show", "job", "-o", array_job_id).stdout
        return {re.search(r"ArrayTaskId=(\S+)", l).group(1): re.search(r"JobState=(\S+)", l).group(1)
                for l in text.splitlines() if "ArrayTaskId=" in l}

    def release_requeued(self, job_id: str) -> bool:
        """Slurm holds a requeued batch job back for ~2 minutes (Reason=BeginTime); start it in 3 s.

        Not at once: slurmd refuses to launch a job whose credential was revoked (by the requeue)
        within the same second ("Job credential revoked").
        """
        info = self.job(job_id)
        if info.state == "PENDING" and info.restarts > 0 and info.reason == "BeginTime":
            self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now+3")
            return True
        return False

    def wait_finished(self, job_id: str, timeout: float, release_requeued: bool = False) -> JobInfo:
        deadline = time.monotonic() + timeout
        released = set()  # restart counts already released
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.state in FINISHED_STATES:
                return info
            if release_requeued and info.restarts not in released and self.release_requeued(job_id):
                released.add(info.restarts)
            time.sleep(0.5)
        raise ClusterError(f"job {job_id} not finished after {timeout:.0f}s: {self.job(job_id)}\n{self.queue()}")

    def queue(self) -> str:
        return self.run("squeue", "-o", "%i %j %T %r", check=False).stdout


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> LocalSlurm:
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm_cluster"))
    try:
        cluster.start(nodes=2)  # two slurmd on this machine: multi-node jobs are tested too
    except (ClusterError, subprocess.TimeoutExpired) as e:
        try:
            cluster.stop()
        finally:
            pytest.fail(f"could not bring up the local Slurm cluster: {e}", pytrace=False)
    yield cluster
    cluster.stop()
