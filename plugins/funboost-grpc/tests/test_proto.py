"""The checked-in stubs match broker.proto (regenerate with tools/regen_proto.sh)."""
import os
import shutil
import subprocess
import sys

import pytest

import funboost_grpc.proto.broker_pb2_grpc as checked_in

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def test_generated_code_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    from importlib.metadata import version
    if version("grpcio-tools") != checked_in.GRPC_GENERATED_VERSION:
        pytest.skip(f"grpcio-tools {version('grpcio-tools')} differs from the generator "
                    f"{checked_in.GRPC_GENERATED_VERSION}: the output would differ in its header only")
    shutil.copytree(os.path.join(SRC, "funboost_grpc", "proto"), tmp_path / "funboost_grpc" / "proto")
    for f in ("broker_pb2.py", "broker_pb2.pyi", "broker_pb2_grpc.py"):
        os.remove(tmp_path / "funboost_grpc" / "proto" / f)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--pyi_out=.",
                    "--grpc_python_out=.", "funboost_grpc/proto/broker.proto"], cwd=tmp_path, check=True)
    for f in ("broker_pb2.py", "broker_pb2.pyi", "broker_pb2_grpc.py"):
        with open(os.path.join(SRC, "funboost_grpc", "proto", f)) as a, open(tmp_path / "funboost_grpc" / "proto" / f) as b:
            assert a.read() == b.read(), f"{f} is stale: run tools/regen_proto.sh"
