"""Endpoints of the example jobs: upload an image, get its thumbnail from a spooler job."""

from __future__ import annotations

import uuid

from flask import Blueprint, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from app.jobs import JobError, current_jobs
from app.request_id import request_id
from app.web.auth import operator_only
from app.web.errors import ApiError

bp = Blueprint("examples", __name__, url_prefix="/api/examples")

IMAGE_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}


@bp.post("/thumbnails")
@operator_only
def create_thumbnail() -> ResponseReturnValue:
    """Store the image in the body and enqueue its thumbnail; the answer says where it will be."""
    suffix = IMAGE_TYPES.get(request.mimetype)
    if suffix is None:
        raise ApiError(415, "unsupported_media_type", f"send one of {', '.join(IMAGE_TYPES)}")
    data = request.get_data()
    if not data:
        raise ApiError(400, "invalid_request", "the body is empty")
    name = uuid.uuid4().hex
    uploads = current_app.config["SETTINGS"].uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    upload = uploads / f"{name}{suffix}"
    upload.write_bytes(data)
    try:
        job = current_jobs().enqueue("examples.thumbnail", {"upload": upload.name}, request_id=request_id())
    except JobError:
        upload.unlink(missing_ok=True)
        raise
    return jsonify(
        job=job.to_dict(),
        job_url=url_for("jobs_api.show", job_id=job.id),
        thumbnail_url=f"/media/thumbs/{name}.png",
    ), 202
