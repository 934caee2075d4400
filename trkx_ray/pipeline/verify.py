"""The check of an ONNX export: onnxruntime against torch on the same random event.

:func:`verify_export` (``python -m trkx_ray.export --verify HITS``) builds two
:class:`~trkx_ray.pipeline.Pipeline` objects from one configuration, one on the torch
runtime and one on the export directory, and compares the embedding and the filter and
GNN edge logits on the embedding's radius graph. It lives apart from
:mod:`trkx_ray.pipeline.export` and :mod:`trkx_ray.pipeline.onnx_runtime` because it
builds pipelines, which import both.

Light to import: torch is imported when used.
"""

from __future__ import annotations

from pathlib import Path

from trkx_ray.pipeline.config import PipelineConfig

__all__ = ["verify_export"]


def verify_export(config: PipelineConfig, directory: Path,
                  num_hits: int = 5000) -> dict[str, float]:
    """Largest |onnxruntime - torch| per model on a random event (fp32, CPU).

    Args:
        config: the exported :class:`~trkx_ray.pipeline.PipelineConfig`.
        directory: the export directory.
        num_hits: hits of the random event.

    Returns:
        ``{"embedding": ..., "filter": ..., "gnn": ..., "num_edges": ...}``: max abs
        difference of the embedding and of the edge logits, on the embedding's radius
        graph of ``num_edges`` edges.
    """
    import torch

    from trkx_ray.pipeline.edges import build_edges
    from trkx_ray.pipeline.features import cluster_shape, hit_features, random_event
    from trkx_ray.pipeline.models import model_inputs
    from trkx_ray.pipeline.pipeline import Pipeline, orient_edges

    base = {"precision": "fp32", "edges": {"backend": "faiss"}}
    torch_pipe = Pipeline.from_config(config, overrides={**base, "runtime": "torch"})
    onnx_pipe = Pipeline.from_config(
        config, overrides={**base, "runtime": "onnx", "onnx": {"dir": str(directory)}}
    )
    event = random_event(num_hits, seed=7)

    with torch.inference_mode():
        x = torch.from_numpy(hit_features(event, config.features))
        shape = torch.from_numpy(cluster_shape(event)) if config.cluster_shape else None
        x_emb = model_inputs(x, None, shape if config.embedding.cluster_shape else None)
        emb_t = torch_pipe.embedding(x_emb)
        emb_o = onnx_pipe.embedding(x_emb)
        edges = build_edges(emb_t, config.edges.radius, backend="faiss")
        edges = orient_edges(edges.to(torch.int64), x[:, 0])
        nodes = model_inputs(x, emb_t if config.filter.use_embedding else None,
                             shape if config.filter.cluster_shape else None)
        x_gnn = model_inputs(x, None, shape if config.gnn.cluster_shape else None)
        diffs = {
            "embedding": (emb_t - emb_o).abs().max().item() if num_hits else 0.0,
            "filter": 0.0,
            "gnn": 0.0,
            "num_edges": float(edges.shape[1]),
        }
        if edges.shape[1]:
            filter_diff = torch_pipe.filter(nodes, edges) - onnx_pipe.filter(nodes, edges)
            diffs["filter"] = filter_diff.abs().max().item()
            gnn_diff = torch_pipe.gnn(x_gnn, edges) - onnx_pipe.gnn(x_gnn, edges)
            diffs["gnn"] = gnn_diff.abs().max().item()
    return diffs
