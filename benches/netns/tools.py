"""Load, sampling and analysis for the netns benches (bonding, failover). Standard library
only. Every command prints one JSON document on stdout.

  upload PROXY ORIGIN SECONDS PARALLEL SIZE   keep PARALLEL uploads (PUT: idempotent, so the
                                              gateway may re-send them) of SIZE bytes busy
  download PROXY ORIGIN SECONDS PARALLEL SIZE PERIOD_MS
                                              keep PARALLEL downloads of SIZE bytes busy;
                                              the bytes received over time
  bids PROXY ORIGIN SECONDS PERIOD_MS         a bid every PERIOD_MS; times and failures
  sample URL SECONDS PERIOD_MS                the origin's upload_bytes over time
  mptcp-server ADDR PORT SECONDS PERIOD_MS [SIZE]
                                              count bytes of MPTCP connections over time;
                                              with SIZE, answer one byte per SIZE received
  mptcp-client ADDR PORT SECONDS PARALLEL [SIZE]
                                              PARALLEL MPTCP connections sending zeros; with
                                              SIZE, transfers of SIZE bytes back to back,
                                              each waiting for the server's answer (as an
                                              upload waits for its response)
  mptcp-source ADDR PORT SECONDS              an MPTCP server sending zeros to every client
  mptcp-sink ADDR PORT SECONDS PARALLEL PERIOD_MS
                                              PARALLEL MPTCP connections receiving; the
                                              bytes received over time
  analyze SAMPLES CUT_AT RETURN_AT REMAINING_MBPS FULL_MBPS [BIDS]
"""
import json, socket, sys, threading, time, urllib.request

IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)


