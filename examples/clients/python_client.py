"""Drive the mcp-tower demo server with the official MCP Python SDK (`pip install mcp`).

Lists the tools, calls each one, checks the results, and checks that bad input gets a clear
error while the server keeps serving. Used by `.ci/run` over stdio and streamable HTTP, with
both protocol negotiation modes of the SDK.

    python python_client.py --stdio path/to/demo [args...]
    python python_client.py --http http://127.0.0.1:8080/mcp [--mode legacy]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


async def tour(client: Client) -> None:
    listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    check(sorted(tools) == ["append_note", "echo", "fx_rate", "set_flag", "weather"], f"tools: {sorted(tools)}")
    check(tools["weather"].annotations.read_only_hint is True, "weather is read-only")
    check(tools["set_flag"].annotations.idempotent_hint is True, "set_flag is idempotent")
    check(tools["append_note"].annotations.destructive_hint is True, "append_note is destructive")

    weather = await client.call_tool("weather", {"city": "Oslo"})
    check(not weather.is_error, f"weather failed: {weather}")
    check(weather.structured_content["city"] == "Oslo", f"weather: {weather.structured_content}")
    # The same call again (a cache hit once the cache layer is on) must give the same report.
    again = await client.call_tool("weather", {"city": "Oslo"})
    check(again.structured_content == weather.structured_content, "weather is stable")

    fx = await client.call_tool("fx_rate", {"from": "EUR", "to": "NOK"})
    check(abs(fx.structured_content["rate"] - 10.74 / 0.92) < 1e-3, f"fx: {fx.structured_content}")
    unknown = await client.call_tool("fx_rate", {"from": "EUR", "to": "XYZ"})
    check(unknown.is_error and "unknown currency" in unknown.content[0].text, f"fx XYZ: {unknown}")

    flag = await client.call_tool("set_flag", {"name": "py", "value": True})
    check(flag.structured_content["value"] is True, f"set_flag: {flag}")

    n1 = await client.call_tool("append_note", {"text": "from python"})
    n2 = await client.call_tool("append_note", {"text": "from python"})
    check(n2.structured_content["count"] == n1.structured_content["count"] + 1, "append_note runs every time")

    echo = await client.call_tool("echo", {"text": "héllo 🦀"})
    check(echo.content[0].text == "héllo 🦀", f"echo: {echo}")


async def bad_input(client: Client) -> None:
    missing = await client.call_tool("weather", {})
    check(missing.is_error and "missing field `city`" in missing.content[0].text, f"missing arg: {missing}")
    try:
        unknown = await client.call_tool("no_such_tool", {})
    except MCPError as e:
        check("tool not found" in str(e), f"unknown tool error: {e}")
    else:
        check(unknown.is_error, f"an unknown tool must fail, got {unknown}")
    alive = await client.call_tool("echo", {"text": "still serving"})
    check(alive.content[0].text == "still serving", "server keeps serving after bad input")


async def main() -> int:
    parser = argparse.ArgumentParser()
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--stdio", nargs=argparse.REMAINDER, help="command (and args) of the server")
    target.add_argument("--http", help="URL of the streamable HTTP endpoint")
    parser.add_argument("--mode", default="auto", help="the SDK's negotiation mode: auto or legacy")
    args = parser.parse_args()

    server = StdioServerParameters(command=args.stdio[0], args=args.stdio[1:]) if args.stdio else args.http
    async with Client(server, mode=args.mode, read_timeout_seconds=30) as client:
        await tour(client)
        await bad_input(client)
        version = client.protocol_version
    where = "stdio" if args.stdio else "http"
    print(f"python client ({where}, mode={args.mode}, protocol {version}): all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except AssertionError as e:
        print(f"python client: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
