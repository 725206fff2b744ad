"""A Kubernetes API emulator over HTTP (or HTTPS), for the official `kubernetes` client and
for kubectl.

It speaks the REST shapes of the calls sentinel makes: list (label and field selectors,
limit/continue from one snapshot, 410 Expired for an old continue token carrying a token that
goes on from the next key, inconsistently, as the real one does), get, create, update
(PUT), delete, the three PATCH flavours (strategic merge refused for custom resources, as the
real server refuses it), the `/status` subresource, and watch (chunked JSON lines,
`resourceVersion`, `timeoutSeconds`, 410 Gone when the resource's next events have left its
history, kept per resource as the watch cache keeps it; bookmarks). Errors are `Status`
objects with the real codes and reasons. CRDs serve their resources with schema validation and
pruning (sim/crds.py). For kubectl: legacy discovery, the OpenAPI v3 index with each kind's
PATCH operation (no schemas), and `fieldValidation=Strict` (sim/fields.py) — enough for
`kubectl apply -k deploy/`, twice.

Not covered (documented so nobody relies on it): authentication and RBAC, admission and
defaulting (no default tolerations), server-side apply (415), OpenAPI schemas (a kubectl patch
that needs them fails), table output (kubectl prints names only), namespaces' existence,
`resourceVersion` on list (always the latest; continued pages keep their first page's),
set-based label selectors (400), field selectors beyond metadata.name, metadata.namespace and
spec.nodeName (400), garbage collection.
The node lifecycle controller and the workload controllers are played beside it
(sim/lifecycle.py, sim/workloads.py)."""

from __future__ import annotations

import json
import re
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from sentinel.sim.discovery import discovery, openapi_v3
from sentinel.sim.fields import check_strict
from sentinel.sim.pages import Pages
from sentinel.sim.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sentinel.sim.selectors import field_selector, parse_label_selector
from sentinel.sim.store import RESOURCES, ApiError, Obj, Resource, Store

__all__ = ["KubeApiServer", "Stall", "parse_label_selector"]


_PATH = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)


