"""Load (issue 5): one ``streamlit run app.py`` server, five concurrent scripted clients.

The server runs on a free localhost port with ``CLUSTERMINE_RUNS_ROOT`` pointing at a copy of a
small real run (tiny open_clip model, real photos). Five client threads, localhost only, bounded in
number and time, each (1) GET ``/_stcore/health`` and the page URL with ``?run=<id>``, and (2) open
a real Streamlit session over the websocket (the protocol the browser speaks) and run the Runs,
Concepts and Audit pages for that run, which must all finish without an exception. The server's
resident memory is printed before and after (see BENCHMARKS.md, "Load (issue 5)").
A server that does not start fails the tests (streamlit and its websockets are pinned requirements).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit_server import streamlit_server

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

pytestmark = pytest.mark.faults

N_CLIENTS = 5
CLIENT_TIMEOUT_S = 120  # per client, all pages
PAGES = ["", "concepts", "audit"]  # "" = the default page (Runs)


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MiB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(val.split()[0]) / 1024
    return out


def _listen_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            addr, _, p = parts[1].partition(":")
            if int(p, 16) == port and parts[3] == "0A":  # LISTEN
                found.add(addr)
    return found


@pytest.fixture(scope="module")
def small_run_copy(tmp_path_factory):
    """A real finished run (tiny open_clip model, 12 photos), copied into a fresh runs root."""
    from test_faults import mine_tiny_run

    base = tmp_path_factory.mktemp("load")
    src = mine_tiny_run(base, base / "made" / "load-run")[0].path
    runs_root = base / "runs"
    runs_root.mkdir()
    shutil.copytree(src, runs_root / src.name)
    return runs_root, src.name


@pytest.fixture(scope="module")
def server(small_run_copy):
    runs_root, run_id = small_run_copy
    log_path = runs_root.parent / "streamlit.log"
    with streamlit_server(runs_root, log_path, wait_s=90) as srv:
        yield {**srv, "run_id": run_id, "log": log_path}

def test_server_listens_on_localhost_only(server):
    addrs = _listen_addresses(server["port"])
    assert addrs, "no listening socket found for the server port"
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert addrs <= loopback, f"server listens on {addrs}, not only on loopback"


def _http_client(url: str, run_id: str, results: list, k: int) -> None:
    assert url.startswith("http://127.0.0.1:")
    t0 = time.monotonic()
    try:
        health = urllib.request.urlopen(url + "/_stcore/health", timeout=30).read()
        with urllib.request.urlopen(f"{url}/?run={run_id}", timeout=30) as resp:
            status, body = resp.status, resp.read()
        results[k] = {"health": health, "status": status, "html": b"<div id=\"root\"" in body,
                      "s": time.monotonic() - t0}
    except Exception as exc:  # reported by the assertion below
        results[k] = {"error": repr(exc)}


async def _session(port: int, run_id: str, page: str) -> dict:
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                  max_size=None, open_timeout=30) as ws:
        msg = BackMsg()
        msg.rerun_script.query_string = f"run={run_id}"
        msg.rerun_script.page_name = page
        await ws.send(msg.SerializeToString())
        out = {"elements": 0, "exceptions": [], "errors": [], "headings": []}
        while True:
            fm = ForwardMsg()
            fm.ParseFromString(await asyncio.wait_for(ws.recv(), CLIENT_TIMEOUT_S))
            kind = fm.WhichOneof("type")
            if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                el = fm.delta.new_element
                out["elements"] += 1
                which = el.WhichOneof("type")
                if which == "exception":
                    out["exceptions"].append(f"{el.exception.type}: {el.exception.message}")
                elif which == "alert" and el.alert.format == el.alert.ERROR:
                    out["errors"].append(el.alert.body)
                elif which == "heading":
                    out["headings"].append(el.heading.body)
            elif kind == "script_finished":
                out["finished"] = ForwardMsg.ScriptFinishedStatus.Name(fm.script_finished)
                return out


def _ws_client(port: int, run_id: str, results: list, k: int) -> None:
    t0 = time.monotonic()
    try:
        pages = {}
        for page in PAGES:
            pages[page or "runs"] = asyncio.run(_session(port, run_id, page))
        results[k] = {"pages": pages, "s": time.monotonic() - t0}
    except Exception as exc:
        results[k] = {"error": repr(exc)}


def _run_threads(target, args_for) -> list:
    results: list = [None] * N_CLIENTS
    threads = [threading.Thread(target=target, args=(*args_for(k), results, k), daemon=True) for k in range(N_CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + CLIENT_TIMEOUT_S + 30
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a client did not finish in time"
    return results


def test_five_concurrent_http_clients_all_answered(server):
    results = _run_threads(_http_client, lambda k: (server["url"], server["run_id"]))
    for r in results:
        assert r and "error" not in r, r
        assert r["health"] == b"ok" and r["status"] == 200 and r["html"], r
    print("http clients (s):", [round(r["s"], 2) for r in results])


def test_five_concurrent_sessions_render_the_run(server):
    before = rss_mib(server["pid"])
    warm: list = [None]
    _ws_client(server["port"], server["run_id"], warm, 0)  # one session first: imports and caches
    assert warm[0] and "error" not in warm[0], warm
    one = rss_mib(server["pid"])
    t0 = time.monotonic()
    results = _run_threads(_ws_client, lambda k: (server["port"], server["run_id"]))
    wall = time.monotonic() - t0
    after = rss_mib(server["pid"])
    for r in results:
        assert r and "error" not in r, r
        for page, res in r["pages"].items():
            assert res["finished"] == "FINISHED_SUCCESSFULLY", (page, res)
            assert not res["exceptions"] and not res["errors"], (page, res)
            assert res["elements"] > 5, (page, res)
    assert "Runs" in results[0]["pages"]["runs"]["headings"]
    assert "Concepts" in results[0]["pages"]["concepts"]["headings"]
    print(f"5 sessions x {len(PAGES)} pages: wall {wall:.1f} s, per client "
          f"{[round(r['s'], 1) for r in results]} s; server RSS idle {before['VmRSS']:.0f}, after 1 session "
          f"{one['VmRSS']:.0f}, after 5 concurrent {after['VmRSS']:.0f} MiB (peak {after['VmHWM']:.0f} MiB)")
    assert "Traceback" not in server["log"].read_text(errors="replace")
