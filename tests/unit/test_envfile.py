"""`.env` read as Podman's --env-file reads it (pkg/env ParseFile, 4.3 to 5.x)."""

from __future__ import annotations

import pytest

from theiaos_pkg import envfile
from theiaos_pkg.errors import ConfigError

T = "THEIAOS_GATEWAY_TOKEN"


@pytest.mark.parametrize(("text", "value"), [
    (f"{T}=abc\n", "abc"),
    (f"   \t{T}=abc\n", "abc"),              # leading blanks go
    (f"{T}=abc\r\n", "abc"),                 # CRLF: the \r goes
    (f"{T}=first\n{T}=second\n", "second"),  # the last one wins
    (f"# {T}=commented\n{T}=x\n", "x"),
    (f"{T}=\n", None),                       # empty: unset
    ("A=1\n", None),
    (f"{T}=a=b\n", "a=b"),                   # split at the first '='
])
def test_value_as_podman_reads_it(text: str, value: str | None) -> None:
    envfile.check(text, ".env")
    assert envfile.value(text) == value


@pytest.mark.parametrize(("text", "why"), [
    (f'{T}="abc"\n', "quotes"),               # Podman keeps the quotes, dotenv strips them
    (f"{T}='abc'\n", "quotes"),
    (f"{T}=abc # note\n", "blanks"),          # Podman keeps the comment in the value
    (f"{T}=abc \n", "blanks"),                # ...and trailing blanks
    (f"export {T}=abc\n", "reads the name as 'export THEIAOS_GATEWAY_TOKEN'"),
    (f"{T} =abc\n", "reads the name as 'THEIAOS_GATEWAY_TOKEN '"),
    (f"{T}\n", "has no '='"),                 # Podman would import it from its own env
    ("=abc\n", "starts with '='"),            # podman run refuses the whole file
])
def test_a_line_podman_reads_differently_is_an_error_with_the_fix(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        envfile.check("A=1\n" + text, "/home/theiaos/.theiaos/.env")
    assert err.value.message.startswith("/home/theiaos/.theiaos/.env line 2")
    assert why in err.value.message and err.value.fix
    assert "abc" not in str(err.value)  # the token's value is never printed


def test_other_lines_are_podmans_business() -> None:
    envfile.check("GROQ_API_KEY='x y' # quoted, fine for the gateway\nexport OTHER=1\n", ".env")


def test_with_token_replaces_every_assignment_and_keeps_the_rest() -> None:
    text = f"# keys\nGROQ_API_KEY=abc\n{T}=old\nB=2\n{T}=older"
    assert envfile.with_token(text, "new") == f"# keys\nGROQ_API_KEY=abc\n{T}=new\nB=2\n{T}=new\n"
    assert envfile.with_token("A=1", "new") == f"A=1\n{T}=new\n"
    assert envfile.with_token("", "new") == f"{T}=new\n"
    assert envfile.with_token(f"{T}=\n", "n") == f"{T}=n\n"
