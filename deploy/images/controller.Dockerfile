# The kaito-core controller image: the operator, its catalogs and provisioner plugins. No torch.
# Build from the repository root:  docker build -f deploy/images/controller.Dockerfile -t kaito-core/controller .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kaito_core ./kaito_core
COPY presets/pyproject.toml ./presets/pyproject.toml
COPY presets/kaito_presets ./presets/kaito_presets
COPY provisioners/aks ./provisioners/aks
COPY provisioners/karpenter ./provisioners/karpenter
RUN python -m pip install --no-cache-dir --prefix=/install ./presets . ./provisioners/aks ./provisioners/karpenter

FROM python:3.11-slim
COPY --from=build /install /usr/local
# Non-root, read-only root filesystem friendly: nothing is written outside /tmp.
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["kaito"]
CMD ["controller"]
