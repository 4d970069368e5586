"""An AUTOMATIC1111 client library written by others (webuiapi, from PyPI), unmodified, against `diffugen serve`:
the hires fix, extras upscaling with an ESRGAN model, the canny detector, a ControlNet render, and an unknown
ControlNet model refused by name. Every image is real sd.cpp output; every result is checked for what a user sees.
Usage: webuiapi_check.py PORT"""

import sys

import webuiapi
from PIL import Image, ImageDraw

port = int(sys.argv[1])
api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)
failures = []


def check(name, condition, detail=""):
    print(("ok    " if condition else "FAIL  ") + name + (f" ({detail})" if detail and not condition else ""))
    if not condition:
        failures.append(name)


# 1. The hires fix: a 64x64 first pass, a 128x128 result, recorded as A1111 writes it.
r = api.txt2img(prompt="a lighthouse at dusk", width=64, height=64, seed=3, enable_hr=True, hr_scale=2,
                hr_upscaler=webuiapi.HiResUpscaler.Latent, hr_second_pass_steps=2, denoising_strength=0.6,
                override_settings={"sd_model_checkpoint": "tiny-sdxs"})
check("hires fix: a 128x128 image", r.image.size == (128, 128), str(r.image.size))
infotext = r.info["infotexts"][0] if isinstance(r.info, dict) else ""
check("hires fix: its infotext", "Hires upscale: 2" in infotext, infotext)

# 2. Extras: the ESRGAN model from /sdapi/v1/upscalers enlarges the image x2 (a x4 model, brought to size).
names = [u["name"] for u in api.get_upscalers()]
check("upscalers list the ESRGAN model", "tiny-esrgan-x4" in names, str(names))
up = api.extra_single_image(image=r.image, upscaler_1="tiny-esrgan-x4", upscaling_resize=2)
check("extras: x2 with the ESRGAN model", up.image.size == (256, 256), str(up.image.size))

# 3. The canny detector on a picture with clear edges.
picture = Image.new("RGB", (64, 64), (20, 30, 40))
ImageDraw.Draw(picture).rectangle([16, 16, 47, 47], fill=(230, 220, 200))
detected = api.controlnet_detect(images=[picture], module="canny", processor_res=64, threshold_a=100,
                                 threshold_b=200)
edges = detected.image.convert("L")
check("canny: the map has the picture's size", edges.size == (64, 64), str(edges.size))
values = set(edges.tobytes())
check("canny: edges on a dark ground", max(values) > 128 and min(values) < 16, str(sorted(values)[:5]))

# 4. A ControlNet render on the SD 1.x model, and the same render without it: the map steers the image.
unit = webuiapi.ControlNetUnit(image=picture, module="canny", model="test-control", processor_res=64,
                               threshold_a=100, threshold_b=200)
common = dict(prompt="a stone gate", width=64, height=64, seed=5,
              override_settings={"sd_model_checkpoint": "sd15-test"})
# A fresh alwayson_scripts each time: webuiapi's default one is a shared dict its ControlNet units are written into.
plain = api.txt2img(alwayson_scripts={}, **common)
steered = api.txt2img(controlnet_units=[unit], alwayson_scripts={}, **common)
check("ControlNet: an image", steered.image.size == (64, 64), str(steered.image.size))
check("ControlNet: the control map changes the render", steered.image.tobytes() != plain.image.tobytes())
check("ControlNet: none in the plain render's infotext", "ControlNet" not in plain.info["infotexts"][0],
      plain.info["infotexts"][0])
check("ControlNet: recorded in the infotext", "ControlNet 0" in steered.info["infotexts"][0],
      steered.info["infotexts"][0])

# 5. An unknown ControlNet model is refused by name.
try:
    api.txt2img(controlnet_units=[webuiapi.ControlNetUnit(image=picture, module="canny", model="control_nope")],
                alwayson_scripts={}, **common)
    check("unknown ControlNet refused", False, "it rendered")
except RuntimeError as error:
    status, text = error.args[0], str(error.args[1])
    check("unknown ControlNet refused by name", status == 422 and "control_nope" in text, f"{status} {text}")

if failures:
    print(f"webuiapi: {len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("webuiapi: every check passed")
