#!/usr/bin/env python3
"""LL-HLS viewer load for the netns tests and benches (Python 3.11, stdlib only).

  play URL --viewers N --seconds S [--json OUT] [--ramp R]
      N low-latency players (asyncio, raw HTTP/1.1, one keep-alive connection each): load
      the media playlist (a multivariant playlist: its first variant), fetch every new
      listed part that is not GAP=YES, in order, then reload the playlist blocking on the
      next part (_HLS_msn/_HLS_part, from the preload hint). Checks that the listed
      (msn, part) numbers never skip across reloads (segment numbers too, where parts are no
      longer listed). Prints one JSON line; exit 0 iff no HTTP/connection error, no
      continuity violation and every viewer fetched a part.
  slow URL --seconds S
      One viewer with SO_RCVBUF=4096 that requests the playlist, then the preload-hinted part
      (streamed by the server as it is built), and reads nothing for S seconds.
  probe BASE [--token-expired T] [--token-bad T]
      Bad inputs against BASE (http://IP:PORT/live/GW/CAM/REND): each must get its status
      (400/404/403) in under 2 s. Prints a table; exit 1 on any mismatch or slow answer.

Every read is bounded (headers 64 KiB, playlists 1 MiB, parts 32 MiB) and every request has
a timeout (10 s; a blocking playlist reload 10 s plus three target durations).
"""
import argparse
import asyncio
import collections
import json
import re
import socket
import sys
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

HEAD_MAX = 64 * 1024
PLAYLIST_MAX = 1 << 20
PART_MAX = 32 << 20
REQ_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0  # a probe answer is due in 2 s; a hang is cut off here
SAMPLES = 8  # error / violation samples kept in the summary
UA = b"canopy-viewers/1"


class HttpError(Exception):
    """A failed request: connection, timeout or protocol error (not a status)."""


# ---------------------------------------------------------------------------- HTTP/1.1


def split_url(url):
    u = urlsplit(url)
    if u.scheme != "http":
        raise ValueError(f"only http:// URLs: {url!r}")
    host, port = u.hostname, u.port or 80
    if not host:
        raise ValueError(f"no host in {url!r}")
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return host, port, u.netloc, target


