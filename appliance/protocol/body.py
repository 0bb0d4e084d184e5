"""Reading a request body within a deadline: shared by every REST front end (OIP, OpenAI)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.errors import RequestTimeout


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body, within ``timeout_s`` (408 otherwise) so a slow client cannot hold a request.

    Most bodies have fully arrived with their headers; those skip the timer.
    """
    if request.content.is_eof():
        return await request.read()
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from None
