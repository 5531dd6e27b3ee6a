# The KrakenPlug agent image: one entrypoint, `krakenplug`, for the device plugin, the exporter and
# node discovery (`krakenplug run` starts the components the config enables).
#
# Vendor libraries (NVML, DCMI, CNDev, XPUML, STCML and the HPE runtime) are never baked in: the chart
# mounts them read-only from the host, so one image serves every vendor and driver version.
#
#   bash ci/build-image.sh          # CI: Debian base from mmdebstrap, buildah, smoke test, OCI archive
#   docker build --build-arg VERSION=0.1.0 --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t krakenplug:0.1.0 .
#
# Runs as uid 65532 by default. The chart runs it as uid 0 without capabilities (the kubelet's
# sockets belong to root), and privileged for vendors whose library opens device nodes; see docs/image.md.

# PYTHON_IMAGE builds, RUNTIME_IMAGE runs: both need python3 at the same path (the venv links to it).
# ci/build-image.sh passes two mmdebstrap bases (Debian's python3; the runtime one without pip or venv).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=${PYTHON_IMAGE}

# --- builder: krakenplug and its dependencies from wheels into the venv /opt/krakenplug, then pruned.
FROM ${PYTHON_IMAGE} AS builder
# Only for a builder behind a TLS-intercepting proxy (ci/build-image.sh passes the host's CA bundle).
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY . .
# Pruned, each measured: the kubernetes client's asyncio half (kubernetes/aio, 68 MB) and aiohttp's
# family, which the agent never imports; pip and setuptools; test suites; and the bytecode of the
# generated kubernetes API and models (23 MB): the client loads those lazily, so the few the agent uses
# compile in memory at start. Everything else keeps its bytecode (PYTHONDONTWRITEBYTECODE at run time).
RUN python3 -m venv /opt/krakenplug \
 && /opt/krakenplug/bin/pip install --only-binary=:all: --no-compile . \
 && /opt/krakenplug/bin/pip uninstall -y aiohttp aiohttp-retry aiohappyeyeballs aiosignal attrs frozenlist \
      multidict propcache yarl \
 && /opt/krakenplug/bin/pip uninstall -y pip setuptools \
 && site="$(/opt/krakenplug/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "$site/kubernetes/aio" \
 && find "$site" -type d -name tests -prune -exec rm -rf {} + \
 && find /opt/krakenplug/bin -name 'activate*' -delete \
 && /opt/krakenplug/bin/python -m compileall -q -j 0 -x '/kubernetes/client/(api|models)/' "$site" \
 && mkdir -p /licenses && cp LICENSE /licenses/LICENSE

# --- final: the runtime base, the venv and the license; no pip, no compiler, no vendor library.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="krakenplug" \
      org.opencontainers.image.description="Device plugin, Prometheus exporter and node discovery for heterogeneous AI accelerators" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="https://github.com/c2net-ai/krakenplug" \
      org.opencontainers.image.url="https://github.com/c2net-ai/krakenplug" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="KrakenPlug"
ENV PATH=/opt/krakenplug/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=builder /opt/krakenplug /opt/krakenplug
COPY --from=builder /licenses/ /licenses/
# A passwd entry for uid 65532 without the passwd package; a python:slim base also loses its pip.
RUN echo 'krakenplug:x:65532:65532:krakenplug:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'krakenplug:x:65532:' >> /etc/group \
 && if python3 -m pip --version >/dev/null 2>&1; then python3 -m pip uninstall -q -y pip setuptools wheel; fi \
 && krakenplug --version
USER 65532:65532
ENTRYPOINT ["krakenplug"]
CMD ["--help"]
