"""A real ``prometheus`` server for end-to-end tests.

Starts Debian's ``prometheus`` binary on a free loopback port, in a temporary
directory, with a generated config that scrapes the given targets every second
(job ``syncd`` by default, so alert and dashboard expressions apply unchanged).
Async throughout: the thing being scraped usually runs on the test's own event
loop, so waiting must never block it.

    async with PrometheusServer(["127.0.0.1:9464"], rule_files=[alerts]) as prom:
        value = await prom.wait_for_value("syncd_records_written_total", lambda v: v >= 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    def __init__(
        self,
        targets: Sequence[str],
        *,
        job: str = "syncd",
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        binary: str = "prometheus",
    ) -> None:
        found = shutil.which(binary)
        if not found:
            raise PrometheusError(
                f"{binary} not found: run scripts/setup.sh (installs Debian's 'prometheus')"
            )
        self.binary = found
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log: Path | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        # JSON is valid YAML: no YAML library needed.
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
            ],
        }
        return json.dumps(config, indent=2)

    def log_tail(self, lines: int = 40) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    async def start(self, ready_within: float = 30.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="syncd-prom-")
        tmp = Path(self._tmp.name)
        (tmp / "prometheus.yml").write_text(self.config_text())
        self._log = tmp / "prometheus.log"
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            with self._log.open("ab") as log:
                self._proc = await asyncio.create_subprocess_exec(
                    self.binary,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                    stdout=log,
                    stderr=log,
                )
            self._client = httpx.AsyncClient(base_url=self.url, timeout=5)
            if await self._wait_ready(ready_within):
                return
            await self._terminate()
        raise PrometheusError(f"prometheus did not become ready:\n{self.log_tail()}")

    async def _wait_ready(self, within: float) -> bool:
        assert self._proc is not None and self._client is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                r = await self._client.get("/-/ready")
                if r.status_code == 200:
                    return True
            await asyncio.sleep(0.1)
        return False

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list of a vector (raises on a PromQL error)."""
        assert self._client is not None, "not started"
        r = await self._client.get("/api/v1/query", params={"query": expr})
        body = r.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        result = body["data"]["result"]
        return list(result) if isinstance(result, list) else [result]

    async def targets_health(self) -> list[dict[str, Any]]:
        assert self._client is not None, "not started"
        r = await self._client.get("/api/v1/targets")
        return list(r.json()["data"]["activeTargets"])

    async def alerts(self) -> list[dict[str, Any]]:
        assert self._client is not None, "not started"
        r = await self._client.get("/api/v1/alerts")
        return list(r.json()["data"]["alerts"])

    async def wait_for_value(
        self,
        expr: str,
        predicate: Callable[[float], bool],
        within: float = 20.0,
    ) -> float:
        """Poll ``expr`` until its first sample satisfies ``predicate``; return the value."""
        deadline = time.monotonic() + within
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = await self.query(expr)
            if last:
                value = float(last[0]["value"][1])
                if predicate(value):
                    return value
            await asyncio.sleep(0.25)
        raise PrometheusError(
            f"{expr!r} never satisfied the predicate; last result {last!r}; "
            f"targets {await self.targets_health()!r}"
        )

    async def _terminate(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def stop(self) -> None:
        await self._terminate()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> PrometheusServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
