"""A raw HTTP/1.1 client: the request line and header lines go out exactly as given.

httpx, requests and http.client normalise request targets (dot segments, encoding, absolute form)
and refuse odd header names, so they cannot send the spellings these tests are about. One request
per connection (`Connection: close`), the whole response read until NGINX closes it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

Header = tuple[str, str]


@dataclass(frozen=True)
class RawResponse:
    status: int | None
    """None when the connection closed (or was reset) before a status line arrived."""
    head: str
    body: bytes

    @property
    def label(self) -> str:
        return "closed" if self.status is None else str(self.status)

    def header_values(self, name: str) -> list[str]:
        """Every value of a response header, names compared case-insensitively."""
        values = []
        for line in self.head.split("\r\n")[1:]:
            key, colon, value = line.partition(":")
            if colon and key.strip().lower() == name.lower():
                values.append(value.strip())
        return values


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def json_request_headers(host: str, token: str | None, body: bytes) -> list[Header]:
    """What an API client sends with a JSON body: Host, Bearer token, Content-Type, Content-Length."""
    headers = [("Host", host)]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return [*headers, ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]


def send(
    server: tuple[str, int],
    method: str,
    target: str,
    headers: Sequence[Header],
    body: bytes = b"",
    source_ip: str | None = None,
    timeout: float = 30.0,
) -> RawResponse:
    """Send `METHOD TARGET HTTP/1.1`, the headers in order (duplicates kept), and the body.

    `target` is encoded as UTF-8 without any escaping, so raw spaces, tabs and non-ASCII bytes
    reach the server as written. `source_ip` binds the client end (any 127.x address on Linux)
    so that the peer address a proxy reports can be told apart from a spoofed 127.0.0.1.
    """
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers), "Connection: close"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        if source_ip is not None:
            sock.bind((source_ip, 0))
        sock.connect(server)
        try:
            sock.sendall(request)
        except (ConnectionResetError, BrokenPipeError):
            pass  # NGINX may answer and close before reading a body it rejects; read what it sent.
        received = _read_response(sock, head_only=method.upper() == "HEAD")
    head, _, body = received.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ")
    is_status = len(status_line) > 1 and status_line[0].startswith(b"HTTP/1.") and status_line[1].isdigit()
    return RawResponse(int(status_line[1]) if is_status else None, head.decode("latin-1"), body)


def _read_response(sock: socket.socket, head_only: bool) -> bytes:
    """Until the body is complete (Content-Length or last chunk) or the server closes."""
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
            head, separator, body = bytes(received).partition(b"\r\n\r\n")
            if not separator:
                continue
            fields = head.lower()
            if head_only or re.search(rb"^http/1\.\d (204|304) ", fields):
                break
            if length := re.search(rb"\r\ncontent-length: *(\d+)", fields):
                if len(body) >= int(length[1]):
                    break
            elif re.search(rb"\r\ntransfer-encoding: *chunked", fields) and body.endswith(b"0\r\n\r\n"):
                break
    except ConnectionResetError:
        pass  # closed without a (complete) response: whatever arrived is the answer
    return bytes(received)


def send_json(
    server: tuple[str, int], method: str, target: str, token: str | None, payload: dict[str, Any], host: str
) -> RawResponse:
    body = json.dumps(payload).encode()
    return send(server, method, target, json_request_headers(host, token, body), body)
