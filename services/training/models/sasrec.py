"""SASRec-style sequential recommender in PyTorch (CPU-trainable), exported as item vectors + encoder.

Each user's positive interactions, oldest → newest, form a sequence. A causal transformer
(:mod:`recmesh.core.torch_encoder`, shared with personalization) reads the item embeddings of
the sequence and predicts the next item at every position; item embeddings are tied between
input and output, so the artifact is a plain ``vectors`` artifact: ``item_vectors.npy`` = the
embedding table, scores = ``item_vectors @ user_vector``, and the user vector is the encoder's
output at the newest position (``encoder.pt`` + ``meta.encoder = {"type": "torch", ...}``).

Loss: full softmax cross-entropy over the catalog (``loss="ce"``), or a softmax over the
positive plus ``negatives`` shared sampled items per batch (``loss="sampled"``) for catalogs
where ``batch × length × n_items`` logits do not fit. Early stopping: the newest item of a
seeded sample of users is held out of training; after every epoch NDCG@10 of predicting it
(full ranking, history excluded) decides whether to keep going; the best epoch's weights are
exported. torch is imported inside :func:`fit_sasrec` only.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from recmesh.core.artifacts import ModelArtifact

from ..dataset import Dataset
from .base import ModelConfig, build_artifact, register

log = logging.getLogger(__name__)


class SASRecConfig(ModelConfig):
    """Self-attentive sequential recommendation (Kang & McAuley 2018), small CPU defaults."""

    dim: int = Field(64, ge=4, description="Embedding / hidden size (a multiple of n_heads).")
    max_len: int = Field(50, ge=2, description="Most recent items per user the model reads.")
    n_layers: int = Field(2, ge=1, le=8, description="Transformer blocks.")
    n_heads: int = Field(2, ge=1, description="Attention heads per block.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings and inside blocks.")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    batch_size: int = Field(128, ge=1, description="Sequences per optimisation step.")
    epochs: int = Field(30, ge=1, description="Maximum passes over the sequences.")
    patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    loss: Literal["ce", "sampled", "auto"] = Field(
        "auto", description="Full softmax (ce), sampled softmax, or auto (ce up to 20k items)."
    )
    negatives: int = Field(512, ge=1, description="Shared negatives per batch of the sampled softmax.")
    val_users: int = Field(1000, ge=0, description="Users whose newest item is held out for early stopping.")
    max_seconds: float | None = Field(None, gt=0, description="Stop training after this many seconds.")
    threads: int = Field(
        1, ge=0, description="torch intra-op threads (0 = torch's default; 1 is fastest on small shared CPUs)."
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        # multi-head attention splits dim evenly across heads; catch it here, not mid-fit in torch
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        return self


def sequences(dataset: Dataset) -> list[np.ndarray]:
    """Positive-weight item indices per user, oldest → newest."""
    out = []
    for items, w, _ts in dataset.histories():
        out.append(np.asarray(items[w > 0], dtype=np.int64))
    return out


def _windows(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (input, target) windows of the last ``max_len + 1`` items (+1 shift; 0 = pad)."""
    usable = [s for s in seqs if s.size >= 2]
    inp = np.zeros((len(usable), max_len), dtype=np.int64)
    tgt = np.zeros((len(usable), max_len), dtype=np.int64)
    for r, s in enumerate(usable):
        s = s[-(max_len + 1) :] + 1
        n = s.size - 1
        inp[r, -n:] = s[:-1]
        tgt[r, -n:] = s[1:]
    return inp, tgt


if importlib.util.find_spec("torch") is not None:

    @register("sasrec", SASRecConfig, "SASRec-style transformer over recent items (PyTorch, CPU).")
    def fit_sasrec(dataset: Dataset, config: SASRecConfig) -> ModelArtifact:
        return _fit(dataset, config)


