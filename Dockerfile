# gpu-carbon-exporter container image: docker build -t ghcr.io/gpu-carbon-exporter/gpu-carbon-exporter:0.1.0 .
# The same name and tag are used by deploy/kubernetes and deploy/compose (tag = the package version).
# NVML comes from the host through the NVIDIA container runtime (NVIDIA_DRIVER_CAPABILITIES=utility).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gpu-carbon-exporter" \
      org.opencontainers.image.description="GPU energy and carbon metrics for Prometheus" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/gpu-carbon-exporter/gpu-carbon-exporter" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && install -d -o 65534 -g 65534 -m 0700 /var/lib/gpu-carbon-exporter
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility \
    PYTHONDONTWRITEBYTECODE=1
# nobody: no privilege of its own (docs/security.md for what each feature needs)
USER 65534:65534
EXPOSE 9842
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9842/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["gpu-carbon-exporter"]
