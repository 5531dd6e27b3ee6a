"""Generated gRPC stubs for the kubelet APIs (see proto/ and scripts/gen_protos.sh).

Do not edit the *_pb2* modules by hand; tests/unit/test_protos.py fails when they drift from proto/.
"""
