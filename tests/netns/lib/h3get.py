#!/usr/bin/env python3
"""h3get: minimal HTTP/3 GET client built on aioquic's public API.

A standard HTTP/3 client for tests: aioquic (PyPI) does the HTTP/3; this only drives it,
as aioquic's own examples/http3_client.py does.

  python3 h3get.py https://127.0.0.1:4443/path --cafile ca.pem
  python3 h3get.py https://127.0.0.1:4443/path -k          # no cert verification

Prints "status: N", the response headers, and "body-length: N" to stdout.
Exit codes: 0 = complete response received (any status; with --fail, 2xx/3xx only),
1 = connection/TLS/protocol error, 2 = timeout, 3 = HTTP status >= 400 with --fail.
"""
import argparse
import asyncio
import logging
import ssl
import sys
from urllib.parse import urlparse

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


CLOSE_INFO = {}  # filled from ConnectionTerminated so errors can say why


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._waiters = {}  # stream_id -> Future[(headers, body)]
        self._resp = {}  # stream_id -> [headers, bytearray]

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self._waiters:
            self._fail(event.stream_id,
                       ConnectionError(f"stream reset by peer, error_code={event.error_code}"))
        elif isinstance(event, ConnectionTerminated):
            CLOSE_INFO.update(code=event.error_code, reason=event.reason_phrase)
            for sid in list(self._waiters):
                self._fail(sid, ConnectionError(
                    f"connection terminated: error_code={event.error_code} "
                    f"reason={event.reason_phrase!r}"))
        for ev in self._http.handle_event(event):
            sid = getattr(ev, "stream_id", None)
            if sid not in self._waiters:
                continue
            if isinstance(ev, HeadersReceived):
                if self._resp[sid][0] is None:
                    self._resp[sid][0] = ev.headers
                # else: trailers; ignored
            elif isinstance(ev, DataReceived):
                self._resp[sid][1] += ev.data
            if ev.stream_ended:
                fut = self._waiters.pop(sid)
                if not fut.done():
                    fut.set_result(tuple(self._resp.pop(sid)))

    def _fail(self, sid, exc):
        fut = self._waiters.pop(sid, None)
        self._resp.pop(sid, None)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    async def get(self, authority, path, extra_headers=()):
        sid = self._quic.get_next_available_stream_id()
        self._http.send_headers(
            stream_id=sid,
            headers=[
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"h3get (aioquic)"),
            ] + [(k.lower().encode(), v.encode()) for k, v in extra_headers],
            end_stream=True,
        )
        fut = self._loop.create_future()
        self._waiters[sid] = fut
        self._resp[sid] = [None, bytearray()]
        self.transmit()
        return await asyncio.shield(fut)


async def run(args):
    # After a timeout/cancel aioquic may fail an internal (shielded) future that no
    # one awaits any more; keep asyncio from printing "exception never retrieved".
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, ctx: None if isinstance(ctx.get("exception"), ConnectionError)
        else loop.default_exception_handler(ctx))
    u = urlparse(args.url)
    host, port = u.hostname, u.port or 443
    path = (u.path or "/") + (("?" + u.query) if u.query else "")

    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)  # ["h3"]
    cfg.idle_timeout = args.timeout
    if args.insecure:
        cfg.verify_mode = ssl.CERT_NONE
    if args.cafile:
        cfg.load_verify_locations(cafile=args.cafile)
    if args.server_name:
        # Used both as SNI and as the name the certificate is checked against.
        # Default (None) -> connect() uses the URL host. An IP literal is not sent
        # as SNI but is still checked against the cert's IP-address SANs.
        cfg.server_name = args.server_name

    headers = []
    for h in args.header:
        k, _, v = h.partition(":")
        headers.append((k.strip(), v.strip()))

    async with connect(host, port, configuration=cfg, create_protocol=H3Client) as client:
        resp_headers, body = await client.get(u.netloc, path, headers)
        client.close(error_code=ErrorCode.H3_NO_ERROR)
    return resp_headers or [], bytes(body)


def main():
    p = argparse.ArgumentParser(description="HTTP/3 GET using aioquic")
    p.add_argument("url")
    p.add_argument("--cafile", help="PEM CA bundle used to verify the server cert "
                   "(default: certifi's bundle, NOT the system store)")
    p.add_argument("-k", "--insecure", action="store_true",
                   help="disable server certificate verification")
    p.add_argument("--server-name", help="override SNI / verification hostname")
    p.add_argument("-H", "--header", action="append", default=[],
                   help="extra request header 'Name: value' (repeatable)")
    p.add_argument("-t", "--timeout", type=float, default=10.0,
                   help="overall timeout in seconds (default 10)")
    p.add_argument("-o", "--output", help="write the body to this file ('-' = stdout)")
    p.add_argument("-f", "--fail", action="store_true", help="exit 3 if status >= 400")
    p.add_argument("-v", "--verbose", action="store_true", help="aioquic debug logging")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    # Validate inputs up front: aioquic only reads the CA file during the handshake,
    # and a bad path there raises inside a datagram callback -> looks like a timeout.
    u = urlparse(args.url)
    if u.scheme != "https" or not u.hostname:
        print(f"h3get: error: need an https:// URL, got {args.url!r}", file=sys.stderr)
        return 1
    if args.cafile:
        try:
            with open(args.cafile, "rb") as f:
                if b"-----BEGIN CERTIFICATE-----" not in f.read():
                    raise ValueError("no PEM certificate in file")
        except (OSError, ValueError) as e:
            print(f"h3get: error: --cafile {args.cafile}: {e}", file=sys.stderr)
            return 1

    try:
        headers, body = asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        print(f"h3get: timed out after {args.timeout}s", file=sys.stderr)
        return 2
    except Exception as e:  # ConnectionError, TLS alerts, OSError, ...
        why = ""
        if CLOSE_INFO:  # e.g. code 0x12a = CRYPTO_ERROR(0x100) + TLS alert 42
            why = f" (QUIC close 0x{CLOSE_INFO['code']:x}: {CLOSE_INFO['reason']})"
        print(f"h3get: error: {type(e).__name__}: {e}{why}", file=sys.stderr)
        return 1

    status = None
    for k, v in headers:
        if k == b":status":
            status = int(v)
    print(f"status: {status}")
    for k, v in headers:
        if k != b":status":
            print(f"{k.decode(errors='replace')}: {v.decode(errors='replace')}")
    print(f"body-length: {len(body)}")
    if args.output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
    elif args.output:
        with open(args.output, "wb") as f:
            f.write(body)
    if status is None:
        print("h3get: error: no :status in response", file=sys.stderr)
        return 1
    if args.fail and status >= 400:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
