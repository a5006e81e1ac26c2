"""Model registry on any fsspec URI: versions, champion pointer, history.

Layout under the root::

    <name>/versions/<version>/            artifact directory (see recmesh.core.artifacts)
    <name>/versions/<version>/version.json  registry record: status, metrics, metadata
    <name>/state.json                     {"champion": version, "history": [promoted versions]}

Training writes (register, promote, rollback); scoring and personalization only read. The
promotion *gate* lives in training; this module is the storage contract.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import fsspec

Status = Literal["challenger", "champion", "retired", "failed"]


@dataclass
class VersionInfo:
    """One registered version of a model."""

    name: str
    version: str
    uri: str
    status: Status = "challenger"
    kind: str = "vectors"
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    data_start: int | None = None
    data_end: int | None = None
    dataset_hash: str | None = None
    code_version: str | None = None
    split: str | None = None
    note: str = ""


def new_version() -> str:
    """Sortable version id: UTC timestamp plus a short random suffix."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class Registry:
    """Read and write registry state under ``uri``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)

    def _p(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def version_uri(self, name: str, version: str) -> str:
        """URI of a version's artifact directory (what ModelArtifact.save/load take)."""
        proto = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        path = self._p(name, "versions", version)
        return path if proto in ("file", "local") else f"{proto}://{path}"

    def _read_json(self, path: str) -> Any:
        try:
            with self.fs.open(path, "r") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def _write_json(self, path: str, obj: Any) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True)
        if self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "w") as f:
                f.write(data)
            self.fs.mv(tmp, path)  # atomic rename on local disks
        else:
            with self.fs.open(path, "w") as f:  # object stores replace whole objects atomically
                f.write(data)

    # -- reading ----------------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False) if self.fs.isdir(p))

    def versions(self, name: str) -> list[VersionInfo]:
        base = self._p(name, "versions")
        if not self.fs.exists(base):
            return []
        out = []
        for p in sorted(self.fs.ls(base, detail=False)):
            rec = self._read_json(p.rstrip("/") + "/version.json")
            if rec is not None:  # a version without a record was never fully registered
                out.append(VersionInfo(**rec))
        return sorted(out, key=lambda v: v.version)

    def get(self, name: str, version: str) -> VersionInfo | None:
        rec = self._read_json(self._p(name, "versions", version, "version.json"))
        return VersionInfo(**rec) if rec else None

    def state(self, name: str) -> dict[str, Any]:
        return self._read_json(self._p(name, "state.json")) or {"champion": None, "history": []}

    def champion(self, name: str) -> VersionInfo | None:
        v = self.state(name).get("champion")
        return self.get(name, v) if v else None

    # -- writing (training only) ------------------------------------------------------------
    def register(self, info: VersionInfo) -> VersionInfo:
        """Record a version whose artifact is already fully written at ``info.uri``."""
        self._write_json(self._p(info.name, "versions", info.version, "version.json"), asdict(info))
        return info

    def _set_status(self, name: str, version: str, status: Status) -> None:
        info = self.get(name, version)
        if info is not None:
            info.status = status
            self.register(info)

    def set_champion(self, name: str, version: str) -> str | None:
        """Make ``version`` champion; returns the previous champion."""
        if self.get(name, version) is None:
            raise KeyError(f"{name} has no version {version}")
        st = self.state(name)
        prev = st.get("champion")
        if prev and prev != version:
            self._set_status(name, prev, "retired")
        self._set_status(name, version, "champion")
        history = [v for v in st.get("history", []) if v != version] + [version]
        self._write_json(self._p(name, "state.json"), {"champion": version, "history": history})
        return str(prev) if prev else None

    def restore_state(self, name: str, state: dict[str, Any]) -> None:
        """Write back a champion pointer read earlier with :meth:`state` (undoing a change whose
        announcement failed); version records are restored with :meth:`register`."""
        self._write_json(self._p(name, "state.json"), state)

    def rollback(self, name: str) -> tuple[str, str]:
        """Restore the previous champion; returns (restored, demoted)."""
        st = self.state(name)
        history = list(st.get("history", []))
        if len(history) < 2:
            raise ValueError(f"{name} has no previous champion to roll back to")
        demoted = history.pop()
        restored = history[-1]
        self._set_status(name, demoted, "retired")
        self._set_status(name, restored, "champion")
        self._write_json(self._p(name, "state.json"), {"champion": restored, "history": history})
        return restored, demoted
