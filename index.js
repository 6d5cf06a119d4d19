// devclaw's OpenClaw plugin: registers devclaw's tools and forwards every call to ONE long-lived
// `devclaw serve` process (`python -m devclaw.cli serve`) over stdio (one JSON object per line; the protocol is documented
// in devclaw/serve.py). Plain ESM, no dependencies, no build step.
//
// The tool names, descriptions and JSON Schemas come from openclaw.tools.json, which is exactly what
// `devclaw tools` prints (regenerate with `devclaw tools > openclaw.tools.json`; a test keeps them equal).

import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

import { MESSAGE_LIMIT, WorkLoop, loopConfig, sumUsage, usageParam } from "./loop.js";

export const TOOLS = JSON.parse(readFileSync(new URL("./openclaw.tools.json", import.meta.url), "utf8"));

const DEFAULT_PYTHON = "python3";
// Calls that change nothing: the only ones after whose timeout a silent serve may be replaced.
const READ_ONLY_TOOLS = new Set(["queue_status", "loop_status", "task_session"]);
const DEFAULT_TIMEOUT_SECONDS = 60;
const LOG_TAIL_LINES = 20; // lines of devclaw's stderr quoted when the process dies
const STOP_GRACE_MS = 3000;
const CHECK_TIMEOUT_MS = 30000;

/** A failure reported by devclaw itself; `message` is devclaw's, `type` its kind (e.g. "workflow"). */
export class DevclawError extends Error {
  constructor(type, message) {
    super(message);
    this.name = "DevclawError";
    this.type = type;
  }
}

/** One `devclaw serve` process: started on the first call, restarted after it dies, stopped by stop(). */
export class Bridge {
  #python;
  #timeoutMs;
  #logger;
  #env;
  #child = null;
  #nextId = 1;
  #pending = new Map(); // id -> {child, tool, startedAt, resolve, reject, timer}
  #late = new Map(); // id -> {child, tool}: calls answered to the caller as timed out that serve still runs
  #logTail = [];
  #stopping = false;
  #checked = null; // a promise that devclaw imports under this interpreter; dropped when it failed

  constructor({ python = DEFAULT_PYTHON, timeoutMs = DEFAULT_TIMEOUT_SECONDS * 1000, logger = console, env = process.env } = {}) {
    this.#python = python;
    this.#timeoutMs = timeoutMs;
    this.#logger = logger;
    this.#env = env;
  }

  /** The pid of the running `devclaw serve`, or null. */
  get pid() {
    return this.#child?.pid ?? null;
  }

