"""One SMTP delivery of the ``notify`` step, with aiosmtplib: asynchronous end to end, so a
step timeout or cancel stops it at once (the connection is closed, nothing is sent later).

Transient (4xx) answers and connection errors may be retried, permanent (5xx) ones may not.
Only the server's reply codes reach results and logs, never its reply text.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from email.message import EmailMessage

import aiosmtplib

from ansflow.steps.notify.channels import Attempt, EmailChannel
from ansflow.trust.targets import Guard, TargetRefused


async def send_mail(channel: EmailChannel, mail: EmailMessage, password: str | None,
                    io_timeout: float, guard: Guard) -> Attempt:
    """Deliver ``mail``; never raises for the server's or the network's faults."""
    try:
        refused = await _send(channel, mail, password, io_timeout, guard)
    except TargetRefused:
        raise
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        return Attempt(False, all(400 <= c < 500 for c in codes),
                       error=f"all recipients refused: {_refusals(exc.recipients)}")
    except aiosmtplib.SMTPResponseException as exc:
        return Attempt(False, 400 <= exc.code < 500,
                       error=f"SMTP {exc.code} ({type(exc).__name__})")
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError) as exc:
        return Attempt(False, True, error=f"{type(exc).__name__}: {exc}")
    except aiosmtplib.SMTPException as exc:
        return Attempt(False, error=f"{type(exc).__name__}: {exc}")
    except ssl.SSLCertVerificationError as exc:
        return Attempt(False, error=f"TLS certificate of {channel.host} not trusted: "
                                    f"{exc.verify_message}")
    except OSError as exc:
        return Attempt(False, True, error=f"{type(exc).__name__}: {exc.strerror or exc}")
    if refused:
        # retrying would mail the accepted recipients twice
        return Attempt(False, error=f"recipients refused: {_refusals(refused)}")
    return Attempt(True)


async def _send(channel: EmailChannel, mail: EmailMessage, password: str | None,
                io_timeout: float, guard: Guard) -> list[aiosmtplib.SMTPRecipientRefused]:
    port = channel.effective_port()
    address = await guard.address(channel.host, port)
    sock = None if address == channel.host else await _connect(address, port, io_timeout)
    smtp = aiosmtplib.SMTP(
        hostname=channel.host, port=None if sock else port, sock=sock, timeout=io_timeout,
        use_tls=channel.ssl, start_tls=channel.starttls,
        tls_context=ssl.create_default_context())
    try:
        await smtp.connect()
        if channel.username is not None:
            await smtp.login(channel.username, password or "")
        errors, _ = await smtp.send_message(mail)
        await smtp.quit()
    finally:
        # also on cancel: close at once instead of waiting for a polite QUIT
        smtp.close()
    return [aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
            for recipient, reply in errors.items()]


async def _connect(address: str, port: int, io_timeout: float) -> socket.socket:
    """A socket connected to the checked ``address`` (so the host is not resolved again)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(io_timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _refusals(refused: list[aiosmtplib.SMTPRecipientRefused]) -> str:
    return ", ".join(f"{r.recipient} ({r.code})" for r in refused)
