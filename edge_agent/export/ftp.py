"""Upload of station files by FTP, or FTPS (explicit TLS: AUTH TLS, then a protected data
channel), with the standard library's ftplib. SFTP would need a library the agent does not
carry (paramiko or asyncssh), so it is not offered.

A file goes up under a temporary name, its size is checked on the server, and only then is
it renamed to its final name: an upload that is cut off never shows as a file the
department would read, and is simply sent again from the start.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import ssl
from types import TracebackType

from edge_agent.config.environment import StationExportConfig
from edge_agent.errors import EdgeAgentError

TMP_SUFFIX = ".tmp"
# ftplib.all_errors covers OSError (ssl.SSLError included), EOFError and ftplib.Error.
NETWORK_ERRORS: tuple[type[Exception], ...] = tuple(ftplib.all_errors)


class UploadError(EdgeAgentError):
    """The server could not be reached or refused a file (the export retries)."""


class FtpUploader:
    """One FTP session (a context manager); `upload()` puts one file."""

    def __init__(self, config: StationExportConfig) -> None:
        self.config = config
        self._ftp: ftplib.FTP | None = None
        self._cwd: str | None = None

    def __enter__(self) -> FtpUploader:
        cfg = self.config
        assert cfg.host is not None
        try:
            if cfg.protocol == "ftps":
                context = ssl.create_default_context(cafile=cfg.ca_file)
                ftp: ftplib.FTP = ftplib.FTP_TLS(context=context, timeout=cfg.timeout_s)
            else:
                ftp = ftplib.FTP(timeout=cfg.timeout_s)
            self._ftp = ftp
            ftp.connect(cfg.host, cfg.port, timeout=cfg.timeout_s)
            password = cfg.password.get_secret_value() if cfg.password else ""
            ftp.login(cfg.username, password)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(cfg.passive)
        except NETWORK_ERRORS as exc:
            self._close()
            raise UploadError(f"FTP {cfg.host}:{cfg.port}: {exc}") from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ftp is not None and exc is None:
            with contextlib.suppress(*NETWORK_ERRORS):  # the session is over either way
                self._ftp.quit()
        self._close()

    def _close(self) -> None:
        if self._ftp is not None:
            self._ftp.close()
            self._ftp = None

    def upload(self, rel_dir: str, name: str, content: bytes) -> None:
        """Put `content` as `<remote_dir>/<rel_dir>/<name>`, whole or not at all."""
        ftp = self._ftp
        assert ftp is not None
        tmp = name + TMP_SUFFIX
        try:
            self._enter_dir(ftp, rel_dir)
            ftp.storbinary(f"STOR {tmp}", io.BytesIO(content))
            size = ftp.size(tmp)  # storbinary left the session in binary mode
            if size != len(content):
                raise UploadError(
                    f"FTP {rel_dir}/{tmp}: the server holds {size} of {len(content)} bytes"
                )
            try:
                ftp.rename(tmp, name)
            except ftplib.error_perm:
                # Some servers refuse to rename over a file: one sent before a crash
                # stopped the node from noting it.
                ftp.delete(name)
                ftp.rename(tmp, name)
        except NETWORK_ERRORS as exc:
            raise UploadError(f"FTP upload of {rel_dir}/{name}: {exc}") from exc

    def _enter_dir(self, ftp: ftplib.FTP, rel_dir: str) -> None:
        target = f"{self.config.remote_dir.rstrip('/')}/{rel_dir}"
        if target == self._cwd:
            return
        self._cwd = None
        ftp.cwd(self.config.remote_dir)
        for part in rel_dir.split("/"):
            try:
                ftp.cwd(part)
            except ftplib.error_perm:
                ftp.mkd(part)
                ftp.cwd(part)
        self._cwd = target
