# leakaudit in a container: CPU-only PyTorch, a non-root user, the model and samples mounted read-only.
#   docker build -t leakaudit .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/models:/models:ro" -v "$PWD/samples:/data:ro" \
#     -v "$PWD/leakaudit-report:/audit/leakaudit-report" leakaudit scan /models/model.onnx --data /data
# The exit code is the scan's (README.md, "Exit codes").
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Its own layer, before the source: the CPU wheels (no CUDA libraries, GBs smaller) change far less often
RUN python -m pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md LICENSE /src/
COPY leakaudit /src/leakaudit
COPY rules /src/rules
COPY reports /src/reports
COPY references /src/references
RUN python -m pip install /src && rm -rf /src

# A user of its own: a model file is untrusted input, and the scan needs no root to read it
RUN useradd --create-home --uid 10001 leakaudit && mkdir -p /audit && chown leakaudit /audit
USER 10001
WORKDIR /audit
ENTRYPOINT ["leakaudit"]
CMD ["--help"]
