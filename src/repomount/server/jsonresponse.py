"""JSON answers that can always be written.

Starlette writes JSON as UTF-8 text, which a lone UTF-16 surrogate has no form in; such
a string can come back in an answer (an error echoing the bad path or input it
refuses), and the answer then failed with a 500. This one falls back to ASCII escapes
(`"\\ud800"`, as the client sent it) in that case.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse as StarletteJSONResponse


class JSONResponse(StarletteJSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(
                content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")
