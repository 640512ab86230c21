"""The bundled example: a few routes with typed parameters and JSON.

    app-server examples.hello:app            # from the repository root
    curl http://127.0.0.1:8000/hello/world
"""

from __future__ import annotations

from app_server import App, Blueprint, Request, json, text

app = App("hello")

NOTES: dict[int, dict[str, object]] = {}


@app.get("/")
async def index(request: Request):
    return text("Hello, world!")


@app.get("/hello/{name}")
async def hello(request: Request, name: str):
    return json({"hello": name})


@app.get("/add/<a:int>/<b:int>")
async def add(request: Request, a: int, b: int):
    return json({"a": a, "b": b, "sum": a + b})


@app.get("/search")
async def search(request: Request, q: str, limit: int = 10):
    """Query parameters are injected and converted by annotation."""
    return json({"q": q, "limit": limit})


api = Blueprint("notes", url_prefix="/notes", version=1)


@api.post("/")
async def create_note(request: Request):
    data = request.json
    if not isinstance(data, dict) or "text" not in data:
        return json({"error": "expected a JSON object with 'text'"}, status=400)
    note_id = len(NOTES) + 1
    NOTES[note_id] = {"id": note_id, "text": str(data["text"])}
    return json(NOTES[note_id], status=201, headers={"Location": app.url_for("notes.get_note",
                                                                              note_id=note_id)})


@api.get("/{note_id:int}")
async def get_note(request: Request, note_id: int):
    note = NOTES.get(note_id)
    if note is None:
        return json({"error": f"no note {note_id}"}, status=404)
    return json(note)


app.blueprint(api)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
