# syntax=docker/dockerfile:1
# The KrakenPlug agent image: one entrypoint, `krakenplug`, for the device plugin, the exporter and
# node discovery (`krakenplug run` starts the components the config enables).
#
# Vendor libraries (NVML, DCMI, CNDev, XPUML, STCML and the HPE runtime) are never baked in: the chart
# mounts them read-only from the host, so one image serves every vendor and driver version.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t krakenplug:0.1.0 .
#
# Runs as uid 65532 by default. The chart runs it as uid 0 without capabilities (the kubelet's
# sockets belong to root), and privileged for vendors whose library opens device nodes; see docs/image.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels for krakenplug and every dependency (all ship manylinux wheels: no compiler).
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels . \
 && mkdir -p /licenses \
 && if [ -f LICENSE ]; then cp LICENSE /licenses/LICENSE; fi

# --- final: the slim Python base plus the installed wheels, nothing else.
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="krakenplug" \
      org.opencontainers.image.description="Device plugin, Prometheus exporter and node discovery for heterogeneous AI accelerators" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="https://github.com/c2net-ai/KrakenPlug" \
      org.opencontainers.image.url="https://github.com/c2net-ai/KrakenPlug" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="KrakenPlug"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The kubernetes client's asyncio half (kubernetes/aio, ~40 MB) and aiohttp are never imported by the
# agent; removing them, and pip itself, keeps the image under 250 MB.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels krakenplug \
 && rm -rf "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/kubernetes/aio" \
 && pip uninstall -y aiohttp aiohttp-retry aiohappyeyeballs aiosignal frozenlist multidict propcache yarl \
 && pip uninstall -y pip setuptools wheel \
 && groupadd --system --gid 65532 krakenplug \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin krakenplug \
 && krakenplug --version
COPY --from=builder /licenses/ /licenses/
USER 65532:65532
ENTRYPOINT ["krakenplug"]
CMD ["--help"]
