"""One small app per ASGI framework, served by app-server and compared with Uvicorn (tests/asgi/)."""
