"""Drives TaskFlow's MCP server with the official MCP Python SDK; run by crates/taskflow/tests/api/mcp.rs.

    mcp_check.py stdio TASKFLOW_BINARY DATABASE_URL DATA_DIR TOKEN OTHER_USERS_TASK_ID
    mcp_check.py http  MCP_URL TOKEN OTHER_USERS_TASK_ID

Lists the tools, calls every one, checks results and tool errors, and checks that a task of
another user cannot be read or changed. Prints "ok N checks" and exits 0, or prints every
failed check and exits 1.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError as McpError

TOOLS = {
    "add_task", "list_tasks", "get_task", "update_task", "complete_task", "reopen_task",
    "delete_task", "set_recurrence", "add_reminder", "search_tasks", "quick_add",
}


class Checks:
    def __init__(self):
        self.failed = []
        self.count = 0

    def that(self, condition, what):
        self.count += 1
        if not condition:
            self.failed.append(what)
        return condition


def text_of(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


async def exercise(session, other_id, checks):
    await session.initialize()
    listed = (await session.list_tools()).tools
    names = {t.name for t in listed}
    checks.that(names == TOOLS, f"tools {sorted(names)}")
    for tool in listed:
        checks.that(tool.input_schema.get("type") == "object", f"{tool.name} input schema")
        checks.that(tool.output_schema is not None, f"{tool.name} output schema")
        checks.that(bool(tool.description), f"{tool.name} description")
    add = next(t for t in listed if t.name == "add_task")
    checks.that("title" in add.input_schema.get("required", []), "add_task requires title")

    async def ok(name, args):
        result = await session.call_tool(name, args)
        checks.that(not result.is_error, f"{name} {args}: {text_of(result)}")
        return result.structured_content or {}

    async def tool_error(name, args, expect):
        result = await session.call_tool(name, args)
        checks.that(result.is_error, f"{name} {args} should fail")
        checks.that(expect.lower() in text_of(result).lower(), f"{name} {args}: {text_of(result)!r} lacks {expect!r}")

    task = (await ok("add_task", {"title": "Buy milk", "priority": "high", "tags": ["home"],
                                  "due_at": "2030-01-02T09:00:00Z", "time_zone": "Europe/Berlin"}))["task"]
    tid = task["id"]
    checks.that(task["title"] == "Buy milk" and task["priority"] == "high", f"add_task {task}")
    got = (await ok("get_task", {"id": tid}))["task"]
    checks.that(got["tags"] == ["home"], f"get_task {got}")
    listed_tasks = await ok("list_tasks", {"status": "pending", "priority": ["high"], "tags": ["home"],
                                           "due_after": "2030-01-01T00:00:00Z", "due_before": "2030-01-03T00:00:00Z",
                                           "sort": "due_at", "order": "asc", "limit": 10})
    checks.that([t["id"] for t in listed_tasks["items"]] == [tid], f"list_tasks {listed_tasks}")
    found = await ok("search_tasks", {"query": "mil"})
    checks.that(tid in [t["id"] for t in found["items"]], f"search_tasks {found}")
    updated = (await ok("update_task", {"id": tid, "title": "Buy oat milk", "priority": "urgent"}))["task"]
    checks.that(updated["title"] == "Buy oat milk" and updated["priority"] == "urgent", f"update_task {updated}")
    repeating = (await ok("set_recurrence", {"id": tid, "rule": "weekly"}))["task"]
    checks.that(repeating["recurrence"]["rule"] == "FREQ=WEEKLY", f"set_recurrence {repeating}")
    done = (await ok("complete_task", {"id": tid}))["task"]
    checks.that(done["status"] == "completed", f"complete_task {done}")
    series = await ok("list_tasks", {"query": "oat", "status": "pending"})
    checks.that(len(series["items"]) == 1 and series["items"][0]["occurrence_index"] == 1,
                f"the next occurrence exists {series}")
    reopened = (await ok("reopen_task", {"id": tid}))["task"]
    checks.that(reopened["status"] == "pending", f"reopen_task {reopened}")
    stopped = (await ok("set_recurrence", {"id": tid}))["task"]
    checks.that(stopped["recurrence"] is None, f"set_recurrence without rule {stopped}")
    reminded = (await ok("add_reminder", {"id": tid, "before_due": "PT1H"}))["task"]
    checks.that(reminded["reminders"] == [{"before_due": "PT1H"}], f"add_reminder {reminded}")
    again = (await ok("add_reminder", {"id": tid, "at": "2029-12-31T08:00:00Z"}))["task"]
    checks.that(len(again["reminders"]) == 2, f"add_reminder keeps the plan {again}")
    await tool_error("add_reminder", {"id": tid, "at": "2001-01-01T00:00:00Z"}, "passed")
    await tool_error("add_reminder", {"id": tid}, "exactly one")
    await tool_error("add_reminder", {"id": tid, "before_due": "soon"}, "ISO 8601")
    quick = await ok("quick_add", {"text": "call mom tomorrow 6pm #family !high", "time_zone": "UTC"})
    checks.that(quick["task"]["title"] == "call mom" and quick["task"]["tags"] == ["family"], f"quick_add {quick}")
    dry = await ok("quick_add", {"text": "water plants every 3 days from completion", "dry_run": True})
    checks.that(dry["task"] is None and dry["parsed"]["recurrence"]["anchor"] == "completion", f"quick_add dry run {dry}")

    # Bad arguments and values are tool errors the assistant can read.
    await tool_error("add_task", {"title": ""}, "title")
    await tool_error("add_task", {"title": "x", "colour": "red"}, "invalid arguments")
    await tool_error("add_task", {"title": "x", "priority": "sometimes"}, "priority")
    await tool_error("add_task", {"title": "x", "due_at": "tomorrow"}, "due_at")
    await tool_error("get_task", {}, "invalid arguments")
    await tool_error("get_task", {"id": "not-a-uuid"}, "not a task id")
    await tool_error("update_task", {"id": tid}, "at least one field")
    await tool_error("list_tasks", {"limit": 1000}, "limit")
    await tool_error("set_recurrence", {"id": tid, "rule": "FREQ=HOURLY"}, "recurrence")

    # Resources and the prompt.
    templates = (await session.list_resource_templates()).resource_templates
    checks.that([t.uri_template for t in templates] == ["task://{id}"], f"templates {templates}")
    resource = await session.read_resource(f"task://{tid}")
    body = json.loads(resource.contents[0].text)
    checks.that(body["id"] == tid, f"task://{tid} {body}")
    resources = (await session.list_resources()).resources
    checks.that(f"task://{tid}" in [str(r.uri) for r in resources], "list_resources")
    overdue = (await ok("add_task", {"title": "File the overdue report", "due_at": "2020-01-01T09:00:00Z"}))["task"]
    prompts = (await session.list_prompts()).prompts
    checks.that([p.name for p in prompts] == ["plan_my_day"], f"prompts {prompts}")
    prompt = await session.get_prompt("plan_my_day")
    text = prompt.messages[0].content.text
    checks.that("File the overdue report" in text and "Overdue" in text, f"plan_my_day {text!r}")

    # Another user's task: every tool refuses as if it did not exist, and it stays unchanged.
    for name, args in [
        ("get_task", {"id": other_id}),
        ("update_task", {"id": other_id, "title": "hijacked"}),
        ("complete_task", {"id": other_id}),
        ("reopen_task", {"id": other_id}),
        ("delete_task", {"id": other_id}),
        ("set_recurrence", {"id": other_id, "rule": "daily"}),
        ("add_reminder", {"id": other_id, "before_due": "PT1H"}),
    ]:
        await tool_error(name, args, "No such task")
    try:
        await session.read_resource(f"task://{other_id}")
        checks.that(False, "reading another user's task resource should fail")
    except McpError:
        checks.that(True, "")
    mine = await ok("list_tasks", {"limit": 200})
    checks.that(other_id not in [t["id"] for t in mine["items"]], "another user's task is not listed")

    deleted = await ok("delete_task", {"id": overdue["id"]})
    checks.that(deleted == {"deleted": True, "id": overdue["id"]}, f"delete_task {deleted}")
    await tool_error("get_task", {"id": overdue["id"]}, "No such task")
    try:
        await session.call_tool("no_such_tool", {})
        checks.that(False, "an unknown tool should be a protocol error")
    except McpError:
        checks.that(True, "")


async def main():
    checks = Checks()
    mode = sys.argv[1]
    if mode == "stdio":
        binary, database_url, data_dir, token, other_id = sys.argv[2:7]
        params = StdioServerParameters(
            command=binary,
            args=["--database-url", database_url, "--data-dir", data_dir, "mcp"],
            env={"TASKFLOW_MCP__TOKEN": token, "TASKFLOW_LOG__LEVEL": "warn"},
            cwd=data_dir,
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, other_id, checks)
    else:
        url, token, other_id = sys.argv[2:5]
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with client:
            async with streamable_http_client(url, http_client=client) as (read, write, *_):
                async with ClientSession(read, write) as session:
                    await exercise(session, other_id, checks)
    if checks.failed:
        print("\n".join(checks.failed))
        sys.exit(1)
    print(f"ok {checks.count} checks")


if __name__ == "__main__":
    asyncio.run(main())
