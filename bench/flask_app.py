"""The baseline: a Flask app written the way the tutorials write one, for bench/serve.py only.

One `model.predict` per request, preprocessing by hand in the view, Flask's own threaded server.
Usage: python bench/flask_app.py MODEL_DIR PORT
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import keras
import numpy as np
from flask import Flask, jsonify, request
from PIL import Image


def create_app(model_dir: Path) -> Flask:
    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    spec = json.loads((model_dir / "model_spec.json").read_text())
    app = Flask(__name__)

    @app.route("/predict", methods=["POST"])
    def predict():  # noqa: ANN202 - tutorial style on purpose
        img = Image.open(io.BytesIO(request.files["image"].read())).convert(spec["mode"])
        img = img.resize((spec["width"], spec["height"]))
        x = np.asarray(img, dtype=np.uint8).reshape(1, spec["height"], spec["width"], -1)
        probs = model.predict(x, verbose=0)[0]
        best = int(probs.argmax())
        return jsonify({"label": spec["class_names"][best], "probability": float(probs[best])})

    return app


if __name__ == "__main__":
    create_app(Path(sys.argv[1])).run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
