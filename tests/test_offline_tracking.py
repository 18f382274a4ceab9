"""Comet ML on a machine without internet: with an API key set and the server unreachable, a run
logs to the offline archive in logs/comet/ (real comet_ml client, real refused connection)."""
from __future__ import annotations

import json
import re
import socket
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

FAKE_KEY = "Zq7fakeKeyThatMustNeverBeLogged0"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from paired_data import write_pairs

    return write_pairs(tmp_path_factory.mktemp("pairs"))


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comet_messages(logs: Path) -> list[dict]:
    archives = sorted((logs / "comet").glob("*.zip"))
    assert len(archives) == 1, archives
    with zipfile.ZipFile(archives[0]) as z:
        lines = z.read("messages.json").decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_comet_with_a_key_and_no_server_logs_the_run_to_the_offline_archive(data_root, tmp_path, monkeypatch, capfd):
    from trainer import main

    server = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("COMET_API_KEY", FAKE_KEY)
    monkeypatch.setenv("COMET_URL_OVERRIDE", server + "/clientlib/")  # comet_ml's server setting
    monkeypatch.delenv("RESTORELAB_TRACKER_TIMEOUT", raising=False)
    config = tmp_path / "exp.yml"
    config.write_text(textwrap.dedent(f"""
        name: run
        network: {{type: UNet, width: 4, depth: 1, blocks_per_level: 1}}
        datasets:
          train: {{type: PairedFolderDataset, root: {data_root / 'train'}, phase: train, crop_size: 32}}
          val: {{type: PairedFolderDataset, root: {data_root / 'val'}, phase: val}}
        path: {{root: {tmp_path / 'runs'}}}
        train: {{max_steps: 4, batch_size: 4, val_every: 2, checkpoint_every: 0, log_every: 1, num_workers: 0}}
        val: {{log_images: 1}}
        report_to: [comet_ml]
    """))
    began = time.monotonic()
    assert main(["-opt", str(config)]) == 0
    seconds = time.monotonic() - began
    run = tmp_path / "runs" / "run"

    # One line says so, with the archive and the upload command; the check took well under the limit.
    log = (run / "logs" / "train.log").read_text()
    lines = [line for line in log.splitlines() if "not reachable" in line]
    assert len(lines) == 1, log
    found = re.search(r"Comet server (\S+) not reachable \((.+), (\d+\.\d) s\): logging offline to (\S+\.zip); "
                      r"upload it later with: comet upload (\S+\.zip)$", lines[0])
    assert found, lines[0]
    assert found.group(1) == server + "/clientlib/isAlive/ver" and "refused" in found.group(2).lower()
    assert float(found.group(3)) < 5.0 and seconds < 60
    archive = Path(found.group(4))
    assert found.group(5) == str(archive) and archive.parent == run / "logs" / "comet" and archive.is_file()

    # The archive holds every train loss and both validations, equal to the trainer's own numbers.
    metrics = [r["payload"]["metric"] for r in comet_messages(run / "logs") if r["type"] == "metric_msg"]
    assert [m["step"] for m in metrics if m["metricName"] == "train/loss"] == [1, 2, 3, 4]
    for step in (2, 4):
        mean = json.loads((run / "results" / "val" / f"step-{step}" / "metrics.json").read_text())["mean"]
        for name in ("psnr", "ssim"):
            logged = [float(m["metricValue"]) for m in metrics if m["metricName"] == f"val/{name}" and m["step"] == step]
            assert logged == [pytest.approx(mean[name], abs=1e-4)], (name, step)

    # The key is never written anywhere: log, console, archive.
    out, err = capfd.readouterr()
    assert FAKE_KEY not in log + out + err
    assert all(FAKE_KEY.encode() not in zipfile.ZipFile(archive).read(n) for n in zipfile.ZipFile(archive).namelist())


def test_server_check_is_bounded_when_the_server_never_answers(monkeypatch):
    from utils.trackers import server_problem

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        began = time.monotonic()
        problem = server_problem(f"http://127.0.0.1:{silent.getsockname()[1]}/clientlib/isAlive/ver", 0.5)
        seconds = time.monotonic() - began
    assert problem is not None and 0.45 <= seconds < 2.0, (problem, seconds)

    # A name that never resolves (RFC 2606 .invalid) fails within the limit as well.
    began = time.monotonic()
    assert server_problem("http://comet.invalid/clientlib/isAlive/ver", 1.0) is not None
    assert time.monotonic() - began < 2.0


def test_server_check_accepts_a_server_that_answers():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from utils.trackers import server_problem

    class Alive(BaseHTTPRequestHandler):
        def do_GET(self):
            code = 200 if self.path == "/clientlib/isAlive/ver" else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"version": "3.0.0"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Alive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert server_problem(base + "/clientlib/isAlive/ver", 2.0) is None
        assert server_problem(base + "/elsewhere", 2.0) == "HTTP 404"
    finally:
        server.shutdown()


@pytest.mark.parametrize("value, expected", [("", 5.0), ("2.5", 2.5), ("0", None), ("soon", None)])
def test_tracker_timeout_setting(monkeypatch, value, expected):
    from utils.errors import ConfigError
    from utils.trackers import tracker_timeout

    monkeypatch.setenv("RESTORELAB_TRACKER_TIMEOUT", value)
    if expected is None:
        with pytest.raises(ConfigError, match="RESTORELAB_TRACKER_TIMEOUT must be a number of seconds > 0"):
            tracker_timeout()
    else:
        assert tracker_timeout() == expected


def test_comet_server_that_rejects_the_key_also_ends_in_the_archive(tmp_path, monkeypatch):
    """A server that answers but refuses to create the experiment (HTTP 401, as for a wrong key)."""
    import logging
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from utils.trackers import LOGGER_NAME, make_trackers

    class Lines(logging.Handler):
        lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    class RejectingServer(BaseHTTPRequestHandler):
        def answer(self):
            alive = self.path == "/clientlib/isAlive/ver"
            self.send_response(200 if alive else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"version": "3.5.0"}' if alive else b'{"msg": "Invalid apiKey", "code": 401}')

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RejectingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("COMET_API_KEY", FAKE_KEY)
    monkeypatch.setenv("COMET_URL_OVERRIDE", f"http://127.0.0.1:{server.server_address[1]}/clientlib/")
    handler, logger = Lines(), logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        (tracker,) = make_trackers(("comet_ml",), "run", tmp_path)
        began = time.monotonic()
        tracker.start()
        seconds = time.monotonic() - began
        tracker.log({"train/loss": 0.25}, step=7)
        tracker.finish()
    finally:
        server.shutdown()
        logger.removeHandler(handler)
    assert seconds < 10
    (line,) = handler.lines
    assert line.startswith("Comet did not start an online experiment") and "comet upload" in line
    metrics = [r["payload"]["metric"] for r in comet_messages(tmp_path) if r["type"] == "metric_msg"]
    assert [(m["metricName"], m["step"], float(m["metricValue"])) for m in metrics] == [("train/loss", 7, 0.25)]
