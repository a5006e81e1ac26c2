"""The PyTorch user encoder of sequential models (SASRec-style), shared by training and personalization.

An artifact with ``encoder.type == "torch"`` carries ``encoder.pt`` (a ``state_dict``) and the
architecture in ``meta.encoder`` (``dim``, ``max_len``, ``n_layers``, ``n_heads``). The encoder
does not own item embeddings: it reads the artifact's ``item_vectors`` of the user's recent
items (oldest → newest), so the same weights work after the catalog is re-indexed and a user
vector is ``encode(item_vectors[recent])``; scores are ``item_vectors @ user_vector``.

torch is imported only inside functions here, so ``import recmesh.core`` never needs it;
scoring never calls this module (it reads user vectors from Redis).
"""

from __future__ import annotations

import io
import math
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

ENCODER_FILE = "encoder.pt"
ARCH_KEYS = ("dim", "max_len", "n_layers", "n_heads")


@cache
def module_class() -> type[Any]:
    """The ``nn.Module`` class (built on first use, when torch is imported)."""
    import torch
    from torch import nn

    class SequenceEncoder(nn.Module):
        """Causal transformer over item vectors; the output at the newest position is the user."""

        def __init__(self, dim: int, max_len: int, n_layers: int = 2, n_heads: int = 2,
                     dropout: float = 0.2) -> None:  # fmt: skip
            super().__init__()
            self.dim, self.max_len, self.n_heads = dim, max_len, n_heads
            self.pos = nn.Embedding(max_len, dim)
            self.drop = nn.Dropout(dropout)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    dim, n_heads, dim_feedforward=dim * 2, dropout=dropout, batch_first=True, norm_first=True
                )
                for _ in range(n_layers)
            )
            self.norm = nn.LayerNorm(dim)

        def forward(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
            """``seq`` [B, L, dim] left-padded item vectors, ``valid`` [B, L] bool → hidden [B, L, dim]."""
            b, length, _ = seq.shape
            pos = torch.arange(self.max_len - length, self.max_len, device=seq.device)
            x = self.drop(seq * math.sqrt(self.dim) + self.pos(pos)[None]) * valid[..., None]
            idx = torch.arange(length, device=seq.device)
            future = idx[None, :] > idx[:, None]  # [L, L] key after query
            pad_key = ~valid[:, None, :] & (idx[None, :] != idx[:, None])[None]  # a query always sees itself
            mask = (future[None] | pad_key).repeat_interleave(self.n_heads, dim=0)  # [B*heads, L, L]
            for layer in self.layers:
                x = layer(x, src_mask=mask) * valid[..., None]
            return self.norm(x)  # type: ignore[no-any-return]

        def encode(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
            """User vectors [B, dim]: the hidden state at the newest (last) position."""
            return self.forward(seq, valid)[:, -1, :]

    return SequenceEncoder


def build(spec: dict[str, Any], dropout: float = 0.0) -> Any:
    """A fresh encoder module for the architecture in ``spec`` (``meta.encoder``)."""
    return module_class()(int(spec["dim"]), int(spec["max_len"]), int(spec.get("n_layers", 2)),
                          int(spec.get("n_heads", 2)), dropout)  # fmt: skip


def state_bytes(module: Any) -> bytes:
    """Serialise a module's weights (what goes into ``encoder.pt``)."""
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
    return buf.getvalue()


class TorchUserEncoder:
    """Loaded encoder with a numpy interface (personalization runs this per interaction)."""

    def __init__(self, blob: bytes, spec: dict[str, Any], threads: int | None = 1) -> None:
        import torch

        if threads:
            # one user per call: extra intra-op threads only add synchronisation (10-100x on busy CPUs)
            torch.set_num_threads(threads)
        self.spec = dict(spec)
        self.max_len = int(spec["max_len"])
        self.dim = int(spec["dim"])
        self.module = build(spec)
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        self.module.load_state_dict(state)
        self.module.eval()

    def _batch(self, seqs: list[NDArray[np.float32]]) -> tuple[Any, Any]:
        import torch

        x = np.zeros((len(seqs), self.max_len, self.dim), dtype=np.float32)
        valid = np.zeros((len(seqs), self.max_len), dtype=bool)
        for i, s in enumerate(seqs):
            s = np.asarray(s, dtype=np.float32)[-self.max_len :]
            if s.shape[0]:
                x[i, -s.shape[0] :] = s
                valid[i, -s.shape[0] :] = True
        return torch.from_numpy(x), torch.from_numpy(valid)

    def encode_batch(self, seqs: list[NDArray[np.float32]]) -> NDArray[np.float32]:
        """User vectors for histories given as item-vector sequences (oldest → newest)."""
        import torch

        if not seqs:
            return np.zeros((0, self.dim), dtype=np.float32)
        x, valid = self._batch(seqs)
        with torch.inference_mode():
            out: NDArray[np.float32] = self.module.encode(x, valid).numpy().astype(np.float32)
        empty = ~valid.numpy().any(axis=1)
        out[empty] = 0.0
        return out

    def encode(self, item_vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """One user vector from the item vectors of their recent items (oldest → newest)."""
        return self.encode_batch([item_vectors])[0]  # type: ignore[no-any-return]


def load_encoder(blob: bytes, spec: dict[str, Any], threads: int | None = 1) -> TorchUserEncoder:
    """The encoder stored in an artifact (``blob`` = the bytes of ``encoder.pt``)."""
    missing = [k for k in ARCH_KEYS if k not in spec]
    if missing:
        raise ValueError(f"torch encoder spec lacks {', '.join(missing)}")
    return TorchUserEncoder(blob, spec, threads)
