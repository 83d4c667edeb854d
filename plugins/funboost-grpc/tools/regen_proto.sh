#!/usr/bin/env bash
# Regenerate the checked-in Python stubs from src/funboost_grpc/proto/broker.proto.
# Needs grpcio-tools (pip install "funboost-grpc[test]"). Usage: tools/regen_proto.sh [python]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-python}"
cd "$here/src"
"$py" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. funboost_grpc/proto/broker.proto
echo "regenerated: $(ls funboost_grpc/proto/broker_pb2*)"
