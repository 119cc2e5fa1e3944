"""What may go into a header: single-line text and validated email addresses."""

from __future__ import annotations

import email.policy
import functools
import unicodedata
from email.headerregistry import Address
from typing import Annotated

from pydantic import AfterValidator
from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError

# Cc: C0/C1 controls (CR, LF, NUL, VT, FF, NEL...); Zl/Zp: U+2028 and U+2029, which
# `str.splitlines` and some mail software also treat as line breaks.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})

# How messages are written: CRLF line ends, as on the wire; a defect found when reading one
# back raises instead of being noted and ignored.
POLICY = email.policy.SMTP.clone(raise_on_defect=True)

SINGLE_LINE = (
    "must be a single line: CR, LF and other control characters are not allowed in email "
    "header fields, nor encoded words (=?...?=) that decode to them"
)


def _has_control(value: str) -> bool:
    return any(ch != "\t" and unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value)


def single_line(value: str) -> str:
    """Reject CR, LF and other control characters: in a header they would inject new headers."""
    if _has_control(value):
        raise ValueError(SINGLE_LINE)
    return value


def check_folded(name: str, value: str) -> None:
    """Raise ValueError unless `value` is written as one header field and nothing more.

    The email package decodes RFC 2047 encoded words when it writes a header, so text free of
    control characters can still become a line break on the wire (`=?utf-8?q?a=0D=0ABcc:...?=`;
    Python before 3.11.10 writes it raw). This folds the value exactly as the message will and
    checks the result: the field's own name first, continuation lines only, no control character.
    """
    try:
        # Through a header object, as the message writes it: `POLICY.fold` on a short string
        # would skip the parsing that decodes encoded words.
        folded = POLICY.header_factory(name, value).fold(policy=POLICY)
    except Exception:  # the header parser's errors, whatever their class (a CR or LF, mostly)
        raise ValueError(SINGLE_LINE) from None
    first, *rest = folded.removesuffix("\r\n").split("\r\n")
    if (
        not first.lower().startswith(f"{name.lower()}:")
        or any(line and not line.startswith((" ", "\t")) for line in rest)
        or any(_has_control(line) for line in (first, *rest))
    ):
        raise ValueError(SINGLE_LINE)
    if any(not line.strip() for line in rest):
        # Python's folding puts empty lines in some long words with nowhere to break.
        raise ValueError(
            "cannot be written as one header field (the email package would break it with an "
            "empty line): use shorter words"
        )


def plain(value: str) -> bool:
    """Whether `value` is written as it is: ASCII, no encoded word, no word too long to fold.

    Validation folds only other values (a few hundred microseconds each). That is no gap: the
    message's bytes are checked when it is built, whatever validation let through.
    """
    return value.isascii() and "=?" not in value and all(len(w) <= 60 for w in value.split())


def _header_text(value: str) -> str:
    if not plain(value):
        check_folded("Subject", value)
    return value


def _valid_address(value: str) -> str:
    # Validated here, converted by `parse_address` when the message is built: the input keeps
    # the caller's spelling, and validating it again (API, then worker) changes nothing.
    address = parse_address(value)
    if not plain(value):
        check_folded("To", str(address))
    return value.strip()


@functools.lru_cache(maxsize=1024)  # validation, the allow-list and the build each parse it
def parse_address(value: str) -> Address:
    """Turn `ada@example.com` or `Ada Lovelace <ada@example.com>` into a header Address.

    The address is the ASCII form (an international domain as IDNA A-labels): what SMTP needs
    without the SMTPUTF8 extension, and what a header holds without raw UTF-8.
    """
    # pydantic's validator (email-validator underneath) checks the address and splits off a
    # display name; without one it returns the local part as the name, which we don't want.
    import email_validator  # here, not at import: compiling its patterns takes 30 ms

    name, normalized = validate_email(value)
    ascii_form = email_validator.validate_email(normalized, check_deliverability=False).ascii_email
    if ascii_form is None:
        raise PydanticCustomError(
            "value_error", "value is not a valid email address: the local part must be ASCII"
        )
    stripped = value.strip()
    has_name = stripped.endswith(">") and not stripped.startswith("<")
    return Address(display_name=name.replace('\\"', '"') if has_name else "", addr_spec=ascii_form)


def domain_of(addr_spec: str) -> str:
    """The domain of an address from `parse_address`: lowercase, IDNA A-labels."""
    return addr_spec.rpartition("@")[2]


HeaderText = Annotated[str, AfterValidator(single_line), AfterValidator(_header_text)]
"""Text for a header such as Subject."""

EmailAddress = Annotated[str, AfterValidator(single_line), AfterValidator(_valid_address)]
"""An address, optionally with a display name: `Ada Lovelace <ada@example.com>`."""
