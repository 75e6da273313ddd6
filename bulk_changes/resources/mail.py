"""Sending mail: over SMTP (production), or into a folder of .eml files (the embedded
default, so the demo needs no mail server)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from bulk_changes.domain.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    Rejected,
    ServerError,
    TimeoutError_,
)
from bulk_changes.paths import home

SECURITY = ("starttls", "tls", "none")


class Mailer(ConfigurableResource):
    """Where mail goes. ``send`` raises the project's errors (RetryableError: try later;
    PermanentError: refused)."""

    from_address: str = "bulk-changes@localhost"

    def send(self, message: EmailMessage) -> str:  # -> a short description of where it went
        raise NotImplementedError


class SmtpMailer(Mailer):
    """SMTP with STARTTLS (port 587), implicit TLS (465) or none (a local relay).

    ``password``: give it as ``EnvVar("BULK_CHANGES_SMTP_PASSWORD")``; it is only handed
    to ``login`` and never logged. ``ca_file``: a private CA to trust besides the system's.
    """

    host: str
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password: str = Field(default="", repr=False)
    timeout_seconds: float = 10.0
    ca_file: str = ""

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file or None)

    def send(self, message: EmailMessage) -> str:
        if self.security not in SECURITY:
            raise ConfigurationError(f"smtp security must be one of {', '.join(SECURITY)}")
        if "From" not in message:
            message["From"] = self.from_address
        where = f"{self.host}:{self.port}"
        try:
            if self.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout_seconds, context=self._context()
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
            with client:
                if self.security == "starttls":
                    client.starttls(context=self._context())
                if self.username:
                    client.login(self.username, self.password)
                refused = client.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise AuthenticationFailed(
                f"SMTP login refused ({exc.smtp_code})", system="smtp", status=exc.smtp_code
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise Rejected(
                f"SMTP refused every recipient: {', '.join(sorted(exc.recipients))}", system="smtp"
            ) from None
        except smtplib.SMTPResponseException as exc:
            error = ServerError if exc.smtp_code >= 400 and exc.smtp_code < 500 else Rejected
            raise error(
                f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}",
                system="smtp",
                status=exc.smtp_code,
            ) from None
        except TimeoutError as exc:
            raise TimeoutError_(
                f"SMTP server {where} did not answer in time", system="smtp"
            ) from exc
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise ConnectionFailed(
                f"SMTP server {where}: {type(exc).__name__}: {exc}", system="smtp"
            ) from None
        if refused:
            # some recipients took it: not retried (the others would get it twice)
            return f"smtp {where}, refused: {', '.join(sorted(refused))}"
        return f"smtp {where}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class FileMailer(Mailer):
    """Writes each message as ``<directory>/<Message-ID>.eml`` (empty directory:
    ``$BULK_CHANGES_HOME/outbox-mail``). The same message sent again overwrites its file."""

    directory: str = ""

    def folder(self) -> Path:
        return Path(self.directory) if self.directory else home() / "outbox-mail"

    def send(self, message: EmailMessage) -> str:
        if "From" not in message:
            message["From"] = self.from_address
        folder = self.folder()
        name = str(message.get("Message-ID", "message")).strip("<>").replace("/", "_")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}.eml"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(message.as_bytes())
            tmp.replace(path)
        except OSError as exc:
            raise ConnectionFailed(f"cannot write {folder}: {exc.strerror}", system="mail") from exc
        return str(path)
