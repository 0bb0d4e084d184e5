"""How a worker reaches the other workers of its server: their private control sockets.

Each worker serves a small HTTP app on ``<run_dir>/worker-<i>.sock`` (``appliance.protocol.control``);
the folder is private to the service user (0700), which is the socket's only access control. A
peer that does not answer within the timeout (restarting, stuck) is reported as missing rather than
holding up the caller: a scrape or status page shows it, a model load names it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from appliance.processes.supervisor import WorkerIdentity
from appliance.processes.unloaded import UnloadedModels

log = logging.getLogger("appliance")
#: Who asked, on a call one worker passes on to the others (they audit it under that name).
PRINCIPAL_HEADER = "X-Appliance-Principal"
#: Whether that principal may see everyone's jobs (the ``admin`` scope), on a job call passed on.
SEE_ALL_HEADER = "X-Appliance-See-All"


@dataclass(frozen=True)
class PeerAnswer:
    index: int
    status: int  # 0: no answer (not listening, timed out)
    body: bytes


class Peers:
    def __init__(self, identity: WorkerIdentity, timeout_s: float = 2.0, load_timeout_s: float = 300.0) -> None:
        self.identity = identity
        self.unloaded = UnloadedModels(identity.run_dir)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._load_timeout = aiohttp.ClientTimeout(total=load_timeout_s)  # compiling a large model takes a while
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    @property
    def others(self) -> list[int]:
        return [i for i in range(self.identity.count) if i != self.identity.index]

    def _session(self, index: int) -> aiohttp.ClientSession:
        session = self._sessions.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=str(self.identity.socket_path(index)))
            session = self._sessions[index] = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return session

    async def _call(self, index: int, method: str, path: str, headers: dict[str, str] | None,
                    wait: aiohttp.ClientTimeout | None = None) -> PeerAnswer:
        try:
            async with self._session(index).request(method, f"http://worker{path}", headers=headers,
                                                    timeout=wait or self._timeout) as response:
                return PeerAnswer(index, response.status, await response.read())
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("peer did not answer", extra={"fields": {"worker": index, "path": path, "error": str(exc)}})
            return PeerAnswer(index, 0, b"")

    async def each(self, method: str, path: str, headers: dict[str, str] | None = None,
                   wait: aiohttp.ClientTimeout | None = None) -> list[PeerAnswer]:
        """Call ``path`` on every other worker at once."""
        return list(await asyncio.gather(*(self._call(i, method, path, headers, wait) for i in self.others)))

    async def first_found(self, method: str, path: str, headers: dict[str, str] | None = None) -> bytes | None:
        """The body of the first other worker that answers ``path`` with 200 (a job lives on the
        worker that took its submission); None when none does."""
        for answer in await self.each(method, path, headers):
            if answer.status == 200:
                return answer.body
        return None

    async def models_changed(self, action: str, model: str, principal: str) -> None:
        """Apply a load or unload that this worker has just applied on every other worker too."""
        await asyncio.to_thread(self.unloaded.record, action, model)  # for a worker that restarts meanwhile
        answers = await self.each("POST", f"/models/{quote(model, safe='')}/{action}", {PRINCIPAL_HEADER: principal},
                                  self._load_timeout)
        missing = [a.index for a in answers if a.status != 200]
        if missing:  # a restarting worker applies the repository and the unloads as they now are
            log.warning("peers did not apply a model change", extra={"fields": {
                "action": action, "model": model, "workers": missing}})

    async def aclose(self) -> None:
        await asyncio.gather(*(s.close() for s in self._sessions.values()), return_exceptions=True)
        self._sessions.clear()