class Conn:
    """One keep-alive HTTP/1.1 connection (reconnects when the previous one is unusable)."""

    def __init__(self, host, port, netloc, rcvbuf=None):
        self.host, self.port, self.netloc, self.rcvbuf = host, port, netloc, rcvbuf
        self.reader = self.writer = None
        self.connects = 0

    def close(self):
        if self.writer is not None:
            try:
                self.writer.transport.abort()
            except Exception:
                pass
        self.reader = self.writer = None

    async def connect(self):
        self.close()
        self.connects += 1
        if self.rcvbuf:
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
            except BaseException:
                sock.close()
                raise
            self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=HEAD_MAX)
        else:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=HEAD_MAX)

    async def send(self, target):
        if self.writer is None or self.writer.transport.is_closing():
            await self.connect()
        self.writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: */*\r\n\r\n"
                          % (target.encode("latin-1"), self.netloc.encode("latin-1"), UA))

    async def read_head(self):
        """Status and headers (lowercase names; repeated ones joined with ', ')."""
        r = self.reader
        for _ in range(8):  # a few 1xx at most
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise HttpError("response head over 64 KiB")
            except asyncio.IncompleteReadError as e:
                raise HttpError("connection closed before a response" if not e.partial
                                else "connection closed inside the response head")
            lines = head[:-4].decode("latin-1").split("\r\n")
            sl = lines[0].split(" ", 2)
            if len(sl) < 2 or not sl[0].startswith("HTTP/1.") or not sl[1].isdigit():
                raise HttpError(f"bad status line {lines[0][:80]!r}")
            status = int(sl[1])
            hdrs = {}
            for ln in lines[1:]:
                k, sep, v = ln.partition(":")
                if not sep:
                    raise HttpError(f"bad header line {ln[:80]!r}")
                k, v = k.strip().lower(), v.strip()
                hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
            if 100 <= status < 200 and status != 101:
                continue
            return status, hdrs, sl[0]
        raise HttpError("too many 1xx responses")

    async def read_body(self, status, hdrs, version, limit):
        """The body (bytes), bounded by `limit`; closes the connection if not reusable."""
        r = self.reader
        keep = version != "HTTP/1.0" and "close" not in hdrs.get("connection", "").lower()
        if status in (204, 304):
            body = b""
        elif "chunked" in hdrs.get("transfer-encoding", "").lower():
            buf, total = [], 0
            while True:
                try:
                    line = await r.readuntil(b"\r\n")
                except asyncio.LimitOverrunError:
                    raise HttpError("chunk size line too long")
                except asyncio.IncompleteReadError:
                    raise HttpError(f"connection closed inside a chunked body after {total} bytes")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HttpError(f"bad chunk size line {line[:40]!r}")
                if size < 0:
                    raise HttpError("negative chunk size")
                if size == 0:
                    for _ in range(64):  # trailers
                        try:
                            t = await r.readuntil(b"\r\n")
                        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                            raise HttpError("bad chunked trailer")
                        if t == b"\r\n":
                            break
                    else:
                        raise HttpError("too many trailers")
                    break
                total += size
                if total > limit:
                    raise HttpError(f"body over {limit} bytes")
                try:
                    buf.append(await r.readexactly(size))
                    crlf = await r.readexactly(2)
                except asyncio.IncompleteReadError:
                    raise HttpError(f"connection closed inside a chunk after {total} bytes")
                if crlf != b"\r\n":
                    raise HttpError("chunk not followed by CRLF")
            body = b"".join(buf)
        elif "content-length" in hdrs:
            vals = {v.strip() for v in hdrs["content-length"].split(",")}
            if len(vals) != 1 or not next(iter(vals)).isdigit():
                raise HttpError(f"bad content-length {hdrs['content-length'][:40]!r}")
            n = int(next(iter(vals)))
            if n > limit:
                raise HttpError(f"content-length {n} over {limit}")
            try:
                body = await r.readexactly(n)
            except asyncio.IncompleteReadError as e:
                raise HttpError(f"connection closed after {len(e.partial)} of {n} body bytes")
        else:  # until the connection closes
            keep = False
            buf, total = [], 0
            while True:
                b = await r.read(65536)
                if not b:
                    break
                total += len(b)
                if total > limit:
                    raise HttpError(f"body over {limit} bytes")
                buf.append(b)
            body = b"".join(buf)
        if not keep:
            self.close()
        return body

    async def get(self, target, limit, timeout):
        """(status, headers, body). Raises HttpError (the connection is then closed)."""
        try:
            async with asyncio.timeout(timeout):
                await self.send(target)
                status, hdrs, version = await self.read_head()
                body = await self.read_body(status, hdrs, version, limit)
                return status, hdrs, body
        except HttpError:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise HttpError(f"no complete answer within {timeout:.1f} s")
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as e:
            self.close()
            raise HttpError(f"{type(e).__name__}: {e}")


# ---------------------------------------------------------------------------- playlists

ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
PART_NAME = re.compile(r"(?:^|/)part-(\d+)\.(\d+)\.m4s(?:[?#]|$)")
SEG_NAME = re.compile(r"(?:^|/)seg-(\d+)\.m4s(?:[?#]|$)")
PART_URI = re.compile(r'[:,]URI="([^"]*)"')


def attrs(s):
    return {k: v[1:-1] if v.startswith('"') and v.endswith('"') and len(v) >= 2 else v
            for k, v in ATTR.findall(s)}


def uri_name(uri):
    return uri.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]


class Part:
    __slots__ = ("uri", "gap", "independent", "msn", "idx")

    def __init__(self, uri, gap, independent):
        self.uri, self.gap, self.independent = uri, gap, independent
        self.msn = self.idx = -1


class Seg:
    __slots__ = ("msn", "uri", "parts", "complete", "gap", "discontinuity")

    def __init__(self, uri, parts, complete, gap, discontinuity):
        self.uri, self.parts, self.complete, self.gap = uri, parts, complete, gap
        self.discontinuity = discontinuity
        self.msn = -1


class Playlist:
    """A parsed playlist. Segment numbers come from EXT-X-MEDIA-SEQUENCE (+ skipped) and the
    position; `problems` lists what does not add up (URI names against positions, ...)."""

    def __init__(self, text):
        lines = text.splitlines()
        if not lines or lines[0].strip() != "#EXTM3U":
            raise ValueError("not a playlist (no #EXTM3U first line)")
        self.media_seq = 0
        self.skipped = 0
        self.target = 1.0
        self.part_target = 0.2
        self.ended = False
        self.hint = None
        self.variants = []
        self.segments = []
        self.problems = []
        parts, gap, extinf, stream_inf, disc = [], False, False, False, False
        for ln in lines[1:]:
            if not ln or ln[0] != "#":
                ln = ln.strip()
                if not ln:
                    continue
                if stream_inf:
                    self.variants.append(ln)
                    stream_inf = False
                elif extinf:
                    self.segments.append(Seg(ln, parts, True, gap, disc))
                    parts, gap, extinf, disc = [], False, False, False
                else:
                    self.problems.append(f"URI line without EXTINF: {ln[:60]!r}")
                continue
            if ln.startswith("#EXT-X-PART:"):
                # the hot line: URI, GAP=YES and INDEPENDENT=YES without a full attribute parse
                m = PART_URI.search(ln, 11)
                if m is None:
                    self.problems.append(f"EXT-X-PART without URI: {ln[:80]!r}")
                    continue
                parts.append(Part(m.group(1), ",GAP=YES" in ln or ":GAP=YES" in ln,
                                  ",INDEPENDENT=YES" in ln or ":INDEPENDENT=YES" in ln))
                continue
            if ln.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                continue
            ln = ln.rstrip()
            tag, _, val = ln.partition(":")
            if tag == "#EXTINF":
                extinf = True
            elif tag == "#EXT-X-GAP":
                gap = True
            elif tag == "#EXT-X-DISCONTINUITY":
                disc = True
            elif tag == "#EXT-X-MEDIA-SEQUENCE":
                self.media_seq = int(val)
            elif tag == "#EXT-X-TARGETDURATION":
                self.target = min(max(float(val), 0.1), 60.0)
            elif tag == "#EXT-X-PART-INF":
                pt = attrs(val).get("PART-TARGET")
                if pt:
                    self.part_target = min(max(float(pt), 0.01), 60.0)
            elif tag == "#EXT-X-SKIP":
                self.skipped = int(attrs(val).get("SKIPPED-SEGMENTS", "0"))
            elif tag == "#EXT-X-PRELOAD-HINT":
                a = attrs(val)
                if a.get("TYPE") == "PART" and "URI" in a:
                    self.hint = a["URI"]
            elif tag == "#EXT-X-ENDLIST":
                self.ended = True
            elif tag == "#EXT-X-STREAM-INF":
                stream_inf = True
        if extinf:
            self.problems.append("EXTINF without a URI at the end")
        if parts:
            self.segments.append(Seg(None, parts, False, gap, disc))
        base = self.media_seq + self.skipped
        listing = False
        for k, s in enumerate(self.segments):
            s.msn = base + k
            if s.uri is not None:
                m = SEG_NAME.search(s.uri)
                if m and int(m.group(1)) != s.msn:
                    self.problems.append(f"{uri_name(s.uri)} listed at msn {s.msn}")
            if s.parts:
                listing = True
            elif listing:
                self.problems.append(f"segment {s.msn} lists no parts inside the parts window")
            for i, p in enumerate(s.parts):
                p.msn, p.idx = s.msn, i
                m = PART_NAME.search(p.uri)
                if m and (int(m.group(1)), int(m.group(2))) != (s.msn, i):
                    self.problems.append(f"{uri_name(p.uri)} listed as part ({s.msn},{i})")

    def last_part(self):
        for s in reversed(self.segments):
            if s.parts:
                return (s.msn, len(s.parts) - 1)
        return None

    def next_part(self):
        """The (msn, part) after the last listed one, by the listing itself."""
        if not self.segments:
            return None
        s = self.segments[-1]
        return (s.msn + 1, 0) if s.complete else (s.msn, len(s.parts))

    def hint_part(self):
        if self.hint is None:
            return None
        m = PART_NAME.search(self.hint)
        return (int(m.group(1)), int(m.group(2))) if m else None


def with_directives(url, msn, part):
    u = urlsplit(url)
    q = [kv for kv in u.query.split("&") if kv and not kv.startswith("_HLS_")]
    q += [f"_HLS_msn={msn}", f"_HLS_part={part}"]
    return urlunsplit((u.scheme, u.netloc, u.path, "&".join(q), ""))


def fmp4_ok(b):
    """Top-level boxes tile the body exactly (a cut-off part does not)."""
    n, off = len(b), 0
    if n == 0:
        return False
    while off < n:
        if n - off < 8:
            return False
        size = int.from_bytes(b[off:off + 4], "big")
        if size == 1:
            if n - off < 16:
                return False
            size = int.from_bytes(b[off + 8:off + 16], "big")
        elif size == 0:
            size = n - off
        if size < 8 or off + size > n:
            return False
        off += size
    return True


# ---------------------------------------------------------------------------- a viewer


class Continuity:
    """What a viewer has seen listed, to check each new playlist against."""

    def __init__(self):
        self.frontier = None      # last listed (msn, part) so far
        self.nparts = {}          # msn -> parts seen listed
        self.complete = {}        # msn -> parts when seen complete (None: parts not listed)
        self.max_seg = None
        self.media_seq = None

    def check(self, pl, requested):
        """Violations (strings) and lag notes of playlist `pl` (answer to a blocking
        request for `requested`, or None)."""
        bad, lag = [], []
        segs = pl.segments
        if self.media_seq is not None and pl.media_seq < self.media_seq:
            bad.append(f"EXT-X-MEDIA-SEQUENCE went back from {self.media_seq} to {pl.media_seq}")
        if segs:
            first, last = segs[0].msn, segs[-1].msn
            if self.max_seg is not None and first > self.max_seg + 1 and pl.skipped == 0:
                bad.append(f"segments {self.max_seg + 1}..{first - 1} never listed "
                           f"(last seen {self.max_seg}, now from {first})")
            if self.max_seg is not None and last < self.max_seg:
                bad.append(f"playlist ends at msn {last}, msn {self.max_seg} was listed before")
        for s in segs:
            n = len(s.parts)
            if s.parts and n < self.nparts.get(s.msn, 0):
                bad.append(f"segment {s.msn} lists {n} parts, {self.nparts[s.msn]} were listed before")
            c = self.complete.get(s.msn, -1)
            if c != -1:
                if not s.complete:
                    bad.append(f"segment {s.msn} was complete, now open again")
                elif c is not None and s.parts and n != c:
                    bad.append(f"complete segment {s.msn} had {c} parts, now {n}")
        listed = [(p.msn, p.idx) for s in segs for p in s.parts]
        fr = self.frontier
        new = [x for x in listed if fr is None or x > fr]
        if fr is not None and new:
            nxt = new[0]
            fm, fi = fr
            by_seg = {s.msn: s for s in segs}
            sf = by_seg.get(fm)
            fm_done = (sf is not None and sf.complete and (not sf.parts or len(sf.parts) == fi + 1)) \
                or self.complete.get(fm, -1) == fi + 1
            if nxt == (fm, fi + 1) or (nxt == (fm + 1, 0) and fm_done):
                pass
            elif nxt[1] == 0 and (sf is None or (sf.complete and not sf.parts)):
                # the viewer fell behind the parts window (segment numbers are checked above)
                lag.append(f"parts after ({fm},{fi}) left the parts window; next listed {nxt}")
            else:
                bad.append(f"listed parts skip: after ({fm},{fi}) the next listed is {nxt} "
                           f"(media sequence {pl.media_seq}, segments {segs[0].msn}..{segs[-1].msn})")
        if requested is not None and not pl.ended:
            lp = pl.last_part()
            rm, rp = requested
            rs = next((s for s in segs if s.msn == rm), None)
            met = (lp is not None and lp >= (rm, rp)) or (rs is not None and rs.complete
                                                          and rp >= len(rs.parts))
            if not met:
                bad.append(f"blocking reload for msn={rm} part={rp} answered without it "
                           f"(last listed part {lp})")
        nx, hp = pl.next_part(), pl.hint_part()
        if not pl.ended and pl.hint is not None and hp != nx:
            bad.append(f"preload hint {uri_name(pl.hint)} but the part after the listing is {nx}")
        for p in pl.problems:
            bad.append(f"playlist: {p}")
        # update
        if listed and (fr is None or listed[-1] > fr):
            self.frontier = listed[-1]
        for s in segs:
            if s.parts:
                self.nparts[s.msn] = max(len(s.parts), self.nparts.get(s.msn, 0))
            if s.complete:
                if s.parts:
                    self.complete[s.msn] = len(s.parts)
                else:
                    self.complete.setdefault(s.msn, None)
        if segs:
            self.max_seg = max(self.max_seg if self.max_seg is not None else -1, segs[-1].msn)
            if len(self.nparts) > 64 or len(self.complete) > 64:
                keep = self.max_seg - 32
                self.nparts = {k: v for k, v in self.nparts.items() if k >= keep}
                self.complete = {k: v for k, v in self.complete.items() if k >= keep}
        self.media_seq = max(self.media_seq or 0, pl.media_seq)
        return bad, lag


class Viewer:
    def __init__(self, vid, url):
        self.vid, self.url = vid, url
        self.status = collections.Counter()
        self.requests = 0
        self.errors = 0
        self.error_samples = []
        self.pl_ms, self.pl_block_ms, self.part_ms, self.listed_to_fetched_ms = [], [], [], []
        self.parts_fetched = 0
        self.part_bytes = 0
        self.bad_parts = []
        self.gap_parts = 0
        self.gap_segments = 0
        self.violations = []
        self.nviolations = 0
        self.lag = []
        self.nlag = 0
        self.ended = False
        self.connects = 0
        self.gapflips = 0
        self.discontinuities = 0
        self.disc_samples = []

    def err(self, url, reason):
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(f"viewer {self.vid}: {reason}: GET {url}")

    def violation(self, text):
        self.nviolations += 1
        if len(self.violations) < 3:
            self.violations.append(f"viewer {self.vid}: {text}")


async def run_viewer(v, stop_at, stopping):
    """One player until `stop_at` (monotonic) or ENDLIST."""
    host, port, netloc, _ = split_url(v.url)
    conn = Conn(host, port, netloc)
    seen = {}            # part URI -> GAP flag
    first_listed = {}    # part URI -> when a blocking answer first listed it
    gap_segs = set()
    disc_segs = set()
    cont_started = False  # discontinuities in the first playlist are old news
    cont = Continuity()
    media_url = None
    media_dir = None     # path of the media playlist's directory
    url = v.url
    requested = None     # (msn, part) of the blocking request in flight
    target = 1.0

    async def fetch(u, limit, timeout, tgt=None):
        if tgt is None:
            h, p, nl, tgt = split_url(u)
            if (h, p) != (host, port):
                raise HttpError(f"URI on another host: {u}")
        t0 = time.monotonic()
        v.requests += 1
        try:
            st, hd, body = await conn.get(tgt, limit, timeout)
        finally:
            v.connects = conn.connects
        t1 = time.monotonic()
        v.status[st] += 1
        return st, hd, body, t0, t1

    try:
        while time.monotonic() < stop_at and not stopping.is_set():
            blocking = requested is not None
            timeout = REQ_TIMEOUT + (3 * target if blocking else 0)
            try:
                st, hd, body, t0, t1 = await fetch(url, PLAYLIST_MAX, timeout)
            except HttpError as e:
                v.err(url, str(e))
                requested, url = None, media_url or v.url
                await asyncio.sleep(0.3)
                continue
            (v.pl_block_ms if blocking else v.pl_ms).append((t1 - t0) * 1000)
            if not 200 <= st < 300:
                reason = hd.get("canopy-reason", body[:80].decode("utf-8", "replace").strip())
                v.err(url, f"HTTP {st} ({reason})")
                requested, url = None, media_url or v.url
                await asyncio.sleep(0.3)
                continue
            try:
                pl = Playlist(body.decode("utf-8", "replace"))
            except (ValueError, IndexError) as e:
                v.err(url, f"bad playlist: {e}")
                requested, url = None, media_url or v.url
                await asyncio.sleep(0.3)
                continue
            if pl.variants and not pl.segments:
                if media_url is not None:
                    v.err(url, "a multivariant playlist where a media playlist was")
                    break
                media_url = urljoin(url, pl.variants[0])
                url = media_url
                continue
            if media_url is None:
                media_url = url
            if media_dir is None:
                mpath = urlsplit(media_url).path
                media_dir = mpath[:mpath.rfind("/") + 1] or "/"
            target = pl.target
            cont_started = cont.frontier is not None
            bad, lag = cont.check(pl, requested)
            for b in bad:
                v.violation(b)
            v.nlag += len(lag)
            if lag and len(v.lag) < 2:
                v.lag.extend(f"viewer {v.vid}: {x}" for x in lag[:2 - len(v.lag)])
            for s in pl.segments:
                if s.gap and s.complete and s.msn not in gap_segs:
                    gap_segs.add(s.msn)
                    v.gap_segments += 1
                if s.discontinuity and s.msn not in disc_segs:
                    disc_segs.add(s.msn)
                    if cont_started:
                        v.discontinuities += 1
                        if len(v.disc_samples) < 2:
                            v.disc_samples.append(f"viewer {v.vid}: EXT-X-DISCONTINUITY before "
                                                  f"msn {s.msn}")
            todo = []
            for s in pl.segments:
                for p in s.parts:
                    g = seen.get(p.uri)
                    if g is None:
                        seen[p.uri] = p.gap
                        if p.gap:
                            v.gap_parts += 1
                        else:
                            todo.append(p)
                            if blocking:
                                first_listed[p.uri] = t1
                    elif g != p.gap:
                        v.gapflips += 1
                        v.violation(f"{uri_name(p.uri)} listed with GAP={'YES' if p.gap else 'NO'}"
                                    f", before GAP={'YES' if g else 'NO'}")
                        seen[p.uri] = p.gap
            for p in todo:
                if time.monotonic() >= stop_at or stopping.is_set():
                    break
                if p.uri[:1] not in ("/", ".", "") and ":" not in p.uri.split("?", 1)[0]:
                    tgt = media_dir + p.uri  # a plain relative URI: the usual case
                    pu = f"http://{netloc}{tgt}"
                else:
                    pu, tgt = urljoin(media_url, p.uri), None
                try:
                    st, hd, body, t0, t1 = await fetch(pu, PART_MAX, REQ_TIMEOUT, tgt)
                except HttpError as e:
                    v.err(pu, str(e))
                    continue
                v.part_ms.append((t1 - t0) * 1000)
                if not 200 <= st < 300:
                    reason = hd.get("canopy-reason", body[:80].decode("utf-8", "replace").strip())
                    v.err(pu, f"HTTP {st} ({reason})")
                    continue
                v.parts_fetched += 1
                v.part_bytes += len(body)
                if not fmp4_ok(body) and len(v.bad_parts) < 3:
                    v.bad_parts.append(f"viewer {v.vid}: {uri_name(p.uri)}: {len(body)} bytes "
                                       f"are not whole MP4 boxes")
                fl = first_listed.pop(p.uri, None)
                if fl is not None:
                    v.listed_to_fetched_ms.append((t1 - fl) * 1000)
            if len(seen) > 4096:
                keep = cont.frontier[0] - 20 if cont.frontier else 0
                seen = {u: g for u, g in seen.items()
                        if (m := PART_NAME.search(u)) is None or int(m.group(1)) >= keep}
            if pl.ended:
                v.ended = True
                break
            nxt = pl.hint_part() or pl.next_part()
            if nxt is None:
                requested, url = None, media_url
                await asyncio.sleep(min(0.5, pl.part_target))
                continue
            if blocking and nxt == requested:
                # an answer that did not move (reported above): do not spin on it
                await asyncio.sleep(min(0.5, pl.part_target / 2))
            requested = nxt
            url = with_directives(media_url, *nxt)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a client bug must not hide the rest of the run
        v.err(url, f"client exception {type(e).__name__}: {e}")
    finally:
        conn.close()


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return round(xs[k], 1)


async def play(args):
    viewers = [Viewer(i, args.url) for i in range(args.viewers)]
    stopping = asyncio.Event()
    lag = []

    async def monitor():
        while not stopping.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.1)
            lag.append((time.monotonic() - t - 0.1) * 1000)

    async def start(v, delay, stop_at):
        await asyncio.sleep(delay)
        await run_viewer(v, stop_at, stopping)

    t_start = time.monotonic()
    stop_at = t_start + args.seconds
    mon = asyncio.create_task(monitor())
    ramp = max(0.0, min(args.ramp, args.seconds / 4))
    tasks = [asyncio.create_task(start(v, ramp * i / max(1, len(viewers)), stop_at))
             for i, v in enumerate(viewers)]
    await asyncio.wait(tasks, timeout=args.seconds)
    stopping.set()
    # requests in flight finish (each has its own timeout); then nothing is left
    _, pending = await asyncio.wait(tasks, timeout=REQ_TIMEOUT + 3 * 10 + 1)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2)
    mon.cancel()
    elapsed = time.monotonic() - t_start

    def gather(attr):
        return [x for v in viewers for x in getattr(v, attr)]

    def samples(attr):
        return [x for v in viewers for x in getattr(v, attr)][:SAMPLES]

    status = collections.Counter()
    for v in viewers:
        status.update(v.status)
    errors = sum(v.errors for v in viewers)
    violations = sum(v.nviolations for v in viewers)
    no_parts = [v.vid for v in viewers if v.parts_fetched == 0]
    pl, plb, pm, lf = gather("pl_ms"), gather("pl_block_ms"), gather("part_ms"), gather(
        "listed_to_fetched_ms")
    out = {
        "ok": errors == 0 and violations == 0 and not no_parts and len(viewers) > 0,
        "viewers": len(viewers),
        "seconds": args.seconds,
        "elapsed_s": round(elapsed, 2),
        "url": args.url,
        "requests": sum(v.requests for v in viewers),
        "status_counts": {str(k): n for k, n in sorted(status.items())},
        "http_errors": errors,
        "error_samples": samples("error_samples"),
        "parts_fetched": sum(v.parts_fetched for v in viewers),
        "part_bytes": sum(v.part_bytes for v in viewers),
        "gap_parts_seen": sum(v.gap_parts for v in viewers),
        "gap_segments_seen": sum(v.gap_segments for v in viewers),
        "continuity_violations": violations,
        "violation_samples": samples("violations"),
        "viewers_without_parts": len(no_parts),
        "viewers_ended": sum(v.ended for v in viewers),
        "behind_parts_window": sum(v.nlag for v in viewers),
        "behind_samples": samples("lag"),
        "discontinuities_seen": sum(v.discontinuities for v in viewers),
        "discontinuity_samples": samples("disc_samples"),
        "bad_parts": sum(len(v.bad_parts) for v in viewers),
        "bad_part_samples": samples("bad_parts"),
        "connections": sum(v.connects for v in viewers),
        "playlist_p50_ms": pct(pl + plb, 50), "playlist_p95_ms": pct(pl + plb, 95),
        "playlist_plain_p50_ms": pct(pl, 50), "playlist_plain_p95_ms": pct(pl, 95),
        "playlist_blocking_p50_ms": pct(plb, 50), "playlist_blocking_p95_ms": pct(plb, 95),
        "playlist_max_ms": pct(pl + plb, 100),
        "part_fetch_p50_ms": pct(pm, 50), "part_fetch_p95_ms": pct(pm, 95),
        "part_fetch_max_ms": pct(pm, 100),
        "listed_to_fetched_p50_ms": pct(lf, 50), "listed_to_fetched_p95_ms": pct(lf, 95),
        "listed_to_fetched_max_ms": pct(lf, 100),
        "client_loop_lag_p95_ms": pct(lag, 95), "client_loop_lag_max_ms": pct(lag, 100),
    }
    line = json.dumps(out, separators=(",", ":"))
    print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    return 0 if out["ok"] else 1


# ---------------------------------------------------------------------------- slow


async def slow(args):
    host, port, netloc, _ = split_url(args.url)
    conn = Conn(host, port, netloc, rcvbuf=4096)
    url = args.url
    note = {"url": args.url, "seconds": args.seconds}
    try:
        await asyncio.wait_for(conn.connect(), REQ_TIMEOUT)
        sock = conn.writer.get_extra_info("socket")
        note["rcvbuf"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        pl = None
        for _ in range(3):
            st, hd, body = await conn.get(split_url(url)[3], PLAYLIST_MAX, REQ_TIMEOUT)
            if st != 200:
                raise HttpError(f"HTTP {st} for {url} ({hd.get('canopy-reason', '')})")
            pl = Playlist(body.decode("utf-8", "replace"))
            if pl.variants and not pl.segments:
                url = urljoin(url, pl.variants[0])
                continue
            break
        if pl is None or pl.hint is None:
            raise HttpError(f"no preload hint in {url}")
        part = urljoin(url, pl.hint)
        if split_url(part)[:2] != (host, port):
            raise HttpError(f"hint on another host: {part}")
        note["part"] = uri_name(pl.hint)
        if conn.writer is None:
            await asyncio.wait_for(conn.connect(), REQ_TIMEOUT)
        conn.writer.transport.pause_reading()  # from now on nothing is read
        await conn.send(split_url(part)[3])
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        note["held_s"] = round(time.monotonic() - t0, 2)
        # what the server managed to send meanwhile (a little, then reading stops again)
        conn.writer.transport.resume_reading()
        try:
            async with asyncio.timeout(2):
                st, hd, version = await conn.read_head()
            note["status"] = st
            note["transfer"] = "chunked" if "chunked" in hd.get("transfer-encoding", "") \
                else f"length {hd.get('content-length', '?')}"
            # and the rest of the part, now that it is read again
            try:
                async with asyncio.timeout(5):
                    body = await conn.read_body(st, hd, version, PART_MAX)
                note["body_bytes"] = len(body)
                note["body_whole_mp4_boxes"] = fmp4_ok(body)
            except (TimeoutError, HttpError, OSError) as e:
                note["body_error"] = str(e) or "body not complete within 5 s after the hold"
        except (TimeoutError, HttpError) as e:
            note["status"] = None
            note["head_error"] = str(e) or "no response head within 2 s after the hold"
        note["ok"] = note.get("status") == 200 and "body_error" not in note
    except (HttpError, OSError, ValueError, TimeoutError) as e:
        note["ok"] = False
        note["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    print("slow: " + json.dumps(note, separators=(",", ":")), flush=True)
    return 0 if note["ok"] else 1


# ---------------------------------------------------------------------------- probe


async def probe(args):
    base = args.base.rstrip("/")
    host, port, netloc, _ = split_url(base + "/stream.m3u8")
    rows = []

    async def one(name, url, expect):
        conn = Conn(host, port, netloc)
        t0 = time.monotonic()
        try:
            st, hd, body = await conn.get(split_url(url)[3], PLAYLIST_MAX, PROBE_TIMEOUT)
            reason = hd.get("canopy-reason", "")
        except HttpError as e:
            st, body, reason = None, b"", str(e)
        finally:
            conn.close()
        ms = (time.monotonic() - t0) * 1000
        good = st in expect and ms < 2000
        rows.append((name, "/".join(map(str, expect)), st, ms, good, reason, url))
        return st, body

    st, body = await one("playlist", base + "/stream.m3u8", (200,))
    last = None
    if st == 200:
        try:
            pl = Playlist(body.decode("utf-8", "replace"))
            last = pl.media_seq + pl.skipped + len(pl.segments)
        except (ValueError, IndexError) as e:
            rows.append(("parse playlist", "-", None, 0, False, str(e), base + "/stream.m3u8"))
    if last is not None:
        u = urlsplit(base)
        segs = u.path.rstrip("/").split("/")
        other = urlunsplit((u.scheme, u.netloc, "/".join(segs[:-2] + ["nosuchcam", segs[-1]]),
                            "", ""))
        cases = [
            ("_HLS_msn=abc", "/stream.m3u8?_HLS_msn=abc", (400,)),
            ("_HLS_part without msn", "/stream.m3u8?_HLS_part=1", (400,)),
            (f"_HLS_msn=last+100 ({last + 100})", f"/stream.m3u8?_HLS_msn={last + 100}", (400,)),
            (f"_HLS_msn=last ({last}) part 500", f"/stream.m3u8?_HLS_msn={last}&_HLS_part=500",
             (400,)),
            ("_HLS_skip=maybe", "/stream.m3u8?_HLS_skip=maybe", (400,)),
            ("part-abc.m4s", "/part-abc.m4s", (400,)),
            ("part-1.2.3.m4s", "/part-1.2.3.m4s", (400, 404)),
            ("seg-1.m4s (very old)", "/seg-1.m4s", (404,)),
        ]
        for n, p, e in cases[:5]:
            await one(n, base + p, e)
        await one("unknown camera", other + "/stream.m3u8", (404,))
        for n, p, e in cases[5:]:
            await one(n, base + p, e)
        for flag, tok in (("expired token", args.token_expired), ("bad token", args.token_bad)):
            if tok:
                await one(flag, f"{base}/stream.m3u8?token={tok}", (403,))
    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  {'expect':<7}  got   ms       result  reason")
    for name, exp, st, ms, good, reason, url in rows:
        print(f"{name:<{w}}  {exp:<7}  {str(st):<4}  {ms:<8.1f} {'ok' if good else 'FAIL':<6}  "
              f"{reason[:70]}" + ("" if good else f"  [GET {url}]"))
    bad = [r for r in rows if not r[4]]
    print(f"probe: {len(rows) - len(bad)}/{len(rows)} ok" + (
        "" if last is not None else " (no playlist: the other cases were not run)"))
    return 0 if not bad and last is not None else 1


# ---------------------------------------------------------------------------- main


def raise_nofile(n):
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("play", help="N low-latency viewers")
    p.add_argument("url")
    p.add_argument("--viewers", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--json")
    p.add_argument("--ramp", type=float, default=1.0,
                   help="spread the viewers' starts over this many seconds (default 1)")
    s = sub.add_parser("slow", help="a viewer that reads nothing")
    s.add_argument("url")
    s.add_argument("--seconds", type=float, default=30)
    q = sub.add_parser("probe", help="bad inputs get 400/404/403 at once")
    q.add_argument("base")
    q.add_argument("--token-expired")
    q.add_argument("--token-bad")
    args = ap.parse_args()
    if args.cmd == "play":
        if not 1 <= args.viewers <= 10000 or not 0 < args.seconds <= 86400:
            ap.error("--viewers 1..10000, --seconds > 0")
        raise_nofile(args.viewers + 256)
        return asyncio.run(play(args))
    if args.cmd == "slow":
        if not 0 <= args.seconds <= 86400:
            ap.error("--seconds >= 0")
        return asyncio.run(slow(args))
    return asyncio.run(probe(args))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
