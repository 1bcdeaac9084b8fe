"""One example per backend: a CPU job on the spooler whose output nginx serves, an IO job
with retries, and a fire-and-forget job on a mule."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from flask import current_app
from PIL import Image, UnidentifiedImageError

from app.examples.page_views import page_views
from app.jobs import PermanentFailure, current_job, job

THUMBNAIL_SIZE = (256, 256)
# Refuse decompression bombs: a few kilobytes of PNG that decode to gigabytes.
Image.MAX_IMAGE_PIXELS = 40_000_000


# An upload that is not an image, or a decompression bomb, stays so: fail at once, keeping why.
@job(
    "examples.thumbnail",
    backend="spooler",
    max_attempts=2,
    timeout=60,
    throws=(UnidentifiedImageError, Image.DecompressionBombError),
)
def thumbnail(upload: str) -> dict[str, object]:
    """Turn an uploaded image into a PNG thumbnail of at most 256×256 under /media/thumbs/."""
    settings = current_app.config["SETTINGS"]
    source = settings.uploads_dir / Path(upload).name
    target = settings.thumbs_dir / f"{source.stem}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    running = current_job()
    try:
        image = Image.open(source)
    except FileNotFoundError:
        raise PermanentFailure(f"the upload {source.name} is gone (an image that failed already?)") from None
    except (UnidentifiedImageError, Image.DecompressionBombError):
        source.unlink(missing_ok=True)  # not an image we will ever read: the job fails for good
        raise
    with image:
        if running:
            running.progress(0.3, "decoded")
        image.thumbnail(THUMBNAIL_SIZE)
        temporary = target.with_suffix(".tmp")
        image.save(temporary, format="PNG")
        size = image.size
    temporary.replace(target)  # nginx never serves a half-written file
    source.unlink(missing_ok=True)
    return {"url": f"/media/thumbs/{target.name}", "width": size[0], "height": size[1]}


class WebhookRejected(Exception):
    """The receiver answered with an error status: worth retrying."""


# A malformed URL (ours: not http(s); urllib's: no host, bad characters) stays malformed.
@job(
    "examples.deliver_webhook",
    backend="spooler",
    max_attempts=5,
    backoff=2.0,
    timeout=30,
    throws=(ValueError, http.client.InvalidURL),
)
def deliver_webhook(url: str, payload: object) -> dict[str, object]:
    """POST ``payload`` as JSON to ``url``; a network error or a non-2xx answer is retried, a
    malformed URL fails at once."""
    parts = urllib.parse.urlsplit(url)  # raises ValueError on a malformed IPv6 host
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    running = current_job()
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": running.id if running else "",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {"status": response.status}
    except urllib.error.HTTPError as exc:
        raise WebhookRejected(f"{url} answered {exc.code}") from None


@job("examples.count_page_view", backend="mule", max_attempts=1, timeout=10)
def count_page_view(page: str) -> dict[str, int]:
    """Count a view of ``page``: fire-and-forget, losing one on a crash is fine."""
    return {"views": page_views().count(page)}
