#!/bin/sh
# Renders /etc/nginx/templates/**/*.template into /etc/nginx/conf.d/ as the official image does:
# only variables defined in the environment are replaced, so nginx's own $variables survive.
# NGINX_ENVSUBST_TEMPLATE_DIR, _TEMPLATE_SUFFIX, _OUTPUT_DIR and _FILTER work as there.
set -e

ME=$(basename "$0")
template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
filter="${NGINX_ENVSUBST_FILTER:-}"

entrypoint_log() {
    if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
        echo "$@"
    fi
}

[ -d "$template_dir" ] || exit 0
if [ ! -w "$output_dir" ]; then
    entrypoint_log "$ME: ERROR: $template_dir exists, but $output_dir is not writable"
    exit 0
fi

# awk's ENVIRON lists names safely even when a value spans several lines; each becomes ${NAME}.
# shellcheck disable=SC2016,SC2046
defined_envs=$(printf '${%s} ' $(awk "END { for (name in ENVIRON) { print ( name ~ /${filter}/ ) ? name : \"\" } }" </dev/null))

find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
    relative_path="${template#"$template_dir/"}"
    output_path="$output_dir/${relative_path%"$suffix"}"
    mkdir -p "$output_dir/$(dirname "$relative_path")"
    entrypoint_log "$ME: running envsubst on $template to $output_path"
    envsubst "$defined_envs" <"$template" >"$output_path"
done
