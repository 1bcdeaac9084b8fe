#!/usr/bin/env bash
# Builds, with no container registry, everything `docker compose --env-file .env.offline` needs:
#   - a Python base image from Debian packages (mmdebstrap, then docker import),
#   - an nginx image from Debian packages that behaves like the official one (docker/nginx/),
#   - a Prometheus image from Debian's prometheus package, for the `monitoring` profile,
#   - a PostgreSQL image from Debian's postgresql package that behaves like the official one
#     (docker/postgres/), for the `postgres` profile and Docker Swarm,
#   - docker/wheelhouse/: wheels of the versions in requirements/runtime.txt, for that Python,
# and writes .env.offline naming them. Packages come from the apt sources this machine uses,
# read at run time. Each artefact is tagged by a hash of its inputs and skipped when that
# tag already exists, so a re-run takes seconds.
#
# Environment: DEBIAN_SUITE (default: this machine's release); PYTHON, the host Python that runs
# pip (default: the project's .venv, else python3); OFFLINE_IMAGES_REBUILD=1 to rebuild even when
# the tags exist, e.g. to take Debian's latest security updates.
set -euo pipefail

cd "$(dirname "$0")/.."

REPOSITORY=flask-uwsgi-stack
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
WHEELHOUSE=docker/wheelhouse
RUNTIME_LOCK=requirements/runtime.txt
ENV_FILE=.env.offline
PYTHON_PACKAGES=(python3 python3-venv ca-certificates)
NGINX_PACKAGES=(nginx gettext-base)
PROMETHEUS_PACKAGES=(prometheus)
POSTGRES_PACKAGES=(postgresql)
# Slim like the official images: no documentation, manuals or translations; merged /usr made by
# mmdebstrap's hook rather than by the usrmerge package, which would pull in perl.
MMDEBSTRAP_OPTIONS=(
    --variant=minbase
    --format=tar
    --hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr
    --aptopt='APT::Install-Recommends "false"'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
)

# Extra mmdebstrap options of one image (build_postgres_image sets its own).
ROOTFS_OPTIONS=()

log() { printf 'offline-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_tools() {
    command -v docker >/dev/null || die "docker is not installed"
    docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"
    if ! command -v mmdebstrap >/dev/null; then
        [ "$(id -u)" = 0 ] || die "mmdebstrap is missing: apt-get install mmdebstrap (as root)"
        log "installing mmdebstrap from the machine's apt sources"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
    fi
    [ "$(id -u)" = 0 ] || die "run as root: mmdebstrap builds the root filesystems in root mode"
}

# The apt source files of this machine that hold at least one entry.
source_files() {
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] && grep -qE '^[[:space:]]*[^#[:space:]]' "$file" && printf '%s\n' "$file"
    done
    return 0
}

# A short, stable hash of everything passed on standard input.
input_hash() { sha256sum | cut -c1-12; }