  /** Run one devclaw tool; resolves to its result object, rejects with a DevclawError or a bridge Error. */
  async call(tool, params, workspace, signal) {
    if (signal?.aborted) throw new Error(`devclaw ${tool} was aborted`);
    if (!this.#child) await this.checkPython();
    return this.#send(tool, params, workspace, signal);
  }

  /** Resolves when `python -c "import devclaw.cli"` works; otherwise rejects with a DevclawError ("config") saying what to fix. */
  checkPython() {
    this.#checked ??= new Promise((resolve, reject) => {
      execFile(this.#python, ["-c", "import devclaw.cli"], { env: this.#env, timeout: CHECK_TIMEOUT_MS }, (error, _stdout, stderr) => {
        if (!error) return resolve();
        const cause = error.code === "ENOENT" ? `could not run ${this.#python}: no such file` : `${this.#python} cannot import devclaw: ${String(stderr).trim().split("\n").pop() || error.message}`;
        reject(new DevclawError("config", `${cause}. Set plugins.entries.devclaw.config.python to the interpreter devclaw is installed in (for example /path/to/devclaw/.venv/bin/python), then restart the gateway.`));
      });
    });
    this.#checked.catch(() => (this.#checked = null)); // check again next time: the install may be fixed
    return this.#checked;
  }

  #send(tool, params, workspace, signal) {
    const child = this.#ensureChild();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const call = { child, tool, startedAt: Date.now(), resolve, reject, timer: null };
      call.timer = setTimeout(() => this.#timeOut(id), this.#timeoutMs);
      this.#pending.set(id, call);
      signal?.addEventListener("abort", () => this.#settle(id, new Error(`devclaw ${tool} was aborted`)), { once: true });
      // The deadline tells serve not to START a mutation the caller has stopped waiting for.
      const deadline = (call.startedAt + this.#timeoutMs) / 1000;
      child.stdin.write(JSON.stringify({ id, tool, params: params ?? {}, workspace, deadline }) + "\n");
      this.#logger.debug?.(`devclaw: call ${id} (${tool}) sent to devclaw serve pid ${child.pid}`);
    });
  }

  /** Stop the process: close its input so it finishes its calls (a mutation gets up to callTimeoutSeconds), then
   *  SIGTERM, then SIGKILL. A later call starts a new one. */
  async stop() {
    const child = this.#child;
    if (!child) return;
    this.#stopping = true;
    child.ref(); // keep the host alive until the process has really exited
    try {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.stdin.end();
      // A mutation in flight gets its whole call time to finish: killing it could leave it half-made.
      const mutating = [...this.#pending.values(), ...this.#late.values()].some(
        (call) => call.child === child && !READ_ONLY_TOOLS.has(call.tool),
      );
      const grace = mutating ? STOP_GRACE_MS + this.#timeoutMs : STOP_GRACE_MS;
      if (await Promise.race([exited.then(() => true), sleep(grace).then(() => false)])) return;
      child.kill("SIGTERM");
      if (await Promise.race([exited.then(() => true), sleep(STOP_GRACE_MS).then(() => false)])) return;
      child.kill("SIGKILL");
    } finally {
      this.#stopping = false;
    }
  }

  /** For the host's exit: no time left to wait. */
  kill() {
    this.#child?.kill("SIGTERM");
  }

  #ensureChild() {
    if (this.#child) return this.#child;
    const child = spawn(this.#python, ["-m", "devclaw.cli", "serve"], { stdio: ["pipe", "pipe", "pipe"], env: this.#env });
    this.#child = child;
    this.#logTail = [];
    // Let the host exit without waiting for us: a pending call's timer keeps it alive while needed.
    child.unref();
    for (const stream of [child.stdin, child.stdout, child.stderr]) stream.unref?.();
    child.stdin.on("error", () => {}); // EPIPE after a crash: reported through "exit"
    createInterface({ input: child.stdout }).on("line", (line) => this.#onResponse(child, line));
    createInterface({ input: child.stderr }).on("line", (line) => this.#onLog(line));
    child.on("error", (error) => this.#onExit(child, `could not run ${this.#python} -m devclaw.cli serve: ${error.message}`));
    child.on("exit", (code, signal) => this.#onExit(child, `devclaw serve exited (${signal ?? `code ${code}`})`));
    this.#logger.info?.(`devclaw: started ${this.#python} -m devclaw.cli serve (pid ${child.pid})`);
    return child;
  }

  #onResponse(child, line) {
    let response;
    try {
      response = JSON.parse(line);
    } catch {
      this.#logger.warn?.(`devclaw: ignoring a non-protocol line from devclaw serve: ${line.slice(0, 200)}`);
      return;
    }
    child.lastResponseAt = Date.now(); // alive, whichever call this answers
    const late = this.#late.get(response.id);
    if (late) {
      this.#late.delete(response.id);
      const outcome = response.ok ? "completed" : `failed: ${response.error?.message}`;
      this.#logger.warn?.(`devclaw: ${late.tool} (call ${response.id}) answered after its timeout: ${outcome}`);
      return;
    }
    const call = this.#pending.get(response.id);
    if (!call) {
      if (response.ok === false) this.#logger.warn?.(`devclaw: ${response.error?.message}`);
      return; // a call that already timed out or was aborted
    }
    if (response.ok) this.#settle(response.id, null, response.result);
    else this.#settle(response.id, new DevclawError(response.error?.type ?? "error", response.error?.message ?? "devclaw failed"));
  }

  #onLog(line) {
    this.#logTail.push(line);
    if (this.#logTail.length > LOG_TAIL_LINES) this.#logTail.shift();
    if (/\b(ERROR|WARNING|CRITICAL)\b|Traceback|Error/.test(line)) this.#logger.warn?.(line);
    else this.#logger.debug?.(line);
  }

  #onExit(child, reason) {
    if (this.#child === child) this.#child = null;
    const tail = this.#logTail.length ? `; its last log lines:\n${this.#logTail.join("\n")}` : "";
    for (const [id, call] of this.#pending) {
      if (call.child !== child) continue;
      this.#settle(id, new Error(`${reason} while running ${call.tool}; the next call starts a new process${tail}`));
    }
    for (const [id, late] of this.#late) if (late.child === child) this.#late.delete(id);
    if (this.#stopping) this.#logger.info?.(`devclaw: ${reason}`);
    else this.#logger.warn?.(`devclaw: ${reason}`);
  }

  #timeOut(id) {
    const call = this.#pending.get(id);
    if (!call) return;
    const seconds = this.#timeoutMs / 1000;
    const mutating = !READ_ONLY_TOOLS.has(call.tool);
    const advice = mutating
      ? " It may still complete: devclaw keeps running it. Before anything else, call queue_status to see " +
        "where the issue is, or retry the same call (a retry converges: it answers repeated: true if it was applied)."
      : " Try again; if it keeps happening, check the tracker and the gateway log.";
    this.#settle(id, new Error(`devclaw ${call.tool} did not answer within ${seconds} s (callTimeoutSeconds).${advice}`));
    if (mutating) this.#late.set(id, { child: call.child, tool: call.tool });
    // Silent for the whole call and nothing that changes state in flight: the process is stuck, not merely
    // busy. Replace it. Killing it during a mutation could leave the change half-made.
    const mutationInFlight = [...this.#pending.values(), ...this.#late.values()].some(
      (other) => other.child === call.child && !READ_ONLY_TOOLS.has(other.tool),
    );
    if (!(call.child.lastResponseAt >= call.startedAt) && !mutationInFlight) {
      this.#logger.warn?.(`devclaw: devclaw serve (pid ${call.child.pid}) is unresponsive; killing it`);
      call.child.kill("SIGKILL");
    }
  }

  #settle(id, error, result) {
    const call = this.#pending.get(id);
    if (!call) return;
    this.#pending.delete(id);
    clearTimeout(call.timer);
    if (error) call.reject(error);
    else call.resolve(result);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** What the agent sees: the result as compact JSON text (fewer tokens), and the object itself as details. */
export function toolResult(result) {
  return { content: [{ type: "text", text: JSON.stringify(result) }], details: result };
}

/** A setup problem (devclaw cannot run at all) told through the result, so the agent reads devclaw's message. */
export function setupErrorResult(error) {
  return toolResult({ success: false, error: { type: error.type, message: error.message } });
}

/** Config `workspace`, else the agent's workspace, else $DEVCLAW_WORKSPACE. */
export function resolveWorkspace(config, ctx, env = process.env) {
  const workspace = config.workspace || ctx?.workspaceDir || env.DEVCLAW_WORKSPACE;
  if (!workspace) {
    throw new Error("devclaw has no workspace: set plugins.entries.devclaw.config.workspace or DEVCLAW_WORKSPACE");
  }
  return workspace;
}

/**
 * The tokens of a run the orchestrator started by hand, for a task_complete that brings no `usage`: the
 * assistant messages of the worker's confirmed session since its pickup, summed as the work loop sums its
 * own runs. Resolves to undefined when there is nothing to count; a session whose messages cannot be read
 * is said once in the log, and the completion goes on without usage.
 */
export function sessionUsage({ bridge, runtime, logger, warned = { once: false } }) {
  return async (params, workspace, signal) => {
    let task;
    try {
      const which = { projectGroupId: params?.projectGroupId, role: params?.role, issueId: params?.issueId };
      task = await bridge.call("task_session", which, workspace, signal);
    } catch {
      return undefined; // no such worker: task_complete itself says what is wrong
    }
    const since = Date.parse(task.startTime ?? "");
    if (!task.sessionId || !Number.isFinite(since)) return undefined;
    let messages;
    try {
      messages = (await runtime.subagent.getSessionMessages({ sessionKey: task.sessionId, limit: MESSAGE_LIMIT }))?.messages ?? [];
    } catch (error) {
      if (!warned.once) {
        warned.once = true;
        logger?.warn?.(`devclaw: could not read the messages of session ${task.sessionId} (${error?.message ?? error}); task_complete calls without usage are recorded without tokens`);
      }
      return undefined;
    }
    const mine = messages.filter((message) => Number(message?.timestamp) >= since);
    return mine.some((message) => message?.role === "assistant" && message.usage) ? usageParam(sumUsage(mine)) : undefined;
  };
}

export function createTools(bridge, config, { usageOf = null } = {}) {
  return TOOLS.map((spec) => (ctx) => ({
    name: spec.name,
    label: spec.name,
    description: spec.description,
    parameters: spec.parameters,
    async execute(_toolCallId, params, signal) {
      const workspace = resolveWorkspace(config, ctx);
      try {
        await bridge.checkPython();
      } catch (error) {
        return setupErrorResult(error);
      }
      if (spec.name === "task_complete" && usageOf && params && params.usage == null) {
        // The caller's own usage wins; without it the session's transcript says what the run spent.
        const usage = await usageOf(params, workspace, signal);
        if (usage) params = { ...params, usage };
      }
      return toolResult(await bridge.call(spec.name, params, workspace, signal));
    },
  }));
}

// The host may load and register this module several times (discovery, each agent run); the process is
// shared through a global so there is still ONE `devclaw serve` per interpreter and timeout.
const shared = (globalThis[Symbol.for("devclaw.bridges")] ??= { bridges: new Map(), exitHook: false });
shared.usageWarning ??= { once: false }; // "cannot read a session's messages" is said once per gateway

export function sharedBridge({ python, timeoutMs, logger }) {
  const key = JSON.stringify([python, timeoutMs]);
  if (!shared.bridges.has(key)) shared.bridges.set(key, new Bridge({ python, timeoutMs, logger }));
  if (!shared.exitHook) {
    shared.exitHook = true;
    process.once("exit", () => shared.bridges.forEach((bridge) => bridge.kill()));
  }
  return shared.bridges.get(key);
}

export default {
  id: "devclaw",
  name: "DevClaw",
  description: "Deterministic dev -> QA pipeline tools for an orchestrator agent",
  register(api) {
    const config = api.pluginConfig ?? {};
    const seconds = Number(config.callTimeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS);
    const python = config.python || DEFAULT_PYTHON;
    const bridge = sharedBridge({ python, timeoutMs: seconds * 1000, logger: api.logger });
    const usageOf = api.runtime?.subagent ? sessionUsage({ bridge, runtime: api.runtime, logger: api.logger, warned: shared.usageWarning }) : null;
    createTools(bridge, config, { usageOf }).forEach((factory, index) => api.registerTool(factory, { name: TOOLS[index].name }));
    api.registerService({ id: "devclaw-bridge", start() {}, stop: () => bridge.stop() });
    const loop = loopConfig(config);
    if (loop.enabled && (api.registrationMode ?? "full") === "full") registerLoop(api, bridge, config, loop);
  },
};

// One loop per workspace per process, whatever number of times the host loads this module.
const loops = (globalThis[Symbol.for("devclaw.loops")] ??= new Map());

function registerLoop(api, bridge, config, loop) {
  api.registerService({
    id: "devclaw-loop",
    start(ctx) {
      // Never block start(): the gateway awaits it during startup. Nothing here may throw out.
      try {
        const workspace = resolveWorkspace(config, ctx);
        if (loops.has(workspace)) return;
        const worker = new WorkLoop({ api, bridge, config: loop, workspace, logger: api.logger });
        loops.set(workspace, worker);
        worker.start();
      } catch (error) {
        api.logger?.warn?.(`devclaw: the work loop did not start: ${error.message}`);
      }
    },
    stop() {
      for (const [workspace, worker] of loops) {
        worker.stop();
        loops.delete(workspace);
      }
    },
  });
}
