"""One container of a rendered pod, started on this machine as the kubelet and the container
runtime would start it: nothing a real node would not give it, and nothing more.

- its command: the image's ENTRYPOINT (from the Containerfile) with the manifest's `args`;
- its environment as the kubelet builds it: the image's ENV, the service links of every Service
  of the namespace that has a cluster IP (unless `enableServiceLinks: false`; the `kubernetes`
  Service's always), `HOSTNAME`, then the declared `env` (`value`, `fieldRef`);
- every volume's files at its `mountPath`, laid out as the kubelet lays them out (a ConfigMap or
  Secret as `..<timestamp>/` with `..data` and one symlink per key, `defaultMode`, the group
  `fsGroup`; an emptyDir; a claim as an empty directory owned by `fsGroup`; the service-account
  token, CA and namespace at /var/run/secrets/kubernetes.io/serviceaccount);
- in a private mount namespace (`unshare -m`) whose root filesystem is read-only when the
  container's `readOnlyRootFilesystem` says so, `readOnly` mounts read-only;
- as the securityContext's user and group, `fsGroup` as supplementary group, no new
  privileges, no capabilities (`setpriv`).

The image is this machine's virtualenv at the image's path: what `pip install .` put in the
image is what `pip install -e .` put in `.venv`. Where a directory on the way to it is closed
to others (the interpreter under /root), the namespace shows that directory as an empty tmpfs
with only the needed entries bound back: the container's user reaches its image, nothing else.

Not emulated: the pod's own network namespace (the container listens on the host's loopback,
so a test moves `listen` to a free port), DNS for Services, cgroup limits, seccomp.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Image", "Pod", "container_env", "self_signed_cert", "service_links"]

Obj = Mapping[str, Any]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: What containerd gives a container unless its securityContext drops them.
RUNTIME_CAPS = ("chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid",
                "setuid", "setfcap", "setpcap", "net_bind_service", "sys_chroot", "kill",
                "audit_write")


def self_signed_cert(dest: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (the API server's, and its own CA) and its key."""
    cert, key = dest / "apiserver.crt", dest / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=kubernetes",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass(frozen=True)
class Image:
    """ENTRYPOINT, CMD, ENV and USER of a Containerfile's last stage, `/opt/sentinel` (the
    image's virtualenv) standing for `venv`."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: str
    venv: Path
    base_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    @classmethod
    def from_containerfile(cls, path: Path, venv: Path, image_venv: str = "/opt/sentinel",
                           ) -> Image:
        lines = path.read_text().splitlines()
        last = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
        entry: list[str] = []
        cmd: list[str] = []
        env: dict[str, str] = {}
        user = "0"
        for ln in lines[last:]:
            word, _, rest = ln.partition(" ")
            if word == "ENTRYPOINT":
                entry = json.loads(rest)
            elif word == "CMD":
                cmd = json.loads(rest)
            elif word == "USER":
                user = rest.strip()
            elif word == "ENV":
                for pair in shlex.split(rest):
                    k, _, v = pair.partition("=")
                    env[k] = v
        base = cls.base_path
        env = {k: v.replace("$PATH", base).replace(image_venv, str(venv)) for k, v in env.items()}
        env.setdefault("PATH", base)
        return cls(entry, cmd, env, user, venv)


def service_links(services: Sequence[Obj]) -> dict[str, str]:
    """The docker-link style variables the kubelet injects for these Services (those with a
    cluster IP; a headless Service gives none)."""
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        first = ports[0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        for p in ports:
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = \
                    str(p["port"])
        proto = first.get("protocol", "TCP").lower()
        env[f"{name}_PORT"] = f"{proto}://{ip}:{first['port']}"
        for p in ports:
            pr = p.get("protocol", "TCP")
            base = f"{name}_PORT_{p['port']}_{pr}"
            env[base] = f"{pr.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"], env[f"{base}_PORT"] = pr.lower(), str(p["port"])
            env[f"{base}_ADDR"] = ip
    return env


def container_env(pod: Obj, container: Obj, image: Image, *, pod_name: str, namespace: str,
                  services: Sequence[Obj], master: Obj, node_name: str = "") -> dict[str, str]:
    """The container's environment, in the kubelet's order of precedence: the image's, the
    service links, then what the manifest declares."""
    spec = pod.get("spec") or {}
    env = dict(image.env)
    env["HOSTNAME"] = pod_name
    env.setdefault("HOME", "/")  # a user with no home in the image's passwd
    links = [master] + (list(services) if spec.get("enableServiceLinks", True) else [])
    env.update(service_links(links))
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace,
              "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
              "spec.nodeName": node_name}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "fieldRef" in (e.get("valueFrom") or {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            raise ValueError(f"env {e['name']}: only value and fieldRef are emulated")
    return env


def _atomic_files(dest: Path, files: Mapping[str, bytes], mode: int, gid: int | None) -> None:
    """The kubelet's AtomicWriter layout: ..<timestamp>/key, ..data -> it, key -> ..data/key."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    stamp = dest / time.strftime("..%Y_%m_%d_%H_%M_%S.000000000", time.gmtime())
    stamp.mkdir()
    os.chmod(stamp, 0o755)
    for key, data in files.items():
        f = stamp / key
        f.write_bytes(data)
        os.chmod(f, mode)
        if gid is not None:
            os.chown(f, 0, gid)
        (dest / key).symlink_to(f"..data/{key}")
    (dest / "..data").symlink_to(stamp.name)


