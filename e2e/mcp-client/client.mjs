// An agent's session with kubexec's MCP server, through the official TypeScript SDK client.
//
//   node client.mjs http  <api url>   # streamable HTTP at <api url>/mcp
//   node client.mjs stdio <api url>   # spawns `$KUBEXEC_BIN mcp --url <api url>`
//
// The key comes from KUBEXEC_API_KEY. Each step prints one line on stderr; the last line on
// stdout is `{"ok": true, ...}` with what was measured. Any failed check exits 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [transportName, apiUrl] = process.argv.slice(2);
const key = process.env.KUBEXEC_API_KEY;
if (!["http", "stdio"].includes(transportName) || !apiUrl || !key) {
  console.error("usage: KUBEXEC_API_KEY=... node client.mjs http|stdio <api url>");
  process.exit(2);
}
const log = (...what) => console.error(`mcp-client[${transportName}]:`, ...what);
const check = (ok, what, detail) => {
  if (!ok) {
    throw new Error(`${what}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
  }
  log("ok:", what);
};

function transport() {
  if (transportName === "http") {
    return new StreamableHTTPClientTransport(new URL("/mcp", apiUrl), {
      requestInit: { headers: { Authorization: `Bearer ${key}` } },
    });
  }
  const bin = process.env.KUBEXEC_BIN;
  if (!bin) throw new Error("KUBEXEC_BIN is not set");
  // The key travels in the environment only, never as an argument.
  return new StdioClientTransport({
    command: bin,
    args: ["mcp", "--url", apiUrl],
    env: { KUBEXEC_API_KEY: key, PATH: process.env.PATH ?? "", RUST_LOG: "warn" },
    stderr: "inherit",
  });
}

const client = new Client({ name: "kubexec-e2e", version: "1.0.0" });
const timeout = { timeout: 120_000 };

/** A tool call that must succeed; answers its structured result. */
async function call(name, args, options = {}) {
  const result = await client.callTool({ name, arguments: args }, undefined, { ...timeout, ...options });
  if (result.isError) {
    throw new Error(`${name} failed: ${JSON.stringify(result.structuredContent ?? result.content)}`);
  }
  const text = result.content?.find((c) => c.type === "text")?.text;
  return result.structuredContent ?? JSON.parse(text);
}

/** A tool call that must fail with a tool error; answers the REST error body's `error`. */
async function refused(name, args) {
  const result = await client.callTool({ name, arguments: args }, undefined, timeout);
  check(result.isError === true, `${name} ${JSON.stringify(args)} is a tool error`, result);
  return result.structuredContent.error;
}

let sessionId;
try {
  await client.connect(transport());
  log("connected to", client.getServerVersion()?.name, client.getServerVersion()?.version);

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  const expected = [
    "create_session", "delete_session", "execute", "kill_process", "list_files",
    "list_processes", "list_sessions", "read_file", "write_files",
  ];
  check(JSON.stringify(names) === JSON.stringify(expected), "tools/list names every tool", names);
  const execute = tools.find((t) => t.name === "execute");
  check(execute.inputSchema.properties.sessionId.description.length > 0, "execute's schema describes its arguments");

  const session = await call("create_session", { ttl: 600 });
  sessionId = session.sessionId;
  check(/^ses-/.test(sessionId), "create_session answers a session", session);
  const listed = await call("list_sessions", {});
  check(listed.sessions.some((s) => s.sessionId === sessionId), "list_sessions shows it");

  const sum = await call("execute", {
    sessionId,
    code: "console.log(`Sum: ${[1, 2, 3, 4, 5].reduce((a, b) => a + b, 0)}`)",
  });
  check(sum.stdout === "Sum: 15\n" && sum.exitCode === 0, "the README's code example prints Sum: 15", sum);
  for (const field of ["stderr", "executionTime", "memoryUsed", "cpuTime", "timedOut", "filesWritten"]) {
    check(field in sum, `execute answers ${field} as REST does`);
  }

  const files = await call("execute", {
    sessionId,
    files: [
      { path: "math.ts", content: "export function add(a: number, b: number): number {\n  return a + b;\n}\n" },
      { path: "index.ts", content: 'import { add } from "./math";\nconsole.log(`Result: ${add(5, 3)}`);\n' },
    ],
    command: "bun run index.ts",
  });
  check(files.stdout === "Result: 8\n", "the README's two-file example prints Result: 8", files);
  check(files.filesWritten.includes("math.ts") && files.filesWritten.includes("index.ts"), "filesWritten names both", files);

  const read = await call("read_file", { sessionId, path: "math.ts" });
  check(read.content.includes("return a + b;") && read.encoding === "utf8", "read_file answers the file", read);
  const written = await call("write_files", { sessionId, files: [{ path: "notes/a.txt", content: "hello" }] });
  check(written.filesWritten.includes("notes/a.txt"), "write_files writes", written);
  const listing = await call("list_files", { sessionId, path: "notes" });
  check(listing.files.some((f) => f.path.endsWith("a.txt") && f.size === 5), "list_files lists it", listing);

  const progress = [];
  const streamed = await call(
    "execute",
    { sessionId, command: "for i in 1 2 3; do echo tick-$i; sleep 0.3; done; echo oops >&2" },
    { onprogress: (p) => progress.push(p), resetTimeoutOnProgress: true },
  );
  const live = progress.map((p) => p.message ?? "").join("");
  check(progress.length >= 1, "execute sends progress notifications while it runs", progress.length);
  check(live.includes("tick-1") && live.includes("tick-3"), "the notifications carry the output", live);
  check(live.includes("[stderr] oops"), "stderr chunks are marked", live);
  check(
    progress.every((p, i) => i === 0 || p.progress > progress[i - 1].progress),
    "progress only increases",
    progress.map((p) => p.progress),
  );
  check(streamed.stdout === "tick-1\ntick-2\ntick-3\n" && streamed.stderr === "oops\n", "then the full result", streamed);

  await call("execute", { sessionId, command: "nohup sleep 600 >/dev/null 2>&1 &" });
  const before = await call("list_processes", { sessionId });
  const sleeper = before.processes.find((p) => p.command.startsWith("sleep 600"));
  check(sleeper !== undefined, "list_processes shows the background process", before);
  const killed = await call("kill_process", { sessionId, pid: sleeper.pid, signal: "KILL" });
  check(killed.success === true && killed.pid === sleeper.pid, "kill_process signals it", killed);
  let gone = false;
  for (let i = 0; i < 50 && !gone; i++) {
    const after = await call("list_processes", { sessionId });
    gone = !after.processes.some((p) => p.pid === sleeper.pid && p.state !== "Z");
    if (!gone) await new Promise((r) => setTimeout(r, 100));
  }
  check(gone, "the killed process is gone");

  const badTimeout = await refused("execute", { sessionId, code: "1", timeout: 0 });
  check(badTimeout.code === "INVALID_REQUEST" && badTimeout.details.field === "timeout", "a bad timeout names its field", badTimeout);
  const badType = await refused("execute", { sessionId, code: "1", timeout: "soon" });
  check(badType.code === "INVALID_REQUEST" && badType.details.field === "timeout", "a mistyped argument names its field", badType);
  const noSession = await refused("read_file", { sessionId: "ses-nosuchsession", path: "a" });
  check(noSession.code === "SESSION_NOT_FOUND", "an unknown session is SESSION_NOT_FOUND", noSession);
  const escape = await refused("read_file", { sessionId, path: "../etc/passwd" });
  check(escape.code === "INVALID_PATH", "a path outside the workspace is INVALID_PATH", escape);

  const deleted = await call("delete_session", { sessionId });
  check(deleted.success === true, "delete_session deletes it");
  sessionId = undefined;
  const afterDelete = await refused("execute", { sessionId: deleted.sessionId, code: "1" });
  check(afterDelete.code === "SESSION_NOT_FOUND", "a deleted session is SESSION_NOT_FOUND", afterDelete);

  console.log(JSON.stringify({ ok: true, transport: transportName, progressNotifications: progress.length }));
  await client.close();
} catch (error) {
  log("FAILED:", error?.stack ?? error);
  if (sessionId) {
    await client.callTool({ name: "delete_session", arguments: { sessionId } }).catch(() => {});
  }
  await client.close().catch(() => {});
  process.exit(1);
}