def upload(proxy, origin, seconds, parallel, size):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    data = bytes(int(size))
    deadline = time.time() + float(seconds)
    out = {"ok": 0, "failed": 0, "errors": []}
    lock = threading.Lock()

    def run():
        while time.time() < deadline:
            req = urllib.request.Request(f"{origin}/upload", data=data, method="PUT")
            try:
                with opener.open(req, timeout=60) as r:
                    r.read()
                    key = "ok" if r.status == 200 else "failed"
            except Exception as e:
                key = "failed"
                reason = getattr(e, "headers", None) and e.headers.get("canopy-reason")
                with lock:
                    if len(out["errors"]) < 10:
                        out["errors"].append(f"{e!r} {reason or ''}")
            with lock:
                out[key] += 1

    ts = [threading.Thread(target=run) for _ in range(int(parallel))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


class Sampler:
    """Bytes received, sampled every PERIOD_MS until stopped."""

    def __init__(self, period_ms):
        self.total, self.samples = 0, []
        self.lock = threading.Lock()
        self.period = float(period_ms) / 1000
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def add(self, n):
        with self.lock:
            self.total += n

    def run(self):
        while not self.done.is_set():
            with self.lock:
                self.samples.append((time.time(), self.total))
            time.sleep(self.period)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.samples


def download(proxy, origin, seconds, parallel, size, period_ms):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    deadline = time.time() + float(seconds)
    out = {"ok": 0, "failed": 0, "errors": []}
    lock = threading.Lock()
    sampler = Sampler(period_ms)

    def run():
        while time.time() < deadline:
            try:
                with opener.open(f"{origin}/assets/{int(size)}", timeout=60) as r:
                    while time.time() < deadline:
                        # what has come (as the MPTCP sink's recv): a whole 64 KiB read
                        # would read a slow stretch as a stall
                        b = r.read1(1 << 16)
                        if not b:
                            break
                        sampler.add(len(b))
                    key = "ok"
            except Exception as e:
                key = "failed"
                with lock:
                    if len(out["errors"]) < 10:
                        out["errors"].append(repr(e))
            with lock:
                out[key] += 1

    ts = [threading.Thread(target=run) for _ in range(int(parallel))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out["samples"] = sampler.stop()
    return out


def bids(proxy, origin, seconds, period_ms):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    deadline = time.time() + float(seconds)
    period = float(period_ms) / 1000
    sent = []  # (t_sent, rtt_ms or None)
    lock = threading.Lock()

    def one(n, t0):
        req = urllib.request.Request(f"{origin}/bid", data=b'{"lot":1,"amount":%d}' % n, method="POST")
        try:
            with opener.open(req, timeout=30) as r:
                ok = r.status == 200 and b"accepted" in r.read()
        except Exception:
            ok = False
        with lock:
            sent.append((t0, (time.time() - t0) * 1000 if ok else None))

    threads, n, nxt = [], 0, time.time()
    while nxt < deadline:
        time.sleep(max(0.0, nxt - time.time()))
        n += 1
        t = threading.Thread(target=one, args=(n, time.time()))
        t.start()
        threads.append(t)
        nxt += period
    for t in threads:
        t.join()
    return {"bids": sorted(sent)}


def sample(url, seconds, period_ms):
    deadline = time.time() + float(seconds)
    period = float(period_ms) / 1000
    out = []
    while time.time() < deadline:
        t = time.time()
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                out.append((t, json.loads(r.read())["upload_bytes"]))
        except Exception:
            pass
        time.sleep(max(0.0, period - (time.time() - t)))
    return {"samples": out}


def mptcp_server(addr, port, seconds, period_ms, size=0):
    size = int(size)
    total = [0]
    lock = threading.Lock()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(64)

    def serve(c):
        got = 0
        while True:
            try:
                b = c.recv(1 << 16)
            except OSError:
                return
            if not b:
                return
            with lock:
                total[0] += len(b)
            got += len(b)
            while size and got >= size:
                got -= size
                try:
                    c.sendall(b"k")
                except OSError:
                    return

    def accept():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    deadline = time.time() + float(seconds)
    out = []
    while time.time() < deadline:
        with lock:
            out.append((time.time(), total[0]))
        time.sleep(float(period_ms) / 1000)
    return {"samples": out}


def mptcp_client(addr, port, seconds, parallel, size=0):
    deadline = time.time() + float(seconds)
    buf = bytes(1 << 16)
    size = int(size)

    def answered(s):
        while time.time() < deadline:
            try:
                return len(s.recv(1)) == 1
            except socket.timeout:
                continue
        return False

    def run():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.connect((addr, int(port)))
        s.settimeout(1.0)
        left = size
        while time.time() < deadline:
            try:
                n = s.send(buf[:left] if size else buf)
            except socket.timeout:
                continue
            except OSError:
                time.sleep(0.05)
                continue
            if size:
                left -= n
                if left == 0:
                    if not answered(s):
                        break
                    left = size
        s.close()

    ts = [threading.Thread(target=run) for _ in range(int(parallel))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"ok": True}


def mptcp_source(addr, port, seconds):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(64)
    srv.settimeout(0.5)
    deadline = time.time() + float(seconds)
    buf = bytes(1 << 16)

    def serve(c):
        c.settimeout(1.0)
        while time.time() < deadline:
            try:
                c.send(buf)
            except socket.timeout:
                continue
            except OSError:
                return
        c.close()

    while time.time() < deadline:
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    return {"ok": True}


def mptcp_sink(addr, port, seconds, parallel, period_ms):
    deadline = time.time() + float(seconds)
    sampler = Sampler(period_ms)

    def run():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.connect((addr, int(port)))
        s.settimeout(1.0)
        while time.time() < deadline:
            try:
                b = s.recv(1 << 16)
            except socket.timeout:
                continue
            if not b:
                break
            sampler.add(len(b))
        s.close()

    ts = [threading.Thread(target=run) for _ in range(int(parallel))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"samples": sampler.stop()}


def rate_windows(samples, window):
    """(t, Mbit/s over the `window` seconds before t) at every sample."""
    out, j = [], 0
    for i, (t, b) in enumerate(samples):
        while samples[j][0] < t - window:
            j += 1
        if j < i and t - samples[j][0] > window / 2:
            out.append((t, (b - samples[j][1]) * 8 / (t - samples[j][0]) / 1e6))
    return out


def analyze(samples_file, cut_at, return_at, remaining_mbps, full_mbps, bids_file=None):
    samples = json.load(open(samples_file))["samples"]
    cut_at, return_at = float(cut_at), float(return_at)
    # longest gap in delivered bytes, from one second before the cut to the run's end
    stall, stall_at, last_t, last_b = 0.0, None, None, None
    # the longest gap beginning near the cut, near the return, and anywhere else (a stall
    # without a fault)
    near = {"cut": 0.0, "return": 0.0, "steady": 0.0}
    for t, b in samples:
        if t < cut_at - 1:
            last_t, last_b = t, b
            continue
        if last_b is None or b > last_b:
            if last_t is not None:
                gap = t - last_t
                if gap > stall:
                    stall, stall_at = gap, last_t
                if cut_at - 0.5 <= last_t < cut_at + 2:
                    k = "cut"
                elif return_at - 0.5 <= last_t < return_at + 2:
                    k = "return"
                else:
                    k = "steady"
                near[k] = max(near[k], gap)
            last_t, last_b = t, b
    rates = rate_windows(samples, 0.25)
    def first_at(after, threshold, before=None):
        for t, r in rates:
            if t >= after + 0.25 and (before is None or t <= before) and r >= threshold:
                return round((t - after) * 1000)
        return None
    out = {
        "max_stall_ms": round(stall * 1000),
        # where the longest gap began, from the cut (negative: before it)
        "max_stall_at_ms": round((stall_at - cut_at) * 1000) if stall_at is not None else None,
        "cut_stall_ms": round(near["cut"] * 1000),
        "return_stall_ms": round(near["return"] * 1000),
        "steady_stall_ms": round(near["steady"] * 1000),
        "return_at_ms": round((return_at - cut_at) * 1000),
        "recover80_ms": first_at(cut_at, 0.8 * float(remaining_mbps), return_at),
        "restore_full_ms": first_at(return_at, 0.9 * float(full_mbps)),
        "mbps_before_cut": round(sum(r for t, r in rates if cut_at - 3 <= t < cut_at) / max(1, len([1 for t, r in rates if cut_at - 3 <= t < cut_at])), 2),
        "mbps_during_cut": round(sum(r for t, r in rates if cut_at + 1.5 <= t < return_at) / max(1, len([1 for t, r in rates if cut_at + 1.5 <= t < return_at])), 2),
        "mbps_after_return": round(sum(r for t, r in rates if return_at + 3 <= t) / max(1, len([1 for t, r in rates if return_at + 3 <= t])), 2),
    }
    if bids_file:
        b = json.load(open(bids_file))["bids"]
        during = sorted(r for t, r in b if cut_at <= t < return_at and r is not None)
        out["bids_sent"] = len(b)
        out["bids_lost"] = sum(1 for _, r in b if r is None)
        out["bid_p99_ms_during_cut"] = round(during[min(len(during) - 1, int(len(during) * 0.99))], 1) if during else None
        allr = sorted(r for _, r in b if r is not None)
        out["bid_p50_ms"] = round(allr[len(allr) // 2], 1) if allr else None
    return out


def goodput(samples_file, t0, offset, duration):
    """Mean Mbit/s from t0+offset for duration seconds: the least-squares slope of the
    delivered bytes over every sample in that window. A striped or multipath transfer
    reaches the origin in bursts (in-order delivery waits for the slowest path's piece), so
    the difference between two single samples is off by up to a burst. The slope is less
    so, but a burst near either end of the window still moves it by up to a burst over the
    window's length: measured, MPTCP's downloads over the bonding bench's links came in
    bursts of up to 1.8 MB, and their slope over 20 s read 0.948-0.965 of nominal as the
    window moved by a second (Canopy's, in bursts under 0.42 MB, 0.953-0.954)."""
    s = json.load(open(samples_file))["samples"]
    start = float(t0) + float(offset)
    end = start + float(duration)
    w = [(t, b) for t, b in s if start <= t <= end]
    if len(w) < 3:
        return {"mbps": 0.0}
    n = len(w)
    mt = sum(t for t, _ in w) / n
    mb = sum(b for _, b in w) / n
    var = sum((t - mt) ** 2 for t, _ in w)
    slope = sum((t - mt) * (b - mb) for t, b in w) / var if var > 0 else 0.0
    return {"mbps": slope * 8 / 1e6}


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"upload": upload, "download": download, "bids": bids, "sample": sample,
          "mptcp-server": mptcp_server, "mptcp-client": mptcp_client,
          "mptcp-source": mptcp_source, "mptcp-sink": mptcp_sink, "analyze": analyze,
          "goodput": goodput}[cmd]
    print(json.dumps(fn(*args)))
