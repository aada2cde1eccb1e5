"""What a run renders, described without tensors: model presets, cache policy parameters, clips.

Nothing here imports torch, so the driver validates and plans a whole run with these modules alone,
before Ray starts or a GPU is touched; `pipeline.model` and `pipeline.cache` build from them.
"""
