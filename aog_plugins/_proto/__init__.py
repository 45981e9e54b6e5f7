"""Generated protobuf and gRPC modules (from ``proto/``; regenerate with scripts/gen_proto.py)."""
