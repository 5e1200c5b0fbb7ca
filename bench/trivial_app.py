"""The framework's own ceiling: a trivial Flask route, nothing of the provider."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "ok"
