#!/usr/bin/env bash
# The stack on Docker Swarm: `scripts/swarm.sh up` (make swarm-up) builds the images without a
# registry, creates the stack's secrets and deploys docker-compose.yml with docker/swarm.yml;
# `scripts/swarm.sh down` (make swarm-down) removes the stack, keeping its database volume and
# secrets unless PURGE=1.
#
# Environment: STACK_NAME (default flask-uwsgi-stack), REPLICAS (3), HTTP_PORT (8080),
# OPERATOR_TOKEN (the jobs API's bearer token; generated if unset and absent), DATABASE_PASSWORD
# (generated if unset; never printed). Both become Docker secrets when the stack first deploys and
# stay as they are afterwards: the database volume was initialised with that password.
# APP_IMAGE (flask-uwsgi-stack-app), SWARM_WAIT (seconds to wait for nginx to answer, 300),
# SWARM_FILES (more Compose files to deploy with, separated by spaces: the tests' task module).
set -euo pipefail

cd "$(dirname "$0")/.."

STACK_NAME=${STACK_NAME:-flask-uwsgi-stack}
ENV_FILE=.env.offline
export STACK_NAME REPLICAS=${REPLICAS:-3} HTTP_PORT=${HTTP_PORT:-8080}
export APP_IMAGE=${APP_IMAGE:-flask-uwsgi-stack-app}

log() { printf 'swarm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_swarm() {
    local state
    state=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}') \
        || die "the Docker engine does not answer"
    case "$state" in
        "active true") ;;
        active*) die "this engine is a swarm worker: run this on a manager node" ;;
        *)
            log "this Docker engine is in no swarm; to make it a one-node swarm:"
            log "    docker swarm init --advertise-addr 127.0.0.1"
            exit 1
            ;;
    esac
}

# The images: the offline bases (scripts/offline-images.sh, seconds when built), then the app's.
build_images() {
    scripts/offline-images.sh
    set -a
    # shellcheck source=/dev/null
    . "./$ENV_FILE"
    set +a
    docker build --quiet --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "PIP_NO_INDEX=$PIP_NO_INDEX" \
        --tag "$APP_IMAGE" . >/dev/null
    log "built $APP_IMAGE"
}

secret_exists() { docker secret inspect "$1" >/dev/null 2>&1; }

# create_secret NAME VALUE-VARIABLE: from the variable's value, else a random one; read from
# standard input, so that it appears in no process list and is never printed.
create_secret() {
    local name="${STACK_NAME}_$1" value=${!2:-}
    if secret_exists "$name"; then
        [ -z "$value" ] || log "secret $name exists: kept ($2 is not applied; PURGE=1 make swarm-down removes it)"
        return
    fi
    if [ -z "$value" ]; then
        value=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
        log "generated $name (docker exec into a task: cat /run/secrets/$1)"
    fi
    printf '%s' "$value" | docker secret create "$name" - >/dev/null
    log "created secret $name"
}

wait_for_nginx() {
    local deadline=$((SECONDS + ${SWARM_WAIT:-300}))
    until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { docker stack ps --no-trunc "$STACK_NAME" >&2; die "nginx did not answer on port $HTTP_PORT within ${SWARM_WAIT:-300} s"; }
        sleep 2
    done
    log "stack $STACK_NAME answers on http://127.0.0.1:$HTTP_PORT/ ($REPLICAS app replicas)"
}

up() {
    require_swarm
    build_images
    create_secret db_password DATABASE_PASSWORD
    create_secret operator_token OPERATOR_TOKEN
    # The secrets reach the app as files only: docker-compose.yml passes these variables through,
    # and the app refuses NAME and NAME_FILE both set.
    unset OPERATOR_TOKEN DATABASE_PASSWORD
    # The offline images' names come from the environment: docker stack deploy reads no env file.
    local files=(-c docker-compose.yml -c docker/swarm.yml) file
    for file in ${SWARM_FILES:-}; do files+=(-c "$file"); done
    docker stack deploy --prune "${files[@]}" "$STACK_NAME"
    wait_for_nginx
}

down() {
    local containers deadline networks volumes
    # An engine that does not answer would make the wait below see nothing left.
    require_swarm
    # Every volume its tasks mounted, the per-replica anonymous ones included (no stack label).
    volumes=$(docker ps --all --quiet --filter "label=com.docker.stack.namespace=$STACK_NAME" \
        | xargs -r docker inspect --format '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}')
    # `docker stack rm` removes the services, then at once the network, which fails while a task
    # is still attached ("network ... is in use by task", seen in CI): the loop below waits for
    # the tasks to go and removes what is left then. Volumes and secrets in use cannot go either.
    docker stack rm "$STACK_NAME" || log "docker stack rm left part of $STACK_NAME (above): removed once its tasks are gone"
    deadline=$((SECONDS + 120))
    while :; do
        containers=$(docker ps --all --quiet --filter "label=com.docker.stack.namespace=$STACK_NAME")
        networks=$(docker network ls --quiet --filter "label=com.docker.stack.namespace=$STACK_NAME")
        [ -n "$containers$networks" ] || break
        [ "$SECONDS" -lt "$deadline" ] || die "the stack's containers or network are still there after 120 s"
        if [ -z "$containers" ]; then
            # shellcheck disable=SC2086 # one id per word
            docker network rm $networks >/dev/null 2>&1 || true
        fi
        sleep 1
    done
    if [ "${PURGE:-0}" = 1 ]; then
        # shellcheck disable=SC2086 # one name per word
        docker volume rm $volumes $(docker volume ls --quiet --filter "label=com.docker.stack.namespace=$STACK_NAME") \
            >/dev/null 2>&1 || true
        for name in db_password operator_token; do
            ! secret_exists "${STACK_NAME}_$name" || docker secret rm "${STACK_NAME}_$name" >/dev/null
        done
        log "removed $STACK_NAME with its volumes and secrets"
    else
        log "removed $STACK_NAME; its volumes and secrets stay (PURGE=1 removes them)"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) die "usage: $0 up|down" ;;
esac
