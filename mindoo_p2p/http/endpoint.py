"""`HttpEndpoint`: where the running HTTP API is and how a person gets into its web page (what
``mindoo http url`` and the control socket's ``http.info`` / ``http.login`` tell). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .auth import API_KEY_FILE, LoginTokens


@dataclass
class HttpEndpoint:
    base_url: str
    """``http://127.0.0.1:PORT``"""
    home: Path
    logins: LoginTokens = field(default_factory=LoginTokens)

    def info(self) -> dict[str, Any]:
        """The base URL and the file holding the API key."""
        return {"base_url": self.base_url, "api_key_file": str(self.home / API_KEY_FILE)}

    def login(self) -> dict[str, Any]:
        """`info` and a fresh one-time login link for the web page."""
        return {**self.info(), "login_url": f"{self.base_url}/login?token={self.logins.issue()}"}
