"""What may go into a header: single-line text and validated email addresses."""

from __future__ import annotations

import unicodedata
from email.headerregistry import Address
from typing import Annotated

from pydantic import AfterValidator
from pydantic.networks import validate_email

# Cc: C0/C1 controls (CR, LF, NUL, VT, FF, NEL...); Zl/Zp: U+2028 and U+2029, which
# `str.splitlines` and some mail software also treat as line breaks.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def single_line(value: str) -> str:
    """Reject CR, LF and other control characters: in a header they would inject new headers."""
    if any(ch != "\t" and unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise ValueError(
            "must be a single line: CR, LF and other control characters are not allowed "
            "in email header fields"
        )
    return value


def _valid_address(value: str) -> str:
    # Validated here, converted by `parse_address` when the message is built: the input keeps
    # the caller's spelling, and validating it again (API, then worker) changes nothing.
    parse_address(value)
    return value.strip()


def parse_address(value: str) -> Address:
    """Turn `ada@example.com` or `Ada Lovelace <ada@example.com>` into a header Address."""
    # pydantic's validator (email-validator underneath) checks the address and splits off a
    # display name; without one it returns the local part as the name, which we don't want.
    name, addr_spec = validate_email(value)
    stripped = value.strip()
    has_name = stripped.endswith(">") and not stripped.startswith("<")
    return Address(display_name=name.replace('\\"', '"') if has_name else "", addr_spec=addr_spec)


HeaderText = Annotated[str, AfterValidator(single_line)]
"""Text for a header such as Subject."""

EmailAddress = Annotated[str, AfterValidator(single_line), AfterValidator(_valid_address)]
"""An address, optionally with a display name: `Ada Lovelace <ada@example.com>`."""
