"""Zip archives that zipfile will not write by itself, for the package and upload tests."""

from __future__ import annotations

import io
import zipfile

SOURCE = b"def handler(event, context):\n    return event\n"


def zip_with_utf8_flagged_name(raw_name: bytes) -> bytes:
    """A zip holding main.py and one entry flagged UTF-8 whose stored name is ``raw_name``.

    zipfile only writes names it can encode, so a non-ASCII placeholder of the
    same length (which makes zipfile set the UTF-8 flag) is written, then
    replaced in the local header and the central directory.
    """
    placeholder = ("\u00e9" * (len(raw_name) // 2) + "Q" * (len(raw_name) % 2)).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", SOURCE)
        archive.writestr(placeholder.decode(), b"x")
    data = buffer.getvalue()
    assert data.count(placeholder) == 2
    return data.replace(placeholder, raw_name)
