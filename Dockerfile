# airlock in a container: scan, verify and (with the documented flags) run models in the sandbox.
#
#   docker build -t airlock .
#   docker run --rm -v "$PWD/models:/models:ro" airlock scan /models              # scan: no flags needed
#
# `airlock run` / `airlock serve` build their own sandbox (bubblewrap namespaces, seccomp, Landlock)
# inside the container. Docker's default seccomp profile and AppArmor forbid the user namespaces
# and mounts that bubblewrap needs, so those commands need:
#
#   docker run --rm --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --cap-drop ALL -v "$PWD/models:/models:ro" airlock run /models/model.onnx
#
# (never --privileged). `docker run ... airlock doctor` shows which layers are active. The image runs
# as the unprivileged user `airlock` (uid 10001); nothing in it runs as root.
# The dependency versions and hashes come from requirements/dev.lock (the tested set).

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY docs ./docs
COPY setup.py ./
COPY requirements ./requirements
COPY tools/lock_to_constraints.py ./tools/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python tools/lock_to_constraints.py requirements/dev.lock > /wheels/constraints.txt

FROM python:3.12-slim-bookworm
ARG EXTRAS=sandbox,numpy,onnx,safetensors,integrity,serve,sbom
# bubblewrap from Debian (airlock prefers a recent system bwrap) and libseccomp for the filters.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap libseccomp2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
# The tested versions (requirements/dev.lock) as constraints: the wheel built above has no hash to pin.
RUN pip install --no-cache-dir --constraint /wheels/constraints.txt \
        "$(ls /wheels/model_airlock-*.whl)[${EXTRAS}]" \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin airlock
USER 10001:10001
WORKDIR /home/airlock
ENTRYPOINT ["airlock"]
CMD ["--help"]