def _fit(dataset: Dataset, config: SASRecConfig, epoch_log: list[dict[str, float]] | None = None) -> ModelArtifact:
    import torch
    import torch.nn.functional as F  # noqa: N812

    from recmesh.core import torch_encoder

    if config.dim % config.n_heads:
        raise ValueError(f"dim {config.dim} is not a multiple of n_heads {config.n_heads}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_items = dataset.n_items
    seqs = sequences(dataset)

    # early-stopping holdout: the newest item of a sample of users with at least 3 items
    eligible = np.flatnonzero([s.size >= 3 for s in seqs])
    val = np.sort(rng.choice(eligible, size=min(config.val_users, eligible.size), replace=False))
    train_seqs = list(seqs)
    for u in val:
        train_seqs[u] = seqs[u][:-1]
    inp, tgt = _windows(train_seqs, config.max_len)
    if inp.shape[0] == 0:
        raise ValueError("sasrec needs users with at least two positive interactions")
    use_ce = config.loss == "ce" or (config.loss == "auto" and n_items <= 20_000)

    emb = torch.nn.Embedding(n_items + 1, config.dim, padding_idx=0)
    torch.nn.init.normal_(emb.weight, std=1.0 / math.sqrt(config.dim))
    with torch.no_grad():
        emb.weight[0].zero_()
    spec = {"dim": config.dim, "max_len": config.max_len, "n_layers": config.n_layers, "n_heads": config.n_heads}
    enc = torch_encoder.build(spec, dropout=config.dropout)
    params = list(emb.parameters()) + list(enc.parameters())
    opt = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)

    def evaluate_val() -> float:
        if val.size == 0:
            return 0.0
        enc.eval()
        hits = 0.0
        with torch.inference_mode():
            table = emb.weight[1:]
            for start in range(0, val.size, 512):
                users = val[start : start + 512]
                x = np.zeros((users.size, config.max_len), dtype=np.int64)
                for r, u in enumerate(users):
                    prefix = seqs[u][:-1][-config.max_len :] + 1
                    x[r, -prefix.size :] = prefix
                xt = torch.from_numpy(x)
                h = enc.encode(emb(xt), xt > 0)
                scores = h @ table.T
                for r, u in enumerate(users):
                    scores[r, torch.from_numpy(seqs[u][:-1])] = -torch.inf
                target = torch.from_numpy(np.array([seqs[u][-1] for u in users]))
                tgt_score = scores[torch.arange(users.size), target]
                rank = (scores > tgt_score[:, None]).sum(dim=1)
                hits += float(torch.where(rank < 10, 1.0 / torch.log2(rank.float() + 2.0), 0.0).sum())
        return hits / val.size

    best, best_state, bad, t_start = -1.0, None, 0, time.perf_counter()
    for epoch in range(config.epochs):
        enc.train()
        t_epoch = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(inp.shape[0]))
        total = 0.0
        for start in range(0, perm.numel(), config.batch_size):
            b = perm[start : start + config.batch_size]
            x, y = inp_t[b], tgt_t[b]
            h = enc(emb(x), x > 0)  # [B, L, d]
            pos = y > 0
            h_pos, y_pos = h[pos], y[pos] - 1
            if use_ce:
                logits = h_pos @ emb.weight[1:].T
                loss = F.cross_entropy(logits, y_pos)
            else:
                neg = torch.from_numpy(rng.integers(0, n_items, size=config.negatives))
                pos_logit = (h_pos * emb.weight[1:][y_pos]).sum(-1, keepdim=True)
                neg_logit = h_pos @ emb.weight[1:][neg].T
                neg_logit = neg_logit.masked_fill(neg[None, :] == y_pos[:, None], -torch.inf)
                loss = F.cross_entropy(torch.cat([pos_logit, neg_logit], 1), torch.zeros_like(y_pos))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * b.numel()
        score = evaluate_val()
        seconds = time.perf_counter() - t_epoch
        if epoch_log is not None:
            epoch_log.append({"epoch": epoch, "loss": total / inp.shape[0], "val_ndcg@10": score, "seconds": seconds})
        if score > best:
            best, bad = score, 0
            best_state = ({k: v.clone() for k, v in emb.state_dict().items()},
                          {k: v.clone() for k, v in enc.state_dict().items()})  # fmt: skip
        else:
            bad += 1
        if bad >= config.patience or (config.max_seconds and time.perf_counter() - t_start > config.max_seconds):
            break
    assert best_state is not None
    emb.load_state_dict(best_state[0])
    enc.load_state_dict(best_state[1])
    enc.eval()
    encoder = {"type": "torch", "file": torch_encoder.ENCODER_FILE, "arch": "sasrec", **spec}
    art = build_artifact(
        "sasrec", "vectors", dataset, config, encoder,
        item_vectors=emb.weight[1:].detach().numpy().astype(np.float32).copy(),
        blobs={torch_encoder.ENCODER_FILE: torch_encoder.state_bytes(enc)},
    )  # fmt: skip
    art.metrics["val_ndcg@10"] = round(best, 6)
    art.metrics["epochs"] = epoch + 1
    return art
