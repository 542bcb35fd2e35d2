from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import serving.service as S


async def raw(request: Request):
    svc = request.app.state.svc
    data = await request.body()
    pixels = svc.decode(data)
    (preds,) = await svc.classify_pixels(pixels[None], None)
    return JSONResponse({"predictions": preds})

async def multi(request: Request):
    svc = request.app.state.svc
    form = await request.form()
    data = await form["image"].read()
    pixels = svc.decode(data)
    (preds,) = await svc.classify_pixels(pixels[None], None)
    return JSONResponse({"predictions": preds})

S.web.routes.append(Route("/raw", raw, methods=["POST"]))
S.web.routes.append(Route("/multi", multi, methods=["POST"]))
_orig = S.Classifier.inner.__init__
def init(self):
    _orig(self)
    S.web.state.svc = self
S.Classifier.inner.__init__ = init
Classifier = S.Classifier
