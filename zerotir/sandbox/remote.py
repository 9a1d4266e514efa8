"""Old import path, kept for existing imports: the server is `zerotir.sandbox.server`, the client
`zerotir.sandbox.client` (the split of issue 15)."""

from zerotir.sandbox.client import RemoteSandbox, RemoteSession
from zerotir.sandbox.server import make_app, serve

__all__ = ["RemoteSandbox", "RemoteSession", "make_app", "serve"]
