"""One small app per ASGI framework, served by app-server and compared with Uvicorn.

The comparison tests are in tests/asgi/.
"""
