"""The on-call CLI against a real `sentinel serve` process over the simulated fleet: every
command in both output forms, every error as one line and a non-zero exit, overrides through
the same decisions as the rules, and an override that survives a restart and expires on time.

Reads need a token here (`api.open_reads: false`), so the token path is on every call."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from sentinel.cli.main import app
from sentinel.sim.fleet import Fleet
from sentinel.sim.process import free_port

from .conftest import Serve, our_taints, poll, reset

WRITE = "w-" + "0123456789abcdef"
READ = "r-" + "fedcba9876543210"
runner = CliRunner()


@pytest.fixture(scope="module")
def srv(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    reset(fleet)
    tmp = tmp_path_factory.mktemp("oncall")
    (tmp / "write.token").write_text(WRITE + "\n")
    tokens = [{"name": "oncall", "token_file": "write.token", "write": True},
              {"name": "viewer", "token": READ}]
    # the rate budget would couple the tests; the site budget is the one under test
    s = Serve(fleet, tmp, budgets={"max_new_per_minute": 100},
              api={"open_reads": False, "tokens": tokens})
    s.start()
    yield s
    s.kill()
    reset(fleet)


@pytest.fixture
def f(srv: Serve, fleet: Fleet) -> Iterator[Fleet]:
    """A healed fleet, and no override left in force by the test before."""
    yield fleet
    with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {WRITE}"}) as c:
        for o in c.get("/api/v1/overrides").json():
            c.delete(f"/api/v1/overrides/{o['id']}")
    reset(fleet)


def cli(srv: Serve, *args: str, token: str | None = WRITE,
        env: dict[str, str] | None = None) -> Result:
    e: dict[str, str | None] = {"SENTINEL_URL": srv.url, "SENTINEL_TOKEN": token,
                                "SENTINEL_USER": "alice", "SENTINEL_OUTPUT": None, **(env or {})}
    return runner.invoke(app, list(args), env=e)


def ok(srv: Serve, *args: str, **kw: Any) -> str:
    r = cli(srv, *args, **kw)
    assert r.exit_code == 0, f"{args}: exit {r.exit_code}: {r.stdout}{r.stderr}"
    assert "\x1b[" not in r.stdout, "colour escapes although stdout is not a terminal"
    return r.stdout


def js(srv: Serve, *args: str, **kw: Any) -> Any:
    return json.loads(ok(srv, *args, "-o", "json", **kw))


def fails(srv: Serve, code: int, message: str, *args: str, **kw: Any) -> None:
    r = cli(srv, *args, **kw)
    assert r.exit_code == code, f"{args}: exit {r.exit_code}: {r.stdout}{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message in lines[0], lines[0]
    assert r.stdout == ""


def isolated(srv: Serve) -> dict[str, int]:
    return {n["node"]: n["level"] for n in js(srv, "nodes", "--state", "isolated")}


def test_reads_in_both_forms(srv: Serve, f: Fleet) -> None:
    f.component("edge-a-03", "kube-proxy")
    poll(lambda: isolated(srv) == {"edge-a-03": 1}, 20, "edge-a-03 isolated at level 1")
    st = js(srv, "status")
    assert st["mode"] == "enforce"
    assert [(i["node"], i["level"], list(i["keys"])) for i in st["isolated"]] == \
        [("edge-a-03", 1, ["kube-proxy"])]
    assert st["budgets"]["fleet"] == {"isolated": 1, "size": 15, "max": 3}
    assert any(a["kind"] == "isolate" and a["node"] == "edge-a-03" for a in st["recent_actions"])
    table = ok(srv, "status")
    for part in ("sentinel ENFORCE", "Sites", "site-a", "Isolated", "edge-a-03",
                 "kube-proxy=NoSchedule", "Last actions", "applied", "UTC"):
        assert part in table, part

    sites = js(srv, "sites")
    assert [(s["site"], s["state"], s["nodes"], s["isolated_level1"]) for s in sites] == \
        [("site-a", "ok", 5, 1), ("site-b", "ok", 5, 0), ("site-c", "ok", 5, 0)]
    assert "site-b" in ok(srv, "sites") and "data age" in ok(srv, "sites")

    rows = js(srv, "nodes", "--site", "site-a")
    assert [r["node"] for r in rows] == [f"edge-a-0{i}" for i in range(1, 6)]
    assert [r["node"] for r in js(srv, "nodes", "--level", "component")] == ["edge-a-03"]
    assert js(srv, "nodes", "--level", "node") == []
    assert "no nodes match" in ok(srv, "nodes", "--level", "node")
    line = next(ln for ln in ok(srv, "nodes", "--site", "site-a").splitlines()
                if "edge-a-03" in ln)
    assert "component-fault" in line and "isolated" in line

    story = js(srv, "explain", "edge-a-03")
    assert story["held"]["kube-proxy"]["rule"] == "kube-proxy-down"
    text = ok(srv, "explain", "edge-a-03")
    assert "edge-a-03 is isolated at level 1: kube-proxy (NoSchedule)." in text
    assert "Verdict component-fault" in text and "Rule kube-proxy-down matches" in text
    assert "Release of kube-proxy: still matching; no release while it does." in text

    f.heal("edge-a-03")
    poll(lambda: isolated(srv) == {}, 20, "released after the heal")
    hist = js(srv, "history", "--node", "edge-a-03", "--since", "1h")
    assert [(e["kind"], e["outcome"]) for e in hist if e["type"] == "action"] == \
        [("isolate", "applied"), ("release", "applied")]
    text = ok(srv, "history", "--site", "site-a")
    assert "applied isolate kube-proxy" in text and "applied release kube-proxy" in text
    assert js(srv, "history", "--node", "edge-b-01") == []


def test_manual_isolate_release_and_lift(srv: Serve, f: Fleet) -> None:
    out = ok(srv, "isolate", "edge-b-02", "--level", "node", "--reason", "disk swap", "--for",
             "1h")
    assert "isolate edge-b-02 by alice via oncall, expires in 60 min" in out, out
    poll(lambda: our_taints(f, "edge-b-02").get("node") == "NoExecute", 20,
         "manual level-2 isolation")
    assert f.node("edge-b-02")["spec"].get("unschedulable") is True
    (iso,) = js(srv, "overrides")
    assert (iso["kind"], iso["node"], iso["key"], iso["by"]) == \
        ("isolate", "edge-b-02", "node", "alice via oncall")
    assert iso["id"] in ok(srv, "overrides") and "disk swap" in ok(srv, "overrides")
    poll(lambda: "isolated by hand (node)" in ok(srv, "explain", "edge-b-02"), 10,
         "explain tells the manual isolation")

    # The release replaces the isolation: lifted now, not back when the release ends.
    rel = js(srv, "release", "edge-b-02", "--reason", "swap done", "--for", "10m")
    assert rel["override"]["kind"] == "release"
    assert [r["id"] for r in rel["replaced"]] == [iso["id"]]
    assert [x["id"] for x in js(srv, "overrides")] == [rel["override"]["id"]]
    poll(lambda: not our_taints(f, "edge-b-02"), 20, "released by hand")
    assert not f.node("edge-b-02")["spec"].get("unschedulable")
    fails(srv, 5, f"no override {iso['id']!r} in force", "overrides", "lift", iso["id"])
    again = ok(srv, "exempt", "edge-b-02", "--reason", "vendor on site", "--for", "5m")
    assert "replaces override " in again and "(release edge-b-02 by alice via oncall), " \
        "lifted" in again, again
    (ex,) = js(srv, "overrides")
    assert js(srv, "overrides", "lift", ex["id"])["by"] == "alice via oncall"
    assert "no overrides in force" in ok(srv, "overrides")

    hist = js(srv, "history", "--node", "edge-b-02")
    events = [(e["type"], e.get("event") or e.get("kind")) for e in hist]
    assert ("override", "created") in events and ("override", "lifted") in events
    lifted = [e for e in hist if e.get("event") == "lifted" and e["override"]["id"] == iso["id"]]
    assert len(lifted) == 1 and lifted[0]["text"].startswith("alice via oncall lifted ")
    assert lifted[0]["text"].endswith(f", replaced by override {rel['override']['id']}")
    assert ("action", "isolate") in events and ("action", "release") in events
    assert "override lifted" in ok(srv, "history", "--node", "edge-b-02")


def test_pause_resume_and_exempt(srv: Serve, f: Fleet) -> None:
    p = js(srv, "pause", "--site", "site-c", "--reason", "site maintenance", "--for", "30m")
    assert (p["override"]["kind"], p["override"]["site"]) == ("pause", "site-c")
    f.crash("edge-c-01")
    poll(lambda: any(n["reason"] == "paused" for n in
                     js(srv, "explain", "edge-c-01").get("not_done", [])), 20,
         "the crash is held back by the pause")
    assert not our_taints(f, "edge-c-01")
    text = ok(srv, "explain", "edge-c-01")
    assert "Actions are PAUSED on site site-c by alice via oncall" in text
    assert "PAUSED site site-c" in ok(srv, "status")
    assert js(srv, "sites")[2]["paused"]["reason"] == "site maintenance"

    assert "lifted override" in ok(srv, "resume", "--site", "site-c")
    poll(lambda: our_taints(f, "edge-c-01").get("node") == "NoExecute", 20,
         "isolated once resumed")
    fails(srv, 5, "site site-c is not paused", "resume", "--site", "site-c")

    js(srv, "exempt", "edge-c-01", "--reason", "vendor on site", "--for", "15m")
    poll(lambda: not our_taints(f, "edge-c-01"), 20, "exempted: handed back")
    assert "exempted by hand by alice via oncall" in ok(srv, "explain", "edge-c-01")

    js(srv, "pause", "--reason", "bad rule rollout", "--for", "5m")
    assert "PAUSED THE WHOLE FLEET" in ok(srv, "status")
    assert js(srv, "resume")["lifted"][0]["site"] is None


def test_manual_isolation_spends_the_budget_unless_forced(srv: Serve, f: Fleet) -> None:
    for n in ("edge-a-01", "edge-a-02", "edge-a-04"):
        ok(srv, "isolate", n, "--reason", "bad disk batch")
    poll(lambda: isolated(srv) == {"edge-a-01": 1, "edge-a-02": 1}, 20,
         "two of five site-a nodes, the site budget")
    poll(lambda: "Not done (budget stop)" in ok(srv, "explain", "edge-a-04"), 10,
         "the third is held by the budget")
    assert "2 of 5 nodes of site site-a isolated (max 2)" in ok(srv, "explain", "edge-a-04")
    fails(srv, 1, "at least 10 characters", "isolate", "edge-a-04", "--force", "--reason", "x")
    ok(srv, "isolate", "edge-a-04", "--force", "--reason", "vendor confirmed bad disk")
    poll(lambda: isolated(srv).get("edge-a-04") == 1, 20, "forced past the budget")
    assert "with --force (no budget)" in ok(srv, "explain", "edge-a-04")


def test_errors_are_one_line_and_non_zero(srv: Serve, f: Fleet, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    fails(srv, 3, f"cannot reach sentinel at {dead}", "status", "--server", dead)
    fails(srv, 4, "the token is not one of api.tokens", "status", token="nope")
    fails(srv, 4, "this needs a token", "nodes", token=None)
    fails(srv, 4, "token 'viewer' is read-only", "isolate", "edge-a-01", "-r", "x", token=READ)
    assert js(srv, "sites", token=READ)[0]["site"] == "site-a"
    fails(srv, 5, "no node 'nope' in the cluster", "explain", "nope")
    fails(srv, 5, "no node 'nope' in the cluster", "isolate", "nope", "-r", "test")
    fails(srv, 5, "no site 'mars'", "nodes", "--site", "mars")
    fails(srv, 1, "no site 'mars' in the configuration", "pause", "--site", "mars", "-r", "x")
    fails(srv, 1, "ttl: must be more than 0 s and at most 604800 s", "isolate", "edge-a-01",
          "-r", "x", "--for", "30d")
    fails(srv, 1, "ttl: ", "release", "edge-a-01", "-r", "x", "--for", "soon")
    fails(srv, 1, "invalid request: query.state", "nodes", "--state", "bogus")
    fails(srv, 1, "cannot read the token file", "status", "--token-file",
          str(tmp_path / "missing"))
    r = cli(srv, "isolate", "edge-a-01", "--level", "rack", "-r", "x")
    assert r.exit_code == 2 and "--level is component or node" in r.stderr
    assert js(srv, "overrides") == [], "a refused request left an override behind"


def test_entry_point_env_and_completion(srv: Serve, f: Fleet) -> None:
    exe = str(Path(sys.executable).parent / "sentinel")  # the console script users run
    env = {**os.environ, "SENTINEL_URL": srv.url, "SENTINEL_TOKEN": READ,
           "SENTINEL_OUTPUT": "json"}
    out = subprocess.run([exe, "sites"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [s["site"] for s in json.loads(out.stdout)] == ["site-a", "site-b", "site-c"]
    out = subprocess.run([exe, "sites", "--server",
                          f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 3 and out.stderr.startswith("error: cannot reach sentinel")
    # on a terminal, and only there, the tables have colour
    leader, follower = pty.openpty()
    proc = subprocess.Popen([exe, "sites", "-o", "table"], stdout=follower,
                            stderr=subprocess.PIPE, env={**env, "TERM": "xterm-256color"})
    os.close(follower)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the child closes the terminal
        while chunk := os.read(leader, 4096):
            seen += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    assert b"\x1b[" in seen and b"site-a" in seen
    api = srv.get("/openapi.json").json()
    assert {"/api/v1/overrides", "/api/v1/nodes/{name}/explain", "/api/v1/pause"} <= \
        set(api["paths"])
    comp = subprocess.run([exe], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "_SENTINEL_COMPLETE": "complete_bash",
                                           "COMP_WORDS": "sentinel ov", "COMP_CWORD": "1"})
    assert comp.stdout.split() == ["overrides"]


def test_override_survives_restart_and_expires_on_time(srv: Serve, f: Fleet) -> None:
    o = js(srv, "isolate", "edge-b-04", "--reason", "survives a restart", "--for", "15s")
    expires = o["override"]["expires"]
    poll(lambda: "manual" in our_taints(f, "edge-b-04"), 20, "manual isolation applied")
    srv.kill()
    srv.start()
    assert [x["id"] for x in js(srv, "overrides")] == [o["override"]["id"]]
    poll(lambda: srv.cycles() >= 3, 20, "three cycles after the restart")
    assert "manual" in our_taints(f, "edge-b-04"), "the restart dropped the manual isolation"
    poll(lambda: not our_taints(f, "edge-b-04"), 40, "released when the override expires")
    released = time.time()
    assert released >= expires, "released before the override expired"
    assert released - expires < 10, f"released {released - expires:.1f}s after expiry"
    assert js(srv, "overrides") == []
    hist = js(srv, "history", "--node", "edge-b-04")
    assert [e["event"] for e in hist if e["type"] == "override"] == ["created", "expired"]
    rel = [e for e in hist if e["type"] == "action" and e["kind"] == "release"]
    assert rel and "expired or was lifted" in rel[0]["reason"]


def test_tables_print_data_literally() -> None:
    """A reason or an error holding "[...]" is data, not rich markup."""
    from rich.console import Console

    from sentinel.cli.render import render_history

    con = Console(file=io.StringIO(), width=300, no_color=True)
    render_history([{"type": "action", "ts": 0.0, "mode": "enforce", "outcome": "failed",
                      "kind": "isolate", "key": "node", "reason": "x [bold]y[/]",
                      "error": "HTTP 409: [conflict]", "node": "n", "site": "s"}], con, 10.0)
    out = con.file.getvalue()  # type: ignore[attr-defined]
    assert "x [bold]y[/] [error: HTTP 409: [conflict]]" in out
