"""The receiver code of the plugin's README, run the way a receiver that copied it runs it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

README = Path(__file__).parents[1] / "README.md"


def _code_after(heading: str, fence: str = "python") -> str:
    """The first fenced block of `fence` after `heading` in the README."""
    text = README.read_text()
    code = re.search(rf"```{fence}\n(.*?)```", text[text.index(heading) :], re.DOTALL)
    assert code is not None, f"no ```{fence} block after {heading!r}"
    return code.group(1)


def readme_verify() -> Callable[..., bool]:
    """`verify(secret, method, url, headers, body, now=None)` of "Verifying a delivery"."""
    namespace: dict[str, Any] = {}
    exec(_code_after("## Verifying a delivery"), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


def readme_example_message() -> bytes:
    """The message the README shows v2 signing for its example request."""
    return _code_after("So `POST", fence="").strip("\n").encode()
