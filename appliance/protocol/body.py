"""Reading request bodies: within a deadline, and as a JSON object. Shared by every REST route."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from appliance.errors import InvalidInput, RequestTimeout


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


def json_object(body: bytes, what: str = "the request body") -> dict[str, Any]:
    """``body`` parsed as a JSON object; InvalidInput (400) saying what was wrong otherwise."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return doc
