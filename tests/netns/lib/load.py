"""Venue load through the gateway's proxy for the netns tests: parallel downloads (bytes
checked against the demo origin's pattern), a bid every period, idempotent uploads.
Prints one JSON line with what succeeded and what failed (and why)."""
import json, sys, threading, time, urllib.request, urllib.error

proxy, origin, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
downloads = int(sys.argv[4]) if len(sys.argv) > 4 else 3
size = int(sys.argv[5]) if len(sys.argv) > 5 else 8_000_000
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
CHUNK = bytes((i % 251) for i in range(65536))
lock = threading.Lock()
out = {"downloads_ok": 0, "downloads_failed": 0, "download_bytes": 0, "bids_ok": 0,
       "bids_failed": 0, "bid_max_ms": 0, "uploads_ok": 0, "uploads_failed": 0, "errors": []}
deadline = time.time() + seconds

def note(key, err=None):
    with lock:
        out[key] += 1
        if err is not None and len(out["errors"]) < 20:
            out["errors"].append(f"{key}: {err}")

def download():
    while time.time() < deadline:
        try:
            with opener.open(f"{origin}/assets/{size}", timeout=60) as r:
                pos, bad = 0, False
                while True:
                    b = r.read(65536)
                    if not b:
                        break
                    off = pos % 65536
                    exp = (CHUNK[off:] + CHUNK)[:len(b)] if off + len(b) > 65536 else CHUNK[off:off + len(b)]
                    bad = bad or b != exp
                    pos += len(b)
                with lock:
                    out["download_bytes"] += pos
                if pos != size or bad:
                    note("downloads_failed", f"got {pos} bytes, pattern ok: {not bad}")
                else:
                    note("downloads_ok")
        except Exception as e:
            note("downloads_failed", repr(e))

def bids():
    n = 0
    while time.time() < deadline:
        n += 1
        req = urllib.request.Request(f"{origin}/bid", data=b'{"lot":7,"amount":%d}' % n, method="POST")
        t0 = time.monotonic()
        try:
            with opener.open(req, timeout=15) as r:
                body = r.read()
                with lock:
                    out["bid_max_ms"] = max(out["bid_max_ms"], round((time.monotonic() - t0) * 1000))
                note("bids_ok" if r.status == 200 and b"accepted" in body else "bids_failed",
                     None if r.status == 200 else r.status)
        except Exception as e:
            note("bids_failed", repr(e))
        time.sleep(0.1)

def uploads():
    data = bytes(512 * 1024)
    while time.time() < deadline:
        req = urllib.request.Request(f"{origin}/upload", data=data, method="PUT")
        try:
            with opener.open(req, timeout=30) as r:
                ok = r.status == 200 and r.read().strip() == str(len(data)).encode()
                note("uploads_ok" if ok else "uploads_failed", None if ok else r.status)
        except Exception as e:
            note("uploads_failed", repr(e))

threads = [threading.Thread(target=download) for _ in range(downloads)]
threads += [threading.Thread(target=bids), threading.Thread(target=uploads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
