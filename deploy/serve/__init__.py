"""The inference service: KServe v2 / Open Inference Protocol over HTTP with dynamic batching."""