def _at(res: Resource, obj: Obj) -> Obj:
    """The object as read at the requested version: a CRD's versions share their objects and
    differ only in `apiVersion` (conversion strategy None). Never changed in place: a list
    serves the stored objects themselves (Store.snapshot)."""
    if obj.get("apiVersion", res.api_version) != res.api_version:
        return {**obj, "apiVersion": res.api_version}
    return obj


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ------------------------------------------------------------------------
    def _send(self, code: int, body: Obj) -> None:
        # msgspec writes a page of 500 kubelet-sized Nodes in 5 ms, json.dumps in 60: the
        # real API server's encoding is no bottleneck, and this emulator's should not be one.
        data = msgspec.json.encode(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    def _route(self) -> tuple[Resource, str | None, str | None, str, dict[str, str]]:
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        m = _PATH.match(url.path)
        if not m:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({url.path})")
        group = m["g"] or ""
        version = m["cv"] or m["v"]
        res = self.server.store.resources.get((group, version, m["plural"]))
        if res is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({m['plural']} in {group or 'core'}/{version})")
        ns = m["ns"]
        if ns is not None and not res.namespaced:
            raise ApiError(404, "NotFound", f"{res.plural} are not namespaced")
        return res, ns, m["name"], m["sub"] or "", q

    def _handle(self, fn: Callable[[], None]) -> None:
        self.server.count(self.command, self.path)
        try:
            stall = self.server.stall
            if stall is not None and stall.matches(self.command, self.path,
                                                   self.headers.get("Content-Type") or ""):
                stall.hold()  # until released; then refused, the request never applied
                raise ApiError(503, "ServiceUnavailable", "the emulator stalled this request")
            fn()
        except ApiError as e:
            self._send(e.code, e.status())
        except PatchError as e:
            self._send(422, ApiError(422, "Invalid", str(e)).status())
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- verbs ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def do_PUT(self) -> None:
        self._handle(self._put)

    def do_PATCH(self) -> None:
        self._handle(self._patch)

    def do_DELETE(self) -> None:
        self._handle(self._delete)

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/healthz", "/readyz", "/livez"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return
        if path == "/version":
            self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-sentinel-sim"})
            return
        found = discovery(path, self.server.store.resources.values()) or \
            openapi_v3(path, self.server.store.resources.values())
        if found is not None:
            self._send(200, found)
            return
        res, ns, name, _, q = self._route()
        store = self.server.store
        if name:
            self._send(200, _at(res, store.get(res, ns or "", name)))
            return
        labels = parse_label_selector(q.get("labelSelector", ""))
        fields = field_selector(q.get("fieldSelector", ""))

        def match(o: Obj) -> bool:
            return labels(o["metadata"].get("labels") or {}) and fields(o)

        if q.get("watch") in ("true", "1"):
            self._watch(res, ns, q, match)
            return
        limit = int(q.get("limit") or 0)
        token = q.get("continue") or ""
        if token:
            items, rv, start = self.server.pages.resume(
                token, lambda: store.snapshot(res, ns, match))
        else:
            items, rv = store.snapshot(res, ns, match)
            start = 0
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and start + limit < len(items):
            meta["continue"] = self.server.pages.keep(items, rv, start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        self._send(200, {"kind": res.kind + "List", "apiVersion": res.api_version,
                         "metadata": meta,
                         "items": [_at(res, o) for o in
                                   (items[start:start + limit] if limit else items[start:])]})

    def _watch(self, res: Resource, ns: str | None, q: dict[str, str],
               match: Callable[[Obj], bool]) -> None:
        rv_raw = q.get("resourceVersion", "")
        since = int(rv_raw) if rv_raw not in ("", "0") else None
        timeout = float(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(obj: Obj) -> None:
            data = msgspec.json.encode(obj) + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        last = since
        try:
            for e in self.server.store.watch(res, ns, since, timeout, match,
                                             self.server.stopping.is_set):
                chunk({"type": e.type, "object": _at(res, e.obj)})
                last = e.rv
            if bookmarks and last is not None:
                chunk({"type": "BOOKMARK", "object": {
                    "kind": res.kind, "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(self.server.store.resource_version)}}})
        except ApiError as e:
            chunk({"type": "ERROR", "object": e.status()})
        except (BrokenPipeError, ConnectionResetError):
            return
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def _strict(self, res: Resource, q: dict[str, str], obj: Obj) -> None:
        if q.get("fieldValidation") == "Strict":
            check_strict(res, self.server.store.schema(res), obj)

    def _post(self) -> None:
        res, ns, name, _, q = self._route()
        if name:
            raise ApiError(405, "MethodNotAllowed", "POST goes to the collection")
        body = self._body()
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        self._strict(res, q, body)
        self._send(201, _at(res, self.server.store.create(res, ns or "", body)))

    def _put(self) -> None:
        res, ns, name, sub, q = self._route()
        if not name:
            raise ApiError(405, "MethodNotAllowed", "PUT needs a name")
        body = self._body()
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        self._strict(res, q, body)
        self._send(200, _at(res, self.server.store.replace(res, ns or "", name, body,
                                                            subresource=sub)))

    def _patch(self) -> None:
        res, ns, name, sub, q = self._route()
        if not name:
            raise ApiError(405, "MethodNotAllowed", "PATCH needs a name")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self._body()
        store = self.server.store
        if ctype == "application/strategic-merge-patch+json" and res not in RESOURCES.values():
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           "unknown format - accepted media types include: application/"
                           "json-patch+json, application/merge-patch+json, application/"
                           "apply-patch+yaml")  # custom resources have no patch strategies
        with store.lock:  # the real server retries internally; here nobody can interleave
            cur = store.get(res, ns or "", name)
            new, want = self._apply_patch(ctype, cur, body)
            self._strict(res, q, new)
            if want is None:
                new.setdefault("metadata", {})["resourceVersion"] = \
                    cur["metadata"]["resourceVersion"]
            out = store.replace(res, ns or "", name, new, subresource=sub,
                                precondition=None if want is None else str(want))
        self._send(200, _at(res, out))

    @staticmethod
    def _apply_patch(ctype: str, cur: Obj, body: Any) -> tuple[Obj, str | None]:
        if ctype == "application/json-patch+json":
            return json_patch(cur, body), None
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            fn = merge_patch if ctype.startswith("application/merge") else strategic_merge_patch
            # A resourceVersion in the patch is a precondition on the stored object.
            want = (body.get("metadata") or {}).get("resourceVersion")
            return fn(cur, body), want
        if ctype == "application/apply-patch+yaml":
            raise ApiError(415, "UnsupportedMediaType",
                           "server-side apply is not supported by the emulator")
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")

    def _delete(self) -> None:
        self._body()  # DeleteOptions (kubectl sends propagationPolicy): read, not applied
        res, ns, name, _, _ = self._route()
        if not name:
            raise ApiError(405, "MethodNotAllowed", "collection delete is not supported")
        obj = self.server.store.delete(res, ns or "", name)
        self._send(200, obj)


class Stall:
    """Requests whose verb and path match hang until `release()`, then fail with 503 without
    being applied: a client killed while one of its writes is in flight, for tests."""

    def __init__(self, verb: str, path_contains: str, content_type: str = "") -> None:
        self.verb, self.path_contains, self.content_type = verb, path_contains, content_type
        self._cond = threading.Condition()
        self._released = False
        self.waiting = 0

    def matches(self, verb: str, path: str, content_type: str) -> bool:
        return verb == self.verb and self.path_contains in path and \
            content_type.startswith(self.content_type)

    def hold(self) -> None:
        with self._cond:
            self.waiting += 1
            self._cond.wait_for(lambda: self._released, timeout=120)

    def release(self) -> None:
        with self._cond:
            self._released = True
            self._cond.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], store: Store) -> None:
        super().__init__(addr, _Handler)
        self.store = store
        self.stopping = threading.Event()
        self.requests: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.stall: Stall | None = None
        self.pages = Pages()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that went away (killed, timed out): not the server's problem
        super().handle_error(request, client_address)

    def count(self, verb: str, path: str) -> None:
        with self._count_lock:
            self.requests[verb] = self.requests.get(verb, 0) + 1


class KubeApiServer:
    """The emulator on a free loopback port; `url` is what a kubeconfig or client points at.
    With `tls` (certificate and key files), HTTPS, as a pod's in-cluster client requires; two
    servers may share one store (the same cluster on two ports)."""

    def __init__(self, store: Store | None = None, host: str = "127.0.0.1", port: int = 0,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.store = store or Store()
        self._server = _Server((host, port), self.store)
        self.tls = tls is not None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-api",
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def requests(self) -> dict[str, int]:
        return dict(self._server.requests)

    @property
    def pages(self) -> Pages:
        return self._server.pages

    def stall(self, verb: str, path_contains: str, content_type: str = "") -> Stall:
        """From now on, hang matching requests (see Stall); `unstall` ends it."""
        self._server.stall = Stall(verb, path_contains, content_type)
        return self._server.stall

    def unstall(self) -> None:
        st, self._server.stall = self._server.stall, None
        if st is not None:
            st.release()

    def start(self) -> KubeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
        with self.store.lock:
            self.store.lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