@dataclass
class Pod:
    """One container of `pod` (a pod template with its name), its volumes under `workdir`."""

    pod: Obj
    name: str
    namespace: str
    objects: Mapping[tuple[str, str], Obj]
    """("ConfigMap" | "Secret", name) -> object, as the API server holds them."""
    services: Sequence[Obj]
    master: Obj
    """The `kubernetes` Service of `default`, pointing at the API server."""
    image: Image
    workdir: Path
    sa_files: Mapping[str, bytes]
    container_index: int = 0
    node_name: str = ""
    host_root: Path | None = None
    """Where the node's filesystem is, for hostPath volumes (a test's directory)."""
    log: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _made: list[Path] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.log = self.workdir / f"{self.name}.log"

    @property
    def container(self) -> Obj:
        c: Obj = self.pod["spec"]["containers"][self.container_index]
        return c

    def _security(self) -> tuple[int, int, int | None, Obj]:
        pod_sc = self.pod["spec"].get("securityContext") or {}
        c_sc = self.container.get("securityContext") or {}
        user = c_sc.get("runAsUser", pod_sc.get("runAsUser"))
        group = c_sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if user is None:
            user, _, grp = self.image.user.partition(":")
            group = group if group is not None else (grp or user)
        if (c_sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and int(user) == 0):
            raise ValueError("runAsNonRoot, but the container would run as root")
        return int(user), int(group or 0), pod_sc.get("fsGroup"), c_sc

    def _volumes(self, fs_group: int | None) -> dict[str, Path]:
        """Each volume's files under workdir/volumes/<name>, as the kubelet lays them out."""
        root = self.workdir / "volumes"
        out: dict[str, Path] = {}
        templates = {t["metadata"]["name"] for t in self.pod.get("volumeClaimTemplates", [])}
        volumes = list(self.pod["spec"].get("volumes") or [])
        volumes += [{"name": n, "persistentVolumeClaim": {}} for n in templates]
        for v in volumes:
            dest = root / v["name"]
            if "configMap" in v or "secret" in v:
                kind = "ConfigMap" if "configMap" in v else "Secret"
                src = v.get("configMap") or v.get("secret") or {}
                obj = self.objects[(kind, str(src.get("name") or src.get("secretName")))]
                if kind == "Secret":
                    files = {k: base64.b64decode(x) for k, x in (obj.get("data") or {}).items()}
                else:
                    files = {k: x.encode() for k, x in (obj.get("data") or {}).items()}
                _atomic_files(dest, files, int(src.get("defaultMode", 0o644)), fs_group)
            elif "hostPath" in v and self.host_root is not None:
                dest = self.host_root / v["hostPath"]["path"].lstrip("/")
                if v["hostPath"].get("type") == "DirectoryOrCreate":
                    dest.mkdir(parents=True, exist_ok=True)
            elif "emptyDir" in v:
                dest.mkdir(parents=True)
                os.chmod(dest, 0o777)
            elif "persistentVolumeClaim" in v:
                dest.mkdir(parents=True)
                if fs_group is not None:  # the kubelet gives the volume to fsGroup, setgid
                    os.chown(dest, 0, fs_group)
                    os.chmod(dest, 0o2775)
            else:
                raise ValueError(f"volume {v['name']}: kind not emulated")
            out[v["name"]] = dest
        sa = root / "kube-api-access"
        _atomic_files(sa, self.sa_files, 0o644, fs_group)
        out["kube-api-access"] = sa
        return out

    def _script(self, mounts: list[tuple[Path, str, bool]], sc: Obj,
                user: int, group: int, fs_group: int | None, env: Mapping[str, str],
                argv: list[str]) -> str:
        lines = ["set -eu"]
        python = (self.image.venv / "bin" / "python").resolve()
        image = [self.image.venv.resolve(), Path(__file__).resolve().parents[2],
                 python.parents[1]]  # the virtualenv, the source it was installed from, Python
        image = [p for p in image if not any(p != q and p.is_relative_to(q) for q in image)]
        lines += self._reachable([Path(argv[0]), python, *image])
        # A mount over a directory that holds the volumes' sources (/tmp) goes last.
        here = self.workdir.resolve()
        order = sorted(mounts, key=lambda m: here.is_relative_to(m[1]))
        for src, dst, _ in order:
            # The image where this machine keeps it, if a volume covers it (a checkout under
            # /tmp): bound inside the volume first, carried along by a recursive bind.
            inside = [p for p in image if p.is_relative_to(dst)]
            for p in inside:
                hole = shlex.quote(str(src / p.relative_to(dst)))
                lines.append(f"mkdir -p {hole} && mount --bind {shlex.quote(str(p))} {hole}")
            how = "--rbind" if inside else "--bind"
            lines.append(f"mount {how} {shlex.quote(str(src))} {shlex.quote(dst)}")
        for _, dst, ro in order:
            if ro:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(dst)}")
        if sc.get("readOnlyRootFilesystem"):
            lines.append("mount -o remount,bind,ro /")
        groups = f"--groups={fs_group}" if fs_group is not None else "--clear-groups"
        envs = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
        drop = {c.lower() for c in (sc.get("capabilities") or {}).get("drop") or []}
        caps = "-all" if "all" in drop else "-all," + ",".join(
            f"+{c}" for c in RUNTIME_CAPS if c not in drop)
        nnp = "--no-new-privs " if sc.get("allowPrivilegeEscalation") is False else ""
        lines.append(f"exec setpriv --reuid={user} --regid={group} {groups} {nnp}"
                     f"--inh-caps=-all --bounding-set={caps} -- env -i {envs} "
                     + " ".join(shlex.quote(a) for a in argv))
        return "\n".join(lines)

    def _reachable(self, paths: Sequence[Path]) -> list[str]:
        """Shell lines that open, inside the namespace, each directory closed to others on the
        way to `paths` (its real entries hidden under a tmpfs but for the ones needed)."""
        needed: dict[Path, set[str]] = {}
        for p in paths:
            p = p.resolve()
            for parent in reversed(p.parents):
                child = p.parts[len(parent.parts)]
                if parent != Path("/") and not os.stat(parent).st_mode & stat.S_IXOTH:
                    needed.setdefault(parent, set()).add(child)
        lines = []
        stash = self.workdir / "stash"
        for i, (closed, children) in enumerate(sorted(needed.items())):
            for child in sorted(children):
                keep = stash / f"{i}-{child}"
                keep.mkdir(parents=True, exist_ok=True)
                lines.append(f"mount --bind {shlex.quote(str(closed / child))} "
                             f"{shlex.quote(str(keep))}")
            lines.append(f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(closed))}")
            for child in sorted(children):
                keep = stash / f"{i}-{child}"
                target = shlex.quote(str(closed / child))
                lines.append(f"mkdir -p {target} && mount --move {shlex.quote(str(keep))} "
                             f"{target}")
        return lines

    def start(self) -> Pod:
        user, group, fs_group, c_sc = self._security()
        vols = self._volumes(fs_group)
        mounts = [(vols[m["name"]], m["mountPath"], bool(m.get("readOnly")))
                  for m in self.container.get("volumeMounts") or []]
        mounts.append((vols["kube-api-access"], SA_DIR, True))
        for _, dst, _ in mounts:  # the image's mount points (a runtime creates them)
            p = Path(dst)
            missing = [p, *[q for q in p.parents if not q.exists()]]
            for q in reversed(missing):
                if not q.exists():
                    q.mkdir()
                    self._made.append(q)
        env = container_env(self.pod, self.container, self.image, pod_name=self.name,
                            namespace=self.namespace, services=self.services,
                            master=self.master, node_name=self.node_name)
        entry = list(self.container.get("command") or self.image.entrypoint)
        args = list(self.container.get("args") or ([] if self.container.get("command")
                                                    else self.image.cmd))
        exe = shutil.which(entry[0], path=env["PATH"]) or entry[0]
        script = self._script(mounts, c_sc, user, group,
                              fs_group, env, [exe, *entry[1:], *args])
        (self.workdir / "start.sh").write_text(script)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh",
                                          str(self.workdir / "start.sh")],
                                         stdout=out, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = 15) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for q in reversed(self._made):  # the mount points this pod made, if still empty
            with contextlib.suppress(OSError):
                q.rmdir()
        self._made.clear()
