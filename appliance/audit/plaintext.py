"""The sealed part of a record, as bytes: a compact tag-length-value encoding (format 2).

Format 1 (JSON header, hex digests) cost ~360 bytes for a prediction; this one ~150, which is
most of what issue 20 cut. Each set field is one tag byte, a LEB128 length and the value:

* text fields as UTF-8; a value that is lowercase hex (a SHA-256, a 128-bit request id) is stored
  as its raw bytes under ``tag | 0x80`` and given back as the same hex text;
* a client address that is a canonical IPv4/IPv6 address as its 4 or 16 bytes;
* the classifier summary the server writes (``output``, ``rows``, ``top_class``, ``confidence`` with
  4 decimals) as name, counts, class numbers and confidences × 10,000 in two bytes, only where that
  gives back exactly the same values; any other summary as JSON;
* the payload last, untagged length: everything after its tag.

Decoding is exact: every field comes back as the text the record carried (after the same
surrogate cleaning format 1 applied). The bytes are sealed (AES-256-GCM), so nothing here is a
confidentiality measure.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import orjson

from appliance.audit.model import AuditError, AuditRecord

FORMAT = 2
#: Sealed text fields in encoding order and their tags (``tag | 0x80``: packed hex).
TEXT_FIELDS = ("request_id", "principal", "client", "input_sha256", "output_sha256", "detail",
               "manifest_sha256", "route")
_TAGS = {name: tag for tag, name in enumerate(TEXT_FIELDS, 1)}
_NAMES = {tag: name for name, tag in _TAGS.items()}
_HEX = 0x80
_CLIENT_IP = 0x40
_SUMMARY_JSON, _SUMMARY_CLASSES, _PAYLOAD = 0x20, 0x21, 0x3F
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_CLASSIFIER_KEYS = ("output", "rows", "top_class", "confidence")


def _clean(text: str) -> str:
    """SQLite and JSON refuse lone surrogates; one odd client string must not fail a batch."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _length(size: int) -> bytes:
    out = bytearray()
    while size >= 0x80:
        out.append((size & 0x7F) | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    size = len(data)
    return (bytes((tag, size)) if size < 0x80 else bytes((tag,)) + _length(size)) + data


def _text(name: str, value: str) -> bytes:
    tag = _TAGS[name]
    if len(value) % 2 == 0 and len(value) >= 16:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if raw and raw.hex() == value:  # lowercase, no spaces: gives back the same text
            return _field(tag | _HEX, raw)
    if name == "client" and value:
        packed = _packed_address(value)
        if packed:
            return _field(_CLIENT_IP, packed)
    return _field(tag, _clean(value).encode("utf-8"))


def _packed_address(value: str) -> bytes:
    """4 or 16 bytes when ``value`` is an address in its canonical text (inet_pton: ~20× faster
    than the ipaddress module, and this runs for every record)."""
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        packed = socket.inet_pton(family, value)
    except (OSError, ValueError):  # not an address; ValueError: an embedded NUL
        return b""
    return packed if socket.inet_ntop(family, packed) == value else b""


def _classes(summary: dict[str, Any]) -> bytes:
    """The classifier summary in ~20 bytes, or b"" when that would not give it back exactly."""
    if len(summary) != 4 or tuple(summary) != _CLASSIFIER_KEYS:
        return b""
    name, rows, top, confidence = summary["output"], summary["rows"], summary["top_class"], summary["confidence"]
    if not (type(name) is str and name.isascii() and len(name) < 0x80 and type(rows) is int
            and 0 <= rows < 2**32 and type(top) is list and type(confidence) is list
            and len(top) == len(confidence) < 0x80):
        return b""
    out = bytearray((len(name),))
    out += name.encode()
    out += _length(rows)
    out.append(len(top))
    for cls, conf in zip(top, confidence, strict=True):
        if type(cls) is not int or not 0 <= cls < 2**32 or type(conf) is not float or not math.isfinite(conf):
            return b""
        scaled = round(conf * 10000)
        if not 0 <= scaled <= 0xFFFF or scaled / 10000 != conf:
            return b""
        out += _length(cls)
        out += scaled.to_bytes(2, "big")
    return bytes(out)


def encode(record: AuditRecord) -> bytes:
    """The plaintext of ``record``: a format byte, then its set fields."""
    parts = [bytes((FORMAT,))]
    for name in TEXT_FIELDS:
        value = getattr(record, name)
        if value:
            parts.append(_text(name, value))
    if record.summary:
        packed = _classes(record.summary)
        if packed:
            parts.append(_field(_SUMMARY_CLASSES, packed))
        else:
            parts.append(_field(_SUMMARY_JSON, _summary_json(record.summary)))
    if record.payload:
        parts.append(bytes((_PAYLOAD,)) + record.payload)
    return b"".join(parts)


def _summary_json(summary: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(summary, option=_JSON_OPTIONS)
    except TypeError:  # a lone surrogate (fixed below) or a summary JSON cannot hold
        cleaned = {_clean(k) if isinstance(k, str) else k: _clean(v) if isinstance(v, str) else v
                   for k, v in summary.items()}
        try:
            return orjson.dumps(cleaned, option=_JSON_OPTIONS)
        except TypeError as exc:
            raise AuditError(f"audit record summary is not JSON-serialisable: {exc}") from None


def _read_length(data: bytes, at: int) -> tuple[int, int]:
    size = shift = 0
    while True:
        byte = data[at]
        at += 1
        size |= (byte & 0x7F) << shift
        if byte < 0x80:
            return size, at
        shift += 7


def _decode_classes(data: bytes) -> dict[str, Any]:
    size, at = _read_length(data, 0)
    name = data[at:at + size].decode()
    rows, at = _read_length(data, at + size)
    count, at = _read_length(data, at)
    top, confidence = [], []
    for _ in range(count):
        cls, at = _read_length(data, at)
        top.append(cls)
        confidence.append(int.from_bytes(data[at:at + 2], "big") / 10000)
        at += 2
    return {"output": name, "rows": rows, "top_class": top, "confidence": confidence}


def decode(plain: bytes) -> dict[str, Any]:
    """Fields of a format-2 plaintext: every text field ("" when unset), summary, payload."""
    fields: dict[str, Any] = dict.fromkeys(TEXT_FIELDS, "")
    fields["summary"], fields["payload"] = None, None
    at = 1
    while at < len(plain):
        tag = plain[at]
        if tag == _PAYLOAD:
            fields["payload"] = plain[at + 1:] or None
            break
        size, at = _read_length(plain, at + 1)
        value, at = plain[at:at + size], at + size
        if tag == _SUMMARY_CLASSES:
            fields["summary"] = _decode_classes(value)
        elif tag == _SUMMARY_JSON:
            fields["summary"] = orjson.loads(value)
        elif tag == _CLIENT_IP:
            fields["client"] = socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)
        elif tag & _HEX:
            fields[_NAMES[tag & ~_HEX]] = value.hex()
        else:
            fields[_NAMES[tag]] = value.decode("utf-8")
    return fields
