"""nginx for the native run: where it is installed, and its configuration under RUN_DIR/nginx."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from app.settings import PROJECT_ROOT, Settings

INSTALL_HINT = (
    "nginx is not installed: install it (Debian/Ubuntu: sudo apt-get install nginx-light; "
    "macOS: brew install nginx) or set NGINX to its path"
)


def find_nginx() -> str | None:
    """The nginx binary: $NGINX when set (None if not executable), else the one on PATH or in sbin."""
    configured = os.environ.get("NGINX")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def render_nginx(settings: Settings, nginx: str) -> Path:
    """Write the native nginx configuration under RUN_DIR/nginx; returns the main file."""
    conf_dir = settings.run_dir / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (conf_dir / sub).mkdir(parents=True, exist_ok=True)
    socket_path = settings.socket_path
    values = {
        "APP_UPSTREAM": f"unix:{socket_path}" if socket_path else settings.socket,
        "NGINX_LISTEN": f"{settings.http_host}:{settings.http_port}",
        "MAX_BODY_SIZE": settings.max_body_size,
        "NGINX_DIR": str(PROJECT_ROOT / "nginx"),
        "STATIC_ROOT": str(PROJECT_ROOT / "app" / "static"),
        "MEDIA_ROOT": str(settings.media_dir),
        "UPSTREAM_TIMEOUT": str(settings.upstream_timeout),
        "RUN_DIR": str(settings.run_dir),
        # One uWSGI, resolved once: the native run never follows replicas through a DNS server.
        "APP_UPSTREAM_CONF": str(conf_dir / "upstream.conf"),
        "MIME_TYPES": str(_mime_types(nginx)),
        # Workers run as the user that owns the uWSGI socket and the private DATA_DIR
        # (only root needs saying so: nginx would otherwise switch to nobody).
        "NGINX_USER": "user root root;" if os.geteuid() == 0 else "",
    }
    templates = PROJECT_ROOT / "nginx"
    (conf_dir / "upstream.conf").write_text(fill(templates / "upstream-static.conf.template", values))
    (conf_dir / "app.conf").write_text(fill((templates / "templates" / "app.conf.template"), values))
    (conf_dir / "nginx.conf").write_text(fill(templates / "native.conf.template", values))
    return conf_dir / "nginx.conf"


def check_nginx_conf(nginx: str, conf: Path) -> bool:
    """True when ``nginx -t`` accepts ``conf``; nginx prints its own reasons otherwise."""
    test = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-c", str(conf)], check=False)
    return test.returncode == 0


def fill(template: Path, values: dict[str, str]) -> str:
    """Replace each ${UPPER_CASE} placeholder, as envsubst does; nginx's $variables stay."""
    return re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", lambda m: values[m.group(1)], template.read_text())


def _mime_types(nginx: str) -> Path:
    """nginx's own mime.types, next to its compiled-in configuration path."""
    try:
        version = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    except OSError:
        version = ""
    for word in version.split():
        if word.startswith("--conf-path="):
            candidate = Path(word.split("=", 1)[1]).parent / "mime.types"
            if candidate.exists():
                return candidate
    return Path("/etc/nginx/mime.types")
