"""Runs schemathesis over DiffuGen's /openapi.json against a running server (see api-fuzz.sh).

Two passes, both failing on any server error or any answer the document does not describe (status, content type,
body schema):
  1. every route but those that render or convert, with valid and invalid data (examples, coverage, fuzzing);
  2. the routes that render, with valid data only and every size, step count and image count pinned to the
     smallest (64x64, 1-2 steps, one image), so a generation costs about a second on a CPU.
The data is drawn from a fixed seed; DIFFUGEN_FUZZ_SEED explores others.
"""
import json
import os
import subprocess
import sys
import tempfile

RENDERING = r"^/(v1/images/|sdapi/v1/(txt2img|img2img)$|api/v1/jobs$|generate|api/v1/models/convert$)"
# The model diffugen-e2e-fixture links into the data folder.
MODEL = "tiny-sdxs"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def tiny(schema):
    """Pins every size-like property of every schema to the smallest render."""
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            # Left out, a size or a step count would take the model's default (512x512 and more): always send them.
            pinned = [n for n in ("width", "height", "size", "steps") if n in props]
            if pinned:
                schema["required"] = sorted(set(schema.get("required", [])) | set(pinned))
            for name, prop in props.items():
                if name in ("width", "height", "hr_resize_x", "hr_resize_y"):
                    props[name] = {"type": "integer", "enum": [64]}
                elif name == "size":
                    props[name] = {"type": "string", "enum": ["64x64"]}
                elif name == "steps":
                    props[name] = {"type": "integer", "minimum": 1, "maximum": 2}
                elif name in ("n", "count", "batch_size", "n_iter"):
                    props[name] = {"type": "integer", "enum": [1]}
                elif name in ("partial_images",):
                    props[name] = {"type": "integer", "minimum": 0, "maximum": 1}
                elif name == "model":
                    props[name] = {"type": "string", "enum": [MODEL]}
                elif name in ("sampler", "sampling_method"):
                    props[name] = {"type": "string", "enum": ["euler", "euler_a"]}
                elif name == "sampler_name":
                    props[name] = {"type": "string", "enum": ["Euler", "Euler a"]}
                elif name == "scheduler":
                    props[name] = {"type": "string", "enum": ["discrete", "karras"]}
                elif name == "loras":
                    props[name] = {"type": "array", "maxItems": 0}
                elif name in ("override_settings", "memory", "preview"):
                    props[name] = {"type": "object", "maxProperties": 0}
                elif name == "clip_skip":
                    props[name] = {"type": "integer", "enum": [-1, 1, 2]}
                elif name == "threads":
                    props[name] = {"type": "integer", "enum": [2]}
                elif name == "cfg_scale":
                    props[name] = {"type": "number", "minimum": 1, "maximum": 7}
                elif name in ("init_image", "init_images", "mask", "image", "image[]"):
                    # Random bytes are refused in a millisecond; real images are covered by the Rust specs.
                    continue
                else:
                    tiny(prop)
        for value in schema.values():
            if isinstance(value, (dict, list)) and value is not props:
                tiny(value)
    elif isinstance(schema, list):
        for item in schema:
            tiny(item)


def resolve(spec, schema):
    """A copy of `schema` with its $refs to components inlined (so pinning a request leaves responses alone)."""
    if isinstance(schema, dict):
        if "$ref" in schema and schema["$ref"].startswith("#/components/schemas/"):
            name = schema["$ref"].rsplit("/", 1)[1]
            return resolve(spec, spec["components"]["schemas"][name])
        return {k: resolve(spec, v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve(spec, v) for v in schema]
    return schema


def pin_requests(spec):
    """Pins the request bodies of every operation to the smallest render; responses keep their schemas."""
    for ops in spec["paths"].values():
        for op in ops.values():
            if not isinstance(op, dict):
                continue
            for media in op.get("requestBody", {}).get("content", {}).values():
                if "schema" in media:
                    media["schema"] = resolve(spec, media["schema"])
                    tiny(media["schema"])


def run(spec_path, base, extra, cwd):
    command = [
        sys.argv[1], "run", spec_path, "--url", base, "--checks", CHECKS,
        "--seed", os.environ.get("DIFFUGEN_FUZZ_SEED", "20261130"), "--workers", "2", "--request-timeout", "60",
        "--suppress-health-check", "all", "--no-color",
    ] + extra
    print("+", " ".join(command), flush=True)
    # Its cache folder lands in the working directory: a throwaway one, not the checkout.
    return subprocess.call(command, cwd=cwd)


def main():
    schemathesis, base = sys.argv[1], sys.argv[2]
    del schemathesis
    with open(sys.argv[3]) as f:
        spec = json.load(f)
    spec["servers"] = [{"url": base}]
    with tempfile.TemporaryDirectory() as tmp:
        full = f"{tmp}/openapi.json"
        with open(full, "w") as f:
            json.dump(spec, f)
        small = json.loads(json.dumps(spec))
        pin_requests(small)
        pinned = f"{tmp}/openapi-tiny.json"
        with open(pinned, "w") as f:
            json.dump(small, f)
        failed = run(full, base, [
            "--exclude-path-regex", RENDERING, "--phases", "examples,coverage,fuzzing",
            "--max-examples", "30",
        ], tmp)
        failed |= run(pinned, base, [
            "--include-path-regex", RENDERING, "--mode", "positive", "--phases", "examples,fuzzing",
            "--max-examples", "3",
        ], tmp)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
