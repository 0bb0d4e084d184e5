"""Open Inference Protocol (KServe v2) over REST: codec, routes, error mapping."""
