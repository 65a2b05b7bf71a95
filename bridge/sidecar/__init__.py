"""The running sidecar: the loop, dispatch, offsets, replay, health and metrics."""
