"""An MCP client written by others, unmodified: the official Python SDK (PyPI `mcp`) lists DiffuGen's tools and
renders through `/mcp` on `diffugen serve` (streamable HTTP, with the API key) and through `diffugen mcp` (stdio),
following the progress notifications. Usage: mcp_check.py PORT API_KEY DIFFUGEN_BINARY DATA_DIR"""

import asyncio
import base64
import struct
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

TOOLS = {
    "generate_image", "generate_stable_diffusion_image", "generate_flux_image", "edit_image", "upscale_image",
    "list_models", "search_gallery", "get_job", "cancel_job",
}
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def png_size(data):
    raw = base64.b64decode(data)
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", raw[16:24])


async def exercise(session, transport, prompt):
    await session.initialize()
    tools = {t.name for t in (await session.list_tools()).tools}
    check(TOOLS <= tools, f"{transport}: lists every tool ({sorted(TOOLS - tools)} missing)")
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    result = await session.call_tool(
        "generate_image",
        {"prompt": prompt, "width": 64, "height": 64, "steps": 3, "seed": 11},
        progress_callback=on_progress,
    )
    texts = " ".join(c.text for c in result.content if c.type == "text")
    check(not result.is_error, f"{transport}: generate_image succeeds ({texts})")
    images = [c for c in result.content if c.type == "image"]
    check(len(images) == 1 and images[0].mime_type == "image/png", f"{transport}: one PNG comes back")
    if images:
        check(png_size(images[0].data) == (64, 64), f"{transport}: the PNG is 64x64")
    structured = result.structured_content or {}
    check(structured.get("seeds") == [11], f"{transport}: the seed is reported ({structured.get('seeds')})")
    check(structured.get("parameters", {}).get("steps") == 3, f"{transport}: the parameters are reported")
    check(structured.get("images", [{}])[0].get("gallery_id") is not None, f"{transport}: a gallery id")
    values = [p[0] for p in progress]
    check(len(values) >= 3 and values == sorted(values), f"{transport}: rising progress ({len(values)} updates)")
    check(any("sampling" in (p[2] or "") for p in progress), f"{transport}: progress names the sampling steps")

    refused = await session.call_tool("generate_image", {"prompt": "x", "width": 70})
    text = " ".join(c.text for c in refused.content if c.type == "text")
    check(refused.is_error and "width" in text, f"{transport}: a bad width is refused naming it ({text})")


async def main(port, key, binary, data):
    headers = {"Authorization": f"Bearer {key}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, "http", "a lighthouse at dusk")
    server = StdioServerParameters(
        command=binary,
        args=["--data-dir", data, "mcp", "--default-model", "tiny-sdxs", "--ollama-url", "http://127.0.0.1:9"],
        env={"DIFFUGEN_VRAM_POLICY": "never"},
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise(session, "stdio", "a red apple")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]))
    if failures:
        print(f"mcp-check: {len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
