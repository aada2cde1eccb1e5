"""Distributed batch renderer for minute-long video: Self Forcing + Deep Forcing KV cache."""
