#!/usr/bin/env bash
# Regenerate the gRPC Python code of the scoring service from protos/ (commit the result).
# Usage: scripts/gen_proto.sh   (needs grpcio-tools: pip install 'recmesh[dev]')
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT=services/scoring/proto
"$PY" -m grpc_tools.protoc -I protos --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  protos/recmesh/v1/recommend.proto
# protoc writes packages mirroring the proto path and absolute imports; flatten to package-relative.
mv "$OUT"/recmesh/v1/recommend_pb2.py "$OUT"/recmesh/v1/recommend_pb2.pyi "$OUT"/recmesh/v1/recommend_pb2_grpc.py "$OUT"/
rm -rf "$OUT"/recmesh
sed -i 's/^from recmesh\.v1 import recommend_pb2 as/from . import recommend_pb2 as/' "$OUT"/recommend_pb2_grpc.py
echo "generated into $OUT"
