#!/usr/bin/env bash
# Regenerates the committed Python stubs in src/krakenplug/api from proto/.
# The import path maps proto/ onto the package so the *_pb2_grpc modules import
# their *_pb2 siblings as krakenplug.api.<name>_pb2.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-src}
python -m grpc_tools.protoc -Ikrakenplug/api=proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/deviceplugin_v1beta1.proto proto/podresources_v1.proto \
  proto/pluginregistration_v1.proto proto/dra_v1.proto proto/dra_v1beta1.proto proto/drahealth_v1alpha1.proto