image_exists() {
    [ "${OFFLINE_IMAGES_REBUILD:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1
}

# rootfs_image NAME CHANGE... -- PACKAGE...: a minimal Debian with the PACKAGEs, imported with the
# Dockerfile instructions CHANGE as NAME:SUITE-HASH, HASH covering every input. Prints that tag.
# ROOTFS_OPTIONS, if set, adds mmdebstrap options for this image only.
rootfs_image() {
    local name=$1 changes=() packages hash tag options=("${MMDEBSTRAP_OPTIONS[@]}" "${ROOTFS_OPTIONS[@]}")
    shift
    while [ "$1" != -- ]; do changes+=(--change "$1"); shift; done
    shift
    packages=$(IFS=,; printf '%s' "$*")
    hash=$( { printf '%s\n' "$SUITE" "$packages" "${changes[@]}" "${options[@]}"; cat "${SOURCES[@]}"; } | input_hash)
    tag="$REPOSITORY/$name:$SUITE-$hash"
    if image_exists "$tag"; then
        log "up to date: $tag"
    else
        log "building $tag from Debian packages: $packages"
        # shellcheck disable=SC2016 # the hook's $1 (the root directory) is mmdebstrap's to expand
        if ! mmdebstrap --quiet "${options[@]}" --include="$packages" \
            --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' \
            "$SUITE" - "${SOURCES[@]}" 2>"$WORK/mmdebstrap.log" \
            | docker import "${changes[@]}" \
                --change "LABEL org.opencontainers.image.title=$REPOSITORY" \
                --message "mmdebstrap $SUITE: $packages" - "$tag" >/dev/null; then
            cat "$WORK/mmdebstrap.log" >&2
            die "could not build $tag"
        fi
        remove_other_tags "$tag"
    fi
    printf '%s\n' "$tag"
}

# Untags the images an earlier run built from other inputs; one still in use stays.
remove_other_tags() {
    local keep=$1 other
    docker image ls --format '{{.Repository}}:{{.Tag}}' "${keep%:*}" | while read -r other; do
        [ "$other" = "$keep" ] || docker image rm "$other" >/dev/null 2>&1 || true
    done
}

build_python_image() {
    # The environment contract of the official python image: python3 on PATH, UTF-8.
    PYTHON_IMAGE=$(rootfs_image python-debian \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV LANG=C.UTF-8' \
        'CMD ["python3"]' \
        -- "${PYTHON_PACKAGES[@]}")
}

# dockerfile_image NAME ROOTFS DIR: DIR's Dockerfile built on ROOTFS as NAME:SUITE-HASH, HASH
# covering both. Prints that tag.
dockerfile_image() {
    local name=$1 rootfs=$2 dir=$3 hash tag
    hash=$( { printf '%s\n' "$rootfs"; tar -C "$dir" --sort=name --mtime=@0 --owner=0 --group=0 -cf - .; } | input_hash)
    tag="$REPOSITORY/$name:$SUITE-$hash"
    if image_exists "$tag"; then
        log "up to date: $tag"
    else
        log "building $tag"
        if ! docker build --build-arg "BASE_IMAGE=$rootfs" --tag "$tag" "$dir" >"$WORK/build.log" 2>&1; then
            cat "$WORK/build.log" >&2
            die "docker build of $tag failed"
        fi
        remove_other_tags "$tag"
    fi
    printf '%s\n' "$tag"
}

build_nginx_image() {
    local rootfs
    rootfs=$(rootfs_image nginx-debian-rootfs \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -- "${NGINX_PACKAGES[@]}")
    NGINX_IMAGE=$(dockerfile_image nginx-debian "$rootfs" docker/nginx)
}

# PostgreSQL as the official image runs it (docker/postgres/). Debian's postinst creates a "main"
# cluster, unused here: removed. LLVM and its Z3 (over 120 MB) serve only the JIT, which the image
# turns off, and the locale sources only locale-gen (initdb uses C.UTF-8): left out, to keep it small.
build_postgres_image() {
    local rootfs
    # shellcheck disable=SC2016 # the hook's $1 (the root directory) is mmdebstrap's to expand
    local ROOTFS_OPTIONS=(
        '--dpkgopt=path-exclude=/usr/lib/*/libLLVM*'
        '--dpkgopt=path-exclude=/usr/lib/*/libz3*'
        '--dpkgopt=path-exclude=/usr/share/i18n/*'
        '--dpkgopt=path-exclude=/usr/lib/postgresql/*/lib/llvmjit*'
        '--dpkgopt=path-exclude=/usr/lib/postgresql/*/lib/bitcode/*'
        '--customize-hook=rm -rf "$1/etc/postgresql/"* "$1/var/lib/postgresql/"*'
    )
    rootfs=$(rootfs_image postgres-debian-rootfs \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -- "${POSTGRES_PACKAGES[@]}")
    POSTGRES_IMAGE=$(dockerfile_image postgres-debian "$rootfs" docker/postgres)
}

# Prometheus as the official image runs it: the `monitoring` profile's command (its entrypoint.sh,
# mounted from docker/prometheus/) finds `prometheus` on PATH and keeps its data in /prometheus.
build_prometheus_image() {
    PROMETHEUS_IMAGE=$(rootfs_image prometheus-debian \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'WORKDIR /prometheus' \
        'EXPOSE 9090' \
        -- "${PROMETHEUS_PACKAGES[@]}")
}

# Wheels of exactly the versions in the runtime lock, for the base image's Python and libc: the
# wheelhouse is emptied first, and --require-hashes refuses a file or a dependency the lock lacks.
build_wheelhouse() {
    local target platforms=() hash stamp="$WHEELHOUSE/.inputs"
    target=$(docker run --rm --network none "$PYTHON_IMAGE" python3 -c \
        'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1], platform.machine())')
    read -r py_version glibc arch <<<"$target"
    # pip does not widen manylinux_2_X itself: name every glibc level the image can run.
    platforms=(--platform "manylinux2014_$arch")
    for ((minor = 17; minor <= ${glibc#2.}; minor++)); do
        platforms+=(--platform "manylinux_2_${minor}_$arch")
    done
    hash=$( { printf '%s\n' "$py_version" "$glibc" "$arch"; cat "$RUNTIME_LOCK"; } | input_hash)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] && compgen -G "$WHEELHOUSE/*.whl" >/dev/null \
        && [ "${OFFLINE_IMAGES_REBUILD:-0}" != 1 ]; then
        log "up to date: $WHEELHOUSE (Python $py_version, glibc $glibc, $arch)"
        return
    fi
    log "downloading the wheels of $RUNTIME_LOCK for Python $py_version, glibc $glibc, $arch into $WHEELHOUSE"
    find "$WHEELHOUSE" -mindepth 1 ! -name .gitkeep -delete
    "$PYTHON" -m pip download --quiet --dest "$WHEELHOUSE" --only-binary=:all: --require-hashes \
        --implementation cp --python-version "$py_version" "${platforms[@]}" \
        --requirement "$RUNTIME_LOCK"
    printf '%s\n' "$hash" >"$stamp"
}

write_env_file() {
    cat >"$ENV_FILE" <<EOF
# Written by scripts/offline-images.sh: images built from Debian packages, no registry.
# Use: docker compose --env-file $ENV_FILE up --build
PYTHON_IMAGE=$PYTHON_IMAGE
NGINX_IMAGE=$NGINX_IMAGE
PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE
POSTGRES_IMAGE=$POSTGRES_IMAGE
PIP_NO_INDEX=1
EOF
    log "wrote $ENV_FILE"
}

main() {
    require_tools
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    # shellcheck source=/dev/null
    SUITE=${DEBIAN_SUITE:-$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:?}")}
    mapfile -t SOURCES < <(source_files)
    [ "${#SOURCES[@]}" -gt 0 ] || die "no apt sources found in /etc/apt"
    build_python_image
    build_nginx_image
    build_prometheus_image
    build_postgres_image
    build_wheelhouse
    write_env_file
}

main "$@"
